"""Measure a real browser meeting: join time to first decoded frame, and the server's
CPU while N Chromium pages hold a call.

    .venv/bin/python -m benchmarks.browser_room --pages 3 --duration 20 [--json out.json]

Starts its own server on loopback (run it inside `unshare -n` to be sure nothing
leaves the machine). CPU is read from /proc/<pid>/stat of the server process, not
from wall time; the browsers' own CPU is reported apart so nothing is hidden.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright

from tests.e2e.harness import (
    SfuServer,
    free_tcp_port,
    free_udp_port,
    launch_chromium,
    open_participant,
    poll,
)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def children_cpu_seconds(root_pid: int) -> float:
    """CPU of every process whose parent chain leads to root_pid (Chromium's tree)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    total = 0.0
    for pid in parents:
        node = pid
        while node in parents and node != root_pid:
            node = parents[node]
        if node == root_pid and pid != root_pid:
            try:
                total += cpu_seconds(pid)
            except OSError:
                pass
    return total


def health(server: SfuServer) -> dict[str, int]:
    ctx = ssl.create_default_context(cafile=str(server.cert_path))
    ctx.check_hostname = False
    with urllib.request.urlopen(server.base_url + "/healthz", context=ctx, timeout=5) as resp:
        data: dict[str, int] = json.load(resp)
        return data


async def run(pages: int, duration_s: float) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="sfu-bench-"))
    server = SfuServer(data_dir, free_tcp_port(), free_udp_port(), data_dir / "server.log")
    server.start()
    assert server.process is not None
    result: dict[str, Any] = {"pages": pages, "duration_s": duration_s}
    try:
        async with async_playwright() as playwright:
            browser = await launch_chromium(playwright, server.spki_pin())
            participants = []
            first_frame_ms: list[float] = []
            try:
                for i in range(pages):
                    participant = await open_participant(browser, server, "bench", f"p{i}")
                    participants.append(participant)
                    if i == 0:
                        continue
                    # Time from `joined` to the first decoded frame of every earlier page.
                    others = [f"p{j}" for j in range(i)]

                    def probe(p: Any = participant) -> Any:
                        return p.sfu("[sfu.joinedAt, sfu.firstFrameAt]")

                    def seen_all(v: Any, o: list[str] = others) -> bool:
                        return all(x in (v[1] or {}) for x in o)

                    frames = await poll(
                        probe,
                        seen_all,
                        timeout_s=15,
                        what="first frames",
                    )
                    joined_at, first = frames
                    first_frame_ms.extend(first[x] - joined_at for x in others)
                await asyncio.sleep(3)  # let every stream settle before measuring
                browser_pid = _chromium_root_pid()
                before = (time.monotonic(), cpu_seconds(server.process.pid), health(server))
                browser_before = children_cpu_seconds(browser_pid) if browser_pid else 0.0
                await asyncio.sleep(duration_s)
                after = (time.monotonic(), cpu_seconds(server.process.pid), health(server))
                browser_after = children_cpu_seconds(browser_pid) if browser_pid else 0.0
                stats = await participants[-1].sfu("sfu.mediaStats()")
            finally:
                for participant in participants:
                    await participant.close()
                await browser.close()
        wall = after[0] - before[0]
        cpu = after[1] - before[1]
        out_datagrams = after[2]["datagrams_out"] - before[2]["datagrams_out"]
        in_datagrams = after[2]["datagrams_in"] - before[2]["datagrams_in"]
        result.update(
            {
                "join_to_first_frame_ms": {
                    "median": round(statistics.median(first_frame_ms), 1),
                    "max": round(max(first_frame_ms), 1),
                    "samples": len(first_frame_ms),
                },
                "server_cpu_percent": round(100 * cpu / wall, 1),
                "browsers_cpu_percent": round(100 * (browser_after - browser_before) / wall, 1),
                "datagrams_in_per_s": round(in_datagrams / wall),
                "datagrams_out_per_s": round(out_datagrams / wall),
                "server_cpu_us_per_datagram_out": round(1e6 * cpu / max(1, out_datagrams), 1),
                "last_page_media": stats,
            }
        )
    finally:
        server.stop()
    return result


def _chromium_root_pid() -> int | None:
    """The newest Chromium browser process started by us (its renderers are children)."""
    newest: tuple[float, int] | None = None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if (
            cmdline
            and cmdline[0].endswith(b"chromium")
            and not any(arg.startswith(b"--type=") for arg in cmdline)
        ):
            started = float(fields[19])
            if newest is None or started > newest[0]:
                newest = (started, int(entry.name))
    return newest[1] if newest else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = asyncio.run(run(args.pages, args.duration))
    printable = {k: v for k, v in result.items() if k != "last_page_media"}
    print(json.dumps(printable, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
