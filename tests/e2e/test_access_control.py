"""Grants and tenants against a real server: WebSocket, WHIP and WHEP (aiortc peers)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack

from tests.e2e.harness import SfuServer
from tests.e2e.test_ws_protocol import Ws, connect, join, recv
from tests.peers import (
    PatternVideoTrack,
    wait_for,
    whep_subscribe,
    whip_publish,
)

OFFER_HEADERS = {"Content-Type": "application/sdp"}
EVERYTHING_BUT = {
    grant: [
        g for g in ("publish:audio", "publish:video", "publish:screen", "subscribe") if g != grant
    ]
    for grant in ("publish:audio", "publish:video", "publish:screen", "subscribe")
}


async def sending_offer(kinds: list[str]) -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind in kinds:
        track = AudioStreamTrack() if kind == "audio" else PatternVideoTrack()
        pc.addTransceiver(track, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def offer_replies(ws: Ws, message: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """Send an offer; return the errors before the answer, and the answer (None: refused)."""
    await ws.send_json({"type": "offer", **message})
    await ws.send_json({"type": "ping"})
    errors: list[dict[str, Any]] = []
    while True:
        reply = await recv(ws)
        if reply["type"] == "error":
            errors.append(reply)
        elif reply["type"] in ("answer", "pong"):
            return errors, reply if reply["type"] == "answer" else None


# --- WebSocket: publish and subscribe grants ---


@pytest.mark.parametrize(
    ("kind", "source", "grant"),
    [
        ("audio", "camera", "publish:audio"),
        ("video", "camera", "publish:video"),
        ("video", "screen", "publish:screen"),
    ],
)
async def test_ws_publish_without_its_grant_is_forbidden_naming_it(
    http: aiohttp.ClientSession, sfu_server: SfuServer, kind: str, source: str, grant: str
) -> None:
    room = f"g-{kind}-{source}"
    mids = {"0": {"publish": source, "source": source}}
    pc, sdp = await sending_offer([kind])
    try:
        # With every grant but the one needed: refused, and the grant is named.
        ws = await connect(http, sfu_server)
        welcome = await join(ws, sfu_server.token(room, "lacks", grants=EVERYTHING_BUT[grant]))
        assert grant not in welcome["grants"]
        errors, answer = await offer_replies(ws, {"sdp": sdp, "mids": mids})
        assert [(e["code"], e["request"]) for e in errors] == [("forbidden", "offer")]
        assert grant in errors[0]["message"]
        assert answer is not None and answer["published"] == []
        assert "a=inactive" in answer["sdp"]
        await ws.close()
        # With only that grant: published.
        ws = await connect(http, sfu_server)
        await join(ws, sfu_server.token(room, "has", grants=[grant]))
        errors, answer = await offer_replies(ws, {"sdp": sdp, "mids": mids})
        assert errors == [] and answer is not None
        assert [t["kind"] for t in answer["published"]] == [kind]
        await ws.close()
    finally:
        await pc.close()


async def test_ws_only_the_unauthorized_kind_is_refused(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    pc, sdp = await sending_offer(["audio", "video"])
    try:
        ws = await connect(http, sfu_server)
        await join(ws, sfu_server.token("g-mixed", "mic-only", grants=["publish:audio"]))
        errors, answer = await offer_replies(ws, {"sdp": sdp})
        assert len(errors) == 1 and "publish:video" in errors[0]["message"]
        assert answer is not None and [t["kind"] for t in answer["published"]] == ["audio"]
        await ws.close()
    finally:
        await pc.close()


async def test_ws_subscribe_without_grant_is_forbidden(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    message = {"sdp": pc.localDescription.sdp, "mids": {"0": {"subscribe": "tNoSuch"}}}
    try:
        ws = await connect(http, sfu_server)
        await join(ws, sfu_server.token("g-sub", "pub", grants=["publish:video"]))
        errors, answer = await offer_replies(ws, message)
        assert [e["code"] for e in errors] == ["forbidden"]
        assert "subscribe" in errors[0]["message"] and answer is not None
        await ws.close()
        # With the grant the same offer reaches the media plane (which knows no such track).
        ws = await connect(http, sfu_server)
        await join(ws, sfu_server.token("g-sub", "sub", grants=["subscribe"]))
        errors, _ = await offer_replies(ws, message)
        assert [e["code"] for e in errors] == ["unknown_track"]
        await ws.close()
    finally:
        await pc.close()


async def test_ws_unknown_source_is_bad_message(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    ws = await connect(http, sfu_server)
    await join(ws, sfu_server.token("g-src", "a"))
    for mids in (
        {"0": {"publish": "x", "source": "window"}},
        {"0": {"subscribe": "t", "source": "screen"}},
    ):
        errors, answer = await offer_replies(ws, {"sdp": "v=0\r\n", "mids": mids})
        assert [e["code"] for e in errors] == ["bad_message"] and answer is None
    await ws.close()


# --- WHIP / WHEP ---


async def _post(http: aiohttp.ClientSession, url: str, sdp: str, token: str) -> tuple[int, str]:
    headers = {**OFFER_HEADERS, "Authorization": f"Bearer {token}"}
    async with http.post(url, data=sdp, headers=headers) as resp:
        return resp.status, await resp.text()


@pytest.mark.parametrize("missing", ["publish:audio", "publish:video"])
async def test_whip_needs_the_grant_of_each_kind_it_sends(
    http: aiohttp.ClientSession, sfu_server: SfuServer, missing: str
) -> None:
    url = f"{sfu_server.base_url}/whip/g-whip"
    pc, sdp = await sending_offer(["audio", "video"])
    try:
        token = sfu_server.token("g-whip", "enc", grants=EVERYTHING_BUT[missing])
        status, text = await _post(http, url, sdp, token)
        assert status == 403 and text.strip() == f"token does not grant {missing}"
    finally:
        await pc.close()
    # Sending only the kind it may: accepted.
    kind = "video" if missing == "publish:audio" else "audio"
    pub = await whip_publish(
        http,
        sfu_server.base_url + "/",
        "g-whip",
        sfu_server.token("g-whip", f"enc-{kind}", grants=EVERYTHING_BUT[missing]),
        tracks=[AudioStreamTrack() if kind == "audio" else PatternVideoTrack()],
    )
    await pub.close()


async def test_whip_without_any_publish_grant_is_refused_before_the_offer_is_read(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    token = sfu_server.token("g-whip2", "viewer", grants=["subscribe", "publish:screen"])
    status, text = await _post(http, f"{sfu_server.base_url}/whip/g-whip2", "garbage", token)
    assert status == 403 and "publish:audio or publish:video" in text


async def test_whep_needs_subscribe(http: aiohttp.ClientSession, sfu_server: SfuServer) -> None:
    url = f"{sfu_server.base_url}/whep/g-whep"
    token = sfu_server.token("g-whep", "tv", grants=["publish:audio", "publish:video"])
    status, text = await _post(http, url, "v=0\r\n", token)
    assert status == 403 and text.strip() == "token does not grant subscribe"
    status, _ = await _post(http, url, "v=0\r\n", sfu_server.token("g-whep", "tv", "viewer"))
    assert status == 400  # past authorization: the offer itself is bad


# --- tenants ---


async def test_identical_room_names_in_two_tenants_never_meet(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    from signaling.audit import AuditPaths, export

    room = "lobby"
    alice = await connect(http, sfu_server)
    assert (await join(alice, sfu_server.token(room, "alice", tenant="ta")))["tenant"] == "ta"
    # Same room name, another tenant.
    bob = await connect(http, sfu_server)
    welcome = await join(bob, sfu_server.token(room, "bob", tenant="tb"))
    assert welcome["tenant"] == "tb" and welcome["room"] == room
    assert welcome["participants"] == []
    pc, sdp = await sending_offer(["audio", "video"])
    errors, answer = await offer_replies(bob, {"sdp": sdp})
    assert errors == [] and answer is not None and len(answer["published"]) == 2
    # Media published in tenant B reaches no WHEP viewer of tenant A ...
    viewer_a = await whep_subscribe(
        http, sfu_server.base_url + "/", room, sfu_server.token(room, "tv", "viewer", tenant="ta")
    )
    pub_b = await whip_publish(
        http, sfu_server.base_url + "/", room, sfu_server.token(room, "cam-b", tenant="tb")
    )
    try:
        viewer_b = await whep_subscribe(
            http,
            sfu_server.base_url + "/",
            room,
            sfu_server.token(room, "tv-b", "viewer", tenant="tb"),
        )
        try:
            got_b = viewer_b.received.frames
            assert await wait_for(lambda: got_b["video"] > 10 and got_b["audio"] > 10, 20), got_b
        finally:
            await viewer_b.close(http)
        assert viewer_a.received.frames == {"audio": 0, "video": 0}
        # ... until tenant A has a publisher of its own.
        pub_a = await whip_publish(
            http, sfu_server.base_url + "/", room, sfu_server.token(room, "cam-a", tenant="ta")
        )
        try:
            got_a = viewer_a.received.frames
            assert await wait_for(lambda: got_a["video"] > 10, 20), got_a
        finally:
            await pub_a.close()
    finally:
        await viewer_a.close(http)
        await pub_b.close()
        await pc.close()
    # A second tenant-A member sees alice only, and alice hears of carol only.
    carol = await connect(http, sfu_server)
    welcome = await join(carol, sfu_server.token(room, "carol", tenant="ta"))
    assert [p["identity"] for p in welcome["participants"]] == ["alice"]
    seen: list[dict[str, Any]] = []
    with pytest.raises(TimeoutError):
        while True:
            seen.append(await recv(alice, timeout=1.0))
    about = {(m.get("participant") or m.get("track") or m)["identity"] for m in seen}
    # Alice heard of her own tenant's publisher and of carol, of nobody in tenant B.
    assert about == {"cam-a", "carol"}, seen
    for ws in (alice, bob, carol):
        await ws.close()
    # The audit log names the tenant with the room.
    paths = AuditPaths.in_data_dir(sfu_server.data_dir)
    deadline = time.monotonic() + 10
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        records = [r for r in export(paths) if r["room"] == room]
        if {("join", "bob", "tb"), ("join", "carol", "ta")} <= {
            (r["event"], r["actor"], r["detail"].get("tenant")) for r in records
        }:
            break
        await asyncio.sleep(0.2)
    assert records and all(r["detail"].get("tenant") in ("ta", "tb") for r in records)
    assert {("join", "bob", "tb"), ("join", "carol", "ta")} <= {
        (r["event"], r["actor"], r["detail"].get("tenant")) for r in records
    }


async def test_tenant_signing_key_is_picked_up_live_and_confined_to_its_tenant(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    import jwt

    from signaling.audit import AuditPaths, export
    from signaling.keystore import KeyStore
    from tests.e2e.test_ws_protocol import expect_closed

    # `sfu keys rotate --tenant` while the server runs: no restart.
    store = KeyStore(sfu_server.data_dir, "tk")
    entry = store.rotate(time.time(), 60, "EdDSA")
    private = store.private_key(entry)
    now = int(time.time())
    await asyncio.sleep(1.2)  # the server looks at the key indexes at most once a second

    def signed(tenant: str) -> str:
        claims = {"iss": "sfu", "sub": "idp-user", "room": "kr", "tenant": tenant,
                  "grants": ["subscribe"], "iat": now, "nbf": now, "exp": now + 60,
                  "jti": f"tk-{tenant}"}  # fmt: skip
        return jwt.encode(claims, private, algorithm="EdDSA", headers={"kid": entry.kid})

    ws = await connect(http, sfu_server)
    welcome = await join(ws, signed("tk"))
    assert welcome["type"] == "joined" and welcome["tenant"] == "tk", welcome
    await ws.close()
    # The same key claiming another tenant is refused like a forgery.
    ws = await connect(http, sfu_server)
    reply = await join(ws, signed("other"))
    assert reply["code"] == "unauthorized" and "another tenant" in reply["message"], reply
    await expect_closed(ws, 4401)
    # The server audited the new tenant key when it loaded it.
    paths = AuditPaths.in_data_dir(sfu_server.data_dir)
    changed: list[dict[str, Any]] = []
    for _ in range(50):
        changed = [r for r in export(paths) if r["event"] == "keys_changed"]
        if any(r["detail"].get("tenant") == "tk" for r in changed):
            break
        await asyncio.sleep(0.2)
    assert any(
        r["detail"].get("tenant") == "tk" and r["detail"].get("current") == entry.kid
        for r in changed
    ), changed
