"""Tests for sfu.proto.rtp_stats."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.proto.rtp_stats import RtpReceiverStats
from sfu.wire.rtcp import ReportBlock, ntp_middle32, ntp_timestamp
from tests.fuzzing import examples

CLOCK = 90_000


def feed(stats: RtpReceiverStats, seqs: list[int], start: float = 0.0) -> None:
    # 20 ms apart, timestamps matching the arrival spacing so jitter stays zero.
    for i, seq in enumerate(seqs):
        stats.on_packet(seq, 1800 * i, start + 0.02 * i)


def test_empty_report() -> None:
    stats = RtpReceiverStats(1234, CLOCK)
    assert stats.report_block(0.0) == ReportBlock(1234, 0, 0, 0, 0, 0, 0)
    assert stats.packets_received == 0
    assert stats.packets_lost == 0


def test_invalid_clock_rate() -> None:
    with pytest.raises(ValueError):
        RtpReceiverStats(1, 0)


def test_in_order_no_loss() -> None:
    stats = RtpReceiverStats(1, CLOCK)
    feed(stats, list(range(100, 110)))
    assert stats.packets_received == 10
    assert stats.packets_lost == 0
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)
    rb = stats.report_block(1.0)
    assert (rb.fraction_lost, rb.packets_lost, rb.highest_sequence, rb.jitter) == (0, 0, 109, 0)


def test_loss_and_fraction_per_interval() -> None:
    stats = RtpReceiverStats(1, CLOCK)
    feed(stats, [0, 1, 2, 5, 6, 7, 8, 9])
    assert stats.packets_lost == 2
    rb = stats.report_block(1.0)
    assert rb.packets_lost == 2
    assert rb.fraction_lost == (2 << 8) // 10
    # The next interval has no loss: fraction resets, cumulative stays.
    for seq in range(10, 20):
        stats.on_packet(seq, 0, 2.0)
    rb = stats.report_block(2.0)
    assert (rb.fraction_lost, rb.packets_lost, rb.highest_sequence) == (0, 2, 19)
    # Nothing new: fraction is zero rather than a division by zero.
    assert stats.report_block(3.0).fraction_lost == 0


def test_heavy_loss_in_interval() -> None:
    stats = RtpReceiverStats(1, CLOCK)
    feed(stats, [0])
    stats.report_block(0.0)
    stats.on_packet(100, 0, 1.0)
    rb = stats.report_block(1.0)
    assert rb.fraction_lost == (99 << 8) // 100
    assert rb.packets_lost == 99


def test_sequence_wraparound() -> None:
    stats = RtpReceiverStats(1, CLOCK)
    feed(stats, [65533, 65534, 65535, 0, 1, 3])
    assert stats.extended_highest_sequence == 65536 + 3
    assert stats.packets_lost == 1
    rb = stats.report_block(1.0)
    assert rb.highest_sequence == 65536 + 3
    assert rb.packets_lost == 1


def test_reordering_across_wrap_does_not_add_cycle() -> None:
    stats = RtpReceiverStats(1, CLOCK)
    feed(stats, [65534, 0, 1, 65535, 2])
    assert stats.extended_highest_sequence == 65536 + 2
    assert stats.packets_lost == 0
    assert stats.packets_received == 5


def test_duplicates_make_loss_negative() -> None:
    stats = RtpReceiverStats(1, CLOCK)
    feed(stats, [10, 11, 11, 12])
    assert stats.packets_lost == -1
    rb = stats.report_block(1.0)
    assert rb.packets_lost == -1
    assert rb.fraction_lost == 0


def test_single_large_jump_is_ignored() -> None:
    stats = RtpReceiverStats(1, CLOCK)
    feed(stats, [100, 101, 20_000, 102, 103])
    assert stats.packets_received == 4
    assert stats.packets_lost == 0
    assert stats.extended_highest_sequence == 103


def test_two_sequential_packets_after_jump_resync() -> None:
    stats = RtpReceiverStats(1, CLOCK)
    feed(stats, [100, 101, 20_000, 20_001, 20_002])
    # The source restarted at 20_001: counting begins again from there.
    assert stats.packets_received == 2
    assert stats.packets_lost == 0
    assert stats.report_block(1.0).highest_sequence == 20_002


def test_cumulative_loss_is_clamped_to_24_bits() -> None:
    stats = RtpReceiverStats(1, CLOCK)
    seq = 0
    for _ in range(3000):
        stats.on_packet(seq, 0, 0.0)
        seq = (seq + 2999) & 0xFFFF
    assert stats.packets_lost > 0x7FFFFF
    assert stats.report_block(0.0).packets_lost == 0x7FFFFF


def test_jitter_follows_rfc3550_a8() -> None:
    stats = RtpReceiverStats(1, CLOCK)
    stats.on_packet(0, 0, 0.00)
    stats.on_packet(1, 1800, 0.03)  # 10 ms late: |D| = 900
    assert stats.jitter == pytest.approx(900 / 16)
    stats.on_packet(2, 3600, 0.04)  # back on schedule: |D| = 900 again
    expected = 900 / 16 + (900 - 900 / 16) / 16
    assert stats.jitter == pytest.approx(expected)
    assert stats.report_block(1.0).jitter == int(expected)


def test_jitter_ignores_reordered_and_duplicate_packets() -> None:
    stats = RtpReceiverStats(1, CLOCK)
    feed(stats, [0, 1, 2])
    stats.on_packet(1, 1800, 5.0)
    stats.on_packet(2, 3600, 5.0)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_jitter_across_timestamp_wrap() -> None:
    stats = RtpReceiverStats(1, CLOCK)
    base = (1 << 32) - 1800
    for i in range(5):
        stats.on_packet(i, (base + 1800 * i) & 0xFFFFFFFF, 0.02 * i)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_lsr_and_dlsr() -> None:
    stats = RtpReceiverStats(1, CLOCK)
    feed(stats, [1, 2])
    ntp = ntp_timestamp(1_700_000_000.0)
    stats.on_sender_report(ntp, 10.0)
    rb = stats.report_block(10.5)
    assert rb.lsr == ntp_middle32(ntp)
    assert rb.dlsr == 32768
    # A clock going backwards must not produce a negative DLSR.
    assert stats.report_block(9.0).dlsr == 0


def test_no_sender_report_gives_zero_lsr() -> None:
    stats = RtpReceiverStats(1, CLOCK)
    feed(stats, [1])
    rb = stats.report_block(5.0)
    assert (rb.lsr, rb.dlsr) == (0, 0)


def test_report_block_serializes() -> None:
    stats = RtpReceiverStats(0xCAFEBABE, CLOCK)
    feed(stats, [65535, 0, 2])
    rb = stats.report_block(1.0)
    assert rb == ReportBlock(0xCAFEBABE, (1 << 8) // 4, 1, 65538, 0, 0, 0)
    assert ReportBlock.parse(rb.serialize(), 0) == rb


@settings(max_examples=examples(200))
@given(
    st.integers(0, 0xFFFF),
    st.lists(st.tuples(st.integers(1, 50), st.booleans()), min_size=1, max_size=200),
)
def test_loss_matches_dropped_packets(start: int, steps: list[tuple[int, bool]]) -> None:
    stats = RtpReceiverStats(1, CLOCK)
    stats.on_packet(start, 0, 0.0)
    ext = last_delivered = start
    delivered = 1
    for step, keep in steps:
        ext += step
        if keep:
            stats.on_packet(ext & 0xFFFF, 0, 0.0)
            delivered += 1
            last_delivered = ext
    assert stats.packets_received == delivered
    assert stats.extended_highest_sequence == last_delivered
    assert stats.packets_lost == last_delivered - start + 1 - delivered
    rb = stats.report_block(1.0)
    assert 0 <= rb.fraction_lost <= 255
    assert rb.highest_sequence == last_delivered


@settings(max_examples=examples(200))
@given(
    st.lists(
        st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.floats(0, 1e6)),
        max_size=60,
    )
)
def test_arbitrary_input_keeps_report_fields_in_range(
    packets: list[tuple[int, int, float]],
) -> None:
    stats = RtpReceiverStats(1, CLOCK)
    for seq, ts, arrival in packets:
        stats.on_packet(seq, ts, arrival)
        rb = stats.report_block(arrival)
        assert 0 <= rb.fraction_lost <= 255
        assert -(1 << 23) <= rb.packets_lost < (1 << 23)
        assert 0 <= rb.highest_sequence <= 0xFFFFFFFF
        assert 0 <= rb.jitter <= 0xFFFFFFFF
        rb.serialize()
