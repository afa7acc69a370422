"""Shared builders for ledger tests: fixed keys, a genesis, signed txs, committed blocks."""

from __future__ import annotations

from pathlib import Path

from ledger import codec
from ledger import tx as txm
from ledger.app import App
from ledger.genesis import Genesis
from ledger.keys import SigningKey, verify
from ledger.registry import DoubleSign
from ledger.store import Store

CHAIN = "lem-test"
T0 = 1_790_000_100_000 - 1_790_000_100_000 % 900_000  # a 15-min aligned instant [ms]
SLOT = 900_000


def key(n: int) -> SigningKey:
    """Deterministic test key number ``n``."""
    return SigningKey(bytes([n]) * 32)


ADMIN, N1, N2, VAL, GOV1, OUTSIDER, GOV2 = (key(i) for i in range(1, 8))
PARAMS = {"p_buy_bau": "21", "p_sell_bau": "6", "p_buy_lem": "16", "p_sell_lem": "9", "beta": "0"}


def genesis(**overrides: object) -> Genesis:
    fields: dict[str, object] = {
        "chain_id": CHAIN,
        "genesis_time_ms": T0 - 60_000,
        "validators": ((VAL.public_key, 10),),
        "admins": (ADMIN.public_key,),
        "governance_keys": (GOV1.public_key, GOV2.public_key),
        "governance_threshold": 2,
    }
    fields.update(overrides)
    return Genesis(**fields)  # type: ignore[arg-type]


class Signer:
    """Keeps one key's next sequence number."""

    def __init__(self, k: SigningKey, chain: str = CHAIN, app: App | None = None) -> None:
        self.key, self.chain = k, chain
        self.seq = 0 if app is None else app.sequence(k.public_key)

    def __call__(self, kind: str, body: object) -> bytes:
        raw = txm.make(self.key, self.chain, self.seq, kind, body)
        self.seq += 1
        return raw


def open_app(path: Path, g: Genesis | None = None, durable: bool = False) -> App:
    return App(Store(path, g or genesis(), durable=durable))


def commit(app: App, txs: list[bytes], time_ms: int) -> bytes:
    """Build, validate and commit a block of exactly ``txs`` (all must execute)."""
    last_commit = app.commit(app.height)  # None at height 0
    prepared = app.prepare(app.height + 1, time_ms, VAL.public_key, txs, last_commit)
    assert prepared.dropped == [], [(e.reason, e.message) for _, e in prepared.dropped]
    commit_value = [[VAL.public_key, b"\x00" * 64]]
    return app.commit_block(prepared.block_bytes, commit_value)


def vote(
    k: SigningKey, height: int, round_: int, block_hash: bytes, step: str = "precommit"
) -> bytes:
    """A signed vote-like payload: [[step, height, round, block_hash, validator], signature]."""
    body = [step, height, round_, block_hash, k.public_key]
    return codec.encode([body, k.sign(CHAIN, "vote", codec.encode(body))])


def vote_verifier(chain_id: str, vote_a: bytes, vote_b: bytes) -> DoubleSign:
    """Test stand-in for consensus's verifier: both signatures real, same step, other blocks."""
    bodies = []
    for raw in (vote_a, vote_b):
        body, signature = codec.decode(raw)
        verify(body[4], chain_id, "vote", codec.encode(body), signature)
        bodies.append(body)
    a, b = bodies
    if a[:3] != b[:3] or a[4] != b[4] or a[3] == b[3]:
        raise ValueError("votes are not for the same step by one validator on two blocks")
    return DoubleSign(a[4], a[1], a[2])


def measure(
    meter: str, slot_ms: int, import_wh: int, export_wh: int, quality: int = 0
) -> dict[str, object]:
    return {
        "meter_id": meter,
        "slot_start_ms": slot_ms,
        "import_wh": import_wh,
        "export_wh": export_wh,
        "quality": quality,
    }


def period(
    pid: str, start_ms: int, end_ms: int, params: dict[str, str] | None = None
) -> dict[str, object]:
    return {"period_id": pid, "start_ms": start_ms, "end_ms": end_ms, "params": params or PARAMS}
