"""The retry schedule (pure, clock passed in)."""

from __future__ import annotations

import pytest

from sealmail.mta.config.main_cf import MainConfig, parse_main_cf
from sealmail.mta.retry import RetrySchedule


def test_backoff_doubles_and_is_capped() -> None:
    schedule = RetrySchedule(minimal_backoff=300, maximal_backoff=4000)
    assert [schedule.backoff(n) for n in range(1, 7)] == [300, 600, 1200, 2400, 4000, 4000]
    assert schedule.next_attempt(1, now=1000.0) == 1300.0
    assert schedule.backoff(0) == 0


def test_from_config_units_and_floor() -> None:
    config = MainConfig.from_document(parse_main_cf(
        "minimal_backoff_time = 10m\nmaximal_backoff_time = 5m\nmaximal_queue_lifetime = 2\n"
        "bounce_queue_lifetime = 1h\nqueue_run_delay = 30s\n"), hostname="h.test")
    schedule = RetrySchedule.from_config(config)
    assert schedule.minimal_backoff == 600
    assert schedule.maximal_backoff == 600  # raised to the minimum, as Postfix does
    assert schedule.maximal_queue_lifetime == 2 * 86400  # a bare number is days
    assert schedule.bounce_queue_lifetime == 3600
    assert schedule.queue_run_delay == 30


def test_expiry() -> None:
    schedule = RetrySchedule(maximal_queue_lifetime=100, bounce_queue_lifetime=10)
    assert not schedule.expired(arrival=0, now=99)
    assert schedule.expired(arrival=0, now=100)
    assert schedule.expired(arrival=0, now=10, is_bounce=True)
    assert RetrySchedule(maximal_queue_lifetime=0).expired(arrival=5, now=5)


def test_negative_values_are_refused() -> None:
    with pytest.raises(ValueError):
        RetrySchedule(minimal_backoff=-1)
