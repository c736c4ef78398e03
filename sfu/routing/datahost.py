"""Data channels in a process of their own: both sides of the split, sans-I/O.

The control and file channels cost far more CPU per packet than media (DTLS and
SCTP in Python), so a file flood on the media worker's event loop delays the audio
and video packets that arrive during it. With the split, the media process keeps
the sessions and answers every offer; the data-channel m-section points at another
UDP port, served by a child process (sfu/io/dataproc.py) at a lower scheduling
priority. There, a DataHost runs each session's data transport (ICE, DTLS, SCTP)
and each room's DataRelay, exactly as the media process would inline.

What crosses between them (one JSON object per message, sfu/io/datalink.py):
- media → data: ``open`` (a session's data transport: ICE credentials chosen by the
  media process, the client's ufrag and fingerprints, the room and its file
  limits), ``restart`` (new client ufrag), ``close``, ``notice``, ``limits``;
- data → media: ``authorize`` (a blocking request: the policy lives with
  signaling), ``report`` (audit), ``closed`` (a transport died), ``counters``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sfu.proto.ice import IceCredentials
from sfu.routing.datachannel import DataEndpoint, DataRelay, FileLimits, report_nothing

if TYPE_CHECKING:
    from sfu.io.filestore import FileStore
    from sfu.routing.session import Session
    from sfu.routing.transport import Transport
    from sfu.routing.worker import Worker

log = logging.getLogger(__name__)

# (session id, action, counterparties) -> None, or why not.
RemoteAuthorizer = Callable[[str, str, list[str]], str | None]
DESCRIBE_EVERY_S = 5.0
Message = dict[str, Any]


@dataclass(slots=True)
class RemoteData:
    """The media process's handle on a session's data transport in the data process."""

    session_id: str
    mid: str
    ice: IceCredentials
    remote_ufrag: str
    closed: bool = False
    # The transport as the data process last described it (DataHost.describe_changes)
    # and when that arrived (monotonic, media process).
    state: dict[str, Any] | None = None
    state_at: float = 0.0


class DataHostLink(Protocol):
    """What a Session needs of the data process (sfu/io/datalink.py implements it)."""

    @property
    def port(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def open(
        self,
        session: Session,
        mid: str,
        remote_ufrag: str,
        fingerprints: list[tuple[str, str]],
        remote_port: int,
        remote_max_message: int,
    ) -> RemoteData: ...

    def restart(self, link: RemoteData, remote_ufrag: str) -> None: ...

    def close(self, link: RemoteData, reason: str) -> None: ...


def limits_to_json(limits: FileLimits) -> Message:
    return {
        "max_bytes": limits.max_bytes,
        "types": list(limits.types),
        "rate_bps": limits.rate_bps,
        "keep": limits.keep,
        "retention_s": limits.retention_s,
    }


def limits_from_json(value: Message) -> FileLimits:
    return FileLimits(
        max_bytes=int(value["max_bytes"]),
        types=tuple(str(t) for t in value["types"]),
        rate_bps=int(value["rate_bps"]),
        keep=bool(value.get("keep", False)),
        retention_s=None if value.get("retention_s") is None else float(value["retention_s"]),
    )


class HostedRoom:
    """A room as the data process knows it: its members' endpoints."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.data = DataRelay(name)


class HostedSession:
    """A session as its DataEndpoint sees it; decisions go to the media process."""

    def __init__(
        self, session_id: str, identity: str, name: str, room: HostedRoom, host: DataHost
    ) -> None:
        self.session_id = session_id
        self.identity = identity
        self.name = name
        self.room = room
        self.closed = False
        self._host = host
        self.transport: Transport | None = None
        self.endpoint: DataEndpoint | None = None
        self.data_report = report_nothing
        self.described: dict[str, Any] | None = None  # last told to the media process
        self.described_at = 0.0

    def data_authorize(self, action: str, counterparties: list[str]) -> str | None:
        return self._host.authorize(self.session_id, action, counterparties)


class DataHost:
    """The data process's state: sessions, rooms, and the messages that change them."""

    def __init__(
        self,
        worker: Worker,
        send: Callable[[Message], None],
        authorize: RemoteAuthorizer,
        store: FileStore | None = None,
    ) -> None:
        self.worker = worker
        self.send = send
        self.authorize = authorize
        self.store = store
        self.sessions: dict[str, HostedSession] = {}
        self.rooms: dict[str, HostedRoom] = {}
        worker.on_transport_closed = self._on_transport_closed

    def handle(self, message: Message, now: float) -> None:
        """Apply one message from the media process; a bad one is logged and dropped."""
        op = message.get("op")
        try:
            if op == "open":
                self._open(message, now)
            elif op == "restart":
                session = self.sessions.get(str(message["session"]))
                if session is not None and session.transport is not None:
                    session.transport.remote_ufrag = str(message["remote_ufrag"])
            elif op == "close":
                self._close(str(message["session"]), str(message.get("reason", "closed")))
            elif op == "notice":
                room = self.rooms.get(str(message["room"]))
                if room is not None:
                    room.data.notice(str(message["text"]))
            elif op == "limits":
                room = self.rooms.get(str(message["room"]))
                if room is not None:
                    room.data.limits = limits_from_json(message["limits"])
            else:
                log.warning("data host: unknown message %r", op)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("data host: malformed %r message: %s", op, exc)

    def _open(self, message: Message, now: float) -> None:
        session_id = str(message["session"])
        self._close(session_id, "replaced")
        room_name = str(message["room"])
        room = self.rooms.get(room_name)
        if room is None:
            room = self.rooms[room_name] = HostedRoom(room_name)
            room.data.kept.store = self.store
            room.data.kept.report_room = lambda event, detail: self.send(
                {"op": "room_report", "room": room_name, "event": event, "detail": detail}
            )
        room.data.limits = limits_from_json(message["limits"])
        session = HostedSession(
            session_id, str(message["identity"]), str(message["name"]), room, self
        )
        session.data_report = lambda event, detail: self.send(
            {"op": "report", "session": session_id, "event": event, "detail": detail}
        )
        fingerprints = [(str(a), str(v)) for a, v in message["fingerprints"]]
        transport = self.worker.create_transport(
            session_id,
            str(message["remote_ufrag"]),
            fingerprints,
            now,
            ice=IceCredentials(str(message["ufrag"]), str(message["pwd"])),
        )
        endpoint = DataEndpoint(
            session, transport, int(message["remote_port"]), int(message["remote_max"])
        )
        transport.attach_data(endpoint)
        room.data.attach(endpoint)
        session.transport = transport
        session.endpoint = endpoint
        self.sessions[session_id] = session

    def _close(self, session_id: str, reason: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return
        session.closed = True
        if session.transport is not None:
            self.worker.close_transport(session.transport, reason)
        self._forget_room(session.room)

    def _forget_room(self, room: HostedRoom) -> None:
        if not room.data.endpoints and self.rooms.get(room.name) is room:
            del self.rooms[room.name]

    def _on_transport_closed(self, transport: Transport, reason: str) -> None:
        session = self.sessions.get(transport.owner_id)
        if session is None or session.transport is not transport:
            return  # closed on the media process's word: it knows
        del self.sessions[session.session_id]
        session.closed = True
        self._forget_room(session.room)
        self.send({"op": "closed", "session": session.session_id, "reason": reason})

    def describe_changes(self, now: float) -> None:
        """Tell the media process how each data transport stands (the connection panel
        shows it): at once when its ICE pair or DTLS state changed, else every
        DESCRIBE_EVERY_S (its last_heard_s ages in between)."""
        for session in self.sessions.values():
            transport = session.transport
            if transport is None:
                continue
            addr = transport.addr
            state = {
                "dtls_state": transport.dtls.state.value,
                "dtls_version": transport.dtls.version,
                "dtls_cipher": transport.dtls.cipher,
                "srtp_profile": transport.srtp_profile,
                "remote": None if addr is None else {"address": addr[0], "port": addr[1]},
            }
            if state != session.described or now - session.described_at >= DESCRIBE_EVERY_S:
                session.described, session.described_at = state, now
                last_heard_s = round(max(0.0, now - transport.last_heard), 3)
                self.send({"op": "transport", "session": session.session_id,
                           "state": {**state, "last_heard_s": last_heard_s}})  # fmt: skip

    def close_all(self, reason: str) -> None:
        for session_id in list(self.sessions):
            self._close(session_id, reason)
