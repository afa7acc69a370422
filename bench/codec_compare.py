"""msgpack vs msgspec's MessagePack codec for the ledger's canonical values.

Usage: .venv/bin/python bench/codec_compare.py

Prints encode and decode speed on a SetMeasure tx envelope and a 19-tx block (both libraries
produce the same bytes for these values: checked), the canonical decode that ledger/codec.py
does (decode + re-encode + compare), and the resident memory each import adds in a fresh
interpreter. Choice recorded in docs/spec/codec.md §Library.
"""

from __future__ import annotations

import subprocess
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgpack
import msgspec

from ledger import codec
from ledger import tx as txm
from ledger.keys import SigningKey

_RSS = (  # current resident set from /proc (Linux), in KiB, before and after the import
    "import os;p=os.sysconf('SC_PAGE_SIZE')//1024;"
    "r=lambda:int(open('/proc/self/statm').read().split()[1])*p;"
    "b=r();import {mod};{use};print(r()-b)"
)


def _import_kib(module: str, use: str) -> int:
    code = _RSS.format(mod=module, use=use)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def _rate(stmt: object, n: int) -> float:
    return n / min(timeit.repeat(stmt, number=n, repeat=3))  # type: ignore[arg-type]


def main() -> None:
    key = SigningKey(b"\x01" * 32)
    body = {
        "meter_id": "meter-01",
        "slot_start_ms": 1_793_491_200_000,
        "import_wh": 512,
        "export_wh": 0,
        "quality": 0,
    }
    raw_tx = txm.make(key, "lem-bench", 42, "SetMeasure", body)
    tx_value = msgpack.unpackb(raw_tx)
    block_value = [[1, "lem-bench", 7, 1_793_491_200_000, *[b"\x00" * 32] * 6], [raw_tx] * 19, None]
    raw_block = codec.encode(block_value)
    enc, dec = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder()
    for value, raw in ((tx_value, raw_tx), (block_value, raw_block)):
        assert msgpack.packb(value, use_bin_type=True) == raw
        assert enc.encode(value) == raw, "msgspec encodes these values differently"
    print(
        f"python {sys.version.split()[0]}, msgpack {msgpack.version}, msgspec {msgspec.__version__}"
    )
    n = 20_000
    for name, value, raw in (
        ("tx (196 B)", tx_value, raw_tx),
        (f"block ({len(raw_block)} B)", block_value, raw_block),
    ):
        m = n if "tx" in name else n // 10
        print(f"{name}:")
        a = _rate(lambda v=value: msgpack.packb(v, use_bin_type=True), m)
        b = _rate(lambda v=value: enc.encode(v), m)
        print(f"  encode  msgpack {a:>10,.0f}/s   msgspec {b:>10,.0f}/s")
        print(
            f"  decode  msgpack {_rate(lambda r=raw: msgpack.unpackb(r, raw=False), m):>10,.0f}/s"
            f"   msgspec {_rate(lambda r=raw: dec.decode(r), m):>10,.0f}/s"
        )
        print(
            f"  canonical decode (ledger.codec.decode: decode + re-encode + compare) "
            f"{_rate(lambda r=raw: codec.decode(r), m):>10,.0f}/s"
        )
    mp = _import_kib("msgpack", "msgpack.unpackb(msgpack.packb([1]))")
    ms = _import_kib("msgspec.msgpack", "msgspec.msgpack.decode(msgspec.msgpack.encode([1]))")
    print(f"import + first use, RSS: msgpack +{mp} KiB, msgspec +{ms} KiB")
    sorted_enc = msgspec.msgpack.Encoder(order="sorted")

    def msgspec_canonical(data: bytes) -> object:
        value = dec.decode(data)
        if sorted_enc.encode(value) != data:
            raise ValueError("not canonical")
        return value  # a walk refusing floats would still be needed on top

    rate = _rate(lambda: msgspec_canonical(raw_tx), n)
    print(f"canonical tx decode via msgspec (decode + sorted re-encode + compare): {rate:,.0f}/s")


if __name__ == "__main__":
    main()
