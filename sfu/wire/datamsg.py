"""Messages on the control and file data channels (docs/DATA_CHANNELS.md), pure.

The control channel carries small JSON text messages (chat, reactions, raised
hands). The file channel carries JSON text messages that announce and settle a
transfer, and binary chunks: a 4-byte transfer number (big-endian) and the bytes.
What clients send is checked here; the SFU stamps the sender on everything it
relays, so nobody can speak for somebody else.

A ``file_offer`` with ``"resume": true`` asks to continue a transfer that stopped
when its sender's connection went away (sfu/routing/resume.py); it repeats the
interrupted offer exactly.

With end-to-end encryption on (docs/E2EE.md, "Chat and files"), a chat carries an
opaque ``sealed`` field instead of ``body``, and a file offer carries ``sealed`` (the
name and SHA-256, encrypted) and ``plain_size`` instead of ``name`` and ``sha256``;
its chunks are ciphertext. The SFU holds no key: it checks only the shape and the
bounds of the sealed values, and that the announced sizes fit the fixed framing.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

MAX_CONTROL_MESSAGE = 16 * 1024
MAX_FILE_MESSAGE = 4 * 1024
MAX_CHUNK = 16 * 1024  # keeps a control message's wait behind one chunk short
MAX_CHAT_CHARS = 8000
MAX_REACTION_CHARS = 16
MAX_FILE_NAME_CHARS = 255
MAX_MIME_CHARS = 127
CHUNK_HEADER = struct.Struct("!I")

# Sealed (end-to-end encrypted) values: unpadded base64url of an SFrame ciphertext,
# ``header (1-17 bytes) | AES-GCM ciphertext | tag (16 bytes)``.
SEALED_HEADER_MAX_BYTES = 17
SEALED_TAG_BYTES = 16
SEALED_OVERHEAD_MIN = 1 + SEALED_TAG_BYTES
SEALED_OVERHEAD_MAX = SEALED_HEADER_MAX_BYTES + SEALED_TAG_BYTES
MAX_SEALED_CHAT_CHARS = 12_000  # 9000 bytes: an 8 KiB message and the overhead
MAX_SEALED_OFFER_CHARS = 2_048  # 1536 bytes: name (255 characters), SHA-256, transfer id
# A sealed file is cut into chunks of this many plaintext bytes (the last one
# shorter), each sealed alone, so every encrypted chunk fits MAX_CHUNK and the
# ciphertext size lies within fixed bounds of the plaintext size.
SEALED_CHUNK_PLAIN = MAX_CHUNK - 64

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_IDENTITY_MAX = 128
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


class DataMessageError(ValueError):
    """A data-channel message the SFU refuses; ``code`` reaches the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Chat:
    """A chat message: ``body`` in clear, or ``sealed`` (end-to-end encrypted)."""

    body: str | None
    to: str | None = None
    ref: str | None = None
    sealed: str | None = None


@dataclass(frozen=True, slots=True)
class Reaction:
    emoji: str


@dataclass(frozen=True, slots=True)
class Hand:
    raised: bool


ControlMessage = Chat | Reaction | Hand


@dataclass(frozen=True, slots=True)
class FileOffer:
    """A file announced before its bytes. ``size`` is what crosses the SFU in chunks.

    A sealed offer has ``name`` and ``sha256`` only inside ``sealed``, and
    ``plain_size``, the file's own size, which the room's size limit applies to.
    ``resume`` asks to continue the paused transfer of the same offer.
    """

    file_id: str
    name: str | None
    size: int
    mime: str
    sha256: str | None
    to: str | None = None
    sealed: str | None = None
    plain_size: int | None = None
    resume: bool = False

    @property
    def file_bytes(self) -> int:
        """The size of the file itself (not of its encryption)."""
        return self.size if self.plain_size is None else self.plain_size


@dataclass(frozen=True, slots=True)
class FileReceived:
    transfer: int
    ok: bool


@dataclass(frozen=True, slots=True)
class FileCancel:
    transfer: int


FileMessage = FileOffer | FileReceived | FileCancel


def _bad(message: str) -> DataMessageError:
    return DataMessageError("bad_message", message)


def _object(text: str, limit: int) -> dict[str, Any]:
    if len(text) > limit:
        raise DataMessageError("too_large", f"message longer than {limit} characters")
    try:
        value = json.loads(text)
    except ValueError:
        raise DataMessageError("bad_json", "message is not JSON") from None
    if not isinstance(value, dict):
        raise _bad("message must be a JSON object")
    kind = value.get("type")
    if not isinstance(kind, str):
        raise _bad("message has no string field 'type'")
    return value


def _string(value: dict[str, Any], name: str, limit: int, *, required: bool = True) -> str | None:
    field = value.get(name)
    if field is None and not required:
        return None
    if not isinstance(field, str) or not field:
        raise _bad(f"field {name!r} must be a non-empty string")
    if len(field) > limit:
        raise DataMessageError("too_large", f"field {name!r} is longer than {limit} characters")
    if any(ord(ch) < 0x20 and ch not in "\n\t" for ch in field):
        raise _bad(f"field {name!r} contains control characters")
    return field


def _identity(value: dict[str, Any]) -> str | None:
    return _string(value, "to", _IDENTITY_MAX, required=False)


def _transfer(value: dict[str, Any]) -> int:
    number = value.get("transfer")
    if isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 2**32:
        raise _bad("field 'transfer' must be a transfer number")
    return number


def sealed_header_length(data: bytes) -> int:
    """The length of the SFrame header at the start of ``data`` (RFC 9605 4.3)."""
    config = data[0]
    length = 1
    if config & 0x80:
        length += ((config >> 4) & 0x07) + 1
    if config & 0x08:
        length += (config & 0x07) + 1
    return length


def _sealed(value: dict[str, Any], name: str, limit: int) -> str:
    """An opaque sealed value: unpadded base64url of ``SFrame header | ciphertext | tag``.

    The SFU cannot open it; it checks only that it is that shape and not too long.
    """
    field = value.get(name)
    if not isinstance(field, str) or not field:
        raise DataMessageError("bad_sealed", f"field {name!r} must be a non-empty string")
    if len(field) > limit:
        raise DataMessageError("too_large", f"field {name!r} is longer than {limit} characters")
    if not _BASE64URL.fullmatch(field) or len(field) % 4 == 1:
        raise DataMessageError("bad_sealed", f"field {name!r} must be unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(field + "=" * (-len(field) % 4))
    except (binascii.Error, ValueError):
        raise DataMessageError("bad_sealed", f"field {name!r} must be base64url") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != field:
        raise DataMessageError("bad_sealed", f"field {name!r} is not canonical base64url")
    if len(raw) < sealed_header_length(raw) + SEALED_TAG_BYTES:
        raise DataMessageError(
            "bad_sealed", f"field {name!r} is shorter than an SFrame header and tag"
        )
    return field


def sealed_size_bounds(plain_size: int) -> tuple[int, int]:
    """The least and the most bytes a sealed file of ``plain_size`` bytes sends."""
    chunks = math.ceil(plain_size / SEALED_CHUNK_PLAIN)
    return (
        plain_size + chunks * SEALED_OVERHEAD_MIN,
        plain_size + chunks * SEALED_OVERHEAD_MAX,
    )


def _byte_count(value: dict[str, Any], name: str) -> int:
    size = value.get(name)
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 2**53:
        raise _bad(f"field {name!r} must be a byte count")
    return size


def parse_control(text: str) -> ControlMessage:
    """One client message of the control channel, or DataMessageError."""
    value = _object(text, MAX_CONTROL_MESSAGE)
    kind = value["type"]
    if kind == "chat":
        body: str | None = None
        sealed: str | None = None
        if "sealed" in value:
            if "body" in value:
                raise _bad("a chat has 'body' or 'sealed', not both")
            sealed = _sealed(value, "sealed", MAX_SEALED_CHAT_CHARS)
        else:
            body = _string(value, "body", MAX_CHAT_CHARS)
        ref = value.get("id")
        if ref is not None and (not isinstance(ref, str) or not _ID.fullmatch(ref)):
            raise _bad("field 'id' must match [A-Za-z0-9_-]{1,64}")
        return Chat(body, _identity(value), ref, sealed)
    if kind == "reaction":
        emoji = _string(value, "emoji", MAX_REACTION_CHARS)
        assert emoji is not None
        return Reaction(emoji)
    if kind == "hand":
        raised = value.get("raised")
        if not isinstance(raised, bool):
            raise _bad("field 'raised' must be true or false")
        return Hand(raised)
    raise DataMessageError("unknown_type", f"unknown control message type {kind[:40]!r}")


def parse_file_message(text: str) -> FileMessage:
    """One client text message of the file channel, or DataMessageError."""
    value = _object(text, MAX_FILE_MESSAGE)
    kind = value["type"]
    if kind == "file_offer":
        file_id = value.get("id")
        if not isinstance(file_id, str) or not _ID.fullmatch(file_id):
            raise _bad("field 'id' must match [A-Za-z0-9_-]{1,64}")
        resume = _flag(value, "resume")
        if "sealed" in value:
            return _sealed_offer(value, file_id, resume)
        name = _string(value, "name", MAX_FILE_NAME_CHARS)
        assert name is not None
        if "/" in name or "\\" in name or name in (".", ".."):
            raise _bad("field 'name' must be a file name, not a path")
        size = _byte_count(value, "size")
        mime = _mime(value)
        if "plain_size" in value:
            raise _bad("field 'plain_size' belongs to sealed offers only")
        digest = value.get("sha256")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise _bad("field 'sha256' must be 64 lowercase hex digits")
        return FileOffer(file_id, name, size, mime, digest, _identity(value), resume=resume)
    if kind == "file_received":
        ok = value.get("ok")
        if not isinstance(ok, bool):
            raise _bad("field 'ok' must be true or false")
        return FileReceived(_transfer(value), ok)
    if kind == "file_cancel":
        return FileCancel(_transfer(value))
    raise DataMessageError("unknown_type", f"unknown file message type {kind[:40]!r}")


def _flag(value: dict[str, Any], name: str) -> bool:
    """An optional true/false field (absent means false)."""
    flag = value.get(name, False)
    if not isinstance(flag, bool):
        raise _bad(f"field {name!r} must be true or false")
    return flag


def _mime(value: dict[str, Any]) -> str:
    mime = value.get("mime")
    if not isinstance(mime, str) or len(mime) > MAX_MIME_CHARS or not _MIME.fullmatch(mime):
        raise _bad("field 'mime' must be a media type such as text/plain")
    return mime


def _sealed_offer(value: dict[str, Any], file_id: str, resume: bool) -> FileOffer:
    """A file offer whose name and SHA-256 are end-to-end encrypted in ``sealed``.

    ``size`` is the ciphertext the chunks will carry (the SFU counts and enforces it
    exactly, as for any offer); ``plain_size`` the file's own size. The fixed chunk
    framing bounds the one by the other, so neither can be used to cheat the limits.
    """
    if "name" in value or "sha256" in value:
        raise _bad("a sealed offer carries 'name' and 'sha256' only inside 'sealed'")
    sealed = _sealed(value, "sealed", MAX_SEALED_OFFER_CHARS)
    size = _byte_count(value, "size")
    plain_size = _byte_count(value, "plain_size")
    least, most = sealed_size_bounds(plain_size)
    if not least <= size <= most:
        raise _bad(f"field 'size' must be the sealed size of 'plain_size': {least} to {most} bytes")
    return FileOffer(
        file_id, None, size, _mime(value), None, _identity(value), sealed, plain_size, resume
    )


def parse_chunk(data: bytes) -> tuple[int, bytes]:
    """(transfer number, bytes) of a binary chunk, or DataMessageError."""
    if len(data) <= CHUNK_HEADER.size:
        raise _bad("a chunk is a 4-byte transfer number and at least one byte")
    if len(data) > CHUNK_HEADER.size + MAX_CHUNK:
        raise DataMessageError("too_large", f"a chunk carries at most {MAX_CHUNK} bytes")
    (transfer,) = CHUNK_HEADER.unpack_from(data)
    return transfer, data[CHUNK_HEADER.size :]


def chunk(transfer: int, payload: bytes) -> bytes:
    return CHUNK_HEADER.pack(transfer) + payload


def encode(message: dict[str, Any]) -> str:
    """Compact JSON for what the SFU sends."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)
