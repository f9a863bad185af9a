"""Unit tests of the tlsprobe module: endpoint forms, errors by name, probes of
servers on loopback and the wait for a served certificate (loader mocked)."""

import socket
from unittest.mock import patch

import pytest
from salt.exceptions import SaltInvocationError
from support.tlsserver import TLSServer

from harness.loader import tlsprobe_mod
from harness.pki import write_pair


@pytest.fixture
def configure_loader_modules():
    return {tlsprobe_mod: {"__context__": {}}}


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        (["imaps", "smtp"], [("imaps", 993, None), ("smtp", 25, None)]),
        ("imaps:10993,sieve", [("imaps", 10993, None), ("sieve", 4190, None)]),
        ({"https": 8443}, [("https", 8443, None)]),
        ({"smtp": "192.0.2.7:2525"}, [("smtp", 2525, "192.0.2.7")]),
        ({"imaps": "[::1]:993"}, [("imaps", 993, "::1")]),
    ],
)
def test_endpoint_forms(endpoints, expected):
    assert tlsprobe_mod._endpoint_list(endpoints) == expected


@pytest.mark.parametrize(
    ("endpoints", "message"),
    [
        (["gopher"], "unknown protocol 'gopher'"),
        ({"imaps": "x"}, "port of imaps must be a number"),
        ({"imaps": 70000}, "port of imaps out of range"),
        ({"smtp": "mail.example.com:25"}, "address of smtp must be an IP address"),
        ({"smtp": "1.2.3.4:x"}, "port of smtp must be a number"),
        ([], "no endpoint to probe"),
    ],
)
def test_endpoint_errors(endpoints, message):
    with pytest.raises(SaltInvocationError, match=message):
        tlsprobe_mod._endpoint_list(endpoints)


@pytest.mark.parametrize(
    ("names", "message"),
    [([], "non-empty list"), (["bad name"], "is not a DNS name"), ({"a": 1}, "non-empty list")],
)
def test_sni_name_errors(names, message):
    with pytest.raises(SaltInvocationError, match=message):
        tlsprobe_mod.probe("mail.example.test", ["smtp"], names=names)


def test_closed_port_is_a_failed_probe_not_an_exception():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ret = tlsprobe_mod.fetch("mail.example.test", "imaps", port, "127.0.0.1", timeout=2)
    assert ret["ok"] is False
    assert ret["error"].startswith("ConnectionRefusedError")


def test_a_silent_server_times_out_within_the_bound():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        ret = tlsprobe_mod.fetch("mail.example.test", "smtp", port, "127.0.0.1", timeout=0.5)
    assert ret["ok"] is False
    assert "timed out" in ret["error"]
    assert ret["elapsed_ms"] < 5000


def _server(tmp_path, pair, name):
    cert, key = write_pair(tmp_path / name, pair, "cert.pem", "key.pem")
    return TLSServer(cert, key)


def test_wait_for_probes_again_only_what_is_still_stale(tmp_path, ca, good):
    old = ca.leaf("mail.example.test")
    with _server(tmp_path, good, "new") as ready, _server(tmp_path, old, "old") as lagging:
        pauses = []

        def reloaded(seconds):  # the lagging service picks the new pair up while we wait
            pauses.append(seconds)
            lagging.context = ready.context

        endpoints = {"https": f"127.0.0.1:{ready.port}", "imaps": f"127.0.0.1:{lagging.port}"}
        with patch.object(tlsprobe_mod.time, "sleep", reloaded):
            ret = tlsprobe_mod.wait_for(
                "mail.example.test", good.fingerprint, endpoints, "127.0.0.1", timeout=30
            )
    assert ret["ok"] is True
    assert (ret["rounds"], ret["probes"], pauses) == (2, 3, [tlsprobe_mod.FIRST_PAUSE])
    assert {r["fingerprint"] for r in ret["served"].values()} == {good.fingerprint}
    assert "retcode" not in tlsprobe_mod.__context__


def test_wait_for_gives_up_within_its_rounds_and_says_what_is_stale(tmp_path, ca, good):
    old = ca.leaf("mail.example.test")
    with _server(tmp_path, old, "old") as stale:
        pauses = []
        with patch.object(tlsprobe_mod.time, "sleep", pauses.append):
            ret = tlsprobe_mod.wait_for(
                "mail.example.test",
                good.fingerprint,
                {"https": f"127.0.0.1:{stale.port}"},
                "127.0.0.1",
                timeout=10,
                interval=4,
            )
    assert ret["ok"] is False
    # pauses 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 3.2 fit in 10 s, another 4 would not
    assert ret["rounds"] == tlsprobe_mod._max_rounds(10, 4) == 7
    assert pauses == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2]
    assert ret["served"]["https"]["fingerprint"] == old.fingerprint
    assert tlsprobe_mod.__context__["retcode"] == 1


def test_wait_for_probes_the_hostname_everywhere_before_the_other_names(tmp_path, ca, good):
    old = ca.leaf("mail.example.test")
    with _server(tmp_path, good, "new") as ready, _server(tmp_path, old, "old") as lagging:
        rounds, pauses = [], []
        run_probes = tlsprobe_mod._run_probes

        def recorded(hostname, plan, *args):
            rounds.append(sorted(plan))
            return run_probes(hostname, plan, *args)

        def reloaded(seconds):
            pauses.append(seconds)
            lagging.context = ready.context

        endpoints = {"https": f"127.0.0.1:{ready.port}", "imaps": f"127.0.0.1:{lagging.port}"}
        with (
            patch.object(tlsprobe_mod, "_run_probes", recorded),
            patch.object(tlsprobe_mod.time, "sleep", reloaded),
        ):
            ret = tlsprobe_mod.wait_for(
                "mail.example.test",
                good.fingerprint,
                endpoints,
                "127.0.0.1",
                names=["mail.example.test", "autoconfig.example.test"],
            )
    assert ret["ok"] is True
    assert rounds == [
        ["https/mail.example.test", "imaps/mail.example.test"],
        ["imaps/mail.example.test"],  # after a pause; then the other names at once
        ["https/autoconfig.example.test", "imaps/autoconfig.example.test"],
    ]
    assert (ret["rounds"], ret["probes"], pauses) == (3, 5, [tlsprobe_mod.FIRST_PAUSE])
    assert {r["fingerprint"] for r in ret["served"].values()} == {good.fingerprint}


def test_wait_for_reports_the_other_names_not_probed_while_the_hostname_is_stale(
    tmp_path, ca, good
):
    old = ca.leaf("mail.example.test")
    with (
        _server(tmp_path, old, "old") as stale,
        patch.object(tlsprobe_mod.time, "sleep", lambda _: None),
    ):
        ret = tlsprobe_mod.wait_for(
            "mail.example.test",
            good.fingerprint,
            {"smtps": f"127.0.0.1:{stale.port}"},
            "127.0.0.1",
            timeout=1,
            names=["mail.example.test", ""],
        )
    assert ret["ok"] is False
    assert ret["rounds"] == tlsprobe_mod._max_rounds(1, 1)
    assert ret["served"]["smtps/mail.example.test"]["fingerprint"] == old.fingerprint
    assert ret["served"]["smtps/-"] == {
        "protocol": "smtps",
        "address": "127.0.0.1",
        "port": stale.port,
        "sni": "",
        "ok": False,
        "probed": False,
        "error": "not probed: mail.example.test was not served on every endpoint yet",
    }
    assert tlsprobe_mod.__context__["retcode"] == 1
