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

import os
import re
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import docker
    import docker.errors

    HAS_DOCKER = True
except ImportError:
    HAS_DOCKER = False

__virtualname__ = "mailcow"

DEFAULT_DIR = "/opt/mailcow-dockerized"
DEFAULT_PROJECT = "mailcowdockerized"
#: The services that serve the certificate, in the order they are reloaded.
TLS_SERVICES = ("postfix-mailcow", "dovecot-mailcow", "nginx-mailcow")
RELOAD_COMMANDS = {
    "postfix-mailcow": ["postfix", "reload"],
    "dovecot-mailcow": ["doveadm", "reload"],
    "nginx-mailcow": ["nginx", "-s", "reload"],
}
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
_CONF_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_CONF_VALUE = re.compile(r"^[A-Za-z0-9_.,:/@+-]*$")
MAX_CONF_BYTES = 256 * 1024
OUTPUT_TAIL = 2000


def __virtual__():
    if not HAS_DOCKER:
        return (False, "the mailcow module needs the docker Python package (Docker SDK)")
    return __virtualname__


# --------------------------------------------------------------------------
# mailcow.conf
# --------------------------------------------------------------------------


def _conf_path(path):
    return os.path.join(path, "mailcow.conf")


def _read_conf(path):
    conf = _conf_path(path)
    try:
        with open(conf, "rb") as handle:
            data = handle.read(MAX_CONF_BYTES + 1)
    except FileNotFoundError:
        raise CommandExecutionError(
            f"{conf}: no such file (is {path} a mailcow checkout?)"
        ) from None
    except OSError as exc:
        raise CommandExecutionError(f"{conf}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_CONF_BYTES:
        raise CommandExecutionError(f"{conf}: larger than {MAX_CONF_BYTES} bytes")
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
    if not _CONF_LINE.match(f"{key}=x"):
        raise SaltInvocationError(f"{key!r} is not a valid mailcow.conf key")
    value = str(value)
    if not _CONF_VALUE.match(value):
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
    conf = _conf_path(path)
    temp = f"{conf}.certsync-{os.getpid()}"
    st = os.stat(conf)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, st.st_mode & 0o7777)
        os.write(fd, ("\n".join(lines) + "\n").encode("utf-8"))
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        os.unlink(temp)
        raise CommandExecutionError(f"{conf}: cannot write: {exc.strerror}") from None
    os.close(fd)
    os.replace(temp, conf)


def project_name(path=DEFAULT_DIR):
    """
    The compose project name of the mailcow checkout in ``path``.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host mailcow.project_name
    """
    return conf_get("COMPOSE_PROJECT_NAME", path) or DEFAULT_PROJECT


# --------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------


def _client():
    url = __opts__.get("mailcow.docker_url") or None
    try:
        client = (
            docker.DockerClient(base_url=url, timeout=60) if url else docker.from_env(timeout=60)
        )
        client.ping()
    except docker.errors.DockerException as exc:
        where = url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise CommandExecutionError(f"the Docker daemon at {where} is unreachable: {exc}") from None
    return client


def _services(services):
    if services is None:
        return list(TLS_SERVICES)
    if isinstance(services, str):
        services = [s.strip() for s in services.split(",") if s.strip()]
    if not services or not all(isinstance(s, str) and s for s in services):
        raise SaltInvocationError("services must be a list of compose service names")
    return list(services)


def _find(client, project, services):
    """Map each service to its container; raise naming those missing."""
    found = {}
    for container in client.containers.list(
        all=True, filters={"label": f"{PROJECT_LABEL}={project}"}
    ):
        service = container.labels.get(SERVICE_LABEL)
        if service in services:
            found.setdefault(service, container)
    missing = [s for s in services if s not in found]
    if missing:
        raise CommandExecutionError(
            f"no container for {', '.join(missing)} in compose project {project!r}"
        )
    return found


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
    ``doveadm reload``, ``nginx -s reload``) and report exit code and output
    per service. Exits non-zero on the CLI when one fails.

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
    found = _find(_client(), project_name(path), services)
    results = {}
    for service in services:
        container = found[service]
        container.reload()
        if container.status != "running":
            results[service] = {
                "ok": False,
                "error": f"container {container.name} is {container.status}",
            }
            continue
        try:
            exit_code, output = container.exec_run(table[service])
        except docker.errors.APIError as exc:
            results[service] = {"ok": False, "error": f"exec in {container.name} failed: {exc}"}
            continue
        results[service] = {
            "ok": exit_code == 0,
            "exit_code": exit_code,
            "command": " ".join(table[service]),
            "output": _tail(output),
        }
    if not all(r["ok"] for r in results.values()):
        __context__["retcode"] = 1
    return results


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
    timeout = int(timeout)
    found = _find(_client(), project_name(path), services)
    results = {}
    for service in services:
        container = found[service]
        try:
            container.restart(timeout=min(10, timeout))
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
