"""Sans-I/O SCTP association for WebRTC data channels (RFC 8831, RFC 8832, RFC 8261),
following RFC 9260 with PR-SCTP (RFC 3758) and stream reset (RFC 6525).

One SCTP packet travels in one DTLS record; the caller does DTLS. The association
never reads a clock or touches a socket:

- `receive(packet, now)` takes one decrypted DTLS record,
- `send(...)`, `open_channel(...)`, `close_channel(...)` queue work,
- `packets_to_send(now)` returns the packets to encrypt and send; call it after
  every other call,
- `get_timeout()` is the absolute time at which `handle_timeout(now)` is due,
- `events()` drains what happened (dataclasses below).

Sending priority: each stream has an integer priority, lower is more urgent, and
queued messages of a more urgent stream always go before those of a less urgent one.
Fragments of one message carry consecutive TSNs (there is no I-DATA here), so a
message that has started to go out finishes before another one starts: preemption
happens at message boundaries. Bulk senders should therefore keep their messages
small (`RECOMMENDED_BULK_MESSAGE_SIZE`, 16 KiB) so urgent traffic waits for at most
one of them.

Receive back-pressure: with `manual_release=True` the bytes of every delivered
MessageReceived keep occupying our advertised receive window until `release(n)`, so a
slow consumer downstream slows the sender upstream instead of growing a buffer here.

Choices worth knowing: any SACK from the peer resets the error counter (it proves the
peer alive, also while its window is closed and we probe it); we answer HEARTBEAT but
send none (ICE consent freshness watches the path); a peer restart (INIT with new tags
on an established association) is refused, the DTLS session has to start over.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import struct
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from sfu.proto.dcep import (
    PPID_BINARY,
    PPID_BINARY_EMPTY,
    PPID_DCEP,
    PPID_STRING,
    PPID_STRING_EMPTY,
    ChannelParameters,
    DataChannelAck,
    DataChannelOpen,
    DcepError,
    parse_dcep,
)
from sfu.wire.sctp import (
    CAUSE_INVALID_STREAM,
    CAUSE_UNRECOGNIZED_CHUNK,
    CAUSE_USER_INITIATED_ABORT,
    CHUNK_FORWARD_TSN,
    CHUNK_RECONFIG,
    COMMON_HEADER_SIZE,
    DATA_CHUNK_HEADER_SIZE,
    DATA_FLAG_BEGIN,
    DATA_FLAG_END,
    DATA_FLAG_UNORDERED,
    FLAG_T,
    PARAM_COOKIE_PRESERVATIVE,
    PARAM_ECN_CAPABLE,
    PARAM_FORWARD_TSN_SUPPORTED,
    PARAM_HOST_NAME_ADDRESS,
    PARAM_IPV4_ADDRESS,
    PARAM_IPV6_ADDRESS,
    PARAM_STATE_COOKIE,
    PARAM_SUPPORTED_ADDRESS_TYPES,
    PARAM_SUPPORTED_EXTENSIONS,
    PARAM_UNRECOGNIZED,
    RECONFIG_DENIED,
    RECONFIG_ERROR_BAD_SEQUENCE_NUMBER,
    RECONFIG_IN_PROGRESS,
    RECONFIG_SUCCESS_NOTHING_TO_DO,
    RECONFIG_SUCCESS_PERFORMED,
    AbortChunk,
    Chunk,
    CookieAckChunk,
    CookieEchoChunk,
    DataChunk,
    ErrorChunk,
    ForwardTsnChunk,
    HeartbeatAckChunk,
    HeartbeatChunk,
    IncomingSsnResetRequest,
    InitAckChunk,
    InitChunk,
    OutgoingSsnResetRequest,
    ReconfigChunk,
    ReconfigResponse,
    SackChunk,
    SctpChecksumError,
    SctpParseError,
    ShutdownAckChunk,
    ShutdownChunk,
    ShutdownCompleteChunk,
    UnknownChunk,
    parse_packet,
    serialize_packet,
    serialize_tlvs,
)

SCTP_PORT = 5000  # RFC 8841 a=sctp-port default
# One SCTP packet per DTLS record; 1188 bytes leaves room in a 1200-byte DTLS payload.
MAX_SCTP_PACKET_SIZE = 1188
MAX_USER_DATA_SIZE = MAX_SCTP_PACKET_SIZE - COMMON_HEADER_SIZE - DATA_CHUNK_HEADER_SIZE
DEFAULT_MAX_MESSAGE_SIZE = 262144  # SDP a=max-message-size (RFC 8841)
DEFAULT_RECEIVE_WINDOW = 1024 * 1024
MAX_STREAMS = 65535
RECOMMENDED_BULK_MESSAGE_SIZE = 16384
DEFAULT_STREAM_PRIORITY = 100

# Protocol parameters (RFC 9260 section 16), some shortened for interactive use.
RTO_INITIAL_S = 1.0
RTO_MIN_S = 0.2
RTO_MAX_S = 60.0
RTO_ALPHA = 0.125
RTO_BETA = 0.25
VALID_COOKIE_LIFE_S = 60.0
ASSOCIATION_MAX_RETRANS = 10
MAX_INIT_RETRANSMITS = 8
SACK_DELAY_S = 0.2  # delayed SACK (section 6.2)
SACK_EVERY_PACKETS = 2
FAST_RETRANSMIT_MISSES = 3  # section 7.2.4
MAX_GAP_BLOCKS = 64
MAX_DUPLICATE_TSNS = 16
# A TSN further ahead of the cumulative ack than this cannot be in any sane window.
MAX_TSN_AHEAD = 1 << 20
# Out-of-order TSNs kept at most; a full 1 MiB window of full-sized chunks needs ~900.
MAX_OUT_OF_ORDER_TSNS = 16384
# Bytes charged to the receive window per buffered fragment or waiting message, on top
# of its data, so that a peer sending tiny fragments cannot exhaust memory.
RX_CHUNK_OVERHEAD = 64

_MASK32 = 0xFFFFFFFF
_HALF32 = 0x80000000
_MASK16 = 0xFFFF
_COOKIE_BODY = struct.Struct("!dIIIIIHHIIB")
_COOKIE_MAC_SIZE = 32
_EXT_PRSCTP = 0x01
_EXT_RECONFIG = 0x02
# INIT parameters understood or deliberately ignored (addresses mean nothing over DTLS).
_KNOWN_INIT_PARAMS = frozenset(
    {
        PARAM_IPV4_ADDRESS,
        PARAM_IPV6_ADDRESS,
        PARAM_COOKIE_PRESERVATIVE,
        PARAM_HOST_NAME_ADDRESS,
        PARAM_SUPPORTED_ADDRESS_TYPES,
        PARAM_ECN_CAPABLE,
        PARAM_SUPPORTED_EXTENSIONS,
        PARAM_FORWARD_TSN_SUPPORTED,
    }
)


def _tsn_lt(a: int, b: int) -> bool:
    return a != b and ((b - a) & _MASK32) < _HALF32


def _tsn_le(a: int, b: int) -> bool:
    return ((b - a) & _MASK32) < _HALF32


def _ssn_le(a: int, b: int) -> bool:
    return ((b - a) & _MASK16) < 0x8000


def _ready_cost(data: bytes | None) -> int:
    return (len(data) if data is not None else 0) + RX_CHUNK_OVERHEAD


class SctpState(Enum):
    CLOSED = "closed"
    COOKIE_WAIT = "cookie-wait"
    COOKIE_ECHOED = "cookie-echoed"
    ESTABLISHED = "established"
    SHUTDOWN_PENDING = "shutdown-pending"
    SHUTDOWN_SENT = "shutdown-sent"
    SHUTDOWN_RECEIVED = "shutdown-received"
    SHUTDOWN_ACK_SENT = "shutdown-ack-sent"


# Errors raised to the application (never from receive()).


class SctpError(Exception):
    """Base of the errors the association raises to its caller."""

    code = "sctp_error"


class SctpStateError(SctpError):
    """The association is not in a state that allows this call."""

    code = "sctp_not_established"


class SctpChannelError(SctpError):
    """No open channel on that stream, or no stream id left."""

    code = "channel_not_open"


class SctpMessageSizeError(SctpError):
    """The message is larger than the peer's a=max-message-size."""

    code = "message_too_large"


# Events.


@dataclass(frozen=True, slots=True)
class AssociationEstablished:
    """The four-way handshake finished; channels can be opened."""


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    """A channel is open: the peer's DATA_CHANNEL_OPEN arrived (negotiated_by_peer),
    or the peer acknowledged ours."""

    stream_id: int
    label: str
    protocol: str
    ordered: bool
    max_retransmits: int | None
    lifetime_ms: int | None
    negotiated_by_peer: bool


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A whole user message. `ppid` is PPID_STRING (51) or PPID_BINARY (53) for
    WebRTC messages, empty ones included (their 56/57 are folded in, data is b"")."""

    stream_id: int
    ppid: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """Both directions of the stream are reset; the stream id may be reused."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class BufferedAmountLow:
    """`buffered_amount(stream_id)` fell to or below the stream's low-water mark."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class MessageTooLarge:
    """An incoming message exceeded max_message_size and was discarded."""

    stream_id: int
    size: int


@dataclass(frozen=True, slots=True)
class AssociationClosed:
    """The association is gone: "shutdown", "peer abort", "abort", "max retransmissions",
    "init timeout"."""

    reason: str


SctpEvent = (
    AssociationEstablished
    | ChannelOpened
    | MessageReceived
    | ChannelClosed
    | BufferedAmountLow
    | MessageTooLarge
    | AssociationClosed
)


@dataclass(slots=True)
class SctpStats:
    """Counters; every packet given to receive() is counted in exactly one drop
    counter or processed."""

    packets_in: int = 0
    packets_out: int = 0
    bad_checksum: int = 0
    bad_vtag: int = 0
    bad_port: int = 0
    malformed: int = 0
    out_of_the_blue: int = 0
    bad_cookie: int = 0
    data_chunks_in: int = 0
    data_chunks_out: int = 0
    duplicate_tsns: int = 0
    window_drops: int = 0
    retransmissions: int = 0
    fast_retransmits: int = 0
    t3_expirations: int = 0
    messages_in: int = 0
    messages_out: int = 0
    messages_abandoned: int = 0
    messages_too_large: int = 0
    messages_without_channel: int = 0
    bad_dcep: int = 0


@dataclass(slots=True, eq=False)
class _OutMessage:
    stream_id: int
    ppid: int
    data: bytes
    ordered: bool
    max_retransmits: int | None
    expires_at: float | None
    counted: bool  # counts in buffered_amount
    offset: int = 0
    ssn: int = 0
    started: bool = False
    abandoned: bool = False
    acked_bytes: int = 0
    chunks: list[_OutChunk] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class _OutChunk:
    tsn: int
    message: _OutMessage
    raw: bytes
    size: int
    ordered: bool
    sent_count: int = 0
    acked: bool = False  # cumulatively or gap acked
    in_flight: bool = False
    retransmit: bool = False
    abandoned: bool = False
    misses: int = 0
    fast_retransmitted: bool = False


@dataclass(slots=True, eq=False)
class _Run:
    """Consecutive TSNs of one stream that may become a message (B ... E)."""

    first: int
    last: int
    begin: bool
    end: bool
    unordered: bool
    ssn: int
    ppid: int
    parts: list[bytes]
    size: int
    buffered: int
    discarding: bool = False


@dataclass(slots=True, eq=False)
class _InboundStream:
    next_ssn: int = 0
    by_first: dict[int, _Run] = field(default_factory=dict)
    by_last: dict[int, _Run] = field(default_factory=dict)
    # Complete ordered messages waiting for their turn: ssn -> (ppid, data or None, size).
    ready: dict[int, tuple[int, bytes | None, int]] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class _Channel:
    params: ChannelParameters
    opened_by_peer: bool
    acked: bool
    closing: bool = False
    in_reset: bool = False
    out_reset: bool = False


@dataclass(slots=True)
class _Cookie:
    timestamp: float
    my_tag: int
    my_tsn: int
    peer_tag: int
    peer_tsn: int
    peer_rwnd: int
    peer_outbound: int
    peer_inbound: int
    tie_local: int
    tie_peer: int
    extensions: int


class SctpAssociation:
    """One SCTP association carrying WebRTC data channels; see the module docstring."""

    def __init__(
        self,
        *,
        local_port: int = SCTP_PORT,
        remote_port: int = SCTP_PORT,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        peer_max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        receive_window: int | None = None,
        manual_release: bool = False,
        is_dtls_server: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        """`max_message_size` bounds incoming messages (our a=max-message-size),
        `peer_max_message_size` outgoing ones (the peer's). `receive_window` defaults to
        max(1 MiB, 2 * max_message_size) and must hold one message of max_message_size
        (ValueError otherwise), or such a message could never be reassembled. With
        `manual_release`, delivered bytes keep occupying the receive window until
        `release()`."""
        self._rng = rng if rng is not None else random.SystemRandom()
        self.local_port = local_port
        self.remote_port = remote_port
        self.max_message_size = max_message_size
        self.peer_max_message_size = peer_max_message_size
        self._receive_window = (
            receive_window
            if receive_window is not None
            else max(DEFAULT_RECEIVE_WINDOW, 2 * max_message_size)
        )
        fragments = -(-max_message_size // MAX_USER_DATA_SIZE)
        needed = max_message_size + fragments * RX_CHUNK_OVERHEAD + MAX_USER_DATA_SIZE
        if self._receive_window < needed:
            raise ValueError(
                f"receive_window {self._receive_window} cannot hold a message of "
                f"max_message_size {max_message_size} (needs {needed})"
            )
        self._manual_release = manual_release
        self._is_dtls_server = is_dtls_server
        self._cookie_secret = self._rng.randbytes(32)
        self.stats = SctpStats()
        self.state = SctpState.CLOSED
        self._events: list[SctpEvent] = []
        self._ever_established = False

        # Tags and extensions.
        self._local_tag = 0
        self._peer_tag = 0
        self._initial_tsn = self._random_nonzero()
        self._peer_prsctp = False
        self._peer_reconfig = False
        self._outbound_streams = MAX_STREAMS
        self._inbound_streams = MAX_STREAMS

        # Outbound.
        self._next_tsn = self._initial_tsn
        self._last_cum_ack = (self._initial_tsn - 1) & _MASK32
        self._outstanding: deque[_OutChunk] = deque()
        self._rtx: list[_OutChunk] = []
        self._pending: dict[int, deque[_OutMessage]] = {}
        self._current: _OutMessage | None = None
        self._served = 0
        self._served_at: dict[int, int] = {}
        self._priority: dict[int, int] = {}
        self._out_ssn: dict[int, int] = {}
        self._buffered: dict[int, int] = {}
        self._low_threshold: dict[int, int] = {}
        self._flight_size = 0
        self._peer_rwnd = 0
        self._cwnd = 4380
        self._ssthresh = 0
        self._partial_bytes_acked = 0
        self._fast_recovery_exit: int | None = None
        self._fast_rtx_pending = False
        self._forward_tsn: ForwardTsnChunk | None = None
        self._forward_tsn_dirty = False

        # RTT and timers (absolute times, None when stopped).
        self._rto = RTO_INITIAL_S
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._rtt_tsn: int | None = None
        self._rtt_sent_at = 0.0
        self._error_count = 0
        self._t1_at: float | None = None
        self._t1_chunk: InitChunk | CookieEchoChunk | None = None
        self._t1_count = 0
        self._t2_at: float | None = None
        self._t2_count = 0
        self._t3_at: float | None = None
        self._sack_at: float | None = None
        self._reconfig_at: float | None = None

        # Inbound.
        self._cum_tsn = 0
        self._highest_tsn = 0
        self._rx_ahead: set[int] = set()
        self._rx_streams: dict[int, _InboundStream] = {}
        self._rx_buffered = 0
        self._held = 0
        self._duplicates: list[int] = []
        self._sack_now = False
        self._packets_since_sack = 0
        self._last_advertised_rwnd = self._receive_window

        # Stream reset (RFC 6525).
        self._reconfig_seq = self._initial_tsn
        self._reconfig_request: OutgoingSsnResetRequest | None = None
        self._reset_pending: list[int] = []
        self._peer_next_reconfig_seq = 0
        self._peer_last_reconfig_result = RECONFIG_SUCCESS_PERFORMED
        self._deferred_reset: OutgoingSsnResetRequest | None = None

        # Data channels.
        self._channels: dict[int, _Channel] = {}

        # Output.
        self._control: list[bytes] = []
        self._raw_out: list[bytes] = []

    # ------------------------------------------------------------------ public API

    def start(self, now: float) -> None:
        """Send our own INIT (RFC 9260 section 5.1). Optional: a server may just wait."""
        if self.state is not SctpState.CLOSED or self._ever_established:
            return
        self._local_tag = self._random_nonzero()
        init = InitChunk(
            self._local_tag,
            self._receive_window,
            MAX_STREAMS,
            MAX_STREAMS,
            self._initial_tsn,
            self._extension_params(),
        )
        self._t1_chunk = init
        self._t1_count = 0
        self._raw_out.append(self._packet(0, [bytes(init)]))
        self._t1_at = now + self._rto
        self.state = SctpState.COOKIE_WAIT

    def receive(self, packet: bytes, now: float) -> None:
        """Process one SCTP packet (one DTLS record). Never raises: bad input is counted
        in `stats` and dropped."""
        self.stats.packets_in += 1
        try:
            parsed = parse_packet(packet)
        except SctpChecksumError:
            self.stats.bad_checksum += 1
            return
        except SctpParseError:
            self.stats.malformed += 1
            return
        if parsed.destination_port != self.local_port or parsed.source_port != self.remote_port:
            self.stats.bad_port += 1
            return
        self._handle_packet(parsed.verification_tag, parsed.chunks, now)

    def packets_to_send(self, now: float) -> list[bytes]:
        """The SCTP packets to send now, each for one DTLS record."""
        out = self._raw_out
        if out:
            self._raw_out = []
        if self._peer_tag and self.state is not SctpState.CLOSED and not self._idle():
            out = out + self._transmit(now) if out else self._transmit(now)
        if out:
            self.stats.packets_out += len(out)
            return out
        return []

    def _idle(self) -> bool:
        """Whether `_transmit` would send nothing and change nothing: no control chunk,
        SACK, retransmission, FORWARD TSN or stream reset due, no shutdown step, and no
        new DATA (none queued, or the congestion window is full)."""
        return (
            not self._control
            and not self._sack_now
            and not self._rtx
            and not self._forward_tsn_dirty
            and not self._reset_pending
            and self.state is SctpState.ESTABLISHED
            and ((self._current is None and not self._pending) or self._flight_size >= self._cwnd)
        )

    def get_timeout(self) -> float | None:
        """Absolute time of the next timer, or None."""
        times = [
            t
            for t in (self._t1_at, self._t2_at, self._t3_at, self._sack_at, self._reconfig_at)
            if t is not None
        ]
        return min(times) if times else None

    def handle_timeout(self, now: float) -> None:
        """Run every timer due at `now`."""
        if self._t1_at is not None and now >= self._t1_at:
            self._on_t1(now)
        if self._t2_at is not None and now >= self._t2_at:
            self._on_t2(now)
        if self._t3_at is not None and now >= self._t3_at:
            self._on_t3(now)
        if self._sack_at is not None and now >= self._sack_at:
            self._sack_now = True
            self._sack_at = None
        if self._reconfig_at is not None and now >= self._reconfig_at:
            self._reconfig_at = None
            if self._reconfig_request is not None:
                self._control.append(bytes(ReconfigChunk([self._reconfig_request])))
                self._reconfig_at = now + self._rto

    def events(self) -> list[SctpEvent]:
        """Events since the last call, oldest first."""
        events = self._events
        self._events = []
        return events

    @property
    def established(self) -> bool:
        return self.state is SctpState.ESTABLISHED

    def open_channel(
        self,
        label: str,
        protocol: str = "",
        ordered: bool = True,
        max_retransmits: int | None = None,
        lifetime_ms: int | None = None,
        priority: int = DEFAULT_STREAM_PRIORITY,
    ) -> int:
        """Open a channel with DCEP on a free stream id (odd ids as DTLS server, RFC 8832
        section 6) and return it. The channel can carry messages at once; ChannelOpened
        follows when the peer acknowledges. `priority` is the local send priority."""
        self._require_established()
        params = ChannelParameters(label, protocol, ordered, max_retransmits, lifetime_ms)
        stream_id = 1 if self._is_dtls_server else 0
        while stream_id in self._channels or stream_id in self._out_ssn:
            stream_id += 2
        if stream_id >= self._outbound_streams:
            raise SctpChannelError("no free stream id")
        self._channels[stream_id] = _Channel(params, opened_by_peer=False, acked=False)
        self._priority[stream_id] = priority
        self._queue(stream_id, PPID_DCEP, bytes(DataChannelOpen.from_parameters(params)), True)
        return stream_id

    def add_negotiated_channel(
        self,
        stream_id: int,
        ordered: bool = True,
        max_retransmits: int | None = None,
        lifetime_ms: int | None = None,
        priority: int = DEFAULT_STREAM_PRIORITY,
        label: str = "",
        protocol: str = "",
    ) -> None:
        """Register a channel negotiated out of band (negotiated: true): no DCEP."""
        if stream_id in self._channels or not 0 <= stream_id < MAX_STREAMS:
            raise SctpChannelError(f"stream {stream_id} is in use")
        params = ChannelParameters(label, protocol, ordered, max_retransmits, lifetime_ms)
        self._channels[stream_id] = _Channel(params, opened_by_peer=False, acked=True)
        self._priority[stream_id] = priority

    def send(
        self,
        stream_id: int,
        data: bytes | str,
        now: float,
        *,
        max_retransmits: int | None = None,
        lifetime_s: float | None = None,
    ) -> None:
        """Queue one message. str goes as PPID 51, bytes as 53, empty ones as 56/57.
        Reliability defaults to the channel's; pass `max_retransmits` or `lifetime_s`
        to make this message partially reliable. Raises SctpStateError,
        SctpChannelError or SctpMessageSizeError."""
        self._require_established()
        channel = self._channels.get(stream_id)
        if channel is None or channel.closing:
            raise SctpChannelError(f"no open channel on stream {stream_id}")
        if isinstance(data, str):
            payload = data.encode("utf-8")
            ppid = PPID_STRING if payload else PPID_STRING_EMPTY
        else:
            payload = bytes(data)
            ppid = PPID_BINARY if payload else PPID_BINARY_EMPTY
        if len(payload) > self.peer_max_message_size:
            raise SctpMessageSizeError(
                f"{len(payload)} bytes exceed the peer's maximum of {self.peer_max_message_size}"
            )
        if not payload:
            payload = b"\x00"
        if max_retransmits is None and lifetime_s is None:
            max_retransmits = channel.params.max_retransmits
            if channel.params.lifetime_ms is not None:
                lifetime_s = channel.params.lifetime_ms / 1000
        # Until the peer acknowledges our OPEN, everything goes ordered (RFC 8832 section 6).
        ordered = channel.params.ordered or not channel.acked
        expires_at = now + lifetime_s if lifetime_s is not None else None
        self._queue(stream_id, ppid, payload, ordered, max_retransmits, expires_at, counted=True)
        self.stats.messages_out += 1

    def close_channel(self, stream_id: int) -> None:
        """Close a channel: queued messages still go, then the outgoing stream is reset
        (RFC 8831 section 6.7). ChannelClosed follows when the peer has reset its side."""
        channel = self._channels.get(stream_id)
        if channel is None or channel.closing:
            return
        channel.closing = True
        if self.state is SctpState.ESTABLISHED and self._peer_reconfig:
            self._reset_pending.append(stream_id)
        else:
            channel.in_reset = channel.out_reset = True
            self._maybe_forget_channel(stream_id)

    def set_stream_priority(self, stream_id: int, priority: int) -> None:
        """Lower is more urgent; strict priority between streams, round robin on ties."""
        self._priority[stream_id] = priority

    def buffered_amount(self, stream_id: int) -> int:
        """Bytes of user messages on the stream not yet acknowledged by the peer."""
        return self._buffered.get(stream_id, 0)

    def set_buffered_amount_low_threshold(self, stream_id: int, nbytes: int) -> None:
        """BufferedAmountLow fires when buffered_amount falls from above to at or below this."""
        self._low_threshold[stream_id] = nbytes

    def release(self, nbytes: int) -> None:
        """With manual_release: give back delivered bytes to the receive window."""
        self._held = max(0, self._held - nbytes)
        rwnd = self._rwnd()
        if (
            self._last_advertised_rwnd < self._receive_window // 2
            and rwnd - self._last_advertised_rwnd >= MAX_SCTP_PACKET_SIZE
        ):
            self._sack_now = True

    @property
    def held_bytes(self) -> int:
        """Delivered bytes not yet released (manual_release only)."""
        return self._held

    def shutdown(self) -> None:
        """Graceful close (RFC 9260 section 9.2) once everything queued is acknowledged."""
        if self.state is SctpState.ESTABLISHED:
            self.state = SctpState.SHUTDOWN_PENDING
        elif self.state in (SctpState.COOKIE_WAIT, SctpState.COOKIE_ECHOED):
            self._close("shutdown")

    def abort(self, reason: str = "abort") -> None:
        """Send ABORT and close at once."""
        if self.state is SctpState.CLOSED:
            return
        if self._peer_tag:
            cause = (CAUSE_USER_INITIATED_ABORT, reason.encode("utf-8")[:256])
            self._raw_out.append(self._packet(self._peer_tag, [bytes(AbortChunk([cause]))]))
        self._close(reason)

    # ------------------------------------------------------------------ receive path

    def _handle_packet(self, vtag: int, chunks: list[Chunk], now: float) -> None:
        first = chunks[0]
        if isinstance(first, InitChunk) and not isinstance(first, InitAckChunk):
            if len(chunks) != 1 or vtag != 0:
                self.stats.malformed += 1
                return
            self._on_init(first, now)
            return
        if isinstance(first, CookieEchoChunk):
            if not self._on_cookie_echo(first, vtag, now):
                return
            chunks = chunks[1:]
        elif isinstance(first, AbortChunk | ShutdownCompleteChunk) and not isinstance(
            first, ErrorChunk
        ):
            expected = self._peer_tag if first.flags & FLAG_T else self._local_tag
            if not self._local_tag or vtag != expected:
                self.stats.bad_vtag += 1
                return
            if isinstance(first, ShutdownCompleteChunk):
                if self.state is SctpState.SHUTDOWN_ACK_SENT:
                    self._close("shutdown")
            else:
                self._close("peer abort")
            return
        elif not self._local_tag:
            self.stats.out_of_the_blue += 1
            if isinstance(first, ShutdownAckChunk):
                done = ShutdownCompleteChunk(FLAG_T)
                self._raw_out.append(self._packet(vtag, [bytes(done)]))
            return
        elif vtag != self._local_tag:
            self.stats.bad_vtag += 1
            return

        data_seen = False
        for chunk in chunks:
            if self.state is SctpState.CLOSED:
                break
            if isinstance(chunk, DataChunk):
                data_seen = True
                self._on_data(chunk)
            elif isinstance(chunk, SackChunk):
                self._on_sack(chunk, now)
            elif isinstance(chunk, ForwardTsnChunk):
                self._on_forward_tsn(chunk)
            elif isinstance(chunk, ReconfigChunk):
                self._on_reconfig(chunk, now)
            elif isinstance(chunk, HeartbeatAckChunk):
                pass  # we send no heartbeats
            elif isinstance(chunk, HeartbeatChunk):
                self._control.append(bytes(HeartbeatAckChunk(chunk.params)))
            elif isinstance(chunk, InitAckChunk):
                self._on_init_ack(chunk, now)
            elif isinstance(chunk, CookieAckChunk):
                if self.state is SctpState.COOKIE_ECHOED:
                    self._t1_at = None
                    self._set_established()
            elif isinstance(chunk, ShutdownChunk):
                self._on_shutdown(chunk, now)
            elif isinstance(chunk, ShutdownAckChunk):
                if self.state in (SctpState.SHUTDOWN_SENT, SctpState.SHUTDOWN_ACK_SENT):
                    done = ShutdownCompleteChunk()
                    self._raw_out.append(self._packet(self._peer_tag, [bytes(done)]))
                    self._close("shutdown")
            elif isinstance(chunk, AbortChunk) and not isinstance(chunk, ErrorChunk):
                self._close("peer abort")
            elif isinstance(chunk, UnknownChunk):
                if chunk.report and self._peer_tag:
                    cause = (CAUSE_UNRECOGNIZED_CHUNK, bytes(chunk))
                    self._control.append(bytes(ErrorChunk([cause])))
                if chunk.stop_processing:
                    break
            # ERROR, stray INIT or COOKIE ECHO later in a packet: nothing to do.

        if data_seen:
            self._packets_since_sack += 1
            if self._packets_since_sack >= SACK_EVERY_PACKETS:
                self._sack_now = True
            elif self._sack_at is None:
                self._sack_at = now + SACK_DELAY_S
            if self.state is SctpState.SHUTDOWN_SENT:
                self._control.append(bytes(ShutdownChunk(self._cum_tsn)))
        self._check_deferred_reset()

    def _on_init(self, init: InitChunk, now: float) -> None:
        tie_local = tie_peer = 0
        if self.state in (SctpState.COOKIE_WAIT, SctpState.COOKIE_ECHOED):
            # Collision (section 5.2.1): answer with the parameters of our own INIT.
            my_tag, my_tsn = self._local_tag, self._initial_tsn
        elif self.state is SctpState.CLOSED and not self._ever_established:
            my_tag, my_tsn = self._random_nonzero(), self._initial_tsn
        else:
            # Unexpected INIT (section 5.2.2); the restart it leads to is refused later.
            my_tag, my_tsn = self._random_nonzero(), self._random_nonzero()
            tie_local, tie_peer = self._local_tag, self._peer_tag
        extensions = self._peer_extensions(init)
        unrecognized: list[tuple[int, bytes]] = []
        for kind, value in init.params:
            if kind in _KNOWN_INIT_PARAMS:
                continue
            # The upper two bits say what to do with an unknown parameter (section 3.2.1).
            if kind & 0x4000:
                unrecognized.append((PARAM_UNRECOGNIZED, serialize_tlvs([(kind, value)])))
            if not kind & 0x8000:
                break
        cookie = self._make_cookie(
            _Cookie(
                now,
                my_tag,
                my_tsn,
                init.initiate_tag,
                init.initial_tsn,
                init.a_rwnd,
                init.outbound_streams,
                init.inbound_streams,
                tie_local,
                tie_peer,
                extensions,
            )
        )
        ack = InitAckChunk(
            my_tag,
            self._rwnd(),
            MAX_STREAMS,
            MAX_STREAMS,
            my_tsn,
            [(PARAM_STATE_COOKIE, cookie), *self._extension_params(), *unrecognized],
        )
        self._raw_out.append(self._packet(init.initiate_tag, [bytes(ack)]))

    def _on_init_ack(self, ack: InitAckChunk, now: float) -> None:
        if self.state is not SctpState.COOKIE_WAIT:
            return
        cookie = ack.param(PARAM_STATE_COOKIE)
        if cookie is None:
            self.stats.malformed += 1
            return
        self._adopt_peer(
            ack.initiate_tag,
            ack.initial_tsn,
            ack.a_rwnd,
            ack.outbound_streams,
            ack.inbound_streams,
            self._peer_extensions(ack),
        )
        echo = CookieEchoChunk(cookie)
        self._t1_chunk = echo
        self._t1_count = 0
        self._t1_at = now + self._rto
        self._raw_out.append(self._packet(self._peer_tag, [bytes(echo)]))
        self.state = SctpState.COOKIE_ECHOED

    def _on_cookie_echo(self, echo: CookieEchoChunk, vtag: int, now: float) -> bool:
        """Section 5.1.5 and 5.2.4; True if the rest of the packet may be processed."""
        cookie = self._open_cookie(echo.cookie)
        if cookie is None or not 0 <= now - cookie.timestamp <= VALID_COOKIE_LIFE_S:
            self.stats.bad_cookie += 1
            return False
        if vtag != cookie.my_tag:
            self.stats.bad_vtag += 1
            return False
        state = self.state
        if state is SctpState.CLOSED and not self._ever_established:
            self._local_tag = cookie.my_tag
        elif cookie.my_tag != self._local_tag:
            # Case A (peer restart) is not supported, case C is discarded.
            self.stats.bad_cookie += 1
            return False
        elif state in (SctpState.COOKIE_WAIT, SctpState.COOKIE_ECHOED):
            pass  # case B: the peer's INIT crossed ours
        elif cookie.peer_tag == self._peer_tag:
            # Case D: a retransmitted COOKIE ECHO; answer again.
            self._control.append(bytes(CookieAckChunk()))
            return True
        else:
            self.stats.bad_cookie += 1
            return False
        self._adopt_peer(
            cookie.peer_tag,
            cookie.peer_tsn,
            cookie.peer_rwnd,
            cookie.peer_outbound,
            cookie.peer_inbound,
            cookie.extensions,
        )
        self._t1_at = None
        self._control.append(bytes(CookieAckChunk()))
        self._set_established()
        return True

    def _on_data(self, chunk: DataChunk) -> None:
        self.stats.data_chunks_in += 1
        if self.state not in (
            SctpState.ESTABLISHED,
            SctpState.SHUTDOWN_PENDING,
            SctpState.SHUTDOWN_SENT,
        ):
            return
        tsn = chunk.tsn
        diff = (tsn - self._cum_tsn) & _MASK32
        if diff == 0 or diff >= _HALF32 or tsn in self._rx_ahead:
            self.stats.duplicate_tsns += 1
            if len(self._duplicates) < MAX_DUPLICATE_TSNS:
                self._duplicates.append(tsn)
            self._sack_now = True
            return
        if diff > MAX_TSN_AHEAD:
            self.stats.window_drops += 1
            return
        size = len(chunk.user_data)
        fills_gap = _tsn_lt(tsn, self._highest_tsn)
        if self._rx_buffered + self._held + size > self._receive_window and not fills_gap:
            # Section 6.2: no room, drop what lies beyond the highest TSN received.
            self.stats.window_drops += 1
            self._sack_now = True
            return
        if diff == 1:
            cum = tsn
            ahead = self._rx_ahead
            while ahead:
                nxt = (cum + 1) & _MASK32
                if nxt not in ahead:
                    break
                ahead.discard(nxt)
                cum = nxt
            self._cum_tsn = cum
            if _tsn_lt(self._highest_tsn, cum):
                self._highest_tsn = cum
        else:
            if len(self._rx_ahead) >= MAX_OUT_OF_ORDER_TSNS:
                self.stats.window_drops += 1
                return
            self._rx_ahead.add(tsn)
            self._sack_now = True  # out of order: report the gap at once
            if _tsn_lt(self._highest_tsn, tsn):
                self._highest_tsn = tsn
        if chunk.stream_id >= self._inbound_streams:
            cause = (CAUSE_INVALID_STREAM, struct.pack("!HH", chunk.stream_id, 0))
            self._control.append(bytes(ErrorChunk([cause])))
            return
        self._reassemble(chunk)

    def _reassemble(self, chunk: DataChunk) -> None:
        sid = chunk.stream_id
        stream = self._rx_streams.get(sid)
        if stream is None:
            stream = self._rx_streams[sid] = _InboundStream()
        flags = chunk.flags
        begin = bool(flags & DATA_FLAG_BEGIN)
        end = bool(flags & DATA_FLAG_END)
        unordered = bool(flags & DATA_FLAG_UNORDERED)
        data = chunk.user_data
        if begin and end:
            if len(data) > self.max_message_size:
                data_or_none: bytes | None = None
            else:
                data_or_none = data
            if unordered:
                self._deliver(sid, chunk.ppid, data_or_none, len(data))
            else:
                self._ready(stream, sid, chunk.ssn, chunk.ppid, data_or_none, len(data))
            return
        tsn = chunk.tsn
        if not begin:
            left = stream.by_last.get((tsn - 1) & _MASK32)
            if (
                left is not None
                and not left.end
                and left.unordered == unordered
                and (unordered or left.ssn == chunk.ssn)
                and (end or (tsn + 1) & _MASK32 not in stream.by_first)
            ):
                # In order, the usual case: the fragment extends the run before it.
                del stream.by_last[left.last]
                left.parts.append(data)
                left.size += len(data)
                left.last = tsn
                left.end = end
                self._grew(stream, sid, left, len(data))
                return
        run = _Run(tsn, tsn, begin, end, unordered, chunk.ssn, chunk.ppid, [data], len(data), 0)
        if not begin:
            left = stream.by_last.get((tsn - 1) & _MASK32)
            if left is not None and not left.end and self._compatible(left, run):
                del stream.by_last[left.last]
                left.parts.extend(run.parts)
                left.size += run.size
                left.last = run.last
                left.end = run.end
                run = left
        if not end:
            right = stream.by_first.get((tsn + 1) & _MASK32)
            if right is not None and not right.begin and self._compatible(run, right):
                del stream.by_first[right.first]
                del stream.by_last[right.last]
                run.parts.extend(right.parts)
                run.size += right.size
                run.last = right.last
                run.end = right.end
                run.buffered += right.buffered
                if right.discarding:
                    run.discarding = True
        self._grew(stream, sid, run, len(data))

    def _grew(self, stream: _InboundStream, sid: int, run: _Run, added: int) -> None:
        """A run took a fragment of `added` bytes: charge it, deliver a whole message."""
        run.buffered += added + RX_CHUNK_OVERHEAD
        self._rx_buffered += added + RX_CHUNK_OVERHEAD
        if run.size > self.max_message_size and not run.discarding:
            run.discarding = True
        if run.discarding and run.buffered:
            self._rx_buffered -= run.buffered
            run.buffered = 0
            run.parts = []
        if run.begin and run.end:
            stream.by_first.pop(run.first, None)
            self._rx_buffered -= run.buffered
            message = None if run.discarding else b"".join(run.parts)
            if run.unordered:
                self._deliver(sid, run.ppid, message, run.size)
            else:
                self._ready(stream, sid, run.ssn, run.ppid, message, run.size)
            return
        stream.by_first[run.first] = run
        stream.by_last[run.last] = run

    @staticmethod
    def _compatible(a: _Run, b: _Run) -> bool:
        return a.unordered == b.unordered and (a.unordered or a.ssn == b.ssn)

    def _ready(
        self,
        stream: _InboundStream,
        sid: int,
        ssn: int,
        ppid: int,
        data: bytes | None,
        size: int,
    ) -> None:
        if ssn == stream.next_ssn:
            stream.next_ssn = (ssn + 1) & _MASK16
            self._deliver(sid, ppid, data, size)
            self._drain_ready(stream, sid)
        elif _ssn_le(stream.next_ssn, ssn) and ssn not in stream.ready:
            stream.ready[ssn] = (ppid, data, size)
            self._rx_buffered += _ready_cost(data)

    def _drain_ready(self, stream: _InboundStream, sid: int) -> None:
        ready = stream.ready
        while ready:
            entry = ready.pop(stream.next_ssn, None)
            if entry is None:
                return
            stream.next_ssn = (stream.next_ssn + 1) & _MASK16
            ppid, data, size = entry
            self._rx_buffered -= _ready_cost(data)
            self._deliver(sid, ppid, data, size)

    def _deliver(self, sid: int, ppid: int, data: bytes | None, size: int) -> None:
        if data is None:
            self.stats.messages_too_large += 1
            self._events.append(MessageTooLarge(sid, size))
            return
        if ppid == PPID_DCEP:
            self._on_dcep(sid, data)
            return
        channel = self._channels.get(sid)
        if channel is None or channel.in_reset:
            self.stats.messages_without_channel += 1
            return
        if ppid == PPID_STRING_EMPTY:
            ppid, data = PPID_STRING, b""
        elif ppid == PPID_BINARY_EMPTY:
            ppid, data = PPID_BINARY, b""
        if self._manual_release:
            self._held += len(data)
        self.stats.messages_in += 1
        self._events.append(MessageReceived(sid, ppid, data))

    def _on_dcep(self, sid: int, data: bytes) -> None:
        try:
            message = parse_dcep(data)
        except DcepError:
            self.stats.bad_dcep += 1
            return
        channel = self._channels.get(sid)
        if isinstance(message, DataChannelAck):
            if channel is not None and not channel.opened_by_peer and not channel.acked:
                channel.acked = True
                self._events.append(self._opened_event(sid, channel))
            return
        # The peer opens with the other parity (RFC 8832 section 6).
        if channel is not None or (sid % 2 == 1) == self._is_dtls_server:
            self.stats.bad_dcep += 1
            return
        try:
            params = message.parameters()
        except ValueError:
            self.stats.bad_dcep += 1
            return
        channel = _Channel(params, opened_by_peer=True, acked=True)
        self._channels[sid] = channel
        self._priority.setdefault(sid, DEFAULT_STREAM_PRIORITY)
        self._queue(sid, PPID_DCEP, bytes(DataChannelAck()), True)
        self._events.append(self._opened_event(sid, channel))

    @staticmethod
    def _opened_event(sid: int, channel: _Channel) -> ChannelOpened:
        p = channel.params
        return ChannelOpened(
            sid,
            p.label,
            p.protocol,
            p.ordered,
            p.max_retransmits,
            p.lifetime_ms,
            channel.opened_by_peer,
        )

    def _on_forward_tsn(self, chunk: ForwardTsnChunk) -> None:
        if self.state not in (
            SctpState.ESTABLISHED,
            SctpState.SHUTDOWN_PENDING,
            SctpState.SHUTDOWN_SENT,
        ):
            return
        self._sack_now = True
        new = chunk.new_cumulative_tsn
        diff = (new - self._cum_tsn) & _MASK32
        if diff == 0 or diff >= _HALF32 or diff > MAX_TSN_AHEAD:
            return
        self._rx_ahead = {t for t in self._rx_ahead if _tsn_lt(new, t)}
        cum = new
        while (cum + 1) & _MASK32 in self._rx_ahead:
            cum = (cum + 1) & _MASK32
            self._rx_ahead.discard(cum)
        self._cum_tsn = cum
        if _tsn_lt(self._highest_tsn, cum):
            self._highest_tsn = cum
        # Fragments of abandoned messages will never complete.
        for stream in self._rx_streams.values():
            for run in [r for r in stream.by_first.values() if _tsn_le(r.first, new)]:
                del stream.by_first[run.first]
                del stream.by_last[run.last]
                self._rx_buffered -= run.buffered
        for sid, ssn in chunk.streams:
            if sid >= self._inbound_streams:
                continue
            if sid not in self._rx_streams:
                self._rx_streams[sid] = _InboundStream()
            stream = self._rx_streams[sid]
            if not _ssn_le(stream.next_ssn, ssn):
                continue
            base = stream.next_ssn
            skipped = sorted(
                (k for k in stream.ready if _ssn_le(k, ssn)), key=lambda k: (k - base) & _MASK16
            )
            for k in skipped:
                ppid, data, size = stream.ready.pop(k)
                self._rx_buffered -= _ready_cost(data)
                self._deliver(sid, ppid, data, size)
            stream.next_ssn = (ssn + 1) & _MASK16
            self._drain_ready(stream, sid)

    def _on_sack(self, sack: SackChunk, now: float) -> None:
        if self.state in (SctpState.CLOSED, SctpState.COOKIE_WAIT, SctpState.COOKIE_ECHOED):
            return
        cum = sack.cumulative_tsn_ack
        if _tsn_lt(cum, self._last_cum_ack):
            return  # stale, out of order SACK
        if _tsn_lt((self._next_tsn - 1) & _MASK32, cum):
            self.stats.malformed += 1
            return  # acknowledges what we never sent
        self._error_count = 0
        flight_before = self._flight_size
        cum_advanced = cum != self._last_cum_ack
        bytes_acked = 0
        outstanding = self._outstanding
        while outstanding and _tsn_le(outstanding[0].tsn, cum):
            c = outstanding.popleft()
            if not c.acked:
                c.acked = True
                if not c.abandoned:
                    bytes_acked += c.size
                if c.in_flight:
                    c.in_flight = False
                    self._flight_size -= c.size
            if c.tsn == self._rtt_tsn:
                self._measure_rtt(now - self._rtt_sent_at)
            msg = c.message
            if not msg.abandoned:
                msg.acked_bytes += c.size
                if msg.counted:
                    self._buffered_decrease(msg.stream_id, c.size)
        self._last_cum_ack = cum

        highest_newly_acked = -1
        if outstanding and sack.gaps:
            base = outstanding[0].tsn
            count = len(outstanding)
            skew = (base - cum - 1) & _MASK32  # 0: outstanding starts right after cum
            for start, end in sack.gaps:
                lo = start - 1 - skew
                hi = end - 1 - skew
                if start == 0 or start > end or lo < 0 or lo >= count:
                    continue
                for i in range(lo, min(hi, count - 1) + 1):
                    c = outstanding[i]
                    if not c.acked:
                        c.acked = True
                        c.retransmit = False
                        if not c.abandoned:
                            bytes_acked += c.size
                        if c.in_flight:
                            c.in_flight = False
                            self._flight_size -= c.size
                        if i > highest_newly_acked:
                            highest_newly_acked = i
            # Miss indications below the highest newly acked TSN (section 7.2.4).
            marked = False
            for i in range(highest_newly_acked):
                c = outstanding[i]
                if c.acked or c.abandoned or not c.in_flight or c.fast_retransmitted:
                    continue
                c.misses += 1
                if c.misses >= FAST_RETRANSMIT_MISSES:
                    c.fast_retransmitted = True
                    c.retransmit = True
                    c.in_flight = False
                    self._flight_size -= c.size
                    self._rtx.append(c)
                    self.stats.fast_retransmits += 1
                    marked = True
                    if c.tsn == self._rtt_tsn:
                        self._rtt_tsn = None
            if marked:
                self._fast_rtx_pending = True
                if self._fast_recovery_exit is None:
                    self._ssthresh = max(self._cwnd // 2, 4 * MAX_SCTP_PACKET_SIZE)
                    self._cwnd = self._ssthresh
                    self._partial_bytes_acked = 0
                    self._fast_recovery_exit = (self._next_tsn - 1) & _MASK32

        if self._fast_recovery_exit is not None and _tsn_le(self._fast_recovery_exit, cum):
            self._fast_recovery_exit = None
        if cum_advanced and self._fast_recovery_exit is None and bytes_acked:
            if self._cwnd <= self._ssthresh:
                if flight_before + MAX_SCTP_PACKET_SIZE >= self._cwnd:
                    self._cwnd += min(bytes_acked, MAX_SCTP_PACKET_SIZE)
            else:
                self._partial_bytes_acked += bytes_acked
                if (
                    self._partial_bytes_acked >= self._cwnd
                    and flight_before + MAX_SCTP_PACKET_SIZE >= self._cwnd
                ):
                    self._partial_bytes_acked -= self._cwnd
                    self._cwnd += MAX_SCTP_PACKET_SIZE
        self._peer_rwnd = max(0, sack.a_rwnd - self._flight_size)

        if not outstanding:
            self._t3_at = None
        elif cum_advanced:
            self._t3_at = now + self._rto
        # The FORWARD TSN point can only have moved if one was announced (the SACK may
        # have passed it) or an abandoned chunk now heads the outstanding queue.
        if self._forward_tsn is not None or (outstanding and outstanding[0].abandoned):
            self._forward_tsn_dirty = True

    def _on_shutdown(self, chunk: ShutdownChunk, now: float) -> None:
        if self.state in (SctpState.ESTABLISHED, SctpState.SHUTDOWN_PENDING):
            self._on_sack(SackChunk(chunk.cumulative_tsn_ack, self._peer_rwnd), now)
            self.state = SctpState.SHUTDOWN_RECEIVED
        elif self.state is SctpState.SHUTDOWN_SENT:
            self._on_sack(SackChunk(chunk.cumulative_tsn_ack, self._peer_rwnd), now)
            self._send_shutdown_ack(now)

    def _on_reconfig(self, chunk: ReconfigChunk, now: float) -> None:
        for param in chunk.params:
            if isinstance(param, OutgoingSsnResetRequest):
                self._on_reset_request(param)
            elif isinstance(param, ReconfigResponse):
                self._on_reconfig_response(param, now)
            elif isinstance(param, IncomingSsnResetRequest):
                self._reconfig_respond(param.request_seq, RECONFIG_DENIED)
            # Other requests (add streams) are not needed: we announce 65535 streams.

    def _on_reset_request(self, req: OutgoingSsnResetRequest) -> None:
        expected = self._peer_next_reconfig_seq
        if req.request_seq == ((expected - 1) & _MASK32):
            pending = self._deferred_reset is not None
            result = RECONFIG_IN_PROGRESS if pending else self._peer_last_reconfig_result
            self._reconfig_respond(req.request_seq, result)
            return
        if req.request_seq != expected:
            self._reconfig_respond(req.request_seq, RECONFIG_ERROR_BAD_SEQUENCE_NUMBER)
            return
        self._peer_next_reconfig_seq = (expected + 1) & _MASK32
        if _tsn_le(req.last_tsn, self._cum_tsn):
            self._perform_incoming_reset(req)
        else:
            self._deferred_reset = req
            self._reconfig_respond(req.request_seq, RECONFIG_IN_PROGRESS)

    def _check_deferred_reset(self) -> None:
        req = self._deferred_reset
        if req is not None and _tsn_le(req.last_tsn, self._cum_tsn):
            self._deferred_reset = None
            self._perform_incoming_reset(req)

    def _perform_incoming_reset(self, req: OutgoingSsnResetRequest) -> None:
        streams = req.streams or list(self._rx_streams)
        for sid in streams:
            stream = self._rx_streams.pop(sid, None)
            if stream is not None:
                for run in stream.by_first.values():
                    self._rx_buffered -= run.buffered
                for _, data, _ in stream.ready.values():
                    self._rx_buffered -= _ready_cost(data)
            channel = self._channels.get(sid)
            if channel is None:
                continue
            channel.in_reset = True
            if not channel.closing:
                # The peer closed the channel: reset our side too (RFC 8831 section 6.7).
                channel.closing = True
                self._reset_pending.append(sid)
            self._maybe_forget_channel(sid)
        self._peer_last_reconfig_result = RECONFIG_SUCCESS_PERFORMED
        self._reconfig_respond(req.request_seq, RECONFIG_SUCCESS_PERFORMED)

    def _on_reconfig_response(self, resp: ReconfigResponse, now: float) -> None:
        req = self._reconfig_request
        if req is None or resp.response_seq != req.request_seq:
            return
        if resp.result == RECONFIG_IN_PROGRESS:
            self._reconfig_at = now + self._rto
            return
        self._reconfig_request = None
        self._reconfig_at = None
        self._reconfig_seq = (self._reconfig_seq + 1) & _MASK32
        for sid in req.streams:
            if resp.result in (RECONFIG_SUCCESS_PERFORMED, RECONFIG_SUCCESS_NOTHING_TO_DO):
                self._out_ssn.pop(sid, None)
            channel = self._channels.get(sid)
            if channel is not None:
                channel.out_reset = True
                self._maybe_forget_channel(sid)

    def _reconfig_respond(self, seq: int, result: int) -> None:
        self._control.append(bytes(ReconfigChunk([ReconfigResponse(seq, result)])))

    def _maybe_forget_channel(self, sid: int) -> None:
        channel = self._channels.get(sid)
        if channel is None or not (channel.in_reset and channel.out_reset):
            return
        del self._channels[sid]
        self._out_ssn.pop(sid, None)
        self._priority.pop(sid, None)
        self._served_at.pop(sid, None)
        self._low_threshold.pop(sid, None)
        self._events.append(ChannelClosed(sid))

    # ------------------------------------------------------------------ send path

    def _queue(
        self,
        sid: int,
        ppid: int,
        payload: bytes,
        ordered: bool,
        max_retransmits: int | None = None,
        expires_at: float | None = None,
        counted: bool = False,
    ) -> None:
        msg = _OutMessage(sid, ppid, payload, ordered, max_retransmits, expires_at, counted)
        queue = self._pending.get(sid)
        if queue is None:
            queue = self._pending[sid] = deque()
        queue.append(msg)
        if counted:
            self._buffered[sid] = self._buffered.get(sid, 0) + len(payload)

    def _buffered_decrease(self, sid: int, nbytes: int) -> None:
        before = self._buffered.get(sid, 0)
        after = max(0, before - nbytes)
        if after:
            self._buffered[sid] = after
        else:
            self._buffered.pop(sid, None)
        threshold = self._low_threshold.get(sid, 0)
        if before > threshold >= after:
            self._events.append(BufferedAmountLow(sid))

    def _peek_message(self, now: float) -> _OutMessage | None:
        """The message whose next fragment goes out next, by strict priority."""
        current = self._current
        if current is not None:
            return current
        while self._pending:
            best_sid = -1
            best_key = (0, 0)
            for sid in self._pending:
                key = (
                    self._priority.get(sid, DEFAULT_STREAM_PRIORITY),
                    self._served_at.get(sid, 0),
                )
                if best_sid < 0 or key < best_key:
                    best_sid, best_key = sid, key
            queue = self._pending[best_sid]
            msg = queue[0]
            if msg.expires_at is not None and now >= msg.expires_at and self._peer_prsctp:
                # Expired before it was sent: it never gets a TSN (RFC 3758 section 3.5).
                queue.popleft()
                if not queue:
                    del self._pending[best_sid]
                self._abandon(msg)
                continue
            return msg
        return None

    def _next_chunk(self, msg: _OutMessage) -> _OutChunk:
        if not msg.started:
            queue = self._pending[msg.stream_id]
            queue.popleft()
            if not queue:
                del self._pending[msg.stream_id]
            self._served += 1
            self._served_at[msg.stream_id] = self._served
            msg.started = True
            if msg.ordered:
                msg.ssn = self._out_ssn.get(msg.stream_id, 0)
                self._out_ssn[msg.stream_id] = (msg.ssn + 1) & _MASK16
            else:
                self._out_ssn.setdefault(msg.stream_id, 0)
        offset = msg.offset
        size = min(MAX_USER_DATA_SIZE, len(msg.data) - offset)
        flags = 0 if msg.ordered else DATA_FLAG_UNORDERED
        if offset == 0:
            flags |= DATA_FLAG_BEGIN
        if offset + size == len(msg.data):
            flags |= DATA_FLAG_END
            self._current = None
        else:
            self._current = msg
        msg.offset = offset + size
        tsn = self._next_tsn
        self._next_tsn = (tsn + 1) & _MASK32
        raw = bytes(
            DataChunk(
                tsn, msg.stream_id, msg.ssn, msg.ppid, msg.data[offset : offset + size], flags
            )
        )
        chunk = _OutChunk(tsn, msg, raw, size, msg.ordered)
        msg.chunks.append(chunk)
        self._outstanding.append(chunk)
        return chunk

    def _should_abandon(self, chunk: _OutChunk, now: float) -> bool:
        if not self._peer_prsctp:
            return False
        msg = chunk.message
        if msg.max_retransmits is not None and chunk.sent_count > msg.max_retransmits:
            return True
        return msg.expires_at is not None and now >= msg.expires_at

    def _abandon(self, msg: _OutMessage) -> None:
        if msg.abandoned:
            return
        msg.abandoned = True
        for c in msg.chunks:
            c.abandoned = True
            c.retransmit = False
            if c.in_flight:
                c.in_flight = False
                self._flight_size -= c.size
        if self._current is msg:
            self._current = None
        if msg.counted:
            self._buffered_decrease(msg.stream_id, len(msg.data) - msg.acked_bytes)
        self.stats.messages_abandoned += 1
        self._forward_tsn_dirty = True

    def _update_forward_tsn(self) -> None:
        """Advance the peer ack point over abandoned chunks (RFC 3758 section 3.5 C)."""
        self._forward_tsn_dirty = False
        new_cum: int | None = None
        streams: dict[int, int] = {}
        for c in self._outstanding:
            if not c.abandoned:
                break
            new_cum = c.tsn
            if c.ordered:
                streams[c.message.stream_id] = c.message.ssn
        if new_cum is None:
            self._forward_tsn = None
            return
        self._forward_tsn = ForwardTsnChunk(new_cum, sorted(streams.items()))

    def _transmit(self, now: float) -> list[bytes]:
        state = self.state
        if state is SctpState.ESTABLISHED:
            self._maybe_send_reconfig(now)
        if state in (SctpState.SHUTDOWN_PENDING, SctpState.SHUTDOWN_RECEIVED):
            self._maybe_shutdown(now)
        if self._forward_tsn_dirty:
            had = self._forward_tsn
            self._update_forward_tsn()
            if self._forward_tsn is not None and self._forward_tsn != had:
                self._control.append(bytes(self._forward_tsn))

        packets: list[list[bytes]] = []
        current: list[bytes] = []
        room = MAX_SCTP_PACKET_SIZE - COMMON_HEADER_SIZE

        def add(raw: bytes) -> None:
            nonlocal current, room
            padded = (len(raw) + 3) & ~3
            if padded > room and current:
                packets.append(current)
                current = []
                room = MAX_SCTP_PACKET_SIZE - COMMON_HEADER_SIZE
            current.append(raw)
            room -= padded

        for raw in self._control:
            add(raw)
        self._control = []

        sending = state in (
            SctpState.ESTABLISHED,
            SctpState.SHUTDOWN_PENDING,
            SctpState.SHUTDOWN_RECEIVED,
        )
        data_sent = False
        if sending and self._rtx:
            self._rtx.sort(key=lambda c: (c.tsn - self._last_cum_ack) & _MASK32)
            remaining: list[_OutChunk] = []
            fast = self._fast_rtx_pending
            fast_packets = len(packets)
            for c in self._rtx:
                if c.acked or c.abandoned or not c.retransmit:
                    continue
                if self._should_abandon(c, now):
                    self._abandon(c.message)
                    continue
                within_fast = fast and len(packets) == fast_packets
                if not within_fast and self._flight_size >= self._cwnd:
                    remaining.append(c)
                    continue
                add(c.raw)
                c.retransmit = False
                c.sent_count += 1
                c.in_flight = True
                self._flight_size += c.size
                self._peer_rwnd = max(0, self._peer_rwnd - c.size)
                self.stats.retransmissions += 1
                data_sent = True
            self._rtx = remaining
            self._fast_rtx_pending = False
            if self._forward_tsn_dirty:
                had = self._forward_tsn
                self._update_forward_tsn()
                if self._forward_tsn is not None and self._forward_tsn != had:
                    add(bytes(self._forward_tsn))

        if sending and not self._rtx:
            while self._flight_size < self._cwnd:
                msg = self._peek_message(now)
                if msg is None:
                    break
                size = min(MAX_USER_DATA_SIZE, len(msg.data) - msg.offset)
                if size > self._peer_rwnd and self._flight_size > 0:
                    break
                chunk = self._next_chunk(msg)
                add(chunk.raw)
                chunk.sent_count = 1
                chunk.in_flight = True
                self._flight_size += size
                self._peer_rwnd = max(0, self._peer_rwnd - size)
                self.stats.data_chunks_out += 1
                data_sent = True
                if self._rtt_tsn is None:
                    self._rtt_tsn = chunk.tsn
                    self._rtt_sent_at = now
                if self._peer_rwnd == 0:
                    break
        if data_sent and self._t3_at is None:
            self._t3_at = now + self._rto

        if current:
            packets.append(current)
        if self._sack_now or (self._sack_at is not None and packets):
            sack = self._build_sack()
            padded = (len(sack) + 3) & ~3
            used = sum((len(r) + 3) & ~3 for r in packets[0]) if packets else 0
            if packets and used + padded <= MAX_SCTP_PACKET_SIZE - COMMON_HEADER_SIZE:
                packets[0].insert(0, sack)
            else:
                packets.insert(0, [sack])
        tag = self._peer_tag
        return [
            serialize_packet(self.local_port, self.remote_port, tag, chunks) for chunks in packets
        ]

    def _build_sack(self) -> bytes:
        cum = self._cum_tsn
        gaps: list[tuple[int, int]] = []
        if self._rx_ahead:
            offsets = sorted((t - cum) & _MASK32 for t in self._rx_ahead)
            start = prev = offsets[0]
            for off in offsets[1:]:
                if off != prev + 1:
                    gaps.append((start, prev))
                    if len(gaps) >= MAX_GAP_BLOCKS:
                        break
                    start = off
                prev = off
            else:
                gaps.append((start, prev))
            gaps = [(s, e) for s, e in gaps if e <= _MASK16]
        rwnd = self._rwnd()
        sack = SackChunk(cum, rwnd, gaps, self._duplicates)
        self._duplicates = []
        self._sack_now = False
        self._sack_at = None
        self._packets_since_sack = 0
        self._last_advertised_rwnd = rwnd
        return bytes(sack)

    def _maybe_send_reconfig(self, now: float) -> None:
        if self._reconfig_request is not None or not self._reset_pending:
            return
        current = self._current.stream_id if self._current is not None else -1
        ready = [s for s in self._reset_pending if s not in self._pending and s != current]
        if not ready:
            return
        self._reset_pending = [s for s in self._reset_pending if s not in ready]
        req = OutgoingSsnResetRequest(
            self._reconfig_seq,
            (self._peer_next_reconfig_seq - 1) & _MASK32,
            (self._next_tsn - 1) & _MASK32,
            ready,
        )
        self._reconfig_request = req
        self._control.append(bytes(ReconfigChunk([req])))
        self._reconfig_at = now + self._rto

    def _maybe_shutdown(self, now: float) -> None:
        if self._pending or self._current is not None or self._outstanding:
            return
        if self.state is SctpState.SHUTDOWN_PENDING:
            self._control.append(bytes(ShutdownChunk(self._cum_tsn)))
            self.state = SctpState.SHUTDOWN_SENT
            self._t2_at = now + self._rto
            self._t2_count = 0
        elif self.state is SctpState.SHUTDOWN_RECEIVED:
            self._send_shutdown_ack(now)

    def _send_shutdown_ack(self, now: float) -> None:
        self._control.append(bytes(ShutdownAckChunk()))
        self.state = SctpState.SHUTDOWN_ACK_SENT
        self._t2_at = now + self._rto
        self._t2_count = 0

    # ------------------------------------------------------------------ timers

    def _on_t1(self, now: float) -> None:
        self._t1_count += 1
        if self._t1_count > MAX_INIT_RETRANSMITS or self._t1_chunk is None:
            self._close("init timeout")
            return
        self._rto = min(self._rto * 2, RTO_MAX_S)
        tag = 0 if isinstance(self._t1_chunk, InitChunk) else self._peer_tag
        self._raw_out.append(self._packet(tag, [bytes(self._t1_chunk)]))
        self._t1_at = now + self._rto

    def _on_t2(self, now: float) -> None:
        self._t2_count += 1
        if self._t2_count > ASSOCIATION_MAX_RETRANS:
            self._raw_out.append(self._packet(self._peer_tag, [bytes(AbortChunk())]))
            self._close("max retransmissions")
            return
        self._rto = min(self._rto * 2, RTO_MAX_S)
        if self.state is SctpState.SHUTDOWN_SENT:
            self._control.append(bytes(ShutdownChunk(self._cum_tsn)))
        elif self.state is SctpState.SHUTDOWN_ACK_SENT:
            self._control.append(bytes(ShutdownAckChunk()))
        self._t2_at = now + self._rto

    def _on_t3(self, now: float) -> None:
        """Section 6.3.3: back off, collapse cwnd, retransmit everything outstanding."""
        self._t3_at = None
        if not self._outstanding:
            return
        self.stats.t3_expirations += 1
        self._error_count += 1
        if self._error_count > ASSOCIATION_MAX_RETRANS:
            self._raw_out.append(self._packet(self._peer_tag, [bytes(AbortChunk())]))
            self._close("max retransmissions")
            return
        self._rto = min(self._rto * 2, RTO_MAX_S)
        self._ssthresh = max(self._cwnd // 2, 4 * MAX_SCTP_PACKET_SIZE)
        self._cwnd = MAX_SCTP_PACKET_SIZE
        self._partial_bytes_acked = 0
        self._fast_recovery_exit = None
        self._rtt_tsn = None
        rtx: list[_OutChunk] = []
        for c in self._outstanding:
            if c.acked or c.abandoned:
                continue
            if c.in_flight:
                c.in_flight = False
                self._flight_size -= c.size
            if self._should_abandon(c, now):
                self._abandon(c.message)
                continue
            c.retransmit = True
            rtx.append(c)
        self._rtx = rtx
        if self._forward_tsn_dirty or self._forward_tsn is not None:
            self._update_forward_tsn()
            if self._forward_tsn is not None:
                self._control.append(bytes(self._forward_tsn))
        self._t3_at = now + self._rto

    def _measure_rtt(self, rtt: float) -> None:
        """Section 6.3.1."""
        self._rtt_tsn = None
        if self._srtt is None:
            self._srtt = rtt
            self._rttvar = rtt / 2
        else:
            self._rttvar = (1 - RTO_BETA) * self._rttvar + RTO_BETA * abs(self._srtt - rtt)
            self._srtt = (1 - RTO_ALPHA) * self._srtt + RTO_ALPHA * rtt
        self._rto = min(max(self._srtt + 4 * self._rttvar, RTO_MIN_S), RTO_MAX_S)

    # ------------------------------------------------------------------ helpers

    def _require_established(self) -> None:
        if self.state is not SctpState.ESTABLISHED:
            raise SctpStateError(f"association is {self.state.value}")

    def _random_nonzero(self) -> int:
        while True:
            value = self._rng.getrandbits(32)
            if value:
                return value

    def _rwnd(self) -> int:
        return max(0, self._receive_window - self._rx_buffered - self._held)

    def _packet(self, vtag: int, chunks: list[bytes]) -> bytes:
        return serialize_packet(self.local_port, self.remote_port, vtag, chunks)

    @staticmethod
    def _extension_params() -> list[tuple[int, bytes]]:
        return [
            (PARAM_SUPPORTED_EXTENSIONS, bytes([CHUNK_FORWARD_TSN, CHUNK_RECONFIG])),
            (PARAM_FORWARD_TSN_SUPPORTED, b""),
        ]

    @staticmethod
    def _peer_extensions(init: InitChunk) -> int:
        flags = 0
        supported = init.param(PARAM_SUPPORTED_EXTENSIONS) or b""
        if init.param(PARAM_FORWARD_TSN_SUPPORTED) is not None or CHUNK_FORWARD_TSN in supported:
            flags |= _EXT_PRSCTP
        if CHUNK_RECONFIG in supported:
            flags |= _EXT_RECONFIG
        return flags

    def _adopt_peer(
        self,
        tag: int,
        tsn: int,
        rwnd: int,
        peer_outbound: int,
        peer_inbound: int,
        extensions: int,
    ) -> None:
        self._peer_tag = tag
        self._cum_tsn = self._highest_tsn = (tsn - 1) & _MASK32
        self._peer_next_reconfig_seq = tsn
        self._peer_rwnd = rwnd
        self._ssthresh = rwnd
        self._outbound_streams = min(MAX_STREAMS, peer_inbound)
        self._inbound_streams = min(MAX_STREAMS, peer_outbound)
        self._peer_prsctp = bool(extensions & _EXT_PRSCTP)
        self._peer_reconfig = bool(extensions & _EXT_RECONFIG)

    def _set_established(self) -> None:
        self.state = SctpState.ESTABLISHED
        self._ever_established = True
        self._t1_chunk = None
        self._events.append(AssociationEstablished())

    def _close(self, reason: str) -> None:
        if self.state is SctpState.CLOSED:
            return
        self.state = SctpState.CLOSED
        self._t1_at = self._t2_at = self._t3_at = self._sack_at = self._reconfig_at = None
        self._pending.clear()
        self._current = None
        self._rtx = []
        self._control = []
        self._ever_established = True  # an association is never restarted
        self._local_tag = 0
        self._events.append(AssociationClosed(reason))

    def _make_cookie(self, cookie: _Cookie) -> bytes:
        body = _COOKIE_BODY.pack(
            cookie.timestamp,
            cookie.my_tag,
            cookie.my_tsn,
            cookie.peer_tag,
            cookie.peer_tsn,
            cookie.peer_rwnd,
            cookie.peer_outbound,
            cookie.peer_inbound,
            cookie.tie_local,
            cookie.tie_peer,
            cookie.extensions,
        )
        return body + hmac.new(self._cookie_secret, body, hashlib.sha256).digest()

    def _open_cookie(self, raw: bytes) -> _Cookie | None:
        if len(raw) != _COOKIE_BODY.size + _COOKIE_MAC_SIZE:
            return None
        body, mac = raw[: _COOKIE_BODY.size], raw[_COOKIE_BODY.size :]
        expected = hmac.new(self._cookie_secret, body, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            return None
        return _Cookie(*_COOKIE_BODY.unpack(body))
