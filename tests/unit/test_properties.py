"""Property-based tests (hypothesis): whatever the input, the parsers and name checks
answer or refuse with Salt's exceptions, never anything else. Their speed on hostile
input is measured in benchmarks/bench_certsync.py, not asserted here."""

import math
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from salt.exceptions import CommandExecutionError, SaltInvocationError

from harness.loader import UTILS, certsync_mod, tlsprobe_mod

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LABELS = [b"CERTIFICATE", b"PRIVATE KEY", b"EC PRIVATE KEY", b"X509 CRL", b"A" * 70]
PIECES = st.one_of(
    st.sampled_from([b"-----BEGIN ", b"-----END ", b"-----", b"\n", b"\r\n", b"MIIB", b"===="]),
    st.sampled_from(LABELS),
    st.binary(max_size=40),
)


@pytest.fixture
def configure_loader_modules():
    return {certsync_mod: {"__context__": {}, "__opts__": {"test": False}}}


@PROPERTY
@given(st.lists(PIECES, max_size=60).map(b"".join))
def test_pem_parsing_only_refuses_with_salts_error(data):
    try:
        blocks = UTILS["certsync_pem.pem_blocks"](data, "input.pem")
    except CommandExecutionError:
        return
    for label, block in blocks:
        assert block.startswith(b"-----BEGIN " + label + b"-----")
        assert block.rstrip().endswith(b"-----END " + label + b"-----")


@PROPERTY
@given(st.lists(PIECES, max_size=60).map(b"".join))
def test_reading_certificates_only_refuses_with_salts_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("pem") / "fullchain.pem"
    path.write_bytes(data)
    try:
        certs = UTILS["certsync_pem.read_certs"](str(path))
    except CommandExecutionError as exc:
        assert str(path) in str(exc)
        assert "\n" not in str(exc)
        return
    assert certs


NAMEISH = st.text(alphabet=string.ascii_letters + string.digits + "-.*_ \n\x00é", max_size=80)


@PROPERTY
@given(NAMEISH, st.booleans())
def test_dns_name_check_always_answers_a_bool(name, wildcard):
    answer = certsync_mod.is_dns_name(name, wildcard=wildcard)
    assert answer in (True, False)
    if answer:
        assert name.isascii() and "\n" not in name and len(name) <= 253
        assert not name.rsplit(".", 1)[-1].isdigit()


@PROPERTY
@given(NAMEISH, NAMEISH)
def test_name_matching_always_answers_a_bool(pattern, hostname):
    answer = certsync_mod.name_matches(pattern, hostname)
    assert answer in (True, False)
    if answer:
        assert certsync_mod.is_dns_name(hostname)
        assert pattern.lower() == hostname.lower() or pattern.startswith("*.")


@PROPERTY
@given(st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.none()))
def test_number_arguments_are_checked_or_refused(value):
    checks = [
        (UTILS["certsync_args.number"], (value, "min_days", 0, 3650), (0, 3650)),
        (UTILS["certsync_args.number"], (value, "days", 0, 3650, True), (0, 3650)),
        (UTILS["certsync_args.seconds"], (value, "timeout", 60), (math.nextafter(0, 1), 60)),
        (UTILS["certsync_args.port"], (value, "port"), (1, 65535)),
    ]
    for check, args, (low, high) in checks:
        try:
            number = check(*args)
        except SaltInvocationError:
            continue
        assert low <= number <= high, (check, value)


@PROPERTY
@given(st.dictionaries(st.sampled_from(["smtp", "imaps", "x"]), NAMEISH, max_size=3))
def test_endpoint_parsing_only_refuses_with_salts_error(endpoints):
    try:
        items = tlsprobe_mod._endpoint_list(endpoints)
    except SaltInvocationError:
        return
    assert all(0 < port < 65536 for _, port, _ in items)
