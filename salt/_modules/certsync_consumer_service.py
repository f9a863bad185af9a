"""
The ``service`` consumer kind: a plain host's services
======================================================

For a host whose services (Postfix, Dovecot, nginx, HAProxy, ...) run as
systemd units and read their certificate from files. certsync keeps the
pair in the deploy's directory (``cert.pem`` and ``key.pem``, the previous
pair beside them for a roll back) and, on every change, writes each
configured file from it in the layout its service reads, with its owner,
group and mode, then reloads the units. A unit whose reload does not take
is restarted (at most once an hour). With ``haproxy_socket``, HAProxy gets
each combined file through its runtime API (``certsync_haproxy.update``):
no reload; the file is written too, so a restart keeps it.

Settings (``certsync_deploy.deploy`` takes them as arguments):

dir
    Where certsync keeps the pair: the deploy's directory. Default:
    ``/etc/certsync/<hostname>``.

files
    A list of files to write, each a mapping: ``path`` (absolute, its
    directory must exist), ``contents`` (``fullchain``: the certificate and
    its chain; ``cert``: the certificate alone; ``chain``: the chain alone;
    ``key``; ``combined``: the certificate, its chain and the key in one
    PEM, as HAProxy's ``crt`` takes it), and optionally ``owner``, ``group``
    (names or ids) and ``mode`` (octal; default ``0600`` for a file holding
    the key, which may never be readable by others, ``0644`` otherwise).

units
    The systemd units to reload after the files changed, through Salt's
    ``service`` module (``service.reload``): a list, or a mapping of each
    unit to the endpoint types it serves (``{postfix: [smtp, submission],
    nginx: [https]}``). When an endpoint still serves another certificate
    after the reload, the units that serve it are restarted (with a list:
    every unit), each at most once an hour.

reload_commands
    A mapping of unit to the argv that reloads it instead (run without a
    shell), e.g. ``{postfix: [postfix, reload]}``.

haproxy_socket
    HAProxy's admin socket (``level admin``, e.g.
    ``/run/haproxy/admin.sock``): each ``combined`` file goes in through
    the runtime API, checked with ``show ssl cert``.
"""

import errno
import grp
import os
import pwd
import re

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "certsync_consumer_service"

SETTINGS = ("dir", "files", "units", "reload_commands", "haproxy_socket")
DEFAULT_PARENT = "/etc/certsync"
CONTENTS = ("fullchain", "cert", "chain", "key", "combined")
WITH_KEY = ("key", "combined")
COMMAND_TIMEOUT = 60
#: A systemd unit's name (systemd.unit(5)): never an option, never a path.
_UNIT = re.compile(r"(?!-)[A-Za-z0-9_.:@\\-]{1,255}")
#: How HAProxy's runtime API is named among the services a deploy reports.
HAPROXY_API = "haproxy runtime API"


def __virtual__():
    if "certsync.deployed_info" not in __salt__:
        return (False, "certsync_consumer_service needs the certsync execution module")
    return __virtualname__


def settings():
    """
    The settings a ``service`` consumer takes: ``dir``, ``files``, ``units``,
    ``reload_commands`` and ``haproxy_socket``.

    CLI Example:

    .. code-block:: bash

        salt web-host certsync_consumer_service.settings
    """
    return list(SETTINGS)


def dest(hostname, given, route="default"):
    """
    The directory certsync keeps the pair in: ``dir``, or
    ``/etc/certsync/<hostname>`` (whatever the ``route``).

    CLI Example:

    .. code-block:: bash

        salt web-host certsync_consumer_service.dest mail.example.com '{}'
    """
    own = (given or {}).get("dir")
    return str(own) if own else f"{DEFAULT_PARENT}/{str(hostname).lower()}"


def _refuse(message):
    raise SaltInvocationError(message[:400])


def _id(value, database, what, where):
    """A uid or gid from a name or a number; None when not given."""
    if value in (None, ""):
        return None
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return value if value >= 0 else _refuse(f"{where}: {what} {value} is negative")
        entry = database.getpwnam(value) if database is pwd else database.getgrnam(value)
    except (KeyError, TypeError):
        _refuse(f"{where}: no {what} {str(value)[:60]!r} on this host")
    return entry[2]


def _mode(value, with_key, where):
    if value in (None, ""):
        return 0o600 if with_key else 0o644
    try:
        mode = int(str(value), 8) if not isinstance(value, int) else value
    except ValueError:
        _refuse(f"{where}: mode {str(value)[:20]!r} is not an octal mode such as '0640'")
    if not 0 <= mode <= 0o777:
        _refuse(f"{where}: mode {oct(mode)} is not a file mode (0000-0777)")
    if with_key and mode & 0o007:
        _refuse(f"{where}: mode {mode:04o} lets others read the private key: use 0600 or 0640")
    return mode


def _file(entry, number, dest):
    where = f"files[{number}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        _refuse(f"{where} must be a mapping with path and contents, not {entry!r}")
    unknown = sorted(str(k) for k in set(entry) - {"path", "contents", "owner", "group", "mode"})
    if unknown:
        _refuse(f"{where}: {', '.join(unknown)} is no file setting (path, contents, owner, ...)")
    path = os.path.normpath(entry["path"])
    where = f"files[{number}] ({path})"
    if not os.path.isabs(path) or "\0" in path:
        _refuse(f"{where}: the path must be absolute")
    if os.path.dirname(path) == os.path.normpath(dest):
        _refuse(f"{where}: certsync keeps its own pair in {dest}; write the files elsewhere")
    if not os.path.isdir(os.path.dirname(path)):
        _refuse(f"{where}: its directory {os.path.dirname(path)} does not exist")
    contents = entry.get("contents")
    if contents not in CONTENTS:
        _refuse(f"{where}: contents {str(contents)[:40]!r} is not one of {', '.join(CONTENTS)}")
    return {
        "path": path,
        "contents": contents,
        "uid": _id(entry.get("owner"), pwd, "user", where),
        "gid": _id(entry.get("group"), grp, "group", where),
        "mode": _mode(entry.get("mode"), contents in WITH_KEY, where),
    }


def _commands(commands, units):
    commands = __utils__["certsync_args.argv_map"](commands or None, "reload_commands", "units")
    strays = sorted(str(unit) for unit in commands if unit not in units)
    if strays:
        _refuse(f"reload_commands: {', '.join(strays)} is not in units ({', '.join(units)})")
    return dict(commands)


def _units(given):
    """The units' names, and which endpoint types each serves (None: not said)."""
    strings = __utils__["certsync_args.strings"]
    if isinstance(given, dict):
        serves = {u: strings(p, f"units:{u}", "endpoint types") for u, p in given.items()}
    else:
        serves = dict.fromkeys(strings(given, "units", "systemd units"))
    for unit in serves:
        if not isinstance(unit, str) or not _UNIT.fullmatch(unit):
            _refuse(f"units: {unit!r} is not a systemd unit name")
    return list(serves), serves if isinstance(given, dict) else None


def prepare(dest, hostname, endpoints, given):
    """
    The settings of a ``service`` consumer checked and completed (see
    ``certsync_consumer``): each file's path, contents, owner, group and mode,
    the units, their reload commands and HAProxy's socket.

    CLI Example:

    .. code-block:: bash

        salt web-host certsync_consumer_service.prepare /etc/certsync/mail.example.com \\
            mail.example.com '[smtp]' '{files: [{path: /etc/postfix/tls.pem, contents: combined}]}'
    """
    files = given.get("files") or []
    if not isinstance(files, list):
        _refuse(f"files must be a list of mappings (path, contents, ...), not {files!r}")
    files = [_file(entry, number, dest) for number, entry in enumerate(files)]
    paths = [f["path"] for f in files]
    twice = sorted({p for p in paths if paths.count(p) > 1})
    if twice:
        _refuse(f"files: {', '.join(twice)} is listed more than once")
    units, serves = _units(given.get("units"))
    socket = given.get("haproxy_socket") or None
    if socket is not None and (not isinstance(socket, str) or not os.path.isabs(socket)):
        _refuse(f"haproxy_socket must be an absolute path, not {socket!r}")
    if socket and not any(f["contents"] == "combined" for f in files):
        _refuse("haproxy_socket is set but no file has contents: combined (HAProxy's crt)")
    commands = _commands(given.get("reload_commands"), units)
    if any(u not in commands for u in units) and "service.reload" not in __salt__:
        _refuse("units given but Salt's service module is not available on this minion")
    return {
        "services": [*([HAPROXY_API] if socket else []), *units],
        "endpoints": endpoints,
        "backoff": dest,
        "writes": paths,
        "files": files,
        "units": units,
        "serves": serves,
        "reload_commands": commands,
        "haproxy_socket": socket,
    }


def layout(dest, fullchain, hostname, prepared):
    """
    The pair goes in ``dest`` alone; the files are written from it on reload.

    CLI Example:

    .. code-block:: bash

        salt web-host certsync_consumer_service.layout /etc/certsync/mail.example.com \\
            /etc/letsencrypt/live/npm-5/fullchain.pem mail.example.com '{}'
    """
    return {"dirs": [dest], "names": [], "files": {}, "originals": {}, "notes": []}


def checks(hostname, validation, test, prepared):
    """
    Nothing beyond the validation the deploy does.

    CLI Example:

    .. code-block:: bash

        salt web-host certsync_consumer_service.checks mail.example.com '{}' False '{}'
    """
    return []


def unservable(dest, hostname, given):
    """
    Nothing: a service reads its files wherever they are written and picks among
    certificates by their names itself, so any route's names can be served.

    CLI Example:

    .. code-block:: bash

        salt web-host certsync_consumer_service.unservable /etc/certsync/shop.example.com \\
            shop.example.com '{}'
    """
    return []


def preflight(prepared):
    """
    Fail before anything changes when a unit is not on this host (one with a
    reload command is that command's), or when HAProxy (with
    ``haproxy_socket``) does not load one of the combined files.

    CLI Example:

    .. code-block:: bash

        salt web-host certsync_consumer_service.preflight '{units: [postfix]}'
    """
    commands = prepared.get("reload_commands") or {}
    missing = [
        unit
        for unit in prepared.get("units") or []
        if unit not in commands and not __salt__["service.available"](unit)
    ]
    if missing:
        raise CommandExecutionError(f"no systemd unit {', '.join(missing)} on this host")
    socket = prepared.get("haproxy_socket")
    for entry in prepared.get("files") or []:
        if socket and entry["contents"] == "combined":
            __salt__["certsync_haproxy.show"](entry["path"], socket)


def _pair(dest):
    """The pair certsync keeps in ``dest``: (certificate PEM blocks, key PEM)."""
    read = __utils__["certsync_pem.read_file"]
    chain = os.path.join(dest, "cert.pem")
    blocks = __utils__["certsync_pem.pem_blocks"](read(chain, follow=False), chain)
    certs = [block for label, block in blocks if label == b"CERTIFICATE"]
    key = read(os.path.join(dest, "key.pem"), follow=False)
    return certs, key


def _contents(certs, key, contents):
    return {
        "fullchain": b"".join(certs),
        "cert": certs[0],
        "chain": b"".join(certs[1:]),
        "key": key,
        "combined": b"".join(certs) + key,
    }[contents]


def _differs(entry, data):
    """Why the file at ``entry['path']`` is not what certsync writes, or None."""
    try:
        info = os.lstat(entry["path"])
        same = (
            __utils__["certsync_files.read_regular"](entry["path"], len(data), follow=False) == data
        )
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return "other contents" if exc.errno == errno.EFBIG else "not a regular file"
    if not same:
        return "other contents"
    if info.st_mode & 0o777 != entry["mode"]:
        return f"mode {info.st_mode & 0o777:04o}, not {entry['mode']:04o}"
    owner = (
        entry["uid"] if entry["uid"] is not None else info.st_uid,
        entry["gid"] if entry["gid"] is not None else info.st_gid,
    )
    if (info.st_uid, info.st_gid) != owner:
        return f"owner {info.st_uid}:{info.st_gid}, not {owner[0]}:{owner[1]}"
    return None


def drift(dest, prepared):
    """
    Each configured file that is not what certsync writes from the pair in
    ``dest`` (missing, other contents, mode or owner), as lines; none before
    certsync installed a pair.

    CLI Example:

    .. code-block:: bash

        salt web-host certsync_consumer_service.drift /etc/certsync/mail.example.com \\
            '{files: [{path: /etc/haproxy/certs/mail.pem, contents: combined}]}'
    """
    if not prepared.get("files") or not os.path.isfile(os.path.join(dest, "key.pem")):
        return []
    certs, key = _pair(dest)
    found = []
    for entry in prepared["files"]:
        why = _differs(entry, _contents(certs, key, entry["contents"]))
        if why:
            found.append(f"{entry['path']}: {why}")
    return found


def _write(dest, files):
    certs, key = _pair(dest)
    for entry in files:
        owner = None
        if entry["uid"] is not None or entry["gid"] is not None:
            owner = (
                -1 if entry["uid"] is None else entry["uid"],
                -1 if entry["gid"] is None else entry["gid"],
            )
        data = _contents(certs, key, entry["contents"])
        try:
            __utils__["certsync_files.replace_file"](entry["path"], data, entry["mode"], owner)
        except OSError as exc:
            raise CommandExecutionError(f"{entry['path']}: cannot write: {exc.strerror}") from None


def _reload_unit(unit, commands):
    argv = commands.get(unit)
    try:
        if argv:
            done = __salt__["cmd.run_all"](
                argv, python_shell=False, timeout=COMMAND_TIMEOUT, output_loglevel="quiet"
            )
            output = (done.get("stderr") or done.get("stdout") or "").strip()[-300:]
            return {"ok": done["retcode"] == 0, "output": output or f"exit {done['retcode']}"}
        ok = bool(__salt__["service.reload"](unit))
        return {"ok": ok, "output": "reloaded" if ok else "systemctl reload failed"}
    except CommandExecutionError as exc:
        return {"ok": False, "error": str(exc)[:300]}


def reload(dest, prepared):
    """
    Write every file from the pair in ``dest``, hand HAProxy its combined
    files through the runtime API (with ``haproxy_socket``), and reload the
    units. Returns ``{service: {ok, output or error}}``, and ``written``,
    the files written.

    CLI Example:

    .. code-block:: bash

        salt web-host certsync_consumer_service.reload /etc/certsync/mail.example.com \\
            '{units: [postfix]}'
    """
    files = prepared.get("files") or []
    _write(dest, files)
    results = {}
    if files:
        results["written"] = {"ok": True, "output": f"wrote {', '.join(f['path'] for f in files)}"}
    socket = prepared.get("haproxy_socket")
    if socket:
        for entry in prepared["files"]:
            if entry["contents"] != "combined":
                continue
            try:
                done = __salt__["certsync_haproxy.update"](entry["path"], entry["path"], socket)
                output = f"{entry['path']}: serves {done['sha1_fingerprint'][:16]}..."
                results.setdefault(HAPROXY_API, {"ok": True, "output": output})
            except (CommandExecutionError, SaltInvocationError) as exc:
                results[HAPROXY_API] = {"ok": False, "error": str(exc)[:300]}
    for unit in prepared.get("units") or []:
        results[unit] = _reload_unit(unit, prepared.get("reload_commands") or {})
    return results


def restart(services, dest, prepared):
    """
    Restart these units (``service.restart``).

    CLI Example:

    .. code-block:: bash

        salt web-host certsync_consumer_service.restart '[postfix]' \\
            /etc/certsync/mail.example.com '{}'
    """
    results = {}
    for unit in services:
        try:
            ok = bool(__salt__["service.restart"](unit))
            results[unit] = {"ok": ok, **({} if ok else {"error": "systemctl restart failed"})}
        except CommandExecutionError as exc:
            results[unit] = {"ok": False, "error": str(exc)[:300]}
    return results


def stale(protocols, prepared):
    """
    The units to restart when these endpoint types serve another
    certificate: those that serve them (``units`` as a mapping), or every
    unit (``units`` as a list).

    CLI Example:

    .. code-block:: bash

        salt web-host certsync_consumer_service.stale '[smtp]' \\
            '{units: [postfix, dovecot], serves: {postfix: [smtp], dovecot: [imaps]}}'
    """
    serves = prepared.get("serves")
    if not protocols:
        return []
    if serves is None:
        return list(prepared.get("units") or [])
    return [unit for unit, served in serves.items() if set(served) & set(protocols)]


def uncovered(dest, hostname, prepared):
    """
    Nothing: a service consumer's files are its own, written whole on every
    deploy, so no place is left alone (the monitor's ``uncovered`` alert).

    CLI Example:

    .. code-block:: bash

        salt web-host certsync_consumer_service.uncovered /etc/certsync/mail.example.com \
            mail.example.com '{}'
    """
    return {"uncovered": {}, "dropped": {}}
