"""The tx-kind registry: each kind is a handler (decode body, validate, apply).

Spec: docs/spec/ledger.md §2 "Registry". Modules under ``ledger/apps/`` call :func:`register` at
import time; ``ledger/apps/__init__.py`` lists those modules, so adding a market touches no other
central file. Handlers are pure functions of (state, block height, block time, tx).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from ledger import codec, genesis, keys
from ledger.errors import Reason, TxRejected
from ledger.state import Overlay
from ledger.tx import Tx

B = TypeVar("B")


@dataclass(frozen=True, slots=True)
class DoubleSign:
    """What an evidence verifier established: ``validator`` signed two votes for one step."""

    validator: bytes
    height: int
    round: int


class EvidenceVerifier(Protocol):
    """Checks two signed votes (opaque bytes) for equivocation; provided by consensus.

    Raises:
        ValueError: the pair is not valid evidence (bad signatures, same vote, different step).
    """

    def __call__(self, chain_id: str, vote_a: bytes, vote_b: bytes) -> DoubleSign: ...


@dataclass(slots=True)
class Context:
    """What a handler may see besides its tx.

    Attributes:
        state: the overlay to read and (in ``apply``) write.
        chain_id: the chain.
        height: height of the block being executed (``check_tx``: the next height).
        time_ms: block time [ms, UTC]; in ``check_tx`` the last block's time.
        check_only: True in ``check_tx``: rules a later block time may cure are skipped.
        evidence_verifier: None when this node cannot judge evidence.
    """

    state: Overlay
    chain_id: str
    height: int
    time_ms: int
    check_only: bool = False
    evidence_verifier: EvidenceVerifier | None = None

    def with_state(self, st: Overlay) -> Context:
        """This context over another overlay (each tx of a block runs in its own child).

        Built field by field: ``dataclasses.replace`` costs ~1.5 µs per tx, this ~0.3 µs
        (docs/spec/consensus.md §11)."""
        return Context(
            st, self.chain_id, self.height, self.time_ms, self.check_only, self.evidence_verifier
        )


@dataclass(frozen=True, slots=True)
class TxKind(Generic[B]):
    """One tx kind: ``decode_body`` raises TxRejected(MALFORMED), ``validate`` reads only,
    ``apply`` writes through ``ctx.state`` (called only after ``validate`` passed)."""

    name: str
    decode_body: Callable[[codec.Value], B]
    validate: Callable[[Context, Tx, B], None]
    apply: Callable[[Context, Tx, B], None]


_KINDS: dict[str, TxKind[Any]] = {}


def register(kind: TxKind[Any]) -> None:
    """Add a kind; names are unique for the life of the process."""
    if kind.name in _KINDS and _KINDS[kind.name] is not kind:
        raise ValueError(f"tx kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind


def lookup(name: str) -> TxKind[Any]:
    """The handler of ``name``.

    Raises:
        TxRejected: ``unknown_kind``.
    """
    kind = _KINDS.get(name)
    if kind is None:  # the apps register on first use; after that a lookup is one dict read
        _load_apps()
        kind = _KINDS.get(name)
        if kind is None:
            raise TxRejected(Reason.UNKNOWN_KIND, f"no tx kind {name!r}")
    return kind


def kinds() -> list[str]:
    """Every registered kind name, sorted."""
    _load_apps()
    return sorted(_KINDS)


def _load_apps() -> None:
    import ledger.apps  # noqa: F401 -- importing registers every kind (cyclic at module level)


# body decoding helpers --------------------------------------------------------------------

ID_RE = genesis.ID_RE


def fields(value: codec.Value, kind: str, names: tuple[str, ...]) -> dict[str, Any]:
    """The body as a map holding exactly ``names``.

    Raises:
        TxRejected: ``malformed`` naming the missing or extra fields.
    """
    if not isinstance(value, dict):
        raise TxRejected(Reason.MALFORMED, f"{kind} body must be a map")
    if set(value) != set(names):
        missing = sorted(set(names) - set(value))
        extra = sorted(set(value) - set(names))
        raise TxRejected(Reason.MALFORMED, f"{kind} body: missing {missing}, unexpected {extra}")
    return value


def int_field(body: dict[str, Any], kind: str, name: str, lo: int, hi: int) -> int:
    v = body[name]
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise TxRejected(Reason.MALFORMED, f"{kind}.{name} must be an int in [{lo}, {hi}]")
    return v


def id_field(body: dict[str, Any], kind: str, name: str) -> str:
    v = body[name]
    if not isinstance(v, str) or not ID_RE.match(v):
        raise TxRejected(Reason.MALFORMED, f"{kind}.{name} must match {ID_RE.pattern}")
    return v


def key_field(body: dict[str, Any], kind: str, name: str) -> bytes:
    v = body[name]
    if not isinstance(v, bytes) or len(v) != keys.PUBLIC_KEY_BYTES:
        raise TxRejected(Reason.MALFORMED, f"{kind}.{name} must be a 32-byte public key")
    return v


def reject(reason: Reason, message: str) -> TxRejected:
    """Shorthand used by handlers: ``raise reject(Reason.X, "...")``."""
    return TxRejected(reason, message)
