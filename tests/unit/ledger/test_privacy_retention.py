"""Retention: PruneMeasurements, the kept commitments and record proofs (docs/spec/privacy.md
§3-4), on a real App over LMDB."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec, merkle, privacy, registry, state
from ledger import tx as txm
from ledger.access import Queries
from ledger.app import App
from ledger.errors import TIME_REASONS, AccessDenied, Reason, TxRejected
from ledger.registry import Context
from ledger.store import Store
from ledger.verify import verify_store
from tests.unit.ledger.helpers import (
    ADMIN,
    CHAIN,
    N1,
    N2,
    OUTSIDER,
    SLOT,
    VAL,
    Signer,
    commit,
    genesis,
    measure,
    period,
)
from tests.unit.ledger.helpers import T0 as _HELPER_T0

T0 = (_HELPER_T0 // privacy.DAY_MS + 1) * privacy.DAY_MS - 2 * SLOT
"""Two slots before a UTC midnight: the period p = [T0, T0 + 4 slots) is two day chunks."""
MIDNIGHT = T0 + 2 * SLOT

SECRET = bytes(range(32))
P1, P3, P2 = (
    privacy.pseudonym(privacy.member_key(SECRET, CHAIN, bytes([i]) * 16), f"SER{i}")
    for i in (1, 3, 2)
)
WINDOW_MS = 2 * SLOT
SOLVED_AT = T0 + 5 * SLOT
A1, A2 = N1.public_key.hex(), N2.public_key.hex()


class Community:
    """N1 owns P1 and P3, N2 owns P2; period p = [T0, T0 + 4 slots), across a UTC midnight,
    measured and solved."""

    def __init__(self, path: Path) -> None:
        g = genesis(
            privacy="pseudonymous",
            dispute_window_ms=WINDOW_MS,
            meters={P1: N1.public_key, P3: N1.public_key, P2: N2.public_key},
        )
        self.app = App(Store(path, g, durable=False))
        self.admin, self.n1, self.n2 = Signer(ADMIN), Signer(N1), Signer(N2)
        self.kept: list[privacy.Record] = []  # what N1's node kept of its own submissions
        commit(self.app, [self.admin("SetMarketParameters", period("p", T0, T0 + 4 * SLOT))], T0)
        for i in range(5):  # slot T0 + 4 slots lies outside the period: never pruned
            slot = T0 + i * SLOT
            rows = [(self.n1, P1, 100 + i, 0), (self.n1, P3, 7, 3 * i), (self.n2, P2, 0, 50 + i)]
            txs = []
            for signer, meter, imp, exp in rows:
                txs.append(signer("SetMeasure", measure(meter, slot, imp, exp)))
                if signer is self.n1:
                    self.kept.append(privacy.Record(slot, meter, imp, exp, 0))
            extra = [self.admin("SolveMarkets", {"period_id": "p"})] if i == 4 else []
            commit(self.app, txs + extra, slot + SLOT)
        self.kept = [r for r in self.kept if r.slot_start_ms < T0 + 4 * SLOT]

    def prune_tx(self, signer: Signer, period_id: str = "p") -> bytes:
        return signer("PruneMeasurements", {"period_id": period_id})

    def try_prune(self, time_ms: int, period_id: str = "p") -> str:
        """Reason the prune would fail at ``time_ms`` ('ok' if it executes); nothing commits."""
        raw = txm.make(
            N2,
            CHAIN,
            self.app.sequence(N2.public_key),
            "PruneMeasurements",
            {"period_id": period_id},
        )
        prepared = self.app.prepare(self.app.height + 1, time_ms, VAL.public_key, [raw], None)
        return "ok" if not prepared.dropped else prepared.dropped[0][1].reason.value


@pytest.fixture
def c(tmp_path: Path) -> Community:
    return Community(tmp_path)


def _meas_keys(app: App, lo: int, hi: int) -> list[bytes]:
    with app.store.state_reader() as base:
        return [k for k, _ in base.scan(state.k_measure(lo, ""), state.k_measure(hi, ""))]


def test_prune_waits_for_the_dispute_window(c: Community) -> None:
    """Before solved_ms + dispute_window_ms the prune fails with a time reason (the mempool
    keeps it); mempool admission ignores the time rule; at the due time it executes."""
    rec = Queries(c.app.store).periods()["p"]
    assert rec["solved_ms"] == SOLVED_AT
    assert c.try_prune(SOLVED_AT + WINDOW_MS - 1) == "dispute_window_open"
    assert Reason.DISPUTE_WINDOW_OPEN in TIME_REASONS
    c.app.check_tx(
        txm.make(N2, CHAIN, c.app.sequence(N2.public_key), "PruneMeasurements", {"period_id": "p"})
    )
    assert c.try_prune(SOLVED_AT + WINDOW_MS) == "ok"


def test_prune_removes_raw_rows_and_keeps_totals_and_commitments(c: Community) -> None:
    """Pruning goes one UTC day per tx: after the first only that day's meas/ rows are gone;
    after the second none of the period (the row outside stays); tot/ per slot and balances are
    unchanged; ptot/ holds each account's period sums, proot/ each account's day root, and
    pruned/ the period root over all of them."""
    q = Queries(c.app.store)
    totals_before = q.totals(ADMIN.public_key, T0, T0 + 5 * SLOT)
    balances_before = [q.balance(ADMIN.public_key, a) for a in (A1, A2, "community", "grid")]
    assert len(_meas_keys(c.app, T0, T0 + 4 * SLOT)) == 12
    commit(c.app, [c.prune_tx(c.n2)], SOLVED_AT + WINDOW_MS)
    assert _meas_keys(c.app, T0, MIDNIGHT) == []
    assert len(_meas_keys(c.app, MIDNIGHT, T0 + 5 * SLOT)) == 9
    progress = q.pruned(N1.public_key, "p")
    assert progress is not None
    assert (progress["next_ms"], progress["done"], progress["root"]) == (MIDNIGHT, False, None)
    commit(c.app, [c.prune_tx(c.n2)], SOLVED_AT + WINDOW_MS + 1)
    assert _meas_keys(c.app, T0, T0 + 4 * SLOT) == []
    assert len(_meas_keys(c.app, T0 + 4 * SLOT, T0 + 5 * SLOT)) == 3
    assert q.totals(ADMIN.public_key, T0, T0 + 5 * SLOT) == totals_before
    assert [q.balance(ADMIN.public_key, a) for a in (A1, A2, "community", "grid")] == (
        balances_before
    )
    assert q.period_total(ADMIN.public_key, "p", A1) == [
        100 + 101 + 102 + 103 + 4 * 7,
        3 * (0 + 1 + 2 + 3),
        8,
    ]
    assert q.period_total(ADMIN.public_key, "p", A2) == [0, 50 + 51 + 52 + 53, 4]
    entries = []
    for day in (T0 - T0 % privacy.DAY_MS, MIDNIGHT):
        mine = [r for r in c.kept if privacy.day_of(r.slot_start_ms) == day]
        with c.app.store.state_reader() as base:
            st = state.Overlay(base)
            imp, exp, n, root = st.get_value(privacy.k_day_root("p", day, A1))
            other = st.get_value(privacy.k_day_root("p", day, A2))
        assert (imp, exp, n, root) == (
            sum(r.import_wh for r in mine),
            sum(r.export_wh for r in mine),
            4,
            privacy.member_root(mine),
        )
        entries += [(day, A1, root, 4), (day, A2, other[3], 2)]
    done = q.pruned(N1.public_key, "p")
    assert done is not None
    assert (done["records"], done["done"], done["next_ms"]) == (12, True, T0 + 4 * SLOT)
    assert done["root"] == privacy.period_root(entries)
    assert q.measurements(N1.public_key, P1, T0, T0 + 4 * SLOT) == []


def test_one_chunk_per_block_the_rest_waits(c: Community) -> None:
    """Two prunes of the same period offered to one block (two nodes submitted): one chunk
    executes, the other is left out with a time reason (kept by the mempool) and executes as
    the next chunk in the next block."""
    first, second = c.prune_tx(c.n1), c.prune_tx(c.n2)
    prepared = c.app.prepare(
        c.app.height + 1, SOLVED_AT + WINDOW_MS, VAL.public_key, [first, second], None
    )
    assert [e.reason for _, e in prepared.dropped] == [Reason.PRUNE_NEXT_BLOCK]
    assert Reason.PRUNE_NEXT_BLOCK in TIME_REASONS
    commit(c.app, [first], SOLVED_AT + WINDOW_MS)
    commit(c.app, [second], SOLVED_AT + WINDOW_MS + 1)
    done = Queries(c.app.store).pruned(ADMIN.public_key, "p")
    assert done is not None
    assert done["done"] is True


def _prune_all(c: Community, time_ms: int) -> None:
    """Both day chunks of p, one block each."""
    commit(c.app, [c.prune_tx(c.n2)], time_ms)
    commit(c.app, [c.prune_tx(c.n2)], time_ms + 1)


def test_prune_refusals(c: Community) -> None:
    """Unknown, unsolved and already pruned periods are refused with their reasons; an
    outsider may not prune."""
    commit(
        c.app,
        [c.admin("SetMarketParameters", period("q", T0 + 8 * SLOT, T0 + 9 * SLOT))],
        SOLVED_AT + 1,
    )
    late = SOLVED_AT + 10 * WINDOW_MS
    assert c.try_prune(late, "nope") == "unknown_period"
    assert c.try_prune(late, "q") == "period_not_solved"
    assert c.try_prune(late) == "ok"
    _prune_all(c, late)
    assert c.try_prune(late + 2) == "already_pruned"
    out = txm.make(OUTSIDER, CHAIN, 0, "PruneMeasurements", {"period_id": "p"})
    prepared = c.app.prepare(c.app.height + 1, late + 3, VAL.public_key, [out], None)
    assert prepared.dropped[0][1].reason is Reason.NOT_PERMITTED


def test_replay_reaches_the_pruned_state(c: Community) -> None:
    """A node that replays the chain from genesis (a late joiner, lemctl ledger verify) reaches
    the same app hash at every height, the pruned state included."""
    _prune_all(c, SOLVED_AT + WINDOW_MS)
    report = verify_store(c.app.store)
    assert report.ok, report.problems
    assert report.verified_height == c.app.height == 8


def test_member_proves_a_kept_record_against_the_app_hash(c: Community) -> None:
    """A member with its own kept records proves one of them: record → its day's member root
    → proot/ entry → app hash, with an inclusion proof it may ask for; a changed value fails."""
    _prune_all(c, SOLVED_AT + WINDOW_MS)
    q = Queries(c.app.store)
    kept = c.kept[5]
    assert kept.slot_start_ms >= MIDNIGHT  # the second day chunk
    proof = privacy.prove_record("p", A1, c.kept, kept)
    assert proof.size == 4  # only that day's own records take part
    state_proof = q.prove(N1.public_key, proof.state_key)
    assert state_proof is not None
    assert privacy.verify_record_in_state(proof, state_proof, c.app.app_hash)
    back = privacy.RecordProof.from_json(proof.to_json())
    assert privacy.verify_record_in_state(back, state_proof, c.app.app_hash)
    forged = privacy.RecordProof.from_json(
        {**proof.to_json(), "record": {**kept.to_json(), "import_wh": kept.import_wh + 1}}
    )
    assert not privacy.verify_record_in_state(forged, state_proof, c.app.app_hash)
    assert not privacy.verify_record_in_state(proof, state_proof, b"\x00" * 32)


def test_pruned_commitments_follow_fig4(c: Community) -> None:
    """A prosumer reads and proves its own period totals and day roots and the period
    commitment, never another member's; an anonymous viewer reads neither."""
    _prune_all(c, SOLVED_AT + WINDOW_MS)
    q = Queries(c.app.store)
    assert q.period_total(N1.public_key, "p", A1) is not None
    assert q.prove(N1.public_key, privacy.k_day_root("p", MIDNIGHT, A1)) is not None
    with pytest.raises(AccessDenied):
        q.period_total(N1.public_key, "p", A2)
    for key in (privacy.k_period_total("p", A2), privacy.k_day_root("p", MIDNIGHT, A2)):
        with pytest.raises(AccessDenied):
            q.prove(N1.public_key, key)
    assert q.prove(N1.public_key, privacy.k_pruned("p")) is not None
    with pytest.raises(AccessDenied):
        q.pruned(None, "p")


@pytest.mark.parametrize(
    ("prefix", "record", "blocked"),
    [
        (b"win/", {"length_ms": 3_600_000, "status": "cleared"}, True),
        (b"win/", {"length_ms": 3_600_000, "status": "validated"}, False),
        (b"sday/", {"settled": False}, True),
        (b"sday/", {"settled": True}, False),
    ],
)
def test_unsettled_window_or_schedule_day_blocks_pruning(
    c: Community, prefix: bytes, record: dict[str, object], blocked: bool
) -> None:
    """Windows and schedule days settle from meas/ rows too: an unsettled one overlapping the
    period blocks its pruning (prune_blocked), a settled one does not."""
    with c.app.store.state_reader() as base:
        st = state.Overlay(base)
        st.put_value(prefix + state.slot_key(T0).encode(), record)
        kind = registry.lookup("PruneMeasurements")
        tx = txm.decode(c.prune_tx(c.n2))
        ctx = Context(st, CHAIN, c.app.height + 1, SOLVED_AT + WINDOW_MS)
        body = kind.decode_body(tx.body)
        if blocked:
            with pytest.raises(TxRejected, match="prune_blocked"):
                kind.validate(ctx, tx, body)
        else:
            kind.validate(ctx, tx, body)


@settings(max_examples=30, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 500), st.integers(0, 10**6), st.integers(0, 10**6)),
        min_size=1,
        max_size=40,
        unique_by=lambda r: r[0],
    ),
    pick=st.integers(0, 39),
)
def test_every_kept_record_proves_and_no_altered_one_does(
    rows: list[tuple[int, int, int]], pick: int
) -> None:
    """For any set of kept records (over several days) each one's proof verifies against the
    root of its day's records, and the same proof with any field changed does not."""
    records = [privacy.Record(T0 + s * SLOT, P1, i, e, 0) for s, i, e in rows]
    chosen = records[pick % len(records)]
    day = privacy.day_of(chosen.slot_start_ms)
    root = privacy.member_root(r for r in records if privacy.day_of(r.slot_start_ms) == day)
    proof = privacy.prove_record("p", A1, records, chosen)
    assert proof.member_root == root
    assert privacy.verify_record(proof)
    for change in ({"import_wh": chosen.import_wh + 1}, {"meter_id": P2}, {"quality": 1}):
        altered = privacy.Record.from_json({**chosen.to_json(), **change})
        bad = privacy.RecordProof(*(proof.period_id, proof.account, altered), *proof_tail(proof))
        assert not privacy.verify_record(bad)


@settings(max_examples=50, deadline=None)
@given(
    slot=st.integers(0, (1 << 64) - 1),
    meter=st.text(min_size=1, max_size=64),
    values=st.tuples(*(st.integers(0, (1 << 64) - 1) for _ in range(3))),
)
def test_record_digest_hashes_the_canonical_encoding(
    slot: int, meter: str, values: tuple[int, int, int]
) -> None:
    """The fast record encoding is byte-equal to the canonical codec's for every record."""
    rec = privacy.Record(slot, meter, *values)
    expected = hashlib.sha256(b"lem/1/record\x00" + codec.encode(rec.to_value())).digest()
    assert privacy.record_digest(rec) == expected


def proof_tail(p: privacy.RecordProof) -> tuple[int, int, tuple[bytes, ...], bytes]:
    return p.index, p.size, p.path, p.member_root


def test_state_proof_of_another_key_is_refused() -> None:
    """A state proof of some other key cannot vouch for a record."""
    rec = privacy.Record(T0, P1, 1, 2, 0)
    proof = privacy.prove_record("p", A1, [rec], rec)
    value = codec.encode([1, 2, 1, proof.member_root])
    fake = merkle.Proof(
        privacy.k_day_root("p", T0, A2), value, ((0, ()),), (b"\x00" * 32,) * merkle.TOP_PATH_HASHES
    )
    assert not privacy.verify_record_in_state(proof, fake, b"\x00" * 32)
