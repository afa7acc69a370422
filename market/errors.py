"""The market package's exception hierarchy: one base, typed subclasses carrying data.

Every engine in ``market/`` raises a subclass of :class:`MarketError`, so a caller (the ledger's
state machine, ``lemctl``) can translate all market failures at one boundary.
"""

from __future__ import annotations


class MarketError(Exception):
    """Base of every error the market package raises on purpose."""


class InvalidInput(MarketError):  # noqa: N818 -- the agreed name shared by every engine
    """An input value that an engine refuses, naming the field and the offending value.

    Attributes:
        field: dotted path of the refused input (e.g. ``"buys[2].price"``).
        value: the refused value as received (kept for the error report, never evaluated).
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        super().__init__(f"{field}: {reason} (got {value!r})")
        self.field = field
        self.value = value
        self.reason = reason
