"""Screenshots of the meeting page's main states, for the README.

    unshare -n sh -c 'ip link set lo up && .venv/bin/python -m tests.e2e.screenshots'

Starts a real server and headless Chromium (fake camera and microphone), and saves:
join.png (the token form), meeting.png (three people, chat and a verified file),
e2ee.png (encryption on, with safety numbers), error.png (an expired token),
connection.png (the connection panel open, with encryption on).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, async_playwright

from signaling.tokens import SigningKeys
from tests.e2e.harness import (
    SfuServer,
    free_tcp_port,
    free_udp_port,
    launch_chromium,
    meeting,
    poll,
)

VIEWPORT = {"width": 1280, "height": 720}


def _panel_live(snapshot: dict[str, Any] | None, other: str) -> bool:
    """The connection panel shows the server's answer, the other's video flowing and
    their encryption with a key id."""
    if not snapshot or not snapshot["serverAnswered"]:
        return False
    for person in snapshot["participants"]:
        if person["identity"] == other:
            video = [t for t in person["tracks"] if t["kind"] == "video"]
            keyed = person["e2ee"]["on"] and person["e2ee"]["keyId"] is not None
            return bool(keyed and video and (video[0]["bitrateBps"] or 0) > 0)
    return False


async def capture(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sfu-shots-") as tmp:
        data_dir = Path(tmp)
        server = SfuServer(data_dir, free_tcp_port(), free_udp_port(), data_dir / "server.log")
        server.start()
        try:
            async with async_playwright() as playwright:
                browser = await launch_chromium(playwright, server.spki_pin())
                try:
                    await _states(browser, server, out)
                finally:
                    await browser.close()
        finally:
            server.stop()


async def _states(browser: Browser, server: SfuServer, out: Path) -> None:
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    await page.goto(server.base_url + "/")
    await page.wait_for_selector("#token-form:not([hidden])")
    await page.screenshot(path=str(out / "join.png"))
    expired = SigningKeys.load_or_create(server.data_dir).issue(
        identity="late", room="demo", ttl_s=60, now=1_700_000_000
    )
    await page.goto(f"{server.base_url}/#token={expired}")
    await page.reload()
    await page.wait_for_function("window.sfu && window.sfu.state === 'error'")
    await page.screenshot(path=str(out / "error.png"))
    await context.close()

    async with meeting(browser, server, "demo", ["alice", "bob", "carol"]) as pages:
        alice, bob, carol = pages
        for p in pages:
            await p.page.set_viewport_size(VIEWPORT)
            await poll(partial(p.sfu, "sfu.chatReady()"), bool, timeout_s=20,
                       what=f"{p.identity}'s channels")  # fmt: skip
        await alice.sfu("sfu.sendChat('Good morning! The minutes are attached.')")
        await bob.sfu("sfu.sendChat('Thanks, reading them now.')")
        await alice.sfu("sfu.sendRandomFile('minutes.pdf', 2 * 1024 * 1024, 'application/pdf')")
        await asyncio.sleep(3.0)  # video settles
        await bob.page.screenshot(path=str(out / "meeting.png"))
        for p in (alice, bob):
            await p.sfu("sfu.e2ee.setEnabled(true)")
        await poll(partial(bob.sfu, "sfu.e2ee.members()"),
                   lambda m: m.get("alice", {}).get("encrypted") is True, timeout_s=20,
                   what="alice encrypted at bob")  # fmt: skip
        await asyncio.sleep(3.0)
        await bob.page.screenshot(path=str(out / "e2ee.png"))
        await bob.page.click("#connection")
        await poll(partial(bob.sfu, "sfu.connection.snapshot()"),
                   partial(_panel_live, other="alice"), timeout_s=20,
                   what="bob's connection panel to show alice live")  # fmt: skip
        await asyncio.sleep(1.5)  # one more refresh, so every bitrate spans a full second
        await bob.page.screenshot(path=str(out / "connection.png"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args(argv)
    asyncio.run(capture(args.out))
    sys.stdout.write(f"screenshots in {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
