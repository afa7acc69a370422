"""The ancillary-service CDA as signed txs in real blocks (docs/spec/cda.md §5).

Real ed25519 signatures, a real LMDB store and the real state machine; consensus is replaced by
committing each prepared block directly, as a single validator would.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import state
from ledger import tx as txm
from ledger.app import App
from ledger.apps.cda import K_NEXT, k_book, k_shout, k_trade
from ledger.keys import SigningKey
from ledger.store import Store
from market.cda import Market, Mechanism, Pool, Shout
from market.decimals import format_decimal
from market.topology import Topology
from tests.unit.ledger.helpers import ADMIN, N1, N2, SLOT, T0, VAL, Signer, genesis

HOUR = 3_600_000
W = (T0 // HOUR + 2) * HOUR  # a service window two hours ahead
N3 = SigningKey(bytes([33]) * 32)
CHAIN_LINES = [["a", "b", 300], ["b", "c", 100], ["c", "d", 100]]


def acct(k: SigningKey) -> str:
    return state.account_id(k.public_key)


class Chain:
    """One node's app with a signer per key; each call commits one block."""

    def __init__(self, path: Path) -> None:
        self.app = App(Store(path, genesis(), durable=False))
        self.signers = {k.public_key: Signer(k) for k in (ADMIN, N1, N2, N3)}
        self.time_ms = T0

    def tx(self, k: SigningKey, kind: str, body: object) -> bytes:
        return self.signers[k.public_key](kind, body)

    def block(self, *txs: bytes, dt_ms: int = SLOT // 3) -> list[tuple[int, str]]:
        """Commit the txs that execute; returns (index, reason) of the dropped ones."""
        self.time_ms += dt_ms
        last = self.app.commit(self.app.height)
        prepared = self.app.prepare(
            self.app.height + 1, self.time_ms, VAL.public_key, list(txs), last
        )
        self.app.commit_block(prepared.block_bytes, [[VAL.public_key, b"\x00" * 64]])
        dropped = {raw: exc.reason.value for raw, exc in prepared.dropped}
        for raw in dropped:  # a dropped tx did not use its sequence number
            signer = txm.decode(raw).signer
            self.signers[signer].seq -= 1
        return [(i, dropped[raw]) for i, raw in enumerate(txs) if raw in dropped]

    def get(self, key: bytes) -> Any:
        with self.app.store.state_reader() as base:
            return state.Overlay(base).get_value(key)


def shout(side: str, wh: int, price: str, pool: str = "AS+", start: int = W) -> dict[str, object]:
    return {"window_start_ms": start, "side": side, "pool": pool, "quantity_wh": wh, "price": price}


def topology(**connections: str) -> dict[str, object]:
    return {"buses": ["a", "b", "c", "d"], "lines": CHAIN_LINES, "connections": connections}


@pytest.fixture
def chain(tmp_path: Path) -> Chain:
    c = Chain(tmp_path)
    conns = {acct(N1): "a", acct(N2): "b", acct(N3): "d"}
    cfg = {"mechanism": "ncda", "window_ms": HOUR, "max_resting": 16}
    assert (
        c.block(c.tx(ADMIN, "ConfigureCda", cfg), c.tx(ADMIN, "PublishTopology", topology(**conns)))
        == []
    )
    return c


def test_ncda_on_the_ledger_matches_nearest_and_records_trades(chain: Chain) -> None:
    """N3 (far, cheap) and N2 (near, dearer) offer; N1's ask at bus a takes N2 first."""
    assert (
        chain.block(
            chain.tx(N3, "PlaceShout", shout("offer", 1000, "0.20")),
            chain.tx(N2, "PlaceShout", shout("offer", 600, "0.30")),
            chain.tx(N1, "PlaceShout", shout("ask", 1000, "0.40")),
        )
        == []
    )
    t0, t1 = chain.get(k_trade(0)), chain.get(k_trade(1))
    assert t0[4:] == [acct(N1), acct(N2), 600, "0.35", 210_000]  # 0.6 kWh at 0.35 ECT/kWh
    assert t1[4:] == [acct(N1), acct(N3), 400, "0.3", 120_000]
    assert chain.get(k_trade(2)) is None
    book = chain.get(k_book(W, Pool.UP))
    assert [(row[1], row[-1]) for row in book["resting"]] == [(acct(N3), 600)]
    assert chain.get(K_NEXT) == [3, 2]


def test_cancel_by_owner_only_and_window_close(chain: Chain) -> None:
    """Only the BRP cancels its shout; once the window starts no shout or cancel is accepted."""
    place = chain.tx(N1, "PlaceShout", shout("ask", 500, "0.40"))
    assert chain.block(place) == []
    sid = txm.decode(place).hash.hex()
    assert chain.get(k_shout(sid)) == [W, "AS+"]
    assert chain.block(chain.tx(N2, "CancelShout", {"shout_id": sid})) == [(0, "not_permitted")]
    assert chain.block(chain.tx(N1, "CancelShout", {"shout_id": sid})) == []
    assert chain.get(k_shout(sid)) is None
    assert chain.get(k_book(W, Pool.UP))["resting"] == []
    assert chain.block(chain.tx(N1, "CancelShout", {"shout_id": sid})) == [(0, "unknown_order")]
    late = chain.tx(N1, "PlaceShout", shout("ask", 500, "0.40"))
    assert chain.block(late, dt_ms=W - chain.time_ms) == [(0, "window_closed")]


def test_shout_rules(chain: Chain) -> None:
    """Unconnected keys, unaligned windows and over-precise prices are refused by reason."""
    assert chain.block(chain.tx(ADMIN, "PlaceShout", shout("ask", 5, "0.4"))) == [
        (0, "not_permitted")
    ]
    assert chain.block(chain.tx(N1, "PlaceShout", shout("ask", 5, "0.4", start=W + 1))) == [
        (0, "bad_value")
    ]
    assert chain.block(chain.tx(N1, "PlaceShout", shout("ask", 5, "0.4000001"))) == [
        (0, "bad_value")
    ]
    assert chain.block(chain.tx(N1, "PlaceShout", shout("bid", 5, "0.4"))) == [(0, "malformed")]


def test_new_topology_matches_resting_shouts(chain: Chain) -> None:
    """Cutting line b-c islands N3's offer; reconnecting it lets the resting ask match at once."""
    cut = topology(**{acct(N1): "a", acct(N2): "b", acct(N3): "d"})
    cut["lines"] = CHAIN_LINES[:1] + CHAIN_LINES[2:]
    assert chain.block(chain.tx(ADMIN, "PublishTopology", cut)) == []
    assert (
        chain.block(
            chain.tx(N3, "PlaceShout", shout("offer", 100, "0.20")),
            chain.tx(N1, "PlaceShout", shout("ask", 100, "0.40")),
        )
        == []
    )
    assert chain.get(k_trade(0)) is None
    joined = topology(**{acct(N1): "a", acct(N2): "b", acct(N3): "d"})
    assert chain.block(chain.tx(ADMIN, "PublishTopology", joined)) == []
    assert chain.get(k_trade(0))[4:7] == [acct(N1), acct(N3), 100]


def test_ocda_ranking_is_operator_only_and_applied(chain: Chain) -> None:
    """RecordRanking: admin only, current topology version, then the book follows it."""
    cfg = {"mechanism": "ocda", "window_ms": HOUR, "max_resting": 16}
    assert chain.block(chain.tx(ADMIN, "ConfigureCda", cfg)) == []
    assert (
        chain.block(
            chain.tx(N2, "PlaceShout", shout("offer", 100, "0.20")),
            chain.tx(N3, "PlaceShout", shout("offer", 100, "0.30")),
            chain.tx(N1, "PlaceShout", shout("ask", 150, "0.40")),
        )
        == []
    )
    assert chain.get(k_trade(0)) is None  # OCDA waits for the operator's ranking
    version = chain.get(b"cda/topo")["version"]
    ranking = {
        "window_start_ms": W,
        "pool": "AS+",
        "topology_version": version,
        "entries": [["*", "d", 1, None], ["*", "b", 2, 30]],
    }
    assert chain.block(chain.tx(N1, "RecordRanking", ranking)) == [(0, "not_permitted")]
    stale = {**ranking, "topology_version": version - 1}
    assert chain.block(chain.tx(ADMIN, "RecordRanking", stale)) == [(0, "bad_value")]
    assert chain.block(chain.tx(ADMIN, "RecordRanking", ranking)) == []
    assert [chain.get(k_trade(i))[5:7] for i in (0, 1)] == [[acct(N3), 100], [acct(N2), 30]]


BRPS = {N1: "a", N2: "b", N3: "d"}
shout_draws = st.lists(
    st.tuples(
        st.sampled_from(sorted(BRPS, key=lambda k: k.public_key)),
        st.sampled_from(["ask", "offer"]),
        st.sampled_from(["AS+", "AS-"]),
        st.integers(1, 500),
        st.sampled_from(["0.3", "0.35", "0.4", "0.333333"]),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=8, deadline=None)
@given(draws=shout_draws, mechanism=st.sampled_from(["cda", "ncda"]))
def test_ledger_trades_equal_the_pure_engine(draws: list[Any], mechanism: str) -> None:
    """Shouts in one block give exactly the trades market.cda makes on the same sequence."""
    with tempfile.TemporaryDirectory() as tmp:
        c = Chain(Path(tmp))
        cfg = {"mechanism": mechanism, "window_ms": HOUR, "max_resting": 256}
        conns = {acct(k): bus for k, bus in BRPS.items()}
        assert (
            c.block(
                c.tx(ADMIN, "ConfigureCda", cfg), c.tx(ADMIN, "PublishTopology", topology(**conns))
            )
            == []
        )
        txs = [
            c.tx(k, "PlaceShout", shout(side, wh, price, pool))
            for k, side, pool, wh, price in draws
        ]
        assert c.block(*txs) == []
        ledger_trades = []
        seq = 0
        while (row := c.get(k_trade(seq))) is not None:
            ledger_trades.append(row)
            seq += 1
    topo = Topology.from_data(topology())
    market = Market(Mechanism(mechanism), topo)
    for ts, (raw, (k, side, pool, wh, price)) in enumerate(zip(txs, draws, strict=True)):
        body = {
            "shout_id": txm.decode(raw).hash.hex(),
            "brp": acct(k),
            "bus": BRPS[k],
            "side": side,
            "pool": pool,
            "quantity_wh": wh,
            "price": price,
            "window": W,
        }
        market.place(Shout.from_data(body, ts))
    expected = [
        [
            t.window,
            t.pool.value,
            t.ask_id,
            t.offer_id,
            t.asker,
            t.offeror,
            t.quantity_wh,
            format_decimal(t.price, 7),
            t.amount_uect,
        ]
        for t in market.trades
    ]
    assert ledger_trades == expected
