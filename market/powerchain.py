"""PowerChain: storage-backed energy token ENT, imbalance correction, sessions, voting (seed 004).

Spec: docs/spec/powerchain.md. Source: the PowerChain thesis (seed 004) §4.2.3 (eq. 4.1–4.4),
§5.2–5.4 (commands, parameters M, B, C, H, F, eq. 5.1) and §6.4 (worked scenario). The order
book is in :mod:`market.powerchain_book`.

Units: energy integer Wh; ENT integer µENT (1 ENT = 10^6 µENT and backs 1 kWh, so 1 Wh is worth
1,000 µENT at par); eEuro integer µeEuro. Rates and R are exact :class:`~fractions.Fraction`
values in ENT/kWh. The only rounding (see :func:`cost_uent`, :func:`split_fee`) is stated where
it happens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from math import ceil
from typing import Any

from market.decimals import exact_decimal, parse_decimal
from market.errors import InvalidInput

UENT_PER_ENT = 1_000_000
UENT_PER_WH = 1_000
"""µENT that 1 Wh is worth at par (1 ENT per kWh)."""
UEUR_PER_EUR = 1_000_000
MAX_ENERGY_WH = 10**12
"""Largest energy one report or session may name [Wh] (1 TWh); keeps amounts within 64 bits."""
MAX_AMOUNT = 1 << 62
"""Largest token amount one tx may name [µENT or µeEuro]."""
PARAMETER_NAMES = ("M", "B", "C", "H", "F")


@dataclass(frozen=True, slots=True)
class Params:
    """Network parameters of seed 004 §5.3.

    Attributes:
        m: maximum minting cost M [ENT/kWh], 0 ≤ M ≤ 1.
        b: maximum burning cost B [ENT/kWh], 0 ≤ B ≤ 1.
        c: missing-energy recovery rate C, 0 < C < 1 (eq. 4.3).
        h_s: consumption-session validity H [s], > 0.
        f: storage-provider fee F, the owner's share of minted ENT, 0 ≤ F ≤ 1.
    """

    m: Fraction = Fraction(1, 2)
    b: Fraction = Fraction(1, 2)
    c: Fraction = Fraction(1, 20)
    h_s: int = 7200
    f: Fraction = Fraction(1, 5)


DEFAULT_PARAMS = Params()
"""The thesis's defaults (§5.3, Fig. 6.2): M = B = 0.5, C = 0.05, H = 7200 s, F = 0.2."""


def parse_parameter(name: str, text: object) -> Fraction | int:
    """One parameter from its decimal text, checked against its range (§5.3).

    Raises:
        InvalidInput: unknown name, not a plain decimal, or out of range.
    """
    field = f"params.{name}"
    if name not in PARAMETER_NAMES:
        raise InvalidInput("params", name, f"unknown parameter; one of {PARAMETER_NAMES}")
    value = parse_decimal(field, text)
    if name == "H":
        if value.denominator != 1 or not 0 < value <= 366 * 86_400:
            raise InvalidInput(field, text, "must be whole seconds in (0, 366 days]")
        return int(value)
    if name == "C" and not 0 < value < 1:
        raise InvalidInput(field, text, "must lie in (0, 1) (eq. 4.3)")
    if name in ("M", "B", "F") and not 0 <= value <= 1:
        raise InvalidInput(field, text, "must lie in [0, 1]")
    return value


def parse_params(texts: Mapping[str, object], base: Params = DEFAULT_PARAMS) -> Params:
    """``base`` with the parameters named in ``texts`` (decimal strings) replaced.

    Raises:
        InvalidInput: see :func:`parse_parameter`.
    """
    out = base
    for name in sorted(texts):
        value = parse_parameter(name, texts[name])
        changes: dict[str, Any] = {_FIELD[name]: value}
        out = replace(out, **changes)
    return out


_FIELD = {"M": "m", "B": "b", "C": "c", "H": "h_s", "F": "f"}


def params_text(params: Params) -> dict[str, str]:
    """The parameters as exact decimal strings (inverse of :func:`parse_params`)."""
    out = {}
    for name in PARAMETER_NAMES:
        text = exact_decimal(Fraction(getattr(params, _FIELD[name])))
        # Every parameter came from decimal text, so its expansion is finite.
        assert text is not None
        out[name] = text
    return out


# imbalance mechanism (eq. 4.1–4.4) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Imbalance:
    """Totals that eq. 4.3 compares, and the frozen cost R.

    Attributes:
        stored_wh: KWH, energy stored in all active units [Wh].
        ent_uent: ENT in circulation, available and locked [µENT].
        r: the cost R [ENT/kWh]; set to |D|·C only when |D| grows (or changes sign), kept while
            |D| shrinks, 0 at equilibrium (§4.2.3.1, the paragraph before eq. 4.4).
    """

    stored_wh: int = 0
    ent_uent: int = 0
    r: Fraction = Fraction(0)

    @property
    def difference_uent(self) -> int:
        """Signed D = ENT − KWH [µENT]: positive when tokens exceed the stored energy (a loss)."""
        return self.ent_uent - self.stored_wh * UENT_PER_WH


def cost_uent(imb: Imbalance, cap: Fraction, energy_wh: int) -> int:
    """What R takes from (or adds to) ``energy_wh`` of minting or burning [µENT].

    The per-kWh cost is min(R, cap) (cap = M for minting, B for burning: "the maximum ENT/kWh
    minting/burning cost", §4.2.3.1, §5.3). It stops exactly at equilibrium: the part of
    ``energy_wh`` beyond n_t = D_t/R (eq. 4.4) carries no cost (§6.4: "3 kWh with cost, the rest
    with no cost"), so the cost never exceeds |D|. Rounded *up* to the µENT, so that every
    costed event moves D by at least 1 µENT and equilibrium is reached in at most ⌈n_t⌉ events
    of 1 kWh or more.
    """
    d = abs(imb.difference_uent)
    if d == 0 or energy_wh <= 0:
        return 0
    exact = energy_wh * min(imb.r, cap) * UENT_PER_WH
    return min(ceil(exact), d)


def mint_uent(imb: Imbalance, params: Params, energy_wh: int) -> int:
    """ENT minted for ``energy_wh`` produced (eq. 4.1) [µENT].

    With tokens in excess (D > 0, a loss) the cost is withheld: (1 − min(R, M)) ENT/kWh. With
    energy in excess (D < 0, which the thesis does not treat) the mirror image applies,
    (1 + min(R, M)), so the correction always shrinks |D| (docs/spec/powerchain.md §2).
    """
    cost = cost_uent(imb, params.m, energy_wh)
    base = energy_wh * UENT_PER_WH
    return base - cost if imb.difference_uent > 0 else base + cost


def burn_uent(imb: Imbalance, params: Params, energy_wh: int) -> int:
    """ENT to burn for ``energy_wh`` consumed (eq. 4.2) [µENT]: (1 ± min(R, B)) ENT/kWh."""
    cost = cost_uent(imb, params.b, energy_wh)
    base = energy_wh * UENT_PER_WH
    return base + cost if imb.difference_uent > 0 else base - cost


def settle(imb: Imbalance, params: Params, delta_wh: int, delta_uent: int) -> Imbalance:
    """The totals after a change of stored energy and circulating ENT, with R's update rule.

    R = |D|·C (eq. 4.3, D in ENT) is recomputed only when |D| grows or D changes sign; while
    |D| shrinks R stays, which is what makes equilibrium a finite number of steps away
    (eq. 4.4); at D = 0 R is 0.
    """
    before = imb.difference_uent
    out = Imbalance(imb.stored_wh + delta_wh, imb.ent_uent + delta_uent, imb.r)
    after = out.difference_uent
    if after == 0:
        return replace(out, r=Fraction(0))
    if abs(after) > abs(before) or (before > 0) != (after > 0):
        return replace(out, r=Fraction(abs(after), UENT_PER_ENT) * params.c)
    return out


def steps_to_equilibrium_kwh(imb: Imbalance, cap: Fraction) -> Fraction | None:
    """n_t = D_t / R (eq. 4.4) [kWh], with R capped at ``cap``; None when R = 0 and D ≠ 0."""
    d = Fraction(abs(imb.difference_uent), UENT_PER_ENT)
    if d == 0:
        return Fraction(0)
    rate = min(imb.r, cap)
    return None if rate == 0 else d / rate


def rates(imb: Imbalance, params: Params) -> tuple[Fraction, Fraction]:
    """(mint rate, burn rate) [ENT/kWh] for a small amount ("Get Energy Rates", §5.2)."""
    sign = 1 if imb.difference_uent > 0 else -1 if imb.difference_uent < 0 else 0
    return 1 - sign * min(imb.r, params.m), 1 + sign * min(imb.r, params.b)


def split_fee(minted_uent: int, params: Params) -> tuple[int, int]:
    """(producer's share, storage owner's fee) of a mint [µENT]; the fee F·minted is rounded
    half-to-even to the µENT and the producer gets the rest, so the two sum to ``minted_uent``."""
    fee = round(minted_uent * params.f)
    return minted_uent - fee, fee


# consumption sessions (§5.2 "Start Consumption Session", §6.4) --------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    """A consumer's session with one storage unit.

    Attributes:
        energy_wh: energy still reserved for the consumer in the unit [Wh].
        locked_uent: ENT still locked for it [µENT].
        start_ms: block time it started [ms].
        expires_ms: start + H [ms]; after it the session only closes (refund).
    """

    energy_wh: int
    locked_uent: int
    start_ms: int
    expires_ms: int


def session_energy_wh(locked_uent: int, imb: Imbalance, params: Params) -> int:
    """Energy that ``locked_uent`` pays for at the current burn rate [Wh] (§6.4: 7.35/(1+R) = 7).

    The per-Wh rate is rounded up to the µENT, which covers the upward rounding of every later
    partial burn (:func:`cost_uent`) as long as R does not grow. With energy in excess (D < 0)
    the session is sized at par, because the rate climbs back to 1 as equilibrium is reached.
    """
    per_wh = UENT_PER_WH
    if imb.difference_uent > 0:
        per_wh += ceil(min(imb.r, params.b) * UENT_PER_WH)
    return locked_uent // per_wh


def open_session(
    locked_uent: int, imb: Imbalance, params: Params, available_wh: int, now_ms: int
) -> Session:
    """A new session locking ``locked_uent`` in a unit with ``available_wh`` unreserved.

    Raises:
        InvalidInput: the amount buys no whole Wh, or more energy than the unit has free.
    """
    energy = session_energy_wh(locked_uent, imb, params)
    if energy <= 0:
        raise InvalidInput("amount_uent", locked_uent, "pays for less than 1 Wh at the burn rate")
    if energy > available_wh:
        raise InvalidInput(
            "amount_uent", locked_uent, f"pays for {energy} Wh; the unit has {available_wh} Wh free"
        )
    return Session(energy, locked_uent, now_ms, now_ms + params.h_s * 1000)


@dataclass(frozen=True, slots=True)
class Consumption:
    """Outcome of one consumption report against a session.

    Attributes:
        burned_uent: ENT burned from the session's lock (at most what was locked).
        reserved_used_wh: reserved energy the report used (≤ the session's energy).
        session: the session after the report, or None when it closed.
        refund_uent: locked ENT returned to the consumer on closing.
        released_wh: reserved energy released back to the unit on closing.
        imbalance: the totals after the report.
    """

    burned_uent: int
    reserved_used_wh: int
    session: Session | None
    refund_uent: int
    released_wh: int
    imbalance: Imbalance


def consume(session: Session, imb: Imbalance, params: Params, energy_wh: int) -> Consumption:
    """Burn for ``energy_wh`` consumed from a unit in ``session`` (eq. 4.2, §6.4).

    The burn uses the rate at report time. More energy than the session holds (a meter that let
    the consumer over-consume, §6.4) burns only what is locked; the rest becomes imbalance. The
    session closes when its energy or its lock is used up; the unused lock is refunded.
    """
    if not 0 < energy_wh <= MAX_ENERGY_WH:
        raise InvalidInput("energy_wh", energy_wh, f"must lie in (0, {MAX_ENERGY_WH}]")
    burned = min(session.locked_uent, burn_uent(imb, params, energy_wh))
    used = min(energy_wh, session.energy_wh)
    left = Session(
        session.energy_wh - used, session.locked_uent - burned, session.start_ms, session.expires_ms
    )
    after = settle(imb, params, -energy_wh, -burned)
    if left.energy_wh > 0 and left.locked_uent > 0:
        return Consumption(burned, used, left, 0, 0, after)
    return Consumption(burned, used, None, left.locked_uent, left.energy_wh, after)


# voting (§5.4, eq. 5.1) --------------------------------------------------------------------


def cast(votes: Mapping[str, bool], voter: str) -> dict[str, bool]:
    """The votes after ``voter`` sends the command: a first send is a positive vote, each
    re-send of the same command flips the voter's vote (§5.4)."""
    out = dict(votes)
    out[voter] = not out[voter] if voter in out else True
    return out


def passed(votes: Mapping[str, bool], voters: frozenset[str] | set[str]) -> bool:
    """Eq. 5.1: V+/N > 0.5, counting only the positive votes of current voters."""
    positive = sum(1 for v, yes in votes.items() if yes and v in voters)
    return 2 * positive > len(voters)
