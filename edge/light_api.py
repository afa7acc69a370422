"""The local REST API of a light member: the prosumer's reads, each answered from proofs.

Spec: docs/spec/api.md §Light members, docs/spec/light.md §4a. The paths and JSON shapes are the
full node's (edge/api.py) for what seed 000 Fig. 4 lets a prosumer read; every ledger value comes
from a Merkle proof checked against a header this node verified
(:class:`ledger.light_reader.ProvenReader`), and each answer carries a ``proof`` object saying
against which header(s) and whether that is the newest one. ``GET /outbox``, ``/key``,
``/metrics`` and ``/status`` are local. Writes are durable before the 202: ``POST /measure``
is an outbox record like a meter slot; the other writes go to the light submitter's tx queue
(:meth:`edge.light_submitter.LightSubmitter.queue_tx`). Both are signed with the proven
sequence and acknowledged by inclusion proof; a refused one shows in ``GET /outbox``.

Errors beyond the full node's: **504** no validator answered within the wait; **503** an answer
came but the header that checks it has not (it comes with the next block; ``Retry-After``);
**400** a range of more than :data:`MAX_RANGE_SLOTS` slots (each slot is one proof).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from edge.api import body_fields, int_param, outbox_record
from edge.http import HttpError, Request, Response, Router
from edge.light_submitter import LightSubmitter, QueueFull
from edge.metrics import CONTENT_TYPE, Metrics
from edge.outbox import Outbox, OutboxRecord
from ledger import codec, state
from ledger.errors import LedgerError
from ledger.genesis import Genesis
from ledger.keys import SigningKey
from ledger.light_reader import NotYetProven, Proven, ProvenReader, ReadError, ReadTimeout
from ledger.proofs import ProofError, own_prefix
from meters.integrator import Quality

MAX_RANGE_SLOTS = 192
"""Slots one ``/measure`` or ``/totals`` request may span on a light member (two days): each
slot is one proof of ≈ 0.6 kB on the metered link."""
MAX_PERIODS = 96
"""Periods listed by ``GET /params`` and scanned for ``settlements_uect``."""
RETRY_AFTER_S = 60
REQUEST_TIMEOUT_S = 9.5
"""Whole-request bound [s]: an endpoint of several proof rounds answers 504 before lemctl's
10 s client timeout would report the node as not running."""


@dataclass
class LightParts:
    """What the light API reads and writes through."""

    config: Any
    key: SigningKey
    genesis: Genesis
    reader: ProvenReader
    submitter: LightSubmitter
    outbox: Outbox
    metrics: Metrics
    status: Callable[[], dict[str, Any]]
    meter_id: str | Callable[[], str]
    """This node's ledger meter id (the pseudonym on a pseudonymous chain; "" unknown), or
    a function giving it (a joining node learns its pseudonym on admission)."""


def build_light_router(parts: LightParts) -> Router:
    """Every route of the light member's API."""
    api = _LightApi(parts)
    router = Router()
    for method, path, handler in (
        ("GET", "/status", api.status),
        ("GET", "/meters", api.meters),
        ("GET", "/params", api.params),
        ("GET", "/measure", api.measure),
        ("GET", "/totals", api.totals),
        ("GET", "/balance", api.balance),
        ("GET", "/outbox", api.outbox),
        ("GET", "/key", api.key),
        ("GET", "/metrics", api.metrics),
        ("POST", "/measure", api.set_measure),
        ("POST", "/solve", api.solve),
        ("POST", "/meters", api.add_meter),
        ("POST", "/meters/remove", api.remove_meter),
        ("DELETE", "/meters", api.remove_meter),
        ("POST", "/params", api.set_params),
    ):
        router.add(method, path, _guarded(handler))
    return router


def _guarded(handler: Callable[[Request], Awaitable[Response]]) -> Any:
    """Read failures as HTTP answers with a JSON error (never a hang, never a 500)."""

    async def run(request: Request) -> Response:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                return await handler(request)
        except NotYetProven as exc:
            response = Response.json(
                {"error": str(exc), "waiting_for_header": exc.header_height}, 503
            )
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        except ReadTimeout as exc:
            return Response.json({"error": f"{exc} (validators or broker unreachable?)"}, 504)
        except (ReadError, ProofError) as exc:
            return Response.json({"error": f"proof failed: {exc}"}, 502)
        except TimeoutError:
            return Response.json({"error": "no validator answered in time"}, 504)

    return run


def _proof(entries: list[Proven], tip: int) -> dict[str, Any]:
    """How the answer's values are known: the headers whose app hashes proved them, whether
    each is the newest verified one, and how many keys only a validator's word says are absent
    (or not readable: a prosumer's slot without a row of its own answers "denied")."""
    ok = [e for e in entries if e.status == "ok"]
    headers = sorted({e.header_height for e in ok})
    return {
        "tip": tip,
        "headers": headers,
        "current": all(h >= tip for h in headers),
        # absent or denied: a validator's word, not a proof (there are no absence proofs)
        "unproven": sum(1 for e in entries if e.status != "ok"),
    }


class _LightApi:
    def __init__(self, parts: LightParts) -> None:
        self.p = parts
        self.me = parts.key.public_key
        self.account = state.account_id(self.me)

    @property
    def meter_id(self) -> str:
        m = self.p.meter_id
        return m() if callable(m) else m

    @property
    def tip(self) -> int:
        return self.p.reader.node.light.height

    async def _read(self, keys: list[bytes]) -> dict[bytes, Proven]:
        return await self.p.reader.read(keys)

    # local ------------------------------------------------------------------------------

    async def status(self, request: Request) -> Response:
        return Response.json(self.p.status())

    async def outbox(self, request: Request) -> Response:
        limit = int_param(request, "limit", 100)
        return Response.json(
            {
                "depth": self.p.outbox.depth(),
                "pending": [outbox_record(r) for r in self.p.outbox.pending(limit)],
                "rejected": [
                    {**outbox_record(r), "reason": why} for r, why in self.p.outbox.rejected()
                ],
                "inflight": len(self.p.submitter.inflight),
                "queued_txs": [_queued(i) for i in self.p.submitter.queued()],
                "rejected_txs": [
                    {**_queued(i), "reason": i["reason"]} for i in self.p.submitter.rejected_txs()
                ],
            }
        )

    async def metrics(self, request: Request) -> Response:
        return Response(200, self.p.metrics.render(), CONTENT_TYPE)

    async def key(self, request: Request) -> Response:
        return Response.json({"public_key": self.me.hex(), "role": await self._role()})

    async def _role(self) -> str:
        """``admin`` by the genesis (a light member cannot prove ``cfg/admins``), else
        ``prosumer`` when it owns a meter (proven ``own/`` rows), else ``anyone``."""
        if self.me in self.p.genesis.admins:
            return "admin"
        return "prosumer" if await self._own_meters() else "anyone"

    # reads ------------------------------------------------------------------------------

    async def _own_meters(self, extra: list[bytes] | None = None) -> list[str]:
        """This key's meters: listed by a validator (``own/<key>/``), each row proven (the
        node's configured meter is always asked, so an incomplete listing cannot hide it).
        ``extra`` keys ride in the same proof round (read them from the cache after)."""
        prefix = own_prefix(self.me)
        listed = await self.p.reader.list_keys(prefix)
        if self.meter_id:
            listed.append(prefix + self.meter_id.encode())
        own = sorted(set(listed))
        got = await self._read(own + (extra or []))
        return sorted(k[len(prefix) :].decode() for k in own if got[k].status == "ok")

    async def meters(self, request: Request) -> Response:
        prefix = own_prefix(self.me)
        ids = await self._own_meters()
        entries = list((await self._read([prefix + m.encode() for m in ids])).values())
        return Response.json({"meters": ids, "proof": _proof(entries, self.tip)})

    async def _period(self, period_id: str) -> dict[str, Any]:
        entry = (await self._read([state.k_period(period_id)]))[state.k_period(period_id)]
        if entry.status != "ok" or entry.value is None:
            raise HttpError(404, f"no market period {period_id!r} (no proof of it)")
        record = codec.decode(entry.value)
        if not isinstance(record, dict):
            raise HttpError(502, f"period {period_id!r}: proven value is not a record")
        return record

    async def _periods(self, extra: list[bytes] | None = None) -> dict[str, dict[str, Any]]:
        """Every listed period's proven record (the newest :data:`MAX_PERIODS`)."""
        listed = (await self.p.reader.list_keys(b"period/"))[-MAX_PERIODS:]
        got = await self._read(listed + (extra or []))
        out = {}
        for key in listed:
            entry = got[key]
            if entry.status == "ok" and entry.value is not None:
                out[key[len(b"period/") :].decode()] = codec.decode(entry.value)
        return out

    async def params(self, request: Request) -> Response:
        period_id = request.query.get("period")
        if period_id is None:
            periods = await self._periods()
            keys = [state.k_period(p) for p in periods]
            entries = list((await self._read(keys)).values()) if keys else []
            return Response.json({"periods": periods, "proof": _proof(entries, self.tip)})
        record = await self._period(period_id)
        entry = (await self._read([state.k_period(period_id)]))[state.k_period(period_id)]
        return Response.json({"period_id": period_id, **record, "proof": _proof([entry], self.tip)})

    async def _range(self, request: Request) -> tuple[int, int]:
        if "slot" in request.query:
            start = int_param(request, "slot")
            return start, start + state.SLOT_MS
        if "period" in request.query:
            record = await self._period(request.query["period"])
            return int(record["start_ms"]), int(record["end_ms"])
        return int_param(request, "from"), int_param(request, "to")

    def _slots(self, start: int, end: int) -> list[int]:
        first = start + (-start) % state.SLOT_MS
        slots = list(range(first, end, state.SLOT_MS))
        if len(slots) > MAX_RANGE_SLOTS:
            raise HttpError(
                400,
                f"{len(slots)} slots asked; a light member proves at most {MAX_RANGE_SLOTS} "
                "slots per request (one proof each on the metered link): narrow from=/to=",
            )
        return slots

    async def measure(self, request: Request) -> Response:
        meter_id = request.query.get("meter") or self.meter_id
        if not meter_id:
            raise HttpError(400, "query parameter meter= is required")
        period_id = request.query.get("period")
        extra = [state.k_period(period_id)] if period_id and "slot" not in request.query else []
        if meter_id not in await self._own_meters(extra):
            raise HttpError(
                403, f"meter {meter_id!r} is not one of this node's meters (no proven own/ row)"
            )
        start, end = await self._range(request)
        keys = [state.k_measure(s, meter_id) for s in self._slots(start, end)]
        got = await self._read(keys)
        rows = []
        for key in keys:
            entry = got[key]
            if entry.status == "ok" and entry.value is not None:
                imp, exp, quality, owner = codec.decode(entry.value)
                if owner == self.me:  # the rows this key signed (as the full node shows)
                    rows.append(
                        {
                            "slot_start_ms": int(key[5:18]),
                            "import_wh": imp,
                            "export_wh": exp,
                            "quality": quality,
                        }
                    )
        proof = _proof(list(got.values()), self.tip)
        return Response.json({"meter_id": meter_id, "slots": rows, "proof": proof})

    async def totals(self, request: Request) -> Response:
        start, end = await self._range(request)
        keys = [state.k_total(s) for s in self._slots(start, end)]
        got = await self._read(keys)
        rows = []
        for key in keys:
            entry = got[key]
            if entry.status == "denied":
                raise HttpError(403, f"community totals: {entry.detail}")
            if entry.status == "ok" and entry.value is not None:
                imp, exp, meters = codec.decode(entry.value)
                rows.append(
                    {
                        "slot_start_ms": int(key[4:]),
                        "import_wh": imp,
                        "export_wh": exp,
                        "meters": meters,
                    }
                )
        return Response.json({"slots": rows, "proof": _proof(list(got.values()), self.tip)})

    async def balance(self, request: Request) -> Response:
        keys = [state.k_balance(a) for a in (self.account, state.COMMUNITY, state.GRID)]
        listed = (await self.p.reader.list_keys(b"period/"))[-MAX_PERIODS:]
        # Postings of every listed period ride in the same round (an unsolved one is absent).
        skeys = {
            k[len(b"period/") :].decode(): state.k_settlement(
                k[len(b"period/") :].decode(), self.account
            )
            for k in listed
        }
        periods = await self._periods(keys + list(skeys.values()))
        got = await self._read(keys + [skeys[p] for p in periods if periods[p].get("solved")])
        own, community, grid = (_int(got[k]) for k in keys)
        settled = {p: got[skeys[p]] for p in sorted(periods) if periods[p].get("solved")}
        return Response.json(
            {
                "account": self.account,
                "balance_uect": own,
                "community_uect": community,
                "grid_uect": grid,
                "settlements_uect": {
                    p: (None if e.status != "ok" else _int(e)) for p, e in settled.items()
                },
                "proof": _proof(list(got.values()), self.tip),
            }
        )

    # writes -----------------------------------------------------------------------------

    async def _submit(self, kind: str, body: dict[str, Any]) -> Response:
        try:
            api_id = self.p.submitter.queue_tx(kind, body)
        except QueueFull as exc:
            return Response.json({"error": str(exc)}, 503)
        except LedgerError as exc:
            return Response.json({"error": str(exc)}, 400)
        return Response.json(
            {
                "submitted": kind,
                "queued": api_id,
                "note": "stored; signed with the proven sequence and sent to the validators, "
                "its inclusion proven asynchronously (GET /outbox)",
            },
            202,
        )

    async def set_measure(self, request: Request) -> Response:
        body = body_fields(request, ("meter_id", "slot_start_ms", "import_wh", "export_wh"))
        record = _measure_record(body)
        if record.meter_id not in await self._own_meters():
            raise HttpError(403, f"meter {record.meter_id!r} is not this node's meter")
        held = self.p.outbox.get(record.meter_id, record.slot_start_s)
        if held is not None and (held.import_wh, held.export_wh) != (
            record.import_wh,
            record.export_wh,
        ):
            raise HttpError(
                409, f"the outbox already holds other values for slot {body['slot_start_ms']}"
            )
        self.p.outbox.put(record)  # synced before the 202 (edge/outbox.py)
        self.p.submitter.wake.set()
        return Response.json(
            {
                "submitted": "SetMeasure",
                "queued": "outbox",
                "meter_id": record.meter_id,
                "slot_start_ms": record.slot_start_s * 1000,
                "note": "stored in the outbox; committed like a meter slot (GET /outbox)",
            },
            202,
        )

    async def solve(self, request: Request) -> Response:
        body = body_fields(request, ("period_id",))
        return await self._submit("SolveMarkets", {"period_id": str(body["period_id"])})

    async def _require_admin(self, what: str) -> None:
        role = await self._role()
        if role != "admin":
            raise HttpError(
                403,
                f"{what} needs the community admin key; this node's key "
                f"{self.me.hex()[:16]}… has role {role}",
            )

    async def add_meter(self, request: Request) -> Response:
        await self._require_admin("adding a meter (addMeterFromList)")
        body = body_fields(request, ("meter_id", "account"))
        try:
            account = bytes.fromhex(str(body["account"]))
        except ValueError as exc:
            raise HttpError(400, "account must be the owner's public key in hex") from exc
        return await self._submit(
            "AddMeter", {"meter_id": str(body["meter_id"]), "account": account}
        )

    async def remove_meter(self, request: Request) -> Response:
        await self._require_admin("removing a meter (removeMeterFromList)")
        meter_id = request.query.get("meter") or body_fields(request, ("meter_id",))["meter_id"]
        return await self._submit("RemoveMeter", {"meter_id": str(meter_id)})

    async def set_params(self, request: Request) -> Response:
        await self._require_admin("setting market parameters (setMarketParameters)")
        body = body_fields(request, ("period_id", "start_ms", "end_ms", "params"))
        return await self._submit("SetMarketParameters", body)


def _measure_record(body: dict[str, Any]) -> OutboxRecord:
    """The outbox record of a ``POST /measure`` body; 400 naming the bad field."""
    values = {}
    for name in ("slot_start_ms", "import_wh", "export_wh", "quality"):
        value = body.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise HttpError(400, f"{name} must be a non-negative integer, got {value!r}")
        values[name] = value
    if values["slot_start_ms"] % state.SLOT_MS:
        raise HttpError(400, f"slot_start_ms {values['slot_start_ms']} is not a slot start")
    try:
        quality = tuple(Quality(values["quality"]).names())
    except ValueError as exc:
        raise HttpError(400, f"quality {values['quality']} is not a set of flags") from exc
    return OutboxRecord(
        str(body["meter_id"]),
        values["slot_start_ms"] // 1000,
        values["import_wh"],
        values["export_wh"],
        quality,
        int(time.time()),
    )


def _queued(item: dict[str, Any]) -> dict[str, Any]:
    """A queued tx as ``GET /outbox`` shows it (bytes as hex); once signed, with the hash and
    sequence of its last signed form (what ``lemctl ledger prove --key tx`` asks for)."""
    body = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in dict(item["body"]).items()}
    shown = {"id": item["id"], "kind": item["kind"], "body": body, "rounds": item.get("rounds", 0)}
    if item.get("tx") and "seq" in item:
        shown |= {"tx_hash": bytes(item["tx"]).hex(), "sequence": int(item["seq"])}
    return shown


def _int(entry: Proven) -> int:
    """An integer value (balances, postings); 0 for a key a validator says is absent."""
    if entry.status != "ok" or entry.value is None:
        return 0
    return int(codec.decode(entry.value))
