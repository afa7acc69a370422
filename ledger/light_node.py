"""A light member on a Transport: follows verified headers, submits txs, fetches own proofs.

Spec: docs/spec/light.md §3. The member subscribes to the ``header`` broadcasts and its own
inbox only. It verifies every header update (:class:`ledger.light.LightClient`); when one is
missing (the proposer that should have published it crashed, a message was lost, the node was
away) it asks a validator — the last node it heard a verified header from, else one of the
broadcast that the request's nonce assigns to one validator — for the headers from its height
(``headers_req``). With no header
for ``probe_s`` it asks again, so an idle chain or a lost answer never leaves it behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from typing import Any

from ledger import tx as txm
from ledger.keys import SigningKey
from ledger.light import (
    ForkDetected,
    HeaderRejected,
    HeaderUpdate,
    LightClient,
    TrustedHeader,
    read_update,
)
from ledger.proofs import (
    Answer,
    HeadersAnswer,
    ProofError,
    ProofResponse,
    make_headers_request,
    make_proof_request,
    parse_response,
    verify_key_answer,
    verify_list_answer,
    verify_tx_answer,
)
from ledger.transport.base import Message, Transport, TransportError

PROBE_S = 90.0
"""Ask for headers when none arrived for this long [s]; lemd sets the chain's heartbeat plus a
margin instead (edge/light_daemon.py), since every probe costs bytes on the member's link."""
RESEND_S = 5.0
"""A proof request without an answer is sent again after this long [s]."""


class LightNode:
    """The light client of a member, fed by a transport.

    Args:
        light: the member's verified header chain.
        transport: subscribed to ``header`` broadcasts and the node's inbox.
        key: the member's key (signs txs and proof requests).
        probe_s: header silence after which headers are requested [s].
    """

    def __init__(
        self,
        light: LightClient,
        transport: Transport,
        key: SigningKey,
        *,
        probe_s: float = PROBE_S,
    ) -> None:
        self.light = light
        self.transport = transport
        self.key = key
        self.chain_id = light.chain_id
        self.probe_s = probe_s
        self._heard: list[str] = []
        self._keys: dict[str, bytes] = {}
        self._rr = itertools.count()
        self._rr_skip: str | None = None
        self._waiting: dict[int, asyncio.Future[ProofResponse]] = {}
        self._advanced = asyncio.Event()
        self._last_nonce = 0
        self._last_header_s = time.monotonic()
        self.stats: Counter[str] = Counter()
        self.peers: dict[str, float] = {}

    # --------------------------------------------------------------- tasks

    async def run(self) -> None:
        """Read messages and probe for headers until the transport closes."""
        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(self._read(), name="light-read")
            prober = tg.create_task(self._probe(), name="light-probe")
            await reader
            prober.cancel()

    async def _read(self) -> None:
        async for message in self.transport.messages():
            self.peers[message.sender] = time.monotonic()
            await self.handle(message)

    async def _probe(self) -> None:
        await self.request_headers()
        while True:
            await asyncio.sleep(min(self.probe_s, 5.0))
            if time.monotonic() - self._last_header_s >= self.probe_s:
                self._last_header_s = time.monotonic()
                await self.request_headers()

    async def handle(self, message: Message) -> None:
        """One received message; bad input is counted, a detected fork is raised."""
        if message.channel == "header":
            try:
                update = read_update(message.payload)
            except HeaderRejected:
                self.stats["header_malformed"] += 1
                return
            await self._offer([update], message.sender, publisher=True)
        elif message.channel == "proof_resp":
            try:
                answer = parse_response(message.payload)
            except ProofError:
                self.stats["answer_malformed"] += 1
                return
            if isinstance(answer, HeadersAnswer):
                await self._offer(list(answer.updates), message.sender)
            elif (fut := self._waiting.get(answer.nonce_ms)) is not None and not fut.done():
                fut.set_result(answer)

    async def _offer(
        self, updates: list[HeaderUpdate], sender: str, *, publisher: bool = False
    ) -> None:
        """Verify updates; a verified ``header`` broadcast teaches who its sender is (the
        block's proposer: node id -> key, whom to ask for headers and proofs)."""
        for update in updates:
            try:
                accepted = self.light.offer(update)
            except HeaderRejected as exc:
                self.stats[f"header_rejected_{exc.reason}"] += 1
                continue
            except ForkDetected:
                self.stats["fork_detected"] += 1
                raise
            if accepted:
                self.stats["headers_verified"] += len(accepted)
                self._last_header_s = time.monotonic()
                if publisher:
                    self._learn(sender, update)
                self._advanced.set()
                self._advanced = asyncio.Event()
        if self.light.gap is not None:
            await self.request_headers(sender)

    def _learn(self, sender: str, update: HeaderUpdate) -> None:
        valset = self.light.validators(update.fields[5])
        proposer = update.fields[4]
        if isinstance(proposer, int) and valset is not None:
            proposer = sorted(valset)[proposer][0]
        if not isinstance(proposer, bytes):
            return
        self._keys[sender] = proposer
        if sender in self._heard:
            self._heard.remove(sender)
        self._heard.append(sender)

    # --------------------------------------------------------------- requests

    def _validator(self, prefer: str | None = None) -> tuple[str | None, bytes]:
        """(node id, public key) of a validator to ask; (None, b"") when none is known: a
        broadcast, and the nonce picks the validator that answers."""
        pool = [prefer] if prefer in self._keys else self._heard[-2:]
        if self._rr_skip in pool and len(pool) > 1:
            pool.remove(self._rr_skip)  # it left the last request unanswered
        if not pool:
            return None, b""
        node_id = pool[next(self._rr) % len(pool)]
        return node_id, self._keys[node_id]

    def _nonce(self) -> int:
        self._last_nonce = max(self._last_nonce + 1, int(time.time() * 1000))
        return self._last_nonce

    async def request_headers(self, to: str | None = None) -> None:
        """Ask a validator for the headers after the trusted tip."""
        node_id, target = self._validator(to)
        nonce = self._nonce()
        payload = make_headers_request(self.chain_id, self.light.height + 1, nonce, target)
        await self._publish("proof_req", payload, node_id)
        self.stats["headers_requested"] += 1

    async def wait_height(self, height: int, timeout_s: float, *, ask: bool = True) -> None:
        """Wait until a header of ``height`` is verified (asking for headers meanwhile, unless
        ``ask`` is False: then only the feed and the prober bring it).

        Raises:
            TimeoutError: not within ``timeout_s``.
        """
        async with asyncio.timeout(timeout_s):
            while self.light.height < height:
                event = self._advanced
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), 2.0)
                if self.light.height < height and ask:
                    await self.request_headers()

    async def ask(self, queries: list[tuple[str, bytes]], timeout_s: float) -> ProofResponse:
        """Send one signed proof request and return the validator's (unverified) answer.

        A request lost on the way (the validator not yet subscribed, a broker restart) is sent
        again, with a fresh nonce, every :data:`RESEND_S` until ``timeout_s``; the next one may
        go to another validator.

        Raises:
            TimeoutError: no answer within ``timeout_s``.
            ProofError: the request cannot be made (too many queries), or the answer is not to
                these queries (a validator may not swap in a proof of something else).
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[ProofResponse] = loop.create_future()
        nonces: list[int] = []
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    node_id, target = self._validator()
                    nonce = self._nonce()
                    nonces.append(nonce)
                    self._waiting[nonce] = fut
                    payload = make_proof_request(
                        self.key, self.chain_id, self.transport.node_id, nonce, queries, target
                    )
                    await self._publish("proof_req", payload, node_id)
                    done, _ = await asyncio.wait({fut}, timeout=RESEND_S)
                    if done:
                        break
                    self.stats["proof_resent"] += 1
                    self._rr_skip = node_id
        finally:
            for nonce in nonces:
                self._waiting.pop(nonce, None)
        self.stats["proof_answers"] += 1
        response = fut.result()
        if [(a.kind, a.arg) for a in response.answers] != [(k, bytes(a)) for k, a in queries]:
            self.stats["proof_answer_mismatch"] += 1
            raise ProofError("the validator's answer is not to the queries asked")
        return response

    async def prove(
        self, queries: list[tuple[str, bytes]], timeout_s: float = 30.0
    ) -> tuple[ProofResponse, list[Any]]:
        """Ask a validator for proofs and verify each against verified headers.

        Returns:
            The answer and per query the verified result: the value bytes of a ``key``, the
            height of the block holding a ``tx``, or the :class:`ProofError` of a refused or
            unverifiable one.

        Raises:
            TimeoutError: no answer (or no header to check it with) within ``timeout_s``.
        """
        answer = await self.ask(queries, timeout_s)
        if any(a.kind == "key" for a in answer.answers) and self.key_header(answer) is None:
            # Key proofs are against the state after block H: header H + 1 carries that app hash.
            await self.wait_height(answer.height + 1, timeout_s)
        return answer, [self.check(a, answer) for a in answer.answers]

    def key_header(self, answer: ProofResponse) -> TrustedHeader | None:
        """The verified header whose app hash the answer's key proofs can be checked with.

        Proofs are made against the state after block H (answer.height), the app hash of
        header H + 1. When block H left the state unchanged (an empty heartbeat block), that
        equals header H's app hash, so header H serves too: whichever verifies is a committed
        state. None while neither is verified (or the proofs match neither).
        """
        h = answer.height
        keyed = [a for a in answer.answers if a.kind == "key" and a.status == "ok"]
        for header in (self.light.header(h + 1), self.light.header(h)):
            if header is None:
                continue
            if not keyed or _verifies(keyed[0], header.app_hash):
                return header
        return None

    def check(self, answer: Answer, response: ProofResponse) -> Any:
        """The verified result of one query of ``response`` (see :meth:`prove`)."""
        try:
            if answer.kind == "tx":
                return verify_tx_answer(answer, self.light)
            if answer.kind == "list":
                return verify_list_answer(answer)
            header = self.key_header(response)
            if header is None:
                raise ProofError(f"header {response.height + 1} is pruned or unknown")
            return verify_key_answer(answer, header.app_hash)
        except ProofError as exc:
            return exc

    async def submit(self, raw: bytes) -> txm.Tx:
        """Broadcast a signed tx on channel ``tx`` (validators admit and commit it)."""
        tx = txm.decode(raw)
        await self._publish("tx", raw, None)
        return tx

    async def _publish(self, channel: str, payload: bytes, to: str | None) -> None:
        try:
            async with asyncio.timeout(5.0):
                await self.transport.publish(channel, payload, to=to)
        except (TransportError, TimeoutError):
            self.stats["publish_failed"] += 1

    def status(self) -> dict[str, Any]:
        """Height, hash, app hash, time of the newest verified header; role ``member``."""
        tip = self.light.latest
        return {
            "height": tip.height,
            "hash": tip.hash.hex(),
            "app_hash": tip.app_hash.hex(),
            "time_ms": tip.time_ms,
            "role": "member",
            "light": True,
            "stored_headers": self.light.stored_heights(),
            "light_stats": dict(self.stats),
        }


def _verifies(answer: Answer, app_hash: bytes) -> bool:
    try:
        verify_key_answer(answer, app_hash)
    except ProofError:
        return False
    return True
