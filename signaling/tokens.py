"""Signed access tokens (JWT, ES256) that admit a participant to one room.

Tokens are issued and verified with a single EC P-256 key kept in the data
directory. Verification fails closed: anything unexpected about a token is
reported as ``TokenError("unauthorized", ...)`` and never echoes the token.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "ROLE_GRANTS",
    "AccessToken",
    "SigningKeys",
    "TokenError",
]

logger = logging.getLogger(__name__)

ROLE_GRANTS: dict[str, frozenset[str]] = {
    "participant": frozenset({"publish", "subscribe"}),
    "viewer": frozenset({"subscribe"}),
}

ISSUER = "sfu"
ALGORITHM = "ES256"
LEEWAY_S = 5.0
MAX_FIELD_LEN = 128
# Real tokens are a few hundred bytes; the cap keeps hostile input from
# costing base64/JSON work before we reject it.
MAX_TOKEN_LEN = 4096
KEY_DIR_NAME = "keys"
KEY_FILE_NAME = "signing-key.pem"

_REQUIRED_CLAIMS = ("iss", "sub", "room", "role", "iat", "nbf", "exp", "jti")
# Compact JWS: three base64url segments. Checking the shape up front means the
# decoder only ever sees ASCII of the expected form.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_JTI = re.compile(r"[0-9A-Za-z_-]{1,64}")
_TOKEN_ERROR_CODES = frozenset({"unauthorized", "forbidden"})


class TokenError(Exception):
    """A token was rejected.

    ``code`` is "unauthorized" (the token itself is bad) or "forbidden" (the
    token is valid but not for this room/action). ``message`` says why and
    never contains the token.
    """

    def __init__(self, code: str, message: str) -> None:
        if code not in _TOKEN_ERROR_CODES:
            raise ValueError(f"unknown token error code: {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"TokenError({self.code!r}, {self.message!r})"


@dataclass(frozen=True)
class AccessToken:
    """The verified contents of an access token."""

    identity: str
    room: str
    role: str
    grants: frozenset[str]
    name: str
    token_id: str
    expires_at: float

    def require(self, room: str, grant: str | None = None) -> None:
        """Raise ``TokenError("forbidden")`` unless the token covers ``room`` and ``grant``."""
        if room != self.room:
            raise TokenError("forbidden", "token is for another room")
        if grant is not None and grant not in self.grants:
            raise TokenError("forbidden", f"token does not grant {grant}")


def _has_forbidden_chars(value: str, categories: frozenset[str]) -> bool:
    return any(unicodedata.category(ch) in categories for ch in value)


# Identities and room names end up in logs, UIs and routing keys, so besides
# control characters we refuse invisible format characters (bidi overrides,
# zero-width spaces) that allow look-alike spoofing, and lone surrogates,
# which cannot be encoded as UTF-8. Display names may keep format characters
# because emoji sequences rely on zero-width joiners.
_ID_FORBIDDEN = frozenset({"Cc", "Cf", "Cs"})
_NAME_FORBIDDEN = frozenset({"Cc", "Cs"})


def _field_problem(value: object, forbidden: frozenset[str]) -> str | None:
    """Return why ``value`` is not an acceptable short text field, or None."""
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "must not be empty"
    if len(value) > MAX_FIELD_LEN:
        return f"must be at most {MAX_FIELD_LEN} characters"
    if _has_forbidden_chars(value, forbidden):
        return "must not contain control characters"
    return None


def _numeric_date(value: object) -> float | None:
    """Return a JWT NumericDate as float, or None if it is not a finite number."""
    # bool is an int subclass; true/false must not pass as timestamps.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def _unauthorized(reason: str) -> TokenError:
    logger.debug("access token rejected", extra={"reason": reason})
    return TokenError("unauthorized", reason)


class SigningKeys:
    """The server's token signing key (EC P-256) and its key id."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ValueError("signing key must be on curve P-256")
        self._private_key = private_key
        self._public_key = private_key.public_key()
        public_der = self._public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid: str = hashlib.sha256(public_der).hexdigest()[:16]

    @classmethod
    def load_or_create(cls, data_dir: Path) -> SigningKeys:
        """Load ``<data_dir>/keys/signing-key.pem``, creating it (mode 0600) on first use."""
        key_dir = Path(data_dir) / KEY_DIR_NAME
        key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is filtered by the umask and ignored for existing dirs.
        os.chmod(key_dir, 0o700)
        key_path = key_dir / KEY_FILE_NAME
        if not key_path.exists():
            created = _create_key_file(key_path)
            if created is not None:
                keys = cls(created)
                logger.info(
                    "created token signing key", extra={"path": str(key_path), "kid": keys.kid}
                )
                return keys
        mode = key_path.stat().st_mode & 0o777
        if mode & 0o077:
            logger.warning(
                "token signing key was readable by others; restricting to 0600",
                extra={"path": str(key_path), "mode": oct(mode)},
            )
            os.chmod(key_path, 0o600)
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} does not hold an EC private key")
        keys = cls(loaded)
        logger.info("loaded token signing key", extra={"path": str(key_path), "kid": keys.kid})
        return keys

    def issue(
        self,
        *,
        identity: str,
        room: str,
        role: str = "participant",
        ttl_s: int = 3600,
        name: str | None = None,
        now: float | None = None,
    ) -> str:
        """Return a signed token admitting ``identity`` to ``room`` for ``ttl_s`` seconds."""
        if role not in ROLE_GRANTS:
            raise ValueError(f"unknown role: {role!r}")
        for label, value, forbidden in (
            ("identity", identity, _ID_FORBIDDEN),
            ("room", room, _ID_FORBIDDEN),
            ("name", identity if name is None else name, _NAME_FORBIDDEN),
        ):
            problem = _field_problem(value, forbidden)
            if problem is not None:
                raise ValueError(f"{label} {problem}")
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s <= 0:
            raise ValueError("ttl_s must be a positive integer")
        issued_at = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": identity,
            "room": room,
            "role": role,
            "grants": sorted(ROLE_GRANTS[role]),
            "name": identity if name is None else name,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + ttl_s,
            "jti": secrets.token_hex(16),
        }
        return jwt.encode(claims, self._private_key, algorithm=ALGORITHM, headers={"kid": self.kid})

    def verify(self, token: str, now: float | None = None) -> AccessToken:
        """Check ``token`` and return its contents, or raise ``TokenError("unauthorized")``."""
        if not isinstance(token, str) or not token:
            raise _unauthorized("token missing")
        if len(token) > MAX_TOKEN_LEN:
            raise _unauthorized("token too long")
        if not _COMPACT_JWS.fullmatch(token):
            raise _unauthorized("token malformed")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise _unauthorized("token malformed") from None
        # Checked before any key use so "none"/HMAC tokens never reach a verifier
        # (the HS256-with-public-key confusion attack depends on that).
        if header.get("alg") != ALGORITHM:
            raise _unauthorized("unsupported token algorithm")
        kid = header.get("kid")
        if kid is not None and kid != self.kid:
            raise _unauthorized("token signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=[ALGORITHM],
                # Time and claim checks are done below so that ``now`` is honoured
                # exactly and every claim is type-checked the same way.
                options={
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_iss": False,
                    "verify_sub": False,
                    "verify_jti": False,
                    "verify_aud": True,
                },
            )
        except jwt.InvalidSignatureError:
            raise _unauthorized("token signature invalid") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise _unauthorized("token malformed") from None
        return self._check_claims(claims, time.time() if now is None else now)

    def _check_claims(self, claims: dict[str, Any], now: float) -> AccessToken:
        for claim in _REQUIRED_CLAIMS:
            if claim not in claims:
                raise _unauthorized(f"token missing claim {claim}")
        if claims["iss"] != ISSUER:
            raise _unauthorized("token issuer invalid")

        exp = _numeric_date(claims["exp"])
        nbf = _numeric_date(claims["nbf"])
        iat = _numeric_date(claims["iat"])
        if exp is None or nbf is None or iat is None:
            raise _unauthorized("token time claims invalid")
        if exp <= now - LEEWAY_S:
            raise _unauthorized("token expired")
        if nbf > now + LEEWAY_S:
            raise _unauthorized("token not yet valid")
        if iat > now + LEEWAY_S:
            raise _unauthorized("token issued in the future")

        identity = claims["sub"]
        room = claims["room"]
        name = claims.get("name", identity)
        for label, value, forbidden in (
            ("identity", identity, _ID_FORBIDDEN),
            ("room", room, _ID_FORBIDDEN),
            ("name", name, _NAME_FORBIDDEN),
        ):
            problem = _field_problem(value, forbidden)
            if problem is not None:
                raise _unauthorized(f"token {label} {problem}")

        role = claims["role"]
        if not isinstance(role, str) or role not in ROLE_GRANTS:
            raise _unauthorized("token role invalid")
        grants = ROLE_GRANTS[role]
        if "grants" in claims:
            raw = claims["grants"]
            if not isinstance(raw, list) or not all(isinstance(g, str) for g in raw):
                raise _unauthorized("token grants invalid")
            # A token may narrow its role's grants but never widen them.
            if not set(raw) <= grants:
                raise _unauthorized("token grants exceed role")
            grants = frozenset(raw)

        jti = claims["jti"]
        if not isinstance(jti, str) or not _JTI.fullmatch(jti):
            raise _unauthorized("token id invalid")

        return AccessToken(
            identity=identity,
            room=room,
            role=role,
            grants=grants,
            name=name,
            token_id=jti,
            expires_at=exp,
        )


def _create_key_file(key_path: Path) -> ec.EllipticCurvePrivateKey | None:
    """Create a new key at ``key_path``; None if another process created one first."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp_path = key_path.with_name(f".{key_path.name}.{secrets.token_hex(8)}.tmp")
    # O_EXCL + mode 0600 at creation: the key is never briefly world-readable.
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        # link() never overwrites, so two servers starting together agree on one
        # key, and readers never see a half-written file.
        try:
            os.link(tmp_path, key_path)
        except FileExistsError:
            return None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
    return private_key
