"""signaling.ratelimit: per-address limits, failed-auth back-off, limits.toml."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.routing.track import RateLimiter
from signaling import ratelimit
from signaling.ratelimit import (
    Limits,
    LimitsError,
    MediaLimits,
    SignalingLimits,
    SourceGuard,
    TokenBucket,
    load_limits,
    parse_limits,
)
from tests.fuzzing import examples

IP, OTHER = "203.0.113.7", "198.51.100.1"


def guard(**overrides: float) -> tuple[SourceGuard, list[tuple[str, str, float]]]:
    trips: list[tuple[str, str, float]] = []
    limits = SignalingLimits(**overrides)  # type: ignore[arg-type]
    return SourceGuard(limits, lambda *trip: trips.append(trip)), trips


def test_token_bucket_allows_the_burst_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.1)
    assert bucket.take(0.1) == 0.0  # refilled one token in 100 ms


def test_requests_beyond_the_burst_are_refused_per_address() -> None:
    g, trips = guard(requests_per_s=5, requests_burst=5)
    assert all(g.check_request(IP, 0.0) == 0.0 for _ in range(5))
    assert g.check_request(IP, 0.0) == pytest.approx(0.2)
    assert g.check_request(OTHER, 0.0) == 0.0  # another address has its own bucket
    assert g.check_request(IP, 0.2) == 0.0
    assert g.refused["request"] == 1
    assert trips == [("request", IP, pytest.approx(0.2))]


def test_failed_authentications_start_a_doubling_back_off_that_blocks_requests() -> None:
    g, trips = guard(auth_failures=3, auth_backoff_s=1, auth_backoff_max_s=5)
    assert [g.auth_failed(IP, 0.0) for _ in range(2)] == [0.0, 0.0]
    assert g.auth_failed(IP, 0.0) == 1.0  # the third failure: 1 s
    assert g.check_request(IP, 0.5) == pytest.approx(0.5)  # blocked, even a valid token
    assert g.check_request(OTHER, 0.5) == 0.0
    assert g.check_request(IP, 1.0) == 0.0
    assert g.auth_failed(IP, 1.0) == 2.0
    assert g.auth_failed(IP, 3.0) == 4.0
    assert g.auth_failed(IP, 7.0) == 5.0  # capped
    assert g.refused["auth_backoff"] == 5
    # Audited once per address and limit per minute, however often it trips.
    assert [t[0] for t in trips] == ["auth_backoff"]


def test_a_successful_authentication_clears_the_failures() -> None:
    g, _ = guard(auth_failures=2)
    g.auth_failed(IP, 0.0)
    g.auth_succeeded(IP)
    assert g.auth_failed(IP, 0.0) == 0.0


def test_trips_are_audited_again_after_a_minute() -> None:
    g, trips = guard(requests_per_s=1, requests_burst=1)
    for now in (0.0, 0.0, 30.0, 30.0, 61.0, 61.0):
        g.check_request(IP, now)
    # Refused at 0 s, 30 s and 61 s; audited at 0 s and 61 s only.
    assert g.refused["request"] == 3
    assert len(trips) == 2


def test_concurrent_connections_are_capped_and_released() -> None:
    g, _ = guard(connections_per_ip=2)
    assert g.open_connection(IP, 0.0) and g.open_connection(IP, 0.0)
    assert not g.open_connection(IP, 0.0)
    assert g.open_connection(OTHER, 0.0)
    g.close_connection(IP)
    assert g.open_connection(IP, 0.0)
    assert g.refused["connection"] == 1


def test_the_table_of_addresses_is_bounded_and_keeps_those_with_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ratelimit, "MAX_TRACKED_SOURCES", 100)
    g, _ = guard(connections_per_ip=1)
    assert g.open_connection(IP, 0.0)
    for i in range(1000):
        g.check_request(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert g.tracked_sources == 100
    # IP held a connection, so it was not forgotten: its cap still holds.
    assert not g.open_connection(IP, 0.0)


def test_limits_file_defaults_and_overrides(tmp_path: Path) -> None:
    assert load_limits(tmp_path) == Limits()
    (tmp_path / "limits.toml").write_text(
        "[signaling]\nauth_failures = 3\nmessages_per_s = 2.5\n[media]\nvideo_kbps = 2500\n"
    )
    limits = load_limits(tmp_path)
    assert limits.signaling.auth_failures == 3 and limits.signaling.messages_per_s == 2.5
    assert limits.media == MediaLimits(video_kbps=2500)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[signaling]\nauth_failures = 0\n", "above 0"),
        ("[signaling]\nauth_failures = 2.5\n", "whole number"),
        ("[signaling]\nrequests_per_s = true\n", "must be a number"),
        ("[signaling]\nrequests_per_s = '5'\n", "must be a number"),
        ("[signaling]\nburst = 5\n", "unknown setting 'burst'"),
        ("[network]\n", "unknown table"),
        ("signaling = 3\n", "must be a table"),
        ("[signaling\n", "line 1"),
    ],
)
def test_a_malformed_limits_file_is_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(LimitsError, match=says):
        parse_limits(text)


@settings(max_examples=examples(300), deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_or_raises_limits_error_only(text: str) -> None:
    try:
        parse_limits(text)
    except LimitsError:
        pass


def test_media_track_caps_packets_and_bits() -> None:
    limiter = RateLimiter(rate_pps=100, rate_bps=80_000)  # 10 kB per second
    # 1000-byte packets: the byte bucket (10 kB burst) runs out before the packet one.
    verdicts = [limiter.check(0.0, 1000) for _ in range(12)]
    assert verdicts[:10] == [""] * 10
    assert verdicts[10:] == ["bitrate_limited"] * 2
    assert limiter.allow(0.1, 1000)  # 100 ms refills 1000 bytes
    small = RateLimiter(rate_pps=2, rate_bps=1e9)
    assert [small.check(5.0, 10) for _ in range(3)] == ["", "", "rate_limited"]
