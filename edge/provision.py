"""First-boot provisioning: ``lem-community.toml`` on the boot partition → a configured node.

Spec: docs/spec/join.md §1 (the community file) and docs/image.md. One image serves a whole
community: the technician puts the community's file (with its CA certificate and genesis) on
the FAT boot partition. ``lemd-firstboot.service`` runs ``python -m edge.provision`` before lemd
and the network: it checks every key (an unknown key or a bad value is an error naming it),
creates the node key on the data partition (0600), finds the meter on the serial ports and reads
its id, and writes ``/etc/lemd/lemd.toml``, the genesis, the CA, the NetworkManager connection
(Ethernet or the 4G modem's APN), timesyncd servers and the technicians' SSH keys. Its progress
and failures go to the console, the journal and ``<data_dir>/join.json`` (``lemctl member
status`` reads it even while lemd is not running).

Exit status: 0 provisioned (or already provisioned from the same file), 1 a retryable failure
(meter not found: the unit retries), 2 the community file is wrong (nothing is retried).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.join import JoinState
from edge.meter_discovery import MeterFound, MeterNotFoundError, default_ports, discover_meter
from ledger import privacy
from ledger.errors import LedgerError
from ledger.genesis import ID_RE, Genesis
from ledger.keys import SigningKey

EXIT_OK, EXIT_RETRY, EXIT_BAD_FILE = 0, 1, 2
COMMUNITY_FILE = "lem-community.toml"


class ProvisionError(Exception):
    """The community file (or a file it names) is wrong; the message names the key and file."""


@dataclass(frozen=True)
class Community:
    """The validated contents of ``lem-community.toml`` (docs/spec/join.md §1)."""

    source: Path
    chain_id: str
    brokers: tuple[str, ...]
    genesis: Genesis
    genesis_text: str
    ca_pem: str | None
    role: str = "member"
    name: str = ""
    mqtt_password: str | None = None
    meter: dict[str, Any] = field(default_factory=dict)
    network: dict[str, Any] = field(default_factory=dict)
    ssh_keys: tuple[str, ...] = ()


_SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "community": {
        "chain_id": str,
        "brokers": list,
        "ca_file": str,
        "genesis_file": str,
        "genesis_sha256": str,
    },
    "node": {"role": str, "name": str, "mqtt_password_file": str},
    "meter": {
        "driver": str,
        "port": str,
        "ports": list,
        "meter_id": str,
        "poll_interval_s": (int, float),
    },
    "network": {
        "mode": str,
        "apn": str,
        "apn_user": str,
        "apn_password": str,
        "interface": str,
        "address": str,
        "gateway": str,
        "dns": list,
        "ntp": list,
    },
    "access": {"ssh_authorized_keys": list},
}


def _fail(path: Path, key: str, why: str) -> ProvisionError:
    return ProvisionError(f"{path}: {key}: {why}")


def _check_shape(path: Path, raw: dict[str, Any]) -> None:
    for section, value in raw.items():
        if section not in _SCHEMA:
            raise _fail(path, section, f"unknown section (allowed: {', '.join(_SCHEMA)})")
        if not isinstance(value, dict):
            raise _fail(path, section, "must be a [section]")
        for key, item in value.items():
            expected = _SCHEMA[section].get(key)
            if expected is None:
                raise _fail(path, f"{section}.{key}", "unknown key")
            if not isinstance(item, expected) or isinstance(item, bool):
                raise _fail(path, f"{section}.{key}", f"wrong type {type(item).__name__}")


def _read_beside(path: Path, key: str, name: str) -> str:
    """A file named in the community file, relative to the community file's folder."""
    if "/" in name or name.startswith("."):
        raise _fail(path, key, f"{name!r}: give a file name beside {path.name}, not a path")
    try:
        return (path.parent / name).read_text()
    except OSError as exc:
        raise _fail(path, key, f"cannot read {name!r}: {exc.strerror}") from exc


def load_community(path: Path) -> Community:
    """Read and check ``lem-community.toml`` and the files it names.

    Raises:
        ProvisionError: unreadable, unknown key, wrong type or value, genesis hash mismatch,
            missing CA for an ``mqtts://`` broker (the message names the key).
    """
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ProvisionError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProvisionError(f"{path}: not valid TOML: {exc}") from exc
    _check_shape(path, raw)
    com, node = raw.get("community", {}), raw.get("node", {})
    chain_id = com.get("chain_id", "")
    if not ID_RE.match(chain_id):
        raise _fail(path, "community.chain_id", f"{chain_id!r} is not a valid chain id")
    brokers = tuple(com.get("brokers", []))
    if not brokers or not all(
        isinstance(b, str) and b.startswith(("mqtt://", "mqtts://")) for b in brokers
    ):
        raise _fail(path, "community.brokers", "a non-empty list of mqtt:// or mqtts:// URLs")
    genesis, genesis_text = _load_genesis(path, com, chain_id)
    ca_pem = None
    if "ca_file" in com:
        ca_pem = _read_beside(path, "community.ca_file", com["ca_file"])
        if "-----BEGIN CERTIFICATE-----" not in ca_pem:
            raise _fail(path, "community.ca_file", "not a PEM certificate")
    if any(b.startswith("mqtts://") for b in brokers) and ca_pem is None:
        raise _fail(path, "community.ca_file", "required for mqtts:// brokers")
    role = node.get("role", "member")
    if role not in ("member", "validator"):
        raise _fail(path, "node.role", f"{role!r}: 'member' or 'validator'")
    name = node.get("name", "")
    if name and not ID_RE.match(name):
        raise _fail(path, "node.name", f"{name!r}: letters, digits, '-' and '_'")
    password = None
    if "mqtt_password_file" in node:
        password = _read_beside(path, "node.mqtt_password_file", node["mqtt_password_file"])
    return Community(
        path, chain_id, brokers, genesis, genesis_text, ca_pem, role, name, password,
        _check_meter(path, raw.get("meter", {})), _check_network(path, raw.get("network", {})),
        _check_ssh(path, raw.get("access", {}).get("ssh_authorized_keys", [])),
    )  # fmt: skip


def _load_genesis(path: Path, com: dict[str, Any], chain_id: str) -> tuple[Genesis, str]:
    if "genesis_file" not in com:
        raise _fail(path, "community.genesis_file", "required (the community's genesis.json)")
    text = _read_beside(path, "community.genesis_file", com["genesis_file"])
    try:
        genesis = Genesis.from_json(text)
    except LedgerError as exc:
        raise _fail(path, "community.genesis_file", str(exc)) from exc
    if genesis.chain_id != chain_id:
        raise _fail(path, "community.genesis_file", f"is for chain {genesis.chain_id!r}")
    want = com.get("genesis_sha256", "").lower()
    if want and want != genesis.hash.hex():
        raise _fail(
            path,
            "community.genesis_sha256",
            f"the genesis file hashes to {genesis.hash.hex()}, not {want}",
        )
    return genesis, text


def _check_meter(path: Path, meter: dict[str, Any]) -> dict[str, Any]:
    driver = meter.get("driver", "auto")
    if driver not in ("auto", "iec", "p1", "sim"):
        raise _fail(path, "meter.driver", f"{driver!r}: auto, iec, p1 or sim")
    if driver in ("iec", "p1") and not meter.get("port"):
        raise _fail(path, "meter.port", f"required when meter.driver = {driver!r}")
    if driver == "sim" and not ID_RE.match(meter.get("meter_id", "")):
        raise _fail(path, "meter.meter_id", "required for the simulated meter (tests and demos)")
    if not all(isinstance(p, str) and p.startswith("/dev/") for p in meter.get("ports", [])):
        raise _fail(path, "meter.ports", "a list of /dev/... paths")
    return {"driver": driver, **{k: v for k, v in meter.items() if k != "driver"}}


def _check_network(path: Path, net: dict[str, Any]) -> dict[str, Any]:
    mode = net.get("mode", "ethernet")
    if mode not in ("ethernet", "modem"):
        raise _fail(path, "network.mode", f"{mode!r}: 'ethernet' or 'modem'")
    if mode == "modem" and not net.get("apn"):
        raise _fail(path, "network.apn", "required for the 4G modem (the SIM operator's APN)")
    if "address" in net and ("/" not in net["address"] or "gateway" not in net):
        raise _fail(path, "network.address", "a static address is 'a.b.c.d/prefix' + gateway")
    for item in (*net.get("ntp", []), *net.get("dns", [])):
        if not isinstance(item, str) or not item or any(c.isspace() for c in item):
            raise _fail(path, "network.ntp/dns", f"{item!r} is not a host name or address")
    return {"mode": mode, **{k: v for k, v in net.items() if k != "mode"}}


def _check_ssh(path: Path, ssh_keys: list[Any]) -> tuple[str, ...]:
    for k in ssh_keys:
        ok = isinstance(k, str) and k.startswith(("ssh-ed25519 ", "ssh-rsa ", "ecdsa-sha2-"))
        if not ok or "\n" in k:
            raise _fail(path, "access.ssh_authorized_keys", f"{str(k)[:30]!r} is not a public key")
    return tuple(ssh_keys)


# rendering ---------------------------------------------------------------------------------


def node_name(community: Community, meter_id: str) -> str:
    """The configured name, else one derived from the meter id (broker client id, hostname)."""
    if community.name:
        return community.name
    clean = "".join(c if c.isalnum() else "-" for c in meter_id.lower()).strip("-")
    return f"lem-{clean[:40] or 'node'}"


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def render_lemd_toml(
    community: Community, meter: MeterFound, name: str, etc_dir: Path, data_dir: Path
) -> str:
    """``/etc/lemd/lemd.toml`` for this node (keys as in edge/lemd.example.toml)."""
    lines = [
        f"# Written by lemd-firstboot from {community.source.name}; edit that file instead",
        "# (a changed community file is applied again on the next boot).",
        "[node]",
        f"name = {_toml_str(name)}",
        f"data_dir = {_toml_str(str(data_dir))}",
        f"role = {_toml_str(community.role)}",
        f"genesis_file = {_toml_str(str(etc_dir / 'genesis.json'))}",
        "",
        "[meter]",
        f"driver = {_toml_str(meter.driver)}",
        f"port = {_toml_str(meter.port)}",
    ]
    if meter.meter_id:  # empty on a pseudonymous chain: the admission pins the meter
        lines.append(f"meter_id = {_toml_str(meter.meter_id)}")
    if "poll_interval_s" in community.meter:
        lines.append(f"poll_interval_s = {float(community.meter['poll_interval_s'])}")
    lines += [
        "",
        "[ledger]",
        f"chain_id = {_toml_str(community.chain_id)}",
        "brokers = [" + ", ".join(_toml_str(b) for b in community.brokers) + "]",
        f"username = {_toml_str(name)}",
    ]
    if community.ca_pem is not None:
        lines.append(f"ca_file = {_toml_str(str(etc_dir / 'community-ca.pem'))}")
    if community.mqtt_password is not None:
        lines.append(f"password_file = {_toml_str(str(etc_dir / 'mqtt.password'))}")
    return "\n".join(lines) + "\n"


def render_network(net: dict[str, Any]) -> dict[str, str]:
    """NetworkManager keyfiles (file name → text) for Ethernet or the 4G modem."""
    if net["mode"] == "modem":
        text = [
            "[connection]", "id=lem-modem", "type=gsm", "autoconnect=true",
            "autoconnect-retries=0", "", "[gsm]", f"apn={net['apn']}",
        ]  # fmt: skip
        if net.get("apn_user"):
            text.append(f"username={net['apn_user']}")
        if net.get("apn_password"):
            text += [f"password={net['apn_password']}", "password-flags=0"]
        text += ["", "[ipv4]", "method=auto", "", "[ipv6]", "method=auto", ""]
        return {"lem-modem.nmconnection": "\n".join(text)}
    iface = net.get("interface", "eth0")
    text = ["[connection]", "id=lem-ethernet", "type=ethernet", f"interface-name={iface}"]
    text += ["autoconnect=true", "", "[ipv4]"]
    if "address" in net:
        text += ["method=manual", f"address1={net['address']},{net['gateway']}"]
    else:
        text.append("method=auto")
    if net.get("dns"):
        text.append("dns=" + ";".join(net["dns"]) + ";")
    text += ["", "[ipv6]", "method=auto", ""]
    return {"lem-ethernet.nmconnection": "\n".join(text)}


# provisioning --------------------------------------------------------------------------------

Discover = Callable[[dict[str, Any]], Awaitable[MeterFound]]


@dataclass
class Paths:
    """Where provisioning writes (``root`` is ``/`` on the node, a temp dir in tests).

    Attributes:
        root: system files (NetworkManager, timesyncd, hostname, SSH keys) go under it.
        etc_dir: lemd's config folder; default ``<root>/etc/lemd``.
        data_dir: the data partition; default ``<root>/var/lib/lemd``.
    """

    root: Path
    etc_dir: Path | None = None
    data_dir: Path | None = None

    @property
    def etc(self) -> Path:
        return self.etc_dir or self.root / "etc/lemd"

    @property
    def data(self) -> Path:
        return self.data_dir or self.root / "var/lib/lemd"


async def discover(meter: dict[str, Any]) -> MeterFound:
    """Find the meter as the community file says (auto: every candidate serial port)."""
    driver = meter["driver"]
    if driver == "sim":
        return MeterFound("sim", "", meter["meter_id"], "simulated meter")
    if driver in ("iec", "p1"):
        return await discover_meter([meter["port"]], drivers=(driver,))
    ports = meter.get("ports") or default_ports()
    return await discover_meter(ports)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    os.chmod(path, mode)


async def provision(
    community_file: Path, paths: Paths, *, find_meter: Discover = discover
) -> JoinState:
    """Provision the node from ``community_file``; returns the join state written.

    Raises:
        ProvisionError: the community file is wrong (state ``failed``, not retried).
        MeterNotFoundError: no meter answered (state ``joining`` with the reason; retried).
    """
    data_dir = paths.data
    state = JoinState.load(data_dir)
    try:
        community = load_community(community_file)
    except ProvisionError as exc:
        state.fail("community file", str(exc))
        state.save(data_dir)
        raise
    key = _node_key(data_dir / "node.key")
    state.public_key = key.public_key.hex()
    state.step("joining", "looking for the meter on the serial ports")
    state.save(data_dir)
    try:
        meter = await find_meter(community.meter)
    except MeterNotFoundError as exc:
        state.fail("meter not found", str(exc), phase="joining")
        state.save(data_dir)
        raise
    sealed = community.genesis.privacy == privacy.Mode.PSEUDONYMOUS
    if sealed:
        # Pseudonymous chain (docs/spec/join.md §6): the serial stays in join.json (this node's
        # own file) and travels only sealed to the admin; names, config and logs never carry it.
        name = community.name or f"lem-{key.public_key.hex()[:12]}"
        state.meter_id, state.serial = "", meter.meter_id
        if meter.driver != "sim":  # a simulated meter needs its (made-up) id in the config
            meter = MeterFound(meter.driver, meter.port, "", meter.identification)
    else:
        name = node_name(community, meter.meter_id)
        state.meter_id = meter.meter_id
    _write_files(community, meter, name, paths)
    state.identification = meter.identification
    state.chain_id, state.name = community.chain_id, name
    found = "a meter" if sealed else f"meter {meter.meter_id}"
    state.step("joining", f"{found} on {meter.port or meter.driver}; lemd next")
    state.save(data_dir)
    _stamp(community_file, data_dir)
    return state


def _stamp(community_file: Path, data_dir: Path) -> None:
    """Record which community file was applied (a changed file is applied again)."""
    digest = hashlib.sha256(community_file.read_bytes()).hexdigest()
    _write(data_dir / "provisioned.sha256", digest + "\n", 0o600)


def _node_key(path: Path) -> SigningKey:
    """The node key on the data partition (0600), created on first boot; lemd uses the same."""
    return SigningKey.load(path) if path.exists() else _new_key(path)


def _new_key(path: Path) -> SigningKey:
    key = SigningKey.generate()
    key.save(path)
    return key


def _write_files(community: Community, meter: MeterFound, name: str, paths: Paths) -> None:
    etc = paths.etc
    etc.mkdir(parents=True, exist_ok=True)
    etc.chmod(0o750)  # as lemd.service's ConfigurationDirectoryMode (the MQTT password is here)
    _write(etc / "genesis.json", community.genesis_text)
    if community.ca_pem is not None:
        _write(etc / "community-ca.pem", community.ca_pem)
    if community.mqtt_password is not None:
        _write(etc / "mqtt.password", community.mqtt_password.strip() + "\n", 0o640)
    lemd_toml = render_lemd_toml(community, meter, name, etc, paths.data)
    _write(etc / "lemd.toml", lemd_toml, 0o640)
    nm_dir = paths.root / "etc/NetworkManager/system-connections"
    for file_name, text in render_network(community.network).items():
        _write(nm_dir / file_name, text, 0o600)  # NM ignores keyfiles others can read
    ntp = community.network.get("ntp")
    if ntp:
        _write(
            paths.root / "etc/systemd/timesyncd.conf.d/lem-edge.conf",
            "[Time]\nNTP=" + " ".join(ntp) + "\n",
        )
    if community.ssh_keys:
        _write(
            paths.root / "root/.ssh/authorized_keys", "\n".join(community.ssh_keys) + "\n", 0o600
        )
    _write(paths.root / "etc/hostname", name + "\n")


def already_provisioned(community_file: Path, paths: Paths) -> bool:
    """True when this very community file was applied and lemd.toml is still there."""
    stamp = paths.data / "provisioned.sha256"
    if not stamp.exists() or not (paths.etc / "lemd.toml").exists():
        return False
    digest = hashlib.sha256(community_file.read_bytes()).hexdigest()
    return stamp.read_text().strip() == digest


def give_to_lemd(paths: Paths, user: str = "lemd") -> None:
    """lemd runs as its own user: /etc/lemd readable by its group, the data files its own.

    (systemd's ConfigurationDirectory= never changes ownership, and StateDirectory= fixes it only
    while the top folder's owner is wrong, so files written here by root on a later re-run
    would stay root's.)
    """
    try:
        pwd.getpwnam(user)
    except KeyError:
        return  # not on an image (tests, a developer's machine)
    for path in (paths.etc, *paths.etc.iterdir()):
        shutil.chown(path, "root", user)
    for path in (paths.data, *(p for p in paths.data.iterdir() if p.is_file())):
        shutil.chown(path, user, user)


def apply_system(role: str, name: str) -> None:
    """On the node: hostname, mosquitto for validators, services that read what was written."""
    commands = [["hostname", name]]
    if role == "validator":
        commands.append(["systemctl", "enable", "--no-block", "--now", "mosquitto.service"])
    else:
        commands.append(["systemctl", "disable", "--no-block", "--now", "mosquitto.service"])
    # After a retried run (meter found late) lemd's start was skipped for want of lemd.toml.
    commands.append(["systemctl", "start", "--no-block", "lemd.service"])
    for cmd in commands:
        subprocess.run(cmd, check=False, timeout=30)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edge.provision --boot-dir /boot/firmware [--root /] [--apply]``."""
    parser = argparse.ArgumentParser(prog="lemd-firstboot", description=__doc__.split("\n")[0])
    parser.add_argument("--boot-dir", type=Path, default=Path("/boot/firmware"))
    parser.add_argument("--root", type=Path, default=Path("/"))
    parser.add_argument("--etc-dir", type=Path, help="default: <root>/etc/lemd")
    parser.add_argument("--data-dir", type=Path, help="default: <root>/var/lib/lemd")
    parser.add_argument("--apply", action="store_true", help="also set hostname and services")
    args = parser.parse_args(argv)
    community_file = args.boot_dir / COMMUNITY_FILE
    paths = Paths(args.root, args.etc_dir, args.data_dir)
    if already_provisioned(community_file, paths):
        print(f"lemd-firstboot: {community_file} already applied; nothing to do")
        return EXIT_OK
    try:
        state = asyncio.run(provision(community_file, paths))
    except ProvisionError as exc:
        print(f"lemd-firstboot: community file is wrong: {exc}", file=sys.stderr)
        return EXIT_BAD_FILE
    except MeterNotFoundError as exc:
        print(f"lemd-firstboot: meter not found (retrying): {exc}", file=sys.stderr)
        return EXIT_RETRY
    if args.apply:
        give_to_lemd(paths)
        apply_system(load_community(community_file).role, state.name)
    meter = state.meter_id or "found (serial kept off the console: pseudonymous chain)"
    print(
        f"lemd-firstboot: provisioned {state.name} for chain {state.chain_id}: meter "
        f"{meter}, node key {state.public_key}"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
