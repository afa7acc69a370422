"""Modbus register maps of supported meters, and a custom map in TOML (docs/spec/modbus.md).

A map says where a meter keeps its cumulative import and export energy and its total active
power, how each value is encoded and how it scales to Wh or W. Conversion is exact: a register
value becomes a :class:`decimal.Decimal` (a FLOAT32 converts without loss), is multiplied by the
scale (and by 10^SF for SunSpec) and rounded half-to-even to an integer. No float reaches a
:class:`~meters.reading.Reading`.

Built-in maps (addresses are 0-based protocol addresses, as sent on the wire):

======= ======= ========================= ========================= ================
map     func    import                    export                    power
======= ======= ========================= ========================= ================
sdm630  input   0x0048 FLOAT32 kWh        0x004A FLOAT32 kWh        0x0034 FLOAT32 W
sdm120  input   0x0048 FLOAT32 kWh        0x004A FLOAT32 kWh        0x000C FLOAT32 W
em24    input   0x0034 INT32 LSW kWh·10   0x004E INT32 LSW kWh·10   0x0028 INT32 W·10
sunspec holding 203+46 acc32 TotWhImp     203+38 acc32 TotWhExp     203+18 int16 W
======= ======= ========================= ========================= ================

SunSpec energy scales by 10^TotWh_SF (offset 54), power by 10^W_SF (offset 22).

Sources: Eastron SDM630 / SDM120 Modbus protocol sheets (input registers 30053, 30073, 30075 →
0x0034, 0x0048, 0x004A); Carlo Gavazzi EM24-DIN communication protocol (kWh (+) TOT 0x0034,
kWh (−) TOT 0x004E, W sys 0x0028, INT32 least significant word first, weight ×10); SunSpec
Information Model, model 203 "Wye-Connect Three Phase Meter" (offsets from the model's ID
register; scale factors are sunssf int16, acc32 accumulators).
"""

from __future__ import annotations

import struct
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from pathlib import Path

from meters.reading import MeterError

__all__ = [
    "BUILTIN_MAPS",
    "QUANTITIES",
    "SUNSPEC_MARKER",
    "Field",
    "ReadBlock",
    "RegisterMap",
    "RegisterMapError",
    "RegisterValueError",
    "decode_field",
    "describe",
    "encode_field",
    "load_map_toml",
    "plan_reads",
    "register_map",
]

QUANTITIES = ("import_wh", "export_wh", "power_w")
_TYPES: dict[str, tuple[str, int]] = {  # struct code per type, register count
    "uint16": ("H", 1),
    "int16": ("h", 1),
    "uint32": ("I", 2),
    "int32": ("i", 2),
    "uint64": ("Q", 4),
    "int64": ("q", 4),
    "float32": ("f", 2),
    "float64": ("d", 4),
}
_FUNCTIONS = {"input": 4, "holding": 3}
_MAX_READ = 125  # registers per read request (Modbus application protocol §6.3/6.4)
_MERGE_GAP = 40  # read unused registers rather than send another request up to this gap
SUNSPEC_MARKER = (0x5375, 0x6E53)  # "SunS"
SUNSSF_NOT_IMPLEMENTED = -0x8000


class RegisterMapError(MeterError):
    """A register map (built-in name or custom TOML) is unknown or invalid; says where."""


class RegisterValueError(MeterError):
    """A register holds a value that cannot be energy or power (NaN, negative, unimplemented).

    Attributes:
        quantity: which value (``import_wh``, ``export_wh``, ``power_w``).
        address: the register address.
        reason: why it was rejected.
    """

    def __init__(self, quantity: str, address: int, reason: str) -> None:
        self.quantity = quantity
        self.address = address
        self.reason = reason
        super().__init__(f"{quantity} at register {address} (0x{address:04X}): {reason}")


@dataclass(frozen=True, slots=True)
class Field:
    """Where and how one quantity is stored.

    Attributes:
        quantity: ``import_wh``, ``export_wh`` or ``power_w``.
        address: first register; for SunSpec maps an offset from the model's ID register.
        type: one of uint16, int16, uint32, int32, uint64, int64, float32, float64.
        word_order: ``big`` (most significant register first) or ``little``.
        scale: multiplier from the raw value to Wh or W (e.g. ``1000`` for kWh).
        function: ``input`` (function 4) or ``holding`` (function 3).
        sf_offset: SunSpec only: offset of the sunssf register giving a further 10^SF.
    """

    quantity: str
    address: int
    type: str
    word_order: str = "big"
    scale: Decimal = Decimal(1)
    function: str = "input"
    sf_offset: int | None = None

    @property
    def count(self) -> int:
        """Number of 16-bit registers the value occupies."""
        return _TYPES[self.type][1]


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """A named set of fields; ``sunspec_model`` makes addresses relative to that model.

    Attributes:
        name: map name (built-in key or the TOML's ``name``).
        fields: the fields, one per quantity; power is optional.
        sunspec_model: SunSpec model id whose ID register the offsets count from, or None.
    """

    name: str
    fields: tuple[Field, ...]
    sunspec_model: int | None = None

    def field(self, quantity: str) -> Field | None:
        """The field of ``quantity``, or None when the map lacks it."""
        return next((f for f in self.fields if f.quantity == quantity), None)


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers from ``address`` with a function code."""

    function: str
    address: int
    count: int


def _sunspec_203() -> RegisterMap:
    return RegisterMap(
        name="sunspec",
        sunspec_model=203,
        fields=(
            Field("import_wh", 46, "uint32", function="holding", sf_offset=54),
            Field("export_wh", 38, "uint32", function="holding", sf_offset=54),
            Field("power_w", 18, "int16", function="holding", sf_offset=22),
        ),
    )


def _eastron(power_address: int, name: str) -> RegisterMap:
    kwh = Decimal(1000)
    return RegisterMap(
        name=name,
        fields=(
            Field("import_wh", 0x0048, "float32", scale=kwh),
            Field("export_wh", 0x004A, "float32", scale=kwh),
            Field("power_w", power_address, "float32"),
        ),
    )


BUILTIN_MAPS: dict[str, RegisterMap] = {
    "sdm630": _eastron(0x0034, "sdm630"),
    "sdm120": _eastron(0x000C, "sdm120"),
    "em24": RegisterMap(
        name="em24",
        fields=(
            Field("import_wh", 0x0034, "int32", "little", Decimal(100)),
            Field("export_wh", 0x004E, "int32", "little", Decimal(100)),
            Field("power_w", 0x0028, "int32", "little", Decimal("0.1")),
        ),
    ),
    "sunspec": _sunspec_203(),
}


def register_map(name_or_path: str) -> RegisterMap:
    """A built-in map by name, or a custom map from a ``.toml`` file path.

    Raises:
        RegisterMapError: unknown name, unreadable file or invalid TOML map.
    """
    key = name_or_path.lower()
    if key in BUILTIN_MAPS:
        return BUILTIN_MAPS[key]
    if key == "sunspec203":
        return BUILTIN_MAPS["sunspec"]
    if name_or_path.endswith(".toml"):
        path = Path(name_or_path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RegisterMapError(f"cannot read register map {path}: {exc.strerror}") from exc
        return load_map_toml(text, source=str(path))
    known = ", ".join(sorted(BUILTIN_MAPS))
    raise RegisterMapError(f"unknown register map {name_or_path!r} (built in: {known}; or a .toml)")


def load_map_toml(text: str, source: str = "<toml>") -> RegisterMap:
    """Parse a custom register map (format: docs/spec/modbus.md §Custom map).

    Raises:
        RegisterMapError: naming the file, the table and the key that is wrong.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegisterMapError(f"{source}: not valid TOML: {exc}") from exc
    name = doc.get("name", Path(source).stem)
    registers = doc.get("registers")
    if not isinstance(name, str) or not isinstance(registers, dict):
        raise RegisterMapError(f'{source}: needs name = "..." and a [registers.*] table per value')
    unknown = set(registers) - set(QUANTITIES)
    if unknown:
        raise RegisterMapError(f"{source}: unknown quantity {sorted(unknown)}; use {QUANTITIES}")
    fields = tuple(
        _toml_field(q, registers[q], f"{source}: registers.{q}")
        for q in QUANTITIES
        if q in registers
    )
    found = {f.quantity for f in fields}
    if not {"import_wh", "export_wh"} <= found:
        raise RegisterMapError(
            f"{source}: registers.import_wh and registers.export_wh are required"
        )
    return RegisterMap(name=name, fields=fields)


def _toml_field(quantity: str, table: object, where: str) -> Field:
    if not isinstance(table, dict):
        raise RegisterMapError(f"{where}: must be a table")
    extra = set(table) - {"address", "count", "type", "word_order", "scale", "function"}
    if extra:
        raise RegisterMapError(f"{where}: unknown key(s) {sorted(extra)}")
    address = table.get("address")
    if type(address) is not int or not 0 <= address <= 0xFFFF:
        raise RegisterMapError(f"{where}.address: must be an integer 0..65535, got {address!r}")
    kind = table.get("type")
    if kind not in _TYPES:
        raise RegisterMapError(f"{where}.type: {kind!r} is not one of {sorted(_TYPES)}")
    count = table.get("count", _TYPES[kind][1])
    if count != _TYPES[kind][1]:
        raise RegisterMapError(
            f"{where}.count: {kind} takes {_TYPES[kind][1]} registers, not {count!r}"
        )
    order = table.get("word_order", "big")
    if order not in ("big", "little"):
        raise RegisterMapError(f"{where}.word_order: must be 'big' or 'little', got {order!r}")
    function = table.get("function", "holding")
    if function not in _FUNCTIONS:
        raise RegisterMapError(f"{where}.function: must be 'input' or 'holding', got {function!r}")
    raw_scale = table.get("scale", "1")
    if isinstance(raw_scale, float) or not isinstance(raw_scale, str | int):
        raise RegisterMapError(f'{where}.scale: give an exact decimal as a string, e.g. "0.1"')
    try:
        scale = Decimal(raw_scale)
    except ArithmeticError:
        raise RegisterMapError(f"{where}.scale: {raw_scale!r} is not a decimal number") from None
    if not scale.is_finite() or scale <= 0:
        raise RegisterMapError(f"{where}.scale: must be a positive number, got {raw_scale!r}")
    return Field(quantity, address, kind, order, scale, function)


def plan_reads(
    fields: Sequence[Field], base: int = 0, extra: Sequence[ReadBlock] = ()
) -> list[ReadBlock]:
    """Group the registers of ``fields`` (and ``extra`` ranges) into few read requests.

    Ranges of one function closer than a small gap are merged, up to 125 registers per request,
    so a typical map costs one request per poll.
    """
    spans: dict[str, list[tuple[int, int]]] = {}
    for f in fields:
        spans.setdefault(f.function, []).append((base + f.address, base + f.address + f.count))
        if f.sf_offset is not None:
            spans[f.function].append((base + f.sf_offset, base + f.sf_offset + 1))
    for block in extra:
        spans.setdefault(block.function, []).append((block.address, block.address + block.count))
    blocks: list[ReadBlock] = []
    for function in sorted(spans):
        ranges = sorted(spans[function])
        start, end = ranges[0]
        for lo, hi in ranges[1:]:
            if lo - end <= _MERGE_GAP and max(hi, end) - start <= _MAX_READ:
                end = max(end, hi)
            else:
                blocks.append(ReadBlock(function, start, end - start))
                start, end = lo, hi
        blocks.append(ReadBlock(function, start, end - start))
    return blocks


def _registers_to_bytes(registers: Sequence[int], word_order: str) -> bytes:
    words = list(registers) if word_order == "big" else list(reversed(registers))
    return b"".join(w.to_bytes(2, "big") for w in words)


def decode_field(field: Field, registers: Sequence[int], sf: int = 0) -> int:
    """Convert a field's raw registers to an integer Wh or W (exact, half-to-even).

    Args:
        field: the field.
        registers: exactly ``field.count`` 16-bit register values.
        sf: SunSpec scale factor (power of ten) read from the field's sf register.

    Raises:
        RegisterValueError: NaN/infinite floats, negative energy, unimplemented SunSpec values.
    """
    code, count = _TYPES[field.type]
    if len(registers) != count:
        raise RegisterValueError(field.quantity, field.address, f"expected {count} registers")
    raw = struct.unpack(">" + code, _registers_to_bytes(registers, field.word_order))[0]
    if field.sf_offset is not None:
        if sf == SUNSSF_NOT_IMPLEMENTED or not -10 <= sf <= 10:
            raise RegisterValueError(field.quantity, field.address, f"scale factor {sf} invalid")
        if field.type == "int16" and raw == -0x8000:
            raise RegisterValueError(field.quantity, field.address, "not implemented (0x8000)")
    value = Decimal(raw)  # exact for every float32/float64 and integer
    if not value.is_finite():
        raise RegisterValueError(field.quantity, field.address, f"not a number ({raw})")
    scaled = value * field.scale * Decimal(10) ** sf
    result = int(scaled.to_integral_value(rounding=ROUND_HALF_EVEN))
    if field.quantity != "power_w" and result < 0:
        raise RegisterValueError(field.quantity, field.address, f"negative energy {scaled} Wh")
    return result


def encode_field(field: Field, value: int, sf: int = 0) -> list[int]:
    """The registers a meter would hold for ``value`` Wh or W (used by the device server).

    Energy is truncated to the register's resolution (a meter shows what it has counted),
    power rounded half-to-even.
    """
    code, _ = _TYPES[field.type]
    raw = Decimal(value) / field.scale / Decimal(10) ** sf
    packed: bytes
    if code in "fd":
        packed = struct.pack(">" + code, float(raw))
    else:
        rounding = ROUND_HALF_EVEN if field.quantity == "power_w" else ROUND_FLOOR
        packed = struct.pack(">" + code, int(raw.to_integral_value(rounding=rounding)))
    words = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, len(packed), 2)]
    return words if field.word_order == "big" else list(reversed(words))


def describe(register_map: RegisterMap) -> Mapping[str, str]:
    """Human-readable field summary (for ``lemctl`` and logs)."""
    return {
        f.quantity: f"{f.function} {f.address} (0x{f.address:04X}) {f.type} "
        f"{f.word_order} ×{f.scale}"
        for f in register_map.fields
    }
