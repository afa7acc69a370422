"""State snapshots: format, verification and the serving side of snapshot sync.

Spec: docs/spec/consensus.md §5b. A node that cannot replay blocks from genesis (their bodies are
pruned: ledger/bodyprune.py) restores the state at a height S from a peer and continues by block
sync from S + 1. The app hash folds the roots of 64 partitions of the state (docs/spec/ledger.md
§6); a snapshot cuts it there:

- **manifest**: the 64 partition roots ("chunk roots"); folding them with the top rule
  ``sha256(0x02 ‖ children)`` must give the app hash after S, which header S + 1 carries and its
  commit signs;
- **chunk** c: the state entries of partition c in key order, sent in pieces of at most
  :data:`PIECE_BYTES`; the partition's tree built from them must give chunk root c.

A server answers from an LMDB read transaction opened right after a commit (a consistent view
while the node keeps committing); a view of height S is served once S + 1 is committed, so its
app hash is signed. Requests are signed, and only validators and admins are served (the
snapshot holds every member's unpruned measurements of recent days, which seed 000 Fig. 4 lets
only the admin read); one validator answers a request (docs/spec/light.md §3).
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ledger import codec, keys, merkle, state
from ledger.errors import CodecError, LedgerError, SignatureError
from ledger.store import StateView, Store
from ledger.transport.base import Message

N_CHUNKS = merkle.N_PARTITIONS
"""64: a chunk is one partition of the state tree."""
PIECE_BYTES = 64 << 10
"""Keys + values per chunk answer [bytes]: well under the 256 KiB MQTT payload bound
(docs/spec/transport.md) with the framing."""
MAX_MESSAGE_BYTES = 256 << 10
NONCE_WINDOW_MS = 300_000
"""A snapshot request's nonce (its wall time) may differ this much from the server's [ms]."""
LEASE_S = 120.0
"""A view a joiner is fetching is kept this long after its last request [s]."""
MAX_VIEW_AGE_S = 900.0
"""A served view is replaced after this long even while leased [s]: a steady trickle of
joiners must not pin old pages (LMDB cannot reuse what a reader still sees) for ever."""
SIGN_KIND = "snap_req"
MAX_REQUESTERS = 1024
"""Requester keys whose last nonce is remembered (oldest first out) [count]."""
KINDS = ("snap_req", "snap_manifest", "snap_none", "snap_chunk_req", "snap_chunk", "sync_pruned")


class SnapshotError(LedgerError):
    """A snapshot (manifest, chunk, header chain) that does not verify, or a failed join."""


# format (pure) ---------------------------------------------------------------------------------


def manifest_root(roots: Sequence[bytes]) -> bytes:
    """The app hash the chunk roots give (compare with a trusted header's ``app_hash``)."""
    if len(roots) != N_CHUNKS or not all(isinstance(r, bytes) and len(r) == 32 for r in roots):
        raise SnapshotError(f"manifest: needs {N_CHUNKS} roots of 32 bytes")
    return merkle.app_hash(roots)


def chunk_root(chunk: int, entries: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Root of chunk ``chunk`` recomputed from its entries.

    Raises:
        SnapshotError: an entry of another partition, out of key order, or duplicated
            (naming the chunk).
    """
    leaves = []
    previous: bytes | None = None
    for key, value in entries:
        partition = merkle.partition_of(key)
        if partition != chunk:
            raise SnapshotError(f"chunk {chunk}: key {key[:40]!r} belongs to chunk {partition}")
        if previous is not None and key <= previous:
            raise SnapshotError(f"chunk {chunk}: entries out of key order at {key[:40]!r}")
        previous = key
        leaves.append((key, merkle.leaf_hash(key, value)))
    return merkle.partition_root(leaves)


def verify_chunk(
    height: int, chunk: int, entries: Sequence[tuple[bytes, bytes]], roots: Sequence[bytes]
) -> None:
    """Check a complete chunk against the verified manifest.

    Raises:
        SnapshotError: naming the chunk and the height.
    """
    got = chunk_root(chunk, entries)
    if got != roots[chunk]:
        raise SnapshotError(
            f"chunk {chunk} of the snapshot at height {height}: its {len(entries)} entries give "
            f"root {got.hex()[:16]}…, the manifest says {roots[chunk].hex()[:16]}…"
        )


# messages --------------------------------------------------------------------------------------


def is_snapshot_message(payload: bytes) -> bool:
    """Cheap test (no decode) for the kinds of this module on ``sync_req`` / ``sync_resp``:
    an array whose first element is a short string starting ``snap_`` or ``sync_pruned``."""
    return payload[2:7] == b"snap_" or payload[2:13] == b"sync_pruned"


def make_request(
    key: keys.SigningKey, chain_id: str, reply_to: str, nonce_ms: int, target: bytes = b""
) -> bytes:
    """A signed request for a snapshot manifest (``target``: a server's key, b"": the
    validator the nonce picks)."""
    body = codec.encode([key.public_key, reply_to, nonce_ms, target])
    return codec.encode(["snap_req", chain_id, body, key.sign(chain_id, SIGN_KIND, body)])


def make_chunk_request(chain_id: str, height: int, chunk: int, after: bytes, nonce: int) -> bytes:
    """Ask the server that sent the manifest for a piece of ``chunk`` after state key ``after``."""
    return codec.encode(["snap_chunk_req", chain_id, height, chunk, after, nonce])


def decode(chain_id: str, payload: bytes) -> list[Any]:
    """A snapshot message as its array (kind first), chain checked.

    Raises:
        SnapshotError: not canonical, another chain, or an unknown kind.
    """
    try:
        value = codec.decode(payload, max_bytes=MAX_MESSAGE_BYTES)
    except CodecError as exc:
        raise SnapshotError(f"snapshot message: {exc}") from exc
    if not isinstance(value, list) or len(value) < 3 or value[0] not in KINDS:
        raise SnapshotError("snapshot message: not [kind, chain, …] of a snapshot kind")
    if value[1] != chain_id:
        raise SnapshotError(f"snapshot message of chain {value[1]!r}")
    return value


@dataclass(frozen=True, slots=True)
class Manifest:
    """A server's offer: the state after ``height`` as chunk roots (unverified until checked
    against header ``height + 1``)."""

    height: int
    roots: tuple[bytes, ...]
    server: str
    """The node id it came from (chunk requests go there)."""


# serving ---------------------------------------------------------------------------------------


class SnapshotServer:
    """Serves this node's state to joiners from a consistent view (module docstring).

    Args:
        store: the node's ledger store.
        key: this node's key (None: serves nothing).
        send: ``send(channel, payload, to)``.
        now_s: monotonic clock for leases [s].
        wall_ms: wall clock for nonce windows [ms since the epoch].
    """

    def __init__(
        self,
        store: Store,
        key: keys.SigningKey | None,
        send: Callable[[str, bytes, str | None], None],
        now_s: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._store = store
        self._key = key
        self._send = send
        self._now_s = now_s
        self._wall_ms = wall_ms
        self._candidate: StateView | None = None
        self._served: StateView | None = None
        self._roots: list[bytes] | None = None
        self._lease_until = 0.0
        self._served_since = 0.0
        self._sessions: dict[str, int] = {}
        self._nonces: OrderedDict[bytes, int] = OrderedDict()
        self.stats: Counter[str] = Counter()

    @property
    def served_height(self) -> int | None:
        return None if self._served is None else self._served.height

    def on_commit(self) -> None:
        """After each commit: the previous view becomes servable (its successor is now signed),
        unless a joiner is still fetching the one served; a fresh view is opened."""
        if self._key is None:
            return
        now = self._now_s()
        leased = self._served is not None and now < self._lease_until
        leased = leased and now - self._served_since < MAX_VIEW_AGE_S
        if not leased and self._candidate is not None:
            if self._served is not None:
                self._served.close()
            self._served, self._roots, self._sessions = self._candidate, None, {}
            self._served_since = now
        elif self._candidate is not None:
            self._candidate.close()
        self._candidate = self._store.view()

    def handle(self, message: Message) -> None:
        """A ``snap_req`` or ``snap_chunk_req``; bad ones are counted, never raised."""
        if self._key is None:
            return
        try:
            value = decode(self._store.genesis.chain_id, message.payload)
            if value[0] == "snap_req":
                self._answer_manifest(value, message.sender)
            elif value[0] == "snap_chunk_req":
                self._answer_chunk(value, message.sender)
        except (SnapshotError, SignatureError, CodecError, TypeError, ValueError) as exc:
            self.stats[f"refused_{type(exc).__name__}"] += 1

    def _addressed(self, target: bytes, nonce: int) -> bool:
        """A broadcast request is answered by one validator: position sha256(nonce) mod n."""
        assert self._key is not None
        if target:
            return target == self._key.public_key
        with self._store.state_reader() as base:
            ordered = sorted(pk for pk, _ in state.validators(state.Overlay(base)))
        pick = int.from_bytes(keys.sha256(nonce.to_bytes(8, "big")), "big") % len(ordered)
        return ordered[pick] == self._key.public_key

    def _answer_manifest(self, value: list[Any], sender: str) -> None:
        _, chain, body, signature = value
        requester, reply_to, nonce, target = codec.decode(body)
        if not self._addressed(bytes(target), int(nonce)):
            return
        keys.verify(requester, chain, SIGN_KIND, body, signature)
        if reply_to != sender:
            raise ValueError(f"reply_to {reply_to!r} is not the sender {sender!r}")
        if abs(nonce - self._wall_ms()) > NONCE_WINDOW_MS or nonce <= self._nonces.get(
            requester, -1
        ):
            raise ValueError("stale or replayed nonce")
        self._nonces[requester] = nonce
        self._nonces.move_to_end(requester)
        while len(self._nonces) > MAX_REQUESTERS:  # signed by anyone: keep memory bounded
            self._nonces.popitem(last=False)
        if not self._may_receive(requester):
            self.stats["refused_not_permitted"] += 1
            payload = ["snap_none", chain, nonce, "not_permitted"]
            self._send("sync_resp", codec.encode(payload), sender)
            return
        if self._served is None:
            self.stats["no_view"] += 1
            self._send("sync_resp", codec.encode(["snap_none", chain, nonce, "no_view"]), sender)
            return
        if self._roots is None:
            self._roots = self._served.partition_roots()  # chunk c = partition c
        self._sessions[sender] = self._served.height
        self._lease_until = self._now_s() + LEASE_S
        self.stats["manifests"] += 1
        payload = ["snap_manifest", chain, nonce, self._served.height, self._roots]
        self._send("sync_resp", codec.encode(payload), sender)

    def _may_receive(self, requester: bytes) -> bool:
        """Validators and admins only: a snapshot holds every member's unpruned measurements,
        which seed 000 Fig. 4 lets only the admin read (validators hold them anyway). A
        prosumer's node follows as a light member (docs/spec/light.md) instead."""
        with self._store.state_reader() as base:
            st = state.Overlay(base)
            return state.is_validator(st, requester) or state.is_admin(st, requester)

    def _answer_chunk(self, value: list[Any], sender: str) -> None:
        _, chain, height, chunk, after, nonce = value
        view = self._served
        if view is None or self._sessions.get(sender) != height or view.height != height:
            self.stats["chunk_no_session"] += 1
            return
        if not 0 <= chunk < N_CHUNKS or not isinstance(after, bytes):
            raise ValueError(f"chunk request for chunk {chunk!r}")
        entries, more = view.entries(chunk, after, PIECE_BYTES)
        self._lease_until = self._now_s() + LEASE_S
        self.stats["pieces"] += 1
        pairs = [[k, v] for k, v in entries]
        payload = ["snap_chunk", chain, height, chunk, after, nonce, pairs, more]
        self._send("sync_resp", codec.encode(payload), sender)

    def close(self) -> None:
        for view in (self._candidate, self._served):
            if view is not None:
                view.close()
        self._candidate = self._served = None
