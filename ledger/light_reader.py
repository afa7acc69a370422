"""Proven reads of a light member: state keys fetched in bounded batches, checked against
verified headers, cached per header.

Spec: docs/spec/light.md §4a. A validator answers a proof request with proofs against its state
after block H; the member checks them with the app hash of verified header H + 1 (or header H
when block H changed nothing). Header H + 1 exists only once the next block is committed, which
on an idle chain is up to ``block_heartbeat_s`` away, so a read:

1. serves a key from the cache when it was proven against the newest verified header (nothing
   newer is known), or when its value cannot change any more (a member's own ``meas/`` row and a
   ``settle/`` posting are written once);
2. asks for the other keys (at most :data:`~ledger.proofs.MAX_QUERIES` per request, at most
   one pending request per key and header) and waits up to ``wait_s`` for the header that
   checks the answer;
3. answers each key with the newest value it has proven, saying against which header and
   whether that is the newest one (when every key has an older proven value it waits only
   ``stale_wait_s`` for a newer one); answers that are still unverifiable stay pending and are
   checked when their header arrives, so the next read has them.

``absent`` and ``denied`` are a validator's word, not proofs (there are no absence proofs:
a key's neighbours in key order are other members' rows). They are kept only until the next header.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from ledger.errors import LedgerError
from ledger.light_node import LightNode
from ledger.proofs import MAX_QUERIES, Answer, ProofError, ProofResponse, verify_list_answer

CACHE_ENTRIES = 4096
"""Proven values kept (LRU; ≈ 0.2 kB each)."""
MAX_PENDING_ANSWERS = 64
"""Answers kept while their header has not arrived (oldest dropped)."""
STICKY_PREFIXES = (b"meas/", b"settle/")
"""Keys whose proven value never changes (written once; a pruned row is the member's own)."""


class ReadError(LedgerError):
    """A proven read that could not be completed."""


class ReadTimeout(ReadError):  # noqa: N818 -- named for the HTTP outcome (504)
    """No validator answered within the wait; nothing proven to fall back on."""


class NotYetProven(ReadError):  # noqa: N818 -- named for the HTTP outcome (503)
    """An answer came, but the header that checks it has not (next block).

    Attributes:
        header_height: the header the member waits for.
    """

    def __init__(self, message: str, header_height: int) -> None:
        super().__init__(message)
        self.header_height = header_height


@dataclass(frozen=True, slots=True)
class Proven:
    """What a member knows of one key.

    Attributes:
        key: the state key.
        status: ``ok`` (proven), ``absent`` or ``denied`` (the validator's word only).
        value: the proven value bytes (``ok`` only).
        detail: the validator's reason (``denied``).
        state_height: the value is that of the state after this block.
        header_height: the verified header whose app hash proved it (0: not proven).
        tip: the member's newest verified header when the answer was taken in.
    """

    key: bytes
    status: str
    value: bytes | None
    detail: str
    state_height: int
    header_height: int
    tip: int


class ProvenReader:
    """Batched, cached, bounded proven reads over a :class:`~ledger.light_node.LightNode`.

    Args:
        node: the member's running light node.
        wait_s: default time a read waits for answers and headers [s] (below lemctl's 10 s).
        stale_wait_s: the wait for headers when every key has an older proven value [s].
        cache_entries: proven values kept (LRU).
    """

    def __init__(
        self,
        node: LightNode,
        *,
        wait_s: float = 8.0,
        stale_wait_s: float = 1.0,
        cache_entries: int = CACHE_ENTRIES,
    ) -> None:
        self.node = node
        self.wait_s = wait_s
        self.stale_wait_s = stale_wait_s
        self.cache_entries = cache_entries
        self._cache: OrderedDict[bytes, Proven] = OrderedDict()
        self._pending: list[tuple[ProofResponse, int]] = []
        self._asked: dict[bytes, int] = {}
        self._lists: dict[bytes, tuple[int, list[bytes]]] = {}
        self.stats: dict[str, int] = {"requests": 0, "cache_hits": 0, "bad_proofs": 0}

    # ------------------------------------------------------------------ reads

    async def read(self, keys: list[bytes], wait_s: float | None = None) -> dict[bytes, Proven]:
        """The newest known value of each key (see the module docstring).

        Raises:
            ReadTimeout: a key has no known value and no validator answered in time.
            NotYetProven: a key has no proven value yet and its answer awaits its header.
        """
        deadline = time.monotonic() + (self.wait_s if wait_s is None else wait_s)
        self._settle()
        wanted = list(dict.fromkeys(keys))
        stale = [k for k in wanted if not self._fresh(k)]
        self.stats["cache_hits"] += len(wanted) - len(stale)
        timed_out = await self._ask(stale, deadline)
        if all(k in self._cache for k in stale):
            # Every key has a proven (older) value: wait only briefly for a newer one.
            deadline = min(deadline, time.monotonic() + self.stale_wait_s)
        await self._await_headers(stale, deadline)
        return self._result(wanted, timed_out)

    async def list_keys(self, prefix: bytes, wait_s: float | None = None) -> list[bytes]:
        """Keys under ``prefix`` as a validator lists them (not proven: module docstring of
        ledger/proofs.py); ``period/`` or this member's own ``own/<key>/``. Kept until the
        next verified header.

        Raises:
            ReadTimeout: no answer in time.
            ReadError: the validator refused or sent nonsense.
        """
        try:
            answer = await self.node.ask(
                [("list", prefix)], self.wait_s if wait_s is None else wait_s
            )
        except TimeoutError as exc:
            raise ReadTimeout(f"no validator answered the listing of {prefix!r}") from exc
        self.stats["requests"] += 1
        try:
            found, _cut = verify_list_answer(answer.answers[0])
        except (ProofError, IndexError) as exc:
            raise ReadError(f"listing of {prefix!r}: {exc}") from exc
        return found

    def forget(self, key: bytes) -> None:
        """Drop a cached value (after this node changed it, say)."""
        self._cache.pop(key, None)

    # ------------------------------------------------------------------ steps

    def _fresh(self, key: bytes) -> bool:
        entry = self._cache.get(key)
        if entry is None:
            return False
        self._cache.move_to_end(key)
        if entry.status == "ok" and key.startswith(STICKY_PREFIXES):
            return True
        tip = self.node.light.height
        if entry.status == "ok":
            return entry.header_height >= tip
        return entry.tip >= tip

    async def _ask(self, keys: list[bytes], deadline: float) -> bool:
        """Send the requests for ``keys`` not already asked at this header; True when a
        request went unanswered."""
        tip = self.node.light.height
        todo = [k for k in keys if self._asked.get(k, -1) < tip]
        for i in range(0, len(todo), MAX_QUERIES):
            batch = todo[i : i + MAX_QUERIES]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            try:
                answer = await self.node.ask([("key", k) for k in batch], remaining)
            except (TimeoutError, ProofError):  # no answer, or one to other queries
                return True
            self.stats["requests"] += 1
            for k in batch:
                self._asked[k] = tip
            self._pending.append((answer, tip))
            del self._pending[:-MAX_PENDING_ANSWERS]
            self._settle()
        if len(self._asked) > 4 * self.cache_entries:
            self._asked = {k: h for k, h in self._asked.items() if h >= tip}
        return False

    async def _await_headers(self, keys: list[bytes], deadline: float) -> None:
        """Wait for the headers that pending answers of ``keys`` need, until ``deadline``:
        the feed normally brings them within moments; after 2 s the node asks for them (a
        header lost on the way would otherwise wait for the prober)."""
        while True:
            missing = {k for k in keys if not self._fresh(k)}
            needed = [
                r.height + 1 for r, _ in self._pending if any(a.arg in missing for a in r.answers)
            ]
            remaining = deadline - time.monotonic()
            if not needed or remaining <= 0:
                return
            try:
                await self.node.wait_height(min(needed), remaining)
            except TimeoutError:
                return
            self._settle()

    def _settle(self) -> None:
        """Take in every pending answer whose header is now verified; keep the others (their
        ``absent``/``denied`` answers are taken at once: no header checks those)."""
        keep = []
        oldest = self.node.light.height - self.node.light.keep_headers
        for response, tip in self._pending:
            header = self.node.key_header(response)
            proofs = any(a.kind == "key" and a.status == "ok" for a in response.answers)
            for answer in response.answers:
                if header is not None or answer.status != "ok":
                    self._take(answer, response, tip, 0 if header is None else header.height)
            if header is None and proofs and response.height + 1 > oldest:
                keep.append((response, tip))
        self._pending = keep

    def _take(self, answer: Answer, response: ProofResponse, tip: int, header_height: int) -> None:
        if answer.kind != "key":
            return
        if answer.status == "ok":
            result = self.node.check(answer, response)
            if not isinstance(result, bytes):
                self.stats["bad_proofs"] += 1  # a lying or confused validator: not kept
                return
            entry = Proven(answer.arg, "ok", result, "", response.height, header_height, tip)
        else:
            detail = "" if answer.data is None else str(answer.data)
            entry = Proven(answer.arg, answer.status, None, detail, response.height, 0, tip)
        old = self._cache.get(answer.arg)
        if old is not None and old.state_height > entry.state_height:
            return
        self._cache[answer.arg] = entry
        self._cache.move_to_end(answer.arg)
        while len(self._cache) > self.cache_entries:
            self._cache.popitem(last=False)

    def _result(self, keys: list[bytes], timed_out: bool) -> dict[bytes, Proven]:
        out: dict[bytes, Proven] = {}
        for key in keys:
            entry = self._cache.get(key)
            if entry is not None:
                out[key] = entry
                continue
            waiting = [
                r.height + 1 for r, _ in self._pending if any(a.arg == key for a in r.answers)
            ]
            if waiting:
                raise NotYetProven(
                    f"the validator's proof of {key.decode(errors='replace')!r} is against the "
                    f"state after block {min(waiting) - 1}; the header that checks it "
                    f"({min(waiting)}) comes with the next block",
                    min(waiting),
                )
            raise ReadTimeout(
                "no validator answered the proof request in time"
                if timed_out
                else f"no proof of {key.decode(errors='replace')!r} was obtained"
            )
        return out
