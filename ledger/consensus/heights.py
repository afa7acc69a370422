"""A height's life in the engine: entered, started, kept alive.

Spec: docs/spec/consensus.md §4 (start of a height), §7 (re-publication, idle tip), §2 (the
future-height buffer).
:class:`HeightLifecycle` is the part of the engine that works on the height as a whole rather
than on one message: it builds a fresh core when a height is entered (per-height state reset,
then the messages buffered for that height fed in), holds messages of later heights until then,
starts a height (at once when txs wait, else at the heartbeat), and every ``republish_ms``
re-sends what peers may still need while the height is open, or the rotating idle tip while it
has not started. It relies on the engine for the message path (:meth:`receive`,
:meth:`_perform`) and for WAL replay (``_replaying``).
"""

from __future__ import annotations

import time

from ledger.consensus import wire
from ledger.consensus.clock import TimerHandle
from ledger.consensus.compact import CompactRelay
from ledger.consensus.core import Action, HeightState
from ledger.keys import SigningKey, sha256

MAX_REGOSSIP_TXS = 64
"""Pending txs re-published per re-publication period while a height is open."""


class HeightLifecycle(CompactRelay):
    """Entering, starting and keeping alive the current height; the engine supplies the hooks
    below (docs/spec/consensus.md §4, §7)."""

    key: SigningKey | None
    _replaying: bool

    def receive(self, channel: str, sender: str, payload: bytes) -> None:
        raise NotImplementedError

    def _perform(self, actions: list[Action]) -> None:
        raise NotImplementedError

    def _init_heights(self) -> None:
        """Per-height state of a node that has just loaded its height (the last step of the
        engine's construction: the core needs the key and the validator set)."""
        self._future: dict[int, list[tuple[bytes, str]]] = {}
        self._future_count = 0
        self._republish_timer: TimerHandle | None = None
        self._last_tip_ms = self._clock.now_ms()
        self._heard_ms = -(1 << 62)
        """When a peer's verified message of the current height last arrived [ms]."""
        self.height_started = time.monotonic()
        """Real time [s, monotonic] at which this height's round 0 began here (or the height was
        entered, until it begins): for the commit-latency metric only, never for a decision."""
        self.core = self._new_core()

    # ----------------------------------------------------------------- entering

    def _new_core(self) -> HeightState:
        me = self.key.public_key if self.key is not None else None
        return HeightState(
            self.height,
            self.valset,
            me,
            self._config.timeouts,
            lambda block: self.app.validate_block(self.height, block),
            self._get_value,
        )

    def _get_value(self, round_: int) -> bytes:
        del round_  # the block does not depend on the round
        return self.app.prepare_block(self.height, self.last_commit, self.height_time_ms)

    def entered_height(self) -> None:
        """Called by the follower after a block is applied: fresh core, buffered messages."""
        self.store.wal_prune(self.height)
        self.height_started = time.monotonic()
        self._heard_ms = -(1 << 62)
        self._own.clear()
        self._reset_compact()
        # Per-height state: digests of the decided height's messages are no longer needed.
        self._seen.clear()
        self.core = self._new_core()
        future, self._future = self._future, {}
        self._future_count = 0
        for height, payloads in sorted(future.items()):
            if height == self.height:
                for payload, sender in payloads:
                    self._seen.pop(sha256(payload), None)
                    self.receive("consensus", sender, payload)
            elif height > self.height:
                for payload, sender in payloads:
                    self._buffer_future(height, payload, sender)
        self._arm_height()

    def _buffer_future(self, height: int, payload: bytes, sender: str) -> None:
        """Hold a consensus message of a later height until that height is entered: at most
        ``future_heights`` ahead and ``future_buffer`` in all, older ones win (§2 drop counters
        ``far_future``, ``future_buffer_full``)."""
        if height > self.height + self._config.future_heights:
            self.stats["far_future"] += 1
            return
        if self._future_count >= self._config.future_buffer:
            self.stats["future_buffer_full"] += 1
            return
        self._future.setdefault(height, []).append((payload, sender))
        self._future_count += 1

    # ----------------------------------------------------------------- starting

    def _arm_height(self) -> None:
        """Start now if there are transactions, else when the heartbeat is due."""
        if not self.is_validator or self.core.started:
            return
        if self.app.pending_txs() > 0:
            self._start_height()
            return
        height = self.height

        def heartbeat() -> None:
            if self.height == height and not self.core.started and not self.stopped:
                self._start_height()

        self._clock.call_later(self._config.heartbeat_ms, heartbeat)

    def _start_height(self) -> None:
        self._perform(self._start_actions())

    def _start_actions(self) -> list[Action]:
        if not self.core.started:
            self.height_started = time.monotonic()
        if not self._replaying:
            self.store.wal_append(self.height, ["start"], sync=False)  # re-derivable, like timeouts
        return self.core.start()

    # ----------------------------------------------------------------- keeping alive

    def _republish(self) -> None:
        """Re-send own messages that peers may still need, and the latest commit, while the
        height is open: those of the latest round, and those of the rounds a re-proposal can
        depend on (own valid and locked round, the pol_round of current proposals), since
        Alg. 1 line 28 needs 2f+1 prevotes of that earlier round at every correct node."""
        if self.stopped:
            return
        if self.is_validator and self.core.started and self.core.decision is None:
            core = self.core
            rounds = {max((hrs[1] for hrs in self._own), default=-1)}
            rounds |= {core.valid_round, core.locked_round}
            rounds |= {p.pol_round for p in core.proposals(core.round)}
            for hrs, payload in sorted(self._own.items()):
                if hrs[1] in rounds:
                    self._send("consensus", self._wire_form(hrs, payload), None)
                    self.stats["republished"] += 1
            self.announce_latest()
            # Peers may have decided this height long ago while this node missed it (its
            # republished votes are duplicates to them, so they cannot tell): ask, cheaply —
            # unless a peer was heard working on this very height within the period (under
            # load every height stays open past a period, and the answers are whole blocks).
            if self._clock.now_ms() - self._heard_ms >= self._config.republish_ms:
                self.request_sync()
            else:
                self.stats["sync_request_skipped"] += 1
            # A lost tx gossip must only delay too: offer what waits here to the proposers.
            for raw in self.app.pending_tx_payloads(MAX_REGOSSIP_TXS):
                self._send("tx", raw, None)
                self.stats["regossiped_txs"] += 1
        elif not self.core.started:
            self._idle_tip()
        self._republish_timer = self._clock.call_later(self._config.republish_ms, self._republish)

    def _idle_tip(self) -> None:
        """Idle chain: every ``tip_ms`` one validator (rotating by period over the set)
        re-announces the latest commit (not the block); one small message per period keeps a
        metered link cheap."""
        now = self._clock.now_ms()
        if now - self._last_tip_ms < self._config.tip_ms:
            return
        self._last_tip_ms = now
        if self.key is None or not self.is_validator:
            return
        keys = [v.pubkey for v in self.valset.validators]
        mine = keys[(now // self._config.tip_ms) % len(keys)] == self.key.public_key
        if mine and self.last_commit is not None:
            self.stats["tip_announced"] += 1
            self._send("block", wire.encode_tip(self._config.chain_id, self.last_commit), None)
