"""
The ``npm`` source kind: Nginx Proxy Manager's certbot tree
===========================================================

One provider behind ``certsync_source`` (as each of certbot's DNS plugins is
one file behind one interface): where NPM's certbot keeps the pair for a
hostname, which files change when it renews, and whether its next renewal
keeps the key. Its settings are the pillar's ``certsync:source`` keys:

live_dir
    certbot's ``live/`` directory as NPM mounts it, searched for the lineage
    (``npm-N``) whose certificate covers the hostname, the newest usable one
    (:py:func:`find`).

dir
    The lineage under ``live_dir`` (``npm-5``), to skip the search.

source
    Instead of both: the lineage directory itself.

certbot keeps no key across renewals unless the lineage's renewal file
(``<config dir>/renewal/<lineage>.conf``) says ``reuse_key = True``; NPM
never passes ``--reuse-key``. :py:func:`keep_key` writes that one line (the
file's format is ``salt://_utils/certsync_certbot.py``) and
:py:func:`release_key` takes it out again.
"""

import logging
import os
import re
import stat

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "certsync_source_npm"

#: NPM's lineage names: ``npm-<certificate id>``.
_NPM_DIR = re.compile(r"npm-(\d+)")
#: The largest renewal file certsync reads; certbot writes about 1 KiB.
MAX_RENEWAL_BYTES = 64 * 1024


def __virtual__():
    for needed in ("certsync_pem.read_certs", "certsync_certbot.reading"):
        if needed not in __utils__:
            util = needed.split(".")[0]
            return (False, f"certsync_source_npm needs salt://_utils/{util}.py: saltutil.sync_all")
    return __virtualname__


def settings():
    """
    The names of this kind's settings.

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_source_npm.settings
    """
    return ["live_dir", "dir", "source"]


def _absolute(value, what):
    if not (isinstance(value, str) and os.path.isabs(value)):
        raise SaltInvocationError(f"{what} must be an absolute path, not {repr(value)[:300]}")
    return value


def _lineage(hostname, source=None, live_dir=None, dir=None):
    """The lineage directory the settings name, or the one found for ``hostname``."""
    if source and live_dir:
        raise SaltInvocationError("give either source or live_dir, not both")
    if source:
        return _absolute(source, "source (a lineage directory)")
    if not live_dir:
        raise SaltInvocationError("the npm source needs live_dir (and dir) or source, a lineage")
    live_dir = _absolute(live_dir, "live_dir")
    if dir:
        if not isinstance(dir, str) or "/" in dir or dir in (".", ".."):
            raise SaltInvocationError(f"dir must be a lineage name such as npm-5, not {dir!r}")
        return os.path.join(live_dir, dir)
    if not hostname:
        raise SaltInvocationError("give the hostname to search live_dir for, or dir or source")
    return find(hostname, live_dir)["dir"]


def locate(hostname, source=None, live_dir=None, dir=None):
    """
    The pair for ``hostname``: ``fullchain``, ``privkey`` and ``dir`` (the
    lineage directory, read through NPM's symlinks).

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_source_npm.locate mail.example.com live_dir=/etc/letsencrypt/live
    """
    lineage = _lineage(hostname, source, live_dir, dir)
    return {
        "fullchain": os.path.join(lineage, "fullchain.pem"),
        "privkey": os.path.join(lineage, "privkey.pem"),
        "dir": lineage,
    }


def watched(hostname, source=None, live_dir=None, dir=None):
    """
    The files whose change (a new inode, size or time, or a relinked
    ``live/`` symlink) means certbot renewed: each lineage's ``fullchain.pem``
    under ``live_dir`` (a new lineage too; ``live_dir`` itself while it has
    none), or the one lineage's. Nothing is parsed.

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_source_npm.watched mail.example.com live_dir=/etc/letsencrypt/live
    """
    if source or dir:
        return [os.path.join(_lineage(hostname, source, live_dir, dir), "fullchain.pem")]
    live_dir = _absolute(live_dir, "live_dir")
    try:
        entries = sorted(os.listdir(live_dir))
    except OSError:
        return [live_dir]
    # an empty live/ is watched itself: its first lineage is a change
    return [os.path.join(live_dir, entry, "fullchain.pem") for entry in entries] or [live_dir]


def find(hostname, live_dir="/etc/letsencrypt/live"):
    """
    Find NPM's lineage whose leaf certificate covers ``hostname``. NPM names
    its lineages by internal id (``npm-5``), so every directory under
    ``live_dir`` holding a ``fullchain.pem`` is read; when several cover the
    name, the newest *usable* one wins (its key readable and matching, inside
    its validity; the latest ``not_after``, then the highest ``npm-N``), and
    ``skipped`` says why the others were not taken.

    hostname
        The host name the certificate must cover.

    live_dir
        NPM's ``live/`` directory. Default: ``/etc/letsencrypt/live``.

    Returns the chosen directory, its files, fingerprint and ``not_after``,
    and what was skipped and why.

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_source_npm.find mail.example.com /opt/npm/letsencrypt/live
    """
    if not __utils__["certsync_pem.is_dns_name"](hostname):
        raise SaltInvocationError(f"hostname {hostname!r} is not a valid DNS host name")
    hostname = hostname.lower()
    try:
        entries = sorted(os.listdir(live_dir))
    except OSError as exc:
        raise CommandExecutionError(f"{live_dir}: cannot list: {exc.strerror}") from None
    shown = __utils__["certsync_pem.shown"]
    candidates, looked_at, skipped = [], [], {}
    now = __utils__["certsync_pem.now"]()
    for entry in entries:
        directory = os.path.join(live_dir, entry)
        fullchain = os.path.join(directory, "fullchain.pem")
        if not os.path.isdir(directory) or not os.path.lexists(fullchain):
            continue
        try:
            leaf = __utils__["certsync_pem.read_certs"](fullchain)[0]
        except CommandExecutionError as exc:
            skipped[shown(entry)] = str(exc)
            continue
        names = ", ".join(map(shown, __utils__["certsync_pem.dns_sans"](leaf))) or "no DNS SAN"
        looked_at.append(f"{shown(entry)} [{names}]")
        if not __utils__["certsync_pem.covers"](leaf, hostname):
            continue
        unusable = _unusable(leaf, os.path.join(directory, "privkey.pem"), now)
        if unusable:
            skipped[shown(entry)] = f"covers {hostname} but {unusable}"
            continue
        npm = _NPM_DIR.fullmatch(entry)
        rank = (leaf.not_valid_after_utc, int(npm.group(1)) if npm else -1)
        candidates.append((rank, entry, directory, leaf))
    if not candidates:
        seen = "; ".join(looked_at) or "no certificate directory"
        why = "".join(f"; {entry}: {reason}" for entry, reason in skipped.items())
        raise CommandExecutionError(
            f"{shown(live_dir)}: no usable certificate covers {hostname} (looked at: {seen}){why}"
        )
    _, entry, directory, leaf = max(candidates, key=lambda item: item[0])
    return {
        "dir": directory,
        "name": entry,
        "fullchain": os.path.join(directory, "fullchain.pem"),
        "privkey": os.path.join(directory, "privkey.pem"),
        "fingerprint": __utils__["certsync_pem.fingerprint"](leaf),
        "not_after": __utils__["certsync_pem.iso"](leaf.not_valid_after_utc),
        "covering": sorted(c[1] for c in candidates),
        "skipped": skipped,
    }


def _unusable(leaf, privkey, now):
    """Why a covering lineage cannot be deployed (None when it can): its key, its dates."""
    iso = __utils__["certsync_pem.iso"]
    if now > leaf.not_valid_after_utc:
        return f"expired on {iso(leaf.not_valid_after_utc)}"
    if now < leaf.not_valid_before_utc:
        return f"is not valid before {iso(leaf.not_valid_before_utc)}"
    try:
        key = __utils__["certsync_pem.read_key"](privkey)
    except CommandExecutionError as exc:
        return f"its key is not usable ({exc})"
    if not __utils__["certsync_pem.same_key"](key.public_key(), leaf.public_key()):
        return "its privkey.pem does not match the certificate"
    return None


# --------------------------------------------------------------------------
# certbot's renewal file: keep the key across renewals
# --------------------------------------------------------------------------


def _read_renewal(path, lineage):
    """The renewal file's text and certbot's reading of it; raise when it is missing,
    no regular file, too large, or not this lineage's."""
    if not os.path.lexists(path):
        raise CommandExecutionError(
            f"{path}: no such file: certbot keeps no renewal configuration for {lineage}"
        )
    data = __utils__["certsync_pem.read_file"](path, limit=MAX_RENEWAL_BYTES, what="a renewal file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandExecutionError(f"{path}: not UTF-8 text, not a renewal file") from None
    read = __utils__["certsync_certbot.reading"](text, path)
    __utils__["certsync_certbot.check_lineage_paths"](read, path, lineage)
    return text, read


def _current(lineage_dir):
    """The key and names of the lineage's current certificate (or why they are unknown)."""
    try:
        leaf = __utils__["certsync_pem.read_certs"](os.path.join(lineage_dir, "cert.pem"))[0]
    except CommandExecutionError as exc:
        return {"error": str(exc)}
    return {
        "key": __utils__["certsync_pem.key_label"](leaf.public_key()),
        "spki_sha256": __utils__["certsync_pem.spki_sha256"](leaf.public_key()),
        "names": __utils__["certsync_pem.dns_sans"](leaf),
        "not_after": __utils__["certsync_pem.iso"](leaf.not_valid_after_utc),
    }


def renewal(hostname=None, source=None, live_dir=None, dir=None):
    """
    Describe how certbot will renew the lineage, from its renewal file
    ``<config dir>/renewal/<lineage>.conf``: whether ``reuse_key`` is set,
    the key type and curve it asks for, the key and the names of the current
    certificate, and whether the next renewal keeps the key (and with it a
    ``TLSA 3 1 1`` record): ``next_renewal_keeps_key``. certbot's default is
    a new key at every renewal; NPM never passes ``--reuse-key``.

    The lineage is matched by name and the file's relative layout, never by
    absolute path: in NPM's container the paths in the file are
    ``/etc/letsencrypt/...`` while the minion sees the bind-mounted tree
    elsewhere. ``hostname`` is needed only to search ``live_dir``.

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_source_npm.renewal mail.example.com live_dir=/etc/letsencrypt/live
        salt npm-host certsync_source_npm.renewal source=/etc/nginx/letsencrypt/live/npm-5
    """
    lineage_dir = os.path.normpath(_lineage(hostname, source, live_dir, dir))
    _, lineage, path = __utils__["certsync_certbot.location"](lineage_dir)
    _, read = _read_renewal(path, lineage)
    params = read["renewalparams"]
    reuse = __utils__["certsync_certbot.reuse_key"](read)
    return {
        "lineage": lineage,
        "renewal_file": path,
        "reuse_key": reuse,
        "key_type": params.get("key_type", "rsa"),
        "elliptic_curve": params.get("elliptic_curve"),
        "rsa_key_size": params.get("rsa_key_size"),
        "next_renewal_keeps_key": reuse,
        "current": _current(lineage_dir),
        "why": (
            "reuse_key = True: certbot renew keeps the key (a re-issue from NPM's UI, "
            "certbot certonly, still makes a new one)"
            if reuse
            else "no reuse_key = True under [renewalparams]: the next renewal makes a new key"
        ),
    }


def _note_path(lineage):
    return os.path.join(__opts__["cachedir"], "certsync", f"reuse-key-{lineage}.json")


def _write_renewal(path, text):
    """Replace the renewal file atomically, its mode and owner kept."""
    st = os.stat(path)
    try:
        __utils__["certsync_files.replace_file"](
            path, text.encode("utf-8"), stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid)
        )
    except OSError as exc:
        raise CommandExecutionError(f"{path}: cannot write: {exc.strerror}") from None


def keep_key(hostname=None, source=None, live_dir=None, dir=None, test=False):
    """
    Make certbot keep the lineage's key across renewals: ``reuse_key = True``
    under ``[renewalparams]`` of its renewal file, every other line and
    comment kept. Written atomically (temp file, fsync, rename), the file's
    mode and owner kept; the line it replaced (or none) is noted in the
    cachedir for :py:func:`release_key`. Returns ``changed``, the renewal
    file, the lineage, and ``where`` the setting is (the renewal file).

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_source_npm.keep_key mail.example.com \\
            live_dir=/etc/letsencrypt/live test=True
    """
    lineage_dir = _lineage(hostname, source, live_dir, dir)
    _, lineage, path = __utils__["certsync_certbot.location"](lineage_dir)
    text, read = _read_renewal(path, lineage)
    ret = {"changed": False, "renewal_file": path, "lineage": lineage, "where": path}
    if __utils__["certsync_certbot.reuse_key"](read):
        return ret
    edited = __utils__["certsync_certbot.with_reuse_key"](text, read, path)
    if not test:
        index = __utils__["certsync_certbot.renewalparams_lines"](edited)[1]
        same_line = __utils__["certsync_certbot.renewalparams_lines"](text)[1] == index
        edited_lines = edited.splitlines(keepends=True)
        # a line added last, after a line that had no newline: release takes the newline too
        last_line = index == len(edited_lines) - 1 and not __utils__["certsync_certbot.ending"](
            edited_lines[index]
        )
        note = {
            "file": path,
            "replaced": text.splitlines()[index] if same_line else None,
            "last_line": last_line,
        }
        _write_renewal(path, edited)
        __utils__["certsync_files.write_json_record"](_note_path(lineage), note)
        log.info("certsync: set reuse_key = True in %s", __utils__["certsync_pem.shown"](path))
    return {**ret, "changed": True}


def release_key(hostname=None, source=None, live_dir=None, dir=None, test=False):
    """
    Undo :py:func:`keep_key`: the ``reuse_key`` line certsync wrote in the
    lineage's renewal file removed (or the line it replaced put back), the
    rest of the file byte for byte as it is (what ``certsync.absent``
    applies). A ``reuse_key`` certsync did not set (no note of it in the
    cachedir) is left alone, and ``why`` says so. Returns ``changed``, the
    renewal file and the lineage. npm only: other kinds keep no setting of
    certsync's.

    CLI Example:

    .. code-block:: bash

        salt npm-host certsync_source_npm.release_key mail.example.com \\
            live_dir=/etc/letsencrypt/live test=True
    """
    lineage_dir = _lineage(hostname, source, live_dir, dir)
    _, lineage, path = __utils__["certsync_certbot.location"](lineage_dir)
    ret = {"changed": False, "renewal_file": path, "lineage": lineage}
    note = __utils__["certsync_files.read_json_record"](_note_path(lineage)) or {}
    if note.get("file") != path:
        return {**ret, "why": "certsync did not set reuse_key in this file: left as it is"}
    text, _ = _read_renewal(path, lineage)
    index = __utils__["certsync_certbot.renewalparams_lines"](text)[1]
    lines = text.splitlines(keepends=True)
    if index is None or not __utils__["certsync_certbot.starts_reuse_key"](lines[index]):
        return {**ret, "why": "no reuse_key line under [renewalparams] any more"}
    replaced = note.get("replaced")
    if replaced is not None and not __utils__["certsync_certbot.is_reuse_key_line"](replaced):
        return {
            **ret,
            "why": "the note of the line certsync replaced is not one reuse_key line: the "
            "file is left as it is (edit reuse_key under [renewalparams] by hand)",
        }
    ending = __utils__["certsync_certbot.ending"]
    if replaced is not None:
        lines[index] = replaced + ending(lines[index])
    else:
        del lines[index]
        if note.get("last_line") is True and index == len(lines) and lines:
            lines[-1] = lines[-1][: len(lines[-1]) - len(ending(lines[-1]))]
    if not test:
        _write_renewal(path, "".join(lines))
        os.unlink(_note_path(lineage))
        log.info(
            "certsync: removed the reuse_key it set from %s", __utils__["certsync_pem.shown"](path)
        )
    return {**ret, "changed": True}
