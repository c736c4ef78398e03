"""aiortc as an independent WebRTC peer: WHIP publisher and WHEP viewer over real HTTPS."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aioice.ice
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from av import VideoFrame


def use_loopback_only() -> None:
    """aioice leaves 127.0.0.1 out of its host candidates; tests run on loopback only."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # type: ignore[attr-defined]


def client_ssl(cert_path: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cert_path))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


class PatternVideoTrack(VideoStreamTrack):
    """A moving pattern, so the encoder produces real (non-trivial) frames."""

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.width = width
        self.height = height
        self.counter = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        self.counter += 1
        image = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        image[:, :, 0] = (np.arange(self.width, dtype=np.uint16)[None, :] + self.counter * 4) % 256
        image[:, :, 1] = (np.arange(self.height, dtype=np.uint16)[:, None] * 2) % 256
        frame = VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = pts
        frame.time_base = time_base
        return frame


@dataclass
class ReceivedMedia:
    frames: dict[str, int] = field(default_factory=lambda: {"audio": 0, "video": 0})
    first_frame_at: dict[str, float] = field(default_factory=dict)
    last_size: tuple[int, int] | None = None


@dataclass
class WebRtcClient:
    """A WHIP or WHEP client session."""

    pc: RTCPeerConnection
    resource_url: str
    answer: str
    received: ReceivedMedia = field(default_factory=ReceivedMedia)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def close(self, http: aiohttp.ClientSession | None = None) -> None:
        if http is not None:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                await http.delete(self.resource_url, timeout=aiohttp.ClientTimeout(total=5))
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.pc.close()


async def _exchange(
    http: aiohttp.ClientSession, url: str, token: str, pc: RTCPeerConnection
) -> tuple[str, str]:
    await pc.setLocalDescription(await pc.createOffer())
    async with http.post(
        url,
        data=pc.localDescription.sdp,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"},
        timeout=aiohttp.ClientTimeout(total=10),
    ) as response:
        body = await response.text()
        if response.status != 201:
            raise AssertionError(f"{url} answered {response.status}: {body}")
        location = response.headers["Location"]
    await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
    return str(response.url.join(aiohttp.client.URL(location))), body


async def whip_publish(
    http: aiohttp.ClientSession,
    base_url: str,
    room: str,
    token: str,
    tracks: list[MediaStreamTrack] | None = None,
) -> WebRtcClient:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for track in tracks if tracks is not None else [AudioStreamTrack(), PatternVideoTrack()]:
        pc.addTransceiver(track, direction="sendonly")
    url, answer = await _exchange(http, f"{base_url}whip/{room}", token, pc)
    return WebRtcClient(pc, url, answer)


async def whep_subscribe(
    http: aiohttp.ClientSession,
    base_url: str,
    room: str,
    token: str,
    kinds: tuple[str, ...] = ("audio", "video"),
    identity: str | None = None,
) -> WebRtcClient:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    received = ReceivedMedia()
    tasks: list[asyncio.Task[None]] = []

    async def consume(track: MediaStreamTrack) -> None:
        while True:
            frame: Any = await track.recv()
            received.frames[track.kind] += 1
            received.first_frame_at.setdefault(track.kind, time.monotonic())
            if track.kind == "video":
                received.last_size = (frame.width, frame.height)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        tasks.append(asyncio.ensure_future(consume(track)))

    for kind in kinds:
        pc.addTransceiver(kind, direction="recvonly")
    path = f"whep/{room}" + (f"/{identity}" if identity else "")
    url, answer = await _exchange(http, base_url + path, token, pc)
    return WebRtcClient(pc, url, answer, received, tasks)


async def wait_for(predicate: Any, timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll predicate until true or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval_s)
    return bool(predicate())
