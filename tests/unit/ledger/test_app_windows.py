"""End to end on the ledger: market windows and forward schedules as signed txs in real blocks.

Real ed25519 signatures, a real LMDB store, the real state machine; only the consensus round is
replaced by committing each prepared block directly (as a single validator would).
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from ledger import state
from ledger import tx as txm
from ledger.app import App
from ledger.apps.schedules import k_day, k_result
from ledger.apps.windows import k_window
from ledger.errors import TxRejected
from ledger.genesis import Genesis, Period
from ledger.keys import SigningKey
from ledger.store import Store
from market.schedules import Asset, AssetKind, MemberDay, Prices, check_schedule, settle_day

CHAIN = "lem-windows"
HOUR = 3_600_000
SLOT = 900_000
DAY = 24 * HOUR
T0 = 1_790_035_200_000  # a UTC midnight [ms] (day 20718 since the epoch)
W = T0 + HOUR  # the market window under test opens here
AMM = {"p_buy_bau": "21", "p_sell_bau": "6", "p_buy_lem": "16", "p_sell_lem": "9", "beta": "0"}


def key(name: str) -> SigningKey:
    return SigningKey(name.encode().ljust(32, b"."))


ADMIN, VAL = key("admin"), key("validator")
# Seed 001 Table 2: five buyers, six sellers (kWh there, Wh here).
BUYS = {"A": (7, "25"), "B": (7, "23"), "C": (10, "18"), "D": (6, "16"), "E": (5, "14")}
SELLS = {
    "1": (10, "18"),
    "2": (7, "20"),
    "3": (8, "22"),
    "4": (3, "24"),
    "5": (4, "29"),
    "6": (3, "32"),
}
MEMBERS = {name: key(f"member-{name}") for name in [*BUYS, *SELLS]}


def acct(name: str) -> str:
    return state.account_id(MEMBERS[name].public_key)


class Chain:
    """One node's app with a signer per key (sequence numbers tracked)."""

    def __init__(self, path: Path) -> None:
        g = Genesis(
            chain_id=CHAIN,
            genesis_time_ms=T0 - DAY,
            validators=((VAL.public_key, 1),),
            admins=(ADMIN.public_key,),
            governance_keys=(ADMIN.public_key,),
            governance_threshold=1,
            meters={f"m-{n}": k.public_key for n, k in MEMBERS.items()},
            periods=(Period("p0", T0, T0 + HOUR, AMM),),
        )
        self.app = App(Store(path, g, durable=False))
        self.seq: dict[bytes, int] = {}

    def tx(self, signer: SigningKey, kind: str, body: object) -> bytes:
        seq = self.seq.get(signer.public_key, 0)
        self.seq[signer.public_key] = seq + 1
        return txm.make(signer, CHAIN, seq, kind, body)

    def dropped(self, raws: list[bytes], time_ms: int) -> list[str]:
        """Reasons the proposer would drop each tx for (nothing is committed)."""
        prepared = self.app.prepare(self.app.height + 1, time_ms, VAL.public_key, raws, None)
        for raw in raws:  # give the sequence numbers back: these txs never land
            signer = txm.decode(raw).signer
            self.seq[signer] -= 1
        return [exc.reason.value for _, exc in prepared.dropped]

    def commit(self, raws: list[bytes], time_ms: int) -> None:
        prepared = self.app.prepare(self.app.height + 1, time_ms, VAL.public_key, raws, None)
        assert prepared.dropped == [], [(e.reason, e.message) for _, e in prepared.dropped]
        self.app.commit_block(prepared.block_bytes, [[VAL.public_key, b"\x00" * 64]])

    def get(self, k: bytes) -> Any:
        with self.app.store.state_reader() as base:
            return state.Overlay(base).get_value(k)

    def balances(self) -> dict[str, int]:
        with self.app.store.state_reader() as base:
            st = state.Overlay(base)
            return {k[4:].decode(): int(st.get_value(k)) for k, _ in st.scan(b"bal/", b"bal0")}


def measure(meter: str, slot_ms: int, import_wh: int, export_wh: int) -> dict[str, object]:
    return {
        "meter_id": meter,
        "slot_start_ms": slot_ms,
        "import_wh": import_wh,
        "export_wh": export_wh,
        "quality": 0,
    }


def request(side: str, kwh: int, price: str) -> dict[str, object]:
    return {"window_start_ms": W, "side": side, "energy_wh": kwh * 1000, "price": price}


@pytest.fixture
def funded(tmp_path: Path) -> Iterator[Chain]:
    """Windows configured; A earned 300 ECT and B 120 ECT by exporting in AMM period p0."""
    chain = Chain(tmp_path)
    chain.commit([chain.tx(ADMIN, "ConfigureWindows", {"length_ms": HOUR, "tolerance": "0"})], T0)
    chain.commit(
        [
            # Exports only: the AMM selling price is p_sell_bau = 6 ECT/kWh.
            chain.tx(MEMBERS["A"], "SetMeasure", measure("m-A", T0, 0, 50_000)),
            chain.tx(MEMBERS["B"], "SetMeasure", measure("m-B", T0, 0, 20_000)),
        ],
        T0 + SLOT,
    )
    chain.commit([chain.tx(ADMIN, "SolveMarkets", {"period_id": "p0"})], W)
    assert chain.balances()[acct("A")] == 300_000_000
    assert chain.balances()[acct("B")] == 120_000_000
    yield chain
    chain.app.store.close()


def place_table_2(chain: Chain) -> None:
    raws = [chain.tx(MEMBERS[n], "PlaceRequest", request("buy", *BUYS[n])) for n in BUYS]
    raws += [chain.tx(MEMBERS[n], "PlaceRequest", request("sell", *SELLS[n])) for n in SELLS]
    chain.commit(raws, W + 10_000)


def deliver(chain: Chain, export_1_wh: int) -> list[bytes]:
    """SetMeasure txs for the delivery hour: sellers 1, 2 export, buyers A, B import (4 slots)."""
    per_slot = {"1": (0, export_1_wh // 4), "2": (0, 1_750), "A": (1_750, 0), "B": (1_750, 0)}
    return [
        chain.tx(MEMBERS[n], "SetMeasure", measure(f"m-{n}", W + HOUR + i * SLOT, imp, exp))
        for n, (imp, exp) in per_slot.items()
        for i in range(4)
    ]


def test_window_cleared_and_validated_by_the_state_machine(funded: Chain) -> None:
    """Table 2 as signed requests clears at 20; B's 120 ECT pays 60 then not 80; tokens move."""
    chain = funded
    place_table_2(chain)
    ref = {"window_start_ms": W}
    assert chain.dropped([chain.tx(ADMIN, "ClearWindow", ref)], W + HOUR - 1) == [
        "period_not_ended"
    ]
    chain.commit([chain.tx(VAL, "ClearWindow", ref)], W + HOUR + 1_000)
    rec = chain.get(k_window(W))
    assert (rec["status"], rec["price"], rec["quantity_wh"]) == ("in_progress", "20", 14_000)
    assert rec["trades"] == [
        [acct("A"), acct("1"), 7_000, 140_000_000],
        [acct("B"), acct("1"), 3_000, 60_000_000],
        [acct("B"), acct("2"), 4_000, 80_000_000],
    ]
    before = chain.balances()
    assert chain.dropped([chain.tx(ADMIN, "ValidateWindow", ref)], W + 2 * HOUR - 1) == [
        "period_not_ended"
    ]
    # Measurements of the delivery hour and the validation in one block, in that order.
    chain.commit([*deliver(chain, 10_000), chain.tx(ADMIN, "ValidateWindow", ref)], W + 2 * HOUR)
    rec = chain.get(k_window(W))
    assert rec["status"] == "validated"
    assert rec["outcomes"] == [
        ["accepted", None],
        ["accepted", None],
        ["rejected", "insufficient_balance"],
    ]
    after = chain.balances()
    assert after[acct("A")] - before[acct("A")] == -140_000_000
    assert after[acct("B")] - before[acct("B")] == -60_000_000
    assert after[acct("1")] - before.get(acct("1"), 0) == 200_000_000
    assert after.get(acct("2"), 0) == before.get(acct("2"), 0)
    assert sum(after.values()) == 0
    assert chain.dropped([chain.tx(ADMIN, "ValidateWindow", ref)], W + 3 * HOUR) == [
        "already_solved"
    ]


def test_request_rejections_carry_reasons(funded: Chain) -> None:
    """Second, non-prosumer, late, early, zero and negative requests are refused by reason."""
    chain = funded
    place_table_2(chain)
    a, six = MEMBERS["A"], MEMBERS["6"]
    again = request("buy", 1, "30")
    assert chain.dropped([chain.tx(a, "PlaceRequest", again)], W + 20_000) == ["duplicate_request"]
    with pytest.raises(TxRejected) as info:  # a state rule: the mempool refuses it too
        chain.app.check_tx(chain.tx(a, "PlaceRequest", again))
    assert info.value.reason.value == "duplicate_request"
    chain.seq[a.public_key] -= 1
    assert chain.dropped([chain.tx(ADMIN, "PlaceRequest", again)], W + 20_000) == ["not_permitted"]
    chain.commit([chain.tx(ADMIN, "ClearWindow", {"window_start_ms": W})], W + HOUR)
    late = request("sell", 1, "5")
    assert chain.dropped([chain.tx(six, "PlaceRequest", late)], W + HOUR + 1) == ["window_closed"]
    nxt = W + HOUR  # seller 6 may place in the next window, but only a sane request
    zero = {**late, "window_start_ms": nxt, "energy_wh": 0}
    negative = {**late, "window_start_ms": nxt, "price": "-3"}
    early = {**late, "window_start_ms": nxt + HOUR}
    for body, reason in ((zero, "bad_value"), (negative, "bad_value"), (early, "window_not_open")):
        assert chain.dropped([chain.tx(six, "PlaceRequest", body)], nxt + 1) == [reason]
    chain.commit([chain.tx(six, "PlaceRequest", {**late, "window_start_ms": nxt})], nxt + 1)
    assert chain.get(k_window(nxt))["requests"] == 1


def test_validation_clears_itself_and_rejects_a_short_seller(funded: Chain) -> None:
    """ValidateWindow clears an uncleared window; seller 1 delivering 8 kWh loses B's 3 kWh."""
    chain = funded
    place_table_2(chain)
    ref = {"window_start_ms": W}
    chain.commit([*deliver(chain, 8_000), chain.tx(VAL, "ValidateWindow", ref)], W + 2 * HOUR)
    rec = chain.get(k_window(W))
    assert rec["price"] == "20"
    assert rec["outcomes"] == [
        ["accepted", None],
        ["rejected", "seller_export_short"],
        ["accepted", None],
    ]
    assert chain.balances()[acct("B")] == 120_000_000 - 80_000_000


# ----------------------------------------------------------------------------- schedules

D = T0 + DAY  # delivery day
PRICES = {
    "forward": "0.20",
    "imbalance_short": "0.30",
    "imbalance_long": "0.10",
    "grid_buy": "0.25",
    "grid_sell": "0.08",
}


def test_schedules_submitted_checked_and_settled_on_the_ledger(tmp_path: Path) -> None:
    """Asset rules and the gate refuse bad schedules; settlement posts what the engine computes."""
    chain = Chain(tmp_path)
    house, pv = MEMBERS["A"], MEMBERS["1"]
    sup = key("supervisor")
    chain.commit(
        [
            chain.tx(ADMIN, "SetAsset", asset("m-A", "load", 8_000, 0)),
            chain.tx(ADMIN, "SetAsset", asset("m-1", "generation", 0, 4_000)),
            chain.tx(
                ADMIN,
                "SetScheduleDay",
                {
                    "day_start_ms": D,
                    "prices": PRICES,
                    "gate_closure_ms": HOUR,
                    "supervisor": sup.public_key,
                },
            ),
        ],
        T0,
    )
    house_plan = [500 if 28 <= i < 32 else 0 for i in range(96)]
    pv_plan = [-1_000 if 48 <= i < 52 else 0 for i in range(96)]
    bad = [-1 if i == 5 else 0 for i in range(96)]
    assert chain.dropped([chain.tx(house, "SubmitSchedule", plan(bad, "m-A"))], T0 + 1) == [
        "schedule_refused"
    ]
    assert chain.dropped([chain.tx(pv, "SubmitSchedule", plan(pv_plan, "m-A"))], T0 + 1) == [
        "not_meter_owner"
    ]
    assert chain.dropped(
        [chain.tx(MEMBERS["B"], "SubmitSchedule", plan(pv_plan, "m-B"))], T0 + 1
    ) == ["no_asset"]
    chain.commit(
        [
            chain.tx(house, "SubmitSchedule", plan(house_plan, "m-A")),
            chain.tx(pv, "SubmitSchedule", plan(pv_plan, "m-1")),
        ],
        T0 + 2,
    )
    assert chain.dropped(
        [chain.tx(house, "SubmitSchedule", plan(house_plan, "m-A"))], D - HOUR
    ) == ["gate_closed"]
    metered = {
        "m-A": {28: (600, 0), 29: (300, 0), 40: (100, 0)},
        "m-1": {48: (0, 900), 49: (0, 1_200)},
    }
    owners = {"m-A": house, "m-1": pv}
    measures = [
        chain.tx(owners[m], "SetMeasure", measure(m, D + slot * SLOT, imp, exp))
        for m, slots in metered.items()
        for slot, (imp, exp) in slots.items()
    ]
    chain.commit(measures, D + DAY - 2)
    settle = chain.tx(VAL, "SettleSchedules", {"day_start_ms": D})
    assert chain.dropped([settle], D + DAY - 1) == ["period_not_ended"]
    chain.commit([chain.tx(VAL, "SettleSchedules", {"day_start_ms": D})], D + DAY)

    # The same day computed by the pure engine, independently of the ledger's state walk.
    def series(m: str, col: int) -> tuple[int, ...]:
        return tuple(metered[m].get(i, (0, 0))[col] for i in range(96))

    days = [
        MemberDay("m-A", tuple(house_plan), series("m-A", 0), series("m-A", 1)),
        MemberDay("m-1", tuple(pv_plan), series("m-1", 0), series("m-1", 1)),
    ]
    check_schedule("m-A", Asset(AssetKind.LOAD, 8_000, 0), house_plan)
    expected = settle_day(days, Prices(*(Fraction(PRICES[n]) for n in PRICES)))
    balances = chain.balances()
    assert balances[acct("A")] == expected.members[0].posting_uect
    assert balances[acct("1")] == expected.members[1].posting_uect
    assert balances[state.account_id(sup.public_key)] == expected.supervisor_uect
    assert balances[state.GRID] == expected.grid_uect
    assert sum(balances.values()) == 0
    # house: forward 2000 Wh × 0.20 = 400000; short 100 + 100 Wh (slots 28, 40) × 0.30 = 60000;
    # long 200 + 500 + 500 Wh (slots 29–31) × 0.10 = 120000 back.
    assert expected.members[0].posting_uect == -(400_000 + 60_000 - 120_000)
    assert chain.get(k_result(D, "m-A"))[4:] == [400_000, -60_000]
    assert chain.get(k_day(D))["settled"] is True


def asset(meter: str, kind: str, imp_w: int, exp_w: int) -> dict[str, object]:
    return {"meter_id": meter, "kind": kind, "import_capacity_w": imp_w, "export_capacity_w": exp_w}


def plan(schedule: list[int], meter: str) -> dict[str, object]:
    return {"day_start_ms": D, "meter_id": meter, "schedule_wh": schedule}
