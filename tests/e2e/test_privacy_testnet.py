"""A pseudonymous testnet (``lemctl testnet init --privacy pseudonymous``) as real lemd processes
on a real mosquitto: SetMeasure commits under pseudonyms and no node's log names a serial."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge.launch import Community, wait_for
from edge.privacy import IdentityStore
from edge.testnet import TestnetPlan, free_port_block, init_testnet
from ledger import block as blk
from ledger import privacy
from ledger import tx as txm
from ledger.store import Store
from tests.e2e.test_community import committed_everywhere
from tests.support.mosquitto import Mosquitto

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
LEVEL_INFO, LEVEL_DEBUG = 'level = "info"', 'level = "debug"'


def committed_meter_ids(store_dir: Path) -> set[str]:
    """The meter id of every committed SetMeasure in the store at ``store_dir``."""
    store = Store(store_dir, readonly=True)
    try:
        ids = set()
        for height in range(1, store.height + 1):
            for raw in blk.decode(store.block(height) or b"").txs:
                tx = txm.decode(raw)
                if tx.kind == "SetMeasure":
                    ids.add(str(tx.body["meter_id"]))
        return ids
    finally:
        store.close()


async def test_pseudonymous_testnet_measures_under_pseudonyms_and_logs_no_serial(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """3 validators + 1 member at 900x: every node gets a slot committed; the committed meter
    ids are exactly the genesis pseudonyms; neither the genesis nor any node's log (or the
    broker-facing node names) holds a meter serial."""
    manifest = init_testnet(
        TestnetPlan(
            validators=3,
            members=4,
            out_dir=tmp_path / "testnet",
            broker=mosquitto.url,
            speed=900.0,
            chain_id="e2e-ps",
            base_port=free_port_block(8, first=35000),
            privacy="pseudonymous",
        )
    )
    identities = IdentityStore.open(manifest.root / "admin" / "identity").identities()
    serials = {i.serial for i in identities}
    pseudonyms = {n.meter_id for n in manifest.nodes}
    assert len(serials) == 4
    assert {i.pseudonym for i in identities} == pseudonyms
    assert all(privacy.is_pseudonym(p) for p in pseudonyms)
    assert not any(s in (manifest.root / "genesis.json").read_text() for s in serials)
    for node in manifest.nodes:  # debug: every log line a node can write is scanned
        path = manifest.config_path(node)
        path.write_text(path.read_text().replace(LEVEL_INFO, LEVEL_DEBUG))
    running = Community(manifest)
    running.anchor(lead_s=2.0)
    running.start()
    try:
        await wait_for(lambda: committed_everywhere(running, 1), 60, what="a slot per node")
        assert running.exited() == []
    finally:
        running.stop()
    assert committed_meter_ids(manifest.root / "node0" / "data" / "ledger") == pseudonyms
    logs = {n.dir: (manifest.root / n.dir / "lemd.log").read_text() for n in manifest.nodes}
    assert all(len(text) > 200 for text in logs.values())  # the logs were written
    pattern = re.compile("|".join(re.escape(s) for s in sorted(serials)))
    leaks = {d: pattern.findall(text)[:3] for d, text in logs.items() if pattern.search(text)}
    assert leaks == {}
