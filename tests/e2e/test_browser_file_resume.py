"""A page whose connection drops mid-file reconnects and finishes sending it; the other
page verifies the file (docs/DATA_CHANNELS.md, "Resuming after a reconnect")."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
from playwright.async_api import Browser

from tests.e2e.harness import SfuServer, meeting, poll

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHANNELS_TIMEOUT_S = 20.0
FILE_BYTES = 4 * 1024 * 1024
CHAT_AND_FILES = ["publish:control", "publish:file", "subscribe"]


async def test_a_page_that_reconnects_mid_file_resumes_it_and_the_other_page_verifies_it(
    sfu_server: SfuServer, chromium: Browser
) -> None:
    names = ["alice", "bob"]
    async with meeting(chromium, sfu_server, "page-resume", names, CHAT_AND_FILES) as pages:
        alice, bob = pages
        for page in pages:
            await poll(partial(page.sfu, "sfu.chatReady()"), bool, timeout_s=CHANNELS_TIMEOUT_S,
                       what=f"{page.identity}'s data channels to open")  # fmt: skip
        sending = asyncio.create_task(alice.sfu(f"sfu.sendRandomFile('big.bin', {FILE_BYTES})"))
        await poll(partial(bob.sfu, "sfu.filesReceived()"), lambda n: n >= 1024 * 1024,
                   timeout_s=20, what="the first MiB to reach bob")  # fmt: skip
        assert await alice.sfu("sfu.reconnect()")
        await poll(partial(bob.sfu, "sfu.files()"), lambda files: files[0]["pauses"] == 1,
                   timeout_s=10, what="bob to see the transfer paused")  # fmt: skip
        result = await asyncio.wait_for(sending, 40)
        assert result["verifiedBy"] == ["bob"], result
        files = await bob.sfu("sfu.files()")
        assert [(f["name"], f["size"], f["received"], f["verified"]) for f in files] == [
            ("big.bin", FILE_BYTES, FILE_BYTES, True)
        ], files
        assert await alice.sfu("sfu.filesResumed()") == 1
        assert await alice.sfu("sfu.state") == "joined"
        assert await alice.sfu("sfu.dataErrors()") == []
