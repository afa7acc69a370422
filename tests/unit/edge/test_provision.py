"""First-boot provisioning from lem-community.toml (edge/provision.py), files in a temp root."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from edge.config import load_config
from edge.join import JoinState
from edge.join import status as join_status
from edge.meter_discovery import MeterFound, MeterNotFoundError
from edge.provision import (
    EXIT_BAD_FILE,
    EXIT_OK,
    Paths,
    ProvisionError,
    load_community,
    main,
    provision,
    render_network,
)
from ledger.keys import SigningKey
from tests.unit.ledger.helpers import genesis

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
BASE = """
[community]
chain_id = "lem-test"
brokers = ["mqtts://broker.example:8883"]
ca_file = "ca.pem"
genesis_file = "genesis.json"

[node]
role = "member"

[meter]
driver = "sim"
meter_id = "SIM-0042"

[network]
mode = "modem"
apn = "internet.example"

[access]
ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHt tech@example"]
"""


def boot_dir(tmp_path: Path, text: str = BASE) -> Path:
    """A boot partition folder with the community file, its CA and genesis."""
    boot = tmp_path / "boot"
    boot.mkdir(exist_ok=True)
    (boot / "lem-community.toml").write_text(text)
    (boot / "ca.pem").write_text(CA)
    (boot / "genesis.json").write_text(genesis().to_json())
    return boot


def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "root")


def test_provision_writes_a_config_lemd_accepts(tmp_path: Path) -> None:
    """lemd.toml written from the community file loads with edge.config and names the meter."""
    boot = boot_dir(tmp_path)
    p = paths(tmp_path)
    state = asyncio.run(provision(boot / "lem-community.toml", p))
    etc = p.etc
    config = load_config(etc / "lemd.toml")
    assert config.node.name == "lem-sim-0042"
    assert config.meter.driver == "sim"
    assert config.meter.meter_id == "SIM-0042"
    assert config.ledger.chain_id == "lem-test"
    assert config.ledger.brokers == ("mqtts://broker.example:8883",)
    assert config.ledger.ca_file == etc / "community-ca.pem"
    assert (etc / "community-ca.pem").read_text() == CA
    assert state.phase == "joining"
    assert state.meter_id == "SIM-0042"


def test_node_key_is_created_0600_and_kept(tmp_path: Path) -> None:
    """The node key is made on the data partition with mode 0600 and reused on a re-run."""
    boot = boot_dir(tmp_path)
    p = paths(tmp_path)
    first = asyncio.run(provision(boot / "lem-community.toml", p))
    key_path = p.data / "node.key"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert SigningKey.load(key_path).public_key.hex() == first.public_key
    second = asyncio.run(provision(boot / "lem-community.toml", p))
    assert second.public_key == first.public_key


def test_modem_connection_ssh_keys_and_hostname(tmp_path: Path) -> None:
    """The 4G APN goes into a 0600 NetworkManager keyfile; SSH keys into root's authorized_keys."""
    boot = boot_dir(tmp_path)
    p = paths(tmp_path)
    asyncio.run(provision(boot / "lem-community.toml", p))
    nm = p.root / "etc/NetworkManager/system-connections/lem-modem.nmconnection"
    assert "type=gsm" in nm.read_text()
    assert "apn=internet.example" in nm.read_text()
    assert stat.S_IMODE(nm.stat().st_mode) == 0o600
    keys = (p.root / "root/.ssh/authorized_keys").read_text()
    assert keys.startswith("ssh-ed25519 ")
    assert (p.root / "etc/hostname").read_text() == "lem-sim-0042\n"


def test_ethernet_static_address() -> None:
    """A static Ethernet address renders as NetworkManager's address1=addr/prefix,gateway."""
    files = render_network(
        {"mode": "ethernet", "address": "10.1.2.3/24", "gateway": "10.1.2.1", "dns": ["10.1.2.1"]}
    )
    text = files["lem-ethernet.nmconnection"]
    assert "method=manual" in text
    assert "address1=10.1.2.3/24,10.1.2.1" in text
    assert "dns=10.1.2.1;" in text


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("[node]", "[node]\ncolour = 'red'"), "node.colour: unknown key"),
        (("[access]", "[extras]\n[access]"), "extras: unknown section"),
        (('role = "member"', 'role = "boss"'), "node.role"),
        (('apn = "internet.example"', 'apn = ""'), "network.apn"),
        (('chain_id = "lem-test"', 'chain_id = "other"'), "community.genesis_file"),
        (('ca_file = "ca.pem"', 'ca_file = "../ca.pem"'), "community.ca_file"),
        (('brokers = ["mqtts://broker.example:8883"]', "brokers = []"), "community.brokers"),
        (('driver = "sim"', 'driver = "iec"'), "meter.port"),
        (('"ssh-ed25519 AAAAC3', '"password123 AAAAC3'), "access.ssh_authorized_keys"),
    ],
)
def test_bad_community_file_names_the_key(tmp_path: Path, change: Any, named: str) -> None:
    """Each mistake is refused with a message naming the key (no silent default)."""
    boot = boot_dir(tmp_path, BASE.replace(*change))
    with pytest.raises(ProvisionError, match=named.replace(".", r"\.")):
        load_community(boot / "lem-community.toml")


def test_genesis_hash_is_checked(tmp_path: Path) -> None:
    """genesis_sha256 must equal the genesis hash; the right one passes."""
    right = genesis().hash.hex()
    good = BASE.replace(
        'genesis_file = "genesis.json"',
        f'genesis_file = "genesis.json"\ngenesis_sha256 = "{right}"',
    )
    assert load_community(boot_dir(tmp_path, good) / "lem-community.toml").genesis == genesis()
    bad = good.replace(right, "00" * 32)
    with pytest.raises(ProvisionError, match="genesis_sha256: the genesis file hashes to"):
        load_community(boot_dir(tmp_path, bad) / "lem-community.toml")


def test_meter_not_found_is_recorded_for_the_technician(tmp_path: Path) -> None:
    """No meter: join.json keeps phase joining with 'meter not found' and the ports tried."""
    boot = boot_dir(tmp_path, BASE.replace('driver = "sim"', 'driver = "auto"'))
    p = paths(tmp_path)

    async def nothing(_: dict[str, Any]) -> MeterFound:
        raise MeterNotFoundError("/dev/ttyUSB0 iec: no answer within 2 s")

    with pytest.raises(MeterNotFoundError):
        asyncio.run(provision(boot / "lem-community.toml", p, find_meter=nothing))
    state = JoinState.load(p.data)
    assert state.phase == "joining"
    assert state.error == "meter not found: /dev/ttyUSB0 iec: no answer within 2 s"
    assert not (p.etc / "lemd.toml").exists()


def test_main_exit_codes_and_idempotence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """main: 0 and a summary line; 0 'nothing to do' for the same file; 2 for a broken file."""
    boot = boot_dir(tmp_path)
    args = ["--boot-dir", str(boot), "--root", str(tmp_path / "root")]
    assert main(args) == EXIT_OK
    assert "provisioned lem-sim-0042 for chain lem-test" in capsys.readouterr().out
    assert main(args) == EXIT_OK
    assert "already applied" in capsys.readouterr().out
    (boot / "lem-community.toml").write_text(BASE.replace("[node]", "[node]\nx = 1"))
    assert main(args) == EXIT_BAD_FILE
    assert "node.x: unknown key" in capsys.readouterr().err


def test_pseudonymous_chain_keeps_the_serial_out_of_config_name_and_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a pseudonymous genesis the serial of a found IEC meter stays in join.json only (for
    the sealed request): not in lemd.toml, the node name (MQTT client id, hostname), the
    status view or the console line (docs/spec/join.md §6)."""
    serial = "LGZ1030655933512"
    boot = boot_dir(tmp_path)
    (boot / "genesis.json").write_text(genesis(privacy="pseudonymous").to_json())
    p = paths(tmp_path)

    async def iec(_: dict[str, Any]) -> MeterFound:
        return MeterFound("iec", "/dev/ttyUSB0", serial, "LGZ5ZMD3104407")

    state = asyncio.run(provision(boot / "lem-community.toml", p, find_meter=iec))
    assert (state.meter_id, state.serial) == ("", serial)
    assert state.name == f"lem-{state.public_key[:12]}"
    assert JoinState.load(p.data).serial == serial
    config_text = (p.etc / "lemd.toml").read_text()
    assert serial not in config_text
    assert load_config(p.etc / "lemd.toml").meter.meter_id == ""
    assert serial not in json.dumps(join_status(p.data))
    assert serial not in state.detail
    assert serial not in capsys.readouterr().out
