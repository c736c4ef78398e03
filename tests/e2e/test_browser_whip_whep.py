"""Mixed clients: an aiortc WHIP publisher watched by Chromium, and a Chromium
publisher watched by an aiortc WHEP viewer."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser

from tests.e2e.harness import SfuServer, open_participant, poll
from tests.peers import client_ssl, use_loopback_only, wait_for, whep_subscribe, whip_publish

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _http(server: SfuServer) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl(server.cert_path)))


async def test_chromium_watches_an_aiortc_whip_publisher(
    sfu_server: SfuServer, chromium: Browser
) -> None:
    use_loopback_only()
    async with _http(sfu_server) as http:
        publisher = await whip_publish(
            http, sfu_server.base_url + "/", "bw1", sfu_server.token("bw1", "encoder")
        )
        viewer = await open_participant(chromium, sfu_server, "bw1", "watcher", role="viewer")
        try:

            async def video() -> dict[str, Any]:
                stats: dict[str, Any] = await viewer.sfu("sfu.mediaStats()")
                return stats.get("encoder", {})

            first = await poll(
                video,
                lambda s: (
                    s.get("video", {}).get("framesDecoded", 0) > 10
                    and s.get("audio", {}).get("packetsReceived", 0) > 10
                ),
                timeout_s=20,
                what="Chromium to decode the WHIP publisher",
            )
            assert first["video"]["frameWidth"] == 320 and first["video"]["frameHeight"] == 240
            later = await poll(
                video,
                lambda s: s["video"]["framesDecoded"] > first["video"]["framesDecoded"] + 10,
                timeout_s=10,
                what="decoded frames to keep increasing",
            )
            assert later["audio"]["packetsReceived"] > first["audio"]["packetsReceived"]
        finally:
            await viewer.close()
            await publisher.close(http)


async def test_aiortc_whep_viewer_watches_a_chromium_publisher(
    sfu_server: SfuServer, chromium: Browser
) -> None:
    use_loopback_only()
    presenter = await open_participant(chromium, sfu_server, "bw2", "presenter")
    async with _http(sfu_server) as http:
        viewer = await whep_subscribe(
            http,
            sfu_server.base_url + "/",
            "bw2",
            sfu_server.token("bw2", "recorder", role="viewer"),
            identity="presenter",
        )
        try:
            got = viewer.received.frames
            assert await wait_for(lambda: got["video"] > 30 and got["audio"] > 30, 20), got
            # Chromium sends the size the page asked for (no bandwidth feedback yet).
            assert viewer.received.last_size == (640, 480)
        finally:
            await viewer.close(http)
            await presenter.close()
