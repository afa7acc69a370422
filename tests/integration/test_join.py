"""A node started from nothing but a community file joins a running testnet on real mosquitto.

The validator is an in-process lemd (BFT mode over MQTT); the new node is provisioned by
edge/provision.py from ``lem-community.toml`` (simulated meter) and runs as a second in-process
lemd. The admin approves with ``lemctl member approve``; a certified meter needs no approval.
Also: meter discovery over a real pty, and the broker check's texts (unreachable, wrong CA).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.config import load_config
from edge.daemon import Daemon
from edge.join import JoinState, check_broker
from edge.meter_discovery import MeterNotFoundError, discover_meter
from edge.provision import Paths, provision
from edge.sdnotify import Notifier
from ledger import state
from ledger.apps import join as join_app
from ledger.genesis import Genesis, Period
from ledger.keys import SigningKey
from meters.devices.iec_endpoint import IecEndpoint, StaticRegisters, reading_registers
from meters.reading import Reading
from tests.support.lemd import (
    PARAMS,
    SIM_START,
    NodeDir,
    free_port,
    make_node,
    running_daemon,
    until,
)
from tests.support.mosquitto import Mosquitto
from tests.support.tls import Pki

pytestmark = pytest.mark.slow

NEW_METER = "lic-h09"
ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Community:
    validator: NodeDir
    genesis: Genesis
    broker: Mosquitto
    anchor: datetime


def make_testnet(tmp_path: Path, broker: Mosquitto, certified: tuple[str, ...] = ()) -> Community:
    """One validator (owning lic-h03) on ``broker``; the admin is a key of no node."""
    vkey, admin = SigningKey.generate(), SigningKey.generate()
    start_ms = int(SIM_START.timestamp() * 1000)
    span = 6 * 3_600_000
    genesis = Genesis(
        chain_id="lemd-test",
        genesis_time_ms=start_ms - 60_000,
        validators=((vkey.public_key, 1),),
        admins=(admin.public_key,),
        governance_keys=(admin.public_key,),
        governance_threshold=1,
        meters={"lic-h03": vkey.public_key},
        periods=tuple(
            Period(f"p{i}", start_ms + i * span, start_ms + (i + 1) * span, PARAMS)
            for i in range(4)
        ),
        certified_meters=certified,
    )
    anchor = datetime.now(UTC) + timedelta(seconds=2)
    validator = make_node(
        tmp_path / "validator", key=vkey, genesis=genesis, admin=admin, meter_id="lic-h03",
        anchor=anchor, brokers=(broker.url,), speed=900.0,
    )  # fmt: skip
    return Community(validator, genesis, broker, anchor)


def community_file(tmp_path: Path, net: Community) -> Path:
    """The boot partition of a freshly flashed node: the community file and its genesis."""
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "genesis.json").write_text(net.genesis.to_json())
    (boot / "lem-community.toml").write_text(
        f"""
[community]
chain_id = "lemd-test"
brokers = ["{net.broker.url}"]
genesis_file = "genesis.json"
genesis_sha256 = "{net.genesis.hash.hex()}"

[node]
role = "member"

[meter]
driver = "sim"
meter_id = "{NEW_METER}"
poll_interval_s = 0.5
"""
    )
    return boot / "lem-community.toml"


async def start_new_node(tmp_path: Path, net: Community) -> tuple[Path, str]:
    """Provision from the community file; add only what a test host needs (ports, sim clock)."""
    paths = Paths(tmp_path / "root")
    await provision(community_file(tmp_path, net), paths)
    config = paths.etc / "lemd.toml"
    api = f"127.0.0.1:{free_port()}"
    with config.open("a") as f:
        f.write(
            f'\n[api]\nlisten = "{api}"\n\n[metrics]\nlisten = "{api}"\n\n'
            f'[clock]\nspeed = 900.0\nstart = "{SIM_START.isoformat()}"\n'
            f'anchor = "{net.anchor.isoformat()}"\n'
        )
    return config, api


def measured(daemon: Daemon, meter_id: str) -> int:
    """Committed SetMeasure records of ``meter_id`` in ``daemon``'s ledger."""
    assert daemon.parts is not None
    with daemon.parts.node.app.store.state_reader() as base:
        return sum(
            1
            for k, _ in base.scan(b"meas/", state.prefix_end(b"meas/"))
            if k.endswith(b"/" + NEW_METER.encode())
        )


def join_phase(daemon: Daemon) -> str:
    assert daemon.parts is not None
    return JoinState.load(daemon.parts.config.node.data_dir).phase


async def _lemctl(*args: str) -> tuple[int, str]:
    """lemctl as its own process (as the admin runs it; LMDB allows one env per process)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge.cli.main", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return await proc.wait(), out.decode()


async def test_new_node_waits_cannot_write_then_is_approved_and_measures(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Community file only → joining/syncing → waiting (no slot on the ledger) → lemctl member
    approve → measuring, and the new meter's slots commit on the validator's chain."""
    net = make_testnet(tmp_path, mosquitto)
    config, _ = await start_new_node(tmp_path, net)
    admin_key = tmp_path / "admin.key"
    net.validator.admin.save(admin_key)
    async with running_daemon(net.validator) as validator:
        new = Daemon(load_config(config), notifier=Notifier({}))
        await new.open()
        task = asyncio.create_task(new.run(), name="new-node")
        try:
            await until(lambda: join_phase(new) == "waiting_for_approval", 30, "request committed")
            assert new.parts is not None
            await until(lambda: new.parts.meter.records_written >= 4, 20, "slots measured")  # type: ignore[union-attr]
            assert measured(validator, NEW_METER) == 0  # pending: never able to write
            code, out = await _lemctl(
                "member", "list", "--config", str(net.validator.config), "--key", str(admin_key)
            )
            assert code == 0, out
            assert f"1 waiting:\n  {new.parts.key.public_key.hex()}  meter {NEW_METER}" in out
            code, out = await _lemctl(
                "member", "status", "--data-dir", str(new.parts.config.node.data_dir)
            )
            assert code == 0, out
            assert "phase      waiting_for_approval" in out
            code, out = await _lemctl(
                "member", "approve", new.parts.key.public_key.hex(), "--key", str(admin_key),
                "--config", str(net.validator.config), "--timeout", "20",
            )  # fmt: skip
            assert code == 0, out
            assert "admitted at height" in out
            assert "via admin: meter lic-h09" in out
            await until(lambda: join_phase(new) == "measuring", 20, "admission seen by the node")
            await until(lambda: measured(validator, NEW_METER) >= 2, 30, "new meter's slots")
        finally:
            new.stop_event.set()
            assert await asyncio.wait_for(task, 20) == 0


async def test_certified_meter_joins_without_approval(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A meter id on the genesis certified list: the node reaches measuring with no approval."""
    net = make_testnet(tmp_path, mosquitto, certified=(NEW_METER,))
    config, _ = await start_new_node(tmp_path, net)
    async with running_daemon(net.validator) as validator:
        new = Daemon(load_config(config), notifier=Notifier({}))
        await new.open()
        task = asyncio.create_task(new.run(), name="new-node")
        try:
            await until(lambda: join_phase(new) == "measuring", 30, "admitted by certificate")
            await until(lambda: measured(validator, NEW_METER) >= 1, 30, "new meter's slots")
            assert validator.parts is not None
            with validator.parts.node.app.store.state_reader() as base:
                member = join_app.member(state.Overlay(base), new.parts.key.public_key)  # type: ignore[union-attr]
            assert member is not None
            assert member["via"] == "certified"
        finally:
            new.stop_event.set()
            assert await asyncio.wait_for(task, 20) == 0


async def test_meter_discovery_over_a_pty(tmp_path: Path) -> None:
    """discover_meter finds the IEC meter on the second port and reads its id; a silent port
    and a missing port are listed with their reasons when nothing answers."""
    meter = Reading("12345678", 1_234_567, 89_012, -1250)
    endpoint = IecEndpoint(StaticRegisters(reading_registers(meter)))
    silent = IecEndpoint(StaticRegisters(reading_registers(meter)), silent=True)
    port, dead = await endpoint.start(), await silent.start()
    try:
        found = await discover_meter([dead, port], drivers=("iec",))
        assert (found.driver, found.port, found.meter_id) == ("iec", port, "12345678")
        assert found.identification.startswith("/LEM")
        with pytest.raises(MeterNotFoundError) as caught:
            await discover_meter([dead, "/dev/ttyNOPE0"], drivers=("iec",))
        assert f"{dead} iec: IEC 62056-21: no answer" in str(caught.value)
        assert "/dev/ttyNOPE0 iec:" in str(caught.value)
    finally:
        await endpoint.close()
        await silent.close()


async def test_broker_check_names_unreachable_and_wrong_certificate(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    """check_broker: '' for a working broker; 'broker unreachable' for a closed port;
    'certificate wrong' for a TLS broker whose certificate the given CA did not sign."""
    plain = mosquitto_factory()
    assert await check_broker(plain.url, None) == ""
    closed = f"mqtt://127.0.0.1:{free_port()}"
    assert (await check_broker(closed, None)).startswith(f"broker unreachable: {closed}")
    pki = Pki.create(tmp_path / "pki")
    server = pki.issue("127.0.0.1", server=True)
    tls = mosquitto_factory(
        extra_config=[f"cafile {pki.ca_cert}", f"certfile {server.cert}", f"keyfile {server.key}"]
    )
    assert await check_broker(tls.url, pki.ca_cert) == ""
    other = Pki.create(tmp_path / "other").ca_cert
    assert (await check_broker(tls.url, other)).startswith("certificate wrong:")
