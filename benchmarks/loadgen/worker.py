"""One load-generator process: connects its clients, runs them, reports back.

From the "window" command to stop_ns a subscriber process with client_rx_library set
receives in C (fastrx.py); everything else stays on the event loop.

The parent talks to it through two multiprocessing queues:

    parent -> child   ("connect",)                          subscribers wait for publishers
                      ("window", start_ns, end_ns, stop_ns) the measured interval
                      ("stop",)                             give up early
    child -> parent   ("ready", index, {...})               every client connected or failed
                      ("result", index, {...})              measurements, after stop_ns
                      ("error", index, traceback)
"""

from __future__ import annotations

import asyncio
import queue
import time
import traceback
from dataclasses import asdict, dataclass, field
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from benchmarks.loadgen.clients import (
    Client,
    ClientSpec,
    ConnectFailure,
    Publisher,
    Signaling,
    Subscriber,
    Window,
)
from benchmarks.loadgen.fastrx import FastReceiver, FastRxUnavailable, open_receiver
from benchmarks.loadgen.stats import LatencySamples
from benchmarks.loadgen.whip import WhipClient
from benchmarks.sched import run_in_background

COMMAND_POLL_S = 0.02
CLOSE_TIMEOUT_S = 10.0
KINDS = ("audio", "video")


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """What one generator process runs."""

    index: int
    base_url: str
    cert_path: str
    clients: list[ClientSpec] = field(default_factory=list)
    wait_for_connect: bool = False
    lifetime_s: float = 120.0  # hard cap: the process ends by then whatever happens
    connect_concurrency: int = 16
    target: str = "sfu"  # "sfu" (WHIP/WHEP) or "janus" (the videoroom over the Janus API)
    client_rx_library: str | None = None  # fastrx's built library: subscribers receive in C
    background: bool = True  # SCHED_BATCH: never preempt the server (benchmarks/sched.py)


def process_main(spec: ProcessSpec, commands: Queue[Any], results: Queue[Any]) -> None:
    """Entry point of a spawned generator process."""
    if spec.background:
        run_in_background()  # before any thread starts: they inherit it
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(_run(spec, commands, results))
        else:
            uvloop.run(_run(spec, commands, results))
    except BaseException:
        results.put(("error", spec.index, traceback.format_exc()))


async def _next_command(commands: Queue[Any], deadline: float) -> tuple[Any, ...]:
    for _ in range(int(max(0.0, deadline - time.monotonic()) / COMMAND_POLL_S) + 1):
        try:
            command: tuple[Any, ...] = commands.get_nowait()
            return command
        except queue.Empty:
            await asyncio.sleep(COMMAND_POLL_S)
    return ("stop",)


async def _sleep_until_ns(target_ns: int, deadline: float) -> None:
    wait_s = min((target_ns - time.monotonic_ns()) / 1e9, deadline - time.monotonic())
    if wait_s > 0:
        await asyncio.sleep(wait_s)


async def _run(spec: ProcessSpec, commands: Queue[Any], results: Queue[Any]) -> None:
    deadline = time.monotonic() + spec.lifetime_s
    window = Window()
    latency = {kind: LatencySamples() for kind in KINDS}
    app_latency = {kind: LatencySamples() for kind in KINDS}
    clients = _make_clients(spec, window, latency, app_latency)
    http: Signaling
    if spec.target == "janus":
        from benchmarks.janus.api import JanusHttp

        http = JanusHttp(spec.base_url)
    else:
        http = WhipClient(spec.base_url, Path(spec.cert_path), spec.connect_concurrency)
    tasks: list[asyncio.Task[None]] = []
    fast: FastReceiver | None = None
    client_rx = "python"
    try:
        if spec.wait_for_connect and (await _next_command(commands, deadline))[0] != "connect":
            results.put(("result", spec.index, _report(spec, clients, [], latency, app_latency)))
            return
        gate = asyncio.Semaphore(spec.connect_concurrency)

        async def connect(client: Client) -> ConnectFailure | None:
            async with gate:
                try:
                    return await client.connect(http)
                except Exception as exc:  # a bug in one client must not hide the others
                    return ConnectFailure(client.spec.name, client.spec.role, "internal", repr(exc))

        outcomes = await asyncio.gather(*(connect(c) for c in clients))
        failures = [f for f in outcomes if f is not None]
        tasks = [asyncio.create_task(c.run(deadline)) for c in clients if c.connected]
        results.put(
            (
                "ready",
                spec.index,
                {
                    "requested": len(clients),
                    "connected": sum(c.connected for c in clients),
                    "failures": [asdict(f) for f in failures],
                    "media_port": next(
                        (t.remote_addr[1] for c in clients for t in c.transports), None
                    ),
                    # Janus has a port per PeerConnection, the SFU one for all.
                    "media_ports": sorted(
                        {t.remote_addr[1] for c in clients for t in c.transports}
                    ),
                },
            )
        )
        command = await _next_command(commands, deadline)
        cpu_s = None
        window_datagrams: dict[str, int] | None = None
        if command[0] == "window":
            _, start_ns, end_ns, stop_ns = command
            window.start_ns, window.end_ns, window.active = start_ns, end_ns, True
            for client in clients:
                if isinstance(client, Publisher):
                    client.stop_ns = stop_ns
            fast, client_rx = _start_fast_receive(
                spec, clients, window, latency, app_latency, min(stop_ns, int(deadline * 1e9))
            )
            if fast is not None:
                tasks.append(asyncio.create_task(fast.pump()))
            await _sleep_until_ns(start_ns, deadline)
            cpu_start = time.process_time()
            sent_start, received_start = _datagram_counts(clients, fast)
            await _sleep_until_ns(end_ns, deadline)
            cpu_s = time.process_time() - cpu_start
            sent_end, received_end = _datagram_counts(clients, fast)
            window_datagrams = {
                "sent": sent_end - sent_start,
                "received": received_end - received_start,
            }
            await _sleep_until_ns(stop_ns, deadline)
            if fast is not None:
                fast.finish()
        report = _report(spec, clients, failures, latency, app_latency)
        report["cpu_s"] = cpu_s
        report["window_datagrams"] = window_datagrams
        if spec.wait_for_connect:
            report["client_rx"] = client_rx
            report["client_rx_totals"] = fast.totals if fast is not None else None
    finally:
        if fast is not None:
            fast.finish()  # before the transports close: C reads their sockets
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(
                asyncio.gather(*(c.close(http) for c in clients), return_exceptions=True),
                CLOSE_TIMEOUT_S,
            )
        except TimeoutError:
            pass
        await http.close()
    results.put(("result", spec.index, report))


def _make_clients(
    spec: ProcessSpec,
    window: Window,
    latency: dict[str, LatencySamples],
    app_latency: dict[str, LatencySamples],
) -> list[Client]:
    publisher: type[Publisher] = Publisher
    subscriber: type[Subscriber] = Subscriber
    if spec.target == "janus":
        from benchmarks.janus.clients import JanusPublisher, JanusSubscriber

        publisher, subscriber = JanusPublisher, JanusSubscriber
    clients: list[Client] = []
    for client_spec in spec.clients:
        if client_spec.role == "publisher":
            clients.append(publisher(client_spec, window))
        else:
            clients.append(subscriber(client_spec, window, latency, app_latency))
    return clients


def _start_fast_receive(
    spec: ProcessSpec,
    clients: list[Client],
    window: Window,
    latency: dict[str, LatencySamples],
    app_latency: dict[str, LatencySamples],
    until_ns: int,
) -> tuple[FastReceiver | None, str]:
    """Hand the subscribers' sockets to the C loop until until_ns; (it, "c") or
    (None, "python: why") when the process receives in Python."""
    if spec.client_rx_library is None:
        return None, "python"
    try:
        fast = open_receiver(Path(spec.client_rx_library), clients, window, latency, app_latency)
    except FastRxUnavailable as exc:
        return None, f"python: {exc}"
    fast.start(until_ns)
    return fast, "c"


def _datagram_counts(clients: list[Client], fast: FastReceiver | None) -> tuple[int, int]:
    counts = [c.datagram_counts() for c in clients]
    received = sum(r for _, r in counts) + (fast.datagrams_received() if fast else 0)
    return sum(sent for sent, _ in counts), received


def _report(
    spec: ProcessSpec,
    clients: list[Client],
    failures: list[ConnectFailure],
    latency: dict[str, LatencySamples],
    app_latency: dict[str, LatencySamples],
) -> dict[str, Any]:
    return {
        "index": spec.index,
        "cpu_s": None,
        "window_datagrams": None,
        "failures": [asdict(f) for f in failures],
        "publishers": [c.report() for c in clients if isinstance(c, Publisher)],
        "subscribers": [c.report() for c in clients if isinstance(c, Subscriber)],
        "connect_s": [round(c.connect_s, 4) for c in clients if c.connected],
        "latency_ns": {kind: samples.to_bytes() for kind, samples in latency.items()},
        "app_latency_ns": {kind: samples.to_bytes() for kind, samples in app_latency.items()},
        "latency_overflow": sum(s.overflow for s in latency.values()),
        "kernel_timestamps": all(t.kernel_timestamps for c in clients for t in c.transports),
    }
