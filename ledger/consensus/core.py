"""The pure protocol core: one height of Tendermint (Buchman, Kwon, Milosevic 2018, Alg. 1).

Spec: docs/spec/consensus.md §Core. :class:`HeightState` holds the variables of Algorithm 1 for
one height and has one method per input (proposal, vote, timeout, start). It does no I/O: every
method returns *actions* — sign and broadcast a proposal or vote, schedule a timeout, decide,
report an equivocation — which the engine performs. Inputs are already verified (signature,
chain, height, signer is a validator); the core re-checks only what depends on its own state
(the proposer of the round, the round window).

Values are opaque block bytes identified by the application's block id (SHA-256 of the bytes,
or of the header for the ledger's blocks); ``locked_value`` and
``valid_value`` are stored as hashes, the bytes are kept in :attr:`HeightState.blocks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ledger.consensus.messages import Commit, Proposal, Step, Vote
from ledger.consensus.validators import ValidatorSet
from ledger.consensus.votes import VoteSet

MAX_ROUND_AHEAD = 64
"""Messages more than this many rounds ahead of the current round are ignored (bounds memory)."""

MAX_PROPOSALS_PER_ROUND = 2
"""Proposals kept per round: the first, and one conflicting one as evidence."""


@dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """Timeouts per step: ``init + round·delta`` [ms] (Alg. 1 lines 21, 35, 48)."""

    propose_ms: int = 3000
    propose_delta_ms: int = 500
    prevote_ms: int = 1000
    prevote_delta_ms: int = 500
    precommit_ms: int = 1000
    precommit_delta_ms: int = 500

    def for_step(self, step: Step, round_: int) -> int:
        """The timeout of ``step`` in ``round_`` [ms]."""
        if step is Step.PROPOSE:
            return self.propose_ms + round_ * self.propose_delta_ms
        if step is Step.PREVOTE:
            return self.prevote_ms + round_ * self.prevote_delta_ms
        return self.precommit_ms + round_ * self.precommit_delta_ms


@dataclass(frozen=True, slots=True)
class ProposeAction:
    """Sign and broadcast ⟨PROPOSAL, h, round, block, pol_round⟩ (Alg. 1 line 19)."""

    round: int
    pol_round: int
    block: bytes


@dataclass(frozen=True, slots=True)
class VoteAction:
    """Sign and broadcast a prevote or precommit for ``block_hash`` (None: nil)."""

    step: Step
    round: int
    block_hash: bytes | None


@dataclass(frozen=True, slots=True)
class TimeoutAction:
    """Call :meth:`HeightState.on_timeout` with (step, round) after ``delay_ms`` [ms]."""

    step: Step
    round: int
    delay_ms: int


@dataclass(frozen=True, slots=True)
class DecideAction:
    """The height is decided: ``block`` with ``commit`` (Alg. 1 line 49)."""

    round: int
    block: bytes
    commit: Commit


@dataclass(frozen=True, slots=True)
class EquivocationAction:
    """One signer signed two different messages for one (height, round, step)."""

    first: Vote | Proposal
    second: Vote | Proposal


Action = ProposeAction | VoteAction | TimeoutAction | DecideAction | EquivocationAction


class HeightState:
    """Algorithm 1's state for one height; one method per protocol input.

    Args:
        height: the height being decided (>= 1).
        valset: validators (and proposer priorities) of this height.
        me: this node's public key, or None for an observer that never signs.
        timeouts: the timeout schedule.
        is_valid: the application's validity predicate ``valid(v)`` on block bytes.
        get_value: ``getValue()`` for a round this node proposes in; returns block bytes.
    """

    def __init__(
        self,
        height: int,
        valset: ValidatorSet,
        me: bytes | None,
        timeouts: TimeoutConfig,
        is_valid: Callable[[bytes], bool],
        get_value: Callable[[int], bytes],
    ) -> None:
        self.height = height
        self.valset = valset
        self.me = me
        self.timeouts = timeouts
        self._is_valid = is_valid
        self._get_value = get_value
        self.round = -1  # not started: waiting for transactions or the heartbeat
        self.step = Step.PROPOSE
        self.locked_value: bytes | None = None
        self.locked_round = -1
        self.valid_value: bytes | None = None
        self.valid_round = -1
        self.decision: DecideAction | None = None
        self.blocks: dict[bytes, bytes] = {}
        self._proposals: dict[int, dict[bytes, Proposal]] = {}
        self._votes: dict[tuple[int, Step], VoteSet] = {}
        self._senders: dict[int, dict[bytes, int]] = {}
        self._fired: set[tuple[str, int]] = set()
        self._validity: dict[bytes, bool] = {}
        self._out: list[Action] = []

    # ----------------------------------------------------------------- inputs

    @property
    def started(self) -> bool:
        """Whether round 0 (or a later one) has begun."""
        return self.round >= 0

    def start(self) -> list[Action]:
        """Begin round 0 if not begun (Alg. 1 line 10, ``upon start``)."""
        if self.round < 0 and self.decision is None:
            self._start_round(0)
            self._run()
        return self._take()

    def on_proposal(self, proposal: Proposal) -> list[Action]:
        """A verified proposal for this height arrived."""
        if not self._in_window(proposal.round):
            return []
        if proposal.proposer != self.valset.proposer(proposal.round):
            return []
        seen = self._proposals.setdefault(proposal.round, {})
        if proposal.block_hash not in seen:
            if seen:
                self._out.append(EquivocationAction(next(iter(seen.values())), proposal))
            if len(seen) < MAX_PROPOSALS_PER_ROUND:
                seen[proposal.block_hash] = proposal
                self.blocks.setdefault(proposal.block_hash, proposal.block)
        self._note_sender(proposal.round, proposal.proposer)
        self._run()
        return self._take()

    def on_vote(self, vote: Vote) -> list[Action]:
        """A verified prevote or precommit for this height arrived."""
        if not self._in_window(vote.round) or vote.validator not in self.valset:
            return []
        conflict = self.votes(vote.round, vote.step).add(vote)
        if conflict is not None:
            self._out.append(EquivocationAction(conflict.first, conflict.second))
        self._note_sender(vote.round, vote.validator)
        self._run()
        return self._take()

    def on_block(self, block: bytes, block_hash: bytes) -> list[Action]:
        """Block bytes learnt elsewhere (a block announcement); may complete a decision."""
        self.blocks.setdefault(block_hash, block)
        self._run()
        return self._take()

    def on_timeout(self, step: Step, round_: int) -> list[Action]:
        """A timeout scheduled by a :class:`TimeoutAction` fired (Alg. 1 lines 57–65)."""
        if self.decision is None and round_ == self.round:
            if step is Step.PROPOSE and self.step is Step.PROPOSE:
                self._vote(Step.PREVOTE, None)
            elif step is Step.PREVOTE and self.step is Step.PREVOTE:
                self._vote(Step.PRECOMMIT, None)
            elif step is Step.PRECOMMIT:
                self._start_round(self.round + 1)
            self._run()
        return self._take()

    # ----------------------------------------------------------------- queries

    def votes(self, round_: int, step: Step) -> VoteSet:
        """The vote set of (round, step), created empty on first use."""
        key = (round_, step)
        vs = self._votes.get(key)
        if vs is None:
            vs = self._votes[key] = VoteSet(self.valset)
        return vs

    def proposals(self, round_: int) -> list[Proposal]:
        """Proposals kept for ``round_`` in arrival order."""
        return list(self._proposals.get(round_, {}).values())

    def own_votes(self) -> list[Vote]:
        """Votes this node signed at this height (for re-publication)."""
        return [v for vs in self._votes.values() for v in vs.all() if v.validator == self.me]

    # ----------------------------------------------------------------- rules

    def _run(self) -> None:
        """Apply the upon-rules until none fires (each fires at most once per trigger)."""
        while self.decision is None and (
            self._rule_decide()
            or self._rule_round_skip()
            or (
                self.round >= 0
                and (
                    self._rule_prevote_fresh()
                    or self._rule_prevote_pol()
                    or self._rule_prevote_timeout()
                    or self._rule_lock()
                    or self._rule_precommit_nil()
                    or self._rule_precommit_timeout()
                )
            )
        ):
            pass

    def _rule_prevote_fresh(self) -> bool:
        """Lines 22–27: a fresh proposal (vr = −1) in the propose step."""
        if self.step is not Step.PROPOSE:
            return False
        for p in self.proposals(self.round):
            if p.pol_round == -1:
                ok = self._valid(p.block_hash) and (
                    self.locked_round == -1 or self.locked_value == p.block_hash
                )
                self._vote(Step.PREVOTE, p.block_hash if ok else None)
                return True
        return False

    def _rule_prevote_pol(self) -> bool:
        """Lines 28–33: a re-proposal with 2f+1 prevotes for it in its valid round vr."""
        if self.step is not Step.PROPOSE:
            return False
        for p in self.proposals(self.round):
            vr = p.pol_round
            if 0 <= vr < self.round and self.votes(vr, Step.PREVOTE).has_quorum_for(p.block_hash):
                ok = self._valid(p.block_hash) and (
                    self.locked_round <= vr or self.locked_value == p.block_hash
                )
                self._vote(Step.PREVOTE, p.block_hash if ok else None)
                return True
        return False

    def _rule_prevote_timeout(self) -> bool:
        """Lines 34–35: 2f+1 prevotes for anything → schedule the prevote timeout, once."""
        if self.step is Step.PREVOTE and self.votes(self.round, Step.PREVOTE).has_quorum_any():
            return self._schedule_once("prevote", Step.PREVOTE)
        return False

    def _rule_lock(self) -> bool:
        """Lines 36–43: a valid proposal with 2f+1 prevotes → lock and precommit; set valid."""
        if self.step < Step.PREVOTE or ("lock", self.round) in self._fired:
            return False
        block_hash = self.votes(self.round, Step.PREVOTE).quorum_hash()
        if block_hash is None or block_hash not in self._proposals.get(self.round, {}):
            return False
        if not self._valid(block_hash):
            return False
        self._fired.add(("lock", self.round))
        if self.step is Step.PREVOTE:
            self.locked_value, self.locked_round = block_hash, self.round
            self._vote(Step.PRECOMMIT, block_hash)
        self.valid_value, self.valid_round = block_hash, self.round
        return True

    def _rule_precommit_nil(self) -> bool:
        """Lines 44–46: 2f+1 prevotes for nil → precommit nil."""
        if self.step is Step.PREVOTE and self.votes(self.round, Step.PREVOTE).has_quorum_for(None):
            self._vote(Step.PRECOMMIT, None)
            return True
        return False

    def _rule_precommit_timeout(self) -> bool:
        """Lines 47–48: 2f+1 precommits for anything → schedule the precommit timeout, once."""
        if self.votes(self.round, Step.PRECOMMIT).has_quorum_any():
            return self._schedule_once("precommit", Step.PRECOMMIT)
        return False

    def _rule_decide(self) -> bool:
        """Lines 49–54: a known valid block with 2f+1 precommits in some round → decide."""
        for (round_, step), vs in sorted(self._votes.items()):
            if step is not Step.PRECOMMIT:
                continue
            block_hash = vs.quorum_hash()
            if block_hash is None or block_hash not in self.blocks:
                continue
            if self._valid(block_hash):
                commit = Commit.from_votes(vs.votes_for(block_hash))
                self.decision = DecideAction(round_, self.blocks[block_hash], commit)
                self._out.append(self.decision)
                return True
        return False

    def _rule_round_skip(self) -> bool:
        """Lines 55–56: f+1 power sent messages of a higher round → start that round."""
        ahead = [
            r
            for r, senders in self._senders.items()
            if r > self.round and self.valset.is_one_third(sum(senders.values()))
        ]
        if not ahead:
            return False
        self._start_round(max(ahead))
        return True

    # ----------------------------------------------------------------- helpers

    def _start_round(self, round_: int) -> None:
        """StartRound (lines 11–21). The proposer also arms the propose timeout, so a proposal
        it fails to send (a refused signature after a crash) costs one timeout, not the round."""
        self.round, self.step = round_, Step.PROPOSE
        if self.me is not None and self.me == self.valset.proposer(round_):
            if self.valid_value is not None:
                block, pol = self.blocks[self.valid_value], self.valid_round
            else:
                block, pol = self._get_value(round_), -1
            self._out.append(ProposeAction(round_, pol, block))
        self._out.append(
            TimeoutAction(Step.PROPOSE, round_, self.timeouts.for_step(Step.PROPOSE, round_))
        )

    def _vote(self, step: Step, block_hash: bytes | None) -> None:
        self.step = step
        if self.me is not None and self.me in self.valset:
            self._out.append(VoteAction(step, self.round, block_hash))

    def _schedule_once(self, tag: str, step: Step) -> bool:
        if (tag, self.round) in self._fired:
            return False
        self._fired.add((tag, self.round))
        delay = self.timeouts.for_step(step, self.round)
        self._out.append(TimeoutAction(step, self.round, delay))
        return True

    def _valid(self, block_hash: bytes) -> bool:
        """``valid(v)``, asked of the application once per block."""
        cached = self._validity.get(block_hash)
        if cached is None:
            cached = self._validity[block_hash] = self._is_valid(self.blocks[block_hash])
        return cached

    def _note_sender(self, round_: int, validator: bytes) -> None:
        self._senders.setdefault(round_, {})[validator] = self.valset.power_of(validator)

    def _in_window(self, round_: int) -> bool:
        return round_ <= max(self.round, 0) + MAX_ROUND_AHEAD

    def _take(self) -> list[Action]:
        out, self._out = self._out, []
        return out
