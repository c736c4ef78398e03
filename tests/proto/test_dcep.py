"""Tests for sfu.proto.dcep and the association's handling of DCEP (RFC 8832)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.proto.dcep import (
    CHANNEL_PARTIAL_RELIABLE_REXMIT,
    CHANNEL_PARTIAL_RELIABLE_TIMED,
    CHANNEL_RELIABLE,
    CHANNEL_UNORDERED,
    DATA_CHANNEL_ACK,
    PPID_DCEP,
    ChannelParameters,
    DataChannelAck,
    DataChannelOpen,
    DcepError,
    parse_dcep,
)
from sfu.proto.sctp import ChannelOpened, MessageReceived
from sfu.wire import sctp as wire
from tests.fuzzing import examples
from tests.proto.test_sctp import connected


def test_open_round_trips_with_utf8_label_and_protocol() -> None:
    message = DataChannelOpen(CHANNEL_RELIABLE, 256, 0, "chät", "proto")
    raw = bytes(message)
    assert raw[:12] == bytes([3, 0, 1, 0, 0, 0, 0, 0, 0, 5, 0, 5])
    assert parse_dcep(raw) == message


def test_ack_is_one_byte() -> None:
    assert bytes(DataChannelAck()) == bytes([DATA_CHANNEL_ACK])
    assert parse_dcep(b"\x02") == DataChannelAck()


@pytest.mark.parametrize(
    ("params", "channel_type", "reliability"),
    [
        (ChannelParameters(), CHANNEL_RELIABLE, 0),
        (ChannelParameters(ordered=False), CHANNEL_UNORDERED, 0),
        (ChannelParameters(max_retransmits=3), CHANNEL_PARTIAL_RELIABLE_REXMIT, 3),
        (
            ChannelParameters(ordered=False, lifetime_ms=500),
            CHANNEL_PARTIAL_RELIABLE_TIMED | CHANNEL_UNORDERED,
            500,
        ),
    ],
)
def test_channel_type_and_reliability_parameter(
    params: ChannelParameters, channel_type: int, reliability: int
) -> None:
    message = DataChannelOpen.from_parameters(params)
    assert (message.channel_type, message.reliability_parameter) == (channel_type, reliability)
    assert message.parameters() == params


def test_both_reliability_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        ChannelParameters(max_retransmits=1, lifetime_ms=1)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x09",
        b"\x03\x00",
        bytes(DataChannelOpen(0, 0, 0, "abc", ""))[:-1],
        bytes(DataChannelOpen(0, 0, 0, "abc", "")) + b"x",
        b"\x03\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\xff",
    ],
)
def test_malformed_dcep_raises_dcep_error(raw: bytes) -> None:
    with pytest.raises(DcepError):
        parse_dcep(raw)


@settings(max_examples=examples(1000))
@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_dcep_error(raw: bytes) -> None:
    try:
        parse_dcep(raw)
    except DcepError:
        pass


def test_peer_open_is_acked_on_the_same_stream_and_reported() -> None:
    pair = connected()
    sid = pair.client.open_channel("from-browser", protocol="json", max_retransmits=2)
    assert sid % 2 == 0  # DTLS client ids are even
    captured: list[wire.DataChunk] = []

    def watch(direction: str, packet: bytes) -> bool:
        if direction == "s2c":
            chunks = wire.parse_packet(packet).chunks
            captured.extend(c for c in chunks if isinstance(c, wire.DataChunk))
        return False

    pair.drop = watch
    pair.run_until(lambda: any(isinstance(e, ChannelOpened) for e in pair.client_events))
    assert [e for e in pair.server_events if isinstance(e, ChannelOpened)] == [
        ChannelOpened(sid, "from-browser", "json", True, 2, None, True)
    ]
    assert [e for e in pair.client_events if isinstance(e, ChannelOpened)] == [
        ChannelOpened(sid, "from-browser", "json", True, 2, None, False)
    ]
    (ack,) = captured
    assert (ack.stream_id, ack.ppid, ack.user_data) == (sid, PPID_DCEP, b"\x02")


def test_our_channels_use_odd_ids() -> None:
    pair = connected()
    first = pair.server.open_channel("a")
    second = pair.server.open_channel("b")
    assert (first, second) == (1, 3)


def test_messages_sent_right_after_open_arrive_after_the_open() -> None:
    pair = connected()
    sid = pair.server.open_channel("eager", ordered=False)
    pair.server.send(sid, b"early", pair.now)
    captured: list[wire.DataChunk] = []

    def watch(direction: str, packet: bytes) -> bool:
        chunks = wire.parse_packet(packet).chunks
        captured.extend(c for c in chunks if isinstance(c, wire.DataChunk))
        return False

    pair.drop = watch
    pair.run_until(lambda: pair.received("client") == [b"early"])
    early = [c for c in captured if c.user_data == b"early"][0]
    assert not early.flags & wire.DATA_FLAG_UNORDERED  # ordered until the ACK arrives
    events = [type(e) for e in pair.client_events]
    assert events.index(ChannelOpened) < events.index(MessageReceived)


def test_open_with_our_parity_from_the_peer_is_rejected() -> None:
    pair = connected()
    pair.settle()
    raw = bytes(DataChannelOpen(0, 256, 0, "bad", ""))
    data = wire.DataChunk(pair.server._cum_tsn + 1, 1, 0, PPID_DCEP, raw)
    pair.server.receive(bytes(wire.SctpPacket(5000, 5000, pair.server._local_tag, [data])), 0)
    assert not [e for e in pair.server.events() if isinstance(e, ChannelOpened)]
    assert pair.server.stats.bad_dcep == 1


def test_data_on_a_stream_without_channel_is_counted_and_dropped() -> None:
    pair = connected()
    pair.settle()
    data = wire.DataChunk(pair.server._cum_tsn + 1, 4, 0, 53, b"orphan")
    pair.server.receive(bytes(wire.SctpPacket(5000, 5000, pair.server._local_tag, [data])), 0)
    assert pair.server.events() == []
    assert pair.server.stats.messages_without_channel == 1


def test_negotiated_channel_needs_no_dcep() -> None:
    pair = connected()
    pair.server.add_negotiated_channel(8)
    pair.client.add_negotiated_channel(8)
    pair.server.send(8, b"pre-agreed", pair.now)
    pair.run_until(lambda: pair.received("client") == [b"pre-agreed"])
    assert not [e for e in pair.client_events if isinstance(e, ChannelOpened)]
