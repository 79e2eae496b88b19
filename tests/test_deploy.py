"""The deploy files that tools can check: Prometheus configuration and alerting rules."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool comes with Debian's prometheus package"
)


def promtool(*args: str) -> str:
    done = subprocess.run(
        ["promtool", *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_alerting_rules_are_valid() -> None:
    assert "5 rules found" in promtool("check", "rules", "alerts.yml")


def test_alerting_rules_fire_as_specified() -> None:
    promtool("test", "rules", "alerts_test.yml")


def test_compose_prometheus_config_is_valid() -> None:
    promtool("check", "config", "prometheus.compose.yml")


def test_recording_rules_are_valid_and_compute_as_specified() -> None:
    assert "3 rules found" in promtool("check", "rules", "records.yml")
    promtool("test", "rules", "records_test.yml")
