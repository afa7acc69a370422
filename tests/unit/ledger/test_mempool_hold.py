"""Mempool: txs ahead of their account's sequence are held, promoted, bounded and evicted;
the re-check after a commit never drops a tx that is still valid (ledger/mempool.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import tx as txm
from ledger.app import App
from ledger.errors import Reason, TxRejected
from ledger.mempool import Mempool
from tests.unit.ledger.helpers import ADMIN, N1, T0, VAL, Signer, commit, genesis, open_app


def _adds(signer: Signer, n: int, prefix: str = "M") -> list[bytes]:
    return [
        signer("AddMeter", {"meter_id": f"{prefix}{i}", "account": N1.public_key}) for i in range(n)
    ]


def _seqs(pool: Mempool) -> list[int]:
    return [txm.decode(r).sequence for r in pool.reap()]


def _commit_all(app: App, pool: Mempool, time_ms: int) -> list[bytes]:
    """Build a block from the whole pool as a proposer would, commit it, update the pool."""
    prepared = app.prepare(app.height + 1, time_ms, VAL.public_key, pool.reap(), None)
    app.commit_block(prepared.block_bytes, None)
    block = list(app.decode_block(prepared.block_bytes).txs)
    pool.update(block, prepared.dropped)
    return block


def test_out_of_order_arrival_is_held_then_committed_in_order(tmp_path: Path) -> None:
    """Gossip brings seq 3, 2, 1 before 0: they are held (not refused), all four become
    pending in sequence order when 0 arrives, and one block commits them in order."""
    app = open_app(tmp_path)
    pool = Mempool(app)
    txs = _adds(Signer(ADMIN), 4)
    result = pool.add_many([txs[3], txs[2], txs[1]])
    assert (len(result.held), result.admitted, result.rejected) == (3, [], [])
    assert len(pool) == 0
    assert pool.held_count == 3
    result = pool.add_many([txs[0]])
    assert [t.sequence for t in result.admitted] == [0, 1, 2, 3]
    assert pool.held_count == 0
    assert _seqs(pool) == [0, 1, 2, 3]
    block = _commit_all(app, pool, T0)
    assert block == txs
    assert len(pool) == 0
    assert app.sequence(ADMIN.public_key) == 4


def test_held_tx_is_promoted_when_a_block_fills_the_gap(tmp_path: Path) -> None:
    """The missing seq 0 reaches this node only inside a block: after the commit the held
    seq 1 becomes pending by itself."""
    app = open_app(tmp_path)
    pool = Mempool(app)
    first, second = _adds(Signer(ADMIN), 2)
    pool.add_many([second])
    commit(app, [first], T0)
    promoted = pool.update([first])
    assert [t.sequence for t in promoted] == [1]
    assert _seqs(pool) == [1]


def test_held_bounds_per_account(tmp_path: Path) -> None:
    """At most max_held_per_account txs of one account are held, and none further ahead of
    its next sequence than that; the rest are refused with future_sequence."""
    app = open_app(tmp_path)
    pool = Mempool(app, max_held=3, max_held_per_account=2)
    admin = _adds(Signer(ADMIN), 4)
    result = pool.add_many([admin[1], admin[2], admin[3]])
    assert len(result.held) == 2
    assert [e.reason for _, e in result.rejected] == [Reason.FUTURE_SEQUENCE]
    far = Signer(ADMIN)
    far.seq = 100  # far ahead of the account's next sequence
    assert [e.reason for _, e in pool.add_many(_adds(far, 1, "F")).rejected] == [
        Reason.FUTURE_SEQUENCE
    ]
    assert pool.held_count == 2


def test_held_tx_must_be_correctly_signed(tmp_path: Path) -> None:
    """A tx ahead of its sequence with a broken signature is refused, never held."""
    app = open_app(tmp_path)
    pool = Mempool(app)
    _, ahead = _adds(Signer(ADMIN), 2)
    forged = ahead[:-1] + bytes([ahead[-1] ^ 1])  # last signature byte flipped
    result = pool.add_many([forged])
    assert [e.reason for _, e in result.rejected] == [Reason.BAD_SIGNATURE]
    assert pool.held_count == 0


def test_global_bound_evicts_the_oldest(tmp_path: Path) -> None:
    """When max_held is reached a new held tx pushes out the oldest one."""
    app = open_app(tmp_path)
    pool = Mempool(app, max_held=2, max_held_per_account=8)
    admin = _adds(Signer(ADMIN), 4)
    pool.add_many([admin[1]])
    pool.add_many([admin[2]])
    pool.add_many([admin[3]])
    assert pool.held_count == 2
    assert pool.held_evicted == 1
    assert not pool.is_held(txm.decode(admin[1]).hash)
    assert pool.is_held(txm.decode(admin[3]).hash)


def test_a_held_tx_that_never_becomes_valid_is_evicted_by_age(tmp_path: Path) -> None:
    """A held tx whose gap is never filled leaves after held_max_age_s; a duplicate of a held
    tx is refused as a duplicate meanwhile."""
    now = [0.0]
    app = open_app(tmp_path)
    pool = Mempool(app, held_max_age_s=60.0, monotonic=lambda: now[0])
    _, ahead = _adds(Signer(ADMIN), 2)
    pool.add_many([ahead])
    with pytest.raises(TxRejected) as exc:
        pool.add(ahead, hold=True)
    assert exc.value.reason is Reason.DUPLICATE_TX
    now[0] = 59.0
    pool.add_many([])
    assert pool.held_count == 1
    now[0] = 61.0
    pool.add_many([])
    assert pool.held_count == 0
    assert pool.held_evicted == 1


def test_local_submission_refuses_a_gap(tmp_path: Path) -> None:
    """add() without hold (the node's own submitter) refuses a tx ahead of its sequence, so
    the submitter learns of its gap at once."""
    app = open_app(tmp_path)
    pool = Mempool(app)
    _, ahead = _adds(Signer(ADMIN), 2)
    with pytest.raises(TxRejected) as exc:
        pool.add(ahead)
    assert exc.value.reason is Reason.FUTURE_SEQUENCE
    assert pool.held_count == 0


def test_recheck_keeps_valid_txs_and_holds_those_behind_a_removed_one(tmp_path: Path) -> None:
    """Another node's block used our seq 0 with other content (meter DUP): our seq 0 is stale,
    our seq 1 (also adding DUP) now fails; only those two leave. Seqs 2..4 are still valid
    but behind the gap: held, not dropped, and a re-signed seq 1 brings them back."""
    app = open_app(tmp_path)
    pool = Mempool(app)
    ours = Signer(ADMIN)
    txs = [*_adds(ours, 1, "A"), *_adds(ours, 1, "DUP"), *_adds(ours, 3, "B")]
    for raw in txs:
        pool.add(raw)
    replaced = Signer(ADMIN)("AddMeter", {"meter_id": "DUP0", "account": N1.public_key})
    commit(app, [replaced], T0)
    pool.update([replaced])
    assert _seqs(pool) == []
    assert pool.held_count == 3
    refill = Signer(ADMIN, app=app)  # seq 1 again, other content
    pool.add(refill("AddMeter", {"meter_id": "C1", "account": N1.public_key}))
    assert _seqs(pool) == [1, 2, 3, 4]
    assert pool.held_count == 0


def test_update_touches_only_affected_accounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond the front window, a block re-checks only the accounts it touched: txs of other
    accounts are not re-admitted (their check counted through App.admission)."""
    import ledger.mempool as mp

    monkeypatch.setattr(mp, "RECHECK_LIMIT", 2)
    app = open_app(tmp_path)
    pool = Mempool(app)
    admin = _adds(Signer(ADMIN), 30)
    for raw in admin:
        pool.add(raw)
    checked: list[bytes] = []
    real = mp.Mempool._still_valid

    def spy(self: Mempool, batch: object, tx: txm.Tx) -> bool:
        checked.append(tx.raw)
        return real(self, batch, tx)  # type: ignore[arg-type]

    monkeypatch.setattr(mp.Mempool, "_still_valid", spy)
    commit(app, admin[:1], T0)
    pool.update(admin[:1])
    assert checked == admin[1:3]  # the window only
    assert _seqs(pool) == list(range(1, 30))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(order=st.permutations(list(range(6))), split=st.integers(0, 6))
def test_any_arrival_order_commits_everything_in_sequence(
    tmp_path_factory: pytest.TempPathFactory, order: list[int], split: int
) -> None:
    """Whatever order an account's txs arrive in, and however they are split across two
    gossip batches, all of them become pending in sequence order and commit."""
    app = open_app(tmp_path_factory.mktemp("m"))
    pool = Mempool(app)
    txs = _adds(Signer(ADMIN), 6)
    arrived = [txs[i] for i in order]
    pool.add_many(arrived[:split])
    pool.add_many(arrived[split:])
    assert _seqs(pool) == list(range(6))
    assert pool.held_count == 0
    assert _commit_all(app, pool, T0) == txs


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    arrivals=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3)), min_size=1, max_size=40),
    cuts=st.lists(st.integers(1, 8), min_size=1, max_size=10),
)
def test_two_pools_never_lose_a_valid_tx(
    tmp_path_factory: pytest.TempPathFactory,
    arrivals: list[tuple[int, int]],
    cuts: list[int],
) -> None:
    """Two nodes get three accounts' txs in different orders (ours in order, theirs shuffled
    by the arrival list) while blocks of various sizes built by the other node commit: each
    account's pending txs always start at its committed sequence and run without gaps, and in
    the end every tx is committed exactly once."""
    root = tmp_path_factory.mktemp("two")
    g = genesis(admins=(ADMIN.public_key, N1.public_key, VAL.public_key))
    apps = [open_app(root / "a", g), open_app(root / "b", g)]
    pools = [Mempool(a) for a in apps]
    signers = [Signer(k) for k in (ADMIN, N1, VAL)]
    txs = [
        [s("AddMeter", {"meter_id": f"{i}-{n}", "account": N1.public_key}) for n in range(6)]
        for i, s in enumerate(signers)
    ]
    late: list[bytes] = []
    for account, skip in arrivals:  # pool a in order; pool b gets some txs late
        if txs[account]:
            raw = txs[account].pop(0)
            pools[0].add_many([raw])
            (late if skip == 0 else []).append(raw)
            if skip:
                pools[1].add_many([raw])
    rest = [raw for chain in txs for raw in chain]
    pools[0].add_many(rest)
    pools[1].add_many(rest + late[::-1])
    everything = {txm.decode(r).hash for p in pools for r in p.reap()}
    for n in [*cuts, 50, 50]:
        prepared = apps[1].prepare(
            apps[1].height + 1, T0 + apps[1].height, VAL.public_key, pools[1].reap()[:n], None
        )
        for app, pool in zip(apps, pools, strict=True):
            app.commit_block(prepared.block_bytes, None)
            pool.update(list(apps[1].decode_block(prepared.block_bytes).txs), prepared.dropped)
            pending = [txm.decode(r) for r in pool.reap()]
            for signer in signers:
                mine = [t.sequence for t in pending if t.signer == signer.key.public_key]
                start = app.sequence(signer.key.public_key)
                assert mine == list(range(start, start + len(mine)))
    assert len(pools[0]) == 0
    assert len(pools[1]) == 0
    committed = sum(apps[0].sequence(s.key.public_key) for s in signers)
    assert committed == len(everything)


def test_forget_held_drops_only_that_accounts_held_txs(tmp_path: Path) -> None:
    """forget_held (the submitter re-signing from its committed sequence) removes the
    account's held txs and leaves pending ones and other accounts alone."""
    g = genesis(admins=(ADMIN.public_key, N1.public_key))
    app = open_app(tmp_path, g)
    pool = Mempool(app)
    ours, theirs = _adds(Signer(ADMIN), 3), _adds(Signer(N1), 2, "N")
    pool.add_many([ours[0], ours[2], theirs[1]])
    assert pool.held_count == 2
    assert pool.forget_held(ADMIN.public_key) == 1
    assert pool.held_count == 1
    assert _seqs(pool) == [0]
    assert pool.is_held(txm.decode(theirs[1]).hash)
