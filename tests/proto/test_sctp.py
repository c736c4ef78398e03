"""Tests for sfu.proto.sctp: two associations back to back in memory with a fake clock."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfu.proto.dcep import PPID_BINARY, PPID_STRING
from sfu.proto.sctp import (
    ASSOCIATION_MAX_RETRANS,
    MAX_SCTP_PACKET_SIZE,
    RTO_INITIAL_S,
    SACK_DELAY_S,
    AssociationClosed,
    AssociationEstablished,
    BufferedAmountLow,
    ChannelClosed,
    ChannelOpened,
    MessageReceived,
    MessageTooLarge,
    SctpAssociation,
    SctpChannelError,
    SctpEvent,
    SctpMessageSizeError,
    SctpState,
    SctpStateError,
)
from sfu.wire import sctp as wire
from tests.fuzzing import examples

Filter = Callable[[str, bytes], bool]


class Pair:
    """A DTLS server side and a DTLS client side wired back to back.

    `loss`, `duplicate` and `reorder` are probabilities per packet drawn from a seeded
    generator; `drop(direction, packet)` can drop chosen packets ("c2s" or "s2c")."""

    def __init__(
        self,
        seed: int = 0,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        server: dict[str, object] | None = None,
        client: dict[str, object] | None = None,
    ) -> None:
        self.now = 0.0
        self.server = SctpAssociation(rng=random.Random(seed), **(server or {}))  # type: ignore[arg-type]
        self.client = SctpAssociation(
            is_dtls_server=False,
            rng=random.Random(seed + 1),
            **(client or {}),  # type: ignore[arg-type]
        )
        self.net = random.Random(seed + 2)
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.drop: Filter | None = None
        self.server_events: list[SctpEvent] = []
        self.client_events: list[SctpEvent] = []
        self.delivered = {"c2s": 0, "s2c": 0}

    def _carry(self, direction: str, packets: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for packet in packets:
            if self.drop is not None and self.drop(direction, packet):
                continue
            if self.loss and self.net.random() < self.loss:
                continue
            out.append(packet)
            if self.duplicate and self.net.random() < self.duplicate:
                out.append(packet)
        if self.reorder and len(out) > 1:
            for i in range(len(out) - 1):
                if self.net.random() < self.reorder:
                    out[i], out[i + 1] = out[i + 1], out[i]
        return out

    def flush(self) -> None:
        """Exchange packets until neither side has anything to send."""
        for _ in range(100000):
            to_server = self._carry("c2s", self.client.packets_to_send(self.now))
            to_client = self._carry("s2c", self.server.packets_to_send(self.now))
            for packet in to_server:
                self.server.receive(packet, self.now)
            for packet in to_client:
                self.client.receive(packet, self.now)
            self.delivered["c2s"] += len(to_server)
            self.delivered["s2c"] += len(to_client)
            self.server_events.extend(self.server.events())
            self.client_events.extend(self.client.events())
            if not to_server and not to_client:
                return
        raise AssertionError("packets never stop flowing")

    def advance(self) -> bool:
        """Jump to the next timer and run it; False if no timer is set."""
        timeouts = [t for t in (self.server.get_timeout(), self.client.get_timeout()) if t]
        if not timeouts:
            return False
        self.now = max(self.now, min(timeouts))
        self.server.handle_timeout(self.now)
        self.client.handle_timeout(self.now)
        return True

    def run_until(self, done: Callable[[], bool], max_time: float = 600.0) -> None:
        deadline = self.now + max_time
        while True:
            self.flush()
            if done():
                return
            if not self.advance() or self.now > deadline:
                raise AssertionError(f"condition not reached by t={self.now:.3f}")

    def settle(self, duration: float = 5.0) -> None:
        """Run timers for `duration` seconds of fake time."""
        end = self.now + duration
        self.flush()
        while True:
            timeouts = [t for t in (self.server.get_timeout(), self.client.get_timeout()) if t]
            if not timeouts or min(timeouts) > end:
                break
            self.advance()
            self.flush()
        self.now = end

    def connect(self) -> None:
        self.client.start(self.now)
        self.run_until(lambda: self.server.established and self.client.established)

    def open(self, **kwargs: object) -> int:
        """Open a channel from the server side and wait for the client to see it."""
        sid = self.server.open_channel("test", **kwargs)  # type: ignore[arg-type]
        self.run_until(lambda: any(isinstance(e, ChannelOpened) for e in self.server_events))
        return sid

    def received(self, side: str, sid: int | None = None) -> list[bytes]:
        events = self.server_events if side == "server" else self.client_events
        return [
            e.data
            for e in events
            if isinstance(e, MessageReceived) and (sid is None or e.stream_id == sid)
        ]


def connected(**kwargs: object) -> Pair:
    pair = Pair(**kwargs)  # type: ignore[arg-type]
    pair.connect()
    return pair


# Handshake ---------------------------------------------------------------------------


def test_client_init_establishes_both_sides_with_one_event_each() -> None:
    pair = connected()
    assert pair.server.state is SctpState.ESTABLISHED
    assert [e for e in pair.server_events if isinstance(e, AssociationEstablished)]
    assert len([e for e in pair.client_events if isinstance(e, AssociationEstablished)]) == 1


def test_server_answers_init_statelessly() -> None:
    pair = Pair()
    pair.client.start(0.0)
    (init,) = pair.client.packets_to_send(0.0)
    pair.server.receive(init, 0.0)
    (init_ack,) = pair.server.packets_to_send(0.0)
    assert pair.server.state is SctpState.CLOSED
    parsed = wire.parse_packet(init_ack)
    assert isinstance(parsed.chunks[0], wire.InitAckChunk)
    assert parsed.chunks[0].param(wire.PARAM_STATE_COOKIE) is not None


def test_both_sides_sending_init_still_establish() -> None:
    pair = Pair()
    pair.client.start(0.0)
    pair.server.start(0.0)
    pair.run_until(lambda: pair.server.established and pair.client.established)
    sid = pair.open()
    pair.server.send(sid, b"after collision", pair.now)
    pair.run_until(lambda: pair.received("client") == [b"after collision"])


def test_lost_init_is_retransmitted_by_t1() -> None:
    pair = Pair()
    dropped: list[bytes] = []

    def drop_first(direction: str, packet: bytes) -> bool:
        if not dropped:
            dropped.append(packet)
            return True
        return False

    pair.drop = drop_first
    pair.connect()
    assert pair.now >= RTO_INITIAL_S


def test_tampered_cookie_is_rejected() -> None:
    pair = Pair()
    pair.client.start(0.0)
    pair.server.receive(pair.client.packets_to_send(0.0)[0], 0.0)
    ack = wire.parse_packet(pair.server.packets_to_send(0.0)[0])
    init_ack = ack.chunks[0]
    assert isinstance(init_ack, wire.InitAckChunk)
    cookie = bytearray(init_ack.param(wire.PARAM_STATE_COOKIE) or b"")
    cookie[5] ^= 1
    echo = wire.SctpPacket(5000, 5000, init_ack.initiate_tag, [wire.CookieEchoChunk(bytes(cookie))])
    pair.server.receive(bytes(echo), 0.0)
    assert pair.server.state is SctpState.CLOSED
    assert pair.server.stats.bad_cookie == 1


def test_expired_cookie_is_rejected() -> None:
    pair = Pair()
    pair.client.start(0.0)
    pair.server.receive(pair.client.packets_to_send(0.0)[0], 0.0)
    pair.client.receive(pair.server.packets_to_send(0.0)[0], 0.0)
    (echo,) = pair.client.packets_to_send(0.0)
    pair.server.receive(echo, 61.0)
    assert pair.server.state is SctpState.CLOSED
    pair.server.receive(echo, 1.0)
    assert pair.server.established


def test_init_gives_up_after_max_init_retransmits() -> None:
    pair = Pair()
    pair.drop = lambda direction, packet: True
    pair.client.start(0.0)
    pair.run_until(lambda: any(isinstance(e, AssociationClosed) for e in pair.client_events))
    assert pair.client_events[-1] == AssociationClosed("init timeout")


# Data --------------------------------------------------------------------------------


def test_one_byte_empty_and_256k_messages_arrive() -> None:
    pair = connected()
    sid = pair.open()
    big = random.Random(1).randbytes(262144)
    pair.server.send(sid, b"x", pair.now)
    pair.server.send(sid, b"", pair.now)
    pair.server.send(sid, "", pair.now)
    pair.server.send(sid, big, pair.now)
    pair.run_until(lambda: len(pair.received("client")) == 4)
    assert pair.received("client") == [b"x", b"", b"", big]
    ppids = [e.ppid for e in pair.client_events if isinstance(e, MessageReceived)]
    assert ppids == [PPID_BINARY, PPID_BINARY, PPID_STRING, PPID_BINARY]


def test_packets_fit_the_dtls_budget() -> None:
    pair = connected()
    sid = pair.open()
    pair.server.send(sid, bytes(100000), pair.now)
    sizes: list[int] = []

    def record(direction: str, packet: bytes) -> bool:
        sizes.append(len(packet))
        return False

    pair.drop = record
    pair.run_until(lambda: len(pair.received("client")) == 1)
    assert max(sizes) <= MAX_SCTP_PACKET_SIZE


def test_text_goes_as_ppid_51_both_ways() -> None:
    pair = connected()
    sid = pair.open()
    pair.client.send(sid, "héllo", pair.now)
    pair.run_until(lambda: len(pair.received("server")) == 1)
    (event,) = [e for e in pair.server_events if isinstance(e, MessageReceived)]
    assert (event.ppid, event.data) == (PPID_STRING, "héllo".encode())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ordered_delivery_under_loss_reordering_and_duplication_both_ways(seed: int) -> None:
    pair = connected(seed=seed)
    sid = pair.open()
    pair.loss, pair.duplicate, pair.reorder = 0.1, 0.05, 0.2
    rng = random.Random(seed)
    to_client = [rng.randbytes(rng.randint(1, 5000)) for _ in range(150)]
    to_server = [rng.randbytes(rng.randint(1, 5000)) for _ in range(150)]
    for a, b in zip(to_client, to_server, strict=True):
        pair.server.send(sid, a, pair.now)
        pair.client.send(sid, b, pair.now)
    pair.run_until(
        lambda: len(pair.received("client")) == 150 and len(pair.received("server")) == 150
    )
    assert pair.received("client") == to_client
    assert pair.received("server") == to_server
    pair.settle()
    assert (pair.client._rx_buffered, pair.server._rx_buffered) == (0, 0)
    assert pair.server.stats.retransmissions > 0
    assert pair.client.stats.duplicate_tsns > 0


def test_unordered_messages_all_arrive_under_loss() -> None:
    pair = connected(seed=4)
    sid = pair.open(ordered=False)
    pair.loss, pair.reorder = 0.1, 0.3
    messages = [bytes([i]) * (i * 37 + 1) for i in range(100)]
    for m in messages:
        pair.server.send(sid, m, pair.now)
    pair.run_until(lambda: len(pair.received("client")) == 100)
    assert sorted(pair.received("client")) == sorted(messages)


def test_5mb_transfer_under_2_percent_loss_is_byte_identical() -> None:
    pair = connected(seed=5)
    sid = pair.open()
    pair.loss = 0.02
    payload = random.Random(5).randbytes(5 * 1024 * 1024)
    for offset in range(0, len(payload), 65536):
        pair.server.send(sid, payload[offset : offset + 65536], pair.now)
    pair.run_until(lambda: sum(map(len, pair.received("client"))) >= len(payload))
    received = b"".join(pair.received("client"))
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    pair.settle()
    assert pair.server.buffered_amount(sid) == 0
    assert pair.client._rx_buffered == 0  # every buffered byte was accounted back


def test_delayed_sack_goes_after_200_ms_for_a_single_packet() -> None:
    pair = connected()
    sid = pair.open()
    pair.settle()
    start = pair.now
    pair.server.send(sid, b"one", pair.now)
    (packet,) = pair.server.packets_to_send(pair.now)
    pair.client.receive(packet, pair.now)
    assert pair.client.packets_to_send(pair.now) == []
    assert pair.client.get_timeout() == pytest.approx(start + SACK_DELAY_S)
    pair.client.handle_timeout(start + SACK_DELAY_S)
    (sack,) = pair.client.packets_to_send(start + SACK_DELAY_S)
    assert isinstance(wire.parse_packet(sack).chunks[0], wire.SackChunk)


def test_second_packet_is_acknowledged_at_once() -> None:
    pair = connected()
    sid = pair.open()
    pair.settle()
    pair.server.send(sid, bytes(2000), pair.now)
    packets = pair.server.packets_to_send(pair.now)
    assert len(packets) == 2
    pair.client.receive(packets[0], pair.now)
    assert pair.client.packets_to_send(pair.now) == []
    pair.client.receive(packets[1], pair.now)
    assert len(pair.client.packets_to_send(pair.now)) == 1


def test_t3_retransmits_and_backs_off() -> None:
    pair = connected()
    sid = pair.open()
    pair.settle()
    pair.drop = lambda direction, packet: direction == "s2c"
    pair.server.send(sid, b"lost", pair.now)
    start = pair.now
    pair.flush()
    first = pair.server.get_timeout()
    assert first is not None
    pair.advance()
    pair.flush()
    second = pair.server.get_timeout()
    assert second is not None
    assert pair.server.stats.t3_expirations == 1
    assert pair.server.stats.retransmissions == 1
    assert second - first == pytest.approx(2 * (first - start))
    pair.drop = None
    pair.run_until(lambda: pair.received("client") == [b"lost"])


def test_association_fails_after_max_retransmissions() -> None:
    pair = connected()
    sid = pair.open()
    pair.drop = lambda direction, packet: True
    pair.server.send(sid, b"into the void", pair.now)
    pair.run_until(lambda: any(isinstance(e, AssociationClosed) for e in pair.server_events), 10000)
    assert pair.server_events[-1] == AssociationClosed("max retransmissions")
    assert pair.server.stats.t3_expirations == ASSOCIATION_MAX_RETRANS + 1
    assert pair.server.state is SctpState.CLOSED
    with pytest.raises(SctpStateError):
        pair.server.send(sid, b"x", pair.now)


# Priority, flow control ----------------------------------------------------------------


def test_urgent_stream_overtakes_queued_bulk_messages() -> None:
    pair = connected()
    bulk = pair.open(priority=10)
    control = pair.server.open_channel("control", priority=0)
    pair.run_until(
        lambda: len([e for e in pair.server_events if isinstance(e, ChannelOpened)]) == 2
    )
    for i in range(64):
        pair.server.send(bulk, bytes([i]) * 16384, pair.now)
    pair.server.packets_to_send(pair.now)  # the first window of bulk goes out (and is lost)
    pair.server.send(control, b"urgent", pair.now)
    pair.run_until(lambda: len(pair.received("client")) == 65)
    order = [e.stream_id for e in pair.client_events if isinstance(e, MessageReceived)]
    assert order.index(control) < 4


def test_equal_priority_streams_share_round_robin() -> None:
    pair = connected()
    a = pair.open()
    b = pair.server.open_channel("b")
    pair.run_until(
        lambda: len([e for e in pair.server_events if isinstance(e, ChannelOpened)]) == 2
    )
    for _ in range(10):
        pair.server.send(a, bytes(2000), pair.now)
        pair.server.send(b, bytes(2000), pair.now)
    pair.run_until(lambda: len(pair.received("client")) == 20)
    order = [e.stream_id for e in pair.client_events if isinstance(e, MessageReceived)]
    assert order[:4] == [a, b, a, b]


def test_buffered_amount_and_low_event() -> None:
    pair = connected()
    sid = pair.open()
    pair.server.set_buffered_amount_low_threshold(sid, 1000)
    pair.server.send(sid, bytes(50000), pair.now)
    assert pair.server.buffered_amount(sid) == 50000
    pair.run_until(lambda: len(pair.received("client")) == 1)
    pair.settle()
    assert pair.server.buffered_amount(sid) == 0
    assert pair.server_events.count(BufferedAmountLow(sid)) == 1


def test_manual_release_stops_the_sender_until_release() -> None:
    window = 65536
    pair = connected(
        client={"manual_release": True, "receive_window": window, "max_message_size": 16384}
    )
    sid = pair.open()
    for _ in range(20):
        pair.server.send(sid, bytes(8192), pair.now)
    pair.settle(30)
    got = sum(map(len, pair.received("client")))
    assert window - 2 * 8192 <= got <= window
    assert pair.client.held_bytes == got
    assert pair.server.buffered_amount(sid) > 0
    pair.client.release(got)
    pair.settle(5)
    got2 = sum(map(len, pair.received("client")))
    assert got2 > got
    for _ in range(20):
        pair.client.release(pair.client.held_bytes)
        pair.settle(5)
    assert len(pair.received("client")) == 20
    assert pair.server.state is SctpState.ESTABLISHED


def test_oversize_incoming_message_is_reported_and_association_continues() -> None:
    pair = connected(client={"max_message_size": 10000})
    sid = pair.open()
    pair.server.send(sid, bytes(30000), pair.now)
    pair.server.send(sid, bytes(20), pair.now)
    pair.server.send(sid, bytes(10001), pair.now)
    pair.server.send(sid, b"after", pair.now)
    pair.run_until(lambda: len(pair.received("client")) == 2)
    assert pair.received("client") == [bytes(20), b"after"]
    too_large = [e for e in pair.client_events if isinstance(e, MessageTooLarge)]
    assert too_large == [MessageTooLarge(sid, 30000), MessageTooLarge(sid, 10001)]


def test_sending_more_than_the_peer_maximum_raises() -> None:
    pair = connected(server={"peer_max_message_size": 1000})
    sid = pair.open()
    with pytest.raises(SctpMessageSizeError):
        pair.server.send(sid, bytes(1001), pair.now)


def test_send_before_establishment_or_on_unknown_stream_raises() -> None:
    pair = Pair()
    with pytest.raises(SctpStateError):
        pair.server.send(1, b"x", 0.0)
    pair.connect()
    with pytest.raises(SctpChannelError):
        pair.server.send(7, b"x", pair.now)


# PR-SCTP ---------------------------------------------------------------------------------


def _payload_of(packet: bytes) -> list[bytes]:
    try:
        return [
            c.user_data for c in wire.parse_packet(packet).chunks if isinstance(c, wire.DataChunk)
        ]
    except wire.SctpParseError:
        return []


def test_forward_tsn_skips_abandoned_message() -> None:
    pair = connected()
    sid = pair.open(max_retransmits=0)
    pair.settle()
    pair.drop = lambda direction, packet: (
        direction == "s2c" and b"second" in b"".join(_payload_of(packet))
    )
    for m in (b"first", b"second", b"third"):
        pair.server.send(sid, m, pair.now)
        pair.flush()  # one packet each
    pair.run_until(lambda: len(pair.received("client")) == 2)
    pair.settle()
    assert pair.received("client") == [b"first", b"third"]
    assert pair.server.stats.messages_abandoned == 1
    assert pair.server.buffered_amount(sid) == 0
    pair.drop = None
    pair.server.send(sid, b"fourth", pair.now)
    pair.run_until(lambda: len(pair.received("client")) == 3)


def test_expired_lifetime_message_is_abandoned() -> None:
    pair = connected()
    sid = pair.open(lifetime_ms=100)
    pair.settle()
    big = bytes(5000)
    pair.drop = lambda direction, packet: direction == "s2c" and bool(_payload_of(packet))
    pair.server.send(sid, big, pair.now)
    pair.settle(1)
    pair.drop = None
    pair.server.send(sid, b"later", pair.now, lifetime_s=None)
    pair.run_until(lambda: len(pair.received("client")) == 1)
    assert pair.received("client") == [b"later"]
    assert pair.server.stats.messages_abandoned == 1


def test_unsent_expired_message_is_dropped_without_tsn() -> None:
    pair = connected()
    sid = pair.open()
    pair.server.send(sid, b"stale", pair.now, lifetime_s=0.05)
    pair.server.send(sid, b"fresh", pair.now)
    pair.now += 0.1
    pair.run_until(lambda: len(pair.received("client")) == 1)
    assert pair.received("client") == [b"fresh"]


# Stream reset, shutdown, abort -------------------------------------------------------------


def test_close_channel_from_our_side_closes_both_ways() -> None:
    pair = connected()
    sid = pair.open()
    pair.server.send(sid, b"last words", pair.now)
    pair.server.close_channel(sid)
    with pytest.raises(SctpChannelError):
        pair.server.send(sid, b"too late", pair.now)
    pair.run_until(
        lambda: (
            ChannelClosed(sid) in pair.server_events and ChannelClosed(sid) in pair.client_events
        )
    )
    assert pair.received("client") == [b"last words"]
    again = pair.open()
    assert again == sid  # the stream id is free again
    pair.server.send(again, b"new channel", pair.now)
    pair.run_until(lambda: pair.received("client")[-1:] == [b"new channel"])


def test_peer_closing_its_channel_closes_ours() -> None:
    pair = connected()
    sid = pair.open()
    pair.client.send(sid, b"bye", pair.now)
    pair.client.close_channel(sid)
    pair.run_until(
        lambda: (
            ChannelClosed(sid) in pair.server_events and ChannelClosed(sid) in pair.client_events
        )
    )
    assert pair.received("server") == [b"bye"]


def test_shutdown_delivers_everything_then_closes_both() -> None:
    pair = connected()
    sid = pair.open()
    pair.server.send(sid, bytes(30000), pair.now)
    pair.server.shutdown()
    pair.run_until(
        lambda: pair.client.state is SctpState.CLOSED and pair.server.state is SctpState.CLOSED
    )
    assert pair.received("client") == [bytes(30000)]
    assert AssociationClosed("shutdown") in pair.server_events
    assert AssociationClosed("shutdown") in pair.client_events


def test_abort_closes_the_peer() -> None:
    pair = connected()
    pair.client.abort()
    pair.flush()
    assert pair.server.state is SctpState.CLOSED
    assert AssociationClosed("peer abort") in pair.server_events


def test_heartbeat_is_answered() -> None:
    pair = connected()
    pair.settle()
    tag = pair.client._local_tag  # the tag the server uses towards the client
    info = [(wire.PARAM_HEARTBEAT_INFO, b"hb-1234")]
    heartbeat = wire.SctpPacket(5000, 5000, pair.server._local_tag, [wire.HeartbeatChunk(info)])
    pair.server.receive(bytes(heartbeat), pair.now)
    (reply,) = pair.server.packets_to_send(pair.now)
    parsed = wire.parse_packet(reply)
    assert parsed.verification_tag == tag
    assert parsed.chunks == [wire.HeartbeatAckChunk(info)]


def test_wrong_tag_and_bad_checksum_are_counted_and_dropped() -> None:
    pair = connected()
    sid = pair.open()
    pair.settle()
    hb = wire.SctpPacket(5000, 5000, 12345, [wire.HeartbeatChunk([(1, b"x")])])
    pair.server.receive(bytes(hb), pair.now)
    corrupted = bytearray(bytes(hb))
    corrupted[-1] ^= 0xFF
    pair.server.receive(bytes(corrupted), pair.now)
    pair.server.receive(b"\x00" * 7, pair.now)
    assert pair.server.packets_to_send(pair.now) == []
    assert (pair.server.stats.bad_vtag, pair.server.stats.bad_checksum) == (1, 1)
    assert pair.server.stats.malformed == 1
    pair.server.send(sid, b"still fine", pair.now)
    pair.run_until(lambda: pair.received("client") == [b"still fine"])


def test_unknown_chunk_with_report_bit_is_reported_and_skipped() -> None:
    pair = connected()
    sid = pair.open()
    pair.settle()
    data = wire.DataChunk(pair.server._cum_tsn + 1, sid, 1, PPID_BINARY, b"after unknown")
    unknown = wire.UnknownChunk(0xC7, b"abc")
    packet = wire.SctpPacket(5000, 5000, pair.server._local_tag, [unknown, data])
    pair.server.receive(bytes(packet), pair.now)
    pair.server_events.extend(pair.server.events())
    assert pair.received("server") == [b"after unknown"]
    out = [wire.parse_packet(p) for p in pair.server.packets_to_send(pair.now)]
    errors = [c for p in out for c in p.chunks if isinstance(c, wire.ErrorChunk)]
    assert errors and errors[0].causes[0][0] == wire.CAUSE_UNRECOGNIZED_CHUNK


# Robustness --------------------------------------------------------------------------------


@settings(
    max_examples=examples(200),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_arbitrary_packets_never_raise_and_do_not_break_the_association(
    garbage: list[bytes], data: st.DataObject
) -> None:
    pair = connected()
    sid = pair.open()
    pair.settle()
    tag = pair.server._local_tag
    for raw in garbage:
        pair.server.receive(raw, pair.now)
        # The same bytes with a valid header and checksum reach the chunk handlers.
        chunks = data.draw(st.sampled_from([[raw], [raw, raw[:8]]]))
        pair.server.receive(wire.serialize_packet(5000, 5000, tag, chunks), pair.now)
    pair.server.events()
    pair.server.packets_to_send(pair.now)
    if pair.server.state is SctpState.ESTABLISHED:
        pair.client.send(sid, b"ping", pair.now)
        pair.run_until(lambda: b"ping" in pair.received("server"), 100)


@settings(max_examples=examples(100), deadline=None)
@given(
    st.lists(
        st.one_of(
            st.builds(
                wire.DataChunk,
                st.integers(0, 2**32 - 1),
                st.integers(0, 70),
                st.integers(0, 2**16 - 1),
                st.sampled_from([50, 51, 53, 56, 57, 0]),
                st.binary(min_size=1, max_size=40),
                st.integers(0, 15),
            ),
            st.builds(
                wire.SackChunk,
                st.integers(0, 2**32 - 1),
                st.integers(0, 2**32 - 1),
                st.lists(
                    st.tuples(st.integers(0, 2**16 - 1), st.integers(0, 2**16 - 1)), max_size=4
                ),
            ),
            st.builds(
                wire.ForwardTsnChunk,
                st.integers(0, 2**32 - 1),
                st.lists(st.tuples(st.integers(0, 70), st.integers(0, 2**16 - 1)), max_size=3),
            ),
            st.builds(
                wire.ReconfigChunk,
                st.lists(
                    st.builds(
                        wire.OutgoingSsnResetRequest,
                        st.integers(0, 2**32 - 1),
                        st.integers(0, 2**32 - 1),
                        st.integers(0, 2**32 - 1),
                        st.lists(st.integers(0, 70), max_size=3),
                    ),
                    min_size=1,
                    max_size=1,
                ),
            ),
            st.builds(wire.ShutdownChunk, st.integers(0, 2**32 - 1)),
            st.builds(
                wire.ReconfigChunk,
                st.lists(
                    st.builds(wire.ReconfigResponse, st.integers(0, 2**32 - 1), st.integers(0, 8)),
                    min_size=1,
                    max_size=2,
                ),
            ),
            st.builds(
                wire.ReconfigChunk,
                st.lists(
                    st.builds(
                        wire.IncomingSsnResetRequest,
                        st.integers(0, 2**32 - 1),
                        st.lists(st.integers(0, 70), max_size=3),
                    ),
                    min_size=1,
                    max_size=1,
                ),
            ),
            st.builds(wire.CookieEchoChunk, st.binary(max_size=80)),
            st.builds(
                wire.InitAckChunk,
                st.integers(1, 2**32 - 1),
                st.integers(0, 2**32 - 1),
                st.integers(1, 2**16 - 1),
                st.integers(1, 2**16 - 1),
                st.integers(0, 2**32 - 1),
            ),
            st.builds(wire.UnknownChunk, st.integers(13, 127), st.binary(max_size=20)),
            st.sampled_from(
                [
                    wire.ShutdownAckChunk(),
                    wire.ShutdownCompleteChunk(),
                    wire.CookieAckChunk(),
                    wire.ErrorChunk([(1, b"\x00\x01\x00\x00")]),
                    wire.HeartbeatAckChunk([(1, b"x")]),
                ]
            ),
        ),
        max_size=6,
    )
)
def test_well_formed_but_hostile_chunks_never_raise(chunks: list[wire.Chunk]) -> None:
    pair = connected()
    sid = pair.open()
    pair.settle()
    base = pair.server._cum_tsn
    for chunk in chunks:
        if isinstance(chunk, wire.DataChunk):
            chunk.tsn = (base + chunk.tsn % 50) & 0xFFFFFFFF
        packet = wire.SctpPacket(5000, 5000, pair.server._local_tag, [chunk])
        pair.server.receive(bytes(packet), pair.now)
    pair.server.events()
    pair.server.packets_to_send(pair.now)
    pair.server.handle_timeout(pair.now + 1)
    pair.server.packets_to_send(pair.now + 1)
    assert pair.server._rx_buffered >= 0
    del sid


def test_unknown_init_parameter_with_report_bit_is_reported_in_init_ack() -> None:
    adaptation = (0xC006, b"\x00\x00\x00\x01")
    init = wire.InitChunk(1234, 65536, 10, 10, 1, [adaptation, (wire.PARAM_ECN_CAPABLE, b"")])
    server = SctpAssociation(rng=random.Random(1))
    server.receive(bytes(wire.SctpPacket(5000, 5000, 0, [init])), 0.0)
    (raw,) = server.packets_to_send(0.0)
    packet = wire.parse_packet(raw)
    ack = packet.chunks[0]
    assert isinstance(ack, wire.InitAckChunk)
    assert packet.verification_tag == 1234
    assert ack.param(wire.PARAM_UNRECOGNIZED) == wire.serialize_tlvs([adaptation])


def test_init_with_nonzero_tag_or_bundled_chunks_is_dropped() -> None:
    server = SctpAssociation(rng=random.Random(1))
    init = wire.InitChunk(1234, 65536, 10, 10, 1)
    server.receive(bytes(wire.SctpPacket(5000, 5000, 99, [init])), 0.0)
    server.receive(bytes(wire.SctpPacket(5000, 5000, 0, [init, wire.CookieAckChunk()])), 0.0)
    assert server.packets_to_send(0.0) == []
    assert server.stats.malformed == 2


def test_peer_reset_waits_for_data_still_in_flight() -> None:
    pair = connected()
    sid = pair.open()
    pair.settle()
    lost: list[bytes] = []

    results: list[int] = []

    def lose_first_data(direction: str, packet: bytes) -> bool:
        chunks = wire.parse_packet(packet).chunks
        for chunk in chunks:
            if isinstance(chunk, wire.ReconfigChunk):
                results.extend(
                    p.result for p in chunk.params if isinstance(p, wire.ReconfigResponse)
                )
        if direction == "c2s" and not lost and b"in flight" in b"".join(_payload_of(packet)):
            lost.append(packet)
            return True
        return False

    pair.drop = lose_first_data
    pair.client.send(sid, b"in flight", pair.now)
    pair.client.close_channel(sid)
    pair.flush()
    pair.flush()  # the request goes once the message has its TSN
    assert results == [wire.RECONFIG_IN_PROGRESS]
    assert ChannelClosed(sid) not in pair.server_events
    pair.run_until(
        lambda: (
            ChannelClosed(sid) in pair.server_events and ChannelClosed(sid) in pair.client_events
        )
    )
    assert pair.received("server") == [b"in flight"]


def test_receive_window_must_hold_a_maximum_message() -> None:
    with pytest.raises(ValueError):
        SctpAssociation(max_message_size=65536, receive_window=65536)


def test_packets_to_send_when_idle_is_empty_and_counts_nothing() -> None:
    pair = connected()
    sid = pair.open()
    pair.settle()
    before = pair.server.stats.packets_out
    assert pair.server.packets_to_send(pair.now) == []
    assert pair.server.stats.packets_out == before
    pair.server.send(sid, b"x" * 3000, pair.now)
    assert len(pair.server.packets_to_send(pair.now)) == 3
    assert pair.server.stats.packets_out == before + 3
