"""Validator sets: quorum thresholds and CometBFT-style weighted round-robin proposers."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.consensus.errors import ConsensusError
from ledger.consensus.validators import Validator, ValidatorSet
from tests.unit.ledger.consensus.helpers import PKS, valset


def test_quorum_is_strictly_more_than_two_thirds() -> None:
    """2f+1 means > 2/3 of the power and f+1 means > 1/3, with exact integer comparisons."""
    vs = valset(4, [1, 1, 1, 3])  # total 6
    assert not vs.is_quorum(4)
    assert vs.is_quorum(5)
    assert not vs.is_one_third(2)
    assert vs.is_one_third(3)


def test_equal_powers_rotate_round_robin() -> None:
    """With equal powers every validator proposes once per n rounds."""
    vs = valset(4)
    order = [vs.proposer(r) for r in range(8)]
    assert sorted(order[:4]) == sorted(PKS[:4])
    assert order[:4] == order[4:]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=7))
def test_proposals_are_proportional_to_power(powers: list[int]) -> None:
    """Over total·k selections each validator proposes exactly power·k times."""
    vs = valset(len(powers), powers)
    total = sum(powers)
    counts = Counter(vs.proposer(r) for r in range(total * 3))
    assert [counts[pk] for pk in PKS[: len(powers)]] == [p * 3 for p in powers]


def test_next_height_continues_the_rotation_and_is_deterministic() -> None:
    """The set of height h+1 starts where round 0 of height h left off, on every node alike."""
    vs = valset(4, [3, 1, 1, 1])
    heights = [vs]
    for _ in range(11):
        heights.append(heights[-1].next_height(heights[-1].powers()))
    per_height = [h.proposer(0) for h in heights]
    assert Counter(per_height)[PKS[0]] == 6
    again = ValidatorSet.from_value(heights[5].to_value())
    assert again == heights[5]
    assert again.proposer(0) == heights[5].proposer(0)


def test_new_validator_does_not_jump_the_queue() -> None:
    """A validator added later starts with priority −1.125·total and is not picked at once."""
    vs = valset(3)
    added = vs.next_height({PKS[0]: 1, PKS[1]: 1, PKS[2]: 1, PKS[3]: 1})
    assert added.proposer(0) != PKS[3]
    removed = added.next_height({PKS[0]: 1, PKS[1]: 1})
    assert set(removed.powers()) == {PKS[0], PKS[1]}


def test_bad_sets_are_refused() -> None:
    """Empty sets, duplicate keys and non-positive powers are errors naming the problem."""
    with pytest.raises(ConsensusError):
        ValidatorSet([])
    with pytest.raises(ConsensusError, match="duplicate"):
        ValidatorSet([Validator(PKS[0], 1), Validator(PKS[0], 2)])
    with pytest.raises(ConsensusError, match="power"):
        ValidatorSet([Validator(PKS[0], 0)])
