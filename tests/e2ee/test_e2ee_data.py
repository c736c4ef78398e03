"""End-to-end encrypted chat and files, the Python side (docs/E2EE.md, "Chat and
files"): a data key apart from the frame key, sealed chat bound to its addressee,
sealed file offers and chunks bound to their transfer and place."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.loadgen.e2ee import (
    FILE_TID_BYTES,
    MAX_SEALED_CHAT_BYTES,
    SEALED_CHUNK_PLAIN,
    TAG_BYTES,
    BadSealed,
    DecryptFailed,
    ReceiverKeyring,
    SenderKey,
    SenderKeys,
    StaleKey,
    UnknownKey,
    b64decode,
    b64encode,
    chat_context,
    derive_data_key_salt,
    derive_key_salt,
    encode_header,
    file_chunk_context,
    file_offer_context,
    open_chat,
    open_file_offer,
    parse_header,
    seal_chat,
    seal_file,
    sealed_chunk_count,
    sealed_file_size,
)
from sfu.wire.datamsg import FileOffer, parse_file_message, sealed_size_bounds
from tests.fuzzing import examples

MIME = "application/pdf"


def pair(now: float = 0.0) -> tuple[SenderKeys, ReceiverKeyring]:
    keys = SenderKeys(now)
    keyring = ReceiverKeyring()
    keyring.add_key(keys.current.kid, keys.current.base_key, now)
    return keys, keyring


def test_data_key_and_salt_differ_from_the_frame_key_and_salt() -> None:
    base = bytes(range(16))
    for kid in (0, 1, 2**40):
        frame_key, frame_salt = derive_key_salt(kid, base)
        data_key, data_salt = derive_data_key_salt(kid, base)
        assert data_key != frame_key and data_salt != frame_salt
        assert (len(data_key), len(data_salt)) == (16, 12)
    assert derive_data_key_salt(0, base) != derive_data_key_salt(1, base)


def test_frames_and_data_under_one_key_share_a_ctr_but_never_a_nonce() -> None:
    key = SenderKey.generate(3)
    frame = key.encrypt(b"same plaintext")
    data = key.seal_data(b"same plaintext", b"")
    # Both carry (KID 3, CTR 0): the counters are separate, the keys and salts too.
    assert parse_header(frame)[:2] == parse_header(data)[:2] == (3, 0)
    assert frame != data
    keyring = ReceiverKeyring()
    keyring.add_key(3, key.base_key, 0.0)
    with pytest.raises(DecryptFailed):
        keyring.decrypt(data, b"", 0.0)  # data does not open as a frame
    with pytest.raises(DecryptFailed):
        keyring.open_data(frame, b"", 0.0)  # nor a frame as data
    assert keyring.open_data(data, b"", 0.0)[0] == b"same plaintext"


def test_a_sealed_chat_opens_for_its_sender_and_addressee_only() -> None:
    keys, keyring = pair()
    sealed = seal_chat(keys, "meet at 10 ✓", None, 0.0)
    assert "meet" not in sealed
    assert open_chat(keyring, sealed, None, 0.0) == "meet at 10 ✓"
    # Bound to its addressee: a room message does not pass as a direct one, or back.
    with pytest.raises(DecryptFailed):
        open_chat(keyring, sealed, "bob", 0.0)
    direct = seal_chat(keys, "psst", "bob", 0.0)
    with pytest.raises(DecryptFailed):
        open_chat(keyring, direct, None, 0.0)
    assert open_chat(keyring, direct, "bob", 0.0) == "psst"
    # Somebody else's keyring (the server re-attributing it) has no such key, or the wrong one.
    other = ReceiverKeyring()
    with pytest.raises(UnknownKey):
        open_chat(other, sealed, None, 0.0)
    other.add_key(keys.current.kid, SenderKey.generate(0).base_key, 0.0)
    with pytest.raises(DecryptFailed):
        open_chat(other, sealed, None, 0.0)


def test_chat_size_is_bounded_and_ctrs_advance() -> None:
    keys, _ = pair()
    with pytest.raises(ValueError):
        seal_chat(keys, "", None, 0.0)
    with pytest.raises(ValueError):
        seal_chat(keys, "x" * (MAX_SEALED_CHAT_BYTES + 1), None, 0.0)
    most = b64decode(seal_chat(keys, "é" * (MAX_SEALED_CHAT_BYTES // 2), None, 0.0))
    assert len(most) == MAX_SEALED_CHAT_BYTES + 1 + TAG_BYTES
    again = b64decode(seal_chat(keys, "x", None, 0.0))
    assert parse_header(again)[1] == 1


def test_a_chat_that_is_not_utf8_is_refused() -> None:
    keys, keyring = pair()
    sealed = keys.current.seal_data(b"\xff\xfe", chat_context(None))
    with pytest.raises(BadSealed):
        open_chat(keyring, b64encode(sealed), None, 0.0)


def test_a_sealed_file_round_trips_and_its_offer_passes_the_sfu() -> None:
    keys, keyring = pair()
    data = bytes(range(256)) * 200  # 51200 bytes: four chunks
    outgoing = seal_file(keys, "plan.pdf", data, MIME, 0.0)
    offer = outgoing.offer("f1", to="bob")
    parsed = parse_file_message(json.dumps(offer))
    assert isinstance(parsed, FileOffer)
    assert (parsed.sealed, parsed.plain_size, parsed.size, parsed.to) == (
        outgoing.sealed, len(data), outgoing.size, "bob")  # fmt: skip
    chunks = outgoing.chunks(data)
    assert len(chunks) == sealed_chunk_count(len(data)) == 4
    assert sum(map(len, chunks)) == outgoing.size
    incoming = open_file_offer(keyring, outgoing.sealed, len(data), MIME, 0.0)
    assert (incoming.name, len(incoming.tid)) == ("plan.pdf", FILE_TID_BYTES)
    assert incoming.sha256 == hashlib.sha256(data).hexdigest()
    assert b"".join(incoming.open_chunk(i, c) for i, c in enumerate(chunks)) == data
    # The next data CTR comes after everything the file reserved.
    assert keys.current.next_data_ctr == 1 + len(chunks)


def test_an_empty_file_has_an_offer_and_no_chunks() -> None:
    keys, keyring = pair()
    outgoing = seal_file(keys, "empty.txt", b"", "text/plain", 0.0)
    assert outgoing.size == 0 and outgoing.chunks(b"") == []
    assert open_file_offer(keyring, outgoing.sealed, 0, "text/plain", 0.0).name == "empty.txt"


def test_the_offer_is_bound_to_its_clear_size_and_type() -> None:
    keys, keyring = pair()
    outgoing = seal_file(keys, "a.png", b"x" * 100, "image/png", 0.0)
    with pytest.raises(DecryptFailed):
        open_file_offer(keyring, outgoing.sealed, 100, "text/html", 0.0)
    with pytest.raises(DecryptFailed):
        open_file_offer(keyring, outgoing.sealed, 99, "image/png", 0.0)


def test_chunks_cannot_be_reordered_or_spliced_between_transfers() -> None:
    keys, keyring = pair()
    first_data = b"A" * (SEALED_CHUNK_PLAIN * 2)
    second_data = b"B" * (SEALED_CHUNK_PLAIN * 2)
    first = seal_file(keys, "a.bin", first_data, MIME, 0.0)
    second = seal_file(keys, "b.bin", second_data, MIME, 0.0)
    first_in = open_file_offer(keyring, first.sealed, len(first_data), MIME, 0.0)
    first_chunks = first.chunks(first_data)
    second_chunks = second.chunks(second_data)
    with pytest.raises(DecryptFailed):
        first_in.open_chunk(0, first_chunks[1])  # reordered
    with pytest.raises(DecryptFailed):
        first_in.open_chunk(0, second_chunks[0])  # from another transfer
    # Even a chunk made to carry the expected CTR fails on the transfer id in its context.
    forged_ctr = first.offer_ctr + 1
    forged = keys.current.data_key.seal(forged_ctr, file_chunk_context(second.tid, 0), b"B" * 10)
    with pytest.raises(DecryptFailed):
        first_in.open_chunk(0, forged)
    tampered = bytearray(first_chunks[0])
    tampered[-1] ^= 1
    with pytest.raises(DecryptFailed):
        first_in.open_chunk(0, bytes(tampered))


def test_a_transfer_keeps_its_key_while_the_sender_rotates() -> None:
    keys, keyring = pair()
    data = b"z" * (SEALED_CHUNK_PLAIN + 5)
    outgoing = seal_file(keys, "z.bin", data, MIME, 0.0)
    incoming = open_file_offer(keyring, outgoing.sealed, len(data), MIME, 0.0)
    new_key = keys.rotate(1.0)
    keyring.add_key(new_key.kid, new_key.base_key, 1.0)
    chat = seal_chat(keys, "after", None, 10.0)  # under the new key: the old one retires
    assert open_chat(keyring, chat, None, 10.0) == "after"
    keyring.expire(100.0)
    assert keyring.kids == [new_key.kid]
    chunks = outgoing.chunks(data)
    assert b"".join(incoming.open_chunk(i, c) for i, c in enumerate(chunks)) == data
    # A new offer under the retired key no longer opens.
    stale = seal_file(SenderKeysAt(outgoing.key), "late.bin", b"x", MIME, 100.0)
    with pytest.raises(UnknownKey):
        open_file_offer(keyring, stale.sealed, 1, MIME, 100.0)
    with pytest.raises(StaleKey):
        keyring.add_key(outgoing.key.kid, outgoing.key.base_key, 100.0)


class SenderKeysAt(SenderKeys):
    """A SenderKeys stuck on one key (to make what a late sender would send)."""

    def __init__(self, key: SenderKey) -> None:
        super().__init__(0.0)
        self.current = key


def test_a_manifest_without_its_fields_is_refused() -> None:
    keys, keyring = pair()
    for manifest in (b"not json", b"{}", json.dumps({"name": "../x", "sha256": "0" * 64,
                     "tid": b64encode(bytes(16))}).encode()):  # fmt: skip
        sealed = keys.current.seal_data(manifest, file_offer_context(1, MIME))
        with pytest.raises(BadSealed):
            open_file_offer(keyring, b64encode(sealed), 1, MIME, 0.0)


@settings(max_examples=examples(200))
@given(st.integers(0, 2**40), st.integers(0, 2**40), st.integers(0, SEALED_CHUNK_PLAIN * 70))
def test_the_sealed_size_is_exact_and_within_what_the_sfu_allows(
    kid: int, offer_ctr: int, plain: int
) -> None:
    size = sealed_file_size(kid, offer_ctr, plain)
    least, most = sealed_size_bounds(plain)
    assert least <= size <= most
    chunks = sealed_chunk_count(plain)
    headers = sum(len(encode_header(kid, offer_ctr + 1 + i)) for i in range(chunks))
    assert size == plain + headers + chunks * TAG_BYTES
