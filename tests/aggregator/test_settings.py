from __future__ import annotations

import pytest

from aggregator.settings import AggregatorSettings


def test_flush_share_is_read_and_checked() -> None:
    assert AggregatorSettings.from_env({}).flush_max_share == 0.25
    env = {"PLAYPULSE_FLUSH_MAX_SHARE": "0.5"}
    assert AggregatorSettings.from_env(env).flush_max_share == 0.5
    for bad in ("0", "1.5", "-0.1"):
        with pytest.raises(ValueError, match="flush_max_share"):
            AggregatorSettings.from_env({"PLAYPULSE_FLUSH_MAX_SHARE": bad})


def test_minute_retention_is_read_and_checked() -> None:
    assert AggregatorSettings.from_env({}).minute_retention_s == 3_600
    env = {"PLAYPULSE_MINUTE_RETENTION_S": "7200"}
    assert AggregatorSettings.from_env(env).minute_retention_s == 7_200
    with pytest.raises(ValueError, match="minute_retention_s"):
        AggregatorSettings.from_env({"PLAYPULSE_MINUTE_RETENTION_S": "300"})
