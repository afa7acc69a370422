"""The ledger as the join task reads it (edge/join.py ``Joiner``): a port and its full-node side.

Spec: docs/spec/join.md §4, §4a. A full node reads its committed state (:class:`LocalLedger`); a
light node reads what it proved (edge/light_join.py ``ProvenJoinLedger``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ledger import state
from ledger.apps import join as join_app


class NodeView(Protocol):
    """What the join task reads of the running ledger node (edge/ledger_node.LedgerNode)."""

    app: Any

    def peers(self) -> int: ...


class JoinLedger(Protocol):
    """The ledger as the join task sees it: the local state of a full node
    (:class:`LocalLedger`), or values a light node proved (edge/light_join.py)."""

    def height(self) -> int: ...

    def last_block_time_ms(self) -> int: ...

    def peers(self) -> int: ...

    def alone(self) -> bool:
        """A single-validator chain: this node needs no peer."""
        ...

    def owns(self, meter_id: str) -> bool | None:
        """True: this key owns ``meter_id``; False: another key does; None: unknown/nobody."""
        ...

    def member(self) -> dict[str, Any] | None:
        """This key's ``join/member/<key>`` record."""
        ...

    def request(self) -> dict[str, Any] | None:
        """This key's waiting ``join/req/<key>`` record."""
        ...

    def admins(self) -> list[bytes]: ...

    def ready(self) -> bool:
        """The values are known (a light node: after its first answered proof round)."""
        ...

    def refusal(self) -> str:
        """Why the last JoinRequest was refused when that is learnt only after submitting it
        (a light node: never included), else ""."""
        ...

    async def refresh(self, meter_id: str, measuring: bool) -> None:
        """Bring the values up to date before a step (a light node's proof round)."""
        ...


class LocalLedger:
    """:class:`JoinLedger` over a full node's committed state."""

    def __init__(self, node: NodeView, public_key: bytes) -> None:
        self.node, self.public_key = node, public_key

    def _read(self, read: Callable[[state.Overlay], Any]) -> Any:
        with self.node.app.store.state_reader() as base:
            return read(state.Overlay(base))

    def height(self) -> int:
        return int(self.node.app.height)

    def last_block_time_ms(self) -> int:
        return int(self.node.app.last_block_time_ms)

    def peers(self) -> int:
        return self.node.peers()

    def alone(self) -> bool:
        return bool(getattr(self.node, "mode", "") == "single")

    def owns(self, meter_id: str) -> bool | None:
        owner = self._read(lambda st: state.meter_owner(st, meter_id))
        return None if owner is None else owner == self.public_key

    def member(self) -> dict[str, Any] | None:
        return self._read(lambda st: join_app.member(st, self.public_key))  # type: ignore[no-any-return]

    def request(self) -> dict[str, Any] | None:
        return self._read(lambda st: join_app.request(st, self.public_key))  # type: ignore[no-any-return]

    def admins(self) -> list[bytes]:
        return self._read(state.admins)  # type: ignore[no-any-return]

    def ready(self) -> bool:
        return True

    def refusal(self) -> str:
        return ""  # the local mempool refuses at once (Joiner catches TxRejected)

    async def refresh(self, meter_id: str, measuring: bool) -> None:
        return None  # the local state is always current
