"""The mailcow consumer kind (certsync_consumer_mailcow): which per-name dirs a
certificate goes into (loader mocked; the deploy into them is test_certsync_deploy's,
mailcow's own serving of them test_mailcow_wire's)."""

import os

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from harness.loader import UTILS, mailcow_consumer_mod
from harness.pki import write_pair, write_sni_dir


@pytest.fixture
def configure_loader_modules(loader_modules):
    return loader_modules


def _files(tmp_path, issued):
    return write_pair(tmp_path / "src", issued, "fullchain.pem", "privkey.pem")


def test_sni_plan_by_domains_only_real_dirs_of_valid_names(tmp_path, ca):
    dest = tmp_path / "ssl"
    dest.mkdir()
    old = ca.leaf("mail.example.test")
    covered = write_sni_dir(str(dest), old, ["mail.example.test", "autodiscover.example.test"])
    partly = write_sni_dir(str(dest), old, ["other.example.test", "www.other.test"])
    write_sni_dir(str(dest), old, ["bad_name", "mail.example.test"])  # not a DNS name: skipped
    (dest / "autodiscover.example.test").symlink_to(covered)  # a symlink: skipped
    write_pair(str(dest / "nodomains.example.test"), old)  # no domains file: skipped
    leaf = ca.leaf(
        "mail.example.test",
        sans=["mail.example.test", "autodiscover.example.test", "*.example.test"],
    )
    fullchain, _ = _files(tmp_path, leaf)
    plan = mailcow_consumer_mod.sni_plan(str(dest), fullchain)
    assert plan["update"] == [covered]
    assert plan["names"] == {covered: ["mail.example.test", "autodiscover.example.test"]}
    assert plan["uncovered"] == {
        "other.example.test": {
            "dir": partly,
            "names": ["other.example.test", "www.other.test"],
            "missing": ["www.other.test"],
            "fingerprint": old.fingerprint,
            "not_after": UTILS["certsync_pem.iso"](old.cert.not_valid_after_utc),
            "days_left": pytest.approx(89, abs=1.5),
        }
    }
    assert mailcow_consumer_mod.sni_dirs(str(dest), fullchain) == [covered]


def test_a_domains_file_that_is_not_text_names_the_file(tmp_path, ca):
    dest = tmp_path / "ssl"
    directory = write_sni_dir(str(dest), ca.leaf("mail.example.test"), ["mail.example.test"])
    with open(os.path.join(directory, "domains"), "wb") as handle:
        handle.write(b"\xff\xfe")
    fullchain, _ = _files(tmp_path, ca.leaf("mail.example.test"))
    with pytest.raises(CommandExecutionError, match=f"{directory}/domains: not UTF-8 text"):
        mailcow_consumer_mod.sni_plan(str(dest), fullchain)


@pytest.mark.parametrize(
    ("listed", "kept"),
    [
        ("mail.example.test autodiscover.example.test", True),  # no newline at its end
        ("mail.example.test\nautodiscover.example.test\n", True),  # one name a line
        ("MAIL.example.test autodiscover.example.test\n", True),  # names compare lower-case
        ("mail.example.test", False),  # a name missing
        ("autodiscover.example.test mail.example.test", False),  # the hostname not first
    ],
)
def test_the_hostname_dirs_domains_list_is_written_only_when_its_names_differ(
    tmp_path, ca, listed, kept
):
    """A ``domains`` file that lists the names already is given back as it is (its own
    spacing), so a deploy whose files are current changes nothing."""
    dest = tmp_path / "ssl"
    names = ["mail.example.test", "autodiscover.example.test"]
    leaf = ca.leaf(names[0], sans=names)
    own = write_sni_dir(str(dest), leaf, names)
    with open(os.path.join(own, "domains"), "w", encoding="ascii") as handle:
        handle.write(listed)
    fullchain, _ = _files(tmp_path, leaf)
    layout = mailcow_consumer_mod.layout(str(dest), fullchain, names[0], {"sni": True})
    wanted = layout["files"][own]["domains"]
    assert wanted == (listed if kept else "mail.example.test autodiscover.example.test\n")


def test_a_route_other_than_mailcows_hostname_goes_to_its_per_name_dir(tmp_path, monkeypatch):
    checkout = tmp_path / "mailcow"
    checkout.mkdir()
    given = {"mailcow_dir": str(checkout)}
    top = f"{checkout}/data/assets/ssl"
    dest = mailcow_consumer_mod.dest
    # without mailcow.conf: the default route is the top-level pair, another its own dir
    assert dest("mail.a.example", given) == top
    assert dest("Mail.B.example", given, "b") == f"{top}/mail.b.example"
    (checkout / "mailcow.conf").write_text("MAILCOW_HOSTNAME=mail.b.example\n")
    conf_get = {"MAILCOW_HOSTNAME": "mail.b.example"}.get
    monkeypatch.setitem(mailcow_consumer_mod.__salt__, "mailcow.conf_get", lambda k, p: conf_get(k))
    assert dest("mail.b.example", given, "b") == top  # mailcow's own hostname: the top
    with pytest.raises(SaltInvocationError, match="cannot name a mailcow per-name dir"):
        dest("*.c.example", given, "c")


def test_the_top_level_pair_serves_mailcows_hostname_alone(tmp_path, monkeypatch):
    """What the settings check refuses by route: with services, a route going to the
    top level must be MAILCOW_HOSTNAME; its own dir, or no mailcow.conf yet, takes any."""
    checkout = tmp_path / "mailcow"
    checkout.mkdir()
    given = {"mailcow_dir": str(checkout), "services": ["postfix-mailcow"]}
    top = f"{checkout}/data/assets/ssl"
    unservable = mailcow_consumer_mod.unservable
    assert unservable(top, "mail.b.example", given) == []  # no mailcow.conf yet
    (checkout / "mailcow.conf").write_text("MAILCOW_HOSTNAME=mail.a.example\n")
    conf_get = {"MAILCOW_HOSTNAME": "Mail.A.example"}.get
    monkeypatch.setitem(mailcow_consumer_mod.__salt__, "mailcow.conf_get", lambda k, p: conf_get(k))
    assert unservable(top, "mail.a.example", given) == []
    assert unservable(f"{top}/mail.b.example", "mail.b.example", given) == []
    assert unservable(top, "mail.b.example", {**given, "services": []}) == []  # files only
    (refused,) = unservable(top, "mail.b.example", given)
    assert refused.startswith(
        f"{checkout}/mailcow.conf: MAILCOW_HOSTNAME='mail.a.example', but the certificate is "
        "deployed for 'mail.b.example'"
    )
    prepared = {**given, "dest": top, "mailcow_dir": str(checkout)}
    with pytest.raises(SaltInvocationError, match=r"deployed for 'mail\.b\.example'"):
        mailcow_consumer_mod.checks("mail.b.example", {"sans": []}, False, prepared)


def test_a_routes_own_dir_lists_its_names_and_is_left_by_the_hostnames_plan(tmp_path, ca):
    ssl = tmp_path / "data" / "assets" / "ssl"
    own = ssl / "mail.b.example"
    own.mkdir(parents=True)
    leaf = ca.leaf("mail.b.example", sans=["mail.b.example", "autoconfig.b.example", "*.b.example"])
    fullchain, _ = _files(tmp_path, leaf)
    prepared = mailcow_consumer_mod.prepare(str(own), "mail.b.example", [], {})
    assert prepared["sni_only"] is True and prepared["backoff"] == str(own)
    layout = mailcow_consumer_mod.layout(str(own), fullchain, "mail.b.example", prepared)
    assert layout["dirs"] == [str(own)]
    assert layout["names"] == ["autoconfig.b.example"]
    assert layout["files"] == {
        str(own): {
            "domains": "mail.b.example autoconfig.b.example\n",
            "certsync.route": "mail.b.example\n",
        }
    }
    # once written, the hostname route's plan leaves the dir to its route (not "uncovered")
    write_pair(str(own), leaf)
    for name, text in layout["files"][str(own)].items():
        (own / name).write_text(text)
    hostname_leaf = ca.leaf("mail.a.example")
    plan = mailcow_consumer_mod.sni_plan(
        str(ssl), _files(tmp_path, hostname_leaf)[0], "mail.a.example"
    )
    assert (plan["update"], plan["uncovered"]) == ([], {})
    assert mailcow_consumer_mod.uncovered(str(own), "mail.b.example", prepared) == {
        "uncovered": {},
        "dropped": {},
    }
