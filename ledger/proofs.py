"""Header feed and proof service of validators for light members; the member's side of it.

Spec: docs/spec/light.md §2–§4. A validator that proposed a committed block publishes its
header + commit on channel ``header`` (one copy per block: the proposer's). It answers, on its
direct channel ``proof_resp``, two requests it receives on ``proof_req``:

- ``["headers_req", chain_id, from_height, nonce_ms, target]``: up to
  :data:`HEADERS_PER_ANSWER` header updates from ``from_height`` (headers are public within
  the community);
- ``["proof_req", chain_id, body, signature]`` with ``body = encode([requester, reply_to,
  nonce_ms, [[kind, arg], …], target])`` signed by the requester's key (sign kind
  ``proof_req``): per query an inclusion proof — ``kind`` ``"key"``: a state key, proven
  against the app hash after the answer's height, served only when seed 000 Fig. 4 lets the
  requester read it (:meth:`ledger.access.Queries.prove`, plus the requester's own
  ``own/<key>/<meter>`` rows); ``"tx"``: one of the requester's own txs, named by
  :func:`tx_query` (its hash and sequence), proven against its block's ``txs_hash``;
  ``"list"``: the keys under a prefix the requester may enumerate (``period/``, its own
  ``own/<key>/``), at most :data:`MAX_LISTED`, not proven (each listed key is then proven on
  its own; completeness is not: light.md §4).

``target`` is the public key of the validator that should answer (a member learns it with the
node id from the headers that validator published); b"" (a broadcast on ``proof_req``) lets the
nonce choose one, so a member that knows no validator's node id yet still gets one answer.

Key proofs come from the state *before* the newest block (a read view pinned at each commit, as
the snapshot server does): the state after block H − 1 is what header H — already committed and
on every member's feed — names by its app hash, so the member checks the answer at once instead
of waiting for the next block (up to ``block_heartbeat_s`` on an idle chain). The answer's
height is H − 1. Reads therefore lag the chain by one block.

Replay protection: the nonce is a time [ms] within ±:data:`NONCE_WINDOW_MS` of the validator's
clock and greater than the last nonce it answered for that key; the answer goes only to the
``reply_to`` node id the requester signed, which must be the topic's sender (pinned by the
broker ACL). Answers are not signed: every value in them is checked by the member against a
header it verified itself.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledger import block as blk
from ledger import codec, keys, merkle, state
from ledger import tx as txm
from ledger.access import Queries
from ledger.app import App
from ledger.consensus.messages import Commit
from ledger.errors import AccessDenied, CodecError, LedgerError, SignatureError
from ledger.light import HeaderUpdate, LightClient, Valset, decode_update, encode_update
from ledger.store import StateView
from ledger.transport.base import Message

HEADERS_PER_ANSWER = 32
MAX_QUERIES = 96
"""Queries per request: one day of 15-min slots, so a day of own measurements is one round."""
MAX_LISTED = 256
"""Keys in one ``list`` answer (the rest is cut; the answer says so)."""
NONCE_WINDOW_MS = 300_000
"""A request's nonce (its time) may differ this much from the validator's clock [ms]."""
MAX_REQUESTERS = 4096
SIGN_KIND = "proof_req"
MAX_REQUEST_BYTES = 32 << 10
"""Largest request read: MAX_QUERIES keys of up to ~140 B (own/<64 hex>/<meter>) ≈ 15 kB."""

Send = Callable[[str, bytes, str | None], None]


class ProofError(LedgerError):
    """A proof answer that does not verify, or a request that cannot be made."""


def own_prefix(account: bytes) -> bytes:
    """Prefix of the ``own/<account hex>/<meter>`` rows: the meters ``account`` owns."""
    return b"own/" + account.hex().encode() + b"/"


# requests (member side) -----------------------------------------------------------------------


TX_QUERY_BYTES = 32 + 8
"""A ``tx`` query's argument: tx hash ‖ u64 sequence."""


def tx_query(tx_hash: bytes, sequence: int) -> bytes:
    """The argument of a ``tx`` query: the hash of one of the requester's own txs and its
    sequence (the validator finds it by requester and sequence: ledger.md §7)."""
    return tx_hash + sequence.to_bytes(8, "big")


def tx_query_of(raw: bytes) -> bytes:
    """:func:`tx_query` of the envelope ``raw`` (the requester's own tx)."""
    tx = txm.decode(raw)
    return tx_query(tx.hash, tx.sequence)


def make_headers_request(
    chain_id: str, from_height: int, nonce_ms: int, target: bytes = b""
) -> bytes:
    """Payload asking validator ``target`` (public key; b"": the one the nonce picks, for a
    broadcast) for header updates from ``from_height``."""
    return codec.encode(["headers_req", chain_id, from_height, nonce_ms, target])


def make_proof_request(
    key: keys.SigningKey,
    chain_id: str,
    reply_to: str,
    nonce_ms: int,
    queries: list[tuple[str, bytes]],
    target: bytes = b"",
) -> bytes:
    """A signed proof request (module docstring) for ``queries`` of ``("key"|"tx", arg)``,
    for validator ``target`` (public key; b"": the one the nonce picks, for a broadcast)."""
    if not 0 < len(queries) <= MAX_QUERIES:
        raise ProofError(f"a proof request holds 1..{MAX_QUERIES} queries, got {len(queries)}")
    pairs = [[k, a] for k, a in queries]
    body = codec.encode([key.public_key, reply_to, nonce_ms, pairs, target])
    return codec.encode(["proof_req", chain_id, body, key.sign(chain_id, SIGN_KIND, body)])


@dataclass(frozen=True, slots=True)
class Answer:
    """One query's answer: ``status`` ``ok`` | ``absent`` | ``denied``; ``data`` its proof."""

    kind: str
    arg: bytes
    status: str
    data: Any


@dataclass(frozen=True, slots=True)
class ProofResponse:
    """A validator's answer to a proof request; key proofs are against the app hash after
    block ``height`` (checked with header ``height + 1``)."""

    nonce_ms: int
    height: int
    answers: tuple[Answer, ...]


@dataclass(frozen=True, slots=True)
class HeadersAnswer:
    updates: tuple[HeaderUpdate, ...]


def parse_response(payload: bytes) -> ProofResponse | HeadersAnswer:
    """Decode a ``proof_resp`` payload.

    Raises:
        ProofError: not canonical or not a known answer.
    """
    try:
        value = codec.decode(payload, max_bytes=1 << 20)
        if isinstance(value, list) and value[:1] == ["headers"]:
            return HeadersAnswer(tuple(decode_update(u) for u in value[1]))
        kind, nonce, height, answers = value
        if kind != "proof_resp" or not isinstance(nonce, int) or not isinstance(height, int):
            raise ValueError("not a proof response")
        return ProofResponse(nonce, height, tuple(Answer(*a) for a in answers))
    except (CodecError, TypeError, ValueError, LookupError, LedgerError) as exc:
        raise ProofError(f"proof answer: {exc!r}") from exc


def verify_key_answer(answer: Answer, app_hash: bytes) -> bytes:
    """The proven value of a ``key`` answer.

    Raises:
        ProofError: not ok, another key, or the proof does not lead to ``app_hash``.
    """
    if answer.status != "ok":
        raise ProofError(f"key {answer.arg[:40]!r}: {answer.status}: {answer.data}")
    try:
        proof = merkle.proof_from_value(answer.data)
    except ValueError as exc:
        raise ProofError(f"key {answer.arg[:40]!r}: {exc}") from exc
    if proof.key != answer.arg or not merkle.verify_proof(proof, app_hash):
        raise ProofError(f"key {answer.arg[:40]!r}: proof does not verify against the app hash")
    return proof.value


def verify_list_answer(answer: Answer) -> tuple[list[bytes], bool]:
    """The keys of a ``list`` answer and whether the validator cut the list. Not proven: a
    validator can leave keys out; each listed key is proven on its own.

    Raises:
        ProofError: not ok, or a key outside the asked prefix.
    """
    if answer.status != "ok":
        raise ProofError(f"list {answer.arg[:40]!r}: {answer.status}: {answer.data}")
    try:
        found, cut = answer.data
        listed = [bytes(k) for k in found]
    except (TypeError, ValueError) as exc:
        raise ProofError(f"list {answer.arg[:40]!r}: malformed answer") from exc
    if any(not k.startswith(answer.arg) for k in listed) or len(listed) > MAX_LISTED:
        raise ProofError(f"list {answer.arg[:40]!r}: keys outside the prefix")
    return sorted(set(listed)), bool(cut)


def verify_tx_answer(answer: Answer, light: LightClient) -> int:
    """Height of the block that includes the tx whose hash :func:`tx_query` put in
    ``answer.arg``.

    Raises:
        ProofError: not ok, unknown header, or the path does not lead to its ``txs_hash``.
    """
    tx_hash = answer.arg[:32]
    if answer.status != "ok":
        raise ProofError(f"tx {tx_hash.hex()[:16]}…: {answer.status}: {answer.data}")
    height, index, size, path = answer.data
    header = light.header(int(height))
    if header is None:
        raise ProofError(f"tx {tx_hash.hex()[:16]}…: header {height} is not verified yet")
    if not merkle.list_verify(tx_hash, index, size, list(path), header.txs_hash):
        raise ProofError(f"tx {tx_hash.hex()[:16]}…: inclusion path does not verify")
    return int(height)


# validator side -------------------------------------------------------------------------------


class ProofService:
    """What a validator does for light members: header feed and proof answers.

    Args:
        app: the validator's ledger application (committed state and blocks).
        key: the node's key (None: publishes and answers nothing).
        send: ``send(channel, payload, to)`` (the node's outbox).
        now_ms: wall clock [ms since the epoch] for nonce windows (not the daemon's simulated
            clock: the member's nonce is its wall time).
        valset_of: the powers of the set that signed a height (the consensus store's record).
    """

    def __init__(
        self,
        app: App,
        key: keys.SigningKey | None,
        send: Send,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        valset_of: Callable[[int], dict[bytes, int] | None] = lambda _h: None,
    ) -> None:
        self.app = app
        self._valset_of = valset_of
        self.key = key
        self._send = send
        self._now_ms = now_ms
        self._queries = Queries(app.store)
        self._sets: dict[bytes, Valset] = {}
        self._published_vhash = b""
        self._nonces: OrderedDict[bytes, int] = OrderedDict()
        self.stats: Counter[str] = Counter()
        self._remember_set()
        self._served: StateView | None = None  # state after the block before the newest
        self._candidate: StateView | None = None  # state after the newest block

    def _remember_set(self) -> None:
        vals = tuple(self.app.validators())
        self._sets[blk.validators_hash(list(vals))] = vals
        if len(self._sets) > 16:
            self._sets.pop(next(iter(self._sets)))

    def _is_validator(self) -> bool:
        return self.key is not None and any(
            pk == self.key.public_key for pk, _ in self.app.validators()
        )

    def on_commit(self, block: bytes, commit: Commit) -> None:
        """After a commit: rotate the pinned state views (module docstring); publish the
        header if this node proposed it (one copy per block)."""
        if self._is_validator():
            if self._served is not None:
                self._served.close()
            self._served = self._candidate
            self._candidate = self.app.store.view()
        header = self.app.decode_block(block).header  # decoded once per node (App cache)
        self._remember_set()
        if self.key is None or header.proposer != self.key.public_key:
            return
        try:
            valset = self._valset_at(header.height, header.validators_hash)
        except ValueError:
            self.stats["header_unknown_set"] += 1
            return
        with_set = header.validators_hash != self._published_vhash
        self._published_vhash = header.validators_hash
        self._send("header", encode_update(header, commit, valset, with_set), None)
        self.stats["headers_published"] += 1

    def handle(self, message: Message) -> None:
        """A ``proof_req`` message (others are ignored); bad ones are counted, never raised."""
        if message.channel != "proof_req" or not self._is_validator():
            return
        try:
            value = codec.decode(message.payload, max_bytes=MAX_REQUEST_BYTES)
            if not isinstance(value, list) or value[1:2] != [self.app.chain_id]:
                raise ValueError("not a request of this chain")
            if value[0] == "headers_req":
                _, _, from_height, nonce, target = value
                if self._addressed(bytes(target), int(nonce)):
                    self._answer_headers(int(from_height), message.sender)
            elif value[0] == "proof_req":
                self._answer_proofs(value[2], value[3], message.sender)
            else:
                raise ValueError(f"unknown request {value[0]!r}")
        # LookupError: a request with fields missing; OverflowError: a nonce beyond 64 bits.
        except (
            CodecError,
            TypeError,
            ValueError,
            LookupError,
            OverflowError,
            SignatureError,
        ) as exc:
            self.stats[f"request_refused_{type(exc).__name__}"] += 1

    def _addressed(self, target: bytes, nonce: int) -> bool:
        """A request names its validator's key, or (b"") lets the nonce pick one: one answer
        to a broadcast instead of n (the position ``sha256(nonce) mod n`` in key order)."""
        assert self.key is not None
        if target:
            return target == self.key.public_key
        ordered = sorted(pk for pk, _ in self.app.validators())
        pick = int.from_bytes(keys.sha256(nonce.to_bytes(8, "big")), "big") % len(ordered)
        return ordered[pick] == self.key.public_key

    def _answer_headers(self, from_height: int, to: str) -> None:
        updates: list[codec.Value] = []
        last_vhash = b""
        top = min(self.app.height, max(1, from_height) + HEADERS_PER_ANSWER - 1)
        for height in range(max(1, from_height), top + 1):
            # The stored header: also of a body-pruned block (docs/spec/privacy.md §3.1).
            header, commit = self.app.store.header(height), self.app.commit(height)
            if header is None or commit is None:
                break
            valset = self._valset_at(height, header.validators_hash)
            update = encode_update(
                header, Commit.from_value(commit), valset, header.validators_hash != last_vhash
            )
            last_vhash = header.validators_hash
            updates.append(codec.decode(update))
        if not updates and max(1, from_height) <= self.app.height:
            # Below the snapshot this node was restored from (docs/spec/consensus.md §5b): no
            # answer, so the member asks another validator instead of this one again at once.
            self.stats["headers_unavailable"] += 1
            return
        self._send("proof_resp", codec.encode(["headers", updates]), to)
        self.stats["headers_answered"] += 1

    def _valset_at(self, height: int, vhash: bytes) -> Valset:
        """The set that signed ``height`` (the header names its hash): remembered, from the
        consensus store's per-height sets, or the genesis set."""
        known = self._sets.get(vhash)
        if known is not None:
            return known
        stored = self._valset_of(height)
        if stored is not None and blk.validators_hash(sorted(stored.items())) == vhash:
            return tuple(sorted(stored.items()))
        genesis = tuple(sorted(self.app.store.genesis.validators))
        if blk.validators_hash(list(genesis)) == vhash:
            return genesis
        raise ValueError(f"validator set of height {height} is not known to this node")

    def _answer_proofs(self, body: bytes, signature: bytes, sender: str) -> None:
        requester, reply_to, nonce, queries, target = codec.decode(body)
        if not self._addressed(bytes(target), int(nonce)):
            return
        keys.verify(requester, self.app.chain_id, SIGN_KIND, body, signature)
        if reply_to != sender:
            raise ValueError(f"reply_to {reply_to!r} is not the sender {sender!r}")
        if abs(nonce - self._now_ms()) > NONCE_WINDOW_MS or nonce <= self._nonces.get(
            requester, -1
        ):
            raise ValueError("stale or replayed nonce")
        if not 0 < len(queries) <= MAX_QUERIES:
            raise ValueError("query count")
        self._nonces[requester] = nonce
        self._nonces.move_to_end(requester)
        if len(self._nonces) > MAX_REQUESTERS:
            self._nonces.popitem(last=False)
        view = self._served
        height = self.app.height if view is None else view.height
        answers = [self._answer(requester, str(kind), bytes(arg)) for kind, arg in queries]
        self._send("proof_resp", codec.encode(["proof_resp", nonce, height, answers]), sender)
        self.stats["proofs_answered"] += 1

    def _answer(self, requester: bytes, kind: str, arg: bytes) -> list[codec.Value]:
        if kind == "key":
            try:
                proof = self._prove(requester, arg)
            except AccessDenied as exc:
                self.stats["proof_denied"] += 1
                return [kind, arg, "denied", str(exc)]
            if proof is None:
                return [kind, arg, "absent", None]
            return [kind, arg, "ok", proof.to_value()]
        if kind == "tx":
            return self._answer_tx(requester, arg)
        if kind == "list":
            return self._answer_list(requester, arg)
        return [kind, arg, "denied", f"unknown query kind {kind!r}"]

    def _prove(self, requester: bytes, key: bytes) -> merkle.Proof | None:
        """Fig. 4 rules (ledger.access, on the current state), plus the requester's own meter
        rows: ``own/<its key>/<meter>`` says only that this key owns that meter, which it knows
        itself. The proof is from the served view when there is one (module docstring).

        Raises:
            AccessDenied: the requester may not read ``key``.
        """
        if not key.startswith(own_prefix(requester)):
            current = self._queries.prove(requester, key)  # raises AccessDenied
            if self._served is None:
                return current
        elif self._served is None:
            return self.app.store.prove(key)
        return self._served.prove(key)

    def close(self) -> None:
        """Release the pinned views (their LMDB read transactions)."""
        for view in (self._served, self._candidate):
            if view is not None:
                view.close()
        self._served = self._candidate = None

    def _answer_list(self, requester: bytes, prefix: bytes) -> list[codec.Value]:
        """Keys under ``period/`` (public) or the requester's own ``own/<key>/``; anything
        else is denied (a listing of ``meas/`` or ``bal/`` would name other members)."""
        if prefix not in (b"period/", own_prefix(requester)):
            self.stats["proof_denied"] += 1
            return ["list", prefix, "denied", "only period/ and the requester's own/ are listed"]
        with self.app.store.state_reader() as base:
            found: list[codec.Value] = []
            for key, _ in base.scan(prefix, state.prefix_end(prefix)):
                if len(found) == MAX_LISTED:
                    return ["list", prefix, "ok", [found, True]]
                found.append(bytes(key))
        return ["list", prefix, "ok", [found, False]]

    def _answer_tx(self, requester: bytes, arg: bytes) -> list[codec.Value]:
        """Inclusion of the requester's tx named by :func:`tx_query`. Only the requester's own
        txs are looked up (the index is keyed by account), so another member's tx is just
        absent: the answer does not tell whether it exists."""
        if len(arg) != TX_QUERY_BYTES:
            self.stats["proof_denied"] += 1
            return ["tx", arg, "denied", "a tx query is a tx hash and its u64 sequence"]
        tx_hash, sequence = arg[:32], int.from_bytes(arg[32:], "big")
        where = self.app.store.tx_location(requester, sequence)
        if where is None:
            return ["tx", arg, "absent", None]
        height, index = where
        stored = self.app.store.stored_block(height)
        assert stored is not None, "an indexed tx's block is stored"
        hashes = stored.tx_hashes  # a body-pruned block keeps them
        if hashes[index] != tx_hash:  # the sequence was used by another tx of the requester
            return ["tx", arg, "absent", None]
        path: codec.Value = list(merkle.list_path(hashes, index))
        return ["tx", arg, "ok", [height, index, len(hashes), path]]
