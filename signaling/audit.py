"""A tamper-evident audit log: hash-chained SQLite records, each with an HMAC.

Record n holds hash_n = SHA-256(hash_{n-1} || canonical content of n) and
mac_n = HMAC-SHA256(key, n || hash_n). The key lives in <data-dir>/keys/, apart from
the database, so whoever can edit the database cannot forge a record. The chain head
and its record count are checkpointed, signed with the same key, in a file outside
the database, so cutting records off the end is caught too.

`verify` finds: an edited record (hash), a re-hashed edit without the key (MAC), a
deleted record (sequence gap), an inserted or reordered record (broken chain), and a
truncated log (checkpoint). Writes go through a bounded queue to one writer thread:
the event loop, and so media, never waits for the disk; overflow is counted and
recorded as an event of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

GENESIS = "0" * 64
QUEUE_SIZE = 10_000
CHECKPOINT_INTERVAL_S = 5.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    event TEXT NOT NULL,
    actor TEXT NOT NULL,
    room TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    mac TEXT NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class AuditPaths:
    database: Path
    checkpoint: Path
    key: Path

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> AuditPaths:
        return cls(
            data_dir / "audit" / "audit.db",
            data_dir / "audit" / "checkpoint.json",
            data_dir / "keys" / "audit-hmac.key",
        )


def load_or_create_key(path: Path) -> bytes:
    """32 random bytes, created once with mode 0600 in a 0700 directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) != 32:
            raise ValueError(f"{path}: audit key must be 32 bytes") from None
        return key
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


def _content(seq: int, ts: float, event: str, actor: str, room: str, detail: str) -> bytes:
    return json.dumps(
        [seq, repr(ts), event, actor, room, detail], ensure_ascii=False, separators=(",", ":")
    ).encode()


def _chain(prev_hash: str, content: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + content).hexdigest()


def _mac(key: bytes, seq: int, record_hash: str) -> str:
    return hmac.new(key, f"{seq}:{record_hash}".encode(), hashlib.sha256).hexdigest()


def _checkpoint_mac(key: bytes, count: int, head: str) -> str:
    return hmac.new(key, f"checkpoint:{count}:{head}".encode(), hashlib.sha256).hexdigest()


class AuditStore:
    """The database and checkpoint; used by one thread at a time."""

    def __init__(self, paths: AuditPaths, key: bytes) -> None:
        self.paths = paths
        self.key = key
        paths.database.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(paths.database, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(_SCHEMA)
        row = self.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        self.count: int = row[0] if row else 0
        self.head: str = row[1] if row else GENESIS

    def append(self, events: list[tuple[float, str, str, str, dict[str, Any]]]) -> None:
        rows = []
        for ts, event, actor, room, detail in events:
            seq = self.count + 1
            detail_text = json.dumps(detail, sort_keys=True, ensure_ascii=False, default=str)
            record_hash = _chain(self.head, _content(seq, ts, event, actor, room, detail_text))
            rows.append(
                (seq, ts, event, actor, room, detail_text, self.head, record_hash,
                 _mac(self.key, seq, record_hash))
            )  # fmt: skip
            self.count, self.head = seq, record_hash
        with self.db:
            self.db.executemany("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?)", rows)

    def checkpoint(self) -> None:
        """Write the signed head atomically next to (not inside) the database."""
        body = {
            "count": self.count,
            "head": self.head,
            "ts": time.time(),
            "mac": _checkpoint_mac(self.key, self.count, self.head),
        }
        tmp = self.paths.checkpoint.with_suffix(".tmp")
        tmp.write_text(json.dumps(body))
        os.replace(tmp, self.paths.checkpoint)

    def close(self) -> None:
        self.db.close()


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    records: int
    first_bad: int | None = None
    reason: str = ""


def verify(paths: AuditPaths) -> VerifyResult:
    """Walk the whole chain; report the first record that is not what was written."""
    if not paths.database.exists():
        return VerifyResult(False, 0, None, f"no audit database at {paths.database}")
    key = paths.key.read_bytes()
    db = sqlite3.connect(f"file:{paths.database}?mode=ro", uri=True)
    try:
        prev, expected = GENESIS, 1
        rows = db.execute(
            "SELECT seq, ts, event, actor, room, detail, prev_hash, hash, mac "
            "FROM audit ORDER BY seq"
        )
        for seq, ts, event, actor, room, detail, prev_hash, record_hash, mac in rows:
            if seq != expected:
                what = "deleted" if seq > expected else "duplicated"
                return VerifyResult(False, expected - 1, expected, f"record {expected} {what}")
            if prev_hash != prev:
                return VerifyResult(
                    False,
                    seq - 1,
                    seq,
                    f"record {seq} does not follow record {seq - 1} (inserted or reordered)",
                )
            if _chain(prev_hash, _content(seq, ts, event, actor, room, detail)) != record_hash:
                return VerifyResult(False, seq - 1, seq, f"record {seq} was edited")
            if not hmac.compare_digest(_mac(key, seq, record_hash), mac):
                return VerifyResult(False, seq - 1, seq, f"record {seq} has an invalid MAC")
            prev, expected = record_hash, expected + 1
        count = expected - 1
        return _verify_checkpoint(paths, key, db, count)
    finally:
        db.close()


def _verify_checkpoint(
    paths: AuditPaths, key: bytes, db: sqlite3.Connection, count: int
) -> VerifyResult:
    if not paths.checkpoint.exists():
        if count == 0:
            return VerifyResult(True, 0)
        return VerifyResult(False, count, None, "checkpoint file missing")
    try:
        checkpoint = json.loads(paths.checkpoint.read_text())
        cp_count, cp_head = int(checkpoint["count"]), str(checkpoint["head"])
        cp_mac = str(checkpoint["mac"])
    except (ValueError, KeyError, TypeError):
        return VerifyResult(False, count, None, "checkpoint file unreadable")
    if not hmac.compare_digest(_checkpoint_mac(key, cp_count, cp_head), cp_mac):
        return VerifyResult(False, count, None, "checkpoint has an invalid MAC")
    if count < cp_count:
        return VerifyResult(
            False, count, count + 1, f"records {count + 1}..{cp_count} missing (log truncated)"
        )
    if cp_count:
        row = db.execute("SELECT hash FROM audit WHERE seq = ?", (cp_count,)).fetchone()
        if row is None or row[0] != cp_head:
            return VerifyResult(
                False, count, cp_count, f"record {cp_count} differs from checkpoint"
            )
    return VerifyResult(True, count)


def export(
    paths: AuditPaths, since: float | None = None, after_seq: int = 0
) -> Iterator[dict[str, Any]]:
    """Records from ``since`` (a time) and after ``after_seq``, oldest first."""
    db = sqlite3.connect(f"file:{paths.database}?mode=ro", uri=True)
    try:
        query = (
            "SELECT seq, ts, event, actor, room, detail, hash FROM audit"
            " WHERE seq > ? AND ts >= ? ORDER BY seq"
        )
        rows = db.execute(query, (after_seq, since or 0))
        for seq, ts, event, actor, room, detail, record_hash in rows:
            yield {
                "seq": seq,
                "ts": ts,
                "event": event,
                "actor": actor,
                "room": room,
                "detail": json.loads(detail),
                "hash": record_hash,
            }
    finally:
        db.close()


class AuditLog:
    """Non-blocking front: `record` never waits; one thread writes in batches."""

    def __init__(self, paths: AuditPaths, queue_size: int = QUEUE_SIZE) -> None:
        self.paths = paths
        self.store = AuditStore(paths, load_or_create_key(paths.key))
        self._queue: queue.Queue[tuple[float, str, str, str, dict[str, Any]] | None] = queue.Queue(
            maxsize=queue_size
        )
        self.dropped = 0  # events lost to a full queue
        self._reported_dropped = 0
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def record(self, event: str, actor: str = "", room: str = "", **detail: Any) -> None:
        try:
            self._queue.put_nowait((time.time(), event, actor, room, detail))
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        last_checkpoint = time.monotonic()
        stop = False
        while not stop:
            batch: list[tuple[float, str, str, str, dict[str, Any]]] = []
            try:
                first = self._queue.get(timeout=CHECKPOINT_INTERVAL_S)
                if first is None:
                    stop = True
                else:
                    batch.append(first)
            except queue.Empty:
                pass
            while not stop and len(batch) < 500:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                else:
                    batch.append(more)
            if self.dropped != self._reported_dropped:
                lost = self.dropped - self._reported_dropped
                self._reported_dropped = self.dropped
                batch.append((time.time(), "audit_overflow", "sfu", "", {"lost_events": lost}))
            try:
                if batch:
                    self.store.append(batch)
                if stop or time.monotonic() - last_checkpoint >= CHECKPOINT_INTERVAL_S:
                    self.store.checkpoint()
                    last_checkpoint = time.monotonic()
            except (sqlite3.Error, OSError):
                log.exception("audit write failed")

    def close(self) -> None:
        """Flush everything queued, checkpoint, close (called at shutdown)."""
        self._queue.put(None)
        self._thread.join(timeout=10)
        with contextlib.suppress(sqlite3.Error):
            self.store.close()
