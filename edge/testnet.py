"""A local testnet: keys, one genesis and one ``lemd.toml`` per node (like ``cometbft testnet``).

Spec: docs/spec/testnet.md. ``lemctl testnet init`` and the community demo (edge/demo.py) call
:func:`init_testnet`. The folder it writes::

    DIR/genesis.json          the chain's genesis (ledger/genesis.py JSON)
    DIR/testnet.json          manifest: nodes, roles, meters, public keys, ports, clock
    DIR/prometheus-targets.json  Prometheus file_sd targets (labels node, role) for Grafana
    DIR/admin/admin.key       the community operator's key (admin; solves, reads all)
    DIR/governance/gov-K.key  the k-of-n governance keys
    DIR/nodeK/lemd.toml       node K's config (relative paths: the folder can move)
    DIR/nodeK/node.key        node K's ed25519 key (0600)

With ``privacy = "pseudonymous"`` (docs/spec/privacy.md, docs/spec/testnet.md §1) the genesis
lists pseudonyms, not meter ids, and also::

    DIR/admin/identity/       the admin's encrypted identity store (pseudonym → serial → member)
    DIR/nodeK/data/admission.json  node K's admission: its pseudonym and member key (0600)

Node K runs the K-th meter of the Lugaggia pilot (meters/sim/community.py); the first N nodes
are validators (equal power), the others members. With ``deterministic_keys`` (the default)
every key is derived from the seed and the chain id, so the same command gives byte-identical
files: this is for demos and tests only, since anyone who knows the seed knows the keys.
"""

from __future__ import annotations

import math
import os
import random
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edge.privacy import ADMISSION_FILE, Admission, IdentityStore
from edge.testnet_manifest import (
    MANIFEST,
    Manifest,
    NodeEntry,
    TestnetError,
    iso_utc,
    load_manifest,
    parse_time,
    prometheus_targets,
    save_manifest,
    set_anchor,
    toml_string,
)
from ledger import privacy
from ledger.genesis import Genesis, Period
from ledger.keys import SigningKey, sha256
from meters.sim.community import pilot_community

__all__ = [
    "DEFAULT_PARAMS",
    "DEFAULT_START",
    "Manifest",
    "NodeEntry",
    "TestnetError",
    "TestnetPlan",
    "init_testnet",
    "load_manifest",
    "set_anchor",
]

DEFAULT_START = "2026-05-15T00:00:00+00:00"
"""Simulated start of a generated testnet: a fixed day, so the output depends only on the seed."""

DEFAULT_PARAMS = {
    "p_buy_bau": "0.27",
    "p_sell_bau": "0.08",
    "p_buy_lem": "0.22",
    "p_sell_lem": "0.12",
    "beta": "0.0005",
}
"""Market parameters of every generated period [ECT/kWh; beta ECT/kWh²] (Swiss tariffs 2025)."""

DAY_MS = 86_400_000
GOVERNANCE_KEYS = 3
GOVERNANCE_THRESHOLD = 2
PILOT_MEMBERS = 19
SOLVE_GRACE_REAL_S = 15
"""Real seconds between a period's end and its settlement, whatever the speed: the last slot's
record must be committed by then (it is refused once the period is solved)."""
CLOCK_SKEW_REAL_S = 5
"""Real seconds of clock disagreement between nodes the chain tolerates (slot_in_future)."""


@dataclass(frozen=True)
class TestnetPlan:
    """What ``lemctl testnet init`` was asked for.

    Attributes:
        validators: N, the first N nodes validate (1 <= N <= members).
        members: M, the number of nodes (each with one simulated meter).
        out_dir: DIR, created if missing; must not hold a testnet already.
        broker: MQTT broker URL every node uses.
        speed: simulated seconds per real second.
        chain_id: the chain's name.
        seed: selects the pilot community's meters and (unless random keys) the keys.
        start: simulated time at the anchor (ISO 8601); "now" = the real clock (speed must be 1).
            The first market period begins at the first period boundary at or after it.
        anchor: real UTC time at which simulated time equals ``start`` (ISO 8601), "" = each
            node's own start-up (fine only at speed 1).
        days: market periods cover this many days from the start day.
        period_hours: length of each market period [h]; divides 24 (24 = daily periods).
        base_port: node K's API listens on base_port + 2K, its metrics on base_port + 2K + 1.
        poll_interval_s: meter poll interval [real s]; 0 = automatic: 5 s at real time,
            shorter when accelerated (at most 5 simulated minutes per poll, at least 0.5 s).
        mqtt_version: 5, or 4 (MQTT 3.1.1) for a broker without MQTT 5 such as amqtt.
        deterministic_keys: derive keys from the seed (demo only) instead of os.urandom.
        params: market parameters of every period.
        privacy: "open" (meter ids on the ledger) or "pseudonymous" (docs/spec/privacy.md §1).
    """

    __test__ = False  # not a pytest test class despite the name

    validators: int
    members: int
    out_dir: Path
    broker: str = "mqtt://127.0.0.1:1883"
    speed: float = 1.0
    chain_id: str = "lugaggia-testnet"
    seed: int = 2025
    start: str = DEFAULT_START
    anchor: str = ""
    days: int = 1
    period_hours: int = 24
    base_port: int = 26600
    poll_interval_s: float = 0.0
    mqtt_version: int = 5
    deterministic_keys: bool = True
    params: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PARAMS))
    privacy: str = "open"

    def check(self) -> None:
        """Raise :class:`TestnetError` naming the first impossible option."""
        if self.privacy not in ("open", "pseudonymous"):
            raise TestnetError(f"--privacy {self.privacy!r}: must be open or pseudonymous")
        if not 1 <= self.members <= 999:
            raise TestnetError(f"--members {self.members}: must be 1..999")
        if not 1 <= self.validators <= self.members:
            raise TestnetError(f"--validators {self.validators}: must be 1..--members")
        if not 0.001 <= self.speed <= 100_000:
            raise TestnetError(f"--speed {self.speed}: must be between 0.001 and 100000")
        if self.start == "now" and self.speed != 1.0:
            raise TestnetError("--start now runs on the real clock: --speed must be 1")
        if self.poll_interval_s and not 0.5 <= self.poll_interval_s <= 60:
            raise TestnetError(f"--poll-interval {self.poll_interval_s}: must be 0.5..60")
        if self.mqtt_version not in (4, 5):
            raise TestnetError(f"--mqtt-version {self.mqtt_version}: must be 5 or 4 (3.1.1)")
        if not 1 <= self.days <= 366:
            raise TestnetError(f"--days {self.days}: must be 1..366")
        if self.period_hours not in (1, 2, 3, 4, 6, 8, 12, 24):
            raise TestnetError(f"--period-hours {self.period_hours}: must divide 24")
        if not 1024 <= self.base_port <= 65535 - 2 * self.members:
            raise TestnetError(f"--base-port {self.base_port}: ports out of range")
        if not self.broker.startswith(("mqtt://", "mqtts://")):
            raise TestnetError(f"--broker {self.broker!r}: must be mqtt://host:port")
        if not self.chain_id or "/" in self.chain_id or len(self.chain_id) > 64:
            raise TestnetError(f"--chain-id {self.chain_id!r}: 1-64 characters, no '/'")
        for name, value in (("--start", self.start), ("--anchor", self.anchor)):
            if value and value != "now" and parse_time(value) is None:
                raise TestnetError(f"{name} {value!r}: not an ISO 8601 time with offset")

    @property
    def start_time(self) -> datetime | None:
        """The simulated start (UTC), None for real time."""
        return None if self.start == "now" else parse_time(self.start)

    @property
    def poll_s(self) -> float:
        """The meter poll interval written to the configs [real s]."""
        if self.poll_interval_s:
            return self.poll_interval_s
        return max(0.5, min(5.0, round(300 / self.speed, 1)))

    @property
    def grace_s(self) -> int:
        """Wait after a period's end before SolveMarkets [simulated s], a whole minute."""
        return max(900, 60 * math.ceil(self.speed * SOLVE_GRACE_REAL_S / 60))

    @property
    def clock_skew_ms(self) -> int:
        """Tolerated clock disagreement [simulated ms]."""
        return max(60_000, int(self.speed * CLOCK_SKEW_REAL_S * 1000))


def derive_key(plan: TestnetPlan, label: str) -> SigningKey:
    """The key ``label`` of this testnet: derived from seed and chain id, or random."""
    if not plan.deterministic_keys:
        return SigningKey.generate()
    return SigningKey(
        sha256(f"lem-edge/testnet-demo-key/{plan.chain_id}/{plan.seed}/{label}".encode())
    )


def member_meters(plan: TestnetPlan) -> list[tuple[str, dict[str, Any]]]:
    """(meter id, ``meter.options``) of each node: the pilot's 19, then extra seeded houses."""
    out: list[tuple[str, dict[str, Any]]] = [
        (spec.meter_id, {"community_seed": plan.seed})
        for spec in pilot_community(plan.seed)[: plan.members]
    ]
    rng = random.Random(plan.seed * 1_000_003 + 19)
    for k in range(PILOT_MEMBERS, plan.members):
        options = {
            "annual_kwh": rng.randint(2_500, 6_500),
            "load_profile": "h0",
            "seed": rng.getrandbits(32),
            "initial_import_wh": rng.randint(1_000, 40_000) * 1000,
        }
        out.append((f"sim-h{k + 1:03d}", options))
    return out


def market_periods(plan: TestnetPlan) -> tuple[Period, ...]:
    """``days`` × 24 / ``period_hours`` consecutive periods from the first period boundary (UTC
    midnight + a multiple of ``period_hours``) at or after the start, each with
    :attr:`TestnetPlan.params`. Ids: the date, or date and hour ("…T06")."""
    start = _start_or_now(plan)
    day0 = start.replace(hour=0, minute=0, second=0, microsecond=0)
    length = timedelta(hours=plan.period_hours)
    first = -((day0 - start) // length)  # ceil((start - day0) / length)
    periods = []
    for n in range(first, first + plan.days * 24 // plan.period_hours):
        at = day0 + n * length
        start_ms = _ms(at)
        pid = at.date().isoformat() if plan.period_hours == 24 else at.strftime("%Y-%m-%dT%H")
        periods.append(Period(pid, start_ms, start_ms + _ms_of(length), dict(plan.params)))
    return tuple(periods)


def _start_or_now(plan: TestnetPlan) -> datetime:
    return (plan.start_time or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)


def _ms_of(delta: timedelta) -> int:
    return delta // timedelta(milliseconds=1)


def derive_secret(plan: TestnetPlan, label: str, size: int = 32) -> bytes:
    """A secret ``label`` of this testnet: derived like :func:`derive_key`, or random."""
    if not plan.deterministic_keys:
        return os.urandom(size)
    return sha256(f"lem-edge/testnet-demo-secret/{plan.chain_id}/{plan.seed}/{label}".encode())[
        :size
    ]


def admit_members(
    plan: TestnetPlan, meters: list[str], node_keys: list[SigningKey]
) -> list[Admission]:
    """Pseudonymous testnet: create the admin's identity store under ``DIR/admin/identity`` and
    admit each node's meter (the simulated meter id plays the serial); returns the admissions,
    in node order (docs/spec/privacy.md §2, §5)."""
    store = IdentityStore.create(
        plan.out_dir / "admin" / "identity", plan.chain_id, derive_secret(plan, "pseudonym")
    )
    return [
        store.admit(
            f"member-{k}",
            serial,
            key.public_key,
            now_ms=_ms(_start_or_now(plan)),
            salt=derive_secret(plan, f"salt-{k}", privacy.SALT_BYTES),
        )
        for k, (serial, key) in enumerate(zip(meters, node_keys, strict=True))
    ]


def build_genesis(
    plan: TestnetPlan,
    node_keys: list[SigningKey],
    admin: SigningKey,
    governors: list[SigningKey],
    meters: list[str],
) -> Genesis:
    """The genesis of :func:`init_testnet` (validators with power 10, meters → node accounts)."""
    periods = market_periods(plan)
    return Genesis(
        chain_id=plan.chain_id,
        # A day before the start: nodes started a little before the anchor see simulated
        # times before the start, and every block time must follow the genesis.
        genesis_time_ms=_ms(_start_or_now(plan)) - DAY_MS,
        validators=tuple((k.public_key, 10) for k in node_keys[: plan.validators]),
        admins=(admin.public_key,),
        governance_keys=tuple(g.public_key for g in governors),
        governance_threshold=GOVERNANCE_THRESHOLD,
        meters={m: k.public_key for m, k in zip(meters, node_keys, strict=True)},
        periods=periods,
        clock_skew_ms=plan.clock_skew_ms,
        settle_grace_ms=plan.grace_s * 1000,
        privacy=plan.privacy,
    )


def init_testnet(plan: TestnetPlan, *, check_ports: bool = True) -> Manifest:
    """Write the testnet folder of ``plan`` and return its manifest.

    Raises:
        TestnetError: a bad option, a folder that already holds a testnet, a port in use.
    """
    plan.check()
    root = plan.out_dir
    if (root / MANIFEST).exists() or (root / "genesis.json").exists():
        raise TestnetError(f"{root}: already holds a testnet (remove it or pick another --dir)")
    if check_ports:
        busy = [
            p for p in range(plan.base_port, plan.base_port + 2 * plan.members) if not port_free(p)
        ]
        if busy:
            raise TestnetError(f"--base-port {plan.base_port}: port {busy[0]} is in use")
    meters = member_meters(plan)
    node_keys = [derive_key(plan, f"node{k}") for k in range(plan.members)]
    admin = derive_key(plan, "admin")
    governors = [derive_key(plan, f"gov-{k + 1}") for k in range(GOVERNANCE_KEYS)]
    serials = [m for m, _ in meters]
    admissions = admit_members(plan, serials, node_keys) if plan.privacy != "open" else []
    ledger_ids = [a.pseudonym for a in admissions] or serials
    genesis = build_genesis(plan, node_keys, admin, governors, ledger_ids)
    root.mkdir(parents=True, exist_ok=True)
    (root / "genesis.json").write_text(genesis.to_json() + "\n")
    _save_key(admin, root / "admin" / "admin.key")
    for k, gov in enumerate(governors):
        _save_key(gov, root / "governance" / f"gov-{k + 1}.key")
    nodes = []
    for k, ((serial, options), key) in enumerate(zip(meters, node_keys, strict=True)):
        node = NodeEntry(
            index=k,
            # Pseudonymous: node names (MQTT client ids, topics, metrics labels) carry no serial.
            name=serial if not admissions else f"node{k}",
            dir=f"node{k}",
            role="validator" if k < plan.validators else "member",
            meter_id=ledger_ids[k],
            public_key=key.public_key.hex(),
            api=f"127.0.0.1:{plan.base_port + 2 * k}",
            metrics=f"127.0.0.1:{plan.base_port + 2 * k + 1}",
        )
        _save_key(key, root / node.dir / "node.key")
        (root / node.dir / "lemd.toml").write_text(node_config(plan, node, options, serial))
        if admissions:
            (root / node.dir / "data").mkdir(mode=0o700, exist_ok=True)
            admissions[k].save(root / node.dir / "data" / ADMISSION_FILE)
        nodes.append(node)
    manifest = Manifest(
        root=root,
        chain_id=plan.chain_id,
        seed=plan.seed,
        broker=plan.broker,
        speed=plan.speed,
        start="" if plan.start == "now" else iso_utc(plan.start_time),
        anchor=iso_utc(parse_time(plan.anchor)) if plan.anchor else "",
        grace_s=plan.grace_s,
        periods=tuple(
            {
                "period_id": p.period_id,
                "start_ms": p.start_ms,
                "end_ms": p.end_ms,
                "params": p.params,
            }
            for p in genesis.periods
        ),
        admin_public_key=admin.public_key.hex(),
        nodes=tuple(nodes),
        privacy=plan.privacy,
    )
    save_manifest(manifest)
    (root / "prometheus-targets.json").write_text(prometheus_targets(manifest))
    return manifest


def node_config(
    plan: TestnetPlan, node: NodeEntry, meter_options: dict[str, Any], serial: str = ""
) -> str:
    """The ``lemd.toml`` text of ``node`` (edge/config.py schema; paths relative to it).

    ``serial``: the simulated meter's own id (default: the node's ledger meter id). On a
    pseudonymous testnet it differs from the ledger's: lemd hashes each reading's id with the
    admission in ``data/admission.json`` and refuses a meter that does not match."""
    lines = [
        f"# node {node.index} of testnet {plan.chain_id!r}, generated by `lemctl testnet init`"
        f" (seed {plan.seed}).",
    ]
    if plan.deterministic_keys:
        lines.append("# Its keys are derived from the seed: a demo/test network, never production.")
    clock = [f"speed = {float(plan.speed)!r}"]
    if plan.start != "now":
        clock.append(f"start = {toml_string(iso_utc(plan.start_time))}")
    if plan.anchor:
        clock.append(f"anchor = {toml_string(iso_utc(parse_time(plan.anchor)))}")
    lines += [
        "",
        "[node]",
        f"name = {toml_string(node.name)}",
        'data_dir = "data"',
        f"role = {toml_string(node.role)}",
        'key_file = "node.key"',
        'genesis_file = "../genesis.json"',
        "",
        "[meter]",
        'driver = "sim"',
        f"poll_interval_s = {plan.poll_s!r}",
        f"meter_id = {toml_string(serial or node.meter_id)}",
        f"options = {_toml_inline(meter_options)}",
        "",
        "[ledger]",
        f"chain_id = {toml_string(plan.chain_id)}",
        f"brokers = [{toml_string(plan.broker)}]",
        *([f"mqtt_version = {plan.mqtt_version}"] if plan.mqtt_version != 5 else []),
        "",
        "[market]",
        f"solve_grace_s = {plan.grace_s}",
        "",
        "[api]",
        f"listen = {toml_string(node.api)}",
        "",
        "[metrics]",
        f"listen = {toml_string(node.metrics)}",
        "",
        "[log]",
        'level = "info"',
        "",
        "[clock]",
        *clock,
    ]
    return "\n".join(lines) + "\n"


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if ``host:port`` can be bound now (it may be taken a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port_block(count: int, first: int = 20000, last: int = 60000) -> int:
    """The lowest base port from ``first`` with ``count`` consecutive free ports."""
    base = first
    while base + count <= last:
        busy = next((p for p in range(base, base + count) if not port_free(p)), None)
        if busy is None:
            return base
        base = busy + 1
    raise TestnetError(f"no block of {count} free ports between {first} and {last}")


def _save_key(key: SigningKey, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    key.save(path)


def _ms(value: datetime) -> int:
    return _ms_of(value - datetime(1970, 1, 1, tzinfo=UTC))


def _toml_inline(options: dict[str, Any]) -> str:
    items = []
    for name, value in options.items():
        items.append(f"{name} = {toml_string(value) if isinstance(value, str) else value}")
    return "{ " + ", ".join(items) + " }"
