"""``lemctl member``: joining nodes — status, the waiting list, approval (docs/spec/join.md §5).

- ``lemctl member status``: this node's join phase from ``<data_dir>/join.json`` (works while
  lemd is stopped or failing: a technician sees "meter not found" or "certificate wrong").
- ``lemctl member list [--key ADMIN.key]``: waiting join requests and the members admitted
  through a join, read from this node's ledger store (read-only; lemd may hold it open); the
  accounts only for an admin key (seed 000 Fig. 4), else meter ids only.
- ``lemctl member approve ACCOUNT --key ADMIN.key``: signs ``ApproveMember`` with an admin (or a
  governance) key, publishes it on the community's broker, and waits until this node's ledger
  shows the result. The key stays on the admin's machine; the node's own key is never used.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from edge.config import Config, ConfigError, load_config
from edge.join import status as join_status
from ledger import codec, state
from ledger import tx as txm
from ledger.access import Queries, Role
from ledger.apps import join as join_app
from ledger.errors import LedgerError
from ledger.keys import SigningKey
from ledger.store import Store

DEFAULT_CONFIG = "/etc/lemd/lemd.toml"


def register(subparsers: Any) -> None:
    """Add ``member`` and its subcommands to lemctl."""
    parser = subparsers.add_parser("member", help="joining nodes: status, waiting list, approval")
    sub = parser.add_subparsers(dest="member_command", required=True, metavar="SUBCOMMAND")
    st = sub.add_parser("status", help="this node's join phase (works while lemd is down)")
    st.add_argument("--config", default=DEFAULT_CONFIG, help="lemd.toml (for node.data_dir)")
    st.add_argument("--data-dir", type=Path, help="the data partition (default: from --config)")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=_status)
    ls = sub.add_parser("list", help="waiting join requests and joined members")
    ls.add_argument("--config", default=DEFAULT_CONFIG)
    ls.add_argument(
        "--key", type=Path, help="admin key file: show accounts (Fig. 4; else meter ids only)"
    )
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_list)
    ap = sub.add_parser("approve", help="admit a waiting node (admin or governance key)")
    ap.add_argument("account", help="the joining node's public key (hex, from 'member list')")
    ap.add_argument("--key", type=Path, required=True, help="admin or governance key file")
    ap.add_argument("--config", default=DEFAULT_CONFIG, help="lemd.toml of a node to go through")
    ap.add_argument("--timeout", type=float, default=60.0, help="wait this long for the commit [s]")
    ap.add_argument(
        "--store", type=Path, help="identity store: a sealed request (pseudonymous chain) is "
        "opened, admitted there and answered with the pseudonym and a sealed admission"
    )  # fmt: skip
    ap.add_argument("--member", help="the admin's reference for the person (with --store)")
    ap.set_defaults(func=_approve)


def _fail(message: str) -> int:
    print(f"lemctl: {message}", file=sys.stderr)
    return 1


def _config(path: str) -> Config:
    return load_config(Path(path))


def _status(args: argparse.Namespace) -> int:
    try:
        data_dir = args.data_dir or _config(args.config).node.data_dir
    except ConfigError as exc:
        return _fail(f"{exc} (or give --data-dir)")
    value = join_status(data_dir)
    if value is None:
        return _fail(f"{data_dir}: no join state (node not provisioned from a community file)")
    if args.json:
        print(json.dumps(value, indent=2, sort_keys=True))
        return 0
    rows = [
        ("phase", value["phase"]),
        ("detail", value["detail"]),
        ("error", value["error"] or "-"),
        ("node key", value["public_key"]),
        ("meter", f"{value['meter_id']} {value['identification']}".strip()),
        ("chain", value["chain_id"]),
    ]
    print("\n".join(f"{k:<10} {v}" for k, v in rows))
    return 0 if value["phase"] != "failed" else 1


def _open_store(config: Config) -> Store:
    path = config.node.data_dir / "ledger"
    if not (path / "data.mdb").exists():
        raise LedgerError(f"{path}: no ledger store here (data.mdb missing)")
    return Store(path, readonly=True)


def waiting_and_members(store: Store) -> dict[str, list[dict[str, Any]]]:
    """The waiting join requests and the members admitted through a join (docs/spec/join.md §3)."""
    out: dict[str, list[dict[str, Any]]] = {"waiting": [], "members": []}
    with store.state_reader() as base:
        for prefix, name in ((join_app.K_REQ, "waiting"), (join_app.K_MEMBER, "members")):
            for k, v in base.scan(prefix, state.prefix_end(prefix)):
                record = dict(codec.decode_trusted(v))
                record["account"] = k[len(prefix) :].decode()
                if "approvals" in record:
                    record["approvals"] = [a.hex() for a in record["approvals"]]
                for box in ("sealed", "admission"):  # ciphertext: say it is there, no more
                    if box in record:
                        record[box] = True
                out[name].append(record)
    return out


def _without_accounts(value: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Seed 000 Fig. 4 for a non-admin viewer: meter ids, never the accounts (or names and
    identifications) behind them."""
    hidden = ("account", "identification", "name", "approvals")
    return {
        group: [{k: v for k, v in r.items() if k not in hidden} | {"account": "(hidden)"}
                for r in rows]
        for group, rows in value.items()
    }  # fmt: skip


def _list(args: argparse.Namespace) -> int:
    try:
        config = _config(args.config)
        store = _open_store(config)
    except (ConfigError, LedgerError) as exc:
        return _fail(str(exc))
    try:
        viewer = SigningKey.load(args.key if args.key is not None else config.key_file)
        admin = Queries(store).role(viewer.public_key) is Role.ADMIN
        value = waiting_and_members(store)
    except LedgerError as exc:
        return _fail(str(exc))
    finally:
        store.close()
    if not admin:
        value = _without_accounts(value)
    if args.json:
        print(json.dumps(value, indent=2, sort_keys=True))
        return 0
    print(f"{len(value['waiting'])} waiting:")
    for r in value["waiting"]:
        ident = "(sealed to the admin)" if r.get("sealed") else r.get("identification", "")
        print(f"  {r['account']}  meter {r['meter_id'] or '-'}  {ident}  h{r['height']}")
    print(f"{len(value['members'])} joined:")
    for r in value["members"]:
        print(f"  {r['account']}  meter {r['meter_id']}  via {r['via']}  h{r['height']}")
    return 0


def _approve(args: argparse.Namespace) -> int:
    try:
        account = bytes.fromhex(args.account)
        if len(account) != 32:
            raise ValueError("not 32 bytes")
    except ValueError as exc:
        return _fail(f"ACCOUNT {args.account!r} is not a 64-hex public key ({exc})")
    try:
        config = _config(args.config)
        key = SigningKey.load(args.key)
        store = _open_store(config)
    except (ConfigError, LedgerError) as exc:
        return _fail(str(exc))
    try:
        with store.state_reader() as base:
            st = state.Overlay(base)
            sequence = st.get_int(state.k_seq(key.public_key))
            req = join_app.request(st, account)
        if req is None:
            return _fail(f"no waiting join request from {args.account} on this node's ledger")
        chain_id = store.genesis.chain_id
        body: dict[str, Any] = {"account": account}
        if not req["meter_id"]:
            body = _assign(args, key, chain_id, account, req)
        raw = txm.make(key, chain_id, sequence, "ApproveMember", body)
        asyncio.run(_publish(config, chain_id, raw))
        return _wait_admitted(store, account, args.timeout)
    except (LedgerError, ConfigError, OSError, TimeoutError, ApproveError) as exc:
        return _fail(f"approve: {exc}")
    finally:
        store.close()


class ApproveError(Exception):
    """A sealed request cannot be answered (no store, not for this key, serial refused)."""


def _assign(
    args: argparse.Namespace, key: SigningKey, chain_id: str, account: bytes, req: dict[str, Any]
) -> dict[str, Any]:
    """A sealed request (pseudonymous chain, docs/spec/join.md §6): open it with the admin key,
    admit the serial in the identity store, answer with the pseudonym and the node's admission
    sealed to its key. Prints the pseudonym, never the serial."""
    from edge.join_seal import JoinSealError, open_request, seal_admission
    from edge.privacy import IdentityStore, PrivacyStoreError

    if args.store is None or not args.member:
        raise ApproveError("a sealed join request needs --store DIR and --member M")
    try:
        joined = open_request(key, req["sealed"], chain_id, account)
        identities = IdentityStore.open(args.store)
        # A retry after an approval that did not commit: the serial is already admitted for
        # this very account, so hand out the same admission again.
        again = [i for i in identities.identities()
                 if i.serial == joined.serial and i.account == account.hex()]  # fmt: skip
        if again:
            admission = identities.reissue(again[0].pseudonym)
        else:
            admission = identities.admit(args.member, joined.serial, account)
    except (JoinSealError, PrivacyStoreError, LedgerError) as exc:
        raise ApproveError(str(exc)) from None
    print(f"admitted in the identity store as {admission.pseudonym}")
    return {
        "account": account,
        "meter_id": admission.pseudonym,
        "admission": seal_admission(account, admission),
    }


async def _publish(config: Config, chain_id: str, raw: bytes) -> None:
    """Send one tx on channel ``tx`` with a client id of its own (the node keeps its session)."""
    from edge.bft import mqtt_settings
    from ledger.transport.mqtt import MqttTransport

    settings = mqtt_settings(config, chain_id, validator=False)
    settings = dataclasses.replace(settings, node_id=f"{config.node.name}-lemctl-{os.getpid()}")
    transport = MqttTransport(settings)
    runner = asyncio.create_task(transport.run(), name="lemctl-mqtt")
    try:
        await transport.wait_connected(15.0)
        await transport.publish("tx", raw)
    finally:
        await transport.close(drain_timeout_s=5.0)
        await runner


def _wait_admitted(store: Store, account: bytes, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with store.state_reader() as base:
            st = state.Overlay(base)
            member = join_app.member(st, account)
            request = join_app.request(st, account)
        if member is not None:
            print(f"admitted at height {member['height']} via {member['via']}: "
                  f"meter {member['meter_id']}")  # fmt: skip
            return 0
        if request is not None and request["approvals"]:
            print(f"approval recorded ({len(request['approvals'])} governance approvals so far)")
            return 0
        time.sleep(0.5)
    print(f"ApproveMember sent; not committed within {timeout_s:g} s (see 'lemctl member list')")
    return 1
