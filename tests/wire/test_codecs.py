"""Tests for sfu.wire.codecs.is_keyframe."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.wire.codecs import is_keyframe
from tests.fuzzing import examples

# First bytes of a VP8 keyframe: frame tag with P=0, then the 9d 01 2a start code.
VP8_KEY_TAG = bytes.fromhex("502a009d012a8002e001")
VP8_DELTA_TAG = bytes.fromhex("5101001122")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x10" + VP8_KEY_TAG, True),  # S=1, PID=0, no extension
        (b"\x10" + VP8_DELTA_TAG, False),  # P=1: interframe
        (b"\x00" + VP8_KEY_TAG, False),  # not the start of a partition
        (b"\x11" + VP8_KEY_TAG, False),  # start of partition 1
        (b"\x30" + VP8_KEY_TAG, True),  # N (non-reference) bit does not matter
        (b"\x90\x80\x05" + VP8_KEY_TAG, True),  # X, I with 7-bit picture id
        (b"\x90\x80\x85\x01" + VP8_KEY_TAG, True),  # I with 15-bit picture id
        (b"\x90\xf0\x80\x01\x05\x20" + VP8_KEY_TAG, True),  # I, L, T, K all present
        (b"\x90\x40\x05" + VP8_KEY_TAG, True),  # L only
        (b"\x90\x10\x20" + VP8_DELTA_TAG, False),  # K only, delta frame
        (b"\x90\x80\x05" + VP8_DELTA_TAG, False),
        (b"", False),
        (b"\x10", False),
        (b"\x90", False),
        (b"\x90\x80", False),
        (b"\x90\x80\x85", False),
        (b"\x90\x80\x85\x01", False),
        (b"\x90\xf0\x80\x01\x05\x20", False),
    ],
)
def test_vp8(payload: bytes, expected: bool) -> None:
    assert is_keyframe("VP8", payload) is expected


def test_vp8_extension_bytes_are_skipped() -> None:
    # With L set, a TL0PICIDX byte whose low bit is clear must not be mistaken for the tag.
    assert is_keyframe("VP8", b"\x90\x40\x04" + VP8_DELTA_TAG) is False


# A VP9 keyframe's uncompressed header starts with frame marker bits; the content is not
# inspected, it only has to be there.
VP9_FRAME = bytes.fromhex("824983420031f0")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        # I|L|B, 15-bit picture id, layer byte SID 0, TL0PICIDX
        (b"\xa8\x80\x01\x00\x05" + VP9_FRAME, True),
        # same but P=1 (inter-picture predicted)
        (b"\xe8\x80\x01\x00\x05" + VP9_FRAME, False),
        # B=0: not the start of a frame
        (b"\xa0\x80\x01\x00\x05" + VP9_FRAME, False),
        # spatial layer 1 is not a starting point even with P=0
        (b"\xa8\x80\x01\x02\x05" + VP9_FRAME, False),
        # flexible mode: no TL0PICIDX
        (b"\xb8\x01\x00" + VP9_FRAME, True),
        # I|B|V with a scalability structure: N_S=2, Y, G, one group with one P_DIFF
        (
            b"\x8a\x01\x58" + b"\x01\x40\x00\xb4" * 3 + b"\x01\x04\x01" + VP9_FRAME,
            True,
        ),
        # minimal descriptor
        (b"\x08" + VP9_FRAME, True),
        (b"\x0c" + VP9_FRAME, True),
        (b"\x48" + VP9_FRAME, False),
        (b"", False),
        (b"\x08", False),
        (b"\x88", False),
        (b"\x88\x80", False),
        (b"\x88\x80\x01", False),
        (b"\xa8\x01", False),
        (b"\xa8\x01\x00\x05", False),
        (b"\x8a\x01", False),
        (b"\x8a\x01\x58\x01\x40", False),
        (b"\x8a\x01\x58" + b"\x01\x40\x00\xb4" * 3, False),
        (b"\x8a\x01\x58" + b"\x01\x40\x00\xb4" * 3 + b"\x02\x04", False),
    ],
)
def test_vp9(payload: bytes, expected: bool) -> None:
    assert is_keyframe("VP9", payload) is expected


SPS = bytes.fromhex("6742c01f")
PPS = bytes.fromhex("68ce3c80")
IDR = bytes.fromhex("65888400")
SLICE = bytes.fromhex("419a0000")


def stap_a(*nalus: bytes) -> bytes:
    return b"\x78" + b"".join(len(n).to_bytes(2, "big") + n for n in nalus)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (IDR, True),
        (SPS, True),
        (PPS, False),
        (SLICE, False),
        (stap_a(SPS, PPS), True),
        (stap_a(PPS, SPS), True),
        (stap_a(PPS, IDR), True),
        (stap_a(PPS, SLICE), False),
        (stap_a(PPS)[:-1], False),  # NAL unit size overruns the packet
        (stap_a(PPS) + b"\x00\x00" + SPS, False),  # zero-size NAL unit
        (stap_a(PPS) + b"\x00", False),  # dangling size byte
        (b"\x7c\x85" + IDR[1:], True),  # FU-A start of an IDR
        (b"\x7c\x87" + SPS[1:], True),  # FU-A start of an SPS
        (b"\x7c\x05" + IDR[1:], False),  # FU-A continuation
        (b"\x7c\x45" + IDR[1:], False),  # FU-A end
        (b"\x7c\x81" + SLICE[1:], False),  # FU-A start of a non-IDR slice
        (b"\x7c", False),
        (b"\x78", False),
        (b"", False),
    ],
)
def test_h264(payload: bytes, expected: bool) -> None:
    assert is_keyframe("H264", payload) is expected


def test_av1_uses_new_coded_video_sequence_bit() -> None:
    assert is_keyframe("AV1", b"\x18\x0a\x0b") is True
    assert is_keyframe("AV1", b"\x10\x0a\x0b") is False
    assert is_keyframe("AV1", b"\x88\x0a\x0b") is False  # Z=1: continuation
    assert is_keyframe("AV1", b"\x08") is False


def test_codec_names() -> None:
    assert is_keyframe("h264", IDR) is True
    assert is_keyframe("OPUS", IDR) is False
    assert is_keyframe("", IDR) is False


@settings(max_examples=examples(500))
@given(st.sampled_from(["VP8", "VP9", "H264", "AV1", "OPUS", "vp8"]), st.binary(max_size=40))
def test_never_raises(codec: str, payload: bytes) -> None:
    assert isinstance(is_keyframe(codec, payload), bool)
