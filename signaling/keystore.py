"""Token signing keys on disk: several PEM files and a JSON index, with rotation.

    <data-dir>/keys/index.json          {"version": 1, "keys": [{"kid", "file", "algorithm",
                                          "created", "retired_at", "valid_until"}, ...]}
    <data-dir>/keys/signing-<kid>.pem   one private key each (mode 0600)
    <data-dir>/keys/tenants/<T>/...     the same layout: keys of tenant T only

A key is ES256 (EC P-256) or EdDSA (Ed25519). A key directory may also hold only
the public half of a key (``public-<kid>.pem``), imported from an identity provider
that signs tokens itself: it verifies and never signs. The operator's keys (the top
directory) may sign tokens of any tenant; a tenant's keys only tokens that claim
that tenant (signaling/tokens.py enforces it).

Exactly one key is current (``retired_at`` null): new tokens are signed with it.
Rotation adds a new current key and retires the previous one, which keeps verifying
tokens until its ``valid_until`` (the grace period). The index is replaced
atomically (write + rename) after the new PEM file exists, so a reader never sees a
kid without its key. A data directory from before key ids (a lone
``keys/signing-key.pem``) is migrated in place: that file becomes the current key,
with the kid it already had.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

__all__ = [
    "ALGORITHMS",
    "DEFAULT_GRACE_S",
    "KeyEntry",
    "KeyStore",
    "KeyStoreError",
    "kid_of",
    "tenant_stores",
]

log = logging.getLogger(__name__)

KEY_DIR_NAME = "keys"
INDEX_NAME = "index.json"
LOCK_NAME = ".index.lock"
TENANTS_DIR_NAME = "tenants"
LEGACY_KEY_FILE = "signing-key.pem"
ALGORITHM = "ES256"
ALGORITHMS = ("ES256", "EdDSA")
INDEX_VERSION = 1
DEFAULT_GRACE_S = 24 * 3600
MAX_KEYS = 64
_KID = re.compile(r"[0-9a-f]{16}")
_KEY_FILE = re.compile(r"signing-key\.pem|(signing|public)-[0-9a-f]{16}\.pem")
# Same as a token's tenant claim (signaling/tokens.py): also a safe directory name.
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class KeyStoreError(ValueError):
    """The key directory or its index is unusable."""


def kid_of(public_key: PublicKey) -> str:
    """Key id: the first 16 hex digits of SHA-256 over the DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One signing key as the index describes it (times are Unix seconds)."""

    kid: str
    file: str
    created: float
    retired_at: float | None = None
    valid_until: float | None = None
    algorithm: str = ALGORITHM

    def status(self, now: float) -> str:
        """ "current", "retired" (still verifying, in its grace period) or "expired"."""
        if self.retired_at is None:
            return "current"
        if self.valid_until is not None and now >= self.valid_until:
            return "expired"
        return "retired"

    def verifies_at(self, now: float) -> bool:
        return self.status(now) != "expired"

    @property
    def can_sign(self) -> bool:
        """False for an imported public key, which only verifies."""
        return not self.file.startswith("public-")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _entry(raw: object) -> KeyEntry:
    if not isinstance(raw, dict):
        raise KeyStoreError("index: every key must be an object")
    kid, file, algorithm = raw.get("kid"), raw.get("file"), raw.get("algorithm", ALGORITHM)
    if not isinstance(kid, str) or not _KID.fullmatch(kid):
        raise KeyStoreError(f"index: bad kid {kid!r}")
    # The file name is confined to the key directory: no paths, no other files.
    if not isinstance(file, str) or not _KEY_FILE.fullmatch(file):
        raise KeyStoreError(f"index: bad key file name for {kid}")
    if algorithm not in ALGORITHMS:
        raise KeyStoreError(f"index: key {kid} has unsupported algorithm {algorithm!r}")
    created = _number(raw.get("created"))
    if created is None:
        raise KeyStoreError(f"index: key {kid} has no creation time")
    times: list[float | None] = []
    for field_name in ("retired_at", "valid_until"):
        value = raw.get(field_name)
        number = None if value is None else _number(value)
        if value is not None and number is None:
            raise KeyStoreError(f"index: key {kid} has a bad {field_name}")
        times.append(number)
    return KeyEntry(kid, file, created, times[0], times[1], algorithm)


def parse_index(text: str) -> list[KeyEntry]:
    """Parse and check index.json: unique kids, exactly one current key."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise KeyStoreError(f"index is not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("version") != INDEX_VERSION:
        raise KeyStoreError(f"index must be an object with version {INDEX_VERSION}")
    raw_keys = document.get("keys")
    if not isinstance(raw_keys, list) or not 0 < len(raw_keys) <= MAX_KEYS:
        raise KeyStoreError(f"index must list 1 to {MAX_KEYS} keys")
    entries = [_entry(raw) for raw in raw_keys]
    if len({e.kid for e in entries}) != len(entries):
        raise KeyStoreError("index lists a kid twice")
    if sum(1 for e in entries if e.retired_at is None) != 1:
        raise KeyStoreError("index must have exactly one current key")
    return entries


def _index_text(entries: list[KeyEntry]) -> str:
    document: dict[str, Any] = {
        "version": INDEX_VERSION,
        "keys": [asdict(entry) for entry in entries],
    }
    return json.dumps(document, indent=2) + "\n"


class KeyStore:
    """The key directory of one data directory, or of one tenant in it."""

    def __init__(self, data_dir: Path, tenant: str | None = None) -> None:
        directory = Path(data_dir) / KEY_DIR_NAME
        if tenant is not None:
            if not _TENANT.fullmatch(tenant):
                raise KeyStoreError(f"bad tenant name {tenant!r}")
            directory = directory / TENANTS_DIR_NAME / tenant
        self.tenant = tenant
        self.directory = directory
        self.index_path = self.directory / INDEX_NAME

    # --- reading ---

    def exists(self) -> bool:
        return self.index_path.exists()

    def entries(self) -> list[KeyEntry]:
        """The index as it is on disk (KeyStoreError if missing or invalid)."""
        try:
            text = self.index_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise KeyStoreError(f"no key index at {self.index_path}") from None
        return parse_index(text)

    def index_signature(self) -> tuple[int, int, int] | None:
        """What changes when the index is replaced (None: no index)."""
        try:
            stat = self.index_path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def private_key(self, entry: KeyEntry) -> PrivateKey:
        """Load one key's PEM, tightening loose file permissions, and check its kid."""
        if not entry.can_sign:
            raise KeyStoreError(f"key {entry.kid} is an imported public key and cannot sign")
        path = self.directory / entry.file
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning(
                "token signing key was readable by others; restricting to 0600",
                extra={"path": str(path), "mode": oct(mode)},
            )
            os.chmod(path, 0o600)
        key = _load_private_pem(path, entry.algorithm)
        if kid_of(key.public_key()) != entry.kid:
            raise KeyStoreError(f"{path} does not hold the key with kid {entry.kid}")
        return key

    def public_key(self, entry: KeyEntry) -> PublicKey:
        """The key that verifies tokens signed under ``entry``."""
        if entry.can_sign:
            return self.private_key(entry).public_key()
        path = self.directory / entry.file
        key = load_public_pem(path.read_bytes())
        if _algorithm_of(key) != entry.algorithm or kid_of(key) != entry.kid:
            raise KeyStoreError(f"{path} does not hold the key with kid {entry.kid}")
        return key

    # --- writing ---

    def ensure(self, now: float) -> list[KeyEntry]:
        """Make sure an index exists: migrate a legacy key or create the first key."""
        self._ensure_directory()
        if self.index_path.exists():
            return self.entries()
        with self._locked():
            if self.index_path.exists():
                return self.entries()
            legacy = self.directory / LEGACY_KEY_FILE
            if legacy.exists():
                key = _load_private_pem(legacy, ALGORITHM)
                entry = KeyEntry(kid_of(key.public_key()), LEGACY_KEY_FILE, legacy.stat().st_mtime)
                log.info("migrated legacy token signing key", extra={"kid": entry.kid})
            else:
                entry = self._new_key(now, ALGORITHM)
                log.info("created token signing key", extra={"kid": entry.kid})
            self._write_index([entry])
            return [entry]

    def rotate(
        self, now: float, grace_s: float = DEFAULT_GRACE_S, algorithm: str = ALGORITHM
    ) -> KeyEntry:
        """Add a new current key; the previous one verifies for ``grace_s`` more seconds.

        Keys whose grace period has ended are removed from the index and the disk.
        A tenant's first rotation creates its key directory.
        """
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
        return self._add_current(now, grace_s, lambda: self._new_key(now, algorithm))

    def import_public(self, now: float, pem: bytes, grace_s: float = DEFAULT_GRACE_S) -> KeyEntry:
        """Make an identity provider's public key current (it verifies, never signs)."""
        key = load_public_pem(pem)
        kid = kid_of(key)
        name = f"public-{kid}.pem"

        def write() -> KeyEntry:
            if (self.directory / name).exists() or (self.directory / f"signing-{kid}.pem").exists():
                raise KeyStoreError(f"key {kid} is already in this key directory")
            text = key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            _write_atomically(self.directory / name, text, exclusive=True)
            return KeyEntry(kid, name, now, algorithm=_algorithm_of(key))

        return self._add_current(now, grace_s, write)

    def _add_current(self, now: float, grace_s: float, make: Callable[[], KeyEntry]) -> KeyEntry:
        if grace_s < 0:
            raise ValueError("grace must not be negative")
        if self.tenant is None:
            self.ensure(now)
        else:
            self._ensure_directory()
        with self._locked():
            entries = self.entries() if self.index_path.exists() else []
            kept: list[KeyEntry] = []
            for entry in entries:
                if entry.retired_at is None:
                    entry = KeyEntry(
                        entry.kid, entry.file, entry.created, now, now + grace_s, entry.algorithm
                    )
                if entry.verifies_at(now):
                    kept.append(entry)
            new = make()
            kept.append(new)
            self._write_index(kept[-MAX_KEYS:])
            kept_files = {entry.file for entry in kept[-MAX_KEYS:]}
            for entry in entries:
                if entry.file not in kept_files:
                    with contextlib.suppress(FileNotFoundError):
                        (self.directory / entry.file).unlink()
            log.info(
                "new current token key",
                extra={"kid": new.kid, "tenant": self.tenant, "grace_s": grace_s},
            )
            return new

    def _ensure_directory(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is filtered by the umask and ignored for existing dirs.
        os.chmod(self.directory, 0o700)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise writers (two `sfu keys rotate`, or a rotate and a first start)."""
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _new_key(self, now: float, algorithm: str) -> KeyEntry:
        private_key: PrivateKey = (
            ed25519.Ed25519PrivateKey.generate()
            if algorithm == "EdDSA"
            else ec.generate_private_key(ec.SECP256R1())
        )
        kid = kid_of(private_key.public_key())
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        name = f"signing-{kid}.pem"
        # O_EXCL + mode 0600 at creation: the key is never briefly world-readable.
        _write_atomically(self.directory / name, pem, exclusive=True)
        return KeyEntry(kid, name, now, algorithm=algorithm)

    def _write_index(self, entries: list[KeyEntry]) -> None:
        _write_atomically(self.index_path, _index_text(entries).encode(), exclusive=False)


def tenant_stores(data_dir: Path) -> list[KeyStore]:
    """The key directories of the tenants that have their own keys."""
    root = Path(data_dir) / KEY_DIR_NAME / TENANTS_DIR_NAME
    try:
        names = sorted(child.name for child in root.iterdir() if child.is_dir())
    except FileNotFoundError:
        return []
    return [KeyStore(data_dir, name) for name in names if _TENANT.fullmatch(name)]


def _algorithm_of(key: PublicKey) -> str:
    return "EdDSA" if isinstance(key, ed25519.Ed25519PublicKey) else "ES256"


def load_public_pem(pem: bytes) -> PublicKey:
    """An ES256 (P-256) or EdDSA (Ed25519) public key from PEM, else KeyStoreError."""
    try:
        loaded = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise KeyStoreError(f"not a PEM public key: {exc}") from None
    if isinstance(loaded, ed25519.Ed25519PublicKey):
        return loaded
    if isinstance(loaded, ec.EllipticCurvePublicKey) and isinstance(loaded.curve, ec.SECP256R1):
        return loaded
    raise KeyStoreError("public key must be EC P-256 (ES256) or Ed25519 (EdDSA)")


def _load_private_pem(path: Path, algorithm: str) -> PrivateKey:
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if algorithm == "EdDSA":
        if not isinstance(loaded, ed25519.Ed25519PrivateKey):
            raise KeyStoreError(f"{path} does not hold an Ed25519 private key")
        return loaded
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise KeyStoreError(f"{path} does not hold an EC private key")
    if not isinstance(loaded.curve, ec.SECP256R1):
        raise KeyStoreError(f"{path}: signing key must be on curve P-256")
    return loaded


def _write_atomically(path: Path, data: bytes, *, exclusive: bool) -> None:
    tmp_path = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp_path, path)  # never overwrites an existing key
        else:
            os.replace(tmp_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
