"""Queries with the access rules of seed 000 Fig. 4 (admin vs prosumer vs anyone).

Spec: docs/spec/ledger.md §9. The viewer is the public key the caller authenticated as (edge's
REST API decides how); None means an anonymous viewer. Rules:

- admin: everything (the allowed-meters list with accounts, every measurement and balance).
- prosumer: the meter-id list without accounts, parameters, community totals per slot, its own
  meters' measurements, its own balance and settlements, the community and grid balances.
  Never another member's measurements, accounts or balance.
- anyone: chain status and the market parameters; a key with no role yet also its own
  sequence and its own join request / admission record (``join/req/<key>``,
  ``join/member/<key>``: a light node joining by itself, docs/spec/join.md §4a).
- after a period's raw measurements are pruned (docs/spec/privacy.md §3): the period's commitment
  (``pruned/``) to admin and prosumers; per-account period totals (``ptot/``) and day roots
  (``proot/``) to the admin and to the account's own key only.

Proofs are served under the same rules as the values they prove.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from ledger import codec, merkle, privacy, state
from ledger.apps import join as join_app
from ledger.errors import AccessDenied
from ledger.store import Store


class Role(StrEnum):
    ADMIN = "admin"
    PROSUMER = "prosumer"
    ANYONE = "anyone"


class Queries:
    """Read-only views of the committed state for one viewer at a time."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _read(self) -> Any:
        return self.store.state_reader()

    def role(self, viewer: bytes | None) -> Role:
        if viewer is None:
            return Role.ANYONE
        with self._read() as base:
            st = state.Overlay(base)
            if state.is_admin(st, viewer):
                return Role.ADMIN
            if state.is_prosumer(st, viewer):
                return Role.PROSUMER
        return Role.ANYONE

    def _require(self, viewer: bytes | None, *allowed: Role) -> Role:
        role = self.role(viewer)
        if role not in allowed:
            raise AccessDenied(f"role {role.value} may not make this query")
        return role

    def status(self) -> dict[str, Any]:
        """Anyone: height, last block hash and time, app hash."""
        s = self.store
        return {
            "chain_id": s.genesis.chain_id,
            "height": s.height,
            "block_hash": s.last_block_hash.hex(),
            "time_ms": s.last_time_ms,
            "app_hash": s.app_hash.hex(),
        }

    def meter_ids(self, viewer: bytes | None) -> list[str]:
        """Admin, prosumer: the allowed meter ids (getMetersList), sorted."""
        self._require(viewer, Role.ADMIN, Role.PROSUMER)
        return sorted(self._meters())

    def meter_accounts(self, viewer: bytes | None) -> dict[str, str]:
        """Admin only: meter id → owner account (hex)."""
        self._require(viewer, Role.ADMIN)
        return {m: pk.hex() for m, pk in self._meters().items()}

    def _meters(self) -> dict[str, bytes]:
        with self._read() as base:
            return {
                k[len(b"meter/") :].decode(): bytes(codec.decode_trusted(v))
                for k, v in base.scan(b"meter/", state.prefix_end(b"meter/"))
            }

    def periods(self) -> dict[str, dict[str, Any]]:
        """Anyone: every period's bounds, parameters and solved state (getMarketParameters)."""
        with self._read() as base:
            return {
                k[len(b"period/") :].decode(): codec.decode_trusted(v)
                for k, v in base.scan(b"period/", state.prefix_end(b"period/"))
            }

    def totals(self, viewer: bytes | None, start_ms: int, end_ms: int) -> list[list[int]]:
        """Admin, prosumer: [slot_start_ms, import_wh, export_wh, n_meters] per slot with data
        in [start_ms, end_ms) (getTotalEnergy)."""
        self._require(viewer, Role.ADMIN, Role.PROSUMER)
        with self._read() as base:
            return [
                [int(k[4:]), *codec.decode_trusted(v)]
                for k, v in base.scan(state.k_total(start_ms), state.k_total(end_ms))
            ]

    def measurements(
        self, viewer: bytes | None, meter_id: str, start_ms: int, end_ms: int
    ) -> list[list[int]]:
        """Admin: any meter; prosumer: own meters only. [slot_start_ms, import_wh, export_wh,
        quality] per slot (getEnergyMeasure)."""
        role = self._require(viewer, Role.ADMIN, Role.PROSUMER)
        if role is Role.PROSUMER and self._meters().get(meter_id, viewer) != viewer:
            raise AccessDenied(f"meter {meter_id!r} is not one of the viewer's meters")
        out = []
        lo = b"meas/" + state.slot_key(start_ms).encode()
        hi = b"meas/" + state.slot_key(end_ms).encode()
        with self._read() as base:
            for k, v in base.scan(lo, hi):
                imp, exp, quality, owner = codec.decode_trusted(v)
                # A prosumer sees the rows it signed itself, even for a meter since removed.
                if k[19:].decode() == meter_id and (role is Role.ADMIN or owner == viewer):
                    out.append([int(k[5:18]), imp, exp, quality])
        return out

    def balance(self, viewer: bytes | None, account: str) -> int:
        """Balance [µECT]. Admin: any account; prosumer: its own, community and grid."""
        self._check_account(viewer, account)
        with self._read() as base:
            return state.Overlay(base).get_int(state.k_balance(account))

    def _check_account(self, viewer: bytes | None, account: str) -> None:
        role = self._require(viewer, Role.ADMIN, Role.PROSUMER)
        public = (state.COMMUNITY, state.GRID)
        own = None if viewer is None else state.account_id(viewer)
        if role is Role.PROSUMER and account not in public and account != own:
            raise AccessDenied("a prosumer reads only its own balance")

    def settlement(self, viewer: bytes | None, period_id: str, account: str) -> int | None:
        """What ``account`` was posted when ``period_id`` was solved [µECT]; same rules as
        :meth:`balance`."""
        self._check_account(viewer, account)
        with self._read() as base:
            value = state.Overlay(base).get_value(state.k_settlement(period_id, account))
        return None if value is None else int(value)

    def pruned(self, viewer: bytes | None, period_id: str) -> dict[str, Any] | None:
        """Admin, prosumer: a period's pruning progress and, once done, its commitment
        {next_ms, records, done, root, height, time_ms}; None while nothing is pruned."""
        self._require(viewer, Role.ADMIN, Role.PROSUMER)
        with self._read() as base:
            value = state.Overlay(base).get_value(privacy.k_pruned(period_id))
        return None if value is None else dict(value)

    def period_total(self, viewer: bytes | None, period_id: str, account: str) -> list[Any] | None:
        """[import_wh, export_wh, records] pruned so far of a period; admin: any account,
        prosumer: its own (day roots: ``prove`` of ``proot/<period>/<day>/<account>``)."""
        role = self._require(viewer, Role.ADMIN, Role.PROSUMER)
        if role is Role.PROSUMER and viewer is not None and account != state.account_id(viewer):
            raise AccessDenied("a prosumer reads only its own period totals")
        with self._read() as base:
            value = state.Overlay(base).get_value(privacy.k_period_total(period_id, account))
        return None if value is None else list(value)

    def prove(self, viewer: bytes | None, key: bytes) -> merkle.Proof | None:
        """Inclusion proof of a state key the viewer may read, against the current app hash."""
        self._check_key(viewer, key)
        return self.store.prove(key)

    def _check_key(self, viewer: bytes | None, key: bytes) -> None:
        role = self.role(viewer)
        if role is Role.ADMIN:
            return
        if key.startswith((b"period/", b"cfg/chain")) or key == state.K_ADMINS:
            return  # public: periods, chain parameters and the admin keys (genesis names them)
        if viewer is not None and key in _own_join_keys(viewer):
            return
        if role is Role.ANYONE:
            raise AccessDenied("anyone may only prove periods, chain parameters and admin keys")
        assert viewer is not None
        own = state.account_id(viewer)
        if key.startswith(b"tot/") or key in (
            state.k_balance(own),
            state.k_balance(state.COMMUNITY),
        ):
            return
        if key.startswith(b"bal/") and key == state.k_balance(state.GRID):
            return
        if key.startswith(b"meas/"):
            with self._read() as base:
                raw = base.get(key)
            if raw is not None and codec.decode_trusted(raw)[3] == viewer:
                return
        if key.startswith((b"settle/", b"ptot/", b"proot/")) and key.endswith(b"/" + own.encode()):
            return
        if key.startswith(b"pruned/"):
            return
        raise AccessDenied(f"a prosumer may not prove key {key[:40]!r}")


def _own_join_keys(viewer: bytes) -> tuple[bytes, ...]:
    """What any key may prove of itself, admitted or not: its sequence (a light node signs its
    next tx with it, light.md §4) and its own join request and admission record (a light node
    joining by itself, docs/spec/join.md §4a). Nothing in them names another member."""
    return (state.k_seq(viewer), join_app.k_request(viewer), join_app.k_member(viewer))
