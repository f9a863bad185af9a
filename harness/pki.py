"""Test PKI: a root CA, an intermediate and leaves, generated with cryptography."""

import datetime
import hashlib
import os
import pathlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def new_key(kind="ec-p256"):
    """Return a new private key: rsa-1024/2048/4096, ec-p256/p384/p521, ed25519, ed448."""
    if kind.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[4:]))
    curves = {
        "ec-p256": ec.SECP256R1,
        "ec-p384": ec.SECP384R1,
        "ec-p521": ec.SECP521R1,
        "ec-secp256k1": ec.SECP256K1,
    }
    if kind in curves:
        return ec.generate_private_key(curves[kind]())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ed448":
        return ed448.Ed448PrivateKey.generate()
    raise ValueError(kind)


def _sign_hash(issuer_key, digest):
    if isinstance(issuer_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return digest or hashes.SHA256()


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass
class Issued:
    """A certificate with its key and the chain above it (issuer first)."""

    cert: x509.Certificate
    key: object
    chain: list = field(default_factory=list)

    @classmethod
    def read(cls, fullchain, key):
        """The pair a source stored: its chain file (leaf first) and its key file."""
        chain = x509.load_pem_x509_certificates(pathlib.Path(fullchain).read_bytes())
        private = serialization.load_pem_private_key(pathlib.Path(key).read_bytes(), None)
        return cls(chain[0], private, chain[1:])

    def cert_pem(self):
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def fullchain_pem(self):
        return self.cert_pem() + b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in self.chain
        )

    def key_pem(self, fmt=serialization.PrivateFormat.PKCS8, password=None):
        encryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self.key.private_bytes(serialization.Encoding.PEM, fmt, encryption)

    def key_der(self):
        return self.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def fingerprint(self):
        return self.cert.fingerprint(hashes.SHA256()).hex()

    @property
    def spki_sha256(self):
        """The SHA-256 of the SubjectPublicKeyInfo: a TLSA 3 1 1 record's data."""
        der = self.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(der).hexdigest()


def issue(
    subject,
    issuer=None,
    key=None,
    sans=(),
    ca=False,
    not_before=None,
    not_after=None,
    digest=None,
    key_kind="ec-p256",
    eku=(ExtendedKeyUsageOID.SERVER_AUTH,),
    extra=(),
):
    """Issue a certificate; self-signed when ``issuer`` is None. A leaf gets ``eku``
    (none when empty); ``extra`` adds (extension value, critical) pairs."""
    key = key or new_key(key_kind)
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.cert.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - DAY)
        .not_valid_after(not_after or NOW + 90 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    elif eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    for value, critical in extra:
        builder = builder.add_extension(value, critical=critical)
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False
        )
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    cert = builder.sign(signer_key, _sign_hash(signer_key, digest))
    chain = [issuer.cert, *issuer.chain] if issuer else []
    # A full chain stops below the root, as Let's Encrypt's does.
    if chain and chain[-1].issuer == chain[-1].subject:
        chain = chain[:-1]
    return Issued(cert, key, chain)


class TestCA:
    """A root and an intermediate, issuing leaves like a public CA would."""

    __test__ = False

    def __init__(self, name="certsync test", key_kind="ec-p384"):
        self.root = issue(f"{name} root", ca=True, key_kind=key_kind, not_after=NOW + 3650 * DAY)
        self.intermediate = issue(
            f"{name} intermediate",
            issuer=self.root,
            ca=True,
            key_kind=key_kind,
            not_after=NOW + 1825 * DAY,
        )

    def leaf(self, hostname="mail.example.test", sans=None, **kwargs):
        return issue(hostname, issuer=self.intermediate, sans=sans or [hostname], **kwargs)

    def root_pem(self):
        return self.root.cert_pem()


def write_npm_tree(live_dir, npm_id, issued, version=1):
    """
    Write an NPM/certbot-style pair: ``archive/npm-N/{fullchain,privkey}V.pem``
    with ``live/npm-N/*.pem`` as relative symlinks into it. Returns the live dir.

    Only for shapes the real certbot (``support.acme``) cannot make against
    pebble: leaves from a test CA with a chosen key type, names, validity or
    defect (expired, wrong names, weak keys, several ``npm-N`` dirs in one
    ``live/``), written in milliseconds. The NPM source of the bus, rollover
    and renewal tests, the demo and the benchmarks is the real certbot.
    """
    live_dir = os.fspath(live_dir)
    base = os.path.dirname(live_dir)
    archive = os.path.join(base, "archive", f"npm-{npm_id}")
    live = os.path.join(live_dir, f"npm-{npm_id}")
    os.makedirs(archive, exist_ok=True)
    os.makedirs(live, exist_ok=True)
    files = {
        "fullchain": issued.fullchain_pem(),
        "privkey": issued.key_pem(),
        "cert": issued.cert_pem(),
        "chain": issued.fullchain_pem()[len(issued.cert_pem()) :],
    }
    for stem, data in files.items():
        target = os.path.join(archive, f"{stem}{version}.pem")
        with open(target, "wb") as handle:
            handle.write(data)
        os.chmod(target, 0o600 if stem == "privkey" else 0o644)
        link = os.path.join(live, f"{stem}.pem")
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.relpath(target, live), link)
    return live


def write_pair(directory, issued, cert_name="cert.pem", key_name="key.pem"):
    """Write a cert.pem/key.pem pair as mailcow keeps it."""
    os.makedirs(directory, exist_ok=True)
    cert_path = os.path.join(directory, cert_name)
    key_path = os.path.join(directory, key_name)
    with open(cert_path, "wb") as handle:
        handle.write(issued.fullchain_pem())
    os.chmod(cert_path, 0o644)
    with open(key_path, "wb") as handle:
        handle.write(issued.key_pem())
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def write_sni_dir(ssl_dir, issued, names):
    """A mailcow per-name dir ``ssl_dir/<first name>/``: the pair and its ``domains`` file."""
    directory = os.path.join(ssl_dir, names[0])
    write_pair(directory, issued)
    with open(os.path.join(directory, "domains"), "w", encoding="ascii") as handle:
        handle.write(" ".join(names))
    return directory
