"""Tests for sfu.routing.consumer (and the PacketCache / RateLimiter of sfu.routing.track):
rewriting, keyframe gating, source switching and NACK answers, with fake transports."""

from __future__ import annotations

import struct
from typing import Any, cast

import pytest

import sfu.routing.consumer as consumer_module
from sfu.routing.consumer import MAX_NACK_ANSWERS, Consumer, seq_newer
from sfu.routing.producer import KEYFRAME_REQUEST_INTERVAL_S, Producer
from sfu.routing.track import PacketCache, RateLimiter
from sfu.routing.worker import Worker
from sfu.wire.rtcp import RtcpPacket, RtcpPli, RtcpSenderReport
from sfu.wire.rtp import RtpPacket, parse_rtp_header
from sfu.wire.sdp import Codec

VP8_PUBLISHED = Codec(96, "VP8", 90000, rtcp_fbs=["nack", "nack pli", "ccm fir"])
VP8_SUBSCRIBED = Codec(120, "VP8", 90000, rtcp_fbs=["nack", "nack pli"])
OPUS = Codec(111, "OPUS", 48000, 2)
CONSUMER_SSRC = 0xC0C0C0C0
# VP8 payload descriptor S=1 PID=0, then the first byte of the frame tag (P bit = inter frame).
KEYFRAME = b"\x10\x00\x9d\x01\x2a"
DELTA = b"\x10\x01\x00\x00\x00"


class PlainSrtp:
    """Identity protection: the tests read what the datapath sends as plain RTP."""

    def protect(self, packet: bytes) -> bytes:
        return packet


class FakeNetwork:
    """One worker for every fake transport, as in the server; its "socket" delivers
    each datagram to the fake transport that owns the address."""

    def __init__(self) -> None:
        self.by_addr: dict[tuple[str, int], FakeTransport] = {}
        self.worker = Worker(lambda data, addr: self.by_addr[addr].rtp.append(data))
        self.next_port = 5000


NETWORK = FakeNetwork()


class FakeTransport:
    """Records what the datapath sends to it; always ready unless told otherwise."""

    def __init__(self, owner_id: str = "owner") -> None:
        self.owner_id = owner_id
        self.rtcp_ssrc = 0x5EED
        NETWORK.next_port += 1
        self.addr = ("127.0.0.1", NETWORK.next_port)
        NETWORK.by_addr[self.addr] = self
        self.rtp: list[bytes] = []
        self.rtcp: list[list[RtcpPacket]] = []
        self.legs: list[Any] = []
        self._ready = True
        self.worker = NETWORK.worker

    @property
    def ready(self) -> bool:
        return self._ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self._ready = value
        for leg in self.legs:
            self._route(leg)

    def _route(self, leg: Any) -> None:
        leg.set_route(PlainSrtp() if self._ready else None, self.addr)

    def attach_leg(self, leg: Any) -> None:
        self.legs.append(leg)
        self._route(leg)

    def detach_leg(self, leg: Any) -> None:
        leg.set_route(None, None)

    def send_rtp(self, packet: bytes) -> None:
        self.rtp.append(packet)

    def send_rtcp(self, packets: list[RtcpPacket]) -> None:
        self.rtcp.append(packets)


def rtp(seq: int, ts: int, ssrc: int, payload: bytes, pt: int = 96, marker: bool = False) -> bytes:
    b1 = pt | (0x80 if marker else 0)
    return struct.pack("!BBHII", 0x80, b1, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def make_producer(
    ssrc: int = 0xAAAA, kind: str = "video", codec: Codec = VP8_PUBLISHED
) -> tuple[Producer, FakeTransport]:
    transport = FakeTransport("publisher")
    producer = Producer("track", "alice", kind, kind, codec, cast(Any, transport), "0", ssrc)
    return producer, transport


def make_consumer(
    kind: str = "video", codec: Codec = VP8_SUBSCRIBED
) -> tuple[Consumer, FakeTransport]:
    transport = FakeTransport("subscriber")
    consumer = Consumer("c1", cast(Any, transport), kind, codec, "1", CONSUMER_SSRC, "cname")
    return consumer, transport


def feed(producer: Producer, packet: bytes, now: float) -> None:
    producer.on_rtp(packet, parse_rtp_header(packet), now)


def sent(transport: FakeTransport) -> list[RtpPacket]:
    return [RtpPacket.parse(p) for p in transport.rtp]


def plis(transport: FakeTransport) -> list[RtcpPli]:
    return [p for batch in transport.rtcp for p in batch if isinstance(p, RtcpPli)]


# -- keyframe gating ----------------------------------------------------------------


def test_first_video_packet_that_is_not_a_keyframe_is_dropped_and_asks_for_a_keyframe() -> None:
    producer, publisher = make_producer()
    consumer, subscriber = make_consumer()
    consumer.attach(producer, 0.0)
    publisher.rtcp.clear()
    feed(producer, rtp(10, 1000, 0xAAAA, DELTA), 1.0)
    assert subscriber.rtp == []
    requests = plis(publisher)
    assert len(requests) == 1
    assert requests[0].media_ssrc == 0xAAAA
    assert requests[0].sender_ssrc == publisher.rtcp_ssrc


def test_attach_asks_the_new_source_for_a_keyframe() -> None:
    producer, publisher = make_producer()
    consumer, _ = make_consumer()
    consumer.attach(producer, 5.0)
    assert [p.media_ssrc for p in plis(publisher)] == [0xAAAA]
    assert consumer in producer.consumers


def test_a_subscriber_without_keys_asks_for_its_keyframe_when_they_arrive() -> None:
    producer, publisher = make_producer()
    consumer, subscriber = make_consumer()
    subscriber.ready = False  # a late joiner: subscribed before its DTLS handshake ends
    consumer.attach(producer, 5.0)
    assert plis(publisher) == []  # a keyframe now would be lost on this leg
    subscriber.ready = True
    consumer.on_transport_ready(5.1)  # within the rate limit of an attach-time request
    assert [p.media_ssrc for p in plis(publisher)] == [0xAAAA]
    feed(producer, rtp(10, 1000, 0xAAAA, KEYFRAME), 5.15)
    assert len(sent(subscriber)) == 1  # the keyframe reached it


def test_keyframe_requests_are_rate_limited_per_producer() -> None:
    producer, publisher = make_producer()
    consumer, _ = make_consumer()
    consumer.attach(producer, 0.0)
    for i in range(20):
        feed(producer, rtp(10 + i, 1000, 0xAAAA, DELTA), 0.01 * i)
    assert len(plis(publisher)) == 1
    feed(producer, rtp(40, 1000, 0xAAAA, DELTA), KEYFRAME_REQUEST_INTERVAL_S + 0.01)
    assert len(plis(publisher)) == 2


def test_forwarding_starts_at_the_keyframe() -> None:
    producer, _ = make_producer()
    consumer, subscriber = make_consumer()
    consumer.attach(producer, 0.0)
    feed(producer, rtp(10, 1000, 0xAAAA, DELTA), 0.01)
    feed(producer, rtp(11, 1000, 0xAAAA, KEYFRAME), 0.02)
    feed(producer, rtp(12, 4000, 0xAAAA, DELTA), 0.05)
    assert [p.payload for p in sent(subscriber)] == [KEYFRAME, DELTA]


def test_audio_is_forwarded_from_the_first_packet() -> None:
    producer, _ = make_producer(kind="audio", codec=Codec(109, "OPUS", 48000, 2))
    consumer, subscriber = make_consumer("audio", OPUS)
    consumer.attach(producer, 0.0)
    feed(producer, rtp(1, 960, 0xAAAA, b"\xfc\xff\xfe", pt=109), 0.0)
    assert [(p.payload_type, p.ssrc) for p in sent(subscriber)] == [(111, CONSUMER_SSRC)]


def test_nothing_is_sent_while_the_subscriber_transport_is_not_ready() -> None:
    producer, _ = make_producer()
    consumer, subscriber = make_consumer()
    subscriber.ready = False
    consumer.attach(producer, 0.0)
    feed(producer, rtp(1, 0, 0xAAAA, KEYFRAME), 0.0)
    assert subscriber.rtp == []


# -- rewriting ------------------------------------------------------------------------


def test_after_a_keyframe_sequence_numbers_are_continuous_and_ssrc_pt_replaced() -> None:
    producer, _ = make_producer()
    consumer, subscriber = make_consumer()
    consumer.attach(producer, 0.0)
    feed(producer, rtp(500, 90000, 0xAAAA, KEYFRAME, marker=True), 0.0)
    for i in range(1, 10):
        feed(producer, rtp(500 + i, 90000 + 3000 * i, 0xAAAA, DELTA), 0.033 * i)
    out = sent(subscriber)
    assert len(out) == 10
    assert all(p.ssrc == CONSUMER_SSRC and p.payload_type == 120 for p in out)
    seqs = [p.sequence_number for p in out]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    stamps = [p.timestamp for p in out]
    assert all((b - a) & 0xFFFFFFFF == 3000 for a, b in zip(stamps, stamps[1:], strict=False))
    assert out[0].marker and not out[1].marker
    assert [p.payload for p in out] == [KEYFRAME] + [DELTA] * 9
    assert consumer.packets_sent == 10


def test_loss_on_the_publisher_leg_keeps_the_gap_for_the_subscriber() -> None:
    producer, _ = make_producer()
    consumer, subscriber = make_consumer()
    consumer.attach(producer, 0.0)
    for seq in (100, 101, 104):
        feed(producer, rtp(seq, seq * 10, 0xAAAA, KEYFRAME if seq == 100 else DELTA), 0.0)
    seqs = [p.sequence_number for p in sent(subscriber)]
    assert [(s - seqs[0]) & 0xFFFF for s in seqs] == [0, 1, 4]


def test_source_sequence_wrap_around_stays_continuous() -> None:
    producer, _ = make_producer()
    consumer, subscriber = make_consumer()
    consumer.attach(producer, 0.0)
    for i, seq in enumerate((65533, 65534, 65535, 0, 1, 2)):
        feed(producer, rtp(seq, 1000 * i, 0xAAAA, KEYFRAME if i == 0 else DELTA), 0.01 * i)
    seqs = [p.sequence_number for p in sent(subscriber)]
    assert len(seqs) == 6
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))


def test_output_sequence_wraps_from_65535_to_0(monkeypatch: pytest.MonkeyPatch) -> None:
    class FixedStart:
        @staticmethod
        def randbelow(_n: int) -> int:
            return 65534

        @staticmethod
        def randbits(_n: int) -> int:
            return 0xFFFFFF00

    monkeypatch.setattr(consumer_module, "secrets", FixedStart)
    producer, _ = make_producer()
    consumer, subscriber = make_consumer()
    consumer.attach(producer, 0.0)
    for i in range(5):
        feed(producer, rtp(300 + i, 256 * i, 0xAAAA, KEYFRAME if i == 0 else DELTA), 0.0)
    out = sent(subscriber)
    assert [p.sequence_number for p in out] == [65534, 65535, 0, 1, 2]
    assert [p.timestamp for p in out] == [0xFFFFFF00, 0, 256, 512, 768]


def test_switching_source_keeps_sequence_continuous_and_timestamp_increasing() -> None:
    first, _ = make_producer(ssrc=0xAAAA)
    second, second_publisher = make_producer(ssrc=0xBBBB)
    consumer, subscriber = make_consumer()
    consumer.attach(first, 0.0)
    for i in range(5):
        feed(
            first, rtp(1000 + i, 50_000 + 3000 * i, 0xAAAA, KEYFRAME if i == 0 else DELTA), 0.1 * i
        )
    consumer.attach(second, 0.5)
    assert consumer not in first.consumers
    feed(first, rtp(1005, 65_000, 0xAAAA, KEYFRAME), 0.55)  # the old source no longer reaches us
    feed(second, rtp(7, 4_000_000_000, 0xBBBB, DELTA), 0.6)  # dropped: not a keyframe
    second_publisher.rtcp.clear()
    feed(second, rtp(8, 4_000_000_000, 0xBBBB, KEYFRAME), 0.9)
    feed(second, rtp(9, 4_000_003_000, 0xBBBB, DELTA), 0.933)
    out = sent(subscriber)
    assert len(out) == 7
    seqs = [p.sequence_number for p in out]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    assert {p.ssrc for p in out} == {CONSUMER_SSRC}
    stamps = [p.timestamp for p in out]
    steps = [(b - a) & 0xFFFFFFFF for a, b in zip(stamps, stamps[1:], strict=False)]
    assert all(0 < step < 0x80000000 for step in steps)
    # The gap across the switch is about the wall-clock time between the two packets.
    assert steps[4] == pytest.approx((0.9 - 0.4) * 90000, rel=0.01)
    assert out[5].payload == KEYFRAME


def test_attaching_the_same_source_again_changes_nothing() -> None:
    producer, publisher = make_producer()
    consumer, subscriber = make_consumer()
    consumer.attach(producer, 0.0)
    feed(producer, rtp(1, 0, 0xAAAA, KEYFRAME), 0.0)
    consumer.attach(producer, 1.0)
    feed(producer, rtp(2, 3000, 0xAAAA, DELTA), 1.0)
    assert len(subscriber.rtp) == 2
    assert len(plis(publisher)) == 1


def test_detached_consumer_receives_nothing() -> None:
    producer, _ = make_producer()
    consumer, subscriber = make_consumer()
    consumer.attach(producer, 0.0)
    consumer.close()
    feed(producer, rtp(1, 0, 0xAAAA, KEYFRAME), 0.0)
    assert subscriber.rtp == []
    assert consumer.source is None


# -- NACK ---------------------------------------------------------------------------


def _forward_run(count: int) -> tuple[Producer, Consumer, FakeTransport]:
    producer, _ = make_producer()
    consumer, subscriber = make_consumer()
    consumer.attach(producer, 0.0)
    for i in range(count):
        payload = KEYFRAME if i == 0 else DELTA + bytes([i])
        feed(producer, rtp(2000 + i, 3000 * i, 0xAAAA, payload), 0.01 * i)
    return producer, consumer, subscriber


def test_nack_resends_the_cached_packet_with_the_same_out_seq() -> None:
    _, consumer, subscriber = _forward_run(10)
    original = sent(subscriber)
    subscriber.rtp.clear()
    lost = [original[3].sequence_number, original[7].sequence_number]
    consumer.on_nack(lost)
    resent = sent(subscriber)
    assert resent == [original[3], original[7]]
    assert consumer.nacks_answered == 2


def test_nack_for_a_packet_not_in_the_cache_sends_nothing() -> None:
    _, consumer, subscriber = _forward_run(3)
    newest = sent(subscriber)[-1].sequence_number
    subscriber.rtp.clear()
    consumer.on_nack([(newest + 500) & 0xFFFF])
    assert subscriber.rtp == []


def test_nack_answers_are_capped_per_request() -> None:
    _, consumer, subscriber = _forward_run(200)
    seqs = [p.sequence_number for p in sent(subscriber)]
    subscriber.rtp.clear()
    consumer.on_nack(seqs)
    assert len(subscriber.rtp) == MAX_NACK_ANSWERS


def test_nack_across_output_wrap_resends_the_right_packets(monkeypatch: pytest.MonkeyPatch) -> None:
    class FixedStart:
        @staticmethod
        def randbelow(_n: int) -> int:
            return 65533

        @staticmethod
        def randbits(_n: int) -> int:
            return 0

    monkeypatch.setattr(consumer_module, "secrets", FixedStart)
    _, consumer, subscriber = _forward_run(6)
    original = {p.sequence_number: p for p in sent(subscriber)}
    assert sorted(original) == [0, 1, 2, 65533, 65534, 65535]
    subscriber.rtp.clear()
    consumer.on_nack([65535, 0, 1])
    assert sent(subscriber) == [original[65535], original[0], original[1]]


def test_nack_for_a_packet_sent_before_a_source_switch_never_resends_the_new_sources_packet() -> (
    None
):
    first, _ = make_producer(ssrc=0xAAAA)
    second, _ = make_producer(ssrc=0xBBBB)
    consumer, subscriber = make_consumer()
    consumer.attach(first, 0.0)
    for i in range(5):
        feed(first, rtp(100 + i, 3000 * i, 0xAAAA, KEYFRAME if i == 0 else b"A" * 8), 0.01 * i)
    before_switch = sent(subscriber)
    consumer.attach(second, 0.1)
    # The new source's packets before its keyframe are cached but never forwarded.
    for i in range(5):
        feed(second, rtp(900 + i, 7000 * i, 0xBBBB, b"\x10\x01" + b"B" * 6), 0.1 + 0.01 * i)
    feed(second, rtp(905, 35000, 0xBBBB, KEYFRAME), 0.2)
    subscriber.rtp.clear()
    consumer.on_nack([before_switch[3].sequence_number])
    # Either the original packet or nothing: never a different packet under that number.
    resent = sent(subscriber)
    assert resent in ([], [before_switch[3]]), f"resent {resent} for {before_switch[3]}"


# -- sender reports --------------------------------------------------------------------


def test_sender_report_is_translated_to_the_consumer_timeline() -> None:
    producer, _ = make_producer()
    consumer, subscriber = make_consumer()
    consumer.attach(producer, 0.0)
    feed(producer, rtp(1, 10_000, 0xAAAA, KEYFRAME), 0.0)
    out_ts = sent(subscriber)[0].timestamp
    producer.on_sender_report(RtcpSenderReport(0xAAAA, 1 << 40, 13_000, 1, 100), 0.05)
    reports = [p for batch in subscriber.rtcp for p in batch if isinstance(p, RtcpSenderReport)]
    assert len(reports) == 1
    assert reports[0].ssrc == CONSUMER_SSRC
    assert reports[0].ntp_timestamp == 1 << 40
    assert reports[0].rtp_timestamp == (out_ts + 3000) & 0xFFFFFFFF
    assert reports[0].packet_count == 1


# -- seq_newer ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "newer"),
    [
        (1, 0, True),
        (0, 1, False),
        (5, 5, False),
        (0, 65535, True),
        (65535, 0, False),
        (100, 65000, True),
        (0x8000 - 1, 0, True),
        (0x8000, 0, False),
    ],
)
def test_seq_newer_uses_16_bit_serial_arithmetic(a: int, b: int, newer: bool) -> None:
    assert seq_newer(a, b) is newer


# -- PacketCache and RateLimiter (sfu.routing.track) ------------------------------


def test_packet_cache_returns_what_was_put() -> None:
    cache = PacketCache(8)
    cache.put(3, b"three")
    cache.put(65535, b"last")
    assert cache.get(3) == b"three"
    assert cache.get(65535) == b"last"
    assert cache.get(4) is None


def test_packet_cache_forgets_a_packet_overwritten_by_its_slot() -> None:
    cache = PacketCache(8)
    cache.put(1, b"old")
    cache.put(9, b"new")
    assert cache.get(1) is None
    assert cache.get(9) == b"new"


def test_producer_caches_video_for_nack_but_not_audio() -> None:
    video, _ = make_producer()
    feed(video, rtp(77, 0, 0xAAAA, DELTA), 0.0)
    assert video.cache is not None and video.cache.get(77) == rtp(77, 0, 0xAAAA, DELTA)
    audio, _ = make_producer(kind="audio", codec=OPUS)
    assert audio.cache is None


def test_rate_limiter_allows_one_second_of_burst_then_refuses() -> None:
    limiter = RateLimiter(100)
    assert all(limiter.allow(10.0) for _ in range(100))
    assert not limiter.allow(10.0)


def test_rate_limiter_refills_with_time() -> None:
    limiter = RateLimiter(100)
    for _ in range(100):
        limiter.allow(10.0)
    assert [limiter.allow(10.05) for _ in range(6)] == [True] * 5 + [False]
    assert all(limiter.allow(20.0) for _ in range(100))
    assert not limiter.allow(20.0)


def test_producer_drops_packets_above_its_rate_limit() -> None:
    producer, _ = make_producer(kind="audio", codec=OPUS)
    counters = producer.transport.worker.counters
    before = counters["rate_limited"]
    for i in range(300):
        feed(producer, rtp(i, 0, 0xAAAA, b"x"), 5.0)
    assert producer.packets == 250
    assert producer.dropped_rate == 50
    assert counters["rate_limited"] - before == 50
