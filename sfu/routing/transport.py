"""A Transport is one ICE ufrag + one DTLS association + its SRTP keys.

Many transports share the worker's single UDP port: binding requests find theirs by
ICE ufrag, everything else by the remote address that ICE validated.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from sfu.proto.dtls import DtlsServer, DtlsState, SrtpKeys
from sfu.proto.ice import IceCheck, IceCredentials
from sfu.proto.srtp import SrtpError, SrtpPair
from sfu.wire.rtcp import (
    ReportBlock,
    RtcpError,
    RtcpFir,
    RtcpNack,
    RtcpPacket,
    RtcpPli,
    RtcpReceiverReport,
    RtcpSenderReport,
    parse_rtcp,
    serialize_rtcp,
)
from sfu.wire.rtp import RtpError, get_header_extension, parse_rtp_header

if TYPE_CHECKING:
    from sfu.routing.consumer import Consumer
    from sfu.routing.datachannel import DataEndpoint
    from sfu.routing.fanout import Ingress, Leg
    from sfu.routing.producer import Producer
    from sfu.routing.worker import Worker

log = logging.getLogger(__name__)

Address = tuple[str, int]
PEER_CLOSED = "peer closed DTLS"


class Transport:
    """ICE-lite + DTLS server + SRTP for one group of m-sections."""

    def __init__(
        self,
        worker: Worker,
        owner_id: str,
        remote_ufrag: str,
        remote_fingerprints: list[tuple[str, str]],
        now: float,
        ice: IceCredentials | None = None,
    ) -> None:
        self.worker = worker
        self.owner_id = owner_id
        self.ice = ice or IceCredentials.generate()
        self.remote_ufrag = remote_ufrag
        self.remote_fingerprints = remote_fingerprints
        self.dtls = DtlsServer(worker.dtls_context, remote_fingerprints)
        self.srtp: SrtpPair | None = None
        self._stream_restarted = False
        self.addr: Address | None = None
        self.rtcp_ssrc = secrets.randbits(32) or 1
        self.producers_by_ssrc: dict[int, Producer] = {}
        self.producers_by_mid: dict[str, Producer] = {}
        self.consumers_by_ssrc: dict[int, Consumer] = {}
        self.legs: list[Leg] = []  # the datapath's send state of every consumer here
        # The native datapath's receive side (None on the Python one): once keyed and
        # addressed, RTP of known SSRCs from here never reaches Python.
        self.ingress: Ingress | None = worker.datapath.new_ingress()
        self.mid_extension_id = 0
        self.created_at = now
        self._heard = now
        self.closed = False
        self.close_reason = ""
        self.stats_dropped = 0
        self.data: DataEndpoint | None = None  # a data-channel transport's SCTP side

    def attach_data(self, endpoint: DataEndpoint) -> None:
        """Carry data channels: DTLS application records are SCTP packets (RFC 8261)."""
        self.data = endpoint
        self.dtls.keep_application_data = True
        self.worker.add_data_transport(self)

    def send_sctp(self, packet: bytes) -> None:
        if self.addr is not None and self.dtls.send_application_data(packet):
            self._flush_dtls()

    @property
    def srtp_profile(self) -> str | None:
        """The SRTP protection profile DTLS negotiated (None before, and on data transports)."""
        keys = self.dtls.keys
        return keys.profile if keys is not None else None

    @property
    def ready(self) -> bool:
        return self.srtp is not None and self.addr is not None

    @property
    def last_heard(self) -> float:
        """When a datagram last proved the peer alive (here, or in the native path)."""
        if self.ingress is not None:
            return max(self._heard, self.ingress.last_heard)
        return self._heard

    @last_heard.setter
    def last_heard(self, now: float) -> None:
        self._heard = now

    def bind_producer(self, ssrc: int, producer: Producer) -> None:
        self.producers_by_ssrc[ssrc] = producer
        self._update_tracks()

    def unbind_producer(self, ssrc: int) -> None:
        self.producers_by_ssrc.pop(ssrc, None)
        self._update_tracks()

    def _update_tracks(self) -> None:
        if self.ingress is not None:
            self.ingress.set_tracks({s: p.track for s, p in self.producers_by_ssrc.items()})

    def attach_leg(self, leg: Leg) -> None:
        self.legs.append(leg)
        leg.set_route(self.srtp, self.addr)

    def detach_leg(self, leg: Leg) -> None:
        if leg in self.legs:
            self.legs.remove(leg)
        leg.set_route(None, None)

    def update_routes(self) -> None:
        """Keys or address changed: every leg sends with the new ones (or stops), and
        the native receive path follows."""
        for leg in self.legs:
            leg.set_route(self.srtp, self.addr)
        if self.ingress is not None:
            self.ingress.set_route(self.srtp, self.addr)

    # -- receive ------------------------------------------------------------

    def on_ice_check(self, check: IceCheck, addr: Address, now: float) -> None:
        if check.remote_ufrag != self.remote_ufrag:
            self.worker.count("stun_ignored")
            return
        self.last_heard = now
        if self.addr is None or (check.nominated and addr != self.addr):
            self.worker.bind_address(self, addr)
        self.worker.send(check.response, addr)

    def on_dtls(self, data: bytes, now: float) -> None:
        self.last_heard = now
        before = self.dtls.state
        self.dtls.receive(data)
        self._flush_dtls()
        if self.dtls.state == DtlsState.CONNECTED and before != DtlsState.CONNECTED:
            if self.dtls.keys is not None:  # a data-only transport may negotiate no SRTP
                self.start_srtp(self.dtls.keys)
            self.update_routes()
            self.worker.count("dtls_ok")
            self.worker.handshake_done(self)
            log.info(
                "transport connected owner=%s profile=%s cipher=%s",
                self.owner_id,
                self.dtls.keys.profile if self.dtls.keys else "none",
                self.dtls.cipher,
            )
            for consumer in self.consumers_by_ssrc.values():
                consumer.on_transport_ready(now)
        if self.data is not None and self.dtls.state == DtlsState.CONNECTED:
            for packet in self.dtls.application_data():
                self.data.on_packet(packet, now)
        if self.dtls.state == DtlsState.FAILED:
            self.worker.count("dtls_failed")
            self.worker.handshake_done(self)
            self.worker.close_transport(self, self.dtls.failure or "DTLS failed")
        elif self.dtls.state == DtlsState.CLOSED:
            self.worker.close_transport(self, PEER_CLOSED)

    def _flush_dtls(self) -> None:
        if self.addr is not None:
            for datagram in self.dtls.datagrams_to_send():
                self.worker.send(datagram, self.addr)

    def on_rtp(self, data: bytes, now: float) -> None:
        self._on_rtp(data, now)
        if self.ingress is not None and self.srtp is not None:
            # While SRTP recovers from failures, this transport's RTP comes here.
            self.ingress.slow = self.srtp.recovering

    def _on_rtp(self, data: bytes, now: float) -> None:
        if self.srtp is None:
            self.worker.count("rtp_before_keys")
            return
        if self.worker.shedding:
            # The SSRC is in clear text: shed video before paying for its decryption.
            shed = self.producers_by_ssrc.get(int.from_bytes(data[8:12], "big"))
            if shed is not None and shed.kind == "video":
                self.worker.shed(shed)
                return
        try:
            packet = self.srtp.unprotect(data)
            header = parse_rtp_header(packet)
        except SrtpError as failure:
            self.worker.count("srtp_replay" if failure.is_replay else "srtp_unprotect_failed")
            return
        except RtpError:
            self.worker.count("malformed_rtp")
            return
        self.last_heard = now
        producer = self.producers_by_ssrc.get(header.ssrc)
        if producer is None:
            producer = self._bind_unknown_ssrc(packet, header.ssrc, header)
            if producer is None:
                self.worker.count("rtp_unknown_ssrc")
                return
        if self._stream_restarted:
            self._stream_restarted = False
            producer.restart_stream(now)
        producer.on_rtp(packet, header, now)

    def _bind_unknown_ssrc(self, packet: bytes, ssrc: int, header: object) -> Producer | None:
        """Clients that announce no a=ssrc are demultiplexed by mid extension, or by
        being the only unbound track on the transport (RFC 8843 section 9.2)."""
        from sfu.wire.rtp import RtpHeader

        assert isinstance(header, RtpHeader)
        candidate: Producer | None = None
        if self.mid_extension_id:
            try:
                mid = get_header_extension(packet, header, self.mid_extension_id)
            except RtpError:
                mid = None
            if mid is not None:
                candidate = self.producers_by_mid.get(mid.decode("ascii", "replace"))
        if candidate is None:
            unbound = [p for p in self.producers_by_mid.values() if p.ssrc is None]
            if len(unbound) == 1:
                candidate = unbound[0]
        if candidate is None or candidate.ssrc is not None:
            return None
        candidate.bind_ssrc(ssrc)
        self.bind_producer(ssrc, candidate)
        return candidate

    def start_srtp(self, keys: SrtpKeys) -> None:
        """Key SRTP in both directions (from the DTLS handshake; tests key it directly)."""
        self.srtp = SrtpPair(keys)
        self.srtp.on_roc_resync = self._on_roc_resync
        self.update_routes()

    def _on_roc_resync(self, ssrc: int) -> None:
        # Called from inside unprotect: on_rtp restarts the producer's stream next.
        self._stream_restarted = True
        self.worker.count("srtp_roc_resync")
        log.info(
            "session %s: SSRC %d resumed after a gap of over 2^15 packets", self.owner_id, ssrc
        )

    def on_rtcp(self, data: bytes, now: float) -> None:
        if self.srtp is None:
            self.worker.count("rtp_before_keys")
            return
        try:
            packets = parse_rtcp(self.srtp.unprotect_rtcp(data))
        except SrtpError as failure:
            self.worker.count("srtcp_replay" if failure.is_replay else "srtcp_unprotect_failed")
            return
        except RtcpError:
            self.worker.count("malformed_rtcp")
            return
        self.last_heard = now
        for packet in packets:
            self._handle_rtcp(packet, now)

    def _handle_rtcp(self, packet: RtcpPacket, now: float) -> None:
        if isinstance(packet, RtcpSenderReport):
            producer = self.producers_by_ssrc.get(packet.ssrc)
            if producer is not None:
                producer.on_sender_report(packet, now)
            self._handle_report_blocks(packet.reports)
        elif isinstance(packet, RtcpReceiverReport):
            self._handle_report_blocks(packet.reports)
        elif isinstance(packet, RtcpPli):
            consumer = self.consumers_by_ssrc.get(packet.media_ssrc)
            if consumer is not None:
                consumer.on_keyframe_request(now)
        elif isinstance(packet, RtcpFir):
            for ssrc, _seq in packet.entries:
                consumer = self.consumers_by_ssrc.get(ssrc)
                if consumer is not None:
                    consumer.on_keyframe_request(now)
        elif isinstance(packet, RtcpNack):
            consumer = self.consumers_by_ssrc.get(packet.media_ssrc)
            if consumer is not None:
                consumer.on_nack(packet.lost)

    def _handle_report_blocks(self, blocks: list[ReportBlock]) -> None:
        for block in blocks:
            consumer = self.consumers_by_ssrc.get(block.ssrc)
            if consumer is not None:
                consumer.last_report = block

    # -- send ---------------------------------------------------------------

    def send_rtp(self, packet: bytes) -> None:
        if self.srtp is None or self.addr is None:
            return
        try:
            self.worker.send(self.srtp.protect(packet), self.addr)
        except SrtpError:
            self.worker.count("srtp_protect_failed")

    def send_rtcp(self, packets: list[RtcpPacket]) -> None:
        if self.srtp is None or self.addr is None:
            return
        # An empty RR first keeps the compound packet valid for peers without rtcp-rsize.
        compound = serialize_rtcp([RtcpReceiverReport(self.rtcp_ssrc, []), *packets])
        try:
            self.worker.send(self.srtp.protect_rtcp(compound), self.addr)
        except SrtpError:
            self.worker.count("srtp_protect_failed")

    # -- timers -------------------------------------------------------------

    def on_dtls_timer(self) -> None:
        self.dtls.handle_timeout()
        self._flush_dtls()
        if self.dtls.state == DtlsState.FAILED:
            self.worker.count("dtls_failed")
            self.worker.handshake_done(self)
            self.worker.close_transport(self, self.dtls.failure or "DTLS failed")

    def on_report_timer(self, now: float) -> None:
        """Once a second: receiver reports for what we receive, liveness."""
        timeout = self.worker.silence_timeout_s
        if now - self.last_heard > timeout:
            what = "no ICE/DTLS" if not self.ready else "silent"
            reason = f"{what} for {timeout:g} s"
            self.worker.count("ice_timeouts" if not self.ready else "consent_failures")
            self.worker.close_transport(self, reason)
            return
        if not self.ready:
            return
        blocks = [p.stats.report_block(now) for p in self.producers_by_mid.values() if p.ssrc]
        if blocks:
            self.send_rtcp([RtcpReceiverReport(self.rtcp_ssrc, blocks[:31])])

    def close(self, reason: str) -> None:
        """Stop everything and wipe keys."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.worker.data_transports.discard(self)
        if self.data is not None:
            self.data.close()
        if self.addr is not None:
            self.dtls.close()
            self._flush_dtls()
        self.srtp = None
        self.update_routes()  # no leg may keep a pointer into the wiped context
        for producer in self.producers_by_mid.values():
            producer.close()
        for consumer in self.consumers_by_ssrc.values():
            consumer.close()
