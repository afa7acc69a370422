"""Store compaction and the data-directory lock (docs/spec/privacy.md §3.2): pruned raw
measurements leave the live LMDB file, a running node's stores are never replaced, and two
lemd never share a data directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli.main import main as lemctl
from edge.config import load_config
from edge.daemon import Daemon, StartupError
from edge.node_lock import LOCK_FILE, NodeLock, NodeLocked, compact_stores
from ledger import block as blk
from ledger import compact
from ledger import tx as txm
from ledger.bodyprune import BodyPruner
from ledger.store import Store
from tests.support.lemd import make_node
from tests.unit.ledger.helpers import commit
from tests.unit.ledger.test_privacy_retention import SOLVED_AT, WINDOW_MS, Community


def _pruned_community(data_dir: Path) -> tuple[Community, bytes]:
    """A community whose period is solved, pruned and body-pruned; returns it and the
    signature of a pruned SetMeasure (random bytes that occur nowhere else)."""
    c = Community(data_dir / "ledger")
    raw = blk.decode(c.app.store.block(2) or b"").txs[0]
    signature = txm.decode(raw).signature
    commit(c.app, [c.prune_tx(c.n2)], SOLVED_AT + WINDOW_MS)
    commit(c.app, [c.prune_tx(c.n2)], SOLVED_AT + WINDOW_MS + 1)
    BodyPruner(c.app.store).step()
    return c, signature


def test_compaction_removes_pruned_bytes_from_the_live_file(tmp_path: Path) -> None:
    """After state and body pruning the SetMeasure signature is still in data.mdb's freed
    pages; compacting in place removes it, and the reopened store has the same height, app
    hash and body-pruned block."""
    c, signature = _pruned_community(tmp_path)
    store = c.app.store
    height, app_hash, genesis = store.height, store.app_hash, store.genesis
    store.close()
    data = tmp_path / "ledger" / "data.mdb"
    assert signature in data.read_bytes()
    done = compact_stores(tmp_path, force=True)
    assert set(done) == {"ledger"}
    before, after = done["ledger"]
    assert after == data.stat().st_size < before
    assert signature not in data.read_bytes()
    assert not (tmp_path / "ledger" / "compact.tmp").exists()
    again = Store(tmp_path / "ledger", genesis)
    assert (again.height, again.app_hash) == (height, app_hash)
    assert again.is_body_pruned(2)
    again.close()


def test_usage_counts_free_pages(tmp_path: Path) -> None:
    """A fresh store has next to no free pages (not worth compacting); the thresholds need
    both 4 MiB and a quarter of the file free."""
    c = Community(tmp_path / "ledger")
    c.app.store.close()
    usage = compact.usage(tmp_path / "ledger")
    assert 0 < usage.used_bytes <= usage.file_bytes
    assert not usage.worth_compacting()
    assert compact_stores(tmp_path) == {}
    mib = 1 << 20
    assert compact.Usage(file_bytes=16 * mib, used_bytes=11 * mib).worth_compacting()
    assert not compact.Usage(file_bytes=16 * mib, used_bytes=13 * mib).worth_compacting()
    assert not compact.Usage(file_bytes=6 * mib, used_bytes=3 * mib).worth_compacting()


def test_compaction_of_a_missing_store_is_an_error(tmp_path: Path) -> None:
    """compact() on a directory without data.mdb names the directory."""
    with pytest.raises(compact.StoreError, match=r"data\.mdb missing"):
        compact.compact(tmp_path)


def test_the_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    """A second lock on one data directory fails naming the lock file, also from another
    process; after release it can be taken again."""
    lock = NodeLock(tmp_path)
    with pytest.raises(NodeLocked, match=LOCK_FILE):
        NodeLock(tmp_path)
    probe = (
        "import sys; from pathlib import Path; from edge.node_lock import NodeLock, NodeLocked\n"
        "try:\n    NodeLock(Path(sys.argv[1]))\nexcept NodeLocked:\n    sys.exit(3)\n"
    )
    cwd = Path(__file__).resolve().parents[3]
    assert subprocess.run([sys.executable, "-c", probe, str(tmp_path)], cwd=cwd).returncode == 3
    lock.release()
    lock.release()  # idempotent
    NodeLock(tmp_path).release()


def test_lemctl_compact_refuses_a_running_node_and_compacts_a_stopped_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """While the data directory is locked, `lemctl ledger compact` exits 2 naming the lock
    and leaves the file alone; once it is free, --force compacts and reports the sizes."""
    c, signature = _pruned_community(tmp_path)
    c.app.store.close()
    lock = NodeLock(tmp_path)
    assert lemctl(["ledger", "compact", "--data-dir", str(tmp_path / "ledger")]) == 2
    assert LOCK_FILE in capsys.readouterr().err
    assert signature in (tmp_path / "ledger" / "data.mdb").read_bytes()
    lock.release()
    assert (
        lemctl(["ledger", "compact", "--data-dir", str(tmp_path / "ledger"), "--force", "--json"])
        == 0
    )
    assert '"ledger"' in capsys.readouterr().out
    assert signature not in (tmp_path / "ledger" / "data.mdb").read_bytes()


async def test_a_second_lemd_on_one_data_dir_refuses_to_start(tmp_path: Path) -> None:
    """lemd holds its data directory: a second daemon on the same config fails to open with a
    StartupError naming the lock, and the first one's close frees it."""
    node = make_node(tmp_path / "n")
    first = Daemon(load_config(node.config))
    await first.open()
    second = Daemon(load_config(node.config))
    with pytest.raises(StartupError, match=LOCK_FILE):
        await second.open()
    await second.close_opened()
    await first.close_opened()
    third = Daemon(load_config(node.config))
    await third.open()
    await third.close_opened()


async def test_a_light_lemd_also_holds_its_data_dir(tmp_path: Path) -> None:
    """The light-member path of lemd takes the same lock: with the directory held it stops
    with a StartupError naming the lock before opening anything."""
    from edge import daemon as lemd
    from ledger.keys import SigningKey

    node = make_node(tmp_path / "n", brokers=("mqtt://127.0.0.1:1",))
    SigningKey.generate().save(node.data_dir / "node.key.new")
    (node.data_dir / "node.key.new").replace(node.data_dir / "node.key")  # not a validator
    config = load_config(node.config)
    held = NodeLock(config.node.data_dir)
    with pytest.raises(StartupError, match=LOCK_FILE):
        await lemd._run(config)
    assert not (config.node.data_dir / "outbox").exists()
    held.release()
