"""Control and file channels through a real server, with aiortc peers as clients."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from typing import Any

import aiohttp

from benchmarks.loadgen.datamember import DataMember, file_offer, join_data_member, send_file
from tests.e2e.harness import SfuServer
from tests.peers import wait_for


async def member(
    http: aiohttp.ClientSession, server: SfuServer, room: str, identity: str, **token: Any
) -> DataMember:
    return await join_data_member(
        http, server.base_url, server.token(room, identity, **token), identity
    )


async def settle(predicate: Any, timeout_s: float = 10) -> None:
    assert await wait_for(predicate, timeout_s, 0.02)


async def test_chat_reaches_the_room_stamped_with_its_sender(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    alice = await member(http, sfu_server, "dc-chat", "alice")
    bob = await member(http, sfu_server, "dc-chat", "bob")
    carol = await member(http, sfu_server, "dc-chat", "carol")
    try:
        # A client cannot speak for somebody else: "from" is the server's.
        alice.control.send(json.dumps({"type": "chat", "body": "hello", "id": "m1",
                                       "from": "mallory"}))  # fmt: skip
        await settle(lambda: bob.said("chat") and carol.said("chat") and alice.said("sent"))
        chat = bob.said("chat")[0]
        assert (chat["from"], chat["body"], chat["id"]) == ("alice", "hello", "m1")
        assert carol.said("chat")[0]["seq"] == chat["seq"]
        assert alice.said("chat") == []  # not echoed to its sender
        # A direct message reaches only its addressee.
        bob.control.send(json.dumps({"type": "chat", "body": "psst", "to": "carol"}))
        bob.control.send(json.dumps({"type": "hand", "raised": True}))
        await settle(lambda: len(carol.said("chat")) == 2 and alice.said("hand"))
        assert carol.said("chat")[1]["to"] == "carol"
        assert [c["body"] for c in alice.said("chat")] == []
        # Bad input: a clear error, and the channel keeps working.
        for bad, code in [("{oops", "bad_json"), ('{"type": "teleport"}', "unknown_type"),
                          ('{"type": "chat", "body": ""}', "bad_message")]:  # fmt: skip
            alice.control.send(bad)
            await settle(lambda code=code: any(e["code"] == code for e in alice.said("error")))
        alice.control.send(json.dumps({"type": "reaction", "emoji": "+1"}))
        await settle(lambda: bob.said("reaction"))
    finally:
        for m in (alice, bob, carol):
            await m.close()


async def test_chat_needs_publish_control(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    quiet = await member(http, sfu_server, "dc-grant", "quiet", grants=["subscribe"])
    loud = await member(http, sfu_server, "dc-grant", "loud")
    try:
        quiet.control.send(json.dumps({"type": "chat", "body": "hi"}))
        await settle(lambda: quiet.said("error"))
        error = quiet.said("error")[0]
        assert error["code"] == "forbidden" and "publish:control" in error["message"]
        loud.control.send(json.dumps({"type": "chat", "body": "hi"}))
        await settle(lambda: quiet.said("chat"))  # it still receives
        await asyncio.sleep(0.2)
        assert loud.said("chat") == []
    finally:
        await quiet.close()
        await loud.close()


async def test_file_is_relayed_verified_and_audited(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    from signaling.audit import AuditPaths, export

    alice = await member(http, sfu_server, "dc-file", "alice")
    bob = await member(http, sfu_server, "dc-file", "bob")
    viewer = await member(http, sfu_server, "dc-file", "viewer", grants=["publish:control"])
    try:
        data = os.urandom(3 * 1024 * 1024 + 123)
        started = time.monotonic()
        number = await send_file(alice, data, "f1")
        await settle(lambda: len(bob.chunks.get(number, b"")) == len(data), 60)
        elapsed = time.monotonic() - started
        offer = bob.said("file_offer")[0]
        assert (offer["from"], offer["size"], offer["transfer"]) == ("alice", len(data), number)
        assert hashlib.sha256(bytes(bob.chunks[number])).hexdigest() == offer["sha256"]
        await settle(lambda: bob.said("file_complete"))
        # Without the subscribe grant nobody receives files.
        assert viewer.said("file_offer") == [] and not viewer.chunks
        bob.file.send(json.dumps({"type": "file_received", "transfer": number, "ok": True}))
        await settle(lambda: alice.said("file_received"))
        assert alice.said("file_received")[0]["from"] == "bob"
        paths = AuditPaths.in_data_dir(sfu_server.data_dir)
        records: list[dict[str, Any]] = []
        for _ in range(50):
            records = [r for r in export(paths) if r["event"] == "file_transfer"
                       and r["room"] == "dc-file"]  # fmt: skip
            if records:
                break
            await asyncio.sleep(0.2)
        assert records, "no file_transfer audit record"
        detail = records[0]["detail"]
        assert (records[0]["actor"], detail["result"], detail["size"]) == (
            "alice", "complete", len(data))  # fmt: skip
        assert detail["recipients"] == {"bob": "verified"}
        assert elapsed < 60, f"{len(data)} bytes took {elapsed:.1f} s"
    finally:
        for m in (alice, bob, viewer):
            await m.close()


async def test_refused_files_move_no_byte(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    rooms = sfu_server.data_dir / "rooms.toml"
    rooms.write_text('[rooms."dc-limits"]\nmax_file_bytes = 1000\nfile_types = ["image/*"]\n')
    try:
        sender = await member(http, sfu_server, "dc-limits", "sender")
        other = await member(http, sfu_server, "dc-limits", "other")
        nofile = await member(http, sfu_server, "dc-limits", "nofile",
                              grants=["publish:control", "subscribe"])  # fmt: skip
        try:
            big = json.dumps({"type": "file_offer", "id": "big", "name": "a.png", "size": 5000,
                              "mime": "image/png", "sha256": "0" * 64})  # fmt: skip
            sender.file.send(big)
            sender.file.send(file_offer(b"x" * 10, "pdf"))
            nofile.file.send(file_offer(b"x" * 10, "nogrant"))
            await settle(lambda: len(sender.said("error")) == 2 and nofile.said("error"))
            codes = {e["id"]: e["code"] for e in sender.said("error")}
            assert codes == {"big": "file_too_large", "pdf": "file_type_refused"}
            assert nofile.said("error")[0]["code"] == "forbidden"
            assert "publish:file" in nofile.said("error")[0]["message"]
            # A chunk for a transfer that was never accepted is refused too.
            sender.file.send((7).to_bytes(4, "big") + b"data")
            await settle(lambda: len(sender.said("error")) == 3)
            assert sender.said("error")[2]["code"] == "not_found"
            await asyncio.sleep(0.2)
            assert other.said("file_offer") == [] and not other.chunks
        finally:
            for m in (sender, other, nofile):
                await m.close()
    finally:
        rooms.unlink()


async def test_file_policy_sees_the_counterparty_and_its_obligations_are_audited(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    from signaling.audit import AuditPaths, export

    policy = sfu_server.data_dir / "policies" / "zz-files.policy"
    policy.write_text(
        'deny "no files to the auditor" when action is send_file and resource.room is "dc-pol"\n'
        '  and context.counterparty.identity is "auditor" because "the auditor gets no files"\n'
        'oblige "files here are audited with the counterparty" when action is send_file\n'
        '  and resource.room is "dc-pol" then audit_counterparty\n'
        'oblige "files here are not kept" when action is send_file and resource.room is "dc-pol"\n'
        "  then delete_files_at_end\n"
    )
    await asyncio.sleep(1.5)  # the policy directory is looked at once a second
    try:
        alice = await member(http, sfu_server, "dc-pol", "alice")
        bob = await member(http, sfu_server, "dc-pol", "bob")
        try:
            number = await send_file(alice, b"minutes", "ok")
            await settle(lambda: bob.received_bytes() == 7)
            auditor = await member(http, sfu_server, "dc-pol", "auditor")
            try:
                alice.file.send(file_offer(b"secret", "no"))
                await settle(lambda: any(e.get("id") == "no" for e in alice.said("error")))
                error = next(e for e in alice.said("error") if e.get("id") == "no")
                assert error["code"] == "forbidden"
                assert "no files to the auditor" in error["message"], error
                assert not auditor.chunks and bob.chunks.keys() == {number}
            finally:
                await auditor.close()
        finally:
            await alice.close()
            await bob.close()
    finally:
        policy.unlink()
    paths = AuditPaths.in_data_dir(sfu_server.data_dir)
    records: list[dict[str, Any]] = []
    for _ in range(50):
        records = [r for r in export(paths) if r["room"] == "dc-pol"]
        if {"policy_obligation", "policy_deny"} <= {r["event"] for r in records}:
            break
        await asyncio.sleep(0.2)
    obligations = {
        r["detail"]["obligation"]: r["detail"]
        for r in records
        if r["event"] == "policy_obligation" and r["detail"]["action"] == "send_file"
    }
    assert obligations["audit_counterparty"]["counterparties"] == ["bob"]
    assert obligations["delete_files_at_end"]["fulfilled"] == "relayed live, never stored"
    denials = [r["detail"] for r in records if r["event"] == "policy_deny"]
    assert any(
        d["action"] == "send_file" and d["rule"] == "no files to the auditor" for d in denials
    )


async def test_a_room_that_keeps_files_gives_them_to_later_members_then_deletes_them(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    from signaling.audit import AuditPaths, export

    rooms = sfu_server.data_dir / "rooms.toml"
    rooms.write_text('[rooms."dc-keep"]\nkeep_files = true\n')
    files = sfu_server.data_dir / "files"
    try:
        alice = await member(http, sfu_server, "dc-keep", "alice")
        bob = await member(http, sfu_server, "dc-keep", "bob")
        data = os.urandom(200_000)
        number = await send_file(alice, data, "kept")
        await settle(lambda: len(bob.chunks.get(number, b"")) == len(data), 30)
        assert next(m for m in alice.file_in if m.get("id") == "kept")["kept"] is True
        # Sealed at rest: the kept file is on disk, and none of its bytes in the clear.
        sealed = b"".join(p.read_bytes() for p in files.iterdir())
        assert len(sealed) > len(data) and data[:32] not in sealed and data[-32:] not in sealed
        await bob.close()
        carol = await member(http, sfu_server, "dc-keep", "carol")
        try:
            await settle(lambda: carol.said("file_complete"), 30)
            offer = carol.said("file_offer")[0]
            assert offer["kept"] is True and offer["from"] == "alice"
            received = bytes(carol.chunks[offer["transfer"]])
            assert hashlib.sha256(received).hexdigest() == offer["sha256"]
            carol.file.send(json.dumps({"type": "file_received", "transfer": offer["transfer"],
                                        "ok": True}))  # fmt: skip
            await asyncio.sleep(0.3)
        finally:
            await carol.close()
            await alice.close()
        # The meeting is over: the file is gone, and the audit says so.
        paths = AuditPaths.in_data_dir(sfu_server.data_dir)
        records: list[dict[str, Any]] = []
        for _ in range(100):
            records = [r for r in export(paths) if r["room"] == "dc-keep"]
            if any(r["event"] == "files_deleted" for r in records):
                break
            await asyncio.sleep(0.2)
        deleted = [r["detail"] for r in records if r["event"] == "files_deleted"]
        assert deleted and deleted[0]["reason"] == "meeting ended", records
        assert deleted[0]["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()
        assert list(files.iterdir()) == []
        kept = [r["detail"] for r in records
                if r["event"] == "file_transfer" and r["detail"].get("kept")]  # fmt: skip
        assert kept and kept[0]["recipients"] == {"carol": "verified"}, records
    finally:
        rooms.unlink()


async def test_moderator_actions_reach_the_control_channel_as_notices(
    http: aiohttp.ClientSession, sfu_server: SfuServer
) -> None:
    from signaling.tokens import SigningKeys
    from tests.e2e.test_moderation import api

    keys = SigningKeys.load_or_create(sfu_server.data_dir)
    alice = await member(http, sfu_server, "dc-mod", "alice")
    bob = await member(http, sfu_server, "dc-mod", "bob")
    admin = keys.issue(identity="ops", room="ops", grants=["admin"])
    try:
        status, body = await api(http, sfu_server, admin, "POST",
                                 "/admin/rooms/dc-mod/participants/alice/mute",
                                 {"kind": "audio", "muted": True})  # fmt: skip
        assert status == 200, body
        await settle(lambda: bob.said("notice") and alice.said("notice"))
        assert bob.said("notice")[0]["text"] == "a moderator muted alice's audio"
        status, body = await api(http, sfu_server, admin, "DELETE",
                                 "/admin/rooms/dc-mod/participants/alice")  # fmt: skip
        assert status == 200, body
        await settle(lambda: len(bob.said("notice")) == 2)
        assert bob.said("notice")[1]["text"] == "a moderator removed alice"
    finally:
        await alice.close()
        await bob.close()
