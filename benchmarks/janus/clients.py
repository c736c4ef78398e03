"""Load clients for Janus's videoroom: the loadgen's publishers and subscribers, with
the Janus API in place of WHIP/WHEP.

Each client is one Janus session with one videoroom handle, as a browser participant
has. A publisher creates the room if nobody has yet (Opus + VP8, the scenario's
bitrate), joins as publisher with a fixed feed id and sends its offer with
"configure"; Janus's answer comes in the event. Its candidate is trickled. A subscriber
joins the publisher's feed; Janus offers, the client answers recvonly with its
candidate in the SDP and sends "start". Janus being full ICE, the client then checks
and also answers Janus's checks (controlled when Janus offered).

Room and feed ids are integers derived from the loadgen's names, so every generator
process finds them without talking to the others.
"""

from __future__ import annotations

import time
import zlib
from typing import Any

import aiohttp

from benchmarks.janus.api import JanusError, JanusHttp, JanusSession
from benchmarks.loadgen.clients import (
    ClientSpec,
    ConnectFailure,
    Publisher,
    Signaling,
    Subscriber,
    Window,
)
from benchmarks.loadgen.offer import (
    AnswerError,
    build_answer_to_offer,
    build_offer,
    parse_answer,
    parse_offer,
)
from benchmarks.loadgen.stats import LatencySamples

VIDEOROOM = "janus.plugin.videoroom"
ROOM_EXISTS = 427  # JANUS_VIDEOROOM_ERROR_ROOM_EXISTS
_SIGNALING_ERRORS = (JanusError, aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError)


def numeric_id(name: str) -> int:
    """A positive integer id for a room or feed name (the videoroom wants integers)."""
    return zlib.crc32(name.encode()) or 1


def host_candidate(host: str, port: int) -> str:
    """Our one ICE candidate, as a trickle "candidate" string."""
    return f"candidate:1 1 udp 2130706431 {host} {port} typ host"


def create_room_request(room: str, max_publishers: int, video_kbps: float) -> dict[str, Any]:
    """The videoroom "create" request for one loadgen room."""
    return {
        "request": "create",
        "room": numeric_id(room),
        "description": room,
        "publishers": max(1, max_publishers),
        "bitrate": int(video_kbps * 1000),
        "audiocodec": "opus",
        "videocodec": "vp8",
        "is_private": True,
        "permanent": False,
    }


def _need(http: Signaling) -> JanusHttp:
    if not isinstance(http, JanusHttp):
        raise TypeError("Janus clients signal with a JanusHttp")
    return http


class JanusPublisher(Publisher):
    """A videoroom publisher sending the loadgen's Opus and VP8."""

    max_publishers = 16

    def __init__(self, spec: ClientSpec, window: Window) -> None:
        super().__init__(spec, window)
        self.session: JanusSession | None = None

    async def connect(self, http: Signaling) -> ConnectFailure | None:
        started = time.monotonic()
        session = self.session = JanusSession(_need(http))
        room = numeric_id(self.spec.room)
        offer = build_offer(
            self.offer_tracks(),
            direction="sendonly",
            ice_ufrag=self.ice_ufrag,
            ice_pwd=self.ice_pwd,
            fingerprint_sha256=self.certificate.fingerprint_sha256,
        )
        try:
            await session.open(VIDEOROOM)
            try:
                await session.request(
                    create_room_request(self.spec.room, self.max_publishers, self.spec.video_kbps)
                )
            except JanusError as exc:
                if exc.code != ROOM_EXISTS:
                    raise
            await session.request(
                {
                    "request": "join",
                    "ptype": "publisher",
                    "room": room,
                    "id": numeric_id(self.spec.name),
                    "display": self.spec.name,
                }
            )
            event = await session.request(
                {"request": "configure", "audio": True, "video": "video" in self.spec.kinds},
                jsep={"type": "offer", "sdp": offer},
            )
        except _SIGNALING_ERRORS as exc:
            return self.make_failure("signaling", str(exc) or type(exc).__name__)
        if event.jsep is None or event.jsep.get("type") != "answer":
            return self.make_failure("answer", f"no JSEP answer in {event.data}")
        try:
            self.sections = parse_answer(str(event.jsep.get("sdp", "")))
        except AnswerError as exc:
            return self.make_failure("answer", str(exc))
        failure = self.open_transports(controlling=True)
        if failure is not None:
            return failure
        try:
            for transport in self.transports:
                await session.trickle(host_candidate(*transport.local_address))
            await session.trickle(None)
        except _SIGNALING_ERRORS as exc:
            return self.make_failure("signaling", f"trickle: {exc}")
        failure = await self.connect_transports()
        if failure is None:
            self.connect_s = time.monotonic() - started
        return failure

    async def close(self, http: Signaling) -> None:
        await super().close(http)
        if self.session is not None:
            await self.session.close()


class JanusSubscriber(Subscriber):
    """A videoroom subscriber to one publisher's feed, measuring like any subscriber."""

    def __init__(
        self,
        spec: ClientSpec,
        window: Window,
        latency: dict[str, LatencySamples],
        app_latency: dict[str, LatencySamples],
    ) -> None:
        super().__init__(spec, window, latency, app_latency)
        self.session: JanusSession | None = None

    async def connect(self, http: Signaling) -> ConnectFailure | None:
        started = time.monotonic()
        session = self.session = JanusSession(_need(http))
        try:
            await session.open(VIDEOROOM)
            event = await session.request(
                {
                    "request": "join",
                    "ptype": "subscriber",
                    "room": numeric_id(self.spec.room),
                    "streams": [{"feed": numeric_id(self.spec.source)}],
                }
            )
        except _SIGNALING_ERRORS as exc:
            return self.make_failure("signaling", str(exc) or type(exc).__name__)
        if event.jsep is None or event.jsep.get("type") != "offer":
            return self.make_failure("answer", f"no JSEP offer in {event.data}")
        try:
            self.sections = parse_offer(str(event.jsep.get("sdp", "")))
        except AnswerError as exc:
            return self.make_failure("answer", str(exc))
        # Janus offered, so Janus controls: our checks only confirm the path.
        failure = self.open_transports(controlling=False)
        if failure is not None:
            return failure
        if len(self.transports) != 1:
            return self.make_failure("answer", "Janus's offer is not one bundled transport")
        answer = build_answer_to_offer(
            self.sections,
            ice_ufrag=self.ice_ufrag,
            ice_pwd=self.ice_pwd,
            fingerprint_sha256=self.certificate.fingerprint_sha256,
            candidate=self.transports[0].local_address,
        )
        try:
            await session.request({"request": "start"}, jsep={"type": "answer", "sdp": answer})
        except _SIGNALING_ERRORS as exc:
            return self.make_failure("signaling", f"start: {exc}")
        self.learn_streams()
        failure = await self.connect_transports()
        if failure is None:
            self.connect_s = time.monotonic() - started
        return failure

    async def close(self, http: Signaling) -> None:
        await super().close(http)
        if self.session is not None:
            await self.session.close()
