"""The media port: one asyncio datagram endpoint feeding the Worker, plus its timers.

This is the only module of the media plane that touches sockets or the clock; the
native datapath of a later slice replaces what is behind `MediaPort` without
changing its interface.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from sfu.io.datapath import create_datapath
from sfu.routing.worker import Worker

log = logging.getLogger(__name__)

DTLS_TIMER_S = 0.05
REPORT_TIMER_S = 1.0
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, port: MediaPort) -> None:
        self.port = port

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.port.worker.on_datagram(data, (addr[0], addr[1]), time.monotonic())

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (peer gone) arrive here; they are not ours to crash on.
        self.port.worker.count("socket_errors")


class MediaPort:
    """Owns the UDP socket and drives the Worker's timers."""

    def __init__(
        self, host: str, port: int, silence_timeout_s: float, datapath: str = "auto"
    ) -> None:
        self.host = host
        self.port = port
        self.worker = Worker(self._send, silence_timeout_s)
        self.worker.datapath = create_datapath(datapath, self.worker.send)
        self._transport: asyncio.DatagramTransport | None = None
        self._timers: list[asyncio.Task[None]] = []

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(data, addr)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        self._transport = transport
        # The native datapath sends media with sendmmsg on this same socket.
        self.worker.datapath.set_socket(sock.fileno())
        self._timers = [
            asyncio.create_task(self._every(DTLS_TIMER_S, self.worker.on_dtls_timer)),
            asyncio.create_task(self._every(REPORT_TIMER_S, self.worker.on_report_timer)),
        ]
        log.info(
            "media port listening host=%s port=%d datapath=%s",
            self.host,
            self.port,
            self.worker.datapath.name,
        )

    async def _every(self, interval_s: float, callback: object) -> None:
        assert callable(callback)
        while True:
            await asyncio.sleep(interval_s)
            try:
                callback(time.monotonic())
            except Exception:
                log.exception("media timer failed")

    async def stop(self) -> None:
        for task in self._timers:
            task.cancel()
        for task in self._timers:
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._transport is not None:
            self._transport.close()
            self._transport = None
