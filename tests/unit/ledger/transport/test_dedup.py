"""The time-windowed, bounded duplicate filter of received payloads."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.transport.dedup import DedupCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_second_copy_within_window_is_a_duplicate() -> None:
    """Same bytes twice inside the window: the second is reported as seen."""
    cache = DedupCache(10, 30.0, FakeClock())
    assert cache.check(b"vote") is False
    assert cache.check(b"vote") is True
    assert cache.check(b"other") is False


def test_copy_after_window_passes_again_and_window_is_not_extended() -> None:
    """The window runs from the first sighting; later copies do not prolong it."""
    clock = FakeClock()
    cache = DedupCache(10, 30.0, clock)
    cache.check(b"vote")
    clock.now = 29.0
    assert cache.check(b"vote") is True  # seen, but the window still ends at 30
    clock.now = 30.5
    assert cache.check(b"vote") is False  # a re-publication after the window is delivered


def test_oldest_digest_is_forgotten_when_full() -> None:
    """At capacity the first-seen digest goes first; memory stays bounded."""
    cache = DedupCache(2, 30.0, FakeClock())
    for payload in (b"a", b"b", b"c"):
        cache.check(payload)
    assert len(cache) == 2
    assert cache.check(b"a") is False  # forgotten
    assert cache.check(b"c") is True


@settings(max_examples=50)
@given(st.lists(st.binary(max_size=8), max_size=60), st.integers(1, 16))
def test_never_more_entries_than_the_bound(payloads: list[bytes], bound: int) -> None:
    """Whatever arrives, the cache holds at most max_entries digests."""
    cache = DedupCache(bound, 60.0, FakeClock())
    for p in payloads:
        cache.check(p)
        assert len(cache) <= bound
