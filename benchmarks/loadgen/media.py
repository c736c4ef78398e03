"""Synthetic Opus and VP8 RTP streams that carry a send timestamp in every payload.

The SFU rewrites SSRC, sequence number and timestamp and drops header extensions, but
forwards payloads byte for byte, so the measurement probe rides in the payload:

    audio:  send_ns (8 bytes, big-endian) | counter (4) | filler
    video:  VP8 descriptor (1) | VP8 frame tag (3) | send_ns (8) | counter (4) | filler

``send_ns`` is ``time.monotonic_ns()`` taken just before the packet is built; on Linux
that clock is system-wide, so a subscriber in another process can subtract it from its
own receive time. ``counter`` counts the track's packets from 0.

The VP8 descriptor byte is 0x10 (S=1, PID=0) on the first packet of a frame, else 0x00.
The 3-byte frame tag follows it on every packet so the probe has a fixed offset; on a
frame's first packet it is what the SFU reads: bit 0 clear marks a keyframe (RFC 6386
9.1), which is where the SFU starts forwarding video to a new subscriber.
"""

from __future__ import annotations

import math
import os
import secrets
import struct
from collections.abc import Callable, Iterator

from benchmarks.loadgen.offer import AUDIO_PT, VIDEO_PT

PROBE = struct.Struct("!QI")
AUDIO_PROBE_OFFSET = 0
VIDEO_PROBE_OFFSET = 4
_RTP_HEADER = struct.Struct("!BBHII")
_FILLER = os.urandom(1500)

AUDIO_INTERVAL_S = 0.020  # Opus 20 ms frames: 50 packets per second
AUDIO_PAYLOAD_BYTES = 100  # ~40 kbit/s, a typical voice bitrate
AUDIO_TS_STEP = 960  # 20 ms at 48 kHz
VIDEO_FPS = 30
VIDEO_TS_STEP = 90_000 // VIDEO_FPS
VIDEO_MAX_PAYLOAD = 1200
KEYFRAME_EVERY_FRAMES = 60
_VP8_START = 0x10  # S=1, PID=0
_VP8_CONTINUE = 0x00
_VP8_KEY_TAG = b"\x10\x00\x00"  # P=0 (keyframe), show_frame=1
_VP8_DELTA_TAG = b"\x11\x00\x00"  # P=1 (interframe), show_frame=1


def probe_offset(kind: str) -> int:
    return AUDIO_PROBE_OFFSET if kind == "audio" else VIDEO_PROBE_OFFSET


def read_probe(payload: bytes, kind: str) -> tuple[int, int] | None:
    """(send_ns, counter) from a payload, or None if it is too short to hold them."""
    offset = probe_offset(kind)
    if len(payload) < offset + PROBE.size:
        return None
    send_ns, counter = PROBE.unpack_from(payload, offset)
    return send_ns, counter


def rtp_header(pt: int, marker: bool, seq: int, ts: int, ssrc: int) -> bytes:
    return _RTP_HEADER.pack(0x80, pt | (0x80 if marker else 0), seq, ts, ssrc)


class AudioSource:
    """An Opus-shaped stream: one ~100-byte packet every 20 ms."""

    kind = "audio"
    interval_s = AUDIO_INTERVAL_S

    def __init__(self, ssrc: int, payload_bytes: int = AUDIO_PAYLOAD_BYTES) -> None:
        self.ssrc = ssrc
        self.payload_bytes = max(payload_bytes, PROBE.size)
        self.seq = secrets.randbelow(0x10000)
        self.ts = secrets.randbits(32)
        self.counter = 0

    def packets(self, clock: Callable[[], int]) -> Iterator[tuple[bytes, int]]:
        """The next period's packets as (RTP packet, send_ns)."""
        send_ns = clock()
        payload = PROBE.pack(send_ns, self.counter & 0xFFFFFFFF)
        filler = _FILLER[: self.payload_bytes - len(payload)]
        header = rtp_header(AUDIO_PT, False, self.seq, self.ts, self.ssrc)
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + AUDIO_TS_STEP) & 0xFFFFFFFF
        self.counter += 1
        yield header + payload + filler, send_ns


class VideoSource:
    """A VP8-shaped stream at a constant bitrate: 30 frames/s, each split into
    ceil(frame bytes / 1200) equal packets sent back to back, marker on the last."""

    kind = "video"
    interval_s = 1 / VIDEO_FPS

    def __init__(self, ssrc: int, bitrate_kbps: float) -> None:
        self.ssrc = ssrc
        frame_bytes = max(1, int(bitrate_kbps * 1000 / 8 / VIDEO_FPS))
        self.packets_per_frame = math.ceil(frame_bytes / VIDEO_MAX_PAYLOAD)
        self.packet_bytes = max(
            VIDEO_PROBE_OFFSET + PROBE.size, math.ceil(frame_bytes / self.packets_per_frame)
        )
        self.seq = secrets.randbelow(0x10000)
        self.ts = secrets.randbits(32)
        self.counter = 0
        self.frame = 0
        self.keyframes = 0
        self._keyframe_requested = False

    def request_keyframe(self) -> None:
        """A PLI or FIR arrived: the next frame is a keyframe."""
        self._keyframe_requested = True

    def packets(self, clock: Callable[[], int]) -> Iterator[tuple[bytes, int]]:
        """The next frame's packets as (RTP packet, send_ns)."""
        keyframe = self._keyframe_requested or self.frame % KEYFRAME_EVERY_FRAMES == 0
        self._keyframe_requested = False
        if keyframe:
            self.keyframes += 1
        last = self.packets_per_frame - 1
        for index in range(self.packets_per_frame):
            send_ns = clock()
            descriptor = bytes((_VP8_START if index == 0 else _VP8_CONTINUE,))
            tag = _VP8_KEY_TAG if keyframe else _VP8_DELTA_TAG
            probe = PROBE.pack(send_ns, self.counter & 0xFFFFFFFF)
            head = descriptor + tag + probe
            header = rtp_header(VIDEO_PT, index == last, self.seq, self.ts, self.ssrc)
            self.seq = (self.seq + 1) & 0xFFFF
            self.counter += 1
            yield header + head + _FILLER[: self.packet_bytes - len(head)], send_ns
        self.ts = (self.ts + VIDEO_TS_STEP) & 0xFFFFFFFF
        self.frame += 1
