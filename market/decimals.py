"""Exact decimal text <-> :class:`~fractions.Fraction`, and µECT amounts as ECT text.

Prices travel as decimal strings (docs/spec/settlement.md, "Number formats") so that every node
reads the same exact rational; floats never enter. Only the plain positional form is accepted
(``"21"``, ``"0.125"``, ``"-3.5"``): no exponents, no ``inf``/``nan``, no blanks, no ``"+"``, no
``".5"`` or ``"5."``, so each value has few spellings and none is ambiguous.
"""

from __future__ import annotations

import re
from fractions import Fraction

from market.errors import InvalidInput

#: Longest accepted decimal text [characters]; bounds the size of the rationals a tx can inject.
MAX_DECIMAL_CHARS = 40

#: Places of the decimal strings written for prices and ratios (spec "Number formats").
OUTPUT_PLACES = 9

UECT_PER_ECT = 1_000_000

_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def parse_decimal(field: str, text: object) -> Fraction:
    """Parse a plain decimal string exactly.

    Args:
        field: name of the input, used in the error.
        text: the value as received; must be a ``str``.

    Returns:
        The exact value.

    Raises:
        InvalidInput: ``text`` is not a string or not a plain decimal.
    """
    if not isinstance(text, str):
        raise InvalidInput(field, text, 'must be a decimal string such as "16.5"')
    if len(text) > MAX_DECIMAL_CHARS:
        raise InvalidInput(field, text, f"longer than {MAX_DECIMAL_CHARS} characters")
    if _DECIMAL.fullmatch(text) is None:
        raise InvalidInput(
            field, text, "not a plain decimal (digits with an optional '-' and '.fraction')"
        )
    return Fraction(text)


def format_decimal(value: Fraction, places: int = OUTPUT_PLACES) -> str:
    """Write ``value`` rounded half-to-even to ``places`` decimals, trailing zeros stripped.

    ``Fraction(91, 5)`` -> ``"18.2"``, ``Fraction(9)`` -> ``"9"``, ``Fraction(-11, 39)`` ->
    ``"-0.282051282"``. A value that rounds to zero is ``"0"`` (never ``"-0"``).
    """
    scaled = round(value * 10**places)  # Fraction.__round__ rounds half to even
    sign = "-" if scaled < 0 else ""
    whole, part = divmod(abs(scaled), 10**places)
    digits = f"{part:0{places}d}".rstrip("0") if places else ""
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


def format_uect(amount_uect: int) -> str:
    """Write an amount [µECT] as ECT with exactly 6 decimals: ``-45500000`` -> ``"-45.500000"``."""
    sign = "-" if amount_uect < 0 else ""
    whole, part = divmod(abs(amount_uect), UECT_PER_ECT)
    return f"{sign}{whole}.{part:06d}"


def exact_decimal(value: Fraction) -> str | None:
    """``value`` as a decimal string without any rounding, or None if it has no finite one.

    ``Fraction(547, 2000)`` -> ``"0.2735"``; ``Fraction(1, 3)`` -> None.
    """
    den = value.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    return format_decimal(value, max(twos, fives)) if den == 1 else None
