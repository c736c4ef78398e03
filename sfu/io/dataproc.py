"""The data process: control and file channels on a UDP port of their own.

    python -m sfu.io.dataproc --fd N --host H [--port P] [--silence-timeout S] [--nice K]

Started by the media process (sfu/io/datalink.py), never by hand. It serves the
data-channel transports the media process opens for its sessions, on a MediaPort
of its own, and ends when its link to the media process closes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import select
import socket
import time
from collections import deque
from pathlib import Path

from sfu.io.datalink import DATA_NICE, MAX_MESSAGE_BYTES, decode, encode
from sfu.io.filestore import FileStore
from sfu.io.udp import REPORT_TIMER_S, MediaPort
from sfu.routing.datahost import DataHost, Message

log = logging.getLogger("sfu.data")

# How long a policy decision may take before the data process treats it as a refusal.
DECISION_TIMEOUT_S = 2.0


class ChildLink:
    """The data process's end of the link. Decisions are awaited in place (blocking):
    the relay asks them synchronously, and the media process answers at once."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.pending: deque[Message] = deque()
        self.closed = asyncio.Event()
        self._ids = itertools.count(1)

    def send(self, message: Message) -> None:
        data = encode(message)
        deadline = time.monotonic() + DECISION_TIMEOUT_S
        while not self.closed.is_set():
            try:
                self.sock.send(data)
                return
            except BlockingIOError:  # the media process reads all the time: wait a moment
                if time.monotonic() > deadline:
                    log.error("the media process reads nothing: link given up")
                    self.closed.set()
                select.select([], [self.sock], [], 0.05)
            except OSError:
                self.closed.set()

    def receive_ready(self) -> list[Message]:
        """What has arrived (without waiting), after what waited during a decision."""
        messages = list(self.pending)
        self.pending.clear()
        while True:
            try:
                data = self.sock.recv(MAX_MESSAGE_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                self.closed.set()
                break
            messages.append(decode(data))
        return messages

    def authorize(self, session_id: str, action: str, counterparties: list[str]) -> str | None:
        request_id = next(self._ids)
        self.send({"op": "authorize", "id": request_id, "session": session_id,
                   "action": action, "counterparties": counterparties})  # fmt: skip
        deadline = time.monotonic() + DECISION_TIMEOUT_S
        while not self.closed.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.sock], [], [], remaining)[0]:
                break
            try:
                data = self.sock.recv(MAX_MESSAGE_BYTES)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                self.closed.set()
                break
            message = decode(data)
            if message.get("op") == "decision" and message.get("id") == request_id:
                why = message.get("why")
                return None if why is None else str(why)
            self.pending.append(message)  # handled after this decision
        log.warning("no policy decision for %s within %.1f s: refused", action, DECISION_TIMEOUT_S)
        return "no policy decision in time"


async def serve(
    fd: int, host: str, port: int, silence_timeout_s: float, store: FileStore | None
) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(fileno=fd)
    link = ChildLink(sock)
    media = MediaPort(host, port, silence_timeout_s, datapath="python")
    data_host = DataHost(media.worker, link.send, link.authorize, store)
    await media.start()

    def on_readable() -> None:
        now = time.monotonic()
        for message in link.receive_ready():
            data_host.handle(message, now)
        media.worker.flush_data(now)
        if link.pending:  # arrived while a decision was awaited
            loop.call_soon(on_readable)

    loop.add_reader(sock.fileno(), on_readable)

    async def report_counters() -> None:
        sent: dict[str, int] | None = None
        while True:
            data_host.describe_changes(time.monotonic())
            counters = dict(media.worker.counters)
            if counters != sent:  # the same again would wake the media process for nothing
                link.send({"op": "counters", "counters": counters})
                sent = counters
            await asyncio.sleep(REPORT_TIMER_S)

    fingerprint = media.worker.certificate.fingerprint_sha256
    link.send({"op": "ready", "port": media.port, "fingerprint": fingerprint})
    reporter = loop.create_task(report_counters())
    try:
        await link.closed.wait()
    finally:
        reporter.cancel()
        loop.remove_reader(sock.fileno())
        data_host.close_all("media process gone")
        if store is not None:
            store.close()
        await media.stop()
        sock.close()


def parse_cpus(text: str) -> set[int]:
    """A CPU list as taskset(1) and cpusets write it: "1", "0,2", "2-3"."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def lower_priority(nice: int) -> None:
    """Let the media process go first whenever both want a core. SCHED_IDLE makes
    the kernel preempt this process as soon as a normal one wakes up (a mere nice
    value only shrinks its share: under EEVDF a waking media process may still wait
    for this one's time slice, milliseconds); the nice value is the fallback."""
    if nice <= 0:
        return
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError) as exc:
        log.warning("no SCHED_IDLE (%s): nice %d instead", exc, nice)
    os.nice(nice)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sfu.io.dataproc")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--silence-timeout", type=float, default=30.0)
    parser.add_argument("--nice", type=int, default=DATA_NICE)
    parser.add_argument("--files-dir", type=Path, default=None)
    parser.add_argument("--files-budget", type=int, default=0)
    parser.add_argument("--cpus", default="", help="CPUs to run on, e.g. 1 or 2-3 (default: any)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s data[%(process)d] %(name)s: %(message)s",
    )
    lower_priority(args.nice)
    if args.cpus:
        os.sched_setaffinity(0, parse_cpus(args.cpus))
    import uvloop

    store = FileStore(args.files_dir, args.files_budget) if args.files_dir else None
    uvloop.run(serve(args.fd, args.host, args.port, args.silence_timeout, store))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
