"""Forward schedules settled against metered profiles at imbalance prices (seed 002, §IV.C–IV.D).

Spec: docs/spec/schedules.md. Before a delivery day each member submits a forward schedule:
per 15-min slot the energy it will take (+) or give (−) [Wh], bought from or sold to the grid
supervisor at the community's forward price. The asset attributes registered with the member's
meter bound the schedule (a load-only asset cannot schedule production, a generation-only asset
cannot schedule consumption, neither may exceed its connection capacity). After delivery the
metered profile (import − export per slot) is the truth; the deviation ``metered − scheduled``
is settled with the supervisor at the short price (deviation > 0: the member took more or gave
less than scheduled) or the long price (deviation < 0). The supervisor buys the community's net
metered exchange from the grid at the grid prices and keeps the remainder, so every settlement
conserves money exactly: Σ members + supervisor + grid = 0.

Signs: energy > 0 is taken from the community, amounts "paid" > 0 leave the member, postings
are balance changes (> 0 credits the account).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from market.errors import InvalidInput, MarketError

SLOT_S = 900
"""Schedule and measurement slot [s]."""

SLOTS_PER_DAY = 86_400 // SLOT_S
"""Slots in one UTC delivery day (96)."""

_UECT_PER_WH_AT_1_ECT = 1000
"""µECT that 1 Wh costs at 1 ECT/kWh (10^6 µECT/ECT over 1000 Wh/kWh)."""

_S_PER_H = 3600


class AssetKind(StrEnum):
    """What the metered asset can physically do (seed 002 §IV.B, attribute-based access)."""

    LOAD = "load"
    GENERATION = "generation"
    PROSUMER = "prosumer"
    STORAGE = "storage"


class Refusal(StrEnum):
    """Why a schedule is refused; the value is what the ledger records."""

    WRONG_LENGTH = "wrong_length"
    PRODUCTION_NOT_ALLOWED = "production_not_allowed"
    CONSUMPTION_NOT_ALLOWED = "consumption_not_allowed"
    OVER_IMPORT_CAPACITY = "over_import_capacity"
    OVER_EXPORT_CAPACITY = "over_export_capacity"
    GATE_CLOSED = "gate_closed"


class ScheduleError(MarketError):
    """A schedule the asset attributes or the gate closure do not allow.

    Attributes:
        member: whose schedule.
        slot: first offending slot index, or None for the whole schedule.
        refusal: the refusal code.
    """

    def __init__(self, member: str, slot: int | None, refusal: Refusal, detail: str) -> None:
        where = "" if slot is None else f" slot {slot}"
        super().__init__(f"schedule of {member!r}{where} refused: {refusal.value}: {detail}")
        self.member = member
        self.slot = slot
        self.refusal = refusal


@dataclass(frozen=True, slots=True)
class Asset:
    """Attributes registered with a member's meter.

    Attributes:
        kind: load-only, generation-only, prosumer (both) or storage (both).
        import_capacity_w: largest power it may take from the grid [W], >= 0.
        export_capacity_w: largest power it may give to the grid [W], >= 0.
    """

    kind: AssetKind
    import_capacity_w: int
    export_capacity_w: int

    def __post_init__(self) -> None:
        if self.import_capacity_w < 0:
            raise InvalidInput("import_capacity_w", self.import_capacity_w, "must be >= 0")
        if self.export_capacity_w < 0:
            raise InvalidInput("export_capacity_w", self.export_capacity_w, "must be >= 0")

    @property
    def may_take(self) -> bool:
        """Whether the asset may schedule consumption."""
        return self.kind is not AssetKind.GENERATION

    @property
    def may_give(self) -> bool:
        """Whether the asset may schedule production."""
        return self.kind is not AssetKind.LOAD


@dataclass(frozen=True, slots=True)
class Prices:
    """The day's prices [ECT/kWh], all >= 0, with ``imbalance_long <= imbalance_short``.

    Attributes:
        forward: price of scheduled energy, both directions.
        imbalance_short: what a member pays per kWh taken beyond its schedule.
        imbalance_long: what a member is paid per kWh taken below its schedule.
        grid_buy: what the supervisor pays the grid per kWh the community imports.
        grid_sell: what the grid pays the supervisor per kWh the community exports.
    """

    forward: Fraction
    imbalance_short: Fraction
    imbalance_long: Fraction
    grid_buy: Fraction
    grid_sell: Fraction

    def __post_init__(self) -> None:
        for name in ("forward", "imbalance_short", "imbalance_long", "grid_buy", "grid_sell"):
            value: Fraction = getattr(self, name)
            if value < 0:
                raise InvalidInput(f"prices.{name}", str(value), "must be >= 0")
        # A long price above the short one would pay members for deviating both ways.
        if self.imbalance_long > self.imbalance_short:
            raise InvalidInput(
                "prices.imbalance_long", str(self.imbalance_long), "must not exceed imbalance_short"
            )


@dataclass(frozen=True, slots=True)
class MemberDay:
    """One member's schedule and metered profile for a day, one entry per slot.

    Attributes:
        member: account id.
        schedule_wh: scheduled energy per slot [Wh], + take / − give (all 0 if none submitted).
        import_wh: metered import per slot [Wh], >= 0.
        export_wh: metered export per slot [Wh], >= 0.
    """

    member: str
    schedule_wh: tuple[int, ...]
    import_wh: tuple[int, ...]
    export_wh: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MemberSettlement:
    """What one member owes for the day.

    Attributes:
        member: account id.
        scheduled_wh: Σ scheduled energy [Wh] (signed).
        metered_wh: Σ metered import − export [Wh] (signed).
        short_wh: Σ positive deviations [Wh].
        long_wh: Σ magnitudes of negative deviations [Wh].
        forward_uect: paid for scheduled energy [µECT] (< 0: received).
        imbalance_uect: paid for deviations [µECT] (< 0: received).
    """

    member: str
    scheduled_wh: int
    metered_wh: int
    short_wh: int
    long_wh: int
    forward_uect: int
    imbalance_uect: int

    @property
    def posting_uect(self) -> int:
        """Change of the member's balance [µECT]."""
        return -(self.forward_uect + self.imbalance_uect)


@dataclass(frozen=True, slots=True)
class DaySettlement:
    """A settled delivery day.

    Attributes:
        members: per-member results, in input order.
        grid_import_wh: Σ over slots of the community's net import, where positive [Wh].
        grid_export_wh: Σ over slots of the community's net export, where positive [Wh].
        grid_uect: change of the grid account [µECT] (> 0: the community paid the grid).
        supervisor_uect: change of the supervisor's account [µECT]; absorbs rounding residue.
    """

    members: tuple[MemberSettlement, ...]
    grid_import_wh: int
    grid_export_wh: int
    grid_uect: int
    supervisor_uect: int

    def postings(self, supervisor: str, grid: str) -> tuple[tuple[str, int], ...]:
        """Balance changes by account (sorted, zero entries dropped); they sum to 0 [µECT]."""
        total: dict[str, int] = {}
        for m in self.members:
            total[m.member] = total.get(m.member, 0) + m.posting_uect
        total[supervisor] = total.get(supervisor, 0) + self.supervisor_uect
        total[grid] = total.get(grid, 0) + self.grid_uect
        return tuple(sorted((k, v) for k, v in total.items() if v))


def _amount(price: Fraction, energy_wh: int) -> int:
    """Value of ``energy_wh`` at ``price`` [ECT/kWh], rounded half-to-even [µECT].

    Equal to ``round(price * energy_wh * 1000)`` but in plain integers: a day of a thousand
    meters makes ~200,000 of these, and Fraction arithmetic would dominate the settlement.
    """
    quotient, rest = divmod(price.numerator * energy_wh * _UECT_PER_WH_AT_1_ECT, price.denominator)
    twice = 2 * rest  # divmod floors, so 0 <= rest < denominator, also for negative energy
    if twice > price.denominator or (twice == price.denominator and quotient % 2):
        quotient += 1
    return quotient


def check_schedule(
    member: str, asset: Asset, schedule_wh: Sequence[int], slots: int = SLOTS_PER_DAY
) -> None:
    """Check a schedule against the member's asset attributes (seed 002 §IV.B–IV.D).

    Args:
        member: the submitting member.
        asset: attributes registered with its meter.
        schedule_wh: energy per slot [Wh], + take / − give.
        slots: slots the delivery day has.

    Raises:
        ScheduleError: wrong number of slots, production by a load-only asset, consumption by
            a generation-only asset, or a slot above the capacity (capacity [W] · 900 s).
    """
    if len(schedule_wh) != slots:
        raise ScheduleError(
            member, None, Refusal.WRONG_LENGTH, f"{len(schedule_wh)} slots, expected {slots}"
        )
    hours_per_slot = Fraction(SLOT_S, _S_PER_H)
    for slot, energy_wh in enumerate(schedule_wh):
        if energy_wh > 0 and not asset.may_take:
            raise ScheduleError(
                member, slot, Refusal.CONSUMPTION_NOT_ALLOWED, f"{asset.kind.value} asset"
            )
        if energy_wh < 0 and not asset.may_give:
            raise ScheduleError(
                member, slot, Refusal.PRODUCTION_NOT_ALLOWED, f"{asset.kind.value} asset"
            )
        if energy_wh > asset.import_capacity_w * hours_per_slot:
            raise ScheduleError(
                member,
                slot,
                Refusal.OVER_IMPORT_CAPACITY,
                f"{energy_wh} Wh > {asset.import_capacity_w} W for {SLOT_S} s",
            )
        if -energy_wh > asset.export_capacity_w * hours_per_slot:
            raise ScheduleError(
                member,
                slot,
                Refusal.OVER_EXPORT_CAPACITY,
                f"{-energy_wh} Wh > {asset.export_capacity_w} W for {SLOT_S} s",
            )


def check_gate(member: str, day_start_s: int, gate_closure_s: int, now_s: int) -> None:
    """Refuse a schedule submitted after gate closure.

    Args:
        member: the submitting member.
        day_start_s: start of the delivery day [s since epoch, UTC].
        gate_closure_s: how long before the day starts submissions close [s], >= 0.
        now_s: submission time [s] (block time on the ledger).

    Raises:
        ScheduleError: ``now_s >= day_start_s − gate_closure_s``.
    """
    deadline_s = day_start_s - gate_closure_s
    if now_s >= deadline_s:
        raise ScheduleError(member, None, Refusal.GATE_CLOSED, f"gate closed at {deadline_s}")


def _check_profile(day: MemberDay, slots: int) -> None:
    """Every series of a member's day has ``slots`` entries; metered values are >= 0."""
    for name in ("schedule_wh", "import_wh", "export_wh"):
        series: tuple[int, ...] = getattr(day, name)
        if len(series) != slots:
            raise InvalidInput(f"{day.member}.{name}", len(series), f"needs {slots} slots")
    for name in ("import_wh", "export_wh"):
        for slot, energy_wh in enumerate(getattr(day, name)):
            if energy_wh < 0:
                raise InvalidInput(f"{day.member}.{name}[{slot}]", energy_wh, "must be >= 0")


def settle_member(day: MemberDay, prices: Prices) -> MemberSettlement:
    """Settle one member's day slot by slot; each slot's two amounts rounded half-to-even."""
    forward_uect = imbalance_uect = short_wh = long_wh = 0
    for scheduled, imported, exported in zip(
        day.schedule_wh, day.import_wh, day.export_wh, strict=True
    ):
        deviation_wh = imported - exported - scheduled
        forward_uect += _amount(prices.forward, scheduled)
        if deviation_wh > 0:
            short_wh += deviation_wh
            imbalance_uect += _amount(prices.imbalance_short, deviation_wh)
        elif deviation_wh < 0:
            long_wh -= deviation_wh
            imbalance_uect += _amount(prices.imbalance_long, deviation_wh)
    return MemberSettlement(
        member=day.member,
        scheduled_wh=sum(day.schedule_wh),
        metered_wh=sum(day.import_wh) - sum(day.export_wh),
        short_wh=short_wh,
        long_wh=long_wh,
        forward_uect=forward_uect,
        imbalance_uect=imbalance_uect,
    )


def settle_day(
    days: Sequence[MemberDay], prices: Prices, slots: int = SLOTS_PER_DAY
) -> DaySettlement:
    """Settle a delivery day: members against the supervisor, the supervisor against the grid.

    Per slot the community's net metered exchange ``Σ (import − export)`` is bought from the
    grid at ``grid_buy`` when positive and sold at ``grid_sell`` when negative. The supervisor's
    posting is whatever makes the day sum to zero, so it carries the rounding residue (at most
    half a µECT per rounded amount).

    Raises:
        InvalidInput: a member appears twice, a series has the wrong length, or a metered value
            is negative.
    """
    seen: set[str] = set()
    for day in days:
        if day.member in seen:
            raise InvalidInput("members", day.member, "appears more than once")
        seen.add(day.member)
        _check_profile(day, slots)
    members = tuple(settle_member(day, prices) for day in days)
    grid_import_wh = grid_export_wh = grid_uect = 0
    for slot in range(slots):
        net_wh = sum(d.import_wh[slot] - d.export_wh[slot] for d in days)
        if net_wh > 0:
            grid_import_wh += net_wh
            grid_uect += _amount(prices.grid_buy, net_wh)
        else:
            grid_export_wh -= net_wh
            grid_uect += _amount(prices.grid_sell, net_wh)
    supervisor_uect = -(sum(m.posting_uect for m in members) + grid_uect)
    return DaySettlement(members, grid_import_wh, grid_export_wh, grid_uect, supervisor_uect)
