"""Sealed joining on a pseudonymous chain (edge/join_seal.py, docs/spec/join.md §6): the serial
reaches only the admin, the admission only the node, and first-boot join stays automatic."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from edge.cli.member import ApproveError, _assign, waiting_and_members
from edge.clock import DaemonClock
from edge.config import Config, MeterConfig, NodeConfig
from edge.join import Joiner, JoinState, status
from edge.join_seal import (
    JoinSealError,
    open_admission,
    open_request,
    seal_admission,
    seal_request,
)
from edge.meter import build_driver
from edge.privacy import Admission, IdentityStore
from edge.pseudonym_driver import PseudonymisingDriver, pseudonymising_driver
from ledger import state
from ledger import tx as txm
from ledger.app import App
from ledger.apps import join as join_app
from ledger.store import Store
from meters.reading import MeterError
from tests.unit.edge.test_joiner import Outbox, ViewNode
from tests.unit.ledger.helpers import (
    ADMIN,
    CHAIN,
    GOV1,
    N1,
    T0,
    commit,
    genesis,
    key,
    vote_verifier,
)

NEW = key(40)
SERIAL = "lic-h07"  # the simulated meter's id plays the serial


def test_request_box_opens_only_for_the_admin_and_only_for_its_account() -> None:
    """The admin's key opens the box and gets serial, identification and name; another key,
    another account or another chain is refused without revealing the content."""
    box = seal_request(ADMIN.public_key, CHAIN, NEW.public_key, f" {SERIAL} ", "ISK5", "n7")
    got = open_request(ADMIN, box, CHAIN, NEW.public_key)
    assert (got.serial, got.identification, got.name) == (SERIAL, "ISK5", "n7")
    for who, chain, account in ((GOV1, CHAIN, NEW.public_key), (ADMIN, "other", NEW.public_key),
                                (ADMIN, CHAIN, N1.public_key)):  # fmt: skip
        with pytest.raises(JoinSealError) as err:
            open_request(who, box, chain, account)
        assert SERIAL not in str(err.value)
    assert SERIAL.encode() not in box


def test_admission_box_opens_only_for_the_node() -> None:
    """The admission sealed to the node's key opens with it and with no other key."""
    adm = Admission(CHAIN, "ps-" + "12" * 16, bytes(range(32)))
    box = seal_admission(NEW.public_key, adm)
    assert open_admission(NEW, box, CHAIN) == adm
    with pytest.raises(JoinSealError):
        open_admission(N1, box, CHAIN)
    with pytest.raises(JoinSealError):
        open_admission(NEW, box, "other")


def _pseudonymous(tmp_path: Path) -> tuple[App, ViewNode, Outbox, Joiner]:
    g = genesis(privacy="pseudonymous")
    app = App(Store(tmp_path / "ledger", g, durable=False), vote_verifier)
    node, outbox = ViewNode(app), Outbox(app)
    JoinState(phase="joining", serial=SERIAL, identification="sim").save(tmp_path)
    joiner = Joiner(
        tmp_path, node, NEW.public_key, outbox, meter_id="", identification="sim",
        name="lem-abc", sealed=True, key=NEW, serial=SERIAL, chain_id=CHAIN,
        settle_ticks=1, repeat_s=1e9,
    )  # fmt: skip
    node.peer_count = 1
    return app, node, outbox, joiner


def _approve(app: App, tmp_path: Path, store: Path) -> dict[str, Any]:
    with app.store.state_reader() as base:
        req = join_app.request(state.Overlay(base), NEW.public_key)
    assert req is not None
    args = argparse.Namespace(store=store, member="contract-7")
    return _assign(args, ADMIN, CHAIN, NEW.public_key, req)


async def test_first_boot_join_is_automatic_and_no_serial_reaches_the_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """joining → sealed JoinRequest → the admin's approve opens it, admits the serial in the
    identity store and answers with the pseudonym → the node saves its admission and measures
    under the pseudonym. No block, state value, status or CLI output holds the serial."""
    app, _, outbox, joiner = _pseudonymous(tmp_path)
    ids = IdentityStore.create(tmp_path / "identity", CHAIN)
    driver = pseudonymising_driver(
        build_driver(MeterConfig(driver="sim", meter_id=SERIAL), DaemonClock(), None),
        Config(node=NodeConfig(name="n", data_dir=tmp_path), meter=MeterConfig(driver="sim")),
        app.store.genesis,
    )
    assert isinstance(driver, PseudonymisingDriver)
    with pytest.raises(MeterError, match="not admitted yet"):
        await driver.read()
    for _ in range(3):
        joiner.step()
    assert len(outbox.raws) == 1
    body = txm.decode(outbox.raws[0]).body
    assert (body["meter_id"], body["identification"], body["name"]) == ("", "", "")
    outbox.commit(T0)
    joiner.step()
    assert joiner.state.phase == "waiting_for_approval"
    approval = _approve(app, tmp_path, tmp_path / "identity")
    pseudonym = ids.open(tmp_path / "identity").identities()[0].pseudonym
    assert approval["meter_id"] == pseudonym
    commit(app, [txm.make(ADMIN, CHAIN, 0, "ApproveMember", approval)], T0 + 1000)
    joiner.step()
    assert joiner.state.phase == "measuring"
    assert json.loads((tmp_path / "admission.json").read_text())["pseudonym"] == pseudonym
    reading = await driver.read()
    assert reading.meter_id == pseudonym
    # Nowhere public: blocks, state, status, the lemctl listing, the admin's terminal output.
    blocks = b"".join(app.store.block(h) or b"" for h in range(1, app.height + 1))
    with app.store.state_reader() as base:
        states = b"".join(k + v for k, v in base.scan(b"", b"\xff"))
    listing = json.dumps(waiting_and_members(app.store))
    shown = json.dumps(status(tmp_path)) + capsys.readouterr().out
    assert app.height == 2
    assert len(blocks) > 500
    assert states
    for where in (blocks, states, listing.encode(), shown.encode()):
        assert SERIAL.encode() not in where
    assert ids.open(tmp_path / "identity").lookup(pseudonym).serial == SERIAL


def test_approve_retry_reissues_and_wrong_admin_key_is_refused(tmp_path: Path) -> None:
    """A second approve of the same request reissues the same pseudonym (the first approval may
    not have committed); a key the box was not sealed to gets a clear error."""
    app, _, outbox, joiner = _pseudonymous(tmp_path)
    IdentityStore.create(tmp_path / "identity", CHAIN)
    for _ in range(3):
        joiner.step()
    outbox.commit(T0)
    first = _approve(app, tmp_path, tmp_path / "identity")
    again = _approve(app, tmp_path, tmp_path / "identity")
    assert first["meter_id"] == again["meter_id"]
    with app.store.state_reader() as base:
        req = join_app.request(state.Overlay(base), NEW.public_key)
    assert req is not None
    args = argparse.Namespace(store=tmp_path / "identity", member="x")
    with pytest.raises(ApproveError, match="does not open"):
        _assign(args, GOV1, CHAIN, NEW.public_key, req)
    with pytest.raises(ApproveError, match="--store"):
        _assign(argparse.Namespace(store=None, member=""), ADMIN, CHAIN, NEW.public_key, req)
