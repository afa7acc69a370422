"""Reconnect delays: exponential growth, ceiling, jitter range, reset."""

from __future__ import annotations

import random

import pytest

from ledger.transport.backoff import Backoff


def test_delays_double_up_to_the_ceiling_within_the_jitter_band() -> None:
    """n-th failure waits in [0.5, 1) x min(max, initial x 2^n)."""
    backoff = Backoff(1.0, 10.0, random.Random(7))
    ceilings = [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    for ceiling in ceilings:
        delay = backoff.next_delay_s()
        assert 0.5 * ceiling <= delay < ceiling
    assert backoff.failures == len(ceilings)


def test_reset_starts_from_the_initial_delay_again() -> None:
    """After a good connection the next failure waits about initial_s again."""
    backoff = Backoff(0.5, 60.0, random.Random(1))
    for _ in range(10):
        backoff.next_delay_s()
    backoff.reset()
    assert backoff.next_delay_s() < 0.5


def test_jitter_spreads_a_community_restart() -> None:
    """Different nodes (different random streams) pick different delays for the same failure."""
    delays = {
        round(Backoff(1.0, 60.0, random.Random(seed)).next_delay_s(), 6) for seed in range(19)
    }
    assert len(delays) == 19


@pytest.mark.parametrize(("initial", "ceiling"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 5.0)])
def test_nonsense_bounds_are_refused(initial: float, ceiling: float) -> None:
    """A zero/negative start or a ceiling below the start is a configuration error."""
    with pytest.raises(ValueError, match="backoff"):
        Backoff(initial, ceiling)
