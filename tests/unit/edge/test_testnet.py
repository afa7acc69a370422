"""``lemctl testnet init``: keys, genesis and per-node configs that lemd can load."""

from __future__ import annotations

import json
import socket
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.cli.main import main
from edge.clock import DaemonClock
from edge.config import ConfigError, load_config
from edge.meter import build_driver
from edge.testnet import (
    TestnetError,
    TestnetPlan,
    free_port_block,
    init_testnet,
    load_manifest,
    set_anchor,
)
from ledger.genesis import Genesis
from ledger.keys import SigningKey
from market.amm import MarketParams
from meters.sim.meter import SimulatedMeter


def plan(tmp_path: Path, name: str = "tn", **kw: object) -> TestnetPlan:
    base = free_port_block(40, first=30000)
    args: dict[str, object] = {
        "validators": 4,
        "members": 19,
        "out_dir": tmp_path / name,
        "base_port": base,
        "speed": 1440.0,
    }
    args.update(kw)
    return TestnetPlan(**args)  # type: ignore[arg-type]


def test_pilot_testnet_loads_with_lemd_config_and_genesis(tmp_path: Path) -> None:
    """19 configs load with edge.config; roles, meters, keys and ports agree with the genesis."""
    manifest = init_testnet(plan(tmp_path))
    genesis = Genesis.from_json((manifest.root / "genesis.json").read_text())
    assert len(manifest.nodes) == 19
    assert [n.role for n in manifest.nodes] == ["validator"] * 4 + ["member"] * 15
    keys = []
    for node in manifest.nodes:
        config = load_config(manifest.config_path(node))
        assert config.node.role == node.role
        assert config.node.genesis_file is not None
        assert Genesis.from_json(config.node.genesis_file.read_text()).hash == genesis.hash
        assert config.meter.driver == "sim"
        assert config.meter.meter_id == node.meter_id
        assert config.ledger.chain_id == genesis.chain_id
        assert config.clock.speed == 1440.0
        key = SigningKey.load(config.key_file)  # refuses a key file open to others
        assert stat.S_IMODE(config.key_file.stat().st_mode) == 0o600
        assert key.public_key.hex() == node.public_key
        assert genesis.meters[node.meter_id] == key.public_key
        keys.append(key.public_key)
    assert {pk for pk, _ in genesis.validators} == set(keys[:4])
    assert {p for _, p in genesis.validators} == {10}
    listens = [n.api for n in manifest.nodes] + [n.metrics for n in manifest.nodes]
    assert len(set(listens)) == 38
    targets = json.loads((manifest.root / "prometheus-targets.json").read_text())
    assert [t["targets"] for t in targets] == [[n.metrics] for n in manifest.nodes]
    assert targets[0]["labels"] == {
        "node": "lic-h01",
        "role": "validator",
        "chain": manifest.chain_id,
    }
    admin = SigningKey.load(manifest.admin_key_path)
    assert genesis.admins == (admin.public_key,)
    assert len(genesis.governance_keys) == 3
    assert genesis.governance_threshold == 2


def test_meters_are_the_pilot_community(tmp_path: Path) -> None:
    """Each node runs its pilot meter: 4 PV houses = 37 kWp; kindergarten 27 kWp + 60 kWh."""
    manifest = init_testnet(plan(tmp_path))
    clock = DaemonClock(1.0, datetime(2026, 5, 15, tzinfo=UTC))
    specs = []
    for node in manifest.nodes:
        driver = build_driver(load_config(manifest.config_path(node)).meter, clock)
        assert isinstance(driver, SimulatedMeter)
        specs.append(driver.spec)
    houses = [s for s in specs if s.meter_id.startswith("lic-h")]
    assert len(houses) == 18
    assert sorted(s.pv_wp for s in houses if s.pv_wp) == [7_500, 8_500, 9_500, 11_500]
    kg = specs[-1]
    assert (kg.meter_id, kg.pv_wp, kg.battery_wh) == ("lic-kg", 27_000, 60_000)


def test_same_seed_gives_identical_files_and_another_seed_other_keys(tmp_path: Path) -> None:
    """Output is a pure function of the options (keys derived from seed and chain id)."""
    a = init_testnet(plan(tmp_path, "a", base_port=31000), check_ports=False)
    b = init_testnet(plan(tmp_path, "b", base_port=31000), check_ports=False)
    c = init_testnet(plan(tmp_path, "c", base_port=31000, seed=7), check_ports=False)
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert len(files) == 3 + 1 + 3 + 19 * 2
    for rel in files:
        assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes(), rel
    assert (a.root / "node0/node.key").read_bytes() != (c.root / "node0/node.key").read_bytes()


def test_random_keys_differ_between_runs(tmp_path: Path) -> None:
    """--random-keys draws fresh keys: two runs with the same seed share no key."""
    a = init_testnet(plan(tmp_path, "a", deterministic_keys=False, members=2, validators=1))
    b = init_testnet(plan(tmp_path, "b", deterministic_keys=False, members=2, validators=1))
    assert {n.public_key for n in a.nodes}.isdisjoint(n.public_key for n in b.nodes)
    assert "never production" not in (a.root / "node0/lemd.toml").read_text()


def test_periods_cover_the_days_with_valid_parameters(tmp_path: Path) -> None:
    """--days 3 from 06:30 gives three daily periods from the next midnight, accepted by the
    market; the genesis lies a day before the start."""
    m = init_testnet(plan(tmp_path, days=3, start="2026-06-01T06:30:00Z"))
    genesis = Genesis.from_json((m.root / "genesis.json").read_text())
    day1 = int(datetime(2026, 6, 2, tzinfo=UTC).timestamp() * 1000)
    assert [(p.period_id, p.start_ms, p.end_ms) for p in genesis.periods] == [
        ("2026-06-02", day1, day1 + 86_400_000),
        ("2026-06-03", day1 + 86_400_000, day1 + 2 * 86_400_000),
        ("2026-06-04", day1 + 2 * 86_400_000, day1 + 3 * 86_400_000),
    ]
    MarketParams.from_strings(genesis.periods[0].params)
    start_ms = int(datetime(2026, 6, 1, 6, 30, tzinfo=UTC).timestamp() * 1000)
    assert genesis.genesis_time_ms == start_ms - 86_400_000
    # 15 real seconds of grace and 5 of clock skew at 1440x, in simulated time.
    assert genesis.settle_grace_ms == 21_600_000
    assert genesis.clock_skew_ms == 7_200_000


def test_shorter_periods_tile_the_day(tmp_path: Path) -> None:
    """--period-hours 6 from 20:15 gives four back-to-back periods from the next boundary."""
    m = init_testnet(plan(tmp_path, period_hours=6, start="2026-05-14T20:15:00Z"))
    assert [p["period_id"] for p in m.periods] == [
        "2026-05-15T00",
        "2026-05-15T06",
        "2026-05-15T12",
        "2026-05-15T18",
    ]
    assert all(a["end_ms"] == b["start_ms"] for a, b in zip(m.periods, m.periods[1:], strict=False))
    assert m.periods[-1]["end_ms"] - m.periods[0]["start_ms"] == 86_400_000


def test_more_members_than_the_pilot_get_extra_simulated_houses(tmp_path: Path) -> None:
    """Members beyond the pilot's 19 run seeded custom houses the sim driver accepts."""
    m = init_testnet(plan(tmp_path, members=21, validators=4))
    config = load_config(m.config_path(m.nodes[20]))
    driver = build_driver(config.meter, DaemonClock())
    assert isinstance(driver, SimulatedMeter)
    assert driver.spec.meter_id == "sim-h021"
    assert 2_500 <= driver.spec.annual_kwh <= 6_500


def test_mqtt_311_for_brokers_without_mqtt5(tmp_path: Path) -> None:
    """--mqtt-version 4 reaches ledger.mqtt_version; the default writes nothing; 3 is refused."""
    m = init_testnet(plan(tmp_path, members=2, validators=1, mqtt_version=4))
    assert load_config(m.config_path(m.nodes[1])).ledger.mqtt_version == 4
    d = init_testnet(plan(tmp_path, "d", members=2, validators=1))
    assert "mqtt_version" not in d.config_path(d.nodes[0]).read_text()
    assert load_config(d.config_path(d.nodes[0])).ledger.mqtt_version == 5
    bad = d.config_path(d.nodes[0])
    bad.write_text(bad.read_text().replace("[market]", "mqtt_version = 3\n\n[market]"))
    with pytest.raises(ConfigError, match=r"ledger\.mqtt_version = 3: 5 or 4"):
        load_config(bad)


def test_anchor_is_pinned_in_every_config(tmp_path: Path) -> None:
    """After set_anchor all nodes' simulated clocks agree (same start and anchor)."""
    m = init_testnet(plan(tmp_path, members=3, validators=1))
    at = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    pinned = set_anchor(set_anchor(m, datetime(2029, 1, 1, tzinfo=UTC)), at)  # idempotent
    assert load_manifest(m.root).anchor == pinned.anchor == at.isoformat()
    clocks = [load_config(pinned.config_path(n)).clock for n in pinned.nodes]
    assert {(c.start, c.anchor) for c in clocks} == {(m.start, at.isoformat())}


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"validators": 5, "members": 4}, "--validators 5"),
        ({"validators": 0}, "--validators 0"),
        ({"speed": 0.0}, "--speed 0.0"),
        ({"broker": "tcp://x:1"}, "--broker 'tcp://x:1'"),
        ({"chain_id": "a/b"}, "--chain-id 'a/b'"),
        ({"start": "yesterday"}, "--start 'yesterday'"),
        ({"start": "now"}, "--start now runs on the real clock"),
        ({"period_hours": 5}, "--period-hours 5"),
    ],
)
def test_bad_options_are_named(tmp_path: Path, kw: dict[str, object], message: str) -> None:
    """Each refused option is named with its value; nothing is written."""
    p = plan(tmp_path, **kw)
    with pytest.raises(TestnetError, match=message.replace("(", r"\(")):
        init_testnet(p)
    assert not p.out_dir.exists()


def test_existing_testnet_and_busy_port_are_refused(tmp_path: Path) -> None:
    """A second init into the same folder, or onto a bound port, fails and keeps the first."""
    p = plan(tmp_path, members=2, validators=1)
    init_testnet(p)
    before = (p.out_dir / "genesis.json").read_bytes()
    with pytest.raises(TestnetError, match="already holds a testnet"):
        init_testnet(p)
    assert (p.out_dir / "genesis.json").read_bytes() == before
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(TestnetError, match=f"port {port} is in use"):
            init_testnet(plan(tmp_path, "other", members=2, validators=1, base_port=port))


def test_cli_init_and_anchor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """lemctl testnet init writes the folder (exit 0); a bad option exits 2 naming it."""
    base = free_port_block(8, first=32000)
    argv = ["testnet", "init", "--validators", "2", "--members", "3", "--dir", str(tmp_path / "t")]
    assert main([*argv, "--speed", "60", "--base-port", str(base)]) == 0
    out = capsys.readouterr().out
    assert "lic-h03" in out
    assert "lemctl testnet anchor" in out
    assert main(["testnet", "anchor", "--dir", str(tmp_path / "t"), "--in", "2"]) == 0
    assert load_manifest(tmp_path / "t").anchor
    assert main([*argv[:-1], str(tmp_path / "u"), "--validators", "9"]) == 2
    assert "--validators 9" in capsys.readouterr().err


def test_readme_testnet_lines_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's `lemctl testnet` lines run as written (folder swapped for a temp dir)."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    lines = [
        ln.split("#")[0].split() for ln in readme.splitlines() if ln.startswith("lemctl testnet")
    ]
    assert [ln[2] for ln in lines] == ["init", "anchor"]
    for argv in lines:
        argv = [str(tmp_path / "lugaggia") if a == "/tmp/lugaggia" else a for a in argv[1:]]
        if argv[1] == "init":
            argv += ["--base-port", str(free_port_block(38, first=36000))]
        assert main(argv) == 0, capsys.readouterr().err
    manifest = load_manifest(tmp_path / "lugaggia")
    assert len(manifest.nodes) == 19
    assert manifest.anchor
    assert "lemd --config /tmp/lugaggia/node0/lemd.toml" in readme


def test_pseudonymous_testnet_keeps_serials_off_genesis_names_and_targets(tmp_path: Path) -> None:
    """--privacy pseudonymous: the genesis lists pseudonyms (no serial anywhere in it, nor in
    node names, the manifest or the Prometheus targets); the admin's store maps each back; each
    node's admission recomputes its own pseudonym from its meter; the same seed gives the same
    genesis."""
    from edge.privacy import Admission, IdentityStore
    from ledger import privacy

    a = init_testnet(plan(tmp_path, "a", members=6, privacy="pseudonymous"), check_ports=False)
    b = init_testnet(plan(tmp_path, "b", members=6, privacy="pseudonymous"), check_ports=False)
    serials = ["lic-h01", "lic-h02", "lic-h03", "lic-h04", "lic-h05", "lic-h06"]
    genesis = Genesis.from_json((a.root / "genesis.json").read_text())
    assert genesis.privacy == "pseudonymous"
    assert all(privacy.is_pseudonym(m) for m in genesis.meters)
    public = "".join(
        (a.root / f).read_text()
        for f in ("genesis.json", "testnet.json", "prometheus-targets.json")
    )
    assert [s for s in serials if s in public] == []
    assert [n.name for n in a.nodes] == [f"node{k}" for k in range(6)]
    assert (a.root / "genesis.json").read_bytes() == (b.root / "genesis.json").read_bytes()
    store = IdentityStore.open(a.root / "admin" / "identity")
    for node, serial in zip(a.nodes, serials, strict=True):
        ident = store.lookup(node.meter_id)
        assert (ident.serial, ident.account) == (serial, node.public_key)
        assert genesis.meters[node.meter_id].hex() == node.public_key
        admission = Admission.load(a.root / node.dir / "data" / "admission.json")
        assert admission.pseudonym_of(serial) == node.meter_id
        config = load_config(a.config_path(node))
        assert config.meter.meter_id == serial  # the simulated meter's own id, in its own config
    assert load_manifest(a.root).privacy == "pseudonymous"


def test_cli_privacy_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """lemctl testnet init --privacy pseudonymous writes a pseudonymous genesis; a bad value is
    refused by the parser (exit 2)."""
    base = str(free_port_block(8, first=33000))
    args = ["testnet", "init", "--validators", "1", "--members", "2", "--base-port", base]
    assert main([*args, "--dir", str(tmp_path / "p"), "--privacy", "pseudonymous"]) == 0
    assert "privacy: pseudonymous" in capsys.readouterr().out
    assert Genesis.from_json((tmp_path / "p/genesis.json").read_text()).privacy == "pseudonymous"
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--dir", str(tmp_path / "q"), "--privacy", "secret"])
    assert exit_info.value.code == 2
