"""Data channels in their own process: the session's side (answers pointing at the
data process), the data process's DataHost, and the link's blocking decisions."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from typing import Any

import pytest

from sfu.io import datalink, dataproc
from sfu.io.dataproc import ChildLink
from sfu.proto.ice import IceCredentials
from sfu.routing import datahost
from sfu.routing.datachannel import FileLimits
from sfu.routing.datahost import DataHost, Message, RemoteData
from sfu.routing.session import Session, SessionPolicy
from sfu.routing.worker import Worker
from tests.routing.test_datachannel import OFFER
from tests.routing.test_session import Harness, answer_sections

FINGERPRINT = ":".join(["CD"] * 32)


class RecordingLink:
    """A DataHostLink that records what sessions ask of the data process."""

    port = 41000
    fingerprint = FINGERPRINT

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def open(
        self,
        session: Session,
        mid: str,
        remote_ufrag: str,
        fingerprints: list[tuple[str, str]],
        remote_port: int,
        remote_max_message: int,
    ) -> RemoteData:
        self.calls.append(("open", (mid, remote_ufrag, remote_port, remote_max_message)))
        return RemoteData(session.session_id, mid, IceCredentials.generate(), remote_ufrag)

    def restart(self, link: RemoteData, remote_ufrag: str) -> None:
        link.remote_ufrag = remote_ufrag
        self.calls.append(("restart", remote_ufrag))

    def close(self, link: RemoteData, reason: str) -> None:
        link.closed = True
        self.calls.append(("close", reason))


def data_session(harness: Harness) -> tuple[Session, RecordingLink]:
    link = RecordingLink()
    harness.worker.data_host = link
    policy = SessionPolicy(can_publish=True, can_subscribe=True, data_channels=True)
    return harness.session("alice", policy), link


def test_the_answer_points_the_data_section_at_the_data_process() -> None:
    harness = Harness()
    session, link = data_session(harness)
    answer = answer_sections(session.negotiate(OFFER, {}, time.monotonic()).sdp)["0"]
    assert link.calls == [("open", ("0", "VCbB", 5000, 262144))]
    assert session.remote_data is not None
    assert answer.port == link.port
    assert f"{link.port} typ host" in (answer.attr("candidate") or "")
    assert answer.attr("fingerprint") == f"sha-256 {FINGERPRINT}"
    assert answer.attr("ice-ufrag") == session.remote_data.ice.ufrag
    # Nothing of it lives in the media process.
    assert session.data is None and not harness.worker.by_ufrag


def test_renegotiation_keeps_the_data_transport_and_follows_an_ice_restart() -> None:
    harness = Harness()
    session, link = data_session(harness)
    session.negotiate(OFFER, {}, time.monotonic())
    first = session.remote_data
    session.negotiate(OFFER, {}, time.monotonic())
    assert session.remote_data is first and len(link.calls) == 1
    session.negotiate(OFFER.replace("ice-ufrag:VCbB", "ice-ufrag:NEW1"), {}, time.monotonic())
    assert link.calls[-1] == ("restart", "NEW1") and session.remote_data is first


def test_a_closed_data_section_or_session_closes_the_remote_transport() -> None:
    harness = Harness()
    session, link = data_session(harness)
    session.negotiate(OFFER, {}, time.monotonic())
    closed = OFFER.replace("m=application 9", "m=application 0")
    session.negotiate(closed, {}, time.monotonic())
    assert link.calls[-1] == ("close", "m-section closed") and session.remote_data is None
    session.negotiate(OFFER, {}, time.monotonic())
    assert link.calls[-1][0] == "open"
    session.close("left", time.monotonic())
    assert link.calls[-1] == ("close", "left")


def test_a_bundled_data_section_is_refused() -> None:
    harness = Harness()
    link = RecordingLink()
    harness.worker.data_host = link
    policy = SessionPolicy(
        can_publish=True, can_subscribe=True, data_channels=True, prefer_bundle=True
    )
    session = harness.session("alice", policy)
    bundled = OFFER.replace("t=0 0\r\n", "t=0 0\r\na=group:BUNDLE 0\r\n")
    result = session.negotiate(bundled, {}, time.monotonic())
    assert answer_sections(result.sdp)["0"].port == 0
    assert ("unsupported", "mid 0: data channels need their own transport") in result.warnings
    assert link.calls == []


# -- the data process's side --------------------------------------------------------


class Host:
    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.asked: list[tuple[str, str, list[str]]] = []
        self.worker = Worker(sender=lambda data, addr: None)
        self.host = DataHost(self.worker, self.sent.append, self.authorize)

    def authorize(self, session_id: str, action: str, others: list[str]) -> str | None:
        self.asked.append((session_id, action, others))
        return None

    def open(self, session_id: str, identity: str, room: str = "r") -> Message:
        message = {
            "op": "open", "session": session_id, "identity": identity, "name": identity.title(),
            "room": room, "ufrag": f"u{session_id}", "pwd": "p" * 24, "remote_ufrag": "x",
            "fingerprints": [["sha-256", FINGERPRINT]], "remote_port": 5000,
            "remote_max": 65536, "limits": datalink_limits(FileLimits(max_bytes=10)),
        }  # fmt: skip
        self.host.handle(message, time.monotonic())
        return message


def datalink_limits(limits: FileLimits) -> dict[str, Any]:
    from sfu.routing.datahost import limits_to_json

    return limits_to_json(limits)


def test_open_makes_a_transport_with_the_media_process_credentials() -> None:
    h = Host()
    h.open("s1", "alice")
    transport = h.worker.by_ufrag["us1"]
    assert transport.ice.pwd == "p" * 24 and transport.data is not None
    room = h.host.rooms["r"]
    assert room.data.limits.max_bytes == 10
    assert list(room.data.endpoints) == ["s1"]
    # Decisions go back to the media process with the session's id.
    assert transport.data.session.data_authorize("publish:control", ["bob"]) is None
    assert h.asked == [("s1", "publish:control", ["bob"])]
    h.host.handle({"op": "limits", "room": "r", "limits": datalink_limits(FileLimits(7))}, 0)
    assert room.data.limits.max_bytes == 7


def test_close_on_request_is_silent_and_a_dead_transport_is_reported() -> None:
    h = Host()
    h.open("s1", "alice")
    h.open("s2", "bob")
    h.host.handle({"op": "close", "session": "s1", "reason": "left"}, 0)
    assert "us1" not in h.worker.by_ufrag and h.sent == []
    h.worker.close_transport(h.worker.by_ufrag["us2"], "ICE consent lost")
    assert h.sent == [{"op": "closed", "session": "s2", "reason": "ICE consent lost"}]
    assert h.host.rooms == {} and h.host.sessions == {}


def test_open_again_replaces_the_earlier_transport() -> None:
    h = Host()
    h.open("s1", "alice")
    h.open("s1", "alice")
    assert len(h.worker.by_ufrag) == 1 and h.sent == []


def test_malformed_messages_are_dropped_without_harm() -> None:
    h = Host()
    h.open("s1", "alice")
    rng = random.Random(7)
    good = h.open("s2", "bob")
    values: list[Any] = [None, 1, -5, "x", [], {}, [["a"]], {"max_bytes": "no"}, 2**70]
    for _ in range(2000):
        message = dict(good)
        message["op"] = rng.choice(["open", "close", "restart", "notice", "limits", "??", 3])
        for key in rng.sample(sorted(message), rng.randint(1, 4)):
            if rng.random() < 0.3:
                del message[key]
            else:
                message[key] = rng.choice(values)
        h.host.handle(message, time.monotonic())  # never raises
    # The first session is still served.
    assert "us1" in h.worker.by_ufrag


# -- the link: blocking decisions over a real socket pair ----------------------------


def pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def test_a_decision_is_awaited_and_what_arrives_meanwhile_is_kept_in_order() -> None:
    ours, theirs = pair()
    link = ChildLink(ours)

    def media_process() -> None:
        request = json.loads(theirs.recv(65536))
        theirs.send(datalink.encode({"op": "notice", "room": "r", "text": "1"}))
        theirs.send(datalink.encode({"op": "decision", "id": request["id"] + 1, "why": "x"}))
        theirs.send(datalink.encode({"op": "decision", "id": request["id"], "why": "denied"}))
        theirs.send(datalink.encode({"op": "notice", "room": "r", "text": "2"}))

    thread = threading.Thread(target=media_process)
    thread.start()
    assert link.authorize("s1", "send_file", ["bob"]) == "denied"
    thread.join()
    kept = link.receive_ready()
    assert [m.get("text") for m in kept] == ["1", None, "2"]
    assert not link.closed.is_set()


def test_no_decision_in_time_is_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataproc, "DECISION_TIMEOUT_S", 0.2)
    ours, theirs = pair()
    link = ChildLink(ours)
    started = time.monotonic()
    assert link.authorize("s1", "publish:control", []) == "no policy decision in time"
    assert 0.15 < time.monotonic() - started < 2
    assert json.loads(theirs.recv(65536))["op"] == "authorize"


def test_a_closed_link_refuses_and_says_so() -> None:
    ours, theirs = pair()
    link = ChildLink(ours)
    theirs.close()
    assert link.authorize("s1", "publish:control", []) == "no policy decision in time"
    assert link.closed.is_set()


def test_link_messages_are_bounded_objects() -> None:
    assert datalink.decode(datalink.encode({"op": "x"})) == {"op": "x"}
    with pytest.raises(ValueError):
        datalink.encode({"op": "x", "blob": "a" * datalink.MAX_MESSAGE_BYTES})
    with pytest.raises(ValueError):
        datalink.decode(b"[1, 2]")


def test_cpu_lists_read_like_taskset() -> None:
    assert dataproc.parse_cpus("1") == {1}
    assert dataproc.parse_cpus("0,2-4") == {0, 2, 3, 4}
    with pytest.raises(ValueError):
        dataproc.parse_cpus("a")


def test_transport_state_is_told_on_change_and_every_few_seconds() -> None:
    h = Host()
    h.open("s1", "alice")
    h.host.describe_changes(100.0)
    [told] = h.sent
    assert told["op"] == "transport" and told["session"] == "s1"
    assert told["state"]["dtls_state"] == "new" and told["state"]["remote"] is None
    h.host.describe_changes(101.0)
    assert len(h.sent) == 1  # nothing changed
    h.worker.bind_address(h.worker.by_ufrag["us1"], ("127.0.0.1", 5555))
    h.host.describe_changes(102.0)
    assert h.sent[-1]["state"]["remote"] == {"address": "127.0.0.1", "port": 5555}
    h.host.describe_changes(102.0 + datahost.DESCRIBE_EVERY_S)
    assert len(h.sent) == 3


class EndedSession:
    session_id = "s9"

    def __init__(self) -> None:
        self.reports: list[tuple[str, dict[str, Any]]] = []

    def data_report(self, event: str, detail: dict[str, Any]) -> None:
        self.reports.append((event, detail))


def test_reports_of_an_ended_session_are_still_audited_and_only_known_events() -> None:
    link = datalink.DataLink("127.0.0.1", 0, 30.0)
    session = EndedSession()
    link._remember(session)  # type: ignore[arg-type]
    detail = {"result": "sender did not come back"}
    link._on_message({"op": "report", "session": "s9", "event": "file_transfer", "detail": detail})
    link._on_message({"op": "report", "session": "s9", "event": "keys_changed", "detail": {}})
    link._on_message({"op": "report", "session": "s0", "event": "file_transfer", "detail": {}})
    assert session.reports == [("file_transfer", detail)]


async def test_a_data_process_that_cannot_start_fails_the_start_at_once() -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        link = datalink.DataLink("127.0.0.1", taken.getsockname()[1], 30.0)
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="ended at start"):
            await link.start()
        assert time.monotonic() - started < datalink.START_TIMEOUT_S / 2
        await link.stop()
    finally:
        taken.close()
