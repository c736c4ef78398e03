"""The subscribers' receive loop in C (fastrx.c), for the measured window.

In Python every forwarded packet costs a subscriber process an event-loop wakeup share,
a recvmsg, a cffi unprotect, a header parse and the statistics; at 40 subscribers that
is most of a core taken from the server it measures. When the window is announced, a
worker hands all its subscriber sockets to one C loop on a thread (ctypes releases the
GIL) that does the same per datagram, and afterwards puts its counts back into the same
ReceivedStream, StreamStats, LatencySamples and transport counters, so everything
downstream of ``Subscriber.report`` is unchanged. STUN and DTLS datagrams (consent
responses, a full ICE server's checks) still reach the Python transport, through a
bounded queue drained every DRAIN_INTERVAL_S.

The library is compiled at run time like benchmarks/baseline: gcc, against the
OpenSSL-backed libsrtp inside the pylibsrtp wheel (already loaded by sfu.proto.srtp;
the dynamic linker maps the same file once, so srtp_t handles are shared).
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import os
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.baseline.build import BaselineUnavailable, compile_into, compiler, srtp_library
from benchmarks.loadgen.clients import Client, ReceivedStream, Subscriber, Window
from benchmarks.loadgen.offer import AUDIO_PT
from benchmarks.loadgen.stats import LatencySamples, StreamStats
from benchmarks.loadgen.transport import MediaTransport
from sfu.proto.srtp import MAX_PACKET, SrtpPair

SOURCE = Path(__file__).resolve().with_name("fastrx.c")
BUILD_DIR = Path(__file__).resolve().parents[1] / "results" / "fastrx"
ABI_VERSION = 1
KINDS = ("audio", "video")  # fastrx.c's kind codes 0 and 1
HISTORY = 4096  # StreamStats's duplicate history, as fastrx.c
DRAIN_INTERVAL_S = 0.1
STOP_TIMEOUT_S = 5.0
# fastrx.c queues at most 256 datagrams; a drain takes what is there and a little more.
MAX_DRAIN = 512
POP_BUFFER_BYTES = 4096
STREAMS_PER_SUBSCRIBER = 16  # two in practice; room for RTX or a renegotiation


class FastRxUnavailable(Exception):
    """The C receive loop cannot be built or used here."""


class _SeqStats(ctypes.Structure):
    _fields_ = [
        ("base", ctypes.c_int64),
        ("highest", ctypes.c_int64),
        ("received", ctypes.c_int64),
        ("expected", ctypes.c_int64),
        ("out_of_order", ctypes.c_int64),
        ("duplicates", ctypes.c_int64),
    ]


class _StreamInfo(ctypes.Structure):
    _fields_ = [
        ("subscriber", ctypes.c_int32),
        ("ssrc", ctypes.c_uint32),
        ("kind", ctypes.c_int32),
        ("reserved", ctypes.c_int32),
        ("received_total", ctypes.c_int64),
        ("bad_payloads", ctypes.c_int64),
        ("stats", _SeqStats),
    ]


class _SocketInfo(ctypes.Structure):
    _fields_ = [
        ("datagrams_received", ctypes.c_int64),
        ("srtp_errors", ctypes.c_int64),
        ("roc_resyncs", ctypes.c_int64),
        ("socket_drops", ctypes.c_int64),
    ]


class _Totals(ctypes.Structure):
    _fields_ = [
        ("queued", ctypes.c_int64),
        ("queue_dropped", ctypes.c_int64),
        ("untracked", ctypes.c_int64),
        ("traced", ctypes.c_int64),
    ]


_Seen = ctypes.c_int64 * HISTORY
_Caps = ctypes.c_int64 * len(KINDS)
_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_INT = ctypes.c_int
_PROTOTYPES: dict[str, tuple[type | None, list[type]]] = {
    "fastrx_abi": (_INT, []),
    "fastrx_sizeof": (_INT, [_INT]),
    "fastrx_new": (_P, [_INT, _INT, _INT, _INT, _P, _P]),
    "fastrx_free": (None, [_P]),
    "fastrx_set_subscriber": (_INT, [_P, _INT, _P, _P, _INT, _P]),
    "fastrx_add_socket": (_INT, [_P, _INT, _P, _INT, _INT, _P, _INT]),
    "fastrx_put_stream": (_INT, [_P, _P, _P]),
    "fastrx_set_trace": (_INT, [_P, _P, _I64]),
    "fastrx_run": (_INT, [_P, _I64, _I64, _I64]),
    "fastrx_stop": (None, [_P]),
    "fastrx_datagrams_received": (_I64, [_P]),
    "fastrx_pop": (_INT, [_P, _P, _INT, _P, _P, _P]),
    "fastrx_stream_count": (_INT, [_P]),
    "fastrx_get_stream": (_INT, [_P, _INT, _P, _P]),
    "fastrx_get_socket": (_INT, [_P, _INT, _P]),
    "fastrx_get_totals": (None, [_P, _P]),
    "fastrx_samples": (_I64, [_P, _INT, _INT, _P, _P]),
    "fastrx_seq_feed": (None, [_P, _P, _P, _INT]),
}


def compile_command(target: Path) -> list[str]:
    """How fastrx.c is compiled into the shared library ``target``."""
    library = srtp_library()
    return [
        compiler(),
        "-O2",
        "-Wall",
        "-Wextra",
        "-shared",
        "-fPIC",
        "-fvisibility=hidden",
        "-o",
        str(target),
        str(SOURCE),
        f"-L{library.parent}",
        f"-l:{library.name}",
        f"-Wl,-rpath,{library.parent}",
    ]


def build(out_dir: Path = BUILD_DIR) -> Path:
    """Compile fastrx.c into out_dir (once per source, libsrtp and compiler)."""
    try:
        command = compile_command(out_dir / "fastrx.so")
    except BaselineUnavailable as exc:
        raise FastRxUnavailable(str(exc)) from exc
    digest = hashlib.sha256(
        SOURCE.read_bytes() + "\0".join(command[:1] + command[-3:]).encode()
    ).hexdigest()[:16]
    target = out_dir / f"fastrx-{digest}.so"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / f".fastrx-{digest}.{os.getpid()}.so"
    try:
        return compile_into(compile_command(partial), partial, target, "fastrx.c")
    except BaselineUnavailable as exc:
        raise FastRxUnavailable(str(exc)) from exc


def load(path: Path) -> ctypes.CDLL:
    """The built library with its prototypes, checked against this module's layouts."""
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise FastRxUnavailable(f"loading {path} failed: {exc}") from exc
    for name, (restype, argtypes) in _PROTOTYPES.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    sizes = [ctypes.sizeof(t) for t in (_SeqStats, _StreamInfo, _SocketInfo, _Totals)]
    if lib.fastrx_abi() != ABI_VERSION or [lib.fastrx_sizeof(i) for i in range(4)] != sizes:
        raise FastRxUnavailable(f"{path} does not match {__name__}")
    return lib


def _measurable(subscriber: Subscriber) -> bool:
    """What fastrx.c reproduces: Subscriber's own on_rtp, RTCP ignored, audio/video."""
    kinds = {*subscriber.kind_by_ssrc.values(), *subscriber.kind_by_pt.values()}
    kinds.update(s.kind for s in subscriber.streams.values())
    return (
        type(subscriber).on_rtp is Subscriber.on_rtp
        and type(subscriber).on_rtcp is Client.on_rtcp
        and kinds <= set(KINDS)
    )


def _seen_of(stats: StreamStats) -> ctypes.Array[ctypes.c_int64]:
    # StreamStats's own history, shared (not copied) with C while a call runs.
    if len(stats._seen) != HISTORY:
        raise FastRxUnavailable("StreamStats keeps a history fastrx.c does not")
    return _Seen.from_buffer(stats._seen)


class FastReceiver:
    """The subscriber sockets of one process, read by fastrx.c on a thread for a while.

    ``start`` takes the sockets from the event loop, ``pump`` (a task) delivers queued
    STUN/DTLS to their transports, ``finish`` stops the loop, puts every count back
    into the Python objects and returns the sockets to the event loop.
    """

    def __init__(
        self,
        lib: ctypes.CDLL,
        subscribers: Sequence[Subscriber],
        window: Window,
        latency: dict[str, LatencySamples],
        app_latency: dict[str, LatencySamples],
        trace_packets: int = 0,
    ) -> None:
        self._lib = lib
        self._window = window
        self._latency = latency
        self._app_latency = app_latency
        self.subscribers = [s for s in subscribers if _measurable(s)]
        # The SrtpPair is held too: C uses its inbound srtp_t until finish().
        self._sockets: list[tuple[MediaTransport, SrtpPair]] = [
            (t, t.srtp)
            for s in self.subscribers
            for t in s.transports
            if t.srtp is not None and not t.closed and t.on_rtp == s.on_rtp
        ]
        if not self._sockets:
            raise FastRxUnavailable("no subscriber transport with SRTP keys to hand over")
        kernel_caps = _Caps(*(max(0, latency[k].cap - len(latency[k].values)) for k in KINDS))
        app_caps = _Caps(*(max(0, app_latency[k].cap - len(app_latency[k].values)) for k in KINDS))
        self._handle: int | None = lib.fastrx_new(
            len(self._sockets),
            len(self.subscribers),
            STREAMS_PER_SUBSCRIBER * len(self.subscribers),
            MAX_PACKET,
            kernel_caps,
            app_caps,
        )
        if not self._handle:
            raise FastRxUnavailable("fastrx_new failed (out of memory or descriptors)")
        self._trace = (ctypes.c_int64 * (3 * trace_packets))()
        self._thread: threading.Thread | None = None
        self._until_ns = 0
        self._finished = False
        self.status: int | None = None  # fastrx_run's: 0 time up, 1 stopped, -1 error
        self.totals: dict[str, int] = {}
        try:
            self._hand_over(trace_packets)
        except BaseException:
            self._free()
            raise

    def _hand_over(self, trace_packets: int) -> None:
        lib, handle = self._lib, self._handle
        for index, subscriber in enumerate(self.subscribers):
            ssrcs = list(subscriber.kind_by_ssrc)
            pt_kinds = (ctypes.c_uint8 * 128)(
                *(
                    KINDS.index(
                        subscriber.kind_by_pt.get(pt, "audio" if pt == AUDIO_PT else "video")
                    )
                    for pt in range(128)
                )
            )
            status = lib.fastrx_set_subscriber(
                handle,
                index,
                (ctypes.c_uint32 * max(1, len(ssrcs)))(*ssrcs),
                (ctypes.c_uint8 * max(1, len(ssrcs)))(
                    *(KINDS.index(subscriber.kind_by_ssrc[s]) for s in ssrcs)
                ),
                len(ssrcs),
                pt_kinds,
            )
            if status != 0:
                raise FastRxUnavailable("fastrx_set_subscriber failed")
            for ssrc, stream in subscriber.streams.items():
                self._put_stream(index, ssrc, stream)
        for transport, srtp in self._sockets:
            host, port = transport.remote_addr
            family = transport.sock.family
            address = socket.inet_pton(family, host)
            added = lib.fastrx_add_socket(
                handle,
                transport.sock.fileno(),
                srtp.inbound_handle(),
                self.subscribers.index(self._owner(transport)),
                int(family),
                address,
                port,
            )
            if added < 0:
                raise FastRxUnavailable("fastrx_add_socket failed")
        if trace_packets:
            lib.fastrx_set_trace(handle, self._trace, trace_packets)

    def _owner(self, transport: MediaTransport) -> Subscriber:
        return next(s for s in self.subscribers if transport in s.transports)

    def _put_stream(self, index: int, ssrc: int, stream: ReceivedStream) -> None:
        stats = stream.stats
        counts = stats.counts
        info = _StreamInfo(
            index,
            ssrc,
            KINDS.index(stream.kind),
            0,
            stream.received_total,
            stream.bad_payloads,
            _SeqStats(
                stats._base,
                stats._highest,
                counts.received,
                counts.expected,
                counts.out_of_order,
                counts.duplicates,
            ),
        )
        if self._lib.fastrx_put_stream(self._handle, ctypes.byref(info), _seen_of(stats)) != 0:
            raise FastRxUnavailable("fastrx_put_stream failed")

    # -- while it runs ------------------------------------------------------------

    def start(self, until_ns: int) -> None:
        """Take the sockets and receive on a thread until until_ns (monotonic) or finish."""
        if self._thread is not None or self._handle is None:
            raise RuntimeError("a FastReceiver runs once")
        for transport, _ in self._sockets:
            transport.pause_reading()
        self._until_ns = until_ns
        self._thread = threading.Thread(
            target=self._run,
            args=(self._window.start_ns, self._window.end_ns, until_ns),
            name="fastrx",
            daemon=True,
        )
        self._thread.start()

    def _run(self, start_ns: int, end_ns: int, until_ns: int) -> None:
        self.status = self._lib.fastrx_run(self._handle, start_ns, end_ns, until_ns)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def datagrams_received(self) -> int:
        """Datagrams from the servers read by C so far (not yet in the transports)."""
        if self._handle is None or self._finished:
            return 0
        return int(self._lib.fastrx_datagrams_received(self._handle))

    def drain(self) -> int:
        """Deliver the queued STUN/DTLS datagrams to their transports; how many."""
        if self._handle is None:
            return 0
        buffer = ctypes.create_string_buffer(POP_BUFFER_BYTES)
        index, kernel_ns, app_ns = ctypes.c_int32(), ctypes.c_int64(), ctypes.c_int64()
        delivered = 0
        for _ in range(MAX_DRAIN):
            size = self._lib.fastrx_pop(
                self._handle,
                buffer,
                POP_BUFFER_BYTES,
                ctypes.byref(index),
                ctypes.byref(kernel_ns),
                ctypes.byref(app_ns),
            )
            if size <= 0:
                break
            transport = self._sockets[index.value][0]
            if not transport.closed:
                transport.on_datagram(buffer.raw[:size], kernel_ns.value, app_ns.value)
            delivered += 1
        return delivered

    async def pump(self, interval_s: float = DRAIN_INTERVAL_S) -> None:
        """Drain every interval_s until the loop has ended (then once more)."""
        remaining_s = max(0.0, (self._until_ns - time.monotonic_ns()) / 1e9)
        for _ in range(int(remaining_s / interval_s) + 2):
            self.drain()
            if not self.running:
                break
            await asyncio.sleep(interval_s)
        self.drain()

    def stop(self) -> None:
        """Ask the loop to end now; returns at once."""
        if self._handle is not None and self.running:
            self._lib.fastrx_stop(self._handle)

    # -- afterwards ---------------------------------------------------------------

    def finish(self) -> None:
        """Stop, put every count back into the Python objects, return the sockets.

        Idempotent; must run before the transports close (C reads their sockets).
        """
        if self._finished or self._handle is None:
            return
        self.stop()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                # Never free what a running loop uses; the process is ending anyway.
                raise RuntimeError("the fastrx loop did not stop")
        self.drain()
        self._finished = True
        self._merge_streams()
        self._merge_sockets()
        self._merge_latency()
        totals = _Totals()
        self._lib.fastrx_get_totals(self._handle, ctypes.byref(totals))
        self.totals = {f[0]: int(getattr(totals, f[0])) for f in _Totals._fields_}
        for transport, _ in self._sockets:
            transport.resume_reading()
        self._free()

    def accepted(self) -> list[tuple[int, int, int]]:
        """(subscriber index, send_ns, seq) of each measured packet, if traced."""
        values = list(self._trace)[: 3 * self.totals.get("traced", 0)]
        return [(values[i], values[i + 1], values[i + 2]) for i in range(0, len(values), 3)]

    def _merge_streams(self) -> None:
        info, seen = _StreamInfo(), _Seen()
        for i in range(self._lib.fastrx_stream_count(self._handle)):
            if self._lib.fastrx_get_stream(self._handle, i, ctypes.byref(info), seen) != 0:
                raise RuntimeError(f"fastrx_get_stream({i}) failed")
            subscriber = self.subscribers[info.subscriber]
            stream = subscriber.streams.get(info.ssrc)
            if stream is None:
                stream = subscriber.streams[info.ssrc] = ReceivedStream(KINDS[info.kind])
            stream.received_total = info.received_total
            stream.bad_payloads = info.bad_payloads
            stats, state = stream.stats, info.stats
            ctypes.memmove(_seen_of(stats), seen, ctypes.sizeof(seen))
            stats._base, stats._highest = state.base, state.highest
            counts = stats.counts
            counts.received, counts.expected = state.received, state.expected
            counts.out_of_order, counts.duplicates = state.out_of_order, state.duplicates

    def _merge_sockets(self) -> None:
        info = _SocketInfo()
        for i, (transport, srtp) in enumerate(self._sockets):
            if self._lib.fastrx_get_socket(self._handle, i, ctypes.byref(info)) != 0:
                raise RuntimeError(f"fastrx_get_socket({i}) failed")
            transport.datagrams_received += info.datagrams_received
            transport.srtp_errors += info.srtp_errors
            srtp.roc_resyncs += info.roc_resyncs
            if info.socket_drops >= 0:
                transport.socket_drops = info.socket_drops

    def _merge_latency(self) -> None:
        values = ctypes.POINTER(ctypes.c_int64)()
        overflow = ctypes.c_int64()
        for app, target in ((0, self._latency), (1, self._app_latency)):
            for code, kind in enumerate(KINDS):
                count = self._lib.fastrx_samples(
                    self._handle, code, app, ctypes.byref(values), ctypes.byref(overflow)
                )
                samples = target[kind]
                if count > 0:
                    samples.values.frombytes(ctypes.string_at(values, count * 8))
                samples.overflow += overflow.value

    def _free(self) -> None:
        if self._handle is not None:
            self._lib.fastrx_free(self._handle)
            self._handle = None


def open_receiver(
    library: Path,
    clients: Sequence[Client],
    window: Window,
    latency: dict[str, LatencySamples],
    app_latency: dict[str, LatencySamples],
) -> FastReceiver:
    """A FastReceiver over the connected subscribers among clients."""
    subscribers = [c for c in clients if isinstance(c, Subscriber) and c.connected]
    return FastReceiver(load(library), subscribers, window, latency, app_latency)
