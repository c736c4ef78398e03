"""The meeting page's connection panel between two real Chromium pages: it shows the
values the browser and the server actually negotiated (signaling TLS, DTLS cipher,
SRTP profile, ICE pair on the server's media port), live bitrate, loss, jitter and
RTT, and the E2EE state and key id once both pages lock."""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import pytest
from playwright.async_api import Browser

from tests.e2e.harness import Participant, SfuServer, meeting, poll
from tests.e2e.test_browser_room import MEDIA_TIMEOUT_S, SRTP_GCM, wait_for_media

pytestmark = pytest.mark.asyncio(loop_scope="module")

PANEL_TIMEOUT_S = 15.0
KEYS_TIMEOUT_S = 15.0
# The server's DTLS suites (sfu/proto/dtls.py, OpenSSL names) and what Chromium's
# getStats() calls them (IANA names): the two sides must name the same suite.
IANA_NAMES = {
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
}
# Video flowing, however starved the machine: the fake camera sends far more.
MIN_VIDEO_BPS = 10_000
BITRATE_TEXT = re.compile(r"^\d+(\.\d+)? (kbit|Mbit)/s$")

Snapshot = dict[str, Any]


async def snapshot(page: Participant) -> Snapshot | None:
    value: Snapshot | None = await page.sfu("sfu.connection.snapshot()")
    return value


def person(snap: Snapshot, identity: str) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in snap["participants"] if p["identity"] == identity)
    return found


def track(snap: Snapshot, identity: str, kind: str) -> dict[str, Any] | None:
    return next((t for t in person(snap, identity)["tracks"] if t["kind"] == kind), None)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def shows_live_media(snap: Snapshot | None, me: str, other: str) -> bool:
    """The server answered, and both directions of video have a bitrate and an RTT."""
    if not snap or not snap["serverAnswered"]:
        return False
    if other not in {p["identity"] for p in snap["participants"]}:
        return False
    received, sent = track(snap, other, "video"), track(snap, me, "video")
    return bool(
        received
        and sent
        and (received["bitrateBps"] or 0) > MIN_VIDEO_BPS
        and (sent["bitrateBps"] or 0) > MIN_VIDEO_BPS
        and is_number(sent["rttMs"])
        and received["serverTrack"] is not None
        and received["serverTrack"]["jitterMs"] is not None
    )


def shows_encrypted(snap: Snapshot | None, me: str, other: str) -> bool:
    if not snap:
        return False
    mine, theirs = person(snap, me)["e2ee"], person(snap, other)["e2ee"]
    return bool(mine["on"] and theirs["on"] and is_number(mine["keyId"]))


async def cell(page: Participant, identity: str, kind: str, field: str) -> str:
    selector = (
        f'#connection-panel [data-identity="{identity}"] '
        f'td[data-kind="{kind}"][data-field="{field}"]'
    )
    text: str = await page.page.locator(selector).first.inner_text()
    return text


def check_transport(where: str, t: dict[str, Any], server: SfuServer) -> None:
    """One track's transport as the browser and the server each see it."""
    browser, seen_by_server = t["transport"], t["server"]
    assert browser is not None and seen_by_server is not None, (where, t)
    assert browser["dtlsState"] == "connected" and seen_by_server["dtlsState"] == "connected"
    # DTLS: both sides name the same ECDHE + AEAD suite, version 1.2.
    assert seen_by_server["dtlsCipher"] in IANA_NAMES, (where, seen_by_server)
    assert browser["dtlsCipher"] == IANA_NAMES[seen_by_server["dtlsCipher"]], (where, t)
    assert (browser["tlsVersion"], seen_by_server["dtlsVersion"]) == ("FEFD", "DTLSv1.2")
    # The SFU, as DTLS server, picked AEAD GCM; the browser uses what it picked.
    # (Chromium negotiates SRTP on the data channels' transport as well.)
    assert seen_by_server["srtpProfile"] == "AEAD_AES_128_GCM", (where, seen_by_server)
    assert browser["srtpCipher"] == SRTP_GCM == "SRTP_" + seen_by_server["srtpProfile"]
    # ICE: the pair ends at the server's media port (the data channels: at the data
    # process's own port), and both sides see the same pair.
    pair, ice = browser["pair"], seen_by_server["ice"]
    port = server.media_port if t["kind"] != "data" else ice["local"]["port"]
    assert t["kind"] != "data" or port != server.media_port, (where, t)
    assert pair["remote"]["port"] == port == ice["local"]["port"], (where, t)
    assert ice["remote"] == {"address": pair["local"]["address"], "port": pair["local"]["port"]}
    assert pair["protocol"] == "udp" and pair["remote"]["type"] == "host"
    assert is_number(pair["rttMs"]) and pair["rttMs"] >= 0, (where, pair)


async def test_panel_shows_the_negotiated_protocols_and_live_media_values(
    sfu_server: SfuServer, chromium: Browser
) -> None:
    async with meeting(chromium, sfu_server, "panel", ["alice", "bob"]) as pages:
        alice, bob = pages
        await wait_for_media(pages, MEDIA_TIMEOUT_S)
        assert await alice.sfu("sfu.connection.isOpen()") is False
        await alice.page.click("#connection")
        assert await alice.page.locator("#connection-panel").is_visible()
        assert await alice.page.get_attribute("#connection", "aria-pressed") == "true"
        snap: Snapshot = await poll(
            partial(snapshot, alice),
            partial(shows_live_media, me="alice", other="bob"),
            timeout_s=PANEL_TIMEOUT_S,
            what="alice's panel to show live video both ways",
        )

        # Signaling: the WebSocket's TLS as the server negotiated it.
        assert snap["signaling"]["tlsVersion"] == "TLSv1.3"
        assert snap["signaling"]["tlsCipher"].startswith("TLS_")
        assert await alice.page.inner_text('[data-field="tls-version"]') == "TLSv1.3"

        # Grouped per participant: alice herself, then bob.
        assert [(p["identity"], p["self"]) for p in snap["participants"]] == [
            ("alice", True),
            ("bob", False),
        ]
        mine = person(snap, "alice")["tracks"]
        assert {(t["kind"], t["direction"]) for t in mine} >= {
            ("audio", "send"),
            ("video", "send"),
        }
        theirs = person(snap, "bob")["tracks"]
        assert {(t["kind"], t["direction"]) for t in theirs} == {
            ("audio", "receive"),
            ("video", "receive"),
        }
        for t in mine + theirs:
            where = f"alice: {t['identity']} {t['kind']} {t['direction']}"
            check_transport(where, t, sfu_server)

        received = track(snap, "bob", "video")
        assert received is not None
        # Receive side: bitrate from bytesReceived deltas, loss and jitter as numbers,
        # frames decoded; the server's counters for the same stream agree it flows.
        assert received["bitrateBps"] > MIN_VIDEO_BPS, received
        assert is_number(received["packetsLost"]) and received["packetsLost"] >= 0
        assert is_number(received["lossPercent"]) and 0 <= received["lossPercent"] <= 100
        assert is_number(received["jitterMs"]) and received["jitterMs"] >= 0
        assert received["frames"] > 0
        server_view = received["serverTrack"]
        assert server_view["packets"] > 0, received
        assert is_number(server_view["packetsLost"]) and is_number(server_view["fractionLost"])
        assert is_number(server_view["jitterMs"]) and server_view["jitterMs"] >= 0

        sent = track(snap, "alice", "video")
        assert sent is not None
        # Send side: bitrate from bytesSent, RTT from the SFU's receiver reports, and
        # the SFU's own receive counters for alice's camera.
        assert sent["bitrateBps"] > MIN_VIDEO_BPS, sent
        assert is_number(sent["rttMs"]) and sent["rttMs"] >= 0
        assert sent["serverTrack"]["packets"] > 0
        assert is_number(sent["serverTrack"]["packetsLost"])

        # What the panel shows in its table is what it computed.
        assert BITRATE_TEXT.match(await cell(alice, "bob", "video", "bitrate"))
        assert await cell(alice, "bob", "video", "srtp") == SRTP_GCM
        assert await cell(alice, "bob", "video", "server-srtp") == "AEAD_AES_128_GCM"
        server_ice = await cell(alice, "bob", "video", "server-ice")
        assert server_ice.startswith(f"127.0.0.1:{sfu_server.media_port} ⇄ 127.0.0.1:")
        assert f"127.0.0.1:{sfu_server.media_port} host" in await cell(alice, "bob", "video", "ice")
        assert "ECDHE" in await cell(alice, "bob", "video", "dtls")
        e2ee = alice.page.locator('#connection-panel [data-identity="bob"] [data-field="e2ee"]')
        assert await e2ee.inner_text() == "E2EE off"
        assert person(snap, "bob")["e2ee"] == {"on": False, "state": "plain", "keyId": None}

        # --- both lock: the panel shows E2EE on, with the key ids in use ---
        for page in (alice, bob):
            await page.page.click("#lock")
        encrypted: Snapshot = await poll(
            partial(snapshot, alice),
            lambda s: (
                shows_encrypted(s, "alice", "bob") and person(s, "bob")["e2ee"]["keyId"] is not None
            ),
            timeout_s=KEYS_TIMEOUT_S,
            what="alice's panel to show E2EE on for both, with key ids",
        )
        assert person(encrypted, "alice")["e2ee"] == {"on": True, "state": "encrypted", "keyId": 0}
        assert person(encrypted, "bob")["e2ee"] == {"on": True, "state": "encrypted", "keyId": 0}
        # Bob's page, asked directly, agrees on the key alice decrypts him with.
        assert (await bob.sfu("sfu.e2ee.members()"))["alice"]["keyId"] == 0
        await poll(
            lambda: e2ee.inner_text(),
            lambda text: text == "E2EE on · key 0",
            timeout_s=5,
            what="bob's E2EE cell at alice",
        )

        await alice.page.click(".connection-close")
        assert await alice.page.locator("#connection-panel").is_hidden()
        assert await alice.sfu("sfu.connection.isOpen()") is False
