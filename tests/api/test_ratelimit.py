"""The rate limiter's pure parts: limit notation, Retry-After rounding, whom a request counts
against."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.ratelimit import Identity, identity, parse_limit, retry_after_s
from api.settings import ApiSettings


@pytest.mark.parametrize(
    ("text", "amount", "expiry_s"),
    [
        ("600/minute", 600, 60),
        ("10 per second", 10, 1),
        ("100/5 seconds", 100, 5),
        ("5000/hour", 5000, 3600),
    ],
)
def test_limit_notation(text: str, amount: int, expiry_s: int) -> None:
    item = parse_limit(text)
    assert item is not None
    assert (item.amount, item.get_expiry()) == (amount, expiry_s)


@pytest.mark.parametrize("text", ["", "0", "off", "OFF", " none "])
def test_limits_can_be_turned_off(text: str) -> None:
    assert parse_limit(text) is None


@pytest.mark.parametrize("text", ["lots", "10/fortnight", "-1/minute", "10/"])
def test_bad_limits_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_limit(text)


def test_settings_name_the_bad_variable() -> None:
    with pytest.raises(ValueError, match="PLAYPULSE_API_RATE_LIMIT_IP"):
        ApiSettings.from_env({"PLAYPULSE_API_RATE_LIMIT_IP": "lots"})
    s = ApiSettings.from_env(
        {
            "PLAYPULSE_API_RATE_LIMIT_KEY": "7/second",
            "PLAYPULSE_API_RATE_LIMIT_IP": "off",
            "PLAYPULSE_TRUSTED_PROXIES": "10.0.0.0/8, ::1",
        }
    )
    assert s.rate_limit_key is not None and s.rate_limit_key.amount == 7
    assert s.rate_limit_ip is None
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.0/8", "::1/128"]
    assert ApiSettings.from_env({}).rate_limit_ip == ApiSettings().rate_limit_ip


@pytest.mark.parametrize(
    ("reset", "now", "want"),
    [(10.0, 9.0, 1), (10.0, 8.5, 2), (10.0, 10.0, 1), (10.0, 11.0, 1), (70.0, 10.001, 60)],
)
def test_retry_after_rounds_up_to_whole_seconds(reset: float, now: float, want: int) -> None:
    assert retry_after_s(reset, now) == want


@given(st.floats(0, 1e6), st.floats(0, 1e6))
def test_retry_after_never_comes_before_the_reset(reset: float, now: float) -> None:
    wait = retry_after_s(reset, now)
    assert wait >= 1
    assert now + wait >= reset
    assert wait < max(reset - now, 0) + 2


def test_private_keys_count_per_key_everyone_else_per_ip() -> None:
    assert identity("k1", "192.0.2.1") == Identity("key", "k1")
    assert identity(None, "192.0.2.1") == Identity("ip", "192.0.2.1")
    assert identity(None, None) == Identity("ip", "unknown")
