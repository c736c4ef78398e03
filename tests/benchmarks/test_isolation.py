"""The file-flood isolation scenario (benchmarks/isolation.py) against a real server."""

from __future__ import annotations

import socket
from typing import Any

from benchmarks.isolation import run_once
from benchmarks.loadgen.server import SfuUnderTest, free_port


def test_a_file_flood_beside_a_call_loses_no_media_and_control_stays_prompt() -> None:
    metrics_port = free_port(socket.SOCK_STREAM)
    server = SfuUnderTest.self_started_default(["--metrics-port", str(metrics_port)])
    server.start()
    try:
        result = run_once(server, subscribers=4, seconds=4.0, metrics_port=metrics_port)
    finally:
        server.stop()
    flood, alone, flooded = result["flood"], result["alone"], result["flooded"]
    # The flood really ran beside the call, at the file quota's pace.
    assert flood["file_bytes"] > 1_000_000, flood
    # No media lost to it, and media kept flowing.
    assert alone["loss"] is not None and flooded["loss"] is not None
    assert flooded["loss"] <= alone["loss"] + 0.001, result
    assert flooded["audio_p99_us"] and flooded["video_p99_us"], result
    # Every control message next to the flood arrives, the typical one within 50 ms
    # (the aiortc clients share one busy process here; the Chromium test in
    # tests/e2e/test_browser_chat_files.py bounds 19 of 20 at 50 ms).
    assert flood["pings_lost"] == 0 and flood["control_delay_ms"]["p50"] < 50.0, flood
    # The flood's CPU is spent in the data channel process, not in the media process
    # (inline, the media process went from about 6 % to 40-50 % of a core).
    assert flooded["data_process_cpu_percent"] > 5.0, result
    assert flooded["server_cpu_percent"] < alone["server_cpu_percent"] + 5.0, result
    # And media does not wait in the media socket for it: reads that found their
    # oldest datagram over 1 ms old stay about as rare as without the flood (a guard
    # against gross regressions; in 10 s runs inline, with the flood on the media
    # loop, there were 20-40 times as many, benchmarks/RESULTS.md).

    def waited(figures: dict[str, Any]) -> float:
        wait = figures["socket_wait"]
        return float(wait["batches"] * wait["over_1ms"])

    assert waited(flooded) <= 2 * waited(alone) + 20, result
    # p99 under the flood is reported, not asserted: docs/DATA_CHANNELS.md and
    # benchmarks/RESULTS.md give the measured ratio against the 10 % target.
