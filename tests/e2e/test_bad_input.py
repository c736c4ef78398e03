"""Hostile input at the transport level: old TLS, garbage UDP during a live call."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import ssl
import struct

import aiohttp
import pytest

from tests.e2e.harness import SfuServer
from tests.peers import wait_for, whep_subscribe, whip_publish


def test_tls12_client_is_refused_at_handshake(sfu_server: SfuServer) -> None:
    ctx = ssl.create_default_context(cafile=str(sfu_server.cert_path))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", sfu_server.port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            with ctx.wrap_socket(raw, server_hostname="localhost"):
                pass


def test_tls13_client_is_served(sfu_server: SfuServer) -> None:
    ctx = ssl.create_default_context(cafile=str(sfu_server.cert_path))
    with socket.create_connection(("127.0.0.1", sfu_server.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.3"


def garbage_datagrams(count: int, seed: int) -> list[bytes]:
    """Random datagrams shaped to hit every RFC 7983 branch of the demultiplexer."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        size = rng.randint(0, 1400)
        data = bytearray(rng.randbytes(size))
        shape = i % 5
        if shape == 0 and size >= 20:  # STUN-looking: cookie and matching length
            data[0] = rng.randint(0, 3)
            data[4:8] = b"\x21\x12\xa4\x42"
            struct.pack_into("!H", data, 2, (size - 20) & 0xFFFC)
        elif shape == 1 and size:  # DTLS content types
            data[0] = rng.choice([20, 21, 22, 23, rng.randint(20, 63)])
        elif shape == 2 and size >= 2:  # RTP / RTCP
            data[0] = 0x80 | rng.randint(0, 63)
            if rng.random() < 0.5:
                data[1] = rng.randint(192, 223)
        out.append(bytes(data))
    return out


async def test_udp_garbage_flood_does_not_disturb_a_live_call(
    sfu_server: SfuServer, http: aiohttp.ClientSession
) -> None:
    base = sfu_server.base_url + "/"
    pub = await whip_publish(http, base, "flood", sfu_server.token("flood", "cam"))
    sub = await whep_subscribe(http, base, "flood", sfu_server.token("flood", "tv", role="viewer"))
    try:
        got = sub.received.frames
        assert await wait_for(lambda: got["video"] > 20 and got["audio"] > 20, 20), got
        before_video, before_audio = got["video"], got["audio"]
        senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
        try:
            for i, datagram in enumerate(
                garbage_datagrams(10_000, seed=int.from_bytes(os.urandom(2)))
            ):
                senders[i % 4].sendto(datagram, ("127.0.0.1", sfu_server.media_port))
                if i % 200 == 199:
                    await asyncio.sleep(0.01)  # let the call's own packets interleave
        finally:
            for s in senders:
                s.close()
        # Media keeps flowing: ~2 s of audio (50 fps) and video after the flood.
        assert await wait_for(
            lambda: got["audio"] > before_audio + 100 and got["video"] > before_video + 30, 15
        ), got
        async with http.get(base + "healthz") as resp:
            assert resp.status == 200
            health = await resp.json()
        assert (
            health.get("unknown_sender", 0)
            + health.get("stun_rejected", 0)
            + health.get("malformed_stun", 0)
            >= 9_000
        )
        assert health.get("handler_errors", 0) == 0
    finally:
        await sub.close(http)
        await pub.close(http)
