"""Releasing an LMDB file's mapped pages (ledger/pagetrim.py, daemon.md §Memory bounds)."""

from __future__ import annotations

import sys
from pathlib import Path

import lmdb
import pytest

from ledger.pagetrim import release_file_pages

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and madvise")


def _resident_kb(data_file: Path) -> int:
    """Resident size of this process's mappings of ``data_file`` [kB] (from /proc/self/smaps)."""
    target, total, current = str(data_file.resolve()), 0, ""
    with open("/proc/self/smaps", encoding="utf-8") as smaps:
        for line in smaps:
            head = line.split(maxsplit=5)
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                current = head[5].strip() if len(head) == 6 else ""
            elif head[0] == "Rss:" and current == target:
                total += int(head[1])
    return total


@linux_only
def test_release_drops_resident_pages_and_data_reads_back_unchanged(tmp_path: Path) -> None:
    """After reading 2 MB through the map, release leaves < 10 % of it resident; every value
    still reads back byte for byte."""
    env = lmdb.open(str(tmp_path), map_size=1 << 26)
    values = {i.to_bytes(4, "big"): bytes([i % 251]) * 2000 for i in range(1000)}
    with env.begin(write=True) as txn:
        for k, v in values.items():
            txn.put(k, v)
    with env.begin() as txn:
        assert sum(len(bytes(txn.get(k))) for k in values) == 2_000_000
    data_file = tmp_path / "data.mdb"
    before = _resident_kb(data_file)
    assert before > 1500
    assert release_file_pages(data_file) > 0
    assert _resident_kb(data_file) < before // 10
    with env.begin() as txn:
        assert all(bytes(txn.get(k)) == v for k, v in values.items())
    env.close()


def test_release_of_a_file_not_mapped_does_nothing(tmp_path: Path) -> None:
    """A path no mapping refers to releases 0 bytes and raises nothing."""
    assert release_file_pages(tmp_path / "absent.mdb") == 0


@linux_only
def test_mappings_are_found_by_exact_path(tmp_path: Path) -> None:
    """The ranges found are those of the file itself: a mapped file whose path ends with the
    target's path, or extends it, is not taken for it."""
    import mmap

    from ledger.pagetrim import _mappings

    target = (tmp_path / "a" / "data.mdb").resolve()
    ends_alike = tmp_path / "nest" / str(target).lstrip("/")
    extends = target.with_name("data.mdb.old")
    maps = []
    for path in (target, ends_alike, extends):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * 8192)
        with open(path, "rb") as f:
            maps.append(mmap.mmap(f.fileno(), 8192, prot=mmap.PROT_READ))
    found = [_mappings(str(path)) for path in (target, ends_alike, extends)]
    assert [len(ranges) for ranges in found] == [1, 1, 1]
    assert all(end - start == 8192 for ((start, end),) in found)
    assert len({ranges[0] for ranges in found}) == 3  # each file found its own mapping only
    for m in maps:
        m.close()
