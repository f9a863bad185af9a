"""Unit tests of the certsync_ufw state: an inactive ufw refused by name, a rule in
place left alone, test=True naming the command; ufw's status is the module's parser
over ufw's rules files as ufw writes them."""

import pytest

from harness.loader import UTILS, load_loader_module, salt_functions

ufw_mod = load_loader_module("modules", "certsync_ufw")
ufw_state = load_loader_module("states", "certsync_ufw")
ACTIVE = "Status: active\n"
#: ufw's user.rules with certsync's relay rule, as `ufw allow out ...` writes it.
RULES = (
    "### tuple ### allow tcp 2525 10.1.2.3 any 0.0.0.0/0 out comment="
    + b"certsync: relay".hex()
    + "\n"
)


class FakeUfw:
    """What ``ufw`` answers: its status text, and the commands it was given."""

    def __init__(self, status):
        self.status, self.ran = status, []

    def run_all(self, argv, **kwargs):
        self.ran.append(argv[1:])
        return {"retcode": 0, "stdout": self.status if argv[1:] == ["status"] else "Rule added",
                "stderr": ""}  # fmt: skip


@pytest.fixture
def ufw(monkeypatch, tmp_path):
    fake = FakeUfw(ACTIVE)
    (tmp_path / "user.rules").write_text(RULES)
    files = {False: str(tmp_path / "user.rules"), True: str(tmp_path / "user6.rules")}
    monkeypatch.setattr(ufw_mod, "RULES_FILES", files)
    monkeypatch.setattr(ufw_mod.salt.utils.path, "which", lambda name: "/usr/sbin/ufw")
    return fake


@pytest.fixture
def configure_loader_modules(ufw):
    salt = {"cmd.run_all": ufw.run_all}
    functions = salt_functions(ufw_mod, "certsync_ufw")
    opts = {"test": False}
    return {
        ufw_mod: {"__salt__": salt, "__utils__": UTILS, "__opts__": opts},
        ufw_state: {"__salt__": functions, "__opts__": opts},
    }


def test_a_rule_in_place_is_left_alone(ufw):
    ret = ufw_state.allowed_out("relay", 2525, "10.1.2.3", "certsync: relay")
    assert (ret["result"], ret["changes"]) == (True, {})
    assert ret["comment"] == "ufw already allows tcp out to 10.1.2.3 port 2525"
    assert ufw.ran == [["status"]]


def test_test_mode_names_the_command_and_runs_nothing(ufw, monkeypatch):
    monkeypatch.setitem(ufw_state.__opts__, "test", True)
    ret = ufw_state.allowed_out("master", 4505, comment="certsync: salt master")
    assert ret["result"] is None
    assert ret["comment"] == (
        "would run: ufw allow out proto tcp to any port 4505 comment 'certsync: salt master'"
    )
    assert ufw.ran == [["status"]]


def test_an_inactive_ufw_is_named_and_nothing_is_added(ufw):
    ufw.status = "Status: inactive\n"
    ret = ufw_state.allowed_out("relay", 2525, "10.1.2.3")
    assert ret["result"] is False
    assert ret["comment"].startswith("ufw is not active on this host")
    assert ufw.ran == [["status"]]


def test_a_rule_ufw_does_not_show_after_adding_is_a_failure(ufw):
    ret = ufw_state.allowed_out("master", 4505)
    assert ret["result"] is False
    assert "but ufw's rules do not let the traffic out" in ret["comment"]
    assert ufw.ran[1][:2] == ["allow", "out"]
