"""The WebSocket signaling protocol against a real server: errors, auth, room events."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from signaling.tokens import SigningKeys
from tests.e2e.harness import SfuServer

Ws = aiohttp.ClientWebSocketResponse


async def connect(http: aiohttp.ClientSession, server: SfuServer) -> Ws:
    return await http.ws_connect(
        server.base_url + "/ws", timeout=aiohttp.ClientWSTimeout(ws_close=5)
    )


async def recv(ws: Ws, timeout: float = 5.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, ws.close_code)
    value: dict[str, Any] = json.loads(msg.data)
    return value


async def recv_type(ws: Ws, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        message = await recv(ws, max(0.1, deadline - time.monotonic()))
        if message["type"] == kind:
            return message


async def expect_closed(ws: Ws, code: int) -> None:
    msg = await ws.receive(timeout=5)
    while msg.type == aiohttp.WSMsgType.TEXT:
        msg = await ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == code


async def join(ws: Ws, token: str, **extra: Any) -> dict[str, Any]:
    await ws.send_json({"type": "join", "version": 1, "token": token, **extra})
    return await recv(ws)


async def test_malformed_messages_get_errors_and_the_connection_stays_usable(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    ws = await connect(http, sfu_server)
    cases: list[tuple[str, str]] = [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_message"),
        ('{"no_type": 1}', "bad_message"),
        ('{"type": "teleport"}', "unknown_type"),
        ('{"type": "offer", "sdp": "v=0"}', "not_joined"),
        ('{"type": "join", "token": "x"}', "bad_message"),
        ('{"type": "join", "version": 99, "token": "x"}', "unsupported_version"),
        (json.dumps({"type": "ping", "pad": "x" * 270_000}), "too_large"),
    ]
    for text, code in cases:
        await ws.send_str(text)
        reply = await recv(ws)
        assert reply["type"] == "error" and reply["code"] == code, (text[:40], reply)
        assert reply["message"]
    await ws.send_json({"type": "ping"})
    assert (await recv(ws))["type"] == "pong"
    welcome = await join(ws, sfu_server.token("ws-a", "alice"))
    assert welcome["type"] == "joined" and welcome["identity"] == "alice"
    await ws.send_json({"type": "offer"})
    assert (await recv(ws))["code"] == "bad_message"
    await ws.send_json({"type": "offer", "sdp": "garbage"})
    bad = await recv(ws)
    assert bad["code"] == "bad_sdp" and bad["request"] == "offer"
    await ws.send_json({"type": "join", "version": 1, "token": "x"})
    assert (await recv(ws))["code"] == "already_joined"
    await ws.close()


@pytest.mark.parametrize("which", ["garbage", "expired", "foreign_key"])
async def test_bad_token_closes_socket_with_4401(
    http: aiohttp.ClientSession, sfu_server: SfuServer, which: str
) -> None:
    if which == "garbage":
        token = "not-a-token"
    elif which == "expired":
        keys = SigningKeys.load_or_create(sfu_server.data_dir)
        token = keys.issue(identity="a", room="r", ttl_s=60, now=time.time() - 3600)
    else:
        other = SigningKeys.load_or_create(sfu_server.data_dir.parent / f"other-{which}")
        token = other.issue(identity="a", room="r")
    ws = await connect(http, sfu_server)
    reply = await join(ws, token)
    assert reply["type"] == "error" and reply["code"] == "unauthorized"
    await expect_closed(ws, 4401)


async def test_token_for_another_room_closes_with_4403(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    ws = await connect(http, sfu_server)
    reply = await join(ws, sfu_server.token("room-x", "a"), room="room-y")
    assert reply["code"] == "forbidden" and "room" in reply["message"]
    await expect_closed(ws, 4403)


async def test_others_are_told_of_join_and_of_a_dropped_connection(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    alice = await connect(http, sfu_server)
    assert (await join(alice, sfu_server.token("ws-b", "alice")))["participants"] == []
    bob = await connect(http, sfu_server)
    welcome = await join(bob, sfu_server.token("ws-b", "bob"))
    assert [p["identity"] for p in welcome["participants"]] == ["alice"]
    joined = await recv_type(alice, "participant_joined")
    assert joined["participant"]["identity"] == "bob"
    # Bob's TCP connection is torn down without a WebSocket close.
    connection = bob._response.connection  # type: ignore[union-attr]
    assert connection is not None and connection.transport is not None
    connection.transport.abort()
    left = await recv_type(alice, "participant_left", timeout=10)
    assert left["identity"] == "bob"
    await alice.close()


async def test_a_client_that_stops_answering_pings_is_removed(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    alice = await connect(http, sfu_server)
    await join(alice, sfu_server.token("ws-d", "alice"))
    # autoping off and never reading: the server's pings go unanswered.
    ghost = await http.ws_connect(sfu_server.base_url + "/ws", autoping=False)
    await ghost.send_json(
        {"type": "join", "version": 1, "token": sfu_server.token("ws-d", "ghost")}
    )
    assert (await recv_type(alice, "participant_joined"))["participant"]["identity"] == "ghost"
    left = await recv_type(alice, "participant_left", timeout=25)
    assert left["identity"] == "ghost"
    await ghost.close()
    await alice.close()


async def test_viewer_offer_to_publish_is_refused_but_connection_lives(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.mediastreams import AudioStreamTrack

    from tests.peers import use_loopback_only

    use_loopback_only()
    ws = await connect(http, sfu_server)
    await join(ws, sfu_server.token("ws-c", "v", role="viewer"))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    await ws.send_json({"type": "offer", "sdp": pc.localDescription.sdp})
    error = await recv(ws)
    assert error["code"] == "forbidden" and error["request"] == "offer"
    answer = await recv(ws)
    assert answer["type"] == "answer" and answer["published"] == []
    assert "a=inactive" in answer["sdp"]
    await pc.close()
    await ws.send_json({"type": "ping"})
    assert (await recv(ws))["type"] == "pong"
    await ws.close()


async def test_joins_leaves_and_refused_tokens_reach_the_audit_log(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    from signaling.audit import AuditPaths, export

    intruder = await connect(http, sfu_server)
    await join(intruder, "forged-token")
    await expect_closed(intruder, 4401)
    member = await connect(http, sfu_server)
    await join(member, sfu_server.token("ws-audit", "auditor"))
    await member.send_json({"type": "leave"})
    await expect_closed(member, 1000)
    paths = AuditPaths.in_data_dir(sfu_server.data_dir)
    deadline = time.monotonic() + 10
    events: list[tuple[str, str]] = []
    while time.monotonic() < deadline:
        records = list(export(paths))
        events = [(r["event"], r["actor"]) for r in records if r["room"] in ("", "ws-audit")]
        if ("leave", "auditor") in events:
            break
        await asyncio.sleep(0.2)
    assert ("auth_success", "auditor") in events and ("join", "auditor") in events
    assert ("leave", "auditor") in events
    failures = [r for r in records if r["event"] == "auth_failure"]
    assert any(
        r["detail"]["channel"] == "ws" and r["detail"]["remote"] == "127.0.0.1" for r in failures
    )


async def test_connection_stats_needs_a_join_and_then_describes_this_connection(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    ws = await connect(http, sfu_server)
    await ws.send_json({"type": "connection_stats"})
    refused = await recv(ws)
    assert (refused["type"], refused["code"], refused["request"]) == (
        "error",
        "not_joined",
        "connection_stats",
    )
    assert refused["message"]
    await join(ws, sfu_server.token("ws-stats", "alice"))
    # Unknown fields are ignored, as everywhere in version 1.
    await ws.send_json({"type": "connection_stats", "verbose": True})
    stats = await recv(ws)
    assert stats["type"] == "connection_stats" and stats["identity"] == "alice"
    signaling = stats["signaling"]
    assert signaling["tls_version"] == "TLSv1.3" and signaling["remote"] == "127.0.0.1"
    assert signaling["tls_cipher"].startswith("TLS_") and "GCM" in signaling["tls_cipher"]
    assert stats["transports"] == []  # no offer yet, so no media transport
    await ws.close()


async def test_connection_stats_show_an_aiortc_peers_transport_as_the_server_sees_it(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import AudioStreamTrack

    from tests.peers import use_loopback_only, wait_for

    use_loopback_only()
    ws = await connect(http, sfu_server)
    await join(ws, sfu_server.token("ws-stats-media", "pat"))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        await ws.send_json(
            {"type": "offer", "sdp": pc.localDescription.sdp, "mids": {"0": {"publish": "mic"}}}
        )
        answer = await recv_type(ws, "answer")
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        assert await wait_for(lambda: pc.connectionState == "connected", timeout_s=10)

        async def ask() -> dict[str, Any]:
            await ws.send_json({"type": "connection_stats"})
            return await recv_type(ws, "connection_stats")

        deadline = time.monotonic() + 10
        stats = await ask()
        while not (
            stats["transports"] and stats["transports"][0]["published"][0]["packets_received"]
        ):
            assert time.monotonic() < deadline, stats
            await asyncio.sleep(0.2)
            stats = await ask()
        (transport,) = stats["transports"]
        assert transport["mids"] == ["0"] and transport["carries"] == "media"
        assert transport["dtls_state"] == "connected" and transport["dtls_version"] == "DTLSv1.2"
        assert transport["dtls_cipher"].startswith("ECDHE-ECDSA-")
        assert transport["srtp_profile"] in ("AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80")
        # The pair: the server's media port, and the port aiortc's ICE actually uses.
        local_ports = {
            c.port for c in pc.getTransceivers()[0].sender.transport.transport.iceGatherer
            .getLocalCandidates()
        }  # fmt: skip
        assert transport["ice"]["local"] == {"address": "127.0.0.1", "port": sfu_server.media_port}
        assert transport["ice"]["remote"]["address"] == "127.0.0.1"
        assert transport["ice"]["remote"]["port"] in local_ports
        (track,) = transport["published"]
        assert (track["kind"], track["label"], track["codec"]) == ("audio", "mic", "OPUS")
        assert track["packets_received"] > 0 and track["packets_lost"] >= 0
        assert track["jitter_ms"] >= 0 and transport["received"] == []
    finally:
        await pc.close()
        await ws.close()
