"""Submitter of a light member: outbox records -> signed SetMeasure -> committed, by proof.

Spec: docs/spec/light.md §4, docs/spec/daemon.md §Submitter (the full-node submitter it
mirrors). A light member has no blocks and no mempool view, so it learns that a SetMeasure was
committed from a tx-inclusion proof against a header it verified, and its next sequence number
from a proof of ``seq/<own key>``. A record whose tx is still not included after
``resign_timeout_s`` is sent again (the same bytes); after ``max_resigns`` such rounds the
sequence is proven again and the pending records are re-signed (a tx refused by the validators'
mempool — stale sequence after a crash, say — is never included). A record not committed after
``give_up_rounds`` re-signs is set aside in the outbox as rejected (kept, never lost).

Other txs (``POST /solve`` and the admin writes of the REST API, the join task's JoinRequest:
:meth:`LightSubmitter.queue_tx`) are durable too: each is stored in the outbox's LMDB
(``meta`` key :data:`API_QUEUE`, synced) before the API answers 202, with the hash and sequence
of its last signed form. They share the sequence and the inclusion proofs; after a restart that
signed form is proven first (committed before the crash: done), then the tx is signed anew. One
never included after ``give_up_rounds`` re-signs moves to :data:`API_REJECTED` with the reason
(``GET /outbox`` ``rejected_txs``). ``POST /measure`` is an outbox record like a meter slot
(edge/light_api.py). While ``hold()`` is true (a joining node, edge/light_join.py) outbox
records wait unsigned; queued txs still go.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.health import Health
from edge.outbox import Outbox, OutboxRecord
from edge.submitter import HEALTH_NAME, measure_body
from ledger import codec, state
from ledger import tx as txm
from ledger.errors import LedgerError
from ledger.keys import SigningKey
from ledger.light_node import LightNode
from ledger.proofs import ProofError, tx_query, tx_query_of

log = logging.getLogger("lemd.submitter")

TICK_S = 5.0
PROOF_BATCH = 16
API_QUEUE = "light/api_txs"
"""Outbox meta key of the queued txs: a list of ``{id, kind, body, rounds, tx}``."""
API_REJECTED = "light/api_rejected"
"""Outbox meta key of the txs set aside: ``{id, kind, body, reason}`` (newest last)."""
MAX_API_QUEUE = 64
"""Queued txs at most (a 503 beyond: the API is one operator's, not a public endpoint)."""
MAX_API_REJECTED = 100


class QueueFull(LedgerError):  # noqa: N818 -- named for the HTTP outcome (503)
    """The durable tx queue holds :data:`MAX_API_QUEUE` txs."""


@dataclass
class Pending:
    """A signed tx waiting for its inclusion proof: an outbox record's, or a queued tx's
    (``record`` None, ``api_id`` its id in the durable queue)."""

    record: OutboxRecord | None
    raw: bytes
    tx_hash: bytes
    sent_s: float
    kind: str = "SetMeasure"
    api_id: str = ""

    @property
    def ref(self) -> bytes:
        if self.record is not None:
            return self.record.key
        return b"api/" + self.api_id.encode()


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
        hold: while it returns True, outbox records are not signed (a node not admitted yet:
            its SetMeasure would be refused and, unseen, set aside).
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
        hold: Callable[[], bool] = lambda: False,
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
        self.hold = hold
        # (hash, sequence) of each queued tx's last signed form. An item stored before
        # sequences were kept (store layout 1, pre-release) cannot be asked for: it is re-signed.
        self._recheck = [
            (bytes(i["tx"]), int(i["seq"])) for i in self.queued() if i.get("tx") and "seq" in i
        ]
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
        if self._recheck:
            await self._recheck_restored()
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

    # ------------------------------------------------------------- durable tx queue

    def queued(self) -> list[dict[str, Any]]:
        """The queued txs (durable; module docstring)."""
        return list(self.outbox.load_meta(API_QUEUE) or [])

    def rejected_txs(self) -> list[dict[str, Any]]:
        """The queued txs set aside, with the reason (newest last)."""
        return list(self.outbox.load_meta(API_REJECTED) or [])

    def queue_tx(self, kind: str, body: dict[str, Any]) -> str:
        """Store ``kind``/``body`` durably (synced) for signing with this key's next proven
        sequence; returns its queue id. Signed, sent and proven by :meth:`run`.

        Raises:
            LedgerError: the body is not a valid tx of ``kind`` (nothing stored).
            QueueFull: :data:`MAX_API_QUEUE` txs wait already.
        """
        txm.decode(txm.make(self.key, self.node.chain_id, 0, kind, body))  # validates the body
        items = self.queued()
        if len(items) >= MAX_API_QUEUE:
            raise QueueFull(f"{len(items)} txs wait for commitment already; try again later")
        counter = int(self.outbox.load_meta("light/api_next") or 0)
        api_id = f"{kind}-{counter}"
        items.append({"id": api_id, "kind": kind, "body": body, "rounds": 0, "tx": b""})
        self.outbox.save_meta("light/api_next", counter + 1)
        self.outbox.save_meta(API_QUEUE, items)
        self.stats["api_queued"] += 1
        self.wake.set()
        return api_id

    def _update(self, api_id: str, **fields: Any) -> None:
        items = self.queued()
        for item in items:
            if item["id"] == api_id:
                item.update(fields)
        self.outbox.save_meta(API_QUEUE, items)

    def _drop(self, api_id: str, reason: str = "") -> None:
        items = self.queued()
        gone = [i for i in items if i["id"] == api_id]
        self.outbox.save_meta(API_QUEUE, [i for i in items if i["id"] != api_id])
        if reason and gone:
            item = {k: gone[0][k] for k in ("id", "kind", "body")} | {"reason": reason}
            self.outbox.save_meta(API_REJECTED, [*self.rejected_txs(), item][-MAX_API_REJECTED:])

    async def _recheck_restored(self) -> None:
        """After a restart: a queued tx whose last signed form was committed before the crash
        is done (not signed again)."""
        signed = self._recheck[:PROOF_BATCH]
        queries = [("tx", tx_query(h, seq)) for h, seq in signed]
        _, results = await self.node.prove(queries, timeout_s=30.0)
        self._recheck = self._recheck[PROOF_BATCH:]
        done = {h for (h, _), r in zip(signed, results, strict=True) if isinstance(r, int)}
        for item in self.queued():
            if bytes(item.get("tx") or b"") in done:
                self._drop(str(item["id"]))
                self.stats["api_committed"] += 1

    async def _send_api(self) -> None:
        """Sign and send the queued txs not in flight (also those a re-sign round took back)."""
        assert self.sequence is not None
        flying = {p.api_id for p in self.inflight.values() if p.record is None}
        for item in self.queued():
            if len(self.inflight) >= self.max_inflight:
                return
            if item["id"] in flying:
                continue
            raw = txm.make(self.key, self.node.chain_id, self.sequence, item["kind"], item["body"])
            self.sequence += 1
            tx = await self.node.submit(raw)
            self._update(item["id"], tx=tx.hash, seq=tx.sequence)
            self.inflight[tx.hash] = Pending(
                None, raw, tx.hash, time.monotonic(), item["kind"], item["id"]
            )
            self._rounds[b"api/" + item["id"].encode()] = int(item["rounds"])
            self.stats["api_sent"] += 1

    async def _send_new(self) -> None:
        assert self.sequence is not None
        await self._send_api()
        if self.hold():
            return
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
        queries = [("tx", tx_query_of(self.inflight[h].raw)) for h in hashes]
        _, results = await self.node.prove(queries, timeout_s=30.0)
        stale = False
        for tx_hash, result in zip(hashes, results, strict=True):
            pending = self.inflight[tx_hash]
            if isinstance(result, int):
                del self.inflight[tx_hash]
                # Per-tx retry counts end with the tx, so they never grow with the ledger.
                self._sends.pop(tx_hash, None)
                self._rounds.pop(pending.ref, None)
                if pending.record is None:
                    self._drop(pending.api_id)
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
                if rounds >= self.give_up_rounds:
                    self._drop(pending.api_id, _REFUSED.format(rounds=rounds))
                    self.stats["api_set_aside"] += 1
                    log.warning("queued tx never included; set aside", extra={"kind": pending.kind})
                else:
                    self._update(pending.api_id, rounds=rounds)
            elif rounds >= self.give_up_rounds:
                self.outbox.mark_rejected(pending.record, _REFUSED.format(rounds=rounds))
                self.stats["set_aside"] += 1
            else:
                self._rounds[ref] = rounds
        self.inflight.clear()
        self._sends.clear()
        self.sequence = None
        self.stats["resigned"] += 1


_REFUSED = (
    "not committed after {rounds} re-sign rounds: the validators refuse it (a light member "
    "does not learn why; a full node's POST names the reason)"
)
