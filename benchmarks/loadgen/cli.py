"""Command line of the load generator: options in, a table and optional JSON out."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.loadgen.runner import LoadSpec, run_load


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.loadgen",
        description="Drive the SFU with WHIP publishers and WHEP subscribers (real "
        "signaling, ICE, DTLS and SRTP) and measure forwarding rate, CPU, latency and loss.",
    )
    parser.add_argument("--publishers", type=int, default=1, help="WHIP publishers per room")
    parser.add_argument(
        "--subscribers",
        type=int,
        default=20,
        help="WHEP viewers per room (each takes one session per publisher)",
    )
    parser.add_argument("--rooms", type=int, default=1)
    parser.add_argument(
        "--mesh",
        action="store_true",
        help="every publisher also watches every other publisher of its room (one WHEP "
        "session each), as in a meeting; --subscribers is then ignored",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--video-kbps", type=float, default=1500.0)
    parser.add_argument("--audio-only", action="store_true")
    parser.add_argument(
        "--client-procs", type=int, default=2, help="processes that hold the subscribers"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--server", default=None, help="URL of a running SFU (default: start one)")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="the running SFU's data dir (cert, key)"
    )
    parser.add_argument("--server-pid", type=int, default=None, help="pid of the running SFU")
    parser.add_argument(
        "--datapath",
        choices=["auto", "native", "python"],
        default="auto",
        help="per-packet path of a self-started server (default: the server's choice)",
    )
    parser.add_argument(
        "--client-rx",
        choices=["c", "python"],
        default="c",
        help="how subscriber processes receive during the window: a C loop "
        "(benchmarks/loadgen/fastrx.c, built at run time; Python with a warning when it "
        "cannot be) or the Python transport (default: c)",
    )
    parser.add_argument(
        "--client-sched",
        choices=["batch", "normal"],
        default="batch",
        help="scheduling policy of the generator's processes: batch (SCHED_BATCH, a "
        "receiver woken by a packet does not preempt the server mid fan-out, as no client "
        "across a network could) or normal (default: batch)",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra argument for a self-started `sfu serve` (repeatable)",
    )
    return parser


def spec_from_args(args: argparse.Namespace) -> LoadSpec:
    for name in ("publishers", "rooms", "client_procs"):
        if getattr(args, name) < (1 if name != "publishers" else 0):
            raise SystemExit(f"--{name.replace('_', '-')} is too small")
    if args.subscribers < 0 or args.duration <= 0 or args.warmup < 0:
        raise SystemExit("--subscribers, --duration and --warmup must not be negative")
    return LoadSpec(
        publishers=args.publishers,
        subscribers=args.subscribers,
        rooms=args.rooms,
        duration_s=args.duration,
        warmup_s=args.warmup,
        video_kbps=args.video_kbps,
        audio_only=args.audio_only,
        mesh=args.mesh,
        client_procs=args.client_procs,
        server_url=args.server,
        data_dir=args.data_dir,
        server_pid=args.server_pid,
        server_args=list(args.server_arg),
        datapath=args.datapath,
        client_rx=args.client_rx,
        client_sched=args.client_sched,
    )


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.2f}{unit}" if abs(value) < 100 else f"{value:,.0f}{unit}"
    return f"{value}{unit}"


def format_table(result: dict[str, Any]) -> str:
    """A readable summary of one result."""
    lat = result["latency_us"]
    app = result["app_latency_us"]
    clients = result["clients"]
    scenario = result["scenario"]
    loss = result["loss"]
    media = "audio only" if scenario["audio_only"] else f"video {scenario['video_kbps']} kbps"
    shape = "meshed" if scenario["mesh"] else f"-> {scenario['subscribers']} subscriber(s)"
    rows = [
        (
            "scenario",
            f"{scenario['rooms']} room(s) x {scenario['publishers']} publisher(s) {shape}, "
            f"{media}, {result['window_s']} s measured",
        ),
        ("datapath", result["datapath"]),
        ("client receive path", _fmt(result["client_rx"])),
        ("client scheduling", _fmt(scenario.get("client_sched"))),
        (
            "clients connected",
            f"{clients['connected']} / {clients['requested']}"
            + (f"  ({len(clients['failed'])} FAILED)" if clients["failed"] else ""),
        ),
        ("SFU out (datagrams/s)", _fmt(result["out_pps"])),
        ("SFU in (datagrams/s)", _fmt(result["in_pps"])),
        ("media received (pkt/s)", _fmt(result["received_pps"])),
        ("SFU CPU", _fmt(result["server_cpu_percent"], " %")),
        ("CPU per forwarded packet", _fmt(result["cpu_us_per_packet"], " us")),
        ("generator CPU (all procs)", _fmt(result["generator_cpu_percent"], " %")),
        ("RSS per participant", _fmt(result["rss_mb_per_participant"], " MB")),
        (
            "latency p50/p95/p99/max",
            " / ".join(_fmt(lat[k]) for k in ("p50", "p95", "p99", "max")) + " us",
        ),
        (
            "  (at client app)",
            " / ".join(_fmt(app[k]) for k in ("p50", "p95", "p99", "max")) + " us",
        ),
        ("loss", "n/a" if loss is None else f"{loss * 100:.3f} % ({result['lost']} pkts)"),
        ("out of order / duplicates", f"{result['out_of_order']} / {result['duplicates']}"),
        (
            "delivered audio / video",
            " / ".join(
                "n/a" if v is None else f"{v * 100:.2f} %" for v in result["delivery"].values()
            ),
        ),
        ("silent streams", str(result["silent_streams"])),
        (
            "socket drops client / server",
            f"{result['client_socket_drops']} / {_fmt(result['server_socket_drops'])}",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    for failure in clients["failed"][:10]:
        lines.append(f"  failed {failure['name']} ({failure['stage']}): {failure['reason']}")
    if len(clients["failed"]) > 10:
        lines.append(f"  ... and {len(clients['failed']) - 10} more failures")
    for index, error in result["errors"].items():
        lines.append(f"  process {index} crashed: {error.strip().splitlines()[-1]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = run_load(spec_from_args(args))
    print(format_table(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    clients = result["clients"]
    return 0 if clients["connected"] == clients["requested"] else 1
