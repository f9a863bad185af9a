"""
Reading untrusted PEM, and what a certificate says
==================================================

The certificate library the certsync loader modules share (through
``__utils__["certsync_pem.<name>"]``): a bounded read of a regular file, PEM
split in one linear pass, certificates and keys parsed with every extension
decoded once, fingerprints and the SubjectPublicKeyInfo hash (what a
``TLSA 3 1 1`` record pins), names (RFC 6125), time in one format. Errors are
``CommandExecutionError`` naming the file; untrusted text in them is escaped.
"""

import datetime
import hashlib
import itertools
import os
import re
import stat

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
    from cryptography.x509 import verification
except ImportError:  # the modules that need it say so in their __virtual__
    pass

#: The largest PEM file certsync reads. A full chain is a few KiB.
MAX_PEM_BYTES = 256 * 1024
_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----")
_KEY_LABELS = {b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY"}
_ENCRYPTED_LABELS = {b"ENCRYPTED PRIVATE KEY"}
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
MIN_RSA_BITS = 2048
#: The longest chain certsync installs: mbedTLS, inside many mail clients and
#: appliances, stops at 8 intermediates by default; a public CA sends 1 or 2.
MAX_CHAIN = 8


def spki_der(public_key):
    """The DER SubjectPublicKeyInfo of a ``cryptography`` public key."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spki_sha256(public_key):
    """SHA-256 of the SubjectPublicKeyInfo, lowercase hex (the data of ``TLSA 3 1 1``)."""
    return hashlib.sha256(spki_der(public_key)).hexdigest()


def same_key(public_key, other):
    """Whether two ``cryptography`` public keys are the same key."""
    return spki_der(public_key) == spki_der(other)


def shown(text, limit=300):
    """Untrusted text (a SAN, a subject, a file name) as one safe line: control and
    non-ASCII characters escaped, bounded in length."""
    escaped = str(text).encode("unicode_escape").decode("ascii")
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."


def read_file(path, follow=True, limit=None, what="a PEM file"):
    """Read a regular file (through symlinks unless ``follow`` is False), capped at
    ``limit`` bytes (MAX_PEM_BYTES); a special file (a FIFO, a device) is refused
    before anything is read from it."""
    limit = limit or MAX_PEM_BYTES
    named = shown(path)
    flags = os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        if os.path.islink(path):
            raise CommandExecutionError(
                f"{named}: dangling symlink to {shown(os.readlink(path))} (NPM's live/ link "
                "points at a file that does not exist)"
            ) from None
        raise CommandExecutionError(f"{named}: no such file") from None
    except PermissionError:
        raise CommandExecutionError(f"{named}: permission denied") from None
    except OSError as exc:
        if not follow and os.path.islink(path):
            raise CommandExecutionError(f"{named}: is a symlink; refusing to read it") from None
        raise CommandExecutionError(f"{named}: cannot open: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CommandExecutionError(f"{named}: not a regular file")
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise CommandExecutionError(f"{named}: cannot read: {exc.strerror}") from None
    if len(data) > limit:
        raise CommandExecutionError(f"{named}: larger than {limit} bytes, too large for {what}")
    return data


def pem_blocks(data, origin):
    """Split PEM text into (label, block) pairs; reject anything that is not PEM.

    One pass over the lines (linear in the input, whatever it holds): a block
    runs from its BEGIN line to the END line of the same label; another BEGIN
    first, or the end of the file, is a truncated block. Text outside blocks
    is ignored, as OpenSSL does.
    """
    origin = shown(origin)
    if not data.strip():
        raise CommandExecutionError(f"{origin}: empty")
    try:
        data.decode("ascii")
    except UnicodeDecodeError:
        kind = "binary DER" if data[:1] == b"\x30" else "binary data"
        raise CommandExecutionError(
            f"{origin}: holds {kind}, not PEM (expected -----BEGIN ...----- blocks)"
        ) from None
    blocks, label, lines, truncated = [], None, [], False
    for line in data.splitlines(keepends=True):
        begin = _PEM_BEGIN.search(line)
        if label is None:
            if begin:
                label, lines = begin.group(1), [line[begin.start() :]]
            continue
        if begin:
            truncated = True  # a BEGIN inside a block: the block before it has no END
            break
        lines.append(line)
        if line.strip() == b"-----END " + label + b"-----":
            blocks.append((label, b"".join(lines)))
            label = None
    if truncated or label is not None:
        raise CommandExecutionError(
            f"{origin}: truncated PEM: a -----BEGIN----- line has no matching -----END----- line"
        )
    if not blocks:
        raise CommandExecutionError(f"{origin}: no PEM block found, not a PEM file")
    return blocks


def load_certs(blocks, origin):
    origin = shown(origin)
    certs = []
    for label, block in blocks:
        if label != b"CERTIFICATE":
            continue
        try:
            cert = x509.load_pem_x509_certificate(block)
        except ValueError as exc:
            raise CommandExecutionError(
                f"{origin}: certificate {len(certs) + 1} is malformed: {shown(exc)}"
            ) from None
        try:
            _ = cert.extensions  # every extension decoded now, once: never later
            dns_sans(cert)
        except ValueError as exc:
            raise CommandExecutionError(
                f"{origin}: certificate {len(certs) + 1} has an extension that does not "
                f"decode: {shown(exc)}"
            ) from None
        certs.append(cert)
    return certs


def key_block(blocks, origin):
    """Return the one private key block of a file, or raise naming the problem."""
    if any(label in _ENCRYPTED_LABELS for label, _ in blocks) or any(
        b"Proc-Type: 4,ENCRYPTED" in block for _, block in blocks
    ):
        raise CommandExecutionError(
            f"{origin}: the private key is encrypted; mailcow needs an unencrypted key"
        )
    keys = [block for label, block in blocks if label in _KEY_LABELS]
    if not keys:
        found = ", ".join(sorted({label.decode() for label, _ in blocks}))
        raise CommandExecutionError(f"{origin}: no private key found (found: {found})")
    if len(keys) > 1:
        raise CommandExecutionError(
            f"{origin}: holds {len(keys)} private keys; expected exactly one"
        )
    return keys[0]


def read_certs(path):
    """Parse a PEM file of certificates; raise unless it holds at least one."""
    blocks = pem_blocks(read_file(path), path)
    if any(label in _KEY_LABELS | _ENCRYPTED_LABELS for label, _ in blocks):
        raise CommandExecutionError(
            f"{path}: holds a private key; a certificate file must not "
            "(mailcow's cert.pem is world-readable)"
        )
    certs = load_certs(blocks, path)
    if not certs:
        raise CommandExecutionError(f"{path}: no certificate found")
    return certs


def read_key(path):
    return load_key(pem_blocks(read_file(path), path), path)


def load_key(blocks, origin):
    """The one private key among the PEM ``blocks`` of ``origin``, parsed."""
    block = key_block(blocks, origin)
    try:
        return serialization.load_pem_private_key(block, password=None)
    except TypeError:
        raise CommandExecutionError(
            f"{origin}: the private key is encrypted; mailcow needs an unencrypted key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        # The library's message may quote the input: never pass it on.
        raise CommandExecutionError(
            f"{origin}: the private key is malformed or of an unsupported type"
        ) from None


def fingerprint(cert):
    return cert.fingerprint(hashes.SHA256()).hex()


def sha1_fingerprint(cert):
    """The SHA-1 fingerprint, lower-case hex: what HAProxy's ``show ssl cert`` names a
    certificate by (certsync's own fingerprints are SHA-256)."""
    return cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303 (an identifier, not a check)


def key_kind(public_key):
    """Return (type, size, curve) of a public key."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RSA", public_key.key_size, None
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = public_key.curve.name
        return "EC", public_key.key_size, _CURVES.get(curve, curve)
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256, None
    if isinstance(public_key, ed448.Ed448PublicKey):
        return "Ed448", 456, None
    if isinstance(public_key, dsa.DSAPublicKey):
        return "DSA", public_key.key_size, None
    return type(public_key).__name__, None, None


def key_label(public_key):
    kind, size, curve = key_kind(public_key)
    if curve:
        return f"{kind} {curve}"
    return f"{kind} {size}" if kind in ("RSA", "DSA") else kind


def iso(when):
    """``when`` (an aware datetime, or seconds since the epoch) as ``2026-11-30T01:02:03Z``."""
    if not isinstance(when, datetime.datetime):
        when = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def days_left(cert, now):
    return round((cert.not_valid_after_utc - now).total_seconds() / 86400, 2)


def dns_sans(cert):
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return ext.value.get_values_for_type(x509.DNSName)


def is_ca(cert):
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def cert_summary(cert, now):
    kind, size, curve = key_kind(cert.public_key())
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "sans": dns_sans(cert),
        "serial": format(cert.serial_number, "x"),
        "not_before": iso(cert.not_valid_before_utc),
        "not_after": iso(cert.not_valid_after_utc),
        "days_left": days_left(cert, now),
        "fingerprint": fingerprint(cert),
        "spki_sha256": spki_sha256(cert.public_key()),
        "key_type": kind,
        "key_size": size,
        "key_curve": curve,
    }


def describe(cert):
    return shown(cert.subject.rfc4514_string()) or "empty subject"


def is_dns_name(name, wildcard=False):
    """
    Tell whether ``name`` is a syntactically valid DNS host name.

    Letters, digits and hyphens, labels of 1 to 63 characters, at least two
    labels, 253 characters at most. With ``wildcard=True`` the left-most label
    may be ``*``.

    """
    if not isinstance(name, str) or not name or len(name) > 253:
        return False
    labels = name.lower().split(".")
    if wildcard and labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            return False
    # An all-numeric top-level label is an IPv4 address, not a host name (RFC 3696 2).
    return (
        len(labels) >= 2
        and all(_LABEL.fullmatch(label) for label in labels)
        and not re.fullmatch(r"[0-9]+", labels[-1])
    )


def name_matches(pattern, hostname):
    """
    Tell whether the certificate name ``pattern`` covers ``hostname``
    (RFC 6125: a wildcard is only the whole left-most label, matches exactly
    one label and never the apex).

    """
    if not is_dns_name(pattern, wildcard=True) or not is_dns_name(hostname):
        return False
    pattern, hostname = pattern.lower(), hostname.lower()
    if pattern == hostname:
        return True
    head, _, rest = pattern.partition(".")
    return head == "*" and hostname.partition(".")[2] == rest


def covers(cert, hostname):
    return any(name_matches(name, hostname) for name in dns_sans(cert))


def canonical_pair(fullchain, key):
    """Read a source pair, its key matching its certificate: (certificates, the chain's
    PEM and the key's PKCS#8 PEM as certsync writes them)."""
    certs = read_certs(fullchain)
    private_key = read_key(key)
    if not same_key(certs[0].public_key(), private_key.public_key()):
        raise CommandExecutionError(
            f"{key}: the private key does not match the certificate in {fullchain}"
        )
    cert_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certs, cert_pem, key_pem


def tlsa_name(hostname, port, protocol="tcp"):
    """The owner name of the TLSA records of ``hostname``'s ``port`` (RFC 6698):
    ``_25._tcp.mail.example.com``; a bad host name, port or protocol is refused."""
    if not is_dns_name(hostname):
        raise SaltInvocationError(f"hostname {hostname!r} is not a valid DNS host name")
    if protocol not in ("tcp", "udp") or not 0 < int(port) < 65536:
        raise SaltInvocationError(f"no TLSA name for port {port!r}/{protocol!r}")
    return f"_{int(port)}._{protocol}.{hostname.lower()}"


def has_key_block(blocks):
    """Whether the PEM ``blocks`` (label, bytes) hold a private key."""
    return any(label in _KEY_LABELS for label, _ in blocks)


# --------------------------------------------------------------------------
# What TLS servers and clients take: the checks of certsync.validate
# --------------------------------------------------------------------------


def _key_problems(public_key, origin):
    """Keys a public CA issues for and TLS clients verify: RSA >= 2048, EC P-256/384/521."""
    kind, size, curve = key_kind(public_key)
    if kind == "RSA" and size < MIN_RSA_BITS:
        return [f"{origin}: RSA key of {size} bits is too weak (at least {MIN_RSA_BITS})"]
    if kind == "EC" and curve not in _CURVES.values():
        return [
            f"{origin}: EC curve {shown(curve)}: TLS clients and servers take only "
            "P-256, P-384 and P-521"
        ]
    if kind in ("Ed25519", "Ed448"):
        return [
            f"{origin}: {kind} key: public CAs do not issue {kind} certificates and most mail "
            "clients cannot verify them, so certsync does not deploy one"
        ]
    if kind not in ("RSA", "EC"):
        return [f"{origin}: unsupported key type {key_label(public_key)}"]
    return []


def _usage_problems(certs, origin):
    """What TLS stacks refuse in the extensions: a leaf not for TLS servers, unknown
    critical extensions anywhere in the chain."""
    leaf, problems = certs[0], []
    try:
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    allowed = (
        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
        x509.oid.ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    )
    if usage is not None and not any(oid in usage for oid in allowed):
        problems.append(
            f"{origin}: the extended key usage does not allow a TLS server (no serverAuth)"
        )
    try:
        key_usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        key_usage = None
    if key_usage is not None:
        kind = key_kind(leaf.public_key())[0]
        fits = key_usage.digital_signature or (kind == "RSA" and key_usage.key_encipherment)
        if not fits:
            problems.append(
                f"{origin}: the key usage forbids the key's TLS use (digitalSignature"
                + (" or keyEncipherment" if kind == "RSA" else "")
                + " needed)"
            )
    for index, cert in enumerate(certs, start=1):
        problems += [
            f"{origin}: certificate {index} ({describe(cert)}) has an unknown critical "
            f"extension {ext.oid.dotted_string}: TLS clients refuse it"
            for ext in cert.extensions
            if ext.critical and isinstance(ext.value, x509.UnrecognizedExtension)
        ]
    return problems


def _chain_problems(certs, origin):
    problems = []
    if len(certs) > MAX_CHAIN:
        problems.append(
            f"{origin}: the chain holds {len(certs)} certificates; TLS clients take at most "
            f"{MAX_CHAIN} (a public CA sends 2 or 3)"
        )
        return problems
    last = certs[-1]
    if last.issuer != last.subject and not is_ca(last):
        problems.append(
            f"{origin}: certificate {len(certs)} ({describe(last)}) is not a CA and its "
            "issuer "
            f"({shown(last.issuer.rfc4514_string())}) is not in the file: the intermediate "
            "certificate is missing (use NPM's fullchain.pem)"
        )
    if is_ca(certs[0]):
        problems.append(
            f"{origin}: certificate 1 ({describe(certs[0])}) is a CA certificate; "
            "the leaf must come first"
        )
    for index, (child, parent) in enumerate(itertools.pairwise(certs), start=1):
        prefix = (
            f"{origin}: certificate {index} ({describe(child)}) was not issued by "
            f"certificate {index + 1} ({describe(parent)})"
        )
        try:
            child.verify_directly_issued_by(parent)
        except ValueError:
            problems.append(f"{prefix}: issuer name does not match (chain out of order?)")
        except InvalidSignature:
            problems.append(f"{prefix}: signature does not verify (foreign intermediate?)")
        except (TypeError, UnsupportedAlgorithm) as exc:
            problems.append(f"{prefix}: {exc}")
    return problems


def _validity_problems(certs, origin, now, min_days):
    problems = []
    for index, cert in enumerate(certs, start=1):
        name = f"{origin}: certificate {index} ({describe(cert)})"
        if now < cert.not_valid_before_utc:
            problems.append(f"{name} is not valid before {iso(cert.not_valid_before_utc)}")
        elif now > cert.not_valid_after_utc:
            problems.append(f"{name} expired on {iso(cert.not_valid_after_utc)}")
    days = days_left(certs[0], now)
    if 0 < days < min_days:
        problems.append(
            f"{origin}: the certificate has {days} days left, fewer than min_days={min_days}"
        )
    return problems


def _name_problems(leaf, hostname, origin):
    sans = dns_sans(leaf)
    problems = [
        f"{origin}: SAN '{shown(name)}' is not a valid DNS name"
        for name in sans
        if not is_dns_name(name, wildcard=True)
    ]
    if not covers(leaf, hostname):
        problems.append(
            f"{origin}: the certificate does not cover {hostname} "
            f"(SANs: {', '.join(shown(name) for name in sans) or 'none'})"
        )
    return problems


def trust_problems(certs, hostname, ca_file, now):
    """Whether the chain verifies against the roots in ``ca_file`` for ``hostname``."""
    roots = read_certs(ca_file)
    try:
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store(roots))
            .time(now)
            .build_server_verifier(x509.DNSName(hostname))
        )
        verifier.verify(certs[0], certs[1:])
    except verification.VerificationError as exc:
        return [f"the chain does not verify against {ca_file}: {exc}"]
    return []


def validation_problems(certs, private_key, hostname, min_days, origins):
    """Every check of :py:func:`certsync.validate` on parsed input (``private_key`` may be
    None): the chain, the validity windows and ``min_days``, the names, the key, the
    usages and the key match. ``origins``: the (certificate, key) files, for the messages."""
    cert_origin, key_origin = origins
    moment = now()
    leaf = certs[0]
    problems = _chain_problems(certs, cert_origin)
    problems += _validity_problems(certs, cert_origin, moment, min_days)
    problems += _name_problems(leaf, hostname, cert_origin)
    problems += _key_problems(leaf.public_key(), cert_origin)
    problems += _usage_problems(certs, cert_origin)
    if private_key is not None and not same_key(leaf.public_key(), private_key.public_key()):
        problems.append(
            f"{key_origin}: the private key ({key_label(private_key.public_key())}) does "
            f"not match the certificate's public key ({key_label(leaf.public_key())})"
        )
    return problems
