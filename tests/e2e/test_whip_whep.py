"""WHIP publishers and WHEP viewers (aiortc, an independent WebRTC stack) through the SFU."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp

from signaling.tokens import SigningKeys
from tests.e2e.harness import SfuServer
from tests.peers import wait_for, whep_subscribe, whip_publish

OFFER_HEADERS = {"Content-Type": "application/sdp"}


def base(server: SfuServer) -> str:
    return server.base_url + "/"


async def test_whip_publisher_reaches_whep_viewer_and_delete_ends_it(
    sfu_server: SfuServer, http: aiohttp.ClientSession
) -> None:
    pub = await whip_publish(http, base(sfu_server), "w1", sfu_server.token("w1", "cam"))
    sub = await whep_subscribe(
        http, base(sfu_server), "w1", sfu_server.token("w1", "tv", role="viewer")
    )
    try:
        got = sub.received.frames
        assert await wait_for(lambda: got["video"] > 30 and got["audio"] > 30, 20), got
        assert sub.received.last_size == (320, 240)
        assert "a=sendonly" in sub.answer and "a=ice-lite" in sub.answer
        assert pub.answer.startswith("v=0\r\n") and "a=recvonly" in pub.answer
        async with http.delete(pub.resource_url) as resp:
            assert resp.status == 200
        async with http.delete(pub.resource_url) as resp:
            assert resp.status == 404
    finally:
        await sub.close(http)
        await pub.close()


async def test_whep_viewer_waits_for_publisher_then_follows_the_next_one(
    sfu_server: SfuServer, http: aiohttp.ClientSession
) -> None:
    viewer_token = sfu_server.token("w2", "tv", role="viewer")
    sub = await whep_subscribe(http, base(sfu_server), "w2", viewer_token)
    try:
        first = await whip_publish(http, base(sfu_server), "w2", sfu_server.token("w2", "a"))
        got = sub.received.frames
        assert await wait_for(lambda: got["video"] > 20, 20), got
        await first.close(http)
        second = await whip_publish(http, base(sfu_server), "w2", sfu_server.token("w2", "b"))
        try:
            before = got["video"]
            # The viewer keeps decoding: numbering stays continuous across the switch.
            assert await wait_for(lambda: got["video"] > before + 30, 20), got
        finally:
            await second.close(http)
    finally:
        await sub.close(http)


async def test_whep_for_named_identity_gets_only_that_publisher(
    sfu_server: SfuServer, http: aiohttp.ClientSession
) -> None:
    other = await whip_publish(http, base(sfu_server), "w3", sfu_server.token("w3", "other"))
    sub = await whep_subscribe(
        http,
        base(sfu_server),
        "w3",
        sfu_server.token("w3", "tv", role="viewer"),
        identity="wanted",
    )
    try:
        await wait_for(lambda: False, 2)
        assert sub.received.frames["video"] == 0
        wanted = await whip_publish(http, base(sfu_server), "w3", sfu_server.token("w3", "wanted"))
        try:
            assert await wait_for(lambda: sub.received.frames["video"] > 10, 20)
        finally:
            await wanted.close(http)
    finally:
        await sub.close(http)
        await other.close(http)


async def _post(
    http: aiohttp.ClientSession, url: str, body: str, headers: dict[str, str]
) -> tuple[int, str, dict[str, str]]:
    async with http.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


async def test_whip_errors_are_exact(sfu_server: SfuServer, http: aiohttp.ClientSession) -> None:
    url = base(sfu_server) + "whip/room-e"
    good = sfu_server.token("room-e", "cam")
    offer = "v=0\r\n"
    status, text, headers = await _post(http, url, offer, OFFER_HEADERS)
    assert status == 401 and "bearer" in text.lower()
    assert headers["WWW-Authenticate"].startswith("Bearer")

    status, text, _ = await _post(
        http, url, offer, {**OFFER_HEADERS, "Authorization": "Bearer x.y.z"}
    )
    assert status == 401

    keys = SigningKeys.load_or_create(sfu_server.data_dir)
    expired = keys.issue(identity="cam", room="room-e", ttl_s=60, now=time.time() - 3600)
    status, text, _ = await _post(
        http, url, offer, {**OFFER_HEADERS, "Authorization": f"Bearer {expired}"}
    )
    assert status == 401 and "expired" in text

    foreign_key_dir = Path(sfu_server.data_dir.parent / "foreign-keys")
    forged = SigningKeys.load_or_create(foreign_key_dir).issue(identity="cam", room="room-e")
    status, _, _ = await _post(
        http, url, offer, {**OFFER_HEADERS, "Authorization": f"Bearer {forged}"}
    )
    assert status == 401

    other_room = sfu_server.token("elsewhere", "cam")
    status, text, _ = await _post(
        http, url, offer, {**OFFER_HEADERS, "Authorization": f"Bearer {other_room}"}
    )
    assert status == 403 and "room" in text

    viewer = sfu_server.token("room-e", "tv", role="viewer")
    status, _, _ = await _post(
        http, url, offer, {**OFFER_HEADERS, "Authorization": f"Bearer {viewer}"}
    )
    assert status == 403

    auth = {"Authorization": f"Bearer {good}"}
    status, text, _ = await _post(http, url, offer, {"Content-Type": "text/plain", **auth})
    assert status == 415

    status, text, _ = await _post(http, url, "not sdp at all", {**OFFER_HEADERS, **auth})
    assert status == 400 and "v=0" in text

    no_ice = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=setup:actpass\r\n"
    )
    status, text, _ = await _post(http, url, no_ice, {**OFFER_HEADERS, **auth})
    assert status == 400 and "ICE" in text

    async with http.delete(base(sfu_server) + "resource/does-not-exist") as resp:
        assert resp.status == 404


async def test_whip_cors_preflight_exposes_location(
    sfu_server: SfuServer, http: aiohttp.ClientSession
) -> None:
    headers = {
        "Origin": "https://elsewhere.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with http.options(base(sfu_server) + "whip/r", headers=headers) as resp:
        assert resp.status == 204
        assert "Location" in resp.headers["Access-Control-Expose-Headers"]
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert "authorization" in resp.headers["Access-Control-Allow-Headers"].lower()
