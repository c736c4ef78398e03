"""Flood a running SFU's file channel while measuring its control channel.

    python -m benchmarks.dataflood --url https://127.0.0.1:PORT --data-dir D [--seconds 60]

Three data-only members join room ROOM: alice sends bob files back to back as fast
as the file channel takes them (the room's quota and back-pressure decide how
fast), and carol sends bob a chat message every PING_INTERVAL_S; bob's arrival
time minus carol's send time is the control channel's delay. Prints "flooding" when
the flood runs, and one JSON line when it stops: after --seconds, or at SIGINT /
SIGTERM. Used by benchmarks/isolation.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.loadgen.datamember import DataMember, join_data_member, send_file
from benchmarks.loadgen.stats import percentile
from benchmarks.loadgen.whip import pinned_context

ROOM = "flood"
FILE_BYTES = 4 * 1024 * 1024
PING_INTERVAL_S = 0.1
MAX_SECONDS = 600.0


async def _pinger(carol: DataMember, bob: DataMember, stop: asyncio.Event) -> list[float]:
    delays: list[float] = []
    seq = 0
    while not stop.is_set():
        seq += 1
        body = f"ping {seq}"
        if carol.control.readyState != "open":
            sys.stderr.write(f"carol's control channel is {carol.control.readyState}\n")
            break
        sent = time.monotonic()
        carol.control.send(json.dumps({"type": "chat", "body": body}))
        deadline = sent + 5.0
        while time.monotonic() < deadline:
            arrived = [m["_at"] for m in bob.control_in if m.get("body") == body]
            if arrived:
                delays.append(arrived[0] - sent)
                break
            await asyncio.sleep(0.001)
        else:
            delays.append(float("inf"))
        bob.control_in.clear()
        try:
            await asyncio.wait_for(stop.wait(), PING_INTERVAL_S)
        except TimeoutError:
            pass
    return delays


async def _flooder(alice: DataMember, bob: DataMember, stop: asyncio.Event) -> None:
    payload = os.urandom(FILE_BYTES)
    sent = 0
    n = 0
    while not stop.is_set():
        n += 1
        await send_file(alice, payload, f"flood{n}", timeout_s=30)
        sent += FILE_BYTES
        # The next file only when bob has this one: the relay's window, not ours.
        while bob.received_bytes() < sent and not stop.is_set():
            await asyncio.sleep(0.01)


async def run(url: str, data_dir: Path, seconds: float) -> dict[str, Any]:
    import aioice

    from signaling.tokens import SigningKeys

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    keys = SigningKeys.load_or_create(data_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    connector = aiohttp.TCPConnector(ssl=pinned_context(data_dir / "tls" / "cert.pem"))
    async with aiohttp.ClientSession(connector=connector) as http:
        alice, bob, carol = [
            await join_data_member(http, url, keys.issue(identity=who, room=ROOM), who)
            for who in ("alice", "bob", "carol")
        ]
        try:
            print("flooding", flush=True)
            started = time.monotonic()
            loop.call_later(min(seconds, MAX_SECONDS), stop.set)
            pings = asyncio.create_task(_pinger(carol, bob, stop))
            flood = asyncio.create_task(_flooder(alice, bob, stop))
            await stop.wait()
            # A transfer may be mid-way (or held by back-pressure): stop it, don't wait.
            flood.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flood
            received = bob.received_bytes()
            elapsed = time.monotonic() - started
            delays = sorted(await pings)
        finally:
            for m in (alice, bob, carol):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await m.close()
    delays_us = [int(d * 1e6) if d != float("inf") else 10**9 for d in delays]
    return {
        "seconds": round(elapsed, 3),
        "file_bytes": received,
        "file_mb_per_s": round(received / elapsed / 1e6, 3),
        "pings": len(delays_us),
        "control_delay_ms": {
            "p50": percentile(delays_us, 50) / 1000 if delays_us else None,
            "p95": percentile(delays_us, 95) / 1000 if delays_us else None,
            "max": delays_us[-1] / 1000 if delays_us else None,
        },
        "pings_lost": sum(1 for d in delays if d == float("inf")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.url, args.data_dir, args.seconds))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
