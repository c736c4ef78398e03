"""Files a room keeps for late joiners: encrypted at rest, deleted on its retention.

Each room that keeps files gets a random AES-256-GCM key that lives only in this
process's memory. Every chunk is sealed under it (nonce: the file's random 64-bit
prefix and the chunk's 32-bit index; associated data: the file's id and the chunk
index, so chunks cannot be reordered or moved between files) before it touches the
disk. Deleting a room's files removes them and forgets the key; files left behind
by a process that died are unreadable without its key and are removed at the next
start (crypto-shredding: nothing on disk outlives the process that could read it).

What is stored is what the relay saw: with end-to-end encryption on, that is the
browsers' ciphertext, which the server cannot read either way.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

_RECORD = struct.Struct("!I")
TAG_BYTES = 16
MAX_CHUNK = 64 * 1024


class StoreError(Exception):
    pass


@dataclass(slots=True)
class StoredFile:
    """One kept file: its manifest as offered, and its sealed chunks on disk."""

    room: str
    number: int
    meta: dict[str, Any]  # what the offer announced (name, size, mime, sha256, from ...)
    path: Path
    stored_at: float
    expires_at: float | None
    reserved: int  # bytes of the budget it holds (its announced size)
    prefix: bytes = field(default_factory=lambda: secrets.token_bytes(8))
    chunks: int = 0
    size: int = 0
    complete: bool = False
    deleted: bool = False


class FileStore:
    """Kept files of every room under one directory, with a byte budget."""

    def __init__(self, root: Path, budget_bytes: int) -> None:
        self.root = root
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self._keys: dict[str, AESGCM] = {}
        self._files: dict[str, list[StoredFile]] = {}
        self._next = 1
        # Whatever an earlier process left is unreadable now (its keys died with it).
        if root.exists():
            shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True, mode=0o700)

    def begin(
        self, room: str, meta: dict[str, Any], size: int, now: float, retention_s: float | None
    ) -> StoredFile | None:
        """Start keeping a file of ``size`` bytes; None if the budget does not allow it."""
        if self.used_bytes + size > self.budget_bytes:
            return None
        if room not in self._keys:
            self._keys[room] = AESGCM(AESGCM.generate_key(bit_length=256))
        number = self._next
        self._next += 1
        path = self.root / f"{number}.sealed"
        path.touch(mode=0o600)
        expires = None if retention_s is None else now + retention_s
        stored = StoredFile(room, number, dict(meta), path, now, expires, size)
        self._files.setdefault(room, []).append(stored)
        self.used_bytes += size
        return stored

    def _aad(self, stored: StoredFile, index: int) -> bytes:
        return stored.number.to_bytes(8, "big") + index.to_bytes(4, "big")

    def _nonce(self, stored: StoredFile, index: int) -> bytes:
        return stored.prefix + index.to_bytes(4, "big")

    def append(self, stored: StoredFile, chunk: bytes) -> None:
        if stored.deleted or stored.complete:
            raise StoreError("the file is no longer open")
        if len(chunk) > MAX_CHUNK or stored.size + len(chunk) > stored.reserved:
            raise StoreError("more bytes than the file announced")
        key = self._keys[stored.room]
        index = stored.chunks
        sealed = key.encrypt(self._nonce(stored, index), chunk, self._aad(stored, index))
        with stored.path.open("ab") as out:
            out.write(_RECORD.pack(len(sealed)) + sealed)
        stored.chunks += 1
        stored.size += len(chunk)

    def finish(self, stored: StoredFile) -> None:
        stored.complete = True

    def read(self, stored: StoredFile) -> Iterator[bytes]:
        """The file's chunks in order, opened and checked (StoreError if tampered with)."""
        key = self._keys.get(stored.room)
        if key is None or stored.deleted:
            raise StoreError("the file was deleted")
        with stored.path.open("rb") as source:
            for index in range(stored.chunks):
                head = source.read(_RECORD.size)
                if len(head) != _RECORD.size:
                    raise StoreError("the file is truncated")
                (length,) = _RECORD.unpack(head)
                if length > MAX_CHUNK + TAG_BYTES:
                    raise StoreError("the file is corrupt")
                sealed = source.read(length)
                try:
                    yield key.decrypt(self._nonce(stored, index), sealed, self._aad(stored, index))
                except InvalidTag:
                    raise StoreError("a chunk failed authentication") from None

    def kept(self, room: str) -> list[StoredFile]:
        """The complete files a room keeps, oldest first."""
        return [f for f in self._files.get(room, []) if f.complete and not f.deleted]

    def delete(self, stored: StoredFile) -> None:
        if stored.deleted:
            return
        stored.deleted = True
        self.used_bytes -= stored.reserved
        try:
            stored.path.unlink()
        except FileNotFoundError:
            pass
        files = self._files.get(stored.room, [])
        if stored in files:
            files.remove(stored)
        if not files:
            self._files.pop(stored.room, None)
            self._keys.pop(stored.room, None)  # nothing of the room is readable now

    def delete_room(self, room: str) -> list[StoredFile]:
        """Delete every file a room keeps (its meeting ended); returns them for the audit."""
        files = list(self._files.get(room, []))
        for stored in files:
            self.delete(stored)
        self._keys.pop(room, None)
        return files

    def expire(self, now: float, room: str) -> list[StoredFile]:
        """Delete a room's files whose retention has run out; returns them for the audit."""
        gone = [
            f for f in self._files.get(room, []) if f.expires_at is not None and f.expires_at <= now
        ]
        for stored in gone:
            self.delete(stored)
        return gone

    def close(self) -> None:
        for room in list(self._files):
            self.delete_room(room)
        shutil.rmtree(self.root, ignore_errors=True)
