"""Signaling relays end-to-end encryption messages as opaque blobs (docs/E2EE.md)."""

from __future__ import annotations

import aiohttp
import pytest

from benchmarks.loadgen.e2ee import (
    IdentityKeyPair,
    SenderKey,
    b64decode,
    b64encode,
    unwrap_sender_key,
    wrap_sender_key,
)
from tests.e2e.harness import SfuServer
from tests.e2e.test_ws_protocol import connect, join, recv


async def test_keys_reach_only_their_addressee_in_the_room_and_open_only_there(
    http: aiohttp.ClientSession,
    sfu_server: SfuServer,
) -> None:
    room = "e2ee-relay"
    alice, bob, carol = [await connect(http, sfu_server) for _ in range(3)]
    other_tenant = await connect(http, sfu_server)
    for ws, who in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        assert (await join(ws, sfu_server.token(room, who)))["type"] == "joined"
    assert (await join(other_tenant, sfu_server.token(room, "eve", tenant="elsewhere")))[
        "type"
    ] == "joined"
    for ws in (alice, bob, carol):  # drain the join notices
        try:
            while True:
                await recv(ws, timeout=0.3)
        except TimeoutError:
            pass
    ids = {who: IdentityKeyPair.generate() for who in ("alice", "bob")}
    # Alice announces her identity key to the room.
    await alice.send_json({"type": "e2ee_hello", "public_key": b64encode(ids["alice"].public_key)})
    for ws in (bob, carol):
        hello = await recv(ws)
        assert (hello["type"], hello["from"]) == ("e2ee_hello", "alice")
        assert b64decode(hello["public_key"]) == ids["alice"].public_key
    # Alice wraps her sender key for bob only; the server relays the blob unchanged.
    key = SenderKey.generate(0)
    blob = wrap_sender_key(ids["alice"], "alice", "bob", ids["bob"].public_key, key.kid,
                           key.base_key)  # fmt: skip
    await alice.send_json({"type": "e2ee_key", "to": "bob", "blob": b64encode(blob)})
    got = await recv(bob)
    assert (got["type"], got["from"], "to" in got) == ("e2ee_key", "alice", False)
    kid, base_key = unwrap_sender_key(ids["bob"], "bob", "alice", ids["alice"].public_key,
                                      b64decode(got["blob"]))  # fmt: skip
    assert (kid, base_key) == (key.kid, key.base_key)
    # Bad input is named; nobody else heard anything.
    for message, code in [
        ({"type": "e2ee_key", "to": "nobody", "blob": "AAAA"}, "not_found"),
        ({"type": "e2ee_key", "blob": "AAAA"}, "bad_message"),
        ({"type": "e2ee_key", "to": "bob", "blob": "not base64!"}, "bad_message"),
        ({"type": "e2ee_hello", "public_key": "x" * 65}, "bad_message"),
    ]:
        await alice.send_json(message)
        reply = await recv(alice)
        assert reply["code"] == code, (message, reply)
    for ws in (carol, other_tenant):
        with pytest.raises(TimeoutError):
            extra = await recv(ws, timeout=0.5)
            assert extra["type"] not in ("e2ee_key", "e2ee_hello"), extra
    for ws in (alice, bob, carol, other_tenant):
        await ws.close()
