"""Tests for sfu.proto.ice: the ICE-lite responder, fed with aioice's binding requests."""

from __future__ import annotations

import pytest
from aioice import stun as aioice_stun

from sfu.proto.ice import IceCheck, IceCredentials, answer_binding_request
from sfu.wire import stun

LOCAL = IceCredentials("LoCaLuF1", "abcdefghijklmnopqrstuvwx")
REMOTE_UFRAG = "rEm0"
ADDR = ("127.0.0.1", 54321)


def credentials_for(ufrag: str) -> IceCredentials | None:
    return LOCAL if ufrag == LOCAL.ufrag else None


def request(
    username: str | None = f"{LOCAL.ufrag}:{REMOTE_UFRAG}",
    password: str | None = LOCAL.pwd,
    use_candidate: bool = False,
    message_class: aioice_stun.Class = aioice_stun.Class.REQUEST,
    fingerprint: bool = True,
) -> bytes:
    msg = aioice_stun.Message(aioice_stun.Method.BINDING, message_class)
    if username is not None:
        msg.attributes["USERNAME"] = username
    msg.attributes["PRIORITY"] = 1845501695
    msg.attributes["ICE-CONTROLLING"] = 42
    if use_candidate:
        msg.attributes["USE-CANDIDATE"] = None
    if password is not None:
        msg.add_message_integrity(password.encode())
        if not fingerprint:
            del msg.attributes["FINGERPRINT"]
    elif fingerprint:
        msg.add_fingerprint()
    return bytes(msg)


def answer(data: bytes, addr: tuple[str, int] = ADDR) -> IceCheck | None:
    return answer_binding_request(data, stun.parse_stun(data), addr, credentials_for)


def test_valid_request_gets_a_check_with_both_ufrags() -> None:
    check = answer(request())
    assert check is not None
    assert check.local_ufrag == LOCAL.ufrag
    assert check.remote_ufrag == REMOTE_UFRAG
    assert not check.nominated


def test_valid_request_without_fingerprint_is_still_answered() -> None:
    assert answer(request(fingerprint=False)) is not None


def test_use_candidate_marks_the_check_nominated() -> None:
    check = answer(request(use_candidate=True))
    assert check is not None and check.nominated


def test_response_is_a_binding_success_with_the_same_transaction_id() -> None:
    data = request()
    check = answer(data)
    assert check is not None
    response = aioice_stun.parse_message(check.response)  # raises on a bad FINGERPRINT
    assert response.message_method == aioice_stun.Method.BINDING
    assert response.message_class == aioice_stun.Class.RESPONSE
    assert response.transaction_id == aioice_stun.parse_message(data).transaction_id


def test_response_is_signed_with_the_local_password() -> None:
    check = answer(request())
    assert check is not None
    response = aioice_stun.parse_message(check.response)
    assert response.check_message_integrity(LOCAL.pwd.encode())
    assert "FINGERPRINT" in response.attributes


@pytest.mark.parametrize("addr", [("127.0.0.1", 54321), ("10.1.2.3", 9), ("::1", 61000)])
def test_xor_mapped_address_in_response_equals_the_senders_address(
    addr: tuple[str, int],
) -> None:
    check = answer(request(), addr)
    assert check is not None
    response = aioice_stun.parse_message(check.response)
    assert response.attributes["XOR-MAPPED-ADDRESS"] == addr


def test_wrong_password_gets_no_answer() -> None:
    assert answer(request(password="x" * 24)) is None


def test_unknown_local_ufrag_gets_no_answer() -> None:
    assert answer(request(username=f"someoneElse:{REMOTE_UFRAG}")) is None


def test_request_without_message_integrity_gets_no_answer() -> None:
    assert answer(request(password=None)) is None


def test_request_without_username_gets_no_answer() -> None:
    assert answer(request(username=None)) is None


def test_username_without_colon_gets_no_answer() -> None:
    assert answer(request(username=LOCAL.ufrag)) is None


def test_binding_indication_with_valid_credentials_gets_no_answer() -> None:
    assert answer(request(message_class=aioice_stun.Class.INDICATION)) is None


def test_binding_indication_without_credentials_gets_no_answer() -> None:
    data = request(username=None, password=None, message_class=aioice_stun.Class.INDICATION)
    assert answer(data) is None


def test_binding_success_response_gets_no_answer() -> None:
    assert answer(request(message_class=aioice_stun.Class.RESPONSE)) is None


def test_request_with_corrupted_fingerprint_gets_no_answer() -> None:
    data = bytearray(request())
    data[-1] ^= 0xFF
    assert answer(bytes(data)) is None


def test_generated_credentials_are_long_enough_and_distinct() -> None:
    first, second = IceCredentials.generate(), IceCredentials.generate()
    # RFC 8445 5.3: >= 24 bits of ufrag and >= 128 bits of password, ice-chars only.
    assert len(first.ufrag) >= 4 and len(first.pwd) >= 22
    assert first.ufrag.isalnum() and first.pwd.isalnum()
    assert first != second
