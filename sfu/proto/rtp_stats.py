"""Receiver-side RTP statistics for RTCP reception reports (RFC 3550 appendix A)."""

from __future__ import annotations

from sfu.wire.rtcp import ReportBlock, ntp_middle32

__all__ = ["RtpReceiverStats"]

RTP_SEQ_MOD = 1 << 16
# Thresholds from RFC 3550 A.1: a forward jump below MAX_DROPOUT counts as loss, a backward
# step within MAX_MISORDER counts as reordering, anything else as a possible restart.
MAX_DROPOUT = 3000
MAX_MISORDER = 100

_MAX_LOST = 0x7FFFFF
_MIN_LOST = -0x800000
_U32_MAX = 0xFFFF_FFFF


class RtpReceiverStats:
    """Per incoming SSRC: RFC 3550 A.1 sequence tracking, A.3 loss and A.8 jitter.

    Probation is off (MIN_SEQUENTIAL = 0): the first packet initialises the state. Packets
    reach this class only after SRTP authentication, so the stray-packet filtering probation
    exists for is unnecessary, and it would delay the first report. A jump larger than
    MAX_DROPOUT is ignored unless the next packet follows it, in which case the sender is
    assumed to have restarted and the sequence state is reset.
    """

    def __init__(self, ssrc: int, clock_rate: int) -> None:
        if not 0 <= ssrc <= 0xFFFF_FFFF:
            raise ValueError(f"SSRC must be a 32-bit unsigned integer, got {ssrc}")
        if not 0 < clock_rate <= 0xFFFF_FFFF:
            raise ValueError(f"clock rate must be positive, got {clock_rate}")
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.packets_received = 0
        self._started = False
        self._base_seq = 0
        self._max_seq = 0
        self._cycles = 0
        self._bad_seq = RTP_SEQ_MOD + 1  # impossible value: no pending restart candidate
        self._expected_prior = 0
        self._received_prior = 0
        self._jitter = 0.0
        self._last_rtp_ts = 0
        self._last_arrival_s = 0.0
        self._have_transit = False
        self._last_sr_ntp = 0
        self._last_sr_arrival_s: float | None = None

    def _init_seq(self, seq: int) -> None:
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = RTP_SEQ_MOD + 1
        self._cycles = 0
        self.packets_received = 0
        self._expected_prior = 0
        self._received_prior = 0

    def _update_seq(self, seq: int) -> bool | None:
        """Return True for an in-order packet, False if reordered/duplicate, None if dropped."""
        udelta = (seq - self._max_seq) & 0xFFFF
        in_order = False
        if udelta < MAX_DROPOUT:
            if seq < self._max_seq:
                self._cycles += RTP_SEQ_MOD
            self._max_seq = seq
            in_order = udelta != 0
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            if seq != self._bad_seq:
                self._bad_seq = (seq + 1) & 0xFFFF
                return None
            self._init_seq(seq)
            self._have_transit = False
            in_order = True
        self.packets_received += 1
        return in_order

    def on_packet(self, sequence_number: int, rtp_timestamp: int, arrival_s: float) -> None:
        """Account for one received packet (after decryption, before any reordering)."""
        seq = sequence_number & 0xFFFF
        if not self._started:
            self._started = True
            self._init_seq(seq)
            self.packets_received = 1
            in_order: bool | None = True
        else:
            in_order = self._update_seq(seq)
        if not in_order:
            # Reordered packets would feed a bogus transit difference into the estimate.
            return
        if self._have_transit:
            ts_delta = (rtp_timestamp - self._last_rtp_ts) & _U32_MAX
            if ts_delta >= 0x8000_0000:
                ts_delta -= 0x1_0000_0000
            d = (arrival_s - self._last_arrival_s) * self.clock_rate - ts_delta
            self._jitter += (abs(d) - self._jitter) / 16.0
        self._have_transit = True
        self._last_rtp_ts = rtp_timestamp
        self._last_arrival_s = arrival_s

    def on_sender_report(self, ntp_timestamp: int, arrival_s: float) -> None:
        """Remember the latest SR so the next report block can carry LSR and DLSR."""
        self._last_sr_ntp = ntp_timestamp
        self._last_sr_arrival_s = arrival_s

    @property
    def extended_highest_sequence(self) -> int:
        """Highest sequence number seen, extended with the wrap-around cycle count."""
        return self._cycles + self._max_seq

    @property
    def packets_expected(self) -> int:
        """Packets expected from the base to the extended highest sequence number."""
        if not self._started:
            return 0
        return self.extended_highest_sequence - self._base_seq + 1

    @property
    def packets_lost(self) -> int:
        """Cumulative loss; negative when duplicates outnumber losses (RFC 3550 A.3)."""
        return self.packets_expected - self.packets_received

    @property
    def jitter(self) -> float:
        """Interarrival jitter estimate in RTP timestamp units."""
        return self._jitter

    def report_block(self, now_s: float) -> ReportBlock:
        """Build a reception report block; the fraction lost covers the time since last call."""
        expected = self.packets_expected
        expected_interval = expected - self._expected_prior
        received_interval = self.packets_received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.packets_received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min((lost_interval << 8) // expected_interval, 255)
        lost = min(max(self.packets_lost, _MIN_LOST), _MAX_LOST)
        lsr = 0
        dlsr = 0
        if self._last_sr_arrival_s is not None:
            lsr = ntp_middle32(self._last_sr_ntp)
            dlsr = min(max(int((now_s - self._last_sr_arrival_s) * 65536), 0), _U32_MAX)
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            packets_lost=lost,
            highest_sequence=self.extended_highest_sequence & _U32_MAX,
            jitter=min(int(self._jitter), _U32_MAX),
            lsr=lsr,
            dlsr=dlsr,
        )
