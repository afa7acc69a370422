"""A new node joins its community: the join state and the join task inside lemd.

Spec: docs/spec/join.md §4. Phases, in order (each shown by ``lemctl member status``, by
``GET /status`` under ``join`` and by the metric ``lem_join_phase{phase=...}`` = 1):

- ``joining``: first boot: node key, meter found on a serial port, its id read (edge/provision.py,
  edge/meter_discovery.py);
  then lemd connects to the community's broker.
- ``syncing``: connected; the node follows the chain until its height stops moving.
- ``waiting_for_approval``: the signed ``JoinRequest`` is on the ledger; an admin (or the
  governance quorum) has to approve, unless the meter id is certified. On a pseudonymous chain
  the request carries the serial sealed to the admin, and the admission comes back sealed to
  this node (edge/join_seal.py, docs/spec/join.md §6).
- ``measuring``: the ledger lists this node's key as the meter's owner: SetMeasure txs pass.

Failures keep the phase and add an ``error`` with a clear text (broker unreachable, certificate
wrong, meter not found, meter id not certified); the next step clears it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from edge.join_ledger import JoinLedger, LocalLedger, NodeView
from edge.join_seal import JoinSealError, open_admission, seal_request
from edge.privacy import ADMISSION_FILE, Admission, PrivacyStoreError
from ledger import privacy
from ledger.errors import Reason, TxRejected
from ledger.keys import SigningKey

log = logging.getLogger("lemd.join")

PHASES = ("joining", "syncing", "waiting_for_approval", "measuring", "failed")
STATE_FILE = "join.json"


@dataclass
class JoinState:
    """The join progress, saved as ``<data_dir>/join.json`` (written atomically)."""

    phase: str = "joining"
    detail: str = ""
    error: str = ""
    public_key: str = ""
    meter_id: str = ""
    identification: str = ""
    serial: str = ""
    """Pseudonymous chains: the meter's serial (meter_id is then the pseudonym, once known).
    Kept in this node's own file only: never in status, logs or a cleartext tx."""
    chain_id: str = ""
    name: str = ""
    request_height: int | None = None
    admitted_height: int | None = None
    updated_s: float = 0.0
    history: list[list[Any]] = field(default_factory=list)

    def step(self, phase: str, detail: str) -> bool:
        """Enter ``phase`` (clears the error); True when something changed."""
        changed = (phase, detail, "") != (self.phase, self.detail, self.error)
        if phase != self.phase:
            self.history = [*self.history[-19:], [phase, int(time.time())]]
        self.phase, self.detail, self.error = phase, detail, ""
        return changed

    def fail(self, what: str, message: str, *, phase: str = "failed") -> bool:
        """Stay in (or enter) ``phase`` with ``error`` = "<what>: <message>"."""
        error = f"{what}: {message}"
        changed = (phase, error) != (self.phase, self.error)
        self.phase, self.error = phase, error
        return changed

    def save(self, data_dir: Path) -> None:
        self.updated_s = time.time()
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / STATE_FILE
        tmp = path.with_name(STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1, sort_keys=True))
        os.replace(tmp, path)

    @classmethod
    def load(cls, data_dir: Path) -> JoinState:
        """The saved state, or a fresh one when there is none (a bad file is replaced)."""
        try:
            raw = json.loads((data_dir / STATE_FILE).read_text())
            return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError):
            return cls()


# the join task inside lemd ---------------------------------------------------------------


class Submit(Protocol):
    """edge.submitter.TxSigner.submit."""

    def __call__(self, kind: str, body: Any, ref: str = "") -> bytes: ...


async def check_broker(url: str, ca_file: Path | None, timeout_s: float = 5.0) -> str:
    """Open (and close) a TCP/TLS connection to ``url``: "" if it works, else why not.

    The text tells a technician which fix applies: "broker unreachable: ..." (network, APN,
    address, port) or "certificate wrong: ..." (the CA file does not verify the broker).
    """
    import ssl
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    tls = parts.scheme == "mqtts"
    port = parts.port or (8883 if tls else 1883)
    context = None
    if tls:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(parts.hostname, port, ssl=context)
    except ssl.SSLError as exc:
        return f"certificate wrong: {url}: {exc.reason or exc}"
    except (OSError, TimeoutError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "no answer"
        return f"broker unreachable: {url}: {why}"
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(timeout_s):
            await writer.wait_closed()
    return ""


class Joiner:
    """Walks the phases after provisioning; submits the JoinRequest once synced.

    Args:
        data_dir: where ``join.json`` lives.
        node: the running ledger node (its local state is read), or a :class:`JoinLedger`
            (a light node's proven reads).
        public_key: this node's key.
        submit: signs and submits a tx (``TxSigner.submit``).
        meter_id, identification, name: from provisioning (the JoinRequest body).
        sealed: a pseudonymous chain (docs/spec/join.md §6): ``meter_id`` is the admitted
            pseudonym or ""; the serial, identification and name go sealed to the admin and
            the admission comes back sealed to ``key`` (written to ``admission.json``).
        key: this node's signing key (opens the sealed admission; pseudonymous chains only).
        serial: the meter's serial (pseudonymous chains only; never sent in clear).
        chain_id: the chain (bound into the sealed boxes).
        brokers, ca_file: checked directly while no peer is heard, for a clear error text.
        registry: a prometheus registry for ``lem_join_phase``, or None.
        tick_s: seconds between checks [s].
        settle_ticks: checks with an unchanged height that count as synced (a quiet chain).
        now_ms, sync_lag_ms: or synced when the last block is at most ``sync_lag_ms`` older than
            ``now_ms()`` (a busy chain) [ms, chain time]; two 15-min slots by default.
        repeat_s: a waiting request is sent again this often [s] (a certificate added later
            admits at the next request; docs/spec/join.md §2).
    """

    def __init__(
        self,
        data_dir: Path,
        node: NodeView | JoinLedger,
        public_key: bytes,
        submit: Submit,
        *,
        meter_id: str,
        identification: str = "",
        name: str = "",
        sealed: bool = False,
        key: SigningKey | None = None,
        serial: str = "",
        chain_id: str = "",
        brokers: Sequence[str] = (),
        ca_file: Path | None = None,
        registry: Any = None,
        tick_s: float = 1.0,
        settle_ticks: int = 3,
        repeat_s: float = 900.0,
        monotonic: Callable[[], float] = time.monotonic,
        now_ms: Callable[[], int] | None = None,
        sync_lag_ms: int = 1_800_000,
    ) -> None:
        self.data_dir, self.public_key, self._submit = data_dir, public_key, submit
        # A full node's view reads its local state; a light node passes its JoinLedger.
        self.ledger: JoinLedger = (
            LocalLedger(cast(NodeView, node), public_key) if hasattr(node, "app") else node
        )
        self.meter_id, self.identification, self.name = meter_id, identification, name
        self.sealed, self.key, self.serial, self.chain_id = sealed, key, serial, chain_id
        if sealed:
            admission = self._admission()
            self.meter_id = admission.pseudonym if admission is not None else ""
        self.brokers, self.ca_file = tuple(brokers), ca_file
        self._link_error = ""
        self.tick_s, self.settle_ticks, self.repeat_s = tick_s, settle_ticks, repeat_s
        self._monotonic = monotonic
        self._now_ms, self.sync_lag_ms = now_ms, sync_lag_ms
        self.state = JoinState.load(data_dir)
        self.state.public_key, self.state.meter_id = public_key.hex(), self.meter_id
        self._gauge = _phase_gauge(registry)
        self._heights: list[int] = []
        self._sent_at: float | None = None
        self._refused: tuple[str, str] | None = None
        self.submitted = 0

    @property
    def admitted(self) -> bool:
        owns = self.ledger.owns(self.meter_id) if self.meter_id else None
        if owns is not None:
            return owns
        record = self.ledger.member()
        return self.sealed and record is not None and self._take_admission(record)

    def body(self) -> dict[str, Any]:
        """The JoinRequest body: in clear on an open chain; on a pseudonymous chain the
        pseudonym (or "") and a box only the admin opens (docs/spec/join.md §6)."""
        if not self.sealed:
            return {"meter_id": self.meter_id, "identification": self.identification,
                    "name": self.name}  # fmt: skip
        body: dict[str, Any] = {"meter_id": self.meter_id, "identification": "", "name": ""}
        if not self.meter_id:
            admins = self.ledger.admins()
            if not admins:
                raise TxRejected(Reason.NOT_PERMITTED, "no admin on the ledger to seal to")
            body["sealed"] = seal_request(
                admins[0], self.chain_id, self.public_key, self.serial, self.identification,
                self.name,
            )  # fmt: skip
        return body

    def _admission(self) -> Admission | None:
        try:
            admission = Admission.load(self.data_dir / ADMISSION_FILE)
        except PrivacyStoreError:
            return None
        return admission if admission.chain_id == self.chain_id else None

    def _take_admission(self, record: dict[str, Any]) -> bool:
        """Open the admission sealed to this node, save ``admission.json``; True if done."""
        sealed = record.get("admission")
        if self.key is None or not isinstance(sealed, bytes):
            return False
        try:
            admission = open_admission(self.key, sealed, self.chain_id)
        except JoinSealError as exc:
            self.state.fail("admission", str(exc), phase="waiting_for_approval")
            return False
        if self._admission() is None:
            with contextlib.suppress(FileExistsError):  # a stale file of another chain stays
                admission.save(self.data_dir / ADMISSION_FILE)
        self.meter_id = admission.pseudonym
        self.state.meter_id = admission.pseudonym
        return True

    async def run(self) -> None:
        """Check every ``tick_s`` until cancelled; stays in ``measuring`` once admitted."""
        while True:
            if self.state.phase == "joining" and self.brokers and self.ledger.peers() == 0:
                self._link_error = await self._check_link()
            if self.ledger.peers() > 0:
                await self.ledger.refresh(self.meter_id, self.state.phase == "measuring")
            self.step()
            await asyncio.sleep(self.tick_s)

    async def _check_link(self) -> str:
        errors = [await check_broker(url, self.ca_file) for url in self.brokers]
        return "" if "" in errors else "; ".join(errors)

    def step(self) -> None:
        """One check: decide the phase from the ledger and the link, act, publish it."""
        changed = self._decide()
        self._publish(changed)

    def _decide(self) -> bool:
        st, ledger = self.state, self.ledger
        height = ledger.height()
        if not ledger.ready():
            # A light node before its first proof round knows nothing yet: keep the saved
            # phase (a restarted member stays measuring; no JoinRequest from missing values).
            if self._link_error and ledger.peers() == 0:
                return st.fail("connecting", self._link_error, phase="joining")
            return False
        if self.admitted:
            if st.admitted_height is None:
                st.admitted_height = height
                log.info("admitted: measuring", extra={"height": height})
            return st.step("measuring", f"meter {self.meter_id} is ours on the ledger")
        if ledger.peers() == 0 and not ledger.alone():
            if self._link_error:
                return st.fail("connecting", self._link_error, phase="joining")
            return st.step("joining", "connecting to the community's broker; no peer heard yet")
        self._heights = [*self._heights[-self.settle_ticks :], height]
        pending = ledger.request()
        if pending is not None:
            st.request_height = pending["height"]
            self._maybe_repeat()
            what = f"meter id {self.meter_id} not certified" if self.meter_id else "sealed"
            return st.step(
                "waiting_for_approval",
                f"{what}: join request at height {pending['height']} waits for an admin "
                f"(lemctl member approve {self.public_key.hex()})",
            )
        if not self._synced():
            return st.step("syncing", f"following the chain at height {height}")
        return self._send()

    def _synced(self) -> bool:
        quiet = len(self._heights) > self.settle_ticks and len(set(self._heights)) == 1
        if quiet or self._now_ms is None:
            return quiet
        return self.ledger.last_block_time_ms() >= self._now_ms() - self.sync_lag_ms

    def _send(self) -> bool:
        now = self._monotonic()
        if self._sent_at is not None and now - self._sent_at < self.repeat_s:
            if self._refused is None and (late := self.ledger.refusal()):
                self._refused = ("join request refused", late)  # a light node learns it late
            if self._refused is not None:  # keep showing why until the next attempt
                return self.state.fail(*self._refused, phase="syncing")
            return self.state.step("syncing", "join request sent; waiting for it to be committed")
        self._sent_at = now
        try:
            self._submit("JoinRequest", self.body(), "join")
        except TxRejected as exc:
            self._refused = (_reject_text(exc), exc.message)
            return self.state.fail(*self._refused, phase="syncing")
        self._refused = None
        self.submitted += 1
        log.info("join request submitted", extra={"meter": self.meter_id or "(sealed)"})
        return self.state.step("syncing", "join request sent; waiting for it to be committed")

    def _maybe_repeat(self) -> None:
        now = self._monotonic()
        if self._sent_at is None:
            self._sent_at = now  # found on the ledger after a restart: count from now
        elif now - self._sent_at >= self.repeat_s:
            with contextlib.suppress(TxRejected):
                self._submit("JoinRequest", self.body(), "join")
                self.submitted += 1
            self._sent_at = now

    def _publish(self, changed: bool) -> None:
        if self._gauge is not None:
            for phase in PHASES:
                self._gauge.labels(phase=phase).set(1 if phase == self.state.phase else 0)
        if changed:
            self.state.save(self.data_dir)
            log.info(
                "join phase",
                extra={"phase": self.state.phase, "detail": self.state.detail,
                       "error": self.state.error},
            )  # fmt: skip


def _reject_text(exc: TxRejected) -> str:
    if exc.reason is Reason.METER_EXISTS:
        return "meter id already taken"
    if exc.reason is Reason.ALREADY_MEMBER:
        return "already a member"
    return f"join request refused ({exc.reason.value})"


def _phase_gauge(registry: Any) -> Any:
    if registry is None:
        return None
    from prometheus_client import Gauge

    return Gauge(
        "lem_join_phase", "1 for the node's current join phase", ["phase"], registry=registry
    )


def status(data_dir: Path) -> dict[str, Any] | None:
    """The saved join state as a dict (for ``GET /status`` and ``lemctl member status``); never
    the serial of a pseudonymous chain's meter (status answers get copied into logs)."""
    if not (data_dir / STATE_FILE).exists():
        return None
    value = asdict(JoinState.load(data_dir))
    del value["serial"]
    return value


def join_task(parts: Any) -> Joiner | None:
    """The join task for a running lemd (edge/daemon.py), or None for a node set up by hand.

    A node provisioned from a community file has ``<data_dir>/join.json`` (edge/provision.py);
    only such a node walks the join phases.
    """
    cfg = parts.config
    data_dir = cfg.node.data_dir
    if not (data_dir / STATE_FILE).exists():
        return None
    saved = JoinState.load(data_dir)
    genesis = parts.node.app.store.genesis
    return Joiner(
        data_dir,
        parts.node,
        parts.key.public_key,
        parts.signer.submit,
        meter_id=cfg.meter.meter_id or saved.meter_id,
        identification=saved.identification,
        name=cfg.node.name,
        sealed=genesis.privacy == privacy.Mode.PSEUDONYMOUS,
        key=parts.key,
        serial=saved.serial,
        chain_id=genesis.chain_id,
        brokers=cfg.ledger.brokers,
        ca_file=cfg.ledger.ca_file,
        registry=parts.metrics.registry,
        now_ms=parts.clock.now_ms,
    )
