"""End-to-end encrypted media in rooms that mix a Chromium page and aiortc clients.

The aiortc clients are benchmarks/loadgen/e2ee_peer.py: the page's key distribution
(e2ee_hello / e2ee_key, rotation, the "E2EE off" hello) and frame encryption hooked
into aiortc's encoder and decoder paths. The SFU forwards the encrypted frames as they
are and still does its job: keyframe requests reach publishers, lost packets are
resent, every subscriber gets its own SSRC. Whoever has no key decodes nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pylibsrtp
import pytest
from aiortc import RTCDtlsTransport
from aiortc.mediastreams import AudioStreamTrack
from playwright.async_api import Browser

from benchmarks.loadgen.e2ee import clear_prefix_len, parse_header
from benchmarks.loadgen.e2ee_aiortc import request_keyframe
from benchmarks.loadgen.e2ee_peer import E2EEPeer
from tests.e2e.harness import Participant, SfuServer, open_participant, poll
from tests.peers import PatternVideoTrack, client_ssl, use_loopback_only

pytestmark = pytest.mark.asyncio(loop_scope="module")

MEDIA_TIMEOUT_S = 20.0
KEYS_TIMEOUT_S = 10.0
# Long enough for many frames at 30 fps (and a dozen at the rate the aiortc encoder
# reaches on a busy machine); counters are compared across it.
SAMPLE_GAP_S = 1.5
# After a change of E2EE state, frames in flight settle within this.
SETTLE_S = 1.5
PEER_VIDEO_SIZE = (320, 240)
PAGE_VIDEO_SIZE = (640, 480)  # what the page asks its camera for


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass
class Room:
    """One meeting: Chromium pages and aiortc peers, all closed on exit."""

    server: SfuServer
    browser: Browser
    http: aiohttp.ClientSession
    name: str
    pages: list[Participant] = field(default_factory=list)
    peers: list[E2EEPeer] = field(default_factory=list)

    async def page(self, identity: str, *, locked: bool = True) -> Participant:
        page = await open_participant(self.browser, self.server, self.name, identity)
        self.pages.append(page)
        if locked:
            assert await page.sfu("sfu.e2ee.setEnabled(true)") is True
        return page

    async def peer(
        self,
        identity: str,
        *,
        publish: bool = True,
        e2ee: bool = True,
        ignore_e2ee: bool = False,
        kinds: tuple[str, ...] = ("audio", "video"),
    ) -> E2EEPeer:
        grants = None if publish else ["subscribe"]
        token = await asyncio.to_thread(self.server.token, self.name, identity, grants=grants)
        tracks = [AudioStreamTrack(), PatternVideoTrack(*PEER_VIDEO_SIZE)] if publish else []
        peer = await E2EEPeer.join(self.http, self.server.base_url, token, tracks=tracks,
                                   e2ee=e2ee, ignore_e2ee=ignore_e2ee, kinds=kinds)  # fmt: skip
        self.peers.append(peer)
        return peer

    async def leave(self, peer: E2EEPeer) -> None:
        self.peers.remove(peer)
        await peer.close()


@asynccontextmanager
async def mixed_room(server: SfuServer, browser: Browser, name: str) -> AsyncIterator[Room]:
    use_loopback_only()
    connector = aiohttp.TCPConnector(ssl=client_ssl(server.cert_path))
    async with aiohttp.ClientSession(connector=connector) as http:
        room = Room(server, browser, http, name)
        try:
            yield room
        except BaseException as exc:
            for page in room.pages:
                exc.add_note(f"console of {page.identity}:\n" + "\n".join(page.console[-30:]))
            for peer in room.peers:
                exc.add_note(describe(peer))
            raise
        finally:
            for peer in room.peers:
                await peer.close()
            for page in room.pages:
                await page.close()


def describe(peer: E2EEPeer) -> str:
    """What an aiortc peer knows, for the report of a failed test."""
    tracks = {t: (s.track.identity, s.track.kind, s.transceiver is not None)
              for t, s in peer.subscriptions.items()}  # fmt: skip
    states = {identity: peer.keys.state(identity) for identity in peer.keys.members}
    return (
        f"peer {peer.identity}: received={peer.received} frames={peer.keys.frames} "
        f"sent={peer.keys.sent} states={states} subscriptions={tracks} "
        f"warnings={peer.warnings} keyframes_sent={peer.keyframes_sent}"
    )


# ---------------------------------------------------------------- what the page shows


async def page_video(page: Participant, publisher: str) -> dict[str, int]:
    stats: dict[str, dict[str, dict[str, int]]] = await page.sfu("sfu.mediaStats()")
    return stats.get(publisher, {}).get("video", {})


async def page_frames(page: Participant, publisher: str) -> dict[str, Any]:
    """The page Worker's counters for ``publisher``: decrypted, dropped, passed, kid."""
    counters: dict[str, dict[str, Any]] = await page.sfu("sfu.e2ee.frames()")
    return counters.get(publisher, {})


async def page_member(page: Participant, identity: str) -> dict[str, Any]:
    shown: dict[str, dict[str, Any]] = await page.sfu("sfu.e2ee.members()")
    return shown.get(identity, {})


async def wait_page_state(page: Participant, identity: str, state: str) -> None:
    await poll(
        lambda: page_member(page, identity),
        lambda member: member.get("state") == state,
        timeout_s=KEYS_TIMEOUT_S,
        what=f"{page.identity} to show {identity} as {state}",
    )


async def wait_until(
    predicate: Callable[[], bool], what: str, timeout_s: float = MEDIA_TIMEOUT_S
) -> None:
    async def probe() -> bool:
        return predicate()

    await poll(probe, bool, timeout_s=timeout_s, what=what)


async def over_a_gap(probe: Callable[[], Awaitable[Any]]) -> tuple[Any, Any]:
    first = await probe()
    await asyncio.sleep(SAMPLE_GAP_S)
    return first, await probe()


async def encrypted_pair(room: Room) -> tuple[Participant, E2EEPeer]:
    """A locked page "alice" and an E2EE peer "bob", decoding each other."""
    alice = await room.page("alice")
    bob = await room.peer("bob")
    await wait_page_state(alice, "bob", "encrypted")
    await wait_until(lambda: bob.keys.state("alice") == "encrypted", "bob to hold alice's key")
    await poll(
        lambda: page_video(alice, "bob"),
        lambda video: video.get("framesDecoded", 0) > 0,
        timeout_s=MEDIA_TIMEOUT_S,
        what="alice to decode bob",
    )
    await wait_until(lambda: bob.media("alice", "video").decoded > 0, "bob to decode alice")
    return alice, bob


# ---------------------------------------------------------------- tests


async def test_locked_page_and_aiortc_peer_decrypt_and_decode_each_other(
    sfu_server: SfuServer, chromium: Browser
) -> None:
    async with mixed_room(sfu_server, chromium, "mixed-pair") as room:
        alice, bob = await encrypted_pair(room)
        await asyncio.sleep(SETTLE_S)

        async def both() -> tuple[dict[str, int], dict[str, Any]]:
            return await page_video(alice, "bob"), await page_frames(alice, "bob")

        bob_before = (bob.media("alice", "video").decoded, bob.media("alice", "audio").decoded)
        bob_frames_before = bob.keys.frames["alice"].decrypted
        bob_dropped_before = bob.keys.frames["alice"].dropped
        (video_1, frames_1), (video_2, frames_2) = await over_a_gap(both)

        # The page decodes bob's video, and every frame of it opened under bob's key:
        # a frame that is not encrypted would have been dropped (bob announced E2EE).
        assert video_2["framesDecoded"] > video_1["framesDecoded"]
        assert (video_2["frameWidth"], video_2["frameHeight"]) == PEER_VIDEO_SIZE
        assert frames_2["decrypted"] > frames_1["decrypted"]
        assert frames_2["passed"] == 0
        assert frames_2["dropped"] == frames_1["dropped"]
        # Bob decrypts and decodes the page's video, at the size the page sends, and audio.
        video, audio = bob.media("alice", "video"), bob.media("alice", "audio")
        assert video.decoded > bob_before[0] and audio.decoded > bob_before[1]
        assert video.size == PAGE_VIDEO_SIZE
        assert bob.keys.frames["alice"].decrypted > bob_frames_before
        assert bob.keys.frames["alice"].passed == 0
        assert bob.keys.frames["alice"].dropped == bob_dropped_before
        assert bob.keys.sent.encrypted > 0
        assert (bob.keys.sent.plain, bob.keys.sent.dropped) == (0, 0)
        # Both compute the same safety number for their pair of identity keys.
        shown = await page_member(alice, "bob")
        assert shown["encrypted"] is True and shown["keyId"] == 0
        assert shown["safetyNumber"] == bob.keys.members["alice"].safety_number
        assert bob.keys.all_encrypted()


async def test_a_client_without_keys_gets_every_encrypted_frame_unchanged_and_cannot_decode_them(
    sfu_server: SfuServer, chromium: Browser
) -> None:
    async with mixed_room(sfu_server, chromium, "mixed-keyless") as room:
        alice, bob = await encrypted_pair(room)
        sent_wire: set[bytes] = set()
        sent_plain: set[bytes] = set()

        def on_sent(kind: str, frame: bytes, out: bytes | None) -> None:
            if kind == "video" and out is not None:
                sent_wire.add(digest(out))
                sent_plain.add(digest(frame))

        bob.on_sent.append(on_sent)
        # Carol knows nothing of E2EE: every frame goes to her decoders as it arrives,
        # which is also all the SFU could do with them.
        carol = await room.peer("carol", publish=False, ignore_e2ee=True)
        arrived: list[bytes] = []
        carol.on_received.append(
            lambda who, kind, data: (
                arrived.append(data) if (who, kind) == ("bob", "video") else None
            )
        )
        # Dave speaks E2EE but has his lock off: he holds no key of theirs.
        dave = await room.peer("dave", publish=False, e2ee=False, kinds=("video",))
        await wait_until(
            lambda: (
                len(arrived) > 30
                and carol.media("alice", "video").frames_in > 30
                and carol.media("bob", "audio").frames_in > 30
                and dave.media("bob", "video").frames_in > 10
                and dave.media("alice", "video").frames_in > 10
            ),
            "carol and dave to receive video and audio from both",
        )

        # The SFU forwarded bob's frames byte for byte: each is one bob put on the wire,
        # in SFrame format under his key 0, and none is a frame as he encoded it.
        assert all(digest(frame) in sent_wire for frame in arrived), "a frame was altered"
        assert not any(digest(frame) in sent_plain for frame in arrived)
        for frame in arrived:
            kid, _, _ = parse_header(frame[clear_prefix_len("vp8", frame) :])
            assert kid == 0
        # Carol's subscription has an SSRC of its own (the SFU rewrote it).
        bob_ssrc = next(t.sender._ssrc for t, _ in bob.publications if t.kind == "video")
        carol_video = next(
            s for s in carol.subscriptions.values() if s.track.identity == "bob"
            and s.track.kind == "video"
        )  # fmt: skip
        assert carol_video.transceiver is not None
        sources = carol_video.transceiver.receiver.getSynchronizationSources()
        assert sources and all(source.source != bob_ssrc for source in sources)
        # Her VP8 decoder refuses almost every encrypted frame (a plaintext stream decodes
        # every one); the few it takes are noise at the size in the clear prefix.
        for publisher in ("alice", "bob"):
            media = carol.media(publisher, "video")
            assert media.to_decoder == media.frames_in > 30
            assert media.decoded * 10 <= media.frames_in, (publisher, media)
        # Dave drops every one of their frames before his decoders, and says why.
        for publisher in ("alice", "bob"):
            assert dave.keys.state(publisher) == "locked-out"
            media = dave.media(publisher, "video")
            assert media.frames_in > 0 and media.to_decoder == media.decoded == 0
            counters = dave.keys.frames[publisher]
            assert counters.dropped > 0 and counters.decrypted == counters.passed == 0
        # Meanwhile the page still decodes bob: he encrypts for alice, not for them.
        assert (await page_frames(alice, "bob"))["decrypted"] > 0
        assert set(bob.keys.members["alice"].sent_kids) == {0}
        assert not bob.keys.members["carol"].sent_kids and not bob.keys.members["dave"].sent_kids


async def test_a_late_e2ee_subscriber_starts_at_a_keyframe_its_publishers_were_asked_for(
    sfu_server: SfuServer, chromium: Browser
) -> None:
    async with mixed_room(sfu_server, chromium, "mixed-late") as room:
        alice, bob = await encrypted_pair(room)
        await asyncio.sleep(SETTLE_S)
        keyframes_before = bob.keyframes_sent
        assert keyframes_before >= 1  # aiortc's encoder sends one at the start only

        dave = await room.peer("dave", publish=False)
        await wait_until(
            lambda: (
                dave.media("bob", "video").decoded > 5 and dave.media("alice", "video").decoded > 5
            ),
            "dave to decode both",
        )
        # The SFU asked both publishers for a keyframe through all the encryption, and
        # dave's decoders started at one: their first frame, decrypted, was a keyframe.
        assert bob.keyframes_sent > keyframes_before
        for publisher in ("alice", "bob"):
            media = dave.media(publisher, "video")
            assert media.first_keyframe is True, publisher
            assert dave.keys.frames[publisher].decrypted > 0
        assert dave.media("alice", "video").size == PAGE_VIDEO_SIZE
        assert dave.media("bob", "video").size == PEER_VIDEO_SIZE

        # A PLI from dave reaches bob (the SFU passes it to the publisher): once nobody
        # has asked bob for a keyframe for a while, dave asks, and one comes.
        async def quiet() -> bool:
            count = bob.keyframes_sent
            await asyncio.sleep(1.0)
            return bob.keyframes_sent == count

        await poll(quiet, bool, timeout_s=10, interval_s=0, what="a second without keyframes")
        quiet_since = bob.keyframes_sent
        bob_video = next(
            s for s in dave.subscriptions.values() if s.track.identity == "bob"
            and s.track.kind == "video"
        )  # fmt: skip
        assert bob_video.transceiver is not None
        assert await request_keyframe(bob_video.transceiver.receiver) == 1
        await wait_until(
            lambda: bob.keyframes_sent > quiet_since, "bob to send a keyframe", timeout_s=5
        )


class LossyLink:
    """Loses every ``period``-th RTP packet of a subscriber's transport the first time it
    comes, before SRTP sees it (as the network would: a copy resent later is new to
    SRTP's replay window), and counts the copies that come again."""

    def __init__(self, transport: RTCDtlsTransport, period: int = 7) -> None:
        self.srtp = transport._rx_srtp
        self.period = period
        self.lost: set[int] = set()
        self.resent: set[int] = set()
        transport._rx_srtp = self

    def unprotect(self, data: bytes) -> bytes:
        seq = int.from_bytes(data[2:4], "big")
        if seq in self.lost:
            self.resent.add(seq)
        elif seq % self.period == 3:
            self.lost.add(seq)
            raise pylibsrtp.Error("lost on the way (test)")
        unprotected: bytes = self.srtp.unprotect(data)
        return unprotected

    def unprotect_rtcp(self, data: bytes) -> bytes:
        unprotected: bytes = self.srtp.unprotect_rtcp(data)
        return unprotected


async def test_lost_encrypted_packets_are_resent_by_the_sfu_and_their_frames_open(
    sfu_server: SfuServer, chromium: Browser
) -> None:
    async with mixed_room(sfu_server, chromium, "mixed-nack") as room:
        await encrypted_pair(room)
        erin = await room.peer("erin", publish=False, kinds=("video",))
        await wait_until(
            lambda: (
                erin.media("alice", "video").decoded > 0 and erin.media("bob", "video").decoded > 0
            ),
            "erin to decode both",
        )
        links = {}
        for sub in erin.subscriptions.values():
            assert sub.transceiver is not None
            links[sub.track.identity] = LossyLink(sub.transceiver.receiver.transport)
        before = {p: dataclasses.replace(erin.keys.frames[p]) for p in ("alice", "bob")}
        decoded = {p: erin.media(p, "video").decoded for p in ("alice", "bob")}
        await wait_until(
            lambda: all(len(link.resent) >= 10 for link in links.values()),
            "the SFU to resend 10 lost packets of each",
        )
        await asyncio.sleep(SAMPLE_GAP_S)  # the last copies land

        for publisher, link in links.items():
            # aiortc asked for each lost packet once (NACK); the SFU resent it from its
            # cache with the subscriber's numbering, and the frame it completed opened.
            assert len(link.resent) >= len(link.lost) - 3, (publisher, link.lost, link.resent)
            counters = erin.keys.frames[publisher]
            assert counters.decrypted > before[publisher].decrypted
            assert counters.dropped == before[publisher].dropped, publisher
            assert erin.media(publisher, "video").decoded > decoded[publisher] + 10


async def test_the_page_keeps_decoding_across_key_rotations_on_both_sides(
    sfu_server: SfuServer, chromium: Browser
) -> None:
    async with mixed_room(sfu_server, chromium, "mixed-rotate") as room:
        alice, bob = await encrypted_pair(room)
        await asyncio.sleep(SETTLE_S)
        dropped_before = (await page_frames(alice, "bob"))["dropped"]

        await bob.rotate()
        await poll(
            lambda: page_member(alice, "bob"),
            lambda member: member.get("keyId") == 1,
            timeout_s=KEYS_TIMEOUT_S,
            what="alice to decrypt bob's frames under his key 1",
        )
        assert bob.keys.current_kid == 1
        video_1, video_2 = await over_a_gap(lambda: page_video(alice, "bob"))
        assert video_2["framesDecoded"] > video_1["framesDecoded"]
        # The new key reached alice before bob's first frame under it.
        assert (await page_frames(alice, "bob"))["dropped"] == dropped_before

        # And the other way: the page rotates, bob follows.
        bob_dropped = bob.keys.frames["alice"].dropped
        await alice.sfu("sfu.e2ee.rotate()")
        await wait_until(
            lambda: bob.keys.frames["alice"].kid == 1,
            "bob to decrypt alice under her key 1",
            timeout_s=KEYS_TIMEOUT_S,
        )
        decoded = bob.media("alice", "video").decoded
        await wait_until(lambda: bob.media("alice", "video").decoded > decoded + 5, "bob decodes")
        assert bob.keys.frames["alice"].dropped == bob_dropped


async def test_the_off_hello_turns_either_side_back_to_plaintext(
    sfu_server: SfuServer, chromium: Browser
) -> None:
    async with mixed_room(sfu_server, chromium, "mixed-off") as room:
        alice, bob = await encrypted_pair(room)

        # Bob turns E2EE off: the page takes his frames as plaintext again, and bob,
        # without keys now, decodes nothing of alice, who still encrypts.
        await bob.set_e2ee(False)
        await wait_page_state(alice, "bob", "plain")
        assert bob.keys.state("alice") == "locked-out"
        await asyncio.sleep(SETTLE_S)
        plain_at = bob.keys.sent.plain
        bob_alice = bob.media("alice", "video").to_decoder
        (video_1, frames_1), (video_2, frames_2) = await over_a_gap(
            lambda: asyncio.gather(page_video(alice, "bob"), page_frames(alice, "bob"))
        )
        assert video_2["framesDecoded"] > video_1["framesDecoded"]
        assert frames_2["passed"] > frames_1["passed"]
        assert frames_2["decrypted"] == frames_1["decrypted"]
        assert bob.keys.sent.plain > plain_at
        assert bob.media("alice", "video").to_decoder == bob_alice
        assert bob.keys.frames["alice"].dropped > 0

        # Alice turns off too: bob decodes her plaintext.
        assert await alice.sfu("sfu.e2ee.setEnabled(false)") is False
        await wait_until(
            lambda: bob.keys.state("alice") == "plain", "bob to see alice off", KEYS_TIMEOUT_S
        )
        passed = bob.keys.frames["alice"].passed
        decoded = bob.media("alice", "video").decoded
        await wait_until(
            lambda: (
                bob.keys.frames["alice"].passed > passed + 10
                and bob.media("alice", "video").decoded > decoded + 10
            ),
            "bob to decode alice's plaintext",
        )
