"""Live moderation and revocation against a real server: the admin API changes grants,
mutes, removes, closes rooms and revokes tokens on live WebSocket, WHIP and WHEP
sessions, measured on the packets a real aiortc subscriber receives."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from signaling.tokens import ROLE_GRANTS, SigningKeys
from tests.e2e.harness import REPO_ROOT, SfuServer, free_tcp_port, free_udp_port
from tests.e2e.test_ws_protocol import Ws, connect, expect_closed, join, recv_type
from tests.peers import (
    PatternVideoTrack,
    WebRtcClient,
    wait_for,
    whep_subscribe,
    whip_publish,
)

PARTICIPANT = sorted(ROLE_GRANTS["participant"])
SILENCE_BUDGET_MS = 100.0


@pytest.fixture(scope="module")
def sfu_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SfuServer]:
    """Its own server: these tests send many admin requests and bad tokens on purpose,
    so the per-address request limits are raised out of the way."""
    data_dir: Path = tmp_path_factory.mktemp("sfu-moderation")
    (data_dir / "limits.toml").write_text(
        "[signaling]\nrequests_per_s = 1000\nrequests_burst = 1000\nauth_failures = 1000\n"
    )
    server = SfuServer(
        data_dir=data_dir,
        port=free_tcp_port(),
        media_port=free_udp_port(),
        log_path=data_dir / "server.log",
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def keys(sfu_server: SfuServer) -> SigningKeys:
    """The server's signing keys, read from its data directory (tokens minted in-process)."""
    return SigningKeys.load_or_create(sfu_server.data_dir)


def mint(
    keys: SigningKeys, room: str, identity: str, grants: list[str], tenant: str = "acme"
) -> str:
    return keys.issue(identity=identity, room=room, grants=grants, tenant=tenant, ttl_s=600)


async def api(
    http: aiohttp.ClientSession,
    server: SfuServer,
    token: str | None,
    method: str,
    path: str,
    body: Any = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None:
        headers["Content-Type"] = "application/json"
    async with http.request(
        method, server.base_url + path, data=data, headers=headers,
        timeout=aiohttp.ClientTimeout(total=10),
    ) as response:  # fmt: skip
        text = await response.text()
        if response.content_type == "application/json":
            return response.status, json.loads(text)
        return response.status, text


class PacketWatch:
    """Arrival times of the RTP packets an aiortc peer receives, per kind (before any
    jitter buffer or decoder)."""

    def __init__(self, client: WebRtcClient) -> None:
        self.times: dict[str, list[float]] = {"audio": [], "video": []}
        for transceiver in client.pc.getTransceivers():
            receiver, times = transceiver.receiver, self.times[transceiver.kind]
            original = receiver._handle_rtp_packet

            async def handle(packet: Any, arrival_time_ms: int, original: Any = original,
                             times: list[float] = times) -> None:  # fmt: skip
                times.append(time.monotonic())
                await original(packet, arrival_time_ms)

            receiver._handle_rtp_packet = handle

    def after(self, kind: str, moment: float) -> list[float]:
        return [t for t in self.times[kind] if t > moment]


async def publish_and_watch(
    http: aiohttp.ClientSession, server: SfuServer, keys: SigningKeys, room: str
) -> tuple[WebRtcClient, WebRtcClient, PacketWatch]:
    """alice publishes audio and video over WHIP; bob watches over WHEP until both flow."""
    publisher = await whip_publish(
        http, server.base_url + "/", room, mint(keys, room, "alice", PARTICIPANT)
    )
    viewer = await whep_subscribe(
        http, server.base_url + "/", room, mint(keys, room, "bob", ["subscribe"])
    )
    watch = PacketWatch(viewer)
    flowing = await wait_for(
        lambda: len(watch.times["video"]) > 30 and len(watch.times["audio"]) > 30, 20
    )
    assert flowing, f"media never flowed: { {k: len(v) for k, v in watch.times.items()} }"
    return publisher, viewer, watch


async def close_all(http: aiohttp.ClientSession, *clients: WebRtcClient) -> None:
    for client in clients:
        await client.close(http)


def admin_token(keys: SigningKeys, tenant: str = "acme") -> str:
    return mint(keys, "ops", f"admin-{tenant}", ["admin"], tenant)


# --- grants on live media ---


async def test_patch_removing_publish_video_silences_the_subscriber_within_100_ms(
    http: aiohttp.ClientSession, sfu_server: SfuServer, keys: SigningKeys
) -> None:
    room = "mod-silence"
    publisher, viewer, watch = await publish_and_watch(http, sfu_server, keys, room)
    try:
        grants = [g for g in PARTICIPANT if g != "publish:video"]
        sent = time.monotonic()
        status, body = await api(
            http, sfu_server, admin_token(keys), "PATCH",
            f"/admin/rooms/{room}/participants/alice", {"grants": grants},
        )  # fmt: skip
        answered = time.monotonic()
        assert status == 200, body
        assert body["grants"] == grants
        await asyncio.sleep(1.0)
        last_video = watch.times["video"][-1]
        silence_ms = (last_video - answered) * 1000
        print(
            f"\nrevocation-to-silence: last video packet {silence_ms:.1f} ms after the PATCH "
            f"response ({(last_video - sent) * 1000:.1f} ms after the request was sent; "
            f"request took {(answered - sent) * 1000:.1f} ms)"
        )
        assert silence_ms < SILENCE_BUDGET_MS, (
            f"time from PATCH response to last video packet {silence_ms:.1f} ms"
        )
        # Audio was not touched: it keeps flowing.
        assert len(watch.after("audio", answered + 0.2)) > 10
        # Giving the grant back lets the video through again (from a keyframe).
        restored = time.monotonic()
        status, body = await api(
            http, sfu_server, admin_token(keys), "PATCH",
            f"/admin/rooms/{room}/participants/alice", {"grants": PARTICIPANT},
        )  # fmt: skip
        assert status == 200, body
        assert await wait_for(lambda: len(watch.after("video", restored)) > 10, 10)
    finally:
        await close_all(http, publisher, viewer)


async def test_patch_removing_subscribe_stops_what_the_viewer_receives(
    http: aiohttp.ClientSession, sfu_server: SfuServer, keys: SigningKeys
) -> None:
    room = "mod-unsubscribe"
    publisher, viewer, watch = await publish_and_watch(http, sfu_server, keys, room)
    try:
        status, body = await api(
            http, sfu_server, admin_token(keys), "PATCH",
            f"/admin/rooms/{room}/participants/bob", {"grants": []},
        )  # fmt: skip
        answered = time.monotonic()
        assert status == 200, body
        await asyncio.sleep(1.0)
        for kind in ("audio", "video"):
            late = watch.after(kind, answered + SILENCE_BUDGET_MS / 1000)
            assert late == [], f"{kind}: {len(late)} packets more than 100 ms after the PATCH"
    finally:
        await close_all(http, publisher, viewer)


async def test_ws_participant_is_told_its_grants_and_they_bind_its_next_offer(
    http: aiohttp.ClientSession, sfu_server: SfuServer, keys: SigningKeys
) -> None:
    room = "mod-ws-grants"
    ws = await connect(http, sfu_server)
    joined = await join(ws, mint(keys, room, "carol", PARTICIPANT))
    assert joined["type"] == "joined"
    status, _ = await api(
        http, sfu_server, admin_token(keys), "PATCH",
        f"/admin/rooms/{room}/participants/carol", {"grants": ["publish:audio", "subscribe"]},
    )  # fmt: skip
    assert status == 200
    changed = await recv_type(ws, "grants_changed")
    assert changed["grants"] == ["publish:audio", "subscribe"]
    # The token still says publish:video; the effective grants say no.
    from tests.e2e.test_access_control import offer_replies, sending_offer

    pc, sdp = await sending_offer(["video"])
    try:
        errors, answer = await offer_replies(ws, {"sdp": sdp})
    finally:
        await pc.close()
    assert answer is not None
    assert [e["code"] for e in errors] == ["forbidden"]
    assert "publish:video" in errors[0]["message"]
    await ws.close()


# --- mute, remove, close ---


async def test_mute_stops_video_at_once_tells_the_room_and_unmute_resumes_it(
    http: aiohttp.ClientSession, sfu_server: SfuServer, keys: SigningKeys
) -> None:
    room = "mod-mute"
    publisher, viewer, watch = await publish_and_watch(http, sfu_server, keys, room)
    observer = await connect(http, sfu_server)
    assert (await join(observer, mint(keys, room, "dave", ["subscribe"])))["type"] == "joined"
    path = f"/admin/rooms/{room}/participants/alice/mute"
    try:
        status, body = await api(
            http, sfu_server, admin_token(keys), "POST", path, {"kind": "video", "muted": True}
        )
        answered = time.monotonic()
        assert status == 200, body
        assert body["muted"] == ["video"]
        tracks = body["sessions"][0]["tracks"]
        assert {t["kind"]: t["muted"] for t in tracks} == {"audio": False, "video": True}
        notice = await recv_type(observer, "track_muted")
        assert (notice["identity"], notice["kind"], notice["muted"]) == ("alice", "video", True)
        await asyncio.sleep(1.0)
        silence_ms = (watch.times["video"][-1] - answered) * 1000
        print(f"\nmute-to-silence: last video packet {silence_ms:.1f} ms after the response")
        assert silence_ms < SILENCE_BUDGET_MS
        assert len(watch.after("audio", answered + 0.2)) > 10
        resumed = time.monotonic()
        status, body = await api(
            http, sfu_server, admin_token(keys), "POST", path, {"kind": "video", "muted": False}
        )
        assert status == 200 and body["muted"] == []
        assert (await recv_type(observer, "track_muted"))["muted"] is False
        assert await wait_for(lambda: len(watch.after("video", resumed)) > 10, 10)
    finally:
        await observer.close()
        await close_all(http, publisher, viewer)


async def test_removing_a_participant_closes_it_and_tells_the_others(
    http: aiohttp.ClientSession, sfu_server: SfuServer, keys: SigningKeys
) -> None:
    room = "mod-remove"
    carol = await connect(http, sfu_server)
    dave = await connect(http, sfu_server)
    await join(carol, mint(keys, room, "carol", PARTICIPANT))
    await join(dave, mint(keys, room, "dave", PARTICIPANT))
    status, body = await api(
        http, sfu_server, admin_token(keys), "DELETE", f"/admin/rooms/{room}/participants/carol"
    )
    assert (status, body["sessions_closed"]) == (200, 1), body
    error = await recv_type(carol, "error")
    assert error["code"] == "session_closed" and "moderator" in error["message"]
    await expect_closed(carol, 4410)
    left = await recv_type(dave, "participant_left")
    assert left["identity"] == "carol" and left["reason"] == "removed by a moderator"
    status, body = await api(
        http, sfu_server, admin_token(keys), "GET", f"/admin/rooms/{room}/participants"
    )
    assert [p["identity"] for p in body["participants"]] == ["dave"]
    await dave.close()


async def test_closing_a_room_ends_websocket_and_whip_sessions(
    http: aiohttp.ClientSession, sfu_server: SfuServer, keys: SigningKeys
) -> None:
    room = "mod-close"
    carol = await connect(http, sfu_server)
    await join(carol, mint(keys, room, "carol", PARTICIPANT))
    publisher = await whip_publish(
        http, sfu_server.base_url + "/", room, mint(keys, room, "alice", PARTICIPANT),
        [PatternVideoTrack()],
    )  # fmt: skip
    try:
        status, body = await api(
            http, sfu_server, admin_token(keys), "DELETE", f"/admin/rooms/{room}"
        )
        assert (status, body["sessions_closed"]) == (200, 2), body
        assert (await recv_type(carol, "error"))["code"] == "session_closed"
        await expect_closed(carol, 4410)
        async with http.delete(publisher.resource_url) as response:
            assert response.status == 404  # the WHIP session is gone
        status, body = await api(
            http, sfu_server, admin_token(keys), "GET", f"/admin/rooms/{room}/participants"
        )
        assert (status, body["error"]) == (404, "not_found")
    finally:
        await publisher.close()


# --- revocation ---


@pytest.mark.parametrize("by", ["jti", "identity"])
async def test_revocation_closes_a_live_websocket_with_4401_and_refuses_the_token(
    http: aiohttp.ClientSession, sfu_server: SfuServer, keys: SigningKeys, by: str
) -> None:
    room = f"mod-revoke-ws-{by}"
    identity = f"eve-{by}"
    token = mint(keys, room, identity, PARTICIPANT)
    ws = await connect(http, sfu_server)
    assert (await join(ws, token))["type"] == "joined"
    target = {"jti": keys.verify(token).token_id} if by == "jti" else {"identity": identity}
    status, body = await api(
        http, sfu_server, admin_token(keys), "POST", "/admin/revocations", target
    )
    assert (status, body["sessions_closed"]) == (201, 1), body
    error = await recv_type(ws, "error")
    assert (error["code"], error["message"]) == ("unauthorized", "token revoked")
    await expect_closed(ws, 4401)
    again = await connect(http, sfu_server)
    refused = await join(again, token)
    assert refused["code"] == "unauthorized" and "revoked" in refused["message"]
    await expect_closed(again, 4401)


@pytest.mark.parametrize("by", ["jti", "identity"])
async def test_revocation_ends_a_live_whip_session_and_refuses_the_token(
    http: aiohttp.ClientSession, sfu_server: SfuServer, keys: SigningKeys, by: str
) -> None:
    room = f"mod-revoke-whip-{by}"
    identity = f"mallory-{by}"
    token = mint(keys, room, identity, PARTICIPANT)
    base = sfu_server.base_url + "/"
    publisher = await whip_publish(http, base, room, token, [PatternVideoTrack()])
    viewer = await whep_subscribe(
        http, base, room, mint(keys, room, "bob", ["subscribe"]), ("video",)
    )
    watch = PacketWatch(viewer)
    try:
        assert await wait_for(lambda: len(watch.times["video"]) > 20, 20)
        target = {"jti": keys.verify(token).token_id} if by == "jti" else {"identity": identity}
        status, body = await api(
            http, sfu_server, admin_token(keys), "POST", "/admin/revocations", target
        )
        answered = time.monotonic()
        assert (status, body["sessions_closed"]) == (201, 1), body
        async with http.delete(publisher.resource_url) as response:
            assert response.status == 404
        await asyncio.sleep(1.0)
        assert watch.after("video", answered + SILENCE_BUDGET_MS / 1000) == []
        assert await wait_for(lambda: publisher.pc.connectionState in ("closed", "failed"), 10)
        async with http.post(
            base + f"whip/{room}", data=publisher.answer,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"},
        ) as response:  # fmt: skip
            assert response.status == 401
            assert "revoked" in await response.text()
    finally:
        await close_all(http, publisher, viewer)


async def test_sfu_revoke_cli_reaches_a_running_server_within_a_second(
    http: aiohttp.ClientSession, sfu_server: SfuServer, keys: SigningKeys
) -> None:
    room = "mod-revoke-cli"
    ws = await connect(http, sfu_server)
    assert (await join(ws, mint(keys, room, "trudy", PARTICIPANT)))["type"] == "joined"
    command = [
        sys.executable, "-m", "signaling.cli", "revoke", "--data-dir", str(sfu_server.data_dir),
        "--identity", "trudy", "--tenant", "acme",
    ]  # fmt: skip
    done = await asyncio.to_thread(
        subprocess.run, command, cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    written = time.monotonic()
    assert done.returncode == 0, done.stderr
    error = await recv_type(ws, "error", timeout=3)
    took = time.monotonic() - written
    assert (error["code"], error["message"]) == ("unauthorized", "token revoked")
    assert took < 1.5, f"the server applied the file after {took:.2f} s"
    await expect_closed(ws, 4401)


# --- scope: tenants and moderators ---


async def test_another_tenants_admin_cannot_see_or_touch_a_room(
    http: aiohttp.ClientSession, sfu_server: SfuServer, keys: SigningKeys
) -> None:
    room = "mod-secret"
    ws = await connect(http, sfu_server)
    token = mint(keys, room, "alice", PARTICIPANT, tenant="acme")
    await join(ws, token)
    outsider = admin_token(keys, "globex")
    status, body = await api(http, sfu_server, outsider, "GET", "/admin/rooms")
    assert status == 200 and room not in [r["room"] for r in body["rooms"]]
    missing = await api(http, sfu_server, outsider, "GET", "/admin/rooms/mod-nowhere/participants")
    participant = f"/admin/rooms/{room}/participants/alice"
    for method, path, payload in [
        ("GET", f"/admin/rooms/{room}/participants", None),
        ("PATCH", participant, {"grants": []}),
        ("POST", participant + "/mute", {"kind": "audio", "muted": True}),
        ("DELETE", participant, None),
        ("DELETE", f"/admin/rooms/{room}", None),
    ]:
        status, body = await api(http, sfu_server, outsider, method, path, payload)
        # Exactly what a room that does not exist gets.
        assert (status, body["error"]) == (404, "not_found"), (method, path, body)
        assert body["message"].replace(room, "mod-nowhere") in (
            missing[1]["message"],
            "no participant 'alice' in room 'mod-nowhere'",
        )
    status, body = await api(
        http, sfu_server, outsider, "POST", "/admin/revocations",
        {"jti": keys.verify(token).token_id},
    )  # fmt: skip
    assert (status, body["sessions_closed"]) == (201, 0)
    # Untouched: still there, with its grants, and its token still works.
    status, body = await api(
        http, sfu_server, admin_token(keys), "GET", f"/admin/rooms/{room}/participants"
    )
    assert status == 200 and body["participants"][0]["grants"] == PARTICIPANT
    await ws.send_json({"type": "ping"})
    assert (await recv_type(ws, "pong"))["type"] == "pong"
    await ws.close()


async def test_a_moderator_acts_on_its_own_room_only(
    http: aiohttp.ClientSession, sfu_server: SfuServer, keys: SigningKeys
) -> None:
    own, other = "mod-own", "mod-other"
    sockets: list[Ws] = []
    for room in (own, other):
        ws = await connect(http, sfu_server)
        await join(ws, mint(keys, room, "alice", PARTICIPANT))
        sockets.append(ws)
    moderator = mint(keys, own, "mod", ["moderate", "subscribe"])
    status, body = await api(http, sfu_server, moderator, "GET", "/admin/rooms")
    assert [r["room"] for r in body["rooms"]] == [own]
    status, body = await api(
        http, sfu_server, moderator, "PATCH", f"/admin/rooms/{own}/participants/alice",
        {"grants": ["subscribe"]},
    )  # fmt: skip
    assert status == 200, body
    for room in (other, "mod-nowhere"):
        status, body = await api(
            http, sfu_server, moderator, "GET", f"/admin/rooms/{room}/participants"
        )
        assert (status, body["error"]) == (403, "forbidden")
    status, body = await api(
        http, sfu_server, moderator, "PATCH", f"/admin/rooms/{own}/participants/alice",
        {"grants": ["moderate"]},
    )  # fmt: skip
    assert status == 403
    status, body = await api(
        http, sfu_server, moderator, "POST", "/admin/revocations", {"identity": "alice"}
    )
    assert status == 403
    for ws in sockets:
        await ws.close()


async def test_tokens_without_admin_or_moderate_are_refused(
    http: aiohttp.ClientSession, sfu_server: SfuServer, keys: SigningKeys
) -> None:
    for token, expected in [
        (None, 401),
        ("not-a-token", 401),
        (mint(keys, "x", "p", PARTICIPANT), 403),
    ]:
        status, body = await api(http, sfu_server, token, "GET", "/admin/rooms")
        assert status == expected and body["error"] in ("unauthorized", "forbidden"), body


@pytest.mark.parametrize(
    ("method", "suffix", "raw", "status"),
    [
        ("PATCH", "", b"{not json", 400),
        ("PATCH", "", b"\xff\xfe", 400),
        ("PATCH", "", b"[]", 400),
        ("PATCH", "", b"{}", 400),
        ("PATCH", "", b'{"grants": "admin"}', 400),
        ("PATCH", "", b'{"grants": [1]}', 400),
        ("PATCH", "", b'{"grants": ["superuser"]}', 400),
        ("PATCH", "", b'{"grants": ["subscribe", "subscribe"]}', 400),
        ("PATCH", "", b'{"grants": [], "extra": 1}', 400),
        ("PATCH", "", b'{"grants": [' + b'"subscribe",' * 5000 + b'"subscribe"]}', 413),
        ("POST", "/mute", b'{"kind": "smell", "muted": true}', 400),
        ("POST", "/mute", b'{"kind": "video", "muted": 1}', 400),
        ("POST", "/mute", b'{"muted": true}', 400),
        ("POST", "/mute", b'{"kind": ["video"]}', 400),
    ],
)
async def test_bad_bodies_get_json_errors(
    http: aiohttp.ClientSession,
    sfu_server: SfuServer,
    keys: SigningKeys,
    method: str,
    suffix: str,
    raw: bytes,
    status: int,
) -> None:
    room = "mod-fuzz"
    ws = await connect(http, sfu_server)
    await join(ws, mint(keys, room, "alice", PARTICIPANT))
    path = f"/admin/rooms/{room}/participants/alice{suffix}"
    got, body = await api(http, sfu_server, admin_token(keys), method, path, raw=raw)
    assert got == status and set(body) == {"error", "message"}, body
    # Nothing changed.
    got, body = await api(
        http, sfu_server, admin_token(keys), "GET", f"/admin/rooms/{room}/participants"
    )
    assert body["participants"][0]["grants"] == PARTICIPANT
    assert body["participants"][0]["muted"] == []
    await ws.close()


@pytest.mark.parametrize(
    "raw",
    [
        b'{"jti": "a", "identity": "b"}',
        b"{}",
        b'{"jti": 5}',
        b'{"jti": "has space"}',
        b'{"identity": ""}',
        b'{"jti": "a", "expires_at": true}',
        b'{"jti": "a", "expires_at": 1}',
        b'{"jti": "a", "expires_at": 1e300}',
    ],
)
async def test_bad_revocations_get_400_and_are_not_stored(
    http: aiohttp.ClientSession, sfu_server: SfuServer, keys: SigningKeys, raw: bytes
) -> None:
    token = admin_token(keys)
    status, body = await api(http, sfu_server, token, "POST", "/admin/revocations", raw=raw)
    assert (status, body["error"]) == (400, "bad_request"), body
    status, body = await api(http, sfu_server, token, "GET", "/admin/revocations")
    assert all(e.get("jti") != "a" for e in body["revocations"])


# --- audit export and the policy on admin actions ---


async def test_audit_export_returns_the_tenants_own_records_only(
    http: aiohttp.ClientSession, sfu_server: SfuServer, keys: SigningKeys
) -> None:
    room = "mod-audit"
    for tenant in ("acme", "globex"):
        ws = await connect(http, sfu_server)
        await join(ws, mint(keys, room, f"member-{tenant}", PARTICIPANT, tenant=tenant))
        await ws.close()
    acme = admin_token(keys, "acme")
    deadline = time.monotonic() + 10
    while True:  # the audit writer thread commits in batches
        status, body = await api(http, sfu_server, acme, "GET", "/admin/audit")
        assert status == 200, body
        actors = {r["actor"] for r in body["records"]}
        if "member-acme" in actors or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert body["tenant"] == "acme" and "member-acme" in actors
    assert "member-globex" not in actors
    assert all(r["detail"].get("tenant") == "acme" for r in body["records"])
    assert not any(r["event"] in ("server_start", "server_stop") for r in body["records"])
    # Paging: after the last seq there is nothing older.
    last = body["next_after"]
    status, page = await api(http, sfu_server, acme, "GET", f"/admin/audit?after={last}&limit=5")
    assert status == 200 and all(r["seq"] > last for r in page["records"])
    for query in ("?limit=0", "?limit=5001", "?after=-1", "?after=x"):
        status, error = await api(http, sfu_server, acme, "GET", "/admin/audit" + query)
        assert (status, error["error"]) == (400, "bad_request"), query
    moderator = mint(keys, room, "mod-1", ["moderate"])
    status, error = await api(http, sfu_server, moderator, "GET", "/admin/audit")
    assert (status, error["error"]) == (403, "forbidden")


async def test_admin_actions_are_decided_by_the_policy_too(
    http: aiohttp.ClientSession, sfu_server: SfuServer, keys: SigningKeys
) -> None:
    policy = sfu_server.data_dir / "policies" / "zz-admin-test.policy"
    policy.write_text(
        'deny "no audit export for admin-acme" when action is export_audit '
        'and subject.identity is "admin-acme" because "exports go through the DPO"\n'
        'deny "moderation stops at nine" when action is moderate '
        'and subject.identity is "night-admin" because "outside moderation hours"\n'
    )
    try:
        night = mint(keys, "ops", "night-admin", ["admin"])
        deadline = time.monotonic() + 5
        while True:  # the engine looks at the directory once a second
            status, body = await api(http, sfu_server, night, "GET", "/admin/rooms")
            if status == 403 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert (status, body["error"]) == (403, "forbidden"), body
        assert "outside moderation hours" in body["message"]
        status, body = await api(http, sfu_server, admin_token(keys), "GET", "/admin/audit")
        assert status == 403 and "exports go through the DPO" in body["message"]
        # Another admin of the tenant is not touched by either rule.
        other = mint(keys, "ops", "day-admin", ["admin"])
        assert (await api(http, sfu_server, other, "GET", "/admin/rooms"))[0] == 200
        assert (await api(http, sfu_server, other, "GET", "/admin/audit?limit=1"))[0] == 200
    finally:
        policy.unlink()
