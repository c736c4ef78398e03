"""Prometheus metrics for the operator: the media plane's counters, read at scrape time.

The media plane keeps plain integer counters and a latency histogram (see
`MediaService.metrics()`); this module only turns one snapshot of them into Prometheus
families when Prometheus scrapes `/metrics`. Nothing here runs per packet.

Cardinality rule: every label has a small, fixed set of values.

- `kind`: `audio`, `video`
- `reason`: the fixed drop reasons and SRTP error reasons of the media plane
- `result`: `ok`, `failed`

No metric carries a room, participant identity, session or tenant label. Those sets
are unbounded (anyone holding a token creates rooms and identities), and every new
label value would become a new time series that the operator's Prometheus stores for
its whole retention. Per-room detail belongs in logs and the admin API, not here.

The listener is plain HTTP on its own port, bound to 127.0.0.1 by default: it serves
counters to the operator's Prometheus, not to clients.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from sfu.control import HistogramSnapshot, MediaService, MetricsSnapshot
from signaling.ratelimit import LIMIT_NAMES, SourceGuard

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
# Always exported, at zero if nothing happened yet: a series that first appears at a
# non-zero value hides its first increments from rate() and increase().
MEDIA_KINDS = ("audio", "video")
DTLS_RESULTS = ("ok", "failed")
DATA_CHANNELS = ("control", "file")
# Refusal codes exported from zero; others appear when they first happen.
DATA_REFUSALS = ("bad_message", "forbidden", "file_too_large", "file_type_refused", "too_large")

_REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("metrics_registry", CollectorRegistry)


class MediaCollector(Collector):
    """A custom collector: one `MediaService.metrics()` snapshot per scrape."""

    def __init__(self, media: MediaService) -> None:
        self._media = media

    def collect(self) -> Iterable[Metric]:
        return snapshot_families(self._media.metrics())


def snapshot_families(snapshot: MetricsSnapshot) -> list[Metric]:
    """The Prometheus families for one media-plane snapshot."""
    families: list[Metric] = [
        GaugeMetricFamily("sfu_rooms", "Rooms with at least one session.", value=snapshot.rooms),
        GaugeMetricFamily(
            "sfu_participants",
            "Announced participants in all rooms (WHEP viewers are not counted).",
            value=snapshot.participants,
        ),
        GaugeMetricFamily(
            "sfu_sessions", "Open sessions (participants and viewers).", value=snapshot.sessions
        ),
        GaugeMetricFamily(
            "sfu_transports", "Open ICE+DTLS media transports.", value=snapshot.transports
        ),
        _labelled_counter(
            "sfu_forwarded_packets_total",
            "RTP packets sent to subscribers.",
            "kind",
            snapshot.forwarded_packets,
            MEDIA_KINDS,
        ),
        _labelled_counter(
            "sfu_forwarded_bytes_total",
            "Bytes of RTP (header and payload, before SRTP) sent to subscribers.",
            "kind",
            snapshot.forwarded_bytes,
            MEDIA_KINDS,
        ),
        _labelled_counter(
            "sfu_dropped_packets_total",
            "Datagrams and packets the media plane dropped.",
            "reason",
            snapshot.dropped_packets,
        ),
        _labelled_counter(
            "sfu_srtp_errors_total",
            "SRTP and SRTCP protect or unprotect failures.",
            "reason",
            snapshot.srtp_errors,
        ),
        _labelled_counter(
            "sfu_dtls_handshakes_total",
            "Completed DTLS handshakes.",
            "result",
            snapshot.dtls_handshakes,
            DTLS_RESULTS,
        ),
        CounterMetricFamily(
            "sfu_ice_consent_failures_total",
            "Transports closed because ICE consent or media stopped.",
            value=snapshot.ice_consent_failures,
        ),
        CounterMetricFamily(
            "sfu_datagrams_received_total",
            "UDP datagrams received on the media port.",
            value=snapshot.datagrams_in,
        ),
        CounterMetricFamily(
            "sfu_datagrams_sent_total",
            "UDP datagrams sent from the media port.",
            value=snapshot.datagrams_out,
        ),
        _labelled_counter(
            "sfu_data_messages_total",
            "Messages (file chunks included) received from clients on the data channels.",
            "channel",
            snapshot.data_messages,
            DATA_CHANNELS,
        ),
        _labelled_counter(
            "sfu_data_sent_bytes_total",
            "Bytes of messages the relay queued for clients on the data channels.",
            "channel",
            snapshot.data_sent_bytes,
            DATA_CHANNELS,
        ),
        _labelled_counter(
            "sfu_data_refused_total",
            "Data-channel messages and file offers refused, by error code.",
            "code",
            snapshot.data_refused,
            DATA_REFUSALS,
        ),
        _labelled_counter(
            "sfu_file_transfers_total",
            "File transfers that ended: complete, or ended early (cancelled, refused later).",
            "result",
            snapshot.file_transfers,
            ("complete", "ended"),
        ),
    ]
    if snapshot.forward_latency is not None:
        families.append(
            _latency_histogram(
                "sfu_forward_latency_seconds",
                "Time from reading an RTP datagram to handing its copies to the socket.",
                snapshot.forward_latency,
            )
        )
    if snapshot.receive_queue is not None:
        families.append(
            _latency_histogram(
                "sfu_receive_queue_seconds",
                "How long the oldest waiting datagram sat in the media socket before the"
                " worker read it (one sample per read batch): time the worker was busy.",
                snapshot.receive_queue,
            )
        )
    return families


def _labelled_counter(
    name: str,
    documentation: str,
    label: str,
    values: Mapping[str, int],
    always: tuple[str, ...] = (),
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    # Sorted so that the exposition is stable from one scrape to the next.
    for value in sorted({*always, *values}):
        family.add_metric([value], values.get(value, 0))
    return family


def _latency_histogram(
    name: str, documentation: str, histogram: HistogramSnapshot
) -> HistogramMetricFamily:
    # The snapshot's counts are already cumulative, one per bound and then +Inf.
    buckets = [
        (_bucket_label(bound), float(count))
        for bound, count in zip(histogram.bounds, histogram.cumulative[:-1], strict=True)
    ]
    buckets.append(("+Inf", float(histogram.cumulative[-1])))
    return HistogramMetricFamily(
        name,
        documentation,
        buckets=buckets,
        sum_value=histogram.sum,
    )


def _bucket_label(bound: float) -> str:
    # Shortest exact form, without a trailing ".0", as Prometheus' own clients write `le`.
    text = repr(bound)
    return text[:-2] if text.endswith(".0") else text


class GuardCollector(Collector):
    """Requests, connections and messages refused by the signaling rate limits."""

    def __init__(self, guard: SourceGuard) -> None:
        self._guard = guard

    def collect(self) -> Iterable[Metric]:
        refused = self._guard.refused
        return [
            _labelled_counter(
                "sfu_rate_limited",
                "Signaling work refused by a rate limit (per source IP or per connection).",
                "limit",
                {name: refused[name] for name in LIMIT_NAMES},
            ),
            GaugeMetricFamily(
                "sfu_rate_limit_sources",
                "Source addresses the rate limiter is tracking.",
                value=self._guard.tracked_sources,
            ),
        ]


def create_metrics_registry(
    media: MediaService, guard: SourceGuard | None = None
) -> CollectorRegistry:
    """A registry of its own, so nothing registered globally leaks into our output."""
    registry = CollectorRegistry()
    registry.register(MediaCollector(media))
    if guard is not None:
        registry.register(GuardCollector(guard))
    return registry


def create_metrics_app(media: MediaService, guard: SourceGuard | None = None) -> web.Application:
    """The plain-HTTP application that serves `/metrics` and nothing else."""
    app = web.Application()
    app[_REGISTRY] = create_metrics_registry(media, guard)
    app.router.add_get(METRICS_PATH, _serve_metrics)
    return app


async def _serve_metrics(request: web.Request) -> web.Response:
    # Rendered on the event loop that runs the media plane, so the snapshot never
    # races the datagram handler (prometheus_client's own server would use a thread).
    body = generate_latest(request.app[_REGISTRY])
    return web.Response(
        body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"}
    )


async def start_metrics_server(
    media: MediaService, host: str, port: int, guard: SourceGuard | None = None
) -> web.AppRunner:
    """Serve `/metrics` on host:port; call `cleanup()` on the runner to stop.

    Port 0 binds an ephemeral port (the CLI treats `--metrics-port 0` as "off" and
    does not call this); the bound addresses are in `runner.addresses`.
    """
    runner = web.AppRunner(create_metrics_app(media, guard), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    if not _is_loopback(host):
        log.warning(
            "metrics served without TLS or authentication on a non-loopback address host=%s",
            host,
        )
    for address in runner.addresses:
        log.info(
            "metrics listening address=%s port=%d path=%s", address[0], address[1], METRICS_PATH
        )
    return runner


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
