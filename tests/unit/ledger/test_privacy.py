"""Pseudonyms and pseudonymous-mode rules (docs/spec/privacy.md §1-2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec, privacy
from ledger import tx as txm
from ledger.access import Queries
from ledger.genesis import Genesis, GenesisError
from ledger.state import K_CHAIN, MemoryState, Overlay
from tests.unit.ledger.helpers import (
    ADMIN,
    CHAIN,
    N1,
    SLOT,
    T0,
    VAL,
    Signer,
    commit,
    genesis,
    measure,
    open_app,
)

SECRET = bytes(range(32))
SALT_A, SALT_B = b"\x01" * 16, b"\x02" * 16
SERIAL = "LGZ-81234567"


def test_pseudonym_shape_and_determinism() -> None:
    """Same secret, salt and serial give the same 'ps-' + 32-hex pseudonym; blanks around the
    serial are ignored."""
    key = privacy.member_key(SECRET, CHAIN, SALT_A)
    p = privacy.pseudonym(key, SERIAL)
    assert privacy.is_pseudonym(p)
    assert len(p) == 35
    assert privacy.pseudonym(privacy.member_key(SECRET, CHAIN, SALT_A), f" {SERIAL}\n") == p
    assert SERIAL.lower() not in p


def test_pseudonym_depends_on_every_input() -> None:
    """Another salt (re-admission), chain, admin secret or serial gives another pseudonym."""
    base = privacy.pseudonym(privacy.member_key(SECRET, CHAIN, SALT_A), SERIAL)
    others = {
        privacy.pseudonym(privacy.member_key(SECRET, CHAIN, SALT_B), SERIAL),
        privacy.pseudonym(privacy.member_key(SECRET, "other", SALT_A), SERIAL),
        privacy.pseudonym(privacy.member_key(bytes(32), CHAIN, SALT_A), SERIAL),
        privacy.pseudonym(privacy.member_key(SECRET, CHAIN, SALT_A), SERIAL + "0"),
    }
    assert base not in others
    assert len(others) == 4


@settings(max_examples=40, deadline=None)
@given(serial=st.from_regex(r"[A-Za-z0-9-]{1,20}", fullmatch=True))
def test_member_key_does_not_yield_other_members_pseudonyms(serial: str) -> None:
    """Member A's key applied to member B's serial never gives B's ledger pseudonym."""
    key_a = privacy.member_key(SECRET, CHAIN, SALT_A)
    key_b = privacy.member_key(SECRET, CHAIN, SALT_B)
    assert privacy.pseudonym(key_a, serial) != privacy.pseudonym(key_b, serial)


@pytest.mark.parametrize(
    ("secret", "salt", "match"),
    [(b"short", SALT_A, "admin secret"), (SECRET, b"x", "salt")],
)
def test_bad_key_material_refused(secret: bytes, salt: bytes, match: str) -> None:
    """Wrong-length secrets and salts are refused naming which one."""
    with pytest.raises(privacy.PrivacyError, match=match):
        privacy.member_key(secret, CHAIN, salt)


@pytest.mark.parametrize("serial", ["", "   ", "has blank", "x" * 65, "é"])
def test_bad_serial_refused(serial: str) -> None:
    """Serials must be 1-64 printable ASCII characters; the error does not echo the serial."""
    with pytest.raises(privacy.PrivacyError) as err:
        privacy.pseudonym(SECRET, serial)
    assert serial.strip() == "" or serial not in str(err.value)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (None, privacy.Mode.OPEN),
        ({"chain_id": CHAIN}, privacy.Mode.OPEN),
        ({"privacy": "open"}, privacy.Mode.OPEN),
        ({"privacy": "pseudonymous"}, privacy.Mode.PSEUDONYMOUS),
    ],
)
def test_mode_read_from_the_chain_record(record: object, expected: privacy.Mode) -> None:
    """No ``cfg/chain`` record or no ``privacy`` field: open, the mode of chains before it."""
    chain_state = MemoryState()
    if record is not None:
        chain_state.items[K_CHAIN] = codec.encode(record)
    assert privacy.mode(Overlay(chain_state)) is expected


@pytest.mark.parametrize("name", ["hidden", 3, ""])
def test_mode_unknown_name_refused_by_name(name: object) -> None:
    chain_state = MemoryState()
    chain_state.items[K_CHAIN] = codec.encode({"privacy": name})
    with pytest.raises(ValueError, match=repr(str(name))):
        privacy.mode(Overlay(chain_state))


def test_pseudonymous_genesis_refuses_serials() -> None:
    """A pseudonymous genesis lists only pseudonyms as meter ids; the open mode takes serials."""
    p = privacy.pseudonym(privacy.member_key(SECRET, CHAIN, SALT_A), SERIAL)
    assert genesis(privacy="pseudonymous", meters={p: N1.public_key}).meters == {p: N1.public_key}
    assert genesis(meters={SERIAL: N1.public_key}).privacy == "open"
    with pytest.raises(GenesisError, match="meters") as err:
        genesis(privacy="pseudonymous", meters={SERIAL: N1.public_key})
    assert SERIAL not in str(err.value)


def test_genesis_json_round_trip_keeps_mode_and_window() -> None:
    """privacy and dispute_window_ms survive the JSON form and change the genesis hash."""
    g = genesis(privacy="pseudonymous", dispute_window_ms=7 * 86_400_000)
    back = Genesis.from_json(g.to_json())
    assert (back.privacy, back.dispute_window_ms, back.hash) == (g.privacy, 604_800_000, g.hash)
    assert g.hash != genesis(privacy="pseudonymous").hash
    assert "dispute_window_ms" not in genesis().chain_params()


def _drop_reason(app: object, raw: bytes) -> tuple[str, str]:
    prepared = app.prepare(app.height + 1, T0 + 2 * SLOT, VAL.public_key, [raw], None)  # type: ignore[attr-defined]
    assert len(prepared.dropped) == 1
    exc = prepared.dropped[0][1]
    return exc.reason.value, exc.message


def test_pseudonymous_ledger_refuses_serial_ids_without_echo(tmp_path: Path) -> None:
    """AddMeter and SetMeasure with a non-pseudonym id fail with not_pseudonym, and the
    rejection message (which reaches logs and API answers) does not contain the id."""
    p = privacy.pseudonym(privacy.member_key(SECRET, CHAIN, SALT_A), SERIAL)
    app = open_app(tmp_path, genesis(privacy="pseudonymous", meters={p: N1.public_key}))
    add = txm.make(ADMIN, CHAIN, 0, "AddMeter", {"meter_id": SERIAL, "account": N1.public_key})
    reason, message = _drop_reason(app, add)
    assert reason == "not_pseudonym"
    assert SERIAL not in message
    meas = txm.make(N1, CHAIN, 0, "SetMeasure", measure(SERIAL, T0, 10, 0))
    reason, message = _drop_reason(app, meas)
    assert reason == "not_pseudonym"
    assert SERIAL not in message
    commit(app, [Signer(N1)("SetMeasure", measure(p, T0, 10, 0))], T0 + SLOT)
    assert Queries(app.store).meter_ids(N1.public_key) == [p]
