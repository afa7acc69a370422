"""A member node's meter readings carry its pseudonym, never the meter's serial.

Spec: docs/spec/privacy.md §2. On a pseudonymous chain lemd wraps its meter driver in a
:class:`PseudonymisingDriver` over the admission file ``<data_dir>/admission.json`` (written by
``lemctl privacy admit``, or opened from the admin's sealed approval: docs/spec/join.md §6).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edge.config import Config, ConfigError
from edge.privacy import ADMISSION_FILE, Admission, PrivacyStoreError
from ledger import privacy
from ledger.genesis import Genesis
from meters.reading import MeterDriver, MeterError, Reading


class PseudonymisingDriver:
    """Wraps a meter driver so every reading carries the node's pseudonym, never the serial.

    A reading whose serial does not give the admitted pseudonym (another meter on the port) is
    refused with a :class:`MeterError` that does not contain the serial.

    Args:
        inner: the meter driver (its readings carry the serial).
        admission: the admission; None for a node still joining by request, whose admission
            file ``admission_path`` appears once the admin approves (docs/spec/join.md §6):
            until then every read is a MeterError ("not admitted yet").
    """

    def __init__(
        self,
        inner: MeterDriver,
        admission: Admission | None,
        admission_path: Path | None = None,
        chain_id: str = "",
    ) -> None:
        self.inner = inner
        self.admission = admission
        self._path, self._chain_id = admission_path, chain_id
        self._checked: tuple[str, str] | None = None  # (serial, pseudonym): hash once

    def _current(self) -> Admission:
        if self.admission is None and self._path is not None and self._path.exists():
            try:
                self.admission = load_admission(self._path, self._chain_id)
            except ConfigError as exc:
                raise MeterError(str(exc)) from None
        if self.admission is None:
            raise MeterError("not admitted yet: the join request waits for the admin")
        return self.admission

    async def read(self) -> Reading:
        admission = self._current()
        reading = await self.inner.read()
        if self._checked is None or self._checked[0] != reading.meter_id:
            try:
                p = admission.pseudonym_of(reading.meter_id)
            except privacy.PrivacyError as exc:
                raise MeterError(f"meter id unusable for a pseudonym: {exc}") from None
            self._checked = (reading.meter_id, p)
        if self._checked[1] != admission.pseudonym:
            raise MeterError("the meter on the port is not the admitted meter (pseudonym differs)")
        return dataclasses.replace(reading, meter_id=admission.pseudonym)

    async def close(self) -> None:
        await self.inner.close()


def pseudonymising_driver(driver: MeterDriver, cfg: Config, genesis: Genesis) -> MeterDriver:
    """The driver lemd uses: ``driver`` itself on an open chain; on a pseudonymous chain a
    :class:`PseudonymisingDriver` over the admission file ``<data_dir>/admission.json``.

    Raises:
        ConfigError: pseudonymous chain without a usable admission file for this chain, or a
            real meter driver with ``meter.meter_id`` set (the admission pins the meter instead;
            a serial must not sit in a config that status pages echo).
    """
    if genesis.privacy != privacy.Mode.PSEUDONYMOUS:
        return driver
    if cfg.meter.meter_id and cfg.meter.driver != "sim":
        raise ConfigError(
            "meter.meter_id must be empty on a pseudonymous chain (the admission file pins the "
            "meter; docs/spec/privacy.md §2)"
        )
    path = cfg.node.data_dir / ADMISSION_FILE
    if not path.exists() and (cfg.node.data_dir / "join.json").exists():
        # A node joining by request: its admission arrives sealed in ApproveMember
        # (edge/join_seal.py); until then no reading leaves the driver.
        return PseudonymisingDriver(driver, None, path, genesis.chain_id)
    admission = load_admission(path, genesis.chain_id)
    return PseudonymisingDriver(driver, admission)


def load_admission(path: Path, chain_id: str) -> Admission:
    """The admission file at ``path``, which must be for ``chain_id``.

    Raises:
        ConfigError: missing, unreadable, malformed, or for another chain.
    """
    try:
        admission = Admission.load(path)
    except PrivacyStoreError as exc:
        raise ConfigError(f"pseudonymous chain: {exc} (lemctl privacy admit writes it)") from exc
    if admission.chain_id != chain_id:
        raise ConfigError(f"{path}: admission for chain {admission.chain_id!r}, not this chain")
    return admission
