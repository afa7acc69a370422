"""The joining side of snapshot sync: verified headers from genesis, a manifest, chunks, restore.

Spec: docs/spec/consensus.md §5b. Trust: the joiner verifies every header from genesis with the
light client (ledger/light.py: sequential verification, commits of > 2/3 of the set, > 1/3 of
the previous set on a change). Genesis is the only trust root, the one every node already has;
no operator has to paste a trusted height and hash (CometBFT's state-sync trust options), and
the headers also give every height's validator set, from which the proposer priorities of the
snapshot height are recomputed exactly (they are not in any header, and a wrong one would make
the node refuse valid blocks). The cost is ≈ 0.4 kB per header on the joiner's link.

Then: manifest of the state after S (:mod:`ledger.snapshot`), its chunk roots checked against
header S + 1's ``app_hash``; each chunk checked against its root; the state, the tip (S, hash
and time of header S, that app hash), the validator sets of S and S + 1 and the commit of S are
written; block sync continues from S + 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ledger.consensus.validators import ValidatorSet
from ledger.consensus.wal import ConsensusStore
from ledger.keys import SigningKey
from ledger.light import LightClient, LightError, TrustedHeader, valset_hash
from ledger.proofs import (
    HEADERS_PER_ANSWER,
    HeadersAnswer,
    ProofError,
    make_headers_request,
    parse_response,
)
from ledger.snapshot import (
    N_CHUNKS,
    Manifest,
    SnapshotError,
    decode,
    make_chunk_request,
    make_request,
    manifest_root,
    verify_chunk,
)
from ledger.store import Store
from ledger.transport.base import Message

log = logging.getLogger("ledger.snapshot")

ANSWER_TIMEOUT_S = 5.0
"""Wait for one answer (headers, manifest, chunk piece) before asking again [s]."""
MAX_TRIES = 6
"""Unanswered or refused requests in a row before the attempt fails."""
INBOX = 256

Send = Callable[[str, bytes, str | None], None]


class PriorityTracker:
    """Validator sets with proposer priorities, replayed from genesis along verified headers
    (docs/spec/consensus.md §4: set(h+1) = set(h).next_height(powers named by header h+1))."""

    def __init__(self) -> None:
        self.sets: dict[int, ValidatorSet] = {}

    def accept(self, header: TrustedHeader, light: LightClient) -> None:
        powers = light.validators(header.validators_hash)
        if powers is None:
            raise SnapshotError(f"header {header.height}: its validator set is unknown")
        previous = self.sets.get(header.height - 1)
        if header.height == 1:
            vs = ValidatorSet.from_powers(dict(powers))
        elif previous is None:
            raise SnapshotError(f"header {header.height}: priorities of {header.height - 1} lost")
        else:
            vs = previous.next_height(dict(powers))
        if valset_hash(tuple(vs.powers().items())) != header.validators_hash:
            raise SnapshotError(f"header {header.height}: replayed set does not hash to it")
        self.sets[header.height] = vs
        self.sets.pop(header.height - 2, None)


class SnapshotJoiner:
    """Restores a verified snapshot into an empty (or far-behind) store.

    Args:
        store: the node's ledger store.
        cstore: the node's consensus store (validator sets and the commit of S go there).
        key: the node's key (signs the snapshot request; members and validators are served).
        node_id: this node's transport id (where answers go).
        send: ``send(channel, payload, to)``.
        workdir: scratch directory for the header chain (wiped at each attempt).
    """

    def __init__(
        self,
        store: Store,
        cstore: ConsensusStore,
        key: SigningKey,
        node_id: str,
        send: Send,
        workdir: Path,
        *,
        timeout_s: float = ANSWER_TIMEOUT_S,
    ) -> None:
        self._store = store
        self._cstore = cstore
        self._key = key
        self._node_id = node_id
        self._send = send
        self._workdir = workdir
        self._timeout_s = timeout_s
        self._chain = store.genesis.chain_id
        self._inbox: asyncio.Queue[Message] = asyncio.Queue(maxsize=INBOX)
        self._last_nonce = 0
        self._turn = int.from_bytes(key.public_key[:4], "big")  # spreads joiners over servers
        self._light: LightClient | None = None
        self.stats: dict[str, int] = {"headers": 0, "pieces": 0, "entries": 0, "bytes": 0}

    def feed(self, message: Message) -> None:
        """An answer for the joiner (``proof_resp`` headers, ``sync_resp`` snapshot kinds);
        dropped when the inbox is full (the request is repeated)."""
        with contextlib.suppress(asyncio.QueueFull):
            self._inbox.put_nowait(message)

    def _target(self) -> bytes:
        """The next validator to ask, in turn, never this node itself (a restarting validator
        would otherwise ask itself — it answers nothing while joining — one time in n):
        keys of the newest verified header's set."""
        light = self._light
        assert light is not None
        latest = light.validators(light.latest.validators_hash) or ()
        keys = sorted(pk for pk, _ in latest if pk != self._key.public_key)
        if not keys:
            return b""
        self._turn += 1
        return keys[self._turn % len(keys)]

    def _nonce(self) -> int:
        self._last_nonce = max(self._last_nonce + 1, time.time_ns() // 1_000_000)
        return self._last_nonce

    async def _receive(self, accept: Callable[[Message], Any]) -> Any:
        """The first message ``accept`` maps to a value (not None) within the timeout, else
        None; others are stale answers and are dropped."""
        try:
            async with asyncio.timeout(self._timeout_s):
                while True:
                    found = accept(await self._inbox.get())
                    if found is not None:
                        return found
        except TimeoutError:
            return None

    # ----------------------------------------------------------------- the attempt

    async def join(self) -> int:
        """One attempt; returns the restored height S.

        Raises:
            SnapshotError: what failed (a header, the manifest, a chunk named by number, no
                answer); nothing was written to the stores.
        """
        shutil.rmtree(self._workdir, ignore_errors=True)
        light = self._light = LightClient(self._workdir, self._store.genesis, durable=False)
        try:
            tracker = PriorityTracker()
            await self._headers(light, tracker, need=None)
            manifest = await self._manifest()
            if manifest.height <= self._store.height:
                raise SnapshotError(
                    f"the snapshot offered is at height {manifest.height}, not above this "
                    f"node's {self._store.height}: nothing to restore"
                )
            await self._headers(light, tracker, need=manifest.height + 1)
            base, successor = light.header(manifest.height), light.header(manifest.height + 1)
            commit = light.commit(manifest.height)
            if base is None or successor is None or commit is None:
                raise SnapshotError(f"headers {manifest.height}, +1 not verified")
            if manifest_root(manifest.roots) != successor.app_hash:
                raise SnapshotError(
                    f"manifest at height {manifest.height} from {manifest.server}: its roots do "
                    f"not give the app hash of verified header {manifest.height + 1}"
                )
            entries = await self._chunks(manifest)
            self._cstore.save_valset(manifest.height, tracker.sets[manifest.height])
            self._cstore.save_valset(manifest.height + 1, tracker.sets[manifest.height + 1])
            self._cstore.save_commit(commit)
            tip = (manifest.height, base.hash, base.time_ms, successor.app_hash)
            self._store.restore(tip, entries)
        finally:
            light.close()
            shutil.rmtree(self._workdir, ignore_errors=True)
        return manifest.height

    async def _headers(
        self, light: LightClient, tracker: PriorityTracker, need: int | None
    ) -> None:
        """Fetch verified headers until a validator has no more (``need`` None) or up to
        ``need``; one validator answers each request (docs/spec/light.md §3)."""
        stalls = 0
        while need is None or light.height < need:
            before = light.height
            payload = make_headers_request(self._chain, before + 1, self._nonce(), self._target())
            self._send("proof_req", payload, None)
            answer = await self._receive(_headers_answer)
            updates = () if answer is None else answer.updates
            try:
                for update in updates:
                    for header in light.offer(update):
                        tracker.accept(header, light)
                        self.stats["headers"] += 1
            except LightError as exc:
                raise SnapshotError(f"header chain: {exc}") from exc
            if need is None and answer is not None and len(updates) < HEADERS_PER_ANSWER:
                return
            stalls = stalls + 1 if light.height == before else 0
            if stalls >= MAX_TRIES:
                raise SnapshotError(f"no validator answered headers from height {before + 1}")

    async def _manifest(self) -> Manifest:
        for _ in range(MAX_TRIES):
            nonce = self._nonce()
            request = make_request(self._key, self._chain, self._node_id, nonce, self._target())
            self._send("sync_req", request, None)
            found = await self._receive(functools.partial(self._manifest_answer, nonce=nonce))
            if isinstance(found, Manifest):
                return found
            if found == "not_permitted":
                raise SnapshotError(
                    "snapshots are served to validators and admins only (they hold every "
                    "member's recent measurements); follow this chain as a light member"
                )
            if found is not None:
                log.info("snapshot refused", extra={"reason": found})
        raise SnapshotError("no validator offered a snapshot manifest")

    def _manifest_answer(self, message: Message, nonce: int) -> Manifest | str | None:
        value = self._snapshot_value(message)
        if value is None or len(value) < 4 or value[2] != nonce:
            return None  # too short to be an answer (an IndexError here would end the join)
        if value[0] == "snap_none":
            return str(value[3])
        if value[0] != "snap_manifest" or len(value) != 5 or not isinstance(value[3], int):
            return None
        roots = tuple(value[4]) if isinstance(value[4], list) else ()
        manifest_root(roots)  # shape check: 64 roots of 32 bytes
        return Manifest(int(value[3]), roots, message.sender)

    def _snapshot_value(self, message: Message) -> list[Any] | None:
        if message.channel != "sync_resp":
            return None
        try:
            return decode(self._chain, message.payload)
        except SnapshotError:
            return None

    async def _chunks(self, manifest: Manifest) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        for chunk in range(N_CHUNKS):
            entries: list[tuple[bytes, bytes]] = []
            after = b""
            while True:
                pairs, more = await self._piece(manifest, chunk, after)
                entries.extend(pairs)
                if not more:
                    break
                if not pairs:
                    raise SnapshotError(f"chunk {chunk}: an empty piece that says more follows")
                after = pairs[-1][0]
            verify_chunk(manifest.height, chunk, entries, manifest.roots)
            out.extend(entries)
        return out

    async def _piece(
        self, manifest: Manifest, chunk: int, after: bytes
    ) -> tuple[list[tuple[bytes, bytes]], bool]:
        for _ in range(MAX_TRIES):
            nonce = self._nonce()
            payload = make_chunk_request(self._chain, manifest.height, chunk, after, nonce)
            self._send("sync_req", payload, manifest.server)
            found = await self._receive(functools.partial(self._piece_answer, nonce=nonce))
            if found is not None:
                self.stats["pieces"] += 1
                self.stats["entries"] += len(found[0])
                self.stats["bytes"] += sum(len(k) + len(v) for k, v in found[0])
                return found  # type: ignore[no-any-return]
        raise SnapshotError(
            f"chunk {chunk} of the snapshot at height {manifest.height}: no answer from "
            f"{manifest.server}"
        )

    def _piece_answer(
        self, message: Message, nonce: int
    ) -> tuple[list[tuple[bytes, bytes]], bool] | None:
        value = self._snapshot_value(message)
        if value is None or value[0] != "snap_chunk" or len(value) != 8 or value[5] != nonce:
            return None
        pairs = value[6]
        if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, bytes) for x in p)
            for p in pairs
        ):
            return None
        return [(bytes(k), bytes(v)) for k, v in pairs], bool(value[7])


def _headers_answer(message: Message) -> HeadersAnswer | None:
    if message.channel != "proof_resp":
        return None
    try:
        parsed = parse_response(message.payload)
    except ProofError:
        return None
    return parsed if isinstance(parsed, HeadersAnswer) else None


__all__ = ["PriorityTracker", "SnapshotJoiner"]
