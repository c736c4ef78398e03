"""End-to-end media encryption: the client side, in Python (the page's twin is
signaling/static/e2ee.js; docs/E2EE.md is the specification both follow).

Three building blocks, none of which the SFU ever runs:

* Frames: SFrame (RFC 9605) with cipher suite AES_128_GCM_SHA256_128 (0x0004). An
  encoded frame becomes ``clear prefix | SFrame header | AES-GCM ciphertext and tag``;
  the clear prefix is the few codec bytes the RTP packetizer and the SFU read (VP8's
  frame tag and keyframe header; nothing for Opus) and is authenticated as the RFC's
  ``metadata``. Keys and salts derive from a sender's base key exactly as RFC 9605
  section 4.4.2 says, so the RFC's test vectors reproduce here.
* Sender keys travel wrapped per recipient: X25519 between the two identity keys,
  HKDF-SHA256, AES-128-GCM over ``kid | base_key`` with both participants' identities
  and public keys in the associated data. The signaling server relays the blob and
  can open none of it.
* Safety numbers: 60 digits from the two identity public keys, the same on both
  sides, for people to compare out of band.
* Chat and files: sealed under the same sender keys, with a data key and salt derived
  from the base key under labels of their own, so data never shares a nonce space
  with frames (docs/E2EE.md, "Chat and files").

Time is passed in (``now`` in seconds), never read here, so the key schedules are
exact under test.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CIPHER_SUITE = 0x0004  # AES_128_GCM_SHA256_128, RFC 9605 section 4.5
KEY_BYTES = 16  # AEAD.Nk
NONCE_BYTES = 12  # AEAD.Nn
TAG_BYTES = 16  # AEAD.Nt
BASE_KEY_BYTES = 16
PUBLIC_KEY_BYTES = 32
MAX_KID = 2**64 - 1
MAX_CTR = 2**64 - 1

# Codec bytes left readable for the packetizer and the SFU (see clear_prefix_len).
VP8_KEYFRAME_CLEAR_BYTES = 10  # frame tag (3) + start code (3) + width and height (4)
VP8_DELTA_CLEAR_BYTES = 3  # frame tag
OPUS_CLEAR_BYTES = 0
SUPPORTED_CODECS = ("opus", "vp8")

# Key schedule defaults (docs/E2EE.md, "Rotation").
ROTATION_INTERVAL_S = 600.0
ACTIVATION_DELAY_S = 1.0
KEY_GRACE_S = 5.0

WRAP_VERSION = 1
WRAP_LABEL = b"sfu-e2ee v1 key wrap"
WRAP_PLAINTEXT = struct.Struct("!Q16s")
WRAP_BLOB_BYTES = 1 + NONCE_BYTES + WRAP_PLAINTEXT.size + TAG_BYTES
MAX_IDENTITY_BYTES = 1024

SAFETY_NUMBER_LABEL = b"sfu-e2ee v1 safety number"
SAFETY_NUMBER_GROUPS = 12
SAFETY_NUMBER_GROUP_DIGITS = 5

# Chat and files (docs/E2EE.md, "Chat and files").
DATA_KEY_LABEL = b"sfu-e2ee v1 data key "
DATA_SALT_LABEL = b"sfu-e2ee v1 data salt "
CHAT_CONTEXT_LABEL = b"sfu-e2ee v1 chat"
FILE_OFFER_CONTEXT_LABEL = b"sfu-e2ee v1 file offer"
FILE_CHUNK_CONTEXT_LABEL = b"sfu-e2ee v1 file chunk"
MAX_SEALED_CHAT_BYTES = 8192  # UTF-8 bytes of one encrypted chat message
SEALED_CHUNK_PLAIN = 16 * 1024 - 64  # plaintext bytes per file chunk (the last: fewer)
FILE_TID_BYTES = 16
MAX_FILE_NAME_CHARS = 255

_SFRAME_KEY_LABEL = b"SFrame 1.0 Secret key "
_SFRAME_SALT_LABEL = b"SFrame 1.0 Secret salt "
_KID_SUITE = struct.Struct("!QH")


class E2EEError(Exception):
    """Base of every end-to-end encryption failure; ``code`` is stable for clients."""

    code = "e2ee_error"


class MalformedHeader(E2EEError):
    """The bytes are not an SFrame header (truncated, or not minimally encoded)."""

    code = "bad_header"


class UnknownKey(E2EEError):
    """No key is held for the frame's KID (not received yet, or already retired)."""

    code = "unknown_kid"


class DecryptFailed(E2EEError):
    """Authentication failed: wrong key, or header, prefix or payload altered."""

    code = "decrypt_failed"


class StaleKey(E2EEError):
    """A key no newer than one already retired arrived: a replay, or badly late."""

    code = "stale_key"


class UnsupportedCodec(E2EEError):
    """The frame's codec has no E2EE framing here (only Opus and VP8 do)."""

    code = "unsupported_codec"


class BadFrame(E2EEError):
    """A frame too short for its codec's clear prefix, or otherwise unusable."""

    code = "bad_frame"


class CounterExhausted(E2EEError):
    """The sender key has used every CTR value; it must be rotated."""

    code = "counter_exhausted"


class KeyUnwrapFailed(E2EEError):
    """A wrapped key did not open: not for us, identities differ, or altered."""

    code = "unwrap_failed"


class BadPublicKey(E2EEError):
    """An identity public key that is not 32 bytes or gives an all-zero secret."""

    code = "bad_public_key"


class BadSealed(E2EEError):
    """A sealed chat or file offer that opened but does not hold what it must."""

    code = "bad_sealed"


# ---------------------------------------------------------------- SFrame header


def _compact_len(value: int) -> int:
    return max(1, (value.bit_length() + 7) // 8)


def encode_header(kid: int, ctr: int) -> bytes:
    """The SFrame header for (KID, CTR), RFC 9605 section 4.3, minimally encoded."""
    if not 0 <= kid <= MAX_KID:
        raise ValueError(f"kid out of range: {kid}")
    if not 0 <= ctr <= MAX_CTR:
        raise ValueError(f"ctr out of range: {ctr}")
    config = 0
    tail = b""
    if kid < 8:
        config |= kid << 4
    else:
        kid_len = _compact_len(kid)
        config |= 0x80 | (kid_len - 1) << 4
        tail += kid.to_bytes(kid_len, "big")
    if ctr < 8:
        config |= ctr
    else:
        ctr_len = _compact_len(ctr)
        config |= 0x08 | (ctr_len - 1)
        tail += ctr.to_bytes(ctr_len, "big")
    return bytes([config]) + tail


def _read_field(data: bytes, offset: int, extended: bool, bits: int, name: str) -> tuple[int, int]:
    """(value, next offset) for the KID or CTR whose 3 config bits are ``bits``."""
    if not extended:
        return bits, offset
    length = bits + 1
    end = offset + length
    if end > len(data):
        raise MalformedHeader(f"header truncated in {name}")
    value = int.from_bytes(data[offset:end], "big")
    # RFC 9605 4.3: values 0-7 live in the config byte, larger ones in the fewest bytes.
    if value < 8 or _compact_len(value) != length:
        raise MalformedHeader(f"{name} not minimally encoded")
    return value, end


def parse_header(data: bytes) -> tuple[int, int, int]:
    """(kid, ctr, header length) from the start of ``data``; MalformedHeader if invalid."""
    if not data:
        raise MalformedHeader("empty header")
    config = data[0]
    kid, offset = _read_field(data, 1, bool(config & 0x80), (config >> 4) & 0x07, "kid")
    ctr, offset = _read_field(data, offset, bool(config & 0x08), config & 0x07, "ctr")
    return kid, ctr, offset


# ---------------------------------------------------------------- SFrame keys


def sframe_labels(kid: int) -> tuple[bytes, bytes]:
    """(sframe_key_label, sframe_salt_label) for ``kid`` under this cipher suite."""
    suffix = _KID_SUITE.pack(kid, CIPHER_SUITE)
    return _SFRAME_KEY_LABEL + suffix, _SFRAME_SALT_LABEL + suffix


def _hkdf_sha256(ikm: bytes, info: bytes, length: int) -> bytes:
    # salt=None is HashLen zero bytes, the same PRK as RFC 9605's HKDF-Extract("", ...)
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(ikm)


def derive_key_salt(kid: int, base_key: bytes) -> tuple[bytes, bytes]:
    """(sframe_key, sframe_salt) for ``kid`` from ``base_key``, RFC 9605 section 4.4.2."""
    if not 0 <= kid <= MAX_KID:
        raise ValueError(f"kid out of range: {kid}")
    key_label, salt_label = sframe_labels(kid)
    return (
        _hkdf_sha256(base_key, key_label, KEY_BYTES),
        _hkdf_sha256(base_key, salt_label, NONCE_BYTES),
    )


def data_labels(kid: int) -> tuple[bytes, bytes]:
    """(data key label, data salt label) for ``kid``: chat and files, never frames."""
    suffix = _KID_SUITE.pack(kid, CIPHER_SUITE)
    return DATA_KEY_LABEL + suffix, DATA_SALT_LABEL + suffix


def derive_data_key_salt(kid: int, base_key: bytes) -> tuple[bytes, bytes]:
    """(data_key, data_salt) for ``kid`` from ``base_key``: as derive_key_salt, with the
    data labels, so the data nonce space is apart from the frames' under the same key."""
    if not 0 <= kid <= MAX_KID:
        raise ValueError(f"kid out of range: {kid}")
    key_label, salt_label = data_labels(kid)
    return (
        _hkdf_sha256(base_key, key_label, KEY_BYTES),
        _hkdf_sha256(base_key, salt_label, NONCE_BYTES),
    )


def sframe_nonce(salt: bytes, ctr: int) -> bytes:
    """sframe_salt XOR the CTR as a big-endian AEAD.Nn-byte integer (RFC 9605 4.4.3)."""
    return (int.from_bytes(salt, "big") ^ ctr).to_bytes(NONCE_BYTES, "big")


class FrameKey:
    """The derived AES-GCM key and salt for one (KID, base key): for frames, or with
    ``data=True`` for chat and files (another key and salt from the same base key)."""

    __slots__ = ("kid", "_aead", "_salt")

    def __init__(self, kid: int, base_key: bytes, *, data: bool = False) -> None:
        if len(base_key) != BASE_KEY_BYTES:
            raise ValueError(f"base key must be {BASE_KEY_BYTES} bytes")
        derive = derive_data_key_salt if data else derive_key_salt
        key, salt = derive(kid, base_key)
        self.kid = kid
        self._aead = AESGCM(key)
        self._salt = salt

    def seal(self, ctr: int, metadata: bytes, plaintext: bytes) -> bytes:
        """The SFrame ciphertext ``header | AEAD(plaintext)`` with aad = header | metadata."""
        header = encode_header(self.kid, ctr)
        sealed = self._aead.encrypt(sframe_nonce(self._salt, ctr), plaintext, header + metadata)
        return header + sealed

    def open(self, ctr: int, header: bytes, metadata: bytes, ciphertext: bytes) -> bytes:
        """The plaintext of ``ciphertext``; DecryptFailed if anything was altered."""
        try:
            return self._aead.decrypt(sframe_nonce(self._salt, ctr), ciphertext, header + metadata)
        except InvalidTag:
            raise DecryptFailed("frame failed authentication") from None


# ---------------------------------------------------------------- codecs


def normalize_codec(codec: str) -> str:
    """'opus' or 'vp8' from a codec name or MIME type ('audio/opus', 'video/VP8')."""
    name = codec.lower().rpartition("/")[2]
    if name not in SUPPORTED_CODECS:
        raise UnsupportedCodec(f"no E2EE framing for codec {codec!r} (only Opus and VP8)")
    return name


def clear_prefix_len(codec: str, frame: bytes) -> int:
    """How many leading bytes of ``frame`` stay readable.

    VP8 (RFC 6386 9.1): a keyframe (frame tag bit 0 clear) keeps 10 bytes, the frame tag,
    start code and dimensions; an interframe keeps its 3-byte frame tag. The first byte
    is always in clear, so encrypted and plain frames give the same answer. Opus keeps
    nothing. H.264 is not supported: its NAL units would have to be walked.
    """
    name = normalize_codec(codec)
    if name == "opus":
        return OPUS_CLEAR_BYTES
    if not frame:
        raise BadFrame("empty VP8 frame")
    return VP8_DELTA_CLEAR_BYTES if frame[0] & 0x01 else VP8_KEYFRAME_CLEAR_BYTES


# ---------------------------------------------------------------- senders


class SenderKey:
    """One sender's key: encrypts with a fresh CTR for every frame, from 0 upwards.

    Every track of the sender must share the one object, so that no (KID, CTR) pair is
    ever used twice.
    """

    __slots__ = ("kid", "base_key", "_frame_key", "_next_ctr", "_data_key", "_next_data_ctr")

    def __init__(self, kid: int, base_key: bytes) -> None:
        self.kid = kid
        self.base_key = bytes(base_key)
        self._frame_key = FrameKey(kid, self.base_key)
        self._next_ctr = 0
        self._data_key: FrameKey | None = None
        self._next_data_ctr = 0

    @classmethod
    def generate(cls, kid: int) -> SenderKey:
        """A new key with a random 16-byte base key."""
        return cls(kid, os.urandom(BASE_KEY_BYTES))

    @property
    def next_ctr(self) -> int:
        """The CTR the next frame will carry."""
        return self._next_ctr

    def _take_ctr(self) -> int:
        ctr = self._next_ctr
        if ctr > MAX_CTR:
            raise CounterExhausted("sender key used up; rotate it")
        self._next_ctr = ctr + 1
        return ctr

    def encrypt(self, plaintext: bytes, metadata: bytes = b"") -> bytes:
        """A raw SFrame ciphertext (RFC 9605 4.4.3) under the next CTR."""
        return self._frame_key.seal(self._take_ctr(), metadata, plaintext)

    def encrypt_frame(self, frame: bytes, codec: str) -> bytes:
        """``clear prefix | SFrame header | ciphertext and tag`` for an encoded frame."""
        prefix_len = clear_prefix_len(codec, frame)
        if len(frame) < prefix_len:
            raise BadFrame(f"frame of {len(frame)} bytes is shorter than its clear prefix")
        prefix = frame[:prefix_len]
        return prefix + self.encrypt(frame[prefix_len:], prefix)

    @property
    def data_key(self) -> FrameKey:
        """The key for chat and files (its own key, salt and CTR space)."""
        if self._data_key is None:
            self._data_key = FrameKey(self.kid, self.base_key, data=True)
        return self._data_key

    @property
    def next_data_ctr(self) -> int:
        """The CTR the next sealed chat message or file offer will carry."""
        return self._next_data_ctr

    def reserve_data_ctrs(self, count: int) -> int:
        """Take ``count`` consecutive data CTRs (a file: its offer and chunks); the first."""
        first = self._next_data_ctr
        if count < 1 or first + count - 1 > MAX_CTR:
            raise CounterExhausted("sender key's data counter used up; rotate it")
        self._next_data_ctr = first + count
        return first

    def seal_data(self, plaintext: bytes, context: bytes) -> bytes:
        """``SFrame header | ciphertext and tag`` of chat or a file offer, next data CTR."""
        return self.data_key.seal(self.reserve_data_ctrs(1), context, plaintext)


class SenderKeys:
    """A sender's key schedule: the key in use, and the next one while it propagates.

    ``rotate(now)`` makes the next key (KID one higher) and returns it to be wrapped for
    every current recipient; frames switch to it ``activation_delay_s`` later, so the
    recipients hold it before the first frame under it arrives.
    """

    def __init__(
        self,
        now: float,
        *,
        first_kid: int = 0,
        rotation_interval_s: float = ROTATION_INTERVAL_S,
        activation_delay_s: float = ACTIVATION_DELAY_S,
    ) -> None:
        self.rotation_interval_s = rotation_interval_s
        self.activation_delay_s = activation_delay_s
        self.current = SenderKey.generate(first_kid)
        self.pending: SenderKey | None = None
        self._activate_at = now
        self._rotated_at = now

    def _advance(self, now: float) -> None:
        if self.pending is not None and now >= self._activate_at:
            self.current, self.pending = self.pending, None

    def rotate(self, now: float) -> SenderKey:
        """Start a new key now (someone left, or the timer fired); returns it to send."""
        self._advance(now)
        if self.pending is not None:
            # A rotation already under way: replace its key, since it may have reached
            # someone who has since left.
            newest_kid = self.pending.kid
        else:
            newest_kid = self.current.kid
        if newest_kid >= MAX_KID:
            raise CounterExhausted("no KID left for a new sender key")
        self.pending = SenderKey.generate(newest_kid + 1)
        self._activate_at = now + self.activation_delay_s
        self._rotated_at = now
        return self.pending

    def rotation_due(self, now: float) -> bool:
        """Whether the timer says it is time to rotate."""
        return now - self._rotated_at >= self.rotation_interval_s

    def keys_to_share(self, now: float) -> list[SenderKey]:
        """What a newcomer needs: the key in use, and the next one if one is pending."""
        self._advance(now)
        return [self.current] + ([self.pending] if self.pending is not None else [])

    def encrypt_frame(self, frame: bytes, codec: str, now: float) -> bytes:
        """Encrypt under whichever key is active at ``now``."""
        self._advance(now)
        return self.current.encrypt_frame(frame, codec)

    def active(self, now: float) -> SenderKey:
        """The key frames, chat and files use at ``now``."""
        self._advance(now)
        return self.current


# ---------------------------------------------------------------- receivers


class ReceiverKeyring:
    """The keys one remote sender has given us, and the frames they open.

    A key whose KID is below the newest one held is retired ``grace_s`` after the first
    frame under a newer key opens, so frames still in flight across a rotation decode.
    """

    def __init__(self, *, grace_s: float = KEY_GRACE_S) -> None:
        self.grace_s = grace_s
        self._keys: dict[int, FrameKey] = {}
        self._base_keys: dict[int, bytes] = {}
        self._data_keys: dict[int, FrameKey] = {}
        self._retire_at: dict[int, float] = {}
        self._retired_below = 0

    @property
    def kids(self) -> list[int]:
        """KIDs currently held, oldest first."""
        return sorted(self._keys)

    def add_key(self, kid: int, base_key: bytes, now: float) -> None:
        """Hold ``base_key`` under ``kid``; StaleKey if a key this old was retired.

        A KID already held keeps its first key: a sender never reuses a KID.
        """
        self.expire(now)
        if kid in self._keys:
            return
        if kid < self._retired_below:
            raise StaleKey(f"key {kid} is older than a retired key")
        self._keys[kid] = FrameKey(kid, base_key)
        self._base_keys[kid] = bytes(base_key)

    def expire(self, now: float) -> None:
        """Drop keys whose grace has run out."""
        for kid, deadline in list(self._retire_at.items()):
            if now >= deadline:
                del self._retire_at[kid]
                del self._keys[kid]
                del self._base_keys[kid]
                self._data_keys.pop(kid, None)
                self._retired_below = max(self._retired_below, kid + 1)

    def _key_used(self, kid: int, now: float) -> None:
        for older in self._keys:
            if older < kid and older not in self._retire_at:
                self._retire_at[older] = now + self.grace_s

    def decrypt(self, sframe: bytes, metadata: bytes, now: float) -> bytes:
        """The plaintext of a raw SFrame ciphertext (RFC 9605 4.4.4)."""
        self.expire(now)
        kid, ctr, header_len = parse_header(sframe)
        key = self._keys.get(kid)
        if key is None:
            raise UnknownKey(f"no key for kid {kid}")
        if len(sframe) < header_len + TAG_BYTES:
            raise DecryptFailed("ciphertext shorter than the tag")
        plaintext = key.open(ctr, sframe[:header_len], metadata, sframe[header_len:])
        self._key_used(kid, now)
        return plaintext

    def decrypt_frame(self, data: bytes, codec: str, now: float) -> bytes:
        """The encoded frame inside ``clear prefix | SFrame header | ciphertext``."""
        prefix_len = clear_prefix_len(codec, data)
        if len(data) < prefix_len + 1 + TAG_BYTES:
            raise BadFrame(f"encrypted frame of {len(data)} bytes is too short")
        prefix = data[:prefix_len]
        return prefix + self.decrypt(data[prefix_len:], prefix, now)

    def open_data(self, sealed: bytes, context: bytes, now: float) -> tuple[bytes, FrameKey, int]:
        """(plaintext, the data key that opened it, CTR) of a sealed chat or file offer."""
        self.expire(now)
        kid, ctr, header_len = parse_header(sealed)
        if kid not in self._keys:
            raise UnknownKey(f"no key for kid {kid}")
        data_key = self._data_keys.get(kid)
        if data_key is None:
            data_key = self._data_keys[kid] = FrameKey(kid, self._base_keys[kid], data=True)
        if len(sealed) < header_len + TAG_BYTES:
            raise DecryptFailed("ciphertext shorter than the tag")
        plaintext = data_key.open(ctr, sealed[:header_len], context, sealed[header_len:])
        self._key_used(kid, now)
        return plaintext, data_key, ctr


# ---------------------------------------------------------------- identities


class IdentityKeyPair:
    """A participant's X25519 identity for one session."""

    __slots__ = ("_private", "public_key")

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private
        self.public_key: bytes = private.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> IdentityKeyPair:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> IdentityKeyPair:
        """From a 32-byte X25519 private key (RFC 7748); for tests and stored keys."""
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def shared_secret(self, peer_public: bytes) -> bytes:
        """X25519 with a peer's 32-byte public key; BadPublicKey for a low-order point."""
        if len(peer_public) != PUBLIC_KEY_BYTES:
            raise BadPublicKey(f"public key must be {PUBLIC_KEY_BYTES} bytes")
        try:
            secret = self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:
            raise BadPublicKey("public key gives no shared secret") from None
        if secret == bytes(PUBLIC_KEY_BYTES):
            raise BadPublicKey("public key gives an all-zero shared secret")
        return secret


def _length_prefixed(identity: str) -> bytes:
    raw = identity.encode("utf-8")
    if len(raw) > MAX_IDENTITY_BYTES:
        raise ValueError(f"identity longer than {MAX_IDENTITY_BYTES} bytes")
    return struct.pack("!H", len(raw)) + raw


def wrap_aad(
    sender_identity: str, sender_public: bytes, recipient_identity: str, recipient_public: bytes
) -> bytes:
    """The associated data binding a wrapped key to who sent it and for whom."""
    return (
        bytes([WRAP_VERSION])
        + _length_prefixed(sender_identity)
        + sender_public
        + _length_prefixed(recipient_identity)
        + recipient_public
    )


def _wrap_aead(shared: bytes, sender_public: bytes, recipient_public: bytes) -> AESGCM:
    info = WRAP_LABEL + sender_public + recipient_public
    return AESGCM(_hkdf_sha256(shared, info, KEY_BYTES))


def wrap_sender_key(
    sender: IdentityKeyPair,
    sender_identity: str,
    recipient_identity: str,
    recipient_public: bytes,
    kid: int,
    base_key: bytes,
) -> bytes:
    """The blob carrying (kid, base_key) to one recipient: ``version | nonce | sealed``."""
    if len(base_key) != BASE_KEY_BYTES:
        raise ValueError(f"base key must be {BASE_KEY_BYTES} bytes")
    if not 0 <= kid <= MAX_KID:
        raise ValueError(f"kid out of range: {kid}")
    shared = sender.shared_secret(recipient_public)
    aead = _wrap_aead(shared, sender.public_key, recipient_public)
    aad = wrap_aad(sender_identity, sender.public_key, recipient_identity, recipient_public)
    nonce = os.urandom(NONCE_BYTES)
    sealed = aead.encrypt(nonce, WRAP_PLAINTEXT.pack(kid, base_key), aad)
    return bytes([WRAP_VERSION]) + nonce + sealed


def unwrap_sender_key(
    recipient: IdentityKeyPair,
    recipient_identity: str,
    sender_identity: str,
    sender_public: bytes,
    blob: bytes,
) -> tuple[int, bytes]:
    """(kid, base_key) from a blob; KeyUnwrapFailed unless it was made for exactly us."""
    if len(blob) != WRAP_BLOB_BYTES or blob[0] != WRAP_VERSION:
        raise KeyUnwrapFailed("not a version 1 wrapped key")
    shared = recipient.shared_secret(sender_public)
    aead = _wrap_aead(shared, sender_public, recipient.public_key)
    aad = wrap_aad(sender_identity, sender_public, recipient_identity, recipient.public_key)
    nonce = blob[1 : 1 + NONCE_BYTES]
    try:
        plaintext = aead.decrypt(nonce, blob[1 + NONCE_BYTES :], aad)
    except InvalidTag:
        raise KeyUnwrapFailed("wrapped key failed authentication") from None
    kid, base_key = WRAP_PLAINTEXT.unpack(plaintext)
    return kid, base_key


# ---------------------------------------------------------------- safety numbers


def safety_number(public_a: bytes, public_b: bytes) -> str:
    """60 digits in 12 groups of 5 for the pair of identity keys, in either order."""
    if len(public_a) != PUBLIC_KEY_BYTES or len(public_b) != PUBLIC_KEY_BYTES:
        raise BadPublicKey(f"public keys must be {PUBLIC_KEY_BYTES} bytes")
    low, high = sorted((public_a, public_b))
    digest = hashlib.sha512(SAFETY_NUMBER_LABEL + low + high).digest()
    groups = []
    for index in range(SAFETY_NUMBER_GROUPS):
        chunk = int.from_bytes(digest[index * 5 : index * 5 + 5], "big")
        groups.append(f"{chunk % 10**SAFETY_NUMBER_GROUP_DIGITS:05d}")
    return " ".join(groups)


# ---------------------------------------------------------------- signaling helpers


def b64encode(data: bytes) -> str:
    """Unpadded base64url (RFC 4648 section 5), the encoding in every e2ee_* message."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    """The bytes of unpadded base64url text; E2EEError if it is not that."""
    try:
        raw = text.encode("ascii")
        data = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise E2EEError("not base64url") from None
    if b64encode(data) != text:
        raise E2EEError("not canonical unpadded base64url")
    return data


def key_message(to: str, blob: bytes) -> dict[str, str]:
    """{"type": "e2ee_key", "to": identity, "blob": base64url}, for one recipient."""
    return {"type": "e2ee_key", "to": to, "blob": b64encode(blob)}


def hello_message(public_key: bytes, to: str | None = None) -> dict[str, str]:
    """{"type": "e2ee_hello", "public_key": base64url}, to the room or to one identity."""
    message = {"type": "e2ee_hello", "public_key": b64encode(public_key)}
    if to is not None:
        message["to"] = to
    return message


# ---------------------------------------------------------------- chat and files


def _length_prefixed_text(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("text too long for a context")
    return struct.pack("!H", len(raw)) + raw


def chat_context(to: str | None) -> bytes:
    """What a sealed chat is bound to: its addressee ("" for the room)."""
    return CHAT_CONTEXT_LABEL + _length_prefixed_text(to or "")


def file_offer_context(plain_size: int, mime: str) -> bytes:
    """What a sealed file offer is bound to: the clear size and media type."""
    return FILE_OFFER_CONTEXT_LABEL + struct.pack("!Q", plain_size) + _length_prefixed_text(mime)


def file_chunk_context(tid: bytes, index: int) -> bytes:
    """What chunk ``index`` of transfer ``tid`` is bound to (no reordering, no splicing)."""
    if len(tid) != FILE_TID_BYTES:
        raise ValueError(f"transfer id must be {FILE_TID_BYTES} bytes")
    return FILE_CHUNK_CONTEXT_LABEL + tid + struct.pack("!I", index)


def sealed_chunk_count(plain_size: int) -> int:
    """Chunks of a sealed file of ``plain_size`` bytes."""
    return math.ceil(plain_size / SEALED_CHUNK_PLAIN)


def sealed_file_size(kid: int, offer_ctr: int, plain_size: int) -> int:
    """Bytes the chunks of a sealed file carry: chunk i has CTR offer_ctr + 1 + i."""
    count = sealed_chunk_count(plain_size)
    headers = sum(len(encode_header(kid, offer_ctr + 1 + i)) for i in range(count))
    return plain_size + headers + count * TAG_BYTES


def seal_chat(keys: SenderKeys, text: str, to: str | None, now: float) -> str:
    """The ``sealed`` field of an end-to-end encrypted chat message (base64url)."""
    raw = text.encode("utf-8")
    if not raw or len(raw) > MAX_SEALED_CHAT_BYTES:
        raise ValueError(f"a chat message is 1 to {MAX_SEALED_CHAT_BYTES} bytes")
    return b64encode(keys.active(now).seal_data(raw, chat_context(to)))


def open_chat(keyring: ReceiverKeyring, sealed: str, to: str | None, now: float) -> str:
    """The text of a sealed chat from the keyring's owner; E2EEError if it does not open."""
    plaintext, _, _ = keyring.open_data(b64decode(sealed), chat_context(to), now)
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise BadSealed("chat is not UTF-8") from None


@dataclass(frozen=True, slots=True)
class OutgoingFile:
    """A file being sent sealed: its offer's fields, and the key its chunks use."""

    key: SenderKey
    offer_ctr: int
    tid: bytes
    plain_size: int
    mime: str
    sealed: str

    @property
    def size(self) -> int:
        """The ciphertext bytes the chunks carry (the offer's ``size``)."""
        return sealed_file_size(self.key.kid, self.offer_ctr, self.plain_size)

    def offer(self, file_id: str, to: str | None = None) -> dict[str, object]:
        """The ``file_offer`` message (docs/DATA_CHANNELS.md) for this file."""
        message: dict[str, object] = {
            "type": "file_offer", "id": file_id, "size": self.size,
            "plain_size": self.plain_size, "mime": self.mime, "sealed": self.sealed,
        }  # fmt: skip
        if to is not None:
            message["to"] = to
        return message

    def seal_chunk(self, index: int, plaintext: bytes) -> bytes:
        """Chunk ``index`` (``SEALED_CHUNK_PLAIN`` bytes of the file at index times that)."""
        if not 0 <= index < sealed_chunk_count(self.plain_size):
            raise ValueError(f"no chunk {index} in a file of {self.plain_size} bytes")
        context = file_chunk_context(self.tid, index)
        return self.key.data_key.seal(self.offer_ctr + 1 + index, context, plaintext)

    def chunks(self, data: bytes) -> list[bytes]:
        """Every sealed chunk of ``data`` (the file this offer announced), in order."""
        if len(data) != self.plain_size:
            raise ValueError("not the file this offer announced")
        step = SEALED_CHUNK_PLAIN
        return [self.seal_chunk(i, data[i * step : (i + 1) * step])
                for i in range(sealed_chunk_count(self.plain_size))]  # fmt: skip


def seal_file(keys: SenderKeys, name: str, data: bytes, mime: str, now: float) -> OutgoingFile:
    """Seal a file's name and SHA-256 and reserve the CTRs of its offer and chunks."""
    if not name or len(name) > MAX_FILE_NAME_CHARS:
        raise ValueError(f"a file name is 1 to {MAX_FILE_NAME_CHARS} characters")
    key = keys.active(now)
    tid = os.urandom(FILE_TID_BYTES)
    manifest = json.dumps(
        {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "tid": b64encode(tid)},
        separators=(",", ":"), ensure_ascii=False,
    ).encode("utf-8")  # fmt: skip
    offer_ctr = key.reserve_data_ctrs(1 + sealed_chunk_count(len(data)))
    sealed = key.data_key.seal(offer_ctr, file_offer_context(len(data), mime), manifest)
    return OutgoingFile(key, offer_ctr, tid, len(data), mime, b64encode(sealed))


@dataclass(frozen=True, slots=True)
class IncomingFile:
    """A sealed file offer that opened: its name and SHA-256, and how to open its chunks.

    It keeps the data key the offer used: every chunk of the transfer is under it, even
    if the sender rotates (and the keyring retires that key) while the file is moving.
    """

    name: str
    sha256: str
    tid: bytes
    plain_size: int
    mime: str
    kid: int
    offer_ctr: int
    key: FrameKey

    def open_chunk(self, index: int, data: bytes) -> bytes:
        """The plaintext of chunk ``index``; DecryptFailed if it is not that chunk."""
        kid, ctr, header_len = parse_header(data)
        if kid != self.kid or ctr != self.offer_ctr + 1 + index:
            raise DecryptFailed(f"chunk {index} is not in its place")
        if len(data) < header_len + TAG_BYTES:
            raise DecryptFailed("ciphertext shorter than the tag")
        context = file_chunk_context(self.tid, index)
        return self.key.open(ctr, data[:header_len], context, data[header_len:])


def open_file_offer(
    keyring: ReceiverKeyring, sealed: str, plain_size: int, mime: str, now: float
) -> IncomingFile:
    """Open the ``sealed`` field of a relayed file offer from the keyring's owner."""
    manifest, key, ctr = keyring.open_data(
        b64decode(sealed), file_offer_context(plain_size, mime), now
    )
    try:
        fields = json.loads(manifest.decode("utf-8"))
        name, digest, tid = fields["name"], fields["sha256"], b64decode(fields["tid"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, E2EEError):
        raise BadSealed("file offer does not hold a name, SHA-256 and transfer id") from None
    if (
        not isinstance(name, str) or not 0 < len(name) <= MAX_FILE_NAME_CHARS
        or "/" in name or "\\" in name or name in (".", "..")
        or not isinstance(digest, str) or len(digest) != 64
        or digest.strip("0123456789abcdef") or len(tid) != FILE_TID_BYTES
    ):  # fmt: skip
        raise BadSealed("file offer holds a bad name, SHA-256 or transfer id")
    return IncomingFile(name, digest, tid, plain_size, mime, key.kid, ctr, key)
