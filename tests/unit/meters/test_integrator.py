"""The 15-minute slot integrator: conservation, interpolation, flags and restart (integrator.md)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meters.integrator import (
    SLOT_MS,
    CheckpointError,
    Integrator,
    IntegratorState,
    Quality,
    SlotRecord,
    ms_to_wall,
)
from meters.reading import Reading

T0 = datetime(2026, 6, 21, tzinfo=UTC)  # a slot boundary (midnight UTC)
DAY_MS = 86_400_000


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def feed_all(
    integ: Integrator, samples: list[tuple[int, int, int, int]], meter: str = "m1"
) -> list[SlotRecord]:
    """Feed (wall_ms, mono_ms, import_wh, export_wh) samples; return every closed record."""
    out: list[SlotRecord] = []
    for wall_ms, mono_ms, imp, exp in samples:
        out += integ.feed(Reading(meter, imp, exp), at(wall_ms), mono_ms / 1000)
    return out


@st.composite
def day_of_samples(draw: st.DrawFn) -> list[tuple[int, int, int, int]]:
    """Readings from one midnight to the next at random instants, registers non-decreasing."""
    cuts = draw(st.lists(st.integers(1, DAY_MS - 1), min_size=0, max_size=120, unique=True))
    times = [0, *sorted(cuts), DAY_MS]
    imp, exp = draw(st.integers(0, 10**9)), draw(st.integers(0, 10**9))
    samples = []
    for t in times:
        samples.append((t, t + 7_000, imp, exp))
        imp += draw(st.integers(0, 5_000))
        exp += draw(st.integers(0, 5_000))
    return samples


@settings(max_examples=60, deadline=None)
@given(day_of_samples())
def test_slots_of_a_day_sum_exactly_to_the_register_difference(samples: list) -> None:
    """96 records cover the day and their energy equals the register difference, to the Wh."""
    records = feed_all(Integrator(), samples)
    assert [r.slot_start for r in records] == [at(i * SLOT_MS) for i in range(96)]
    assert sum(r.import_wh for r in records) == samples[-1][2] - samples[0][2]
    assert sum(r.export_wh for r in records) == samples[-1][3] - samples[0][3]
    assert sum(r.readings for r in records) == len(samples) - 1  # the last opens the next day
    assert all(r.import_wh >= 0 and r.export_wh >= 0 for r in records)


@st.composite
def messy_samples(draw: st.DrawFn) -> list[tuple[int, int, int, int, str]]:
    """Readings with gaps, counter resets, meter swaps and wall-clock steps both ways."""
    wall = draw(st.integers(0, SLOT_MS))
    mono, imp, exp, meter = 1_000_000, 5_000, 5_000, "m1"
    out = []
    for _ in range(draw(st.integers(1, 60))):
        step = draw(st.sampled_from([5_000, 5_000, 5_000, 4_000, 6_000, 3_600_000, 700_000]))
        mono += step
        wall += step + draw(st.sampled_from([0, 0, 0, 0, 3_600_000, -3_600_000, 120_000]))
        event = draw(st.sampled_from(["ok"] * 8 + ["reset", "swap"]))
        if event == "reset":
            imp, exp = draw(st.integers(0, 100)), draw(st.integers(0, 100))
        elif event == "swap":
            meter = meter + "x"
        imp += draw(st.integers(0, 3_000))
        exp += draw(st.integers(0, 3_000))
        out.append((wall, mono, imp, exp, meter))
    return out


def run_messy(integ: Integrator, samples: list) -> list[SlotRecord]:
    out: list[SlotRecord] = []
    for wall, mono, imp, exp, meter in samples:
        out += integ.feed(Reading(meter, imp, exp), at(wall), mono / 1000)
    return out


@settings(max_examples=80, deadline=None)
@given(messy_samples())
def test_energy_is_conserved_and_never_negative_through_resets_gaps_and_clock_steps(
    samples: list,
) -> None:
    """Records plus the open slot hold exactly the non-reset register increments, all >= 0."""
    integ = Integrator()
    records = run_messy(integ, samples)
    expected_import = expected_export = 0
    for prev, cur in itertools.pairwise(samples):
        if cur[2] >= prev[2] and cur[3] >= prev[3] and cur[4] == prev[4]:
            expected_import += cur[2] - prev[2]
            expected_export += cur[3] - prev[3]
    state = integ.state
    assert state is not None
    assert sum(r.import_wh for r in records) + state.slot_import_wh == expected_import
    assert sum(r.export_wh for r in records) + state.slot_export_wh == expected_export
    assert all(r.import_wh >= 0 and r.export_wh >= 0 for r in records)
    starts = [r.slot_start for r in records]
    assert starts == sorted(set(starts))  # each slot once, in order, never reopened
    problems = Quality.GAP | Quality.RESET | Quality.CLOCK_JUMP | Quality.PARTIAL
    assert all((Quality.COMPLETE in r.flags) == (not r.flags & problems) for r in records)


@settings(max_examples=60, deadline=None)
@given(messy_samples(), st.data())
def test_restart_from_checkpoint_gives_the_same_records(samples: list, data: st.DataObject) -> None:
    """Stopping after any reading and restoring the JSON checkpoint changes no record."""
    split = data.draw(st.integers(1, len(samples)))
    uninterrupted = run_messy(Integrator(), samples)
    first = Integrator()
    head = run_messy(first, samples[:split])
    assert first.state is not None
    stored = json.loads(json.dumps(first.state.to_dict()))
    assert all(isinstance(v, int | str) for v in stored.values())
    resumed = Integrator.from_checkpoint(stored)
    assert head + run_messy(resumed, samples[split:]) == uninterrupted
    final = Integrator()
    run_messy(final, samples)
    assert resumed.state == final.state


@settings(max_examples=60, deadline=None)
@given(st.integers(1, SLOT_MS - 1), st.integers(1, SLOT_MS - 1), st.integers(0, 10**6))
def test_boundary_share_is_the_floor_of_the_linear_interpolation(
    before_ms: int, after_ms: int, delta_wh: int
) -> None:
    """An interval crossing a boundary gives the closing slot floor(ΔE·before/(before+after))."""
    integ = Integrator(gap_s=10**6)
    feed_all(integ, [(0, 0, 0, 0), (SLOT_MS - before_ms, SLOT_MS - before_ms, 100, 0)])
    end = SLOT_MS + after_ms
    (record,) = feed_all(integ, [(end, end, 100 + delta_wh, 0)])
    share = delta_wh * before_ms // (before_ms + after_ms)
    assert record.import_wh == 100 + share
    assert integ.state is not None
    assert integ.state.slot_import_wh == delta_wh - share
    assert Quality.INTERPOLATED in record.flags
    assert Quality.COMPLETE in record.flags


def test_worked_boundary_example() -> None:
    """Readings 10 s before and 20 s after 00:15 with 30 Wh between: 10 Wh before, 20 Wh after."""
    integ = Integrator(gap_s=3600)
    feed_all(integ, [(0, 0, 1000, 0), (SLOT_MS - 10_000, SLOT_MS - 10_000, 1500, 0)])
    (rec,) = feed_all(integ, [(SLOT_MS + 20_000, SLOT_MS + 20_000, 1530, 0)])
    assert (rec.slot_start, rec.import_wh, rec.readings) == (T0, 510, 2)
    assert rec.flags == Quality.COMPLETE | Quality.INTERPOLATED
    assert integ.state is not None
    assert integ.state.slot_import_wh == 20


def test_first_slot_is_partial_when_started_mid_slot() -> None:
    """Energy before the first reading is unknown: that slot is PARTIAL, not COMPLETE."""
    integ = Integrator(gap_s=3600)
    (rec,) = feed_all(integ, [(60_000, 0, 0, 0), (SLOT_MS, SLOT_MS - 60_000, 40, 0)])
    assert rec.flags == Quality.PARTIAL
    assert rec.import_wh == 40


def test_counter_going_backwards_is_flagged_and_counts_nothing() -> None:
    """A register that drops (meter swapped or reset) adds no energy and flags RESET."""
    integ = Integrator()
    recs = feed_all(
        integ,
        [
            (0, 0, 9000, 50),
            (5000, 5000, 9010, 50),
            (10_000, 10_000, 3, 0),
            (15_000, 15_000, 8, 1),
            (SLOT_MS, SLOT_MS, 9, 1),
        ],
    )
    (rec,) = recs
    assert rec.import_wh == 10 + 5 + 1
    assert rec.export_wh == 1
    assert Quality.RESET in rec.flags
    assert Quality.COMPLETE not in rec.flags


def test_meter_id_change_is_a_reset() -> None:
    """A reading from a different meter id is never subtracted from the old meter's register."""
    integ = Integrator()
    feed_all(integ, [(0, 0, 100, 0)])
    integ.feed(Reading("other", 5000, 0), at(5000), 5.0)
    state = integ.state
    assert state is not None
    assert state.slot_import_wh == 0
    assert Quality.RESET in state.slot_flags
    assert state.meter_id == "other"


def test_gap_emits_missing_slots_with_energy_spread_by_time() -> None:
    """A 1-hour outage emits each missed slot, flagged GAP, with energy proportional to time."""
    integ = Integrator()
    feed_all(integ, [(0, 0, 0, 0), (SLOT_MS // 3, SLOT_MS // 3, 10, 0)])
    end = SLOT_MS // 3 + 4 * SLOT_MS  # 60 min later, 1/3 into the fifth slot
    recs = feed_all(integ, [(end, end, 10 + 1200, 0)])
    assert [r.import_wh for r in recs] == [10 + 200, 300, 300, 300]
    assert all(Quality.GAP in r.flags for r in recs)
    assert integ.state is not None
    assert integ.state.slot_import_wh == 100
    assert Quality.GAP in integ.state.slot_flags


def test_forward_clock_step_closes_skipped_slots_empty_and_flags_them() -> None:
    """An NTP step of +1 h after 5 s of real time: skipped slots get 0 Wh and CLOCK_JUMP."""
    integ = Integrator()
    feed_all(integ, [(0, 0, 0, 0), (5000, 5000, 5, 0)])
    recs = feed_all(integ, [(5000 + 3_600_000 + 5000, 10_000, 12, 0)])
    assert len(recs) == 4
    assert recs[0].import_wh == 5
    assert all(r.import_wh == 0 for r in recs[1:])
    assert all(Quality.CLOCK_JUMP in r.flags for r in recs)
    assert integ.state is not None
    assert integ.state.slot_import_wh == 7
    assert Quality.GAP not in integ.state.slot_flags  # 5 s of monotonic time is no gap


def test_backward_clock_step_never_reopens_a_slot() -> None:
    """A −10 min step keeps energy in the open slot and closes it only when time catches up."""
    integ = Integrator(gap_s=3600)
    feed_all(integ, [(0, 0, 0, 0), (SLOT_MS - 5000, SLOT_MS - 5000, 90, 0)])
    assert feed_all(integ, [(SLOT_MS - 600_000, SLOT_MS, 91, 0)]) == []
    state = integ.state
    assert state is not None
    assert Quality.CLOCK_JUMP in state.slot_flags
    assert ms_to_wall(state.cursor_ms) == at(SLOT_MS - 5000)  # the cursor did not move back
    recs = feed_all(integ, [(SLOT_MS + 5000, SLOT_MS + 605_000, 100, 0)])
    assert [r.slot_start for r in recs] == [T0]
    assert recs[0].import_wh >= 91


def test_after_reboot_the_monotonic_clock_is_not_compared() -> None:
    """Restoring with same_boot=False skips the step check once (monotonic restarted at 0)."""
    integ = Integrator()
    feed_all(integ, [(0, 50_000_000, 0, 0)])
    assert integ.state is not None
    resumed = Integrator.from_checkpoint(integ.state.to_dict(), same_boot=False)
    resumed.feed(Reading("m1", 4, 0), at(5000), 3.0)
    assert resumed.state is not None
    assert Quality.CLOCK_JUMP not in resumed.state.slot_flags


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 9}, "version"),
        ({"last_import_wh": "12"}, "last_import_wh"),
        ({"slot_flags": "complete,bogus"}, "bogus"),
        ({"cursor_ms": SLOT_MS * 5}, "cursor"),
        ({"slot_import_wh": -1}, "negative"),
    ],
)
def test_bad_checkpoint_is_rejected_with_the_field_named(change: dict, message: str) -> None:
    """A corrupted checkpoint stops the restore with an error naming what is wrong."""
    integ = Integrator()
    feed_all(integ, [(1000, 0, 0, 0)])
    assert integ.state is not None
    data = {**integ.state.to_dict(), **change}
    with pytest.raises(CheckpointError, match=message):
        IntegratorState.from_dict(data)


def test_naive_wall_time_is_refused() -> None:
    """Slot boundaries are UTC: a naive datetime is a programming error, not a guess."""
    with pytest.raises(ValueError, match="timezone-aware"):
        Integrator().feed(Reading("m", 0, 0), datetime(2026, 1, 1), 0.0)


def test_a_simulated_day_of_5_s_polls_integrates_exactly() -> None:
    """Sim meter → integrator for a day: 96 complete slots summing to the register difference."""
    from meters.sim.clock import ManualClock
    from meters.sim.community import default_table, pilot_community
    from meters.sim.meter import SimulatedMeter

    spec = pilot_community(5)[-1]  # the kindergarten: PV, battery, import and export
    clock = ManualClock(T0)
    sim = SimulatedMeter(spec, default_table(), clock)
    integ = Integrator()
    records: list[SlotRecord] = []
    first = sim.read_at(T0)
    for i in range(17_281):
        records += integ.feed(sim.read_at(clock.now()), clock.now(), i * 5.0)
        clock.advance(5)
    last = sim.read_at(T0 + timedelta(days=1))
    assert len(records) == 96
    assert all(r.flags == Quality.COMPLETE and r.readings == 180 for r in records)
    assert sum(r.import_wh for r in records) == last.import_wh - first.import_wh
    assert sum(r.export_wh for r in records) == last.export_wh - first.export_wh
    assert sum(r.export_wh for r in records) > 0
