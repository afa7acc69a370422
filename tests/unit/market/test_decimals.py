"""Decimal text in and out of market/decimals.py (docs/spec/settlement.md, "Number formats")."""

from __future__ import annotations

from fractions import Fraction

import pytest

from market.decimals import exact_decimal, format_decimal, format_uect, parse_decimal
from market.errors import InvalidInput


@pytest.mark.parametrize(
    ("text", "value"),
    [("21", Fraction(21)), ("0.125", Fraction(1, 8)), ("-3.5", Fraction(-7, 2)), ("007", 7)],
)
def test_plain_decimals_parse_exactly(text: str, value: Fraction) -> None:
    """Plain positional decimals become the exact rational."""
    assert parse_decimal("p", text) == value


@pytest.mark.parametrize("text", ["1e3", "1E3", ".5", "5.", "+5", " 5", "inf", "nan", "1_000", ""])
def test_other_spellings_are_refused(text: str) -> None:
    """Exponents, signs other than '-', blanks, bare points and underscores are refused."""
    with pytest.raises(InvalidInput) as caught:
        parse_decimal("p_buy_bau", text)
    assert (caught.value.field, caught.value.value) == ("p_buy_bau", text)


def test_non_strings_and_huge_texts_are_refused() -> None:
    """A float or int is not a decimal string; a 41-character number is refused too."""
    for bad in (21.0, 21, None, "1" * 41):
        with pytest.raises(InvalidInput):
            parse_decimal("p", bad)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Fraction(91, 5), "18.2"),
        (Fraction(9), "9"),
        (Fraction(-1100, 3900), "-0.282051282"),
        (Fraction(0), "0"),
        (Fraction(-1, 10**12), "0"),
        (Fraction(1, 2 * 10**9), "0"),  # half of the last place rounds to even (0)
        (Fraction(3, 2 * 10**9), "0.000000002"),
        (Fraction(2, 3), "0.666666667"),
    ],
)
def test_format_decimal_rounds_half_even_and_strips_zeros(value: Fraction, text: str) -> None:
    """Output decimals: 9 places, half-to-even, no trailing zeros, never "-0"."""
    assert format_decimal(value) == text


def test_format_uect_shows_six_decimals() -> None:
    """µECT amounts print as ECT with exactly six decimals and a sign when negative."""
    assert format_uect(-45_500_000) == "-45.500000"
    assert format_uect(1) == "0.000001"
    assert format_uect(-1) == "-0.000001"
    assert format_uect(0) == "0.000000"


def test_exact_decimal_never_rounds() -> None:
    """exact_decimal writes every digit of a finite decimal and refuses (None) the others."""
    assert exact_decimal(Fraction(547, 2000)) == "0.2735"
    assert exact_decimal(Fraction(1, 2**12)) == "0.000244140625"
    assert exact_decimal(Fraction(-21)) == "-21"
    assert exact_decimal(Fraction(1, 3)) is None
