"""lemd's configuration: TOML, every field validated at start, no silent defaults for errors.

Each section is a frozen dataclass; :func:`load_config` checks types, allowed values and unknown
keys (a typo is an error, not an ignored line) and raises :class:`ConfigError` naming the file, the
field and the value. Defaults are the documented ones in ``edge/lemd.example.toml``.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """An invalid configuration; the message names the file, the field and the value."""


@dataclass(frozen=True)
class NodeConfig:
    name: str
    data_dir: Path
    role: str = "member"  # "validator" or "member"
    key_file: Path | None = None  # default: <data_dir>/node.key
    genesis_file: Path | None = None

    def __post_init__(self) -> None:
        _choice("node.role", self.role, ("validator", "member"))
        _check(
            "node.name",
            self.name,
            self.name.isascii() and self.name.replace("-", "").replace("_", "").isalnum(),
            "letters, digits, '-' and '_' only",
        )


@dataclass(frozen=True)
class MeterConfig:
    driver: str = "sim"  # iec | p1 | modbus | sim
    port: str = ""  # serial device (iec, p1, modbus rtu) or host:port (modbus tcp)
    poll_interval_s: float = 5.0
    meter_id: str = ""  # expected id; a different meter on the port is an error
    options: dict[str, Any] = field(default_factory=dict)  # driver-specific settings

    def __post_init__(self) -> None:
        _choice("meter.driver", self.driver, ("iec", "p1", "modbus", "sim"))
        _check(
            "meter.poll_interval_s",
            self.poll_interval_s,
            0.5 <= self.poll_interval_s <= 60,
            "between 0.5 and 60",
        )
        if self.driver != "sim":
            _check("meter.port", self.port, bool(self.port), "required for this driver")


@dataclass(frozen=True)
class LedgerConfig:
    chain_id: str = ""
    brokers: tuple[str, ...] = ()
    username: str = ""
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    client_key_file: Path | None = None
    keepalive_s: int = 60
    resign_timeout_s: float = 30.0  # nothing of ours committed this long: re-sign from the ledger
    max_inflight: int = 32  # own txs signed but not yet committed
    # An empty block at least this often when no txs come (both ledger modes). Slow: the 4G
    # link pays for every block, and liveness never waits for it.
    block_heartbeat_s: float = 900.0
    mqtt_version: int = 5  # 5 = MQTT 5.0; 4 = MQTT 3.1.1 (brokers without 5.0, e.g. amqtt)
    # A non-validator: "light" (default) follows verified headers and proves its own state
    # (docs/spec/light.md); "full" replays every block, an audit/archive member (it needs
    # validator read rights on the broker, so it sees every member's SetMeasure). Validators
    # and a chain without brokers always run the full node.
    member_mode: str = "light"
    # On a chain with retention (genesis dispute_window_ms) this node removes the raw
    # SetMeasure txs of pruned days from its block store; true keeps them (an archive node that
    # can replay from genesis; docs/spec/privacy.md §3.1).
    keep_block_bodies: bool = False
    # At start, compact the ledger and consensus stores when pruning left >= 25 % (and >= 4 MiB)
    # of their files free: LMDB keeps freed pages' old bytes, so raw rows would stay readable in
    # the file (docs/spec/privacy.md §3.2).
    compact_on_start: bool = True

    def __post_init__(self) -> None:
        _choice("ledger.member_mode", self.member_mode, ("full", "light"))
        _check(
            "ledger.resign_timeout_s",
            self.resign_timeout_s,
            1 <= self.resign_timeout_s <= 3600,
            "between 1 and 3600",
        )
        _check("ledger.max_inflight", self.max_inflight, 1 <= self.max_inflight <= 1000, "1..1000")
        _check(
            "ledger.block_heartbeat_s",
            self.block_heartbeat_s,
            1 <= self.block_heartbeat_s <= 86400,
            "between 1 and 86400",
        )
        for url in self.brokers:
            _check(
                "ledger.brokers",
                url,
                url.startswith(("mqtt://", "mqtts://")),
                "URLs mqtt://host:port or mqtts://host:port",
            )
        _check("ledger.mqtt_version", self.mqtt_version, self.mqtt_version in (4, 5), "5 or 4")
        _check(
            "ledger.keepalive_s",
            self.keepalive_s,
            5 <= self.keepalive_s <= 3600,
            "between 5 and 3600",
        )


@dataclass(frozen=True)
class MarketConfig:
    solve_grace_s: int = 900  # wait after a period ends before submitting SolveMarkets

    def __post_init__(self) -> None:
        _check("market.solve_grace_s", self.solve_grace_s, self.solve_grace_s >= 0, ">= 0")


@dataclass(frozen=True)
class ClockConfig:
    """Simulated time for demos and tests: ``sim = start + speed * (wall - anchor)``.

    With ``speed = 1`` and no ``start`` the daemon runs on the host's UTC clock. Every node of
    an accelerated testnet gets the same ``start`` and ``anchor``, so their clocks agree.
    """

    speed: float = 1.0  # simulated seconds per real second
    start: str = ""  # simulated UTC time at ``anchor`` (ISO 8601 with offset); "" = real time
    anchor: str = ""  # real UTC wall time at which simulated time equals ``start``; "" = start-up

    def __post_init__(self) -> None:
        _check("clock.speed", self.speed, 0.001 <= self.speed <= 100_000, "between 0.001 and 1e5")
        for name in ("start", "anchor"):
            value = getattr(self, name)
            if value:
                _check(
                    f"clock.{name}", value, _parse_utc(value) is not None, "ISO 8601 with offset"
                )
        _check(
            "clock.anchor", self.anchor, not self.anchor or bool(self.start), "needs clock.start"
        )

    @property
    def accelerated(self) -> bool:
        return bool(self.start) or self.speed != 1.0


@dataclass(frozen=True)
class ApiConfig:
    listen: str = "127.0.0.1:8760"  # host:port, or unix:/path/to/socket

    def __post_init__(self) -> None:
        _check_listen("api.listen", self.listen, allow_unix=True)


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = "127.0.0.1:9760"  # empty string: no metrics endpoint

    def __post_init__(self) -> None:
        if self.listen:
            _check_listen("metrics.listen", self.listen, allow_unix=False)


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"

    def __post_init__(self) -> None:
        _choice("log.level", self.level, ("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class Config:
    node: NodeConfig
    meter: MeterConfig = field(default_factory=MeterConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    market: MarketConfig = field(default_factory=MarketConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    source: Path | None = None

    @property
    def key_file(self) -> Path:
        return self.node.key_file or self.node.data_dir / "node.key"


def load_config(path: Path) -> Config:
    """Read and validate ``path``.

    Relative paths in the file are taken relative to the file's folder, so a testnet folder can
    be moved as a whole.

    Raises:
        ConfigError: unreadable file, TOML syntax, unknown section or key, wrong type or value.
    """
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        config: Config = _build(Config, raw, "", base=path.parent, extra={"source": path})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config


def _build(
    cls: type, raw: dict[str, Any], prefix: str, *, base: Path, extra: dict[str, Any] | None = None
) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in (extra or {})}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(fields))})")
    values: dict[str, Any] = dict(extra or {})
    for name, spec in fields.items():
        dotted = f"{prefix}{name}"
        if name not in raw:
            no_default = (
                spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
            )
            if no_default:
                raise ConfigError(f"missing required key {dotted}")
            continue
        values[name] = _convert(hints[name], raw[name], dotted, base=base)
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{prefix.rstrip('.')}] {exc}") from exc


def _convert(hint: Any, value: Any, dotted: str, *, base: Path) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"[{dotted}] must be a table, got {value!r}")
        return _build(hint, value, dotted + ".", base=base)  # type: ignore[arg-type]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, dotted, base=base)
    if hint is Path:
        _type(dotted, value, str)
        return (base / value) if not Path(value).is_absolute() else Path(value)
    if origin is tuple:
        _type(dotted, value, list)
        return tuple(_convert(args[0], item, dotted, base=base) for item in value)
    if origin is dict:
        _type(dotted, value, dict)
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{dotted} = {value!r}: must be a number")
        return float(value)
    _type(dotted, value, hint)
    return value


def _type(dotted: str, value: Any, expected: type) -> None:
    if isinstance(value, bool) and expected is not bool:
        raise ConfigError(f"{dotted} = {value!r}: must be {expected.__name__}")
    if not isinstance(value, expected):
        raise ConfigError(f"{dotted} = {value!r}: must be {expected.__name__}")


def _check(dotted: str, value: Any, ok: bool, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{dotted} = {value!r}: {rule}")


def _choice(dotted: str, value: str, allowed: tuple[str, ...]) -> None:
    _check(dotted, value, value in allowed, f"must be one of {', '.join(allowed)}")


def _parse_utc(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def parse_utc(value: str) -> datetime:
    """An ISO 8601 time with offset from a validated config field, as UTC."""
    parsed = _parse_utc(value)
    if parsed is None:
        raise ConfigError(f"{value!r}: not an ISO 8601 time with offset")
    return parsed.astimezone(UTC)


def _check_listen(dotted: str, value: str, *, allow_unix: bool) -> None:
    if allow_unix and value.startswith("unix:"):
        _check(dotted, value, len(value) > 5, "unix:/path/to/socket")
        return
    host, _, port = value.rpartition(":")
    _check(dotted, value, bool(host) and port.isdigit() and 0 < int(port) < 65536, "host:port")
