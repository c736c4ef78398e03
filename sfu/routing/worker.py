"""The Worker owns one UDP port's worth of transports and dispatches datagrams to them.

It is sans-I/O: datagrams and the time come in through `on_datagram` and the timer
methods, and leave through the `sender` callable given by the I/O layer.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from sfu.proto.dtls import DtlsCertificate
from sfu.proto.ice import IceCredentials, answer_binding_request
from sfu.routing.fanout import Datapath, PythonDatapath
from sfu.routing.producer import RATE_LIMIT_BPS, RATE_LIMIT_PPS
from sfu.routing.stats import LatencyHistogram
from sfu.routing.transport import Address, Transport
from sfu.wire import stun
from sfu.wire.demux import PacketClass, classify

if TYPE_CHECKING:
    from sfu.routing.datachannel import DataEndpoint
    from sfu.routing.datahost import DataHostLink
    from sfu.routing.producer import Producer

log = logging.getLogger(__name__)

Sender = Callable[[bytes, Address], None]
CloseListener = Callable[[Transport, str], None]
MAX_DATAGRAM = 1500 * 2
# A transport that has not finished ICE+DTLS by then, or has heard nothing for this
# long (consent freshness, RFC 7675, sends a check every ~5 s), is dead.
SILENCE_TIMEOUT_S = 30.0


def _request_keyframe(producer: Producer, now: float) -> None:
    producer.request_keyframe(now)


class Worker:
    """Routes every datagram of the media port to its transport; counts what it drops."""

    def __init__(self, sender: Sender, silence_timeout_s: float = SILENCE_TIMEOUT_S) -> None:
        self.sender = sender
        self.silence_timeout_s = silence_timeout_s
        self.certificate = DtlsCertificate()
        self.dtls_context = self.certificate.create_context()
        self.by_ufrag: dict[str, Transport] = {}
        self.by_addr: dict[Address, Transport] = {}
        self.handshaking: set[Transport] = set()
        self.data_transports: set[Transport] = set()  # those carrying SCTP
        # Data-channel endpoints with SCTP packets to send; flushed once per batch.
        self.data_dirty: set[DataEndpoint] = set()
        self.counters: Counter[str] = Counter()
        self.forward_latency = LatencyHistogram()
        # Per-packet work: pure Python here; the I/O layer may swap in the native one
        # before any transport exists.
        self._datapath: Datapath = PythonDatapath(self.send)
        # Set by the I/O layer: how long the oldest datagram of each read batch waited
        # in the socket (the kernel's receive timestamp): the media loop's busy time.
        self.receive_queue = LatencyHistogram()
        self.on_transport_closed: CloseListener | None = None
        # Set by the I/O layer while datagrams wait too long in the socket queue: video
        # RTP is then dropped before decryption so that audio, RTCP, STUN and DTLS,
        # which cost little and matter most, keep flowing.
        self.shedding = False
        # Per-track caps for producers created from now on (packets/s, bits/s).
        self.track_pps: dict[str, float] = dict(RATE_LIMIT_PPS)
        self.track_bps: dict[str, float] = dict(RATE_LIMIT_BPS)
        self._shed_producers: set[Producer] = set()
        # Where sessions' data channels run when not here (sfu/io/datalink.py).
        self.data_host: DataHostLink | None = None
        # Set by the I/O layer: told when a transport is created, starts a DTLS
        # handshake or starts carrying SCTP, so that timers idle without work restart.
        self.on_timer_work: Callable[[], None] | None = None

    @property
    def needs_dtls_timer(self) -> bool:
        """on_dtls_timer has work: a DTLS handshake or an SCTP association."""
        return bool(self.handshaking or self.data_transports or self.data_dirty)

    @property
    def needs_report_timer(self) -> bool:
        """on_report_timer has work: a transport (reports, liveness)."""
        return bool(self.by_ufrag)

    def _timer_work_added(self) -> None:
        if self.on_timer_work is not None:
            self.on_timer_work()

    @property
    def datapath(self) -> Datapath:
        return self._datapath

    @datapath.setter
    def datapath(self, datapath: Datapath) -> None:
        self._datapath = datapath
        datapath.attach(_request_keyframe, self.mark_shed, self.forward_latency)

    @property
    def forwarded_packets(self) -> Counter[str]:
        return self.datapath.forwarded_packets

    @property
    def forwarded_bytes(self) -> Counter[str]:
        return self.datapath.forwarded_bytes

    def count(self, what: str) -> None:
        self.counters[what] += 1

    def set_overloaded(self, overloaded: bool, now: float) -> None:
        """Start or stop shedding video. On the way out every producer that lost
        packets is asked for a keyframe, so its subscribers' pictures recover at once."""
        if overloaded == self.shedding:
            return
        self.shedding = overloaded
        self.datapath.set_shedding(overloaded)
        if overloaded:
            self.count("overload_episodes")
            log.warning("media worker behind: dropping incoming video until it catches up")
            return
        log.warning(
            "media worker caught up: %d video tracks asked for a keyframe",
            len(self._shed_producers),
        )
        for producer in self._shed_producers:
            if not producer.closed:
                producer.request_keyframe(now)
        self._shed_producers.clear()

    def shed(self, producer: Producer) -> None:
        self.counters["overload_shed"] += 1
        self.mark_shed(producer)

    def mark_shed(self, producer: Producer) -> None:
        """It lost packets to shedding: ask it for a keyframe when the episode ends."""
        self._shed_producers.add(producer)

    def send(self, data: bytes, addr: Address) -> None:
        self.counters["datagrams_out"] += 1
        self.sender(data, addr)

    # -- transports -------------------------------------------------------

    def create_transport(
        self,
        owner_id: str,
        remote_ufrag: str,
        remote_fingerprints: list[tuple[str, str]],
        now: float,
        ice: IceCredentials | None = None,
    ) -> Transport:
        """A new transport; ``ice`` names its credentials when another process chose them."""
        transport = Transport(self, owner_id, remote_ufrag, remote_fingerprints, now, ice)
        self.by_ufrag[transport.ice.ufrag] = transport
        self._timer_work_added()
        return transport

    def add_data_transport(self, transport: Transport) -> None:
        """It carries SCTP, whose timers run from on_dtls_timer."""
        self.data_transports.add(transport)
        self._timer_work_added()

    def bind_address(self, transport: Transport, addr: Address) -> None:
        """ICE validated addr for transport; it now owns that address."""
        if transport.addr is not None and self.by_addr.get(transport.addr) is transport:
            del self.by_addr[transport.addr]
        previous = self.by_addr.get(addr)
        if previous is not None and previous is not transport:
            previous.addr = None
            previous.update_routes()
        transport.addr = addr
        self.by_addr[addr] = transport
        transport.update_routes()
        if transport.srtp is None:
            self.handshaking.add(transport)
            self._timer_work_added()

    def handshake_done(self, transport: Transport) -> None:
        self.handshaking.discard(transport)

    def close_transport(self, transport: Transport, reason: str) -> None:
        if transport.closed:
            return
        log.info("transport closed owner=%s reason=%s", transport.owner_id, reason)
        transport.close(reason)
        self.by_ufrag.pop(transport.ice.ufrag, None)
        if transport.addr is not None and self.by_addr.get(transport.addr) is transport:
            del self.by_addr[transport.addr]
        self.handshaking.discard(transport)
        if self.on_transport_closed is not None:
            self.on_transport_closed(transport, reason)

    def _credentials_for(self, ufrag: str) -> IceCredentials | None:
        transport = self.by_ufrag.get(ufrag)
        return transport.ice if transport is not None else None

    # -- datagrams --------------------------------------------------------

    def on_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Handle one datagram; never raises: anything wrong is counted and dropped."""
        self.counters["datagrams_in"] += 1
        try:
            self._dispatch(data, addr, now)
        except Exception:  # a datagram handler must survive any input
            self.count("handler_errors")
            log.exception("datagram handler error from=%s:%d", addr[0], addr[1])

    def _dispatch(self, data: bytes, addr: Address, now: float) -> None:
        if len(data) > MAX_DATAGRAM:
            self.count("oversized")
            return
        kind = classify(data)
        if kind == PacketClass.STUN:
            self._on_stun(data, addr, now)
            return
        transport = self.by_addr.get(addr)
        if transport is None:
            self.count("unknown_sender")
            return
        if kind == PacketClass.DTLS:
            transport.on_dtls(data, now)
        elif kind == PacketClass.RTP:
            transport.on_rtp(data, now)
        elif kind == PacketClass.RTCP:
            transport.on_rtcp(data, now)
        else:
            self.count("unknown_class")

    def _on_stun(self, data: bytes, addr: Address, now: float) -> None:
        try:
            msg = stun.parse_stun(data)
        except stun.StunError:
            self.count("malformed_stun")
            return
        if msg.message_type == stun.BINDING_INDICATION:
            # Keepalives (e.g. GStreamer's, without credentials) count as liveness only.
            transport = self.by_addr.get(addr)
            if transport is not None:
                transport.last_heard = now
            else:
                self.count("stun_ignored")
            return
        check = answer_binding_request(data, msg, addr, self._credentials_for)
        if check is None:
            self.count("stun_rejected")
            return
        transport = self.by_ufrag.get(check.local_ufrag)
        if transport is not None:
            transport.on_ice_check(check, addr, now)

    # -- timers -----------------------------------------------------------

    def on_dtls_timer(self, now: float) -> None:
        """Called often (every ~50 ms): DTLS handshake retransmissions, SCTP timers."""
        for transport in list(self.handshaking):
            timeout = transport.dtls.get_timeout()
            if timeout is not None and timeout <= 0:
                transport.on_dtls_timer()
        rooms = set()
        for transport in list(self.data_transports):
            if transport.data is not None:
                transport.data.on_timer(now)
                rooms.add(transport.data.relay)
        for relay in rooms:
            relay.on_timer(now)
        self.flush_data(now)

    def flush_data(self, now: float) -> None:
        """Send what data-channel endpoints queued (called after each receive batch)."""
        while self.data_dirty:
            endpoint = self.data_dirty.pop()
            endpoint.flush(now)

    def on_report_timer(self, now: float) -> None:
        """Called every second: RTCP reports and liveness of every transport."""
        for transport in list(self.by_ufrag.values()):
            transport.on_report_timer(now)
