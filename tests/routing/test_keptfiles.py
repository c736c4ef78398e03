"""Files a room keeps for later members (sfu/routing/keptfiles.py), through the room's
relay with real sessions, SCTP associations and an on-disk FileStore."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sfu.io.filestore import FileStore
from sfu.routing.datachannel import FileLimits
from sfu.routing.types import FilesDeleted, RoomEvent
from tests.routing.test_datachannel import (
    Client,
    connect,
    file_say,
    offer,
    run,
    send_chunks,
)
from tests.routing.test_session import Harness

DATA = bytes(range(256)) * 200  # 51,200 bytes: four chunks


@dataclass
class Keeping:
    """A room that keeps files, with alice and bob connected."""

    harness: Harness
    store: FileStore
    events: list[tuple[str, RoomEvent]]
    alice: Client
    bob: Client


@pytest.fixture
def keeping(tmp_path: Path) -> Keeping:
    harness = Harness()
    store = FileStore(tmp_path / "files", 10_000_000)
    events: list[tuple[str, RoomEvent]] = []
    harness.room.observer = lambda room, event: events.append((room, event))
    relay = harness.room.data
    relay.kept.store = store
    relay.limits = FileLimits(keep=True)
    alice, bob = Client(harness, "alice"), Client(harness, "bob")
    connect(alice, bob)
    return Keeping(harness, store, events, alice, bob)


def upload(alice: Client, *others: Client, data: bytes = DATA, **extra: object) -> int:
    offer(alice, data, **extra)
    run(alice, *others)
    accepted = alice.json(alice.file)[-1]
    assert accepted["type"] == "file_accepted", accepted
    send_chunks(alice, accepted["transfer"], data)
    run(alice, *others)
    number: int = accepted["transfer"]
    return number


def pump(harness: Harness, *clients: Client, rounds: int = 50) -> None:
    for _ in range(rounds):
        harness.room.data.on_timer(time.monotonic() + 1)
        run(*clients)


def test_a_later_member_gets_the_kept_file_whole_and_it_is_audited(
    keeping: Keeping,
) -> None:
    harness, store = keeping.harness, keeping.store
    alice, bob = keeping.alice, keeping.bob
    upload(alice, bob)
    assert bob.chunks() == DATA
    assert alice.json(alice.file)[0]["kept"] is True
    assert len(store.kept("r")) == 1
    # Carol joins later: her file channel opens, and the kept file comes to her.
    carol = Client(harness, "carol")
    connect(carol)
    pump(harness, carol)
    offered, *rest = carol.json(carol.file)
    assert offered["type"] == "file_offer" and offered["kept"] is True
    assert (offered["from"], offered["name"], offered["size"]) == ("alice", "a.bin", len(DATA))
    assert offered["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert [m["type"] for m in rest] == ["file_complete"]
    assert carol.chunks() == DATA
    file_say(carol, {"type": "file_received", "transfer": offered["transfer"], "ok": True})
    run(carol)
    [(event, detail)] = carol.reports
    assert event == "file_transfer" and detail["kept"] is True
    assert detail["recipients"] == {"carol": "verified"} and detail["relayed"] == len(DATA)
    assert carol.json(carol.file)[-1]["type"] == "file_complete"  # no error for the receipt


def test_files_to_one_member_or_not_allowed_to_receive_are_not_offered(
    keeping: Keeping,
) -> None:
    harness, store = keeping.harness, keeping.store
    alice, bob = keeping.alice, keeping.bob
    upload(alice, bob, to="bob")
    assert store.kept("r") == []  # a direct file is never kept
    upload(alice, bob, data=b"for the room")
    carol = Client(harness, "carol")
    carol.allowed = lambda action, others: "no files" if action == "receive_file" else None
    connect(carol)
    pump(harness, carol)
    assert carol.json(carol.file) == []


def test_an_unfinished_upload_is_not_kept(
    keeping: Keeping,
) -> None:
    store = keeping.store
    alice, bob = keeping.alice, keeping.bob
    offer(alice, DATA)
    run(alice, bob)
    number = alice.json(alice.file)[-1]["transfer"]
    send_chunks(alice, number, DATA[:20_000])
    run(alice, bob)
    file_say(alice, {"type": "file_cancel", "transfer": number})
    run(alice, bob)
    assert store.kept("r") == [] and store.used_bytes == 0
    assert list(store.root.iterdir()) == []


def test_the_meeting_end_deletes_kept_files_and_says_so(
    keeping: Keeping,
) -> None:
    store, events = keeping.store, keeping.events
    alice, bob = keeping.alice, keeping.bob
    upload(alice, bob)
    alice.session.close("left", time.monotonic())
    assert len(store.kept("r")) == 1  # bob is still there
    bob.session.close("left", time.monotonic())
    assert store.kept("r") == [] and list(store.root.iterdir()) == []
    deleted = [e for _, e in events if isinstance(e, FilesDeleted)]
    assert len(deleted) == 1 and deleted[0].reason == "meeting ended"
    assert deleted[0].files[0]["name"] == "a.bin" and deleted[0].files[0]["from"] == "alice"


def test_retention_deletes_a_kept_file_even_while_it_is_being_sent(
    keeping: Keeping,
) -> None:
    harness, store, events = keeping.harness, keeping.store, keeping.events
    harness.room.data.limits = FileLimits(keep=True, retention_s=30)
    upload(keeping.alice, keeping.bob)
    # A slow quota from now on: carol gets a chunk or so per tenth of a second.
    harness.room.data.limits = FileLimits(keep=True, retention_s=30, rate_bps=8 * 16384)
    carol = Client(harness, "carol")
    connect(carol)
    harness.room.data.on_timer(time.monotonic() + 0.1)
    for _ in range(3):  # SCTP needs a few round trips for a 16 KiB message
        run(carol)
    assert 0 < len(carol.chunks()) < len(DATA)
    harness.room.data.on_timer(time.monotonic() + 31)
    run(carol)
    assert carol.json(carol.file)[-1]["reason"] == "deleted"
    assert store.kept("r") == []
    [deleted] = [e for _, e in events if isinstance(e, FilesDeleted)]
    assert deleted.reason == "retention"
    assert carol.reports[0][1]["result"] == "deleted"


def test_a_resumed_upload_is_kept_whole(
    keeping: Keeping,
) -> None:
    harness, store = keeping.harness, keeping.store
    alice, bob = keeping.alice, keeping.bob
    offer(alice, DATA)
    run(alice, bob)
    number = alice.json(alice.file)[0]["transfer"]
    send_chunks(alice, number, DATA[:16384])
    run(alice, bob)
    alice.session.close("network changed", time.monotonic())
    run(bob)
    assert store.kept("r") == []  # not kept while its upload is unfinished
    again = Client(harness, "alice")
    connect(again)
    offer(again, DATA, resume=True)
    run(again, bob)
    accepted = again.json(again.file)[-1]
    assert (accepted["kept"], accepted["offset"]) == (True, 16384)
    send_chunks(again, number, DATA[16384:])
    run(again, bob)
    # A later member gets the whole file, every byte once.
    carol = Client(harness, "carol")
    connect(carol)
    pump(harness, carol)
    assert carol.chunks() == DATA
