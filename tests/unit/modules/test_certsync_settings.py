"""certsync_settings (loader mocked): where a job takes the formula's defaults from.
The file cache's copy, which the last state run took with the modules it synced,
needs no request to the master; a minion without one asks the master's file server."""

import pathlib

import pytest

from harness.loader import UTILS, settings_mod

DEFAULTS = (pathlib.Path(__file__).parents[3] / "salt/certsync/defaults.yaml").read_text()


class FileServer:
    """``cp.get_file_str`` of a master that serves ``text``; notes each request."""

    def __init__(self, text):
        self.text, self.asked = text, []

    def __call__(self, path, **_):
        self.asked.append(path)
        return self.text


@pytest.fixture
def master():
    return FileServer(DEFAULTS)


@pytest.fixture
def configure_loader_modules(tmp_path, master):
    return {
        settings_mod: {
            "__opts__": {"id": "mailcow", "cachedir": str(tmp_path), "saltenv": None},
            "__pillar__": {"certsync": {"hostname": "mail.example.test"}},
            "__salt__": {"cp.get_file_str": master},
            "__utils__": UTILS,
            "__context__": {},
        }
    }


def test_the_file_caches_copy_is_read_without_asking_the_master(tmp_path, master):
    cached = tmp_path / "files" / "base" / "certsync" / "defaults.yaml"
    cached.parent.mkdir(parents=True)
    cached.write_text(DEFAULTS.replace("verify_timeout: 60", "verify_timeout: 45"))
    settings = settings_mod._formula_settings()
    assert master.asked == []
    assert settings["consumer_defaults"]["verify_timeout"] == 45
    assert settings["hostname"] == "mail.example.test"


def test_without_a_cached_copy_the_master_serves_the_defaults(master):
    settings = settings_mod._formula_settings()
    assert master.asked == ["salt://certsync/defaults.yaml"]
    assert settings["consumer_defaults"]["verify_timeout"] == 60
