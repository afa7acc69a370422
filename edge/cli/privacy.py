"""``lemctl privacy ...``: pseudonym admission and erasure (admin), own pseudonym and kept
records (member), record proofs against a pruned period's commitment (anyone with a record).

Spec: docs/spec/privacy.md §6. Exit status: 0 ok, 1 the check failed (proof invalid, meter not
the admitted one), 2 usage, file or store problem. Admin commands print serials only to the
terminal that asked; nothing here logs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edge.privacy import (
    ADMISSION_FILE,
    Admission,
    IdentityStore,
    PrivacyStoreError,
    identity_json,
)
from ledger import codec, merkle, privacy, state
from ledger.access import Queries
from ledger.errors import AccessDenied, LedgerError
from ledger.keys import SigningKey
from ledger.store import Store

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("privacy", help="pseudonyms, erasure, pruned-record proofs")
    sub = parser.add_subparsers(dest="privacy_command", required=True, metavar="SUBCOMMAND")

    def add(name: str, help_: str, func: Any, *, store: bool = False) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_)
        if store:
            p.add_argument("--store", type=Path, required=True, help="identity store directory")
        p.set_defaults(func=func)
        return p

    p = add("init", "create the admin's encrypted identity store", _init, store=True)
    p.add_argument("--chain-id", required=True)
    p = add(
        "admit", "admit a meter: store its identity, write the admission file", _admit, store=True
    )
    p.add_argument("--member", required=True, help="admin's reference for the member")
    p.add_argument("--serial", required=True, help="meter serial number")
    p.add_argument("--account", required=True, help="member node public key (hex)")
    p.add_argument(
        "--out", type=Path, required=True, help=f"admission file (the member's {ADMISSION_FILE})"
    )
    p = add("reissue", "write a lost admission file again", _reissue, store=True)
    p.add_argument("--pseudonym", required=True)
    p.add_argument("--out", type=Path, required=True)
    add("list", "every admitted meter (admin terminal only)", _list, store=True)
    p = add("lookup", "member, serial and account of a pseudonym", _lookup, store=True)
    p.add_argument("--pseudonym", required=True)
    p = add(
        "erase",
        "erase a departed member's identity records and rotate the store key",
        _erase,
        store=True,
    )
    p.add_argument("--member", required=True)
    p.add_argument(
        "--ledger-dir", type=Path, help="refuse while a pseudonym is still an allowed meter here"
    )
    p = add("pseudonym", "compute this node's pseudonym from its meter serial", _pseudonym)
    p.add_argument("--admission", type=Path, required=True)
    p.add_argument("--serial", required=True)
    p = add("keep", "export this node's own measurements of a period (before pruning)", _keep)
    p.add_argument("--ledger-dir", type=Path, required=True)
    p.add_argument("--key", type=Path, required=True, help="this node's key file")
    p.add_argument("--period", required=True)
    p.add_argument("--out", type=Path, required=True)
    p = add("prove", "build a record proof from kept records", _prove)
    p.add_argument("--records", type=Path, required=True, help="file written by 'keep'")
    p.add_argument("--slot", type=int, required=True, help="slot start [ms]")
    p.add_argument("--meter", required=True, help="ledger meter id")
    p = add("verify", "verify a record proof (and against a ledger store)", _verify)
    p.add_argument("--proof", type=Path, required=True)
    p.add_argument("--ledger-dir", type=Path, help="check the committed root and app hash too")


def _fail(args: argparse.Namespace, message: str, code: int = EXIT_USAGE) -> int:
    print(f"lemctl privacy {args.privacy_command}: {message}", file=sys.stderr)
    return code


def _print(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True))


# admin ----------------------------------------------------------------------------------


def _init(args: argparse.Namespace) -> int:
    try:
        IdentityStore.create(args.store, args.chain_id)
    except (PrivacyStoreError, OSError) as exc:
        return _fail(args, str(exc))
    _print({"store": str(args.store), "chain_id": args.chain_id})
    return EXIT_OK


def _admit(args: argparse.Namespace) -> int:
    try:
        account = bytes.fromhex(args.account)
        store = IdentityStore.open(args.store)
        if args.out.exists():
            raise PrivacyStoreError(f"{args.out}: exists; refusing to overwrite")
        admission = store.admit(args.member, args.serial, account)
        admission.save(args.out)
    except ValueError:
        return _fail(args, "--account must be the member node's public key in hex")
    except (PrivacyStoreError, privacy.PrivacyError, OSError) as exc:
        return _fail(args, str(exc))
    _print(
        {
            "pseudonym": admission.pseudonym,
            "account": args.account,
            "admission_file": str(args.out),
            "next": "add the meter on the ledger: POST /meters {meter_id: pseudonym, account}",
        }
    )
    return EXIT_OK


def _reissue(args: argparse.Namespace) -> int:
    try:
        IdentityStore.open(args.store).reissue(args.pseudonym).save(args.out)
    except (PrivacyStoreError, OSError) as exc:
        return _fail(args, str(exc))
    _print({"pseudonym": args.pseudonym, "admission_file": str(args.out)})
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    try:
        store = IdentityStore.open(args.store)
    except PrivacyStoreError as exc:
        return _fail(args, str(exc))
    _print({"chain_id": store.chain_id, "meters": [identity_json(i) for i in store.identities()]})
    return EXIT_OK


def _lookup(args: argparse.Namespace) -> int:
    try:
        _print(identity_json(IdentityStore.open(args.store).lookup(args.pseudonym)))
    except PrivacyStoreError as exc:
        return _fail(args, str(exc), EXIT_FAILED)
    return EXIT_OK


def _erase(args: argparse.Namespace) -> int:
    try:
        store = IdentityStore.open(args.store)
        mine = [i.pseudonym for i in store.identities() if i.member == args.member]
        if args.ledger_dir is not None:
            listed = _listed_meters(args.ledger_dir)
            still = [p for p in mine if p in listed]
            if still:
                return _fail(
                    args,
                    f"{len(still)} of the member's meters are still allowed on the ledger; "
                    "remove them first (DELETE /meters?meter=<pseudonym>)",
                    EXIT_FAILED,
                )
        erased = store.erase(args.member)
    except (PrivacyStoreError, LedgerError) as exc:
        return _fail(args, str(exc))
    _print({"member": args.member, "erased_pseudonyms": erased, "store_key_rotated": True})
    return EXIT_OK


def _listed_meters(ledger_dir: Path) -> set[str]:
    store = _open_ledger(ledger_dir)
    try:
        with store.state_reader() as base:
            prefix = b"meter/"
            return {
                k[len(prefix) :].decode() for k, _ in base.scan(prefix, state.prefix_end(prefix))
            }
    finally:
        store.close()


def _open_ledger(path: Path) -> Store:
    if not (path / "data.mdb").exists():
        raise LedgerError(f"{path}: no ledger store here (data.mdb missing)")
    return Store(path, readonly=True)


# member -----------------------------------------------------------------------------------


def _pseudonym(args: argparse.Namespace) -> int:
    try:
        admission = Admission.load(args.admission)
        mine = admission.pseudonym_of(args.serial)
    except (PrivacyStoreError, privacy.PrivacyError) as exc:
        return _fail(args, str(exc))
    _print({"pseudonym": mine, "admitted": mine == admission.pseudonym})
    if mine != admission.pseudonym:
        return _fail(args, "this serial is not the admitted meter", EXIT_FAILED)
    return EXIT_OK


def _keep(args: argparse.Namespace) -> int:
    """The node's own rows of a period, through the Fig. 4 queries with its own key."""
    try:
        viewer = SigningKey.load(args.key).public_key
        store = _open_ledger(args.ledger_dir)
    except LedgerError as exc:
        return _fail(args, str(exc))
    try:
        q = Queries(store)
        rec = q.periods().get(args.period)
        if rec is None:
            return _fail(args, f"no period {args.period!r}", EXIT_FAILED)
        records = []
        for meter in q.meter_ids(viewer):
            try:
                rows = q.measurements(viewer, meter, rec["start_ms"], rec["end_ms"])
            except AccessDenied:
                continue  # another member's meter: Fig. 4 says no, and we need only ours
            for slot, imp, exp, quality in rows:
                records.append(privacy.Record(slot, meter, imp, exp, quality).to_json())
    except AccessDenied as exc:
        return _fail(args, str(exc), EXIT_FAILED)
    finally:
        store.close()
    doc = {"period_id": args.period, "account": viewer.hex(), "records": records}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    _print({"period_id": args.period, "records": len(records), "out": str(args.out)})
    return EXIT_OK


def _prove(args: argparse.Namespace) -> int:
    try:
        doc = json.loads(args.records.read_text())
        records = [privacy.Record.from_json(r, "records") for r in doc["records"]]
        wanted = next(
            (r for r in records if (r.slot_start_ms, r.meter_id) == (args.slot, args.meter)), None
        )
        if wanted is None:
            return _fail(args, f"no kept record for slot {args.slot} of {args.meter}", EXIT_FAILED)
        proof = privacy.prove_record(doc["period_id"], doc["account"], records, wanted)
    except (OSError, ValueError, KeyError, TypeError, privacy.PrivacyError) as exc:
        return _fail(args, f"{args.records}: {exc}")
    _print(proof.to_json())
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    try:
        proof = privacy.RecordProof.from_json(json.loads(args.proof.read_text()))
    except (OSError, ValueError, privacy.PrivacyError) as exc:
        return _fail(args, f"{args.proof}: {exc}")
    out: dict[str, Any] = {"record_in_member_root": privacy.verify_record(proof)}
    if args.ledger_dir is not None:
        try:
            out.update(_verify_on_ledger(proof, args.ledger_dir))
        except LedgerError as exc:
            return _fail(args, str(exc))
    _print(out)
    ok = all(v for k, v in out.items() if k != "height")
    return EXIT_OK if ok else EXIT_FAILED


def _verify_on_ledger(proof: privacy.RecordProof, ledger_dir: Path) -> dict[str, Any]:
    """The committed proot/ entry, and its inclusion proof against the store's app hash."""
    store = _open_ledger(ledger_dir)
    try:
        state_proof = store.prove(proof.state_key)
        if state_proof is None:
            return {"committed": False, "height": store.height}
        return {
            "committed": privacy.matches_commitment(proof, codec.decode(state_proof.value)),
            "state_proof_valid": merkle.verify_proof(state_proof, store.app_hash),
            "valid_against_app_hash": privacy.verify_record_in_state(
                proof, state_proof, store.app_hash
            ),
            "height": store.height,
        }
    finally:
        store.close()
