"""Tests for sfu.wire.rtp."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.wire.rtp import (
    RtpError,
    RtpHeader,
    RtpPacket,
    build_extension_block,
    get_header_extension,
    is_rtcp_packet_type,
    iter_header_extensions,
    parse_rtp_header,
    rewrite_rtp,
)
from tests.fuzzing import examples

# V=2, no P/X, CC=0 | M=1, PT=96 | seq 0x1234 | ts 0xDEADBEEF | ssrc 0x11223344 | payload
SIMPLE = bytes.fromhex("80e01234deadbeef11223344") + b"payload"

# V=2, P=1, X=1, CC=2 | M=0 PT=111 | seq 65535 | ts 1 | ssrc 2 | csrcs 3, 4
# | ext 0xBEDE, 2 words: id 1 "ab", padding byte, id 2 "xyz" | payload "hi" | 3 bytes padding
FULL = (
    bytes.fromhex("b26fffff0000000100000002")
    + bytes.fromhex("0000000300000004")
    + bytes.fromhex("bede0002")
    + b"\x11ab\x00\x22xyz"
    + b"hi"
    + b"\x00\x00\x03"
)


def test_parse_simple_header() -> None:
    h = parse_rtp_header(SIMPLE)
    assert h == RtpHeader(
        payload_type=96,
        marker=True,
        sequence_number=0x1234,
        timestamp=0xDEADBEEF,
        ssrc=0x11223344,
        header_size=12,
        padding_size=0,
        extension_profile=0,
        extension_offset=0,
        extension_length=0,
    )


def test_parse_full_header() -> None:
    h = parse_rtp_header(FULL)
    assert h.payload_type == 111
    assert not h.marker
    assert h.sequence_number == 65535
    assert (h.timestamp, h.ssrc) == (1, 2)
    assert h.extension_profile == 0xBEDE
    assert h.extension_offset == 24
    assert h.extension_length == 8
    assert h.header_size == 32
    assert h.padding_size == 3
    assert FULL[h.header_size : len(FULL) - h.padding_size] == b"hi"


def test_header_only_packet() -> None:
    h = parse_rtp_header(SIMPLE[:12])
    assert h.header_size == 12


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (SIMPLE[:11], "too short"),
        (b"\x40" + SIMPLE[1:], "version"),
        (b"\x00" + SIMPLE[1:], "version"),
        (b"\x83" + SIMPLE[1:12] + b"\x00" * 8, "CSRC"),
        (b"\x90" + SIMPLE[1:12] + b"\xbe\xde", "extension"),
        (b"\x90" + SIMPLE[1:12] + b"\xbe\xde\x00\x02" + b"\x00" * 7, "extension"),
        (b"\xa0" + SIMPLE[1:12], "padding"),
        (b"\xa0" + SIMPLE[1:] + b"\x00", "zero padding"),
        (b"\xa0" + SIMPLE[1:12] + b"ab\x04", "exceeds"),
    ],
)
def test_parse_errors(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message) as info:
        parse_rtp_header(data)
    assert info.value.code == "bad_rtp"
    assert isinstance(info.value, ValueError)


def test_padding_may_fill_whole_payload() -> None:
    data = b"\xa0" + SIMPLE[1:12] + b"\x00\x00\x03"
    h = parse_rtp_header(data)
    assert h.padding_size == 3
    assert RtpPacket.parse(data).payload == b""


def test_every_prefix_parses_or_raises_rtp_error() -> None:
    for packet in (SIMPLE, FULL):
        for n in range(len(packet) + 1):
            try:
                RtpPacket.parse(packet[:n])
            except RtpError:
                pass


def test_one_byte_extensions() -> None:
    h = parse_rtp_header(FULL)
    assert get_header_extension(FULL, h, 1) == b"ab"
    assert get_header_extension(FULL, h, 2) == b"xyz"
    assert get_header_extension(FULL, h, 3) is None
    assert list(iter_header_extensions(FULL, h)) == [(1, b"ab"), (2, b"xyz")]


def _with_extension(profile: int, elements: bytes) -> bytes:
    assert len(elements) % 4 == 0
    return (
        bytes.fromhex("9060000100000002000000ff")
        + struct.pack("!HH", profile, len(elements) // 4)
        + elements
        + b"payload"
    )


def test_one_byte_id15_stops_parsing() -> None:
    data = _with_extension(0xBEDE, b"\x10a\xf0\x20b\x00\x00\x00")
    h = parse_rtp_header(data)
    assert get_header_extension(data, h, 1) == b"a"
    assert get_header_extension(data, h, 2) is None


def test_one_byte_padding_with_stray_length_is_skipped() -> None:
    data = _with_extension(0xBEDE, b"\x00\x03\x10a\x00\x00\x00\x00")
    h = parse_rtp_header(data)
    assert get_header_extension(data, h, 1) == b"a"


def test_one_byte_overrun_raises() -> None:
    data = _with_extension(0xBEDE, b"\x10a\x23x")
    h = parse_rtp_header(data)
    assert get_header_extension(data, h, 1) == b"a"
    with pytest.raises(RtpError, match="overruns"):
        get_header_extension(data, h, 2)


def test_two_byte_extensions() -> None:
    # id 1 empty, padding byte, id 20 with 3 bytes, id 2 with 1 byte, padding
    elements = b"\x01\x00" + b"\x00" + b"\x14\x03xyz" + b"\x02\x01q" + b"\x00"
    data = _with_extension(0x1000, elements)
    h = parse_rtp_header(data)
    assert get_header_extension(data, h, 1) == b""
    assert get_header_extension(data, h, 20) == b"xyz"
    assert get_header_extension(data, h, 2) == b"q"
    assert get_header_extension(data, h, 3) is None
    # appbits in the low nibble of the profile do not change the format
    data2 = _with_extension(0x100F, elements)
    assert get_header_extension(data2, parse_rtp_header(data2), 20) == b"xyz"


def test_two_byte_overrun_and_missing_length_raise() -> None:
    data = _with_extension(0x1000, b"\x00\x00\x00\x05")
    with pytest.raises(RtpError, match="no length"):
        get_header_extension(data, parse_rtp_header(data), 9)
    data = _with_extension(0x1000, b"\x05\x03ab")
    with pytest.raises(RtpError, match="overruns"):
        get_header_extension(data, parse_rtp_header(data), 9)


def test_unknown_profile_and_no_extension() -> None:
    data = _with_extension(0x1234, b"\x10a\x00\x00")
    assert get_header_extension(data, parse_rtp_header(data), 1) is None
    assert get_header_extension(SIMPLE, parse_rtp_header(SIMPLE), 1) is None


def test_build_extension_block_forms() -> None:
    assert build_extension_block(None) == b""
    assert build_extension_block({}) == b""
    assert build_extension_block({1: b"ab"}) == bytes.fromhex("bede0001") + b"\x11ab\x00"
    assert (
        build_extension_block({3: b"\x01\x02\x03"})
        == bytes.fromhex("bede0001") + b"\x32\x01\x02\x03"
    )
    # 17-byte value forces the two-byte form
    assert build_extension_block({1: b"x" * 17}) == (
        bytes.fromhex("10000005") + b"\x01\x11" + b"x" * 17 + b"\x00"
    )
    # id 15 and empty values force the two-byte form as well
    assert build_extension_block({15: b"a"}) == bytes.fromhex("10000001") + b"\x0f\x01a\x00"
    assert build_extension_block({2: b""}) == bytes.fromhex("10000001") + b"\x02\x00\x00\x00"


@pytest.mark.parametrize("extensions", [{0: b""}, {256: b"a"}, {1: b"x" * 256}])
def test_build_extension_block_invalid(extensions: dict[int, bytes]) -> None:
    with pytest.raises(RtpError):
        build_extension_block(extensions)


def test_rewrite_rtp_replaces_fields_and_extensions() -> None:
    h = parse_rtp_header(FULL)
    out = rewrite_rtp(
        FULL, h, payload_type=100, sequence_number=7, timestamp=8, ssrc=9, extensions={5: b"z"}
    )
    expected = (
        bytes.fromhex("b26400070000000800000009")
        + bytes.fromhex("0000000300000004")
        + bytes.fromhex("bede0001")
        + b"\x50z\x00\x00"
        + b"hi\x00\x00\x03"
    )
    assert out == expected
    pkt = RtpPacket.parse(out)
    assert pkt.csrcs == [3, 4]
    assert pkt.extensions == {5: b"z"}
    assert pkt.payload == b"hi"
    assert pkt.padding_size == 3
    assert not pkt.marker


def test_rewrite_rtp_drops_extension_block() -> None:
    h = parse_rtp_header(FULL)
    no_extensions: tuple[dict[int, bytes] | None, ...] = (None, {})
    for extensions in no_extensions:
        out = rewrite_rtp(
            FULL, h, payload_type=111, sequence_number=0, timestamp=1, ssrc=2, extensions=extensions
        )
        assert out[0] == 0xA2  # X bit cleared, P and CC kept
        h2 = parse_rtp_header(out)
        assert h2.extension_offset == 0
        assert h2.header_size == 20
        assert out[20:] == b"hi\x00\x00\x03"


def test_rewrite_rtp_keeps_marker_and_wraps_values() -> None:
    h = parse_rtp_header(SIMPLE)
    out = rewrite_rtp(
        SIMPLE,
        h,
        payload_type=0x80 | 97,
        sequence_number=65536 + 5,
        timestamp=(1 << 32) + 6,
        ssrc=-1,
        extensions={1: b"x" * 20},
    )
    pkt = RtpPacket.parse(out)
    assert pkt.marker
    assert pkt.payload_type == 97
    assert pkt.sequence_number == 5
    assert pkt.timestamp == 6
    assert pkt.ssrc == 0xFFFFFFFF
    assert pkt.extensions == {1: b"x" * 20}
    assert pkt.payload == b"payload"


def test_packet_parse_and_serialize_known_vector() -> None:
    pkt = RtpPacket.parse(FULL)
    assert pkt == RtpPacket(
        payload_type=111,
        marker=False,
        sequence_number=65535,
        timestamp=1,
        ssrc=2,
        csrcs=[3, 4],
        extensions={1: b"ab", 2: b"xyz"},
        payload=b"hi",
        padding_size=3,
    )
    # Re-encoding packs the extension elements without the inner padding byte.
    again = bytes(pkt)
    assert RtpPacket.parse(again) == pkt
    assert len(again) == len(FULL)
    assert RtpPacket.parse(SIMPLE).serialize() == SIMPLE


def test_packet_first_duplicate_extension_wins() -> None:
    data = _with_extension(0xBEDE, b"\x10a\x10b")
    assert RtpPacket.parse(data).extensions == {1: b"a"}


@pytest.mark.parametrize(
    "pkt",
    [
        RtpPacket(payload_type=128, marker=False, sequence_number=0, timestamp=0, ssrc=0),
        RtpPacket(payload_type=0, marker=False, sequence_number=65536, timestamp=0, ssrc=0),
        RtpPacket(
            payload_type=0, marker=False, sequence_number=0, timestamp=0, ssrc=0, csrcs=[0] * 16
        ),
        RtpPacket(
            payload_type=0, marker=False, sequence_number=0, timestamp=0, ssrc=0, padding_size=256
        ),
        RtpPacket(payload_type=0, marker=False, sequence_number=0, timestamp=0, ssrc=0, csrcs=[-1]),
    ],
)
def test_packet_serialize_invalid(pkt: RtpPacket) -> None:
    with pytest.raises(RtpError):
        pkt.serialize()


def test_is_rtcp_packet_type() -> None:
    assert not is_rtcp_packet_type(191)
    assert is_rtcp_packet_type(192)
    assert is_rtcp_packet_type(200)
    assert is_rtcp_packet_type(223)
    assert not is_rtcp_packet_type(224)
    assert not is_rtcp_packet_type(96)
    assert not is_rtcp_packet_type(0x80 | 96)  # marker + PT 96 = 224


# --- property tests -------------------------------------------------------------------------

extension_maps = st.dictionaries(
    st.integers(1, 255), st.binary(max_size=40), max_size=5
) | st.dictionaries(st.integers(1, 14), st.binary(min_size=1, max_size=16), max_size=5)

packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    marker=st.booleans(),
    sequence_number=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    extensions=extension_maps,
    payload=st.binary(max_size=64),
    padding_size=st.integers(0, 255),
)


@settings(max_examples=examples(300))
@given(st.binary(max_size=80))
def test_random_bytes_only_raise_rtp_error(data: bytes) -> None:
    try:
        h = parse_rtp_header(data)
    except RtpError:
        return
    try:
        RtpPacket.parse(data)
        for ext_id in (1, 2, 15):
            get_header_extension(data, h, ext_id)
    except RtpError:
        pass


@settings(max_examples=examples(300))
@given(st.binary(min_size=12, max_size=60), st.integers(0, 15))
def test_random_headers_with_version2_only_raise_rtp_error(data: bytes, flags: int) -> None:
    # Forcing version 2 plus P/X bits reaches the deeper validation paths more often.
    data = bytes([0x80 | (flags << 4 & 0x30) | (data[0] & 0x0F)]) + data[1:]
    try:
        RtpPacket.parse(data)
    except RtpError:
        pass


@settings(max_examples=examples(200))
@given(packets)
def test_packet_round_trip(pkt: RtpPacket) -> None:
    data = pkt.serialize()
    assert RtpPacket.parse(data) == pkt
    h = parse_rtp_header(data)
    for ext_id, value in pkt.extensions.items():
        assert get_header_extension(data, h, ext_id) == value


@settings(max_examples=examples(200))
@given(packets, extension_maps, st.integers(0, 127), st.integers(0, 0xFFFF))
def test_rewrite_matches_object_model(
    pkt: RtpPacket, extensions: dict[int, bytes], pt: int, seq: int
) -> None:
    data = pkt.serialize()
    out = rewrite_rtp(
        data,
        parse_rtp_header(data),
        payload_type=pt,
        sequence_number=seq,
        timestamp=pkt.timestamp ^ 1,
        ssrc=pkt.ssrc ^ 2,
        extensions=extensions,
    )
    pkt.payload_type = pt
    pkt.sequence_number = seq
    pkt.timestamp ^= 1
    pkt.ssrc ^= 2
    pkt.extensions = dict(extensions)
    assert RtpPacket.parse(out) == pkt
    assert out == pkt.serialize()
