"""The certsync_table outputter on certsync.status returns (loader mocked)."""

import copy

import pytest
import salt.config

from harness.loader import load_loader_module

table = load_loader_module("output", "certsync_table")
FP, OTHER = "ab" * 32, "cd" * 32


@pytest.fixture
def configure_loader_modules():
    opts = copy.deepcopy(salt.config.DEFAULT_MINION_OPTS)
    opts["color"] = False
    return {table: {"__opts__": opts}}


def test_a_consumer_status():
    ret = {
        "role": "consumer",
        "deployed": FP,
        "days_left": 60,
        "served": {"smtp": FP, "imaps": OTHER},
        "uncovered": {"autodiscover.example.test": {"missing": ["autodiscover.example.test"]}},
        "relay": {"relay": "mail.smtp2go.com:2525", "ok": True, "sent": 3, "blocked": []},
    }
    lines = table.output({"mailcow": ret}).splitlines()
    assert lines[0] == "mailcow:"
    assert [line[4:8] for line in lines[1:]] == ["INFO", "FAIL", "PASS", "FAIL", "PASS"]
    assert lines[2].split()[1:4] == ["served", "imaps", OTHER[:16] + "..."]
    assert lines[5].split()[1:5] == ["relay", "mail.smtp2go.com:2525", "sent", "3"]


def test_a_source_status_and_the_fleet():
    source = {
        "role": "source",
        "fingerprint": FP,
        "days_left": 80,
        "renewal": {"next_renewal_keeps_key": False, "why": "reuse_key is not set"},
    }
    lines = table.output({"npm": source}).splitlines()
    assert lines[2].split()[:6] == ["FAIL", "next", "renewal", "makes", "a", "new"]
    fleet = {
        "result": False,
        "sources": {"npm": {"result": True, "fingerprint": FP}},
        "consumers": {
            "mailcow": {
                "agree": False,
                "deployed_fingerprint": OTHER,
                "error": "mailcow did not answer",
            }
        },
    }
    lines = table.output(fleet).splitlines()
    assert [line.split()[0] for line in lines] == ["PASS", "FAIL"]
    assert lines[1].endswith("mailcow did not answer")


def test_anything_else_goes_to_the_nested_outputter():
    assert "True" in table.output({"minion": True})


HOSTILE = [
    "\x1b]0;owned\x07\x1b[2J\x1b[32mPASS",  # retitle, clear the screen, a fake green PASS
    "v=DKIM1; p=\x9b31m",  # a C1 control sequence introducer
    "txt\u202egnp.exe",  # a right-to-left override
    "del\x7f and nul\x00 and\u200b zero-width",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_text_from_a_zone_cannot_drive_the_terminal(text):
    audit = {
        "domain": "example.test",
        "ok": False,
        "rows": [
            {"record": "DKIM s1", "expected": "a key", "found": text, "result": "fail", "why": text}
        ],
    }
    shown = table.output({f"mail{text}": audit})
    assert all(ch == "\n" or ch.isprintable() for ch in shown), repr(shown)
    assert "\\x1b" in shown or "\\x9b" in shown or "\\u202e" in shown or "\\x7f" in shown


@pytest.mark.parametrize(
    "ret",
    [
        {"role": "consumer", "served": ["smtp"]},
        {"role": "consumer", "uncovered": [1, 2]},
        {"role": "consumer", "relay": {"blocked": 5}},
        {"role": "consumer", "tlsa": {"stale": 7}},
        {"role": "consumer", "missing_names": 3},
        {"role": "source", "renewal": ["x"]},
        {"role": None, "why": "x", "extra": object()},
        {"consumers": [], "sources": "npm"},
        {"consumers": {"m": None}, "sources": {}},
        {"rows": [{"result": ["pass"]}]},
        {"role": ["consumer"]},
    ],
)
def test_a_return_of_an_unexpected_shape_is_shown_never_a_traceback(ret):
    shown = table.output({"minion": ret})
    assert "minion" in shown  # Salt's nested outputter, under the minion's id
    assert table.output(ret)  # a runner's return, not under a minion id
