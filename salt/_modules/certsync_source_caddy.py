"""
The ``caddy`` source kind: Caddy's certificate storage
======================================================

One provider behind ``certsync_source``: where Caddy (certmagic) keeps the
pair it manages for a hostname, which files change when it renews, and
whether its next certificate keeps the key. Caddy stores each site's pair as
``<storage>/certificates/<issuer>/<name>/<name>.crt`` (the chain, leaf
first), ``.key`` and ``.json``, the name made safe for a file name
(``*.example.com`` is ``wildcard_.example.com``). Its settings are the
pillar's ``certsync:source`` keys:

storage
    Caddy's storage root (its ``storage file_system`` root; Debian's caddy
    service: ``/var/lib/caddy/.local/share/caddy``). Required.

issuer
    The issuer directory under ``certificates/`` (``acme-v02.api.letsencrypt.org-directory``)
    to take the pair from. Default: every issuer's, the newest usable pair.

caddy
    The ``caddy`` binary whose version tells whether a renewal keeps the key.
    Default: ``caddy`` on the PATH.

reuse_private_keys
    True when Caddy (2.8 or newer) is configured with ``reuse_private_keys``
    in its ``tls`` directive. Default: False.

Whether the key survives a renewal depends on Caddy's release: up to 2.6
(certmagic before 0.18.1, Debian bookworm's 2.6.2) a renewal, and a
re-issue while the ``.key`` is still stored, reuses the stored key; 2.7
makes a new key for every certificate and has no setting to keep it; from
2.8 ``reuse_private_keys`` keeps it. certsync never edits Caddy's
configuration: ``keep_key`` says what Caddy does, and fails when a key
pinned by a TLSA record would change (the DANE gate then rolls it over).
"""

import os
import re
import subprocess

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "certsync_source_caddy"

_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
#: Seconds ``caddy version`` may take.
VERSION_TIMEOUT = 10


def __virtual__():
    if "certsync.info" not in __salt__:
        return (False, "certsync_source_caddy needs the certsync execution module")
    return __virtualname__


def settings():
    """
    The names of this kind's settings.

    CLI Example:

    .. code-block:: bash

        salt caddy-host certsync_source_caddy.settings
    """
    return ["storage", "issuer", "caddy", "reuse_private_keys"]


def _safe(name):
    """A site's directory and file name as certmagic writes it (KeyBuilder.Safe)."""
    return name.lower().strip().replace("*", "wildcard_")


def _site_dirs(hostname, storage, issuer):
    """``(directory, file name stem)`` of every stored site that may hold ``hostname``:
    its own name and the wildcard one label up, under each issuer (or the one given)."""
    if not __utils__["certsync_pem.is_dns_name"](hostname):
        raise SaltInvocationError(f"hostname {hostname!r} is not a valid DNS host name")
    if not (isinstance(storage, str) and os.path.isabs(storage)):
        raise SaltInvocationError(
            f"the caddy source needs storage, Caddy's storage root as an absolute path, "
            f"not {repr(storage)[:200]}"
        )
    base = os.path.join(storage, "certificates")
    if issuer:
        if not isinstance(issuer, str) or "/" in issuer or issuer in (".", ".."):
            raise SaltInvocationError(f"issuer must be a directory name, not {issuer!r}")
        issuers = [issuer]
    else:
        try:
            issuers = sorted(os.listdir(base))
        except OSError as exc:
            raise CommandExecutionError(f"{base}: cannot list: {exc.strerror}") from None
    names = [_safe(hostname), _safe("*." + hostname.partition(".")[2])]
    return [(os.path.join(base, found, name), name) for found in issuers for name in names]


def _pairs(hostname, storage, issuer):
    """The stored pairs that may hold ``hostname``: ``(crt, key, dir)``."""
    return [
        (os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key"), d)
        for d, name in _site_dirs(hostname, storage, issuer)
        if os.path.lexists(os.path.join(d, f"{name}.crt"))
    ]


def locate(hostname, storage=None, issuer=None, caddy=None, reuse_private_keys=False):
    """
    The pair Caddy holds for ``hostname``: ``fullchain`` (the ``.crt``,
    leaf first), ``privkey`` and ``dir``. Among the stored sites that may
    hold it (its name, its wildcard; every issuer's), the newest usable one:
    it covers the name, its key matches, it is inside its validity. What
    was skipped is named when none is.

    CLI Example:

    .. code-block:: bash

        salt caddy-host certsync_source_caddy.locate mail.example.com \\
            storage=/var/lib/caddy/.local/share/caddy
    """
    best, skipped = None, []
    for crt, key, directory in _pairs(hostname, storage, issuer):
        try:
            info = __salt__["certsync.info"](crt)
            match = __salt__["certsync.check_pair"](crt, key)["match"]
        except (CommandExecutionError, SaltInvocationError) as exc:
            skipped.append(f"{directory}: {exc}")
            continue
        covers = any(__utils__["certsync_pem.name_matches"](san, hostname) for san in info["sans"])
        why = (
            "does not cover the name"
            if not covers
            else "its key does not match"
            if not match
            else "expired"
            if info["days_left"] <= 0
            else ""
        )
        if why:
            skipped.append(f"{directory}: {why}")
        elif best is None or info["not_after"] > best[0]:
            best = (info["not_after"], crt, key, directory)
    if best is None:
        found = "; ".join(skipped) or "no stored certificate"
        raise CommandExecutionError(
            f"{storage}: Caddy holds no usable certificate for {hostname} ({found})"
        )
    return {"fullchain": best[1], "privkey": best[2], "dir": best[3]}


def watched(hostname, storage=None, issuer=None, caddy=None, reuse_private_keys=False):
    """
    The files whose change means Caddy renewed or re-issued: each stored
    ``.crt`` that may hold ``hostname``, and the directories a new site or
    issuer would appear in. Nothing is parsed.

    CLI Example:

    .. code-block:: bash

        salt caddy-host certsync_source_caddy.watched mail.example.com \\
            storage=/var/lib/caddy/.local/share/caddy
    """
    sites = _site_dirs(hostname, storage, issuer)
    base = os.path.join(storage, "certificates")
    parents = sorted({os.path.dirname(d) for d, _ in sites})
    return [base, *parents, *(os.path.join(d, f"{name}.crt") for d, name in sites)]


def _binary(caddy):
    """Caddy's binary: the ``caddy`` setting (a path or a command name), else ``caddy``."""
    if caddy in (None, ""):
        return "caddy"
    if not isinstance(caddy, str) or not caddy.isprintable() or len(caddy) > 4096:
        raise SaltInvocationError(
            f"caddy must be the path of Caddy's binary (a string), not {repr(caddy)[:80]}"
        )
    return caddy


def _version(caddy):
    """Caddy's release as (major, minor, patch) from ``caddy version``, or the reason
    it is not known."""
    binary = _binary(caddy)
    try:
        done = subprocess.run(
            [binary, "version"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{binary} version did not answer ({exc})"
    found = _VERSION.search(done.stdout or "")
    if done.returncode != 0 or not found:
        return None, f"{binary} version gave no release ({(done.stdout or done.stderr)[:80]!r})"
    return tuple(int(part) for part in found.groups()), ""


def renewal(hostname, storage=None, issuer=None, caddy=None, reuse_private_keys=False):
    """
    How Caddy's next certificate for ``hostname`` comes: its release
    (``caddy version``) and ``next_renewal_keeps_key`` (None when the
    release is not known) with ``why``.

    CLI Example:

    .. code-block:: bash

        salt caddy-host certsync_source_caddy.renewal mail.example.com \\
            storage=/var/lib/caddy/.local/share/caddy
    """
    found = locate(hostname, storage, issuer)
    version, problem = _version(caddy)
    ret = {"dir": found["dir"], "caddy_version": ".".join(map(str, version or ())) or None}
    if version is None:
        return {**ret, "next_renewal_keeps_key": None, "why": problem}
    if version[:2] < (2, 7):
        keeps, why = True, "Caddy up to 2.6 reuses the stored key at renewal"
    elif version[:2] < (2, 8):
        keeps, why = False, "Caddy 2.7 makes a new key for every certificate (no setting keeps it)"
    elif reuse_private_keys is True:
        keeps, why = True, "reuse_private_keys is set in Caddy's tls directive"
    else:
        keeps, why = (
            False,
            "Caddy 2.8+ makes a new key for every certificate unless its tls directive "
            "sets reuse_private_keys (then certsync:source:reuse_private_keys: true)",
        )
    return {**ret, "next_renewal_keeps_key": keeps, "why": why}


def keep_key(hostname, storage=None, issuer=None, caddy=None, reuse_private_keys=False, test=False):
    """
    Caddy keeps the key at its next certificate, or an error saying how to
    make it (certsync does not edit Caddy's configuration): ``changed`` is
    always False, ``where`` names what keeps it.

    CLI Example:

    .. code-block:: bash

        salt caddy-host certsync_source_caddy.keep_key mail.example.com \\
            storage=/var/lib/caddy/.local/share/caddy
    """
    view = renewal(hostname, storage, issuer, caddy, reuse_private_keys)
    if not view["next_renewal_keeps_key"]:
        raise CommandExecutionError(
            f"Caddy's next certificate for {hostname} may come with a new key: {view['why']}"
        )
    return {"changed": False, "where": f"Caddy {view['caddy_version']} ({view['why']})"}
