"""
Certificate operations for certsync
===================================

Inspect, validate and install a TLS certificate and its key: the pair a
certsync source publishes, in the directory a consumer's services read.

:depends: cryptography >= 42

Every function reads its inputs as untrusted: files are read through symlinks,
capped in size, parsed strictly, and each error names the problem and the file.
Private key material never appears in a return value, an exception or a log
line; certificates are identified by their SHA-256 fingerprint and the SHA-256
of their SubjectPublicKeyInfo (the data of a ``TLSA 3 1 1`` record).

Fingerprints are lowercase hex without separators. Times are ISO 8601 in UTC.
"""

import contextlib
import hashlib
import logging
import os
import re
import stat

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    HAS_CRYPTOGRAPHY = hasattr(x509.Certificate, "not_valid_after_utc")
except ImportError:
    HAS_CRYPTOGRAPHY = False

log = logging.getLogger(__name__)

__virtualname__ = "certsync"

#: Suffix of the copy of the previous pair that :py:func:`rollback` restores.
PREV_SUFFIX = ".certsync-prev"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
CERT_MODE = 0o644
KEY_MODE = 0o600
#: A file certsync may write beside a pair (install's ``files``): a plain name.
_FILE_NAME = re.compile(r"[A-Za-z0-9_][\w.-]{0,63}")

#: Seconds install/rollback (and the state) wait for another run's lock.
LOCK_TIMEOUT = 60
LOCK_FILE = ".certsync.lock"


def __virtual__():
    if not HAS_CRYPTOGRAPHY:
        return (False, "certsync needs the cryptography library, release 42 or newer")
    for needed in ("certsync_files.replace_file", "certsync_pem.read_certs"):
        if needed not in __utils__:
            util = needed.split(".")[0]
            return (False, f"certsync needs salt://_utils/{util}.py: saltutil.sync_all")
    return __virtualname__


class _Library:
    """A ``salt://_utils`` module through ``__utils__``: ``_pem.read_certs(path)``."""

    def __init__(self, name):
        self.name = name

    def __getattr__(self, function):
        return __utils__[f"{self.name}.{function}"]


_pem = _Library("certsync_pem")


def is_dns_name(name, wildcard=False):
    """
    Tell whether ``name`` is a syntactically valid DNS host name.

    Letters, digits and hyphens, labels of 1 to 63 characters, at least two
    labels, 253 characters at most. With ``wildcard=True`` the left-most label
    may be ``*``.

    CLI Example:

    .. code-block:: bash

        salt '*' certsync.is_dns_name mail.example.com
    """
    return _pem.is_dns_name(name, wildcard)


def name_matches(pattern, hostname):
    """
    Tell whether the certificate name ``pattern`` covers ``hostname``
    (RFC 6125: a wildcard is only the whole left-most label, matches exactly
    one label and never the apex).

    CLI Example:

    .. code-block:: bash

        salt '*' certsync.name_matches '*.example.com' mail.example.com
    """
    return _pem.name_matches(pattern, hostname)


def _check_hostname(hostname):
    if not _pem.is_dns_name(hostname):
        raise SaltInvocationError(f"hostname {hostname!r} is not a valid DNS host name")
    return hostname.lower()


# --------------------------------------------------------------------------
# Public functions: inspect, validate
# --------------------------------------------------------------------------


def info(path):
    """
    Describe the certificate(s) in a PEM file: subject, issuer, SANs, serial,
    validity, days left, SHA-256 fingerprint, SPKI SHA-256 (the ``TLSA 3 1 1``
    data), key type and size, and the chain length. Reads through symlinks.

    path
        A PEM file holding a certificate or a full chain, leaf first.

    CLI Example:

    .. code-block:: bash

        salt '*' certsync.info /etc/letsencrypt/live/npm-5/fullchain.pem
    """
    certs = _pem.read_certs(path)
    ret = _pem.cert_summary(certs[0], _pem.now())
    ret["path"] = path
    ret["chain_length"] = len(certs)
    ret["chain"] = [_pem.describe(cert) for cert in certs[1:]]
    return ret


def check_pair(cert, key):
    """
    Tell whether a private key belongs to a certificate, by comparing public
    keys (SubjectPublicKeyInfo). Works for RSA, EC (P-256/P-384/P-521),
    Ed25519 and Ed448.

    cert
        PEM file with the certificate (or a full chain, leaf first).

    key
        PEM file with the private key.

    CLI Example:

    .. code-block:: bash

        salt '*' certsync.check_pair /etc/letsencrypt/live/npm-5/fullchain.pem \
            /etc/letsencrypt/live/npm-5/privkey.pem
    """
    leaf = _pem.read_certs(cert)[0]
    private_key = _pem.read_key(key)
    match = _pem.same_key(leaf.public_key(), private_key.public_key())
    if not match:
        __context__["retcode"] = 1
    return {
        "match": match,
        "cert_key": _pem.key_label(leaf.public_key()),
        "key": _pem.key_label(private_key.public_key()),
        "spki_sha256": _pem.spki_sha256(leaf.public_key()),
    }


def validate(fullchain, key, hostname, min_days=7, ca_file=None):
    """
    Validate a certificate chain and its private key before deployment.

    Checks that both files are PEM of sane size; the chain holds the leaf
    first and each certificate is signed by the next; every certificate is
    inside its validity window and the leaf has at least ``min_days`` left;
    the key is unencrypted, alone in its file and matches the leaf (SPKI);
    the leaf's SANs are valid DNS names and cover ``hostname`` (RFC 6125);
    RSA keys have at least 2048 bits.

    Returns ``valid`` (bool), ``problems`` (every problem found, each naming
    its file) and, when the chain could be read, the leaf's fingerprint,
    SPKI SHA-256, SANs, ``not_after`` and days left. Exits non-zero on the
    CLI when invalid.

    fullchain
        PEM file with the leaf certificate followed by its intermediates.

    key
        PEM file with the private key.

    hostname
        The host name the certificate must cover.

    min_days
        The fewest days of validity the leaf must have left. Default: 7.

    ca_file
        Optional PEM bundle of trusted roots; when given, the chain must also
        verify against it for ``hostname``.

    CLI Example:

    .. code-block:: bash

        salt '*' certsync.validate /etc/letsencrypt/live/npm-5/fullchain.pem \
            /etc/letsencrypt/live/npm-5/privkey.pem mail.example.com min_days=14
    """
    hostname = _check_hostname(hostname)
    min_days = __utils__["certsync_args.number"](min_days, "min_days", 0, 3650)
    ret = {"valid": False, "problems": [], "fullchain": fullchain, "key": key}
    certs = private_key = None
    try:
        certs = _pem.read_certs(fullchain)
    except CommandExecutionError as exc:
        ret["problems"].append(str(exc))
    try:
        private_key = _pem.read_key(key)
    except CommandExecutionError as exc:
        ret["problems"].append(str(exc))
    if certs:
        leaf = certs[0]
        ret.update(
            fingerprint=_pem.fingerprint(leaf),
            spki_sha256=_pem.spki_sha256(leaf.public_key()),
            sans=_pem.dns_sans(leaf),
            not_before=_pem.iso(leaf.not_valid_before_utc),
            not_after=_pem.iso(leaf.not_valid_after_utc),
            days_left=_pem.days_left(leaf, _pem.now()),
            chain_length=len(certs),
        )
        ret["problems"] += _pem.validation_problems(
            certs, private_key, hostname, min_days, (fullchain, key)
        )
        if ca_file:
            ret["problems"] += _pem.trust_problems(certs, hostname, ca_file, _pem.now())
    ret["valid"] = not ret["problems"]
    if not ret["valid"]:
        __context__["retcode"] = 1
    return ret


def tlsa(cert, usage=3, selector=1, mtype=1):
    """
    Return the data of the TLSA record for a certificate, such as
    ``3 1 1 <sha256 of the SPKI>`` for ``_25._tcp.<host>``.

    cert
        PEM file with the certificate or full chain. Usages 3 (DANE-EE) and 1
        (PKIX-EE) take the leaf; 2 (DANE-TA) and 0 (PKIX-TA) take the last
        certificate of the chain, the issuer that signs the leaf's chain.

    usage
        0, 1, 2 or 3. Default: 3.

    selector
        0 (whole certificate) or 1 (SubjectPublicKeyInfo). Default: 1.

    mtype
        0 (exact), 1 (SHA-256) or 2 (SHA-512). Default: 1.

    CLI Example:

    .. code-block:: bash

        salt '*' certsync.tlsa /opt/mailcow-dockerized/data/assets/ssl/cert.pem
    """
    usage = _check_choice("usage", usage)
    selector = _check_choice("selector", selector)
    mtype = _check_choice("mtype", mtype)
    if usage > 3 or selector > 1 or mtype > 2:
        raise SaltInvocationError(
            f"unsupported TLSA parameters {usage} {selector} {mtype} "
            "(usage 0-3, selector 0-1, matching type 0-2)"
        )
    certs = _pem.read_certs(cert)
    chosen = certs[0] if usage in (1, 3) else certs[-1]
    if usage in (0, 2) and len(certs) == 1 and chosen.issuer != chosen.subject:
        raise CommandExecutionError(
            f"{_pem.shown(cert)}: TLSA usage {usage} matches the issuing CA, but the file holds "
            "only the leaf: give the full chain (fullchain.pem)"
        )
    if selector == 0:
        data = chosen.public_bytes(serialization.Encoding.DER)
    else:
        data = _pem.spki_der(chosen.public_key())
    if mtype == 1:
        data = hashlib.sha256(data).digest()
    elif mtype == 2:
        data = hashlib.sha512(data).digest()
    return f"{usage} {selector} {mtype} {data.hex()}"


def _check_choice(name, value):
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SaltInvocationError(f"TLSA {name} must be a number, not {value!r}") from None
    if number < 0:
        raise SaltInvocationError(f"TLSA {name} must not be negative")
    return number


# --------------------------------------------------------------------------
# Deployed pair: compare, install atomically, roll back
# --------------------------------------------------------------------------


def destination(dest):
    """
    Check a destination directory before anything reads or writes a pair in
    it: refused when it is missing, relative, or reached through a symlink in
    any component (a trailing slash included), or when its ``cert.pem`` or
    ``key.pem`` is not a real file. Returns the normalised path.

    CLI Example:

    .. code-block:: bash

        salt '*' certsync.destination /opt/mailcow-dockerized/data/assets/ssl
    """
    if not isinstance(dest, str) or not dest.strip():
        raise SaltInvocationError("the destination directory must be a non-empty path")
    if not os.path.isabs(dest):
        raise SaltInvocationError(f"{_pem.shown(dest)}: the destination must be an absolute path")
    path = os.path.normpath(dest)
    partial = os.sep
    for part in path.split(os.sep)[1:]:
        partial = os.path.join(partial, part)
        try:
            mode = os.lstat(partial).st_mode
        except FileNotFoundError:
            raise CommandExecutionError(
                f"{_pem.shown(dest)}: destination directory does not exist"
            ) from None
        if stat.S_ISLNK(mode):
            raise CommandExecutionError(
                f"{_pem.shown(partial)}: is a symlink on the way to the destination "
                f"{_pem.shown(dest)}; refusing to write through it"
            )
    if not stat.S_ISDIR(mode):
        raise CommandExecutionError(f"{_pem.shown(dest)}: destination is not a directory")
    for name in (CERT_FILE, KEY_FILE):
        target = os.path.join(path, name)
        if os.path.islink(target):
            raise CommandExecutionError(
                f"{_pem.shown(target)}: is a symlink; the service needs a real file, "
                "refusing to replace it"
            )
        if os.path.lexists(target) and not os.path.isfile(target):
            raise CommandExecutionError(f"{_pem.shown(target)}: exists and is not a regular file")
    return path


def _locked(dest):
    """The exclusive lock per destination (a lock file beside the pair) that install and
    roll back hold, waited for at most LOCK_TIMEOUT seconds."""
    return __utils__["certsync_files.locked"](os.path.join(dest, LOCK_FILE), LOCK_TIMEOUT)


def _read_deployed(dest):
    """Return (cert bytes, key bytes, modes) of the deployed pair; None where absent."""
    found = {}
    for name in (CERT_FILE, KEY_FILE):
        path = os.path.join(dest, name)
        try:
            found[name] = (_pem.read_file(path), stat.S_IMODE(os.lstat(path).st_mode))
        except CommandExecutionError:
            found[name] = (None, None)
    return found


def compare(fullchain, key, dest, files=None):
    """
    Compare a source pair with the pair deployed in ``dest``
    (``cert.pem``/``key.pem``) without changing anything.

    Returns ``current`` (True when ``dest`` holds exactly what
    :py:func:`install` would write, with modes 0644/0600, and each of
    ``files``, a mapping of file name to text, with that text),
    ``differences``, and the deployed certificate's fingerprint,
    ``not_after`` and SANs when it can be read.

    CLI Example:

    .. code-block:: bash

        salt '*' certsync.compare /etc/letsencrypt/live/npm-5/fullchain.pem \
            /etc/letsencrypt/live/npm-5/privkey.pem /opt/mailcow-dockerized/data/assets/ssl
    """
    destination(dest)
    _, cert_pem, key_pem = _pem.canonical_pair(fullchain, key)
    deployed = _read_deployed(dest)
    differences = []
    for name, want, mode in ((CERT_FILE, cert_pem, CERT_MODE), (KEY_FILE, key_pem, KEY_MODE)):
        have, have_mode = deployed[name]
        if have is None:
            differences.append(f"{name} is missing or unreadable")
        elif have != want:
            differences.append(f"{name} content differs")
        elif have_mode != mode:
            differences.append(f"{name} has mode {have_mode:04o}, want {mode:04o}")
    for name, text in _extra_files(dest, files).items():
        path = os.path.join(dest, name)
        have = _pem.read_file(path, follow=False) if os.path.isfile(path) else None
        if have != text.encode():
            differences.append(f"{name} is {'not ' if have is None else ''}to be rewritten")
    return {
        "current": not differences,
        "differences": differences,
        "deployed": deployed_info(dest),
    }


def _extra_files(dest, files):
    """The files (name -> text) written beside the pair, each a plain name in ``dest``."""
    files = files or {}
    if not isinstance(files, dict):
        raise SaltInvocationError("files must map file names to their text")
    for name, text in files.items():
        if (
            not isinstance(name, str)
            or not _FILE_NAME.fullmatch(name)
            or name in (CERT_FILE, KEY_FILE)
            or name.endswith(PREV_SUFFIX)
            or not isinstance(text, str)
        ):
            raise SaltInvocationError(f"{_pem.shown(dest)}: cannot write {str(name)[:60]!r} there")
    return files


def deployed_info(dest):
    """
    Describe the certificate deployed in ``dest/cert.pem``: fingerprint,
    ``not_after`` and SANs, or None when there is none or it cannot be read.

    CLI Example:

    .. code-block:: bash

        salt '*' certsync.deployed_info /opt/mailcow-dockerized/data/assets/ssl
    """
    try:
        leaf = _pem.read_certs(os.path.join(dest, CERT_FILE))[0]
    except CommandExecutionError:
        return None
    return {
        "fingerprint": _pem.fingerprint(leaf),
        "spki_sha256": _pem.spki_sha256(leaf.public_key()),
        "not_before": _pem.iso(leaf.not_valid_before_utc),
        "not_after": _pem.iso(leaf.not_valid_after_utc),
        "days_left": _pem.days_left(leaf, _pem.now()),
        "sans": _pem.dns_sans(leaf),
    }


#: What a killed run can leave in a destination: the temp files of write_temp
#: (``.cert.pem.certsync-<pid>-<hex>``, ``.key.pem.certsync-prev.certsync-...``).
_STALE_TEMP = re.compile(r"\.[\w.-]+\.certsync-[0-9]+-[0-9a-f]+")


def _remove_stale_temps(dest):
    """Remove the temp files of runs that were killed. Called under the destination's
    lock, so no other run is writing any."""
    for name in os.listdir(dest):
        if _STALE_TEMP.fullmatch(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(dest, name))


def _modes(names):
    return {name: KEY_MODE if name == KEY_FILE else CERT_MODE for name in names}


def _keep_previous(dest, names):
    """Copy each of ``names`` that exists in ``dest`` (the pair and the files written
    beside it) to ``<name>.certsync-prev``: a fresh file with its canonical mode (the
    key 0600, whatever mode the live one had) and the live file's owner, renamed into
    place, so that a prev file is never missing, half-replaced, or more readable than
    a key may be. A current pair that does not match (a run killed between its two
    renames) is not kept: the last whole pair stays the previous one."""
    contents = {
        name: _pem.read_file(os.path.join(dest, name), follow=False)
        for name in names
        if os.path.lexists(os.path.join(dest, name))
    }
    if CERT_FILE in contents and KEY_FILE in contents:
        try:
            _check_pair(dest, contents)
        except CommandExecutionError as exc:
            log.warning("certsync: %s: not kept as the previous pair (%s)", _pem.shown(dest), exc)
            del contents[CERT_FILE], contents[KEY_FILE]
    __utils__["certsync_files.keep_copies"](dest, contents, _modes(contents), PREV_SUFFIX)


def install(fullchain, key, dest, files=None, originals=None):
    """
    Install a certificate chain and its key into ``dest`` as ``cert.pem``
    (mode 0644) and ``key.pem`` (mode 0600), atomically: each file is written
    to a temp file in ``dest`` that has its final mode from the first byte,
    synced, then renamed over the old one. The previous pair is kept as
    ``cert.pem.certsync-prev``/``key.pem.certsync-prev`` (0644/0600) for
    :py:func:`rollback`. The owner of an existing file is kept, in its
    ``*.certsync-prev`` copy too.

    files
        Files to write beside the pair, with it (0644, their owner kept): a
        mapping of a plain file name to its text, such as the ``domains``
        list of a per-name directory. Each one replaced is kept as
        ``<name>.certsync-prev`` too, and restored with the pair.

    originals
        For a file of ``files`` that certsync did not write: the name to
        keep its first content under, the first time it is replaced (never
        overwritten after), e.g. ``{domains: domains.mailcow}``.

    Refuses a ``dest`` that is missing or a symlink, a ``cert.pem``/``key.pem``
    that is a symlink, and a key that does not match the certificate. Run
    :py:func:`validate` first for the full checks.

    fullchain
        PEM file with the leaf certificate followed by its intermediates.

    key
        PEM file with the private key.

    dest
        The directory to install into, e.g.
        ``/opt/mailcow-dockerized/data/assets/ssl``.

    CLI Example:

    .. code-block:: bash

        salt '*' certsync.install /etc/letsencrypt/live/npm-5/fullchain.pem \
            /etc/letsencrypt/live/npm-5/privkey.pem /opt/mailcow-dockerized/data/assets/ssl
    """
    dest = destination(dest)
    files = _extra_files(dest, files)
    originals = _extra_files(dest, originals)
    _extra_files(dest, dict.fromkeys(originals.values(), ""))  # kept as plain names too
    certs, cert_pem, key_pem = _pem.canonical_pair(fullchain, key)
    contents = {CERT_FILE: cert_pem, KEY_FILE: key_pem}
    contents.update((name, text.encode()) for name, text in files.items())
    with _locked(dest):
        previous = deployed_info(dest)
        try:
            _remove_stale_temps(dest)
            kept = {name: keep_as for name, keep_as in originals.items() if name in files}
            __utils__["certsync_files.keep_first"](dest, kept, _modes(kept))
            _keep_previous(dest, contents)
            __utils__["certsync_files.replace_set"](dest, contents, _modes(contents))
        except OSError as exc:
            raise CommandExecutionError(f"{_pem.shown(dest)}: install failed: {exc}") from None
    new = _pem.fingerprint(certs[0])
    log.info("certsync: installed %s into %s", new, _pem.shown(dest))
    return {
        "dest": dest,
        "fingerprint": new,
        "previous_fingerprint": previous["fingerprint"] if previous else None,
    }


def restore_previous(dest):
    """
    Restore the pair that :py:func:`install` replaced in the one directory
    ``dest`` (from ``*.certsync-prev``), atomically, under its lock. Refuses
    unless both previous files are there as real files (never read through a
    symlink) and hold a valid certificate and its matching key; what is
    serving is never deleted. :py:func:`rollback` does this for every
    directory of a deploy.

    CLI Example:

    .. code-block:: bash

        salt '*' certsync.restore_previous /opt/mailcow-dockerized/data/assets/ssl/mail.example.com
    """
    dest = destination(dest)
    with _locked(dest):
        contents = _previous_pair(dest)
        try:
            __utils__["certsync_files.replace_set"](dest, contents, _modes(contents))
        except OSError as exc:
            raise CommandExecutionError(f"{_pem.shown(dest)}: rollback failed: {exc}") from None
    restored = deployed_info(dest)
    log.warning("certsync: rolled %s back to %s", _pem.shown(dest), restored["fingerprint"])
    return {"dest": dest, "restored": restored["fingerprint"]}


def _previous_pair(dest):
    """The bytes of ``dest``'s previous pair, checked (a certificate and its key), and
    of each file kept beside it (``<name>.certsync-prev``)."""
    contents = {
        name: _pem.read_file(os.path.join(dest, name + PREV_SUFFIX), follow=False)
        for name in (CERT_FILE, KEY_FILE)
    }
    _check_previous(dest, contents)
    for entry in sorted(os.listdir(dest)):
        name = entry[: -len(PREV_SUFFIX)]
        if entry.endswith(PREV_SUFFIX) and name not in contents and _FILE_NAME.fullmatch(name):
            path = os.path.join(dest, entry)
            if os.path.isfile(path) and not os.path.islink(path):
                contents[name] = _pem.read_file(path, follow=False)
    return contents


def rollback_plan(dest):
    """
    What :py:func:`rollback` would restore: ``dest`` and each per-name
    directory under it that holds the same certificate as ``dest`` (the one
    deploy installed it in all of them) and keeps a previous pair; for each,
    the fingerprint it holds and the one it would get back. Every previous
    pair is checked first; one that is missing or broken is an error naming
    it, and nothing is restored.

    CLI Example:

    .. code-block:: bash

        salt '*' certsync.rollback_plan /opt/mailcow-dockerized/data/assets/ssl
    """
    dest = destination(dest)
    current = deployed_info(dest)
    if current is None:
        raise CommandExecutionError(
            f"{_pem.shown(dest)}: no certificate deployed; nothing to roll back"
        )
    dirs = [dest] + [
        os.path.join(dest, name)
        for name, fingerprint in sni_inventory(dest).items()
        if fingerprint == current["fingerprint"]
        and os.path.lexists(os.path.join(dest, name, CERT_FILE + PREV_SUFFIX))
    ]
    plan = []
    for directory in dirs:
        previous = _previous_pair(directory)
        leaf = _pem.load_certs(
            _pem.pem_blocks(previous[CERT_FILE], directory), os.path.join(directory, CERT_FILE)
        )[0]
        plan.append(
            {"dir": directory, "holds": current["fingerprint"], "restores": _pem.fingerprint(leaf)}
        )
    return plan


def rollback(dest):
    """
    Undo the deploy that installed the certificate ``dest`` holds, as one step:
    ``dest``'s previous pair back, and in every per-name directory that holds
    the same certificate (see :py:func:`rollback_plan`; all previous pairs are
    checked before any file changes). Files only: ``certsync_deploy.rollback``
    (or ``state.apply certsync.rollback``) also reloads, verifies on the wire
    and pauses the deploys. Returns the directories and fingerprints.

    CLI Example:

    .. code-block:: bash

        salt '*' certsync.rollback /opt/mailcow-dockerized/data/assets/ssl
    """
    plan = rollback_plan(dest)
    done = []
    for step in reversed(plan):  # per-name dirs first, the top-level pair last
        try:
            restore_previous(step["dir"])
        except CommandExecutionError as exc:
            raise CommandExecutionError(
                f"{exc}; rolled back before it: {', '.join(done) or 'nothing'}"
            ) from None
        done.append(step["dir"])
    return {"dest": plan[0]["dir"], "restored": plan[0]["restores"], "dirs": plan}


def _check_previous(dest, contents):
    """The previous pair must be a certificate and the key that matches it."""
    _check_pair(dest, contents, PREV_SUFFIX)


def _check_pair(dest, contents, suffix=""):
    """``contents`` (file name -> bytes of ``cert.pem<suffix>``/``key.pem<suffix>``) must
    be a certificate and the key that matches it; else CommandExecutionError."""
    origin = os.path.join(dest, CERT_FILE + suffix)
    blocks = _pem.pem_blocks(contents[CERT_FILE], origin)
    certs = _pem.load_certs(blocks, origin)
    if not certs or _pem.has_key_block(blocks):
        raise CommandExecutionError(
            f"{_pem.shown(origin)}: not a certificate file; nothing restored"
        )
    key_origin = os.path.join(dest, KEY_FILE + suffix)
    try:
        key = serialization.load_pem_private_key(
            _pem.key_block(_pem.pem_blocks(contents[KEY_FILE], key_origin), key_origin),
            password=None,
        )
    except (TypeError, ValueError, UnsupportedAlgorithm):
        raise CommandExecutionError(
            f"{_pem.shown(key_origin)}: not a usable private key; nothing restored"
        ) from None
    if not _pem.same_key(key.public_key(), certs[0].public_key()):
        raise CommandExecutionError(
            f"{_pem.shown(dest)}: the {'previous ' if suffix else ''}key does not match the "
            f"{'previous ' if suffix else ''}certificate; nothing restored"
        )


#: certsync's own files in a destination and its per-name dirs: what an uninstall
#: removes (the files written beside a pair stay: the service reads them).
_LEFTOVER = re.compile(
    rf"[\w.-]+{re.escape(PREV_SUFFIX)}|{re.escape(LOCK_FILE)}"
    r"|\.certsync-deploy\.lock|" + _STALE_TEMP.pattern
)


def leftovers(dest, remove=False):
    """
    certsync's own files in ``dest`` and its per-name directories: the
    previous pairs (``*.certsync-prev``), the lock files and temp files of
    killed runs; with ``remove=True`` they are deleted (what the formula's
    ``certsync.absent`` does). The pairs the service serves and the files
    written beside them (a per-name dir's ``domains`` list, the original kept
    of it) are never touched, nor a directory that has one of those names
    (certsync writes files only). Returns the paths.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync.leftovers /opt/mailcow-dockerized/data/assets/ssl
    """
    dest = destination(dest)
    dirs = [dest] + [
        os.path.join(dest, name)
        for name in sorted(os.listdir(dest))
        if os.path.isdir(os.path.join(dest, name)) and not os.path.islink(os.path.join(dest, name))
    ]
    found = [
        os.path.join(directory, name)
        for directory in dirs
        for name in sorted(os.listdir(directory))
        if _LEFTOVER.fullmatch(name)
        # certsync writes files only: a directory of that name is someone else's
        and not stat.S_ISDIR(os.lstat(os.path.join(directory, name)).st_mode)
    ]
    for path in found if remove else []:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise CommandExecutionError(
                f"{_pem.shown(path)}: cannot remove: {exc.strerror}"
            ) from None
    return found


def sni_inventory(dest):
    """
    Every directory ``dest/<name>/`` holding a readable ``cert.pem``, with
    the fingerprint of its leaf: the per-name pairs a service may serve
    ahead of the top-level pair (mailcow's with ``ENABLE_SSL_SNI=y``).

    CLI Example:

    .. code-block:: bash

        salt '*' certsync.sni_inventory /opt/mailcow-dockerized/data/assets/ssl
    """
    destination(dest)
    found = {}
    for name in sorted(os.listdir(dest)):
        path = os.path.join(dest, name)
        if os.path.isdir(path) and not os.path.islink(path):
            deployed = deployed_info(path)
            if deployed:
                found[name] = deployed["fingerprint"]
    return found
