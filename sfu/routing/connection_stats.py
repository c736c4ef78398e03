"""What the media plane knows about one session's connection, read on demand.

A snapshot for the participant itself (the meeting page's connection panel): its
transports as the server sees them (ICE pair, DTLS, SRTP profile) and, per track, the
counters the server keeps anyway: what it received from the participant and what the
participant reported about what it was sent (RTCP receiver reports). Reading it
touches nothing on the packet path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sfu.routing.session import MediaAddress, Session

if TYPE_CHECKING:
    from sfu.routing.consumer import Consumer
    from sfu.routing.producer import Producer
    from sfu.routing.transport import Transport

__all__ = [
    "ConnectionStats",
    "IceEndpoint",
    "PublishedTrackStats",
    "ReceivedTrackStats",
    "TransportStats",
    "describe_connection",
]


@dataclass(frozen=True, slots=True)
class IceEndpoint:
    address: str
    port: int

    def to_json(self) -> dict[str, object]:
        return {"address": self.address, "port": self.port}


@dataclass(frozen=True, slots=True)
class PublishedTrackStats:
    """A track the participant publishes, as the server receives it."""

    track_id: str
    kind: str
    label: str
    mid: str
    codec: str
    packets_received: int
    packets_lost: int  # RFC 3550 A.3, cumulative; negative with duplicates
    jitter_ms: float  # RFC 3550 A.8 interarrival jitter
    packets_dropped: int  # over the track's rate limit
    muted: bool

    def to_json(self) -> dict[str, object]:
        return {
            "track_id": self.track_id,
            "kind": self.kind,
            "label": self.label,
            "mid": self.mid,
            "codec": self.codec,
            "packets_received": self.packets_received,
            "packets_lost": self.packets_lost,
            "jitter_ms": self.jitter_ms,
            "packets_dropped": self.packets_dropped,
            "muted": self.muted,
        }


@dataclass(frozen=True, slots=True)
class ReceivedTrackStats:
    """A track the server sends the participant; loss and jitter are what the
    participant's last RTCP receiver report said (None before the first)."""

    track_id: str | None  # None while the subscription has no source
    identity: str | None  # the publisher
    kind: str
    mid: str
    codec: str
    packets_sent: int
    bytes_sent: int
    fraction_lost: float | None  # 0..1, over the last report's interval
    packets_lost: int | None
    jitter_ms: float | None

    def to_json(self) -> dict[str, object]:
        return {
            "track_id": self.track_id,
            "identity": self.identity,
            "kind": self.kind,
            "mid": self.mid,
            "codec": self.codec,
            "packets_sent": self.packets_sent,
            "bytes_sent": self.bytes_sent,
            "fraction_lost": self.fraction_lost,
            "packets_lost": self.packets_lost,
            "jitter_ms": self.jitter_ms,
        }


@dataclass(frozen=True, slots=True)
class TransportStats:
    """One ICE + DTLS transport of the session."""

    mids: tuple[str, ...]
    carries: str  # "media" | "data"
    dtls_state: str
    dtls_version: str | None
    dtls_cipher: str | None
    srtp_profile: str | None
    local: IceEndpoint  # the server's candidate
    remote: IceEndpoint | None  # the address ICE validated (None before it)
    last_heard_s: float  # seconds since the last datagram from the participant
    published: tuple[PublishedTrackStats, ...] = ()
    received: tuple[ReceivedTrackStats, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "mids": list(self.mids),
            "carries": self.carries,
            "dtls_state": self.dtls_state,
            "dtls_version": self.dtls_version,
            "dtls_cipher": self.dtls_cipher,
            "srtp_profile": self.srtp_profile,
            "ice": {
                "local": self.local.to_json(),
                "remote": self.remote.to_json() if self.remote is not None else None,
            },
            "last_heard_s": self.last_heard_s,
            "published": [t.to_json() for t in self.published],
            "received": [t.to_json() for t in self.received],
        }


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    """Every open transport of one session, with its tracks."""

    identity: str
    transports: tuple[TransportStats, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, object]:
        return {
            "identity": self.identity,
            "transports": [t.to_json() for t in self.transports],
        }


def _ms(rtp_units: float, clock_rate: int) -> float:
    return round(rtp_units * 1000.0 / clock_rate, 3)


def _published(producer: Producer) -> PublishedTrackStats:
    stats = producer.stats
    return PublishedTrackStats(
        track_id=producer.track_id,
        kind=producer.kind,
        label=producer.info.label,
        mid=producer.mid,
        codec=producer.codec.name,
        packets_received=producer.packets,
        packets_lost=stats.packets_lost,
        jitter_ms=_ms(stats.jitter, producer.codec.clock_rate),
        packets_dropped=producer.dropped_rate,
        muted=producer.muted,
    )


def _received(consumer: Consumer) -> ReceivedTrackStats:
    source, report, codec = consumer.source, consumer.last_report, consumer.codec
    return ReceivedTrackStats(
        track_id=source.track_id if source is not None else None,
        identity=source.info.identity if source is not None else None,
        kind=consumer.kind,
        mid=consumer.mid,
        codec=codec.name,
        packets_sent=consumer.packets_sent,
        bytes_sent=consumer.octets_sent,
        fraction_lost=round(report.fraction_lost / 256, 4) if report is not None else None,
        packets_lost=report.packets_lost if report is not None else None,
        jitter_ms=_ms(report.jitter, codec.clock_rate) if report is not None else None,
    )


def _transport(
    transport: Transport, mids: list[str], address: MediaAddress, now: float
) -> TransportStats:
    addr = transport.addr  # an IPv6 address may come with flow info and scope
    remote = IceEndpoint(addr[0], addr[1]) if addr is not None else None
    return TransportStats(
        mids=tuple(sorted(mids, key=lambda mid: (len(mid), mid))),
        carries="data" if transport.data is not None else "media",
        dtls_state=transport.dtls.state.value,
        dtls_version=transport.dtls.version,
        dtls_cipher=transport.dtls.cipher,
        srtp_profile=transport.srtp_profile,
        local=IceEndpoint(address.ip, address.port),
        remote=remote,
        last_heard_s=round(max(0.0, now - transport.last_heard), 3),
        published=tuple(_published(p) for p in transport.producers_by_mid.values()),
        received=tuple(_received(c) for c in transport.consumers_by_ssrc.values()),
    )


def _remote_data(session: Session, now: float) -> TransportStats | None:
    """The data channels' transport when the data process runs it (as last told)."""
    link, host = session.remote_data, session.worker.data_host
    if link is None or link.closed or link.state is None or host is None:
        return None
    state = link.state
    remote = state.get("remote")
    return TransportStats(
        mids=(link.mid,),
        carries="data",
        dtls_state=str(state.get("dtls_state")),
        dtls_version=state.get("dtls_version"),
        dtls_cipher=state.get("dtls_cipher"),
        srtp_profile=state.get("srtp_profile"),
        local=IceEndpoint(session.address.ip, host.port),
        remote=IceEndpoint(str(remote["address"]), int(remote["port"])) if remote else None,
        last_heard_s=round(float(state.get("last_heard_s", 0.0)) + now - link.state_at, 3),
    )


def describe_connection(session: Session, now: float) -> ConnectionStats:
    """The session's open transports, in the order of their first m-section."""
    mids: dict[int, list[str]] = {}
    for mid, transport in session.transport_of_mid.items():
        mids.setdefault(id(transport), []).append(mid)
    transports = [t for t in session.transports.values() if not t.closed]
    described = [_transport(t, mids.get(id(t), []), session.address, now) for t in transports]
    remote = _remote_data(session, now)
    if remote is not None:
        described.append(remote)
    described.sort(key=lambda t: [(len(m), m) for m in t.mids])
    return ConnectionStats(session.identity, tuple(described))
