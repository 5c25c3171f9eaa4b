"""The retry policy is pure: given attempts, a clock value and a random source."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from email.utils import format_datetime

import pytest

from spooler.retry import RetryPolicy, compute_backoff, parse_retry_after


@pytest.mark.parametrize(
    ("attempts", "ceiling"), [(1, 1.0), (2, 2.0), (3, 4.0), (9, 256.0), (10, 300.0), (500, 300.0)]
)
def test_backoff_is_full_jitter_under_the_capped_exponential(attempts: int, ceiling: float) -> None:
    rng = random.Random(7)
    waits = [compute_backoff(attempts, base=1.0, cap=300.0, rng=rng) for _ in range(2000)]
    assert all(0.0 <= w <= ceiling for w in waits)
    # Full jitter spreads over the whole window, not just its top.
    assert min(waits) < ceiling * 0.1 and max(waits) > ceiling * 0.9


def test_retry_after_seconds_and_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("30", now=now) == 30.0
    assert parse_retry_after(" 2.5 ", now=now) == 2.5
    date = format_datetime(datetime.fromtimestamp(now + 120, tz=timezone.utc), usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(120.0)
    assert parse_retry_after("-5", now=now) == 0.0
    for garbage in (None, "", "soon", "Mon, 99 Foo 2020", "inf", "nan", "1e400"):
        assert parse_retry_after(garbage, now=now) is None


def test_retry_after_is_a_minimum_not_a_replacement() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_cap=300.0)
    rng = random.Random(1)
    assert all(policy.delay(1, retry_after=30.0, rng=rng) == 30.0 for _ in range(100))
    waits = [policy.delay(12, retry_after=1.0, rng=rng) for _ in range(200)]
    assert all(1.0 <= w <= 300.0 for w in waits) and max(waits) > 100


def test_retry_after_is_honoured_up_to_max_age() -> None:
    policy = RetryPolicy(max_age=3 * 86400.0, backoff_cap=300.0)
    rng = random.Random(1)
    assert policy.delay(1, retry_after=86400.0, rng=rng) == 86400.0  # a daily quota
    assert policy.delay(1, retry_after=1e11, rng=rng) == 3 * 86400.0  # 3,000 years: no
    assert policy.longest_delay == 3 * 86400.0
    assert RetryPolicy(max_age=60.0, backoff_cap=300.0).longest_delay == 300.0


def test_give_up_on_attempts_then_on_age() -> None:
    policy = RetryPolicy(max_attempts=3, max_age=100.0)
    assert policy.give_up_reason(attempts=2, queued_at=0.0, now=50.0) is None
    assert policy.give_up_reason(attempts=3, queued_at=0.0, now=50.0) == "max_attempts"
    assert policy.give_up_reason(attempts=1, queued_at=0.0, now=100.0) == "max_age"
