"""Messages on the control and file data channels (docs/DATA_CHANNELS.md), pure.

The control channel carries small JSON text messages (chat, reactions, raised
hands). The file channel carries JSON text messages that announce and settle a
transfer, and binary chunks: a 4-byte transfer number (big-endian) and the bytes.
What clients send is checked here; the SFU stamps the sender on everything it
relays, so nobody can speak for somebody else.
"""

from __future__ import annotations

import json
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

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_IDENTITY_MAX = 128
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")


class DataMessageError(ValueError):
    """A data-channel message the SFU refuses; ``code`` reaches the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Chat:
    body: str
    to: str | None = None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Reaction:
    emoji: str


@dataclass(frozen=True, slots=True)
class Hand:
    raised: bool


ControlMessage = Chat | Reaction | Hand


@dataclass(frozen=True, slots=True)
class FileOffer:
    file_id: str
    name: str
    size: int
    mime: str
    sha256: str
    to: str | None = None


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


def parse_control(text: str) -> ControlMessage:
    """One client message of the control channel, or DataMessageError."""
    value = _object(text, MAX_CONTROL_MESSAGE)
    kind = value["type"]
    if kind == "chat":
        body = _string(value, "body", MAX_CHAT_CHARS)
        assert body is not None
        ref = value.get("id")
        if ref is not None and (not isinstance(ref, str) or not _ID.fullmatch(ref)):
            raise _bad("field 'id' must match [A-Za-z0-9_-]{1,64}")
        return Chat(body, _identity(value), ref)
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
        name = _string(value, "name", MAX_FILE_NAME_CHARS)
        assert name is not None
        if "/" in name or "\\" in name or name in (".", ".."):
            raise _bad("field 'name' must be a file name, not a path")
        size = value.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 2**53:
            raise _bad("field 'size' must be a byte count")
        mime = value.get("mime")
        if not isinstance(mime, str) or len(mime) > MAX_MIME_CHARS or not _MIME.fullmatch(mime):
            raise _bad("field 'mime' must be a media type such as text/plain")
        digest = value.get("sha256")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise _bad("field 'sha256' must be 64 lowercase hex digits")
        return FileOffer(file_id, name, size, mime, digest, _identity(value))
    if kind == "file_received":
        ok = value.get("ok")
        if not isinstance(ok, bool):
            raise _bad("field 'ok' must be true or false")
        return FileReceived(_transfer(value), ok)
    if kind == "file_cancel":
        return FileCancel(_transfer(value))
    raise DataMessageError("unknown_type", f"unknown file message type {kind[:40]!r}")


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
