"""lemd in light member mode (``ledger.member_mode = "light"``) against 4 real validators over
mosquitto: its simulated meter's slots are signed, committed and acknowledged from
tx-inclusion proofs, with no block on the member; ``lemctl status --json`` shows the verified
header and role "member"."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli.main import main as lemctl
from edge.config import load_config
from edge.light_daemon import LightDaemon
from edge.sdnotify import Notifier
from ledger import state
from ledger.genesis import Genesis, Period
from tests.integration.test_consensus_mqtt import VALIDATORS, MqttCommunity
from tests.support.lemd import PARAMS, SIM_START, make_node
from tests.support.mosquitto import Mosquitto
from tests.unit.ledger.helpers import ADMIN, N1

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
METER = "lic-h07"
START_MS = int(SIM_START.timestamp() * 1000)


def _genesis() -> Genesis:
    return Genesis(
        chain_id="lemd-test",
        genesis_time_ms=START_MS - 60_000,
        validators=tuple((k.public_key, 10) for k in VALIDATORS),
        admins=(ADMIN.public_key,),
        governance_keys=(ADMIN.public_key,),
        governance_threshold=1,
        meters={METER: N1.public_key},
        periods=(Period("p0", START_MS, START_MS + 24 * 3_600_000, PARAMS),),
    )


def _committed_slots(c: MqttCommunity) -> int:
    prefix = b"meas/"
    with c.nodes["v0"].store.state_reader() as base:
        return sum(
            1 for k, _ in base.scan(prefix, state.prefix_end(prefix)) if k.endswith(METER.encode())
        )


async def test_light_lemd_commits_its_slots_by_proof(
    tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    """The light member's SetMeasure records leave its outbox only once a validator proved
    their inclusion against a verified header; its light store holds headers, no blocks."""
    c = MqttCommunity(tmp_path, mosquitto, heartbeat_ms=1000)
    c.genesis = _genesis()
    node = make_node(tmp_path / "member", key=N1, genesis=c.genesis, meter_id=METER,
                     brokers=(mosquitto.url,))  # fmt: skip
    node.config.write_text(
        node.config.read_text().replace(
            "resign_timeout_s = 3\n", 'resign_timeout_s = 3\nmember_mode = "light"\n'
        )
    )
    daemon = LightDaemon(load_config(node.config), N1, Notifier({}))
    try:
        for i, key in enumerate(VALIDATORS):
            await c.start(f"v{i}", key)
        task = asyncio.create_task(daemon.run(), name="light-lemd")
        await c.until(lambda: daemon.submitter.committed >= 3, 60)
        assert not task.done()
        assert _committed_slots(c) >= 3
        assert daemon.light.height >= 1
        assert not (node.data_dir / "ledger").exists()  # no block store on a light member

        code = await asyncio.to_thread(lemctl, ["--config", str(node.config), "status", "--json"])
        status = json.loads(capsys.readouterr().out)
        assert code == 0
        assert status["role"] == {"access": "light", "consensus": "member", "mode": "light"}
        header = daemon.light.header(status["height"])
        assert header is not None
        assert status["app_hash"] == header.app_hash.hex()
        assert c.nodes["v0"].store.height_of(bytes.fromhex(status["hash"])) == status["height"]
        code = await asyncio.to_thread(lemctl, ["--config", str(node.config), "status"])
        table = capsys.readouterr().out
        assert code == 0
        assert "member, light, light mode" in table
        # Its own process, as an operator runs it (LMDB: one open per process).
        show = [sys.executable, "-m", "edge.cli.main", "--config", str(node.config), "ledger",
                "show", "--height", "2", "--json"]  # fmt: skip
        done = await asyncio.to_thread(
            subprocess.run, show, capture_output=True, text=True, cwd=ROOT, check=False
        )
        assert done.returncode == 0, done.stderr
        shown = json.loads(done.stdout)
        assert shown["light"] is True
        assert c.nodes["v0"].store.height_of(bytes.fromhex(shown["hash"])) == 2
        assert shown["app_hash"] == c.nodes["v0"].store.app_hash_at(2).hex()  # type: ignore[union-attr]
        code = await asyncio.to_thread(lemctl, ["--config", str(node.config), "ledger", "verify"])
        assert code == 2
        assert "light member" in capsys.readouterr().err
        daemon.stop_event.set()
        assert await asyncio.wait_for(task, 10) == 0
    finally:
        daemon.stop_event.set()
        await c.stop_all()
