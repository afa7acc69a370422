"""The pure Tendermint core: every upon-rule of Buchman, Kwon, Milosevic 2018, Alg. 1."""

from __future__ import annotations

from ledger.consensus.core import (
    MAX_ROUND_AHEAD,
    DecideAction,
    EquivocationAction,
    HeightState,
    ProposeAction,
    TimeoutAction,
    VoteAction,
)
from ledger.consensus.messages import Proposal, Step
from ledger.consensus.validators import ValidatorSet
from ledger.keys import sha256
from tests.unit.ledger.consensus.helpers import (
    KEYS,
    PKS,
    T,
    core,
    index_of,
    non_proposer,
    proposal,
    valset,
    vote,
)

A, B = b"block-A", b"block-B"
HA, HB = sha256(A), sha256(B)


def _votes(acts: list[object]) -> list[VoteAction]:
    return [a for a in acts if isinstance(a, VoteAction)]


def test_happy_path_prevote_lock_precommit_decide() -> None:
    """Proposal → prevote id(v); 2f+1 prevotes → lock + precommit; 2f+1 precommits → decide."""
    vs = valset(4)
    me = non_proposer(vs)
    c = core(me, vs)
    assert c.start() == [TimeoutAction(Step.PROPOSE, 0, 1000)]
    assert _votes(c.on_proposal(proposal(vs, 0, A))) == [VoteAction(Step.PREVOTE, 0, HA)]
    acts: list[object] = []
    for i in range(3):
        acts += c.on_vote(vote(Step.PREVOTE, 0, HA, i))
    assert VoteAction(Step.PRECOMMIT, 0, HA) in acts
    assert (c.locked_value, c.locked_round, c.valid_value, c.valid_round) == (HA, 0, HA, 0)
    decided = [a for i in range(3) for a in c.on_vote(vote(Step.PRECOMMIT, 0, HA, i))]
    decision = [a for a in decided if isinstance(a, DecideAction)]
    assert len(decision) == 1
    assert decision[0].block == A
    assert [s.validator for s in decision[0].commit.sigs] == sorted(PKS[:3])


def test_proposer_proposes_get_value_and_arms_its_timeout() -> None:
    """StartRound on the proposer broadcasts getValue() with valid round −1 (lines 14–19)."""
    vs = valset(4)
    me = index_of(vs.proposer(0))
    acts = core(me, vs, value=A).start()
    assert acts[0] == ProposeAction(0, -1, A)
    assert TimeoutAction(Step.PROPOSE, 0, 1000) in acts


def test_invalid_proposal_gets_nil_prevote() -> None:
    """valid(v) false → prevote nil (line 26)."""
    vs = valset(4)
    c = core(non_proposer(vs), vs, valid={B})
    c.start()
    assert _votes(c.on_proposal(proposal(vs, 0, A))) == [VoteAction(Step.PREVOTE, 0, None)]


def test_timeouts_grow_per_round_and_stale_ones_are_ignored() -> None:
    """timeout = init + round·delta; a timeout of another round or step does nothing."""
    assert T.for_step(Step.PROPOSE, 3) == 1000 + 3 * 500
    assert T.for_step(Step.PREVOTE, 2) == 400 + 2 * 200
    assert T.for_step(Step.PRECOMMIT, 1) == 300 + 100
    vs = valset(4)
    c = core(non_proposer(vs), vs)
    c.start()
    assert c.on_timeout(Step.PROPOSE, 1) == []
    assert c.on_timeout(Step.PREVOTE, 0) == []
    assert _votes(c.on_timeout(Step.PROPOSE, 0)) == [VoteAction(Step.PREVOTE, 0, None)]
    assert c.step is Step.PREVOTE


def test_prevote_quorum_of_mixed_values_schedules_prevote_timeout_once() -> None:
    """2f+1 prevotes for anything → timeoutPrevote once (line 34); then it precommits nil."""
    vs = valset(4)
    c = core(3, vs)
    c.start()
    c.on_timeout(Step.PROPOSE, 0)
    acts = [a for i, h in enumerate([HA, HB, None]) for a in c.on_vote(vote(Step.PREVOTE, 0, h, i))]
    assert acts.count(TimeoutAction(Step.PREVOTE, 0, 400)) == 1
    assert c.on_vote(vote(Step.PREVOTE, 0, HA, 3)) == []
    assert _votes(c.on_timeout(Step.PREVOTE, 0)) == [VoteAction(Step.PRECOMMIT, 0, None)]


def test_nil_prevote_quorum_precommits_nil() -> None:
    """2f+1 prevotes for nil → precommit nil without waiting (line 44)."""
    vs = valset(4)
    c = core(3, vs)
    c.start()
    c.on_timeout(Step.PROPOSE, 0)
    acts = [a for i in range(3) for a in c.on_vote(vote(Step.PREVOTE, 0, None, i))]
    assert VoteAction(Step.PRECOMMIT, 0, None) in acts


def test_precommit_quorum_any_then_timeout_starts_next_round() -> None:
    """2f+1 precommits for anything → timeoutPrecommit (line 47); it starts round + 1 (line 65)."""
    vs = valset(4)
    c = core(non_proposer(vs, 1), vs)
    c.start()
    acts = [
        a for i, h in enumerate([HA, None, None]) for a in c.on_vote(vote(Step.PRECOMMIT, 0, h, i))
    ]
    assert TimeoutAction(Step.PRECOMMIT, 0, 300) in acts
    assert c.on_timeout(Step.PRECOMMIT, 0) == [TimeoutAction(Step.PROPOSE, 1, 1500)]
    assert (c.round, c.step) == (1, Step.PROPOSE)


def _locked_on_a(me: int) -> tuple[HeightState, ValidatorSet]:
    """A core for ``me`` locked on A in round 0, now in round 1."""
    vs = valset(4)
    c = core(me, vs)
    c.start()
    c.on_proposal(proposal(vs, 0, A))
    for i in range(3):
        c.on_vote(vote(Step.PREVOTE, 0, HA, i))
    for i, h in enumerate([None, None, None]):
        c.on_vote(vote(Step.PRECOMMIT, 0, h, i))
    c.on_timeout(Step.PRECOMMIT, 0)
    assert (c.round, c.locked_value, c.locked_round) == (1, HA, 0)
    return c, vs


def test_locked_validator_prevotes_nil_for_a_fresh_other_value() -> None:
    """Locked on A, a fresh proposal of B (vr = −1) gets a nil prevote (line 23)."""
    vs = valset(4)
    me = next(i for i in range(4) if PKS[i] not in (vs.proposer(0), vs.proposer(1)))
    c, vs = _locked_on_a(me)
    assert _votes(c.on_proposal(proposal(vs, 1, B))) == [VoteAction(Step.PREVOTE, 1, None)]


def test_pol_rule_unlocks_for_a_value_with_a_newer_polka() -> None:
    """Locked on A at round 0; a proposal of B with vr = 1 and 2f+1 round-1 prevotes for B gets
    a prevote for B, since lockedRound 0 ≤ vr (lines 28–33)."""
    vs = valset(4)
    me = next(i for i in range(4) if PKS[i] not in (vs.proposer(0), vs.proposer(1), vs.proposer(2)))
    c, vs = _locked_on_a(me)
    for i in [j for j in range(4) if j != me]:
        c.on_vote(vote(Step.PREVOTE, 1, HB, i))
    c.on_timeout(Step.PROPOSE, 1)
    c.on_vote(vote(Step.PRECOMMIT, 1, None, me))
    for i in range(4):
        c.on_vote(vote(Step.PRECOMMIT, 1, None, i))
    c.on_timeout(Step.PRECOMMIT, 1)
    acts = c.on_proposal(proposal(vs, 2, B, pol=1))
    assert _votes(acts) == [VoteAction(Step.PREVOTE, 2, HB)]


def test_pol_rule_without_the_polka_waits() -> None:
    """A re-proposal whose claimed valid round has no 2f+1 prevotes gets no prevote yet."""
    vs = valset(4)
    c = core(next(i for i in range(4) if PKS[i] != vs.proposer(1)), vs)
    c.start()
    c.on_timeout(Step.PROPOSE, 0)
    for i in range(4):
        c.on_vote(vote(Step.PRECOMMIT, 0, None, i))
    c.on_timeout(Step.PRECOMMIT, 0)
    assert _votes(c.on_proposal(proposal(vs, 1, B, pol=0))) == []
    assert c.step is Step.PROPOSE


def test_valid_value_is_reproposed_with_its_round() -> None:
    """A proposer with a valid value proposes it again with vr = validRound (line 16)."""
    vs = valset(4)
    me = index_of(vs.proposer(1))
    c = core(me, vs)
    c.start()
    c.on_proposal(proposal(vs, 0, A))
    for i in range(3):
        c.on_vote(vote(Step.PREVOTE, 0, HA, i))
    for i in range(3):
        c.on_vote(vote(Step.PRECOMMIT, 0, None, i))
    acts = c.on_timeout(Step.PRECOMMIT, 0)
    assert ProposeAction(1, 0, A) in acts


def test_round_skip_needs_more_than_a_third_of_the_power() -> None:
    """f+1 power in a higher round starts that round (line 55); less does not; weights count."""
    vs = valset(4)
    c = core(3, vs)
    c.start()
    c.on_vote(vote(Step.PREVOTE, 5, None, 0))
    assert c.round == 0
    c.on_vote(vote(Step.PRECOMMIT, 5, None, 1))
    assert c.round == 5
    heavy = valset(4, [4, 1, 1, 1])
    c2 = core(3, heavy)
    c2.start()
    c2.on_vote(vote(Step.PREVOTE, 2, None, 0))
    assert c2.round == 2


def test_messages_of_a_later_round_start_a_waiting_node() -> None:
    """A node waiting for transactions joins once f+1 power is in round 0."""
    vs = valset(4)
    c = core(3, vs)
    c.on_vote(vote(Step.PREVOTE, 0, None, 0))
    assert not c.started
    acts = c.on_vote(vote(Step.PREVOTE, 0, None, 1))
    assert c.started
    assert TimeoutAction(Step.PROPOSE, 0, 1000) in acts


def test_decides_on_an_earlier_round_commit() -> None:
    """2f+1 precommits of an earlier round for a known valid block decide (line 49, any r)."""
    vs = valset(4)
    c = core(3, vs)
    c.start()
    c.on_proposal(proposal(vs, 0, A))
    c.on_vote(vote(Step.PREVOTE, 3, None, 0))
    c.on_vote(vote(Step.PREVOTE, 3, None, 1))
    assert c.round == 3
    acts = [a for i in range(3) for a in c.on_vote(vote(Step.PRECOMMIT, 0, HA, i))]
    assert [a.round for a in acts if isinstance(a, DecideAction)] == [0]


def test_no_decision_without_the_block_or_when_invalid() -> None:
    """Precommits alone decide nothing until the block is known, and never an invalid one."""
    vs = valset(4)
    c = core(3, vs, valid={B})
    c.start()
    for i in range(3):
        c.on_vote(vote(Step.PRECOMMIT, 0, HA, i))
    assert c.decision is None
    assert not any(isinstance(a, DecideAction) for a in c.on_block(A, HA))
    acts = c.on_block(B, HB)
    assert c.decision is None
    assert acts == []


def test_equivocation_is_reported_and_counted_once() -> None:
    """A second, different vote of one validator is evidence and does not count."""
    vs = valset(4)
    c = core(3, vs)
    c.start()
    c.on_vote(vote(Step.PREVOTE, 0, HA, 0))
    acts = c.on_vote(vote(Step.PREVOTE, 0, HB, 0))
    assert [type(a) for a in acts] == [EquivocationAction]
    assert c.votes(0, Step.PREVOTE).power_for(HB) == 0
    assert c.votes(0, Step.PREVOTE).total == 1


def test_wrong_proposer_ignored_and_double_proposal_reported() -> None:
    """Only the round's proposer is heard; its second proposal is evidence."""
    vs = valset(4)
    c = core(3, vs)
    c.start()
    wrong = non_proposer(vs)
    fake = Proposal(1, 0, -1, HA, 5, PKS[wrong], A).signed(KEYS[wrong], "unit")
    assert c.on_proposal(fake) == []
    c.on_proposal(proposal(vs, 0, A))
    acts = c.on_proposal(proposal(vs, 0, B))
    assert any(isinstance(a, EquivocationAction) for a in acts)


def test_far_future_rounds_are_ignored() -> None:
    """Messages more than MAX_ROUND_AHEAD rounds ahead are dropped (bounded memory)."""
    vs = valset(4)
    c = core(3, vs)
    c.start()
    far = MAX_ROUND_AHEAD + 1
    assert c.on_vote(vote(Step.PREVOTE, far, None, 0)) == []
    assert c.on_vote(vote(Step.PREVOTE, far, None, 1)) == []
    assert c.round == 0


def test_observer_never_votes() -> None:
    """A core without a key follows the rules but emits no votes or proposals."""
    vs = valset(4)
    c = core(None, vs)
    c.start()
    acts = c.on_proposal(proposal(vs, 0, A))
    assert _votes(acts) == []
    assert c.step is Step.PREVOTE
