"""Deterministic execution of txs and blocks on a state overlay.

Spec: docs/spec/ledger.md §2, §4. Check order (the first failure is the reason reported):
size → envelope → chain id → kind → signature → body → sequence → kind rules. A tx executes in a
child overlay, so a failure leaves no trace; a block may hold only txs that execute, so a block
being validated runs on one overlay that a failure discards whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ledger import state
from ledger.errors import Reason, TxRejected
from ledger.registry import Context, TxKind, lookup
from ledger.tx import Tx, decode

Authenticated = tuple[Tx, TxKind[Any], Any]
"""A tx that passed the stateless checks: (decoded envelope, its kind's handler, its body)."""


def authenticate(chain_id: str, raw: bytes) -> Authenticated:
    """The stateless checks, in order: decode, chain id, kind, signature, body.

    Their result depends only on ``raw`` and ``chain_id``, so a node may keep it for the
    exact bytes and skip them when the same tx runs again (docs/spec/consensus.md §11).

    Raises:
        TxRejected: the first rule broken.
    """
    tx = decode(raw)
    if tx.chain_id != chain_id:
        raise TxRejected(Reason.WRONG_CHAIN, f"tx for chain {tx.chain_id!r}, this is {chain_id!r}")
    handler = lookup(tx.kind)
    tx.verify_signature()
    return tx, handler, handler.decode_body(tx.body)


def admit(
    ctx: Context,
    raw: bytes,
    expected_sequence: int | None = None,
    known: Mapping[bytes, Authenticated] | None = None,
) -> Authenticated:
    """Every check except applying: decode, authenticate and validate ``raw``.

    Args:
        ctx: execution context (``ctx.check_only`` for mempool admission).
        raw: envelope bytes.
        expected_sequence: the sequence the signer must use (mempool: committed + pending);
            default: the signer's next sequence in ``ctx.state``.
        known: :func:`authenticate` results of this chain kept by the exact envelope bytes;
            a tx found there skips the stateless checks (the stateful ones always run).

    Raises:
        TxRejected: the first rule broken.
    """
    hit = None if known is None else known.get(raw)
    if hit is not None and hit[0].chain_id != ctx.chain_id:
        hit = None  # kept for another chain: check afresh (and refuse as wrong_chain)
    tx, handler, body = authenticate(ctx.chain_id, raw) if hit is None else hit
    expected = (
        ctx.state.get_int(state.k_seq(tx.signer))
        if expected_sequence is None
        else expected_sequence
    )
    if tx.sequence < expected:
        raise TxRejected(Reason.STALE_SEQUENCE, f"sequence {tx.sequence}, next is {expected}")
    if tx.sequence > expected:
        raise TxRejected(Reason.FUTURE_SEQUENCE, f"sequence {tx.sequence}, next is {expected}")
    handler.validate(ctx, tx, body)
    return tx, handler, body


def execute_tx(ctx: Context, raw: bytes, known: Mapping[bytes, Authenticated] | None = None) -> Tx:
    """Admit and apply ``raw``; its writes land in ``ctx.state`` only if it succeeds.

    ``known``: as in :func:`admit`.

    Raises:
        TxRejected: the tx does not execute (``ctx.state`` unchanged).
    """
    child = ctx.state.child()
    tx = _admit_and_apply(ctx.with_state(child), raw, known)
    ctx.state.merge(child)
    return tx


def _admit_and_apply(ctx: Context, raw: bytes, known: Mapping[bytes, Authenticated] | None) -> Tx:
    """Admit ``raw`` and apply it to ``ctx.state`` directly (a failure may leave writes)."""
    tx, handler, body = admit(ctx, raw, None, known)
    handler.apply(ctx, tx, body)
    ctx.state.put_value(state.k_seq(tx.signer), tx.sequence + 1)
    return tx


def execute_block(
    ctx: Context, txs: Sequence[bytes], known: Mapping[bytes, Authenticated] | None = None
) -> list[Tx]:
    """Execute every tx in order (``known``: as in :func:`admit`).

    The txs run on ``ctx.state`` itself, without an overlay each: one failing tx makes the
    whole block invalid and the caller discards the block's overlay, so there is nothing to
    undo (the proposer's :func:`select_txs` drops single txs and keeps one overlay per tx).

    Raises:
        TxRejected: the first tx that fails, with its index in the message (``ctx.state``
            then holds a partial block: discard it).
    """
    done = []
    for index, raw in enumerate(txs):
        try:
            done.append(_admit_and_apply(ctx, raw, known))
        except TxRejected as exc:
            raise TxRejected(exc.reason, f"tx {index}: {exc.message}") from exc
    return done


def select_txs(
    ctx: Context, candidates: Sequence[bytes], known: Mapping[bytes, Authenticated] | None = None
) -> tuple[list[bytes], list[tuple[bytes, TxRejected]]]:
    """Proposer's filter: keep the candidates that execute in order (``known``: as in
    :func:`admit`).

    Returns:
        (kept txs, [(dropped tx, its rejection)]). Dropped txs whose reason is in
        ``TIME_REASONS`` may succeed in a later block; the mempool keeps those.
    """
    kept: list[bytes] = []
    dropped: list[tuple[bytes, TxRejected]] = []
    for raw in candidates:
        try:
            execute_tx(ctx, raw, known)
        except TxRejected as exc:
            dropped.append((raw, exc))
        else:
            kept.append(raw)
    return kept, dropped
