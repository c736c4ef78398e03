"""Files kept for late joiners (sfu/io/filestore.py): sealed at rest, deleted on time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sfu.io.filestore import FileStore, StoredFile, StoreError

CHUNKS = [os.urandom(16 * 1024) for _ in range(5)] + [b"tail"]
SIZE = sum(len(c) for c in CHUNKS)


def kept(store: FileStore, room: str = "r", retention_s: float | None = None) -> StoredFile:
    stored = store.begin(room, {"name": "a.bin", "size": SIZE}, SIZE, 0.0, retention_s)
    assert stored is not None
    for chunk in CHUNKS:
        store.append(stored, chunk)
    store.finish(stored)
    return stored


def test_a_kept_file_reads_back_and_no_plaintext_is_on_disk(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files", 10_000_000)
    stored = kept(store)
    assert store.kept("r") == [stored]
    assert b"".join(store.read(stored)) == b"".join(CHUNKS)
    on_disk = b"".join(p.read_bytes() for p in (tmp_path / "files").iterdir())
    assert len(on_disk) > SIZE
    for chunk in CHUNKS[:5]:
        assert chunk[:64] not in on_disk
    assert b"tail" not in on_disk
    assert oct((tmp_path / "files").stat().st_mode & 0o777) == "0o700"


def test_tampering_on_disk_is_detected(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files", 10_000_000)
    stored = kept(store)
    [path] = (tmp_path / "files").iterdir()
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="authentication"):
        list(store.read(stored))
    path.write_bytes(bytes(data[:50]))
    with pytest.raises(StoreError):
        list(store.read(stored))


def test_chunks_cannot_be_swapped_between_positions(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files", 10_000_000)
    stored = store.begin("r", {}, 8, 0.0, None)
    assert stored is not None
    store.append(stored, b"AAAA")
    store.append(stored, b"BBBB")
    [path] = (tmp_path / "files").iterdir()
    data = path.read_bytes()
    half = len(data) // 2
    path.write_bytes(data[half:] + data[:half])
    with pytest.raises(StoreError):
        list(store.read(stored))


def test_meeting_end_and_retention_delete_files_and_forget_the_key(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files", 10_000_000)
    a = kept(store, "a")
    b = kept(store, "b", retention_s=60)
    assert store.expire(59.0, "b") == []
    assert store.expire(60.0, "a") == [] and store.expire(60.0, "b") == [b]
    assert store.kept("b") == [] and "b" not in store._keys
    assert store.delete_room("a") == [a]
    assert list((tmp_path / "files").iterdir()) == []
    assert store.used_bytes == 0
    with pytest.raises(StoreError):
        list(store.read(a))


def test_the_budget_refuses_files_that_do_not_fit(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files", SIZE + 10)
    first = kept(store)
    assert store.begin("r", {}, 11, 0.0, None) is None
    store.delete(first)
    assert store.begin("r", {}, 11, 0.0, None) is not None


def test_more_bytes_than_announced_are_refused(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "files", 1000)
    stored = store.begin("r", {}, 4, 0.0, None)
    assert stored is not None
    store.append(stored, b"1234")
    with pytest.raises(StoreError):
        store.append(stored, b"5")


def test_leftovers_of_an_earlier_process_are_removed_at_start(tmp_path: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    (root / "7.sealed").write_bytes(b"sealed under a key that is gone")
    FileStore(root, 1000)
    assert list(root.iterdir()) == []
