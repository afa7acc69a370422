"""Submitter of a light member: outbox records -> signed SetMeasure -> committed, by proof.

Spec: docs/spec/light.md §4, docs/spec/daemon.md §Submitter (the full-node submitter it
mirrors). A light member has no blocks and no mempool view, so it learns that a SetMeasure was
committed from a tx-inclusion proof against a header it verified, and its next sequence number
from a proof of ``seq/<own key>``. A record whose tx is still not included after
``resign_timeout_s`` is sent again (the same bytes); after ``max_resigns`` such rounds the
sequence is proven again and the pending records are re-signed (a tx refused by the validators'
mempool — stale sequence after a crash, say — is never included). A record not committed after
``give_up_rounds`` re-signs is set aside in the outbox as rejected (kept, never lost).

Txs the REST API signs (``POST /measure``, ``/solve``, …: :meth:`LightSubmitter.submit_tx`) share
the sequence and the inclusion proofs; they are not persisted: after ``give_up_rounds`` re-signs
(or a restart) such a tx is dropped and counted (``api_given_up``), as the API's 202 only said
"published".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from edge.health import Health
from edge.outbox import Outbox, OutboxRecord
from edge.submitter import HEALTH_NAME, measure_body
from ledger import codec, state
from ledger import tx as txm
from ledger.keys import SigningKey
from ledger.light_node import LightNode
from ledger.proofs import ProofError

log = logging.getLogger("lemd.submitter")

TICK_S = 5.0
API_SEQUENCE_WAIT_S = 8.0
PROOF_BATCH = 16


@dataclass
class Pending:
    """A signed tx waiting for its inclusion proof: an outbox record's, or an API tx's
    (``record`` None, ``kind`` and ``body`` kept to re-sign it)."""

    record: OutboxRecord | None
    raw: bytes
    tx_hash: bytes
    sent_s: float
    kind: str = "SetMeasure"
    body: dict[str, Any] | None = None

    @property
    def ref(self) -> bytes:
        if self.record is not None:
            return self.record.key
        return b"api/" + self.tx_hash


@dataclass
class ApiTx:
    kind: str
    body: dict[str, Any]
    rounds: int = 0


class LightSubmitter:
    """Drains the outbox through a :class:`~ledger.light_node.LightNode`.

    Args:
        outbox: the durable measurement outbox.
        node: the running light node.
        key: the member's key.
        health: beaten every loop turn.
        resign_timeout_s: wait this long for an inclusion proof before sending again [s].
        max_inflight: own txs signed and not yet proven committed.
        max_resigns: sends of one tx before the sequence is proven again.
        give_up_rounds: re-sign rounds after which a record is set aside as rejected.
    """

    def __init__(
        self,
        outbox: Outbox,
        node: LightNode,
        key: SigningKey,
        health: Health,
        *,
        resign_timeout_s: float = 30.0,
        max_inflight: int = 32,
        max_resigns: int = 3,
        give_up_rounds: int = 5,
    ) -> None:
        self.outbox = outbox
        self.node = node
        self.key = key
        self.health = health
        self.resign_timeout_s = resign_timeout_s
        self.max_inflight = max_inflight
        self.max_resigns = max_resigns
        self.give_up_rounds = give_up_rounds
        self.wake = asyncio.Event()
        self.sequence: int | None = None
        self.inflight: dict[bytes, Pending] = {}
        self._sends: Counter[bytes] = Counter()
        self._rounds: Counter[bytes] = Counter()
        self._api_queue: list[ApiTx] = []
        self.committed = 0
        self.stats: Counter[str] = Counter()

    async def run(self) -> None:
        while True:
            self.health.beat(HEALTH_NAME)
            try:
                await self.step()
            except (TimeoutError, ProofError) as exc:
                self.stats["proof_round_failed"] += 1
                log.info("no verified answer yet", extra={"error": str(exc)})
            try:
                async with asyncio.timeout(TICK_S):
                    await self.wake.wait()
            except TimeoutError:
                pass
            self.wake.clear()

    async def step(self) -> None:
        """Sign and send new records, then prove what is in flight."""
        if self.sequence is None:
            self.sequence = await self._proven_sequence()
        await self._send_new()
        await self._prove_inflight()

    async def _proven_sequence(self, timeout_s: float = 60.0) -> int:
        key = state.k_seq(self.key.public_key)
        answer, (value,) = await self.node.prove([("key", key)], timeout_s=timeout_s)
        if isinstance(value, bytes):
            return int(codec.decode(value))
        if answer.answers[0].status == "absent":
            return 0  # no tx of this key committed yet (absence is not provable: light.md §8)
        raise value

    async def submit_tx(self, kind: str, body: dict[str, Any]) -> bytes:
        """Sign ``kind``/``body`` with this key's next sequence, publish it and track its
        inclusion like an outbox record's (not persisted: module docstring); returns the tx hash.

        Raises:
            TimeoutError, ProofError: the sequence could not be proven yet.
            LedgerError: the body is not a valid tx of ``kind`` (nothing was sent).
        """
        if self.sequence is None:
            # An API caller waits: below lemctl's 10 s (the loop's own proof may take longer).
            self.sequence = await self._proven_sequence(timeout_s=API_SEQUENCE_WAIT_S)
        raw = txm.make(self.key, self.node.chain_id, self.sequence, kind, body)
        self.sequence += 1
        tx = await self.node.submit(raw)
        self.inflight[tx.hash] = Pending(None, raw, tx.hash, time.monotonic(), kind, body)
        self.stats["api_sent"] += 1
        return tx.hash

    async def _send_api(self) -> None:
        """Re-sign API txs that a re-sign round took back (they keep their rounds)."""
        assert self.sequence is not None
        while self._api_queue and len(self.inflight) < self.max_inflight:
            item = self._api_queue.pop(0)
            raw = txm.make(self.key, self.node.chain_id, self.sequence, item.kind, item.body)
            self.sequence += 1
            tx = await self.node.submit(raw)
            self.inflight[tx.hash] = Pending(
                None, raw, tx.hash, time.monotonic(), item.kind, item.body
            )
            self._rounds[b"api/" + tx.hash] = item.rounds

    async def _send_new(self) -> None:
        assert self.sequence is not None
        await self._send_api()
        flying = {p.record.key for p in self.inflight.values() if p.record is not None}
        for record in self.outbox.pending(self.max_inflight):
            if len(self.inflight) >= self.max_inflight:
                break
            if record.key in flying:
                continue
            raw = txm.make(
                self.key, self.node.chain_id, self.sequence, "SetMeasure", measure_body(record)
            )
            self.sequence += 1
            tx = await self.node.submit(raw)
            self.inflight[tx.hash] = Pending(record, raw, tx.hash, time.monotonic())
            self.stats["sent"] += 1

    async def _prove_inflight(self) -> None:
        hashes = list(self.inflight)[:PROOF_BATCH]
        if not hashes:
            return
        _, results = await self.node.prove([("tx", h) for h in hashes], timeout_s=30.0)
        stale = False
        for tx_hash, result in zip(hashes, results, strict=True):
            pending = self.inflight[tx_hash]
            if isinstance(result, int):
                del self.inflight[tx_hash]
                # Per-tx retry counts end with the tx, so they never grow with the ledger.
                self._sends.pop(tx_hash, None)
                self._rounds.pop(pending.ref, None)
                if pending.record is None:
                    self.stats["api_committed"] += 1
                    continue
                self.outbox.mark_committed(pending.record.meter_id, pending.record.slot_start_s)
                self.committed += 1
                continue
            if time.monotonic() - pending.sent_s < self.resign_timeout_s:
                continue
            self._sends[tx_hash] += 1
            if self._sends[tx_hash] >= self.max_resigns:
                stale = True
            else:
                await self.node.submit(pending.raw)  # same bytes: receivers drop duplicates
                pending.sent_s = time.monotonic()
                self.stats["resent"] += 1
        if stale:
            self._resign_all()

    def _resign_all(self) -> None:
        """Forget the in-flight txs and prove the sequence again (next step re-signs)."""
        for pending in self.inflight.values():
            ref = pending.ref
            rounds = self._rounds.pop(ref, 0) + 1
            if pending.record is None:
                assert pending.body is not None
                if rounds >= self.give_up_rounds:
                    self.stats["api_given_up"] += 1
                    log.warning("API tx never included; dropped", extra={"kind": pending.kind})
                else:
                    self._api_queue.append(ApiTx(pending.kind, pending.body, rounds))
            elif rounds >= self.give_up_rounds:
                self.outbox.mark_rejected(pending.record, "not committed (light member re-signs)")
                self.stats["set_aside"] += 1
            else:
                self._rounds[ref] = rounds
        self.inflight.clear()
        self._sends.clear()
        self.sequence = None
        self.stats["resigned"] += 1
