"""Tests for signaling.metrics: the collector's exposition for a media plane in a known state,
and the /metrics listener."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from sfu.control import MediaService, SessionPolicy
from sfu.routing.stats import DROP_REASONS, LATENCY_BUCKETS_S, SRTP_ERRORS
from signaling.metrics import create_metrics_registry, start_metrics_server

LATENCIES_S = (0.00003, 0.00007, 0.0002, 0.0002, 0.003, 0.2)  # the last is above every bound
PUBLISHER = SessionPolicy(can_publish=True, can_subscribe=True)
VIEWER = SessionPolicy(can_publish=False, can_subscribe=True, announce=False)


def _ignore(event: object) -> None:
    pass


@pytest.fixture
def service() -> Iterator[MediaService]:
    """A media service that is never started (no socket) with every counter set."""
    media = MediaService("127.0.0.1", 0, "127.0.0.1", datapath="python")
    media.open_session("room-a", "alice", "Alice", PUBLISHER, _ignore)
    media.open_session("room-a", "bob", "Bob", PUBLISHER, _ignore)
    media.open_session("room-a", "tv", "TV", VIEWER, _ignore)
    media.open_session("room-b", "carol", "Carol", PUBLISHER, _ignore)
    worker = media.media.worker
    for index in range(3):
        worker.create_transport(f"owner-{index}", f"ufrag{index}", [], 0.0)
    worker.forwarded_packets.update({"audio": 500, "video": 1200})
    worker.forwarded_bytes.update({"audio": 60_000, "video": 1_100_000})
    for offset, name in enumerate(sorted({*DROP_REASONS, *SRTP_ERRORS})):
        worker.counters[name] = 10 + offset
    worker.counters.update(
        {
            "dtls_ok": 7,
            "dtls_failed": 2,
            "consent_failures": 3,
            "datagrams_in": 9000,
            "datagrams_out": 12000,
        }
    )
    for seconds in LATENCIES_S:
        worker.forward_latency.observe(seconds)
    yield media


def _scrape(media: MediaService) -> dict[str, list[Sample]]:
    text = generate_latest(create_metrics_registry(media)).decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _by_label(samples: list[Sample], label: str) -> dict[str, float]:
    return {sample.labels[label]: sample.value for sample in samples}


def test_gauges_count_rooms_participants_sessions_and_transports(service: MediaService) -> None:
    families = _scrape(service)
    gauges = ("sfu_rooms", "sfu_participants", "sfu_sessions", "sfu_transports")
    values = {name: families[name][0].value for name in gauges}
    # The WHEP-style viewer is a session but not a participant.
    assert values == {
        "sfu_rooms": 2,
        "sfu_participants": 3,
        "sfu_sessions": 4,
        "sfu_transports": 3,
    }


def test_forwarded_counters_are_labelled_by_kind_only(service: MediaService) -> None:
    families = _scrape(service)
    assert [s.name for s in families["sfu_forwarded_packets"]] == [
        "sfu_forwarded_packets_total"
    ] * 2
    assert _by_label(families["sfu_forwarded_packets"], "kind") == {"audio": 500, "video": 1200}
    assert _by_label(families["sfu_forwarded_bytes"], "kind") == {
        "audio": 60_000,
        "video": 1_100_000,
    }
    for name in ("sfu_forwarded_packets", "sfu_forwarded_bytes"):
        assert all(set(sample.labels) == {"kind"} for sample in families[name])


def test_drop_and_srtp_reasons_are_exactly_the_fixed_sets(service: MediaService) -> None:
    families = _scrape(service)
    counters = service.media.worker.counters
    dropped = _by_label(families["sfu_dropped_packets"], "reason")
    assert dropped == {label: counters[name] for name, label in DROP_REASONS.items()}
    srtp = _by_label(families["sfu_srtp_errors"], "reason")
    assert srtp == {label: counters[name] for name, label in SRTP_ERRORS.items()}


def test_dtls_ice_and_datagram_counters(service: MediaService) -> None:
    families = _scrape(service)
    assert _by_label(families["sfu_dtls_handshakes"], "result") == {"ok": 7, "failed": 2}
    single = {
        name: (families[name][0].name, families[name][0].value)
        for name in (
            "sfu_ice_consent_failures",
            "sfu_datagrams_received",
            "sfu_datagrams_sent",
        )
    }
    assert single == {
        "sfu_ice_consent_failures": ("sfu_ice_consent_failures_total", 3),
        "sfu_datagrams_received": ("sfu_datagrams_received_total", 9000),
        "sfu_datagrams_sent": ("sfu_datagrams_sent_total", 12000),
    }


def test_latency_histogram_buckets_are_cumulative_and_inf_equals_count(
    service: MediaService,
) -> None:
    samples = _scrape(service)["sfu_forward_latency_seconds"]
    buckets = [s for s in samples if s.name == "sfu_forward_latency_seconds_bucket"]
    bounds = [float(s.labels["le"]) for s in buckets]
    counts = [s.value for s in buckets]
    assert bounds == [*LATENCY_BUCKETS_S, float("inf")]
    expected = [sum(1 for x in LATENCIES_S if x <= bound) for bound in bounds]
    assert counts == expected
    assert counts == sorted(counts)
    (count,) = [s.value for s in samples if s.name == "sfu_forward_latency_seconds_count"]
    (total,) = [s.value for s in samples if s.name == "sfu_forward_latency_seconds_sum"]
    assert counts[-1] == count == len(LATENCIES_S)
    assert total == pytest.approx(sum(LATENCIES_S))


def test_idle_service_exports_zero_for_every_kind_and_dtls_result() -> None:
    families = _scrape(MediaService("127.0.0.1", 0, "127.0.0.1", datapath="python"))
    assert _by_label(families["sfu_forwarded_packets"], "kind") == {"audio": 0, "video": 0}
    assert _by_label(families["sfu_dtls_handshakes"], "result") == {"ok": 0, "failed": 0}
    assert families["sfu_rooms"][0].value == 0


def test_no_label_names_a_room_or_identity(service: MediaService) -> None:
    labels = {
        name
        for samples in _scrape(service).values()
        for sample in samples
        for name in sample.labels
    }
    assert labels <= {"kind", "reason", "result", "le", "channel", "code"}


def test_collector_reads_the_media_plane_at_each_scrape(service: MediaService) -> None:
    registry = create_metrics_registry(service)
    before = generate_latest(registry).decode()
    service.media.worker.forwarded_packets["video"] += 5
    after = generate_latest(registry).decode()
    assert 'sfu_forwarded_packets_total{kind="video"} 1200.0' in before
    assert 'sfu_forwarded_packets_total{kind="video"} 1205.0' in after


async def test_metrics_server_serves_text_format_on_metrics_only(service: MediaService) -> None:
    runner = await start_metrics_server(service, "127.0.0.1", 0)
    try:
        port = runner.addresses[0][1]
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
                text = await response.text()
            async with http.get(f"http://127.0.0.1:{port}/") as response:
                assert response.status == 404
    finally:
        await runner.cleanup()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"sfu_rooms", "sfu_forwarded_packets", "sfu_forward_latency_seconds"} <= names


def test_data_channel_counters_are_labelled_by_channel_code_and_result(
    service: MediaService,
) -> None:
    idle = _scrape(MediaService("127.0.0.1", 0, "127.0.0.1", datapath="python"))
    assert _by_label(idle["sfu_data_messages"], "channel") == {"control": 0, "file": 0}
    assert _by_label(idle["sfu_file_transfers"], "result") == {"complete": 0, "ended": 0}
    service.media.worker.counters.update(
        {
            "data_messages:control": 4,
            "data_messages:file": 90,
            "data_sent_bytes:file": 70_000,
            "data_refused:file_too_large": 2,
            "file_transfers:complete": 1,
        }  # fmt: skip
    )
    families = _scrape(service)
    assert _by_label(families["sfu_data_messages"], "channel") == {"control": 4, "file": 90}
    assert _by_label(families["sfu_data_sent_bytes"], "channel") == {"control": 0, "file": 70_000}
    refused = _by_label(families["sfu_data_refused"], "code")
    assert refused["file_too_large"] == 2 and refused["forbidden"] == 0
    assert _by_label(families["sfu_file_transfers"], "result") == {"complete": 1, "ended": 0}
