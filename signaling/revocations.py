"""Revoked tokens, by token id (``jti``) or by identity, persisted in the data directory.

    <data-dir>/revocations.json   {"version": 1, "revocations": [{"tenant", "jti" | "identity",
                                    "revoked_at", "expires_at", "actor"}, ...]}

An entry is scoped to one tenant: revoking ``alice`` in tenant ``acme`` never touches
``alice`` of another tenant. A ``jti`` entry refuses that one token; an ``identity``
entry refuses every token of the identity issued at or before ``revoked_at`` (the
identity provider may issue fresh tokens afterwards). Entries are dropped once the
tokens they cover would have expired (``expires_at``).

Writers (the server's admin API and `sfu revoke`) read, change and atomically replace
the file under an exclusive lock, so neither loses the other's entry. A running server
looks at the file every RELOAD_INTERVAL_S and, when it changed, applies the new
entries to live sessions. A file that does not parse is logged and the last good
entries stay in force.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from signaling.tokens import AccessToken

__all__ = [
    "DEFAULT_LIFETIME_S",
    "Revocation",
    "RevocationError",
    "RevocationStore",
]

log = logging.getLogger(__name__)

FILE_NAME = "revocations.json"
LOCK_NAME = ".revocations.lock"
VERSION = 1
RELOAD_INTERVAL_S = 0.5
# How long an entry lasts when the expiry of the tokens it covers is not known.
DEFAULT_LIFETIME_S = 30 * 24 * 3600
MAX_ENTRIES = 100_000
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_JTI = re.compile(r"[0-9A-Za-z_-]{1,64}")
MAX_IDENTITY_LEN = 128


class RevocationError(ValueError):
    """A revocation or the revocation file is invalid."""


@dataclass(frozen=True, slots=True)
class Revocation:
    """One revoked token (``jti``) or every earlier token of one identity."""

    tenant: str
    jti: str | None
    identity: str | None
    revoked_at: float
    expires_at: float
    actor: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.tenant, str) or not _TENANT.fullmatch(self.tenant):
            raise RevocationError("tenant invalid")
        if (self.jti is None) == (self.identity is None):
            raise RevocationError("give exactly one of jti and identity")
        if self.jti is not None and (not isinstance(self.jti, str) or not _JTI.fullmatch(self.jti)):
            raise RevocationError("jti must be 1-64 of A-Z a-z 0-9 _ -")
        if self.identity is not None and (
            not isinstance(self.identity, str)
            or not 0 < len(self.identity) <= MAX_IDENTITY_LEN
            or not self.identity.isprintable()
        ):
            raise RevocationError(f"identity must be 1-{MAX_IDENTITY_LEN} printable characters")
        for name in ("revoked_at", "expires_at"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RevocationError(f"{name} must be a number")
        if not isinstance(self.actor, str) or len(self.actor) > 256:
            raise RevocationError("actor must be a string of at most 256 characters")

    def covers(self, tenant: str, jti: str, identity: str, issued_at: float) -> bool:
        """Whether a token with these claims is revoked by this entry."""
        if tenant != self.tenant:
            return False
        if self.jti is not None:
            return jti == self.jti
        return identity == self.identity and issued_at <= self.revoked_at

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        return {key: value for key, value in body.items() if value is not None}

    @classmethod
    def from_json(cls, raw: object) -> Revocation:
        if not isinstance(raw, dict):
            raise RevocationError("every revocation must be an object")
        unknown = set(raw) - {"tenant", "jti", "identity", "revoked_at", "expires_at", "actor"}
        if unknown:
            raise RevocationError(f"unknown field {sorted(unknown)[0]!r}")
        return cls(
            tenant=raw.get("tenant"),  # type: ignore[arg-type]  # checked in __post_init__
            jti=raw.get("jti"),
            identity=raw.get("identity"),
            revoked_at=raw.get("revoked_at"),  # type: ignore[arg-type]
            expires_at=raw.get("expires_at"),  # type: ignore[arg-type]
            actor=raw.get("actor", ""),
        )


def parse_revocations(text: str) -> list[Revocation]:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise RevocationError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("version") != VERSION:
        raise RevocationError(f"must be an object with version {VERSION}")
    raw = document.get("revocations")
    if not isinstance(raw, list) or len(raw) > MAX_ENTRIES:
        raise RevocationError(f"revocations must be a list of at most {MAX_ENTRIES}")
    return [Revocation.from_json(entry) for entry in raw]


class RevocationStore:
    """The revocation file of one data directory, with an in-memory index."""

    def __init__(self, data_dir: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self._lock_path = Path(data_dir) / LOCK_NAME
        self._clock = clock
        self._by_jti: dict[tuple[str, str], Revocation] = {}
        self._by_identity: dict[tuple[str, str], Revocation] = {}
        self._signature: tuple[int, int, int] | None = None
        self._load()

    # --- reading ---

    def entries(self) -> list[Revocation]:
        """Entries in force now."""
        now = self._clock()
        return [
            entry
            for entry in [*self._by_jti.values(), *self._by_identity.values()]
            if entry.expires_at > now
        ]

    def check(self, tenant: str, jti: str, identity: str, issued_at: float) -> Revocation | None:
        """The entry that revokes a token with these claims, or None."""
        now = self._clock()
        for entry in (self._by_jti.get((tenant, jti)), self._by_identity.get((tenant, identity))):
            if (
                entry is not None
                and entry.expires_at > now
                and entry.covers(tenant, jti, identity, issued_at)
            ):
                return entry
        return None

    def reason(self, access: AccessToken) -> str | None:
        """For SigningKeys.revoked: why ``access`` is refused, or None."""
        entry = self.check(access.tenant, access.token_id, access.identity, access.issued_at)
        if entry is None:
            return None
        return "token revoked" if entry.jti is not None else "token revoked (identity)"

    def _signature_now(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def changed(self) -> bool:
        """The file differs from what was last loaded (one stat; refresh() loads it)."""
        return self._signature_now() != self._signature

    def refresh(self) -> bool:
        """Reload the file if it changed; True if it did (and parsed)."""
        if not self.changed():
            return False
        try:
            self._load()
        except (RevocationError, OSError) as exc:
            log.error("revocations not reloaded, keeping the last ones: %s", exc)
            return False
        return True

    def _load(self) -> None:
        signature = self._signature_now()
        entries = self._read()
        self._index(entries)
        self._signature = signature
        log.info("revocations loaded", extra={"entries": len(entries)})

    def _read(self) -> list[Revocation]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return parse_revocations(text)

    def _index(self, entries: list[Revocation]) -> None:
        by_jti: dict[tuple[str, str], Revocation] = {}
        by_identity: dict[tuple[str, str], Revocation] = {}
        for entry in entries:
            if entry.jti is not None:
                key, table = (entry.tenant, entry.jti), by_jti
            else:
                assert entry.identity is not None
                key, table = (entry.tenant, entry.identity), by_identity
            known = table.get(key)
            # Of two entries for one identity the later one covers more tokens.
            if known is None or (entry.revoked_at, entry.expires_at) > (
                known.revoked_at,
                known.expires_at,
            ):
                table[key] = entry
        self._by_jti, self._by_identity = by_jti, by_identity

    # --- writing ---

    def add(self, entry: Revocation) -> Revocation:
        """Persist ``entry`` (dropping expired ones) and put it in force at once."""
        now = self._clock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            entries = [e for e in self._read() if e.expires_at > now]
            if len(entries) >= MAX_ENTRIES:
                raise RevocationError(f"more than {MAX_ENTRIES} revocations in force")
            entries.append(entry)
            document = {"version": VERSION, "revocations": [e.to_json() for e in entries]}
            _write_atomically(self.path, (json.dumps(document, indent=1) + "\n").encode())
            self._index(entries)
            self._signature = self._signature_now()
        log.info(
            "token revoked",
            extra={"tenant": entry.tenant, "by": "jti" if entry.jti else "identity"},
        )
        return entry

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp_path = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
