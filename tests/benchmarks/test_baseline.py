"""The bare C relay (benchmarks/baseline): what it forwards, and one short measurement."""

from __future__ import annotations

import secrets
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pylibsrtp import Policy, Session

from benchmarks.baseline.build import BaselineUnavailable, build
from benchmarks.baseline.run import (
    KEY_BYTES,
    BaselineSpec,
    Publisher,
    Relay,
    Subscriber,
    _drain,
    open_subscribers,
    run_baseline,
)

RTP_HEADER = struct.Struct("!BBHII")
RECEIVE_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def relay_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return build(tmp_path_factory.mktemp("relay"))
    except BaselineUnavailable as exc:
        pytest.skip(f"the relay cannot be built here: {exc}")


@pytest.fixture
def subscribers() -> Iterator[list[Subscriber]]:
    opened = open_subscribers(2)
    yield opened
    for subscriber in opened:
        subscriber.sock.close()


def _receive(subscriber: Subscriber, count: int) -> list[bytes]:
    subscriber.sock.settimeout(RECEIVE_TIMEOUT_S)
    return [subscriber.sock.recv(2048) for _ in range(count)]


def _inbound(key: bytes) -> Session:
    return Session(
        Policy(
            key=key,
            ssrc_type=Policy.SSRC_ANY_INBOUND,
            srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
        )
    )


def test_every_subscriber_gets_each_packet_under_its_own_key_and_ssrc(
    relay_binary: Path, subscribers: list[Subscriber]
) -> None:
    rx_key = secrets.token_bytes(KEY_BYTES)
    publisher = Publisher(rx_key, payload_bytes=1200)
    first_seq = publisher.seq
    relay = Relay(relay_binary, rx_key, subscribers, lifetime_s=30)
    try:
        for _ in range(10):
            publisher.send_burst(("127.0.0.1", relay.port), 3)
        for subscriber in subscribers:
            session = _inbound(subscriber.key)
            for index, packet in enumerate(_receive(subscriber, 30)):
                rtp = session.unprotect(packet)
                _, _, seq, _, ssrc = RTP_HEADER.unpack_from(rtp)
                assert ssrc == subscriber.ssrc != publisher.ssrc
                assert seq == (first_seq + index) & 0xFFFF
                assert rtp[RTP_HEADER.size :] == publisher.payload
        counters = relay.snapshot().counters
    finally:
        relay.stop()
        publisher.close()
    assert counters["received"] == 30
    assert counters["forwarded"] == 60
    assert counters["unprotect_errors"] == counters["protect_errors"] == 0


def test_a_packet_under_another_key_is_dropped_not_forwarded(
    relay_binary: Path, subscribers: list[Subscriber]
) -> None:
    rx_key = secrets.token_bytes(KEY_BYTES)
    stranger = Publisher(secrets.token_bytes(KEY_BYTES), payload_bytes=200)
    relay = Relay(relay_binary, rx_key, subscribers, lifetime_s=30)
    try:
        stranger.send_burst(("127.0.0.1", relay.port), 1)
        publisher = Publisher(rx_key, payload_bytes=200)
        publisher.send_burst(("127.0.0.1", relay.port), 1)
        publisher.close()
        # Datagrams on loopback arrive in order: the first one forwarded is the second sent.
        session = _inbound(subscribers[0].key)
        rtp = session.unprotect(_receive(subscribers[0], 1)[0])
        assert RTP_HEADER.unpack_from(rtp)[2] == publisher.seq - 1 & 0xFFFF
        counters = relay.snapshot().counters
    finally:
        relay.stop()
        stranger.close()
    assert counters["unprotect_errors"] == 1
    assert counters["forwarded"] == 2


def test_a_short_paced_run_reports_the_fan_out_and_its_cost(relay_binary: Path) -> None:
    spec = BaselineSpec(subscribers=2, rate_pps=200.0, burst=2, duration_s=1.0, warmup_s=0.2)
    result = run_baseline(spec, relay_binary)
    assert result["mode"] == "paced"
    assert 150 <= result["in_pps"] <= 250
    assert result["out_pps"] == pytest.approx(2 * result["in_pps"], rel=0.05)
    assert result["subscriber_received_pps"] == pytest.approx(result["out_pps"], rel=0.1)
    assert result["cpu_us_per_packet"] > 0
    assert result["unprotect_errors"] == result["protect_errors"] == result["send_errors"] == 0
    latency = result["latency_us"]
    # Every copy sent in the window is timed (the last few may arrive after it ends).
    assert latency["count"] == pytest.approx(result["out_pps"] * result["window_s"], rel=0.1)
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"] < 1_000_000


def test_latency_is_the_kernel_receive_time_minus_the_send_time_of_that_sequence() -> None:
    subscriber = open_subscribers(1)[0]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        now_ns = time.time_ns()
        sent_at = {7: now_ns - 5_000_000, 8: now_ns - 50_000_000}  # 5 ms and 50 ms ago
        for seq in (7, 9, 8):  # 9 was never sent: not timed
            header = RTP_HEADER.pack(0x80, 96, seq, 0, 1)
            sender.sendto(header + b"x" * 20, subscriber.sock.getsockname())
        deadline = time.monotonic() + RECEIVE_TIMEOUT_S
        while subscriber.received < 3 and time.monotonic() < deadline:
            _drain(subscriber, bytearray(2048), sent_at)
        assert subscriber.received == 3
        first, second = subscriber.latencies_ns
        assert 5_000_000 <= first < 5_000_000 + 500_000_000
        assert 50_000_000 <= second < 50_000_000 + 500_000_000
        assert second - first >= 45_000_000 - 1_000_000  # ordered by their own send times
    finally:
        sender.close()
        subscriber.sock.close()
