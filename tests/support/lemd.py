"""Builders for lemd tests: a node folder with key, single-validator genesis and lemd.toml."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edge.config import load_config
from edge.daemon import Daemon
from edge.sdnotify import Notifier
from ledger.genesis import Genesis, Period
from ledger.keys import SigningKey

SLOT_MS = 900_000
SIM_START = datetime(2025, 6, 21, 0, 0, tzinfo=UTC)
"""Simulated time at the anchor: midsummer, the PV houses export at noon."""
PARAMS = {"p_buy_bau": "21", "p_sell_bau": "6", "p_buy_lem": "16", "p_sell_lem": "9", "beta": "0"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class NodeDir:
    """A prepared node: its folder, config, key and the admin key of its chain."""

    root: Path
    config: Path
    key: SigningKey
    admin: SigningKey
    api: str
    meter_id: str

    @property
    def data_dir(self) -> Path:
        return self.root / "state"


def make_node(
    root: Path,
    *,
    speed: float = 900.0,
    anchor: datetime | None = None,
    admin_is_node: bool = False,
    meter_id: str = "lic-h03",
    period_hours: int = 6,
    poll_interval_s: float = 0.5,
    solve_grace_s: int = 0,
    extra_toml: str = "",
    periods: int = 4,
    key: SigningKey | None = None,
    genesis: Genesis | None = None,
    admin: SigningKey | None = None,
    brokers: tuple[str, ...] = (),
    metrics_listen: str | None = None,
) -> NodeDir:
    """Write key, genesis and lemd.toml for a single-validator node with a simulated meter.

    The node's key is the chain's only validator and owns ``meter_id``; the admin is another
    key unless ``admin_is_node``. Periods of ``period_hours`` follow each other from SIM_START.
    """
    root.mkdir(parents=True, exist_ok=True)
    state = root / "state"
    state.mkdir(exist_ok=True)
    key = key or SigningKey.generate()
    key.save(state / "node.key")
    admin = admin or (key if admin_is_node else SigningKey.generate())
    start_ms = int(SIM_START.timestamp() * 1000)
    span = period_hours * 3_600_000
    genesis = genesis or Genesis(
        chain_id="lemd-test",
        genesis_time_ms=start_ms - 60_000,
        validators=((key.public_key, 1),),
        admins=(admin.public_key,),
        governance_keys=(admin.public_key,),
        governance_threshold=1,
        # A second member's meter, so access rules have someone else's data to refuse.
        meters={meter_id: key.public_key, "lic-h05": SigningKey.generate().public_key},
        periods=tuple(
            Period(f"p{i}", start_ms + i * span, start_ms + (i + 1) * span, PARAMS)
            for i in range(periods)
        ),
    )
    (root / "genesis.json").write_text(genesis.to_json())
    anchor = anchor or datetime.now(UTC) + timedelta(seconds=1)
    api = f"127.0.0.1:{free_port()}"
    text = f"""
[node]
name = "{root.name.replace(".", "-")}"
data_dir = "state"
role = "validator"
genesis_file = "genesis.json"

[meter]
driver = "sim"
meter_id = "{meter_id}"
poll_interval_s = {poll_interval_s}

[ledger]
chain_id = "lemd-test"
resign_timeout_s = 3
brokers = [{", ".join(f'"{b}"' for b in brokers)}]

[market]
solve_grace_s = {solve_grace_s}

[api]
listen = "{api}"

[metrics]
listen = "{api if metrics_listen is None else metrics_listen}"

[clock]
speed = {speed}
start = "{SIM_START.isoformat()}"
anchor = "{anchor.isoformat()}"

[log]
level = "info"
{extra_toml}
"""
    config = root / "lemd.toml"
    config.write_text(text)
    return NodeDir(root, config, key, admin, api, meter_id)


@asynccontextmanager
async def running_daemon(node: NodeDir, **kwargs: Any) -> AsyncIterator[Daemon]:
    """An in-process lemd (real stores, API and tasks) from ``node``'s config; stopped after."""
    daemon = Daemon(load_config(node.config), notifier=Notifier({}), **kwargs)
    await daemon.open()
    task = asyncio.create_task(daemon.run(), name="lemd-under-test")
    try:
        async with asyncio.timeout(10):
            await daemon.serving.wait()
        yield daemon
    finally:
        daemon.stop_event.set()
        assert await asyncio.wait_for(task, 20) == 0


async def until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 50 ms; AssertionError naming ``what`` after ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():  # noqa: ASYNC110 -- polls state that no event announces
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not reached within {timeout_s} s: {what}") from None


def make_community(
    root: Path, members: list[str], validators: int, **kwargs: Any
) -> tuple[list[NodeDir], Genesis]:
    """Nodes named n0, n1, … owning ``members`` (meter ids); the first ``validators`` vote.

    One genesis for all (same anchor and periods); the admin is a key of no node.
    """
    keys = [SigningKey.generate() for _ in members]
    admin = SigningKey.generate()
    start_ms = int(SIM_START.timestamp() * 1000)
    span = kwargs.pop("period_hours", 6) * 3_600_000
    genesis = Genesis(
        chain_id="lemd-test",
        genesis_time_ms=start_ms - 60_000,
        validators=tuple((k.public_key, 1) for k in keys[:validators]),
        admins=(admin.public_key,),
        governance_keys=(admin.public_key,),
        governance_threshold=1,
        meters={m: k.public_key for m, k in zip(members, keys, strict=True)},
        periods=tuple(
            Period(f"p{i}", start_ms + i * span, start_ms + (i + 1) * span, PARAMS)
            for i in range(kwargs.pop("periods", 4))
        ),
    )
    anchor = kwargs.pop("anchor", None) or datetime.now(UTC) + timedelta(seconds=2)
    nodes = [
        make_node(
            root / f"n{i}", key=k, genesis=genesis, admin=admin, meter_id=m, anchor=anchor, **kwargs
        )
        for i, (m, k) in enumerate(zip(members, keys, strict=True))
    ]
    return nodes, genesis
