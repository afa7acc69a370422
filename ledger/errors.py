"""The ledger package's exception hierarchy: one base, typed subclasses carrying data."""

from __future__ import annotations

from enum import StrEnum


class LedgerError(Exception):
    """Base of every error the ledger package raises on purpose."""


class CodecError(LedgerError):
    """Bytes that are not one canonical MessagePack encoding of a ledger value."""


class SignatureError(LedgerError):
    """A signature that does not verify, or a key that is not a valid ed25519 key."""


class KeyFileError(LedgerError):
    """A key file that is missing, unreadable, malformed or not private to its owner."""


class StoreError(LedgerError):
    """The LMDB store cannot be opened, is inconsistent, or a write failed (stop the process)."""


class BlockInvalid(LedgerError):  # noqa: N818 -- named for the outcome, like CometBFT's
    """A proposed or stored block that must not be voted for or committed."""


class AccessDenied(LedgerError):  # noqa: N818 -- named for the outcome, like CometBFT's
    """A query the viewer's role may not make (seed 000 Fig. 4)."""


class Reason(StrEnum):
    """Why a transaction was rejected: short, stable codes (docs/spec/ledger.md §3)."""

    OVERSIZED = "oversized"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    WRONG_CHAIN = "wrong_chain"
    STALE_SEQUENCE = "stale_sequence"
    FUTURE_SEQUENCE = "future_sequence"
    UNKNOWN_KIND = "unknown_kind"
    NOT_PERMITTED = "not_permitted"
    BAD_VALUE = "bad_value"
    UNKNOWN_METER = "unknown_meter"
    NOT_METER_OWNER = "not_meter_owner"
    METER_EXISTS = "meter_exists"
    SLOT_UNALIGNED = "slot_unaligned"
    SLOT_IN_FUTURE = "slot_in_future"
    PERIOD_SOLVED = "period_solved"
    MEASURE_CONFLICT = "measure_conflict"
    UNKNOWN_PERIOD = "unknown_period"
    PERIOD_NOT_ENDED = "period_not_ended"
    PERIOD_STARTED = "period_started"
    PERIOD_OVERLAP = "period_overlap"
    ALREADY_SOLVED = "already_solved"
    BAD_PARAMS = "bad_params"
    SETTLEMENT_FAILED = "settlement_failed"
    BAD_AMOUNT = "bad_amount"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    UNKNOWN_PROPOSAL = "unknown_proposal"
    PROPOSAL_EXPIRED = "proposal_expired"
    ALREADY_VOTED = "already_voted"
    EVIDENCE_UNSUPPORTED = "evidence_unsupported"
    BAD_EVIDENCE = "bad_evidence"
    DUPLICATE_EVIDENCE = "duplicate_evidence"
    # market windows and forward schedules (ledger/apps/windows.py, ledger/apps/schedules.py)
    MARKET_NOT_CONFIGURED = "market_not_configured"
    WINDOW_NOT_OPEN = "window_not_open"
    WINDOW_CLOSED = "window_closed"
    DUPLICATE_REQUEST = "duplicate_request"
    UNKNOWN_WINDOW = "unknown_window"
    NO_ASSET = "no_asset"
    SCHEDULE_REFUSED = "schedule_refused"
    GATE_CLOSED = "gate_closed"
    UNKNOWN_DAY = "unknown_day"
    # PowerChain storage-backed energy token (ledger/apps/powerchain.py, seed 004)
    UNKNOWN_UNIT = "unknown_unit"
    UNIT_EXISTS = "unit_exists"
    UNKNOWN_SESSION = "unknown_session"
    SESSION_ACTIVE = "session_active"
    SESSION_EXPIRED = "session_expired"
    INSUFFICIENT_ENERGY = "insufficient_energy"
    UNKNOWN_ORDER = "unknown_order"
    # privacy: pseudonymous meter ids and retention of raw measurements (ledger/apps/privacy.py)
    NOT_PSEUDONYM = "not_pseudonym"
    RETENTION_DISABLED = "retention_disabled"
    PERIOD_NOT_SOLVED = "period_not_solved"
    DISPUTE_WINDOW_OPEN = "dispute_window_open"
    ALREADY_PRUNED = "already_pruned"
    PRUNE_BLOCKED = "prune_blocked"
    PRUNE_NEXT_BLOCK = "prune_next_block"
    DUPLICATE_TX = "duplicate_tx"
    MEMPOOL_FULL = "mempool_full"
    # joining (ledger/apps/join.py)
    ALREADY_MEMBER = "already_member"
    NO_JOIN_REQUEST = "no_join_request"
    JOIN_QUEUE_FULL = "join_queue_full"


TIME_REASONS = frozenset(
    {
        Reason.SLOT_IN_FUTURE,
        Reason.PERIOD_NOT_ENDED,
        Reason.FUTURE_SEQUENCE,
        Reason.DISPUTE_WINDOW_OPEN,
        Reason.PRUNE_NEXT_BLOCK,
    }
)
"""Failures that a later block (a later block time, an earlier tx landing) may cure."""


class TxRejected(LedgerError):  # noqa: N818 -- named for the outcome, like CometBFT's
    """A transaction refused by admission or execution.

    Attributes:
        reason: the stable reason code.
        message: what was wrong and where, for logs and the submitter.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message
