"""PowerChain on the ledger: the thesis's chapter 6 scenario as signed txs in real blocks.

Real ed25519 signatures, a real LMDB store (temp dir), the real state machine; only the consensus
round is replaced by committing each prepared block directly. Figures: seed 004 §6.3–§6.5.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.cli.main import main
from edge.cli.powerchain import (
    view_accounts,
    view_orders,
    view_sessions,
    view_summary,
    view_units,
    view_votes,
)
from ledger import state
from ledger import tx as txm
from ledger.app import App
from ledger.errors import TxRejected
from ledger.execute import execute_tx
from ledger.genesis import Genesis
from ledger.keys import SigningKey
from ledger.registry import Context
from ledger.store import Store
from market.powerchain_book import notional_ueur

CHAIN = "lem-powerchain"
T0 = 1_790_035_200_000  # a UTC midnight [ms]
MIN = 60_000
ENT = 1_000_000  # µENT per ENT
EUR = 1_000_000  # µeEuro per eEuro


def key(name: str) -> SigningKey:
    return SigningKey(name.encode().ljust(32, b"."))


ADMIN, VAL = key("admin"), key("validator")
A, B, C, U1, U2 = (key(n) for n in ("address-A", "address-B", "address-C", "unit-U1", "unit-U2"))


def hx(k: SigningKey) -> str:
    return state.account_id(k.public_key)


class Chain:
    """One node's app with a signer per key (sequence numbers tracked) and a block clock."""

    def __init__(self, path: Path, meters: dict[str, bytes] | None = None) -> None:
        g = Genesis(
            chain_id=CHAIN,
            genesis_time_ms=T0 - MIN,
            validators=((VAL.public_key, 1),),
            admins=(ADMIN.public_key,),
            governance_keys=(ADMIN.public_key,),
            governance_threshold=1,
            meters=meters or {},
        )
        self.app = App(Store(path, g, durable=False))
        self.seq: dict[bytes, int] = {}
        self.time_ms = T0

    def tx(self, signer: SigningKey, kind: str, body: object) -> bytes:
        seq = self.seq.get(signer.public_key, 0)
        self.seq[signer.public_key] = seq + 1
        return txm.make(signer, CHAIN, seq, kind, body)

    def commit(self, *raws: bytes) -> None:
        self.time_ms += MIN
        prepared = self.app.prepare(
            self.app.height + 1, self.time_ms, VAL.public_key, list(raws), None
        )
        assert prepared.dropped == [], [(e.reason, e.message) for _, e in prepared.dropped]
        self.app.commit_block(prepared.block_bytes, [[VAL.public_key, b"\x00" * 64]])

    def refused(self, signer: SigningKey, kind: str, body: object) -> str:
        """The reason the next block would drop this tx for (nothing is committed)."""
        raw = self.tx(signer, kind, body)
        self.seq[signer.public_key] -= 1
        prepared = self.app.prepare(
            self.app.height + 1, self.time_ms + MIN, VAL.public_key, [raw], None
        )
        return prepared.dropped[0][1].reason.value if prepared.dropped else "ok"

    def view(self, fn: Any) -> Any:
        with self.app.store.state_reader() as reader:
            return fn(reader)

    def ent(self, k: SigningKey) -> int:
        return int(self.view(view_accounts).get(hx(k), [0, 0, 0])[0])

    def eeur(self, k: SigningKey) -> int:
        return int(self.view(view_accounts).get(hx(k), [0, 0, 0])[1])


def vote(chain: Chain, voter: SigningKey, action: str, *args: object) -> bytes:
    return chain.tx(voter, "PcVote", {"action": action, "args": list(args)})


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    c = Chain(tmp_path)
    yield c
    c.app.store.close()


def test_voting_system(chain: Chain) -> None:
    """§6.3: a lone voter passes alone; with two both must agree; a re-sent vote flips."""
    chain.commit(chain.tx(ADMIN, "PcSetup", {"voters": [A.public_key], "params": {}}))
    chain.commit(vote(chain, A, "AddVoter", B.public_key))  # 1 of 1 voter: passes at once
    chain.commit(vote(chain, B, "AddVoter", C.public_key))  # 1 of 2: open
    assert hx(C) not in chain.view(view_summary)["voters"]
    chain.commit(vote(chain, B, "AddVoter", C.public_key))  # B re-sends: its vote flips to -
    chain.commit(vote(chain, A, "AddVoter", C.public_key))  # 1 + of 2: still open
    assert hx(C) not in chain.view(view_summary)["voters"]
    chain.commit(vote(chain, B, "AddVoter", C.public_key))  # B flips back to +: 2 of 2
    assert chain.view(view_summary)["voters"] == sorted([hx(A), hx(B), hx(C)])
    chain.commit(vote(chain, A, "RemoveVoter", C.public_key))  # 1 of 3: open
    chain.commit(vote(chain, B, "RemoveVoter", C.public_key))  # 2 of 3 > 1.5: passes
    assert chain.view(view_summary)["voters"] == sorted([hx(A), hx(B)])
    assert chain.refused(C, "PcVote", {"action": "AddVoter", "args": [C.public_key]}) == (
        "not_permitted"
    )
    done = {(v["action"], v["args"][0]): v for v in chain.view(view_votes)}
    assert done[("AddVoter", hx(C))]["votes"] == sorted([[hx(A), True], [hx(B), True]])
    assert done[("RemoveVoter", hx(C))]["passed_height"] is not None


def setup_units(chain: Chain) -> None:
    """§6.3/§6.4: voters A and B; U1 and U2 registered as storage units owned by C."""
    chain.commit(chain.tx(ADMIN, "PcSetup", {"voters": [A.public_key], "params": {}}))
    chain.commit(vote(chain, A, "AddVoter", B.public_key))
    for unit in (U1, U2):
        chain.commit(vote(chain, A, "RegisterUnit", unit.public_key, C.public_key))
        assert hx(unit) not in {u["unit"] for u in chain.view(view_units)}  # 1 of 2 votes
        chain.commit(vote(chain, B, "RegisterUnit", unit.public_key, C.public_key))
    units = {u["unit"]: u for u in chain.view(view_units)}
    assert units[hx(U1)]["owner"] == units[hx(U2)]["owner"] == hx(C)


def totals(chain: Chain) -> tuple[int, int]:
    s = chain.view(view_summary)
    return s["stored_wh"], s["ent_uent"]


def test_chapter_6_scenario(chain: Chain) -> None:
    """§6.4–§6.5 end to end: every figure of the thesis, through signed txs in real blocks."""
    setup_units(chain)
    # A produces 10 kWh into U1: 10 ENT minted, A 8, C (owner of U1) 2 (F = 20 %).
    chain.commit(chain.tx(U1, "PcProduce", {"producer": A.public_key, "energy_wh": 10_000}))
    assert (chain.ent(A), chain.ent(C), totals(chain)) == (8 * ENT, 2 * ENT, (10_000, 10 * ENT))
    # C starts a 2 ENT session with U1 (2 kWh, no burn cost) and consumes 1 kWh.
    chain.commit(chain.tx(C, "PcStartSession", {"unit": U1.public_key, "amount_uent": 2 * ENT}))
    chain.commit(chain.tx(U1, "PcConsume", {"consumer": C.public_key, "energy_wh": 1000}))
    [session] = chain.view(view_sessions)
    assert (session["energy_wh"], session["locked_uent"]) == (1000, 1 * ENT)
    assert totals(chain) == (9000, 9 * ENT)
    # A malfunction lets C consume 2 kWh on its last 1 kWh: 8 ENT but 7 kWh; session ends.
    chain.commit(chain.tx(U1, "PcConsume", {"consumer": C.public_key, "energy_wh": 2000}))
    assert chain.view(view_sessions) == []
    assert totals(chain) == (7000, 8 * ENT)
    s = chain.view(view_summary)
    assert (s["difference_uent"], s["r"], s["mint_rate"], s["burn_rate"]) == (
        ENT,
        "1/20",
        "19/20",
        "21/20",
    )
    # B produces 10 kWh into U2: 9.5 ENT minted, B 7.6, C 1.9; D falls to 0.5 with R kept.
    chain.commit(chain.tx(U2, "PcProduce", {"producer": B.public_key, "energy_wh": 10_000}))
    assert (chain.ent(B), chain.ent(C)) == (7_600_000, 1_900_000)
    assert totals(chain) == (17_000, 17_500_000)
    assert chain.view(view_summary)["r"] == "1/20"
    # B gives its 7.6 ENT to A (15.6); A opens sessions of 7.35 ENT (U1) and 8.25 ENT (U2).
    chain.commit(
        chain.tx(B, "PcTransfer", {"to": A.public_key, "token": "ENT", "amount": 7_600_000})
    )
    chain.commit(
        chain.tx(A, "PcStartSession", {"unit": U1.public_key, "amount_uent": 7_350_000}),
        chain.tx(A, "PcStartSession", {"unit": U2.public_key, "amount_uent": 8_250_000}),
    )
    sessions = {x["unit"]: x["energy_wh"] for x in chain.view(view_sessions)}
    assert sessions == {hx(U1): 7000, hx(U2): 7857}  # 7.35/1.05 and 8.25/1.05 (Fig. 6.12)
    free = {u["unit"]: u["energy_wh"] - u["reserved_wh"] for u in chain.view(view_units)}
    assert free == {hx(U1): 0, hx(U2): 2143}
    assert chain.ent(A) == 0
    # 7 kWh from U1: 7.35 ENT burned; 10 kWh and 10.15 ENT remain (D = 0.15).
    chain.commit(chain.tx(U1, "PcConsume", {"consumer": A.public_key, "energy_wh": 7000}))
    assert totals(chain) == (10_000, 10_150_000)
    # 7.857 kWh from U2: 3 kWh at 1.05 then par: 8.007 burned, 0.243 returned; equilibrium.
    chain.commit(chain.tx(U2, "PcConsume", {"consumer": A.public_key, "energy_wh": 7857}))
    assert chain.ent(A) == 243_000
    assert totals(chain) == (2143, 2_143_000)
    s = chain.view(view_summary)
    assert (s["difference_uent"], s["r"], s["burn_rate"]) == (0, "0", "1")
    assert (chain.ent(A), chain.ent(C)) == (243_000, 1_900_000)  # §6.5's starting point
    # §6.5: A and B make C the banker; C mints 10 eEuro to A.
    chain.commit(vote(chain, A, "ChangeBanker", C.public_key))
    chain.commit(vote(chain, B, "ChangeBanker", C.public_key))
    chain.commit(chain.tx(C, "PcMintEEuro", {"to": A.public_key, "amount_ueur": 10 * EUR}))
    # C sells 1.9 ENT at 0.5; A buys 10 ENT at 1: 1.9 ENT for 0.95 eEuro, A's order keeps 8.1.
    chain.commit(
        chain.tx(C, "PcPlaceOrder", {"side": "sell", "qty_uent": 1_900_000, "price": "0.5"})
    )
    chain.commit(chain.tx(A, "PcPlaceOrder", {"side": "buy", "qty_uent": 10 * ENT, "price": "1"}))
    [order] = chain.view(view_orders)
    assert (order["owner"], order["side"], order["qty_uent"], order["price_ueur"]) == (
        hx(A),
        "buy",
        8_100_000,
        1 * EUR,
    )
    assert order["locked"] == 8_100_000  # 8.1 ENT × 1 eEuro still locked
    assert (chain.ent(A), chain.eeur(A)) == (2_143_000, 950_000)  # paid 0.95 of the 1.9 locked
    assert (chain.ent(C), chain.eeur(C)) == (0, 950_000)
    assert chain.view(view_summary)["eeur_ueur"] == 10 * EUR
    # Cancelling returns the rest of the lock: A holds 9.05 eEuro again.
    chain.commit(chain.tx(A, "PcCancelOrder", {"order_id": order["order_id"]}))
    assert (chain.eeur(A), chain.view(view_orders)) == (9_050_000, [])


def test_powerchain_roles(chain: Chain) -> None:
    """After setup, each Pc kind is refused to the roles it is not for, with the reason."""
    setup_units(chain)
    chain.commit(chain.tx(U1, "PcProduce", {"producer": A.public_key, "energy_wh": 10_000}))
    assert chain.refused(A, "PcSetup", {"voters": [A.public_key], "params": {}}) == (
        "not_permitted"
    )
    assert chain.refused(ADMIN, "PcSetup", {"voters": [A.public_key], "params": {}}) == (
        "bad_value"
    )
    assert chain.refused(C, "PcVote", {"action": "AddVoter", "args": [C.public_key]}) == (
        "not_permitted"
    )
    for kind, body in (
        ("PcProduce", {"producer": A.public_key, "energy_wh": 1}),
        ("PcConsume", {"consumer": A.public_key, "energy_wh": 1}),
        ("PcReportEnergy", {"energy_wh": 1}),
    ):
        assert chain.refused(A, kind, body) == "not_permitted", kind
    assert chain.refused(U1, "PcProduce", {"producer": U1.public_key, "energy_wh": 1}) == (
        "bad_value"
    )
    assert chain.refused(U1, "PcConsume", {"consumer": A.public_key, "energy_wh": 1}) == (
        "unknown_session"
    )
    # no banker yet: nobody may mint eEuro
    assert chain.refused(A, "PcMintEEuro", {"to": A.public_key, "amount_ueur": 1}) == (
        "not_permitted"
    )
    outsider = key("outsider")
    assert chain.refused(
        outsider, "PcPlaceOrder", {"side": "buy", "qty_uent": 1000, "price": "1"}
    ) == ("not_permitted")
    assert chain.refused(A, "PcPlaceOrder", {"side": "buy", "qty_uent": 1000, "price": "1"}) == (
        "insufficient_funds"
    )
    assert chain.refused(A, "PcPlaceOrder", {"side": "buy", "qty_uent": 1500, "price": "1"}) == (
        "bad_value"
    )
    assert chain.refused(A, "PcStartSession", {"unit": U2.public_key, "amount_uent": ENT}) == (
        "insufficient_energy"
    )
    assert chain.refused(A, "PcStartSession", {"unit": U1.public_key, "amount_uent": 999}) == (
        "bad_value"
    )
    assert chain.refused(A, "PcStartSession", {"unit": A.public_key, "amount_uent": ENT}) == (
        "unknown_unit"
    )


def test_session_expiry_and_refund(chain: Chain) -> None:
    """A session past H refuses consumption; PcClearSessions refunds the lock and the energy."""
    setup_units(chain)
    chain.commit(vote(chain, A, "SetParameter", "H", "600"))
    chain.commit(vote(chain, B, "SetParameter", "H", "600"))
    assert chain.view(view_summary)["params"]["H"] == "600"
    chain.commit(chain.tx(U1, "PcProduce", {"producer": A.public_key, "energy_wh": 5000}))
    chain.commit(chain.tx(A, "PcStartSession", {"unit": U1.public_key, "amount_uent": 3 * ENT}))
    chain.commit(chain.tx(U1, "PcConsume", {"consumer": A.public_key, "energy_wh": 500}))
    assert chain.refused(U1, "PcConsume", {"consumer": A.public_key, "energy_wh": 1}) == "ok"
    chain.time_ms += 10 * MIN  # past H = 600 s
    assert chain.refused(U1, "PcConsume", {"consumer": A.public_key, "energy_wh": 1}) == (
        "session_expired"
    )
    chain.commit(chain.tx(C, "PcClearSessions", {}))
    assert chain.view(view_sessions) == []
    assert chain.ent(A) == 4 * ENT - 500_000  # 4 minted to A, 0.5 burned, 2.5 refunded
    [u1] = [u for u in chain.view(view_units) if u["unit"] == hx(U1)]
    assert (u1["energy_wh"], u1["reserved_wh"]) == (4500, 0)
    assert chain.refused(C, "PcClearSessions", {}) == "unknown_session"


def test_lemctl_views(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """lemctl powerchain units|sessions|orders|votes read a stopped node's store: tables, --json."""
    chain = Chain(tmp_path / "ledger")
    setup_units(chain)
    chain.commit(chain.tx(U1, "PcProduce", {"producer": A.public_key, "energy_wh": 10_000}))
    chain.commit(chain.tx(A, "PcStartSession", {"unit": U1.public_key, "amount_uent": 2 * ENT}))
    chain.commit(chain.tx(A, "PcPlaceOrder", {"side": "sell", "qty_uent": ENT, "price": "0.25"}))
    chain.app.store.close()
    ADMIN.save(tmp_path / "node.key")  # the default viewer: lemd's node key beside the store
    data = str(tmp_path / "ledger")
    assert main(["powerchain", "units", "--data-dir", data, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["stored_wh"] == 10_000
    units = {u["unit"]: (u["owner"], u["energy_wh"], u["reserved_wh"]) for u in out["units"]}
    assert units == {hx(U1): (hx(C), 10_000, 2000), hx(U2): (hx(C), 0, 0)}
    assert main(["powerchain", "sessions", "--data-dir", data, "--json"]) == 0
    [s] = json.loads(capsys.readouterr().out)["sessions"]
    assert (s["consumer"], s["energy_wh"], s["locked_uent"]) == (hx(A), 2000, 2 * ENT)
    assert main(["powerchain", "orders", "--data-dir", data]) == 0
    header, columns, row = capsys.readouterr().out.splitlines()
    assert header.startswith("height 9: stored 10.000 kWh, ENT 10.000000")
    assert columns.split()[:3] == ["id", "owner", "side"]
    assert row.split() == ["0", hx(A)[:12], "sell", "0.250", "1.000", "1.000000", "ENT"]
    assert main(["powerchain", "votes", "--data-dir", data]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["action", "args"]
    assert sum(1 for line in lines if line.startswith("RegisterUnit")) == 2
    assert main(["powerchain", "units", "--data-dir", str(tmp_path / "none")]) == 2


def test_lemctl_reads_a_running_nodes_store(tmp_path: Path) -> None:
    """Another process reads the store while this one still holds it open for writing."""
    chain = Chain(tmp_path / "ledger")
    setup_units(chain)
    chain.commit(chain.tx(U2, "PcProduce", {"producer": B.public_key, "energy_wh": 4000}))
    ADMIN.save(tmp_path / "node.key")
    cmd = [sys.executable, "-m", "edge.cli.main", "powerchain", "units", "--data-dir"]
    done = subprocess.run(
        [*cmd, str(tmp_path / "ledger"), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parents[3],  # the repository root, where edge/ lives
    )
    units = {u["unit"]: u["energy_wh"] for u in json.loads(done.stdout)["units"]}
    assert units == {hx(U1): 0, hx(U2): 4000}
    chain.app.store.close()


def test_lemctl_shows_a_prosumer_only_what_fig_4_allows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Prosumer A (a meter in genesis) sees its own session and order, not B's session (a
    household's consumption) nor the accounts behind other orders and units; the admin sees
    all; a key with no role gets the parameters only."""
    chain = Chain(tmp_path / "ledger", meters={"MA": A.public_key, "MB": B.public_key})
    setup_units(chain)
    for unit, who in ((U1, A), (U2, B)):
        chain.commit(chain.tx(unit, "PcProduce", {"producer": who.public_key, "energy_wh": 5000}))
        body = {"unit": unit.public_key, "amount_uent": ENT}
        chain.commit(chain.tx(who, "PcStartSession", body))
        order = {"side": "sell", "qty_uent": ENT, "price": "0.25"}
        chain.commit(chain.tx(who, "PcPlaceOrder", order))
    chain.app.store.close()
    for k, name in ((A, "a"), (ADMIN, "admin"), (key("outsider"), "out")):
        k.save(tmp_path / f"{name}.key")

    def show(view: str, who: str) -> dict[str, Any]:
        args = ["powerchain", view, "--data-dir", str(tmp_path / "ledger"), "--json"]
        assert main([*args, "--key", str(tmp_path / f"{who}.key")]) == 0
        out: dict[str, Any] = json.loads(capsys.readouterr().out)
        return out

    sessions = show("sessions", "a")["sessions"]
    assert [s["consumer"] for s in sessions] == [hx(A)]
    orders = show("orders", "a")["orders"]
    assert sorted(o["owner"] for o in orders) == sorted([hx(A), "(hidden)"])
    assert {u["owner"] for u in show("units", "a")["units"]} == {"(hidden)"}
    for view in ("sessions", "orders", "units"):
        assert hx(B) not in json.dumps(show(view, "a")[view])  # B is a voter: in the summary
    assert {s["consumer"] for s in show("sessions", "admin")["sessions"]} == {hx(A), hx(B)}
    outsider = show("sessions", "out")
    assert (outsider["sessions"], list(outsider["summary"])) == ([], ["params"])


# invariants under random operations (hypothesis; in-memory state, the same handlers) --------

BANK = key("banker")
ACTORS = (A, B, C)
UNITS = (U1, U2)
_OPS = st.one_of(
    st.tuples(st.just("produce"), st.integers(0, 1), st.integers(0, 2), st.integers(1, 20_000)),
    st.tuples(st.just("consume"), st.integers(0, 1), st.integers(0, 2), st.integers(1, 6000)),
    st.tuples(st.just("actual"), st.integers(0, 1), st.integers(0, 30_000)),
    st.tuples(st.just("session"), st.integers(0, 2), st.integers(0, 1), st.integers(1, 6 * ENT)),
    st.tuples(st.just("clear")),
    st.tuples(
        st.just("transfer"),
        st.integers(0, 2),
        st.integers(0, 2),
        st.sampled_from(["ENT", "eEuro"]),
        st.integers(1, 3 * ENT),
    ),
    st.tuples(
        st.sampled_from(["mint", "lock", "burn", "unlock"]),
        st.integers(0, 2),
        st.integers(1, 5 * EUR),
    ),
    st.tuples(
        st.just("order"),
        st.integers(0, 2),
        st.sampled_from(["buy", "sell"]),
        st.integers(1, 3000),
        st.integers(1, 2000),
    ),
    st.tuples(st.just("cancel"), st.integers(0, 2), st.integers(0, 12)),
    st.tuples(st.just("time"), st.integers(1, 200)),
)


class Memory:
    """The registered handlers on an in-memory state (no LMDB): fast enough for hypothesis."""

    def __init__(self) -> None:
        g = Genesis(
            chain_id=CHAIN,
            genesis_time_ms=T0 - MIN,
            validators=((VAL.public_key, 1),),
            admins=(ADMIN.public_key,),
            governance_keys=(ADMIN.public_key,),
            governance_threshold=1,
            meters={f"m-{i}": k.public_key for i, k in enumerate(ACTORS)},
        )
        self.st = state.Overlay(state.MemoryState(g.initial_state()))
        self.seq: dict[bytes, int] = {}
        self.time_ms, self.height = T0, 1

    def run(self, signer: SigningKey, kind: str, body: object) -> bool:
        seq = self.seq.get(signer.public_key, 0)
        ctx = Context(self.st, CHAIN, self.height, self.time_ms)
        try:
            execute_tx(ctx, txm.make(signer, CHAIN, seq, kind, body))
        except TxRejected:
            return False
        self.seq[signer.public_key] = seq + 1
        self.height += 1
        return True


def _op_tx(op: tuple[Any, ...]) -> tuple[SigningKey, str, dict[str, object]]:
    name = op[0]
    if name == "produce":
        return UNITS[op[1]], "PcProduce", {"producer": ACTORS[op[2]].public_key, "energy_wh": op[3]}
    if name == "consume":
        return UNITS[op[1]], "PcConsume", {"consumer": ACTORS[op[2]].public_key, "energy_wh": op[3]}
    if name == "actual":
        return UNITS[op[1]], "PcReportEnergy", {"energy_wh": op[2]}
    if name == "session":
        return (
            ACTORS[op[1]],
            "PcStartSession",
            {"unit": UNITS[op[2]].public_key, "amount_uent": op[3]},
        )
    if name == "clear":
        return A, "PcClearSessions", {}
    if name == "transfer":
        body = {"to": ACTORS[op[2]].public_key, "token": op[3], "amount": op[4]}
        return ACTORS[op[1]], "PcTransfer", body
    if name == "mint":
        return BANK, "PcMintEEuro", {"to": ACTORS[op[1]].public_key, "amount_ueur": op[2]}
    if name == "lock":
        return ACTORS[op[1]], "PcLockEEuro", {"amount_ueur": op[2]}
    if name in ("burn", "unlock"):
        kind = "PcBurnEEuro" if name == "burn" else "PcUnlockEEuro"
        return BANK, kind, {"account": ACTORS[op[1]].public_key, "amount_ueur": op[2]}
    if name == "order":
        price = f"{op[4] / 1000:.3f}"
        body = {"side": op[2], "qty_uent": op[3] * 1000, "price": price}
        return ACTORS[op[1]], "PcPlaceOrder", body
    return ACTORS[op[1]], "PcCancelOrder", {"order_id": op[2]}


def _books(reader: Any) -> dict[str, int]:
    """Every total the invariants compare, from the state alone."""
    s, accts = view_summary(reader), view_accounts(reader).values()
    orders, sessions = view_orders(reader), view_sessions(reader)
    return {
        "ent": s["ent_uent"],
        "eeur": s["eeur_ueur"],
        "stored": s["stored_wh"],
        "ent_held": sum(a[0] for a in accts)
        + sum(x["locked_uent"] for x in sessions)
        + sum(o["locked"] for o in orders if o["side"] == "sell"),
        "eeur_held": sum(a[1] + a[2] for a in accts)
        + sum(o["locked"] for o in orders if o["side"] == "buy"),
        "units_wh": sum(u["energy_wh"] for u in view_units(reader) if u["active"]),
    }


def _check_locks(reader: Any) -> None:
    for a in view_accounts(reader).values():
        assert min(a) >= 0
    for o in view_orders(reader):
        want = (
            o["qty_uent"] if o["side"] == "sell" else notional_ueur(o["qty_uent"], o["price_ueur"])
        )
        assert o["locked"] == want  # the lock covers exactly what is left open
    reserved: dict[str, int] = {}
    for x in view_sessions(reader):
        reserved[x["unit"]] = reserved.get(x["unit"], 0) + x["energy_wh"]
    for u in view_units(reader):
        assert u["reserved_wh"] == reserved.get(u["unit"], 0)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_OPS, min_size=20, max_size=60))
def test_conservation_and_locks_under_random_operations(ops: list[tuple[Any, ...]]) -> None:
    """Whatever is sent: ENT changes only by mint (production) and burn (consumption), eEuro
    only by the banker's mint and burn; available + locked always equals the circulating total
    (no lock is spent twice); order locks equal what is left open; no balance goes negative."""
    m = Memory()
    assert m.run(ADMIN, "PcSetup", {"voters": [A.public_key], "params": {}})
    for unit in UNITS:
        assert m.run(
            A, "PcVote", {"action": "RegisterUnit", "args": [unit.public_key, C.public_key]}
        )
    assert m.run(A, "PcVote", {"action": "ChangeBanker", "args": [BANK.public_key]})
    for i, who in enumerate(ACTORS):  # everyone starts with ENT, eEuro and a session
        assert m.run(UNITS[i % 2], "PcProduce", {"producer": who.public_key, "energy_wh": 20_000})
        assert m.run(BANK, "PcMintEEuro", {"to": who.public_key, "amount_ueur": 20 * EUR})
        assert m.run(who, "PcStartSession", {"unit": U1.public_key, "amount_uent": 3 * ENT})
    for op in ops:
        if op[0] == "time":
            m.time_ms += op[1] * MIN
            continue
        before = _books(m.st)
        signer, kind, body = _op_tx(op)
        done = m.run(signer, kind, body)
        after = _books(m.st)
        assert after["ent_held"] == after["ent"]
        assert after["eeur_held"] == after["eeur"]
        assert after["units_wh"] == after["stored"]
        _check_locks(m.st)
        if not done:
            assert after == before
            continue
        if kind not in ("PcProduce", "PcConsume"):
            assert after["ent"] == before["ent"]
        if kind == "PcProduce":
            assert after["ent"] > before["ent"]
        if kind == "PcConsume":
            assert after["ent"] <= before["ent"]
        amount = body.get("amount_ueur", 0)
        assert isinstance(amount, int)
        sign = {"PcMintEEuro": 1, "PcBurnEEuro": -1}.get(kind, 0)
        assert after["eeur"] == before["eeur"] + sign * amount
