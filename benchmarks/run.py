"""Run the standard benchmarks, on every datapath this build has.

    python -m benchmarks.run --quick   # scenario 1 once per datapath -> results/quick.json
    python -m benchmarks.run --full    # scenarios 1-4, 3 runs each (medians) -> RESULTS.md
    python -m benchmarks.run --render benchmarks/results/full.json   # RESULTS.md again

Every run starts its own `sfu serve --datapath X` on free loopback ports, so runs share
no state; the datapaths take turns run by run, so that a change in the machine's load
during the benchmark does not fall on one of them only. Both modes also measure the bare
C relay of benchmarks/baseline at scenario 1's shape, the bound the native path is held to.
--full also runs scenario 1 against Janus 1.1 (videoroom) three times when Debian's
`janus` is installed (benchmarks/janus), and says "janus skipped: <reason>" otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.baseline.build import BaselineUnavailable
from benchmarks.baseline.run import BaselineSpec, median_of_runs
from benchmarks.janus.cli import unavailable_reason
from benchmarks.janus.netns import python_module_command
from benchmarks.loadgen.cli import format_table
from benchmarks.loadgen.runner import LoadSpec, run_load
from benchmarks.scenarios import (
    FANOUT,
    LOSS_LIMIT,
    METRICS,
    P99_LIMIT_US,
    STANDARD,
    all_connected,
    find_max_load,
    median_metric,
    metric,
    sustained,
)

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
QUICK_DURATION_S = 10.0
FULL_DURATION_S = 10.0
FULL_RUNS = 3
BROWSER_SECTION = "## Browser meeting (benchmarks/browser_room.py)"

Results = list[dict[str, Any]]


def available_datapaths() -> list[str]:
    """The pure-Python reference always; the native one when native/ is built."""
    from sfu.io.datapath import native_available

    return ["python", "native"] if native_available() else ["python"]


def _run(spec: LoadSpec, label: str) -> dict[str, Any]:
    print(f"--- {label} [{spec.datapath}]", flush=True)
    result = run_load(spec)
    print(format_table(result), flush=True)
    if result["datapath"] != spec.datapath:
        raise RuntimeError(f"asked for the {spec.datapath} datapath, got {result['datapath']}")
    return result


def _datapath_summary(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "out_pps": result["out_pps"],
        "cpu_us_per_packet": result["cpu_us_per_packet"],
        "latency_us": {k: result["latency_us"][k] for k in ("p50", "p95", "p99", "max")},
        "loss": result["loss"],
        "server_cpu_percent": result["server_cpu_percent"],
        "generator_cpu_percent": result["generator_cpu_percent"],
        "clients_connected": result["clients"]["connected"],
        "clients_requested": result["clients"]["requested"],
        "scenario": FANOUT.title,
        "date": result["date"],
    }


def _baseline(fanout: Results, runs: int, duration_s: float) -> dict[str, Any]:
    """The bare C relay at scenario 1's shape: the input rate scenario 1 measured, to as
    many subscribers; {"skipped": reason} when it cannot be built here."""
    rate_pps = median_metric(fanout, "in_pps") or BaselineSpec().rate_pps
    spec = BaselineSpec(
        subscribers=FANOUT.spec.subscribers, rate_pps=rate_pps, duration_s=duration_s
    )
    print(
        f"--- physical bound: bare C relay, {rate_pps:,.0f} packets/s -> "
        f"{spec.subscribers} subscribers ({runs} run{'s' if runs > 1 else ''})",
        flush=True,
    )
    try:
        result = median_of_runs(spec, runs)
    except (BaselineUnavailable, RuntimeError, OSError) as exc:
        # Say why, in the output and the JSON, rather than lose the scenarios' results.
        print(f"baseline skipped: {exc}", flush=True)
        return {"skipped": str(exc)}
    print(
        f"baseline: {_fmt(result['out_pps'], '')} datagrams/s out, "
        f"{_fmt(result['cpu_us_per_packet'], 'us')} CPU per forwarded datagram, "
        f"latency p99 {_fmt(metric(result, 'latency_us.p99'), 'us')}",
        flush=True,
    )
    return result


def _janus(runs: int, duration_s: float) -> dict[str, Any]:
    """Scenario 1 against Janus, `runs` times in a row, in a private network namespace
    (benchmarks/janus/netns.py); {"skipped": reason} when it cannot run here."""
    reason = unavailable_reason()
    if reason is not None:
        print(f"janus skipped: {reason}", flush=True)
        return {"skipped": reason}
    print(f"--- {FANOUT.title} against Janus ({runs} runs)", flush=True)
    with tempfile.TemporaryDirectory(prefix="janus-results-") as tmp:
        out = Path(tmp) / "janus.json"
        args = ["--runs", str(runs), "--duration", str(duration_s), "--json", str(out)]
        done = subprocess.run(python_module_command("benchmarks.janus", args))
        if not out.exists():
            reason = f"python -m benchmarks.janus exited with {done.returncode}, no results"
            print(f"janus skipped: {reason}", flush=True)
            return {"skipped": reason}
        results: Results = json.loads(out.read_text())["janus"]
    return {"runs": results}


def quick() -> int:
    summary: dict[str, Any] = {}
    every: Results = []
    for datapath in available_datapaths():
        spec = replace(FANOUT.spec, duration_s=QUICK_DURATION_S, datapath=datapath)
        result = _run(spec, FANOUT.title)
        summary[datapath] = _datapath_summary(result)
        every.append(result)
    summary["baseline"] = _baseline(every, 1, QUICK_DURATION_S)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / "quick.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {path}")
    return 0 if all_connected(every) else 1


def _machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": sys.version.split()[0],
        "kernel": platform.release(),
        # Other work on the machine skews every number here: say how busy it was.
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "fraction":
        return f"{value * 100:.3f} %"
    if unit == "%":
        return f"{value:.1f} %"
    if unit == "MB":
        return f"{value:.3f} MB"
    if unit == "us":
        return f"{value:,.1f} µs" if value < 100 else f"{value:,.0f} µs"
    return f"{value:,.0f}"


def _scenario_table(by_datapath: dict[str, Results]) -> list[str]:
    names = list(by_datapath)
    runs = max(len(r) for r in by_datapath.values())
    lines = [
        f"| metric (median of {runs} runs) | " + " | ".join(names) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    for path, label, unit in METRICS:
        cells = [_fmt(median_metric(by_datapath[n], path), unit) for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    connected = [
        ", ".join(
            f"{r['clients']['connected']}/{r['clients']['requested']}" for r in by_datapath[n]
        )
        for n in names
    ]
    lines.append("| clients connected (each run) | " + " | ".join(connected) + " |")
    p99s = [", ".join(_fmt(r["latency_us"]["p99"], "us") for r in by_datapath[n]) for n in names]
    lines.append("| p99 of each run | " + " | ".join(p99s) + " |")
    return lines


def _comparison(by_datapath: dict[str, Results]) -> list[str]:
    if "python" not in by_datapath or "native" not in by_datapath:
        return []
    py = median_metric(by_datapath["python"], "cpu_us_per_packet")
    native = median_metric(by_datapath["native"], "cpu_us_per_packet")
    py_p99 = median_metric(by_datapath["python"], "latency_us.p99")
    native_p99 = median_metric(by_datapath["native"], "latency_us.p99")
    if not py or not native or not py_p99 or not native_p99:
        return []
    return [
        "",
        f"Native vs Python on this load: {py / native:.1f}x less SFU CPU per forwarded "
        f"datagram ({_fmt(native, 'us')} vs {_fmt(py, 'us')}), p99 {_fmt(native_p99, 'us')} "
        f"vs {_fmt(py_p99, 'us')}.",
    ]


def _physical_bound(raw: dict[str, Any]) -> list[str]:
    """Scenario 1's CPU per forwarded datagram against the bare C relay's."""
    baseline = raw.get("baseline")
    if baseline is None:
        return []
    lines = ["", "## Physical bound: a bare C relay at scenario 1's shape", ""]
    if "skipped" in baseline:
        return [*lines, f"Not measured: {baseline['skipped']}"]
    first = baseline["runs"][0]
    spec = first["spec"]
    bound = baseline["cpu_us_per_packet"]
    lines += [
        "`benchmarks/baseline/relay.c`, the least a relay can do: recvmmsg, srtp_unprotect, "
        "then for each subscriber copy, rewrite the SSRC, srtp_protect under the "
        f"subscriber's own key, sendmmsg ({first['srtp']}). One publisher at "
        f"{_fmt(baseline['in_pps'], '')} packets/s ({spec['payload_bytes']}-byte payloads, "
        f"{spec['burst']} back to back) -> {spec['subscribers']} subscribers, median of "
        f"{len(baseline['runs'])} runs of {spec['duration_s']:g} s in this benchmark. Its CPU "
        "is the relay's CLOCK_PROCESS_CPUTIME_ID, utime+stime at nanosecond resolution "
        f"(/proc's 10 ms ticks give {_fmt(baseline['cpu_us_per_packet_proc_stat'], 'us')}).",
        "Its latency is measured as the load generator's: publisher's send to the kernel's "
        "receive timestamp on the subscriber's socket. Every copy of a burst leaves one "
        "after another, so its p99 is the floor for a relay on one core at this shape.",
        "",
        "| | forwarded datagrams/s | CPU per forwarded datagram | vs bare relay "
        "| latency p50 | latency p99 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| bare C relay | {_fmt(baseline['out_pps'], '')} | {_fmt(bound, 'us')} | 1.0x "
        f"| {_fmt(metric(baseline, 'latency_us.p50'), 'us')} "
        f"| {_fmt(metric(baseline, 'latency_us.p99'), 'us')} |",
    ]
    for datapath, results in raw["standard"][FANOUT.key].items():
        cpu = median_metric(results, "cpu_us_per_packet")
        ratio = f"{cpu / bound:.1f}x" if cpu and bound else "n/a"
        lines.append(
            f"| {datapath} | {_fmt(median_metric(results, 'out_pps'), '')} "
            f"| {_fmt(cpu, 'us')} | {ratio} "
            f"| {_fmt(median_metric(results, 'latency_us.p50'), 'us')} "
            f"| {_fmt(median_metric(results, 'latency_us.p99'), 'us')} |"
        )
    return lines


def _failures(by_datapath: dict[str, Results]) -> list[str]:
    lines = []
    for datapath, results in by_datapath.items():
        for run, result in enumerate(results, start=1):
            for failure in result["clients"]["failed"][:5]:
                lines.append(
                    f"- {datapath} run {run}: {failure['name']} failed at {failure['stage']}: "
                    f"{failure['reason']}"
                )
    return ["", *lines] if lines else []


def _browser_section() -> list[str]:
    """Keep whatever the lead wrote under the browser heading in an existing file."""
    if RESULTS_MD.exists():
        text = RESULTS_MD.read_text()
        if BROWSER_SECTION in text:
            return text[text.index(BROWSER_SECTION) :].rstrip().splitlines()
    return [
        BROWSER_SECTION,
        "",
        "_Filled by hand from `python -m benchmarks.browser_room` (join time to first "
        "decoded frame, server CPU with N Chromium pages)._",
    ]


def _datapath_line(datapaths: list[str]) -> str:
    if "native" in datapaths:
        return (
            "- Datapaths: `python` (the pure-Python reference) and `native` (every "
            "per-packet step of forwarded RTP in C: recvmmsg, demultiplexing, libsrtp "
            "unprotect, route lookup, receive statistics, NACK cache, keyframe detection, "
            "header rewrite, libsrtp protect and sendmmsg; Python sees only STUN, DTLS, RTCP "
            "and SRTP failures). "
            "Each run gets a fresh server started with `--datapath python` or `--datapath "
            "native`; the two take turns run by run."
        )
    return (
        "- Datapath: **only the pure-Python datapath was measured**: the native (Cython) "
        "datapath is not built on this machine."
    )


def _janus_label(results: Results) -> str:
    version = str(results[0].get("datapath", "janus")).split("(")[-1].rstrip(")")
    return f"Janus {version} videoroom"


def _janus_notes(janus: dict[str, Any] | None, by_datapath: dict[str, Results]) -> list[str]:
    """What the Janus column is and how it differs from ours."""
    if janus is None:
        return []
    if "skipped" in janus:
        return ["", f"Janus: not measured ({janus['skipped']})."]
    runs: Results = janus["runs"]
    lines = [
        "",
        f"**{_janus_label(runs)}** (Debian's `janus` package, `python -m benchmarks.janus`): "
        "the same publisher and subscriber clients, media and measurements, signaling with "
        "the Janus API over HTTP long poll instead of WHIP/WHEP (one session and videoroom "
        "handle per client, keepalive every 25 s). Janus runs with a generated config: the "
        "HTTP transport and the videoroom plugin only, no event handlers, no STUN, a DTLS "
        "certificate of its own, debug level 3, otherwise its defaults (full ICE, one "
        "PeerConnection and UDP port per client, one event loop thread per handle).",
        "",
        "- Janus gathers no ICE candidates on loopback interfaces, so its runs happen in a "
        "private network namespace where an extra interface carries 127.0.0.2; Janus and "
        "the clients use that address, which the kernel delivers through loopback like "
        f"127.0.0.1. The {len(runs)} Janus runs come one after another, after all the runs "
        "above, not interleaved with them.",
        "- **Forwarded datagrams/s** for Janus is what the clients received from it in the "
        "window (media, RTCP and STUN, counted on the clients' sockets), because Janus has "
        "no datagram counter; it includes what Janus sends the publisher. Ours is the "
        "server's `datagrams_out`. With no socket drops the two count the same thing. "
        "Likewise Janus's 'received datagrams/s' is what the clients sent it.",
        "- Janus sends more than media: RTCP sender and receiver reports, REMB to the "
        "publisher, transport-wide and NACK feedback where negotiated, and its own ICE "
        "connectivity checks and keepalives, so per forwarded datagram its CPU is spread "
        "over slightly more datagrams than the media alone. Our answers accept no header "
        "extensions, so Janus forwards the payloads with none.",
    ]
    native = by_datapath.get("native")
    janus_cpu = median_metric(runs, "cpu_us_per_packet")
    if native:
        native_cpu = median_metric(native, "cpu_us_per_packet")
        if native_cpu and janus_cpu:
            lines += [
                "",
                f"Native vs Janus on this load: {_fmt(native_cpu, 'us')} vs "
                f"{_fmt(janus_cpu, 'us')} CPU per forwarded datagram "
                f"({janus_cpu / native_cpu:.1f}x), p99 "
                f"{_fmt(median_metric(native, 'latency_us.p99'), 'us')} vs "
                f"{_fmt(median_metric(runs, 'latency_us.p99'), 'us')}.",
            ]
    return lines


def write_results_md(raw: dict[str, Any]) -> None:
    """RESULTS.md from the raw results of a --full run."""
    machine = raw["machine"]
    datapaths: list[str] = raw["datapaths"]
    out = [
        "# Benchmark results",
        "",
        f"- Command: `{raw['command']}` ({raw['elapsed_s'] / 60:.1f} min)",
        f"- Date: {raw['date']}",
        f"- Machine: `nproc` = {machine['nproc']}, CPU: {machine['cpu']}, "
        f"kernel {machine['kernel']}, load average at start {machine['load_average']}",
        f"- Python {machine['python']}",
        _datapath_line(datapaths),
        "",
        "## How these numbers are made",
        "",
        "`python -m benchmarks.loadgen` starts `sfu serve` on free loopback ports and "
        "drives it through the client path a WHIP/WHEP tool uses: a token signed with the "
        "server's key, WHIP/WHEP offers over HTTPS with the development certificate pinned, "
        "ICE checks with USE-CANDIDATE and MESSAGE-INTEGRITY (then consent every 2.5 s), a "
        "DTLS client handshake with the fingerprint checked, and SRTP with the exported keys. "
        "Publishers run in one process, subscribers in two more (`--client-procs 2`), on the "
        "same 2 cores as the server: the generator's own CPU is in every table, and when it "
        "nears the cores' limit the latencies say as much about the generator as the SFU. "
        "During the measured window the subscribers receive in C (`--client-rx c`, "
        "benchmarks/loadgen/fastrx.c: epoll, recvmmsg, libsrtp unprotect and the same "
        "statistics the Python clients keep, held to them by tests/benchmarks/test_fastrx.py), "
        "so that the generator's cost per packet stays well below the server's. The "
        "generator's processes run SCHED_BATCH (`--client-sched batch`, benchmarks/sched.py): "
        "they keep their fair share of the cores, but a receiver woken by the server's "
        "packets does not preempt the server in the middle of a fan-out, which no client "
        "across a network could do; the bare relay's harness runs the same way.",
        "",
        "- Publishers send Opus-shaped audio (50 packets/s, ~100 B) and VP8-shaped video "
        "(30 frames/s, each frame split into equal packets of at most 1200 B, sent back to "
        "back, a keyframe every 60 frames and on PLI).",
        "- Every payload carries its send time (`time.monotonic_ns()`, system-wide on Linux) "
        "and a packet counter, after the VP8 descriptor and frame tag for video: the SFU "
        "forwards payloads unchanged but not header extensions.",
        "- **Latency** is the one-way time from the publisher's send to the moment the "
        "packet reached the subscriber's socket (kernel receive timestamp, SO_TIMESTAMPNS). "
        "On loopback that is when the SFU sent it, so it is the time the packet spent in the "
        "SFU, including waiting behind the rest of its frame's fan-out. The row 'p99 as seen "
        "by the client process' is the same packets timed when the generator's receive loop "
        "read them.",
        "- **Loss** comes from the sequence numbers each subscriber sees (the SFU rewrites "
        "them per subscriber but keeps them continuous), over packets sent inside the "
        f"measured window ({FULL_DURATION_S:g} s after a 2 s warm-up); 'delivered / sent' "
        "compares what subscribers got with what publishers sent in the same window.",
        "- **Forwarded datagrams/s** is the delta of the server's `/healthz` counter "
        "`datagrams_out` over the window (media plus the few STUN/RTCP replies); **CPU per "
        "forwarded datagram** is the server's utime+stime from /proc over the same window "
        "divided by that delta, so it includes receiving and decrypting the input.",
        "- **RSS per participant** is the server's VmRSS at the end of the window (all "
        "clients joined, packet caches full) minus before any joined, divided by participants "
        "(scenario 2: 40 people = 160 WHIP/WHEP sessions).",
    ]
    for scenario in STANDARD:
        by_datapath = raw["standard"][scenario.key]
        columns = dict(by_datapath)
        if scenario.key == FANOUT.key and raw.get("janus", {}).get("runs"):
            columns[_janus_label(raw["janus"]["runs"])] = raw["janus"]["runs"]
        out += ["", f"## {scenario.title}", "", *_scenario_table(columns)]
        out += _comparison(by_datapath) + _failures(columns)
        if scenario.key == FANOUT.key:
            out += _janus_notes(raw.get("janus"), by_datapath)
    out += [
        "",
        "## 4. Largest sustained load (scenario 1 with more subscribers)",
        "",
        f"Sustained means: median p99 ≤ {P99_LIMIT_US / 1000:g} ms and median loss ≤ "
        f"{LOSS_LIMIT * 100:g} % over {FULL_RUNS} runs, and every client connected. The count "
        "doubles from 20 until a step fails (halves from 20 if that fails).",
        "",
        "| datapath | subscribers | forwarded datagrams/s | SFU CPU | p50 | p99 | loss "
        "| generator CPU | sustained |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |",
    ]
    verdicts = []
    for datapath in datapaths:
        search = raw["max_load"][datapath]
        steps = {int(k): v for k, v in search["steps"].items()}
        for count in sorted(steps):
            results = steps[count]
            out.append(
                f"| {datapath} | {count} | {_fmt(median_metric(results, 'out_pps'), '')} "
                f"| {_fmt(median_metric(results, 'server_cpu_percent'), '%')} "
                f"| {_fmt(median_metric(results, 'latency_us.p50'), 'us')} "
                f"| {_fmt(median_metric(results, 'latency_us.p99'), 'us')} "
                f"| {_fmt(median_metric(results, 'loss'), 'fraction')} "
                f"| {_fmt(median_metric(results, 'generator_cpu_percent'), '%')} "
                f"| {'yes' if sustained(results) else 'no'} |"
            )
        best = search["best_subscribers"]
        if best is None:
            verdicts.append(f"- {datapath}: no step met the limits.")
        else:
            pps = median_metric(steps[best], "out_pps")
            last = max(steps)
            limit = "" if not sustained(steps[last]) else " (the largest step tried)"
            verdicts.append(
                f"- **{datapath}: 1 publisher -> {best} subscribers{limit}**, "
                f"{_fmt(pps, '')} forwarded datagrams/s."
            )
    out += ["", "Largest sustained load:", "", *verdicts, *_physical_bound(raw)]
    out += ["", *_browser_section(), ""]
    RESULTS_MD.write_text("\n".join(out))


def full() -> int:
    began = time.monotonic()
    datapaths = available_datapaths()
    raw: dict[str, Any] = {
        "command": "python -m benchmarks.run --full",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": _machine(),
        "datapaths": datapaths,
        "standard": {},
        "max_load": {},
    }
    every: Results = []

    def repeat(title: str, spec: LoadSpec, names: list[str]) -> dict[str, Results]:
        by_datapath: dict[str, Results] = {name: [] for name in names}
        for run in range(1, FULL_RUNS + 1):
            for name in names:
                result = _run(replace(spec, datapath=name), f"{title} (run {run}/{FULL_RUNS})")
                by_datapath[name].append(result)
                every.append(result)
        return by_datapath

    for scenario in STANDARD:
        spec = replace(scenario.spec, duration_s=FULL_DURATION_S)
        raw["standard"][scenario.key] = repeat(scenario.title, spec, datapaths)

    for name in datapaths:

        def run_step(spec: LoadSpec, name: str = name) -> Results:
            return repeat(f"4. max load: {spec.subscribers} subscribers", spec, [name])[name]

        # Scenario 1 is the search's first step: its runs are reused, not repeated.
        known = {FANOUT.spec.subscribers: raw["standard"][FANOUT.key][name]}
        base = replace(FANOUT.spec, duration_s=FULL_DURATION_S, datapath=name)
        best, steps = find_max_load(run_step, base, known)
        raw["max_load"][name] = {
            "best_subscribers": best,
            "steps": {str(k): v for k, v in steps.items()},
        }
    fanout = [r for results in raw["standard"][FANOUT.key].values() for r in results]
    raw["baseline"] = _baseline(fanout, FULL_RUNS, FULL_DURATION_S)
    raw["janus"] = _janus(FULL_RUNS, FULL_DURATION_S)
    every += raw["janus"].get("runs", [])
    raw["elapsed_s"] = round(time.monotonic() - began, 1)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "full.json").write_text(json.dumps(raw, indent=2) + "\n")
    write_results_md(raw)
    print(f"wrote {RESULTS_MD} and {RESULTS_DIR / 'full.json'}")
    return 0 if all_connected(every) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="scenario 1 once per datapath")
    mode.add_argument("--full", action="store_true", help="scenarios 1-4, 3 runs each")
    mode.add_argument(
        "--render", type=Path, metavar="FULL_JSON", help="rewrite RESULTS.md from a full.json"
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        write_results_md(json.loads(args.render.read_text()))
        return 0
    return quick() if args.quick else full()


if __name__ == "__main__":
    sys.exit(main())
