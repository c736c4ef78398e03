"""Tests for signaling.live: the registry of connected sessions and moderators' overrides."""

from __future__ import annotations

from signaling.live import LiveRegistry, LiveSession


def live(session_id: str, tenant: str, room: str, identity: str, jti: str = "j") -> LiveSession:
    return LiveSession(
        session_id=session_id,
        channel="ws",
        tenant=tenant,
        room=room,
        identity=identity,
        name=identity,
        token_id=jti,
        issued_at=0.0,
        expires_at=100.0,
        token_grants=frozenset({"subscribe"}),
        grants=frozenset({"subscribe"}),
        end=lambda code, reason: None,
    )


def registry() -> LiveRegistry:
    reg = LiveRegistry(clock=lambda: 50.0)
    reg.add(live("1", "acme", "lobby", "alice", "ja"))
    reg.add(live("2", "acme", "lobby", "bob", "jb"))
    reg.add(live("3", "acme", "board", "alice", "ja2"))
    reg.add(live("4", "globex", "lobby", "alice", "ja"))
    return reg


def test_rooms_are_listed_per_tenant_only() -> None:
    reg = registry()
    assert sorted(reg.rooms("acme")) == ["board", "lobby"]
    assert list(reg.rooms("globex")) == ["lobby"]
    assert reg.rooms("initech") == {}


def test_sessions_of_a_participant_stay_inside_tenant_and_room() -> None:
    reg = registry()
    assert [s.session_id for s in reg.of_participant("acme", "lobby", "alice")] == ["1"]
    assert [s.session_id for s in reg.in_room("globex", "lobby")] == ["4"]


def test_matching_by_jti_or_identity_never_crosses_tenants() -> None:
    reg = registry()
    assert [s.session_id for s in reg.matching("acme", jti="ja")] == ["1"]
    assert sorted(s.session_id for s in reg.matching("acme", identity="alice")) == ["1", "3"]
    assert [s.session_id for s in reg.matching("globex", identity="alice")] == ["4"]


def test_removed_sessions_are_gone() -> None:
    reg = registry()
    assert reg.remove("1") is not None
    assert reg.remove("1") is None
    assert reg.of_participant("acme", "lobby", "alice") == []


def test_overrides_expire_and_are_cleared_with_their_room() -> None:
    now = [50.0]
    reg = LiveRegistry(clock=lambda: now[0])
    override = reg.ensure_override("acme", "lobby", "alice", 60.0)
    override.grants = frozenset()
    assert reg.override("acme", "lobby", "alice") is override
    assert reg.override("globex", "lobby", "alice") is None
    now[0] = 61.0
    assert reg.override("acme", "lobby", "alice") is None
    reg.ensure_override("acme", "lobby", "alice", 100.0)
    reg.ensure_override("acme", "board", "alice", 100.0)
    reg.clear_room("acme", "lobby")
    assert reg.override("acme", "lobby", "alice") is None
    assert reg.override("acme", "board", "alice") is not None
