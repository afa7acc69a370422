"""Genesis: canonical, hashable, JSON round trip, and refusal of inconsistent documents."""

from __future__ import annotations

import pytest

from ledger.genesis import Genesis, GenesisError, Period
from tests.unit.ledger.helpers import N1, PARAMS, SLOT, T0, VAL, genesis


def test_json_and_bytes_round_trip() -> None:
    """to_json/from_json and encode/decode reproduce the genesis and its hash."""
    g = genesis(meters={"M1": N1.public_key}, periods=(Period("p", T0, T0 + SLOT, PARAMS),))
    assert Genesis.from_json(g.to_json()) == g
    assert Genesis.decode(g.encode()) == g
    assert Genesis.from_json(g.to_json()).hash == g.hash


def test_hash_ignores_listing_order() -> None:
    """Admin and validator lists are sorted in the canonical form: order does not matter."""
    a = genesis(admins=(N1.public_key, VAL.public_key))
    b = genesis(admins=(VAL.public_key, N1.public_key))
    assert a.hash == b.hash
    assert a.hash != genesis(chain_id="other").hash


@pytest.mark.parametrize(
    "change",
    [
        {"chain_id": "a/b"},
        {"validators": ()},
        {"validators": ((VAL.public_key, 0),)},
        {"admins": ()},
        {"governance_threshold": 3},
        {"privacy": "hidden"},
        {"dispute_window_ms": -1},
        {"meters": {"bad id!": N1.public_key}},
        {
            "periods": (
                Period("p", T0, T0 + SLOT, PARAMS),
                Period("q", T0 + SLOT - SLOT, T0 + 2 * SLOT, PARAMS),
            )
        },
        {"periods": (Period("p", T0 + 1, T0 + SLOT, PARAMS),)},
        {"periods": (Period("p", T0, T0 + SLOT, {**PARAMS, "p_buy_lem": "30"}),)},
    ],
)
def test_invalid_documents(change: dict[str, object]) -> None:
    """Inconsistent fields are refused naming the field."""
    with pytest.raises(GenesisError, match=next(iter(change))):
        genesis(**change)


def test_bad_json() -> None:
    """Broken JSON or a missing field is a GenesisError, not a KeyError."""
    with pytest.raises(GenesisError):
        Genesis.from_json("{}")
    with pytest.raises(GenesisError):
        Genesis.from_json("not json")
