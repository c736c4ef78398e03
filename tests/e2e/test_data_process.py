"""Data channels run in a process of their own (sfu/io/datalink.py, sfu/io/dataproc.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from benchmarks.loadgen.datamember import DataMember, join_data_member
from tests.e2e.harness import SfuServer, free_tcp_port, free_udp_port
from tests.peers import client_ssl, use_loopback_only, wait_for


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def stat_field(pid: int, number: int) -> int:
    """Field ``number`` (1-based, proc(5)) of /proc/<pid>/stat."""
    # The fields after "(comm)" start at number 3.
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[number - 3])


def nice_of(pid: int) -> int:
    return stat_field(pid, 19)


def cpus_of(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    return status.split("Cpus_allowed_list:", 1)[1].split()[0]


def idle_policy(pid: int) -> bool:
    return stat_field(pid, 41) == 5  # SCHED_IDLE


def data_port_of(member: DataMember) -> int:
    sdp = member.pc.remoteDescription.sdp
    section = sdp[sdp.index("m=application") :]
    return int(section.split()[1])


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SfuServer]:
    metrics_port = free_tcp_port()
    server = SfuServer(
        tmp_path, free_tcp_port(), free_udp_port(), tmp_path / "sfu.log",
        ["--metrics-port", str(metrics_port), "--data-cpus", "0"],
    )  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture
async def http(server: SfuServer) -> AsyncIterator[aiohttp.ClientSession]:
    use_loopback_only()
    connector = aiohttp.TCPConnector(ssl=client_ssl(server.cert_path))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def join(http: aiohttp.ClientSession, server: SfuServer, identity: str) -> DataMember:
    return await join_data_member(
        http, server.base_url, server.token("dp-room", identity), identity
    )


async def test_data_channels_are_served_by_a_lower_priority_process_on_another_port(
    http: aiohttp.ClientSession, server: SfuServer
) -> None:
    assert server.process is not None
    [data_pid] = children(server.process.pid)
    # The kernel preempts it whenever the media process wants the core.
    assert idle_policy(data_pid) and not idle_policy(server.process.pid)
    assert nice_of(data_pid) - nice_of(server.process.pid) == 10
    assert cpus_of(data_pid) == "0"  # --data-cpus
    alice, bob = await join(http, server, "alice"), await join(http, server, "bob")
    try:
        port = data_port_of(alice)
        assert port == data_port_of(bob)
        assert port != server.media_port
        for n in range(5):
            alice.control.send(json.dumps({"type": "chat", "body": f"hi {n}"}))
        assert await wait_for(lambda: len(bob.said("chat")) == 5, 10, 0.02)
        # The connection panel's view includes the data transport, as that process
        # reports it: its port, DTLS, and the pair ICE validated.
        data: list[dict[str, Any]] = []
        for _ in range(30):
            await alice.ws.send_json({"type": "connection_stats"})
            reply = await alice.ws.receive_json(timeout=5)
            while reply.get("type") != "connection_stats":
                reply = await alice.ws.receive_json(timeout=5)
            data = [t for t in reply["transports"] if t["carries"] == "data"]
            if data and data[0]["dtls_state"] == "connected":
                break
            await asyncio.sleep(0.2)
        [transport] = data
        assert transport["dtls_state"] == "connected" and transport["dtls_version"] == "DTLSv1.2"
        assert transport["dtls_cipher"]
        assert transport["ice"]["local"]["port"] == port
        gatherer = alice.pc.sctp.transport.transport.iceGatherer
        local_ports = {c.port for c in gatherer.getLocalCandidates()}
        assert transport["ice"]["remote"]["port"] in local_ports
        # The data process's counters reach the media process's /metrics.
        metrics_port = server.extra_args[server.extra_args.index("--metrics-port") + 1]
        url = f"http://127.0.0.1:{metrics_port}/metrics"

        async def control_messages() -> float:
            async with http.get(url) as response:
                text = await response.text()
            return metric(text, 'sfu_data_messages_total{channel="control"}')

        for _ in range(50):
            if await control_messages() >= 5:
                break
            await asyncio.sleep(0.1)
        assert await control_messages() >= 5
    finally:
        await alice.close()
        await bob.close()


async def test_a_dead_data_process_ends_its_sessions_and_is_started_again(
    http: aiohttp.ClientSession, server: SfuServer
) -> None:
    assert server.process is not None
    [first] = children(server.process.pid)
    alice = await join(http, server, "alice")
    try:
        os.kill(first, signal.SIGKILL)
        # Alice's session ends with a reason, like any dead transport's.
        message = await alice.ws.receive_json(timeout=10)
        while message.get("code") != "session_closed":
            message = await alice.ws.receive_json(timeout=10)
        assert "data channel process ended" in message["message"]
    finally:
        await alice.close()
    assert await wait_for(lambda: children(server.process.pid) not in ([], [first]), 20, 0.1)
    [second] = children(server.process.pid)
    # It lowers its own priority as soon as it runs.
    assert await wait_for(lambda: nice_of(second) - nice_of(server.process.pid) == 10, 10, 0.05)
    # The new process serves new sessions, and the server itself never stopped.
    assert await wait_for(lambda: "data channel process pid" in _second_start(server), 20, 0.1)
    bob, carol = await join(http, server, "bob"), await join(http, server, "carol")
    try:
        bob.control.send(json.dumps({"type": "chat", "body": "back"}))
        assert await wait_for(lambda: carol.said("chat"), 10, 0.02)
        assert server.process.poll() is None
    finally:
        await bob.close()
        await carol.close()


def _second_start(server: SfuServer) -> str:
    """The server log after the data process was started again."""
    log = server.log_path.read_text(errors="replace")
    marker = "starting it again"
    return log[log.index(marker) :] if marker in log else ""
