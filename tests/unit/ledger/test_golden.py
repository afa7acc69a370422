"""Golden case: seed 000 Algorithm 1 as signed txs through blocks, ending in exact balances."""

from __future__ import annotations

from pathlib import Path

from ledger import state
from ledger.access import Queries
from tests.unit.ledger.helpers import (
    ADMIN,
    N1,
    N2,
    SLOT,
    T0,
    Signer,
    commit,
    measure,
    open_app,
    period,
)


def test_algorithm_1_balances(tmp_path: Path) -> None:
    """N1 imports 2.5 kWh, N2 exports 1.4 kWh: N1 −45.5, N2 +12.6, admin +9.8, grid 23.1 ECT."""
    app = open_app(tmp_path)
    admin, n1, n2 = Signer(ADMIN), Signer(N1), Signer(N2)
    commit(  # M0: the admin opens the period and lists both meters (Alg. 1 lines 1-2)
        app,
        [
            admin("SetMarketParameters", period("alg1", T0, T0 + SLOT)),
            admin("AddMeter", {"meter_id": "N1-meter", "account": N1.public_key}),
            admin("AddMeter", {"meter_id": "N2-meter", "account": N2.public_key}),
        ],
        T0,
    )
    commit(  # M15: both prosumers write their slot [00-14] (lines 3-6)
        app,
        [
            n1("SetMeasure", measure("N1-meter", T0, 2500, 0)),
            n2("SetMeasure", measure("N2-meter", T0, 0, 1400)),
        ],
        T0 + SLOT,
    )
    commit(app, [admin("SolveMarkets", {"period_id": "alg1"})], T0 + SLOT + 60_000)  # M16
    q = Queries(app.store)
    assert q.balance(ADMIN.public_key, N1.public_key.hex()) == -45_500_000
    assert q.balance(ADMIN.public_key, N2.public_key.hex()) == 12_600_000
    assert q.balance(ADMIN.public_key, state.COMMUNITY) == 9_800_000
    assert q.balance(ADMIN.public_key, state.GRID) == 23_100_000
    rec = q.periods()["alg1"]
    assert rec["solved"] is True  # marketsState := 1 (line 11)
    assert (rec["e_c_wh"], rec["e_p_wh"], rec["admin_uect"]) == (2500, 1400, 9_800_000)
    assert q.totals(N1.public_key, T0, T0 + SLOT) == [[T0, 2500, 1400, 2]]
