"""End-to-end media encryption, the Python side: SFrame frames (RFC 9605 test vectors
included), the per-recipient key wrap, the key schedule and safety numbers."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.loadgen.e2ee import (
    BASE_KEY_BYTES,
    TAG_BYTES,
    WRAP_BLOB_BYTES,
    BadFrame,
    BadPublicKey,
    DecryptFailed,
    E2EEError,
    FrameKey,
    IdentityKeyPair,
    KeyUnwrapFailed,
    MalformedHeader,
    ReceiverKeyring,
    SenderKey,
    SenderKeys,
    StaleKey,
    UnknownKey,
    UnsupportedCodec,
    b64decode,
    b64encode,
    clear_prefix_len,
    derive_key_salt,
    encode_header,
    hello_message,
    key_message,
    parse_header,
    safety_number,
    sframe_labels,
    sframe_nonce,
    unwrap_sender_key,
    wrap_sender_key,
)
from tests.fuzzing import examples

# RFC 9605 Appendix C.1: (kid, ctr, encoded header), a selection of the published list.
RFC9605_HEADERS = [
    (0x0, 0x0, "00"),
    (0x0, 0x1, "01"),
    (0x0, 0xFF, "08ff"),
    (0x0, 0x100, "090100"),
    (0x0, 0xFFFFFF, "0affffff"),
    (0x0, 0xFFFFFFFFFFFFFFFF, "0fffffffffffffffff"),
    (0x1, 0x0, "10"),
    (0xFF, 0x0, "80ff"),
    (0xFF, 0xFF, "88ffff"),
    (0x100, 0x10000, "9a0100010000"),
    (0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF, "ffffffffffffffffffffffffffffffffff"),
]

# RFC 9605 Appendix C.3, cipher suite 0x0004 (AES_128_GCM_SHA256_128).
GCM_KID = 0x123
GCM_CTR = 0x4567
GCM = {
    "base_key": "000102030405060708090a0b0c0d0e0f",
    "sframe_key_label": "534672616d6520312e3020536563726574206b65792000000000000001230004",
    "sframe_salt_label": "534672616d6520312e30205365637265742073616c742000000000000001230004",
    "sframe_key": "d34f547f4ca4f9a7447006fe7fcbf768",
    "sframe_salt": "75234edefe07819026751816",
    "metadata": "4945544620534672616d65205747",
    "nonce": "75234edefe07819026755d71",
    "pt": "64726166742d696574662d736672616d652d656e63",
    "ct": "9901234567b7412c2513a1b66dbb48841bbaf17f598751176ad847681a69c6d0b091c07018ce4adb34eb",
}

# RFC 7748 section 6.1.
X25519_ALICE_PRIVATE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
X25519_ALICE_PUBLIC = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
X25519_BOB_PRIVATE = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
X25519_BOB_PUBLIC = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
X25519_SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"

VP8_KEYFRAME = bytes.fromhex("5003009d012a8002e001") + bytes(range(200))
VP8_DELTA = bytes.fromhex("d10200") + bytes(range(90))
OPUS_FRAME = bytes.fromhex("fc") + bytes(range(60))
FRAMES = [("opus", OPUS_FRAME, 0), ("vp8", VP8_KEYFRAME, 10), ("vp8", VP8_DELTA, 3)]
SAFETY_NUMBER_SHAPE = re.compile(r"^\d{5}( \d{5}){11}$")


def keyring_for(*keys: SenderKey, now: float = 0.0) -> ReceiverKeyring:
    ring = ReceiverKeyring()
    for key in keys:
        ring.add_key(key.kid, key.base_key, now)
    return ring


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# ---------------------------------------------------------------- RFC 9605 vectors


@pytest.mark.parametrize(("kid", "ctr", "encoded"), RFC9605_HEADERS)
def test_header_encoding_matches_rfc9605_vectors(kid: int, ctr: int, encoded: str) -> None:
    assert encode_header(kid, ctr).hex() == encoded
    assert parse_header(bytes.fromhex(encoded)) == (kid, ctr, len(encoded) // 2)


def test_key_derivation_matches_rfc9605_gcm_vector() -> None:
    key_label, salt_label = sframe_labels(GCM_KID)
    assert key_label.hex() == GCM["sframe_key_label"]
    assert salt_label.hex() == GCM["sframe_salt_label"]
    key, salt = derive_key_salt(GCM_KID, bytes.fromhex(GCM["base_key"]))
    assert key.hex() == GCM["sframe_key"]
    assert salt.hex() == GCM["sframe_salt"]
    assert sframe_nonce(salt, GCM_CTR).hex() == GCM["nonce"]


def test_encryption_matches_rfc9605_gcm_vector() -> None:
    frame_key = FrameKey(GCM_KID, bytes.fromhex(GCM["base_key"]))
    sealed = frame_key.seal(GCM_CTR, bytes.fromhex(GCM["metadata"]), bytes.fromhex(GCM["pt"]))
    assert sealed.hex() == GCM["ct"]


def test_decryption_of_rfc9605_gcm_vector_gives_plaintext() -> None:
    ring = ReceiverKeyring()
    ring.add_key(GCM_KID, bytes.fromhex(GCM["base_key"]), now=0.0)
    plaintext = ring.decrypt(bytes.fromhex(GCM["ct"]), bytes.fromhex(GCM["metadata"]), now=0.0)
    assert plaintext.hex() == GCM["pt"]


@pytest.mark.parametrize(
    "encoded",
    [
        "",  # no config byte
        "80",  # KID length 1, no KID byte
        "0b0102",  # CTR length 4, 2 bytes
        "8007",  # KID 7 in an extended field: must be in the config byte
        "890001ff",  # CTR 0x1ff with a leading zero byte
    ],
)
def test_truncated_or_non_minimal_header_is_rejected(encoded: str) -> None:
    with pytest.raises(MalformedHeader):
        parse_header(bytes.fromhex(encoded))


# ---------------------------------------------------------------- frames


@pytest.mark.parametrize(("codec", "frame", "clear"), FRAMES)
def test_frame_round_trips_with_codec_prefix_in_clear(codec: str, frame: bytes, clear: int) -> None:
    key = SenderKey.generate(kid=3)
    encrypted = key.encrypt_frame(frame, codec)
    assert encrypted[:clear] == frame[:clear]
    assert encrypted[clear:] != frame[clear:]
    assert len(encrypted) == len(frame) + 1 + TAG_BYTES  # header is one byte for KID 3, CTR 0
    assert parse_header(encrypted[clear:])[:2] == (3, 0)
    assert keyring_for(key).decrypt_frame(encrypted, codec, now=0.0) == frame


def test_clear_prefix_follows_vp8_keyframe_bit_and_mime_names() -> None:
    assert clear_prefix_len("video/VP8", VP8_KEYFRAME) == 10
    assert clear_prefix_len("VP8", VP8_DELTA) == 3
    assert clear_prefix_len("audio/opus", OPUS_FRAME) == 0


@pytest.mark.parametrize("codec", ["video/H264", "H265", "AV1", "VP9"])
def test_unsupported_codec_is_refused(codec: str) -> None:
    with pytest.raises(UnsupportedCodec):
        SenderKey.generate(0).encrypt_frame(VP8_DELTA, codec)


def test_vp8_keyframe_shorter_than_its_prefix_is_refused() -> None:
    with pytest.raises(BadFrame):
        SenderKey.generate(0).encrypt_frame(VP8_KEYFRAME[:6], "vp8")


def test_empty_opus_frame_round_trips() -> None:
    key = SenderKey.generate(0)
    assert keyring_for(key).decrypt_frame(key.encrypt_frame(b"", "opus"), "opus", 0.0) == b""


def test_frame_under_another_base_key_with_same_kid_fails() -> None:
    encrypted = SenderKey.generate(kid=1).encrypt_frame(OPUS_FRAME, "opus")
    with pytest.raises(DecryptFailed):
        keyring_for(SenderKey.generate(kid=1)).decrypt_frame(encrypted, "opus", 0.0)


def test_frame_with_unknown_kid_fails() -> None:
    encrypted = SenderKey.generate(kid=2).encrypt_frame(OPUS_FRAME, "opus")
    with pytest.raises(UnknownKey):
        keyring_for(SenderKey.generate(kid=1)).decrypt_frame(encrypted, "opus", 0.0)


@pytest.mark.parametrize(
    ("codec", "frame", "index", "what"),
    [
        ("vp8", VP8_KEYFRAME, 4, "clear prefix"),
        ("vp8", VP8_KEYFRAME, 10, "header"),
        ("vp8", VP8_KEYFRAME, 11, "ciphertext"),
        ("vp8", VP8_KEYFRAME, -1, "tag"),
        ("opus", OPUS_FRAME, 0, "header"),
    ],
)
def test_any_altered_byte_fails_authentication(
    codec: str, frame: bytes, index: int, what: str
) -> None:
    key = SenderKey.generate(kid=0)
    ring = keyring_for(key)
    key.encrypt_frame(frame, codec)  # the altered header then names a CTR that was used
    encrypted = key.encrypt_frame(frame, codec)
    with pytest.raises((DecryptFailed, UnknownKey)):
        ring.decrypt_frame(flip(encrypted, index % len(encrypted)), codec, 0.0)


def test_truncated_frame_fails() -> None:
    key = SenderKey.generate(kid=0)
    encrypted = key.encrypt_frame(VP8_DELTA, "vp8")
    with pytest.raises(E2EEError):
        keyring_for(key).decrypt_frame(encrypted[:-1], "vp8", 0.0)
    with pytest.raises(BadFrame):
        keyring_for(key).decrypt_frame(encrypted[: 3 + TAG_BYTES], "vp8", 0.0)


def test_counter_advances_by_one_per_frame_and_nonces_never_repeat() -> None:
    key = SenderKey.generate(kid=0)
    ctrs = []
    for index in range(300):
        codec, frame, clear = FRAMES[index % len(FRAMES)]
        ctrs.append(parse_header(key.encrypt_frame(frame, codec)[clear:])[1])
    assert ctrs == list(range(300))
    _, salt = derive_key_salt(0, key.base_key)
    assert len({sframe_nonce(salt, ctr) for ctr in ctrs}) == 300


def test_identical_frames_give_different_ciphertexts() -> None:
    key = SenderKey.generate(kid=0)
    assert key.encrypt_frame(OPUS_FRAME, "opus") != key.encrypt_frame(OPUS_FRAME, "opus")


# ---------------------------------------------------------------- key schedule


def test_rotation_makes_next_kid_and_switches_after_activation_delay() -> None:
    keys = SenderKeys(now=0.0, activation_delay_s=1.0)
    ring = keyring_for(*keys.keys_to_share(0.0))
    new_key = keys.rotate(now=10.0)
    assert new_key.kid == 1
    assert [key.kid for key in keys.keys_to_share(10.0)] == [0, 1]
    ring.add_key(new_key.kid, new_key.base_key, 10.0)
    before = keys.encrypt_frame(OPUS_FRAME, "opus", now=10.5)
    after = keys.encrypt_frame(OPUS_FRAME, "opus", now=11.0)
    assert parse_header(before)[:2] == (0, 0)
    assert parse_header(after)[:2] == (1, 0)
    assert [key.kid for key in keys.keys_to_share(11.0)] == [1]
    assert ring.decrypt_frame(after, "opus", 11.0) == OPUS_FRAME
    assert ring.decrypt_frame(before, "opus", 11.1) == OPUS_FRAME


def test_rotation_during_a_rotation_replaces_the_pending_key() -> None:
    keys = SenderKeys(now=0.0, activation_delay_s=1.0)
    first = keys.rotate(now=5.0)
    second = keys.rotate(now=5.5)
    assert (first.kid, second.kid) == (1, 2)
    assert [key.kid for key in keys.keys_to_share(5.5)] == [0, 2]
    assert parse_header(keys.encrypt_frame(OPUS_FRAME, "opus", now=6.5))[0] == 2


def test_rotation_timer_fires_after_interval() -> None:
    keys = SenderKeys(now=100.0, rotation_interval_s=600.0)
    assert not keys.rotation_due(699.0)
    assert keys.rotation_due(700.0)
    keys.rotate(700.0)
    assert not keys.rotation_due(701.0)


def test_old_key_decodes_in_flight_frames_for_grace_then_is_retired() -> None:
    old, new = SenderKey.generate(0), SenderKey.generate(1)
    ring = ReceiverKeyring(grace_s=5.0)
    ring.add_key(0, old.base_key, 0.0)
    late = old.encrypt_frame(OPUS_FRAME, "opus")
    ring.add_key(1, new.base_key, 1.0)
    ring.decrypt_frame(new.encrypt_frame(OPUS_FRAME, "opus"), "opus", 2.0)
    assert ring.decrypt_frame(late, "opus", 6.9) == OPUS_FRAME
    with pytest.raises(UnknownKey):
        ring.decrypt_frame(late, "opus", 7.0)
    assert ring.kids == [1]


def test_old_key_is_kept_until_a_frame_under_the_new_one_arrives() -> None:
    old, new = SenderKey.generate(0), SenderKey.generate(1)
    ring = keyring_for(old, new)
    assert ring.decrypt_frame(old.encrypt_frame(OPUS_FRAME, "opus"), "opus", 1000.0) == OPUS_FRAME
    assert ring.kids == [0, 1]


def test_retired_key_cannot_be_added_again() -> None:
    old, new = SenderKey.generate(0), SenderKey.generate(1)
    ring = keyring_for(old, new)
    ring.decrypt_frame(new.encrypt_frame(OPUS_FRAME, "opus"), "opus", 0.0)
    ring.expire(100.0)
    with pytest.raises(StaleKey):
        ring.add_key(0, old.base_key, 100.0)


def test_second_key_under_a_held_kid_is_ignored() -> None:
    key = SenderKey.generate(4)
    ring = keyring_for(key)
    ring.add_key(4, bytes(BASE_KEY_BYTES), 0.0)
    assert ring.decrypt_frame(key.encrypt_frame(OPUS_FRAME, "opus"), "opus", 0.0) == OPUS_FRAME


# ---------------------------------------------------------------- identities and key wrap


def test_identity_matches_rfc7748_x25519_vector() -> None:
    alice = IdentityKeyPair.from_private_bytes(bytes.fromhex(X25519_ALICE_PRIVATE))
    bob = IdentityKeyPair.from_private_bytes(bytes.fromhex(X25519_BOB_PRIVATE))
    assert alice.public_key.hex() == X25519_ALICE_PUBLIC
    assert bob.public_key.hex() == X25519_BOB_PUBLIC
    assert alice.shared_secret(bob.public_key).hex() == X25519_SHARED
    assert bob.shared_secret(alice.public_key).hex() == X25519_SHARED


@pytest.fixture
def pair() -> tuple[IdentityKeyPair, IdentityKeyPair]:
    return IdentityKeyPair.generate(), IdentityKeyPair.generate()


def test_wrapped_key_opens_for_its_recipient(
    pair: tuple[IdentityKeyPair, IdentityKeyPair],
) -> None:
    alice, bob = pair
    key = SenderKey.generate(kid=9)
    blob = wrap_sender_key(alice, "alice", "bob", bob.public_key, key.kid, key.base_key)
    assert len(blob) == WRAP_BLOB_BYTES
    assert unwrap_sender_key(bob, "bob", "alice", alice.public_key, blob) == (9, key.base_key)


def test_wrapped_key_does_not_open_for_anyone_else(
    pair: tuple[IdentityKeyPair, IdentityKeyPair],
) -> None:
    alice, bob = pair
    carol = IdentityKeyPair.generate()
    blob = wrap_sender_key(alice, "alice", "bob", bob.public_key, 0, bytes(16))
    with pytest.raises(KeyUnwrapFailed):
        unwrap_sender_key(carol, "bob", "alice", alice.public_key, blob)
    with pytest.raises(KeyUnwrapFailed):
        unwrap_sender_key(alice, "alice", "bob", bob.public_key, blob)


@pytest.mark.parametrize(
    ("recipient_identity", "sender_identity", "claimed_sender"),
    [
        ("bob", "mallory", "alice"),  # the relay says someone else sent it
        ("carol", "alice", "alice"),  # delivered to a different identity string
        ("bob", "alice", "carol"),  # a different sender public key is claimed
    ],
)
def test_wrapped_key_opens_only_with_the_identities_it_was_made_for(
    pair: tuple[IdentityKeyPair, IdentityKeyPair],
    recipient_identity: str,
    sender_identity: str,
    claimed_sender: str,
) -> None:
    alice, bob = pair
    carol = IdentityKeyPair.generate()
    blob = wrap_sender_key(alice, "alice", "bob", bob.public_key, 0, bytes(16))
    sender_public = alice.public_key if claimed_sender == "alice" else carol.public_key
    with pytest.raises(KeyUnwrapFailed):
        unwrap_sender_key(bob, recipient_identity, sender_identity, sender_public, blob)


@pytest.mark.parametrize("index", [0, 1, 13, 20, WRAP_BLOB_BYTES - 1])
def test_altered_wrapped_key_fails(
    pair: tuple[IdentityKeyPair, IdentityKeyPair], index: int
) -> None:
    alice, bob = pair
    blob = wrap_sender_key(alice, "alice", "bob", bob.public_key, 0, bytes(16))
    with pytest.raises(KeyUnwrapFailed):
        unwrap_sender_key(bob, "bob", "alice", alice.public_key, flip(blob, index))
    with pytest.raises(KeyUnwrapFailed):
        unwrap_sender_key(bob, "bob", "alice", alice.public_key, blob[:-1])


@pytest.mark.parametrize("bad_public", [bytes(32), bytes([1]) + bytes(31), bytes(31)])
def test_low_order_or_short_public_key_is_refused(bad_public: bytes) -> None:
    with pytest.raises(BadPublicKey):
        wrap_sender_key(IdentityKeyPair.generate(), "a", "b", bad_public, 0, bytes(16))


# ---------------------------------------------------------------- safety numbers


def test_safety_number_is_the_same_from_both_sides(
    pair: tuple[IdentityKeyPair, IdentityKeyPair],
) -> None:
    alice, bob = pair
    number = safety_number(alice.public_key, bob.public_key)
    assert number == safety_number(bob.public_key, alice.public_key)
    assert SAFETY_NUMBER_SHAPE.match(number)


def test_safety_number_changes_when_either_key_changes(
    pair: tuple[IdentityKeyPair, IdentityKeyPair],
) -> None:
    alice, bob = pair
    number = safety_number(alice.public_key, bob.public_key)
    other = IdentityKeyPair.generate().public_key
    assert safety_number(other, bob.public_key) != number
    assert safety_number(alice.public_key, other) != number
    assert safety_number(flip(alice.public_key, 31), bob.public_key) != number


def test_safety_number_of_rfc7748_keys_is_pinned() -> None:
    # The worked example in docs/E2EE.md; the browser test checks the page agrees.
    alice, bob = bytes.fromhex(X25519_ALICE_PUBLIC), bytes.fromhex(X25519_BOB_PUBLIC)
    assert safety_number(bob, alice) == (
        "06851 07889 68664 14939 48406 16014 08621 42466 94559 79013 21007 82231"
    )


# ---------------------------------------------------------------- signaling shapes


def test_messages_carry_unpadded_base64url(
    pair: tuple[IdentityKeyPair, IdentityKeyPair],
) -> None:
    alice, bob = pair
    blob = wrap_sender_key(alice, "alice", "bob", bob.public_key, 0, bytes(16))
    message = key_message("bob", blob)
    assert message == {"type": "e2ee_key", "to": "bob", "blob": b64encode(blob)}
    assert "=" not in message["blob"] and b64decode(message["blob"]) == blob
    hello = hello_message(alice.public_key)
    assert hello == {"type": "e2ee_hello", "public_key": b64encode(alice.public_key)}
    assert hello_message(alice.public_key, to="bob")["to"] == "bob"


@pytest.mark.parametrize("text", ["AA==", "A", "AB", "a+b/", "héllo"])
def test_non_canonical_base64url_is_refused(text: str) -> None:
    with pytest.raises(E2EEError):
        b64decode(text)


# ---------------------------------------------------------------- properties


@settings(max_examples=examples(300))
@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.binary(max_size=4))
def test_header_round_trips_for_any_kid_and_ctr(kid: int, ctr: int, tail: bytes) -> None:
    header = encode_header(kid, ctr)
    assert parse_header(header + tail) == (kid, ctr, len(header))


@settings(max_examples=examples(1000))
@given(st.binary(max_size=24))
def test_header_parser_raises_only_malformed_header(data: bytes) -> None:
    try:
        kid, ctr, length = parse_header(data)
    except MalformedHeader:
        return
    assert encode_header(kid, ctr) == data[:length]


@settings(max_examples=examples(300))
@given(st.sampled_from(["opus", "vp8"]), st.binary(max_size=64))
def test_frame_decryption_of_arbitrary_bytes_raises_only_e2ee_errors(
    codec: str, data: bytes
) -> None:
    ring = keyring_for(SenderKey(0, bytes(16)), SenderKey(9, bytes(16)))
    with pytest.raises(E2EEError):
        ring.decrypt_frame(data, codec, 0.0)
