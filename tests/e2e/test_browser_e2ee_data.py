"""End-to-end encrypted chat and files between real Chromium pages (docs/E2EE.md,
"Chat and files"): two locked pages read each other's chat and verify each other's
file; an unlocked page in the room cannot read them (and says so); a keyless aiortc
member shows that the server relayed only ciphertext; with the lock off, chat is in
clear again."""

from __future__ import annotations

import asyncio
import hashlib
import json
from functools import partial
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser

from benchmarks.loadgen.datamember import DataMember, join_data_member
from tests.e2e.harness import Participant, SfuServer, meeting, poll
from tests.peers import client_ssl, use_loopback_only, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHANNELS_TIMEOUT_S = 20.0
KEYS_TIMEOUT_S = 10.0
MESSAGE_TIMEOUT_S = 10.0
FILE_TIMEOUT_S = 60.0
CHAT_ONLY = ["publish:control", "publish:file", "subscribe"]
SECRET_CHAT = "the secret plan is 4711"
# A known plaintext, so that what the server relayed can be searched for it.
MARKER = "TOP-SECRET-PLAINTEXT-0123456789\n"
FILE_REPEATS = 49152  # 1.5 MiB
FILE_NAME = "plan-of-record.txt"
UNREADABLE = "encrypted message you cannot read"


async def lines_from(page: Participant, sender: str, predicate: Any) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = await poll(
        partial(page.sfu, "sfu.chat()"),
        lambda lines: any(line.get("from") == sender and predicate(line) for line in lines),
        timeout_s=MESSAGE_TIMEOUT_S,
        what=f"{page.identity} to show a chat line from {sender}",
    )
    return [line for line in lines if line.get("from") == sender and predicate(line)]


async def wait_encrypted(page: Participant, other: str) -> None:
    await poll(
        partial(page.sfu, "sfu.e2ee.members()"),
        lambda shown: shown.get(other, {}).get("state") == "encrypted",
        timeout_s=KEYS_TIMEOUT_S,
        what=f"{page.identity} to hold {other}'s key",
    )


async def decline_when_complete(member: DataMember) -> None:
    """What a keyless client does with a file it cannot read: take it all, then decline."""
    assert await wait_for(lambda: member.said("file_complete"), FILE_TIMEOUT_S, 0.05)
    transfer = member.said("file_complete")[0]["transfer"]
    member.file.send(json.dumps({"type": "file_cancel", "transfer": transfer}))


async def test_locked_pages_read_each_others_chat_and_files_and_the_server_sees_ciphertext(
    sfu_server: SfuServer, chromium: Browser
) -> None:
    from signaling.audit import AuditPaths, export

    room = "e2ee-data"
    use_loopback_only()
    connector = aiohttp.TCPConnector(ssl=client_ssl(sfu_server.cert_path))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        meeting(chromium, sfu_server, room, ["alice", "bob", "carol"], CHAT_ONLY) as pages,
    ):
        alice, bob, carol = pages
        token = await asyncio.to_thread(sfu_server.token, room, "dave", grants=CHAT_ONLY)
        dave = await join_data_member(http, sfu_server.base_url, token, "dave")
        try:
            for page in pages:
                await poll(partial(page.sfu, "sfu.chatReady()"), bool,
                           timeout_s=CHANNELS_TIMEOUT_S,
                           what=f"{page.identity}'s data channels to open")  # fmt: skip

            # --- alice and bob lock; carol does not; dave is a client without E2EE ---
            assert await alice.sfu("sfu.e2ee.setEnabled(true)") is True
            assert await bob.sfu("sfu.e2ee.setEnabled(true)") is True
            await wait_encrypted(alice, "bob")
            await wait_encrypted(bob, "alice")

            # --- a chat from a locked page ---
            assert await alice.sfu(f"sfu.sendChat({json.dumps(SECRET_CHAT)})") is True
            [at_bob] = await lines_from(bob, "alice", lambda line: line.get("e2ee") == "encrypted")
            assert at_bob["body"] == SECRET_CHAT
            bob_log = bob.page.locator('#chat-log li[data-e2ee="encrypted"]')
            assert SECRET_CHAT in await bob_log.inner_text()
            assert await bob_log.locator(".lock").count() == 1
            [at_carol] = await lines_from(carol, "alice", lambda line: "e2ee" in line)
            assert (at_carol["e2ee"], at_carol["body"]) == ("unreadable", UNREADABLE)
            carol_log = await carol.page.inner_text("#chat-log")
            assert UNREADABLE in carol_log and SECRET_CHAT not in carol_log
            assert await wait_for(lambda: dave.said("chat"), MESSAGE_TIMEOUT_S, 0.05)
            [relayed_chat] = dave.said("chat")
            assert relayed_chat["from"] == "alice" and "body" not in relayed_chat
            assert isinstance(relayed_chat["sealed"], str)
            assert "4711" not in json.dumps(relayed_chat)
            [own] = [line for line in await alice.sfu("sfu.chat()") if line.get("self")]
            assert own["e2ee"] == "encrypted"

            # --- a chat from the unlocked page: read everywhere, flagged at locked pages ---
            assert await carol.sfu("sfu.sendChat('hello from carol')") is True
            [clear_at_alice] = await lines_from(alice, "carol", lambda line: True)
            assert (clear_at_alice["body"], clear_at_alice["e2ee"]) == ("hello from carol",
                                                                        "clear")  # fmt: skip
            flagged = alice.page.locator('#chat-log li[data-e2ee="clear"] .not-encrypted')
            assert (await flagged.inner_text()).strip() == "(not encrypted)"

            # --- a 1.5 MiB file from a locked page ---
            plaintext = (MARKER * FILE_REPEATS).encode()
            dave_declines = asyncio.create_task(decline_when_complete(dave))
            sent = await alice.sfu(
                f"sfu.sendTextFile({json.dumps(FILE_NAME)}, {json.dumps(MARKER)}, {FILE_REPEATS})"
            )
            await dave_declines
            assert sent["verifiedBy"] == ["bob"]
            assert sorted(sent["declinedBy"]) == ["carol", "dave"]
            [at_bob_file] = await bob.sfu("sfu.files()")
            assert at_bob_file == {
                "name": FILE_NAME, "size": len(plaintext), "from": "alice",
                "received": len(plaintext), "verified": True,
                "sha256": hashlib.sha256(plaintext).hexdigest(), "encrypted": True,
                "readable": True, "pauses": 0, "interrupted": False,
            }  # fmt: skip
            [at_carol_file] = await carol.sfu("sfu.files()")
            assert (at_carol_file["readable"], at_carol_file["name"]) == (False, None)
            assert "cannot read" in await carol.page.inner_text("#chat-log")

            # What the server relayed to a keyless member: the type and size in clear
            # (the room's rules need them), nothing of the name, hash or contents.
            [offer] = dave.said("file_offer")
            assert "name" not in offer and "sha256" not in offer
            assert (offer["mime"], offer["plain_size"]) == ("text/plain", len(plaintext))
            assert FILE_NAME not in json.dumps(offer)
            assert hashlib.sha256(plaintext).hexdigest() not in json.dumps(offer)
            ciphertext = bytes(dave.chunks[offer["transfer"]])
            assert len(ciphertext) == offer["size"] > len(plaintext)
            assert b"TOP-SECRET" not in ciphertext and b"0123456789" not in ciphertext

            # The server's log and audit hold neither the chat nor the file's name.
            audit = json.dumps(list(export(AuditPaths.in_data_dir(sfu_server.data_dir))))
            server_log = sfu_server.log_path.read_text(errors="replace")
            for secret in (SECRET_CHAT, FILE_NAME, MARKER.strip()):
                assert secret not in audit and secret not in server_log
            assert '"sealed": true' in audit

            # --- alice turns E2EE off: her chat is in clear again; bob's stays sealed ---
            assert await alice.sfu("sfu.e2ee.setEnabled(false)") is False
            assert await alice.sfu("sfu.sendChat('now in the clear')") is True
            for page in (bob, carol):
                [line] = await lines_from(
                    page, "alice", lambda line: line.get("body") == "now in the clear"
                )
                assert line["e2ee"] == "clear"
            assert await wait_for(lambda: len(dave.said("chat")) == 3, MESSAGE_TIMEOUT_S, 0.05)
            assert dave.said("chat")[-1]["body"] == "now in the clear"
            assert await bob.sfu("sfu.sendChat('bob still seals')") is True
            [sealed_at_alice] = await lines_from(alice, "bob", lambda line: True)
            assert (sealed_at_alice["e2ee"], sealed_at_alice["body"]) == ("unreadable",
                                                                          UNREADABLE)  # fmt: skip
            for page in pages:
                assert not [line for line in page.console if "pageerror" in line]
                assert await page.sfu("sfu.dataErrors()") == []
        finally:
            await dave.close()
