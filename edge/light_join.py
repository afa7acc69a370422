"""The join task of a light member: the phases of edge/join.py from proven reads.

Spec: docs/spec/join.md §4a. A light node (docs/spec/light.md §7) holds no ledger state, so the
:class:`~edge.join.Joiner` reads through :class:`ProvenJoinLedger`: before each step it proves
this key's own ``join/req/<key>``, ``join/member/<key>`` and ``own/<key>/<meter>`` rows against
verified headers (ledger/access.py lets any key prove its own join records, nothing of another
member's). Its height and block time are those of the newest verified header, and its peers the
validators heard on the header feed. The admin it seals a pseudonymous request to is the first
of the proven ``cfg/admins`` (public, like the genesis that names the first ones), so a request
made after governance replaced the admins reaches the current admin; the genesis' list serves
until the first proof round. The list is proven only on a pseudonymous chain and only until the
request is on the ledger. The JoinRequest goes through the light submitter's durable queue
(edge/light_submitter.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge.join import STATE_FILE, Joiner, JoinState
from ledger import codec, privacy, state
from ledger.apps import join as join_app
from ledger.genesis import Genesis
from ledger.keys import SigningKey
from ledger.light_node import LightNode
from ledger.light_reader import ProvenReader, ReadError
from ledger.proofs import ProofError

log = logging.getLogger("lemd.join")

MEASURING_RECHECK_S = 3600.0
"""Once measuring, ownership is proven again only this often [s]: a proof round per header
would cost ≈ 0.1 MB/day on the member's metered link (light.md §6) for a rare event (the admin
removing the meter)."""


class ProvenJoinLedger:
    """:class:`edge.join.JoinLedger` from Merkle proofs of this key's own rows.

    Args:
        reader: the light node's proven reader.
        node: the running light node (verified headers, peers heard).
        public_key: this node's key.
        admins: the genesis admin keys (sealing target until ``cfg/admins`` is proven).
        seal_to_admins: the join request will be sealed (a pseudonymous chain): prove
            ``cfg/admins`` until the request is on the ledger. An ``ok`` answer is checked
            against the next header, which an idle chain may not bring for a while, so the
            list is read only when a sealed request needs it.
        wait_s: wait for one proof round [s].
        monotonic: real monotonic clock [s].
        refusal: why the last queued JoinRequest was set aside by the light submitter, or "".
    """

    def __init__(
        self,
        reader: ProvenReader,
        node: LightNode,
        public_key: bytes,
        admins: Sequence[bytes],
        *,
        wait_s: float = 8.0,
        monotonic: Callable[[], float] = time.monotonic,
        refusal: Callable[[], str] = lambda: "",
        seal_to_admins: bool = False,
    ) -> None:
        self.reader, self.node, self.public_key = reader, node, public_key
        self.refusal = refusal
        self._admins = list(admins)
        self._seal_to_admins = seal_to_admins
        self.wait_s = wait_s
        self._monotonic = monotonic
        self._values: dict[bytes, Any] = {}
        self._owned_key = b""
        self._checked_s: float | None = None
        self.error = ""

    def height(self) -> int:
        return self.node.light.height

    def last_block_time_ms(self) -> int:
        return self.node.light.latest.time_ms

    def peers(self) -> int:
        return len(self.node.peers)

    def alone(self) -> bool:
        return False  # a light node always follows validators

    def ready(self) -> bool:
        return self._checked_s is not None

    def owns(self, meter_id: str) -> bool | None:
        # Only this key's own rows are provable: another owner is indistinguishable from none.
        key = state.k_owned(self.public_key, meter_id)
        return True if key == self._owned_key and self._values.get(key) is not None else None

    def member(self) -> dict[str, Any] | None:
        return _record(self._values.get(join_app.k_member(self.public_key)))

    def request(self) -> dict[str, Any] | None:
        return _record(self._values.get(join_app.k_request(self.public_key)))

    def admins(self) -> list[bytes]:
        return list(self._admins)

    async def refresh(self, meter_id: str, measuring: bool) -> None:
        """One proof round of the own join rows (cached per header by the reader); the last
        values stay when no validator answers in time (``error`` says why)."""
        now = self._monotonic()
        if (
            measuring
            and self._checked_s is not None
            and now - self._checked_s < MEASURING_RECHECK_S
        ):
            return
        me = self.public_key
        keys = [join_app.k_request(me), join_app.k_member(me)]
        owned = state.k_owned(me, meter_id) if meter_id else b""
        if owned:
            keys.append(owned)
        wants_admins = (
            self._seal_to_admins and not measuring and self.request() is None
        )  # the sealing target: needed until the sealed request is on the ledger
        if wants_admins:
            keys.append(state.K_ADMINS)
        try:
            got = await self.reader.read(keys, wait_s=self.wait_s)
        except (ReadError, ProofError) as exc:
            self.error = str(exc)
            return
        self._checked_s, self.error, self._owned_key = now, "", owned
        self._values = {
            k: (codec.decode(p.value) if p.status == "ok" and p.value is not None else None)
            for k, p in got.items()
        }
        proven = self._values.get(state.K_ADMINS)
        if isinstance(proven, list) and all(isinstance(k, bytes) for k in proven):
            self._admins = list(proven)  # kept for a later resubmission


def _record(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def light_join_task(
    config: Any,
    key: SigningKey,
    genesis: Genesis,
    reader: ProvenReader,
    node: LightNode,
    submit: Callable[..., bytes],
    *,
    refusal: Callable[[], str] = lambda: "",
    registry: Any = None,
    now_ms: Callable[[], int] | None = None,
) -> Joiner | None:
    """The join task of a light lemd, or None for a node set up by hand (no ``join.json``:
    edge/join.py ``join_task``)."""
    data_dir: Path = config.node.data_dir
    if not (data_dir / STATE_FILE).exists():
        return None
    saved = JoinState.load(data_dir)
    sealed = genesis.privacy == privacy.Mode.PSEUDONYMOUS
    ledger = ProvenJoinLedger(
        reader, node, key.public_key, genesis.admins, refusal=refusal, seal_to_admins=sealed
    )
    return Joiner(
        data_dir,
        ledger,
        key.public_key,
        submit,
        meter_id=config.meter.meter_id or saved.meter_id,
        identification=saved.identification,
        name=config.node.name,
        sealed=sealed,
        key=key,
        serial=saved.serial,
        chain_id=genesis.chain_id,
        brokers=config.ledger.brokers,
        ca_file=config.ledger.ca_file,
        registry=registry,
        now_ms=now_ms,
    )
