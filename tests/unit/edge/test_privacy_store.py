"""The admin's encrypted identity store, admission files, erasure and the pseudonymising
driver (docs/spec/privacy.md §2, §5)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge.clock import DaemonClock
from edge.config import ConfigError, MeterConfig
from edge.meter import build_driver
from edge.privacy import Admission, IdentityStore, PrivacyStoreError
from edge.pseudonym_driver import PseudonymisingDriver, pseudonymising_driver
from ledger import privacy
from meters.reading import MeterError
from tests.unit.ledger.helpers import CHAIN, N1, N2, genesis

SERIAL_1, SERIAL_2 = "LGZ1030000123456", "ISK0099887766"


def _store_bytes(d: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(d.iterdir()) if p.is_file())


@pytest.fixture
def store(tmp_path: Path) -> IdentityStore:
    return IdentityStore.create(tmp_path / "identity", CHAIN)


def test_admission_round_trip_and_member_computes_own_pseudonym(
    store: IdentityStore, tmp_path: Path
) -> None:
    """The admission file is 0600; with it the member recomputes its pseudonym from its
    serial, and the reopened store maps that pseudonym back to member, serial and account."""
    adm = store.admit("contract-17", SERIAL_1, N1.public_key, now_ms=1)
    path = tmp_path / "admission.json"
    adm.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = Admission.load(path)
    assert loaded.pseudonym_of(SERIAL_1) == adm.pseudonym == loaded.pseudonym
    ident = IdentityStore.open(store.directory).lookup(adm.pseudonym)
    assert (ident.member, ident.serial, ident.account) == (
        "contract-17",
        SERIAL_1,
        N1.public_key.hex(),
    )


def test_store_is_encrypted_and_private(store: IdentityStore) -> None:
    """No file of the store holds a serial, member name or account in clear; every file is
    0600 and the directory 0700."""
    store.admit("contract-17", SERIAL_1, N1.public_key)
    blob = _store_bytes(store.directory)
    for secret in (SERIAL_1.encode(), b"contract-17", N1.public_key, N1.public_key.hex().encode()):
        assert secret not in blob
    assert store.directory.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in store.directory.iterdir()} == {0o600}


def test_key_file_open_to_others_is_refused(store: IdentityStore) -> None:
    """A store key readable by group or others stops the open, naming the file."""
    key = next(store.directory.glob("identity.*.key"))
    os.chmod(key, 0o640)
    with pytest.raises(PrivacyStoreError, match="open to others"):
        IdentityStore.open(store.directory)


def test_duplicate_serial_and_unknown_member_refused_without_serial(store: IdentityStore) -> None:
    """A serial admitted twice is refused (the message does not echo it); erasing an unknown
    member is an error."""
    store.admit("a", SERIAL_1, N1.public_key)
    with pytest.raises(PrivacyStoreError) as err:
        store.admit("b", SERIAL_1, N2.public_key)
    assert SERIAL_1 not in str(err.value)
    with pytest.raises(PrivacyStoreError, match="no member"):
        store.erase("nobody")


def test_erase_removes_mapping_and_shreds_old_key(store: IdentityStore) -> None:
    """After erasure the pseudonym is unknown, the other member stays, the store key changed,
    and the old ciphertext no longer decrypts with any key left in the store; the erased salt
    appears nowhere, so the pseudonym cannot be recomputed from the serial."""
    import nacl.exceptions
    import nacl.secret

    gone = store.admit("leaver", SERIAL_1, N1.public_key)
    stays = store.admit("stayer", SERIAL_2, N2.public_key)
    salt = store.lookup(gone.pseudonym).salt
    old_box = next(store.directory.glob("identity.*.box")).read_bytes()
    assert store.erase("leaver") == [gone.pseudonym]
    reopened = IdentityStore.open(store.directory)
    with pytest.raises(PrivacyStoreError):
        reopened.lookup(gone.pseudonym)
    assert reopened.lookup(stays.pseudonym).serial == SERIAL_2
    assert len(list(store.directory.glob("identity.*.key"))) == 1
    new_key = bytes.fromhex(next(store.directory.glob("identity.*.key")).read_text().strip())
    with pytest.raises(nacl.exceptions.CryptoError):
        nacl.secret.SecretBox(new_key).decrypt(old_box)
    assert salt not in _store_bytes(store.directory)
    assert gone.member_key not in _store_bytes(store.directory)
    secret = bytes.fromhex((store.directory / "pseudonym.key").read_text().strip())
    assert privacy.pseudonym(privacy.member_key(secret, CHAIN, bytes(16)), SERIAL_1) != (
        gone.pseudonym
    )


def test_interrupted_rotation_keeps_the_last_complete_generation(store: IdentityStore) -> None:
    """A crash that left a new key without its box (rotation cut short) opens the previous
    complete generation with every record."""
    adm = store.admit("a", SERIAL_1, N1.public_key)
    stray = store.directory / "identity.999.key"
    stray.write_text(os.urandom(32).hex())
    stray.chmod(0o600)
    reopened = IdentityStore.open(store.directory)
    assert reopened.lookup(adm.pseudonym).serial == SERIAL_1
    reopened.admit("b", SERIAL_2, N2.public_key)  # the next write removes the leftover
    assert not stray.exists()
    assert len(list(store.directory.glob("identity.*.box"))) == 1


async def test_pseudonymising_driver_over_the_real_simulated_meter(tmp_path: Path) -> None:
    """Readings of the (real) simulated meter carry the admitted pseudonym instead of the
    meter's id; another meter's readings are refused without naming its id."""
    store = IdentityStore.create(tmp_path / "id", CHAIN)
    adm = store.admit("m", "lic-h01", N1.public_key)
    clock = DaemonClock()
    real = build_driver(MeterConfig(driver="sim", meter_id="lic-h01"), clock, None)
    reading = await PseudonymisingDriver(real, adm).read()
    assert reading.meter_id == adm.pseudonym
    assert reading.import_wh >= 0
    other = build_driver(MeterConfig(driver="sim", meter_id="lic-h02"), clock, None)
    with pytest.raises(MeterError) as err:
        await PseudonymisingDriver(other, adm).read()
    assert "lic-h02" not in str(err.value)


def test_daemon_driver_choice_by_genesis_mode(tmp_path: Path) -> None:
    """Open chain: the driver unchanged. Pseudonymous chain: wrapped when the admission file
    exists, a config error naming the file when it does not, or when a real driver still has
    meter.meter_id set (the error does not echo it)."""
    from edge.config import Config, NodeConfig

    clock = DaemonClock()
    sim = build_driver(MeterConfig(driver="sim", meter_id="lic-h01"), clock, None)
    cfg = Config(node=NodeConfig(name="n1", data_dir=tmp_path), meter=MeterConfig(driver="sim"))
    assert pseudonymising_driver(sim, cfg, genesis()) is sim
    pseudo = genesis(privacy="pseudonymous")
    with pytest.raises(ConfigError, match=r"admission\.json"):
        pseudonymising_driver(sim, cfg, pseudo)
    store = IdentityStore.create(tmp_path / "id", CHAIN)
    store.admit("m", "lic-h01", N1.public_key).save(tmp_path / "admission.json")
    assert isinstance(pseudonymising_driver(sim, cfg, pseudo), PseudonymisingDriver)
    iec = Config(
        node=NodeConfig(name="n1", data_dir=tmp_path),
        meter=MeterConfig(driver="iec", port="/dev/null", meter_id=SERIAL_1),
    )
    with pytest.raises(ConfigError, match="meter_id must be empty") as err:
        pseudonymising_driver(sim, iec, pseudo)
    assert SERIAL_1 not in str(err.value)
