"""State overlay: reads and ordered scans over pending writes match a plain dict model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec
from ledger.errors import CodecError
from ledger.state import MemoryState, Overlay

keys = st.binary(min_size=1, max_size=3)


@given(
    st.dictionaries(keys, st.binary(max_size=3), max_size=20),
    st.lists(st.tuples(keys, st.none() | st.binary(max_size=3)), max_size=20),
    st.lists(st.tuples(keys, st.none() | st.binary(max_size=3)), max_size=10),
    keys,
    keys,
)
@settings(max_examples=80)
def test_nested_overlay_scan_matches_model(
    base: dict[bytes, bytes],
    writes: list[tuple[bytes, bytes | None]],
    child_writes: list[tuple[bytes, bytes | None]],
    lo: bytes,
    hi: bytes,
) -> None:
    """get and scan of nested overlays (puts and deletes) equal the same edits on a dict."""
    model = dict(base)
    top = Overlay(MemoryState(base))
    for layer, edits in ((top, writes), (top.child(), child_writes)):
        for k, v in edits:
            if v is None:
                layer.delete(k)
                model.pop(k, None)
            else:
                layer.put(k, v)
                model[k] = v
        last = layer
    assert list(last.scan(lo, hi)) == sorted((k, v) for k, v in model.items() if lo <= k < hi)
    for k in {k for k, _ in writes} | set(base):
        assert last.get(k) == model.get(k)


def test_child_merge_and_discard() -> None:
    """A child overlay's writes reach the parent only when merged."""
    top = Overlay(MemoryState({b"a": b"1"}))
    failed = top.child()
    failed.put(b"a", b"2")
    assert top.get(b"a") == b"1"
    ok = top.child()
    ok.delete(b"a")
    top.merge(ok)
    assert top.get(b"a") is None


def test_decode_trusted() -> None:
    """Stored values decode without the canonical check; garbage still raises CodecError."""
    assert codec.decode_trusted(codec.encode({"b": [1, b"x"], "a": None})) == {
        "a": None,
        "b": [1, b"x"],
    }
    with pytest.raises(CodecError):
        codec.decode_trusted(b"\xc1")
