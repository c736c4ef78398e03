"""Signed access tokens (JWT, ES256 or EdDSA): who may do what in which room of which tenant.

Claims (docs/TOKENS.md, docs/token.schema.json): ``iss``, ``sub`` (identity),
``name``, ``tenant``, ``room``, ``iat``/``nbf``/``exp``, ``jti``, ``mfa``, ``attrs``
and ``grants``. Tokens name their signing key with ``kid`` in the header; the key
ring (signaling/keystore.py) is reloaded when its index changes, so rotated keys
take effect without a restart. Verification fails closed: anything unexpected is
``TokenError("unauthorized", ...)``, whose message never echoes the token.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from signaling.keystore import (
    ALGORITHMS,
    KeyEntry,
    KeyStore,
    KeyStoreError,
    PrivateKey,
    PublicKey,
    tenant_stores,
)

__all__ = [
    "DEFAULT_TENANT",
    "GRANTS",
    "PUBLISH_GRANTS",
    "ROLE_GRANTS",
    "AccessToken",
    "AttrValue",
    "SigningKeys",
    "TokenError",
]

logger = logging.getLogger(__name__)

# Every grant a token may carry; anything else is refused.
GRANTS: tuple[str, ...] = (
    "publish:audio",
    "publish:video",
    "publish:screen",
    "publish:control",
    "publish:file",
    "subscribe",
    "record",
    "moderate",
    "admin",
)
PUBLISH_GRANTS = frozenset(g for g in GRANTS if g.startswith("publish:"))
# The presets `sfu token --role` expands to.
ROLE_GRANTS: dict[str, frozenset[str]] = {
    "participant": PUBLISH_GRANTS | {"subscribe"},
    "viewer": frozenset({"subscribe"}),
}
# Tokens from before grants (a `role` claim and grants "publish"/"subscribe") are
# still accepted while they live; "publish" stands for every publish:* grant.
_LEGACY_ROLE_GRANTS: dict[str, frozenset[str]] = {
    "participant": frozenset({"publish", "subscribe"}),
    "viewer": frozenset({"subscribe"}),
}

DEFAULT_TENANT = "default"
ISSUER = "sfu"
LEEWAY_S = 5.0
MAX_FIELD_LEN = 128
MAX_ATTRS = 16
MAX_ATTR_VALUE_LEN = 128
MAX_MFA = 2
MAX_SAFE_INT = 2**53 - 1
# Index changes are noticed within this time; it also bounds how often a token with
# an unknown kid can make the server look at the disk.
RELOAD_INTERVAL_S = 1.0
# Real tokens are well under a kilobyte; the cap keeps hostile input from costing
# base64/JSON work before we reject it.
MAX_TOKEN_LEN = 8192

_REQUIRED_CLAIMS = ("iss", "sub", "room", "iat", "nbf", "exp", "jti")
_KNOWN_CLAIMS = frozenset({*_REQUIRED_CLAIMS, "name", "tenant", "mfa", "attrs", "grants", "role"})
# Compact JWS: three base64url segments. Checking the shape up front means the
# decoder only ever sees ASCII of the expected form.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_JTI = re.compile(r"[0-9A-Za-z_-]{1,64}")
_KID = re.compile(r"[0-9a-f]{16}")
# Tenants prefix media-plane room keys ("tenant/room"), so they never contain "/".
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ATTR_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
_TOKEN_ERROR_CODES = frozenset({"unauthorized", "forbidden"})

AttrValue = bool | int | str


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
    grants: frozenset[str]
    name: str
    token_id: str
    expires_at: float
    tenant: str = DEFAULT_TENANT
    mfa: int = 0
    attrs: Mapping[str, AttrValue] = field(default_factory=dict)
    kid: str = ""
    issued_at: float = 0.0

    @property
    def role(self) -> str:
        """The preset these grants equal ("participant", "viewer"), else "custom"."""
        for role, grants in ROLE_GRANTS.items():
            if grants == self.grants:
                return role
        return "custom"

    @property
    def room_key(self) -> str:
        """The media plane's name for the room: unique across tenants."""
        return f"{self.tenant}/{self.room}"

    @property
    def can_publish(self) -> bool:
        return bool(self.grants & PUBLISH_GRANTS)

    def require(self, room: str, grant: str | None = None) -> None:
        """Raise ``TokenError("forbidden")`` unless the token covers ``room`` and ``grant``."""
        if room != self.room:
            raise TokenError("forbidden", "token is for another room")
        if grant is not None:
            self.require_grant(grant)

    def require_grant(self, grant: str) -> None:
        """Raise ``TokenError("forbidden")`` naming ``grant`` unless the token has it."""
        if grant not in self.grants:
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


def _field_problem(
    value: object, forbidden: frozenset[str], max_len: int = MAX_FIELD_LEN
) -> str | None:
    """Return why ``value`` is not an acceptable short text field, or None."""
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "must not be empty"
    if len(value) > max_len:
        return f"must be at most {max_len} characters"
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


def _check_grants(claims: Mapping[str, Any]) -> frozenset[str]:
    if "role" in claims:
        return _check_legacy_grants(claims)
    if "grants" not in claims:
        raise _unauthorized("token missing claim grants")
    raw = claims["grants"]
    if not isinstance(raw, list) or len(raw) > len(GRANTS):
        raise _unauthorized(f"token grants must be a list of at most {len(GRANTS)} grants")
    for grant in raw:
        if not isinstance(grant, str):
            raise _unauthorized("token grants must be strings")
        if grant not in GRANTS:
            raise _unauthorized(f"token grant {grant[:40]!r} unknown")
    if len(set(raw)) != len(raw):
        raise _unauthorized("token grants repeat a grant")
    return frozenset(raw)


def _check_legacy_grants(claims: Mapping[str, Any]) -> frozenset[str]:
    role = claims["role"]
    if not isinstance(role, str) or role not in _LEGACY_ROLE_GRANTS:
        raise _unauthorized("token role invalid")
    legacy = _LEGACY_ROLE_GRANTS[role]
    if "grants" in claims:
        raw = claims["grants"]
        if not isinstance(raw, list) or not all(isinstance(g, str) for g in raw):
            raise _unauthorized("token grants invalid")
        # A legacy token may narrow its role's grants but never widen them.
        if not set(raw) <= legacy:
            raise _unauthorized("token grants exceed role")
        legacy = frozenset(raw)
    grants = set(legacy - {"publish"})
    if "publish" in legacy:
        grants |= PUBLISH_GRANTS
    return frozenset(grants)


def _check_attrs(raw: object) -> dict[str, AttrValue]:
    if not isinstance(raw, dict) or len(raw) > MAX_ATTRS:
        raise _unauthorized(f"token attrs must be an object of at most {MAX_ATTRS} entries")
    attrs: dict[str, AttrValue] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not _ATTR_KEY.fullmatch(key):
            raise _unauthorized("token attrs key invalid")
        if isinstance(value, bool):
            pass
        elif isinstance(value, int):
            if abs(value) > MAX_SAFE_INT:
                raise _unauthorized(f"token attrs[{key!r}] out of range")
        elif isinstance(value, str):
            problem = _field_problem(value, _NAME_FORBIDDEN, MAX_ATTR_VALUE_LEN)
            if problem is not None and value:
                raise _unauthorized(f"token attrs[{key!r}] {problem}")
        else:
            raise _unauthorized(f"token attrs[{key!r}] must be a boolean, integer or string")
        attrs[key] = value
    return attrs


def check_claims(claims: Mapping[str, Any], now: float, kid: str = "") -> AccessToken:
    """Validate a token's claims strictly; ``TokenError("unauthorized")`` says what is wrong."""
    for claim in claims:
        if claim not in _KNOWN_CLAIMS:
            raise _unauthorized(f"token has unknown claim {claim[:40]!r}")
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

    tenant = claims.get("tenant", DEFAULT_TENANT)
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        raise _unauthorized("token tenant must be 1-64 of A-Z a-z 0-9 . _ - (no '/')")

    mfa = claims.get("mfa", 0)
    if isinstance(mfa, bool) or not isinstance(mfa, int) or not 0 <= mfa <= MAX_MFA:
        raise _unauthorized(f"token mfa must be an integer from 0 to {MAX_MFA}")

    attrs = _check_attrs(claims.get("attrs", {}))
    grants = _check_grants(claims)

    jti = claims["jti"]
    if not isinstance(jti, str) or not _JTI.fullmatch(jti):
        raise _unauthorized("token id invalid")

    return AccessToken(
        identity=identity,
        room=room,
        grants=grants,
        name=name,
        token_id=jti,
        expires_at=exp,
        tenant=tenant,
        mfa=mfa,
        attrs=attrs,
        kid=kid,
        issued_at=iat,
    )


@dataclass
class _KeyRing:
    """The loaded keys of one key directory (the operator's or one tenant's)."""

    store: KeyStore
    entries: dict[str, KeyEntry]
    public: dict[str, PublicKey]
    private: dict[str, PrivateKey]
    signature: tuple[int, int, int] | None

    @classmethod
    def load(cls, store: KeyStore, previous: _KeyRing | None = None) -> _KeyRing:
        signature = store.index_signature()
        entries = store.entries()
        old_private = previous.private if previous else {}
        old_public = previous.public if previous else {}
        private: dict[str, PrivateKey] = {}
        public: dict[str, PublicKey] = {}
        for entry in entries:
            if entry.can_sign:
                private[entry.kid] = old_private.get(entry.kid) or store.private_key(entry)
                public[entry.kid] = private[entry.kid].public_key()
            else:
                public[entry.kid] = old_public.get(entry.kid) or store.public_key(entry)
        return cls(store, {e.kid: e for e in entries}, public, private, signature)

    @property
    def current(self) -> KeyEntry:
        return next(entry for entry in self.entries.values() if entry.retired_at is None)


class SigningKeys:
    """The server's token keys: issue with a current key, verify by kid.

    The operator's keys (``<data-dir>/keys/``) sign tokens of any tenant. A tenant's
    own keys (``<data-dir>/keys/tenants/<T>/``, made by ``sfu keys rotate --tenant``
    or imported from its identity provider) verify only tokens that claim tenant T,
    so one tenant's key can never mint access to another tenant.
    """

    def __init__(self, store: KeyStore, *, clock: Callable[[], float] = time.monotonic) -> None:
        if store.tenant is not None:
            raise ValueError("SigningKeys opens the operator's key directory")
        self._store = store
        self._data_dir = store.directory.parent
        self._clock = clock
        self._operator = _KeyRing.load(store)
        self._tenants: dict[str, _KeyRing] = {}
        self._owners: dict[str, list[tuple[str | None, KeyEntry]]] = {}
        self._checked_at = clock()
        # Says why a verified token is revoked, or None (signaling/revocations.py).
        self.revoked: Callable[[AccessToken], str | None] | None = None
        # Told (tenant or None, current kid, kids) when a key directory changes on disk.
        self.on_change: Callable[[str | None, str, list[str]], None] | None = None
        self._load_tenants(initial=True)

    @classmethod
    def load_or_create(
        cls,
        data_dir: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: float | None = None,
    ) -> SigningKeys:
        """Open ``<data_dir>/keys/`` (creating or migrating it on first use)."""
        KeyStore(data_dir).ensure(time.time() if now is None else now)
        return cls(KeyStore(data_dir), clock=clock)

    @property
    def kid(self) -> str:
        """The id of the operator's current key, which signs new tokens by default."""
        return self._operator.current.kid

    def entries(self, tenant: str | None = None) -> list[KeyEntry]:
        """The operator's keys, or tenant ``tenant``'s own keys (empty if it has none)."""
        ring = self._operator if tenant is None else self._tenants.get(tenant)
        return list(ring.entries.values()) if ring else []

    def _index(self) -> None:
        owners: dict[str, list[tuple[str | None, KeyEntry]]] = {}
        rings: list[tuple[str | None, _KeyRing]] = [(None, self._operator)]
        rings += list(self._tenants.items())
        for tenant, ring in rings:
            for entry in ring.entries.values():
                owners.setdefault(entry.kid, []).append((tenant, entry))
        self._owners = owners

    def _load_tenants(self, *, initial: bool) -> None:
        found: dict[str, _KeyRing] = {}
        for store in tenant_stores(self._data_dir):
            assert store.tenant is not None
            old = self._tenants.get(store.tenant)
            if old is not None and store.index_signature() == old.signature:
                found[store.tenant] = old
                continue
            if not store.exists():
                continue
            try:
                ring = _KeyRing.load(store, old)
            except (KeyStoreError, OSError, ValueError) as exc:
                logger.error(
                    "tenant %s keys not loaded, keeping the last ones: %s", store.tenant, exc
                )
                if old is not None:
                    found[store.tenant] = old
                continue
            found[store.tenant] = ring
            kids = list(ring.entries)
            logger.info("tenant token keys loaded", extra={"tenant": store.tenant, "kids": kids})
            if not initial:
                self._changed(store.tenant, ring)
        self._tenants = found
        self._index()

    def _changed(self, tenant: str | None, ring: _KeyRing) -> None:
        if self.on_change is not None:
            self.on_change(tenant, ring.current.kid, list(ring.entries))

    def refresh(self) -> None:
        """Reload key indexes that changed (looked at once per RELOAD_INTERVAL_S at most)."""
        now = self._clock()
        if now - self._checked_at < RELOAD_INTERVAL_S:
            return
        self._checked_at = now
        if self._store.index_signature() != self._operator.signature:
            try:
                self._operator = _KeyRing.load(self._store, self._operator)
            except (KeyStoreError, OSError, ValueError) as exc:
                logger.error("token signing keys not reloaded, keeping the last ones: %s", exc)
            else:
                kids = list(self._operator.entries)
                logger.info("token signing keys loaded", extra={"kids": kids})
                self._changed(None, self._operator)
        self._load_tenants(initial=False)

    def _signing_key(self, tenant: str, kid: str | None, when: float) -> tuple[str, PrivateKey]:
        if kid is None:
            ring = self._tenants.get(tenant)
            if ring is None or not ring.current.can_sign:
                ring = self._operator
            kid = ring.current.kid
        for owner, entry in self._owners.get(kid, []):
            if owner not in (None, tenant) or not entry.can_sign or not entry.verifies_at(when):
                continue
            ring = self._operator if owner is None else self._tenants[owner]
            return kid, ring.private[kid]
        raise ValueError(f"no usable signing key with kid {kid!r} for tenant {tenant!r}")

    def issue(
        self,
        *,
        identity: str,
        room: str,
        role: str | None = None,
        grants: Iterable[str] | None = None,
        tenant: str = DEFAULT_TENANT,
        ttl_s: int = 3600,
        name: str | None = None,
        mfa: int = 0,
        attrs: Mapping[str, AttrValue] | None = None,
        kid: str | None = None,
        now: float | None = None,
    ) -> str:
        """Return a signed token; ``role`` (a preset) and ``grants`` are alternatives.

        Without ``kid`` the tenant's own current key signs if it has one that can,
        else the operator's. Raises ValueError for anything a verifier would refuse.
        """
        if role is not None and grants is not None:
            raise ValueError("give a role or grants, not both")
        if grants is None:
            preset = "participant" if role is None else role
            if preset not in ROLE_GRANTS:
                raise ValueError(f"unknown role: {preset!r}")
            grants = ROLE_GRANTS[preset]
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s <= 0:
            raise ValueError("ttl_s must be a positive integer")
        issued_at = int(time.time() if now is None else now)
        self.refresh()
        kid, private_key = self._signing_key(tenant, kid, issued_at)
        grant_list = list(grants)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": identity,
            "name": identity if name is None else name,
            "tenant": tenant,
            "room": room,
            "grants": sorted(grant_list, key=lambda g: GRANTS.index(g) if g in GRANTS else -1),
            "mfa": mfa,
            "attrs": dict(attrs or {}),
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + ttl_s,
            "jti": secrets.token_hex(16),
        }
        try:
            check_claims(claims, issued_at, kid)
        except TokenError as exc:
            raise ValueError(exc.message.removeprefix("token ")) from None
        algorithm = self._owners[kid][0][1].algorithm
        token = jwt.encode(claims, private_key, algorithm=algorithm, headers={"kid": kid})
        if len(token) > MAX_TOKEN_LEN:
            raise ValueError(f"token would be longer than {MAX_TOKEN_LEN} characters")
        return token

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
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise _unauthorized("unsupported token algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not _KID.fullmatch(kid):
            raise _unauthorized("token names no valid signing key (kid)")
        when = time.time() if now is None else now
        self.refresh()
        owners = self._owners.get(kid)
        if not owners:
            raise _unauthorized("token signed by an unknown key")
        live = [(owner, entry) for owner, entry in owners if entry.verifies_at(when)]
        if not live:
            raise _unauthorized("token signed by an expired key")
        owner, entry = live[0]
        # The key decides the algorithm; a header naming another one is refused.
        if entry.algorithm != algorithm:
            raise _unauthorized("token algorithm does not match its key")
        ring = self._operator if owner is None else self._tenants[owner]
        try:
            claims = jwt.decode(
                token,
                ring.public[kid],
                algorithms=[entry.algorithm],
                # Time and claim checks are done by check_claims so that ``now`` is
                # honoured exactly and every claim is type-checked the same way.
                options={
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_iss": False,
                    "verify_sub": False,
                    "verify_jti": False,
                    "verify_aud": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise _unauthorized("token signature invalid") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise _unauthorized("token malformed") from None
        access = check_claims(claims, when, kid)
        allowed = {owner for owner, _ in live}
        if None not in allowed and access.tenant not in allowed:
            raise _unauthorized("token signed by another tenant's key")
        if self.revoked is not None and (why := self.revoked(access)) is not None:
            raise _unauthorized(why)
        return access
