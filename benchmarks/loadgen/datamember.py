"""A participant with only the control and file data channels (docs/DATA_CHANNELS.md):
WebSocket signaling plus an aiortc peer connection. Used by the data-channel
benchmark and the end-to-end tests."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

CHUNK = 16 * 1024
# Like a browser watching bufferedAmount: never queue a whole file in the client.
SEND_HIGH_WATER = 1024 * 1024
OPEN_TIMEOUT_S = 15.0


@dataclass
class DataMember:
    """One participant: its socket, peer connection, channels and what arrived."""

    identity: str
    ws: aiohttp.ClientWebSocketResponse
    pc: RTCPeerConnection
    control: RTCDataChannel
    file: RTCDataChannel
    control_in: list[dict[str, Any]] = field(default_factory=list)
    file_in: list[dict[str, Any]] = field(default_factory=list)
    chunks: dict[int, bytearray] = field(default_factory=dict)

    async def close(self) -> None:
        await self.pc.close()
        await self.ws.close()

    def said(self, kind: str) -> list[dict[str, Any]]:
        """Messages of one type from either channel, oldest first."""
        return [m for m in self.control_in + self.file_in if m["type"] == kind]

    def received_bytes(self) -> int:
        return sum(len(chunks) for chunks in self.chunks.values())


async def _until(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def join_data_member(
    http: aiohttp.ClientSession, base_url: str, token: str, identity: str
) -> DataMember:
    """Join with ``token`` over the WebSocket and open both channels."""
    ws = await http.ws_connect(base_url + "/ws")
    await ws.send_json({"type": "join", "version": 1, "token": token})
    joined = await ws.receive_json(timeout=10)
    if joined.get("type") != "joined":
        await ws.close()
        raise RuntimeError(f"{identity} did not join: {joined}")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    member = DataMember(identity, ws, pc, pc.createDataChannel("control"),
                        pc.createDataChannel("file"))  # fmt: skip

    @member.control.on("message")
    def on_control(message: str | bytes) -> None:
        if isinstance(message, str):
            member.control_in.append({**json.loads(message), "_at": time.monotonic()})

    @member.file.on("message")
    def on_file(message: str | bytes) -> None:
        if isinstance(message, str):
            member.file_in.append(json.loads(message))
        else:
            number = int.from_bytes(message[:4], "big")
            member.chunks.setdefault(number, bytearray()).extend(message[4:])

    await pc.setLocalDescription(await pc.createOffer())
    await ws.send_json({"type": "offer", "sdp": pc.localDescription.sdp})
    while True:
        reply = await ws.receive_json(timeout=10)
        if reply["type"] == "answer":
            break
        if reply["type"] == "error":
            await member.close()
            raise RuntimeError(f"{identity}'s offer refused: {reply}")
    await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
    if not await _until(
        lambda: member.control.readyState == member.file.readyState == "open", OPEN_TIMEOUT_S
    ):
        await member.close()
        raise RuntimeError(f"{identity}'s data channels did not open")
    return member


def file_offer(data: bytes, file_id: str, **extra: Any) -> str:
    return json.dumps({"type": "file_offer", "id": file_id, "name": "report.pdf",
                       "size": len(data), "mime": "application/pdf",
                       "sha256": hashlib.sha256(data).hexdigest(), **extra})  # fmt: skip


async def offer_file(
    sender: DataMember, data: bytes, file_id: str, *, resume: bool = False, timeout_s: float = 10
) -> dict[str, Any]:
    """Offer ``data`` (again, with ``resume``, after a reconnect) and return the server's
    ``file_accepted``; RuntimeError if it refuses."""
    extra = {"resume": True} if resume else {}
    sender.file.send(file_offer(data, file_id, **extra))
    if not await _until(lambda: any(m.get("id") == file_id for m in sender.file_in), timeout_s):
        raise RuntimeError(f"no answer to the offer of {file_id}")
    accepted = next(m for m in sender.file_in if m.get("id") == file_id)
    if accepted["type"] != "file_accepted":
        raise RuntimeError(f"offer {file_id} refused: {accepted}")
    return accepted


async def send_range(sender: DataMember, number: int, data: bytes, start: int, stop: int) -> None:
    """Send ``data[start:stop]`` as chunks of transfer ``number``, never queueing more
    than SEND_HIGH_WATER in the client."""
    for offset in range(start, stop, CHUNK):
        sender.file.send(number.to_bytes(4, "big") + data[offset : min(offset + CHUNK, stop)])
        while sender.file.bufferedAmount > SEND_HIGH_WATER:
            await asyncio.sleep(0.01)


async def send_file(sender: DataMember, data: bytes, file_id: str, timeout_s: float = 10) -> int:
    """Offer ``data`` and send it in chunks; returns the transfer number."""
    number = int((await offer_file(sender, data, file_id, timeout_s=timeout_s))["transfer"])
    await send_range(sender, number, data, 0, len(data))
    return number
