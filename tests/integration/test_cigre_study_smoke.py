"""bench/cigre_study.py on the real pandapower CIGRE MV network: mapping and a small run."""

from __future__ import annotations

import csv
import importlib.util
import sys
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import pytest

from market.cda import Pool, Shout, Side

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cigre_study", ROOT / "bench/cigre_study.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cigre_study"] = module
    spec.loader.exec_module(module)
    return module


def test_paper_network_matches_table_1(study: ModuleType) -> None:
    """The 'paper' case carries seed 003 Table 1: 8.85765 MW of load, 7.61 MW of generation."""
    net = study.build_network("paper")
    assert net.load.p_mw.sum() == pytest.approx(8.85765)
    assert round(net.sgen.p_mw.sum(), 2) == 7.61
    assert net.sgen.set_index("bus").p_mw.to_dict() == study.TABLE1_GENERATORS


def test_topology_uses_closed_lines_only(study: ModuleType) -> None:
    """The published graph leaves out the lines behind open switches S1, S2, S3."""
    topo = study.topology_of(study.build_network("paper"))
    assert topo.distance_m("5", "10") == 560 + 610 + 1300 + 320 + 770
    assert topo.distance_m("6", "7") == 1540 + 560 + 610 + 1300 + 1670  # S2 (6-7) is open


@pytest.mark.parametrize(("pool", "sign"), [(Pool.UP, 1), (Pool.DOWN, -1)])
def test_outcome_mapping_moves_asker_and_offeror(study: ModuleType, pool: Pool, sign: int) -> None:
    """AS+: asker's load +E, offeror's generation +matched; AS−: both the other way."""
    net = study.build_network("paper")
    load = int(net.load.index[net.load.name == "Load R5"][0])
    gen = int(net.sgen.index[net.sgen.bus == 4][0])
    p_load, p_gen = net.load.p_mw[load], net.sgen.p_mw[gen]
    price = Fraction("0.35")
    shouts = [
        Shout(f"sgen:{gen}", "g4", "4", 0, Side.OFFER, pool, 300_000, price, 0),
        Shout(f"load:{load}", "r5", "5", 1, Side.ASK, pool, 500_000, price, 0),
    ]
    topo = study.topology_of(net)
    trades = study.clear("cda", shouts, topo, None, study.Limits())
    assert [t.quantity_wh for t in trades] == [300_000]
    study.apply_outcome(net, shouts, trades, "grid")
    assert net.load.p_mw[load] == pytest.approx(p_load + sign * 0.5)  # full deviation
    assert net.sgen.p_mw[gen] == pytest.approx(p_gen + sign * 0.3)  # matched response


def test_small_run_writes_a_row_per_mechanism(study: ModuleType, tmp_path: Path) -> None:
    """N=3, one s: four rows with shares in [0, 1]; no market trades nothing, CDA does."""
    out = tmp_path / "study.csv"
    assert study.main(["--n", "3", "--s", "0.05", "--out", str(out)]) == 0
    rows = {r["mechanism"]: r for r in csv.DictReader(out.open())}
    assert sorted(rows) == ["cda", "ncda", "none", "ocda"]
    for row in rows.values():
        assert row["n"] == "3"
        assert 0.0 <= float(row["share_ok"]) <= 1.0
        assert float(row["share_ok"]) <= float(row["share_line_ok"])
        assert 0.9 < float(row["v_mean_pu"]) < 1.1
    assert float(rows["none"]["matched_mwh"]) == 0.0
    assert float(rows["cda"]["matched_mwh"]) > 0.0
