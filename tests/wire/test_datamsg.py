"""Tests for the control and file channel messages (sfu/wire/datamsg.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.wire.datamsg import (
    MAX_CHUNK,
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
            assert exc.code in {"bad_json", "bad_message", "unknown_type", "too_large"}


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
