"""The room's data-channel relay (sfu/routing/datachannel.py) with real sessions and
real SCTP associations as clients; only DTLS is left out (SCTP packets are handed
straight between the client association and the session's endpoint)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from sfu.proto.sctp import ChannelClosed, MessageReceived, SctpAssociation
from sfu.routing import datachannel, resume
from sfu.routing.datachannel import DataEndpoint, FileLimits
from sfu.routing.session import Session, SessionPolicy
from tests.routing.test_session import Harness

OFFER = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n" + (
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
    "a=ice-ufrag:VCbB\r\na=ice-pwd:zhKDTRMzn00cWE+q0Kq8hfQI\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"
    "a=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n"
)


class Client:
    """A participant's side: its own SCTP association wired to its session's endpoint."""

    def __init__(self, harness: Harness, identity: str, *, manual_release: bool = False) -> None:
        policy = SessionPolicy(can_publish=True, can_subscribe=True, data_channels=True)
        self.worker = harness.worker
        self.session: Session = harness.session(identity, policy)
        self.session.negotiate(OFFER, {}, time.monotonic())
        assert self.session.data is not None
        self.endpoint: DataEndpoint = self.session.data
        self.allowed: Callable[[str, list[str]], str | None] = lambda action, others: None
        self.session.data_authorize = lambda action, others: self.allowed(action, others)
        self.reports: list[tuple[str, dict[str, Any]]] = []
        self.session.data_report = lambda event, detail: self.reports.append((event, detail))
        self.sctp = SctpAssociation(is_dtls_server=False, manual_release=manual_release)
        # The endpoint's transport "sends" straight into this association.
        self.endpoint.transport.send_sctp = (  # type: ignore[method-assign]
            lambda packet: self.sctp.receive(packet, time.monotonic())
        )
        self.inbox: list[tuple[int, bytes, int]] = []  # (stream, data, ppid)
        self.closed: list[int] = []
        self.control = -1
        self.file = -1

    def pump(self) -> bool:
        now = time.monotonic()
        moved = False
        for packet in self.sctp.packets_to_send(now):
            self.endpoint.on_packet(packet, now)
            moved = True
        self.worker.flush_data(now)  # as the I/O layer does after each receive batch
        for event in self.sctp.events():
            if isinstance(event, MessageReceived):
                self.inbox.append((event.stream_id, event.data, event.ppid))
            elif isinstance(event, ChannelClosed):
                self.closed.append(event.stream_id)
        return moved

    def json(self, stream: int) -> list[dict[str, Any]]:
        return [json.loads(d) for s, d, ppid in self.inbox if s == stream and ppid == 51]

    def chunks(self) -> bytes:
        return b"".join(d[4:] for s, d, ppid in self.inbox if s == self.file and ppid == 53)


def run(*clients: Client, rounds: int = 200) -> None:
    for _ in range(rounds):
        if not any([c.pump() for c in clients]):
            return


def connect(*clients: Client, ordered: bool = True) -> None:
    for client in clients:
        client.sctp.start(time.monotonic())
    run(*clients)
    for client in clients:
        client.control = client.sctp.open_channel("control", ordered=ordered)
        client.file = client.sctp.open_channel("file")
    run(*clients)


@pytest.fixture
def room() -> Harness:
    return Harness()


def say(client: Client, message: dict[str, Any]) -> None:
    client.sctp.send(client.control, json.dumps(message), time.monotonic())


def file_say(client: Client, message: dict[str, Any]) -> None:
    client.sctp.send(client.file, json.dumps(message), time.monotonic())


def offer(client: Client, data: bytes, file_id: str = "f1", **extra: Any) -> None:
    file_say(client, {"type": "file_offer", "id": file_id, "name": "a.bin", "size": len(data),
                      "mime": "application/octet-stream",
                      "sha256": hashlib.sha256(data).hexdigest(), **extra})  # fmt: skip


def send_chunks(client: Client, number: int, data: bytes, size: int = 16384) -> None:
    for offset in range(0, len(data), size):
        piece = number.to_bytes(4, "big") + data[offset : offset + size]
        client.sctp.send(client.file, piece, time.monotonic())


def test_chat_is_stamped_by_the_server_and_errors_are_answered(room: Harness) -> None:
    alice, bob = Client(room, "alice"), Client(room, "bob")
    connect(alice, bob)
    say(alice, {"type": "chat", "body": "hi", "from": "mallory", "id": "x"})
    say(alice, {"type": "warp"})
    run(alice, bob)
    [chat] = bob.json(bob.control)
    assert (chat["type"], chat["from"], chat["name"], chat["body"]) == (
        "chat",
        "alice",
        "Alice",
        "hi",
    )
    replies = alice.json(alice.control)
    assert [r["type"] for r in replies] == ["sent", "error"]
    assert replies[1]["code"] == "unknown_type"


def test_policy_decides_each_control_message(room: Harness) -> None:
    alice, bob = Client(room, "alice"), Client(room, "bob")
    connect(alice, bob)
    asked: list[tuple[str, list[str]]] = []

    def deny(action: str, others: list[str]) -> str | None:
        asked.append((action, others))
        return "denied by policy rule 'quiet hours'"

    alice.allowed = deny
    say(alice, {"type": "chat", "body": "hi"})
    run(alice, bob)
    assert asked == [("publish:control", ["bob"])]
    assert bob.json(bob.control) == []
    [error] = alice.json(alice.control)
    assert error["code"] == "forbidden" and "quiet hours" in error["message"]
    assert room.worker.counters["data_refused:forbidden"] == 1
    assert room.worker.counters["data_messages:control"] == 1


def test_only_the_two_channels_open_and_they_must_be_reliable(room: Harness) -> None:
    alice = Client(room, "alice")
    connect(alice, ordered=False)  # an unordered control channel is refused
    extra = alice.sctp.open_channel("games")
    run(alice)
    assert alice.control in alice.closed and extra in alice.closed
    assert alice.endpoint.control is None and alice.endpoint.file is not None


def test_a_file_goes_to_every_allowed_recipient_and_is_audited(room: Harness) -> None:
    alice, bob, carol = Client(room, "alice"), Client(room, "bob"), Client(room, "carol")
    connect(alice, bob, carol)
    carol.allowed = lambda action, others: (
        "no files for carol" if action == "receive_file" else None
    )
    data = bytes(range(256)) * 300
    offer(alice, data)
    run(alice, bob, carol)
    [accepted] = alice.json(alice.file)
    assert accepted["type"] == "file_accepted" and accepted["recipients"] == ["bob"]
    number = accepted["transfer"]
    send_chunks(alice, number, data)
    run(alice, bob, carol)
    assert bob.chunks() == data and carol.inbox == []
    assert [m["type"] for m in bob.json(bob.file)] == ["file_offer", "file_complete"]
    file_say(bob, {"type": "file_received", "transfer": number, "ok": True})
    run(alice, bob)
    assert alice.json(alice.file)[-1] == {"type": "file_received", "transfer": number,
                                          "ok": True, "from": "bob"}  # fmt: skip
    [(event, detail)] = alice.reports
    assert event == "file_transfer" and detail["result"] == "complete"
    counters = room.worker.counters
    assert counters["file_transfers:complete"] == 1
    assert counters["data_sent_bytes:file"] >= len(data)  # chunks to bob, plus JSON
    assert detail["recipients"] == {"bob": "verified"} and detail["relayed"] == len(data)


def test_limits_and_bad_chunks_move_no_byte(room: Harness) -> None:
    alice, bob = Client(room, "alice"), Client(room, "bob")
    connect(alice, bob)
    room.room.data.limits = FileLimits(max_bytes=1000, types=("image/*",))
    file_say(alice, {"type": "file_offer", "id": "big", "name": "a.png", "size": 5000,
                     "mime": "image/png", "sha256": "0" * 64})  # fmt: skip
    offer(alice, b"x" * 10, "bin")
    alice.sctp.send(alice.file, (99).to_bytes(4, "big") + b"stray", time.monotonic())
    run(alice, bob)
    codes = [(m.get("id"), m["code"]) for m in alice.json(alice.file)]
    assert codes == [("big", "file_too_large"), ("bin", "file_type_refused"), (None, "not_found")]
    assert bob.inbox == []


def test_more_bytes_than_announced_end_the_transfer(room: Harness) -> None:
    alice, bob = Client(room, "alice"), Client(room, "bob")
    connect(alice, bob)
    offer(alice, b"x" * 100)
    run(alice, bob)
    number = alice.json(alice.file)[0]["transfer"]
    send_chunks(alice, number, b"x" * 150)
    run(alice, bob)
    assert any(m.get("code") == "too_large" for m in alice.json(alice.file))
    assert bob.json(bob.file)[-1]["type"] == "file_cancel"
    assert alice.reports[0][1]["result"] == "sender exceeded the announced size"
    assert not room.room.data.transfers


def test_a_stuck_recipient_holds_the_sender_back_then_is_dropped(
    room: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datachannel, "FILE_HIGH_WATER", 64 * 1024)
    alice = Client(room, "alice")
    bob = Client(room, "bob", manual_release=True)  # never gives its window back
    connect(alice, bob)
    room.room.data.limits = FileLimits(rate_bps=10**12)
    data = bytes(4 * 1024 * 1024)
    offer(alice, data)
    run(alice, bob)
    number = alice.json(alice.file)[0]["transfer"]
    send_chunks(alice, number, data)
    run(alice, bob, rounds=2000)
    # Bob's window is full, the SFU's queue to bob passed the high-water mark, and so
    # alice's bytes stay unreleased: alice cannot send the whole file.
    transfer = room.room.data.transfers[number]
    assert transfer.relayed < len(data)
    assert alice.sctp.buffered_amount(alice.file) > 0
    assert transfer.stalled_since is not None
    room.worker.on_dtls_timer(transfer.stalled_since + datachannel.FILE_STALL_S + 0.1)
    run(alice, bob)
    cancels = [m for m in alice.json(alice.file) if m["type"] == "file_cancel"]
    assert cancels and cancels[0]["recipient"] == "bob" and cancels[0]["reason"] == "stalled"
    assert number not in room.room.data.transfers
    assert alice.reports[0][1]["recipients"] == {"bob": "stalled"}


def test_a_revoked_grant_stops_a_running_transfer(room: Harness) -> None:
    alice, bob = Client(room, "alice"), Client(room, "bob")
    connect(alice, bob)
    offer(alice, b"x" * 100_000)
    run(alice, bob)
    number = alice.json(alice.file)[0]["transfer"]
    send_chunks(alice, number, b"x" * 32768)
    run(alice, bob)
    alice.allowed = lambda action, others: "send_file needs grant publish:file"
    room.worker.on_dtls_timer(time.monotonic() + datachannel.RECHECK_S + 0.1)
    run(alice, bob)
    assert bob.json(bob.file)[-1]["type"] == "file_cancel"
    assert "no longer allowed" in alice.reports[0][1]["result"]


def test_the_quota_paces_a_sender(room: Harness) -> None:
    alice, bob = Client(room, "alice"), Client(room, "bob")
    connect(alice, bob)
    room.room.data.limits = FileLimits(rate_bps=8 * 64 * 1024)  # 64 KiB/s
    data = bytes(2 * 1024 * 1024)
    offer(alice, data)
    run(alice, bob)
    number = alice.json(alice.file)[0]["transfer"]
    send_chunks(alice, number, data)
    run(alice, bob, rounds=2000)
    # Without time passing, the bucket lets through about one window (1 MiB) plus a
    # quarter second of quota; the rest waits for the timer.
    relayed = room.room.data.transfers[number].relayed
    assert 0 < relayed < len(data)
    room.worker.on_dtls_timer(time.monotonic() + 3600)
    run(alice, bob, rounds=2000)
    assert room.room.data.transfers[number].relayed > relayed


def test_a_leaving_sender_pauses_its_transfers_until_the_grace_period_ends(
    room: Harness,
) -> None:
    alice, bob = Client(room, "alice"), Client(room, "bob")
    connect(alice, bob)
    offer(alice, b"x" * 1000)
    run(alice, bob)
    left = time.monotonic()
    alice.session.close("left", left)
    run(bob)
    paused = bob.json(bob.file)[-1]
    assert (paused["type"], paused["offset"], paused["reason"]) == ("file_paused", 0, "sender left")
    assert alice.reports == []
    room.worker.on_dtls_timer(left + resume.PAUSE_GRACE_S + 1)
    run(bob)
    cancel = bob.json(bob.file)[-1]
    assert (cancel["type"], cancel["reason"]) == ("file_cancel", "sender did not come back")
    assert alice.reports[0][1]["result"] == "sender did not come back"
    assert not room.room.data.transfers


def test_sealed_chat_and_files_are_relayed_opaque_and_counted_as_sent(room: Harness) -> None:
    from benchmarks.loadgen.e2ee import (
        ReceiverKeyring,
        SenderKeys,
        open_chat,
        open_file_offer,
        seal_chat,
        seal_file,
    )

    alice, bob = Client(room, "alice"), Client(room, "bob")
    connect(alice, bob)
    keys = SenderKeys(0.0)
    keyring = ReceiverKeyring()
    keyring.add_key(keys.current.kid, keys.current.base_key, 0.0)
    sealed = seal_chat(keys, "the plan", None, 0.0)
    say(alice, {"type": "chat", "sealed": sealed, "id": "m1"})
    run(alice, bob)
    [chat] = bob.json(bob.control)
    assert chat["sealed"] == sealed and "body" not in chat and chat["from"] == "alice"
    assert open_chat(keyring, chat["sealed"], chat.get("to"), 0.0) == "the plan"

    data = bytes(range(256)) * 160  # 40960 bytes: three sealed chunks
    outgoing = seal_file(keys, "plan.pdf", data, "application/pdf", 0.0)
    # The room's limit is on the file's size, not on its slightly larger ciphertext.
    room.room.data.limits = FileLimits(max_bytes=len(data))
    assert outgoing.size > len(data)
    file_say(alice, outgoing.offer("f1"))
    run(alice, bob)
    [accepted] = alice.json(alice.file)
    number = accepted["transfer"]
    [announce] = bob.json(bob.file)
    assert "name" not in announce and "sha256" not in announce
    assert (announce["sealed"], announce["size"], announce["plain_size"], announce["mime"]) == (
        outgoing.sealed, outgoing.size, len(data), "application/pdf")  # fmt: skip
    for piece in outgoing.chunks(data):
        alice.sctp.send(alice.file, number.to_bytes(4, "big") + piece, time.monotonic())
    run(alice, bob)
    assert bob.json(bob.file)[-1] == {"type": "file_complete", "transfer": number}
    incoming = open_file_offer(keyring, announce["sealed"], len(data), announce["mime"], 0.0)
    relayed = bob.chunks()
    assert data not in relayed and len(relayed) == outgoing.size
    pieces = [d[4:] for s, d, ppid in bob.inbox if s == bob.file and ppid == 53]
    assert b"".join(incoming.open_chunk(i, p) for i, p in enumerate(pieces)) == data
    file_say(bob, {"type": "file_received", "transfer": number, "ok": True})
    run(alice, bob)
    [(event, detail)] = alice.reports
    assert (detail["result"], detail["sealed"], detail["name"], detail["sha256"]) == (
        "complete", True, None, None)  # fmt: skip
    assert (detail["size"], detail["relayed"]) == (len(data), outgoing.size)

    # One byte over the limit is refused before any byte moves, as in clear.
    room.room.data.limits = FileLimits(max_bytes=len(data) - 1)
    file_say(alice, seal_file(keys, "plan.pdf", data, "application/pdf", 0.0).offer("f2"))
    run(alice, bob)
    assert alice.json(alice.file)[-1]["code"] == "file_too_large"
