"""Tests for signaling.revocations: the persisted revocation list and its verify hook."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from signaling.revocations import Revocation, RevocationError, RevocationStore
from signaling.tokens import SigningKeys, TokenError

NOW = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def by_jti(jti: str, tenant: str = "acme", expires_at: float = NOW + 600) -> Revocation:
    return Revocation(tenant, jti, None, NOW, expires_at)


def by_identity(identity: str, tenant: str = "acme", revoked_at: float = NOW) -> Revocation:
    return Revocation(tenant, None, identity, revoked_at, revoked_at + 600)


def test_a_revoked_jti_is_refused_only_in_its_tenant(tmp_path: Path) -> None:
    store = RevocationStore(tmp_path, clock=Clock())
    store.add(by_jti("abc"))
    assert store.check("acme", "abc", "alice", NOW - 10) is not None
    assert store.check("globex", "abc", "alice", NOW - 10) is None
    assert store.check("acme", "abd", "alice", NOW - 10) is None


def test_identity_revocation_covers_tokens_issued_until_then_not_later(tmp_path: Path) -> None:
    store = RevocationStore(tmp_path, clock=Clock())
    store.add(by_identity("alice"))
    assert store.check("acme", "t1", "alice", NOW - 100) is not None
    assert store.check("acme", "t1", "alice", NOW) is not None
    assert store.check("acme", "t2", "alice", NOW + 1) is None  # a fresh token
    assert store.check("acme", "t1", "bob", NOW - 100) is None
    assert store.check("globex", "t1", "alice", NOW - 100) is None


def test_revocations_survive_a_restart(tmp_path: Path) -> None:
    RevocationStore(tmp_path, clock=Clock()).add(by_jti("abc"))
    reopened = RevocationStore(tmp_path, clock=Clock())
    assert reopened.check("acme", "abc", "x", NOW) is not None
    assert json.loads((tmp_path / "revocations.json").read_text())["version"] == 1


def test_entries_expire_when_the_token_would_have(tmp_path: Path) -> None:
    clock = Clock()
    store = RevocationStore(tmp_path, clock=clock)
    store.add(by_jti("old", expires_at=NOW + 10))
    clock.now = NOW + 11
    assert store.check("acme", "old", "x", NOW) is None
    assert store.entries() == []
    store.add(by_jti("new"))
    # Expired entries are dropped from the file at the next write.
    text = (tmp_path / "revocations.json").read_text()
    assert '"new"' in text and '"old"' not in text


def test_a_second_store_sees_another_writers_entry_after_refresh(tmp_path: Path) -> None:
    server = RevocationStore(tmp_path, clock=Clock())
    cli = RevocationStore(tmp_path, clock=Clock())
    server.add(by_jti("one"))
    cli.add(by_jti("two"))  # read-modify-write keeps "one"
    assert server.check("acme", "two", "x", NOW) is None
    assert server.refresh() is True
    assert server.check("acme", "two", "x", NOW) is not None
    assert server.check("acme", "one", "x", NOW) is not None
    assert server.refresh() is False


def test_a_broken_file_keeps_the_last_good_entries(tmp_path: Path) -> None:
    store = RevocationStore(tmp_path, clock=Clock())
    store.add(by_jti("abc"))
    path = tmp_path / "revocations.json"
    path.write_text("{not json")
    os.utime(path, ns=(1, 1))
    assert store.refresh() is False
    assert store.check("acme", "abc", "x", NOW) is not None


@pytest.mark.parametrize(
    "raw",
    [
        {"tenant": "acme", "revoked_at": 1, "expires_at": 2},
        {"tenant": "acme", "jti": "a", "identity": "b", "revoked_at": 1, "expires_at": 2},
        {"tenant": "a/b", "jti": "a", "revoked_at": 1, "expires_at": 2},
        {"tenant": "acme", "jti": "a b", "revoked_at": 1, "expires_at": 2},
        {"tenant": "acme", "identity": "", "revoked_at": 1, "expires_at": 2},
        {"tenant": "acme", "identity": "a\u202e", "revoked_at": 1, "expires_at": 2},
        {"tenant": "acme", "jti": "a", "revoked_at": True, "expires_at": 2},
        {"tenant": "acme", "jti": "a", "revoked_at": 1, "expires_at": "2"},
        {"tenant": "acme", "jti": "a", "revoked_at": 1, "expires_at": 2, "x": 1},
        ["not", "an", "object"],
    ],
)
def test_invalid_entries_are_refused(raw: object) -> None:
    with pytest.raises(RevocationError):
        Revocation.from_json(raw)


def test_verify_refuses_a_revoked_token_and_accepts_others(tmp_path: Path) -> None:
    keys = SigningKeys.load_or_create(tmp_path, now=NOW)
    store = RevocationStore(tmp_path, clock=Clock())
    keys.revoked = store.reason
    token = keys.issue(identity="alice", room="r", tenant="acme", now=NOW)
    other = keys.issue(identity="bob", room="r", tenant="acme", now=NOW)
    access = keys.verify(token, now=NOW)
    store.add(by_jti(access.token_id))
    with pytest.raises(TokenError) as refused:
        keys.verify(token, now=NOW)
    assert (refused.value.code, refused.value.message) == ("unauthorized", "token revoked")
    assert keys.verify(other, now=NOW).identity == "bob"
    store.add(by_identity("bob"))
    with pytest.raises(TokenError, match="revoked"):
        keys.verify(other, now=NOW)
