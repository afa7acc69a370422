"""Inputs of the AMM settlement: market parameters, member energies, and how bad ones are refused.

:mod:`market.amm` settles; this module decides what it accepts (docs/spec/settlement.md
"Parameters", "Errors"; seed 000 §4.1, §4.2, Algorithm 1 line 1). Every refusal is an
:class:`InvalidSettlementInput` naming the field, the value and, where known, the slot and member.
:mod:`market.amm` re-exports every public name here, so callers import from there.

Units: energy [Wh] as ``int``; prices [ECT/kWh] and beta [ECT/kWh²] as exact ``Fraction``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from fractions import Fraction
from operator import itemgetter

from market.decimals import exact_decimal, parse_decimal
from market.errors import InvalidInput

#: Largest accepted energy of one member in one slot [Wh]: 1 GWh per 15 min is far beyond any
#: connection a meter cabinet serves, and the bound keeps a hostile value from bloating the ints.
MAX_SLOT_ENERGY_WH = 10**9

#: Keys of :meth:`MarketParams.from_strings`; ``beta`` may be omitted (then 0).
PARAM_KEYS = ("p_buy_bau", "p_sell_bau", "p_buy_lem", "p_sell_lem", "beta")


class InvalidSettlementInput(InvalidInput):
    """Refused settlement input, naming the slot and member where they are known.

    Attributes:
        slot: index of the slot in the period (0-based), or None.
        member: member (meter) name, or None.
    """

    def __init__(
        self,
        field: str,
        value: object,
        reason: str,
        *,
        slot: int | None = None,
        member: str | None = None,
    ) -> None:
        super().__init__(field, value, reason)
        self.slot = slot
        self.member = member
        where = []
        if slot is not None:
            where.append(f"slot {slot}")
        if member is not None:
            where.append(f"member {member!r}")
        if where:
            self.args = (f"{', '.join(where)}: {self.args[0]}",)

    def at(self, *, slot: int | None = None, member: str | None = None) -> InvalidSettlementInput:
        """A copy of this error with the slot and/or member filled in (existing ones kept)."""
        return InvalidSettlementInput(
            self.field,
            self.value,
            self.reason,
            slot=self.slot if self.slot is not None else slot,
            member=self.member if self.member is not None else member,
        )


@dataclass(frozen=True)
class MarketParams:
    """Market parameters of a period (seed 000 §4.1, §4.2; Algorithm 1 line 1).

    Attributes:
        p_buy_bau: grid buying price pBAU_buy [ECT/kWh].
        p_sell_bau: grid selling (feed-in) price pBAU_sell [ECT/kWh].
        p_buy_lem: local buying price pLEM_buy [ECT/kWh], <= p_buy_bau.
        p_sell_lem: local selling price pLEM_sell [ECT/kWh], >= p_sell_bau.
        beta: local power market coefficient [ECT/kWh²], >= 0.
    """

    p_buy_bau: Fraction
    p_sell_bau: Fraction
    p_buy_lem: Fraction
    p_sell_lem: Fraction
    beta: Fraction = Fraction(0)

    def __post_init__(self) -> None:
        for key in PARAM_KEYS:
            value = getattr(self, key)
            if type(value) is not Fraction:
                raise InvalidSettlementInput(
                    key, value, "must be a fractions.Fraction (use MarketParams.from_strings)"
                )
            if value < 0:
                raise InvalidSettlementInput(key, _show(value), "must not be negative")
        if self.p_buy_lem > self.p_buy_bau:
            raise InvalidSettlementInput(
                "p_buy_lem",
                _show(self.p_buy_lem),
                f"must be <= p_buy_bau ({_show(self.p_buy_bau)})",
            )
        if self.p_sell_lem < self.p_sell_bau:
            raise InvalidSettlementInput(
                "p_sell_lem",
                _show(self.p_sell_lem),
                f"must be >= p_sell_bau ({_show(self.p_sell_bau)})",
            )

    @classmethod
    def from_strings(cls, mapping: Mapping[str, str]) -> MarketParams:
        """Build and validate parameters from decimal strings (spec "Parameters").

        Args:
            mapping: keys ``p_buy_bau``, ``p_sell_bau``, ``p_buy_lem``, ``p_sell_lem`` [ECT/kWh]
                and optionally ``beta`` [ECT/kWh²]; values plain decimal strings.

        Raises:
            InvalidSettlementInput: a key is missing or unknown, a value is not a plain decimal
                string, or a bound is violated.
        """
        if not isinstance(mapping, Mapping):
            raise InvalidSettlementInput("params", mapping, "must be a mapping name -> decimal")
        unknown = sorted(set(mapping) - set(PARAM_KEYS), key=str)
        if unknown:
            raise InvalidSettlementInput(
                unknown[0], mapping[unknown[0]], f"unknown parameter (known: {PARAM_KEYS})"
            )
        values: dict[str, Fraction] = {}
        for key in PARAM_KEYS:
            if key not in mapping:
                if key == "beta":
                    values[key] = Fraction(0)
                    continue
                raise InvalidSettlementInput(key, None, "missing")
            try:
                values[key] = parse_decimal(key, mapping[key])
            except InvalidInput as exc:
                raise InvalidSettlementInput(exc.field, exc.value, exc.reason) from exc
        return cls(**values)

    def to_strings(self) -> dict[str, str]:
        """The parameters as exact decimal strings, the inverse of :meth:`from_strings`.

        Raises:
            InvalidSettlementInput: a value has no finite decimal expansion (e.g. 1/3).
        """
        out = {}
        for key in PARAM_KEYS:
            value = getattr(self, key)
            text = exact_decimal(value)
            if text is None:
                raise InvalidSettlementInput(key, value, "has no finite decimal expansion")
            out[key] = text
        return out


class MemberEnergy(tuple[int, int]):
    """One member's metered energy in one slot (a missing register counts as 0).

    A validated ``(import_wh, export_wh)`` pair. It is a tuple rather than a frozen dataclass
    because a month of 1,000 members builds 3 million of them, and a frozen dataclass's
    per-field ``object.__setattr__`` made building them half of the settlement's time.

    Attributes:
        import_wh: energy drawn from the grid e_c,i [Wh], 0 <= x <= MAX_SLOT_ENERGY_WH.
        export_wh: energy fed into the grid e_p,i [Wh], same bounds.
    """

    __slots__ = ()

    def __new__(cls, import_wh: int = 0, export_wh: int = 0) -> MemberEnergy:
        # One combined test on the fast path; the detailed checks only name the bad field.
        if (
            type(import_wh) is not int
            or type(export_wh) is not int
            or not 0 <= import_wh <= MAX_SLOT_ENERGY_WH
            or not 0 <= export_wh <= MAX_SLOT_ENERGY_WH
        ):
            _check_energy("import_wh", import_wh)
            _check_energy("export_wh", export_wh)
        return tuple.__new__(cls, (import_wh, export_wh))

    @property
    def import_wh(self) -> int:
        return self[0]

    @property
    def export_wh(self) -> int:
        return self[1]

    def __repr__(self) -> str:
        return f"MemberEnergy(import_wh={self[0]}, export_wh={self[1]})"


Energy = MemberEnergy | tuple[int, int]
"""A member's slot energy: a :class:`MemberEnergy`, or a plain ``(import_wh, export_wh)`` pair
of ints, which the engine validates in bulk (the ledger's path: no object per measurement)."""


_import_wh = itemgetter(0)  # MemberEnergy.import_wh, without the property call
_export_wh = itemgetter(1)


_ENERGY_TYPES = (MemberEnergy, tuple)


def check_measures(measures: Mapping[str, Energy], members: Collection[str] | None) -> None:
    """Refuse a slot's bad names and values before :mod:`market.amm` settles it (spec "Errors").

    Uses set operations (C loops) rather than a Python loop per member: this runs for every slot.

    Args:
        measures: member name -> energy of one slot [Wh].
        members: the allowed member names, or None for any.

    Raises:
        InvalidSettlementInput: a name is not a non-empty string or not allowed, or a value is
            neither a :class:`MemberEnergy` nor a valid ``(import_wh, export_wh)`` pair.
    """
    if not isinstance(measures, Mapping):
        raise InvalidSettlementInput("measures", measures, "must be a mapping member -> energy")
    if set(map(type, measures)) - {str} or "" in measures:
        bad = next(k for k in measures if type(k) is not str or not k)
        raise InvalidSettlementInput("member", bad, "member names must be non-empty strings")
    value_types = set(map(type, measures.values()))
    if value_types - {MemberEnergy, tuple}:
        who, what = next((k, v) for k, v in measures.items() if type(v) not in _ENERGY_TYPES)
        raise InvalidSettlementInput(
            "measure", what, "must be a MemberEnergy or an (import_wh, export_wh) pair", member=who
        )
    if tuple in value_types:
        _check_pairs(measures)
    if members is not None:
        unknown = measures.keys() - (members if isinstance(members, frozenset) else set(members))
        if unknown:
            name = min(unknown)
            raise InvalidSettlementInput("member", name, "not in the member list", member=name)


def _check_pairs(measures: Mapping[str, Energy]) -> None:
    """Validate plain ``(import_wh, export_wh)`` pairs with a few C-level passes per slot.

    Only when a pass finds something wrong does a Python loop look for the member to name (by
    building its MemberEnergy, whose checks name the field).
    """
    pairs = [v for v in measures.values() if type(v) is tuple]
    if set(map(len, pairs)) == {2}:
        imports = list(map(_import_wh, pairs))
        exports = list(map(_export_wh, pairs))
        if (
            set(map(type, imports)) | set(map(type, exports)) == {int}
            and min(imports) >= 0
            and min(exports) >= 0
            and max(imports) <= MAX_SLOT_ENERGY_WH
            and max(exports) <= MAX_SLOT_ENERGY_WH
        ):
            return
    for who, value in measures.items():
        if type(value) is tuple:
            if len(value) != 2:
                raise InvalidSettlementInput(
                    "measure", value, "must be an (import_wh, export_wh) pair", member=who
                )
            try:
                MemberEnergy(*value)
            except InvalidSettlementInput as exc:
                raise exc.at(member=who) from None


def _check_energy(field: str, value: object) -> None:
    # bool is an int subclass; True is not 1 Wh.
    if type(value) is not int:
        raise InvalidSettlementInput(field, value, "must be an integer number of Wh")
    if value < 0:
        raise InvalidSettlementInput(field, value, "must not be negative")
    if value > MAX_SLOT_ENERGY_WH:
        raise InvalidSettlementInput(field, value, f"exceeds {MAX_SLOT_ENERGY_WH} Wh per slot")


def _show(value: Fraction) -> str:
    """A parameter for an error message: exact decimal text where there is one."""
    return exact_decimal(value) or str(value)
