"""A meeting participant in Python that takes part in end-to-end encryption like the page.

It joins over the WebSocket protocol (docs/PROTOCOL.md), publishes the tracks it is
given (video as VP8, audio as Opus: the codecs frame encryption supports), subscribes
to every track in the room, and follows the page's key distribution
(``e2ee_keys.KeyDistribution``): ``e2ee_hello`` / ``e2ee_key``, rotation, the
"E2EE off" hello. Every frame it sends goes through the sender keys and every frame it
receives through the sender's keyring, by the aiortc hooks of ``e2ee_aiortc``. What it
decoded is counted per publisher and kind, for tests and the load generator.

``ignore_e2ee=True`` makes a client that knows nothing of E2EE: it never reads the
e2ee_* messages and hands every frame to its decoder as it arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from benchmarks.loadgen.e2ee_aiortc import hook_receiver, hook_sender, request_keyframe
from benchmarks.loadgen.e2ee_keys import KeyDistribution, Message

ANSWER_TIMEOUT_S = 10.0
JOIN_TIMEOUT_S = 10.0
TICK_S = 0.25
LABELS = {"audio": "microphone", "video": "camera"}
# The codecs frame encryption supports (docs/E2EE.md), as aiortc names them.
E2EE_CODECS = {"audio": ("audio/opus",), "video": ("video/vp8", "video/rtx")}
FRAME_CODEC = {"audio": "opus", "video": "vp8"}

# (kind, frame as encoded, frame as sent or None if dropped)
SentObserver = Callable[[str, bytes, "bytes | None"], None]
# (publisher identity, kind, frame as it arrived)
ReceivedObserver = Callable[[str, str, bytes], None]


class PeerError(RuntimeError):
    """The server refused something the peer asked for."""


@dataclass(frozen=True)
class RemoteTrack:
    """A track someone else publishes (the protocol's Track object)."""

    track_id: str
    identity: str
    kind: str
    label: str

    @classmethod
    def from_message(cls, track: dict[str, Any]) -> RemoteTrack:
        return cls(str(track["track_id"]), str(track["identity"]), str(track["kind"]),
                   str(track.get("label", "")))  # fmt: skip


@dataclass
class ReceivedMedia:
    """One publisher's track of one kind, as this peer received it."""

    frames_in: int = 0  # whole frames assembled from RTP, before decryption
    to_decoder: int = 0  # frames handed to the decoder (decrypted, or passed as plain)
    decoded: int = 0  # frames the decoder produced
    size: tuple[int, int] | None = None  # the last decoded video frame's (width, height)
    first_keyframe: bool | None = None  # video: whether the decoder started at a keyframe


@dataclass
class Subscription:
    track: RemoteTrack
    transceiver: RTCRtpTransceiver | None = None
    consumer: asyncio.Task[None] | None = None


@dataclass
class E2EEPeer:
    """One participant: its socket, peer connection, keys and what it received."""

    identity: str
    ws: aiohttp.ClientWebSocketResponse
    ignore_e2ee: bool = False
    kinds: tuple[str, ...] = ("audio", "video")  # what it subscribes to
    clock: Callable[[], float] = time.monotonic
    pc: RTCPeerConnection = field(default_factory=lambda: new_peer_connection())
    keys: KeyDistribution = field(init=False)
    publications: list[tuple[RTCRtpTransceiver, str]] = field(default_factory=list)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    received: dict[tuple[str, str], ReceivedMedia] = field(default_factory=dict)
    published: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    keyframes_sent: int = 0
    on_sent: list[SentObserver] = field(default_factory=list)
    on_received: list[ReceivedObserver] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _negotiation: asyncio.Task[None] | None = None
    _negotiation_wanted: bool = False
    _ready: bool = False  # publishing and E2EE are set up: offers may go out
    _answer: asyncio.Future[dict[str, Any]] | None = None
    _barrier: int | None = None
    _pings: int = 0
    _pongs: int = 0
    _refusal: str | None = None

    def __post_init__(self) -> None:
        self.keys = KeyDistribution(self.identity)

    # ------------------------------------------------------------ lifecycle

    @classmethod
    async def join(
        cls,
        http: aiohttp.ClientSession,
        base_url: str,
        token: str,
        *,
        tracks: list[MediaStreamTrack] | None = None,
        e2ee: bool = True,
        ignore_e2ee: bool = False,
        kinds: tuple[str, ...] = ("audio", "video"),
    ) -> E2EEPeer:
        """Join with ``token``, turn E2EE on (unless ``e2ee`` is false) before any media
        flows, publish ``tracks``, subscribe to the tracks of ``kinds`` others publish."""
        ws = await http.ws_connect(base_url.rstrip("/") + "/ws")
        await ws.send_json({"type": "join", "version": 1, "token": token})
        joined = await ws.receive_json(timeout=JOIN_TIMEOUT_S)
        if joined.get("type") != "joined":
            await ws.close()
            raise PeerError(f"join refused: {joined}")
        peer = cls(identity=str(joined["identity"]), ws=ws, ignore_e2ee=ignore_e2ee, kinds=kinds)
        try:
            await peer._start(joined, tracks or [], e2ee)
        except BaseException:
            await peer.close()
            raise
        return peer

    async def _start(self, joined: dict[str, Any], tracks: list[MediaStreamTrack],
                     e2ee: bool) -> None:  # fmt: skip
        others = joined.get("participants", [])
        self.keys.on_room_joined([str(p["identity"]) for p in others])
        for participant in others:
            for track in participant.get("tracks", []):
                self._subscribe(RemoteTrack.from_message(track))
        for track in tracks:
            transceiver = self.pc.addTransceiver(track, direction="sendonly")
            _prefer_e2ee_codecs(transceiver)
            hook_sender(transceiver.sender, partial(self._on_frame_sent, track.kind))
            self.publications.append((transceiver, LABELS.get(track.kind, track.kind)))
        self._tasks.append(asyncio.ensure_future(self._read()))
        self._tasks.append(asyncio.ensure_future(self._tick()))
        if e2ee and not self.ignore_e2ee:
            await self.set_e2ee(True)
        self._ready = True
        await self.negotiate()

    async def close(self) -> None:
        """Leave the room and stop everything this peer started."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            if not self.ws.closed:
                await self.ws.send_json({"type": "leave"})
        tasks = [*self._tasks, *(s.consumer for s in self.subscriptions.values() if s.consumer)]
        if self._negotiation is not None:
            tasks.append(self._negotiation)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.pc.close()
        await self.ws.close()

    # ------------------------------------------------------------ E2EE controls

    async def set_e2ee(self, on: bool) -> None:
        """The page's Lock button."""
        await self._send_all(self.keys.set_enabled(on, self.clock()))

    async def rotate(self) -> None:
        """Make a new sender key now and send it to the encrypted group."""
        await self._send_all(self.keys.rotate(self.clock()))

    def media(self, identity: str, kind: str) -> ReceivedMedia:
        """What arrived from ``identity``'s track of ``kind`` (zeros if nothing yet)."""
        return self.received.setdefault((identity, kind), ReceivedMedia())

    # ------------------------------------------------------------ signaling

    async def _send(self, message: dict[str, Any]) -> None:
        await self.ws.send_json(message)

    async def _send_all(self, messages: list[Message]) -> None:
        for message in messages:
            await self._send(message)

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(frame.data)
            if isinstance(message, dict):
                await self._on_message(message)
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(PeerError("the signaling socket closed"))

    async def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        now = self.clock()
        if kind == "answer":
            if self._answer is not None and not self._answer.done():
                self._answer.set_result(message)
        elif kind == "pong":
            self._pongs += 1
            refused = self._barrier is not None and self._pongs >= self._barrier
            if refused and self._answer is not None and not self._answer.done():
                self._answer.set_exception(PeerError(f"offer refused: {self._refusal}"))
        elif kind == "error":
            self.warnings.append(message)
            if message.get("request") == "offer":
                self._refusal = f"{message.get('code')}: {message.get('message')}"
        elif kind == "participant_joined":
            identity = str(message["participant"]["identity"])
            await self._send_all(self.keys.on_participant_joined(identity, now))
        elif kind == "participant_left":
            identity = str(message["identity"])
            await self._send_all(self.keys.on_participant_left(identity, now))
            gone = [t for t, s in self.subscriptions.items() if s.track.identity == identity]
            await self._unsubscribe(gone)
        elif kind == "track_published":
            self._subscribe(RemoteTrack.from_message(message["track"]))
        elif kind == "track_unpublished":
            await self._unsubscribe([str(message["track_id"])])
        elif kind in ("e2ee_hello", "e2ee_key") and not self.ignore_e2ee:
            await self._send_all(self.keys.on_message(message, now))
            await self._request_keyframes(self.keys.take_keyframe_requests())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            await self._send_all(self.keys.tick(self.clock()))

    async def _request_keyframes(self, identities: list[str]) -> None:
        for sub in self.subscriptions.values():
            if sub.track.identity in identities and sub.track.kind == "video" and sub.transceiver:
                await request_keyframe(sub.transceiver.receiver)

    # ------------------------------------------------------------ negotiation

    def _subscribe(self, track: RemoteTrack) -> None:
        if track.identity == self.identity or track.track_id in self.subscriptions:
            return
        if track.kind not in self.kinds:
            return
        self.subscriptions[track.track_id] = Subscription(track)
        self._request_negotiation()

    async def _unsubscribe(self, track_ids: list[str]) -> None:
        stopped = False
        for track_id in track_ids:
            sub = self.subscriptions.pop(track_id, None)
            if sub is None:
                continue
            if sub.consumer is not None:
                sub.consumer.cancel()
            if sub.transceiver is not None:
                await sub.transceiver.stop()
                stopped = True
        if stopped:
            self._request_negotiation()

    def _request_negotiation(self) -> None:
        """At most one offer in flight; changes meanwhile make one more round."""
        self._negotiation_wanted = True
        if not self._ready:
            return
        if self._negotiation is None or self._negotiation.done():
            self._negotiation = asyncio.ensure_future(self._negotiate_while_wanted())

    async def negotiate(self) -> None:
        """Offer now (if anything changed) and wait until the server answered."""
        self._request_negotiation()
        assert self._negotiation is not None
        await self._negotiation

    async def _negotiate_while_wanted(self) -> None:
        while self._negotiation_wanted:
            self._negotiation_wanted = False
            await self._negotiate_once()

    async def _negotiate_once(self) -> None:
        for sub in self.subscriptions.values():
            if sub.transceiver is None:
                sub.transceiver = self.pc.addTransceiver(sub.track.kind, direction="recvonly")
                _prefer_e2ee_codecs(sub.transceiver)
                hook_receiver(sub.transceiver.receiver, partial(self._on_frame_received, sub.track))
        if not self.pc.getTransceivers():
            return
        await self.pc.setLocalDescription(await self.pc.createOffer())
        mids: dict[str, dict[str, str]] = {}
        for transceiver, label in self.publications:
            if transceiver.mid is not None and not transceiver.stopped:
                mids[transceiver.mid] = {"publish": label}
        for track_id, sub in self.subscriptions.items():
            if sub.transceiver is not None and sub.transceiver.mid is not None:
                mids[sub.transceiver.mid] = {"subscribe": track_id}
        self._answer = asyncio.get_running_loop().create_future()
        self._refusal = None
        self._barrier = None
        await self._send({"type": "offer", "sdp": self.pc.localDescription.sdp, "mids": mids})
        await self._send({"type": "ping"})
        self._pings += 1
        self._barrier = self._pings
        answer = await asyncio.wait_for(self._answer, ANSWER_TIMEOUT_S)
        self._barrier = None
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        self.published = list(answer.get("published", []))
        for sub in self.subscriptions.values():
            if sub.consumer is None and sub.transceiver is not None:
                track = sub.transceiver.receiver.track
                sub.consumer = asyncio.ensure_future(self._consume(sub.track, track))

    # ------------------------------------------------------------ media

    def _on_frame_sent(self, kind: str, frame: bytes, mime_type: str) -> bytes | None:
        out = self.keys.encrypt_frame(frame, mime_type, self.clock())
        if out is not None and kind == "video" and frame and not frame[0] & 0x01:
            self.keyframes_sent += 1
        for observer in self.on_sent:
            observer(kind, frame, out)
        return out

    def _on_frame_received(self, track: RemoteTrack, data: bytes) -> bytes | None:
        media = self.media(track.identity, track.kind)
        media.frames_in += 1
        for observer in self.on_received:
            observer(track.identity, track.kind, data)
        if self.ignore_e2ee:
            out: bytes | None = data
        else:
            codec = FRAME_CODEC[track.kind]
            out = self.keys.decrypt_frame(track.identity, data, codec, self.clock())
        if out is None:
            return None
        media.to_decoder += 1
        if track.kind == "video" and media.first_keyframe is None and out:
            media.first_keyframe = not out[0] & 0x01
        return out

    async def _consume(self, remote: RemoteTrack, track: MediaStreamTrack) -> None:
        media = self.media(remote.identity, remote.kind)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            media.decoded += 1
            if isinstance(frame, VideoFrame):
                media.size = (frame.width, frame.height)


def new_peer_connection() -> RTCPeerConnection:
    """One ICE+DTLS transport per m-section, as the server answers a client that does not
    insist on BUNDLE. (aiortc's "balanced" would share one per kind, and the answer's
    other m-sections, each with ICE credentials of their own, would never connect.)"""
    config = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_COMPAT)
    return RTCPeerConnection(config)


def _prefer_e2ee_codecs(transceiver: RTCRtpTransceiver) -> None:
    """Offer only VP8 (with RTX) for video and Opus for audio."""
    wanted = E2EE_CODECS.get(transceiver.kind, ())
    codecs = [
        codec
        for codec in RTCRtpSender.getCapabilities(transceiver.kind).codecs
        if codec.mimeType.lower() in wanted
    ]
    transceiver.setCodecPreferences(codecs)
