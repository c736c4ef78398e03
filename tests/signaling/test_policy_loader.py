"""Policy files on disk, the engine's rechecks, and `sfu policy lint/check`."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from signaling.cli import _parser
from signaling.policy import DEFAULT_POLICY, PolicySet, PolicyStore, ensure_policy_dir
from signaling.policy import commands as policy_commands
from signaling.policy.engine import PolicyEngine
from signaling.tokens import AccessToken

PACKS = Path(__file__).resolve().parents[2] / "examples" / "policies"


class FakeAudit:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, str, dict[str, Any]]] = []

    def record(self, event: str, actor: str = "", room: str = "", **detail: Any) -> None:
        self.records.append((event, actor, room, detail))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [detail for event, _a, _r, detail in self.records if event == name]


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def token(grants: frozenset[str], **attrs: Any) -> AccessToken:
    return AccessToken(
        identity="s1", room="math", grants=grants, name="s1", token_id="j", expires_at=0.0,
        tenant="school", attrs=attrs,
    )  # fmt: skip


def touch(path: Path, text: str, mtime: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime, mtime))


def test_first_start_writes_a_default_policy_that_follows_the_grants(tmp_path: Path) -> None:
    directory = ensure_policy_dir(tmp_path)
    assert (directory / "default.policy").read_text() == DEFAULT_POLICY
    engine = PolicyEngine(PolicyStore(directory), None, FakeAudit())
    viewer = token(frozenset({"subscribe"}))
    assert engine.decide(viewer, "join").allowed
    assert engine.decide(viewer, "subscribe").allowed
    assert not engine.decide(viewer, "publish:audio").allowed
    assert not engine.decide(viewer, "record").allowed
    # An existing directory is left as it is (here: emptied, so everything is denied).
    (directory / "default.policy").unlink()
    ensure_policy_dir(tmp_path)
    assert not (directory / "default.policy").exists()
    assert (
        not PolicyEngine(PolicyStore(directory), None, FakeAudit()).decide(viewer, "join").allowed
    )


def test_malformed_file_keeps_the_last_valid_set_and_is_audited(tmp_path: Path) -> None:
    audit, clock = FakeAudit(), Clock()
    touch(tmp_path / "a.policy", 'allow "all joins" when action is join', 1)
    store = PolicyStore(tmp_path, audit, clock=clock)
    touch(tmp_path / "a.policy", 'allow "all joins" when action is jion', 2)
    clock.now += 0.5
    assert store.refresh().rule_count == 1  # not looked at yet: at most once a second
    clock.now += 1
    kept = store.refresh()
    assert kept.files[0].rules[0].name == "all joins" and store.generation == 0
    [error] = audit.events("policy_error")
    assert (error["file"], error["line"], error["col"]) == ("a.policy", 1, 34)
    touch(tmp_path / "a.policy", 'deny "no joins" when action is join', 3)
    assert store.reload() and store.policies.files[0].rules[0].name == "no joins"
    assert audit.events("policy_loaded")


def test_recheck_mutes_a_student_whose_camera_stays_off_and_restores_them(
    tmp_path: Path,
) -> None:
    audit, clock = FakeAudit(), Clock()
    (tmp_path / "education.policy").write_text(
        (PACKS / "education" / "education.policy").read_text()
    )
    engine = PolicyEngine(PolicyStore(tmp_path), None, audit, clock=clock)
    student = token(frozenset({"publish:audio", "publish:video"}), role="student",
                    real_name_verified=True)  # fmt: skip
    changes: list[tuple[str, bool]] = []
    engine.watch("sess", student, "ws", lambda action, d: changes.append((action, d.allowed)))
    engine.set_active("sess", {"publish:audio"})
    assert engine.recheck() == []
    clock.now += 30
    assert engine.recheck() == []
    clock.now += 1
    [(session, action, decision)] = engine.recheck()
    assert (session, action, decision.allowed) == ("sess", "publish:audio", False)
    assert changes == [("publish:audio", False)]
    [denial] = audit.events("policy_deny")
    assert denial["rule"] == "students keep their camera on to keep speaking" and denial["live"]
    engine.set_camera("sess", True)
    engine.recheck()
    assert changes[-1] == ("publish:audio", True)


def test_recheck_follows_live_grant_changes(tmp_path: Path) -> None:
    ensure_policy_dir(tmp_path)
    engine = PolicyEngine(PolicyStore(tmp_path / "policies"), None, FakeAudit())
    grants = {"now": frozenset({"publish:audio"})}
    engine.watch("s", token(grants["now"]), "ws", lambda a, d: None, lambda: grants["now"])
    engine.set_active("s", {"publish:audio"})
    assert engine.recheck() == []
    grants["now"] = frozenset()
    [(_s, action, decision)] = engine.recheck()
    assert action == "publish:audio" and not decision.allowed


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = policy_commands.run(_parser().parse_args(argv), out, err)
    return status, out.getvalue(), err.getvalue()


def test_lint_prints_file_line_col_and_exits_1(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.policy", tmp_path / "bad.policy"
    good.write_text('allow "j" when action is join\n')
    bad.write_text('# header\nallow "j"\n  when subject.mfa >= "two"\n')
    status, out, err = run_cli(["policy", "lint", str(good), str(bad)])
    assert status == 1
    assert f"{good}: ok" in out
    assert err.startswith(f"{bad}:3:23: '>=' compares numbers")
    assert run_cli(["policy", "lint", str(good)])[0] == 0


def test_lint_accepts_the_shipped_packs() -> None:
    files = [str(p) for p in sorted(PACKS.glob("*/*.policy"))]
    assert len(files) == 3
    assert run_cli(["policy", "lint", *files])[0] == 0


def test_check_is_a_dry_run_printing_decision_and_rule(tmp_path: Path) -> None:
    base = [
        "policy", "check", "--policies", str(PACKS / "finance"), "--action", "join",
        "--resource", "tenant=bank,room=deal,labels=confidential",
    ]  # fmt: skip
    status, out, _ = run_cli(
        [*base, "--subject", "identity=alice,tenant=bank,mfa=2,grants=subscribe",
         "--context", "time=2026-11-30T10:00:00+01:00"]
    )  # fmt: skip
    assert status == 0 and out.startswith("ALLOW\n")
    assert "rule: a valid token admits its holder to its room (finance.policy:" in out
    assert "obligations: audit_counterparty" in out
    status, out, _ = run_cli(
        [*base, "--subject", "identity=alice,tenant=bank,mfa=1",
         "--context", "time=2026-11-30T10:00:00+01:00"]
    )  # fmt: skip
    assert status == 3 and out.startswith("DENY\n")
    assert "rule: confidential rooms need a second factor (finance.policy:" in out
    assert "reason: confidential rooms need mfa >= 2" in out


def test_check_uses_the_data_dir_default_and_rejects_bad_input(tmp_path: Path) -> None:
    args = ["policy", "check", "--data-dir", str(tmp_path), "--action", "publish:video",
            "--resource", "tenant=t,room=r"]  # fmt: skip
    status, out, _ = run_cli([*args, "--subject", "identity=a,tenant=t,grants=publish:audio"])
    assert status == 3 and "no rule allows publish:video" in out
    status, _, err = run_cli([*args, "--subject", "identity=a,grants=superuser"])
    assert status == 2 and "unknown grant" in err


def test_policy_set_orders_files_by_name() -> None:
    policies = PolicySet.parse(
        {"b.policy": 'allow "b" when action is join', "a.policy": 'allow "a" when action is join'}
    )
    assert [f.name for f in policies] == ["a.policy", "b.policy"]
