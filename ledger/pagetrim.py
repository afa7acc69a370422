"""Release the resident pages of an LMDB data file from this process's memory map (Linux).

Spec: docs/spec/daemon.md §Memory bounds. LMDB reads through a shared, read-only ``mmap`` of
``data.mdb``. Every page a block's commit or a later read touches stays mapped in the process,
and Linux counts those clean file pages in its USS, so without help the USS grows with the
ledger (measured: ≈ 3 kB per block). ``madvise(MADV_DONTNEED)`` on a shared file mapping only
drops this process's page-table entries: the data stays in the kernel's page cache and the
next access maps it again (a minor fault, no disk read, no change visible to LMDB). The stores
call :func:`release_file_pages` after every :data:`RELEASE_EVERY_HEIGHTS` blocks, so the mapped
part stays bounded by the pages one block touches. Cost: reading ``/proc/self/maps`` (≈ 0.1 ms)
plus ≈ 0.2 µs per page mapped again.

On other platforms (or if ``/proc/self/maps`` is unreadable) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

RELEASE_EVERY_HEIGHTS = 1
"""Blocks between two releases of a store's mapped pages. Every block: LMDB's copy-on-write
B-tree reuses freed pages anywhere in the file, so 64 blocks touched ≈ 80 % of a 2 MB ledger
file (measured in bench/footprint.py); releasing every 64 blocks left the USS growing."""

_MADV_DONTNEED = 4  # Linux value, the same on every architecture Linux supports


def _load_madvise() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_madvise = _load_madvise()


def _mappings(target: str) -> list[tuple[int, int]]:
    """Address ranges [start, end) of this process's mappings of the file ``target``."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            text = maps.read()
    except OSError:
        return []
    # The path is a line's last field, after padding spaces: find its lines with str.find
    # instead of splitting all of them (a Python process maps ~500 files and areas; parsing
    # every line cost ≈ 0.5–2 ms, and a validator releases two files per block).
    needle = " " + target + "\n"
    out = []
    at = text.find(needle)
    while at != -1:
        line = text.rfind("\n", 0, at) + 1
        start, end = text[line : text.index(" ", line)].split("-")
        out.append((int(start, 16), int(end, 16)))
        at = text.find(needle, at + len(needle))
    return out


def release_file_pages(data_file: Path) -> int:
    """Drop this process's resident pages of every mapping of ``data_file``.

    Args:
        data_file: the LMDB ``data.mdb`` (any path to it; resolved).

    Returns:
        Bytes of address range advised [bytes] (0 when unsupported or not mapped).
    """
    if _madvise is None:
        return 0
    released = 0
    for start, end in _mappings(str(data_file.resolve())):
        if _madvise(start, end - start, _MADV_DONTNEED) == 0:
            released += end - start
    return released
