"""AMM local energy market (LEM) and local power market (LPM) of seed 000, settled exactly.

Formulas: seed 000 §4.1 eq. 1 (buying and selling price), eq. 2 (GDI), §4.2 eq. 5–7 (LPM);
worked example: Algorithm 1. Units, signs and rounding: docs/spec/settlement.md.

Units: energy [Wh] as ``int``; prices [ECT/kWh] and beta [ECT/kWh²] as exact ``Fraction``;
money [µECT] as ``int``. A posting > 0 means the member receives; ``admin_uect`` is what the
community (admin) account receives; ``grid_uect`` > 0 means the community pays the grid (DSO).
Every slot conserves money exactly: ``sum(postings_uect) + admin_uect + grid_uect == 0``.

How it stays exact and fast: within one slot every member's posting is a linear function of its
import and export with the same rational coefficients, so the engine brings them to one integer
denominator per slot and rounds each member's integer numerator half-to-even with one floor
division (and a check on exact ties). No ``Fraction`` is built per member (a month of 1,000
members is 3 million postings).

What the engine accepts (parameters, member energies, their validation and the error type) is
:mod:`market.amm_inputs`; its public types and constants are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from operator import itemgetter
from typing import NamedTuple

from market.amm_inputs import (
    MAX_SLOT_ENERGY_WH,
    PARAM_KEYS,
    Energy,
    InvalidSettlementInput,
    MarketParams,
    MemberEnergy,
    check_measures,
)
from market.decimals import UECT_PER_ECT

__all__ = [
    "MAX_SLOT_ENERGY_WH",
    "PARAM_KEYS",
    "UECT_PER_ECT",
    "WH_PER_KWH",
    "Energy",
    "InvalidSettlementInput",
    "MarketParams",
    "MemberEnergy",
    "PeriodSettlement",
    "SlotSettlement",
    "settle_period",
    "settle_slot",
]

WH_PER_KWH = 1_000


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
    check_measures(measures, members)
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
            check_measures(measures, allowed)
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
