"""The deploy files that tools can check: Prometheus configuration and alerting rules, the
Grafana dashboard and its provisioning."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from aggregator.settings import AggregatorSettings
from aggregator.worker import Aggregator
from api.metrics import ApiMetrics
from ingest.metrics import IngestMetrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "playpulse.json"
DATASOURCE_UID = "playpulse-prometheus"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool comes with Debian's prometheus package"
)


def promtool(*args: str) -> str:
    done = subprocess.run(
        ["promtool", *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@needs_promtool
def test_alerting_rules_are_valid() -> None:
    assert "6 rules found" in promtool("check", "rules", "alerts.yml")


@needs_promtool
def test_alerting_rules_fire_as_specified() -> None:
    promtool("test", "rules", "alerts_test.yml")


@needs_promtool
def test_compose_prometheus_config_is_valid() -> None:
    promtool("check", "config", "prometheus.compose.yml")


def test_recording_rules_are_valid_and_compute_as_specified() -> None:
    assert "3 rules found" in promtool("check", "rules", "records.yml")
    promtool("test", "rules", "records_test.yml")


# -- Grafana -------------------------------------------------------------------------------


def exported_names() -> set[str]:
    """Every sample name the three services export (with _total, _bucket, ... suffixes)."""
    registries: list[CollectorRegistry] = [
        IngestMetrics.create().registry,
        ApiMetrics.create().registry,
        Aggregator(AggregatorSettings.from_env({})).registry,
    ]
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
    }
    names = {"up"}  # Prometheus's own per-target series
    for registry in registries:
        for family in registry.collect():  # labelled metrics have no samples yet: by type
            names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", ()))  # inside collapsed rows
    return out


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in panels(dashboard) for t in p.get("targets", ())]


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside label matchers and strings
    that are not functions, aggregations, keywords or grouping labels."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        name, rest = match.group(), text[match.end() :].lstrip()
        if rest.startswith("(") or name in {"and", "or", "unless", "offset", "bool", "le"}:
            continue
        names.add(name)
    return names


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, op) (rate(playpulse_api_redis_seconds_bucket{op!="a b"}'
        '[$__rate_interval]))) / clamp_min(max(up{job=~"x"}), 1) and on (instance) foo_total'
    )
    assert metric_names(expr) == {"playpulse_api_redis_seconds_bucket", "up", "foo_total"}


def test_dashboard_is_valid_and_reads_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()
        for target in panel.get("targets", ()):
            assert target["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
    exprs = expressions()
    assert exprs
    exported = exported_names()
    for expr in exprs:
        unknown = metric_names(expr) - exported
        assert not unknown, f"{expr}: not exported by any service: {sorted(unknown)}"
    # What the issue asks the dashboard to show.
    used = set().union(*(metric_names(e) for e in exprs))
    for wanted in (
        "playpulse_concurrent_viewers",  # concurrent viewers
        "playpulse_ingest_events_total",  # events/s
        "playpulse_aggregator_stream_lag_seconds",  # consumer lag
        "playpulse_ingest_envelopes_total",  # rejection reasons
        "playpulse_api_request_seconds_bucket",  # API latency
    ):
        assert wanted in used


@needs_promtool
def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    """promtool parses every expression (as recording rules), Grafana's interval filled in."""
    rules = [
        {"record": f"dashboard:expr{i}", "expr": expr.replace("$__rate_interval", "1m")}
        for i, expr in enumerate(expressions())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"{len(rules)} rules found" in promtool("check", "rules", str(path))


def test_grafana_provisioning_points_at_the_dashboard_and_datasource() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "playpulse.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == DATASOURCE_UID
    providers = yaml.safe_load((provisioning / "dashboards" / "playpulse.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    env = compose["services"]["grafana"]["environment"]
    assert f"./grafana/dashboards:{env['PLAYPULSE_GRAFANA_DASHBOARDS']}:ro" in mounts
