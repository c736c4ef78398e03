"""Session lifecycle on the media plane: silence timeout, fingerprint mismatch, rooms
that refuse BUNDLE. These need a server with its own settings."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from tests.e2e.harness import SfuServer, free_tcp_port, free_udp_port
from tests.peers import (
    PatternVideoTrack,
    client_ssl,
    use_loopback_only,
    wait_for,
    whep_subscribe,
    whip_publish,
)

MEDIA_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SfuServer]:
    data_dir = tmp_path_factory.mktemp("sfu-strict")
    (data_dir / "rooms.toml").write_text('[rooms."unbundled"]\nallow_bundle = false\n')
    server = SfuServer(
        data_dir=data_dir,
        port=free_tcp_port(),
        media_port=free_udp_port(),
        log_path=data_dir / "server.log",
        extra_args=["--media-timeout", str(MEDIA_TIMEOUT_S)],
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
async def http(strict_server: SfuServer) -> AsyncIterator[aiohttp.ClientSession]:
    use_loopback_only()
    connector = aiohttp.TCPConnector(ssl=client_ssl(strict_server.cert_path))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def _offer(tracks: int = 2) -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    if tracks > 1:
        pc.addTransceiver(PatternVideoTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def test_peer_that_never_connects_is_removed_and_others_are_told(
    strict_server: SfuServer, http: aiohttp.ClientSession
) -> None:
    base = strict_server.base_url + "/"
    ws = await http.ws_connect(strict_server.base_url + "/ws")
    await ws.send_json({"type": "join", "version": 1, "token": strict_server.token("quiet", "w")})
    assert json.loads((await ws.receive(timeout=5)).data)["type"] == "joined"
    pc, sdp = await _offer()
    await pc.close()  # the offer is posted, but nobody will ever do ICE for it
    headers = {
        "Authorization": f"Bearer {strict_server.token('quiet', 'ghost')}",
        "Content-Type": "application/sdp",
    }
    async with http.post(base + "whip/quiet", data=sdp, headers=headers) as resp:
        assert resp.status == 201
        location = resp.headers["Location"]
    seen = []
    while not any(m.get("type") == "participant_left" for m in seen):
        msg = await ws.receive(timeout=MEDIA_TIMEOUT_S + 5)
        seen.append(json.loads(msg.data))
    left = next(m for m in seen if m["type"] == "participant_left")
    assert left["identity"] == "ghost" and "no ICE/DTLS" in left["reason"]
    async with http.delete(base + location.lstrip("/")) as resp:
        assert resp.status == 404  # the session is gone
    await ws.close()


async def test_silent_publisher_is_removed_and_viewer_stops(
    strict_server: SfuServer, http: aiohttp.ClientSession
) -> None:
    base = strict_server.base_url + "/"
    pub = await whip_publish(http, base, "silence", strict_server.token("silence", "cam"))
    sub = await whep_subscribe(
        http, base, "silence", strict_server.token("silence", "tv", role="viewer")
    )
    try:
        assert await wait_for(lambda: sub.received.frames["video"] > 10, 20)
        # Cut the publisher's UDP without any goodbye (no DTLS close_notify, no RTCP BYE).
        for transceiver in pub.pc.getTransceivers():
            ice = transceiver.sender.transport.transport
            for conn in list(ice._connection._protocols):
                conn.transport.close()
        await asyncio.sleep(MEDIA_TIMEOUT_S + 2.5)
        async with http.delete(pub.resource_url) as resp:
            assert resp.status == 404  # removed by the server
        log = strict_server.log_tail()
        assert re.search(r"session closed session=\w+ reason=silent for 3 s", log), log[-2000:]
        frozen = sub.received.frames["video"]
        await asyncio.sleep(1)
        assert sub.received.frames["video"] <= frozen + 2
    finally:
        await sub.close(http)
        await pub.pc.close()


async def test_dtls_certificate_not_matching_the_sdp_fingerprint_ends_the_session(
    strict_server: SfuServer, http: aiohttp.ClientSession
) -> None:
    pc, sdp = await _offer(tracks=1)
    # Claim a certificate we do not have: the handshake must be refused after ICE.
    forged = re.sub(
        r"a=fingerprint:(sha-\d+) ([0-9A-Fa-f:]+)",
        lambda m: f"a=fingerprint:{m.group(1)} " + ":".join(["AB"] * (len(m.group(2)) // 3 + 1)),
        sdp,
    )
    assert forged.count("AB:AB") >= 1 and forged != sdp
    headers = {
        "Authorization": f"Bearer {strict_server.token('fp', 'mallory')}",
        "Content-Type": "application/sdp",
    }
    async with http.post(strict_server.base_url + "/whip/fp", data=forged, headers=headers) as resp:
        assert resp.status == 201
        answer = await resp.text()
        location = resp.headers["Location"]
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    try:
        assert await wait_for(
            lambda: "does not match the SDP fingerprint" in strict_server.log_tail(), 15
        ), strict_server.log_tail()[-2000:]
        async with http.delete(strict_server.base_url + location) as resp:
            assert resp.status == 404
    finally:
        await pc.close()


async def test_room_that_refuses_bundle_rejects_bundled_whip_but_serves_browsers_style(
    strict_server: SfuServer, http: aiohttp.ClientSession
) -> None:
    pc, sdp = await _offer()
    await pc.close()
    # Make the offer insist on BUNDLE as WHIP tools do (max-bundle).
    sections = sdp.split("m=")
    sections[2] = sections[2].replace("a=mid:1", "a=mid:1\r\na=bundle-only", 1)
    bundled = "m=".join(sections)
    headers = {
        "Authorization": f"Bearer {strict_server.token('unbundled', 'tool')}",
        "Content-Type": "application/sdp",
    }
    base = strict_server.base_url + "/whip/"
    async with http.post(base + "unbundled", data=bundled, headers=headers) as resp:
        assert resp.status == 403
        assert "bundle" in (await resp.text()).lower()
    # The same client without bundle-only gets one transport per m-section.
    pub = await whip_publish(
        http, strict_server.base_url + "/", "unbundled", headers["Authorization"][7:]
    )
    try:
        ufrags = set(re.findall(r"a=ice-ufrag:(\S+)", pub.answer))
        assert len(ufrags) == 2 and "a=group:BUNDLE" not in pub.answer
    finally:
        await pub.close(http)
