"""
MTA-STS against real servers: NSD serves the mail domain; the mailcow
look-alike's nginx serves the policy from data/web over TLS with the
top-level pair (as mailcow's does for mta-sts.*). maildns.audit through
salt-call --local; only its MTA-STS rows are looked at here.
"""

import pytest

from harness.mailcow_stack import HOST, NAMES, MailcowStack
from harness.nsd import AuthoritativeDNS

pytestmark = pytest.mark.one_release  # its subject does not change with the Salt release

DOMAIN = "example.test"
STS = f"mta-sts.{DOMAIN}"
URL = f"https://{STS}/.well-known/mta-sts.txt"
POLICY = f"version: STSv1\nmode: enforce\nmx: {HOST}\nmax_age: 604800\n"
TXT = '_mta-sts IN TXT "v=STSv1; id=20261126T1200"'
ROWS = [
    f"MTA-STS _mta-sts.{DOMAIN}",
    f"MTA-STS policy {URL}",
    f"MTA-STS {DOMAIN} mx",
    f"HTTPS {STS}",
]


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory):
    server = AuthoritativeDNS(tmp_path_factory.mktemp("nsd"), DOMAIN)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(docker_engine, mailcow_image, tmp_path_factory, ca):
    serving = ca.leaf(HOST, sans=[*NAMES, STS])
    stack = MailcowStack(docker_engine, mailcow_image, tmp_path_factory.mktemp("mc"), serving)
    try:
        yield stack.start()
    finally:
        stack.remove()


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory, ca):
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    path.write_bytes(ca.root_pem())
    return path


def _audit(salt_call, dns_server, stack, ca_file, policy=POLICY, txt=TXT, mx=f"@ IN MX 10 {HOST}."):
    policy_file = stack.web_dir / ".well-known" / "mta-sts.txt"
    if policy is None:
        policy_file.unlink(missing_ok=True)
    else:
        policy_file.write_text(policy)
    dns_server.publish([line for line in (mx, "mail IN A 127.0.0.1", txt) if line])
    ret = salt_call(
        "maildns.audit",
        DOMAIN,
        HOST,
        "nameservers=[127.0.0.1]",
        f"dns_port={dns_server.port}",
        "autoconfig=False",
        "mta_sts=True",
        "probe_address=127.0.0.1",
        f"probe_ports={{443: {stack.endpoints['https']}}}",
        f"ca_file={ca_file}",
    )
    assert isinstance(ret.data, dict), ret
    return {row["record"]: row for row in ret.data["rows"] if row["record"] in ROWS}


def _failing(rows):
    return {record: row["why"] for record, row in rows.items() if row["result"] != "pass"}


def test_a_good_policy_passes(salt_call, dns_server, stack, ca_file):
    rows = _audit(salt_call, dns_server, stack, ca_file)
    assert list(rows) == ROWS
    assert _failing(rows) == {}
    assert rows[f"MTA-STS policy {URL}"]["found"] == f"mode=enforce max_age=604800 mx={HOST}"


def test_a_wildcard_pattern_covers_the_mx(salt_call, dns_server, stack, ca_file):
    policy = POLICY.replace(f"mx: {HOST}", f"mx: *.{DOMAIN}")
    assert _failing(_audit(salt_call, dns_server, stack, ca_file, policy=policy)) == {}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            {"policy": POLICY.replace(f"mx: {HOST}", f"mx: other.{DOMAIN}")},
            {
                f"MTA-STS {DOMAIN} mx": f"MX {HOST} not in the policy: enforcing senders will "
                f"not deliver there; other.{DOMAIN} matches no MX host"
            },
            id="mx-not-covered",
        ),
        pytest.param(
            {"policy": POLICY + f"mx: old.{DOMAIN}\n"},
            {f"MTA-STS {DOMAIN} mx": f"old.{DOMAIN} matches no MX host"},
            id="stray-pattern",
        ),
        pytest.param(
            {"policy": POLICY.replace("mode: enforce", "mode: strict")},
            {f"MTA-STS policy {URL}": "mode is 'strict', not one of enforce, testing, none"},
            id="bad-mode",
        ),
        pytest.param(
            {"policy": POLICY.replace("604800", "99999999")},
            {
                f"MTA-STS policy {URL}": "max_age '99999999' is not a number of seconds up to "
                "31557600"
            },
            id="max-age-out-of-range",
        ),
        pytest.param(
            {"policy": None},
            {f"MTA-STS policy {URL}": "HTTP 404"},
            id="no-policy-file",
        ),
        pytest.param(
            {"txt": None},
            {f"MTA-STS _mta-sts.{DOMAIN}": "no v=STSv1 record"},
            id="no-txt",
        ),
        pytest.param(
            {"txt": '_mta-sts IN TXT "v=STSv1; id=no-dashes-allowed"'},
            {f"MTA-STS _mta-sts.{DOMAIN}": "id= is missing or malformed"},
            id="bad-id",
        ),
    ],
)
def test_a_broken_part_fails_its_row_only(salt_call, dns_server, stack, ca_file, change, expected):
    assert _failing(_audit(salt_call, dns_server, stack, ca_file, **change)) == expected


def test_a_certificate_without_the_mta_sts_name(
    salt_call, dns_server, docker_engine, mailcow_image, tmp_path, ca, ca_file
):
    bare = MailcowStack(docker_engine, mailcow_image, tmp_path / "mc", ca.leaf(HOST, sans=NAMES))
    try:
        rows = _audit(salt_call, dns_server, bare.start(), ca_file)
    finally:
        bare.remove()
    failing = _failing(rows)
    assert failing[f"MTA-STS policy {URL}"].startswith(
        f"the certificate is not verified for {STS}: Hostname mismatch"
    )
    assert failing[f"HTTPS {STS}"] == "senders get no policy: the certificate does not cover it"
    assert set(failing) == {f"MTA-STS policy {URL}", f"HTTPS {STS}"}
