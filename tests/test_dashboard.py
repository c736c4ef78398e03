"""The Grafana dashboard queries only metrics the exporter really produces, and shows them all.

A renamed or removed metric makes a panel silently empty in Grafana; here it fails a test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sfu.control import MediaService
from sfu.routing.stats import DROP_REASONS, SRTP_ERRORS
from signaling.metrics import MediaCollector

DASHBOARD = Path(__file__).resolve().parents[1] / "docker" / "grafana" / "dashboards" / "sfu.json"
METRIC_NAME = re.compile(r"\bsfu_[A-Za-z0-9_]*")


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _queries(node: Any) -> Iterator[str]:
    """Every PromQL string: panel `expr`s and the template variables' queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, dict) and isinstance(value.get("query"), str):
                yield value["query"]
            else:
                yield from _queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _queries(item)


def _dashboard_metric_names() -> set[str]:
    return {name for query in _queries(_dashboard()) for name in METRIC_NAME.findall(query)}


@pytest.fixture(scope="module")
def exported() -> dict[str, str]:
    """Every series name the collector produces, mapped to its family, with all counters set."""
    media = MediaService("127.0.0.1", 0, "127.0.0.1", datapath="python")
    worker = media.media.worker
    for name in (*DROP_REASONS, *SRTP_ERRORS, "dtls_ok", "dtls_failed", "consent_failures"):
        worker.counters[name] = 1
    worker.counters.update({"datagrams_in": 1, "datagrams_out": 1})
    worker.forwarded_packets.update({"audio": 1, "video": 1})
    worker.forwarded_bytes.update({"audio": 100, "video": 1000})
    worker.forward_latency.observe(0.0002)
    return {
        sample.name: family.name
        for family in MediaCollector(media).collect()
        for sample in family.samples
    }


def test_dashboard_has_queries() -> None:
    assert len(list(_queries(_dashboard()))) >= 10
    assert _dashboard()["schemaVersion"] >= 39


def test_every_metric_in_the_dashboard_is_exported(exported: dict[str, str]) -> None:
    # Exact series names: counters end in _total, a histogram is read through its
    # _bucket, _sum or _count series (its bare family name selects nothing).
    unknown = _dashboard_metric_names() - set(exported)
    assert not unknown, f"dashboard queries series the exporter never produces: {unknown}"


def test_every_exported_family_has_a_panel(exported: dict[str, str]) -> None:
    shown = {exported[name] for name in _dashboard_metric_names() if name in exported}
    assert set(exported.values()) - shown == set()


def test_panels_have_unique_ids_and_use_the_datasource_variable() -> None:
    panels = _dashboard()["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
