"""Real Chromium pages meet through the SFU: media flows, late joiners get a frame
quickly, and a leaver disappears from the others' pages."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

import pytest
from playwright.async_api import Browser

from tests.e2e.harness import Participant, SfuServer, meeting, open_participant, poll

pytestmark = pytest.mark.asyncio(loop_scope="module")

MEDIA_TIMEOUT_S = 20.0
LATE_JOIN_TIMEOUT_S = 10.0
# Join to first decoded frame. Four Chromium pages share the machine's 2 cores with
# the SFU: ICE and DTLS for the newcomer's nine transports (eight media, one data)
# take ~1 s there. Measured: 1.3-5.7 s, in two groups (about 1.4 s, or 3-5 s, the
# same for all three publishers). An A/B on a loaded machine (load average ~10) with
# and without the E2EE transforms gave 3.0-4.4 s with them and 1.3-5.7 s without:
# the transforms are not what makes it slow; what makes the second group is not
# found yet (see the closing note of 2026-11-30). Without the SFU's keyframe
# request the newcomer would wait for the publishers' next natural keyframe (none in
# Chromium's VP8 for minutes), far beyond this bound.
LATE_JOIN_FIRST_FRAME_MS = 6000.0
LEAVE_TIMEOUT_S = 5.0
SAMPLE_GAP_S = 1.0
# The fake camera's 640x480. A CPU-starved Chromium (four pages and the SFU on two
# cores) may scale its encoder down, keeping 4:3; the SFU forwards what it gets.
WIDTH, HEIGHT = 640, 480
MIN_WIDTH = 320
# Chromium names the RFC 7714 profile AEAD_AES_128_GCM with an "SRTP_" prefix in getStats().
SRTP_GCM = "SRTP_AEAD_AES_128_GCM"

Stats = dict[str, dict[str, dict[str, int]]]


def remaining(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


async def media_stats(participant: Participant) -> Stats:
    stats: Stats = await participant.sfu("sfu.mediaStats()")
    return stats


def camera_frame_size(width: int | None, height: int | None) -> bool:
    """The fake camera's picture, at full size or scaled down by the encoder."""
    if not width or not height:
        return False
    return MIN_WIDTH <= width <= WIDTH and width * HEIGHT == height * WIDTH


def receives_full_video_and_audio(stats: Stats, *, publishers: set[str]) -> bool:
    for identity in publishers:
        video = stats.get(identity, {}).get("video", {})
        audio = stats.get(identity, {}).get("audio", {})
        if not (
            video.get("framesDecoded", 0) > 0
            and camera_frame_size(video.get("frameWidth"), video.get("frameHeight"))
            and audio.get("packetsReceived", 0) > 0
        ):
            return False
    return True


def all_connected(transports: list[dict[str, Any]]) -> bool:
    return bool(transports) and all(t["dtlsState"] == "connected" for t in transports)


def shows_exactly(expected: set[str], shown: list[str]) -> bool:
    return set(shown) == expected


def others(participants: list[Participant], me: Participant) -> set[str]:
    return {p.identity for p in participants if p is not me}


async def wait_for_media(participants: list[Participant], timeout_s: float) -> list[Stats]:
    """Wait until every page decodes full-size video and receives audio from all others."""
    deadline = time.monotonic() + timeout_s
    results = []
    for me in participants:
        publishers = others(participants, me)
        results.append(
            await poll(
                partial(media_stats, me),
                partial(receives_full_video_and_audio, publishers=publishers),
                timeout_s=remaining(deadline),
                what=f"{me.identity} to receive {sorted(publishers)} (camera picture)",
            )
        )
    return results


async def test_three_pages_exchange_live_video_and_audio_over_gcm_srtp(
    sfu_server: SfuServer, chromium: Browser
) -> None:
    async with meeting(chromium, sfu_server, "media", ["alice", "bob", "carol"]) as pages:
        before = await wait_for_media(pages, MEDIA_TIMEOUT_S)
        # A measurement interval, not synchronization: media must keep flowing.
        await asyncio.sleep(SAMPLE_GAP_S)
        after = await asyncio.gather(*(media_stats(page) for page in pages))

        for me, first, second in zip(pages, before, after, strict=True):
            for publisher in others(pages, me):
                video_1, video_2 = first[publisher]["video"], second[publisher]["video"]
                audio_1, audio_2 = first[publisher]["audio"], second[publisher]["audio"]
                where = f"{me.identity} from {publisher}"
                assert video_2["framesDecoded"] > video_1["framesDecoded"], where
                size = (video_2["frameWidth"], video_2["frameHeight"])
                assert camera_frame_size(*size), (where, size)
                assert audio_2["packetsReceived"] > audio_1["packetsReceived"], where

        for me in pages:
            transports: list[dict[str, Any]] = await poll(
                partial(me.sfu, "sfu.transportStats()"),
                all_connected,
                timeout_s=MEDIA_TIMEOUT_S / 2,
                what=f"{me.identity}'s transports to be connected",
            )
            # No BUNDLE for browsers: 2 published + 4 received m-sections and the data
            # channels' own, 7 transports (Chromium negotiates SRTP on all of them).
            assert len(transports) == 7, transports
            assert {t["srtpCipher"] for t in transports} == {SRTP_GCM}, transports


async def test_late_joiner_decodes_every_publisher_soon_after_joining(
    sfu_server: SfuServer, chromium: Browser
) -> None:
    async with meeting(chromium, sfu_server, "late", ["alice", "bob", "carol"]) as pages:
        # The publishers are past their first keyframe: the SFU has to ask for a new one.
        await wait_for_media(pages, MEDIA_TIMEOUT_S)
        dave = await open_participant(chromium, sfu_server, "late", "dave")
        pages.append(dave)
        publishers = {"alice", "bob", "carol"}

        first_frame_at: dict[str, float] = await poll(
            lambda: dave.sfu("sfu.firstFrameAt"),
            lambda seen: publishers <= set(seen),
            timeout_s=LATE_JOIN_TIMEOUT_S,
            what="dave to decode a frame from every publisher",
        )
        joined_at: float = await dave.sfu("sfu.joinedAt")
        delays_ms = {name: first_frame_at[name] - joined_at for name in sorted(publishers)}
        assert all(delay <= LATE_JOIN_FIRST_FRAME_MS for delay in delays_ms.values()), delays_ms


async def test_leaver_disappears_from_the_other_pages(
    sfu_server: SfuServer, chromium: Browser
) -> None:
    async with meeting(chromium, sfu_server, "leave", ["alice", "bob", "carol"]) as pages:
        alice, bob, carol = pages
        for me in pages:
            await poll(
                partial(me.sfu, "sfu.participants()"),
                partial(shows_exactly, others(pages, me)),
                timeout_s=LATE_JOIN_TIMEOUT_S,
                what=f"{me.identity} to show the other two",
            )

        await alice.sfu("sfu.leave()")

        deadline = time.monotonic() + LEAVE_TIMEOUT_S
        for me in (bob, carol):
            await poll(
                partial(me.sfu, "sfu.participants()"),
                lambda shown: "alice" not in shown,
                timeout_s=remaining(deadline),
                what=f"{me.identity} to stop showing alice",
            )
        assert await alice.sfu("sfu.state") == "closed"
