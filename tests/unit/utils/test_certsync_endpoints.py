"""The endpoint registry is the one table the probe, the consumer kinds and the DNS
audit read."""

from harness.loader import (
    UTILS,
    load_loader_module,
    mailcow_consumer_mod,
    mailcow_mod,
    tlsprobe_mod,
)

endpoints = load_loader_module("utils", "certsync_endpoints")


def test_every_row_names_a_handshake_the_probe_speaks():
    table = endpoints.table()
    assert list(table)[:3] == ["smtp", "submission", "smtps"]
    assert {row["handshake"] for row in table.values()} <= set(tlsprobe_mod._HANDSHAKES)


def test_ports_and_names_are_unique_both_ways():
    table = endpoints.table()
    ports = [row["port"] for row in table.values()]
    assert len(set(ports)) == len(ports)
    assert all(endpoints.by_port(row["port"]) == name for name, row in table.items())
    assert endpoints.by_port(2525) is None


def test_the_probe_knows_every_endpoint_and_only_those(monkeypatch):
    monkeypatch.setattr(tlsprobe_mod, "__utils__", UTILS, raising=False)
    listed = tlsprobe_mod.endpoint_list()
    table = endpoints.table()
    assert listed == [[name, row["port"], None] for name, row in table.items()]


def test_mailcow_publishes_and_serves_every_endpoint_type():
    table = endpoints.table()
    assert list(mailcow_mod.CONF_PORT_KEYS) == list(table)
    assert len(set(mailcow_mod.CONF_PORT_KEYS.values())) == len(table)
    assert list(mailcow_consumer_mod.SERVES) == list(table)
