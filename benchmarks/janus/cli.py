"""python -m benchmarks.janus: scenario 1 against Janus, with the loadgen's clients.

    python -m benchmarks.janus --quick                     # one 10 s run, table + JSON
    python -m benchmarks.janus --quick --compare native    # then our native datapath
    python -m benchmarks.janus --runs 3 --json out.json    # what benchmarks.run --full does

Unless this namespace already has a loopback alias (benchmarks/janus/netns.py), the
command runs itself again inside a fresh network namespace that has one; the datapath
runs of --compare then happen in that same namespace, right after Janus's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.janus.netns import loopback_alias, netns_missing_reason, python_module_command
from benchmarks.janus.server import JanusUnavailable, janus_missing_reason
from benchmarks.loadgen.cli import format_table
from benchmarks.loadgen.runner import run_load
from benchmarks.scenarios import FANOUT

INSIDE_FLAG = "--inside-netns"
QUICK_DURATION_S = 10.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.janus",
        description="Scenario 1 (1 publisher -> N subscribers, Opus + VP8) against Janus's "
        "videoroom with the load generator's clients and measurements.",
    )
    parser.add_argument("--quick", action="store_true", help="one 10 s run of scenario 1")
    parser.add_argument("--runs", type=int, default=1, help="runs (the JSON has each)")
    parser.add_argument("--subscribers", type=int, default=FANOUT.spec.subscribers)
    parser.add_argument("--duration", type=float, default=QUICK_DURATION_S)
    parser.add_argument("--warmup", type=float, default=FANOUT.spec.warmup_s)
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        choices=["native", "python"],
        help="also run this datapath of our SFU right after, the same way (repeatable)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(INSIDE_FLAG, action="store_true", help=argparse.SUPPRESS)
    return parser


def unavailable_reason() -> str | None:
    """Why Janus cannot be measured here (for "janus skipped: ..."), or None."""
    return janus_missing_reason() or (None if loopback_alias() else netns_missing_reason())


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers RESULTS.md quotes, from one result."""
    return {
        "datapath": result["datapath"],
        "out_pps": result["out_pps"],
        "out_pps_source": result.get("out_pps_source"),
        "cpu_us_per_packet": result["cpu_us_per_packet"],
        "server_cpu_percent": result["server_cpu_percent"],
        "latency_us": {k: result["latency_us"][k] for k in ("p50", "p95", "p99", "max")},
        "loss": result["loss"],
        "clients": f"{result['clients']['connected']}/{result['clients']['requested']}",
        "generator_cpu_percent": result["generator_cpu_percent"],
    }


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    spec = replace(
        FANOUT.spec,
        subscribers=args.subscribers,
        duration_s=args.duration,
        warmup_s=args.warmup,
    )
    out: dict[str, Any] = {"janus": [], **{name: [] for name in args.compare}}
    for run in range(1, args.runs + 1):
        for name in ["janus", *args.compare]:
            label = f"--- {FANOUT.title} (run {run}/{args.runs}) [{name}]"
            print(label, file=sys.stderr, flush=True)
            if name == "janus":
                result = run_load(replace(spec, target="janus"))
            else:
                result = run_load(replace(spec, target="sfu", datapath=name))
            print(format_table(result), file=sys.stderr, flush=True)
            out[name].append(result)
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.runs, args.duration = 1, QUICK_DURATION_S
    missing = janus_missing_reason()
    if missing is not None:
        print(f"janus skipped: {missing}", flush=True)
        return 2
    if not getattr(args, "inside_netns", False) and loopback_alias() is None:
        reason = netns_missing_reason()
        if reason is not None:
            print(f"janus skipped: {reason}", flush=True)
            return 2
        forwarded = list(sys.argv[1:] if argv is None else argv) + [INSIDE_FLAG]
        return subprocess.run(python_module_command("benchmarks.janus", forwarded)).returncode
    try:
        results = _measure(args)
    except JanusUnavailable as exc:
        print(f"janus skipped: {exc}", flush=True)
        return 2
    summaries = {name: [summary(r) for r in runs] for name, runs in results.items()}
    print(json.dumps(summaries, indent=2), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    every = [r for runs in results.values() for r in runs]
    return 0 if all(r["clients"]["connected"] == r["clients"]["requested"] for r in every) else 1
