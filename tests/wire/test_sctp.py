"""Tests for sfu.wire.sctp, with aiortc's SCTP codec as an independent check."""

from __future__ import annotations

import struct

import pytest
from aiortc import rtcsctptransport as aiortc_sctp
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.wire import sctp
from sfu.wire.sctp import (
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
    SctpPacket,
    SctpParseError,
    ShutdownAckChunk,
    ShutdownChunk,
    ShutdownCompleteChunk,
    UnknownChunk,
    parse_packet,
    serialize_packet,
)
from tests.fuzzing import examples

EXTENSIONS = [
    (sctp.PARAM_SUPPORTED_EXTENSIONS, bytes([sctp.CHUNK_FORWARD_TSN, sctp.CHUNK_RECONFIG])),
    (sctp.PARAM_FORWARD_TSN_SUPPORTED, b""),
]

CHUNKS: list[Chunk] = [
    DataChunk(1, 2, 3, 51, b"hello", sctp.DATA_FLAG_BEGIN | sctp.DATA_FLAG_END),
    DataChunk(0xFFFFFFFF, 65535, 65535, 53, b"x", sctp.DATA_FLAG_UNORDERED),
    InitChunk(0xDEADBEEF, 131072, 65535, 65535, 42, EXTENSIONS),
    InitAckChunk(7, 1024, 10, 20, 99, [(sctp.PARAM_STATE_COOKIE, b"cookie!"), *EXTENSIONS]),
    SackChunk(1000, 65536, [(2, 3), (5, 9)], [999, 998]),
    SackChunk(5, 0),
    HeartbeatChunk([(sctp.PARAM_HEARTBEAT_INFO, b"info")]),
    HeartbeatAckChunk([(sctp.PARAM_HEARTBEAT_INFO, b"info")]),
    AbortChunk([(sctp.CAUSE_USER_INITIATED_ABORT, b"bye")], sctp.FLAG_T),
    AbortChunk(),
    ErrorChunk([(sctp.CAUSE_INVALID_STREAM, b"\x00\x05\x00\x00")]),
    ShutdownChunk(123456),
    ShutdownAckChunk(),
    ShutdownCompleteChunk(sctp.FLAG_T),
    CookieEchoChunk(b"\x01" * 33),
    CookieAckChunk(),
    ForwardTsnChunk(77, [(1, 2), (3, 4)]),
    ForwardTsnChunk(77),
    ReconfigChunk([OutgoingSsnResetRequest(10, 20, 30, [1, 3, 5])]),
    ReconfigChunk([ReconfigResponse(10, sctp.RECONFIG_SUCCESS_PERFORMED)]),
    ReconfigChunk([ReconfigResponse(10, sctp.RECONFIG_IN_PROGRESS, 1, 2)]),
    ReconfigChunk([IncomingSsnResetRequest(4, [2])]),
    UnknownChunk(0xC5, b"abc", 7),
]


def test_crc32c_known_answer() -> None:
    assert sctp.crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize("chunk", CHUNKS, ids=lambda c: type(c).__name__)
def test_each_chunk_round_trips_in_a_packet(chunk: Chunk) -> None:
    packet = SctpPacket(5000, 5001, 0x01020304, [chunk])
    raw = bytes(packet)
    assert len(raw) % 4 == 0
    assert parse_packet(raw) == packet


def test_several_chunks_bundle_with_padding() -> None:
    packet = SctpPacket(1, 2, 3, [CHUNKS[0], CHUNKS[4], CHUNKS[14]])
    assert parse_packet(bytes(packet)) == packet


def test_packet_matches_aiortc_bytes_for_data() -> None:
    chunk = aiortc_sctp.DataChunk(flags=3)
    chunk.tsn, chunk.stream_id, chunk.stream_seq, chunk.protocol = 5, 1, 2, 51
    chunk.user_data = b"hello"
    theirs = aiortc_sctp.serialize_packet(5000, 5000, 123, chunk)
    ours = bytes(SctpPacket(5000, 5000, 123, [DataChunk(5, 1, 2, 51, b"hello", 3)]))
    assert ours == theirs


def test_aiortc_parses_our_sack_and_init() -> None:
    for ours in (CHUNKS[2], CHUNKS[4]):
        raw = bytes(SctpPacket(5000, 5000, 9, [ours]))
        _, _, tag, chunks = aiortc_sctp.parse_packet(raw)
        assert tag == 9
        assert bytes(chunks[0]).rstrip(b"\x00") == bytes(ours).rstrip(b"\x00")


def test_checksum_is_little_endian_crc_of_zeroed_header() -> None:
    raw = bytes(SctpPacket(5000, 5000, 1, [CookieAckChunk()]))
    zeroed = raw[:8] + b"\x00" * 4 + raw[12:]
    assert struct.unpack("<I", raw[8:12])[0] == sctp.crc32c(zeroed)
    assert sctp.verify_checksum(raw)


def test_bad_checksum_raises_checksum_error() -> None:
    raw = bytearray(bytes(SctpPacket(5000, 5000, 1, [CookieAckChunk()])))
    raw[13] ^= 1  # the chunk flags
    with pytest.raises(SctpChecksumError):
        parse_packet(bytes(raw))
    assert parse_packet(bytes(raw), check_crc=False).chunks == [CookieAckChunk(1)]


def test_unknown_chunk_action_bits() -> None:
    stop_silent = UnknownChunk(0x3F, b"")
    stop_report = UnknownChunk(0x7F, b"")
    skip_silent = UnknownChunk(0xBF, b"")
    skip_report = UnknownChunk(0xFF, b"")
    assert [c.stop_processing for c in (stop_silent, stop_report, skip_silent, skip_report)] == [
        True,
        True,
        False,
        False,
    ]
    assert [c.report for c in (stop_silent, stop_report, skip_silent, skip_report)] == [
        False,
        True,
        False,
        True,
    ]


def _with_chunk(raw_chunk: bytes) -> bytes:
    return serialize_packet(5000, 5000, 1, [raw_chunk])


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00" * 12,
        b"\x00" * 15,
        _with_chunk(b"\x00\x03\x00\x10" + b"\x00" * 4),  # DATA length beyond packet
        _with_chunk(b"\x00\x03\x00\x02"),  # chunk length below 4
        _with_chunk(b"\x00\x03\x00\x10" + b"\x00" * 12),  # DATA without user data
        _with_chunk(b"\x01\x00\x00\x08" + b"\x00" * 4),  # truncated INIT
        _with_chunk(bytes(InitChunk(1, 2, 3, 4, 5))[:4] + b"\x00" * 16),  # zero tag
        _with_chunk(b"\x03\x00\x00\x14" + struct.pack("!IIHH", 1, 2, 5, 0) + b"\x00" * 4),
        _with_chunk(b"\x07\x00\x00\x06\x00\x00"),  # short SHUTDOWN
        _with_chunk(b"\xc0\x00\x00\x07\x00\x00\x00"),  # FORWARD TSN length 3
        _with_chunk(b"\x82\x00\x00\x04"),  # RE-CONFIG without parameters
        _with_chunk(b"\x82\x00\x00\x0c\x00\x10\x00\x06\x00\x00"),  # short response
        _with_chunk(b"\x04\x00\x00\x0a\x00\x01\x00\x09\x00\x00"),  # param beyond chunk
        _with_chunk(b"\x06\x00\x00\x06\x00\x01"),  # truncated cause
    ],
)
def test_truncated_or_invalid_input_raises_parse_error(raw: bytes) -> None:
    with pytest.raises(SctpParseError):
        parse_packet(raw)


def test_trailing_garbage_after_last_chunk_is_rejected() -> None:
    raw = _with_chunk(bytes(CookieAckChunk())) + b"\x01"
    with pytest.raises(SctpParseError):
        parse_packet(raw, check_crc=False)


def test_reconfig_parameter_codecs_round_trip() -> None:
    req = OutgoingSsnResetRequest(1, 2, 3, [4, 5])
    assert OutgoingSsnResetRequest.parse(req.to_tlv()[1]) == req
    resp = ReconfigResponse(9, 1)
    assert ReconfigResponse.parse(resp.to_tlv()[1]) == resp
    with pytest.raises(SctpParseError):
        OutgoingSsnResetRequest.parse(b"\x00" * 13)


def test_parse_error_has_a_stable_code() -> None:
    assert SctpParseError.code == "bad_sctp"
    assert issubclass(SctpParseError, ValueError)


@settings(max_examples=examples(2000))
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_parse_error(raw: bytes) -> None:
    try:
        parse_packet(raw)
    except SctpParseError:
        pass


@settings(max_examples=examples(2000))
@given(st.binary(max_size=400))
def test_arbitrary_bytes_with_valid_checksum_raise_only_parse_error(body: bytes) -> None:
    raw = serialize_packet(5000, 5000, 1, [body])
    try:
        packet = parse_packet(raw)
    except SctpParseError:
        return
    # Whatever parses serializes again and parses to the same thing.
    assert parse_packet(bytes(packet)) == packet


@settings(max_examples=examples(300))
@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**16 - 1),
    st.integers(0, 2**16 - 1),
    st.integers(0, 2**32 - 1),
    st.binary(min_size=1, max_size=1200),
    st.integers(0, 15),
)
def test_data_chunk_round_trip_property(
    tsn: int, sid: int, ssn: int, ppid: int, data: bytes, flags: int
) -> None:
    packet = SctpPacket(5000, 5000, 1, [DataChunk(tsn, sid, ssn, ppid, data, flags)])
    assert parse_packet(bytes(packet)) == packet


def test_data_chunk_parsed_in_place_equals_the_chunk_parser() -> None:
    raw = bytes(SctpPacket(5000, 5000, 9, [DataChunk(7, 3, 4, 53, b"payload!", 2)]))
    (chunk,) = parse_packet(raw).chunks
    assert chunk == DataChunk.parse(2, raw[16:])
    assert isinstance(chunk.user_data, bytes)


def test_data_chunk_without_user_data_is_still_refused() -> None:
    body = struct.pack("!IHHI", 1, 0, 0, 51)
    raw = sctp.serialize_packet(5000, 5000, 1, [struct.pack("!BBH", 0, 3, 16) + body])
    with pytest.raises(sctp.SctpParseError):
        parse_packet(raw)


@pytest.mark.parametrize("sizes", [[1160], [1], [5, 7], [16, 3, 1]])
def test_serialized_packet_checksum_is_crc32c_over_the_zeroed_header(sizes: list[int]) -> None:
    chunks = [bytes([0, 3]) + struct.pack("!H", 4 + n) + b"\xab" * n for n in sizes]
    raw = sctp.serialize_packet(1, 2, 3, chunks)
    padded = b"".join(c + b"\x00" * (-len(c) % 4) for c in chunks)
    assert raw[:8] == struct.pack("!HHI", 1, 2, 3)
    assert raw[12:] == padded
    assert struct.unpack("<I", raw[8:12])[0] == sctp.crc32c(raw[:8] + b"\x00" * 4 + padded)
