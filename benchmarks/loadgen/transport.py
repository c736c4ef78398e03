"""One client media transport: a UDP socket with ICE checks, a DTLS client and SRTP.

The SFU is ICE-lite, so the client is the controlling agent: it sends Binding requests
with USE-CANDIDATE until one succeeds, then keeps consent fresh (RFC 7675) with a
request every 2.5 s. A full ICE server (Janus) also checks the client: given its own
password, the transport answers those requests (MESSAGE-INTEGRITY keyed with it), and
when the server offered (so it controls) the client's checks say ICE-CONTROLLED and
nominate nothing. The socket is read with ``recvmsg`` from an event-loop reader so
that the kernel's receive timestamp (SO_TIMESTAMPNS) comes with every datagram: the
latency then ends when the packet reached this socket, not when a busy client process
got round to it (that later time is kept too, as the "app" latency).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import struct
import time
from collections.abc import Callable

from benchmarks.loadgen.dtls_client import ClientCertificate, DtlsClient
from benchmarks.loadgen.offer import AnswerSection
from benchmarks.loadgen.whip import require_loopback
from sfu.proto.ice import IceCredentials, answer_binding_request
from sfu.proto.srtp import SrtpError, SrtpPair
from sfu.wire import stun
from sfu.wire.rtp import RtpError, RtpHeader, parse_rtp_header

ICE_RETRANSMIT_S = 0.1
ICE_TIMEOUT_S = 5.0
DTLS_TIMEOUT_S = 10.0
DTLS_TICK_S = 0.02
CONSENT_INTERVAL_S = 2.5
# Peer-reflexive priority (RFC 8445 7.1.1): type preference 110, local preference max.
CHECK_PRIORITY = (110 << 24) | (0xFFFF << 8) | 255
MAX_READS_PER_WAKEUP = 256
RECV_BUFFER_BYTES = 2 * 1024 * 1024
# Linux socket options Python does not name.
SO_TIMESTAMPNS = 35
SO_RXQ_OVFL = 40
_TIMESPEC = struct.Struct("@qq")
_U32 = struct.Struct("@I")

RtpHandler = Callable[[bytes, RtpHeader, int, int], None]  # packet, header, kernel ns, app ns
RtcpHandler = Callable[[bytes], None]


class TransportError(Exception):
    """Connecting failed; ``stage`` says where ("ice" or "dtls")."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


class MediaTransport:
    """ICE + DTLS + SRTP on one socket, for the m-sections that share an ICE ufrag."""

    def __init__(
        self,
        remote: AnswerSection,
        local_ufrag: str,
        certificate: ClientCertificate,
        on_rtp: RtpHandler | None = None,
        on_rtcp: RtcpHandler | None = None,
        *,
        local_pwd: str | None = None,
        controlling: bool = True,
    ) -> None:
        require_loopback(remote.host)
        self.remote_addr = (remote.host, remote.port)
        self.remote_ufrag = remote.ice_ufrag
        self.remote_pwd = remote.ice_pwd.encode()
        self.local_ufrag = local_ufrag
        # Only a full ICE peer sends us checks; without our password they go unanswered.
        self.local_credentials = (
            IceCredentials(local_ufrag, local_pwd) if local_pwd is not None else None
        )
        self.controlling = controlling
        self.dtls = DtlsClient(certificate, remote.fingerprint_sha256)
        self.srtp: SrtpPair | None = None
        self.on_rtp = on_rtp
        self.on_rtcp = on_rtcp
        self.tiebreaker = secrets.token_bytes(8)
        family = socket.AF_INET6 if ":" in remote.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER_BYTES)
        self.kernel_timestamps = _try_setsockopt(self.sock, SO_TIMESTAMPNS)
        self.overflow_counter = _try_setsockopt(self.sock, SO_RXQ_OVFL)
        # The server's own loopback address: a server that may only send through the
        # interface of its address (libnice pins sockets with IP_UNICAST_IF) can still
        # reach it, and for an SFU on 127.0.0.1 or ::1 it is the usual loopback.
        self.sock.bind((remote.host, 0))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ice_done: asyncio.Event | None = None
        self._dtls_event: asyncio.Event | None = None
        self._pending: set[bytes] = set()
        self.socket_drops = 0  # datagrams the kernel dropped on this socket (buffer full)
        self.send_errors = 0
        self.srtp_errors = 0
        self.consent_sent = 0
        self.consent_ok = 0
        self.checks_answered = 0
        self.datagrams_sent = 0
        self.datagrams_received = 0  # everything from the server, of any kind
        self.closed = False

    # -- connecting -----------------------------------------------------------

    async def connect(self) -> None:
        """ICE, then DTLS; raise TransportError with the stage that failed."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._ice_done = asyncio.Event()
        self._dtls_event = asyncio.Event()
        loop.add_reader(self.sock.fileno(), self._on_readable)
        transaction = secrets.token_bytes(12)
        self._pending.add(transaction)
        request = self._binding_request(transaction, nominate=True)
        for _ in range(int(ICE_TIMEOUT_S / ICE_RETRANSMIT_S)):
            self._send(request)
            try:
                await asyncio.wait_for(self._ice_done.wait(), ICE_RETRANSMIT_S)
                break
            except TimeoutError:
                continue
        if not self._ice_done.is_set():
            raise TransportError("ice", f"no binding success within {ICE_TIMEOUT_S:g} s")
        self.dtls.start()
        self._flush_dtls()
        for _ in range(int(DTLS_TIMEOUT_S / DTLS_TICK_S)):
            if self.dtls.connected or self.dtls.failed:
                break
            try:
                await asyncio.wait_for(self._dtls_event.wait(), DTLS_TICK_S)
            except TimeoutError:
                pass
            self._dtls_event.clear()
            if self.dtls.timer_due():
                self.dtls.handle_timeout()
                self._flush_dtls()
        if self.dtls.failure is not None:
            raise TransportError("dtls", self.dtls.failure)
        if self.dtls.keys is None:
            raise TransportError("dtls", f"no DTLS handshake within {DTLS_TIMEOUT_S:g} s")
        self.srtp = SrtpPair(self.dtls.keys)

    @property
    def local_address(self) -> tuple[str, int]:
        """Where this transport receives: its ICE host candidate."""
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    def _binding_request(self, transaction: bytes, nominate: bool) -> bytes:
        role = stun.ATTR_ICE_CONTROLLING if self.controlling else stun.ATTR_ICE_CONTROLLED
        attributes = [
            (stun.ATTR_USERNAME, f"{self.remote_ufrag}:{self.local_ufrag}".encode()),
            (stun.ATTR_PRIORITY, struct.pack("!I", CHECK_PRIORITY)),
            (role, self.tiebreaker),
        ]
        if nominate and self.controlling:
            attributes.append((stun.ATTR_USE_CANDIDATE, b""))
        return stun.build_stun(
            stun.BINDING_REQUEST, transaction, attributes, integrity_key=self.remote_pwd
        )

    async def keep_consent(self, deadline: float) -> None:
        """A binding request every 2.5 s until closed or the deadline (monotonic s)."""
        for _ in range(int(max(0.0, deadline - time.monotonic()) / CONSENT_INTERVAL_S) + 1):
            await asyncio.sleep(CONSENT_INTERVAL_S)
            if self.closed or time.monotonic() >= deadline:
                return
            transaction = secrets.token_bytes(12)
            self._pending.add(transaction)
            self.consent_sent += 1
            self._send(self._binding_request(transaction, nominate=False))

    # -- sending --------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.sock.sendto(data, self.remote_addr)
            self.datagrams_sent += 1
        except (BlockingIOError, InterruptedError):
            self.send_errors += 1  # send buffer full: a real client would drop it too
        except OSError:
            self.send_errors += 1

    def _flush_dtls(self) -> None:
        for datagram in self.dtls.datagrams_to_send():
            self._send(datagram)

    def send_rtp(self, packet: bytes) -> None:
        if self.srtp is not None:
            self._send(self.srtp.protect(packet))

    def send_rtcp(self, packet: bytes) -> None:
        if self.srtp is not None:
            self._send(self.srtp.protect_rtcp(packet))

    # -- receiving ------------------------------------------------------------

    def _on_readable(self) -> None:
        # One clock pair per wakeup converts kernel CLOCK_REALTIME stamps to monotonic.
        offset = time.time_ns() - time.monotonic_ns()
        for _ in range(MAX_READS_PER_WAKEUP):
            try:
                data, ancillary, _flags, addr = self.sock.recvmsg(4096, 128)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. ICMP port unreachable once the server is gone
            app_ns = time.monotonic_ns()
            kernel_ns = app_ns
            for level, kind, value in ancillary:
                if level != socket.SOL_SOCKET:
                    continue
                if kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
                    sec, nsec = _TIMESPEC.unpack_from(value)
                    kernel_ns = sec * 1_000_000_000 + nsec - offset
                elif kind == SO_RXQ_OVFL and len(value) >= _U32.size:
                    self.socket_drops = _U32.unpack_from(value)[0]
            if (addr[0], addr[1]) != self.remote_addr or not data:
                continue
            self.datagrams_received += 1
            self.on_datagram(data, kernel_ns, app_ns)

    def pause_reading(self) -> None:
        """Leave the socket to another reader (benchmarks.loadgen.fastrx) for a while."""
        if self._loop is not None and not self.closed:
            self._loop.remove_reader(self.sock.fileno())

    def resume_reading(self) -> None:
        if self._loop is not None and not self.closed and not self._loop.is_closed():
            self._loop.add_reader(self.sock.fileno(), self._on_readable)

    def on_datagram(self, data: bytes, kernel_ns: int, app_ns: int) -> None:
        """One datagram from the server, already counted in datagrams_received."""
        first = data[0]
        if 128 <= first <= 191:
            if self.srtp is None:
                return
            if len(data) > 1 and 192 <= data[1] <= 223:
                try:
                    plain = self.srtp.unprotect_rtcp(data)
                except SrtpError:
                    self.srtp_errors += 1
                    return
                if self.on_rtcp is not None:
                    self.on_rtcp(plain)
                return
            try:
                packet = self.srtp.unprotect(data)
                header = parse_rtp_header(packet)
            except (SrtpError, RtpError):
                self.srtp_errors += 1
                return
            if self.on_rtp is not None:
                self.on_rtp(packet, header, kernel_ns, app_ns)
        elif first <= 3:
            self._on_stun(data)
        elif 20 <= first <= 63:
            self.dtls.receive(data)
            self._flush_dtls()
            if self._dtls_event is not None:
                self._dtls_event.set()

    def _on_stun(self, data: bytes) -> None:
        try:
            msg = stun.parse_stun(data)
        except stun.StunError:
            return
        if msg.message_type == stun.BINDING_REQUEST:
            self._answer_check(data, msg)
            return
        if msg.message_type != stun.BINDING_SUCCESS or msg.transaction_id not in self._pending:
            return
        if not stun.verify_integrity(data, msg, self.remote_pwd):
            return
        self._pending.discard(msg.transaction_id)
        if self._ice_done is not None and not self._ice_done.is_set():
            self._ice_done.set()
        else:
            self.consent_ok += 1

    def _answer_check(self, data: bytes, msg: stun.StunMessage) -> None:
        """A full ICE server's check (or consent request) on our candidate: answer it."""
        credentials = self.local_credentials
        if credentials is None:
            return
        check = answer_binding_request(
            data,
            msg,
            self.remote_addr,
            lambda ufrag: credentials if ufrag == credentials.ufrag else None,
        )
        if check is not None:
            self.checks_answered += 1
            self._send(check.response)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.srtp = None


def _try_setsockopt(sock: socket.socket, option: int) -> bool:
    if os.name != "posix":
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, 1)
    except OSError:
        return False
    return True
