"""AMM local energy market (LEM) and local power market (LPM) of seed 000, settled exactly.

Formulas: seed 000 §4.1 eq. 1 (buying and selling price), eq. 2 (GDI), §4.2 eq. 5–7 (LPM);
worked example: Algorithm 1. Units, signs and rounding: docs/spec/settlement.md.

Units: energy [Wh] as ``int``; prices [ECT/kWh] and beta [ECT/kWh²] as exact ``Fraction``;
money [µECT] as ``int``. A posting > 0 means the member receives; ``admin_uect`` is what the
community (admin) account receives; ``grid_uect`` > 0 means the community pays the grid (DSO).
Every slot conserves money exactly: ``sum(postings_uect) + admin_uect + grid_uect == 0``.

How it stays exact and fast: within one slot every member's posting is a linear function of its
import and export with the same rational coefficients, so the engine brings them to one integer
denominator per slot and rounds each member's integer numerator half-to-even with one
``divmod``. No ``Fraction`` is built per member (a month of 1,000 members is 3 million postings).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from operator import itemgetter
from typing import NamedTuple

from market.decimals import exact_decimal, parse_decimal
from market.errors import InvalidInput

WH_PER_KWH = 1_000
UECT_PER_ECT = 1_000_000

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


@dataclass(frozen=True)
class SlotSettlement:
    """The settlement of one 15-minute slot (spec "Per slot").

    Attributes:
        e_c_wh: community consumption E_c [Wh].
        e_p_wh: community production E_p [Wh].
        e_local_wh: energy exchanged locally, min(E_c, E_p) [Wh].
        e_net_wh: LPM aggregate E = E_c − E_p [Wh].
        p_buy: buying price p_b [ECT/kWh], None when E_c = 0.
        p_sell: selling price p_s [ECT/kWh], None when E_p = 0.
        gdi: grid dependence index (E_p − E_c)/(E_p + E_c), None when both are 0.
        postings_uect: per measured member [µECT], > 0 received; includes the LPM term.
        admin_uect: what the community (admin) account receives [µECT] (absorbs rounding).
        grid_uect: what the community pays the grid [µECT]; < 0 when the grid pays.
        lem_surplus_uect: exact LEM share of the admin, min(E_c,E_p)·(pLEM_buy − pLEM_sell)
            [µECT].
        lpm_surplus_uect: exact LPM total beta·E² [µECT], never negative.
    """

    e_c_wh: int
    e_p_wh: int
    e_local_wh: int
    e_net_wh: int
    p_buy: Fraction | None
    p_sell: Fraction | None
    gdi: Fraction | None
    postings_uect: dict[str, int]
    admin_uect: int
    grid_uect: int
    lem_surplus_uect: Fraction
    lpm_surplus_uect: Fraction


@dataclass(frozen=True)
class PeriodSettlement:
    """The settlement of a period: its slots and their sums (spec "Per period").

    Attributes:
        slots: the slot settlements in input order (empty if settled with ``keep_slots=False``).
        slot_count: number of slots settled.
        postings_uect: per member, the sum of its slot postings [µECT].
        admin_uect: sum of the slots' admin shares [µECT].
        grid_uect: sum of the slots' grid payments [µECT].
        e_c_wh, e_p_wh, e_local_wh: sums of E_c, E_p, min(E_c, E_p) [Wh].
        self_consumption: Σ min(E_c,E_p) / Σ E_c, the share of the community's consumption
            covered by local production (conventionally "self-sufficiency"); None if Σ E_c = 0.
        production_used_locally: Σ min(E_c,E_p) / Σ E_p, the share of local production
            consumed inside the community (conventionally "self-consumption"); None if Σ E_p = 0.
        lem_surplus_uect, lpm_surplus_uect: exact sums of the slots' surpluses [µECT].
    """

    slots: tuple[SlotSettlement, ...]
    slot_count: int
    postings_uect: dict[str, int]
    admin_uect: int
    grid_uect: int
    e_c_wh: int
    e_p_wh: int
    e_local_wh: int
    self_consumption: Fraction | None
    production_used_locally: Fraction | None
    lem_surplus_uect: Fraction
    lpm_surplus_uect: Fraction


_import_wh = itemgetter(0)  # MemberEnergy.import_wh, without the property call
_export_wh = itemgetter(1)


class _Scaled(NamedTuple):
    """Parameters as integer numerators over one common denominator ``den``."""

    den: int
    buy_bau: int
    sell_bau: int
    buy_lem: int
    sell_lem: int
    beta: int


@lru_cache(maxsize=64)
def _scaled(params: MarketParams) -> _Scaled:
    den = math.lcm(*(getattr(params, key).denominator for key in PARAM_KEYS))
    nums = (getattr(params, key) * den for key in PARAM_KEYS)
    return _Scaled(den, *(int(num) for num in nums))


def settle_slot(
    params: MarketParams,
    measures: Mapping[str, Energy],
    *,
    members: Collection[str] | None = None,
) -> SlotSettlement:
    """Settle one slot: prices, GDI, postings, grid payment and admin share.

    Implements seed 000 eq. 1 (p_b, p_s), eq. 2 (GDI), eq. 6 (LPM cost beta·E·e_i) and the
    balances of Algorithm 1 lines 8–10; see docs/spec/settlement.md "Per slot".

    Args:
        params: the period's market parameters.
        measures: member name -> energy of the slot; members without a measurement are absent
            (they post nothing).
        members: if given, the allowed member names; any other name is refused.

    Returns:
        The slot settlement; it conserves money exactly.

    Raises:
        InvalidSettlementInput: a member name is not a non-empty string or not allowed, or a
            value is not a :class:`MemberEnergy`.
    """
    _check_measures(measures, members)
    return _settle(_scaled(params), measures)


def settle_period(
    params: MarketParams,
    slots: Iterable[Mapping[str, Energy]],
    *,
    members: Collection[str] | None = None,
    keep_slots: bool = True,
) -> PeriodSettlement:
    """Settle a period slot by slot and sum it (spec "Per period").

    Settling a period equals settling its slots one by one with :func:`settle_slot`: the
    period's figures are plain sums of the slots' figures.

    Args:
        params: the period's market parameters.
        slots: per slot, member name -> energy; may be a generator (slots are read once).
        members: if given, the allowed member names; each appears in the period postings
            (0 if never measured).
        keep_slots: keep every :class:`SlotSettlement` in the result; ``False`` keeps only the
            sums, for long periods with many members (memory).

    Raises:
        InvalidSettlementInput: as :func:`settle_slot`, with ``slot`` set to the slot index.
    """
    scaled = _scaled(params)
    allowed = None if members is None else frozenset(members)
    totals = _PeriodSums(allowed)
    kept: list[SlotSettlement] = []
    for index, measures in enumerate(slots):
        try:
            _check_measures(measures, allowed)
        except InvalidSettlementInput as exc:
            raise exc.at(slot=index) from None
        slot = _settle(scaled, measures, totals.postings)
        totals.add(slot)
        if keep_slots:
            kept.append(slot)
    return totals.result(tuple(kept))


class _PeriodSums:
    """Running sums of slot settlements (integers and exact fractions only)."""

    def __init__(self, members: Collection[str] | None) -> None:
        self.postings: dict[str, int] = dict.fromkeys(sorted(members), 0) if members else {}
        self.count = 0
        self.admin = self.grid = self.e_c = self.e_p = self.e_local = 0
        self.lem = Fraction(0)
        self.lpm = Fraction(0)

    def add(self, slot: SlotSettlement) -> None:
        """Add a slot's figures; its postings were already summed into ``self.postings``."""
        self.count += 1
        self.admin += slot.admin_uect
        self.grid += slot.grid_uect
        self.e_c += slot.e_c_wh
        self.e_p += slot.e_p_wh
        self.e_local += slot.e_local_wh
        self.lem += slot.lem_surplus_uect
        self.lpm += slot.lpm_surplus_uect

    def result(self, slots: tuple[SlotSettlement, ...]) -> PeriodSettlement:
        return PeriodSettlement(
            slots=slots,
            slot_count=self.count,
            postings_uect=self.postings,
            admin_uect=self.admin,
            grid_uect=self.grid,
            e_c_wh=self.e_c,
            e_p_wh=self.e_p,
            e_local_wh=self.e_local,
            self_consumption=Fraction(self.e_local, self.e_c) if self.e_c else None,
            production_used_locally=Fraction(self.e_local, self.e_p) if self.e_p else None,
            lem_surplus_uect=self.lem,
            lpm_surplus_uect=self.lpm,
        )


def _settle(
    sp: _Scaled, measures: Mapping[str, Energy], sums: dict[str, int] | None = None
) -> SlotSettlement:
    """Settle one validated slot with integer arithmetic (see the module docstring).

    If ``sums`` is given, each posting is also added to ``sums[member]`` (period totals).
    """
    e_c: int = sum(map(_import_wh, measures.values()))
    e_p: int = sum(map(_export_wh, measures.values()))
    e_local = min(e_c, e_p)
    e_net = e_c - e_p
    # Prices as numerators over den·E (eq. 1); a price is undefined when its E is zero.
    buy_num = e_c * sp.buy_bau - e_local * (sp.buy_bau - sp.buy_lem)
    sell_num = e_p * sp.sell_bau + e_local * (sp.sell_lem - sp.sell_bau)
    # Member i's posting [µECT] = e_p,i·ps·1000 − e_c,i·pb·1000 − beta·E·e_i
    #   = (e_p,i·(sell + lpm) − e_c,i·(buy + lpm)) / denom, with the integers below.
    c_den = max(e_c, 1)
    p_den = max(e_p, 1)
    denom = sp.den * c_den * p_den
    sell = WH_PER_KWH * sell_num * c_den
    buy = WH_PER_KWH * buy_num * p_den
    lpm = sp.beta * e_net * c_den * p_den
    postings = _round_postings(measures, sell + lpm, buy + lpm, denom, sums)
    # The community pays the grid for the deficit and is paid for the surplus at BAU prices.
    grid = _round_half_even(
        WH_PER_KWH * (max(e_net, 0) * sp.buy_bau - max(-e_net, 0) * sp.sell_bau), sp.den
    )
    return SlotSettlement(
        e_c_wh=e_c,
        e_p_wh=e_p,
        e_local_wh=e_local,
        e_net_wh=e_net,
        p_buy=Fraction(buy_num, sp.den * e_c) if e_c else None,
        p_sell=Fraction(sell_num, sp.den * e_p) if e_p else None,
        gdi=Fraction(e_p - e_c, e_p + e_c) if e_c + e_p else None,
        postings_uect=postings,
        admin_uect=-(sum(postings.values()) + grid),
        grid_uect=grid,
        lem_surplus_uect=Fraction(WH_PER_KWH * e_local * (sp.buy_lem - sp.sell_lem), sp.den),
        lpm_surplus_uect=Fraction(sp.beta * e_net * e_net, sp.den),
    )


def _round_postings(
    measures: Mapping[str, Energy],
    gain: int,
    cost: int,
    denom: int,
    sums: dict[str, int] | None,
) -> dict[str, int]:
    """Round ``(export·gain − import·cost) / denom`` half-to-even for every member.

    The hot loop of a settlement: written out by hand (no helper call per member), with the
    common factor removed first so the integers stay small, and the period sums updated in
    the same pass.
    """
    if sums is None:
        sums = {}
    g = math.gcd(gain, cost, denom)
    gain2, cost2, denom2 = 2 * gain // g, 2 * cost // g, 2 * denom // g
    half = denom2 // 2
    postings: dict[str, int] = {}
    sums_get = sums.get
    for name, (import_wh, export_wh) in measures.items():
        # floor(x + 1/2) with x = n / d, computed as (2n + d) // 2d; an exact tie (no
        # remainder) rounded up to an odd number goes back down to the even neighbour. Floor
        # division plus a rare check is faster here than divmod and its tuple.
        t = export_wh * gain2 - import_wh * cost2 + half
        q = t // denom2
        if q & 1 and q * denom2 == t:
            q -= 1
        postings[name] = q
        sums[name] = sums_get(name, 0) + q
    return postings


def _round_half_even(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half to even; ``denominator`` > 0."""
    q, r = divmod(2 * numerator + denominator, 2 * denominator)
    return q - 1 if not r and q & 1 else q


def _check_measures(measures: Mapping[str, Energy], members: Collection[str] | None) -> None:
    """Refuse non-string or empty names, disallowed names and non-MemberEnergy values.

    Uses set operations (C loops) rather than a Python loop per member: this runs for every slot.
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


_ENERGY_TYPES = (MemberEnergy, tuple)


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
