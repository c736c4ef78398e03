"""Tests for signing-key ids, rotation with a grace period, reloading and migration."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from signaling.cli import main, parse_attr
from signaling.keystore import KeyStore, KeyStoreError, kid_of, parse_index
from signaling.tokens import SigningKeys, TokenError

NOW = 1_700_000_000.0
GRACE_S = 3600.0


class FakeClock:
    """Monotonic time the test moves by hand (the key ring's reload limiter reads it)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def open_keys(data_dir: Path, clock: FakeClock) -> SigningKeys:
    return SigningKeys.load_or_create(data_dir, clock=clock, now=NOW)


def header_kid(token: str) -> str:
    import jwt

    kid = jwt.get_unverified_header(token)["kid"]
    assert isinstance(kid, str)
    return kid


def test_token_names_the_current_key_and_is_verified_by_it(
    tmp_path: Path, clock: FakeClock
) -> None:
    keys = open_keys(tmp_path, clock)
    token = keys.issue(identity="a", room="r", now=NOW)
    assert header_kid(token) == keys.kid
    assert keys.verify(token, now=NOW).kid == keys.kid


def test_verification_picks_the_key_by_kid(tmp_path: Path, clock: FakeClock) -> None:
    keys = open_keys(tmp_path, clock)
    old_kid = keys.kid
    old_token = keys.issue(identity="a", room="r", now=NOW)
    KeyStore(tmp_path).rotate(NOW, GRACE_S)
    clock.now += 2
    new_token = keys.issue(identity="b", room="r", now=NOW)
    assert keys.kid != old_kid and header_kid(new_token) == keys.kid
    assert keys.verify(old_token, now=NOW).kid == old_kid
    assert keys.verify(new_token, now=NOW).kid == keys.kid
    # The kid decides the key: an old-key signature under the new kid fails.
    header, payload, signature = new_token.split(".")
    old_signature = old_token.split(".")[2]
    with pytest.raises(TokenError, match="signature"):
        keys.verify(f"{header}.{payload}.{old_signature}", now=NOW)


def test_retired_key_verifies_during_grace_and_not_after(tmp_path: Path, clock: FakeClock) -> None:
    keys = open_keys(tmp_path, clock)
    token = keys.issue(identity="a", room="r", ttl_s=10 * 3600, now=NOW)
    KeyStore(tmp_path).rotate(NOW + 100, GRACE_S)
    clock.now += 2
    assert keys.verify(token, now=NOW + 100 + GRACE_S - 1).identity == "a"
    with pytest.raises(TokenError) as info:
        keys.verify(token, now=NOW + 100 + GRACE_S)
    assert info.value.code == "unauthorized" and "expired key" in info.value.message


def test_zero_grace_removes_the_old_key_at_once(tmp_path: Path, clock: FakeClock) -> None:
    keys = open_keys(tmp_path, clock)
    old_kid = keys.kid
    token = keys.issue(identity="a", room="r", now=NOW)
    KeyStore(tmp_path).rotate(NOW, 0)
    clock.now += 2
    with pytest.raises(TokenError, match="unknown key"):
        keys.verify(token, now=NOW)
    assert not (tmp_path / "keys" / f"signing-{old_kid}.pem").exists()


def test_rotation_is_picked_up_without_restart_but_rate_limited(
    tmp_path: Path, clock: FakeClock
) -> None:
    server = open_keys(tmp_path, clock)
    # `sfu token` in another process, after `sfu keys rotate`.
    KeyStore(tmp_path).rotate(NOW, GRACE_S)
    issuer = SigningKeys.load_or_create(tmp_path, now=NOW)
    token = issuer.issue(identity="a", room="r", now=NOW)
    assert header_kid(token) != server.kid
    clock.now += 0.5  # within the reload interval the index is not looked at again
    with pytest.raises(TokenError, match="unknown key"):
        server.verify(token, now=NOW)
    clock.now += 0.6
    assert server.verify(token, now=NOW).identity == "a"
    assert server.kid == issuer.kid


def test_unknown_kid_does_not_reload_more_than_once_per_interval(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = open_keys(tmp_path, clock)
    other = SigningKeys.load_or_create(tmp_path / "other", now=NOW)
    token = other.issue(identity="a", room="r", now=NOW)
    looks: list[int] = []
    real = KeyStore.index_signature

    def counting(store: KeyStore) -> tuple[int, int, int] | None:
        looks.append(1)
        return real(store)

    monkeypatch.setattr(KeyStore, "index_signature", counting)
    clock.now += 5
    for _ in range(50):
        with pytest.raises(TokenError, match="unknown key"):
            keys.verify(token, now=NOW)
    assert len(looks) == 1


def test_broken_index_keeps_the_last_keys(tmp_path: Path, clock: FakeClock) -> None:
    keys = open_keys(tmp_path, clock)
    token = keys.issue(identity="a", room="r", now=NOW)
    (tmp_path / "keys" / "index.json").write_text("{not json")
    clock.now += 2
    assert keys.verify(token, now=NOW).identity == "a"


def test_rotation_prunes_keys_past_their_grace(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    first = store.ensure(NOW)[0]
    second = store.rotate(NOW, GRACE_S)
    third = store.rotate(NOW + GRACE_S + 1, GRACE_S)
    kids = [entry.kid for entry in store.entries()]
    assert kids == [second.kid, third.kid]
    assert not (store.directory / first.file).exists()
    assert (store.directory / second.file).exists()


def test_legacy_single_key_is_migrated_with_its_kid(tmp_path: Path, clock: FakeClock) -> None:
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    legacy = ec.generate_private_key(ec.SECP256R1())
    pem = legacy.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (key_dir / "signing-key.pem").write_bytes(pem)
    (key_dir / "signing-key.pem").chmod(0o600)
    keys = open_keys(tmp_path, clock)
    assert keys.kid == kid_of(legacy.public_key())
    (entry,) = KeyStore(tmp_path).entries()
    assert entry.file == "signing-key.pem" and entry.retired_at is None
    assert (key_dir / "signing-key.pem").read_bytes() == pem
    # A token the old server issued (legacy claims, same kid) still verifies.
    import jwt

    old_claims = {
        "iss": "sfu", "sub": "a", "room": "r", "role": "participant",
        "grants": ["publish", "subscribe"], "name": "a", "iat": int(NOW), "nbf": int(NOW),
        "exp": int(NOW) + 60, "jti": "0" * 32,
    }  # fmt: skip
    old_token = jwt.encode(old_claims, legacy, algorithm="ES256", headers={"kid": keys.kid})
    assert "publish:video" in keys.verify(old_token, now=NOW).grants
    # ... and a rotation retires the legacy key like any other.
    KeyStore(tmp_path).rotate(NOW, GRACE_S)
    clock.now += 2
    assert keys.verify(old_token, now=NOW).identity == "a"
    assert keys.kid != entry.kid


@pytest.mark.parametrize(
    "document",
    [
        {"version": 2, "keys": []},
        {"version": 1, "keys": []},
        {"version": 1, "keys": [{"kid": "zz", "file": "signing-key.pem", "created": 1}]},
        {"version": 1, "keys": [{"kid": "0" * 16, "file": "../x.pem", "created": 1}]},
        {"version": 1, "keys": [{"kid": "0" * 16, "file": "signing-key.pem"}]},
        {
            "version": 1,
            "keys": [
                {"kid": "0" * 16, "file": "signing-key.pem", "created": 1, "retired_at": 2},
            ],
        },
        {
            "version": 1,
            "keys": [
                {"kid": "0" * 16, "file": "signing-key.pem", "created": 1},
                {"kid": "0" * 16, "file": f"signing-{'0' * 16}.pem", "created": 2},
            ],
        },
    ],
)
def test_bad_index_refused(document: object) -> None:
    with pytest.raises(KeyStoreError):
        parse_index(json.dumps(document))


def test_cli_rotate_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--data-dir", str(tmp_path), "--room", "r", "--identity", "a"]) == 0
    first = KeyStore(tmp_path).entries()[0].kid
    capsys.readouterr()
    assert main(["keys", "rotate", "--data-dir", str(tmp_path), "--grace", "600"]) == 0
    out = capsys.readouterr().out
    entries = KeyStore(tmp_path).entries()
    assert [e.kid for e in entries][0] == first and len(entries) == 2
    new = entries[1]
    assert new.kid in out and new.retired_at is None
    assert entries[0].valid_until is not None and entries[0].retired_at is not None
    assert entries[0].valid_until - entries[0].retired_at == 600
    assert stat.S_IMODE((tmp_path / "keys" / new.file).stat().st_mode) == 0o600
    assert main(["keys", "list", "--data-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["KID", "ALG", "CREATED", "STATUS"]
    assert lines[1].startswith(first) and "retired, verifies until" in lines[1]
    assert lines[2].startswith(new.kid) and lines[2].endswith("current")


def test_cli_rotate_refuses_negative_grace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "rotate", "--data-dir", str(tmp_path), "--grace", "-1"]) == 2
    assert "grace" in capsys.readouterr().err


def test_cli_token_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "token", "--data-dir", str(tmp_path), "--room", "r", "--identity", "a",
        "--name", "Alice", "--tenant", "acme", "--grants", "publish:audio,subscribe",
        "--mfa", "2", "--attr", "real_name_verified=true", "--attr", "level=3",
        "--attr", "org=ACME", "--ttl", "60",
    ]  # fmt: skip
    assert main(args) == 0
    token = capsys.readouterr().out.strip()
    access = SigningKeys.load_or_create(tmp_path).verify(token)
    assert (access.tenant, access.name, access.mfa) == ("acme", "Alice", 2)
    assert access.grants == frozenset({"publish:audio", "subscribe"})
    assert dict(access.attrs) == {"real_name_verified": True, "level": 3, "org": "ACME"}
    assert access.expires_at - access.expires_at // 1 == 0


def test_cli_token_signs_with_a_chosen_kid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = KeyStore(tmp_path)
    old = store.ensure(time.time())[0]
    store.rotate(time.time(), 600)
    assert main(["token", "--data-dir", str(tmp_path), "--room", "r", "--identity", "a",
                 "--kid", old.kid]) == 0  # fmt: skip
    assert header_kid(capsys.readouterr().out.strip()) == old.kid
    assert main(["token", "--data-dir", str(tmp_path), "--room", "r", "--identity", "a",
                 "--kid", "0123456789abcdef"]) == 2  # fmt: skip
    assert "kid" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--grants", "publish:audio,publish:everything"], "unknown grant 'publish:everything'"),
        (["--tenant", "a/b"], "tenant"),
        (["--mfa", "3"], "mfa"),
        (["--attr", "novalue"], "KEY=VALUE"),
        (["--attr", "bad key=1"], "attrs"),
    ],
)
def test_cli_token_refuses_bad_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], words: str
) -> None:
    base = ["token", "--data-dir", str(tmp_path), "--room", "r", "--identity", "a"]
    assert main([*base, *extra]) == 2
    assert words in capsys.readouterr().err


def test_cli_role_and_grants_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["token", "--data-dir", str(tmp_path), "--room", "r", "--identity", "a",
              "--role", "viewer", "--grants", "subscribe"])  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=true", ("a", True)),
        ("a=false", ("a", False)),
        ("a=-12", ("a", -12)),
        ("a=x=y", ("a", "x=y")),
        ("a=", ("a", "")),
        ("a=True", ("a", "True")),
    ],
)
def test_parse_attr_types(text: str, expected: tuple[str, object]) -> None:
    assert parse_attr(text) == expected


# --- EdDSA keys, tenant keys, imported public keys ---


def test_eddsa_key_signs_and_verifies(tmp_path: Path, clock: FakeClock) -> None:
    keys = open_keys(tmp_path, clock)
    entry = KeyStore(tmp_path).rotate(NOW, GRACE_S, "EdDSA")
    clock.now += 2
    token = keys.issue(identity="a", room="r", now=NOW)
    import jwt

    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert keys.verify(token, now=NOW).kid == entry.kid


def test_header_algorithm_must_match_the_key(tmp_path: Path, clock: FakeClock) -> None:
    import jwt

    keys = open_keys(tmp_path, clock)
    store = KeyStore(tmp_path)
    entry = store.rotate(NOW, GRACE_S, "EdDSA")
    clock.now += 2
    claims = {"iss": "sfu", "sub": "a", "room": "r", "iat": NOW, "nbf": NOW,
              "exp": NOW + 60, "jti": "j1", "grants": []}  # fmt: skip
    # An ES256 signature by some other key, claiming the Ed25519 key's kid.
    other = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(claims, other, algorithm="ES256", headers={"kid": entry.kid})
    with pytest.raises(TokenError, match="algorithm does not match"):
        keys.verify(forged, now=NOW)


def test_tenant_key_signs_only_its_own_tenant(tmp_path: Path, clock: FakeClock) -> None:
    keys = open_keys(tmp_path, clock)
    acme = KeyStore(tmp_path, "acme").rotate(NOW, GRACE_S)
    clock.now += 2
    token = keys.issue(identity="a", room="r", tenant="acme", now=NOW)
    assert header_kid(token) == acme.kid  # the tenant's own key is preferred
    assert keys.verify(token, now=NOW).tenant == "acme"
    # Other tenants' tokens are still signed by the operator's key.
    assert header_kid(keys.issue(identity="a", room="r", tenant="globex", now=NOW)) == keys.kid
    # The tenant's key cannot sign for another tenant, asked for explicitly or forged.
    with pytest.raises(ValueError, match="no usable signing key"):
        keys.issue(identity="a", room="r", tenant="globex", kid=acme.kid, now=NOW)
    import jwt

    private = KeyStore(tmp_path, "acme").private_key(acme)
    claims = {"iss": "sfu", "sub": "a", "room": "r", "tenant": "globex", "iat": NOW,
              "nbf": NOW, "exp": NOW + 60, "jti": "j1", "grants": ["subscribe"]}  # fmt: skip
    forged = jwt.encode(claims, private, algorithm="ES256", headers={"kid": acme.kid})
    with pytest.raises(TokenError, match="another tenant's key"):
        keys.verify(forged, now=NOW)
    claims["tenant"] = "acme"
    assert keys.verify(jwt.encode(claims, private, algorithm="ES256",
                                  headers={"kid": acme.kid}), now=NOW).tenant == "acme"  # fmt: skip


def test_imported_public_key_verifies_and_never_signs(tmp_path: Path, clock: FakeClock) -> None:
    import jwt
    from cryptography.hazmat.primitives import serialization as ser

    keys = open_keys(tmp_path, clock)
    idp = ed25519.Ed25519PrivateKey.generate()
    pem = idp.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    entry = KeyStore(tmp_path, "acme").import_public(NOW, pem, GRACE_S)
    assert entry.algorithm == "EdDSA" and not entry.can_sign
    assert not list((tmp_path / "keys" / "tenants" / "acme").glob("signing-*"))
    clock.now += 2
    claims = {"iss": "sfu", "sub": "a", "room": "r", "tenant": "acme", "iat": NOW,
              "nbf": NOW, "exp": NOW + 60, "jti": "j1", "grants": ["subscribe"]}  # fmt: skip
    token = jwt.encode(claims, idp, algorithm="EdDSA", headers={"kid": entry.kid})
    assert keys.verify(token, now=NOW).identity == "a"
    # Minting for acme falls back to the operator's key: the server holds no private half.
    assert header_kid(keys.issue(identity="a", room="r", tenant="acme", now=NOW)) == keys.kid
    with pytest.raises(ValueError, match="no usable signing key"):
        keys.issue(identity="a", room="r", tenant="acme", kid=entry.kid, now=NOW)
    with pytest.raises(KeyStoreError, match="already"):
        KeyStore(tmp_path, "acme").import_public(NOW, pem, GRACE_S)


@pytest.mark.parametrize(
    "pem",
    [
        b"not a key",
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    ],
)
def test_import_refuses_other_keys(tmp_path: Path, pem: bytes) -> None:
    with pytest.raises(KeyStoreError):
        KeyStore(tmp_path, "acme").import_public(NOW, pem)


@pytest.mark.parametrize("tenant", ["../x", "a/b", "", ".hidden"])
def test_tenant_directory_names_are_confined(tmp_path: Path, tenant: str) -> None:
    with pytest.raises(KeyStoreError, match="tenant"):
        KeyStore(tmp_path, tenant)


def test_key_changes_are_reported_for_the_audit(tmp_path: Path, clock: FakeClock) -> None:
    keys = open_keys(tmp_path, clock)
    seen: list[tuple[str | None, str]] = []
    keys.on_change = lambda tenant, kid, kids: seen.append((tenant, kid))
    acme = KeyStore(tmp_path, "acme").rotate(NOW, GRACE_S)
    new = KeyStore(tmp_path).rotate(NOW, GRACE_S)
    clock.now += 2
    keys.refresh()
    assert sorted(seen, key=str) == sorted([("acme", acme.kid), (None, new.kid)], key=str)
    assert [e.kid for e in keys.entries("acme")] == [acme.kid]


def test_cli_tenant_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cryptography.hazmat.primitives import serialization as ser

    base = ["--data-dir", str(tmp_path), "--tenant", "acme"]
    assert main(["keys", "rotate", *base, "--algorithm", "EdDSA"]) == 0
    assert "of tenant acme" in capsys.readouterr().out
    idp = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem_path = tmp_path / "idp.pem"
    pem_path.write_bytes(idp.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo))
    assert main(["keys", "import", *base, "--public-key", str(pem_path), "--grace", "60"]) == 0
    capsys.readouterr()
    assert main(["keys", "list", *base]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[1] == "EdDSA" and "retired" in lines[1]
    assert lines[2].startswith(kid_of(idp)) and lines[2].endswith("current (public key only)")
    with pytest.raises(SystemExit):  # --tenant is required: the operator's keys sign
        main(["keys", "import", "--data-dir", str(tmp_path), "--public-key", str(pem_path)])
