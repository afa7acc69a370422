"""Canonical MessagePack: one byte string per value.

Spec: docs/spec/codec.md. msgpack itself does not promise a canonical form, so this module
pins one and the decoder enforces it by re-encoding: input whose re-encoding differs from the
received bytes is rejected. Hashes and signatures are always taken over the exact received bytes.

Values: None, bool, int (−2^63 … 2^64−1), str (UTF-8), bytes, list/tuple (encoded as arrays) and
dict with str keys (encoded as maps with keys sorted by their UTF-8 bytes). Floats, extension
types and non-str map keys are refused, so no float can ever reach ledger state or a hash.
"""

from __future__ import annotations

import threading
from typing import Any, TypeAlias

import msgpack

from ledger.errors import CodecError

Value: TypeAlias = Any
"""A decoded canonical value (see the module docstring for the admitted types)."""

MAX_MESSAGE_BYTES = 1 << 20
"""Default bound on any single encoded value [bytes]; callers pass tighter ones where they can."""

_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1


_PACKERS = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's Packer: ``msgpack.packb`` builds a new one per call, which costs more than
    packing a small value (1.8 → 0.5 µs for a tx payload); a node encodes ~10 values per tx.
    Per thread, because a Packer holds a buffer (a commit may run in a worker thread)."""
    try:
        packer: msgpack.Packer = _PACKERS.packer
    except AttributeError:
        packer = _PACKERS.packer = msgpack.Packer(use_bin_type=True)
    return packer


_PLAIN = frozenset({type(None), bool, str, bytes})
"""Types whose value is already canonical as it is (the common scalars, skipping the walk)."""


def encode(value: Value) -> bytes:
    """Encode ``value`` canonically.

    Raises:
        CodecError: the value holds a type outside the canonical set (float, set, object, …),
            an integer outside 64 bits or a map key that is not a str.
    """
    kind = type(value)
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise CodecError(f"integer {value} is outside the 64-bit range")
    elif kind not in _PLAIN:
        value = _canonical(value)
    try:
        packed: bytes = _packer().pack(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode: {exc}") from exc
    return packed


def decode(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Value:
    """Decode bytes that must be the canonical encoding of one value.

    Raises:
        CodecError: oversized, truncated, trailing bytes, floats, extension types, non-str map
            keys, or any encoding other than the canonical one.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise CodecError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=max_bytes,
            max_map_len=max_bytes,
            max_ext_len=0,
        )
    except (
        ValueError,
        TypeError,
        msgpack.ExtraData,
        msgpack.UnpackException,
        RecursionError,
    ) as exc:
        raise CodecError(f"not a MessagePack value: {type(exc).__name__}: {exc}") from exc
    # The decoded value holds only msgpack's own types, so checking it and packing it as it is
    # gives the canonical re-encoding without rebuilding it (what encode() would do).
    try:
        _check_decoded(value)
    except RecursionError as exc:
        raise CodecError("value nested too deeply") from exc
    if _packer().pack(value) != data:
        raise CodecError("not the canonical encoding of its value")
    return value


_SCALARS = frozenset({type(None), bool, int, str, bytes})


def _check_decoded(value: Value) -> None:
    """Refuse what a freshly unpacked value may hold outside the canonical set (floats,
    extension types, bytes map keys) and maps whose keys are not in ascending order.

    Str order is code-point order, which is the UTF-8 byte order the encoder sorts by; map
    keys arrive in wire order, so ascending keys make the packed value sorted as encode()
    sorts it. Unpacked ints are always within 64 bits.

    Raises:
        CodecError: the first value outside the canonical set.
    """
    kind = type(value)
    if kind in _SCALARS:
        return
    if kind is list:
        for item in value:
            if type(item) not in _SCALARS:
                _check_decoded(item)
        return
    if kind is dict:
        previous = ""
        for index, (key, item) in enumerate(value.items()):
            if type(key) is not str:
                raise CodecError(f"map key {key!r} is not a str")
            if index and key <= previous:
                raise CodecError("not the canonical encoding of its value (map keys unsorted)")
            previous = key
            if type(item) not in _SCALARS:
                _check_decoded(item)
        return
    raise CodecError(f"type {kind.__name__} has no canonical encoding")


def decode_trusted(data: bytes) -> Value:
    """Decode bytes this node encoded itself with :func:`encode` (its own LMDB state).

    Skips the re-encoding check of :func:`decode`, which is what makes reading state cheap;
    never use it on bytes received from outside (those go through :func:`decode`).

    Raises:
        CodecError: the bytes are not one MessagePack value.
    """
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, max_ext_len=0)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.UnpackException) as exc:
        raise CodecError(f"stored value does not decode: {exc}") from exc


def _canonical(value: Value) -> Value:
    """Return ``value`` with maps key-sorted and tuples as lists; refuse non-canonical types.

    Str keys sort by code point, which is the order of their UTF-8 bytes. Items of the plain
    scalar types are taken as they are without a call (most of a record's fields).
    """
    if value is None or isinstance(value, bool | str | bytes):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise CodecError(f"integer {value} is outside the 64-bit range")
        return value
    if isinstance(value, list | tuple):
        return [item if type(item) in _PLAIN else _canonical(item) for item in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise CodecError(f"map key {key!r} is not a str")
        return {
            key: item if type(item) in _PLAIN else _canonical(item)
            for key, item in sorted(value.items())
        }
    raise CodecError(f"type {type(value).__name__} has no canonical encoding")
