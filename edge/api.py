"""The local REST API: the paper's Table 2 operations plus status, outbox, balance and metrics.

Spec: docs/spec/api.md. The API listens on 127.0.0.1 or a Unix socket only; whoever can reach
it acts as this node's key. Reads go through ``ledger.access.Queries`` with this key as the
viewer, so a prosumer node answers 403 for another member's measurements just as the ledger's
access rules say (seed 000 Fig. 4). Writes are txs signed by this node's key through the
shared :class:`~edge.submitter.TxSigner`; operations only an admin may sign answer 403 on a
prosumer node before anything is signed.
"""

from __future__ import annotations

from typing import Any

from edge.http import HttpError, Request, Response, Router
from edge.metrics import CONTENT_TYPE
from edge.status import Parts, balance_of, snapshot
from ledger import state
from ledger.access import Role
from ledger.errors import AccessDenied, Reason, TxRejected

_CLIENT_REASONS = frozenset({Reason.MALFORMED, Reason.BAD_VALUE, Reason.SLOT_UNALIGNED})


def build_router(parts: Parts) -> Router:
    """Every route of the API, bound to the running daemon's parts."""
    api = _Api(parts)
    router = Router()
    for method, path, handler in (
        ("GET", "/status", api.status),
        ("GET", "/meters", api.meters),
        ("POST", "/meters", api.add_meter),
        ("DELETE", "/meters", api.remove_meter),
        ("POST", "/meters/remove", api.remove_meter),
        ("GET", "/params", api.params),
        ("POST", "/params", api.set_params),
        ("GET", "/measure", api.measure),
        ("POST", "/measure", api.set_measure),
        ("GET", "/totals", api.totals),
        ("POST", "/solve", api.solve),
        ("GET", "/outbox", api.outbox),
        ("GET", "/balance", api.balance),
        ("GET", "/key", api.key),
        ("GET", "/metrics", api.metrics),
    ):
        router.add(method, path, handler)
    return router


def metrics_router(parts: Parts) -> Router:
    """The separate Prometheus endpoint (``metrics.listen``): ``GET /metrics`` only."""
    router = Router()
    router.add("GET", "/metrics", _Api(parts).metrics)
    return router


class _Api:
    def __init__(self, parts: Parts) -> None:
        self.p = parts
        self.me = parts.key.public_key

    # helpers ----------------------------------------------------------------------------

    def _role(self) -> Role:
        return self.p.queries.role(self.me)

    def _require_admin(self, what: str) -> None:
        role = self._role()
        if role is not Role.ADMIN:
            raise HttpError(
                403,
                f"{what} needs the community admin key; this node's key "
                f"{self.me.hex()[:16]}… has role {role.value}",
            )

    def _submit(self, kind: str, body: dict[str, Any]) -> Response:
        try:
            tx_hash = self.p.signer.submit(kind, body, ref=f"api/{kind}")
        except TxRejected as exc:
            status = 400 if exc.reason in _CLIENT_REASONS else 409
            if exc.reason is Reason.NOT_PERMITTED:
                status = 403
            return Response.json({"error": exc.message, "reason": exc.reason.value}, status)
        self.p.submitter.wake.set()
        return Response.json({"submitted": kind, "tx_hash": tx_hash.hex()}, 202)

    def _denied(self, exc: AccessDenied) -> HttpError:
        return HttpError(403, f"{exc} (this node's role: {self._role().value})")

    def _period(self, request: Request) -> tuple[int, int]:
        period_id = request.query.get("period")
        if not period_id:
            raise HttpError(400, "query parameter period= is required")
        rec = self.p.queries.periods().get(period_id)
        if rec is None:
            raise HttpError(404, f"no market period {period_id!r}")
        return int(rec["start_ms"]), int(rec["end_ms"])

    # reads ------------------------------------------------------------------------------

    async def status(self, request: Request) -> Response:
        return Response.json(snapshot(self.p))

    async def meters(self, request: Request) -> Response:
        try:
            if self._role() is Role.ADMIN:
                return Response.json({"meters": self.p.queries.meter_accounts(self.me)})
            return Response.json({"meters": self.p.queries.meter_ids(self.me)})
        except AccessDenied as exc:
            raise self._denied(exc) from exc

    async def params(self, request: Request) -> Response:
        periods = self.p.queries.periods()
        period_id = request.query.get("period")
        if period_id is None:
            return Response.json({"periods": periods})
        if period_id not in periods:
            raise HttpError(404, f"no market period {period_id!r}")
        return Response.json({"period_id": period_id, **periods[period_id]})

    async def measure(self, request: Request) -> Response:
        meter_id = request.query.get("meter") or self.p.config.meter.meter_id
        if not meter_id:
            raise HttpError(400, "query parameter meter= is required")
        if "slot" in request.query:
            start = int_param(request, "slot")
            end = start + state.SLOT_MS
        elif "period" in request.query:
            start, end = self._period(request)
        else:
            start, end = int_param(request, "from"), int_param(request, "to")
        try:
            rows = self.p.queries.measurements(self.me, meter_id, start, end)
        except AccessDenied as exc:
            raise self._denied(exc) from exc
        keys = ("slot_start_ms", "import_wh", "export_wh", "quality")
        return Response.json(
            {"meter_id": meter_id, "slots": [dict(zip(keys, r, strict=True)) for r in rows]}
        )

    async def totals(self, request: Request) -> Response:
        if "period" in request.query:
            start, end = self._period(request)
        else:
            start, end = int_param(request, "from"), int_param(request, "to")
        try:
            rows = self.p.queries.totals(self.me, start, end)
        except AccessDenied as exc:
            raise self._denied(exc) from exc
        keys = ("slot_start_ms", "import_wh", "export_wh", "meters")
        return Response.json({"slots": [dict(zip(keys, r, strict=True)) for r in rows]})

    async def outbox(self, request: Request) -> Response:
        limit = int_param(request, "limit", 100)
        pending = self.p.outbox.pending(limit)
        return Response.json(
            {
                "depth": self.p.outbox.depth(),
                "pending": [outbox_record(r) for r in pending],
                "rejected": [
                    {**outbox_record(r), "reason": why} for r, why in self.p.outbox.rejected()
                ],
                "inflight": len(self.p.signer.inflight),
            }
        )

    async def balance(self, request: Request) -> Response:
        account = state.account_id(self.me)
        out: dict[str, Any] = {"account": account, "balance_uect": balance_of(self.p)}
        try:
            out["community_uect"] = self.p.queries.balance(self.me, state.COMMUNITY)
            out["grid_uect"] = self.p.queries.balance(self.me, state.GRID)
            settled = {}
            for pid, rec in sorted(self.p.queries.periods().items()):
                if rec["solved"]:
                    settled[pid] = self.p.queries.settlement(self.me, pid, account)
            out["settlements_uect"] = settled
        except AccessDenied:
            pass  # a key with no role sees only its own balance, which is above
        return Response.json(out)

    async def key(self, request: Request) -> Response:
        return Response.json({"public_key": self.me.hex(), "role": self._role().value})

    async def metrics(self, request: Request) -> Response:
        return Response(200, self.p.metrics.render(), CONTENT_TYPE)

    # writes (Table 2) -----------------------------------------------------------------------

    async def add_meter(self, request: Request) -> Response:
        self._require_admin("adding a meter (addMeterFromList)")
        body = body_fields(request, ("meter_id", "account"))
        try:
            account = bytes.fromhex(str(body["account"]))
        except ValueError as exc:
            raise HttpError(400, "account must be the owner's public key in hex") from exc
        return self._submit("AddMeter", {"meter_id": str(body["meter_id"]), "account": account})

    async def remove_meter(self, request: Request) -> Response:
        self._require_admin("removing a meter (removeMeterFromList)")
        meter_id = request.query.get("meter") or body_fields(request, ("meter_id",))["meter_id"]
        return self._submit("RemoveMeter", {"meter_id": str(meter_id)})

    async def set_params(self, request: Request) -> Response:
        self._require_admin("setting market parameters (setMarketParameters)")
        body = body_fields(request, ("period_id", "start_ms", "end_ms", "params"))
        return self._submit("SetMarketParameters", body)

    async def set_measure(self, request: Request) -> Response:
        body = body_fields(request, ("meter_id", "slot_start_ms", "import_wh", "export_wh"))
        body.setdefault("quality", 0)
        with self.p.queries.store.state_reader() as base:
            owner = state.meter_owner(state.Overlay(base), str(body["meter_id"]))
        if owner is not None and owner != self.me:
            # SetMeasure is signed by the meter's owner only (ledger/apps/amm.py), admin or not.
            raise HttpError(403, f"meter {body['meter_id']!r} is not this node's meter")
        return self._submit("SetMeasure", body)

    async def solve(self, request: Request) -> Response:
        body = body_fields(request, ("period_id",))
        return self._submit("SolveMarkets", {"period_id": str(body["period_id"])})


def body_fields(request: Request, names: tuple[str, ...]) -> dict[str, Any]:
    """The JSON object body of ``request``; 400 naming the fields it misses."""
    body = request.json()
    if not isinstance(body, dict):
        raise HttpError(400, "body must be a JSON object")
    missing = [n for n in names if n not in body]
    if missing:
        raise HttpError(400, f"body misses field(s): {', '.join(missing)}")
    return body


def int_param(request: Request, name: str, default: int | None = None) -> int:
    """Integer query parameter ``name`` (``default`` when absent); 400 when missing or not an
    integer."""
    value = request.query.get(name)
    if value is None:
        if default is not None:
            return default
        raise HttpError(400, f"query parameter {name}= is required")
    try:
        return int(value)
    except ValueError as exc:
        raise HttpError(400, f"query parameter {name}={value!r} must be an integer") from exc


def outbox_record(r: Any) -> dict[str, Any]:
    """An outbox record as ``GET /outbox`` shows it."""
    return {
        "meter_id": r.meter_id,
        "slot_start_s": r.slot_start_s,
        "import_wh": r.import_wh,
        "export_wh": r.export_wh,
        "quality": list(r.quality),
        "created_s": r.created_s,
    }
