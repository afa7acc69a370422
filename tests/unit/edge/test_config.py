"""lemd.toml validation: each bad field is named with its value and file; no silent defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import ConfigError, load_config

GOOD = """
[node]
name = "node0"
data_dir = "state"
role = "validator"

[meter]
driver = "iec"
port = "/dev/serial/by-id/usb-probe"

[ledger]
chain_id = "lugaggia"
brokers = ["mqtt://127.0.0.1:1883", "mqtts://broker.example:8883"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lemd.toml"
    path.write_text(text)
    return path


def test_good_config_loads_with_documented_defaults(tmp_path: Path) -> None:
    """Relative paths resolve against the file's folder; unset sections take their defaults."""
    config = load_config(write(tmp_path, GOOD))
    assert config.node.data_dir == tmp_path / "state"
    assert config.key_file == tmp_path / "state" / "node.key"
    assert config.meter.poll_interval_s == 5.0
    assert config.ledger.brokers == ("mqtt://127.0.0.1:1883", "mqtts://broker.example:8883")
    assert config.api.listen == "127.0.0.1:8760"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('role = "validator"', 'role = "boss"'), "node.role = 'boss': must be one of"),
        (('driver = "iec"', 'driver = "iec"\npoll_interval_s = 0'), "meter.poll_interval_s = 0.0"),
        (('driver = "iec"', 'driver = "iec"\nport_name = "x"'), "unknown key meter.port_name"),
        (('port = "/dev/serial/by-id/usb-probe"', 'port = ""'), "meter.port = '': required"),
        (('"mqtt://127.0.0.1:1883", ', '"tcp://x:1", '), "ledger.brokers = 'tcp://x:1'"),
        (('name = "node0"', "name = 7"), "node.name = 7: must be str"),
        (('name = "node0"\n', ""), "missing required key node.name"),
        (("[ledger]", "[ledgr]"), "unknown key ledgr"),
        (("[ledger]", "[ledger]\nresign_timeout_s = 0"), "ledger.resign_timeout_s = 0.0"),
        (("[ledger]", "[ledger]\nmax_inflight = 0"), "ledger.max_inflight = 0: 1..1000"),
        (("[ledger]", "[clock]\nspeed = 0\n[ledger]"), "clock.speed = 0.0"),
        (("[ledger]", '[clock]\nstart = "2025-06-21"\n[ledger]'), "clock.start = '2025-06-21'"),
        (("[ledger]", '[clock]\nanchor = "2025-06-21T00:00:00Z"\n[ledger]'), "needs clock.start"),
    ],
)
def test_each_invalid_field_is_named(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    """The error names the file, the field and the offending value."""
    path = write(tmp_path, GOOD.replace(*edit, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    """A broken file is reported as such, with its path."""
    path = write(tmp_path, "[node\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    """A config path that does not exist stops start-up with the path in the message."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_shipped_example_config_is_valid() -> None:
    """edge/lemd.example.toml, the documented defaults, loads without error."""
    example = Path(__file__).resolve().parents[3] / "edge" / "lemd.example.toml"
    config = load_config(example)
    assert config.meter.driver == "iec"
    assert config.ledger.brokers[0].startswith("mqtts://")


def test_clock_section_parses_iso_times_with_offset(tmp_path: Path) -> None:
    """[clock] start/anchor take ISO 8601 times with an offset; speed defaults to real time."""
    config = load_config(write(tmp_path, GOOD))
    assert not config.clock.accelerated
    text = GOOD + '[clock]\nspeed = 900\nstart = "2025-06-21T00:00:00+02:00"\n'
    config = load_config(write(tmp_path, text))
    assert config.clock.accelerated
    assert config.clock.speed == 900.0
