"""The consensus store: WAL order and pruning, validator sets and seen commits in LMDB."""

from __future__ import annotations

from pathlib import Path

from ledger.consensus.messages import Commit, Step
from ledger.consensus.wal import ConsensusStore
from ledger.keys import sha256
from tests.unit.ledger.consensus.helpers import valset, vote


def test_wal_keeps_order_per_height_across_reopen_and_prunes(tmp_path: Path) -> None:
    """Records come back in write order per height, also after reopening; pruning drops old ones."""
    s = ConsensusStore(tmp_path)
    s.wal_append(3, ["start"], sync=True)
    s.wal_append(3, ["msg", b"a"], sync=False)
    s.wal_append(4, ["msg", b"x"], sync=False)
    s.close()
    s = ConsensusStore(tmp_path)
    s.wal_append(3, ["timeout", 0, 0], sync=True)
    assert s.wal_records(3) == [["start"], ["msg", b"a"], ["timeout", 0, 0]]
    assert s.wal_records(4) == [["msg", b"x"]]
    s.wal_prune(4)
    assert s.wal_records(3) == []
    assert s.wal_records(4) == [["msg", b"x"]]


def test_valsets_and_commits_round_trip(tmp_path: Path) -> None:
    """Validator sets (with priorities) and commits are stored per height."""
    s = ConsensusStore(tmp_path)
    vs = valset(4, [2, 1, 1, 1]).next_height()
    s.save_valset(7, vs)
    commit = Commit.from_votes([vote(Step.PRECOMMIT, 0, sha256(b"b"), i, 7) for i in range(3)])
    s.save_commit(commit)
    s.close()
    s = ConsensusStore(tmp_path)
    assert s.load_valset(7) == vs
    assert s.load_valset(8) is None
    assert s.load_commit(7) == commit
    assert s.load_commit(6) is None
