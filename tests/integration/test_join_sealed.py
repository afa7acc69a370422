"""First-boot join on a pseudonymous chain, on real mosquitto (docs/spec/join.md §6).

A node provisioned from nothing but a community file sends its serial sealed to the admin;
``lemctl member approve --store --member`` opens it, admits the meter in the admin's identity
store and answers with the pseudonym and the node's sealed admission; the node then measures
under the pseudonym. The serial appears in no block, no state value and no log line.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.config import load_config
from edge.daemon import Daemon
from edge.privacy import IdentityStore
from edge.sdnotify import Notifier
from ledger import state
from ledger.genesis import Genesis, Period
from ledger.keys import SigningKey
from tests.integration.test_join import Community, _lemctl, join_phase, start_new_node
from tests.support.lemd import PARAMS, SIM_START, make_node, running_daemon, until
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.slow

NEW_SERIAL = "lic-h09"  # the community file's simulated meter: its id plays the serial


def make_pseudonymous_testnet(tmp_path: Path, broker: Mosquitto) -> tuple[Community, Path]:
    """One validator whose own meter is admitted under a pseudonym; returns the community and
    the admin's identity store directory."""
    vkey, admin = SigningKey.generate(), SigningKey.generate()
    store_dir = tmp_path / "admin-identity"
    own = IdentityStore.create(store_dir, "lemd-test").admit(
        "validator", "lic-h03", vkey.public_key
    )
    start_ms = int(SIM_START.timestamp() * 1000)
    span = 6 * 3_600_000
    genesis = Genesis(
        chain_id="lemd-test",
        genesis_time_ms=start_ms - 60_000,
        validators=((vkey.public_key, 1),),
        admins=(admin.public_key,),
        governance_keys=(admin.public_key,),
        governance_threshold=1,
        meters={own.pseudonym: vkey.public_key},
        periods=tuple(
            Period(f"p{i}", start_ms + i * span, start_ms + (i + 1) * span, PARAMS)
            for i in range(4)
        ),
        privacy="pseudonymous",
    )
    anchor = datetime.now(UTC) + timedelta(seconds=2)
    validator = make_node(
        tmp_path / "validator", key=vkey, genesis=genesis, admin=admin, meter_id="lic-h03",
        anchor=anchor, brokers=(broker.url,), speed=900.0,
    )  # fmt: skip
    own.save(validator.data_dir / "admission.json")
    return Community(validator, genesis, broker, anchor), store_dir


def measured_by(validator: Daemon, meter_id: str) -> int:
    assert validator.parts is not None
    with validator.parts.node.app.store.state_reader() as base:
        keys = [k for k, _ in base.scan(b"meas/", state.prefix_end(b"meas/"))]
    return sum(1 for k in keys if k.endswith(b"/" + meter_id.encode()))


async def test_sealed_first_boot_join_measures_under_a_pseudonym(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """Community file → sealed JoinRequest → approve with the identity store → the node saves
    its admission and its slots commit under the pseudonym; the serial is in no block, state
    value, log line or lemctl output."""
    caplog.set_level(logging.DEBUG)
    net, store_dir = make_pseudonymous_testnet(tmp_path, mosquitto)
    config, _ = await start_new_node(tmp_path, net)
    assert NEW_SERIAL not in load_config(config).node.name
    admin_key = tmp_path / "admin.key"
    net.validator.admin.save(admin_key)
    outputs = []
    async with running_daemon(net.validator) as validator:
        new = Daemon(load_config(config), notifier=Notifier({}))
        await new.open()
        task = asyncio.create_task(new.run(), name="new-node")
        try:
            await until(lambda: join_phase(new) == "waiting_for_approval", 30, "request committed")
            assert new.parts is not None
            account = new.parts.key.public_key.hex()
            code, out = await _lemctl(
                "member", "list", "--config", str(net.validator.config), "--key", str(admin_key)
            )
            assert code == 0, out
            assert f"{account}  meter -  (sealed to the admin)" in out
            outputs.append(out)
            code, out = await _lemctl(
                "member", "approve", account, "--key", str(admin_key), "--config",
                str(net.validator.config), "--timeout", "20", "--store", str(store_dir),
                "--member", "contract-9",
            )  # fmt: skip
            assert code == 0, out
            outputs.append(out)
            pseudonym = next(
                i.pseudonym for i in IdentityStore.open(store_dir).identities()
                if i.serial == NEW_SERIAL
            )  # fmt: skip
            assert f"admitted in the identity store as {pseudonym}" in out
            await until(lambda: join_phase(new) == "measuring", 20, "admission seen by the node")
            await until(lambda: measured_by(validator, pseudonym) >= 2, 30, "slots committed")
            assert validator.parts is not None
            store = validator.parts.node.app.store
            blocks = b"".join(store.block(h) or b"" for h in range(1, store.height + 1))
            with store.state_reader() as base:
                values = b"".join(k + v for k, v in base.scan(b"", b"\xff"))
        finally:
            new.stop_event.set()
            assert await asyncio.wait_for(task, 20) == 0
    assert NEW_SERIAL.encode() not in blocks
    assert NEW_SERIAL.encode() not in values
    assert [o for o in outputs if NEW_SERIAL in o] == []
    lines = [r.getMessage() + str(r.__dict__) for r in caplog.records]
    assert len(lines) > 10
    assert [line for line in lines if NEW_SERIAL in line] == []
