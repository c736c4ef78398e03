"""Tests for the control and file channel messages (sfu/wire/datamsg.py)."""

from __future__ import annotations

import base64
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.wire.datamsg import (
    MAX_CHUNK,
    MAX_SEALED_CHAT_CHARS,
    MAX_SEALED_OFFER_CHARS,
    SEALED_CHUNK_PLAIN,
    Chat,
    DataMessageError,
    FileCancel,
    FileOffer,
    FileReceived,
    Hand,
    Reaction,
    chunk,
    parse_chunk,
    parse_control,
    parse_file_message,
    sealed_header_length,
    sealed_size_bounds,
)
from tests.fuzzing import examples

DIGEST = "ab" * 32


def test_control_messages_parse() -> None:
    assert parse_control('{"type": "chat", "body": "hi", "id": "m-1", "to": "bob"}') == Chat(
        "hi", "bob", "m-1"
    )
    assert parse_control('{"type": "reaction", "emoji": "+1"}') == Reaction("+1")
    assert parse_control('{"type": "hand", "raised": false}') == Hand(False)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{", "bad_json"),
        ("[]", "bad_message"),
        ('{"body": "x"}', "bad_message"),
        ('{"type": "warp"}', "unknown_type"),
        ('{"type": "chat"}', "bad_message"),
        ('{"type": "chat", "body": ""}', "bad_message"),
        ('{"type": "chat", "body": 5}', "bad_message"),
        ('{"type": "chat", "body": "a\\u0000b"}', "bad_message"),
        ('{"type": "chat", "body": "x", "id": "no spaces"}', "bad_message"),
        ('{"type": "chat", "body": "x", "to": ""}', "bad_message"),
        (json.dumps({"type": "chat", "body": "x" * 8001}), "too_large"),
        (json.dumps({"type": "chat", "body": "x" * 20000}), "too_large"),
        ('{"type": "reaction", "emoji": "' + "x" * 17 + '"}', "too_large"),
        ('{"type": "hand", "raised": "yes"}', "bad_message"),
    ],
)
def test_bad_control_messages_are_named(text: str, code: str) -> None:
    with pytest.raises(DataMessageError) as caught:
        parse_control(text)
    assert caught.value.code == code


def test_file_messages_parse() -> None:
    offer = parse_file_message(
        json.dumps(
            {
                "type": "file_offer",
                "id": "f1",
                "name": "a b.pdf",
                "size": 10,
                "mime": "application/pdf",
                "sha256": DIGEST,
            }
        )  # fmt: skip
    )
    assert offer == FileOffer("f1", "a b.pdf", 10, "application/pdf", DIGEST)
    assert parse_file_message('{"type": "file_received", "transfer": 3, "ok": true}') == (
        FileReceived(3, True)
    )
    assert parse_file_message('{"type": "file_cancel", "transfer": 9}') == FileCancel(9)


@pytest.mark.parametrize(
    "change",
    [
        {"name": "../etc/passwd"},
        {"name": "a\\b"},
        {"name": ".."},
        {"size": -1},
        {"size": True},
        {"size": 2**53},
        {"mime": "pdf"},
        {"mime": "Application/PDF"},
        {"sha256": DIGEST.upper()},
        {"sha256": "ab"},
        {"id": ""},
    ],
)
def test_bad_file_offers_are_refused(change: dict[str, object]) -> None:
    offer = {"type": "file_offer", "id": "f1", "name": "a.pdf", "size": 10,
             "mime": "application/pdf", "sha256": DIGEST, **change}  # fmt: skip
    with pytest.raises(DataMessageError):
        parse_file_message(json.dumps(offer))


@pytest.mark.parametrize("transfer", [0, -1, 2**32, True, "3", None])
def test_transfer_numbers_are_checked(transfer: object) -> None:
    with pytest.raises(DataMessageError):
        parse_file_message(json.dumps({"type": "file_cancel", "transfer": transfer}))


def test_chunks_round_trip_and_are_bounded() -> None:
    assert parse_chunk(chunk(7, b"abc")) == (7, b"abc")
    assert parse_chunk(chunk(2**32 - 1, b"x" * MAX_CHUNK))[0] == 2**32 - 1
    for bad in (b"", b"\x00\x00\x00\x07", chunk(1, b"x" * (MAX_CHUNK + 1))):
        with pytest.raises(DataMessageError):
            parse_chunk(bad)


@settings(max_examples=examples(300))
@given(st.text(max_size=300))
def test_arbitrary_text_only_raises_data_message_error(text: str) -> None:
    for parse in (parse_control, parse_file_message):
        try:
            parse(text)
        except DataMessageError as exc:
            assert exc.code in {"bad_json", "bad_message", "unknown_type", "too_large",
                                "bad_sealed"}  # fmt: skip


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),  # fmt: skip
    max_leaves=12,
)


@settings(max_examples=examples(300))
@given(
    st.sampled_from(["chat", "reaction", "hand", "file_offer", "file_received", "file_cancel"]),
    st.dictionaries(
        st.sampled_from(
            [
                "body",
                "to",
                "id",
                "emoji",
                "raised",
                "name",
                "size",
                "mime",
                "sha256",
                "transfer",
                "ok",
                "sealed",
                "plain_size",
                "resume",
            ]
        ),  # fmt: skip
        json_values,
        max_size=8,
    ),
)
def test_arbitrary_fields_only_raise_data_message_error(
    kind: str, fields: dict[str, object]
) -> None:
    text = json.dumps({"type": kind, **fields})
    for parse in (parse_control, parse_file_message):
        try:
            parse(text)
        except DataMessageError:
            pass


@settings(max_examples=examples(200))
@given(st.binary(max_size=MAX_CHUNK + 10))
def test_arbitrary_chunks_only_raise_data_message_error(data: bytes) -> None:
    try:
        number, payload = parse_chunk(data)
    except DataMessageError:
        return
    assert chunk(number, payload) == data


# ---------------------------------------------------------------- sealed (E2EE) forms


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# An SFrame ciphertext as a sender makes it: header (KID 0, CTR 3), 5 bytes, the tag.
SEALED = b64(b"\x03" + b"\xaa" * 5 + b"\x00" * 16)


def sealed_offer(**change: object) -> str:
    offer = {"type": "file_offer", "id": "f1", "size": 1000 + 17, "plain_size": 1000,
             "mime": "application/pdf", "sealed": SEALED, **change}  # fmt: skip
    return json.dumps({k: v for k, v in offer.items() if v is not None})


def test_a_sealed_chat_parses_without_a_body() -> None:
    text = json.dumps({"type": "chat", "sealed": SEALED, "id": "m1", "to": "bob"})
    assert parse_control(text) == Chat(None, "bob", "m1", SEALED)


def test_a_sealed_offer_parses_with_both_sizes() -> None:
    offer = parse_file_message(sealed_offer())
    assert offer == FileOffer("f1", None, 1017, "application/pdf", None, None, SEALED, 1000)
    # The room's size limit applies to the file, not to its encryption.
    assert offer.file_bytes == 1000
    plain = parse_file_message(json.dumps({"type": "file_offer", "id": "f2", "name": "a.pdf",
                                           "size": 10, "mime": "application/pdf",
                                           "sha256": DIGEST}))  # fmt: skip
    assert plain.file_bytes == 10 and plain.sealed is None


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"sealed": SEALED, "body": "hi"}, "bad_message"),
        ({"sealed": None}, "bad_sealed"),
        ({"sealed": ""}, "bad_sealed"),
        ({"sealed": 12}, "bad_sealed"),
        ({"sealed": SEALED + "="}, "bad_sealed"),  # padded
        ({"sealed": SEALED.replace("q", "+")}, "bad_sealed"),  # base64, not base64url
        ({"sealed": "A" * 29}, "bad_sealed"),  # length 1 mod 4: no byte string
        ({"sealed": "AAAAAAAAAAAAAAAAAAAAAAB"}, "bad_sealed"),  # stray bits: not canonical
        ({"sealed": b64(b"\x00" * 16)}, "bad_sealed"),  # shorter than header and tag
        ({"sealed": b64(b"\xff" + b"\x00" * 16)}, "bad_sealed"),  # header of 17 bytes, no tag
        ({"sealed": "A" * (MAX_SEALED_CHAT_CHARS + 4)}, "too_large"),
    ],
)
def test_bad_sealed_chats_are_named(fields: dict[str, object], code: str) -> None:
    with pytest.raises(DataMessageError) as caught:
        parse_control(json.dumps({"type": "chat", **fields}))
    assert caught.value.code == code


def test_the_largest_sealed_chat_fits_the_control_channel() -> None:
    most = b64(b"\x03" + b"\x00" * (MAX_SEALED_CHAT_CHARS * 3 // 4 - 1))
    assert len(most) == MAX_SEALED_CHAT_CHARS
    assert parse_control(json.dumps({"type": "chat", "sealed": most})).sealed == most


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"name": "a.pdf"}, "bad_message"),  # the name belongs inside "sealed"
        ({"sha256": DIGEST}, "bad_message"),
        ({"plain_size": None}, "bad_message"),
        ({"plain_size": -1}, "bad_message"),
        ({"plain_size": True}, "bad_message"),
        ({"size": 1000 + 16}, "bad_message"),  # less than the least overhead
        ({"size": 1000 + 34}, "bad_message"),  # more than the most
        ({"size": None}, "bad_message"),
        ({"mime": "PDF"}, "bad_message"),
        ({"sealed": "not base64!"}, "bad_sealed"),
        ({"sealed": "A" * (MAX_SEALED_OFFER_CHARS + 4)}, "too_large"),
        ({"id": "no spaces"}, "bad_message"),
    ],
)
def test_bad_sealed_offers_are_named(change: dict[str, object], code: str) -> None:
    with pytest.raises(DataMessageError) as caught:
        parse_file_message(sealed_offer(**change))
    assert caught.value.code == code


def test_a_clear_offer_cannot_carry_a_plain_size() -> None:
    offer = {"type": "file_offer", "id": "f1", "name": "a.pdf", "size": 10, "plain_size": 10,
             "mime": "application/pdf", "sha256": DIGEST}  # fmt: skip
    with pytest.raises(DataMessageError) as caught:
        parse_file_message(json.dumps(offer))
    assert caught.value.code == "bad_message"


def test_sealed_size_bounds_follow_the_chunking() -> None:
    assert sealed_size_bounds(0) == (0, 0)
    assert sealed_size_bounds(1) == (1 + 17, 1 + 33)
    assert sealed_size_bounds(SEALED_CHUNK_PLAIN) == (SEALED_CHUNK_PLAIN + 17,
                                                      SEALED_CHUNK_PLAIN + 33)  # fmt: skip
    assert sealed_size_bounds(SEALED_CHUNK_PLAIN + 1)[0] == SEALED_CHUNK_PLAIN + 1 + 34
    # Every sealed chunk fits a chunk message, even with the longest header.
    assert SEALED_CHUNK_PLAIN + 33 <= MAX_CHUNK


@settings(max_examples=examples(300))
@given(st.binary(max_size=80))
def test_sealed_values_parse_exactly_when_they_hold_a_header_and_a_tag(raw: bytes) -> None:
    text = json.dumps({"type": "chat", "sealed": b64(raw)})
    try:
        chat = parse_control(text)
    except DataMessageError as exc:
        assert exc.code == "bad_sealed"
        assert not raw or len(raw) < sealed_header_length(raw) + 16
        return
    assert isinstance(chat, Chat) and chat.sealed == b64(raw) and chat.body is None
    assert len(raw) >= sealed_header_length(raw) + 16


@settings(max_examples=examples(300))
@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=!",
               max_size=60))  # fmt: skip
def test_arbitrary_sealed_text_only_raises_named_errors(sealed: str) -> None:
    for parse, text in (
        (parse_control, json.dumps({"type": "chat", "sealed": sealed})),
        (parse_file_message, sealed_offer(sealed=sealed)),
    ):
        try:
            parse(text)
        except DataMessageError as exc:
            assert exc.code in {"bad_sealed", "too_large"}, (sealed, exc.code)


@settings(max_examples=examples(300))
@given(st.integers(0, 2**40), st.integers(-100, 100_000))
def test_sealed_offer_sizes_are_accepted_only_within_the_bounds(plain: int, extra: int) -> None:
    text = sealed_offer(plain_size=plain, size=plain + extra)
    least, most = sealed_size_bounds(plain)
    try:
        offer = parse_file_message(text)
    except DataMessageError as exc:
        assert exc.code == "bad_message"
        assert not least <= plain + extra <= most
        return
    assert isinstance(offer, FileOffer) and least <= offer.size <= most
    assert most - least == 16 * math.ceil(plain / SEALED_CHUNK_PLAIN)


# ---------------------------------------------------------------- resuming a transfer


def test_a_resume_offer_parses_clear_and_sealed() -> None:
    clear = {"type": "file_offer", "id": "f1", "name": "a.pdf", "size": 10,
             "mime": "application/pdf", "sha256": DIGEST}  # fmt: skip
    assert parse_file_message(json.dumps({**clear, "resume": True})).resume is True
    assert parse_file_message(json.dumps({**clear, "resume": False})).resume is False
    assert parse_file_message(json.dumps(clear)).resume is False
    sealed = parse_file_message(sealed_offer(resume=True))
    assert sealed.resume is True and sealed.sealed == SEALED


@pytest.mark.parametrize("flag", [1, 0, "true", [], {}, 1.0])
def test_resume_must_be_true_or_false(flag: object) -> None:
    for text in (
        json.dumps({"type": "file_offer", "id": "f1", "name": "a.pdf", "size": 10,
                    "mime": "application/pdf", "sha256": DIGEST, "resume": flag}),
        sealed_offer(resume=flag),
    ):  # fmt: skip
        with pytest.raises(DataMessageError) as caught:
            parse_file_message(text)
        assert caught.value.code == "bad_message" and "resume" in caught.value.message


def test_resume_null_is_refused() -> None:
    text = json.dumps({"type": "file_offer", "id": "f1", "name": "a.pdf", "size": 10,
                       "mime": "application/pdf", "sha256": DIGEST, "resume": None})  # fmt: skip
    with pytest.raises(DataMessageError):
        parse_file_message(text)


@settings(max_examples=examples(300))
@given(json_values)
def test_arbitrary_resume_values_parse_only_as_booleans(flag: object) -> None:
    text = json.dumps({"type": "file_offer", "id": "f1", "name": "a.pdf", "size": 10,
                       "mime": "application/pdf", "sha256": DIGEST, "resume": flag})  # fmt: skip
    try:
        offer = parse_file_message(text)
    except DataMessageError as exc:
        assert exc.code == "bad_message" and not isinstance(flag, bool)
        return
    assert isinstance(offer, FileOffer) and offer.resume is flag
