"""Tests for sfu.wire.rtcp."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.wire.rtcp import (
    ReportBlock,
    RtcpBye,
    RtcpError,
    RtcpFir,
    RtcpNack,
    RtcpPacket,
    RtcpPli,
    RtcpReceiverReport,
    RtcpRemb,
    RtcpSdes,
    RtcpSenderReport,
    RtcpUnknown,
    ntp_middle32,
    ntp_timestamp,
    parse_rtcp,
    serialize_rtcp,
    sort_sequence_numbers,
)
from tests.fuzzing import examples

SENDER = bytes.fromhex("11111111")
MEDIA = bytes.fromhex("22222222")


def u32(value: int) -> bytes:
    return struct.pack("!I", value)


# --- known byte vectors ---------------------------------------------------------------------


def test_pli_vector() -> None:
    data = bytes.fromhex("81ce0002") + SENDER + MEDIA
    assert len(data) == 12
    assert parse_rtcp(data) == [RtcpPli(0x11111111, 0x22222222)]
    assert RtcpPli(0x11111111, 0x22222222).serialize() == data


def test_nack_vector() -> None:
    # PID 100 with BLP bits for 101, 103 and 116; then 117 needs a second pair.
    data = bytes.fromhex("81cd0004") + SENDER + MEDIA + bytes.fromhex("00648005 00750000")
    nack = RtcpNack(0x11111111, 0x22222222, [100, 101, 103, 116, 117])
    assert nack.serialize() == data
    assert parse_rtcp(data) == [nack]


def test_nack_wraparound_vector() -> None:
    data = bytes.fromhex("81cd0003") + SENDER + MEDIA + bytes.fromhex("fffe0043")
    nack = RtcpNack(0x11111111, 0x22222222, [65534, 65535, 0, 5])
    assert nack.serialize() == data
    assert parse_rtcp(data) == [nack]
    # Unsorted input with duplicates packs the same way.
    assert RtcpNack(0x11111111, 0x22222222, [5, 0, 65535, 65534, 0]).serialize() == data


def test_nack_packing_is_minimal() -> None:
    lost = list(range(1000, 1000 + 17 * 4))  # each pair covers PID + 16 followers
    data = RtcpNack(1, 2, lost).serialize()
    assert len(data) == 12 + 4 * 4
    assert parse_rtcp(data) == [RtcpNack(1, 2, lost)]
    assert len(RtcpNack(1, 2, []).serialize()) == 12


def test_nack_overlapping_pairs_are_merged_on_parse() -> None:
    data = bytes.fromhex("81cd0004") + SENDER + MEDIA + bytes.fromhex("000a0001 000b0001")
    assert parse_rtcp(data) == [RtcpNack(0x11111111, 0x22222222, [10, 11, 12])]


def test_fir_vector() -> None:
    data = bytes.fromhex("84ce0004") + SENDER + u32(0) + MEDIA + bytes.fromhex("07000000")
    fir = RtcpFir(0x11111111, [(0x22222222, 7)])
    assert fir.serialize() == data
    assert parse_rtcp(data) == [fir]


def test_remb_vector() -> None:
    word = (1 << 24) | (2 << 18) | 250_000
    data = bytes.fromhex("8fce0005") + SENDER + u32(0) + b"REMB" + u32(word) + MEDIA
    remb = RtcpRemb(0x11111111, 1_000_000, [0x22222222])
    assert remb.serialize() == data
    assert parse_rtcp(data) == [remb]


def test_remb_rounds_down_large_bitrates() -> None:
    remb = RtcpRemb(1, (1 << 20) + 1, [])
    (parsed,) = parse_rtcp(remb.serialize())
    assert isinstance(parsed, RtcpRemb)
    assert parsed.bitrate_bps == 1 << 20
    with pytest.raises(RtcpError):
        RtcpRemb(1, 1 << 90, []).serialize()
    with pytest.raises(RtcpError):
        RtcpRemb(1, -1, []).serialize()


def test_sender_report_vector() -> None:
    block = ReportBlock(0x22222222, 64, -3, 0x0001FFFF, 90, 0xAABBCCDD, 65536)
    block_bytes = (
        MEDIA + bytes.fromhex("40fffffd") + u32(0x1FFFF) + u32(90) + u32(0xAABBCCDD) + u32(65536)
    )
    sr = RtcpSenderReport(0x11111111, 0x0102030405060708, 1000, 5, 600, [block])
    data = (
        bytes.fromhex("81c8000c")
        + SENDER
        + bytes.fromhex("0102030405060708")
        + u32(1000)
        + u32(5)
        + u32(600)
        + block_bytes
    )
    assert sr.serialize() == data
    assert parse_rtcp(data) == [sr]


def test_receiver_report_and_sdes_compound() -> None:
    rr = bytes.fromhex("80c90001") + SENDER
    sdes = bytes.fromhex("81ca0003") + SENDER + b"\x01\x03abc" + b"\x00\x00\x00"
    packets = parse_rtcp(rr + sdes)
    assert packets == [RtcpReceiverReport(0x11111111), RtcpSdes([(0x11111111, "abc")])]
    assert serialize_rtcp(packets) == rr + sdes


def test_sdes_skips_other_items_and_handles_missing_cname() -> None:
    chunk1 = SENDER + b"\x02\x01x" + b"\x01\x02ok" + b"\x00"  # NAME then CNAME
    chunk2 = MEDIA + b"\x06\x02ab" + b"\x00\x00\x00\x00"  # TOOL only
    body = chunk1 + chunk2
    assert len(body) % 4 == 0
    data = bytes([0x82, 202]) + struct.pack("!H", len(body) // 4) + body
    assert parse_rtcp(data) == [RtcpSdes([(0x11111111, "ok"), (0x22222222, "")])]


def test_sdes_cname_exact_multiple_of_four_gets_null_word() -> None:
    # ssrc + type + len + 2 chars = 8 bytes, so the terminator needs a whole extra word.
    data = RtcpSdes([(1, "ab")]).serialize()
    assert data == bytes.fromhex("81ca0003") + u32(1) + b"\x01\x02ab" + b"\x00" * 4
    assert parse_rtcp(data) == [RtcpSdes([(1, "ab")])]


def test_bye_vectors() -> None:
    plain = bytes.fromhex("81cb0001") + SENDER
    assert parse_rtcp(plain) == [RtcpBye([0x11111111])]
    assert RtcpBye([0x11111111]).serialize() == plain
    with_reason = bytes.fromhex("81cb0002") + SENDER + b"\x03bye"
    assert parse_rtcp(with_reason) == [RtcpBye([0x11111111], "bye")]
    assert RtcpBye([0x11111111], "bye").serialize() == with_reason


def test_unknown_packets_kept_whole() -> None:
    xr = bytes.fromhex("80cf0002") + SENDER + bytes.fromhex("04000001")
    twcc = bytes.fromhex("8fcd0004") + SENDER + MEDIA + bytes.fromhex("00010002 00000000")
    app = bytes.fromhex("80cc0002") + SENDER + b"name"
    psfb_15 = bytes.fromhex("8fce0003") + SENDER + MEDIA + b"ABCD"
    psfb_other = bytes.fromhex("82ce0002") + SENDER + MEDIA
    compound = xr + twcc + app + psfb_15 + psfb_other
    packets = parse_rtcp(compound)
    assert packets == [
        RtcpUnknown(207, 0, xr),
        RtcpUnknown(205, 15, twcc),
        RtcpUnknown(204, 0, app),
        RtcpUnknown(206, 15, psfb_15),
        RtcpUnknown(206, 2, psfb_other),
    ]
    assert serialize_rtcp(packets) == compound


def test_padding_is_removed() -> None:
    data = bytes.fromhex("a0c90002") + SENDER + bytes.fromhex("00000004")
    assert parse_rtcp(data) == [RtcpReceiverReport(0x11111111)]
    padded_unknown = bytes.fromhex("a0cf0002") + SENDER + bytes.fromhex("00000004")
    assert parse_rtcp(padded_unknown) == [RtcpUnknown(207, 0, padded_unknown)]


def test_report_block_loss_is_signed_and_clamped() -> None:
    rb = ReportBlock(1, 0, -(1 << 23), 0, 0, 0, 0)
    assert ReportBlock.parse(rb.serialize(), 0) == rb
    big = ReportBlock(1, 0, 1 << 30, 0, 0, 0, 0).serialize()
    assert ReportBlock.parse(big, 0).packets_lost == (1 << 23) - 1
    small = ReportBlock(1, 0, -(1 << 30), 0, 0, 0, 0).serialize()
    assert ReportBlock.parse(small, 0).packets_lost == -(1 << 23)


@pytest.mark.parametrize(
    "packet",
    [
        ReportBlock(1, 256, 0, 0, 0, 0, 0),
        ReportBlock(-1, 0, 0, 0, 0, 0, 0),
        RtcpPli(1 << 32, 0),
        RtcpReceiverReport(1, [ReportBlock(1, 0, 0, 0, 0, 0, 0)] * 32),
        RtcpSdes([(1, "x" * 256)]),
        RtcpBye([1], "x" * 256),
        RtcpFir(1, [(2, 256)]),
        RtcpRemb(1, 0, [0] * 256),
    ],
)
def test_serialize_invalid(packet: ReportBlock | RtcpPacket) -> None:
    with pytest.raises(RtcpError):
        packet.serialize()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x80\xc9\x00", "truncated RTCP header"),
        (b"\x40\xc9\x00\x01" + SENDER, "version"),
        (b"\x80\xc9\x00\x02" + SENDER, "claims"),
        (b"\x80\xc9\x00\x01" + SENDER + b"\x80", "truncated RTCP header"),
        (b"\xa0\xc9\x00\x01" + b"\x00\x00\x00\x00", "padding"),
        (b"\xa0\xc9\x00\x01" + b"\x00\x00\x00\x05", "padding"),
        (b"\x80\xc8\x00\x01" + SENDER, "sender report too short"),
        (b"\x80\xc9\x00\x00", "receiver report too short"),
        (b"\x81\xc9\x00\x01" + SENDER, "report blocks"),
        (b"\x81\xca\x00\x00", "truncated SDES chunk"),
        (b"\x81\xca\x00\x02" + SENDER + b"\x01\x02ab", "not terminated"),
        (b"\x81\xca\x00\x02" + SENDER + b"\x01\x05abc", "overruns"),
        (b"\x81\xca\x00\x02" + SENDER + b"\x02\x01x\x05", "truncated SDES item"),
        (b"\x82\xcb\x00\x01" + SENDER, "BYE"),
        (b"\x81\xcb\x00\x02" + SENDER + b"\x05abc", "reason"),
        (b"\x81\xcd\x00\x01" + SENDER, "transport feedback too short"),
        (b"\x81\xce\x00\x01" + SENDER, "payload-specific feedback too short"),
        (b"\x84\xce\x00\x03" + SENDER + MEDIA + SENDER, "FIR"),
        (b"\x8f\xce\x00\x03" + SENDER + MEDIA + b"REMB", "truncated REMB"),
        (b"\x8f\xce\x00\x04" + SENDER + MEDIA + b"REMB" + b"\x02\x00\x00\x01", "REMB with 2"),
    ],
)
def test_parse_errors(data: bytes, message: str) -> None:
    with pytest.raises(RtcpError, match=message) as info:
        parse_rtcp(data)
    assert info.value.code == "bad_rtcp"


def test_nack_with_odd_padding_is_rejected() -> None:
    data = b"\xa1\xcd\x00\x03" + SENDER + MEDIA + b"\x00\x01\x00\x03"
    with pytest.raises(RtcpError, match="NACK"):
        parse_rtcp(data)


def test_every_prefix_parses_or_raises_rtcp_error() -> None:
    compound = serialize_rtcp(
        [
            RtcpSenderReport(1, 2, 3, 4, 5, [ReportBlock(6, 7, -8, 9, 10, 11, 12)]),
            RtcpSdes([(1, "cname"), (2, "other")]),
            RtcpBye([1, 2], "done"),
            RtcpNack(1, 2, [3, 5, 40]),
            RtcpRemb(1, 123456789, [2, 3]),
            RtcpFir(1, [(2, 3)]),
            RtcpPli(1, 2),
        ]
    )
    for n in range(len(compound) + 1):
        try:
            parse_rtcp(compound[:n])
        except RtcpError:
            pass


def test_sort_sequence_numbers() -> None:
    assert sort_sequence_numbers([]) == []
    assert sort_sequence_numbers([7]) == [7]
    assert sort_sequence_numbers([3, 1, 2, 2]) == [1, 2, 3]
    assert sort_sequence_numbers([0, 65535, 1, 65534]) == [65534, 65535, 0, 1]
    assert sort_sequence_numbers([65536 + 4, 2]) == [2, 4]


def test_ntp_helpers() -> None:
    assert ntp_timestamp(0.0) == 2_208_988_800 << 32
    assert ntp_timestamp(1.5) == ((2_208_988_801 << 32) | 0x80000000)
    t = 1_700_000_000.25
    ntp = ntp_timestamp(t)
    assert ntp >> 32 == 1_700_000_000 + 2_208_988_800
    assert abs((ntp & 0xFFFFFFFF) - (1 << 30)) < 2**12
    assert ntp_middle32(0x0123456789ABCDEF) == 0x456789AB


# --- property tests -------------------------------------------------------------------------

u32s = st.integers(0, 0xFFFFFFFF)
texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
blocks = st.builds(
    ReportBlock,
    ssrc=u32s,
    fraction_lost=st.integers(0, 255),
    packets_lost=st.integers(-(1 << 23), (1 << 23) - 1),
    highest_sequence=u32s,
    jitter=u32s,
    lsr=u32s,
    dlsr=u32s,
)
rtcp_packets: st.SearchStrategy[RtcpPacket] = st.one_of(
    st.builds(
        RtcpSenderReport,
        ssrc=u32s,
        ntp_timestamp=st.integers(0, (1 << 64) - 1),
        rtp_timestamp=u32s,
        packet_count=u32s,
        octet_count=u32s,
        reports=st.lists(blocks, max_size=3),
    ),
    st.builds(RtcpReceiverReport, ssrc=u32s, reports=st.lists(blocks, max_size=3)),
    st.builds(RtcpSdes, chunks=st.lists(st.tuples(u32s, texts), max_size=4)),
    st.builds(RtcpBye, ssrcs=st.lists(u32s, max_size=4), reason=texts),
    st.builds(RtcpPli, sender_ssrc=u32s, media_ssrc=u32s),
    st.builds(RtcpFir, sender_ssrc=u32s, entries=st.lists(st.tuples(u32s, st.integers(0, 255)))),
    st.builds(
        RtcpNack,
        sender_ssrc=u32s,
        media_ssrc=u32s,
        lost=st.sets(st.integers(0, 0xFFFF), max_size=40).map(sort_sequence_numbers),
    ),
    st.builds(
        RtcpRemb,
        sender_ssrc=u32s,
        bitrate_bps=st.builds(
            lambda m, e: m << e, st.integers(0, (1 << 18) - 1), st.integers(0, 63)
        ),
        ssrcs=st.lists(u32s, max_size=4),
    ),
)


@settings(max_examples=examples(300))
@given(st.lists(rtcp_packets, min_size=1, max_size=4))
def test_round_trip(packets: list[RtcpPacket]) -> None:
    data = serialize_rtcp(packets)
    assert parse_rtcp(data) == packets
    assert serialize_rtcp(parse_rtcp(data)) == data


@settings(max_examples=examples(300))
@given(st.binary(max_size=80))
def test_random_bytes_only_raise_rtcp_error(data: bytes) -> None:
    try:
        parse_rtcp(data)
    except RtcpError:
        pass


@settings(max_examples=examples(400))
@given(
    st.integers(0, 63),
    st.sampled_from([200, 201, 202, 203, 204, 205, 206, 207]),
    st.binary(max_size=60),
)
def test_random_bodies_only_raise_rtcp_error(flags: int, packet_type: int, body: bytes) -> None:
    # A valid version and a length matching the body reach the per-type parsers.
    body = body[: len(body) & ~3]
    data = bytes([0x80 | flags, packet_type]) + struct.pack("!H", len(body) // 4) + body
    try:
        parse_rtcp(data)
    except RtcpError:
        pass
