"""A file transfer survives its sender's reconnect, through a real server, with aiortc
peers as clients (docs/DATA_CHANNELS.md, "Resuming after a reconnect")."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from typing import Any

import aiohttp

from benchmarks.loadgen.datamember import (
    DataMember,
    join_data_member,
    offer_file,
    send_range,
)
from tests.e2e.harness import SfuServer
from tests.peers import wait_for

FILE_BYTES = 2 * 1024 * 1024


async def member(
    http: aiohttp.ClientSession, server: SfuServer, room: str, identity: str
) -> DataMember:
    token = await asyncio.to_thread(server.token, room, identity)
    return await join_data_member(http, server.base_url, token, identity)


async def settle(predicate: Any, timeout_s: float = 20) -> None:
    assert await wait_for(predicate, timeout_s, 0.02)


async def audit_records(server: SfuServer, room: str) -> list[dict[str, Any]]:
    from signaling.audit import AuditPaths, export

    paths = AuditPaths.in_data_dir(server.data_dir)
    records: list[dict[str, Any]] = []
    for _ in range(50):
        records = [r for r in export(paths)
                   if r["event"] == "file_transfer" and r["room"] == room]  # fmt: skip
        if records:
            break
        await asyncio.sleep(0.2)
    return records


async def test_a_sender_that_reconnects_halfway_resumes_and_the_recipient_verifies(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    data = os.urandom(FILE_BYTES)
    first = await member(http, sfu_server, "resume", "alice")
    bob = await member(http, sfu_server, "resume", "bob")
    second: DataMember | None = None
    try:
        number = int((await offer_file(first, data, "f1"))["transfer"])
        # Three quarters go out; the connection drops once the relay passed half, with
        # the rest still queued in the client or in flight: those bytes are lost.
        await send_range(first, number, data, 0, FILE_BYTES * 3 // 4)
        await settle(lambda: len(bob.chunks.get(number, b"")) >= FILE_BYTES // 2)
        await first.close()
        await settle(lambda: bob.said("file_paused"))
        paused = bob.said("file_paused")[0]
        assert paused["transfer"] == number and paused["reason"] == "sender left"
        assert paused["offset"] == len(bob.chunks[number]) < FILE_BYTES

        # A new session of the same identity offers the same file again, with resume.
        second = await member(http, sfu_server, "resume", "alice")
        accepted = await offer_file(second, data, "f1", resume=True)
        assert (accepted["transfer"], accepted["resumed"], accepted["offset"]) == (
            number, True, paused["offset"])  # fmt: skip
        await send_range(second, number, data, accepted["offset"], FILE_BYTES)
        await settle(lambda: bob.said("file_complete"), 60)
        received = bytes(bob.chunks[number])
        offer = bob.said("file_offer")[0]
        assert len(received) == FILE_BYTES
        assert hashlib.sha256(received).hexdigest() == offer["sha256"]
        assert [m["type"] for m in bob.file_in] == [
            "file_offer", "file_paused", "file_resumed", "file_complete"]  # fmt: skip
        assert bob.said("file_resumed")[0]["offset"] == paused["offset"]
        bob.file.send(json.dumps({"type": "file_received", "transfer": number, "ok": True}))
        await settle(lambda: second is not None and second.said("file_received"))
        assert second.said("file_received")[0]["from"] == "bob"
        records = await audit_records(sfu_server, "resume")
        assert records, "no file_transfer audit record"
        detail = records[0]["detail"]
        assert (records[0]["actor"], detail["result"], detail["relayed"], detail["resumed"]) == (
            "alice", "complete", FILE_BYTES, 1)  # fmt: skip
        assert detail["recipients"] == {"bob": "verified"}
    finally:
        for m in (first, bob, second):
            if m is not None:
                await m.close()


async def test_another_identity_cannot_take_over_a_paused_transfer(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    data = os.urandom(300_000)
    first = await member(http, sfu_server, "resume-other", "alice")
    bob = await member(http, sfu_server, "resume-other", "bob")
    mallory: DataMember | None = None
    second: DataMember | None = None
    try:
        number = int((await offer_file(first, data, "f1"))["transfer"])
        await send_range(first, number, data, 0, 100_000)
        await settle(lambda: len(bob.chunks.get(number, b"")) == 100_000)
        await first.close()
        await settle(lambda: bob.said("file_paused"))
        mallory = await member(http, sfu_server, "resume-other", "mallory")
        mallory.file.send(json.dumps({"type": "file_offer", "id": "f1", "name": "report.pdf",
                                      "size": len(data), "mime": "application/pdf",
                                      "sha256": hashlib.sha256(data).hexdigest(),
                                      "resume": True}))  # fmt: skip
        await settle(lambda: mallory is not None and mallory.said("error"))
        assert mallory.said("error")[0]["code"] == "not_found"
        # The transfer is still waiting for alice, who finishes it.
        second = await member(http, sfu_server, "resume-other", "alice")
        accepted = await offer_file(second, data, "f1", resume=True)
        assert accepted["offset"] == 100_000
        await send_range(second, number, data, 100_000, len(data))
        await settle(lambda: bob.said("file_complete"))
        assert bytes(bob.chunks[number]) == data
    finally:
        for m in (first, bob, mallory, second):
            if m is not None:
                await m.close()
