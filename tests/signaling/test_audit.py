"""The audit log: every kind of tampering with the database is caught by verify."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from signaling.audit import AuditLog, AuditPaths, export, load_or_create_key, verify


def write_log(data_dir: Path, count: int = 10) -> AuditPaths:
    paths = AuditPaths.in_data_dir(data_dir)
    log = AuditLog(paths)
    for i in range(count):
        log.record("join", f"user{i}", "room", n=i)
    log.close()
    return paths


def tamper(paths: AuditPaths, sql: str, *params: object) -> None:
    db = sqlite3.connect(paths.database)
    with db:
        db.execute(sql, params)
    db.close()


def test_intact_log_verifies_with_every_record(tmp_path: Path) -> None:
    paths = write_log(tmp_path)
    result = verify(paths)
    assert result.ok and result.records == 10


def test_edited_detail_is_caught(tmp_path: Path) -> None:
    paths = write_log(tmp_path)
    tamper(paths, "UPDATE audit SET detail = ? WHERE seq = 4", json.dumps({"n": 99}))
    result = verify(paths)
    assert not result.ok and result.first_bad == 4 and "edited" in result.reason


def test_edit_with_recomputed_hash_is_caught_by_the_mac(tmp_path: Path) -> None:
    """Someone with the database but not the key rebuilds the chain after an edit."""
    paths = write_log(tmp_path, count=5)
    db = sqlite3.connect(paths.database)
    rows = db.execute(
        "SELECT seq, ts, event, actor, room, detail FROM audit ORDER BY seq"
    ).fetchall()
    db.close()
    from signaling import audit as audit_module

    prev = audit_module.GENESIS
    db = sqlite3.connect(paths.database)
    with db:
        for seq, ts, event, actor, room, detail in rows:
            if seq == 3:
                actor = "somebody-else"
            content = audit_module._content(seq, ts, event, actor, room, detail)
            record_hash = audit_module._chain(prev, content)
            db.execute(
                "UPDATE audit SET actor=?, prev_hash=?, hash=? WHERE seq=?",
                (actor, prev, record_hash, seq),
            )
            prev = record_hash
    db.close()
    result = verify(paths)
    assert not result.ok and result.first_bad == 3 and "MAC" in result.reason


def test_deleted_record_in_the_middle_is_caught(tmp_path: Path) -> None:
    paths = write_log(tmp_path)
    tamper(paths, "DELETE FROM audit WHERE seq = 6")
    result = verify(paths)
    assert not result.ok and result.first_bad == 6 and "deleted" in result.reason


def test_records_cut_off_the_end_are_caught_by_the_checkpoint(tmp_path: Path) -> None:
    paths = write_log(tmp_path)
    tamper(paths, "DELETE FROM audit WHERE seq > 7")
    result = verify(paths)
    assert not result.ok and result.first_bad == 8 and "truncated" in result.reason


def test_inserted_record_is_caught(tmp_path: Path) -> None:
    paths = write_log(tmp_path)
    # Make room at seq 5 by shifting the later records, then insert a forged one.
    tamper(paths, "UPDATE audit SET seq = seq + 100 WHERE seq >= 5")
    tamper(paths, "UPDATE audit SET seq = seq - 99 WHERE seq >= 105")
    tamper(
        paths,
        "INSERT INTO audit SELECT 5, ts, 'join', 'intruder', room, detail, prev_hash, hash, mac "
        "FROM audit WHERE seq = 4",
    )
    result = verify(paths)
    assert not result.ok and result.first_bad == 5


def test_reordered_records_are_caught(tmp_path: Path) -> None:
    paths = write_log(tmp_path)
    tamper(paths, "UPDATE audit SET seq = -1 WHERE seq = 2")
    tamper(paths, "UPDATE audit SET seq = 2 WHERE seq = 3")
    tamper(paths, "UPDATE audit SET seq = 3 WHERE seq = -1")
    result = verify(paths)
    assert not result.ok and result.first_bad == 2 and "reordered" in result.reason


def test_forged_checkpoint_is_caught(tmp_path: Path) -> None:
    paths = write_log(tmp_path)
    tamper(paths, "DELETE FROM audit WHERE seq > 7")
    checkpoint = json.loads(paths.checkpoint.read_text())
    checkpoint["count"] = 7  # claim the log always ended at 7
    paths.checkpoint.write_text(json.dumps(checkpoint))
    result = verify(paths)
    assert not result.ok and "checkpoint" in result.reason


def test_verify_works_on_a_copied_data_directory(tmp_path: Path) -> None:
    write_log(tmp_path / "live")
    shutil.copytree(tmp_path / "live", tmp_path / "copy")
    assert verify(AuditPaths.in_data_dir(tmp_path / "copy")).ok


def test_log_continues_the_chain_across_restarts(tmp_path: Path) -> None:
    write_log(tmp_path, count=3)
    write_log(tmp_path, count=4)
    result = verify(AuditPaths.in_data_dir(tmp_path))
    assert result.ok and result.records == 7


def test_full_queue_never_blocks_and_the_overflow_is_audited(tmp_path: Path) -> None:
    paths = AuditPaths.in_data_dir(tmp_path)
    log = AuditLog(paths, queue_size=5)
    started = time.monotonic()
    for i in range(5000):
        log.record("join", f"u{i}", "r")
    assert time.monotonic() - started < 1.0  # record() never waits for the disk
    log.close()
    records = list(export(paths))
    overflow = [r for r in records if r["event"] == "audit_overflow"]
    assert overflow and sum(r["detail"]["lost_events"] for r in overflow) == log.dropped > 0
    assert len(records) - len(overflow) + log.dropped == 5000
    assert verify(paths).ok


def test_key_file_is_private_and_kept_outside_the_database_directory(tmp_path: Path) -> None:
    paths = write_log(tmp_path, count=1)
    assert paths.key.stat().st_mode & 0o777 == 0o600
    assert paths.key.parent != paths.database.parent
    assert load_or_create_key(paths.key) == paths.key.read_bytes()


def test_export_since_filters_by_time(tmp_path: Path) -> None:
    paths = AuditPaths.in_data_dir(tmp_path)
    log = AuditLog(paths)
    log.record("early")
    log.close()
    cut = time.time()
    log = AuditLog(paths)
    log.record("late")
    log.close()
    assert [r["event"] for r in export(paths, since=cut)] == ["late"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signaling.cli", "audit", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_cli_verify_exit_codes_name_the_bad_record(tmp_path: Path) -> None:
    paths = write_log(tmp_path)
    ok = _cli("verify", "--data-dir", str(tmp_path))
    assert ok.returncode == 0 and "10 records" in ok.stdout
    tamper(paths, "UPDATE audit SET actor = 'x' WHERE seq = 9")
    bad = _cli("verify", "--data-dir", str(tmp_path))
    assert bad.returncode == 1 and "record 9" in bad.stderr


@pytest.mark.parametrize("since", ["2020-01-01T00:00:00", "0"])
def test_cli_export_prints_json_lines(tmp_path: Path, since: str) -> None:
    write_log(tmp_path, count=3)
    out = _cli("export", "--data-dir", str(tmp_path), "--since", since, "--format", "jsonl")
    assert out.returncode == 0
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["seq"] for r in lines] == [1, 2, 3]
