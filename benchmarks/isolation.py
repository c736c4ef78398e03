"""Is a file flood isolated from a call? The same call measured without and with one.

    python -m benchmarks.isolation [--subscribers 10] [--seconds 10] [--runs 1]
        [--data-channels process|inline] [--pin] [--json F]

One self-started server on loopback. Each run measures the call (1 publisher with
audio and 1.5 Mbit/s video, --subscribers viewers, benchmarks/loadgen) twice: alone,
then while benchmarks/dataflood.py floods the file channel of three data-only
members in another room of the same server (and times their control messages).
It reports the audio and video p99 added latency and the loss of both, their
ratios, and the control channel's delay under the flood (docs/DATA_CHANNELS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.loadgen.runner import LoadSpec, run_load
from benchmarks.loadgen.server import REPO_ROOT, SfuUnderTest, cpu_seconds, free_port

FLOOD_START_TIMEOUT_S = 60.0
FLOOD_STOP_TIMEOUT_S = 60.0


def _call(server: SfuUnderTest, subscribers: int, seconds: float) -> dict[str, Any]:
    return run_load(
        LoadSpec(
            publishers=1,
            subscribers=subscribers,
            duration_s=seconds,
            warmup_s=2.0,
            server_url=server.base_url,
            data_dir=server.data_dir,
            server_pid=server.pid,
        )
    )


# With --pin: the call (server, media process, measuring clients) on CPU 0, the file
# channels (the data process and the flooding clients) on CPU 1.
CALL_CPU, FLOOD_CPU = 0, 1


def _flood(server: SfuUnderTest, seconds: float, cpu: int | None) -> subprocess.Popen[str]:
    # The flooding clients run at the lowest priority (SCHED_IDLE): in a real meeting
    # they are other machines, and here their own Python SCTP would otherwise take the
    # CPU from the call's measuring clients, which is not what this measures.
    pin = [] if cpu is None else ["taskset", "-c", str(cpu)]
    flood = subprocess.Popen(
        [*pin, "chrt", "--idle", "0", sys.executable, "-m", "benchmarks.dataflood",
         "--url", server.base_url, "--data-dir", str(server.data_dir), "--seconds", str(seconds)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert flood.stdout is not None
    deadline = time.monotonic() + FLOOD_START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = flood.stdout.readline()
        if line.strip() == "flooding":
            return flood
        if not line and flood.poll() is not None:
            break
    flood.kill()
    raise RuntimeError("the flood did not start")


def _stop_flood(flood: subprocess.Popen[str]) -> dict[str, Any]:
    flood.send_signal(2)
    out, _ = flood.communicate(timeout=FLOOD_STOP_TIMEOUT_S)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"the flood reported nothing (exit {flood.returncode})")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _figures(call: dict[str, Any]) -> dict[str, Any]:
    by_kind = call["latency_us_by_kind"]
    return {
        "audio_p99_us": by_kind["audio"]["p99"],
        "video_p99_us": by_kind["video"]["p99"],
        "audio_p50_us": by_kind["audio"]["p50"],
        "video_p50_us": by_kind["video"]["p50"],
        "loss": call["loss"],
        "server_cpu_percent": call["server_cpu_percent"],
        "datapath": call["datapath"],
    }


def _children_cpu_s(pid: int) -> float:
    """CPU seconds of the server's child processes (the data channel process)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                total += cpu_seconds(int(child))
            except OSError:
                pass  # ended meanwhile
    return total


def _socket_wait(metrics_port: int) -> dict[str, float]:
    """sfu_receive_queue_seconds from the server's /metrics: cumulative counts by le."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    buckets: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("sfu_receive_queue_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[le] = float(line.rsplit(" ", 1)[1])
    return buckets


def _wait_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """How long media waited in the server's socket during one call (per read batch)."""
    delta = {le: after[le] - before.get(le, 0.0) for le in after}
    total = delta.get("+Inf", 0.0)
    if not total:
        return {"batches": 0}
    bounds = sorted((float(le), count) for le, count in delta.items() if le != "+Inf")
    p99 = next((bound for bound, count in bounds if count >= 0.99 * total), None)
    over = {f"over_{ms}ms": round(1 - delta.get(repr(ms / 1000), total) / total, 5)
            for ms in (1, 5)}  # fmt: skip
    return {"batches": int(total), "p99_bucket_ms": None if p99 is None else p99 * 1000, **over}


def _measured_call(
    server: SfuUnderTest, subscribers: int, seconds: float, metrics_port: int
) -> dict[str, Any]:
    assert server.pid is not None
    cpu_before, started = _children_cpu_s(server.pid), time.monotonic()
    waits_before = _socket_wait(metrics_port)
    figures = _figures(_call(server, subscribers, seconds))
    figures["socket_wait"] = _wait_figures(waits_before, _socket_wait(metrics_port))
    elapsed = time.monotonic() - started
    # Over the whole call (connect and warm-up included): a lower bound of its rate.
    figures["data_process_cpu_percent"] = round(
        100 * (_children_cpu_s(server.pid) - cpu_before) / elapsed, 1
    )
    return figures


def run_once(
    server: SfuUnderTest,
    subscribers: int,
    seconds: float,
    metrics_port: int,
    flood_cpu: int | None = None,
) -> dict[str, Any]:
    alone = _measured_call(server, subscribers, seconds, metrics_port)
    # The flood outlives the call's connect, warm-up and window; it is stopped after.
    flood = _flood(server, seconds * 10 + 120, flood_cpu)
    try:
        flooded = _measured_call(server, subscribers, seconds, metrics_port)
    finally:
        data = _stop_flood(flood)

    def ratio(key: str) -> float | None:
        a, b = alone[key], flooded[key]
        return round(b / a, 3) if a and b is not None else None

    return {
        "alone": alone,
        "flooded": flooded,
        "flood": data,
        "ratio": {key: ratio(key) for key in ("audio_p99_us", "video_p99_us")},
        "loss_added": (
            round(flooded["loss"] - alone["loss"], 6)
            if flooded["loss"] is not None and alone["loss"] is not None
            else None
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--data-channels",
        choices=["process", "inline"],
        default="process",
        help="where the server runs data channels (sfu serve --data-channels)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help=f"the call on CPU {CALL_CPU}, the data process and the flood on CPU {FLOOD_CPU}",
    )
    args = parser.parse_args(argv)
    extra = []
    if args.pin:
        os.sched_setaffinity(0, {CALL_CPU})  # inherited by the server and the call's clients
        extra = ["--data-cpus", str(FLOOD_CPU)]
    metrics_port = free_port(socket.SOCK_STREAM)
    server = SfuUnderTest.self_started_default(
        ["--metrics-port", str(metrics_port), "--data-channels", args.data_channels, *extra]
    )
    server.start()
    try:
        runs = [
            run_once(
                server,
                args.subscribers,
                args.seconds,
                metrics_port,
                FLOOD_CPU if args.pin else None,
            )  # fmt: skip
            for _ in range(args.runs)
        ]
    except Exception:
        sys.stderr.write("server log, last lines:\n" + server.log_tail(20_000) + "\n")
        raise
    finally:
        server.stop()

    def median(path: tuple[str, ...]) -> float | None:
        values = []
        for run in runs:
            value: Any = run
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, int | float):
                values.append(float(value))
        return round(statistics.median(values), 3) if values else None

    summary = {
        "data_channels": args.data_channels,
        "pinned": args.pin,
        "runs": runs,
        "median": {
            "audio_p99_ratio": median(("ratio", "audio_p99_us")),
            "video_p99_ratio": median(("ratio", "video_p99_us")),
            "loss_added": median(("loss_added",)),
            "control_delay_p95_ms": median(("flood", "control_delay_ms", "p95")),
            "control_delay_max_ms": median(("flood", "control_delay_ms", "max")),
            "file_mb_per_s": median(("flood", "file_mb_per_s")),
        },
    }
    text = json.dumps(summary, indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
