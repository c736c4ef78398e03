"""The native datapath's C pieces agree with their pure-Python references, input for input.

native/datapath.h reimplements four pieces of the Python receive path; each is driven here
side by side with its reference, on hand-picked cases and on property-based sequences:

- keyframe detection: native.fanout.is_keyframe against sfu.wire.codecs.is_keyframe, on
  random payloads and on payloads built to reach the deep branches of each payload format;
- RFC 3550 receiver statistics: native.fanout.NativeRxStats against
  sfu.proto.rtp_stats.RtpReceiverStats, every property after every call and every report
  block (jitter compared as exactly equal floats);
- the token-bucket rate limiter: NativeTrack.check_rate against
  sfu.routing.track.RateLimiter.check, answer for answer;
- the NACK cache: NativeTrack.cache against sfu.routing.track.PacketCache, lookup for lookup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.io.datapath import create_datapath
from sfu.proto.rtp_stats import RtpReceiverStats
from sfu.routing.track import PacketCache, RateLimiter
from sfu.wire.codecs import is_keyframe as python_is_keyframe
from sfu.wire.rtcp import ReportBlock
from tests.fuzzing import examples
from tests.wire.test_codecs import (
    IDR,
    PPS,
    SLICE,
    SPS,
    VP8_DELTA_TAG,
    VP8_KEY_TAG,
    VP9_FRAME,
    stap_a,
)

if TYPE_CHECKING:
    from native.fanout import NativeCache, NativeDatapath


def native_datapath() -> NativeDatapath:
    """The native datapath, loaded as the project loads it (libsrtp made RTLD_GLOBAL)."""
    datapath = create_datapath("native", lambda data, addr: None)
    assert datapath.name == "native"
    return cast("NativeDatapath", datapath)


DATAPATH = native_datapath()
# native.fanout resolves libsrtp's symbols at load: importable only after the call above.
from native.fanout import NativeRxStats  # noqa: E402
from native.fanout import is_keyframe as native_is_keyframe  # noqa: E402

U32 = 0xFFFF_FFFF
U64 = 0xFFFF_FFFF_FFFF_FFFF


# ---- keyframe detection ----


@pytest.mark.parametrize(
    ("codec", "payload", "expected"),
    [
        ("VP8", b"\x10" + VP8_KEY_TAG, True),
        ("VP8", b"\x10" + VP8_DELTA_TAG, False),
        ("VP8", b"\x11" + VP8_KEY_TAG, False),  # partition 1
        ("VP8", b"\x90\xf0\x80\x01\x05\x20" + VP8_KEY_TAG, True),  # X with I (15 bits), L, T, K
        ("VP8", b"\x90\x40\x04" + VP8_DELTA_TAG, False),  # TL0PICIDX is not the frame tag
        ("VP8", b"\x90\xf0\x80\x01\x05\x20", False),  # descriptor only
        ("vp8", b"\x10" + VP8_KEY_TAG, True),
        ("VP9", b"\xa8\x80\x01\x00\x05" + VP9_FRAME, True),  # non-flexible, SID 0
        ("VP9", b"\xa8\x80\x01\x02\x05" + VP9_FRAME, False),  # SID 1
        ("VP9", b"\xb8\x01\x00" + VP9_FRAME, True),  # flexible: no TL0PICIDX
        ("VP9", b"\x8a\x01\x58" + b"\x01\x40\x00\xb4" * 3 + b"\x01\x04\x01" + VP9_FRAME, True),
        ("VP9", b"\x8a\x01\x58" + b"\x01\x40\x00\xb4" * 3 + b"\x02\x04", False),  # groups cut
        ("Vp9", b"\x08" + VP9_FRAME, True),
        ("H264", stap_a(PPS, SPS), True),
        ("H264", stap_a(PPS, SLICE), False),
        ("H264", stap_a(PPS)[:-1], False),  # NAL unit size overruns the packet
        ("H264", stap_a(PPS) + b"\x00\x00" + SPS, False),  # zero-size NAL unit
        ("H264", b"\x7c\x85" + IDR[1:], True),  # FU-A start of an IDR
        ("H264", b"\x7c\x05" + IDR[1:], False),  # FU-A continuation
        ("h264", IDR, True),
        ("AV1", b"\x18\x0a", True),
        ("AV1", b"\x88\x0a", False),  # Z=1
        ("av1", b"\x08", False),  # too short
        ("OPUS", IDR, False),
        ("opus", b"\x10" + VP8_KEY_TAG, False),
        ("", IDR, False),
    ],
)
def test_keyframe_examples(codec: str, payload: bytes, expected: bool) -> None:
    assert python_is_keyframe(codec, payload) is expected
    assert native_is_keyframe(codec, payload) is expected


CODEC_NAMES = st.one_of(
    st.sampled_from(["VP8", "VP9", "H264", "AV1", "OPUS", "vp8", "vp9", "h264", "av1", "Vp8"]),
    st.text(max_size=6),
)


def case_variants(codec: str) -> st.SearchStrategy[str]:
    return st.sampled_from([codec, codec.lower(), codec.capitalize()])


def maybe_truncated(draw: st.DrawFn, payload: bytes) -> bytes:
    """Mostly the whole payload, else one cut short by a few bytes or anywhere: the
    detectors' answers turn on whether the last field they read is all there."""
    cut = draw(st.sampled_from(["none", "none", "end", "anywhere"]))
    if cut == "none":
        return payload
    if cut == "end":
        return payload[: max(0, len(payload) - draw(st.integers(1, 3)))]
    return payload[: draw(st.integers(0, len(payload)))]


def flag(draw: st.DrawFn, bit: int, likely: bool | None = None) -> int:
    """`bit` or 0; `likely` skews the draw towards set (True) or clear (False)."""
    if likely is None:
        return bit if draw(st.booleans()) else 0
    values = [bit, bit, bit, 0] if likely else [0, 0, 0, bit]
    return draw(st.sampled_from(values))


def byte(draw: st.DrawFn) -> int:
    return draw(st.integers(0, 255))


def picture_id(draw: st.DrawFn) -> bytes:
    """A VP8/VP9 picture id: 7 bits, or 15 with the M bit."""
    if draw(st.booleans()):
        return bytes([0x80 | draw(st.integers(0, 0x7F)), byte(draw)])
    return bytes([draw(st.integers(0, 0x7F))])


@st.composite
def vp8_payloads(draw: st.DrawFn) -> bytes:
    """RFC 7741 descriptors with any mix of X/I/L/T/K, then a frame tag (P set or not)."""
    extended = flag(draw, 0x80)
    b0 = (
        extended
        | flag(draw, 0x40, likely=False)  # R
        | flag(draw, 0x20)  # N
        | flag(draw, 0x10, likely=True)  # S
        | draw(st.sampled_from([0, 0, 0, 1, 4, 7]))  # PID
    )
    out = bytearray([b0])
    if extended:
        has_i, has_l = flag(draw, 0x80), flag(draw, 0x40)
        has_t, has_k = flag(draw, 0x20), flag(draw, 0x10)
        out.append(has_i | has_l | has_t | has_k | draw(st.integers(0, 0x0F)))
        if has_i:
            out += picture_id(draw)
        if has_l:
            out.append(byte(draw))  # TL0PICIDX
        if has_t or has_k:
            out.append(byte(draw))  # TID/Y/KEYIDX
    out.append(draw(st.integers(0, 0x7F)) << 1 | flag(draw, 0x01))  # size bits | P
    out += draw(st.binary(max_size=6))
    return maybe_truncated(draw, bytes(out))


@st.composite
def vp9_payloads(draw: st.DrawFn) -> bytes:
    """VP9 descriptors, flexible or not, with layer indices and scalability structures."""
    has_pid, has_layers, has_ss = flag(draw, 0x80), flag(draw, 0x20), flag(draw, 0x02)
    flexible = flag(draw, 0x10)
    b0 = (
        has_pid
        | flag(draw, 0x40, likely=False)  # P
        | has_layers
        | flexible
        | flag(draw, 0x08, likely=True)  # B
        | flag(draw, 0x04)  # E
        | has_ss
        | flag(draw, 0x01)  # Z
    )
    out = bytearray([b0])
    if has_pid:
        out += picture_id(draw)
    if has_layers:
        spatial = draw(st.sampled_from([0, 0, 0, 1, 2, 4, 7]))  # 4: the top bit alone
        out.append(draw(st.integers(0, 7)) << 5 | flag(draw, 0x10) | spatial << 1 | flag(draw, 1))
        if not flexible:
            out.append(byte(draw))  # TL0PICIDX
    if has_ss:
        spatial_layers = draw(st.integers(0, 7))  # N_S - 1
        has_y, has_g = flag(draw, 0x10), flag(draw, 0x08)
        out.append(spatial_layers << 5 | has_y | has_g | draw(st.integers(0, 7)))
        if has_y:
            out += draw(st.binary(min_size=4, max_size=4)) * (spatial_layers + 1)
        if has_g:
            groups = draw(st.one_of(st.integers(0, 4), st.integers(0, 255)))
            out.append(groups)
            for _ in range(min(groups, 8)):  # beyond 8, truncation is what is tested
                references = draw(st.integers(0, 3))
                out.append(draw(st.integers(0, 7)) << 5 | references << 2 | draw(st.integers(0, 3)))
                out += draw(st.binary(min_size=references, max_size=references))
    out += draw(st.binary(max_size=2))  # a keyframe needs one byte past the descriptor
    return maybe_truncated(draw, bytes(out))


H264_TYPES = st.one_of(st.sampled_from([1, 5, 6, 7, 8, 24, 28]), st.integers(0, 31))
NAL_UNITS = st.builds(
    lambda header, body: bytes([header]) + body,
    st.one_of(st.sampled_from([0x41, 0x65, 0x06, 0x67, 0x68, 0x09]), st.integers(0, 255)),
    st.binary(max_size=6),
)


@st.composite
def h264_payloads(draw: st.DrawFn) -> bytes:
    """Single NAL units, FU-A, and STAP-A with several NAL units, one of whose sizes
    may lie (zero, short, one too long, far too long)."""
    nri = draw(st.integers(0, 7)) << 5  # F and NRI: ignored by the detector
    shape = draw(st.sampled_from(["single", "stap-a", "stap-a", "fu-a"]))
    if shape == "single":
        out = bytes([nri | draw(H264_TYPES)]) + draw(st.binary(max_size=8))
    elif shape == "fu-a":
        fu = flag(draw, 0x80, likely=True) | flag(draw, 0x40) | flag(draw, 0x20, likely=False)
        out = bytes([nri | 28, fu | draw(H264_TYPES)]) + draw(st.binary(max_size=4))
    else:
        nalus = draw(st.lists(NAL_UNITS, max_size=5))
        sizes = [len(nalu) for nalu in nalus]
        if len(nalus) > 0 and draw(st.booleans()):
            k = draw(st.integers(0, len(nalus) - 1))
            sizes[k] = draw(st.sampled_from([0, sizes[k] - 1, sizes[k] + 1, 0xFFFF]))
        out = bytes([nri | 24])
        out += b"".join(size.to_bytes(2, "big") + n for size, n in zip(sizes, nalus, strict=True))
        out += draw(st.sampled_from([b""] * 3 + [b"\x00", b"\x00\x00", b"\x00\x01"]))
    return maybe_truncated(draw, out)


def assert_keyframe_agrees(codec: str, payload: bytes) -> None:
    assert native_is_keyframe(codec, payload) is python_is_keyframe(codec, payload)


@settings(max_examples=examples(1000))
@given(CODEC_NAMES, st.binary(max_size=48))
def test_keyframe_agrees_on_random_payloads(codec: str, payload: bytes) -> None:
    assert_keyframe_agrees(codec, payload)


@settings(max_examples=examples(1000))
@given(case_variants("VP8"), vp8_payloads())
def test_keyframe_agrees_on_vp8_descriptors(codec: str, payload: bytes) -> None:
    assert_keyframe_agrees(codec, payload)


@settings(max_examples=examples(1000))
@given(case_variants("VP9"), vp9_payloads())
def test_keyframe_agrees_on_vp9_descriptors(codec: str, payload: bytes) -> None:
    assert_keyframe_agrees(codec, payload)


@settings(max_examples=examples(1000))
@given(case_variants("H264"), h264_payloads())
def test_keyframe_agrees_on_h264_payloads(codec: str, payload: bytes) -> None:
    assert_keyframe_agrees(codec, payload)


# ---- RFC 3550 receiver statistics ----


@dataclass(frozen=True)
class Packet:
    seq: int
    ts: int
    arrival: float


@dataclass(frozen=True)
class SenderReport:
    ntp: int
    arrival: float


@dataclass(frozen=True)
class Report:
    now: float


StatsOp = Packet | SenderReport | Report

STATS_STEPS = ["next"] * 6 + [
    "loss",
    "duplicate",
    "reorder",
    "back",
    "jump",
    "restart",
    "random",
    "ts_wrap",
    "ts_half",
    "sender_report",
    "report",
    "report",
]
HALF_RANGE = 0x8000_0000  # the timestamp difference that is taken as negative


@st.composite
def stats_ops(draw: st.DrawFn) -> list[StatsOp]:
    """A packet stream with loss, wraps of both counters, duplicates, reordering, jumps
    beyond MAX_DROPOUT or MAX_MISORDER (alone, or followed by the next packet: a
    restart), timestamp steps of half the range, and arbitrary packets, with sender
    reports and report blocks interleaved."""
    seq = draw(st.one_of(st.integers(0, 0xFFFF), st.integers(0xFFF0, 0xFFFF)))
    ts = draw(st.one_of(st.integers(0, U32), st.integers(U32 - 5000, U32)))
    now = draw(st.floats(0, 1e5))
    ops: list[StatsOp] = []
    for _ in range(draw(st.integers(0, 80))):  # longer streams than st.lists draws
        step = draw(st.sampled_from(STATS_STEPS))
        if step in ("next", "loss", "ts_wrap", "ts_half"):
            seq = (seq + (1 if step != "loss" else draw(st.integers(2, 2999)))) & 0xFFFF
            if step == "ts_wrap":
                ts = U32 - draw(st.integers(0, 3000))
            if step == "ts_half":
                ts = (ts + HALF_RANGE + draw(st.sampled_from([-1, 0, 0, 1]))) & U32
            else:
                ts = (ts + draw(st.one_of(st.integers(0, 6000), st.integers(-3000, 3000)))) & U32
            now += draw(st.one_of(st.just(0.02), st.floats(0, 0.2)))
            ops.append(Packet(seq, ts, now))
        elif step == "duplicate":
            ops.append(Packet(seq, ts, now))
        elif step == "reorder":  # within MAX_MISORDER
            ops.append(Packet((seq - draw(st.integers(1, 99))) & 0xFFFF, ts, now))
        elif step == "back":  # further back: a candidate restart
            ops.append(Packet((seq - draw(st.integers(100, 3100))) & 0xFFFF, ts, now))
        elif step in ("jump", "restart"):  # forwards or backwards, or to the wrap's edge
            offset = draw(st.one_of(st.integers(3000, 65436), st.integers(-3100, -100)))
            jumped = draw(st.sampled_from([(seq + offset) & 0xFFFF] * 3 + [0xFFFF]))
            ops.append(Packet(jumped, draw(st.integers(0, U32)), now))
            if step == "restart":
                seq, ts, now = (jumped + 1) & 0xFFFF, draw(st.integers(0, U32)), now + 0.01
                ops.append(Packet(seq, ts, now))
        elif step == "random":  # the stream carries on from there, at its own pace
            seq, ts = draw(st.integers(0, 0xFFFF)), draw(st.integers(0, U32))
            ops.append(Packet(seq, ts, draw(st.floats(0, 1e6))))
        elif step == "sender_report":
            ops.append(SenderReport(draw(st.integers(0, U64)), now + draw(st.floats(0, 1))))
        else:
            ops.append(Report(draw(st.one_of(st.floats(0, 1e6), st.just(now + 1.0)))))
    return ops


def stats_state(stats: NativeRxStats | RtpReceiverStats) -> tuple[int, int, int, int, float]:
    return (
        stats.packets_received,
        stats.packets_lost,
        stats.packets_expected,
        stats.extended_highest_sequence,
        stats.jitter,
    )


def assert_stats_agree(ssrc: int, clock_rate: int, ops: list[StatsOp]) -> list[ReportBlock]:
    """Both see `ops`; returns the report blocks (equal on both sides)."""
    blocks: list[ReportBlock] = []
    python = RtpReceiverStats(ssrc, clock_rate)
    native = NativeRxStats(ssrc, clock_rate)
    assert (native.ssrc, native.clock_rate) == (python.ssrc, python.clock_rate)
    assert stats_state(native) == stats_state(python)
    for op in ops:
        match op:
            case Packet(seq, ts, arrival):
                python.on_packet(seq, ts, arrival)
                native.on_packet(seq, ts, arrival)
            case SenderReport(ntp, arrival):
                python.on_sender_report(ntp, arrival)
                native.on_sender_report(ntp, arrival)
            case Report(now):
                blocks.append(native.report_block(now))
                assert blocks[-1] == python.report_block(now), op
        assert stats_state(native) == stats_state(python), op
    return blocks


def test_rx_stats_examples() -> None:
    # Loss, a wrap, a duplicate, a reordered packet, then a restart after a jump.
    ops: list[StatsOp] = [
        Packet(65534, U32 - 1000, 10.0),
        Packet(65535, U32 - 100, 10.02),
        Packet(1, 2000, 10.05),
        Report(10.1),
        Packet(1, 2000, 10.06),
        Packet(0, 1000, 10.07),
        SenderReport(0x0123_4567_89AB_CDEF, 10.08),
        Packet(20000, 5, 10.1),
        Packet(20001, 3005, 10.13),
        Report(11.0),
        Report(9.0),  # before the sender report: DLSR clamps to 0
    ]
    first, restarted, early = assert_stats_agree(0xCAFEBABE, 90000, ops)
    # 65534..1 extended: 4 expected, 3 received.
    assert (first.fraction_lost, first.packets_lost, first.highest_sequence) == (64, 1, 65537)
    # The restart at 20001 starts the counts afresh, cycles included.
    assert (restarted.fraction_lost, restarted.packets_lost) == (0, 0)
    assert restarted.highest_sequence == 20001
    assert (restarted.lsr, restarted.dlsr) == (0x456789AB, 60293)  # 0.92 s
    assert (early.lsr, early.dlsr) == (0x456789AB, 0)


@pytest.mark.parametrize("stats_type", [RtpReceiverStats, NativeRxStats])
def test_rx_stats_refuse_a_zero_clock_rate(
    stats_type: type[RtpReceiverStats] | type[NativeRxStats],
) -> None:
    with pytest.raises(ValueError, match="clock rate must be positive"):
        stats_type(0, 0)


@pytest.mark.parametrize("stats_type", [RtpReceiverStats, NativeRxStats])
@pytest.mark.parametrize(
    ("ssrc", "clock_rate", "message"),
    [
        (-1, 90000, "SSRC must be a 32-bit"),
        (U32 + 1, 90000, "SSRC must be a 32-bit"),
        (1, -90000, "clock rate must be positive"),
        (1, U32 + 1, "clock rate must be positive"),
        (1, 2**70, "clock rate must be positive"),
    ],
)
def test_rx_stats_refuse_out_of_range_arguments_alike(
    stats_type: type[RtpReceiverStats] | type[NativeRxStats],
    ssrc: int,
    clock_rate: int,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        stats_type(ssrc, clock_rate)


@settings(max_examples=examples(300), deadline=None)
@given(
    st.integers(0, U32),
    st.one_of(st.sampled_from([90000, 48000, 8000, 1]), st.integers(1, U32)),
    stats_ops(),
)
def test_rx_stats_agree(ssrc: int, clock_rate: int, ops: list[StatsOp]) -> None:
    assert_stats_agree(ssrc, clock_rate, ops)


# ---- rate limiter ----

INF = math.inf


@pytest.mark.parametrize(
    ("rate_pps", "rate_bps", "steps", "expected"),
    [
        (2.0, INF, [(0.0, 100)] * 3, ["", "", "rate_limited"]),
        (2.0, INF, [(0.0, 100), (0.0, 100), (0.5, 100)], ["", "", ""]),
        (INF, 800.0, [(0.0, 60), (0.0, 60), (0.0, 40)], ["", "bitrate_limited", ""]),
        (0.0, INF, [(0.0, 0), (5.0, 0)], ["rate_limited", "rate_limited"]),
        (INF, INF, [(0.0, 3000), (0.0, 3000), (1e9, 0)], ["", "", ""]),
    ],
)
def test_rate_limiter_examples(
    rate_pps: float, rate_bps: float, steps: list[tuple[float, int]], expected: list[str]
) -> None:
    python = RateLimiter(rate_pps, rate_bps)
    native = DATAPATH.new_track("video", "VP8", 90000, rate_pps, rate_bps)
    assert [python.check(now, size) for now, size in steps] == expected
    assert [native.check_rate(now, size) for now, size in steps] == expected


def test_rate_limiter_defaults_are_unlimited() -> None:
    native = DATAPATH.new_track("audio")
    assert all(native.check_rate(0.0, 3000) == "" for _ in range(1000))


RATES_PPS = st.one_of(st.just(INF), st.floats(0, 200), st.integers(0, 50).map(float))
RATES_BPS = st.one_of(st.just(INF), st.floats(0, 2e6), st.integers(0, 100).map(lambda k: k * 800.0))
INTERVALS = st.one_of(st.just(0.0), st.floats(0, 0.05), st.floats(0, 5))
# Sizes in hundreds of bytes, like the byte rates above, empty the byte bucket exactly.
SIZES = st.one_of(st.integers(0, 3000), st.integers(0, 30).map(lambda k: k * 100))
# (time since the last burst, packets in the burst at that same instant, their size):
# bursts after idle time are where the buckets' one-second caps show.
BURSTS = st.tuples(INTERVALS, st.integers(1, 60), SIZES)


@settings(max_examples=examples(300), deadline=None)
@given(
    st.sampled_from(["audio", "video"]),
    RATES_PPS,
    RATES_BPS,
    st.one_of(st.just(0.0), st.floats(0, 1e6)),
    st.lists(BURSTS, max_size=40),
)
def test_rate_limiter_agrees(
    kind: str,
    rate_pps: float,
    rate_bps: float,
    start: float,
    bursts: list[tuple[float, int, int]],
) -> None:
    python = RateLimiter(rate_pps, rate_bps)
    native = DATAPATH.new_track(kind, "", 90000, rate_pps, rate_bps)
    now = start
    for i, (interval, count, size) in enumerate(bursts):
        now += interval
        for k in range(count):
            assert native.check_rate(now, size) == python.check(now, size), (i, k, now)


# ---- NACK cache ----


@dataclass(frozen=True)
class Put:
    seq: int
    payload: bytes


@dataclass(frozen=True)
class Get:
    seq: int


@dataclass(frozen=True)
class Clear:
    pass


CacheOp = Put | Get | Clear

# Small or up to the largest RTP packet: slots are grown and reused at other sizes.
PAYLOADS = st.one_of(
    st.binary(max_size=32),
    st.tuples(st.binary(max_size=16), st.integers(0, 255), st.integers(0, 2984)).map(
        lambda t: t[0] + bytes([t[1]]) * t[2]
    ),
)


@st.composite
def cache_ops(draw: st.DrawFn) -> tuple[list[int], list[CacheOp]]:
    """Operations on a few sequence numbers that share ring slots (1024 apart), plus
    arbitrary ones; returns the shared ones too, to be looked up after every step."""
    bases = draw(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=4))
    pool = sorted({(b + 1024 * k) & 0xFFFF for b in bases for k in (0, 1, 63)})
    seqs = st.one_of(st.sampled_from(pool), st.integers(0, 0xFFFF))
    op = st.one_of(
        st.builds(Put, seqs, PAYLOADS),
        st.builds(Put, seqs, PAYLOADS),
        st.builds(Get, seqs),
        st.just(Clear()),
    )
    return pool, draw(st.lists(op, max_size=60))


def video_cache() -> NativeCache:
    cache = DATAPATH.new_track("video", "VP8", 90000).cache
    assert cache is not None
    return cache


def test_only_video_tracks_have_a_cache() -> None:
    assert DATAPATH.new_track("audio", "OPUS", 48000).cache is None
    assert DATAPATH.new_track("video", "VP8", 90000).cache is not None


@pytest.mark.parametrize("side", ["python", "native"])
def test_cache_examples(side: str) -> None:
    cache = PacketCache() if side == "python" else video_cache()
    cache.put(5, b"x" * 3000)
    cache.put(5 + 1024, b"y")  # same slot: evicts 5
    cache.put(0xFFFF, b"")
    assert [cache.get(5), cache.get(5 + 1024), cache.get(0xFFFF)] == [None, b"y", b""]
    cache.clear()
    assert [cache.get(5 + 1024), cache.get(0xFFFF)] == [None, None]
    cache.put(5, b"z" * 10)  # a slot that held 3000 bytes, reused for 10
    assert cache.get(5) == b"z" * 10


@pytest.mark.parametrize("side", ["python", "native"])
def test_cache_refuses_a_number_that_is_not_16_bits_and_never_finds_one(side: str) -> None:
    cache = PacketCache() if side == "python" else video_cache()
    for seq in (-1, 0x10000, 70000, 2**70):
        with pytest.raises(ValueError, match="an RTP sequence number is 16 bits"):
            cache.put(seq, b"x")
        assert cache.get(seq) is None
    cache.put(70000 & 0xFFFF, b"kept")
    assert cache.get(70000) is None and cache.get(70000 & 0xFFFF) == b"kept"


@settings(max_examples=examples(200), deadline=None)
@given(cache_ops())
def test_cache_agrees(case: tuple[list[int], list[CacheOp]]) -> None:
    pool, ops = case
    python = PacketCache()
    native = video_cache()
    for i, op in enumerate(ops):
        match op:
            case Put(seq, payload):
                python.put(seq, payload)
                native.put(seq, payload)
            case Get(seq):
                assert native.get(seq) == python.get(seq), (i, op)
            case Clear():
                python.clear()
                native.clear()
        for seq in pool:
            assert native.get(seq) == python.get(seq), (i, seq)
