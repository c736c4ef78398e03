"""The media process's link to the data process (sfu/io/dataproc.py).

The data process is started at a lower scheduling priority (DATA_NICE), so that
when both want the CPU the kernel runs the media worker first: a file flood then
takes what media leaves, instead of delaying media packets on a shared event loop.
The two speak over a SOCK_SEQPACKET socket pair: one JSON object per datagram, so
there is no framing to get wrong, and order is kept. The media process never
waits for the data process; the data process waits (briefly, bounded) for the
policy decisions that only the media process, holding signaling, can make.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sfu.proto.ice import IceCredentials
from sfu.routing.datahost import Message, RemoteData, limits_to_json
from sfu.routing.types import FilesDeleted, MediaError, RoomEvent

if TYPE_CHECKING:
    from sfu.routing.datachannel import FileLimits
    from sfu.routing.session import Session

log = logging.getLogger(__name__)

# Scheduling priority of the data process (0 is the media process's).
DATA_NICE = 10
MAX_MESSAGE_BYTES = 256 * 1024
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
# A data process that dies is started again after this pause.
RESTART_DELAY_S = 1.0
RESTART_ATTEMPTS = 6  # 1 s, 2 s, ... 32 s apart
DATA_PROCESS_ENDED = "data channel process ended"
# What the data process may have audited, on a session's or a room's behalf.
SESSION_REPORTS = ("file_transfer",)
# How long an ended session's reports are still taken (beyond a paused transfer's
# grace, sfu/routing/resume.py).
REMEMBER_ENDED_S = 300.0


def encode(message: Message) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"link message of {len(data)} bytes")
    return data


def decode(data: bytes) -> Message:
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError("link message is not an object")
    return message


class DataLink:
    """Starts the data process, forwards sessions' data transports to it, and
    answers its questions with the sessions' own authorizers."""

    def __init__(
        self,
        host: str,
        port: int,
        silence_timeout_s: float,
        nice: int = DATA_NICE,
        files_dir: Path | None = None,
        files_budget: int = 0,
        cpus: str = "",
    ) -> None:
        self.host = host
        self.cpus = cpus
        self.files_dir = files_dir
        self.files_budget = files_budget
        # Told (room, event) about rooms rather than sessions: files_deleted.
        self.on_room_event: Callable[[str, RoomEvent], None] | None = None
        self.requested_port = port
        self.silence_timeout_s = silence_timeout_s
        self.nice = nice
        self._port = 0
        self._fingerprint = ""
        # The data process's counters; those of an earlier (ended) one are kept.
        self._counters: Counter[str] = Counter()
        self._counters_before: Counter[str] = Counter()
        # Told (session id, reason) when a data transport dies in the data process.
        self.on_closed: Callable[[str, str], None] | None = None
        self._links: dict[str, tuple[Session, RemoteData]] = {}
        # Sessions that ended, kept a while for what the data process still reports of
        # them (a paused transfer whose sender never came back is audited later).
        self._ended: dict[str, tuple[Session, float]] = {}
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._outbox: deque[bytes] = deque()
        self._ready: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._restart: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def counters(self) -> Counter[str]:
        return self._counters_before + self._counters

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        command = [
            sys.executable, "-m", "sfu.io.dataproc", "--fd", str(theirs.fileno()),
            "--host", self.host, "--port", str(self._port or self.requested_port),
            "--silence-timeout", str(self.silence_timeout_s), "--nice", str(self.nice),
        ]  # fmt: skip
        if self.cpus:
            command += ["--cpus", self.cpus]
        if self.files_dir is not None:
            command += ["--files-dir", str(self.files_dir)]
            command += ["--files-budget", str(self.files_budget)]
        try:
            self._process = subprocess.Popen(command, pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._ready = self._loop.create_future()
        self._loop.add_reader(ours.fileno(), self._on_readable)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT_S)
        except TimeoutError:
            self._close_socket()
            self._kill()
            raise RuntimeError("the data channel process did not start") from None
        log.info(
            "data channel process pid=%d port=%d nice=%d",
            self._process.pid, self._port, self.nice,
        )  # fmt: skip

    async def stop(self) -> None:
        self._stopping = True
        if self._restart is not None:
            self._restart.cancel()
        self._close_socket()  # the data process ends when its link closes
        process = self._process
        if process is None:
            return
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if process.poll() is None:
            self._kill()

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def _close_socket(self) -> None:
        if self._sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._loop.remove_writer(self._sock.fileno())
        self._sock.close()
        self._sock = None
        self._outbox.clear()

    # -- what sessions ask ------------------------------------------------

    def open(
        self,
        session: Session,
        mid: str,
        remote_ufrag: str,
        fingerprints: list[tuple[str, str]],
        remote_port: int,
        remote_max_message: int,
    ) -> RemoteData:
        if self._sock is None or not self._port:
            raise MediaError("unavailable", "data channels are restarting; try again")
        ice = IceCredentials.generate()
        link = RemoteData(session.session_id, mid, ice, remote_ufrag)
        previous = self._links.get(session.session_id)
        if previous is not None:
            previous[1].closed = True
        self._links[session.session_id] = (session, link)
        self._send({
            "op": "open", "session": session.session_id, "identity": session.identity,
            "name": session.name, "room": session.room.name, "ufrag": ice.ufrag, "pwd": ice.pwd,
            "remote_ufrag": remote_ufrag, "fingerprints": fingerprints,
            "remote_port": remote_port, "remote_max": remote_max_message,
            "limits": limits_to_json(session.room.data.limits),
        })  # fmt: skip
        return link

    def restart(self, link: RemoteData, remote_ufrag: str) -> None:
        link.remote_ufrag = remote_ufrag
        self._send({"op": "restart", "session": link.session_id, "remote_ufrag": remote_ufrag})

    def close(self, link: RemoteData, reason: str) -> None:
        link.closed = True
        current = self._links.get(link.session_id)
        if current is not None and current[1] is link:
            del self._links[link.session_id]
            self._remember(current[0])
            self._send({"op": "close", "session": link.session_id, "reason": reason})

    def _remember(self, session: Session) -> None:
        now = time.monotonic()
        for session_id, (_, ended_at) in list(self._ended.items()):
            if now - ended_at > REMEMBER_ENDED_S:
                del self._ended[session_id]
        self._ended[session.session_id] = (session, now)

    def notice(self, room: str, text: str) -> None:
        self._send({"op": "notice", "room": room, "text": text})

    def set_limits(self, room: str, limits: FileLimits) -> None:
        self._send({"op": "limits", "room": room, "limits": limits_to_json(limits)})

    # -- the socket ---------------------------------------------------------

    def _send(self, message: Message) -> None:
        if self._sock is None:
            return
        data = encode(message)
        if self._outbox:
            self._outbox.append(data)
            return
        try:
            self._sock.send(data)
        except BlockingIOError:
            self._outbox.append(data)
            assert self._loop is not None
            self._loop.add_writer(self._sock.fileno(), self._on_writable)
        except OSError:
            log.warning("data channel process unreachable")

    def _on_writable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while self._outbox:
            try:
                sock.send(self._outbox[0])
            except BlockingIOError:
                return
            except OSError:
                break
            self._outbox.popleft()
        assert self._loop is not None
        self._loop.remove_writer(sock.fileno())

    def _on_readable(self) -> None:
        sock = self._sock
        while sock is not None and self._sock is sock:
            try:
                data = sock.recv(MAX_MESSAGE_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._on_process_ended()
                return
            try:
                self._on_message(decode(data))
            except Exception:  # one bad message must not stop the link
                log.exception("data link message failed")

    def _on_message(self, message: Message) -> None:
        op = message.get("op")
        if op == "authorize":
            entry = self._links.get(str(message["session"]))
            if entry is None:
                why: str | None = "the session has ended"
            else:
                counterparties = [str(c) for c in message["counterparties"]]
                why = entry[0].data_authorize(str(message["action"]), counterparties)
            self._send({"op": "decision", "id": message["id"], "why": why})
        elif op == "report" and message.get("event") in SESSION_REPORTS:
            session_id = str(message["session"])
            entry = self._links.get(session_id)
            session = entry[0] if entry is not None else self._ended.get(session_id, (None,))[0]
            if session is not None:
                session.data_report(str(message["event"]), dict(message["detail"]))
        elif op == "room_report" and message.get("event") == "files_deleted":
            detail = message["detail"]
            event = FilesDeleted(str(detail["reason"]), tuple(dict(f) for f in detail["files"]))
            if self.on_room_event is not None:
                self.on_room_event(str(message["room"]), event)
        elif op == "transport":
            entry = self._links.get(str(message["session"]))
            if entry is not None and isinstance(message["state"], dict):
                entry[1].state = dict(message["state"])
                entry[1].state_at = time.monotonic()
        elif op == "closed":
            self._on_link_closed(str(message["session"]), str(message["reason"]))
        elif op == "counters":
            self._counters = Counter({str(k): int(v) for k, v in message["counters"].items()})
        elif op == "ready":
            self._port = int(message["port"])
            self._fingerprint = str(message["fingerprint"])
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        else:
            log.warning("data link: unknown message %r", op)

    def _on_link_closed(self, session_id: str, reason: str) -> None:
        entry = self._links.pop(session_id, None)
        if entry is None:
            return
        entry[1].closed = True
        self._remember(entry[0])
        if self.on_closed is not None:
            self.on_closed(session_id, reason)

    def _on_process_ended(self) -> None:
        self._close_socket()
        if self._stopping:
            return
        code = self._process.poll() if self._process is not None else None
        if self._ready is not None and not self._ready.done():
            # It died starting (its own log says why, e.g. the port is taken).
            self._ready.set_exception(
                RuntimeError(f"the data channel process ended at start ({code})")
            )
            return
        log.error("the data channel process ended (exit %s); starting it again", code)
        self._kill()
        for session_id in list(self._links):
            self._on_link_closed(session_id, DATA_PROCESS_ENDED)
        self._counters_before += self._counters
        self._counters = Counter()
        assert self._loop is not None
        self._restart = self._loop.create_task(self._start_again())

    async def _start_again(self) -> None:
        for attempt in range(RESTART_ATTEMPTS):
            await asyncio.sleep(RESTART_DELAY_S * 2**attempt)
            try:
                await self.start()
                return
            except Exception as exc:
                log.error("the data channel process could not be started again: %s", exc)
        log.error("data channels stay off: the data channel process does not start")
