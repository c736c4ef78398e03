"""Abuse resistance at the front door: per source IP and per connection limits.

Sans-I/O: every call takes `now` (seconds, monotonic). The HTTP middleware, the
WebSocket connection and the token checks feed it; it answers "go on" or "retry
after N seconds" and counts what it refused. Limits come from <data-dir>/limits.toml
(read at start; see docs/SECURITY.md):

    [signaling]
    requests_per_s = 20        # new HTTP requests per source IP (WS upgrades, WHIP, WHEP, admin)
    requests_burst = 40
    connections_per_ip = 32    # WebSocket connections open at once per source IP
    messages_per_s = 50        # WebSocket messages per connection
    messages_burst = 100
    auth_failures = 5          # failed authentications per IP before back-off starts
    auth_backoff_s = 1         # first back-off; doubles with each further failure
    auth_backoff_max_s = 300

    [media]                    # per published track (one participant, one channel)
    audio_pps = 250
    audio_kbps = 256
    video_pps = 4000
    video_kbps = 8000
"""

from __future__ import annotations

import tomllib
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

# Source addresses tracked at once; the least recently seen is forgotten first, so a
# spoofed-address flood costs bounded memory (and forgets nobody still active).
MAX_TRACKED_SOURCES = 65_536
# A trip is audited at most once per source and limit in this many seconds.
AUDIT_EVERY_S = 60.0
# What /metrics reports, by `limit` label (fixed set).
LIMIT_NAMES = ("request", "connection", "message", "auth_backoff")


class LimitsError(ValueError):
    """limits.toml is malformed: names the key and what is wrong."""


@dataclass(frozen=True, slots=True)
class SignalingLimits:
    requests_per_s: float = 20.0
    requests_burst: float = 40.0
    connections_per_ip: int = 32
    messages_per_s: float = 50.0
    messages_burst: float = 100.0
    auth_failures: int = 5
    auth_backoff_s: float = 1.0
    auth_backoff_max_s: float = 300.0


@dataclass(frozen=True, slots=True)
class MediaLimits:
    audio_pps: int = 250
    audio_kbps: int = 256
    video_pps: int = 4000
    video_kbps: int = 8000


@dataclass(frozen=True, slots=True)
class Limits:
    signaling: SignalingLimits = SignalingLimits()
    media: MediaLimits = MediaLimits()


def _section(table: object, name: str, cls: type[Any]) -> Any:
    if not isinstance(table, dict):
        raise LimitsError(f"[{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise LimitsError(f"[{name}] unknown setting {key!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise LimitsError(f"[{name}] {key} must be a number")
        if value <= 0 or value > 1e9:
            raise LimitsError(f"[{name}] {key} must be above 0 (and sane)")
        if known[key].type == "int":
            if not float(value).is_integer():
                raise LimitsError(f"[{name}] {key} must be a whole number")
            value = int(value)
        values[key] = value
    return cls(**values)


def parse_limits(text: str) -> Limits:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LimitsError(str(exc)) from exc
    unknown = set(document) - {"signaling", "media"}
    if unknown:
        raise LimitsError(f"unknown table(s): {', '.join(sorted(unknown))}")
    return Limits(
        _section(document.get("signaling", {}), "signaling", SignalingLimits),
        _section(document.get("media", {}), "media", MediaLimits),
    )


def load_limits(data_dir: Path) -> Limits:
    """The limits of <data-dir>/limits.toml, or the defaults when there is none."""
    path = data_dir / "limits.toml"
    if not path.exists():
        return Limits()
    try:
        return parse_limits(path.read_text(encoding="utf-8"))
    except LimitsError as exc:
        raise LimitsError(f"{path}: {exc}") from exc


class TokenBucket:
    """Refills at `rate` per second up to `burst`; each allowed event takes one token."""

    __slots__ = ("rate", "burst", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def take(self, now: float, amount: float = 1.0) -> float:
        """0.0 if allowed (and taken); else the seconds until it would be."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= amount:
            self.tokens -= amount
            return 0.0
        return (amount - self.tokens) / self.rate


class _Source:
    __slots__ = ("requests", "connections", "failures", "blocked_until", "last_audit")

    def __init__(self, limits: SignalingLimits, now: float) -> None:
        self.requests = TokenBucket(limits.requests_per_s, limits.requests_burst, now)
        self.connections = 0
        self.failures = 0
        self.blocked_until = 0.0
        self.last_audit: dict[str, float] = {}


TripListener = Callable[[str, str, float], None]  # (limit, source, retry_after_s)


class SourceGuard:
    """Per source IP: request rate, concurrent WebSockets, failed-auth back-off."""

    def __init__(self, limits: SignalingLimits, on_trip: TripListener | None = None) -> None:
        self.limits = limits
        self.on_trip = on_trip
        self.refused: Counter[str] = Counter({name: 0 for name in LIMIT_NAMES})
        self._sources: OrderedDict[str, _Source] = OrderedDict()

    def _source(self, ip: str, now: float) -> _Source:
        source = self._sources.get(ip)
        if source is None:
            source = _Source(self.limits, now)
            self._sources[ip] = source
            if len(self._sources) > MAX_TRACKED_SOURCES:
                self._evict()
        else:
            self._sources.move_to_end(ip)
        return source

    def _evict(self) -> None:
        # Forget the least recently seen source that holds no open connection.
        for ip, source in self._sources.items():
            if source.connections == 0:
                del self._sources[ip]
                return
        self._sources.popitem(last=False)

    def _trip(self, limit: str, ip: str, source: _Source, retry_s: float, now: float) -> float:
        self.refused[limit] += 1
        if now - source.last_audit.get(limit, -AUDIT_EVERY_S) >= AUDIT_EVERY_S:
            source.last_audit[limit] = now
            if self.on_trip is not None:
                self.on_trip(limit, ip, retry_s)
        return retry_s

    def check_request(self, ip: str, now: float) -> float:
        """Before any work on a request: 0.0 to go on, else seconds to wait."""
        source = self._source(ip, now)
        if source.blocked_until > now:
            return self._trip("auth_backoff", ip, source, source.blocked_until - now, now)
        wait = source.requests.take(now)
        if wait:
            return self._trip("request", ip, source, wait, now)
        return 0.0

    def open_connection(self, ip: str, now: float) -> bool:
        source = self._source(ip, now)
        if source.connections >= self.limits.connections_per_ip:
            self._trip("connection", ip, source, 1.0, now)
            return False
        source.connections += 1
        return True

    def close_connection(self, ip: str) -> None:
        source = self._sources.get(ip)
        if source is not None and source.connections > 0:
            source.connections -= 1

    def auth_failed(self, ip: str, now: float) -> float:
        """Count a failed authentication; the back-off it starts (0.0 if none yet)."""
        source = self._source(ip, now)
        source.failures += 1
        over = source.failures - self.limits.auth_failures
        if over < 0:
            return 0.0
        backoff = min(self.limits.auth_backoff_max_s, self.limits.auth_backoff_s * 2.0**over)
        source.blocked_until = max(source.blocked_until, now + backoff)
        return self._trip("auth_backoff", ip, source, backoff, now)

    def auth_succeeded(self, ip: str) -> None:
        source = self._sources.get(ip)
        if source is not None:
            source.failures = 0

    def message_bucket(self, now: float) -> TokenBucket:
        """A fresh per-connection bucket for WebSocket messages."""
        return TokenBucket(self.limits.messages_per_s, self.limits.messages_burst, now)

    def message_refused(self, ip: str, now: float) -> None:
        self._trip("message", ip, self._source(ip, now), 0.0, now)

    @property
    def tracked_sources(self) -> int:
        return len(self._sources)
