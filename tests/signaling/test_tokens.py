"""Tests for signaling.tokens: issuing, verifying and authorizing access tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import stat
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.keystore import KeyStore
from signaling.tokens import (
    GRANTS,
    PUBLISH_GRANTS,
    ROLE_GRANTS,
    AccessToken,
    SigningKeys,
    TokenError,
)
from tests.fuzzing import examples

NOW = 1_700_000_000
# Marker for "leave this claim/header out" in valid_claims() and forge().
_DROP = object()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(obj: object) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def b64url_decode_json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


@pytest.fixture
def keys(tmp_path: Path) -> SigningKeys:
    return SigningKeys.load_or_create(tmp_path)


def current_key_path(data_dir: Path) -> Path:
    store = KeyStore(data_dir)
    (entry,) = [e for e in store.entries() if e.retired_at is None]
    return store.directory / entry.file


def private_key_of(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    """Read the current signing key straight from disk, to forge tokens with chosen claims."""
    loaded = serialization.load_pem_private_key(
        current_key_path(data_dir).read_bytes(), password=None
    )
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    return loaded


def valid_claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": "sfu",
        "sub": "alice",
        "tenant": "acme",
        "room": "room-1",
        "grants": ["publish:audio", "publish:video", "subscribe"],
        "name": "Alice",
        "mfa": 1,
        "attrs": {"real_name_verified": True},
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 600,
        "jti": "0123456789abcdef0123456789abcdef",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not _DROP}


def forge(tmp_path: Path, keys: SigningKeys, claims: dict[str, Any], **headers: Any) -> str:
    hdrs: dict[str, Any] = {"kid": keys.kid}
    hdrs.update(headers)
    hdrs = {k: v for k, v in hdrs.items() if v is not _DROP}
    # PyJWS signs raw bytes, so claims PyJWT's encoder would refuse (a non-string
    # iss, NaN times) can still be put in a validly signed token.
    payload = json.dumps(claims, separators=(",", ":")).encode()
    return jwt.PyJWS().encode(payload, private_key_of(tmp_path), algorithm="ES256", headers=hdrs)


def assert_unauthorized(keys: SigningKeys, token: str, now: float = NOW) -> TokenError:
    with pytest.raises(TokenError) as info:
        keys.verify(token, now=now)
    assert info.value.code == "unauthorized"
    assert info.value.message
    if len(token) >= 8:
        assert token not in info.value.message
        assert token not in str(info.value)
    return info.value


# --- issue / verify round trip ---


def test_round_trip_participant(keys: SigningKeys) -> None:
    token = keys.issue(identity="alice", room="room-1", name="Alice", ttl_s=600, now=NOW)
    access = keys.verify(token, now=NOW + 1)
    assert access == AccessToken(
        identity="alice",
        room="room-1",
        grants=ROLE_GRANTS["participant"],
        name="Alice",
        token_id=access.token_id,
        expires_at=float(NOW + 600),
        tenant="default",
        mfa=0,
        attrs={},
        kid=keys.kid,
        issued_at=float(NOW),
    )
    assert access.role == "participant"
    assert access.room_key == "default/room-1"
    assert len(access.token_id) == 32
    int(access.token_id, 16)
    access.require("room-1")
    for grant in ("publish:audio", "publish:video", "publish:screen", "subscribe"):
        access.require("room-1", grant)


def test_issued_token_layout(keys: SigningKeys) -> None:
    token = keys.issue(identity="bob", room="r", role="viewer", ttl_s=60, now=NOW)
    header_seg, payload_seg, _sig = token.split(".")
    header = b64url_decode_json(header_seg)
    payload = b64url_decode_json(payload_seg)
    assert header["alg"] == "ES256"
    assert header["kid"] == keys.kid
    assert payload["iss"] == "sfu"
    assert payload["sub"] == "bob"
    assert payload["room"] == "r"
    assert "role" not in payload  # presets are expanded into grants
    assert payload["grants"] == ["subscribe"]
    assert payload["tenant"] == "default"
    assert payload["mfa"] == 0 and payload["attrs"] == {}
    assert payload["name"] == "bob"  # defaults to identity
    assert payload["iat"] == NOW
    assert payload["nbf"] == NOW
    assert payload["exp"] == NOW + 60


def test_jti_is_unique(keys: SigningKeys) -> None:
    ids = {
        keys.verify(keys.issue(identity="a", room="r", now=NOW), now=NOW).token_id
        for _ in range(20)
    }
    assert len(ids) == 20


def test_viewer_grants(keys: SigningKeys) -> None:
    access = keys.verify(keys.issue(identity="v", room="r", role="viewer", now=NOW), now=NOW)
    assert access.role == "viewer"
    assert access.grants == frozenset({"subscribe"})
    assert access.name == "v"
    access.require("r", "subscribe")
    with pytest.raises(TokenError) as info:
        access.require("r", "publish:audio")
    assert info.value.code == "forbidden"
    assert info.value.message == "token does not grant publish:audio"


def test_default_clock_is_used(keys: SigningKeys) -> None:
    access = keys.verify(keys.issue(identity="a", room="r"))
    assert access.identity == "a"


# --- time validity ---


def test_expired(keys: SigningKeys) -> None:
    token = keys.issue(identity="a", room="r", ttl_s=60, now=NOW)
    keys.verify(token, now=NOW + 60)  # inside the 5 s leeway
    keys.verify(token, now=NOW + 64)
    err = assert_unauthorized(keys, token, now=NOW + 65)
    assert "expired" in err.message
    assert_unauthorized(keys, token, now=NOW + 10_000)


def test_not_yet_valid(keys: SigningKeys) -> None:
    token = keys.issue(identity="a", room="r", ttl_s=60, now=NOW)
    keys.verify(token, now=NOW - 5)  # clock skew within leeway is tolerated
    err = assert_unauthorized(keys, token, now=NOW - 6)
    assert "not yet valid" in err.message


def test_issued_in_future_rejected(tmp_path: Path, keys: SigningKeys) -> None:
    token = forge(tmp_path, keys, valid_claims(iat=NOW + 100, nbf=NOW))
    assert_unauthorized(keys, token)


# --- wrong keys and algorithm attacks ---


def test_signed_by_other_keys(tmp_path: Path, keys: SigningKeys) -> None:
    other = SigningKeys.load_or_create(tmp_path / "other")
    assert other.kid != keys.kid
    token = other.issue(identity="a", room="r", now=NOW)
    assert_unauthorized(keys, token)


def test_other_key_with_our_kid(tmp_path: Path, keys: SigningKeys) -> None:
    other_dir = tmp_path / "other"
    SigningKeys.load_or_create(other_dir)
    token = forge(other_dir, keys, valid_claims())  # header claims our kid
    err = assert_unauthorized(keys, token)
    assert "signature" in err.message


def test_tampered_payload(keys: SigningKeys) -> None:
    token = keys.issue(identity="a", room="r", role="viewer", now=NOW)
    header, payload, sig = token.split(".")
    claims = b64url_decode_json(payload)
    claims["grants"] = ["publish:audio", "subscribe"]
    assert_unauthorized(keys, ".".join([header, b64url_json(claims), sig]))


def test_tampered_signature(keys: SigningKeys) -> None:
    token = keys.issue(identity="a", room="r", now=NOW)
    header, payload, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[10] ^= 0x01
    assert_unauthorized(keys, ".".join([header, payload, b64url(bytes(raw))]))


def test_alg_none(keys: SigningKeys) -> None:
    header = b64url_json({"alg": "none", "typ": "JWT"})
    payload = b64url_json(valid_claims())
    assert_unauthorized(keys, f"{header}.{payload}.")
    # With a dummy signature segment so the shape check passes and the alg check decides.
    err = assert_unauthorized(keys, f"{header}.{payload}.{b64url(b'x')}")
    assert "algorithm" in err.message
    for alg in ("None", "NONE", "nOnE"):
        assert_unauthorized(keys, f"{b64url_json({'alg': alg})}.{payload}.{b64url(b'x')}")


def test_hs256_with_public_key_as_secret(keys: SigningKeys, tmp_path: Path) -> None:
    public_key = private_key_of(tmp_path).public_key()
    secrets_to_try = [
        public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    ]
    payload = b64url_json(valid_claims())
    for secret in secrets_to_try:
        for header in ({"alg": "HS256", "typ": "JWT"}, {"alg": "HS256", "kid": keys.kid}):
            signing_input = f"{b64url_json(header)}.{payload}"
            mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
            err = assert_unauthorized(keys, f"{signing_input}.{b64url(mac)}")
            assert "algorithm" in err.message


def test_rs256_and_other_ec_algs_rejected(keys: SigningKeys, tmp_path: Path) -> None:
    payload = b64url_json(valid_claims())
    real_sig = keys.issue(identity="a", room="r", now=NOW).split(".")[2]
    for alg in ("RS256", "ES384", "ES512", "PS256", "EdDSA", "HS512"):
        header = b64url_json({"alg": alg, "kid": keys.kid})
        assert_unauthorized(keys, f"{header}.{payload}.{real_sig}")


def test_unknown_kid_rejected(tmp_path: Path, keys: SigningKeys) -> None:
    err = assert_unauthorized(keys, forge(tmp_path, keys, valid_claims(), kid="ffffffffffffffff"))
    assert "unknown key" in err.message


def test_missing_or_malformed_kid_rejected(tmp_path: Path, keys: SigningKeys) -> None:
    for kid in (_DROP, "", "F" * 16, keys.kid + "0", "../../etc"):
        err = assert_unauthorized(keys, forge(tmp_path, keys, valid_claims(), kid=kid))
        assert "kid" in err.message


# --- malformed input ---


@pytest.mark.parametrize(
    "token",
    [
        "",
        " ",
        "garbage",
        "not.a.token",
        "a.b.c",
        "a.b",
        "a.b.c.d",
        "...",
        "!!!.@@@.###",
        "eyJhbGciOiJFUzI1NiJ9.%%%.abc",
        "eyJ.eyJ.x",
        "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0",
        "\x00\x01\x02",
        "é.é.é",
        "x" * 100_000,
    ],
)
def test_garbage_rejected(keys: SigningKeys, token: str) -> None:
    assert_unauthorized(keys, token)


def test_non_object_json_segments(keys: SigningKeys) -> None:
    sig = b64url(b"\x00" * 64)
    good_header = b64url_json({"alg": "ES256", "kid": keys.kid})
    good_payload = b64url_json(valid_claims())
    for header, payload in [
        (b64url_json([1, 2]), good_payload),
        (b64url_json("ES256"), good_payload),
        (b64url(b"{not json"), good_payload),
        (good_header, b64url_json([1, 2])),
        (good_header, b64url_json(None)),
        (good_header, b64url(b"\xff\xfe")),
    ]:
        assert_unauthorized(keys, f"{header}.{payload}.{sig}")


def test_non_string_token(keys: SigningKeys) -> None:
    with pytest.raises(TokenError):
        keys.verify(None, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(TokenError):
        keys.verify(b"a.b.c", now=NOW)  # type: ignore[arg-type]


# --- claim validation (tokens correctly signed with our key) ---


@pytest.mark.parametrize("missing", ["iss", "sub", "room", "grants", "iat", "nbf", "exp", "jti"])
def test_missing_claims(tmp_path: Path, keys: SigningKeys, missing: str) -> None:
    err = assert_unauthorized(keys, forge(tmp_path, keys, valid_claims(**{missing: _DROP})))
    assert missing in err.message


@pytest.mark.parametrize(
    "overrides",
    [
        {"iss": "someone-else"},
        {"iss": None},
        {"sub": ""},
        {"sub": 42},
        {"sub": ["alice"]},
        {"sub": "a" * 129},
        {"sub": "al\nice"},
        {"sub": "al\x00ice"},
        {"sub": "al\u202eice"},  # right-to-left override
        {"room": ""},
        {"room": None},
        {"room": "r" * 129},
        {"room": "room\x7f"},
        {"name": "Al\rice"},
        {"name": ""},
        {"name": 7},
        {"name": "n" * 129},
        {"role": "admin"},
        {"role": None},
        {"role": ["participant"]},
        {"role": "viewer"},  # legacy role, but the grants are the new ones
        {"role": "viewer", "grants": ["subscribe", "publish"]},
        {"grants": ["publish:audio", "publish"]},
        {"grants": ["subscribe", "superuser"]},
        {"grants": ["subscribe", "subscribe"]},
        {"grants": [*GRANTS, "subscribe"]},
        {"grants": "subscribe"},
        {"grants": [1, 2]},
        {"grants": {"subscribe": True}},
        {"grants": None},
        {"tenant": ""},
        {"tenant": "a/b"},
        {"tenant": "acme corp"},
        {"tenant": "-acme"},
        {"tenant": "t" * 65},
        {"tenant": 5},
        {"tenant": None},
        {"mfa": 3},
        {"mfa": -1},
        {"mfa": False},
        {"mfa": 2.0},
        {"mfa": "2"},
        {"attrs": []},
        {"attrs": "x"},
        {"attrs": {f"k{i}": True for i in range(17)}},
        {"attrs": {"": True}},
        {"attrs": {"has space": True}},
        {"attrs": {"k" * 65: True}},
        {"attrs": {"k": None}},
        {"attrs": {"k": 1.5}},
        {"attrs": {"k": [1]}},
        {"attrs": {"k": {"nested": 1}}},
        {"attrs": {"k": 2**53}},
        {"attrs": {"k": "v" * 129}},
        {"attrs": {"k": "line\nbreak"}},
        {"scope": "everything"},
        {"exp": "2000000000"},
        {"exp": True},
        {"exp": None},
        {"nbf": "0"},
        {"iat": [NOW]},
        {"jti": ""},
        {"jti": 123},
        {"jti": "x" * 65},
        {"jti": "has space"},
        {"aud": "someone"},
    ],
)
def test_bad_claims(tmp_path: Path, keys: SigningKeys, overrides: dict[str, Any]) -> None:
    assert valid_claims(**overrides) != valid_claims()
    keys.verify(forge(tmp_path, keys, valid_claims()), now=NOW)  # the unchanged claims pass
    assert_unauthorized(keys, forge(tmp_path, keys, valid_claims(**overrides)))


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"grants": ["subscribe", "superuser"]}, "grant 'superuser' unknown"),
        ({"grants": "subscribe"}, "grants must be a list"),
        ({"tenant": "a/b"}, "tenant"),
        ({"mfa": 3}, "mfa"),
        ({"attrs": {"k": 1.5}}, "attrs['k']"),
        ({"scope": "x"}, "unknown claim 'scope'"),
    ],
)
def test_bad_claims_are_named(
    tmp_path: Path, keys: SigningKeys, overrides: dict[str, Any], words: str
) -> None:
    err = assert_unauthorized(keys, forge(tmp_path, keys, valid_claims(**overrides)))
    assert words in err.message


def test_non_finite_times_rejected(tmp_path: Path, keys: SigningKeys) -> None:
    # json.dumps writes Infinity/NaN, which Python's json.loads accepts back.
    for overrides in ({"exp": float("inf")}, {"exp": float("nan")}, {"nbf": float("-inf")}):
        assert_unauthorized(keys, forge(tmp_path, keys, valid_claims(**overrides)))


def test_boundary_lengths_accepted(tmp_path: Path, keys: SigningKeys) -> None:
    access = keys.verify(
        forge(tmp_path, keys, valid_claims(sub="a" * 128, room="r" * 128, name="n" * 128)),
        now=NOW,
    )
    assert access.identity == "a" * 128
    assert access.room == "r" * 128


def test_unicode_identity_and_emoji_name(tmp_path: Path, keys: SigningKeys) -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # zero-width joiners are fine in names
    token = keys.issue(identity="zoë", room="café", name=f"Zoë {family}", now=NOW)
    access = keys.verify(token, now=NOW)
    assert (access.identity, access.room, access.name) == ("zoë", "café", f"Zoë {family}")


def test_full_claims_are_returned(tmp_path: Path, keys: SigningKeys) -> None:
    access = keys.verify(forge(tmp_path, keys, valid_claims()), now=NOW)
    assert access.tenant == "acme" and access.room_key == "acme/room-1"
    assert access.grants == frozenset({"publish:audio", "publish:video", "subscribe"})
    assert access.role == "custom" and access.can_publish
    assert (access.mfa, dict(access.attrs), access.kid) == (
        1,
        {"real_name_verified": True},
        keys.kid,
    )
    with pytest.raises(TokenError) as info:
        access.require("room-1", "publish:screen")
    assert info.value.code == "forbidden" and "publish:screen" in info.value.message


def test_every_grant_and_attr_type_accepted(tmp_path: Path, keys: SigningKeys) -> None:
    attrs = {"verified": False, "level": -(2**53 - 1), "org": "", "dept.code:x": "R&D"}
    token = forge(tmp_path, keys, valid_claims(grants=list(GRANTS), attrs=attrs, mfa=2))
    access = keys.verify(token, now=NOW)
    assert access.grants == frozenset(GRANTS)
    assert dict(access.attrs) == attrs and access.mfa == 2


def test_empty_grants_allow_nothing(tmp_path: Path, keys: SigningKeys) -> None:
    access = keys.verify(forge(tmp_path, keys, valid_claims(grants=[])), now=NOW)
    assert access.grants == frozenset() and not access.can_publish
    with pytest.raises(TokenError):
        access.require("room-1", "subscribe")


def test_optional_claims_default(tmp_path: Path, keys: SigningKeys) -> None:
    claims = valid_claims(name=_DROP, tenant=_DROP, mfa=_DROP, attrs=_DROP)
    access = keys.verify(forge(tmp_path, keys, claims), now=NOW)
    assert access.name == "alice"
    assert access.tenant == "default" and access.room_key == "default/room-1"
    assert access.mfa == 0 and dict(access.attrs) == {}


@pytest.mark.parametrize(
    ("role", "grants", "expected"),
    [
        ("participant", ["publish", "subscribe"], ROLE_GRANTS["participant"]),
        ("participant", _DROP, ROLE_GRANTS["participant"]),
        ("participant", ["subscribe"], frozenset({"subscribe"})),
        ("viewer", ["subscribe"], frozenset({"subscribe"})),
    ],
)
def test_legacy_role_tokens_still_accepted(
    tmp_path: Path, keys: SigningKeys, role: str, grants: object, expected: frozenset[str]
) -> None:
    """Tokens issued before grants existed keep working until they expire."""
    claims = valid_claims(role=role, grants=grants, tenant=_DROP, mfa=_DROP, attrs=_DROP)
    access = keys.verify(forge(tmp_path, keys, claims), now=NOW)
    assert access.grants == expected
    assert access.tenant == "default"
    assert PUBLISH_GRANTS <= access.grants or "publish" not in (grants or [])


def test_float_times_accepted(tmp_path: Path, keys: SigningKeys) -> None:
    access = keys.verify(forge(tmp_path, keys, valid_claims(exp=NOW + 0.5)), now=NOW)
    assert access.expires_at == NOW + 0.5


# --- authorization ---


def test_require_other_room_forbidden(keys: SigningKeys) -> None:
    access = keys.verify(keys.issue(identity="a", room="r1", now=NOW), now=NOW)
    for grant in (None, "subscribe", "publish:audio"):
        with pytest.raises(TokenError) as info:
            access.require("r2", grant)
        assert info.value.code == "forbidden"
        assert "another room" in info.value.message


def test_require_unknown_grant_forbidden(keys: SigningKeys) -> None:
    access = keys.verify(keys.issue(identity="a", room="r", now=NOW), now=NOW)
    with pytest.raises(TokenError) as info:
        access.require("r", "admin")
    assert info.value.code == "forbidden"


def test_token_error_code_checked() -> None:
    with pytest.raises(ValueError):
        TokenError("teapot", "nope")
    err = TokenError("forbidden", "why")
    assert (err.code, err.message, str(err)) == ("forbidden", "why", "why")


# --- issue() argument validation ---


@pytest.mark.parametrize(
    "kwargs",
    [
        {"identity": "a", "room": "r", "role": "admin"},
        {"identity": "a", "room": "r", "role": "viewer", "grants": ["subscribe"]},
        {"identity": "a", "room": "r", "grants": ["publish"]},
        {"identity": "a", "room": "r", "grants": ["subscribe", "subscribe"]},
        {"identity": "a", "room": "r", "tenant": "a/b"},
        {"identity": "a", "room": "r", "mfa": 5},
        {"identity": "a", "room": "r", "attrs": {"k": 1.5}},
        {"identity": "a", "room": "r", "kid": "0123456789abcdef"},
        {"identity": "", "room": "r"},
        {"identity": "a", "room": ""},
        {"identity": "a", "room": "r", "ttl_s": 0},
        {"identity": "a", "room": "r", "ttl_s": -5},
        {"identity": "a", "room": "r", "ttl_s": True},
        {"identity": "a" * 129, "room": "r"},
        {"identity": "a\n", "room": "r"},
        {"identity": "a", "room": "r\t"},
        {"identity": "a", "room": "r", "name": ""},
        {"identity": "a", "room": "r", "name": "x\x1b[31m"},
    ],
)
def test_issue_rejects_bad_arguments(keys: SigningKeys, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        keys.issue(**kwargs)


# --- key storage ---


def test_key_file_mode_and_reuse(tmp_path: Path) -> None:
    first = SigningKeys.load_or_create(tmp_path)
    key_path = tmp_path / "keys" / f"signing-{first.kid}.pem"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert len(first.kid) == 16
    int(first.kid, 16)
    pem_before = key_path.read_bytes()

    second = SigningKeys.load_or_create(tmp_path)
    assert second.kid == first.kid
    assert key_path.read_bytes() == pem_before
    # Tokens survive a "restart".
    assert second.verify(first.issue(identity="a", room="r", now=NOW), now=NOW).identity == "a"
    assert sorted(p.name for p in (tmp_path / "keys").iterdir() if p.suffix != ".lock") == [
        "index.json",
        f"signing-{first.kid}.pem",
    ]
    assert stat.S_IMODE((tmp_path / "keys" / "index.json").stat().st_mode) == 0o600


def test_kid_is_sha256_of_public_key_der(tmp_path: Path) -> None:
    keys = SigningKeys.load_or_create(tmp_path)
    der = (
        private_key_of(tmp_path)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert keys.kid == hashlib.sha256(der).hexdigest()[:16]


def test_loose_key_permissions_tightened(tmp_path: Path) -> None:
    kid = SigningKeys.load_or_create(tmp_path).kid
    key_path = tmp_path / "keys" / f"signing-{kid}.pem"
    key_path.chmod(0o644)
    assert SigningKeys.load_or_create(tmp_path).kid == kid
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_non_p256_key_refused(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    other = ec.generate_private_key(ec.SECP384R1())
    (key_dir / "signing-key.pem").write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError):
        SigningKeys.load_or_create(tmp_path)


def test_logs_do_not_contain_tokens(keys: SigningKeys, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="signaling.tokens")
    token = keys.issue(identity="a", room="r", ttl_s=60, now=NOW)
    with pytest.raises(TokenError):
        keys.verify(token, now=NOW + 3600)
    for record in caplog.records:
        assert token not in record.getMessage()
        assert all(token not in str(v) for v in record.__dict__.values())
        assert token.split(".")[2] not in str(record.__dict__)


# --- property tests ---


@pytest.fixture(scope="module")
def module_keys(tmp_path_factory: pytest.TempPathFactory) -> SigningKeys:
    return SigningKeys.load_or_create(tmp_path_factory.mktemp("hypothesis-keys"))


@settings(max_examples=examples(300), deadline=None)
@given(st.text())
def test_arbitrary_text_only_raises_token_error(module_keys: SigningKeys, text: str) -> None:
    with pytest.raises(TokenError) as info:
        module_keys.verify(text, now=NOW)
    assert info.value.code == "unauthorized"


_B64URL = st.from_regex(r"[A-Za-z0-9_-]{1,60}", fullmatch=True)


@settings(max_examples=examples(300), deadline=None)
@given(_B64URL, _B64URL, _B64URL)
def test_arbitrary_jws_shape_only_raises_token_error(
    module_keys: SigningKeys, a: str, b: str, c: str
) -> None:
    with pytest.raises(TokenError) as info:
        module_keys.verify(f"{a}.{b}.{c}", now=NOW)
    assert info.value.code == "unauthorized"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=examples(300), deadline=None)
@given(
    header=st.dictionaries(st.text(max_size=8), _JSON, max_size=4).map(
        lambda h: {**h, "alg": "ES256"}
    ),
    payload=st.one_of(
        _JSON,
        st.dictionaries(
            st.sampled_from(
                ["iss", "sub", "room", "role", "grants", "name", "tenant", "mfa", "attrs", "exp"]
            ),
            _JSON,
        ),
    ),
    sig=st.binary(max_size=80),
)
def test_arbitrary_json_segments_only_raise_token_error(
    module_keys: SigningKeys, header: dict[str, Any], payload: Any, sig: bytes
) -> None:
    token = f"{b64url_json(header)}.{b64url_json(payload)}.{b64url(sig) or 'A'}"
    with pytest.raises(TokenError) as info:
        module_keys.verify(token, now=NOW)
    assert info.value.code == "unauthorized"


# --- the published claim schema ---


def test_json_schema_matches_the_verifier(keys: SigningKeys) -> None:
    schema = json.loads((Path(__file__).parents[2] / "docs" / "token.schema.json").read_text())
    properties = schema["properties"]
    assert tuple(properties["grants"]["items"]["enum"]) == GRANTS
    assert set(schema["required"]) == {"iss", "sub", "room", "grants", "iat", "nbf", "exp", "jti"}
    token = keys.issue(identity="a", room="r", mfa=1, attrs={"x": True}, now=NOW)
    payload = b64url_decode_json(token.split(".")[1])
    assert set(payload) <= set(properties)  # every claim we issue is documented
    assert schema["additionalProperties"] is False
