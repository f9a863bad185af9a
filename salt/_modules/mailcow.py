"""
mailcow-dockerized containers and configuration, through the Docker API
=======================================================================

:depends: docker (the Docker SDK for Python)

Finds the compose project of a mailcow-dockerized checkout (default
``/opt/mailcow-dockerized``; project name from ``COMPOSE_PROJECT_NAME`` in its
``mailcow.conf``, default ``mailcowdockerized``) and its containers by the
compose labels ``com.docker.compose.project`` and
``com.docker.compose.service``. Never calls the ``docker`` CLI.

Reload commands run inside each container; override them per service with
``commands`` (a mapping of service name to argv list) where a mailcow release
needs another one.
"""

import calendar
import concurrent.futures
import contextvars
import email.message
import email.utils
import io
import json
import math
import os
import re
import shutil
import subprocess
import tarfile
import time
import uuid

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import docker
    import docker.errors
    import requests.exceptions  # docker-py's transport: its connection errors are these

    HAS_DOCKER = True
except ImportError:
    HAS_DOCKER = False

__virtualname__ = "mailcow"

DEFAULT_DIR = "/opt/mailcow-dockerized"
#: The mailcow.conf key that publishes each endpoint's port (mailcow's generate_config.sh).
CONF_PORT_KEYS = {
    "smtp": "SMTP_PORT",
    "submission": "SUBMISSION_PORT",
    "smtps": "SMTPS_PORT",
    "imap": "IMAP_PORT",
    "imaps": "IMAPS_PORT",
    "pop3": "POP_PORT",
    "pop3s": "POPS_PORT",
    "sieve": "SIEVE_PORT",
    "https": "HTTPS_PORT",
}
DEFAULT_PROJECT = "mailcowdockerized"
#: The services that serve the certificate, in the order they are reloaded.
TLS_SERVICES = ("postfix-mailcow", "dovecot-mailcow", "nginx-mailcow")
#: postfix-mailcow's SNI map: postmap -F copies the per-name files' contents into
#: the .db at container start, so a reload alone never sees new certificates.
POSTFIX_SNI_MAP = "/opt/postfix/conf/sni.map"
RELOAD_COMMANDS = {
    "postfix-mailcow": [
        "sh",
        "-c",
        f"if [ -f {POSTFIX_SNI_MAP} ]; then postmap -F hash:{POSTFIX_SNI_MAP} || exit 1; fi; "
        "exec postfix reload",
    ],
    "dovecot-mailcow": ["doveadm", "reload"],
    "nginx-mailcow": ["nginx", "-s", "reload"],
}
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"
ACME_SERVICE = "acme-mailcow"
COMPOSE_TIMEOUT = 300
#: The published ports in mailcow.conf, per probe protocol: (key, default).
_UNSPECIFIED = {"", "0.0.0.0", "::", "[::]"}  # noqa: S104 (bind addresses, not a listener)
_CONF_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_CONF_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: A port number as mailcow.conf and postfix write one: ASCII digits only.
_PORT = re.compile(r"[0-9]{1,5}")
_HOST = re.compile(r"[a-z0-9.-]+")
_CONF_VALUE = re.compile(r"[A-Za-z0-9_.,:/@+-]*")
MAX_CONF_BYTES = 256 * 1024
OUTPUT_TAIL = 2000


def _utc(epoch):
    return __utils__["certsync_pem.iso"](epoch) if epoch else None


def _strings(values, what, kind):
    """A non-empty list of strings (or a comma-separated string, from the CLI)."""
    return __utils__["certsync_args.strings"](values, what, kind, required=True)


def __virtual__():
    if not HAS_DOCKER:
        return (
            False,
            "the mailcow module needs the Docker SDK for Python: install docker "
            "(salt-pip install docker), then restart the minion",
        )
    for needed in ("certsync_files.read_regular", "certsync_endpoints.table"):
        if needed not in __utils__:
            util = needed.split(".")[0]
            return (False, f"mailcow needs salt://_utils/{util}.py: saltutil.sync_all")
    return __virtualname__


# --------------------------------------------------------------------------
# mailcow.conf
# --------------------------------------------------------------------------


def _conf_path(path):
    return os.path.join(path, "mailcow.conf")


def _read_conf(path):
    conf = _conf_path(path)
    try:
        data = __utils__["certsync_files.read_regular"](conf, MAX_CONF_BYTES)
    except FileNotFoundError:
        raise CommandExecutionError(
            f"{conf}: no such file (is {path} a mailcow checkout?)"
        ) from None
    except OSError as exc:
        raise CommandExecutionError(f"{conf}: cannot read: {exc.strerror}") from None
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise CommandExecutionError(f"{conf}: not UTF-8 text") from None


def _parse(lines):
    values = {}
    for line in lines:
        match = _CONF_LINE.match(line)
        if match:
            values[match.group(1)] = match.group(2).strip().strip('"').strip("'")
    return values


def conf_get(key=None, path=DEFAULT_DIR):
    """
    Read ``mailcow.conf``: one key's value (None when unset) or, without
    ``key``, every key.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host mailcow.conf_get ENABLE_SSL_SNI
    """
    values = _parse(_read_conf(path))
    return values if key is None else values.get(key)


def conf_set(key, value, path=DEFAULT_DIR, test=False):
    """
    Set ``key=value`` in ``mailcow.conf``, replacing the key's line (or
    appending one), atomically. Other lines stay as they are.

    Returns ``changed``, ``old`` and ``new``. A change takes effect for the
    containers only after ``docker compose up -d`` in ``path``.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host mailcow.conf_set SKIP_LETS_ENCRYPT y
    """
    if not isinstance(key, str) or not _CONF_KEY.fullmatch(key):
        raise SaltInvocationError(f"{key!r} is not a valid mailcow.conf key")
    value = str(value)
    if not _CONF_VALUE.fullmatch(value):
        raise SaltInvocationError(
            f"value {value!r} for {key}: only letters, digits and _.,:/@+- are allowed"
        )
    lines = _read_conf(path)
    old = _parse(lines).get(key)
    if old == value:
        return {"changed": False, "old": old, "new": value}
    if not test:
        _write_conf(path, _replace_key(lines, key, value))
    return {"changed": True, "old": old, "new": value}


def _replace_key(lines, key, value):
    replaced, out = False, []
    for line in lines:
        match = _CONF_LINE.match(line)
        if match and match.group(1) == key:
            if not replaced:
                out.append(f"{key}={value}")
            replaced = True
        else:
            out.append(line)
    if not replaced:
        out.append(f"{key}={value}")
    return out


def _write_conf(path, lines):
    """mailcow.conf replaced atomically, its mode and owner kept (a temp file of a name
    of its own beside it: a leftover from a killed run is never in the way)."""
    conf = _conf_path(path)
    try:
        st = os.stat(conf)
        temp = __utils__["certsync_files.write_temp"](
            os.path.dirname(conf),
            os.path.basename(conf),
            ("\n".join(lines) + "\n").encode("utf-8"),
            st.st_mode & 0o7777,
            (st.st_uid, st.st_gid),
        )
        os.replace(temp, conf)
    except OSError as exc:
        raise CommandExecutionError(f"{conf}: cannot write: {exc.strerror}") from None


def project_name(path=DEFAULT_DIR):
    """
    The compose project name of the mailcow checkout in ``path``:
    ``COMPOSE_PROJECT_NAME`` from ``mailcow.conf`` lower-cased (as mailcow
    looks its containers up), else Compose's default from the directory's
    name (lower-cased, only letters, digits, ``_`` and ``-``).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host mailcow.project_name
    """
    name = conf_get("COMPOSE_PROJECT_NAME", path)
    if name:
        return name.lower()
    base = re.sub(r"[^a-z0-9_-]", "", os.path.basename(os.path.normpath(path)).lower())
    return base.lstrip("_-") or DEFAULT_PROJECT


def endpoints(path=DEFAULT_DIR, protocols=None):
    """
    The published TLS endpoints of the mailcow checkout in ``path``, from
    ``mailcow.conf``: ``SMTP_PORT``, ``SUBMISSION_PORT``, ``SMTPS_PORT``,
    ``IMAP_PORT``, ``IMAPS_PORT``, ``POP_PORT``, ``POPS_PORT``,
    ``SIEVE_PORT`` (each a port or ``IP:PORT``) and ``HTTPS_PORT`` with
    ``HTTPS_BIND``; unset keys take mailcow's defaults. Returns a mapping of
    protocol to ``"address:port"`` (a specific bind address) or a port, as
    ``tlsprobe`` takes it.

    protocols
        Only these (names as in ``tlsprobe``). Default: all nine.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host mailcow.endpoints
    """
    values = conf_get(None, path)
    known = __utils__["certsync_endpoints.table"]()
    wanted = _strings(protocols, "protocols", "names") if protocols else list(CONF_PORT_KEYS)
    unknown = [p for p in wanted if p not in CONF_PORT_KEYS]
    if unknown:
        raise SaltInvocationError(f"no mailcow.conf port for {', '.join(unknown)}")
    found = {}
    for protocol in wanted:
        key, default = CONF_PORT_KEYS[protocol], known[protocol]["port"]
        value = values.get(key) or str(default)
        address, _, port = value.rpartition(":")
        if protocol == "https":
            address = values.get("HTTPS_BIND") or address
        if not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
            raise CommandExecutionError(f"{_conf_path(path)}: {key}={value!r} is not a port")
        address = address.strip("[]")
        found[protocol] = int(port) if address in _UNSPECIFIED else f"{address}:{port}"
    return found


# --------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------


def _client():
    """A Docker client, checked with a ping. The API version is negotiated with the
    daemon once per process (a request each time otherwise: a deploy makes a
    client for each look at its containers, and one per service it reloads)."""
    url = __opts__.get("mailcow.docker_url") or None
    settings = {"timeout": 60}
    if __context__.get("mailcow.docker_api"):
        settings["version"] = __context__["mailcow.docker_api"]
    try:
        client = (
            docker.DockerClient(base_url=url, **settings) if url else docker.from_env(**settings)
        )
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        where = url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise CommandExecutionError(f"the Docker daemon at {where} is unreachable: {exc}") from None
    __context__["mailcow.docker_api"] = client.api.api_version
    return client


def _services(services):
    if services is None:
        return list(TLS_SERVICES)
    return _strings(services, "services", "compose service names")


def _find_ids(client, project, services):
    """Map each service to its container's id, from one listing of the project
    (a summary per container: mailcow runs some twenty); raise naming those missing."""
    found = {}
    for summary in client.api.containers(all=True, filters={"label": f"{PROJECT_LABEL}={project}"}):
        labels = summary.get("Labels") or {}
        if labels.get(ONEOFF_LABEL, "False") == "True":
            continue  # `docker compose run`: not the service's container
        service = labels.get(SERVICE_LABEL)
        if service in services:
            found.setdefault(service, summary["Id"])
    missing = [s for s in services if s not in found]
    if missing:
        raise CommandExecutionError(
            f"no container for {', '.join(missing)} in compose project {project!r}"
        )
    return found


def _find(client, project, services):
    """Map each service to its container (inspected); raise naming those missing."""
    ids = _find_ids(client, project, services)
    try:
        return {service: client.containers.get(ids[service]) for service in services}
    except docker.errors.NotFound as exc:
        raise CommandExecutionError(
            f"a container of compose project {project!r} went away while it was read: {exc}"
        ) from None


def containers(services=None, path=DEFAULT_DIR):
    """
    The containers of the mailcow services: name, id, status.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host mailcow.containers
    """
    services = _services(services)
    found = _find(_client(), project_name(path), services)
    return {
        service: {"name": c.name, "id": c.short_id, "status": c.status}
        for service, c in found.items()
    }


def _tail(output):
    text = (output or b"").decode("utf-8", "replace").strip()
    return text[-OUTPUT_TAIL:]


def reload(services=None, path=DEFAULT_DIR, commands=None):
    """
    Run each service's own reload inside its container (``postfix reload``,
    ``doveadm reload``, ``nginx -s reload``), all at once, and report exit
    code and output per service. Exits non-zero on the CLI when one fails.

    services
        Compose service names. Default: postfix-mailcow, dovecot-mailcow,
        nginx-mailcow.

    commands
        Mapping of service name to the argv list that reloads it, for
        services not in the defaults or releases that need another command.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host mailcow.reload
    """
    services = _services(services)
    table = {**RELOAD_COMMANDS, **(commands or {})}
    unknown = [s for s in services if s not in table]
    if unknown:
        raise SaltInvocationError(f"no reload command known for {', '.join(unknown)}")
    found = _find_ids(_client(), project_name(path), services)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(services)) as pool:
        futures = {  # each in a copy of this call's context, where the loader's dunders live
            s: pool.submit(contextvars.copy_context().run, _reload_one, found[s], table[s])
            for s in services
        }
        results = {service: future.result() for service, future in futures.items()}
    if not all(r["ok"] for r in results.values()):
        __context__["retcode"] = 1
    return results


def _reload_one(container_id, argv):
    """Run ``argv`` in a running container, over a Docker connection of its own
    (the reloads run at once, and a docker-py client is not shared by threads)."""
    client = _client()
    try:
        container = client.containers.get(container_id)
        if container.status != "running":
            return {"ok": False, "error": f"container {container.name} is {container.status}"}
        exit_code, output = container.exec_run(argv)
    except docker.errors.NotFound:
        return {"ok": False, "error": f"container {container_id[:12]} is gone"}
    except docker.errors.APIError as exc:
        return {"ok": False, "error": f"exec in container {container_id[:12]} failed: {exc}"}
    except requests.exceptions.RequestException as exc:  # the engine went away meanwhile
        return {"ok": False, "error": f"the Docker daemon stopped answering: {exc}"}
    finally:
        client.close()
    return {
        "ok": exit_code == 0,
        "exit_code": exit_code,
        "command": " ".join(argv),
        "output": _tail(output),
    }


def restart(services=None, path=DEFAULT_DIR, timeout=30):
    """
    Restart the containers of ``services`` and wait (at most ``timeout``
    seconds each) until they run again; report per service, with the tail of
    the log of a container that did not come back.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host mailcow.restart services=nginx-mailcow
    """
    services = _services(services)
    timeout = __utils__["certsync_args.seconds"](timeout, "timeout", 600)
    found = _find(_client(), project_name(path), services)
    results = {}
    for service in services:
        container = found[service]
        try:
            container.restart(timeout=min(10, math.ceil(timeout)))
        except docker.errors.APIError as exc:
            results[service] = {"ok": False, "error": f"restart of {container.name} failed: {exc}"}
            continue
        results[service] = _wait_running(container, timeout)
    if not all(r["ok"] for r in results.values()):
        __context__["retcode"] = 1
    return results


def _wait_running(container, timeout, settle=1.0):
    """Running now and still running ``settle`` seconds later, within ``timeout``."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.25) + 1):
        container.reload()
        if container.status == "running":
            time.sleep(settle)
            container.reload()
            if container.status == "running":
                return {"ok": True, "status": "running"}
        if container.status in ("exited", "dead") or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    return {
        "ok": False,
        "status": container.status,
        "error": f"container {container.name} is {container.status}",
        "log": _tail(container.logs(tail=20)),
    }


# --------------------------------------------------------------------------
# acme-mailcow: mailcow's own ACME client must stand down
# --------------------------------------------------------------------------


def _env(container):
    env = {}
    for item in container.attrs.get("Config", {}).get("Env") or []:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def _skips(env):
    return bool(re.fullmatch(r"(?i)y(es)?", env.get("SKIP_LETS_ENCRYPT", "").strip()))


def acme_status(path=DEFAULT_DIR):
    """
    Whether acme-mailcow would fight another deployer: it gets
    ``SKIP_LETS_ENCRYPT`` only as an environment variable when the container
    is created, so editing ``mailcow.conf`` changes nothing until it is
    recreated. While it runs without ``SKIP_LETS_ENCRYPT=y`` it copies
    ``ssl/<MAILCOW_HOSTNAME>/`` over the top-level pair and restarts
    services. Returns ``exists``, ``running``, ``skip_lets_encrypt`` (its
    environment), ``fights``.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host mailcow.acme_status
    """
    try:
        container = _find(_client(), project_name(path), [ACME_SERVICE])[ACME_SERVICE]
    except CommandExecutionError as exc:
        if "no container for" not in str(exc):
            raise
        return {"exists": False, "running": False, "skip_lets_encrypt": None, "fights": False}
    running = container.status in ("running", "restarting")
    skip = _skips(_env(container))
    return {
        "exists": True,
        "name": container.name,
        "running": running,
        "skip_lets_encrypt": skip,
        "fights": running and not skip,
    }


def _compose_command():
    """``docker compose`` (the plugin) or ``docker-compose``; None when neither works."""
    docker_cli = shutil.which("docker")
    if docker_cli:
        probe = subprocess.run(
            [docker_cli, "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return [docker_cli, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def acme_stand_down(path=DEFAULT_DIR, test=False):
    """
    Make acme-mailcow stand down when it runs without ``SKIP_LETS_ENCRYPT=y``
    in its environment: recreate it the way mailcow documents, ``docker
    compose up -d`` in the checkout (only that service, ``--no-deps``), so
    it picks up ``mailcow.conf``; where no compose command or compose file is
    there, stop the container and say why. Set ``SKIP_LETS_ENCRYPT=y`` in
    ``mailcow.conf`` first (the formula does). Returns ``action``
    (``none``, ``recreated``, ``stopped``) and the status after.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host mailcow.acme_stand_down
    """
    before = acme_status(path)
    if not before["fights"]:
        return {"action": "none", "status": before}
    if not _skips(conf_get(None, path)):
        raise CommandExecutionError(
            f"{_conf_path(path)}: SKIP_LETS_ENCRYPT is not y; set it first, or recreating "
            "acme-mailcow changes nothing"
        )
    compose = _compose_command()
    has_file = any(
        os.path.exists(os.path.join(path, name))
        for name in ("docker-compose.yml", "compose.yml", "compose.yaml", "docker-compose.yaml")
    )
    if test:
        action = "recreate" if compose and has_file else "stop"
        return {"action": f"would {action}", "status": before}
    if compose and has_file:
        _compose_up(compose, path)
        action, why = "recreated", "docker compose up -d --no-deps acme-mailcow"
    else:
        container = _find(_client(), project_name(path), [ACME_SERVICE])[ACME_SERVICE]
        container.stop(timeout=10)
        action = "stopped"
        why = (
            "no compose file in the checkout"
            if compose
            else "no docker compose command on this host"
        ) + f"; run `docker compose up -d` in {path} to recreate it with SKIP_LETS_ENCRYPT=y"
    after = acme_status(path)
    if after["fights"]:
        raise CommandExecutionError(
            f"acme-mailcow still runs without SKIP_LETS_ENCRYPT=y after it was {action}"
        )
    return {"action": action, "why": why, "status": after}


def _compose_up(compose, path):
    env = dict(os.environ)
    if __opts__.get("mailcow.docker_url"):
        env["DOCKER_HOST"] = __opts__["mailcow.docker_url"]
    try:
        proc = subprocess.run(
            [*compose, "up", "-d", "--no-deps", ACME_SERVICE],
            cwd=path,
            env=env,
            capture_output=True,
            timeout=COMPOSE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CommandExecutionError(
            f"docker compose up -d in {path} did not finish within {COMPOSE_TIMEOUT} s"
        ) from None
    if proc.returncode != 0:
        raise CommandExecutionError(
            f"docker compose up -d in {path} failed ({proc.returncode}): {_tail(proc.stderr)}"
        )


# --------------------------------------------------------------------------
# The names mailcow serves with the top-level pair
# --------------------------------------------------------------------------


def served_names(path=DEFAULT_DIR, mail_domains=None):
    """
    The names mailcow's nginx serves with the top-level pair, which its own
    certificates cover: ``MAILCOW_HOSTNAME``, the ``ADDITIONAL_SAN`` names
    (``name.*`` stands for ``name.<d>`` of each mail domain), and unless
    ``AUTODISCOVER_SAN=n``, ``autodiscover.<d>`` and ``autoconfig.<d>`` for
    each of ``mail_domains``.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host mailcow.served_names mail_domains='[example.com]'
    """
    values = conf_get(None, path)
    hostname = (values.get("MAILCOW_HOSTNAME") or "").lower()
    if not hostname:
        raise CommandExecutionError(f"{_conf_path(path)}: MAILCOW_HOSTNAME is not set")
    domains = (
        [d.lower() for d in _strings(mail_domains, "mail_domains", "domains")]
        if mail_domains
        else []
    )
    names = [hostname]
    for item in (n.strip().lower() for n in (values.get("ADDITIONAL_SAN") or "").split(",")):
        if item.endswith(".*"):
            names += [f"{item[:-2]}.{domain}" for domain in domains]
        elif item:
            names.append(item)
    if (values.get("AUTODISCOVER_SAN") or "y").lower() not in ("n", "no"):
        for domain in domains:
            names += [f"autodiscover.{domain}", f"autoconfig.{domain}"]
    return list(dict.fromkeys(names))


def missing_names(sans, path=DEFAULT_DIR, mail_domains=None):
    """
    The names mailcow serves with the top-level pair (:py:func:`served_names`)
    that a certificate with the DNS names ``sans`` does not cover (RFC 6125,
    ``certsync.name_matches``).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host mailcow.missing_names '[mail.example.com]' mail_domains='[example.com]'
    """
    sans = _strings(sans, "sans", "the certificate's DNS names")
    matches = __utils__["certsync_pem.name_matches"]
    return [
        name
        for name in served_names(path, mail_domains)
        if not any(matches(san, name) for san in sans)
    ]


# --------------------------------------------------------------------------
# Outbound relay (postfix-mailcow's log and queue)
# --------------------------------------------------------------------------

POSTFIX_SERVICE = "postfix-mailcow"
RELAY_WINDOW = 3600
RELAY_TEST_TIMEOUT = 120
#: Where the test message is staged inside postfix-mailcow (not on this host).
CONTAINER_TMP = "/tmp"  # noqa: S108
#: At most this many log lines are read per call, newest first.
MAX_LOG_LINES = 100_000
#: The syslog header postfix writes before its tag ("Nov 26 15:10:54 mail "), then the
#: tag: any syslog_name (postfix, postfix/submission, mailcow's enforced-tls-smtp for
#: its smtp_enforced_tls transport), the agent and its pid. Matched at the start of the
#: line, so text a client put into another line (smtpd's "non-SMTP command from ...:
#: <what the client sent>") cannot pass for a delivery.
_SYSLOG = (
    r"(?:[A-Z][a-z]{2} [ 0-9]?[0-9] [0-9]{2}:[0-9]{2}:[0-9]{2}|[0-9]{4}-[0-9]{2}-[0-9]{2}T\S+)"
    r" \S+ (?P<syslog>[\w.-]+(?:/[\w.-]+)*)/(?P<agent>[\w.-]+)\[(?P<pid>[0-9]+)\]: "
)
#: A delivery attempt: "QID: to=<...>, relay=host[ip]:port, ..., dsn=..., status=... (why)".
_DELIVERY = re.compile(
    _SYSLOG + r"(?P<qid>[0-9A-Za-z]{5,20}): "
    r"to=<[^>]*>, (?:orig_to=<[^>]*>, )?relay=(?P<relay>\S+), (?:conn_use=[0-9]+, )?"
    r"delay=[0-9.]+, delays=[0-9./]+, dsn=(?P<dsn>[0-9]\.[0-9]{1,3}\.[0-9]{1,3}), "
    r"status=(?P<status>[a-z]+) \((?P<reason>.*)\)\Z",
    re.ASCII,
)
_TLS = re.compile(
    _SYSLOG + r"(?P<level>Trusted|Untrusted|Verified|Anonymous)"
    r" TLS connection established to (?P<peer>\S+?):",
    re.ASCII,
)
_RELAY_AT = re.compile(r"(?P<host>[^\s\[\]]+)\[[^\]]*\]:(?P<port>[0-9]{1,5})")
_RELAY_IN_REASON = re.compile(
    r"(?:connect to|host) (?P<host>[^\s\[\]]+)\[[^\]]*\]:(?P<port>[0-9]{1,5})"
)
_NAME_IN_REASON = re.compile(r"Name service error for name=(?P<host>[^\s]+) ")
_LOCAL_AGENTS = {"lmtp", "local", "virtual", "pipe", "discard", "error", "retry"}
_ADDRESS = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~][A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]*@[A-Za-z0-9.-]+"
)
#: postfix's reason -> what went wrong, first match wins.
_PROBLEMS = (
    ("SASL authentication failed", "authentication failed"),
    ("authentication failed", "authentication failed"),
    ("TLS is required", "TLS failed"),
    ("Cannot start TLS", "TLS failed"),
    ("TLS handshake", "TLS failed"),
    ("certificate verification failed", "TLS failed"),
    ("Connection refused", "connection refused"),
    ("timed out", "connection timed out"),
    ("Network is unreachable", "network unreachable"),
    ("No route to host", "network unreachable"),
    ("Host or domain name not found", "relay host not found"),
)


def _problem(reason):
    return next((what for text, what in _PROBLEMS if text in reason), "delivery failed")


def _relay_key(relay):
    """``host:port`` (lower-case host) of ``host:port``, ``[host]:port`` or ``host``."""
    if not isinstance(relay, str) or not relay.strip():
        raise SaltInvocationError(f"relay must be 'host:port', not {relay!r}")
    host, _, port = relay.strip().rpartition(":") if ":" in relay else (relay.strip(), "", "")
    host = host.strip("[]").lower()
    if not host or (port and not _PORT.fullmatch(port)) or not _HOST.fullmatch(host):
        raise SaltInvocationError(f"relay must be 'host:port', not {relay!r}")
    return f"{host}:{int(port)}" if port else host


def _attempt(line):
    """One delivery attempt of a log line (docker timestamp first), or None."""
    stamp, _, text = line.partition(" ")
    match = _DELIVERY.match(text)
    if not match:
        return None
    at = _RELAY_AT.fullmatch(match["relay"])
    found = at or _RELAY_IN_REASON.search(match["reason"])
    if found:
        relay = f"{found['host'].lower()}:{int(found['port'])}"
    else:
        named = _NAME_IN_REASON.search(match["reason"])
        relay = named["host"].lower() if named else match["relay"].lower()
    return {
        "time": _docker_time(stamp),
        "agent": match["agent"],
        "qid": match["qid"],
        "pid": match["pid"],
        "relay": relay,
        "dsn": match["dsn"],
        "status": match["status"],
        "reason": match["reason"][:500],
    }


def _docker_time(stamp):
    """Unix time of a Docker log timestamp (RFC 3339, nanoseconds, UTC)."""
    try:
        whole, _, frac = stamp.rstrip("Z").partition(".")
        seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
        return seconds + float(f"0.{frac or 0}")
    except ValueError:
        return None


def _log_lines(container, since):
    raw = container.logs(
        stdout=True, stderr=True, timestamps=True, since=int(since), tail=MAX_LOG_LINES
    )
    # lines end at "\n" alone: splitlines() would also split a reply at U+2028 and the like
    return raw.decode("utf-8", "replace").rstrip("\n").split("\n")


def _postfix(path):
    return _find(_client(), project_name(path), [POSTFIX_SERVICE])[POSTFIX_SERVICE]


def _matches(relay, wanted):
    return wanted is None or relay == wanted or relay.split(":")[0] == wanted


def _relay_rows(attempts, wanted):
    rows = {}
    for attempt in attempts:
        if not _matches(attempt["relay"], wanted):
            continue
        row = rows.setdefault(
            attempt["relay"],
            {
                "sent": 0,
                "deferred": 0,
                "bounced": 0,
                "last_success": None,
                "last_failure": None,
                "failing_since": None,
            },
        )
        if attempt["status"] == "sent":
            row["sent"] += 1
            row["last_success"] = _utc(attempt["time"])
            row["failing_since"] = None
            continue
        if attempt["status"] in ("deferred", "bounced"):
            row[attempt["status"]] += 1
        row["last_failure"] = {
            "time": _utc(attempt["time"]),
            "status": attempt["status"],
            "dsn": attempt["dsn"],
            "problem": _problem(attempt["reason"]),
            "reason": attempt["reason"],
        }
        row["failing_since"] = row["failing_since"] or _utc(attempt["time"])
    return rows


def _queue(container, now):
    """postfix's queue (``postqueue -j``): counts and the oldest deferred message."""
    result = container.exec_run(["postqueue", "-j"])
    if result.exit_code != 0:
        raise CommandExecutionError(
            f"postqueue -j in {container.name} failed: {_tail(result.output)}"
        )
    counts, oldest = {}, None
    for line in (result.output or b"").decode("utf-8", "replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        queue = str(entry.get("queue_name", "unknown"))
        counts[queue] = counts.get(queue, 0) + 1
        arrival = entry.get("arrival_time")
        if (
            queue == "deferred"
            and isinstance(arrival, (int, float))
            and (oldest is None or arrival < oldest["arrival_time"])
        ):
            oldest = entry
    reasons = [r.get("delay_reason", "") for r in (oldest or {}).get("recipients", []) or []]
    return {
        "messages": sum(counts.values()),
        "by_queue": counts,
        "oldest_deferred_age": round(now - oldest["arrival_time"], 1) if oldest else None,
        "oldest_deferred_reason": str(reasons[0])[:500] if reasons else None,
    }


def _window(value, name):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise SaltInvocationError(f"{name} must be a number of seconds, not {value!r}") from None
    if not 0 < value <= 366 * 86400:
        raise SaltInvocationError(f"{name} must be between 0 and one year, not {value}")
    return value


def relay_status(relay=None, window=RELAY_WINDOW, path=DEFAULT_DIR):
    """
    Is outbound mail leaving through the relay? From postfix-mailcow's log
    (read through the Docker API) over the last ``window`` seconds: per relay
    ``host:port``, counts of ``sent``, ``deferred`` and ``bounced`` delivery
    attempts, ``last_success``, ``last_failure`` (status, DSN, what went wrong
    and postfix's reason) and ``failing_since`` (the first failure after the
    last success); and the queue (``postqueue -j``): messages per queue and
    the age of the oldest deferred one with its reason. Read-only; no message
    content, addresses or credentials are returned.

    relay
        ``host:port`` (or ``host``) to report on; default: every non-local
        next hop in the log.

    window
        Seconds of log to read. Default: 3600.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host mailcow.relay_status relay=mail.smtp2go.com:2525
    """
    wanted = _relay_key(relay) if relay is not None else None
    window = _window(window, "window")
    now = time.time()
    container = _postfix(path)
    attempts = [
        a
        for a in map(_attempt, _log_lines(container, now - window))
        if a and a["agent"] not in _LOCAL_AGENTS
    ]
    return {
        "window": window,
        "relays": _relay_rows(attempts, wanted),
        "queue": _queue(container, now),
    }


def _address(value, name):
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value) or len(value) > 254:
        raise SaltInvocationError(f"{name} must be a plain mail address, not {value!r}")
    return value


def _test_message(sender, to, hostname):
    token = uuid.uuid4().hex
    message = email.message.EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = f"certsync relay test {token[:12]}"
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = f"<certsync-relay-test.{token}@{hostname}>"
    message.set_content(
        "A test message sent by certsync (mailcow.relay_test) to check that mail\n"
        "leaves this server through its relay. No reply is needed.\n"
    )
    return message["Message-ID"].strip("<>"), message.as_bytes()


def _put_file(container, directory, name, data):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
        archive.addfile(info, io.BytesIO(data))
    if not container.put_archive(directory, buffer.getvalue()):
        raise CommandExecutionError(f"could not copy the test message into {container.name}")


def _send(container, sender, to, data):
    name = f"certsync-relay-test-{uuid.uuid4().hex}.eml"
    _put_file(container, CONTAINER_TMP, name, data)
    script = 'sendmail -i -f "$1" -- "$2" < "$3"; rc=$?; rm -f "$3"; exit $rc'
    result = container.exec_run(["sh", "-c", script, "sh", sender, to, f"{CONTAINER_TMP}/{name}"])
    if result.exit_code != 0:
        raise CommandExecutionError(f"sendmail in {container.name} failed: {_tail(result.output)}")


def _follow(container, message_id, since, deadline):
    """The queue id, its first delivery attempt and postfix's TLS line for it."""
    seen_id = re.compile(
        r": (?P<qid>[0-9A-Za-z]{5,20}): message-id=<" + re.escape(message_id) + ">"
    )
    qid = None
    while True:
        lines = _log_lines(container, since)
        for line in lines:
            found = seen_id.search(line)
            if found:
                qid = found["qid"]
                break
        if qid:
            attempts = [a for a in map(_attempt, lines) if a and a["qid"] == qid]
            if attempts:
                return qid, attempts[0], _tls_level(lines, attempts[0])
        if time.monotonic() >= deadline:
            return qid, None, None
        time.sleep(0.5)


def _tls_level(lines, attempt):
    """postfix's "<level> TLS connection established" by the same smtp process."""
    level = None
    for line in lines:
        found = _TLS.match(line.partition(" ")[2])
        if found and found["pid"] == attempt["pid"]:
            level = found["level"]
        if f": {attempt['qid']}: to=<" in line:
            break
    return level


def _judge(attempt, tls, wanted, verify_tls):
    """What went wrong with a delivery attempt, or None."""
    if attempt["status"] != "sent":
        return _problem(attempt["reason"])
    if wanted and not _matches(attempt["relay"], wanted):
        return f"not relayed through {wanted} (went to {attempt['relay']})"
    if verify_tls and tls not in ("Trusted", "Verified"):
        return (
            f"TLS not trusted: postfix logged {tls} TLS to {attempt['relay']}"
            if tls
            else f"sent to {attempt['relay']} without TLS"
        )
    return None


def relay_test(
    to,
    sender=None,
    relay=None,
    timeout=RELAY_TEST_TIMEOUT,
    verify_tls=True,
    keep=False,
    path=DEFAULT_DIR,
):
    """
    Send a test message through postfix-mailcow (``sendmail`` inside the
    container, as a mailbox of this server would) and follow its queue id in
    postfix's log until the first delivery attempt: ``ok`` when it was
    ``status=sent`` through ``relay`` over TLS postfix trusted; otherwise
    ``problem`` says what went wrong (authentication failed, TLS failed,
    connection refused or timed out, relay host not found, not relayed
    through the expected host) and ``reason`` quotes postfix. A message that
    was not sent is removed from the queue unless ``keep=True``. The exit
    code is non-zero on failure.

    to
        An external address to send to.

    sender
        The envelope and header sender: a mailbox of this server. Default:
        ``postmaster@`` the domain of ``MAILCOW_HOSTNAME`` (its first label
        dropped).

    relay
        The ``host:port`` mail must leave through (mailcow's relayhost);
        default: any next hop.

    timeout
        Seconds to wait for the delivery attempt. Default: 120.

    verify_tls
        Fail when postfix's TLS to the relay was not ``Trusted`` or
        ``Verified`` (mailcow requires TLS but does not verify the relay's
        certificate). Default: True.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host mailcow.relay_test someone@example.net relay=mail.smtp2go.com:2525
    """
    to = _address(to, "to")
    wanted = _relay_key(relay) if relay is not None else None
    timeout = _window(timeout, "timeout")
    if sender is not None:
        sender = _address(sender, "sender")
    hostname = (conf_get("MAILCOW_HOSTNAME", path) or "").lower()
    if sender is None:
        if hostname.count(".") < 2:
            raise SaltInvocationError(
                f"{_conf_path(path)}: no mail domain in MAILCOW_HOSTNAME {hostname!r}; give sender"
            )
        sender = f"postmaster@{hostname.split('.', 1)[1]}"
    container = _postfix(path)
    message_id, data = _test_message(sender, to, hostname or "localhost")
    started = time.time()
    _send(container, sender, to, data)
    qid, attempt, tls = _follow(container, message_id, started - 1, time.monotonic() + timeout)
    result = {"ok": False, "queue_id": qid, "sender": sender, "to": to}
    if attempt is None:
        result["problem"] = (
            f"no delivery attempt logged within {timeout:g} s"
            if qid
            else f"postfix logged no queue id for the message within {timeout:g} s"
        )
    else:
        problem = _judge(attempt, tls, wanted, verify_tls)
        result.update(
            ok=problem is None,
            relay=attempt["relay"],
            status=attempt["status"],
            dsn=attempt["dsn"],
            tls=tls,
            reason=attempt["reason"],
            seconds=round(attempt["time"] - started, 2) if attempt["time"] else None,
        )
        if problem:
            result["problem"] = problem
    if qid and not keep and result.get("status") in (None, "deferred"):
        removed = container.exec_run(["postsuper", "-d", qid])
        result["removed_from_queue"] = removed.exit_code == 0
    if not result["ok"]:
        __context__["retcode"] = 1
    return result
