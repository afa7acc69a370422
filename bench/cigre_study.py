"""CDA vs NCDA vs OCDA on the CIGRE MV benchmark, checked by AC power flow (seed 003 §2.4, §3.1).

Reproduces the validation of Troncia et al. (2019) with the engines of :mod:`market.cda`:
N random shout realisations per variability s, each cleared by CDA, NCDA and OCDA (and "none",
no local market, as a reference), the outcome applied to pandapower's CIGRE MV network as
deviations from the set-point, one AC power flow per outcome, and per (mechanism, s) the share
of outcomes within limits, line loading, losses and voltage statistics. Off-ledger, so floats are
fine here; shouts enter the engine as integer Wh and exact 6-decimal prices. The method and the
outcome-to-injection mapping are in docs/spec/cda.md §6.

    .venv/bin/python bench/cigre_study.py --n 100 --out /tmp/cigre.csv
    .venv/bin/python bench/cigre_study.py --n 3 --s 0.05 --out /tmp/smoke.csv   # ~10 s
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from market.cda import (
    ANY_ASKER,
    Market,
    Mechanism,
    Pool,
    RankEntry,
    Ranking,
    Shout,
    Side,
    Trade,
)
from market.topology import Line, Topology

warnings.filterwarnings("ignore")  # pandapower's numba/pandas chatter; results are unaffected
import pandapower as pp  # noqa: E402
import pandapower.networks as pn  # noqa: E402

S_VALUES = (0.02, 0.05, 0.07, 0.1, 0.15)  # seed 003 §2.4
PRICE_MEAN, PRICE_SD = 0.35, 0.025  # [€/kWh], seed 003 §2.4 (Spanish AS prices)
DT_H = 1.0  # market session Δt [h]
WH_PER_MWH = 1_000_000
MECHANISMS = ("none", "cda", "ncda", "ocda")

# Seed 003 Table 1: (P [MW], Q [Mvar]) per bus; per bus the residential load first, then the
# commercial/industrial one (their P/Q ratios match pandapower's R and CI loads).
TABLE1_LOADS = {
    1: [(0.5194, 0.1054), (0.4845, 0.159)],
    3: [(0.27645, 0.0692), (0.2252, 0.139)],
    4: [(0.43, 0.108)],
    5: [(0.7275, 0.1823)],
    6: [(0.548, 0.137)],
    7: [(0.0765, 0.047)],
    8: [(0.586, 0.147)],
    9: [(0.5737, 0.355)],
    10: [(0.47, 0.119), (0.068, 0.042)],
    11: [(0.3298, 0.083)],
    12: [(1.499, 0.3), (0.5016, 0.165)],
    13: [(0.034, 0.021)],
    14: [(1.178, 0.295), (0.33, 0.205)],
}
TABLE1_GENERATORS = {4: 6.0, 6: 0.04, 7: 1.5, 10: 0.04, 14: 0.03}  # [MW], Q = 0


def build_network(case: str) -> pp.pandapowerNet:
    """pandapower's CIGRE MV network; ``paper`` sets loads and generators to seed 003 Table 1.

    Args:
        case: ``paper`` (built-in topology, Table 1 units), ``pv_wind`` or ``all`` (the
            built-in network with that DER set, unchanged).
    """
    if case != "paper":
        return pn.create_cigre_network_mv(with_der=case)
    net = pn.create_cigre_network_mv(with_der=False)
    seen: dict[int, int] = {}
    order = net.load.sort_values("name", key=lambda s: s.str.startswith("Load CI"), kind="stable")
    for idx, row in order.iterrows():
        bus = int(row.bus)
        k = seen.get(bus, 0)
        seen[bus] = k + 1
        net.load.at[idx, "p_mw"], net.load.at[idx, "q_mvar"] = TABLE1_LOADS[bus][k]
    for bus, p_mw in TABLE1_GENERATORS.items():
        pp.create_sgen(net, bus, p_mw=p_mw, q_mvar=0.0, name=f"Gen {bus}")
    return net


def topology_of(net: pp.pandapowerNet) -> Topology:
    """The bus graph the SO would publish: in-service lines with closed switches [m];
    transformers as 0 m branches (distance is along the MV lines; seed 003 §2.2)."""
    open_lines = set(net.switch[(net.switch.et == "l") & ~net.switch.closed].element)
    lines = [
        Line(str(r.from_bus), str(r.to_bus), round(r.length_km * 1000))
        for i, r in net.line.iterrows()
        if r.in_service and i not in open_lines
    ]
    lines += [Line(str(r.hv_bus), str(r.lv_bus), 0) for _, r in net.trafo.iterrows()]
    return Topology(tuple(str(b) for b in net.bus.index), tuple(lines))


@dataclass(frozen=True)
class Unit:
    """A market participant: one load (asks) or one static generator (offers)."""

    name: str
    table: str  # "load" | "sgen"
    index: int
    bus: int
    p_mw: float  # set-point P* [MW]


def units_of(net: pp.pandapowerNet) -> list[Unit]:
    loads = [Unit(r["name"], "load", i, int(r.bus), r.p_mw) for i, r in net.load.iterrows()]
    gens = [Unit(r["name"], "sgen", i, int(r.bus), r.p_mw) for i, r in net.sgen.iterrows()]
    return [u for u in loads + gens if u.p_mw > 0]


def draw_shouts(
    rng: np.random.Generator, units: Sequence[Unit], s: float, roles: str
) -> list[Shout]:
    """Seed 003 §2.4: each unit shouts with probability 1/2; E ~ N(P*·Δt, s·P*), p ~ N(0.35,
    0.025). ``roles="paper"``: generators offer, loads ask (§2.4); ``"free"``: each unit asks or
    offers 50/50 (§2.1: the choice "is, in principle, free"). The pool (AS+ / AS−) is drawn
    50/50 (the paper does not say). Arrival order is a random permutation (the timestamp)."""
    shouts = []
    for u in units:
        if rng.random() >= 0.5:
            continue
        energy_wh = round(rng.normal(u.p_mw * DT_H, s * u.p_mw) * WH_PER_MWH)
        price = Fraction(round(max(rng.normal(PRICE_MEAN, PRICE_SD), 0.0) * 1e6), 10**6)
        pool = Pool.UP if rng.random() < 0.5 else Pool.DOWN
        if energy_wh <= 0:
            continue
        if roles == "paper":
            side = Side.OFFER if u.table == "sgen" else Side.ASK
        else:
            side = Side.OFFER if rng.random() < 0.5 else Side.ASK
        shouts.append((u, side, pool, energy_wh, price))
    order = rng.permutation(len(shouts))
    return [
        Shout(f"{u.table}:{u.index}", u.name, str(u.bus), t, side, pool, q, p, 0)
        for t, (u, side, pool, q, p) in enumerate(shouts[i] for i in order)
    ]


class Linearisation:
    """Finite-difference sensitivities of the set-point power flow to 1 MW injected at each bus
    (the slack takes the balance): the operator's OPF proxy for OCDA."""

    def __init__(self, net: pp.pandapowerNet, buses: Sequence[int], step_mw: float = 0.1):
        run_pf(net)
        self.buses = list(buses)
        self.loading = net.res_line.loading_percent.to_numpy().copy()
        self.vm = net.res_bus.vm_pu.to_numpy().copy()
        self.loss = losses_mw(net)
        n_b = len(self.buses)
        self.d_loading = np.zeros((len(self.loading), n_b))
        self.d_vm = np.zeros((len(self.vm), n_b))
        self.d_loss = np.zeros(n_b)
        for j, bus in enumerate(self.buses):
            probe = pp.create_sgen(net, bus, p_mw=step_mw, name="probe")
            run_pf(net)
            self.d_loading[:, j] = (
                net.res_line.loading_percent.to_numpy() - self.loading
            ) / step_mw
            self.d_vm[:, j] = (net.res_bus.vm_pu.to_numpy() - self.vm) / step_mw
            self.d_loss[j] = (losses_mw(net) - self.loss) / step_mw
            net.sgen.drop(probe, inplace=True)
        run_pf(net)

    def column(self, bus: int) -> int:
        return self.buses.index(bus)


@dataclass(frozen=True)
class Limits:
    vmin: float = 0.95
    vmax: float = 1.05
    loading_max: float = 100.0


def ocda_ranking(
    lin: Linearisation,
    limits: Limits,
    pool: Pool,
    inj_mw: np.ndarray,
    pairs: Sequence[tuple[int | None, int]],
) -> Ranking:
    """The operator's ranking for one pool, recomputed before every shout (docs/spec/cda.md §6.3).

    For each (asker bus, offeror bus) pair — asker ``None`` meaning the "*" row — the response
    of x MW changes injections by +x at the offeror (AS−: −x) and, for a pair, −x at the asker
    (the asker's deviation, applied only when matched). Score: marginal losses of that change
    [W per MW]. Cap: the largest x that keeps every line and MV voltage within limits on the
    linearised model at the current state (set-point + deviations and trades so far), never
    worsening a limit that is already broken.
    """
    sign = 1.0 if pool is Pool.UP else -1.0  # AS+ offeror injects more, AS− less
    loading = lin.loading + lin.d_loading @ inj_mw
    vm = lin.vm + lin.d_vm @ inj_mw
    entries = {}
    for asker, offeror in pairs:
        direction = np.zeros(len(lin.buses))
        direction[lin.column(offeror)] += sign
        if asker is not None:
            direction[lin.column(asker)] -= sign
        cap = min(
            _headroom(loading, lin.d_loading @ direction, -np.inf, limits.loading_max),
            _headroom(vm, lin.d_vm @ direction, limits.vmin, limits.vmax),
        )
        score = round(float(lin.d_loss @ direction) * 1e6)  # [W/MW]
        key = (ANY_ASKER if asker is None else str(asker), str(offeror))
        entries[key] = RankEntry(score, cap_wh=int(cap * WH_PER_MWH))
    return Ranking(0, pool, entries)


def _headroom(value: np.ndarray, slope: np.ndarray, low: float, high: float) -> float:
    """Largest x >= 0 [MW] with low <= value + slope·x <= high wherever that holds now."""
    x = np.inf
    up, down = slope > 1e-9, slope < -1e-9
    if np.any(up):
        x = min(x, float(np.min(np.maximum(high - value[up], 0.0) / slope[up])))
    if np.any(down):
        x = min(x, float(np.min(np.maximum(value[down] - low, 0.0) / -slope[down])))
    return min(x, 1e6)


def clear(
    mech: str,
    shouts: Sequence[Shout],
    topo: Topology,
    lin: Linearisation | None,
    limits: Limits,
    residual: str = "grid",
) -> list[Trade]:
    """Feed the shouts in arrival order to one engine; OCDA gets a fresh ranking each time.

    ``inj`` tracks the operator's view of the injection changes [MW per bus] so far, with the
    same mapping as :func:`apply_outcome`.
    """
    if mech == "none":
        return []
    market = Market(Mechanism(mech), topo)
    if mech != "ocda":
        for shout in shouts:
            market.place(shout)
        return market.trades
    assert lin is not None, "OCDA needs the operator's linearisation"
    inj = np.zeros(len(lin.buses))
    offerors = sorted({int(s.bus) for s in shouts if s.side is Side.OFFER})
    askers: list[int | None] = [None]
    if residual != "grid":  # the pair matters: the asker deviates only when matched
        askers = sorted({int(s.bus) for s in shouts if s.side is Side.ASK})
    pairs = [(a, o) for a in askers for o in offerors]
    for shout in shouts:
        for pool in Pool:
            ranking = ocda_ranking(lin, limits, pool, inj, pairs)
            _account(market.record_ranking(ranking), lin, inj, residual)
        if shout.side is Side.ASK and residual == "grid":  # happens, matched or not
            inj[lin.column(int(shout.bus))] += _asker_sign(shout.pool) * shout.quantity_wh / 1e6
        _account(market.place(shout), lin, inj, residual)
    return market.trades


def _asker_sign(pool: Pool) -> float:
    """AS+ asker: its injection falls (load up / generation down); AS− asker: it rises."""
    return -1.0 if pool is Pool.UP else 1.0


def _account(trades: Sequence[Trade], lin: Linearisation, inj: np.ndarray, residual: str) -> None:
    for t in trades:
        inj[lin.column(int(t.offeror_bus))] -= _asker_sign(t.pool) * t.quantity_wh / 1e6
        if residual != "grid":
            inj[lin.column(int(t.asker_bus))] += _asker_sign(t.pool) * t.quantity_wh / 1e6


def apply_outcome(
    net: pp.pandapowerNet, shouts: Sequence[Shout], trades: Sequence[Trade], residual: str
) -> None:
    """Deviations from the set-point (docs/spec/cda.md §6.2).

    Each ask is the asker's deviation: in AS+ its injection falls by the asked energy / Δt (a
    load consumes more, a generator produces less), in AS− it rises. Each trade makes the
    offeror respond with the matched energy / Δt in the opposite sense, so the couple is net
    neutral. With ``residual="grid"`` the unmatched part of each ask still happens and the
    external grid (slack) balances it; with ``"none"`` only matched deviations are applied.
    """
    matched: dict[str, int] = {}
    for t in trades:
        matched[t.ask_id] = matched.get(t.ask_id, 0) + t.quantity_wh
        _inject(net, t.offer_id, -_asker_sign(t.pool) * t.quantity_wh / WH_PER_MWH / DT_H)
    for s in shouts:
        if s.side is Side.ASK:
            energy = s.quantity_wh if residual == "grid" else matched.get(s.shout_id, 0)
            _inject(net, s.shout_id, _asker_sign(s.pool) * energy / WH_PER_MWH / DT_H)


def _inject(net: pp.pandapowerNet, shout_id: str, delta_mw: float) -> None:
    """Change a unit's net injection [MW]: a generator's output, or minus a load's demand."""
    table, index = shout_id.split(":")
    if table == "sgen":
        net.sgen.at[int(index), "p_mw"] += delta_mw
    else:
        net.load.at[int(index), "p_mw"] -= delta_mw


def run_pf(net: pp.pandapowerNet) -> bool:
    try:
        pp.runpp(net, init="results" if net.converged else "auto", numba=False)
    except pp.LoadflowNotConverged:
        return False
    return True


def losses_mw(net: pp.pandapowerNet) -> float:
    return float(net.res_line.pl_mw.sum() + net.res_trafo.pl_mw.sum())


def evaluate(net: pp.pandapowerNet, limits: Limits) -> dict[str, float]:
    """Figures of one outcome; a power flow that does not converge counts as a violation."""
    if not run_pf(net):
        return {"ok": 0.0, "line_ok": 0.0, "v_ok": 0.0, "converged": 0.0}
    loading = net.res_line.loading_percent.to_numpy()
    vm = net.res_bus.vm_pu[net.bus.vn_kv < 100].to_numpy()  # MV nodes (not the 110 kV slack)
    line_ok = bool(np.all(loading <= limits.loading_max))
    v_ok = bool(np.all((vm >= limits.vmin) & (vm <= limits.vmax)))
    load_mw = float(net.load.p_mw.clip(lower=0).sum())
    return {
        "ok": float(line_ok and v_ok),
        "line_ok": float(line_ok),
        "v_ok": float(v_ok),
        "converged": 1.0,
        "loading_mean_pct": float(loading.mean()),
        "loading_max_pct": float(loading.max()),
        "losses_pct_of_load": 100 * losses_mw(net) / load_mw,
        "v_mean_pu": float(vm.mean()),
        "v_std_pu": float(vm.std()),
        "v_min_pu": float(vm.min()),
        "v_max_pu": float(vm.max()),
    }


def study(args: argparse.Namespace) -> list[dict[str, object]]:
    """All (s, mechanism) rows: means over the N realisations."""
    net = build_network(args.case)
    limits = Limits(args.vmin, args.vmax, args.loading_max)
    topo = topology_of(net)
    units = units_of(net)
    lin = Linearisation(net, sorted(net.bus.index))
    base = evaluate(net, limits)
    print(
        f"case={args.case}: {len(units)} units, set-point within limits: {bool(base['ok'])} "
        f"(V {base['v_min_pu']:.3f}..{base['v_max_pu']:.3f} p.u., "
        f"max line loading {base['loading_max_pct']:.1f} %)"
    )
    load_p, sgen_p = net.load.p_mw.copy(), net.sgen.p_mw.copy()
    rng = np.random.default_rng(args.seed)
    rows: list[dict[str, object]] = []
    for s in args.s:
        figures: dict[str, list[dict[str, float]]] = {m: [] for m in args.mechanisms}
        volume: dict[str, list[float]] = {m: [] for m in args.mechanisms}
        for _ in range(args.n):
            shouts = draw_shouts(rng, units, s, args.roles)
            for mech in args.mechanisms:
                trades = clear(mech, shouts, topo, lin, limits, args.residual)
                apply_outcome(net, shouts, trades, args.residual)
                figures[mech].append(evaluate(net, limits))
                volume[mech].append(sum(t.quantity_wh for t in trades) / WH_PER_MWH)
                net.load["p_mw"], net.sgen["p_mw"] = load_p, sgen_p
                load_p, sgen_p = load_p.copy(), sgen_p.copy()
        for mech in args.mechanisms:
            label = {"case": args.case, "roles": args.roles, "residual": args.residual}
            rows.append(_summarise(label, s, mech, figures[mech], volume[mech]))
    return rows


def _summarise(
    label: dict[str, str], s: float, mech: str, figs: list[dict[str, float]], volume: list[float]
) -> dict[str, object]:
    row: dict[str, object] = {**label, "s": s, "mechanism": mech, "n": len(figs)}
    for key in ("ok", "line_ok", "v_ok", "converged"):
        row[f"share_{key}"] = float(np.mean([f[key] for f in figs]))
    conv = [f for f in figs if f["converged"]]
    for key in (
        "loading_mean_pct",
        "loading_max_pct",
        "losses_pct_of_load",
        "v_mean_pu",
        "v_std_pu",
        "v_min_pu",
        "v_max_pu",
    ):
        row[key] = float(np.mean([f[key] for f in conv])) if conv else float("nan")
    row["matched_mwh"] = float(np.mean(volume))
    return row


def print_table(rows: Sequence[dict[str, object]]) -> None:
    head = (
        f"{'s':>5} {'mech':>5} {'n':>4} {'ok%':>6} {'line%':>6} {'V%':>6} {'load%':>6} "
        f"{'maxld%':>7} {'loss%':>6} {'Vmean':>6} {'Vstd':>6} {'Vmin':>6} {'Vmax':>6} {'MWh':>5}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['s']:>5} {r['mechanism']:>5} {r['n']:>4} {100 * r['share_ok']:6.1f} "  # type: ignore[operator]
            f"{100 * r['share_line_ok']:6.1f} {100 * r['share_v_ok']:6.1f} "  # type: ignore[operator]
            f"{r['loading_mean_pct']:6.1f} {r['loading_max_pct']:7.1f} "
            f"{r['losses_pct_of_load']:6.2f} {r['v_mean_pu']:6.3f} {r['v_std_pu']:6.4f} "
            f"{r['v_min_pu']:6.3f} {r['v_max_pu']:6.3f} {r['matched_mwh']:5.2f}"
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100, help="realisations per s (paper: 100)")
    p.add_argument("--s", type=float, nargs="+", default=list(S_VALUES), help="variabilities")
    p.add_argument("--case", choices=["paper", "pv_wind", "all"], default="paper")
    p.add_argument("--mechanisms", nargs="+", choices=MECHANISMS, default=list(MECHANISMS))
    p.add_argument("--roles", choices=["paper", "free"], default="paper")
    p.add_argument("--residual", choices=["grid", "none"], default="grid")
    p.add_argument("--vmin", type=float, default=0.95, help="[p.u.]")
    p.add_argument("--vmax", type=float, default=1.05, help="[p.u.]")
    p.add_argument("--loading-max", type=float, default=100.0, help="line loading limit [%%]")
    p.add_argument("--seed", type=int, default=2019)
    p.add_argument("--out", type=Path, required=True, help="CSV file to write")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    rows = study(args)
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {args.out} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
