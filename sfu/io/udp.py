"""The media port: one non-blocking UDP socket feeding the Worker, plus its timers.

This is the only module of the media plane that touches sockets or the clock.

Datagrams are read in batches per wake-up. The first of each batch is read with its
kernel receive timestamp, which says how long the oldest waiting datagram has been
queued. A stall (a long callback, a DTLS handshake, the scheduler) leaves a backlog
that drains in a moment; a worker that is behind sees its queue stay old. So the
worker sheds video only once the queue has been older than OVERLOAD_LATE_S for
OVERLOAD_SUSTAIN_S, and stops when it is back under OVERLOAD_EXIT_S after at least
OVERLOAD_MIN_EPISODE_S (see Worker.set_overloaded). Batching never waits for a batch
to fill: a wake-up reads what is there and returns.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable

from sfu.io.datapath import create_datapath
from sfu.routing.transport import Address
from sfu.routing.worker import MAX_DATAGRAM, Worker

log = logging.getLogger(__name__)

# NativeDatapath.receive: None, or (datagrams read, [(data, addr)] for the Worker, how
# long the first had waited in the socket in ns or -1, the kernel's drop count or -1).
NativeReceive = Callable[[int], tuple[int, list[tuple[bytes, Address]], int, int] | None]

DTLS_TIMER_S = 0.05
REPORT_TIMER_S = 1.0
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
# Datagrams handled per wake-up before the event loop gets a turn (signaling, timers).
RECV_BATCH = 64
# Batches the fast timer reads before it runs timers (bounded: timers must still run).
DRAIN_BATCHES = 16
# Queueing delay of the oldest waiting datagram: late above, caught up below.
OVERLOAD_LATE_S = 0.050
OVERLOAD_EXIT_S = 0.005
# How long the queue must stay late before shedding starts, and the shortest episode.
OVERLOAD_SUSTAIN_S = 0.500
OVERLOAD_MIN_EPISODE_S = 1.0

# Linux socket options that Python's socket module does not name.
SO_TIMESTAMPNS = 35
SO_RXQ_OVFL = 40
_TIMESPEC = struct.Struct("@qq")
_U32 = struct.Struct("@I")
_ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_U32.size)


class MediaPort:
    """Owns the UDP socket and drives the Worker's timers."""

    def __init__(
        self, host: str, port: int, silence_timeout_s: float, datapath: str = "auto"
    ) -> None:
        self.host = host
        self.port = port
        self.worker = Worker(self._send, silence_timeout_s)
        self.worker.datapath = create_datapath(datapath, self.worker.send)
        # The native datapath reads the socket itself (recvmmsg, RTP handled in C).
        self._native_receive: NativeReceive | None = getattr(self.worker.datapath, "receive", None)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Each timer runs only while the Worker has work for it (see _arm_timers).
        self._fast_timer: asyncio.TimerHandle | None = None
        self._report_timer: asyncio.TimerHandle | None = None
        self._late_since: float | None = None
        self._shedding_since = 0.0
        # Tests replace the clock that queueing delay is measured against.
        self.wall_clock_ns: Callable[[], int] = time.time_ns

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(data, addr)
        except BlockingIOError:
            # The send buffer is full: drop this packet rather than queue without bound.
            self.worker.count("send_failed")
        except OSError:
            self.worker.count("socket_errors")

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
        if not _try_setsockopt(sock, SO_TIMESTAMPNS):
            log.warning("no kernel receive timestamps: overload shedding is off")
        _try_setsockopt(sock, SO_RXQ_OVFL)
        sock.setblocking(False)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._on_readable)
        # The native datapath sends media with sendmmsg on this same socket.
        self.worker.datapath.set_socket(sock.fileno())
        self.worker.on_timer_work = self._arm_timers
        self._arm_timers()
        log.info(
            "media port listening host=%s port=%d datapath=%s",
            self.host,
            self.port,
            self.worker.datapath.name,
        )

    def _on_readable(self) -> None:
        try:
            self._read_batch()
        finally:
            # One flush per batch: the SCTP packets (SACKs above all) that the batch
            # produced go out together instead of one per datagram.
            self.worker.flush_data(time.monotonic())

    def _read_batch(self) -> bool:
        """Read up to RECV_BATCH datagrams; True if the batch was full (more may wait)."""
        sock = self._sock
        if sock is None:
            return False
        if self._native_receive is not None:
            return self._read_native(self._native_receive, sock.fileno())
        worker = self.worker
        try:
            data, ancillary, _, addr = sock.recvmsg(MAX_DATAGRAM + 1, _ANCILLARY_BYTES)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            worker.count("socket_errors")  # ICMP errors (a peer gone) surface here
            return False
        now = time.monotonic()
        self._account(ancillary, now)
        worker.on_datagram(data, (addr[0], addr[1]), now)
        receive = sock.recvfrom
        monotonic = time.monotonic
        for _ in range(RECV_BATCH - 1):
            try:
                data, addr = receive(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                worker.count("socket_errors")
                return False
            worker.on_datagram(data, (addr[0], addr[1]), monotonic())
        return True

    def _read_native(self, receive: NativeReceive, fileno: int) -> bool:
        """The native datapath reads the batch (recvmmsg) and handles the RTP it can in
        C; the rest comes back here, in order, for the Worker."""
        result = receive(fileno)
        if result is None:
            return False
        count, slow, queued_ns, overflow = result
        worker = self.worker
        if queued_ns >= 0:
            queued_s = queued_ns / 1e9
            worker.receive_queue.observe(queued_s)
            self._on_queue_delay(queued_s, time.monotonic())
        if overflow >= 0:
            worker.counters["socket_receive_overflow"] = overflow
        monotonic = time.monotonic
        for data, addr in slow:
            worker.on_datagram(data, addr, monotonic())
        return count == RECV_BATCH

    def _on_fast_timer(self, now: float) -> None:
        """DTLS and SCTP timers. libuv runs due timers before it polls for I/O, so
        read what is already waiting first: a retransmission timer must not fire
        while the acknowledgement that stops it sits unread in the socket."""
        for _ in range(DRAIN_BATCHES):
            if not self._read_batch():
                break
        self.worker.on_dtls_timer(now)
        self.worker.flush_data(now)

    def _account(self, ancillary: list[tuple[int, int, bytes]], now: float) -> None:
        """Overload detection and the kernel's drop counter, from one datagram's cmsgs."""
        for level, kind, value in ancillary:
            if level != socket.SOL_SOCKET:
                continue
            if kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
                seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                queued_s = (self.wall_clock_ns() - (seconds * 1_000_000_000 + nanoseconds)) / 1e9
                self.worker.receive_queue.observe(max(0.0, queued_s))
                self._on_queue_delay(queued_s, now)
            elif kind == SO_RXQ_OVFL and len(value) >= _U32.size:
                # Cumulative count of datagrams the kernel dropped on a full buffer.
                self.worker.counters["socket_receive_overflow"] = _U32.unpack_from(value)[0]

    def _on_queue_delay(self, queued_s: float, now: float) -> None:
        worker = self.worker
        if queued_s < OVERLOAD_EXIT_S:
            self._late_since = None
            if worker.shedding and now - self._shedding_since >= OVERLOAD_MIN_EPISODE_S:
                worker.set_overloaded(False, now)
        elif queued_s > OVERLOAD_LATE_S:
            if self._late_since is None:
                self._late_since = now
            elif not worker.shedding and now - self._late_since >= OVERLOAD_SUSTAIN_S:
                self._shedding_since = now
                worker.set_overloaded(True, now)

    def _arm_timers(self) -> None:
        """Schedule each timer that has work and is not scheduled yet (the Worker calls
        this when work appears). An idle port then never wakes: the 50 ms timer, run
        with nothing to time, was most of an idle server's CPU. Plain loop callbacks,
        not tasks: no task, future or getpid() per tick."""
        loop = self._loop
        if loop is None or self._sock is None:
            return
        if self._fast_timer is None and self.worker.needs_dtls_timer:
            self._fast_timer = loop.call_later(DTLS_TIMER_S, self._on_fast_tick)
        if self._report_timer is None and self.worker.needs_report_timer:
            self._report_timer = loop.call_later(REPORT_TIMER_S, self._on_report_tick)

    def _on_fast_tick(self) -> None:
        self._fast_timer = None
        self._run_timer(self._on_fast_timer)
        self._arm_timers()

    def _on_report_tick(self) -> None:
        self._report_timer = None
        self._run_timer(self.worker.on_report_timer)
        self._arm_timers()

    def _run_timer(self, callback: Callable[[float], None]) -> None:
        try:
            callback(time.monotonic())
        except Exception:
            log.exception("media timer failed")

    async def stop(self) -> None:
        self.worker.on_timer_work = None
        for timer in (self._fast_timer, self._report_timer):
            if timer is not None:
                timer.cancel()
        self._fast_timer = self._report_timer = None
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None


def _try_setsockopt(sock: socket.socket, option: int) -> bool:
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, 1)
    except OSError:
        return False
    return True
