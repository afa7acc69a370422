"""Broker URLs and transport settings: what is accepted and how bad values are reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.transport.mqtt_settings import BrokerUrl, MqttSettings, MqttSettingsError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker.local", BrokerUrl("broker.local", 1883, tls=False)),
        ("mqtts://10.0.0.2", BrokerUrl("10.0.0.2", 8883, tls=True)),
        ("mqtt://127.0.0.1:18830", BrokerUrl("127.0.0.1", 18830, tls=False)),
        ("mqtts://[::1]:8884", BrokerUrl("::1", 8884, tls=True)),
    ],
)
def test_broker_urls_parse_with_default_ports(url: str, expected: BrokerUrl) -> None:
    """mqtt:// and mqtts:// with optional port (1883 / 8883 by default)."""
    assert BrokerUrl.parse(url) == expected
    assert BrokerUrl.parse(str(expected)) == expected


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("tcp://broker:1883", "scheme"),
        ("mqtt://", "no host"),
        ("mqtt://broker:99999", "out of range"),
        ("mqtt://user:pw@broker", "credentials go in username/password"),
        ("mqtt://broker/lem", "only scheme, host and port"),
    ],
)
def test_bad_broker_urls_say_what_is_wrong(url: str, why: str) -> None:
    """A bad URL stops start-up with the URL and the reason in the message."""
    with pytest.raises(MqttSettingsError, match=why) as info:
        BrokerUrl.parse(url)
    assert url in str(info.value)


def _settings(**kw: object) -> MqttSettings:
    return MqttSettings.from_urls("chain", "n1", kw.pop("urls", ["mqtts://b"]), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"urls": []}, "at least one broker"),
        ({"cert_file": Path("c.pem")}, "together"),
        ({"password": "pw"}, "without username"),
        ({"urls": ["mqtt://b"], "ca_file": Path("ca.pem")}, "no broker URL is mqtts"),
        ({"keepalive_s": 0}, "keepalive_s must be > 0"),
        ({"outbox_max_messages": -1}, "outbox_max_messages"),
        ({"backoff_initial_s": 5.0, "backoff_max_s": 1.0}, "backoff_max_s"),
        ({"mqtt_version": 3}, "mqtt_version must be 5 or 4"),
        ({"broadcast_channels": ()}, "non-empty subset"),
        ({"broadcast_channels": ("tx", "votes")}, "non-empty subset"),
    ],
)
def test_inconsistent_settings_are_refused(kw: dict[str, object], why: str) -> None:
    """Settings that cannot work raise MqttSettingsError naming the field; no silent default."""
    with pytest.raises(MqttSettingsError, match=why):
        _settings(**kw)


def test_node_id_must_be_one_topic_level() -> None:
    """The node id becomes a topic level and the client id: wildcards and '/' are refused."""
    with pytest.raises(MqttSettingsError, match="node_id"):
        MqttSettings.from_urls("chain", "n1/#", ["mqtt://b"])


def test_password_is_not_in_repr() -> None:
    """Settings can be logged without leaking the MQTT password."""
    s = _settings(username="n1", password="s3cret")
    assert "s3cret" not in repr(s)
