"""Tests for sfu.wire.demux (RFC 7983 section 7, RFC 5761 section 4)."""

from __future__ import annotations

import pytest

from sfu.wire.demux import PacketClass, classify


@pytest.mark.parametrize("first", [0, 1, 2, 3])
def test_first_byte_0_to_3_is_stun(first: int) -> None:
    assert classify(bytes([first]) + bytes(19)) is PacketClass.STUN


@pytest.mark.parametrize("first", [20, 21, 22, 23, 42, 63])
def test_first_byte_20_to_63_is_dtls(first: int) -> None:
    assert classify(bytes([first, 0xFE, 0xFD])) is PacketClass.DTLS


@pytest.mark.parametrize("first", [128, 144, 160, 191])
@pytest.mark.parametrize("second", [0, 96, 111, 127, 128, 191, 224, 255])
def test_first_byte_128_to_191_with_non_rtcp_second_byte_is_rtp(first: int, second: int) -> None:
    assert classify(bytes([first, second]) + bytes(10)) is PacketClass.RTP


@pytest.mark.parametrize("first", [128, 129, 143, 191])
@pytest.mark.parametrize("second", [192, 200, 201, 205, 206, 223])
def test_second_byte_192_to_223_is_rtcp(first: int, second: int) -> None:
    assert classify(bytes([first, second]) + bytes(6)) is PacketClass.RTCP


@pytest.mark.parametrize(
    "first",
    [4, 15, 16, 19, 64, 79, 80, 127, 192, 255],  # ZRTP 16-19 and TURN 64-79 are not ours
)
def test_first_bytes_outside_our_ranges_are_unknown(first: int) -> None:
    assert classify(bytes([first, 200]) + bytes(10)) is PacketClass.UNKNOWN


def test_empty_datagram_is_unknown() -> None:
    assert classify(b"") is PacketClass.UNKNOWN


def test_single_byte_in_rtp_range_is_unknown() -> None:
    assert classify(b"\x80") is PacketClass.UNKNOWN


def test_every_first_byte_maps_to_exactly_the_rfc_7983_class() -> None:
    for first in range(256):
        got = classify(bytes([first, 0]) + bytes(20))
        if first <= 3:
            expected = PacketClass.STUN
        elif 20 <= first <= 63:
            expected = PacketClass.DTLS
        elif 128 <= first <= 191:
            expected = PacketClass.RTP
        else:
            expected = PacketClass.UNKNOWN
        assert got is expected, first
