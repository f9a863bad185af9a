"""
The bad-input suite: each case builds a broken source or destination beside a
serving pair and names the error certsync.deployed must report. The unit and
functional tests run the same cases; both assert that the deployed files did
not change.
"""

import dataclasses
import os

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from harness.pki import DAY, NOW, TestCA, issue, write_npm_tree, write_pair

HOST = "mail.example.test"


@dataclasses.dataclass
class Layout:
    """A serving pair in ``dest`` and a source dir to deploy from."""

    root: str
    dest: str
    source: str

    def put(self, name, data, mode=0o644):
        path = os.path.join(self.source, name)
        if os.path.lexists(path):
            os.unlink(path)
        with open(path, "wb") as handle:
            handle.write(data)
        os.chmod(path, mode)
        return path


def make_layout(tmp_path, ca, serving):
    root = os.fspath(tmp_path)
    dest = os.path.join(root, "mailcow", "data", "assets", "ssl")
    write_pair(dest, serving)
    source = os.path.join(root, "npm", "live", "npm-5")
    os.makedirs(source)
    return Layout(root, dest, source)


def snapshot(directory):
    """Every file below ``directory`` with its bytes, mode and link target."""
    found = {}
    for top, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            content = (
                os.readlink(path)
                if os.path.islink(path)
                else (
                    open(path, "rb").read() if os.path.isfile(path) else None  # noqa: SIM115
                )
            )
            if name.startswith(".certsync") and name.endswith(".lock"):
                continue  # a run's lock file: no content, not the pair
            found[os.path.relpath(path, directory)] = (st.st_mode, content)
    return found


CASES = {}


def case(expect, **state_args):
    """Register a case: its builder writes the bad input into a Layout."""

    def register(builder):
        CASES[builder.__name__] = (builder, expect, state_args)
        return builder

    return register


def _live_dir_instead_of_source(layout):
    """NPM's live/ dir (the ``{live}`` of a case's arguments), its npm-5 left to the case."""
    os.rmdir(layout.source)
    return os.path.dirname(layout.source)


def _pair(layout, issued, key=None):
    layout.put("fullchain.pem", issued.fullchain_pem())
    layout.put("privkey.pem", key if key is not None else issued.key_pem(), 0o600)


@case("does not match the certificate's public key (EC P-384)")
def mismatched_key_same_algorithm(layout, ca, good):
    other = ca.leaf(HOST, key_kind="ec-p384")
    _pair(layout, good, other.key_pem())


@case("private key (RSA 2048) does not match the certificate's public key (EC P-384)")
def mismatched_key_other_algorithm(layout, ca, good):
    _pair(layout, good, ca.leaf(HOST, key_kind="rsa-2048").key_pem())


@case("private key (Ed448) does not match the certificate's public key (Ed25519)")
def mismatched_edwards_keys(layout, ca, good):
    leaf = ca.leaf(HOST, key_kind="ed25519")
    _pair(layout, leaf, ca.leaf(HOST, key_kind="ed448").key_pem())


@case("does not cover mail.example.test (SANs: www.example.test)")
def san_not_covering_host(layout, ca, good):
    _pair(layout, ca.leaf("www.example.test"))


@case("does not cover mail.example.test (SANs: none)")
def no_san_only_common_name(layout, ca, good):
    _pair(layout, issue(HOST, issuer=ca.intermediate))


@case("does not cover a.mail.example.test (SANs: *.example.test)", hostname="a.mail.example.test")
def wildcard_at_the_wrong_level(layout, ca, good):
    _pair(layout, ca.leaf("*.example.test"))


@case("does not cover example.test (SANs: *.example.test)", hostname="example.test")
def wildcard_does_not_cover_apex(layout, ca, good):
    _pair(layout, ca.leaf("*.example.test"))


@case("SAN 'm*.example.test' is not a valid DNS name")
def partial_wildcard(layout, ca, good):
    _pair(layout, ca.leaf("m*.example.test"))


@case("expired on")
def expired(layout, ca, good):
    _pair(layout, ca.leaf(HOST, not_before=NOW - 100 * DAY, not_after=NOW - DAY))


@case("is not valid before")
def not_yet_valid(layout, ca, good):
    _pair(layout, ca.leaf(HOST, not_before=NOW + DAY, not_after=NOW + 91 * DAY))


@case("days left, fewer than min_days=7")
def too_few_days_left(layout, ca, good):
    _pair(layout, ca.leaf(HOST, not_after=NOW + 3 * DAY))


@case("truncated PEM: a -----BEGIN----- line has no matching -----END----- line")
def truncated_pem(layout, ca, good):
    _pair(layout, good)
    layout.put("fullchain.pem", good.fullchain_pem()[:300])


@case("fullchain.pem: no PEM block found, not a PEM file")
def garbage(layout, ca, good):
    _pair(layout, good)
    layout.put("fullchain.pem", b"this is not a certificate\n" * 10)


@case("fullchain.pem: empty")
def empty_file(layout, ca, good):
    _pair(layout, good)
    layout.put("fullchain.pem", b"")


@case("privkey.pem: empty")
def empty_key(layout, ca, good):
    _pair(layout, good, b"\n\n")


@case("fullchain.pem: holds a private key; a certificate file must not")
def key_only(layout, ca, good):
    _pair(layout, good)
    layout.put("fullchain.pem", good.key_pem())


@case("privkey.pem: no private key found (found: CERTIFICATE)")
def cert_only(layout, ca, good):
    _pair(layout, good, good.cert_pem())


@case("the private key is encrypted; mailcow needs an unencrypted key")
def encrypted_key_pkcs8(layout, ca, good):
    _pair(layout, good, good.key_pem(password=b"secret"))


@case("the private key is encrypted; mailcow needs an unencrypted key")
def encrypted_key_traditional(layout, ca, good):
    leaf = ca.leaf(HOST, key_kind="rsa-2048")
    _pair(layout, leaf, leaf.key_pem(serialization.PrivateFormat.TraditionalOpenSSL, b"secret"))


@case("privkey.pem: holds 2 private keys; expected exactly one")
def two_keys(layout, ca, good):
    _pair(layout, good, good.key_pem() + ca.leaf(HOST).key_pem())


@case("RSA key of 1024 bits is too weak (at least 2048)")
def rsa_1024(layout, ca, good):
    _pair(layout, ca.leaf(HOST, key_kind="rsa-1024"))


@case("issuer name does not match (chain out of order?)")
def chain_out_of_order(layout, ca, good):
    sub = issue("certsync test sub-intermediate", issuer=ca.intermediate, ca=True)
    leaf = issue(HOST, issuer=sub, sans=[HOST])
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    _pair(layout, leaf)
    layout.put("fullchain.pem", pem(leaf.cert) + pem(ca.intermediate.cert) + pem(sub.cert))


@case("signature does not verify (foreign intermediate?)")
def foreign_intermediate(layout, ca, good):
    impostor = TestCA()  # same names, other keys
    chain = good.cert_pem() + impostor.intermediate.cert_pem()
    _pair(layout, good)
    layout.put("fullchain.pem", chain)


@case("is a CA certificate; the leaf must come first")
def leaf_not_first(layout, ca, good):
    _pair(layout, good)
    layout.put("fullchain.pem", ca.intermediate.cert_pem() + good.cert_pem())


@case("larger than 262144 bytes, too large for a PEM file")
def oversized_file(layout, ca, good):
    _pair(layout, good)
    layout.put("fullchain.pem", good.fullchain_pem() + b"#" * 300_000)


@case("fullchain.pem: holds binary DER, not PEM")
def binary_der_as_pem(layout, ca, good):
    _pair(layout, good)
    layout.put("fullchain.pem", good.cert.public_bytes(serialization.Encoding.DER))


@case("privkey.pem: holds binary DER, not PEM")
def binary_der_key(layout, ca, good):
    _pair(layout, good, good.key_der())


@case("fullchain.pem: no certificate found")
def no_certificate_block(layout, ca, good):
    _pair(layout, good)
    layout.put(
        "fullchain.pem",
        good.cert.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


@case("fullchain.pem: certificate 1 is malformed")
def malformed_certificate(layout, ca, good):
    _pair(layout, good)
    layout.put(
        "fullchain.pem", b"-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n"
    )


@case("-link: is a symlink on the way to the destination")
def destination_is_a_symlink(layout, ca, good):
    _pair(layout, good)
    os.symlink(layout.dest, layout.dest + "-link")
    layout.dest = layout.dest + "-link"


@case("cert.pem: is a symlink; the service needs a real file")
def deployed_cert_is_a_symlink(layout, ca, good):
    _pair(layout, good)
    cert = os.path.join(layout.dest, "cert.pem")
    os.rename(cert, cert + ".real")
    os.symlink("cert.pem.real", cert)


@case("destination directory does not exist")
def destination_missing(layout, ca, good):
    _pair(layout, good)
    layout.dest = os.path.join(layout.dest, "no-such-dir")


@case("fullchain.pem: not a regular file")
def source_is_a_directory(layout, ca, good):
    _pair(layout, good)
    os.unlink(os.path.join(layout.source, "fullchain.pem"))
    os.mkdir(os.path.join(layout.source, "fullchain.pem"))


@case("fullchain.pem: no such file")
def source_missing(layout, ca, good):
    _pair(layout, good)
    os.unlink(os.path.join(layout.source, "fullchain.pem"))


@case("dangling symlink to ../../archive/npm-5/privkey1.pem")
def live_link_dangling(layout, ca, good):
    live_dir = _live_dir_instead_of_source(layout)
    write_npm_tree(live_dir, 5, good)
    os.unlink(os.path.join(os.path.dirname(live_dir), "archive", "npm-5", "privkey1.pem"))


@case("SAN '../../../../etc' is not a valid DNS name")
def hostile_san_for_sni_dir(layout, ca, good):
    os.makedirs(os.path.join(layout.root, "etc"), exist_ok=True)
    _pair(layout, ca.leaf(HOST, sans=[HOST, "../../../../etc"]))


@case(
    "no usable certificate covers mail.example.test (looked at: npm-7 [www.example.test])",
    source=None,
    live_dir="{live}",
)
def nothing_in_live_dir_covers_host(layout, ca, good):
    live_dir = _live_dir_instead_of_source(layout)
    write_npm_tree(live_dir, 7, ca.leaf("www.example.test"))


@case(
    "hostname 'mail.example.test/../../x' is not a valid DNS host name",
    hostname="mail.example.test/../../x",
)
def hostile_hostname(layout, ca, good):
    _pair(layout, good)


# ----------------------------------------------- what a hostile run found (issue 10)

SAN_OID = x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME
EKU_OID = x509.oid.ExtensionOID.EXTENDED_KEY_USAGE
UNKNOWN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1")


def _undecodable(oid):
    return (x509.UnrecognizedExtension(oid, b"\x30\x05garbage"), False)


def _key_usage(**allowed):
    flags = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    flags.update(allowed)
    return (x509.KeyUsage(**flags), True)


@case("has an extension that does not decode")
def undecodable_san(layout, ca, good):
    _pair(layout, issue(HOST, issuer=ca.intermediate, extra=[_undecodable(SAN_OID)]))


@case("has an extension that does not decode")
def undecodable_eku(layout, ca, good):
    _pair(
        layout,
        issue(HOST, issuer=ca.intermediate, sans=[HOST], eku=(), extra=[_undecodable(EKU_OID)]),
    )


@case("truncated PEM: a -----BEGIN----- line has no matching -----END----- line")
def fourteen_thousand_begin_lines(layout, ca, good):
    layout.put("fullchain.pem", b"-----BEGIN X-----\n" * 14000)  # 252 KB, under the cap
    layout.put("privkey.pem", good.key_pem(), 0o600)


@case("truncated PEM")
def begin_inside_a_block(layout, ca, good):
    pem = good.fullchain_pem()
    layout.put("fullchain.pem", pem.replace(b"-----END CERTIFICATE-----", b"", 1))
    layout.put("privkey.pem", good.key_pem(), 0o600)


@case("EC curve secp256k1: TLS clients and servers take only P-256, P-384 and P-521")
def curve_no_tls_stack_takes(layout, ca, good):
    _pair(layout, ca.leaf(HOST, key_kind="ec-secp256k1"))


@case("Ed25519 key: public CAs do not issue Ed25519 certificates")
def ed25519_leaf(layout, ca, good):
    _pair(layout, ca.leaf(HOST, key_kind="ed25519"))


@case("Ed448 key: public CAs do not issue Ed448 certificates")
def ed448_leaf(layout, ca, good):
    _pair(layout, ca.leaf(HOST, key_kind="ed448"))


@case("the extended key usage does not allow a TLS server (no serverAuth)")
def client_auth_only(layout, ca, good):
    _pair(layout, ca.leaf(HOST, eku=(x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,)))


@case("the key usage forbids the key's TLS use (digitalSignature needed)")
def ec_key_usage_without_signature(layout, ca, good):
    _pair(layout, ca.leaf(HOST, extra=[_key_usage(key_agreement=True)]))


@case("the key usage forbids the key's TLS use (digitalSignature or keyEncipherment needed)")
def rsa_key_usage_cert_sign_only(layout, ca, good):
    _pair(layout, ca.leaf(HOST, key_kind="rsa-2048", extra=[_key_usage(key_cert_sign=True)]))


@case("has an unknown critical extension 1.3.6.1.4.1.55555.1: TLS clients refuse it")
def unknown_critical_extension(layout, ca, good):
    extension = (x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), True)
    _pair(layout, ca.leaf(HOST, extra=[extension]))


@case("certificate 2 (CN=odd intermediate) has an unknown critical extension")
def unknown_critical_extension_in_the_intermediate(layout, ca, good):
    extension = (x509.UnrecognizedExtension(UNKNOWN_OID, b"\x05\x00"), True)
    odd = issue("odd intermediate", issuer=ca.root, ca=True, key_kind="ec-p384", extra=[extension])
    _pair(layout, issue(HOST, issuer=odd, sans=[HOST]))


@case("is not a CA and its issuer (CN=certsync test intermediate) is not in the file")
def leaf_without_its_intermediate(layout, ca, good):
    layout.put("fullchain.pem", good.cert_pem())
    layout.put("privkey.pem", good.key_pem(), 0o600)


@case("the chain holds 9 certificates; TLS clients take at most 8")
def chain_longer_than_clients_take(layout, ca, good):
    parent = ca.intermediate
    for depth in range(7):
        parent = issue(f"level {depth}", issuer=parent, ca=True, key_kind="ec-p256")
    _pair(layout, issue(HOST, issuer=parent, sans=[HOST]))


@case("the chain holds 300 certificates; TLS clients take at most 8")
def three_hundred_certificates(layout, ca, good):
    pem = good.cert_pem() + ca.intermediate.cert_pem() * 299
    layout.put("fullchain.pem", pem)
    layout.put("privkey.pem", good.key_pem(), 0o600)


@case("SAN 'mail.example.test\\nforged: root logged in' is not a valid DNS name")
def san_forging_a_log_line(layout, ca, good):
    _pair(layout, ca.leaf(HOST, sans=[HOST, "mail.example.test\nforged: root logged in"]))


@case("min_days must be between 0 and 3650, not nan", min_days="nan")
def min_days_nan(layout, ca, good):
    _pair(layout, good)


@case("min_days must be between 0 and 3650, not inf", min_days="inf")
def min_days_infinite(layout, ca, good):
    _pair(layout, good)


@case("min_days must be between 0 and 3650, not -5.0", min_days="-5")
def min_days_negative(layout, ca, good):
    _pair(layout, good)


@case("verify_timeout must be a number of seconds, not 'abc'", verify_timeout="abc")
def verify_timeout_not_a_number(layout, ca, good):
    _pair(layout, good)


@case("verify_timeout must be between 0 and 3600 seconds", verify_timeout="0")
def verify_timeout_zero(layout, ca, good):
    _pair(layout, good)


@case("verify_timeout must be between 0 and 3600 seconds", verify_timeout="nan")
def verify_timeout_nan(layout, ca, good):
    _pair(layout, good)


@case("hostname '1.2.3.4' is not a valid DNS host name", hostname="1.2.3.4")
def numeric_hostname(layout, ca, good):
    _pair(layout, good)


@case("-link: is a symlink on the way to the destination")
def destination_symlink_with_a_trailing_slash(layout, ca, good):
    _pair(layout, good)
    os.symlink(layout.dest, layout.dest + "-link")
    layout.dest = layout.dest + "-link/"


@case("the destination must be an absolute path")
def relative_destination(layout, ca, good):
    _pair(layout, good)
    layout.dest = os.path.relpath(layout.dest)


@case(
    "npm-5: covers mail.example.test but its privkey.pem does not match the certificate",
    source=None,
    live_dir="{live}",
)
def only_covering_dir_has_a_foreign_key(layout, ca, good):
    live_dir = _live_dir_instead_of_source(layout)
    live = write_npm_tree(live_dir, 5, good)
    archive = os.path.realpath(os.path.join(live, "privkey.pem"))
    with open(archive, "wb") as handle:
        handle.write(ca.leaf(HOST).key_pem())


@case("npm-5: covers mail.example.test but expired on", source=None, live_dir="{live}")
def only_covering_dir_expired(layout, ca, good):
    live_dir = _live_dir_instead_of_source(layout)
    write_npm_tree(live_dir, 5, ca.leaf(HOST, not_before=NOW - 100 * DAY, not_after=NOW - DAY))


@case("looked at: npm-\\n9 [www.example.test]", source=None, live_dir="{live}")
def live_dir_entry_forging_a_line(layout, ca, good):
    live_dir = _live_dir_instead_of_source(layout)
    write_npm_tree(live_dir, "\n9", ca.leaf("www.example.test"))


@case("no usable certificate covers mail.example.test", source=None, live_dir="{live}")
def live_dir_with_many_hostile_dirs(layout, ca, good):  # each refused in linear time
    live_dir = _live_dir_instead_of_source(layout)
    hostile = b"-----BEGIN X-----\n" * 14000
    for number in range(4):
        os.makedirs(os.path.join(live_dir, f"npm-{number}"))
        with open(os.path.join(live_dir, f"npm-{number}", "fullchain.pem"), "wb") as handle:
            handle.write(hostile)


@case("roots.pem: truncated PEM", ca_file="{live}/roots.pem")
def hostile_ca_file(layout, ca, good):
    _pair(layout, good)
    with open(os.path.join(os.path.dirname(layout.source), "roots.pem"), "wb") as handle:
        handle.write(b"-----BEGIN CERTIFICATE-----\nMIIB\n")


@case("the chain does not verify against", ca_file="{live}/roots.pem")
def chain_from_another_ca(layout, ca, good):
    _pair(layout, good)
    with open(os.path.join(os.path.dirname(layout.source), "roots.pem"), "wb") as handle:
        handle.write(TestCA("someone else").root_pem())


@case("fullchain.pem: not a regular file")
def source_is_a_fifo(layout, ca, good):
    _pair(layout, good)
    os.unlink(os.path.join(layout.source, "fullchain.pem"))
    os.mkfifo(os.path.join(layout.source, "fullchain.pem"))


def build(name, tmp_path, ca, good, serving):
    """Build case ``name``; return (layout, state kwargs, expected text)."""
    builder, expect, overrides = CASES[name]
    layout = make_layout(tmp_path, ca, serving)
    builder(layout, ca, good)
    args = {"name": layout.dest, "hostname": HOST, "source": layout.source}
    for key, value in overrides.items():
        if value is None:
            args.pop(key, None)
        else:
            args[key] = value.format(live=os.path.dirname(layout.source))
    return layout, args, expect
