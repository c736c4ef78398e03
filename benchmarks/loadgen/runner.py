"""Run one load: start or find the SFU, spread clients over processes, measure a window.

Order of events (all waits bounded):
  1. the server is started (or found) and its idle RSS read;
  2. the publisher process connects its WHIP clients; then the subscriber processes
     connect their WHEP clients (a viewer is only useful once its publisher exists);
  3. RSS is read again (memory per participant), and a window of `duration_s` is set
     to begin after `warmup_s`: every process counts only packets *sent* inside it;
  4. at the window's start and end the parent samples the server's CPU (/proc) and its
     /healthz counters; each child samples its own CPU;
  5. the children stop shortly after the window, DELETE their sessions and send their
     measurements back; the parent merges them into one result.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import secrets
import sys
import time
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.loadgen import fastrx
from benchmarks.loadgen.clients import ClientSpec
from benchmarks.loadgen.server import SfuUnderTest, udp_socket_drops
from benchmarks.loadgen.stats import LatencySamples, latency_summary
from benchmarks.loadgen.worker import KINDS, ProcessSpec, process_main
from signaling.tokens import SigningKeys

if TYPE_CHECKING:
    from benchmarks.janus.server import JanusUnderTest

# Packets sent in the last moments of the window need a little time to arrive.
DRAIN_S = 0.5
PROCESS_START_S = 20.0  # spawn + imports, generously, on a loaded 2-core machine
CONNECT_BUDGET_S = 30.0
CONNECT_PER_CLIENT_S = 0.1
RESULT_TIMEOUT_S = 30.0


@dataclass
class LoadSpec:
    """One load scenario; subscribers are per room."""

    publishers: int = 1
    subscribers: int = 20
    rooms: int = 1
    duration_s: float = 10.0
    warmup_s: float = 2.0
    video_kbps: float = 1500.0
    audio_only: bool = False
    # Every publisher also watches every other publisher of its room (a meeting grid).
    mesh: bool = False
    client_procs: int = 2
    server_url: str | None = None
    data_dir: Path | None = None
    server_pid: int | None = None
    server_args: list[str] = field(default_factory=list)
    # Self-started server only: "python", "native" or "auto" (the server's choice).
    datapath: str = "auto"
    # "sfu" (this project, WHIP/WHEP) or "janus" (Janus's videoroom, self-started).
    target: str = "sfu"
    # How subscriber processes receive in the window: "c" (fastrx.c; Python when it
    # cannot be built here) or "python".
    client_rx: str = "c"
    # Scheduling of the generator's processes: "batch" (SCHED_BATCH: they never
    # preempt the server when a packet wakes them, benchmarks/sched.py) or "normal".
    client_sched: str = "batch"

    def params(self) -> dict[str, Any]:
        return {
            "publishers": self.publishers,
            "subscribers": self.subscribers,
            "rooms": self.rooms,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "video_kbps": 0 if self.audio_only else self.video_kbps,
            "audio_only": self.audio_only,
            "mesh": self.mesh,
            "client_procs": self.client_procs,
            "datapath_requested": self.datapath,
            "target": self.target,
            "client_rx_requested": self.client_rx,
            "client_sched": self.client_sched,
        }

    @property
    def participants(self) -> int:
        """People: each publisher, and each viewer unless viewers are the publishers."""
        return self.rooms * (self.publishers + (0 if self.mesh else self.subscribers))


def plan_clients(
    spec: LoadSpec, keys: SigningKeys | None, run_id: str, ttl_s: int
) -> tuple[list[ClientSpec], list[ClientSpec]]:
    """Every WHIP publisher and WHEP subscriber session, with its token and path (no
    tokens without keys: Janus's videoroom asks for none)."""

    def issue(identity: str, room: str, role: str) -> str:
        if keys is None:
            return ""
        return keys.issue(identity=identity, room=room, role=role, ttl_s=ttl_s)

    kinds = ("audio",) if spec.audio_only else ("audio", "video")
    publishers: list[ClientSpec] = []
    subscribers: list[ClientSpec] = []
    for r in range(spec.rooms):
        room = f"load-{run_id}-r{r}"
        identities = [f"r{r}-pub{p}" for p in range(spec.publishers)]
        for identity in identities:
            token = issue(identity, room, "participant")
            publishers.append(
                ClientSpec(
                    identity,
                    "publisher",
                    room,
                    token,
                    f"/whip/{room}",
                    kinds,
                    video_kbps=spec.video_kbps,
                )
            )
        viewers: list[tuple[str, str]] = []  # (viewer name, publisher identity)
        if spec.mesh:
            viewers = [
                (f"{me}-sees-{other}", other)
                for me in identities
                for other in identities
                if other != me
            ]
        else:
            for s in range(spec.subscribers):
                for other in identities:
                    suffix = f"-of-{other}" if len(identities) > 1 else ""
                    viewers.append((f"r{r}-sub{s}{suffix}", other))
        for name, source in viewers:
            token = issue(name, room, "viewer")
            # One publisher: the plain WHEP URL (follow the newest); several: one each.
            path = f"/whep/{room}" if len(identities) == 1 else f"/whep/{room}/{source}"
            subscribers.append(
                ClientSpec(name, "subscriber", room, token, path, kinds, source=source)
            )
    return publishers, subscribers


class _Mailbox:
    """Messages from the children, waited for with deadlines."""

    def __init__(
        self, results: Any, processes: Mapping[int, multiprocessing.process.BaseProcess]
    ) -> None:
        self.results = results
        self.processes = processes
        self.inbox: dict[tuple[str, int], Any] = {}
        self.errors: dict[int, str] = {}

    def wait(self, kind: str, indices: list[int], timeout_s: float) -> dict[int, Any]:
        deadline = time.monotonic() + timeout_s
        for _ in range(int(timeout_s / 0.05) + 1):
            missing = [i for i in indices if (kind, i) not in self.inbox and i not in self.errors]
            if not missing or time.monotonic() >= deadline:
                break
            if not any(self.processes[i].is_alive() for i in missing):
                self.drain(0.2)  # a dead child may still have a message in the pipe
                break
            self.drain(0.05)
        return {i: self.inbox[(kind, i)] for i in indices if (kind, i) in self.inbox}

    def drain(self, timeout_s: float) -> None:
        try:
            message = self.results.get(timeout=timeout_s)
        except queue.Empty:
            return
        kind, index, payload = message
        if kind == "error":
            self.errors[index] = payload
        else:
            self.inbox[(kind, index)] = payload


def run_load(spec: LoadSpec) -> dict[str, Any]:
    """Run one load against the SFU and return the measurements (see cli for the keys)."""
    if spec.target == "janus":
        from benchmarks.janus.server import start_janus

        janus = start_janus()
        try:
            return _run_against(spec, janus)
        finally:
            janus.stop()
    if spec.target != "sfu":
        raise ValueError(f"unknown target {spec.target!r}")
    if spec.server_url:
        if spec.data_dir is None:
            raise ValueError("--server needs --data-dir (for the certificate and signing key)")
        server = SfuUnderTest.running(spec.server_url, spec.data_dir, spec.server_pid)
    else:
        extra = list(spec.server_args)
        if spec.datapath != "auto" and "--datapath" not in extra:
            extra += ["--datapath", spec.datapath]
        if "--metrics-port" not in extra:
            extra += ["--metrics-port", "0"]  # the default 9464 may be taken; not measured
        server = SfuUnderTest.self_started_default(extra)
    try:
        if server.self_started:
            server.start()
        return _run_against(spec, server)
    finally:
        if server.self_started:
            server.stop()


def _run_against(spec: LoadSpec, server: SfuUnderTest | JanusUnderTest) -> dict[str, Any]:
    keys: SigningKeys | None = None
    cert_path = ""
    if isinstance(server, SfuUnderTest):
        if not server.signing_key_path.exists():
            raise FileNotFoundError(f"no signing key index at {server.signing_key_path}")
        if not server.cert_path.exists():
            raise FileNotFoundError(f"no certificate at {server.cert_path}")
        health = server.health()
        # /healthz does not say which datapath runs; a self-started server's log does.
        datapath = str(health.get("datapath") or server.logged_datapath() or "unknown")
        keys = SigningKeys.load_or_create(server.data_dir)
        cert_path = str(server.cert_path)
    else:
        datapath = f"janus {server.version}"
    run_id = secrets.token_hex(3)
    connect_budget = CONNECT_BUDGET_S + CONNECT_PER_CLIENT_S * spec.rooms * (
        spec.publishers + spec.subscribers * max(1, spec.publishers)
    )
    lifetime_s = PROCESS_START_S + 2 * connect_budget + spec.warmup_s + spec.duration_s + 30
    publishers, subscribers = plan_clients(spec, keys, run_id, int(lifetime_s) + 600)
    client_rx_library = client_rx_library_for(spec.client_rx)
    rss_before = server.rss_kb()

    process_specs: list[ProcessSpec] = []
    if publishers:
        process_specs.append(
            ProcessSpec(
                0,
                server.base_url,
                cert_path,
                publishers,
                False,
                lifetime_s,
                target=spec.target,
                background=spec.client_sched == "batch",
            )
        )
    procs = max(1, spec.client_procs)
    for n in range(procs):
        share = subscribers[n::procs]
        if share:
            index = len(process_specs)
            process_specs.append(
                ProcessSpec(
                    index,
                    server.base_url,
                    cert_path,
                    share,
                    True,
                    lifetime_s,
                    target=spec.target,
                    client_rx_library=client_rx_library,
                    background=spec.client_sched == "batch",
                )
            )
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    commands = {p.index: ctx.Queue() for p in process_specs}
    processes = {
        p.index: ctx.Process(target=process_main, args=(p, commands[p.index], results), daemon=True)
        for p in process_specs
    }
    mailbox = _Mailbox(results, processes)
    for process in processes.values():
        process.start()
    try:
        return _measure(
            spec, server, datapath, process_specs, commands, mailbox, connect_budget, rss_before
        )
    finally:
        for index in processes:
            commands[index].cancel_join_thread()
            commands[index].put(("stop",))
        # Keep reading while they exit: a child cannot finish while its last message
        # sits unread in the pipe.
        for _ in range(int(RESULT_TIMEOUT_S / 0.05)):
            if not any(p.is_alive() for p in processes.values()):
                break
            mailbox.drain(0.05)
        for process in processes.values():
            if process.is_alive():
                process.terminate()
            process.join(5)


def _measure(
    spec: LoadSpec,
    server: SfuUnderTest | JanusUnderTest,
    datapath: str,
    process_specs: list[ProcessSpec],
    commands: dict[int, Any],
    mailbox: _Mailbox,
    connect_budget: float,
    rss_before: int | None,
) -> dict[str, Any]:
    publisher_procs = [p.index for p in process_specs if not p.wait_for_connect]
    subscriber_procs = [p.index for p in process_specs if p.wait_for_connect]
    ready = mailbox.wait("ready", publisher_procs, PROCESS_START_S + connect_budget)
    for index in subscriber_procs:
        commands[index].put(("connect",))
    ready.update(mailbox.wait("ready", subscriber_procs, PROCESS_START_S + connect_budget))
    all_procs = publisher_procs + subscriber_procs

    start_ns = time.monotonic_ns() + int(spec.warmup_s * 1e9)
    end_ns = start_ns + int(spec.duration_s * 1e9)
    stop_ns = end_ns + int(DRAIN_S * 1e9)
    for index in all_procs:
        commands[index].put(("window", start_ns, end_ns, stop_ns))
    media_ports = sorted({p for r in ready.values() for p in r.get("media_ports", [])})

    _sleep_until(start_ns)
    before = _sample(server, media_ports)
    _sleep_until(end_ns)
    after = _sample(server, media_ports)
    # After the window rather than right after joining: by then the per-track packet
    # caches and socket buffers are as full as they get in steady state.
    rss_after = server.rss_kb()
    reports = mailbox.wait(
        "result", all_procs, (stop_ns - time.monotonic_ns()) / 1e9 + RESULT_TIMEOUT_S
    )
    return _summarize(
        spec, server, datapath, process_specs, ready, reports, mailbox.errors,
        before, after, rss_before, rss_after,
    )  # fmt: skip


def client_rx_library_for(client_rx: str) -> str | None:
    """The built fastrx library for client_rx "c", or None: receive in Python (with a
    warning when C was asked for and cannot be built here)."""
    if client_rx == "python":
        return None
    if client_rx != "c":
        raise ValueError(f"unknown client receive path {client_rx!r}")
    try:
        return str(fastrx.build())
    except fastrx.FastRxUnavailable as exc:
        print(f"warning: subscribers receive in Python: {exc}", file=sys.stderr)
        return None


def _client_rx(reports: dict[int, Any]) -> str | None:
    """ "c" or "python" when every subscriber process received so, else "mixed"."""
    used = {str(r["client_rx"]).split(":")[0] for r in reports.values() if "client_rx" in r}
    if not used:
        return None
    return used.pop() if len(used) == 1 else "mixed"


def _sleep_until(target_ns: int) -> None:
    delay = (target_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


def _sample(server: SfuUnderTest | JanusUnderTest, media_ports: list[int]) -> dict[str, Any]:
    # CPU first and counters second, in both samples, so the /healthz request itself
    # falls inside the window once and the two readings stay symmetric.
    sample: dict[str, Any] = {
        "t": time.monotonic(),
        "cpu_s": server.cpu_seconds(),
        "own_cpu_s": time.process_time(),
    }
    try:
        sample["health"] = server.health()
    except OSError as exc:
        sample["health"] = {"error": str(exc)}
    drops = [d for d in (udp_socket_drops(port) for port in media_ports) if d is not None]
    sample["socket_drops"] = sum(drops) if drops else None
    return sample


def _delta(after: dict[str, Any], before: dict[str, Any], key: str) -> int | None:
    a, b = after["health"].get(key), before["health"].get(key)
    return a - b if isinstance(a, int) and isinstance(b, int) else None


def _merge_latency(reports: dict[int, Any], key: str) -> dict[str, array[int]]:
    merged = {kind: array("q") for kind in KINDS}
    for report in reports.values():
        for kind, data in report[key].items():
            merged[kind].extend(LatencySamples.from_bytes(data))
    return merged


def _summarize(
    spec: LoadSpec,
    server: SfuUnderTest | JanusUnderTest,
    datapath: str,
    process_specs: list[ProcessSpec],
    ready: dict[int, Any],
    reports: dict[int, Any],
    errors: dict[int, str],
    before: dict[str, Any],
    after: dict[str, Any],
    rss_before: int | None,
    rss_after: int | None,
) -> dict[str, Any]:
    elapsed = after["t"] - before["t"]
    requested = sum(len(p.clients) for p in process_specs)
    failures = [f for r in ready.values() for f in r["failures"]]
    connected = sum(r["connected"] for r in ready.values())
    for p in process_specs:
        if p.index not in ready:
            reason = errors.get(p.index, "process never reported ready")
            failures += [
                {"name": c.name, "role": c.role, "stage": "process", "reason": reason[-500:]}
                for c in p.clients
            ]

    out_packets = _delta(after, before, "datagrams_out")
    in_packets = _delta(after, before, "datagrams_in")
    counted = [r.get("window_datagrams") for r in reports.values()]
    client_datagrams = None
    if counted and all(isinstance(c, dict) for c in counted):
        client_datagrams = {
            "sent": sum(c["sent"] for c in counted if c),
            "received": sum(c["received"] for c in counted if c),
        }
    out_source = "server counter datagrams_out"
    if out_packets is None and client_datagrams is not None:
        # A server without counters (Janus): what every client got from it, all kinds.
        out_packets, in_packets = client_datagrams["received"], client_datagrams["sent"]
        out_source = "datagrams the clients received from the server (all kinds)"
    server_cpu = None
    if after["cpu_s"] is not None and before["cpu_s"] is not None:
        server_cpu = after["cpu_s"] - before["cpu_s"]
    generator_cpu = after["own_cpu_s"] - before["own_cpu_s"]
    generator_cpu_complete = len(reports) == len(process_specs)
    generator_cpu_by_process: dict[str, float | None] = {
        "parent": round(100 * generator_cpu / elapsed, 1)
    }
    roles = {p.index: "subscribers" if p.wait_for_connect else "publishers" for p in process_specs}
    for index, report in sorted(reports.items()):
        cpu = report.get("cpu_s")
        generator_cpu_by_process[f"{index}:{roles[index]}"] = (
            None if cpu is None else round(100 * cpu / elapsed, 1)
        )
        if cpu is None:
            generator_cpu_complete = False
        else:
            generator_cpu += cpu

    publishers = [p for r in reports.values() for p in r["publishers"]]
    sent = {kind: sum(p["sent_in_window"].get(kind, 0) for p in publishers) for kind in KINDS}
    sent_by_source = {p["identity"]: p["sent_in_window"] for p in publishers}
    streams = [s for r in reports.values() for sub in r["subscribers"] for s in sub["streams"]]
    lost = sum(s["lost"] for s in streams)
    expected = sum(s["expected"] for s in streams)
    received = sum(s["received"] for s in streams)
    delivery: dict[str, float | None] = {}
    for kind in KINDS:
        got = sum(s["received"] for s in streams if s["kind"] == kind)
        due = sum(
            sent_by_source.get(s["source"], {}).get(kind, 0) for s in streams if s["kind"] == kind
        )
        delivery[kind] = round(got / due, 5) if due else None
    latency = _merge_latency(reports, "latency_ns")
    app_latency = _merge_latency(reports, "app_latency_ns")
    all_latency = latency["audio"] + latency["video"]
    clients = [c for r in reports.values() for c in r["publishers"] + r["subscribers"]]

    def rate(count: int | None) -> float | None:
        return round(count / elapsed, 1) if count is not None and elapsed > 0 else None

    rss_per_participant = None
    if rss_before is not None and rss_after is not None and spec.participants:
        rss_per_participant = round((rss_after - rss_before) / 1024 / spec.participants, 3)
    return {
        "scenario": spec.params(),
        "datapath": datapath,
        "client_rx": _client_rx(reports),
        "client_rx_by_process": {
            str(i): r["client_rx"] for i, r in sorted(reports.items()) if "client_rx" in r
        },
        # STUN/DTLS the C loop could not queue for Python, and RTP of streams it had no
        # room for: both should stay 0.
        "client_rx_dropped": sum(
            t.get("queue_dropped", 0) + t.get("untracked", 0)
            for t in (r.get("client_rx_totals") or {} for r in reports.values())
        ),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "window_s": round(elapsed, 3),
        "clients": {
            "requested": requested,
            "connected": connected,
            "failed": failures,
            "participants": spec.participants,
        },
        "out_pps": rate(out_packets),
        "in_pps": rate(in_packets),
        "out_pps_source": out_source,
        "client_datagrams": client_datagrams,
        "received_pps": round(received / spec.duration_s, 1),
        "cpu_us_per_packet": (
            round(server_cpu * 1e6 / out_packets, 2)
            if server_cpu is not None and out_packets
            else None
        ),
        "server_cpu_percent": round(100 * server_cpu / elapsed, 1)
        if server_cpu is not None
        else None,
        "generator_cpu_percent": round(100 * generator_cpu / elapsed, 1),
        "generator_cpu_complete": generator_cpu_complete,
        "generator_cpu_percent_by_process": generator_cpu_by_process,
        "generator_processes": len(process_specs),
        "rss_mb_per_participant": rss_per_participant,
        "rss_mb": {
            "before": round(rss_before / 1024, 1) if rss_before is not None else None,
            "after": round(rss_after / 1024, 1) if rss_after is not None else None,
        },
        "latency_us": latency_summary(all_latency),
        "latency_us_by_kind": {kind: latency_summary(latency[kind]) for kind in KINDS},
        "app_latency_us": latency_summary(app_latency["audio"] + app_latency["video"]),
        "latency_clock": (
            "kernel receive timestamp"
            if all(r.get("kernel_timestamps") for r in reports.values())
            else "user-space receive time"
        ),
        "loss": round(lost / expected, 6) if expected else None,
        "lost": lost,
        "expected": expected,
        "received": received,
        "out_of_order": sum(s["out_of_order"] for s in streams),
        "duplicates": sum(s["duplicates"] for s in streams),
        "delivery": delivery,
        "sent": sent,
        "streams": len(streams),
        "silent_streams": sum(1 for s in streams if s["received"] == 0),
        "keyframe_requests": sum(p["keyframe_requests"] for p in publishers),
        "pacing_skips": sum(p["pacing_skips"] for p in publishers),
        "client_socket_drops": sum(c["socket_drops"] for c in clients),
        "client_send_errors": sum(c["send_errors"] for c in clients),
        "client_srtp_errors": sum(c["srtp_errors"] for c in clients),
        "server_socket_drops": (
            after["socket_drops"] - before["socket_drops"]
            if after["socket_drops"] is not None and before["socket_drops"] is not None
            else None
        ),
        "server": {
            "url": server.base_url,
            "pid": server.pid,
            "self_started": server.self_started,
            "sessions": after["health"].get("sessions"),
            "counters_delta": {
                key: value - before["health"].get(key, 0)
                for key, value in after["health"].items()
                if isinstance(value, int) and value != before["health"].get(key, 0)
            },
        },
        "connect_ms": _connect_summary([s for r in reports.values() for s in r["connect_s"]]),
        "errors": {str(k): v[-2000:] for k, v in errors.items()},
        "generator": {"pid": os.getpid(), "cpu_count": os.cpu_count()},
    }


def _connect_summary(seconds: list[float]) -> dict[str, float | None]:
    """Offer to SRTP keys, per client, in milliseconds."""
    ordered = sorted(seconds)
    if not ordered:
        return {"p50": None, "max": None}
    return {"p50": round(ordered[len(ordered) // 2] * 1000, 1), "max": round(ordered[-1] * 1000, 1)}
