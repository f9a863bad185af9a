"""Text shown and credentials kept out (salt://_utils/certsync_util.py)."""

from harness.loader import UTILS

SETTINGS = {
    "dane": {"port": 25, "update": {"zone": "example.test", "tsig_secret": "c2VjcmV0"}},
    "relay": [{"host": "smtp.example.test", "password": "hunter2"}, {"password": ""}],
    "api_token": None,
}


def test_credentials_are_left_out_of_what_travels_at_any_depth():
    assert UTILS["certsync_util.without_credentials"](SETTINGS) == {
        "dane": {"port": 25, "update": {"zone": "example.test"}},
        "relay": [{"host": "smtp.example.test"}, {}],
    }
    assert "tsig_secret" in SETTINGS["dane"]["update"]  # a copy: the settings are unchanged


def test_credentials_that_are_set_are_masked_in_what_is_shown():
    masked = UTILS["certsync_util.masked_credentials"](SETTINGS)
    assert masked["dane"]["update"] == {"zone": "example.test", "tsig_secret": "**********"}
    assert masked["relay"] == [
        {"host": "smtp.example.test", "password": "**********"},
        {"password": ""},
    ]
    assert masked["api_token"] is None  # not set: nothing to hide, shown as it is
