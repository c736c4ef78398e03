"""Tests for sfu.wire.stun, checked against aioice's STUN code as an independent implementation."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from aioice import stun as aioice_stun
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.wire import stun
from sfu.wire.stun import (
    ATTR_FINGERPRINT,
    ATTR_ICE_CONTROLLING,
    ATTR_MESSAGE_INTEGRITY,
    ATTR_PRIORITY,
    ATTR_USE_CANDIDATE,
    ATTR_USERNAME,
    ATTR_XOR_MAPPED_ADDRESS,
    BINDING_REQUEST,
    BINDING_SUCCESS,
    StunError,
    build_stun,
    is_stun,
    parse_stun,
    verify_fingerprint,
    verify_integrity,
    xor_mapped_address,
)
from tests.fuzzing import examples

PASSWORD = b"O2MdnVqWsT1XAt6JQSJm7Lzq"
TRANSACTION_ID = bytes(range(1, 13))


def aioice_binding_request(
    password: bytes = PASSWORD, username: str = "localUfr:remoteUf"
) -> bytes:
    """A binding request as an ICE agent (aioice) sends it."""
    msg = aioice_stun.Message(
        message_method=aioice_stun.Method.BINDING,
        message_class=aioice_stun.Class.REQUEST,
        transaction_id=TRANSACTION_ID,
    )
    msg.attributes["USERNAME"] = username
    msg.attributes["PRIORITY"] = 1853824767
    msg.attributes["ICE-CONTROLLING"] = 0x1122334455667788
    msg.attributes["USE-CANDIDATE"] = None
    msg.add_message_integrity(password)
    msg.add_fingerprint()
    return bytes(msg)


def flip(data: bytes, index: int) -> bytes:
    mutable = bytearray(data)
    mutable[index] ^= 0x01
    return bytes(mutable)


# -- parsing aioice's request ---------------------------------------------------


def test_parser_reads_type_transaction_and_attributes_of_aioice_request() -> None:
    msg = parse_stun(aioice_binding_request())
    assert msg.message_type == BINDING_REQUEST
    assert msg.transaction_id == TRANSACTION_ID
    assert msg.username == "localUfr:remoteUf"
    assert struct.unpack("!I", msg.get(ATTR_PRIORITY) or b"") == (1853824767,)
    assert msg.get(ATTR_ICE_CONTROLLING) == (0x1122334455667788).to_bytes(8, "big")
    assert msg.get(ATTR_USE_CANDIDATE) == b""
    kinds = [kind for kind, _ in msg.attributes]
    assert kinds[-2:] == [ATTR_MESSAGE_INTEGRITY, ATTR_FINGERPRINT]
    assert msg.integrity_offset > 0
    assert msg.fingerprint_offset == msg.integrity_offset + 24


def test_is_stun_accepts_aioice_request_and_rejects_other_first_bytes() -> None:
    data = aioice_binding_request()
    assert is_stun(data)
    assert not is_stun(b"\x80" + data[1:])
    assert not is_stun(data[:-4])


def test_integrity_of_aioice_request_verifies_with_the_right_password() -> None:
    data = aioice_binding_request()
    assert verify_integrity(data, parse_stun(data), PASSWORD)


def test_integrity_of_aioice_request_fails_with_a_wrong_password() -> None:
    data = aioice_binding_request()
    assert not verify_integrity(data, parse_stun(data), b"not-the-password-at-all!")


def test_integrity_fails_when_an_authenticated_byte_is_changed() -> None:
    data = aioice_binding_request()
    tampered = flip(data, 24)  # inside USERNAME's value
    assert not verify_integrity(tampered, parse_stun(tampered), PASSWORD)


def test_integrity_is_false_for_a_message_without_message_integrity() -> None:
    data = build_stun(BINDING_REQUEST, TRANSACTION_ID, [(ATTR_USERNAME, b"a:b")])
    assert not verify_integrity(data, parse_stun(data), PASSWORD)


def test_fingerprint_of_aioice_request_is_valid() -> None:
    data = aioice_binding_request()
    assert verify_fingerprint(data, parse_stun(data))


def test_fingerprint_is_invalid_after_a_flipped_byte() -> None:
    data = aioice_binding_request()
    tampered = flip(data, 24)
    assert not verify_fingerprint(tampered, parse_stun(tampered))


def test_fingerprint_is_invalid_when_the_crc_itself_is_changed() -> None:
    data = aioice_binding_request()
    tampered = flip(data, len(data) - 1)
    assert not verify_fingerprint(tampered, parse_stun(tampered))


# -- our builder read by aioice -------------------------------------------------


def test_build_stun_response_parses_in_aioice_with_valid_integrity_and_fingerprint() -> None:
    data = build_stun(
        BINDING_SUCCESS,
        TRANSACTION_ID,
        [(ATTR_XOR_MAPPED_ADDRESS, xor_mapped_address("127.0.0.1", 50000, TRANSACTION_ID))],
        integrity_key=PASSWORD,
    )
    # aioice raises ValueError itself when FINGERPRINT does not match.
    msg = aioice_stun.parse_message(data)
    assert msg.message_method == aioice_stun.Method.BINDING
    assert msg.message_class == aioice_stun.Class.RESPONSE
    assert msg.transaction_id == TRANSACTION_ID
    assert msg.check_message_integrity(PASSWORD)
    assert not msg.check_message_integrity(b"wrong")
    assert "FINGERPRINT" in msg.attributes


def test_build_stun_pads_odd_length_attributes_that_aioice_reads_back() -> None:
    data = build_stun(BINDING_REQUEST, TRANSACTION_ID, [(ATTR_USERNAME, b"abcde:fg")])
    assert len(data) % 4 == 0
    assert aioice_stun.parse_message(data).attributes["USERNAME"] == "abcde:fg"
    assert parse_stun(data).username == "abcde:fg"


def test_build_stun_round_trips_through_our_parser_and_verifies() -> None:
    data = build_stun(BINDING_REQUEST, TRANSACTION_ID, [(ATTR_USERNAME, b"x:y")], PASSWORD)
    msg = parse_stun(data)
    assert msg.username == "x:y"
    assert verify_integrity(data, msg, PASSWORD)
    assert verify_fingerprint(data, msg)


def test_build_stun_without_fingerprint_has_no_fingerprint_attribute() -> None:
    data = build_stun(BINDING_REQUEST, TRANSACTION_ID, [], PASSWORD, fingerprint=False)
    msg = parse_stun(data)
    assert msg.fingerprint_offset == -1
    assert verify_integrity(data, msg, PASSWORD)
    assert aioice_stun.parse_message(data).check_message_integrity(PASSWORD)


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("127.0.0.1", 50000),
        ("192.0.2.254", 1),
        ("::1", 65535),
        ("2001:db8::1234:5678", 3478),
        ("fe80::a:b:c:d", 9),
    ],
)
def test_xor_mapped_address_decodes_in_aioice(host: str, port: int) -> None:
    value = xor_mapped_address(host, port, TRANSACTION_ID)
    assert len(value) == (8 if ":" not in host else 20)
    decoded = aioice_stun.unpack_xor_address(value, TRANSACTION_ID)
    assert decoded == (host, port)


# -- malformed input ------------------------------------------------------------


def test_every_truncated_prefix_of_a_valid_message_raises_stun_error() -> None:
    data = aioice_binding_request()
    for size in range(len(data)):
        with pytest.raises(StunError):
            parse_stun(data[:size])


def test_prefix_with_length_fixed_up_parses_only_at_attribute_boundaries() -> None:
    # The header length is rewritten to match the cut: a cut inside an attribute is an
    # error; a cut between attributes is a shorter, valid message with the leading attributes.
    data = aioice_binding_request()
    full = parse_stun(data).attributes
    for size in range(20, len(data)):
        prefix = bytearray(data[:size])
        struct.pack_into("!H", prefix, 2, size - 20)
        try:
            msg = parse_stun(bytes(prefix))
        except StunError:
            continue
        assert msg.attributes == full[: len(msg.attributes)]
        assert size == 20 + sum(4 + len(v) + (-len(v) % 4) for _, v in msg.attributes)


def test_attribute_after_message_integrity_is_rejected() -> None:
    data = bytearray(build_stun(BINDING_REQUEST, TRANSACTION_ID, [], PASSWORD, fingerprint=False))
    data += struct.pack("!HH", ATTR_PRIORITY, 4) + b"\x00\x00\x00\x01"
    struct.pack_into("!H", data, 2, len(data) - 20)
    with pytest.raises(StunError, match="MESSAGE-INTEGRITY"):
        parse_stun(bytes(data))


def test_attribute_after_fingerprint_is_rejected() -> None:
    data = bytearray(build_stun(BINDING_REQUEST, TRANSACTION_ID, []))
    data += struct.pack("!HH", ATTR_PRIORITY, 4) + b"\x00\x00\x00\x01"
    struct.pack_into("!H", data, 2, len(data) - 20)
    with pytest.raises(StunError, match="FINGERPRINT"):
        parse_stun(bytes(data))


def test_message_integrity_of_wrong_size_is_rejected() -> None:
    body = struct.pack("!HH", ATTR_MESSAGE_INTEGRITY, 16) + bytes(16)
    data = struct.pack("!HHI", BINDING_REQUEST, len(body), stun.MAGIC_COOKIE) + TRANSACTION_ID
    with pytest.raises(StunError):
        parse_stun(data + body)


def test_attribute_length_overrunning_the_message_is_rejected() -> None:
    body = struct.pack("!HH", ATTR_USERNAME, 200) + b"abcd"
    data = struct.pack("!HHI", BINDING_REQUEST, len(body), stun.MAGIC_COOKIE) + TRANSACTION_ID
    with pytest.raises(StunError, match="overruns"):
        parse_stun(data + body)


def test_missing_magic_cookie_is_rejected() -> None:
    data = bytearray(aioice_binding_request())
    data[4] ^= 0xFF
    with pytest.raises(StunError, match="cookie"):
        parse_stun(bytes(data))


def test_message_type_with_top_bits_set_is_rejected() -> None:
    data = bytearray(aioice_binding_request())
    data[0] |= 0x80
    with pytest.raises(StunError):
        parse_stun(bytes(data))


def test_length_field_not_matching_the_datagram_is_rejected() -> None:
    with pytest.raises(StunError, match="length"):
        parse_stun(aioice_binding_request() + b"\x00\x00\x00\x00")


@settings(max_examples=examples(400), deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_give_stun_error_or_a_message(data: bytes) -> None:
    try:
        msg = parse_stun(data)
    except StunError:
        return
    assert isinstance(msg, stun.StunMessage)
    verify_fingerprint(data, msg)
    verify_integrity(data, msg, PASSWORD)


@settings(max_examples=examples(400), deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40)), max_size=6),
    st.binary(min_size=0, max_size=24),
)
def test_random_attributes_behind_a_valid_header_give_stun_error_or_a_message(
    attributes: list[tuple[int, bytes]], tail: bytes
) -> None:
    body = b"".join(
        struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) % 4)
        for kind, value in attributes
    )
    body += tail
    data = struct.pack("!HHI", BINDING_REQUEST, len(body), stun.MAGIC_COOKIE) + TRANSACTION_ID
    try:
        msg = parse_stun(data + body)
    except StunError:
        return
    assert msg.message_type == BINDING_REQUEST
    verify_fingerprint(data + body, msg)
    verify_integrity(data + body, msg, PASSWORD)


@given(
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.integers(0, 65535),
    st.binary(min_size=12, max_size=12),
)
def test_xor_mapped_address_of_any_address_decodes_in_aioice(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, transaction_id: bytes
) -> None:
    value = xor_mapped_address(str(address), port, transaction_id)
    host, decoded_port = aioice_stun.unpack_xor_address(value, transaction_id)
    assert (ipaddress.ip_address(host), decoded_port) == (address, port)


def test_xor_mapped_address_leaves_out_an_ipv6_zone_and_refuses_non_addresses() -> None:
    scoped = xor_mapped_address("fe80::1%eth0", 9, TRANSACTION_ID)
    assert scoped == xor_mapped_address("fe80::1", 9, TRANSACTION_ID)
    for host in ("", "localhost", "1.2.3", "1.2.3.4.5", "::g", "%eth0"):
        with pytest.raises(ValueError, match="not an IP address"):
            xor_mapped_address(host, 9, TRANSACTION_ID)
