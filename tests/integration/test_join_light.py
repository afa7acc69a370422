"""First-boot join of a light member (the default for a non-validator) on real mosquitto.

The node is provisioned from a community file exactly as the image's first boot does
(edge/provision.py) and runs the light lemd (edge/light_daemon.py), which keeps no ledger
state: its join task proves its own ``join/req/`` and ``join/member/`` rows against verified
headers and submits its JoinRequest through the light submitter (docs/spec/join.md §4a). The
admin approves with ``lemctl member approve``; the node's slots then commit under its meter id
(open chain) or its pseudonym (pseudonymous chain). Also: a ``POST /measure`` accepted with 202
survives a kill of the lemd process before commit, and commits after the restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge.config import load_config
from edge.daemon import Daemon, load_or_create_key
from edge.http import request
from edge.light_daemon import LightDaemon
from edge.outbox import Outbox
from edge.privacy import IdentityStore
from edge.provision import Paths, provision
from edge.sdnotify import Notifier
from ledger import state
from tests.integration.test_join import (
    NEW_METER,
    ROOT,
    Community,
    _lemctl,
    community_file,
    make_testnet,
    measured,
    start_new_node,
)
from tests.integration.test_join_sealed import NEW_SERIAL, make_pseudonymous_testnet, measured_by
from tests.integration.test_mqtt_security import SecureBroker, secure_broker  # noqa: F401
from tests.support.lemd import SIM_START, free_port, running_daemon, until
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.slow


def phase(config: Path) -> str:
    data_dir = load_config(config).node.data_dir
    return str(json.loads((data_dir / "join.json").read_text())["phase"])


@asynccontextmanager
async def light_member(config: Path) -> AsyncIterator[LightDaemon]:
    """The provisioned node as lemd runs it: a light member (its key is no validator)."""
    cfg = load_config(config)
    daemon = LightDaemon(cfg, load_or_create_key(cfg.key_file), Notifier({}))
    task = asyncio.create_task(daemon.run(), name="light-member")
    try:
        yield daemon
    finally:
        daemon.stop_event.set()
        assert await asyncio.wait_for(task, 20) == 0


async def _approve(config: Path, account: str, admin_key: Path, *extra: str) -> str:
    code, out = await _lemctl(
        "member", "approve", account, "--key", str(admin_key), "--config", str(config),
        "--timeout", "20", *extra,
    )  # fmt: skip
    assert code == 0, out
    return out


def _secure_testnet(tmp_path: Path, sb: SecureBroker) -> Community:
    """make_testnet's validator as ACL user "v1" (password over TLS) of the shipped broker."""
    net = make_testnet(tmp_path, SimpleNamespace(url=sb.password_url))  # type: ignore[arg-type]
    secret = tmp_path / "v1.pw"
    secret.write_text("v1-secret")
    text = net.validator.config.read_text().replace('name = "validator"', 'name = "v1"')
    net.validator.config.write_text(
        text.replace(
            "resign_timeout_s = 3\n",
            f'resign_timeout_s = 3\nusername = "v1"\npassword_file = "{secret}"\n'
            f'ca_file = "{sb.pki.ca_cert}"\n',
        )
    )
    return net


async def _start_secure_node(tmp_path: Path, net: Community, sb: SecureBroker) -> Path:
    """Provision as the image does, from a community file naming the broker's CA and this
    node's MQTT account "m2" (no validator rights in the ACL)."""
    path = community_file(tmp_path, net)
    shutil.copy(sb.pki.ca_cert, path.parent / "ca.pem")
    (path.parent / "m2.pw").write_text("m2-secret\n")
    text = path.read_text().replace(
        'genesis_file = "genesis.json"', 'genesis_file = "genesis.json"\nca_file = "ca.pem"'
    )
    path.write_text(
        text.replace(
            'role = "member"', 'role = "member"\nname = "m2"\nmqtt_password_file = "m2.pw"'
        )
    )
    paths = Paths(tmp_path / "root")
    await provision(path, paths)
    config = paths.etc / "lemd.toml"
    api = f"127.0.0.1:{free_port()}"
    with config.open("a") as f:
        f.write(
            f'\n[api]\nlisten = "{api}"\n\n[metrics]\nlisten = "{api}"\n\n'
            f'[clock]\nspeed = 900.0\nstart = "{SIM_START.isoformat()}"\n'
            f'anchor = "{net.anchor.isoformat()}"\n'
        )
    return config


async def test_light_member_joins_an_open_chain_through_the_shipped_acl(
    tmp_path: Path,
    secure_broker: SecureBroker,  # noqa: F811 -- the fixture imported above
) -> None:
    """Provisioned light node on the shipped broker config and ACL (TLS, passwords; its
    account "m2" has member rights only): JoinRequest via the light submitter,
    waiting_for_approval from its proven join/req row (its records held, none signed), lemctl
    member approve (its own connection, through the ACL), measuring from its proven
    own/<key>/<meter> row, then its slots commit on the validator's chain."""
    net = _secure_testnet(tmp_path, secure_broker)
    config = await _start_secure_node(tmp_path, net, secure_broker)
    admin_key = tmp_path / "admin.key"
    net.validator.admin.save(admin_key)
    async with running_daemon(net.validator) as validator, light_member(config) as new:
        assert not (new.config.node.data_dir / "ledger").exists()
        await until(lambda: phase(config) == "waiting_for_approval", 15, "request proven")
        await until(lambda: new.outbox.depth() >= 2, 10, "slots measured while waiting")
        assert measured(validator, NEW_METER) == 0
        assert new.submitter.stats["sent"] == 0  # held: not signed before admission
        account = new.key.public_key.hex()
        out = await _approve(net.validator.config, account, admin_key)
        assert "via admin: meter lic-h09" in out
        await until(lambda: phase(config) == "measuring", 15, "admission proven")
        await until(lambda: measured(validator, NEW_METER) >= 2, 15, "new meter's slots")
        await until(lambda: new.submitter.committed >= 2, 15, "acknowledged by proof")
        assert new.outbox.rejected() == []
        assert new.status()["join"]["phase"] == "measuring"


async def test_light_member_joins_a_pseudonymous_chain_sealed(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """The sealed JoinRequest from a light node: approve with the identity store, the node
    proves its join/member row, opens its admission and measures under the pseudonym; the
    serial is in no block, state value, log line or the node's status."""
    caplog.set_level(logging.DEBUG)
    net, store_dir = make_pseudonymous_testnet(tmp_path, mosquitto)
    config, _ = await start_new_node(tmp_path, net)
    admin_key = tmp_path / "admin.key"
    net.validator.admin.save(admin_key)
    async with running_daemon(net.validator) as validator, light_member(config) as new:
        await until(lambda: phase(config) == "waiting_for_approval", 15, "request proven")
        out = await _approve(
            net.validator.config, new.key.public_key.hex(), admin_key,
            "--store", str(store_dir), "--member", "contract-9",
        )  # fmt: skip
        pseudonym = next(
            i.pseudonym for i in IdentityStore.open(store_dir).identities()
            if i.serial == NEW_SERIAL
        )  # fmt: skip
        assert f"admitted in the identity store as {pseudonym}" in out
        await until(lambda: phase(config) == "measuring", 15, "admission proven and opened")
        assert (new.config.node.data_dir / "admission.json").exists()
        await until(lambda: measured_by(validator, pseudonym) >= 2, 15, "slots committed")
        status = json.dumps(new.status())
        assert validator.parts is not None
        store = validator.parts.node.app.store
        blocks = b"".join(store.block(h) or b"" for h in range(1, store.height + 1))
        with store.state_reader() as base:
            values = b"".join(k + v for k, v in base.scan(b"", b"\xff"))
    assert NEW_SERIAL.encode() not in blocks + values
    assert pseudonym in status
    assert NEW_SERIAL not in status
    lines = [r.getMessage() + str(r.__dict__) for r in caplog.records]
    assert len(lines) > 10
    assert [line for line in lines if NEW_SERIAL in line] == []


def _lemd(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "edge.daemon", "--config", str(config)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip


async def _pending_slots(api: str) -> set[int] | None:
    """The outbox's waiting slots [s], or None while the restarted lemd does not listen yet."""
    try:
        status, answer = await request(api, "GET", "/outbox?limit=1000")
    except OSError:
        return None
    assert status == 200, answer
    return {int(r["slot_start_s"]) for r in answer["pending"]}


async def test_a_post_accepted_before_a_kill_commits_after_the_restart(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """lemd (a light member process, admitted by certificate) answers POST /measure 202; it is
    SIGKILLed at once: the record is in its outbox on disk (an acknowledgement needs an
    inclusion proof a block later, so it cannot have left); restarted, lemd signs it again and
    the value is committed and the record acknowledged by proof."""
    net = make_testnet(tmp_path, mosquitto, certified=(NEW_METER,))
    config, api = await start_new_node(tmp_path, net)
    slot_ms = int(SIM_START.timestamp() * 1000) - 96 * state.SLOT_MS  # a day before the meter
    body = {"meter_id": NEW_METER, "slot_start_ms": slot_ms, "import_wh": 777, "export_wh": 3}
    log = tmp_path / "lemd.log"
    async with running_daemon(net.validator) as validator:
        proc = _lemd(config, log)
        try:
            await until(lambda: phase(config) == "measuring", 15, "admitted by certificate")
            status, answer = await request(api, "POST", "/measure", body)
            assert status == 202, answer
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
            box = Outbox(load_config(config).node.data_dir / "outbox")
            try:
                assert box.get(NEW_METER, slot_ms // 1000) is not None
            finally:
                box.close()
            proc = _lemd(config, log)
            key = state.k_measure(slot_ms, NEW_METER)
            await until(lambda: _value(validator, key) is not None, 15, "posted slot committed")
            assert _value(validator, key)[:2] == [777, 3]  # type: ignore[index]
            async with asyncio.timeout(10):  # acknowledged by proof: leaves the outbox
                while (slots := await _pending_slots(api)) is None or slot_ms // 1000 in slots:  # noqa: ASYNC110 -- polls an API
                    await asyncio.sleep(0.2)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)


def _value(validator: Daemon, key: bytes) -> list[int] | None:
    assert validator.parts is not None
    with validator.parts.node.app.store.state_reader() as base:
        return state.Overlay(base).get_value(key)  # type: ignore[no-any-return]
