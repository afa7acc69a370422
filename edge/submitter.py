"""Signing this node's transactions, and the outbox → SetMeasure submitter.

Spec: docs/spec/daemon.md §Submitter. Every tx this node signs (SetMeasure from the outbox,
SolveMarkets from the period scheduler, admin and manual txs from the REST API) goes through one
:class:`TxSigner`, which owns the account's sequence numbers: the next one is the committed
sequence from the ledger state plus the txs signed and not yet committed (in flight). If nothing
of ours commits within ``resign_timeout_s`` while txs are in flight (a broker outage, a tx a
proposer dropped and the gap behind it), the in-flight set is forgotten and signing restarts
from the committed sequence. Signing is deterministic (ed25519), so a record re-signed with the
same sequence gives the same bytes and the mempool treats it as the duplicate it is.

A record leaves the outbox only when the ledger state holds its measurement (the committed
``meas/<slot>/<meter>`` entry signed by this node, with the same values). A record the ledger
refuses for good (its period was solved without it, the meter was removed, a different value is
already recorded) moves to the outbox's ``rejected`` table with the reason, and is never lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from edge.health import Health
from edge.ledger_node import LedgerNode
from edge.metrics import Metrics
from edge.outbox import Outbox, OutboxRecord
from ledger import codec, state
from ledger import tx as txm
from ledger.errors import Reason, TxRejected
from ledger.keys import SigningKey
from ledger.tx import Tx
from meters.integrator import Quality

log = logging.getLogger("lemd.submitter")

HEALTH_NAME = "submitter"

FINAL_REASONS = frozenset(
    {
        Reason.PERIOD_SOLVED,
        Reason.MEASURE_CONFLICT,
        Reason.SLOT_UNALIGNED,
        Reason.MALFORMED,
        Reason.OVERSIZED,
        Reason.BAD_VALUE,
    }
)
"""Refusals of a SetMeasure that no later state can cure: the record moves to ``rejected``.
Every other refusal (mempool full, sequence race, a meter not yet on the allowed list) keeps
the record waiting and is retried on the next turn."""


@dataclass(slots=True)
class Inflight:
    """One signed tx not yet seen committed."""

    sequence: int
    kind: str
    ref: str
    raw: bytes
    signed_at: float


class TxSigner:
    """Signs and submits this node's txs with gap-free sequence numbers.

    Args:
        key: the node key.
        node: the ledger node (committed state and submission).
        metrics: ``lem_txs_submitted_total``.
        resign_timeout_s: forget in-flight txs when nothing commits this long [real s]; the
            wait doubles after each reset without progress (up to 16x), so a long outage does
            not re-send the same txs every half minute over a metered link.
        monotonic: real monotonic clock [s].
    """

    def __init__(
        self,
        key: SigningKey,
        node: LedgerNode,
        metrics: Metrics,
        *,
        resign_timeout_s: float,
        monotonic: Callable[[], float],
    ) -> None:
        self.key = key
        self.node = node
        self.metrics = metrics
        self.resign_timeout_s = resign_timeout_s
        self._monotonic = monotonic
        self.inflight: dict[int, Inflight] = {}
        self._committed = node.app.sequence(key.public_key)
        self._progress_at = monotonic()
        self._timeout_s = resign_timeout_s  # doubles per reset without progress (metered link)
        self.resets = 0

    @property
    def chain_id(self) -> str:
        return self.node.app.chain_id

    def committed_sequence(self) -> int:
        return self.node.app.sequence(self.key.public_key)

    def refresh(self) -> None:
        """Drop committed txs from the in-flight set; reset it after ``resign_timeout_s``
        without progress."""
        committed = self.committed_sequence()
        now = self._monotonic()
        if committed != self._committed:
            self._committed = committed
            self._progress_at = now
            self._timeout_s = self.resign_timeout_s
        for seq in [s for s in self.inflight if s < committed]:
            del self.inflight[seq]
        if not self.inflight:
            self._progress_at = now
        elif now - self._progress_at > self._timeout_s:
            log.warning(
                "nothing committed in time; re-signing from the committed sequence",
                extra={"inflight": len(self.inflight), "committed_sequence": committed},
            )
            self.reset()
            self._timeout_s = min(2 * self._timeout_s, 16 * self.resign_timeout_s)

    def reset(self) -> None:
        """Forget what was signed; rebuild the in-flight set from this key's txs still in the
        local mempool (the source of truth for what is pending here) and send those again."""
        committed = self.committed_sequence()
        me = self.key.public_key
        # Own txs the mempool holds behind a gap (one of ours left it) would collide with the
        # ones signed from here on: the outbox re-signs their records.
        forget_held = getattr(self.node.mempool, "forget_held", None)
        if callable(forget_held):
            forget_held(me)
        own = [t for t in (txm.decode(raw) for raw in self.node.mempool.reap()) if t.signer == me]
        now = self._monotonic()
        self.inflight = {
            t.sequence: Inflight(t.sequence, t.kind, tx_ref(t), t.raw, now)
            for t in own
            if t.sequence >= committed
        }
        if own:
            self.node.resend([t.raw for t in own])
        self.resets += 1
        self._progress_at = now

    def refs(self) -> set[str]:
        return {f.ref for f in self.inflight.values()}

    def submit(self, kind: str, body: codec.Value, ref: str = "") -> bytes:
        """Sign ``body`` with the next sequence and submit it; returns the tx hash.

        Raises:
            TxRejected: the ledger refused it (the sequence number is not used up).
        """
        committed = self.committed_sequence()
        sequence = max([committed, *(s + 1 for s in self.inflight)])
        raw = txm.make(self.key, self.chain_id, sequence, kind, body)
        try:
            tx = self.node.submit(raw)
            tx_hash = tx.hash
        except TxRejected as exc:
            if exc.reason is Reason.DUPLICATE_TX:
                tx_hash = txm.decode(raw).hash  # already pending: the same bytes, in flight
            else:
                if exc.reason in (Reason.STALE_SEQUENCE, Reason.FUTURE_SEQUENCE):
                    self.reset()
                raise
        if not self.inflight:
            self._progress_at = self._monotonic()
        self.inflight[sequence] = Inflight(sequence, kind, ref, raw, self._monotonic())
        self.metrics.txs_submitted.inc()
        return tx_hash


def measure_body(record: OutboxRecord) -> dict[str, codec.Value]:
    """The SetMeasure body of an outbox record (docs/spec/ledger.md §3)."""
    quality = Quality.from_names(",".join(record.quality)).value
    return {
        "meter_id": record.meter_id,
        "slot_start_ms": record.slot_start_s * 1000,
        "import_wh": record.import_wh,
        "export_wh": record.export_wh,
        "quality": quality,
    }


def record_ref(record: OutboxRecord) -> str:
    return f"measure/{record.meter_id}/{record.slot_start_s}"


def solve_ref(period_id: str) -> str:
    return f"solve/{period_id}"


def tx_ref(tx: Tx) -> str:
    """The in-flight reference of a signed tx (what the submitter and scheduler look up)."""
    body = tx.body if isinstance(tx.body, dict) else {}
    if tx.kind == "SetMeasure":
        return f"measure/{body.get('meter_id')}/{int(body.get('slot_start_ms', 0)) // 1000}"
    if tx.kind == "SolveMarkets":
        return solve_ref(str(body.get("period_id")))
    return f"other/{tx.kind}"


class Submitter:
    """Moves outbox records onto the ledger, each exactly once.

    Args:
        outbox: the durable outbox.
        signer: the node's tx signer.
        health: beaten every turn.
        max_inflight: bound on own txs signed and not committed.
        interval_s: real seconds between turns while records wait or txs are in flight.
        idle_interval_s: real seconds between turns otherwise (a new record wakes it).
        scan_limit: outbox records looked at per turn (bounds a turn after a long outage).
    """

    def __init__(
        self,
        outbox: Outbox,
        signer: TxSigner,
        health: Health,
        *,
        max_inflight: int,
        interval_s: float = 1.0,
        idle_interval_s: float = 10.0,
        scan_limit: int = 256,
    ) -> None:
        self.outbox = outbox
        self.signer = signer
        self.health = health
        self.max_inflight = max_inflight
        self.interval_s = interval_s
        self.idle_interval_s = idle_interval_s
        self.scan_limit = scan_limit
        self.wake = asyncio.Event()
        self.committed_records = 0
        self.rejected_records = 0
        # A ledger node that reports its commits (BFT mode) wakes us right after each one:
        # committed records leave the outbox and the next ones are signed without a poll delay.
        listen = getattr(signer.node, "add_commit_listener", None)
        if callable(listen):
            listen(self.wake.set)

    async def run(self) -> None:
        while True:
            self.step()
            self.health.beat(HEALTH_NAME)
            busy = bool(self.signer.inflight) or self.outbox.depth() > 0
            try:
                async with asyncio.timeout(self.interval_s if busy else self.idle_interval_s):
                    await self.wake.wait()
            except TimeoutError:
                pass
            self.wake.clear()

    def step(self) -> None:
        """One turn: settle committed records, then sign what is waiting (bounded)."""
        self.signer.refresh()
        waiting = [r for r in self.outbox.pending(self.scan_limit) if not self._settled(r)]
        busy = self.signer.refs()
        for record in waiting:
            if len(self.signer.inflight) >= self.max_inflight:
                return
            ref = record_ref(record)
            if ref in busy:
                continue
            try:
                self.signer.submit("SetMeasure", measure_body(record), ref)
            except TxRejected as exc:
                if exc.reason not in FINAL_REASONS:
                    log.warning(
                        "submission deferred",
                        extra={"reason": exc.reason.value, "detail": exc.message},
                    )
                    return
                self._reject(record, f"{exc.reason.value}: {exc.message}")

    def _settled(self, record: OutboxRecord) -> bool:
        """True when the ledger holds the record (outbox entry removed) or refuses it for good."""
        slot_ms = record.slot_start_s * 1000
        with self.signer.node.app.store.state_reader() as base:
            raw = base.get(state.k_measure(slot_ms, record.meter_id))
        if raw is None:
            return False
        imp, exp, quality, owner = codec.decode(raw)
        body = measure_body(record)
        same = [imp, exp, quality] == [body["import_wh"], body["export_wh"], body["quality"]]
        if same and bytes(owner) == self.signer.key.public_key:
            self.outbox.mark_committed(record.meter_id, record.slot_start_s)
            self.committed_records += 1
            return True
        self._reject(record, f"measure_conflict: the ledger holds {[imp, exp, quality]}")
        return True

    def _reject(self, record: OutboxRecord, reason: str) -> None:
        log.error(
            "ledger refuses a slot record for good; kept in the rejected table",
            extra={"meter": record.meter_id, "slot_s": record.slot_start_s, "reason": reason},
        )
        self.outbox.mark_rejected(record, reason)
        self.rejected_records += 1
