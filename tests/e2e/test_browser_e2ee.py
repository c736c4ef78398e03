"""End-to-end encrypted media between real Chromium pages (docs/E2EE.md; the page's
on/off and key distribution design is described at the top of
signaling/static/e2ee-worker.js): pages with the lock on exchange keys through the
server, decrypt each other and agree on safety numbers; a page without keys shows
nothing of their media; the server relays only wrapped keys and never logs them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
from playwright.async_api import Browser, WebSocket

from tests.e2e.harness import JOIN_TIMEOUT_S, Participant, SfuServer, poll

pytestmark = pytest.mark.asyncio(loop_scope="module")

MEDIA_TIMEOUT_S = 20.0
KEYS_TIMEOUT_S = 10.0
# Long enough for a 30 fps camera to decode many frames, and for a page that decodes
# nothing to show it: the counters are compared across it.
SAMPLE_GAP_S = 1.5
# After a change of E2EE state, frames already in flight (and a key frame request)
# settle within this; only then are counters expected to stand still.
SETTLE_S = 1.5
WRAPPED_KEY_CHARS = 71  # 53-byte blob, unpadded base64url
PUBLIC_KEY_CHARS = 43  # 32 bytes
OFF_NOTICE = "A" * PUBLIC_KEY_CHARS

Stats = dict[str, dict[str, dict[str, int]]]


class Recorded:
    """A meeting page and every signaling message it sent and received."""

    def __init__(self, participant: Participant) -> None:
        self.participant = participant
        self.sent: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []

    @property
    def identity(self) -> str:
        return self.participant.identity

    async def sfu(self, expression: str) -> Any:
        return await self.participant.sfu(expression)

    def on_websocket(self, ws: WebSocket) -> None:
        ws.on("framesent", partial(self._record, self.sent))
        ws.on("framereceived", partial(self._record, self.received))

    @staticmethod
    def _record(into: list[dict[str, Any]], payload: str | bytes) -> None:
        if isinstance(payload, str):
            into.append(json.loads(payload))

    def e2ee(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [m for m in messages if str(m.get("type", "")).startswith("e2ee_")]


async def open_recorded(browser: Browser, server: SfuServer, room: str, identity: str) -> Recorded:
    """Like harness.open_participant, with the page's WebSocket recorded from the start."""
    token = await asyncio.to_thread(server.token, room, identity)
    context = await browser.new_context(
        permissions=["camera", "microphone"], viewport={"width": 800, "height": 600}
    )
    page = await context.new_page()
    recorded = Recorded(Participant(identity=identity, context=context, page=page))
    console = recorded.participant.console
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
    page.on("websocket", recorded.on_websocket)
    await page.goto(f"{server.base_url}/#token={token}")
    await poll(
        lambda: recorded.sfu("sfu ? sfu.state : null"),
        lambda state: state == "joined",
        timeout_s=JOIN_TIMEOUT_S,
        what=f"{identity} to join {room}",
    )
    return recorded


async def video_frames(page: Recorded) -> dict[str, int]:
    stats: Stats = await page.sfu("sfu.mediaStats()")
    return {who: kinds.get("video", {}).get("framesDecoded", 0) for who, kinds in stats.items()}


async def frame_counters(page: Recorded) -> dict[str, dict[str, int]]:
    counters: dict[str, dict[str, int]] = await page.sfu("sfu.e2ee.frames()")
    return counters


async def members(page: Recorded) -> dict[str, dict[str, Any]]:
    shown: dict[str, dict[str, Any]] = await page.sfu("sfu.e2ee.members()")
    return shown


async def frames_and_counters(
    page: Recorded,
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    frames, counters = await asyncio.gather(video_frames(page), frame_counters(page))
    return frames, counters


async def over_a_gap(probe: Callable[[], Awaitable[Any]]) -> tuple[Any, Any]:
    first = await probe()
    await asyncio.sleep(SAMPLE_GAP_S)
    return first, await probe()


def count(counters: dict[str, dict[str, int]], who: str, what: str) -> int:
    return counters.get(who, {}).get(what, 0)


async def wait_state(page: Recorded, who: str, state: str) -> None:
    await poll(
        partial(members, page),
        lambda shown: shown.get(who, {}).get("state") == state,
        timeout_s=KEYS_TIMEOUT_S,
        what=f"{page.identity} to show {who} as {state}",
    )


async def wait_decoding(page: Recorded, publishers: set[str]) -> None:
    await poll(
        partial(video_frames, page),
        lambda frames: all(frames.get(p, 0) > 0 for p in publishers),
        timeout_s=MEDIA_TIMEOUT_S,
        what=f"{page.identity} to decode {sorted(publishers)}",
    )


async def test_locked_pages_decrypt_each_other_and_a_page_without_keys_sees_nothing(
    sfu_server: SfuServer, chromium: Browser
) -> None:
    from signaling.audit import AuditPaths, export

    room = "e2ee-browser"
    pages: list[Recorded] = []
    try:
        for identity in ("alice", "bob", "carol"):
            pages.append(await open_recorded(chromium, sfu_server, room, identity))
        alice, bob, carol = pages
        for me in pages:
            await wait_decoding(me, {p.identity for p in pages if p is not me})

        # --- alice and bob lock; carol does not ---
        assert await alice.sfu("sfu.e2ee.setEnabled(true)") is True
        assert await bob.sfu("sfu.e2ee.setEnabled(true)") is True
        await wait_state(alice, "bob", "encrypted")
        await wait_state(bob, "alice", "encrypted")
        await wait_state(carol, "alice", "locked-out")
        await wait_state(carol, "bob", "locked-out")
        await asyncio.sleep(SETTLE_S)

        for me, other in ((alice, bob), (bob, alice)):
            (frames_1, counters_1), (frames_2, counters_2) = await over_a_gap(
                partial(frames_and_counters, me)
            )
            where = f"{me.identity} from {other.identity}"
            assert frames_2[other.identity] > frames_1[other.identity], where
            assert count(counters_2, other.identity, "decrypted") > count(
                counters_1, other.identity, "decrypted"
            ), where
            # Nothing of the other's arrives in clear, and nothing fails to open.
            assert count(counters_2, other.identity, "passed") == count(
                counters_1, other.identity, "passed"
            ), where
            assert count(counters_2, other.identity, "dropped") == count(
                counters_1, other.identity, "dropped"
            ), where
            # Carol's plaintext still plays, and her tile says it is not encrypted.
            assert frames_2["carol"] > frames_1["carol"], f"{me.identity} from carol"
            assert count(counters_2, "carol", "passed") > count(counters_1, "carol", "passed")
            shown = await members(me)
            assert (shown["carol"]["encrypted"], shown["carol"]["state"]) == (False, "plain")
            assert shown[other.identity]["encrypted"] is True
            assert shown[other.identity]["keyId"] == 0
            tile = me.participant.page.locator('.tile[data-identity="carol"] .e2ee-state')
            assert await tile.inner_text() == "not encrypted"
            # The lock is on, but not everyone in the room is encrypted.
            lock = me.participant.page.locator("#lock")
            assert await lock.get_attribute("aria-pressed") == "true"
            assert await lock.get_attribute("data-all-encrypted") == "false"
            assert await me.sfu("sfu.e2ee.allEncrypted") is False

        # Both see the same 60 digits for their pair, also on the tile.
        number_at_alice = (await members(alice))["bob"]["safetyNumber"]
        number_at_bob = (await members(bob))["alice"]["safetyNumber"]
        assert number_at_alice == number_at_bob
        assert len(number_at_alice) == 71 and number_at_alice.replace(" ", "").isdigit()
        tile_number = alice.participant.page.locator('.tile[data-identity="bob"] .safety-number')
        assert number_at_alice in await tile_number.inner_text()
        assert (await members(alice))["bob"]["verified"] is False
        checkbox = '.tile[data-identity="bob"] input[type=checkbox]'
        await alice.participant.page.locator(checkbox).check()
        assert (await members(alice))["bob"]["verified"] is True
        assert (await members(bob))["alice"]["verified"] is False  # local only

        # Carol never got a key: she decodes neither of them (Chromium: her transforms
        # drop every frame, so the decoder's count stands still) and passes nothing on.
        (frames_1, counters_1), (frames_2, counters_2) = await over_a_gap(
            partial(frames_and_counters, carol)
        )
        for publisher in ("alice", "bob"):
            assert frames_2[publisher] == frames_1[publisher], (publisher, frames_1, frames_2)
            assert count(counters_2, publisher, "dropped") > count(counters_1, publisher, "dropped")
            assert count(counters_2, publisher, "passed") == count(counters_1, publisher, "passed")
            assert count(counters_2, publisher, "decrypted") == 0
        carol_view = await members(carol)
        assert carol_view["alice"]["safetyNumber"] is None and carol_view["alice"]["keyId"] is None
        # Only carol's media was never encrypted.
        sent = await alice.sfu("sfu.e2ee.sent()")
        assert sent["encrypted"] > 0 and sent["dropped"] == 0

        # --- a rotation reaches bob, and frames move to the new key ---
        await alice.sfu("sfu.e2ee.rotate()")
        await poll(
            partial(members, bob),
            lambda shown: shown["alice"]["keyId"] == 1,
            timeout_s=KEYS_TIMEOUT_S,
            what="bob to decrypt alice's frames under her key 1",
        )
        frames_1, frames_2 = await over_a_gap(partial(video_frames, bob))
        assert frames_2["alice"] > frames_1["alice"]

        # --- alice turns E2EE off: her media is plaintext for everyone again ---
        bob_sent_before_off = len(bob.sent)
        assert await alice.sfu("sfu.e2ee.setEnabled(false)") is False
        await wait_state(bob, "alice", "plain")
        await wait_state(carol, "alice", "plain")
        await wait_state(alice, "bob", "locked-out")
        await asyncio.sleep(SETTLE_S)
        for me in (bob, carol):
            frames_1, frames_2 = await over_a_gap(partial(video_frames, me))
            assert frames_2["alice"] > frames_1["alice"], f"{me.identity} from alice"
        # Bob still encrypts; alice, without keys now, shows nothing of him, like carol.
        for me in (alice, carol):
            frames_1, frames_2 = await over_a_gap(partial(video_frames, me))
            assert frames_2["bob"] == frames_1["bob"], f"{me.identity} from bob"
        lock = alice.participant.page.locator("#lock")
        assert await lock.get_attribute("aria-pressed") == "false"
        # Bob gives alice no more keys now; she forgot the ones she had.
        assert not [m for m in bob.sent[bob_sent_before_off:] if m.get("type") == "e2ee_key"]
        assert (await members(alice))["bob"]["keyId"] is None

        # --- what the server saw: hellos and wrapped keys, relayed as documented ---
        relayed = [m for page in pages for m in page.e2ee(page.received)]
        sent_out = [m for page in pages for m in page.e2ee(page.sent)]
        keys = [m for m in relayed if m["type"] == "e2ee_key"]
        assert keys and {m["from"] for m in keys} == {"alice", "bob"}
        assert all(set(m) == {"type", "from", "blob"} for m in keys), keys
        assert all(len(m["blob"]) == WRAPPED_KEY_CHARS for m in keys), keys
        assert all(
            len(m["blob"]) == WRAPPED_KEY_CHARS and set(m) == {"type", "to", "blob"}
            for m in sent_out if m["type"] == "e2ee_key"
        )  # fmt: skip
        hellos = [m for m in relayed if m["type"] == "e2ee_hello"]
        assert all(len(m["public_key"]) == PUBLIC_KEY_CHARS for m in hellos), hellos
        assert not any(m["from"] == "carol" for m in relayed)  # carol never took part
        secrets = {m["blob"] for m in keys} | {
            m["public_key"] for m in hellos if m["public_key"] != OFF_NOTICE
        }
        server_log = sfu_server.log_path.read_text(errors="replace")
        audit = json.dumps(list(export(AuditPaths.in_data_dir(sfu_server.data_dir))))
        for value in secrets:
            assert value not in server_log and value not in audit
        for page in pages:
            assert not [line for line in page.participant.console if "pageerror" in line]
    finally:
        for page in pages:
            await page.participant.close()
