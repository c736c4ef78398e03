"""Policies against a real server: the default file, a live reload, a denied join."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.e2e.harness import SfuServer
from tests.e2e.test_ws_protocol import connect, expect_closed, join


async def test_default_policy_is_written_and_a_reloaded_deny_refuses_join_naming_the_rule(
    sfu_server: SfuServer,
    http: aiohttp.ClientSession,
) -> None:
    policies = sfu_server.data_dir / "policies"
    assert (policies / "default.policy").exists()
    token = sfu_server.token("vault", "mallory")
    ws = await connect(http, sfu_server)
    assert (await join(ws, token))["type"] == "joined"
    await ws.close()
    (policies / "zz-vault.policy").write_text(
        'deny "nobody enters the vault" when resource.room is "vault" because "closed"\n'
    )
    await asyncio.sleep(1.5)  # the directory is looked at once a second
    ws = await connect(http, sfu_server)
    reply = await join(ws, token)
    assert reply["code"] == "forbidden"
    assert "'nobody enters the vault' (zz-vault.policy:1): closed" in reply["message"]
    await expect_closed(ws, 4403)
    (policies / "zz-vault.policy").unlink()
