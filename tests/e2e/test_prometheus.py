"""A real Prometheus scrapes a real SFU while an aiortc publisher streams to a viewer.

Needs Debian's `prometheus` (/usr/bin/prometheus) and `sfu serve --metrics-port`.
Prometheus runs on loopback with a generated configuration that has one static
target and nothing else: no alerting, remote write or service discovery, so it sends
nothing anywhere but that target.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.harness import SfuServer, free_tcp_port, free_udp_port
from tests.peers import wait_for, whep_subscribe, whip_publish

PROMETHEUS_PATH = Path("/usr/bin/prometheus")
DASHBOARD = Path(__file__).resolve().parents[2] / "docker" / "grafana" / "dashboards" / "sfu.json"
SCRAPE_INTERVAL_S = 1
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
TARGET_UP_TIMEOUT_S = 30.0
MEDIA_TIMEOUT_S = 20.0
WINDOW_S = 5.0
LOG_TAIL_CHARS = 5_000

pytestmark = pytest.mark.skipif(
    not PROMETHEUS_PATH.exists(), reason="needs Debian's prometheus package"
)


@dataclass
class PrometheusServer:
    """One Prometheus process scraping one target, with its own temporary storage."""

    directory: Path
    port: int
    target: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "prometheus.log"

    def start(self) -> None:
        config = self.directory / "prometheus.yml"
        # JSON is valid YAML, so the configuration needs no YAML library.
        config.write_text(
            json.dumps(
                {
                    "global": {
                        "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                        "scrape_timeout": f"{SCRAPE_INTERVAL_S}s",
                        "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
                    },
                    "scrape_configs": [
                        {"job_name": "sfu", "static_configs": [{"targets": [self.target]}]}
                    ],
                }
            )
        )
        command = [
            str(PROMETHEUS_PATH),
            f"--config.file={config}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        problem = "no attempt yet"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited early\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
                    problem = f"/-/ready -> {response.status}"
            except (OSError, urllib.error.URLError) as exc:
                problem = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready after {START_TIMEOUT_S} s ({problem})")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError as exc:
            return f"(no prometheus log: {exc})"


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_tcp_port()


@pytest.fixture(scope="module")
def sfu_server(tmp_path_factory: pytest.TempPathFactory, metrics_port: int) -> Iterator[SfuServer]:
    """The SFU with its metrics listener on (named like conftest's, so its log is reported)."""
    data_dir = tmp_path_factory.mktemp("sfu-metrics")
    server = SfuServer(
        data_dir=data_dir,
        port=free_tcp_port(),
        media_port=free_udp_port(),
        log_path=data_dir / "server.log",
        extra_args=["--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port)],
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, sfu_server: SfuServer, metrics_port: int
) -> Iterator[PrometheusServer]:
    server = PrometheusServer(
        tmp_path_factory.mktemp("prometheus"), free_tcp_port(), f"127.0.0.1:{metrics_port}"
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
async def api(prometheus: PrometheusServer) -> AsyncIterator[aiohttp.ClientSession]:
    """Prometheus' HTTP API, once it has scraped the SFU successfully."""
    async with aiohttp.ClientSession(
        base_url=prometheus.url, timeout=aiohttp.ClientTimeout(total=5)
    ) as session:
        deadline = time.monotonic() + TARGET_UP_TIMEOUT_S
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            async with session.get("/api/v1/targets") as response:
                targets = (await response.json())["data"]["activeTargets"]
            if targets and all(target["health"] == "up" for target in targets):
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(
                f"SFU target not up after {TARGET_UP_TIMEOUT_S} s: {targets}\n"
                f"{prometheus.log_tail()}"
            )
        yield session


async def _query(api: aiohttp.ClientSession, promql: str, at: float | None = None) -> list[Any]:
    params = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
    async with api.get("/api/v1/query", params=params) as response:
        body = await response.json()
    assert body["status"] == "success", f"{promql}: {body}"
    result: list[Any] = body["data"]["result"]
    return result


async def _value(api: aiohttp.ClientSession, promql: str, at: float) -> float:
    result = await _query(api, promql, at)
    assert len(result) == 1, f"{promql}: {result}"
    return float(result[0]["value"][1])


async def test_prometheus_rate_matches_what_the_viewer_receives(
    sfu_server: SfuServer, http: aiohttp.ClientSession, api: aiohttp.ClientSession
) -> None:
    base = sfu_server.base_url + "/"
    pub = await whip_publish(http, base, "metrics", sfu_server.token("metrics", "cam"))
    viewer_token = sfu_server.token("metrics", "tv", role="viewer")
    sub = await whep_subscribe(http, base, "metrics", viewer_token)
    try:
        got = sub.received.frames
        assert await wait_for(lambda: got["video"] > 30 and got["audio"] > 30, MEDIA_TIMEOUT_S)
        # The viewer's own count over the same few seconds that rate(...[5s]) covers.
        start_count, start = dict(got), time.monotonic()
        await asyncio.sleep(WINDOW_S)
        end_count, elapsed, at = dict(got), time.monotonic() - start, time.time()
        # Let Prometheus scrape once more, then evaluate at the end of the window.
        await asyncio.sleep(SCRAPE_INTERVAL_S + 0.5)
        received = {kind: (end_count[kind] - start_count[kind]) / elapsed for kind in got}
        rate = {
            kind: await _value(
                api, f'rate(sfu_forwarded_packets_total{{kind="{kind}"}}[{WINDOW_S:.0f}s])', at
            )
            for kind in ("audio", "video")
        }
        byte_rate = await _value(
            api, f'rate(sfu_forwarded_bytes_total{{kind="video"}}[{WINDOW_S:.0f}s])', at
        )
    finally:
        await sub.close(http)
        await pub.close(http)
    seen = f"prometheus={rate} viewer={received}"
    # aiortc sends 20 ms Opus frames: 50 packets/s, one decoded frame each.
    assert 30 <= rate["audio"] <= 70, seen
    assert 0.6 * received["audio"] <= rate["audio"] <= 1.4 * received["audio"], seen
    # ~30 fps of video, every decoded frame took at least one forwarded packet.
    assert rate["video"] > 10, seen
    assert 0.6 * received["video"] <= rate["video"] <= 10 * received["video"], seen
    assert 50 <= byte_rate / rate["video"] <= 1500, f"bytes/s={byte_rate} {seen}"


async def test_every_dashboard_query_runs_on_prometheus(api: aiohttp.ClientSession) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"].replace("$instance", ".*").replace("$__rate_interval", f"{WINDOW_S:.0f}s")
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
    # rate() needs two samples inside its range.
    deadline = time.monotonic() + TARGET_UP_TIMEOUT_S
    while not await _query(api, f"count_over_time(sfu_rooms[{WINDOW_S:.0f}s]) >= 2"):
        assert time.monotonic() < deadline, "prometheus holds fewer than two samples"
        await asyncio.sleep(0.2)
    empty = []
    for expr in exprs:
        if not await _query(api, expr):
            empty.append(expr)
    # Drops and SRTP errors have no series until something is dropped.
    assert all("dropped" in expr or "srtp" in expr for expr in empty), empty
