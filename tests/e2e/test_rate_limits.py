"""Rate limits on a real server with strict limits.toml: auth back-off, WebSocket
message floods and connection caps, their audit records and /metrics counters."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.harness import REPO_ROOT, SfuServer, free_tcp_port, free_udp_port
from tests.peers import client_ssl

STRICT = """[signaling]
requests_per_s = 1000
requests_burst = 1000
connections_per_ip = 3
messages_per_s = 5
messages_burst = 10
auth_failures = 3
auth_backoff_s = 2
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SfuServer, int]]:
    data_dir: Path = tmp_path_factory.mktemp("sfu-limits")
    (data_dir / "limits.toml").write_text(STRICT)
    metrics_port = free_tcp_port()
    sfu = SfuServer(
        data_dir=data_dir,
        port=free_tcp_port(),
        media_port=free_udp_port(),
        log_path=data_dir / "server.log",
        extra_args=["--metrics-port", str(metrics_port)],
    )
    try:
        sfu.start()
        yield sfu, metrics_port
    finally:
        sfu.stop()


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def _audit_events(sfu: SfuServer, event: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "signaling.cli", "audit", "export", "--data-dir", str(sfu.data_dir)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return [r for r in records if r.get("event") == event]


async def _whip(http: aiohttp.ClientSession, sfu: SfuServer, token: str) -> aiohttp.ClientResponse:
    return await http.post(
        f"{sfu.base_url}/whip/limits",
        data="v=0\r\n",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"},
    )


async def test_repeated_bad_tokens_back_off_the_address_even_for_a_good_token(
    server: tuple[SfuServer, int],
) -> None:
    sfu, metrics_port = server
    good = sfu.token("limits", "alice")
    ssl_context: ssl.SSLContext = client_ssl(sfu.cert_path)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context)) as http:
        statuses = []
        for _ in range(3):
            async with await _whip(http, sfu, "not.a.token") as response:
                statuses.append(response.status)
        assert statuses == [401, 401, 401]  # the third failure starts a 2 s back-off
        async with await _whip(http, sfu, good) as response:
            assert response.status == 429
            assert int(response.headers["Retry-After"]) in (1, 2)
            assert "rate_limited" in await response.text()
        # The WebSocket upgrade is refused the same way while the back-off lasts.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(sfu.base_url + "/ws")
        assert refused.value.status == 429
        await asyncio.sleep(2.1)
        async with await _whip(http, sfu, good) as response:
            assert response.status == 400  # past the back-off: the (bad) offer is read
    assert 'sfu_rate_limited_total{limit="auth_backoff"} 3.0' in _metrics(metrics_port)
    trips = await asyncio.to_thread(_audit_events, sfu, "rate_limit")
    assert [t["detail"].get("limit") for t in trips] == ["auth_backoff"]
    assert trips[0]["detail"].get("remote") == "127.0.0.1"


async def test_a_message_flood_is_refused_then_closed_and_others_are_unaffected(
    server: tuple[SfuServer, int],
) -> None:
    sfu, metrics_port = server
    ssl_context = client_ssl(sfu.cert_path)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context)) as http:
        bystander = await http.ws_connect(sfu.base_url + "/ws")
        flooder = await http.ws_connect(sfu.base_url + "/ws")
        join = {"type": "join", "version": 1, "token": sfu.token("limits", "flood")}
        await flooder.send_json(join)
        assert (await flooder.receive_json(timeout=5))["type"] == "joined"
        # Over the burst: the first refused message gets one rate_limited error.
        for _ in range(15):
            await flooder.send_json({"type": "nonsense"})
        errors = []
        while True:
            message = await flooder.receive_json(timeout=5)
            errors.append(message["code"])
            if message["code"] == "rate_limited":
                break
        assert errors.count("unknown_type") == 9 and errors[-1] == "rate_limited"
        # A sustained flood closes the connection with 4429...
        for _ in range(300):
            if flooder.closed:
                break
            await flooder.send_json({"type": "nonsense"})
        async for _ in flooder:
            pass
        assert flooder.close_code == 4429
        # ...while another connection from the same address joins and is served.
        await bystander.send_json(
            {"type": "join", "version": 1, "token": sfu.token("limits", "calm")}
        )
        assert (await bystander.receive_json(timeout=5))["type"] == "joined"
        await bystander.close()
    assert 'sfu_rate_limited_total{limit="message"}' in _metrics(metrics_port)


async def test_websocket_connections_per_address_are_capped(
    server: tuple[SfuServer, int],
) -> None:
    sfu, metrics_port = server
    ssl_context = client_ssl(sfu.cert_path)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context)) as http:
        open_sockets = [await http.ws_connect(sfu.base_url + "/ws") for _ in range(3)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(sfu.base_url + "/ws")
        assert refused.value.status == 429
        await open_sockets[0].close()
        await asyncio.sleep(0.2)
        again = await http.ws_connect(sfu.base_url + "/ws")  # a slot is free again
        for ws in [again, *open_sockets[1:]]:
            await ws.close()
    assert 'sfu_rate_limited_total{limit="connection"} 1.0' in _metrics(metrics_port)
