"""Canonical MessagePack: round trips, and every non-canonical or hostile input is refused."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.codec import decode, encode
from ledger.errors import CodecError

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


@given(values)
def test_round_trip_is_identity_on_bytes(value: object) -> None:
    """Every admitted value decodes back from its encoding, and that encoding is the only one."""
    data = encode(value)
    assert encode(decode(data)) == data


@given(st.dictionaries(st.text(max_size=8), st.integers(0, 9), min_size=2, max_size=6))
def test_map_key_order_does_not_change_the_bytes(mapping: dict[str, int]) -> None:
    """Insertion order of a dict never reaches the encoding."""
    reversed_mapping = dict(reversed(list(mapping.items())))
    assert encode(mapping) == encode(reversed_mapping)


def test_unsorted_map_is_rejected() -> None:
    """A map whose keys arrive out of order is a second encoding of the same value."""
    data = b"\x82\xa1b\x01\xa1a\x02"  # {"b": 1, "a": 2} in that order
    with pytest.raises(CodecError, match="canonical"):
        decode(data)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xcc\x05", "canonical"),  # 5 as uint8 instead of a positive fixint
        (b"\xcb" + b"\x00" * 8, "canonical"),  # a float64
        (b"\xc4", "MessagePack"),  # truncated bin8
        (b"\x01\x02", "MessagePack"),  # trailing bytes
        (b"\xd4\x01\x00", "MessagePack"),  # an extension type
        (b"\x81\x01\x02", "MessagePack"),  # int map key
        (b"\x82\xa1a\x01\xa1a\x02", "canonical"),  # duplicate key
    ],
)
def test_hostile_inputs_raise_codec_error(data: bytes, why: str) -> None:
    """Non-canonical, truncated, float, ext and duplicate-key inputs give a CodecError."""
    with pytest.raises(CodecError, match=why):
        decode(data)


def test_oversized_input_is_refused_before_parsing() -> None:
    """The size bound applies before any work is done on the bytes."""
    with pytest.raises(CodecError, match="exceeds the limit"):
        decode(encode(b"x" * 100), max_bytes=50)


@pytest.mark.parametrize("value", [1.5, {1: 2}, {"a"}, 1 << 64, -(1 << 63) - 1, bytearray(b"x")])
def test_values_without_a_canonical_form_are_refused(value: object) -> None:
    """Floats, sets, int keys and out-of-range ints cannot be encoded."""
    with pytest.raises(CodecError):
        encode(value)


@given(st.binary(max_size=64))
def test_garbage_never_escapes_as_another_exception(data: bytes) -> None:
    """Decoding arbitrary bytes either yields a value or raises CodecError, nothing else."""
    with contextlib.suppress(CodecError):
        decode(data)


def test_tuple_encodes_as_array() -> None:
    """Tuples and lists share one encoding, so a struct's field order is the only order."""
    assert encode((1, "a")) == encode([1, "a"]) == msgpack.packb([1, "a"])


@given(values, st.randoms(use_true_random=False))
def test_decode_accepts_exactly_the_canonical_bytes(value: object, rnd: object) -> None:
    """Any map order msgpack may write is accepted only when it is the canonical one."""

    def shuffled(v: object) -> object:
        if isinstance(v, list):
            return [shuffled(x) for x in v]
        if isinstance(v, dict):
            items = list(v.items())
            rnd.shuffle(items)  # type: ignore[attr-defined]
            return {k: shuffled(x) for k, x in items}
        return v

    data = msgpack.packb(shuffled(value), use_bin_type=True)
    if data == encode(value):
        assert decode(data) == value
    else:
        with pytest.raises(CodecError, match="canonical"):
            decode(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\x81\xc4\x01a\x01",  # {b"a": 1}: a bin map key
        b"\x91\x82\xa1b\x01\xa1a\x02",  # [{"b": 1, "a": 2}]: unsorted inside an array
        b"\x81\xa1a\x92\x01\xcb" + b"\x00" * 8,  # {"a": [1, 0.0]}: a nested float
        b"\x91" * 200_000 + b"\xc0",  # nested deeper than any walk should go
    ],
)
def test_nested_and_key_type_violations_are_refused(data: bytes) -> None:
    """The decoder's check reaches into nested values and refuses bin keys and deep nesting."""
    with pytest.raises(CodecError):
        decode(data)


def test_a_failed_encode_leaves_nothing_behind_for_the_next_one() -> None:
    """The encoder reuses one packer per thread: a value refused half-way through (an
    integer out of range deep in a map) must not leak its partial bytes into the next value."""
    with pytest.raises(CodecError):
        encode({"a": [1, 2, 1 << 70]})
    assert encode([1, "x"]) == msgpack.packb([1, "x"], use_bin_type=True)


def test_threads_encoding_at_once_each_get_their_own_bytes() -> None:
    """Encoding from several threads at once (a commit runs in a worker thread while the
    loop encodes messages) gives every thread exactly its value's bytes."""
    import threading

    values = [{"blob": bytes([n]) * (50 + n), "items": list(range(n)), "n": n} for n in range(8)]
    wrong: list[int] = []

    def work(n: int) -> None:
        want = msgpack.packb(values[n], use_bin_type=True)  # keys already in canonical order
        for _ in range(2000):
            if encode(values[n]) != want or decode(want) != values[n]:
                wrong.append(n)
                return

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
