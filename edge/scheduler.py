"""The period scheduler: submit SolveMarkets for market periods that have ended.

Spec: docs/spec/daemon.md §Period scheduler. Any community node may settle a period and the
ledger applies SolveMarkets once (a second one is refused as ``already_solved``). A period is
due when the daemon clock has passed ``end + grace``, where grace is the larger of the config's
``market.solve_grace_s`` and the chain's ``settle_grace_ms``, plus a small per-node stagger
(derived from the node key) so that nineteen nodes do not all sign the same settlement in the
same second. What is solved is read from the committed ledger state, never from memory.

A node never settles a period while its own outbox still holds records of that period (after
a long outage or a restart the backlog goes first): SetMeasure for a solved period is refused
for good, so settling early would cost this member its own measurements.
"""

from __future__ import annotations

import asyncio
import logging

from edge.clock import DaemonClock
from edge.metrics import Metrics
from edge.outbox import Outbox
from edge.submitter import TxSigner, solve_ref
from ledger import state
from ledger.access import Queries
from ledger.errors import Reason, TxRejected

log = logging.getLogger("lemd.scheduler")

STAGGER_STEP_MS = 30_000
"""Per-node extra wait step [simulated ms]; the node key picks 0..15 steps."""


class PeriodScheduler:
    """Settles ended periods through this node's signer.

    Args:
        signer: signs and submits (shares the sequence numbers with the submitter).
        queries: read access to the committed periods.
        clock: the daemon clock (simulated time in demos).
        outbox: this node's waiting records (a period with own records waiting is not due).
        grace_s: the config's wait after a period's end [simulated s].
        metrics: ``lem_periods_solved_total``.
        interval_s: real seconds between checks.
    """

    def __init__(
        self,
        signer: TxSigner,
        queries: Queries,
        clock: DaemonClock,
        outbox: Outbox,
        *,
        grace_s: int,
        metrics: Metrics,
        interval_s: float = 5.0,
    ) -> None:
        self.signer = signer
        self.queries = queries
        self.clock = clock
        self.outbox = outbox
        self.grace_ms = grace_s * 1000
        self.metrics = metrics
        self.interval_s = interval_s
        self.stagger_ms = (signer.key.public_key[0] % 16) * STAGGER_STEP_MS
        self._solved_seen: set[str] | None = None

    async def run(self, after: asyncio.Event | None = None) -> None:
        """Check every ``interval_s``; first wait for ``after`` (the first meter poll, so the
        records a restart's first reading closes are in the outbox before anything is due)."""
        if after is not None:
            await after.wait()
        while True:
            self.step()
            await asyncio.sleep(self.interval_s)

    def chain_grace_ms(self) -> int:
        with self.queries.store.state_reader() as base:
            return state.chain_params(state.Overlay(base)).get("settle_grace_ms", 0)

    def due(self) -> list[str]:
        """Unsolved periods whose end + grace (+ stagger) has passed, oldest first."""
        now_ms = self.clock.now_ms()
        grace = max(self.grace_ms, self.chain_grace_ms()) + self.stagger_ms
        periods = self.queries.periods()
        self._count_solved(periods)
        ready = [
            (rec["end_ms"], pid)
            for pid, rec in periods.items()
            if not rec["solved"] and rec["end_ms"] + grace <= now_ms
        ]
        if not ready:
            return []
        waiting_s = [r.slot_start_s for r in self.outbox.pending()]
        return [
            pid
            for _, pid in sorted(ready)
            if not any(
                periods[pid]["start_ms"] <= s * 1000 < periods[pid]["end_ms"] for s in waiting_s
            )
        ]

    def _count_solved(self, periods: dict[str, dict[str, object]]) -> None:
        solved = {pid for pid, rec in periods.items() if rec["solved"]}
        if self._solved_seen is not None:
            for pid in sorted(solved - self._solved_seen):
                self.metrics.periods_solved.inc()
                log.info("period settled on the ledger", extra={"period": pid})
        self._solved_seen = solved

    def step(self) -> list[str]:
        """Submit SolveMarkets for every due period not already in flight; returns them."""
        self.signer.refresh()
        busy = self.signer.refs()
        sent = []
        for period_id in self.due():
            if solve_ref(period_id) in busy:
                continue
            try:
                self.signer.submit("SolveMarkets", {"period_id": period_id}, solve_ref(period_id))
            except TxRejected as exc:
                if exc.reason is not Reason.ALREADY_SOLVED:
                    log.warning(
                        "SolveMarkets refused",
                        extra={"period": period_id, "reason": exc.reason.value},
                    )
                continue
            log.info("SolveMarkets submitted", extra={"period": period_id})
            sent.append(period_id)
        return sent
