"""Transfers that survive their sender's reconnect (sfu/routing/resume.py), with the
real sessions and SCTP associations of tests/routing/test_datachannel.py."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from sfu.routing import resume
from sfu.routing.datachannel import MAX_OPEN_TRANSFERS
from tests.routing.test_datachannel import (
    Client,
    connect,
    file_say,
    offer,
    room,
    run,
    send_chunks,
)
from tests.routing.test_session import Harness

__all__ = ["room"]  # the fixture

DATA = bytes(range(256)) * 800  # 204800 bytes


def start(room: Harness, *recipients: str, sent: int = 65536) -> tuple[Client, list[Client], int]:
    """alice offers DATA to ``recipients``, and the relay passes its first ``sent`` bytes;
    more chunks are queued on alice's side but never leave it before she goes."""
    alice = Client(room, "alice")
    others = [Client(room, name) for name in recipients]
    connect(alice, *others)
    offer(alice, DATA)
    run(alice, *others)
    number = alice.json(alice.file)[0]["transfer"]
    send_chunks(alice, number, DATA[:sent])
    run(alice, *others)
    send_chunks(alice, number, DATA[sent : sent + 32768])  # lost with the connection
    alice.session.close("network changed", time.monotonic())
    run(*others)
    return alice, others, number


def back(room: Harness, identity: str = "alice") -> Client:
    """A new session of ``identity`` with its channels open."""
    client = Client(room, identity)
    connect(client)
    return client


def types(client: Client) -> list[str]:
    return [m["type"] for m in client.json(client.file)]


def last(client: Client) -> dict[str, Any]:
    return client.json(client.file)[-1]


def test_a_new_session_of_the_sender_resumes_from_what_was_relayed(room: Harness) -> None:
    old, [bob], number = start(room, "bob")
    paused = last(bob)
    assert (paused["type"], paused["transfer"], paused["offset"]) == ("file_paused", number, 65536)
    assert room.room.data.transfers[number].paused_at is not None

    alice = back(room)
    offer(alice, DATA, resume=True)
    run(alice, bob)
    [accepted] = alice.json(alice.file)
    assert accepted == {"type": "file_accepted", "id": "f1", "transfer": number,
                        "recipients": ["bob"], "kept": False, "resumed": True,
                        "offset": 65536}  # fmt: skip
    assert last(bob) == {"type": "file_resumed", "transfer": number, "offset": 65536}
    send_chunks(alice, number, DATA[accepted["offset"] :])
    run(alice, bob)
    # Every byte once, in order: the recipient's hash matches the offer's.
    assert bob.chunks() == DATA
    assert hashlib.sha256(bob.chunks()).hexdigest() == bob.json(bob.file)[0]["sha256"]
    assert types(bob) == ["file_offer", "file_paused", "file_resumed", "file_complete"]
    file_say(bob, {"type": "file_received", "transfer": number, "ok": True})
    run(alice, bob)
    assert last(alice) == {"type": "file_received", "transfer": number, "ok": True,
                           "from": "bob"}  # fmt: skip
    [(event, detail)] = alice.reports
    assert (event, detail["result"], detail["relayed"], detail["resumed"]) == (
        "file_transfer", "complete", len(DATA), 1)  # fmt: skip
    assert detail["recipients"] == {"bob": "verified"} and old.reports == []


def test_the_same_session_resumes_after_reopening_its_file_channel(room: Harness) -> None:
    alice, bob = Client(room, "alice"), Client(room, "bob")
    connect(alice, bob)
    offer(alice, DATA)
    run(alice, bob)
    number = alice.json(alice.file)[0]["transfer"]
    send_chunks(alice, number, DATA[:16384])
    run(alice, bob)
    alice.sctp.close_channel(alice.file)
    run(alice, bob)
    assert last(bob)["type"] == "file_paused"
    alice.inbox.clear()
    alice.file = alice.sctp.open_channel("file")
    run(alice, bob)
    offer(alice, DATA, resume=True)
    run(alice, bob)
    assert last(alice)["offset"] == 16384
    send_chunks(alice, number, DATA[16384:])
    run(alice, bob)
    assert bob.chunks() == DATA and last(bob)["type"] == "file_complete"


def test_the_grace_period_starts_when_the_file_channel_goes(room: Harness) -> None:
    alice, bob = Client(room, "alice"), Client(room, "bob")
    connect(alice, bob)
    offer(alice, DATA)
    run(alice, bob)
    number = alice.json(alice.file)[0]["transfer"]
    alice.sctp.close_channel(alice.file)
    run(alice, bob)
    paused_at = room.room.data.transfers[number].paused_at
    assert paused_at is not None
    alice.session.close("left", paused_at + 30)  # then the whole connection
    run(bob)
    assert types(bob) == ["file_offer", "file_paused"]
    room.worker.on_dtls_timer(paused_at + resume.PAUSE_GRACE_S + 0.1)
    run(bob)
    assert last(bob)["reason"] == "sender did not come back"


def test_another_identity_cannot_resume_a_paused_transfer(room: Harness) -> None:
    _, [bob], number = start(room, "bob")
    mallory = back(room, "mallory")
    offer(mallory, DATA, resume=True)
    send_chunks(mallory, number, DATA[65536:])
    run(mallory, bob)
    said = mallory.json(mallory.file)
    assert (said[0]["code"], said[0]["id"]) == ("not_found", "f1")
    assert {(m["code"], m["transfer"]) for m in said[1:]} == {("not_found", number)}
    assert last(bob)["type"] == "file_paused" and len(bob.chunks()) == 65536
    assert room.room.data.transfers[number].paused_at is not None


def test_a_resume_must_repeat_the_interrupted_offer(room: Harness) -> None:
    _, [bob], number = start(room, "bob")
    alice = back(room)
    offer(alice, DATA[:-1], resume=True)  # another size and hash under the same id
    offer(alice, DATA, "f2", resume=True)  # another id
    run(alice, bob)
    codes = [(m["id"], m["code"]) for m in alice.json(alice.file)]
    assert codes == [("f1", "resume_mismatch"), ("f2", "not_found")]
    assert room.room.data.transfers[number].paused_at is not None
    offer(alice, DATA, resume=True)
    run(alice, bob)
    assert last(alice)["type"] == "file_accepted"


def test_a_resume_after_the_grace_period_is_refused(room: Harness) -> None:
    old, [bob], number = start(room, "bob")
    paused_at = room.room.data.transfers[number].paused_at
    assert paused_at is not None
    room.worker.on_dtls_timer(paused_at + resume.PAUSE_GRACE_S - 1)
    run(bob)
    assert last(bob)["type"] == "file_paused"
    room.worker.on_dtls_timer(paused_at + resume.PAUSE_GRACE_S + 0.1)
    run(bob)
    assert last(bob) == {"type": "file_cancel", "transfer": number,
                         "reason": "sender did not come back"}  # fmt: skip
    [(event, detail)] = old.reports
    assert (event, detail["result"], detail["relayed"]) == (
        "file_transfer", "sender did not come back", 65536)  # fmt: skip
    alice = back(room)
    offer(alice, DATA, resume=True)
    run(alice, bob)
    assert last(alice)["code"] == "not_found"


def test_a_revoked_send_grant_stops_a_resume(room: Harness) -> None:
    old, [bob], number = start(room, "bob")
    alice = back(room)
    alice.allowed = lambda action, others: (
        "send_file needs grant publish:file" if action == "send_file" else None
    )
    offer(alice, DATA, resume=True)
    run(alice, bob)
    error = last(alice)
    assert (error["type"], error["code"], error["id"]) == ("error", "forbidden", "f1")
    assert last(bob)["type"] == "file_cancel" and "no longer allowed" in last(bob)["reason"]
    assert number not in room.room.data.transfers
    [(_, detail)] = old.reports
    assert detail["result"] == "no longer allowed: send_file needs grant publish:file"
    assert len(bob.chunks()) == 65536


def test_a_recipient_that_lost_its_grant_gets_nothing_more(room: Harness) -> None:
    _, [bob, carol], number = start(room, "bob", "carol")
    carol.allowed = lambda action, others: (
        "no files for carol" if action == "receive_file" else None
    )
    alice = back(room)
    offer(alice, DATA, resume=True)
    run(alice, bob, carol)
    accepted = next(m for m in alice.json(alice.file) if m["type"] == "file_accepted")
    assert accepted["recipients"] == ["bob", "carol"]  # carol is settled, not pending
    dropped = next(m for m in alice.json(alice.file) if m["type"] == "file_cancel")
    assert (dropped["recipient"], dropped["reason"]) == ("carol", "no longer allowed to receive")
    send_chunks(alice, number, DATA[65536:])
    run(alice, bob, carol)
    assert bob.chunks() == DATA and len(carol.chunks()) == 65536
    assert "file_resumed" not in types(carol) and last(carol)["type"] == "file_cancel"


def test_nobody_left_to_receive_ends_the_transfer_on_resume(room: Harness) -> None:
    _, [bob], number = start(room, "bob")
    bob.allowed = lambda action, others: "no files for bob" if action == "receive_file" else None
    alice = back(room)
    offer(alice, DATA, resume=True)
    run(alice, bob)
    assert last(alice)["code"] == "no_recipients"
    assert number not in room.room.data.transfers
    assert last(bob)["type"] == "file_cancel"


def test_what_recipients_said_while_the_sender_was_away_reaches_it(room: Harness) -> None:
    alice, bob, carol = Client(room, "alice"), Client(room, "bob"), Client(room, "carol")
    connect(alice, bob, carol)
    small = DATA[:40000]
    offer(alice, small)
    run(alice, bob, carol)
    number = alice.json(alice.file)[0]["transfer"]
    send_chunks(alice, number, small)
    run(alice, bob, carol)
    alice.session.close("network changed", time.monotonic())
    file_say(bob, {"type": "file_received", "transfer": number, "ok": True})
    run(bob, carol)
    assert number in room.room.data.transfers  # carol has not answered yet
    alice = back(room)
    offer(alice, small, resume=True)
    run(alice, bob, carol)
    said = alice.json(alice.file)
    assert (said[0]["offset"], said[0]["recipients"]) == (len(small), ["bob", "carol"])
    assert said[1] == {"type": "file_received", "transfer": number, "ok": True, "from": "bob"}
    file_say(carol, {"type": "file_received", "transfer": number, "ok": True})
    run(alice, bob, carol)
    [(_, detail)] = alice.reports
    assert detail["result"] == "complete"
    assert detail["recipients"] == {"bob": "verified", "carol": "verified"}


def test_a_file_everyone_verified_while_its_sender_was_away_is_complete(room: Harness) -> None:
    alice, bob = Client(room, "alice"), Client(room, "bob")
    connect(alice, bob)
    small = DATA[:1000]
    offer(alice, small)
    run(alice, bob)
    number = alice.json(alice.file)[0]["transfer"]
    send_chunks(alice, number, small)
    run(alice, bob)
    left = time.monotonic()
    alice.session.close("network changed", left)
    file_say(bob, {"type": "file_received", "transfer": number, "ok": True})
    run(bob)
    # Kept for the sender to hear the result, until the grace period ends.
    assert room.room.data.transfers[number].paused_at is not None and alice.reports == []
    room.worker.on_dtls_timer(left + resume.PAUSE_GRACE_S + 0.1)
    run(bob)
    [(_, detail)] = alice.reports
    assert (detail["result"], detail["recipients"]) == ("complete", {"bob": "verified"})
    assert last(bob)["type"] == "file_paused"  # no cancel for a file that arrived


def test_a_sealed_transfer_resumes_at_a_chunk_boundary(room: Harness) -> None:
    from benchmarks.loadgen.e2ee import ReceiverKeyring, SenderKeys, open_file_offer, seal_file

    keys = SenderKeys(0.0)
    keyring = ReceiverKeyring()
    keyring.add_key(keys.current.kid, keys.current.base_key, 0.0)
    old, bob = Client(room, "alice"), Client(room, "bob")
    connect(old, bob)
    data = bytes(range(256)) * 300  # five sealed chunks
    outgoing = seal_file(keys, "plan.pdf", data, "application/pdf", 0.0)
    pieces = outgoing.chunks(data)
    file_say(old, outgoing.offer("f1"))
    run(old, bob)
    number = old.json(old.file)[0]["transfer"]
    for piece in pieces[:2]:
        old.sctp.send(old.file, number.to_bytes(4, "big") + piece, time.monotonic())
    run(old, bob)
    old.session.close("network changed", time.monotonic())
    alice = back(room)
    other = seal_file(keys, "plan.pdf", data, "application/pdf", 0.0)
    file_say(alice, {**other.offer("f1"), "resume": True})  # same sizes, another seal
    file_say(alice, {**outgoing.offer("f1"), "resume": True})
    run(alice, bob)
    mismatch, accepted = alice.json(alice.file)
    assert mismatch["code"] == "resume_mismatch"
    assert accepted["offset"] == len(pieces[0]) + len(pieces[1])
    for piece in pieces[2:]:
        alice.sctp.send(alice.file, number.to_bytes(4, "big") + piece, time.monotonic())
    run(alice, bob)
    incoming = open_file_offer(keyring, outgoing.sealed, len(data), "application/pdf", 0.0)
    relayed = [d[4:] for s, d, ppid in bob.inbox if s == bob.file and ppid == 53]
    assert b"".join(incoming.open_chunk(i, p) for i, p in enumerate(relayed)) == data
    assert last(bob)["type"] == "file_complete"


def test_a_resume_counts_against_the_transfers_at_once(room: Harness) -> None:
    _, [bob], number = start(room, "bob")
    alice = back(room)
    for i in range(MAX_OPEN_TRANSFERS):
        offer(alice, b"x" * 10, f"n{i}")
    offer(alice, DATA, resume=True)
    run(alice, bob)
    assert last(alice)["code"] == "busy"
    assert room.room.data.transfers[number].paused_at is not None  # still resumable


def test_an_identity_keeps_a_bounded_number_of_paused_transfers(room: Harness) -> None:
    bob = Client(room, "bob")
    first = Client(room, "alice")
    connect(first, bob)
    for i in range(MAX_OPEN_TRANSFERS):
        offer(first, b"x" * 10, f"a{i}")
    run(first, bob)
    first.session.close("network changed", time.monotonic())
    second = back(room)
    offer(second, b"y" * 10, "b0")
    run(second, bob)
    second.session.close("network changed", time.monotonic())
    run(bob)
    relay = room.room.data
    assert len(resume.Resumption(relay).paused()) == resume.MAX_PAUSED_PER_SENDER
    [(_, detail)] = first.reports
    assert detail["result"] == "too many paused transfers"


def test_a_sender_may_cancel_its_paused_transfer_from_its_new_session(room: Harness) -> None:
    _, [bob], number = start(room, "bob")
    alice = back(room)
    file_say(alice, {"type": "file_cancel", "transfer": number})
    run(alice, bob)
    assert last(bob) == {"type": "file_cancel", "transfer": number,
                         "reason": "cancelled by the sender"}  # fmt: skip
    assert number not in room.room.data.transfers
