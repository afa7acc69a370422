"""Shared builders for ledger tests: fixed keys, a genesis, signed txs, committed blocks."""

from __future__ import annotations

from pathlib import Path

from ledger import tx as txm
from ledger.app import App
from ledger.genesis import Genesis
from ledger.keys import SigningKey
from ledger.store import Store

CHAIN = "lem-test"
T0 = 1_790_000_100_000 - 1_790_000_100_000 % 900_000  # a 15-min aligned instant [ms]
SLOT = 900_000


def key(n: int) -> SigningKey:
    """Deterministic test key number ``n``."""
    return SigningKey(bytes([n]) * 32)


ADMIN, N1, N2, VAL, GOV2, OUTSIDER = (key(i) for i in range(1, 7))
GOV1 = ADMIN
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

    def __init__(self, k: SigningKey, chain: str = CHAIN) -> None:
        self.key, self.chain, self.seq = k, chain, 0

    def __call__(self, kind: str, body: object) -> bytes:
        raw = txm.make(self.key, self.chain, self.seq, kind, body)
        self.seq += 1
        return raw


def open_app(path: Path, g: Genesis | None = None, durable: bool = False) -> App:
    return App(Store(path, g or genesis(), durable=durable))


def commit(app: App, txs: list[bytes], time_ms: int) -> bytes:
    """Build, validate and commit a block of exactly ``txs`` (all must execute)."""
    prepared = app.prepare(app.height + 1, time_ms, VAL.public_key, txs, None)
    assert prepared.dropped == [], [(e.reason, e.message) for _, e in prepared.dropped]
    commit_value = [[VAL.public_key, b"\x00" * 64]]
    return app.commit_block(prepared.block_bytes, commit_value)
