"""Genesis: the chain's first state, canonical and hashable.

Spec: docs/spec/ledger.md §5.1. A genesis document is written as JSON for humans (keys as hex)
and committed to as the canonical MessagePack map of :meth:`Genesis.to_value`; its SHA-256 is the
genesis hash, which block 1 links to as ``prev_block_hash``.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from ledger import codec, keys, privacy, state
from ledger.errors import LedgerError
from market.amm import MarketParams
from market.errors import MarketError

ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
"""Meter and period ids (the same rule as tx bodies, ledger/registry.py)."""

DEFAULT_CLOCK_SKEW_MS = 60_000
"""How far a measured slot's end may lie after the block time [ms] (node clocks differ)."""


class GenesisError(LedgerError):
    """A genesis document that is malformed or inconsistent (names the field)."""


@dataclass(frozen=True)
class Period:
    """A market period (seed 000 §4.4 MP: TsStart, TsEnd, parameters)."""

    period_id: str
    start_ms: int
    end_ms: int
    params: dict[str, str]


@dataclass(frozen=True)
class Genesis:
    """The chain's constitution.

    Attributes:
        chain_id: the chain's name (no '/').
        genesis_time_ms: block time of height 0 [ms since epoch, UTC].
        validators: (public key, voting power) pairs.
        admins: admin (community operator) public keys.
        governance_keys: keys whose k-of-n approvals pass governance proposals.
        governance_threshold: k.
        meters: allowed meters, meter id → owner account public key.
        periods: initial market periods.
        clock_skew_ms: see :data:`DEFAULT_CLOCK_SKEW_MS`.
        settle_grace_ms: how long after a period's end SolveMarkets must wait [ms].
        privacy: "open" (meter serials are the ledger's meter ids, visible to prosumers) or
            "pseudonymous" (meter ids must be keyed-hash pseudonyms; docs/spec/privacy.md §1).
        dispute_window_ms: how long after a period is solved its raw measurements stay on the
            ledger before PruneMeasurements may remove them [ms]; None = kept for ever
            (docs/spec/privacy.md §3). Omitted from the hashed form when None.
        certified_meters: meter ids admitted without approval when a node's JoinRequest names
            them (docs/spec/join.md §2). Omitted from the hashed form when empty.
    """

    chain_id: str
    genesis_time_ms: int
    validators: tuple[tuple[bytes, int], ...]
    admins: tuple[bytes, ...]
    governance_keys: tuple[bytes, ...]
    governance_threshold: int
    meters: dict[str, bytes] = field(default_factory=dict)
    periods: tuple[Period, ...] = ()
    clock_skew_ms: int = DEFAULT_CLOCK_SKEW_MS
    settle_grace_ms: int = 0
    privacy: str = "open"
    dispute_window_ms: int | None = None
    certified_meters: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require(bool(self.chain_id) and "/" not in self.chain_id, "chain_id", self.chain_id)
        _require(len(self.chain_id) <= 64, "chain_id", self.chain_id)
        _require(self.genesis_time_ms >= 0, "genesis_time_ms", self.genesis_time_ms)
        _require(len(self.validators) >= 1, "validators", "at least one")
        for pk, power in self.validators:
            _require(len(pk) == keys.PUBLIC_KEY_BYTES and power > 0, "validators", pk.hex())
        _require(len({pk for pk, _ in self.validators}) == len(self.validators), "validators", "")
        _require(len(self.admins) >= 1, "admins", "at least one")
        n = len(self.governance_keys)
        _require(1 <= self.governance_threshold <= max(n, 1), "governance_threshold", n)
        _require(self.privacy in set(privacy.Mode), "privacy", self.privacy)
        window = self.dispute_window_ms
        _require(window is None or window >= 0, "dispute_window_ms", window)
        _require(self.clock_skew_ms >= 0, "clock_skew_ms", self.clock_skew_ms)
        _require(self.settle_grace_ms >= 0, "settle_grace_ms", self.settle_grace_ms)
        for meter_id, owner in self.meters.items():
            _require(ID_RE.match(meter_id) is not None, "meters", meter_id)
            _require(len(owner) == keys.PUBLIC_KEY_BYTES, "meters", meter_id)
            if self.privacy == privacy.Mode.PSEUDONYMOUS:
                # Never a serial on a pseudonymous ledger, not even by mistake in genesis.
                _require(privacy.is_pseudonym(meter_id), "meters", "not a pseudonym")
        for meter_id in self.certified_meters:
            _require(ID_RE.match(meter_id) is not None, "certified_meters", meter_id)
            if self.privacy == privacy.Mode.PSEUDONYMOUS:
                _require(privacy.is_pseudonym(meter_id), "certified_meters", "not a pseudonym")
        _require(
            len(set(self.certified_meters)) == len(self.certified_meters),
            "certified_meters",
            "an id twice",
        )
        self._check_periods()

    def _check_periods(self) -> None:
        """Periods: valid ids, 15-min aligned, non-empty, no overlap, engine-valid parameters."""
        spans = sorted((p.start_ms, p.end_ms, p.period_id) for p in self.periods)
        _require(len({p.period_id for p in self.periods}) == len(spans), "periods", "duplicate id")
        for start, end, pid in spans:
            _require(ID_RE.match(pid) is not None, "periods", pid)
            aligned = start % state.SLOT_MS == 0 and end % state.SLOT_MS == 0
            _require(aligned and start < end, "periods", f"{pid}: bounds")
        for (_, end_a, a), (start_b, _, b) in itertools.pairwise(spans):
            _require(end_a <= start_b, "periods", f"{a} overlaps {b}")
        for p in self.periods:
            try:
                MarketParams.from_strings(p.params)
            except MarketError as exc:
                raise GenesisError(
                    f"genesis field 'periods' is invalid ({p.period_id}: {exc})"
                ) from exc

    def to_value(self) -> dict[str, codec.Value]:
        """Canonical value (the hashed form)."""
        value: dict[str, codec.Value] = {
            "chain_id": self.chain_id,
            "genesis_time_ms": self.genesis_time_ms,
            "validators": [[pk, p] for pk, p in sorted(self.validators)],
            "admins": sorted(self.admins),
            "governance": {
                "keys": sorted(self.governance_keys),
                "threshold": self.governance_threshold,
            },
            "meters": dict(self.meters),
            "periods": [[p.period_id, p.start_ms, p.end_ms, p.params] for p in self.periods],
            "chain": self.chain_params(),
        }
        if self.certified_meters:
            value["certified_meters"] = sorted(self.certified_meters)
        return value

    def chain_params(self) -> dict[str, codec.Value]:
        params: dict[str, codec.Value] = {
            "clock_skew_ms": self.clock_skew_ms,
            "settle_grace_ms": self.settle_grace_ms,
            "privacy": self.privacy,
        }
        # Only when set, so chains made before retention existed keep their genesis hash.
        if self.dispute_window_ms is not None:
            params["dispute_window_ms"] = self.dispute_window_ms
        return params

    def encode(self) -> bytes:
        return codec.encode(self.to_value())

    @property
    def hash(self) -> bytes:
        """SHA-256 of :meth:`encode` — the genesis hash."""
        return keys.sha256(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> Genesis:
        """Inverse of :meth:`encode` (raises GenesisError)."""
        try:
            value = codec.decode(data)
            return cls.from_value(value)
        except (LedgerError, KeyError, TypeError, ValueError) as exc:
            raise GenesisError(f"stored genesis: {exc}") from exc

    @classmethod
    def from_value(cls, v: dict[str, Any]) -> Genesis:
        chain = v["chain"]
        return cls(
            chain_id=v["chain_id"],
            genesis_time_ms=v["genesis_time_ms"],
            validators=tuple((bytes(pk), int(p)) for pk, p in v["validators"]),
            admins=tuple(bytes(a) for a in v["admins"]),
            governance_keys=tuple(bytes(k) for k in v["governance"]["keys"]),
            governance_threshold=int(v["governance"]["threshold"]),
            meters={str(m): bytes(pk) for m, pk in v["meters"].items()},
            periods=tuple(Period(p[0], p[1], p[2], dict(p[3])) for p in v["periods"]),
            clock_skew_ms=int(chain["clock_skew_ms"]),
            settle_grace_ms=int(chain["settle_grace_ms"]),
            privacy=str(chain["privacy"]),
            dispute_window_ms=_opt_int(chain.get("dispute_window_ms")),
            certified_meters=tuple(str(m) for m in v.get("certified_meters", ())),
        )

    def to_json(self) -> str:
        """Human-editable JSON (public keys as hex)."""
        return json.dumps(_hexify(self.to_value()), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Genesis:
        """Parse :meth:`to_json` output (raises GenesisError naming the field)."""
        try:
            v = json.loads(text)
            v["validators"] = [[bytes.fromhex(pk), p] for pk, p in v["validators"]]
            v["admins"] = [bytes.fromhex(a) for a in v["admins"]]
            v["governance"]["keys"] = [bytes.fromhex(k) for k in v["governance"]["keys"]]
            v["meters"] = {m: bytes.fromhex(pk) for m, pk in v["meters"].items()}
            return cls.from_value(v)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise GenesisError(f"genesis JSON: {type(exc).__name__}: {exc}") from exc

    def initial_state(self) -> dict[bytes, bytes]:
        """The state at height 0 as key → canonical value bytes (docs/spec/ledger.md §5)."""
        st = state.Overlay(state.MemoryState())
        st.put_value(state.K_CHAIN, self.chain_params())
        st.put_value(state.K_ADMINS, sorted(self.admins))
        st.put_value(
            state.K_GOVERNANCE,
            {"keys": sorted(self.governance_keys), "threshold": self.governance_threshold},
        )
        st.put_value(state.K_VALIDATORS, [[pk, p] for pk, p in sorted(self.validators)])
        for meter_id, owner in self.meters.items():
            st.put_value(state.k_meter(meter_id), owner)
            st.put_value(state.k_owned(owner, meter_id), True)
        for meter_id in self.certified_meters:
            # Same key as ledger/apps/join.py k_cert (genesis cannot import the apps).
            st.put_value(b"join/cert/" + meter_id.encode(), True)
        for p in self.periods:
            st.put_value(state.k_period(p.period_id), period_record(p.start_ms, p.end_ms, p.params))
            st.put_value(state.k_period_start(p.start_ms), p.period_id)
        return {k: v for k, v in st.writes.items() if v is not None}


def period_record(start_ms: int, end_ms: int, params: dict[str, str]) -> dict[str, codec.Value]:
    """The stored form of a market period (solved flips once, at SolveMarkets)."""
    return {"start_ms": start_ms, "end_ms": end_ms, "params": params, "solved": False}


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _require(ok: bool, name: str, detail: object) -> None:
    if not ok:
        raise GenesisError(f"genesis field {name!r} is invalid ({detail})")


def _hexify(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list):
        return [_hexify(x) for x in v]
    if isinstance(v, dict):
        return {k: _hexify(x) for k, x in v.items()}
    return v
