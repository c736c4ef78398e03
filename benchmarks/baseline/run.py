"""Measure the bare C relay: the physical bound the SFU's native datapath is held to.

    python -m benchmarks.baseline                 # 230 packets/s -> 20 subscribers, then max
    python -m benchmarks.baseline --mode paced --rate 500 --subscribers 40

A publisher socket sends AES-128-GCM SRTP packets (1200-byte payloads, in bursts like a
video frame's) to benchmarks/baseline/relay.c on loopback; the relay forwards each one
to every subscriber socket under that subscriber's own key and SSRC. Over a fixed window
after a warm-up the relay's CPU time is divided by the datagrams it sent.

- paced: the publisher sends at the given rate and the subscribers are read, as the
  load generator's would be. Latency is measured as the load generator measures it:
  from the publisher's send (taken before it protects the packet) to the kernel's
  receive timestamp on the subscriber's socket (SO_TIMESTAMPNS), matched by the
  sequence number, which the relay leaves as it is and SRTP leaves in clear.
- max: the publisher sends as fast as it can; the relay runs flat out and drops what its
  socket cannot hold. Subscribers are not read (their full queues drop the excess), so
  the publisher has a core to itself.

CPU time is the relay's CLOCK_PROCESS_CPUTIME_ID: utime+stime at nanosecond resolution.
utime+stime from /proc/<pid>/stat, in 10 ms ticks, is reported beside it: at scenario 1's
rate the relay uses only tens of milliseconds per window, too few ticks to rely on.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import selectors
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pylibsrtp import Policy, Session

from benchmarks.baseline.build import BUILD_DIR, build, srtp_library
from benchmarks.loadgen.stats import latency_summary
from benchmarks.sched import in_background, run_in_foreground

KEY_BYTES = 28  # AES-128 master key + 12-byte salt (RFC 7714)
RTP_HEADER = struct.Struct("!BBHII")
PAYLOAD_TYPE = 96
TS_STEP = 3000  # 90 kHz clock, 30 bursts (frames) per second
MAX_PAYLOAD = 1344  # pylibsrtp's Session protects at most 1356 bytes of RTP
REPLY_TIMEOUT_S = 5.0
LIFETIME_MARGIN_S = 30.0
DRAIN_LIMIT = 256  # datagrams read from one subscriber socket per wake-up
MAX_BATCH = 64  # datagrams sent per step in max mode
CLK_TCK = os.sysconf("SC_CLK_TCK")
SO_TIMESTAMPNS = 35  # Linux; Python's socket module does not name it
_TIMESPEC = struct.Struct("@qq")
ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size)


@dataclass(frozen=True, slots=True)
class BaselineSpec:
    """One measurement. The defaults are scenario 1's shape: 30 VP8 frames/s of 6
    packets plus 50 Opus packets/s is ~230 packets/s in, to 20 subscribers."""

    subscribers: int = 20
    rate_pps: float | None = 230.0  # None: as fast as the publisher can send
    burst: int = 6  # packets sent back to back, like one video frame's
    payload_bytes: int = 1200
    duration_s: float = 10.0
    warmup_s: float = 1.0

    def __post_init__(self) -> None:
        if self.subscribers < 1:
            raise ValueError("need at least one subscriber")
        if self.rate_pps is not None and self.rate_pps <= 0:
            raise ValueError("rate_pps must be positive")
        if not 1 <= self.burst <= MAX_BATCH:
            raise ValueError(f"burst must be 1..{MAX_BATCH}")
        if not 16 <= self.payload_bytes <= MAX_PAYLOAD:
            raise ValueError(f"payload_bytes must be 16..{MAX_PAYLOAD}")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("duration_s must be positive and warmup_s not negative")


@dataclass(slots=True)
class Subscriber:
    """One receiving socket with the key and SSRC the relay protects its copies with."""

    sock: socket.socket
    ssrc: int
    key: bytes
    received: int = 0
    latencies_ns: list[int] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])


def open_subscribers(count: int) -> list[Subscriber]:
    subscribers = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        subscribers.append(Subscriber(sock, secrets.randbits(32), secrets.token_bytes(KEY_BYTES)))
    return subscribers


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The relay's counters and CPU at one moment."""

    at_s: float
    counters: dict[str, int]
    proc_ticks: int


class Relay:
    """The relay process: started with its keys, asked for counters, always stopped."""

    def __init__(
        self, binary: Path, rx_key: bytes, subscribers: list[Subscriber], lifetime_s: float
    ) -> None:
        self.proc = subprocess.Popen(
            [str(binary), f"{lifetime_s:.3f}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        run_in_foreground(self.proc.pid)  # it inherited the harness's SCHED_BATCH
        self._pending = b""
        self._selector = selectors.DefaultSelector()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)
        lines = [f"rx {rx_key.hex()}"]
        lines += [f"tx {s.port} {s.ssrc} {s.key.hex()}" for s in subscribers]
        try:
            try:
                self.proc.stdin.write(("\n".join([*lines, "end"]) + "\n").encode())
                self.proc.stdin.close()
            except BrokenPipeError:
                pass  # it exited already: _line says why
            ready = self._line("ready").split()
        except BaseException:
            self.stop()
            raise
        self.port = int(ready[1])
        self.srtp_version = " ".join(ready[2:])

    def _line(self, kind: str) -> str:
        """The next line starting with `kind`, within REPLY_TIMEOUT_S."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while (remaining := deadline - time.monotonic()) > 0:
            while b"\n" in self._pending:
                line, self._pending = self._pending.split(b"\n", 1)
                if line.startswith(kind.encode() + b" "):
                    return line.decode()
            if not self._selector.select(remaining):
                continue
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise self._exited()
            self._pending += chunk
        raise RuntimeError(f"the relay did not answer '{kind}' within {REPLY_TIMEOUT_S:g} s")

    def _exited(self) -> RuntimeError:
        self._end()
        assert self.proc.stderr is not None
        message = self.proc.stderr.read().decode(errors="replace").strip()
        return RuntimeError(f"the relay exited: {message or 'no message'}")

    def _proc_ticks(self) -> int:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)

    def snapshot(self) -> Snapshot:
        self.proc.send_signal(signal.SIGUSR1)
        words = self._line("stats").split()[1:]
        counters = {key: int(value) for key, value in (word.split("=") for word in words)}
        return Snapshot(time.monotonic(), counters, self._proc_ticks())

    def _end(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=REPLY_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=REPLY_TIMEOUT_S)

    def stop(self) -> None:
        self._end()
        self._selector.close()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


class Publisher:
    """An SRTP sender with its own key, SSRC and sequence numbers."""

    def __init__(self, key: bytes, payload_bytes: int, timed: bool = True) -> None:
        policy = Policy(
            key=key,
            ssrc_type=Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
        )
        self.session = Session(policy)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.ssrc = secrets.randbits(32)
        self.seq = secrets.randbelow(0x10000)
        self.ts = secrets.randbits(32)
        self.payload = os.urandom(payload_bytes)
        self.sent = 0
        # Wall-clock send time by sequence number (the kernel stamps in wall time);
        # not kept when sending flat out, where nothing reads it.
        self.sent_at: dict[int, int] = {}
        self.timed = timed

    def send_burst(self, addr: tuple[str, int], count: int) -> None:
        """`count` packets back to back, the marker bit on the last, like a frame."""
        for index in range(count):
            marker = 0x80 if index == count - 1 else 0
            header = RTP_HEADER.pack(0x80, PAYLOAD_TYPE | marker, self.seq, self.ts, self.ssrc)
            if self.timed:
                self.sent_at[self.seq] = time.time_ns()
            self.sock.sendto(self.session.protect(header + self.payload), addr)
            self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + TS_STEP) & 0xFFFFFFFF
        self.sent += count

    def close(self) -> None:
        self.sock.close()


def _drain(subscriber: Subscriber, buffer: bytearray, sent_at: dict[int, int]) -> None:
    for _ in range(DRAIN_LIMIT):
        try:
            size, ancillary, _, _ = subscriber.sock.recvmsg_into([buffer], ANCILLARY_BYTES)
        except BlockingIOError:
            return
        subscriber.received += 1
        sent_ns = sent_at.get(buffer[2] << 8 | buffer[3]) if size >= 12 else None
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and sent_ns is not None:
                seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                subscriber.latencies_ns.append(seconds * 1_000_000_000 + nanoseconds - sent_ns)


def _drive(
    spec: BaselineSpec,
    publisher: Publisher,
    addr: tuple[str, int],
    selector: selectors.BaseSelector,
    until_s: float,
) -> None:
    """Send until `until_s`: paced (reading the subscribers between bursts) or flat out."""
    if spec.rate_pps is None:
        while time.monotonic() < until_s:
            publisher.send_burst(addr, MAX_BATCH)
        return
    interval_s = spec.burst / spec.rate_pps
    buffer = bytearray(2048)
    next_send_s = time.monotonic()
    while (now := time.monotonic()) < until_s:
        if now >= next_send_s:
            publisher.send_burst(addr, spec.burst)
            # Behind by more than a burst (the machine was busy): skip, never flood.
            next_send_s = max(next_send_s + interval_s, now - interval_s)
            continue
        for key, _ in selector.select(min(next_send_s, until_s) - now):
            _drain(key.data, buffer, publisher.sent_at)


def run_baseline(spec: BaselineSpec, relay_binary: Path | None = None) -> dict[str, Any]:
    """One measurement of the relay; raises BaselineUnavailable if it cannot be built.
    The publisher and subscribers here run SCHED_BATCH, as the load generator's do."""
    binary = relay_binary or build()
    with in_background():
        return _run_baseline(spec, binary)


def _run_baseline(spec: BaselineSpec, binary: Path) -> dict[str, Any]:
    rx_key = secrets.token_bytes(KEY_BYTES)
    subscribers = open_subscribers(spec.subscribers)
    publisher = Publisher(rx_key, spec.payload_bytes, timed=spec.rate_pps is not None)
    selector = selectors.DefaultSelector()
    relay: Relay | None = None
    try:
        lifetime_s = spec.warmup_s + spec.duration_s + LIFETIME_MARGIN_S
        relay = Relay(binary, rx_key, subscribers, lifetime_s)
        addr = ("127.0.0.1", relay.port)
        if spec.rate_pps is not None:
            for subscriber in subscribers:
                selector.register(subscriber.sock, selectors.EVENT_READ, subscriber)
        _drive(spec, publisher, addr, selector, time.monotonic() + spec.warmup_s)
        start = relay.snapshot()
        sent_before = publisher.sent
        publisher.sent_at.clear()  # latency counts packets sent inside the window
        for subscriber in subscribers:
            subscriber.received = 0
            subscriber.latencies_ns.clear()
        _drive(spec, publisher, addr, selector, start.at_s + spec.duration_s)
        end = relay.snapshot()
        sent = publisher.sent - sent_before
        return _summary(spec, relay.srtp_version, start, end, sent, subscribers)
    finally:
        if relay is not None:
            relay.stop()
        selector.close()
        publisher.close()
        for subscriber in subscribers:
            subscriber.sock.close()


def _summary(
    spec: BaselineSpec,
    srtp_version: str,
    start: Snapshot,
    end: Snapshot,
    sent: int,
    subscribers: list[Subscriber],
) -> dict[str, Any]:
    window_s = end.at_s - start.at_s
    delta = {key: end.counters[key] - start.counters[key] for key in end.counters}
    forwarded = delta["forwarded"]
    cpu_s = delta["cpu_ns"] / 1e9
    proc_cpu_s = (end.proc_ticks - start.proc_ticks) / CLK_TCK
    paced = spec.rate_pps is not None
    samples = [ns for s in subscribers for ns in s.latencies_ns]
    return {
        "mode": "paced" if paced else "max",
        "subscribers": spec.subscribers,
        "payload_bytes": spec.payload_bytes,
        "sent_pps": round(sent / window_s, 1),
        "in_pps": round(delta["received"] / window_s, 1),
        "out_pps": round(forwarded / window_s, 1),
        "cpu_us_per_packet": round(cpu_s * 1e6 / forwarded, 3) if forwarded else None,
        "cpu_us_per_packet_proc_stat": (
            round(proc_cpu_s * 1e6 / forwarded, 3) if forwarded else None
        ),
        "cpu_percent": round(cpu_s / window_s * 100, 2),
        "subscriber_received_pps": (
            round(sum(s.received for s in subscribers) / window_s, 1) if paced else None
        ),
        "latency_us": latency_summary(samples) if paced and samples else None,
        "unprotect_errors": delta["unprotect_errors"],
        "protect_errors": delta["protect_errors"],
        "send_errors": delta["send_errors"],
        "window_s": round(window_s, 3),
        "spec": asdict(spec),
        "srtp": f"{srtp_version} (OpenSSL), {srtp_library().name} from the pylibsrtp wheel",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def median_of_runs(spec: BaselineSpec, runs: int) -> dict[str, Any]:
    """`runs` measurements with one build; the medians of the headline numbers."""
    binary = build()
    results = [run_baseline(spec, binary) for _ in range(runs)]

    def median(key: str) -> float | None:
        values = [r[key] for r in results if r[key] is not None]
        return float(statistics.median(values)) if values else None

    return {
        "out_pps": median("out_pps"),
        "in_pps": median("in_pps"),
        "cpu_us_per_packet": median("cpu_us_per_packet"),
        "cpu_us_per_packet_proc_stat": median("cpu_us_per_packet_proc_stat"),
        "latency_us": _median_latency(results),
        "subscribers": spec.subscribers,
        "runs": results,
    }


def _median_latency(results: list[dict[str, Any]]) -> dict[str, float] | None:
    """Each quantile's median over the runs that measured latency."""
    measured = [r["latency_us"] for r in results if r.get("latency_us")]
    if not measured:
        return None
    return {
        q: float(statistics.median(m[q] for m in measured)) for q in ("p50", "p95", "p99", "max")
    }


def _describe(result: dict[str, Any]) -> str:
    latency = result.get("latency_us")
    rate = "max rate" if result["mode"] == "max" else f"{result['in_pps']:,.0f} packets/s in"
    return (
        f"{rate} -> {result['subscribers']} subscribers: {result['out_pps']:,.0f} "
        f"datagrams/s out, {result['cpu_us_per_packet']} µs CPU per datagram "
        f"({result['cpu_us_per_packet_proc_stat']} µs from /proc ticks), "
        f"{result['cpu_percent']} % of a core"
        + (f", latency p50/p99 {latency['p50']}/{latency['p99']} µs" if latency else "")
    )


def main(argv: list[str] | None = None) -> int:
    defaults = BaselineSpec()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.baseline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--mode", choices=("paced", "max", "both"), default="both")
    parser.add_argument("--subscribers", type=int, default=defaults.subscribers)
    parser.add_argument("--rate", type=float, default=defaults.rate_pps, help="packets/s in")
    parser.add_argument("--burst", type=int, default=defaults.burst)
    parser.add_argument("--payload-bytes", type=int, default=defaults.payload_bytes)
    parser.add_argument("--duration", type=float, default=defaults.duration_s, help="paced, s")
    parser.add_argument("--max-duration", type=float, default=3.0, help="max mode, s")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    binary = build(BUILD_DIR)
    common = {
        "subscribers": args.subscribers,
        "burst": args.burst,
        "payload_bytes": args.payload_bytes,
    }
    out: dict[str, Any] = {}
    if args.mode in ("paced", "both"):
        spec = BaselineSpec(rate_pps=args.rate, duration_s=args.duration, **common)
        out["paced"] = run_baseline(spec, binary)
        print(_describe(out["paced"]), file=sys.stderr)
    if args.mode in ("max", "both"):
        spec = BaselineSpec(rate_pps=None, duration_s=args.max_duration, **common)
        out["max"] = run_baseline(spec, binary)
        print(_describe(out["max"]), file=sys.stderr)
    text = json.dumps(out, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")
    return 0
