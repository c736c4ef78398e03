"""The file-flood isolation scenario (benchmarks/isolation.py) against a real server."""

from __future__ import annotations

from benchmarks.isolation import run_once
from benchmarks.loadgen.server import SfuUnderTest


def test_a_file_flood_beside_a_call_loses_no_media_and_control_stays_prompt() -> None:
    server = SfuUnderTest.self_started_default(["--metrics-port", "0"])
    server.start()
    try:
        result = run_once(server, subscribers=4, seconds=4.0)
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
    # p99 under the flood is reported, not asserted: docs/DATA_CHANNELS.md and
    # benchmarks/RESULTS.md give the measured ratio against the 10 % target.
