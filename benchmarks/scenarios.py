"""The standard loads we quote, and the search for the largest one the SFU sustains.

Each scenario is a LoadSpec for benchmarks.loadgen; `python -m benchmarks.run` runs
them and writes benchmarks/RESULTS.md.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from benchmarks.loadgen.runner import LoadSpec

# Scenario 4's definition of "sustained".
P99_LIMIT_US = 5000.0
LOSS_LIMIT = 0.001
MAX_LOAD_STEPS_UP = (20, 40, 80, 160, 320, 640)
MAX_LOAD_STEPS_DOWN = (10, 5)
MAX_LOAD_STEP_LIMIT = 6


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    title: str
    spec: LoadSpec


FANOUT = Scenario(
    "fanout",
    "1. One room: 1 publisher (Opus + VP8 1.5 Mbps) -> 20 subscribers",
    LoadSpec(publishers=1, subscribers=20, rooms=1, video_kbps=1500.0),
)
MEETINGS = Scenario(
    "meetings",
    "2. 10 rooms x 4 participants, all publishing (Opus + VP8 500 kbps); each "
    "participant is 1 WHIP publisher + 3 WHEP viewers of the others",
    LoadSpec(publishers=4, subscribers=0, rooms=10, mesh=True, video_kbps=500.0),
)
AUDIO_BROADCAST = Scenario(
    "audio_broadcast",
    "3. Audio only: 1 speaker -> 200 listeners",
    LoadSpec(publishers=1, subscribers=200, rooms=1, audio_only=True),
)
STANDARD = (FANOUT, MEETINGS, AUDIO_BROADCAST)

# Metrics summarized over repeated runs (median), as (path in the result, label, unit).
METRICS: tuple[tuple[str, str, str], ...] = (
    ("out_pps", "SFU forwarded datagrams/s", ""),
    ("in_pps", "SFU received datagrams/s", ""),
    ("server_cpu_percent", "SFU CPU (% of one core)", "%"),
    ("cpu_us_per_packet", "SFU CPU per forwarded datagram", "us"),
    ("latency_us.p50", "one-way latency p50", "us"),
    ("latency_us.p95", "one-way latency p95", "us"),
    ("latency_us.p99", "one-way latency p99", "us"),
    ("latency_us.max", "one-way latency max", "us"),
    ("app_latency_us.p99", "p99 as seen by the client process", "us"),
    ("loss", "loss", "fraction"),
    ("delivery.audio", "audio packets delivered / sent", "fraction"),
    ("delivery.video", "video packets delivered / sent", "fraction"),
    ("out_of_order", "out of order packets", ""),
    ("server_socket_drops", "server socket drops (receive buffer full)", ""),
    ("client_socket_drops", "generator socket drops", ""),
    ("rss_mb_per_participant", "server RSS per participant", "MB"),
    ("generator_cpu_percent", "load generator CPU (all processes)", "%"),
)


def metric(result: dict[str, Any], path: str) -> Any:
    value: Any = result
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def median_metric(results: list[dict[str, Any]], path: str) -> float | None:
    values = [v for v in (metric(r, path) for r in results) if isinstance(v, int | float)]
    return float(statistics.median(values)) if values else None


def all_connected(results: list[dict[str, Any]]) -> bool:
    return all(r["clients"]["connected"] == r["clients"]["requested"] for r in results)


def sustained(results: list[dict[str, Any]]) -> bool:
    """Median p99 and loss within the limits, and no client failed in any run."""
    p99 = median_metric(results, "latency_us.p99")
    loss = median_metric(results, "loss")
    return (
        all_connected(results)
        and p99 is not None
        and p99 <= P99_LIMIT_US
        and loss is not None
        and loss <= LOSS_LIMIT
    )


def find_max_load(
    run_step: Callable[[LoadSpec], list[dict[str, Any]]],
    base: LoadSpec = FANOUT.spec,
    known: dict[int, list[dict[str, Any]]] | None = None,
) -> tuple[int | None, dict[int, list[dict[str, Any]]]]:
    """Step scenario 1's subscriber count up until a step fails (down if the first
    fails), at most MAX_LOAD_STEP_LIMIT new steps; return the largest passing count."""
    steps = dict(known or {})
    best: int | None = None
    budget = MAX_LOAD_STEP_LIMIT

    def results_for(count: int) -> list[dict[str, Any]]:
        nonlocal budget
        if count not in steps:
            budget -= 1
            steps[count] = run_step(replace(base, subscribers=count))
        return steps[count]

    for count in MAX_LOAD_STEPS_UP:
        if budget <= 0 and count not in steps:
            break
        if not sustained(results_for(count)):
            break
        best = count
    if best is None:
        for count in MAX_LOAD_STEPS_DOWN:
            if budget <= 0 and count not in steps:
                break
            if sustained(results_for(count)):
                best = count
                break
    return best, steps
