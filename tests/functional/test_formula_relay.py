"""The consumer formula with a relay in its pillar: what it renders (salt-call --local)."""

import json

import pytest

pytestmark = pytest.mark.functional
ME = "certsync-functional"


def _rendered(salt_call, consumer, sls="certsync.consumer"):
    pillar = {
        "certsync": {
            "hostname": "mail.example.test",
            "source": {"minion": "npm"},
            "consumers": {ME: consumer},
        }
    }
    ret = salt_call("state.show_sls", sls, f"pillar={json.dumps(pillar)}")
    assert ret.returncode == 0 and isinstance(ret.data, dict), ret
    return ret.data


def test_a_relay_brings_the_egress_check_and_with_manage_the_allow_rules(salt_call):
    relay = {"host": "mail.smtp2go.com", "port": 2525, "firewall": {"manage": True}}
    states = _rendered(salt_call, {"relay": relay})
    check = dict(
        item
        for arg in states["certsync-egress"]["certsync_egress"]
        if isinstance(arg, dict)
        for item in arg.items()
    )
    assert check["relay"] == "mail.smtp2go.com:2525"
    allows = sorted(name for name in states if name.startswith("certsync-egress-allow-"))
    assert allows[0] == "certsync-egress-allow-2525" and len(allows) == 3
    rule = dict(
        item
        for arg in states["certsync-egress-allow-2525"]["nftables"]
        if isinstance(arg, dict)
        for item in arg.items()
    )
    assert (rule["family"], rule["table"], rule["chain"], rule["dport"]) == (
        "inet",
        "filter",
        "output",
        2525,
    )
    assert rule["save"] is False


def test_no_relay_no_egress_and_no_firewall_unless_asked(salt_call):
    assert not [name for name in _rendered(salt_call, {}) if name.startswith("certsync-egress")]
    states = _rendered(salt_call, {"relay": {"host": "mail.smtp2go.com", "port": 2525}})
    assert "certsync-egress" in states
    assert not [name for name in states if name.startswith("certsync-egress-allow-")]


def test_uninstalling_leaves_the_allow_rules_and_names_each(salt_call):
    """certsync.absent does not take the rules off (without the master's ports the
    minion could not reach the master that applies it), and says which they are."""
    relay = {"host": "mail.smtp2go.com", "port": 2525, "address": "192.0.2.25"}
    managed = {**relay, "firewall": {"manage": True}}
    (text,) = (
        arg["text"]
        for arg in _rendered(salt_call, {"relay": managed}, "certsync.absent")[
            "certsync-egress-rules-left"
        ]["test"]
        if isinstance(arg, dict) and "text" in arg
    )
    publish, ret = (
        salt_call("config.get", key, f"default={default}").data
        for key, default in (("publish_port", 4505), ("master_port", 4506))
    )
    assert f"port 2525 to 192.0.2.25, {publish} to any, {ret} to any" in text, text
    assert "certsync_ufw.delete_out" in text and "inet filter output chain" in text, text
    assert "certsync-egress-rules-left" not in _rendered(
        salt_call, {"relay": relay}, "certsync.absent"
    )


def test_consumer_settings_merge_the_relay_key_by_key(salt_call, tmp_path):
    """The monitor and certsync.status read the relay from consumer_settings: a pillar
    naming only host and port keeps the formula's defaults for the rest, as the SLS does."""
    (tmp_path / "top.sls").write_text(json.dumps({"base": {"*": ["certsync"]}}))
    consumer = {"mailcow_dir": str(tmp_path), "relay": {"host": "mail.smtp2go.com", "port": 2525}}
    pillar = {"certsync": {"hostname": "mail.example.test", "consumers": {ME: consumer}}}
    (tmp_path / "certsync.sls").write_text(json.dumps(pillar))
    ret = salt_call(f"--pillar-root={tmp_path}", "certsync_settings.consumer")
    assert ret.returncode == 0, ret
    relay = ret.data["relay"]
    assert (relay["host"], relay["port"], relay["grace"], relay["window"]) == (
        "mail.smtp2go.com",
        2525,
        900,
        86400,
    )
    assert relay["firewall"]["manage"] is False


def test_consumer_settings_show_credentials_masked(salt_call):
    """As pillar.get shows them: the TSIG secret is set, its value is not in the return."""
    secret = "bWFza2VkLWluLXRoZS1yZXR1cm4="  # noqa: S105 (a test TSIG secret)
    update = {"server": "127.0.0.1", "zone": "example.test", "tsig_name": "k"}
    update["tsig_secret"] = secret
    consumer = {"mailcow_dir": "/srv/mailcow", "services": [], "dane": {"update": update}}
    pillar = {"certsync": {"hostname": "mail.example.test", "consumers": {ME: consumer}}}
    with salt_call.pillar(pillar):
        ret = salt_call("--out=json", "certsync_settings.consumer")
    assert ret.returncode == 0, ret
    assert ret.data["dane"]["update"] == {**update, "tsig_secret": "**********"}
    assert secret not in ret.stdout
