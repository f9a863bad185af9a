"""Certificate sources behind one interface (certsync_source, its npm and caddy kinds)."""

import datetime
import os

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from harness.loader import source_mod
from harness.pki import write_npm_tree

HOST = "mail.example.test"


@pytest.fixture
def configure_loader_modules(loader_modules):
    return loader_modules


@pytest.fixture
def live(tmp_path, ca, good):
    live_dir = tmp_path / "letsencrypt" / "live"
    write_npm_tree(live_dir, 3, ca.leaf("www.example.test"))
    write_npm_tree(live_dir, 5, good)
    return str(live_dir)


def test_npm_finds_the_lineage_by_name_or_takes_the_one_named(live):
    found = source_mod.locate(HOST, live_dir=live)
    assert found == {
        "fullchain": os.path.join(live, "npm-5", "fullchain.pem"),
        "privkey": os.path.join(live, "npm-5", "privkey.pem"),
        "dir": os.path.join(live, "npm-5"),
    }
    assert source_mod.locate(HOST, "npm", live_dir=live, dir="npm-3")["dir"].endswith("npm-3")
    lineage = os.path.join(live, "npm-5")
    assert source_mod.locate(HOST, source=lineage)["dir"] == lineage


def test_the_settings_of_other_kinds_and_unset_ones_are_not_passed_on(live):
    """The formula's defaults hold every kind's settings: a kind gets its own, set ones."""
    found = source_mod.locate(HOST, "npm", live_dir=live, dir="", storage="/var/lib/caddy")
    assert found["dir"].endswith("npm-5")


def test_npm_watches_every_lineage_or_the_one_named(live):
    assert source_mod.watched(HOST, live_dir=live) == [
        os.path.join(live, "npm-3", "fullchain.pem"),
        os.path.join(live, "npm-5", "fullchain.pem"),
    ]
    assert source_mod.watched(HOST, live_dir=live, dir="npm-5") == [
        os.path.join(live, "npm-5", "fullchain.pem")
    ]


@pytest.mark.parametrize(
    ("kind", "where", "message"),
    [
        ("caddy-v9", {"live_dir": "/x"}, "unknown certificate source kind 'caddy-v9'"),
        (["npm"], {"live_dir": "/x"}, "unknown certificate source kind ['npm']"),
        ("npm", {}, "the npm source needs live_dir (and dir) or source"),
        ("npm", {"live_dir": "live"}, "live_dir must be an absolute path"),
        ("npm", {"live_dir": "/x", "dir": "../npm-5"}, "dir must be a lineage name"),
        ("npm", {"live_dir": "/x", "source": "/y"}, "give either source or live_dir, not both"),
    ],
)
def test_a_kind_or_a_setting_it_cannot_use_is_refused_by_name(kind, where, message):
    with pytest.raises(SaltInvocationError) as error:
        source_mod.locate(HOST, kind, **where)
    assert message in str(error.value)


def _caddy_site(storage, issuer, name, issued):
    """A site as Caddy (certmagic) stores it: the chain in <name>.crt, the key in .key."""
    site = storage / "certificates" / issuer / name
    site.mkdir(parents=True)
    (site / f"{name}.crt").write_bytes(issued.fullchain_pem())
    (site / f"{name}.key").write_bytes(issued.key_pem())
    (site / f"{name}.json").write_text("{}")
    return site


def test_caddy_takes_the_newest_usable_site_its_name_or_its_wildcard(tmp_path, ca):
    storage = tmp_path / "caddy"
    now = datetime.datetime.now(datetime.timezone.utc)
    older = ca.leaf(HOST, not_after=now + datetime.timedelta(days=30))
    newer = ca.leaf("*.example.test", not_after=now + datetime.timedelta(days=60))
    _caddy_site(storage, "acme-v02.api.letsencrypt.org-directory", HOST, older)
    wildcard = _caddy_site(storage, "localhost-14000-dir", "wildcard_.example.test", newer)
    other = _caddy_site(
        storage, "localhost-14000-dir", "www.example.test", ca.leaf("www.example.test")
    )
    found = source_mod.locate(HOST, "caddy", storage=str(storage))
    assert found["dir"] == str(wildcard)
    assert found["fullchain"] == str(wildcard / "wildcard_.example.test.crt")
    one = source_mod.locate(
        HOST, "caddy", storage=str(storage), issuer="acme-v02.api.letsencrypt.org-directory"
    )
    assert one["privkey"].endswith(f"{HOST}/{HOST}.key")
    watched = source_mod.watched(HOST, "caddy", storage=str(storage))
    assert str(storage / "certificates") in watched
    assert str(wildcard / "wildcard_.example.test.crt") in watched
    assert not any(path.startswith(str(other)) for path in watched)


def test_caddy_skips_a_site_whose_key_does_not_match_and_says_so(tmp_path, ca, good):
    storage = tmp_path / "caddy"
    site = _caddy_site(storage, "issuer", HOST, good)
    (site / f"{HOST}.key").write_bytes(ca.leaf(HOST).key_pem())
    with pytest.raises(CommandExecutionError, match="its key does not match"):
        source_mod.locate(HOST, "caddy", storage=str(storage))


@pytest.mark.parametrize(
    ("version", "reuse", "keeps"),
    [
        ("2.6.2", False, True),
        ("v2.7.6 h1:abc=", False, False),
        ("v2.7.6 h1:abc=", True, False),  # 2.7 has no such setting
        ("v2.8.4 h1:abc=", False, False),
        ("v2.8.4 h1:abc=", True, True),
        ("", False, None),
    ],
)
def test_caddys_release_says_whether_the_next_certificate_keeps_the_key(
    tmp_path, good, version, reuse, keeps
):
    storage = tmp_path / "caddy"
    _caddy_site(storage, "issuer", HOST, good)
    binary = tmp_path / "caddy-bin"
    binary.write_text(f"#!/bin/sh\necho '{version}'\n" if version else "#!/bin/sh\nexit 3\n")
    binary.chmod(0o755)
    settings = {"storage": str(storage), "caddy": str(binary), "reuse_private_keys": reuse}
    view = source_mod.renewal(HOST, "caddy", **settings)
    assert view["next_renewal_keeps_key"] is keeps, view
    if keeps:
        assert source_mod.keep_key(HOST, "caddy", **settings)["changed"] is False
    else:
        with pytest.raises(CommandExecutionError, match="may come with a new key"):
            source_mod.keep_key(HOST, "caddy", **settings)


@pytest.mark.parametrize("caddy", [["caddy"], {"path": "/usr/bin/caddy"}, 7, "caddy\x00x"])
def test_a_caddy_setting_of_the_wrong_type_is_named(tmp_path, good, caddy):
    storage = tmp_path / "caddy"
    _caddy_site(storage, "issuer", HOST, good)
    with pytest.raises(SaltInvocationError, match="caddy must be the path of Caddy's binary"):
        source_mod.renewal(HOST, "caddy", storage=str(storage), caddy=caddy)
