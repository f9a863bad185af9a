"""
Keep a deployed certificate pair in step with its source, and served
===================================================================

:depends: the ``certsync`` execution module; ``mailcow`` and ``tlsprobe`` for
    reloading containers and checking what is served; ``certsync_monitor`` for
    the records of runs, restarts and pauses

.. code-block:: yaml

    mailcow-certificate:
      certsync.deployed:
        - name: /opt/mailcow-dockerized/data/assets/ssl
        - hostname: mail.example.com
        - live_dir: /etc/letsencrypt/live    # or: source: /etc/letsencrypt/live/npm-5
        - services: [postfix-mailcow, dovecot-mailcow, nginx-mailcow]
        - endpoints: [smtp, submission, smtps, imap, imaps, pop3, pop3s, sieve, https]
        - probe_address: 127.0.0.1

The state validates the source pair, installs it atomically only when it
differs from ``cert.pem``/``key.pem`` in ``name``, reloads the services, and
checks on the wire that every endpoint serves it. A service whose reload does
not take is restarted; when the new certificate still is not served
everywhere, the previous pair is restored and served again, and the state
fails saying which endpoint served what. ``changes`` carries fingerprints,
``not_after`` and SANs, never key material.
"""

import contextlib
import fcntl
import logging
import os
import tempfile
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "certsync"

DEFAULT_MAILCOW_DIR = "/opt/mailcow-dockerized"
DEPLOY_LOCK = ".certsync-deploy.lock"
LOCK_TIMEOUT = 120
#: At most one restart of a service per this many seconds (a certificate that never
#: takes must not restart mail in a loop from the schedule).
RESTART_BACKOFF = 3600
#: Which mailcow service serves which endpoint, to restart only those stale.
ENDPOINT_SERVICES = {
    "smtp": "postfix-mailcow",
    "submission": "postfix-mailcow",
    "smtps": "postfix-mailcow",
    "imap": "dovecot-mailcow",
    "imaps": "dovecot-mailcow",
    "pop3": "dovecot-mailcow",
    "pop3s": "dovecot-mailcow",
    "sieve": "dovecot-mailcow",
    "https": "nginx-mailcow",
}


def __virtual__():
    if "certsync.validate" not in __salt__:
        return (False, "the certsync execution module is not available")
    if "certsync_util.seconds" not in __utils__:
        return (False, "certsync states need salt://_utils/certsync_util.py: saltutil.sync_all")
    return __virtualname__


def _short(fingerprint):
    return f"{fingerprint[:16]}..." if fingerprint else "nothing"


# --------------------------------------------------------------------------
# Source, plan, install
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _source_pair(source, hostname, live_dir, source_minion, fingerprint):
    """Yield (fullchain, key, description) of the source pair, wherever it is."""
    if source_minion:
        if source or live_dir:
            raise SaltInvocationError("give one of source, live_dir and source_minion")
        staging = os.path.join(__opts__["cachedir"], "certsync")
        os.makedirs(staging, mode=0o700, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="staging-", dir=staging) as private:
            found = __salt__["certsync_mine.fetch_published"](source_minion, private)
            origin = f"the mine of {source_minion}"
            if fingerprint and fingerprint != found["fingerprint"]:
                # A queued run for an older announcement: the mine holds the newer one.
                origin += f" (the announced {str(fingerprint)[:16]}... is superseded)"
            yield found["fullchain"], found["privkey"], origin
        return
    yield _resolve_source(source, hostname, live_dir)


def _resolve_source(source, hostname, live_dir):
    """Return (fullchain, key, description) of the local source pair."""
    if source and live_dir:
        raise SaltInvocationError("give either source or live_dir, not both")
    if source:
        return (
            os.path.join(source, "fullchain.pem"),
            os.path.join(source, "privkey.pem"),
            source,
        )
    if live_dir:
        found = __salt__["certsync.find_source"](hostname, live_dir)
        return found["fullchain"], found["privkey"], found["dir"]
    raise SaltInvocationError("a source directory, a live_dir or a source_minion is required")


def _summary(validation):
    return {key: validation.get(key) for key in ("fingerprint", "not_after", "sans")}


def _sni_layout(fullchain, name, sni, hostname):
    """The directories to keep in step (``name``, the hostname's own per-name dir,
    and with ``sni`` the per-name dirs the certificate covers), the names those serve,
    the ``domains`` lists certsync writes, and the per-name dirs left alone."""
    plan = __salt__["certsync.sni_plan"](name, fullchain, hostname=hostname)
    kept = plan["update"] if sni else [d for d in plan["update"] if d in plan["domains"]]
    names = [n for directory in kept for n in plan["names"][directory]]
    return {
        "dirs": [name, *kept],
        "names": list(dict.fromkeys(names)),
        "uncovered": plan["uncovered"] if sni else {},
        "domains": plan["domains"],
        "dropped": plan["dropped"],
    }


def _uncovered_lines(uncovered):
    return [
        f"Left alone: SNI dir {entry} lists {', '.join(row['missing'])}, which the "
        f"certificate does not cover; it keeps serving {_short(row['fingerprint'])} "
        f"(expires {row['not_after'] or 'unknown'}) for {', '.join(row['names'])}"
        for entry, row in sorted(uncovered.items())
    ]


def _dropped_lines(dropped):
    return [
        f"Warning: SNI dir {entry} is mailcow's own for the hostname and is kept by certsync "
        f"now (nothing renews it once mailcow's ACME client is stood down); its list had "
        f"{', '.join(row['names'])}, which the certificate does not cover: mailcow serves "
        "them the top-level pair (this certificate), so clients asking for them get a name "
        "mismatch until the source's certificate covers them"
        for entry, row in sorted(dropped.items())
    ]


def _plan(fullchain, key, dirs, domains):
    """Return the list of directories whose pair (or ``domains`` list) differs."""
    plan = []
    for directory in dirs:
        comparison = __salt__["certsync.compare"](
            fullchain, key, directory, domains=domains.get(directory)
        )
        if not comparison["current"]:
            plan.append((directory, comparison))
    return plan


def _apply(fullchain, key, plan, domains):
    """Install into each planned directory; on failure restore those done."""
    done = []
    try:
        for directory, _ in plan:
            __salt__["certsync.install"](fullchain, key, directory, domains=domains.get(directory))
            done.append(directory)
    except CommandExecutionError as exc:
        restore_errors = _restore(done)
        raise CommandExecutionError(
            f"{exc}; restored the previous pair in: {', '.join(done) or 'nothing installed'}"
            + (f"; restoring failed: {'; '.join(restore_errors)}" if restore_errors else "")
        ) from None
    return done


def _restore(directories):
    errors = []
    for directory in reversed(directories):
        try:
            __salt__["certsync.restore_previous"](directory)
        except CommandExecutionError as exc:
            errors.append(str(exc))
    return errors


def _describe_plan(plan):
    return "; ".join(
        f"{directory}: {', '.join(comparison['differences'])}" for directory, comparison in plan
    )


# --------------------------------------------------------------------------
# Services and the wire
# --------------------------------------------------------------------------


class _Serving:
    """Reload services and check endpoints for one mailcow installation."""

    def __init__(self, hostname, services, mailcow, endpoints, address, timeout):
        # a files-only deploy (no services, no endpoints) never loads Docker's or the probe's module
        self.services = _names(services, "services", "compose service names")
        if self.services and "mailcow.reload" not in __salt__:
            raise SaltInvocationError(
                "services given but the mailcow module is not available: install docker "
                "(salt-pip install docker), then restart the minion"
            )
        if endpoints and "tlsprobe.probe" not in __salt__:
            raise SaltInvocationError("endpoints given but the tlsprobe module is not available")
        self.hostname = hostname
        self.mailcow_dir, self.commands, self.mail_domains = mailcow
        _check_commands(self.commands)
        self.mail_domains = _names(self.mail_domains, "mail_domains", "domains") or None
        self.endpoints = (
            _conf_endpoints(endpoints, self.mailcow_dir) if self.services else endpoints
        )
        if self.endpoints:
            __salt__["tlsprobe.endpoint_list"](self.endpoints)
        self.address = address
        self.timeout = _seconds(timeout, "verify_timeout")
        self.names = None  # SNI names to probe with (None: hostname only)
        self.log = []
        self.last = {}  # the latest probe results, by endpoint
        self.unreachable = {}  # endpoint: why it answered nothing before the deploy

    @property
    def active(self):
        return bool(self.services or self.endpoints)

    def preflight(self):
        """Fail before anything changes when Docker or a container is not there."""
        if self.services:
            __salt__["mailcow.containers"](self.services, self.mailcow_dir)

    def served(self):
        """What each endpoint serves now: {endpoint: probe result}."""
        return __salt__["tlsprobe.probe"](
            self.hostname, self.endpoints, self.address, names=self.names
        )

    def _reload(self):
        results = __salt__["mailcow.reload"](self.services, self.mailcow_dir, self.commands)
        failed = [
            f"{s}: {r.get('error') or r.get('output')}" for s, r in results.items() if not r["ok"]
        ]
        self.log.append(
            "reloaded " + ", ".join(self.services) + (f" ({'; '.join(failed)})" if failed else "")
        )
        return not failed

    def set_aside_unreachable(self):
        """Probe before anything changes. An endpoint that answers nothing (refused,
        timed out, no TLS) is off, not stale: reported, never waited for, never a
        reason to reload or restart. Returns what the others serve."""
        served = self.served()
        by_endpoint = {}
        for key, result in served.items():
            by_endpoint.setdefault(key.split("/")[0], []).append(result)
        self.unreachable = {
            endpoint: _why_unreachable(results[0])
            for endpoint, results in by_endpoint.items()
            if not any(r.get("fingerprint") for r in results)
        }
        if len(self.unreachable) == len(by_endpoint):
            raise CommandExecutionError(
                "no endpoint answers, so nothing could be verified: "
                + "; ".join(f"{e} ({why})" for e, why in sorted(self.unreachable.items()))
            )
        self.endpoints = {
            protocol: f"{address}:{port}" if address else port
            for protocol, port, address in __salt__["tlsprobe.endpoint_list"](self.endpoints)
            if protocol not in self.unreachable
        }
        return {k: r for k, r in served.items() if k.split("/")[0] not in self.unreachable}

    def unreachable_lines(self):
        return [
            f"Not reachable, not checked: {endpoint} ({why}); certsync never restarts a "
            "service for it (take it out of endpoints if it is off on purpose)"
            for endpoint, why in sorted(self.unreachable.items())
        ]

    def _restart(self, services, restoring=False):
        recent = (
            {}
            if restoring
            else __salt__["certsync_monitor.restarts"](self.mailcow_dir, RESTART_BACKOFF)
        )
        held = [s for s in services if s in recent]
        if held:
            self.log.append(
                f"not restarted {', '.join(held)}: restarted at "
                f"{', '.join(_utc(recent[s]) for s in held)}, "
                f"at most one restart per {RESTART_BACKOFF} s"
            )
        services = [s for s in services if s not in recent]
        if not services:
            return False
        results = __salt__["mailcow.restart"](services, self.mailcow_dir)
        __salt__["certsync_monitor.note_restarts"](self.mailcow_dir, services)
        failed = [f"{s}: {r.get('error')}" for s, r in results.items() if not r["ok"]]
        self.log.append(
            "restarted " + ", ".join(services) + (f" ({'; '.join(failed)})" if failed else "")
        )
        return True

    def _wait(self, fingerprint):
        waited = __salt__["tlsprobe.wait_for"](
            self.hostname,
            fingerprint,
            self.endpoints,
            self.address,
            timeout=self.timeout,
            names=self.names,
        )
        self.last = waited["served"]
        return waited["ok"]

    def _stale_services(self, fingerprint):
        """The services of the endpoints that do not serve ``fingerprint``: each answered
        before the deploy (set_aside_unreachable), so it serves another certificate now,
        or the reload stopped it. A name not probed: its endpoint's hostname is stale."""
        stale = {
            ENDPOINT_SERVICES.get(name.split("/")[0])
            for name, result in self.last.items()
            if result.get("fingerprint") != fingerprint and result.get("probed") is not False
        }
        return [s for s in self.services if s in stale]

    def make_served(self, fingerprint, restoring=False):
        """Reload, check, restart what is stale, check again. True when served everywhere.
        A service restarted within the back-off is not restarted again, unless
        ``restoring`` the pair that served before."""
        self.last = {}
        reloaded = self._reload() if self.services else True
        if not self.endpoints:
            return reloaded
        if reloaded and self._wait(fingerprint):
            return True
        if not self.services:
            return False
        if not self.last:
            self.last = self.served()
        stale = self._stale_services(fingerprint)
        return bool(stale) and self._restart(stale, restoring) and self._wait(fingerprint)


def _why_unreachable(result):
    where = f"{result.get('address')}:{result.get('port')}"
    return f"{where}: {result.get('error') or 'no certificate'}"


def _names(values, what, kind):
    """A list of non-empty strings (None: empty); anything else is refused up front."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [v.strip() for v in values.split(",") if v.strip()]
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) and v for v in values):
        raise SaltInvocationError(f"{what} must be a list of {kind}, not {values!r}"[:300])
    return list(values)


def _check_commands(commands):
    """reload_commands: a mapping of service name to an argv list of strings."""
    if commands is None:
        return
    valid = isinstance(commands, dict) and all(
        isinstance(service, str)
        and isinstance(argv, list)
        and argv
        and all(isinstance(arg, str) for arg in argv)
        for service, argv in commands.items()
    )
    if not valid:
        raise SaltInvocationError(
            f"reload_commands must map service names to argv lists, not {commands!r}"[:300]
        )


def _seconds(value, what):
    return __utils__["certsync_util.seconds"](value, what, 3600)


def _utc(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@contextlib.contextmanager
def _deploy_lock(name, timeout=LOCK_TIMEOUT):
    """One certsync.deployed run per destination at a time, whoever started it (a lock
    file beside the pair; install and rollback hold .certsync.lock inside it)."""
    if not os.path.isdir(name) or os.path.islink(name):
        yield  # the module refuses such a destination, naming it
        return
    path = os.path.join(name, DEPLOY_LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.1) + 1):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CommandExecutionError(
                        f"{path}: another certsync.deployed run held it for {timeout} s"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def _has_conf(mailcow_dir):
    return os.path.isfile(os.path.join(mailcow_dir, "mailcow.conf"))


def _conf_endpoints(endpoints, mailcow_dir):
    """Bare protocol names take their ports and addresses from mailcow.conf."""
    bare = isinstance(endpoints, (list, tuple)) and all(":" not in str(e) for e in endpoints)
    if not endpoints or not bare or not _has_conf(mailcow_dir):
        return endpoints
    return __salt__["mailcow.endpoints"](mailcow_dir, list(endpoints))


def _mailcow_checks(serving, validation):
    """
    What mailcow.conf says: MAILCOW_HOSTNAME must be ``hostname``, no acme-mailcow
    may run without SKIP_LETS_ENCRYPT=y (in a dry run a note: the formula stands it down
    first). Returns the notes and the warnings for the names mailcow serves with the
    top-level pair that the certificate lacks.
    """
    if not serving.services or not _has_conf(serving.mailcow_dir):
        return []
    conf = os.path.join(serving.mailcow_dir, "mailcow.conf")
    configured = (
        __salt__["mailcow.conf_get"]("MAILCOW_HOSTNAME", serving.mailcow_dir) or ""
    ).lower()
    if configured and configured != serving.hostname.lower():
        raise SaltInvocationError(
            f"{conf}: MAILCOW_HOSTNAME={configured!r}, but the certificate is deployed for "
            f"{serving.hostname!r}: one of them is wrong"
        )
    acme = __salt__["mailcow.acme_status"](serving.mailcow_dir)
    notes = []
    if acme["fights"] and __opts__["test"]:  # the formula's state before this one stands it down
        notes.append(
            f"acme-mailcow ({acme['name']}) runs without SKIP_LETS_ENCRYPT=y: the real run "
            "deploys only once it is stood down (the formula's certsync-acme-stood-down does "
            "that first; alone: mailcow.acme_stood_down)"
        )
    elif acme["fights"]:
        raise CommandExecutionError(
            f"acme-mailcow ({acme['name']}) runs without SKIP_LETS_ENCRYPT=y in its environment "
            "and would overwrite the pair: set SKIP_LETS_ENCRYPT=y in mailcow.conf and run "
            f"`docker compose up -d` in {serving.mailcow_dir} (the state mailcow.acme_stood_down "
            "does both)"
        )
    if not configured:
        return notes
    lacking = __salt__["mailcow.missing_names"](
        validation["sans"], serving.mailcow_dir, serving.mail_domains
    )
    if lacking:
        notes.append(
            f"Warning: the certificate lacks {', '.join(lacking)}, which mailcow's nginx serves "
            "with the top-level pair (client autoconfiguration over HTTPS breaks)"
        )
    return notes


def _indented(lines):
    return [f"  {line}" for line in lines]


def _served_report(served, expected, names):
    """One line per endpoint: what it served, and whose pair that is."""
    lines = []
    for endpoint, result in sorted(served.items()):
        where = f"{endpoint} ({result['address']}:{result['port']})"
        fingerprint = result.get("fingerprint")
        if not fingerprint:
            lines.append(f"{where}: {result.get('error', 'no certificate')}")
            continue
        owner = names.get(fingerprint, "an unknown pair")
        state = "ok" if fingerprint == expected else "WRONG"
        lines.append(f"{where}: {state}, serves {_short(fingerprint)} ({owner})")
    return lines


def _pair_names(name, new, old):
    """Whose pair each fingerprint is: the new, the previous, and the SNI dirs holding it."""
    labels = {new: ["the new pair"]}
    if old:
        labels.setdefault(old, []).append("the previous pair")
    for sni_name, fingerprint in __salt__["certsync.sni_inventory"](name).items():
        labels.setdefault(fingerprint, []).append(f"the pair in SNI dir {sni_name}")
    return {fingerprint: ", also ".join(found) for fingerprint, found in labels.items()}


def _fail_and_roll_back(ret, serving, name, done, new, old):
    """The new pair is not served everywhere: restore the old one and say what happened."""
    names = _pair_names(name, new, old)
    report = _served_report(serving.last, new, names) if serving.last else []
    restore_errors = _restore(done)
    lines = [f"Certificate {_short(new)} was not served everywhere after: {'; '.join(serving.log)}"]
    lines += _indented(report)
    if restore_errors:
        lines.append("Restoring the previous pair FAILED: " + "; ".join(restore_errors))
    else:
        lines.append(f"Restored the previous pair {_short(old)} in: {', '.join(done)}")
        serving.log = []
        if old and serving.make_served(old, restoring=True):
            lines.append(f"The previous pair {_short(old)} is served again on every endpoint")
        elif old:
            lines.append(
                f"The previous pair is NOT served everywhere after: {'; '.join(serving.log)}"
            )
            lines += _indented(_served_report(serving.last or {}, old, names))
    ret["changes"] = {}
    ret["comment"] = "\n".join(lines)
    return ret


# --------------------------------------------------------------------------
# The state
# --------------------------------------------------------------------------


def _converge_served(ret, serving, validation, origin, served):
    """The files are current: make sure every endpoint that answers serves them too."""
    new = validation["fingerprint"]
    ret["result"] = True
    ret["comment"] = f"Certificate {new} from {origin} is already deployed"
    if not serving.endpoints:
        return ret
    stale = sorted(n for n, r in served.items() if r.get("fingerprint") != new)
    if not stale:
        ret["comment"] += " and served on every endpoint" + (
            " that answers" if serving.unreachable else ""
        )
        return ret
    names = _pair_names(ret["name"], new, None)
    report = "\n".join(_indented(_served_report(served, new, names)))
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] += (
            f", but not served on {', '.join(stale)}; would reload "
            + (", ".join(serving.services) or "nothing")
            + f":\n{report}"
        )
        return ret
    if serving.make_served(new):
        ret["changes"] = {"served": {"repaired": stale, "fingerprint": new}}
        ret["comment"] += (
            f"; {', '.join(stale)} served something else, now fixed by: {'; '.join(serving.log)}"
        )
        return ret
    ret["result"] = False
    ret["comment"] += f", but not served everywhere after: {'; '.join(serving.log)}\n" + "\n".join(
        _indented(_served_report(serving.last, new, names))
    )
    return ret


def deployed(
    name,
    hostname,
    source=None,
    live_dir=None,
    min_days=7,
    sni=True,
    ca_file=None,
    services=None,
    mailcow_dir=DEFAULT_MAILCOW_DIR,
    reload_commands=None,
    endpoints=None,
    probe_address=None,
    verify_timeout=60,
    source_minion=None,
    fingerprint=None,
    dane=None,
    mail_domains=None,
    allow_older=False,
    paused=False,
):
    """
    Make the certificate pair in ``name`` match the source pair, and make the
    services serve it.

    name
        The directory mailcow reads ``cert.pem`` (0644) and ``key.pem`` (0600)
        from, e.g. ``/opt/mailcow-dockerized/data/assets/ssl``. It must exist
        and must not be a symlink.

    hostname
        The mail host name the certificate must cover (RFC 6125), also sent
        as SNI by the probes.

    source
        A directory holding ``fullchain.pem`` and ``privkey.pem``, such as
        NPM's ``live/npm-5``. Read through its symlinks.

    live_dir
        Instead of ``source``: NPM's ``live/`` directory, searched for the
        certificate that covers ``hostname`` (the latest ``not_after`` wins).

    source_minion
        Instead of ``source``: the id of the source minion whose mine entry
        for this minion holds the chain and the sealed key (see
        ``certsync_mine.publish``). The key is opened into a private staging
        directory under the cachedir, removed after the run.

    fingerprint
        With ``source_minion``: the fingerprint the ``certsync/published``
        event announced. When the mine entry is for another certificate (a
        newer publication superseded the announcement), the comment says so
        and the entry in the mine, validated as always, is what is deployed.

    min_days
        Refuse a source certificate with fewer days of validity left.
        Default: 7.

    dane
        When the host uses DANE: ``True`` (TLSA at ``_25._tcp.<hostname>``,
        the system resolver) or a mapping with ``port``, ``nameservers`` and
        ``dns_port``. A certificate that no published TLSA record matches is
        not deployed; the comment gives the exact record to publish and the
        rollover steps (publish beside the old, wait the TTL, deploy, remove
        the old). A failed lookup deploys nothing. Default: off.

    sni
        With mailcow's ``ENABLE_SSL_SNI=y``, per-name directories
        ``name/<dns-name>/`` that already exist for a name the certificate
        covers are kept in step too. Default: True. The hostname's own
        directory (``name/<hostname>/``, which mailcow's ACME client leaves on
        every host where it ran and serves whatever ``ENABLE_SSL_SNI`` says) is
        kept either way: certsync writes the pair there and a ``domains`` file
        listing the hostname and the certificate's other names; the names
        mailcow's list had that the certificate does not cover are named in a
        warning (mailcow's list is kept as ``domains.mailcow``).

    ca_file
        Optional PEM bundle of trusted roots the chain must verify against.

    services
        Compose services to reload after an install (and to restart when a
        reload does not take), e.g. ``[postfix-mailcow, dovecot-mailcow,
        nginx-mailcow]``. Default: none, only the files are managed (an
        empty list is the same; the ``mailcow`` module, and docker-py, are
        then not needed).

    mailcow_dir
        The mailcow-dockerized checkout (for the compose project name).
        Default: ``/opt/mailcow-dockerized``.

    reload_commands
        Mapping of service name to the argv list that reloads it inside its
        container, for releases that need other commands than the defaults.

    endpoints
        Endpoints to verify on the wire (see the ``tlsprobe`` module): names
        such as ``[smtp, imaps, https]``, ``protocol:port`` strings or a
        protocol-to-port mapping. Default: none, nothing is probed. They are
        probed once before anything changes: one that answers no TLS
        handshake then (refused, timed out, another protocol: a port that is
        off) is named in the comment and left out of the run; it never causes
        a reload or a restart. When none answers, nothing is deployed.
        A service is restarted only for endpoints that served another
        certificate after the reload (or stopped answering), and at most
        once an hour (a record in the cachedir), except to bring the previous
        pair back in a roll back.

    probe_address
        Where the probes connect. Default: ``hostname``.

    verify_timeout
        Seconds to wait for every endpoint to serve the new certificate, per
        attempt (after the reload, after the restart). Default: 60.

    mail_domains
        The mail domains mailcow serves: ``autodiscover.<d>`` and
        ``autoconfig.<d>`` (unless ``AUTODISCOVER_SAN=n``) and the
        ``ADDITIONAL_SAN`` names of mailcow.conf are served with the
        top-level pair; the comment warns about each one the certificate
        does not cover.

    With ``services``, when ``mailcow_dir`` holds a ``mailcow.conf``: its
    ``MAILCOW_HOSTNAME`` must be ``hostname``; bare endpoint names take their
    ports and addresses from it (``SMTP_PORT=IP:PORT`` ...); nothing is
    deployed while acme-mailcow runs without ``SKIP_LETS_ENCRYPT=y``.

    allow_older
        Deploy the source's certificate even when it was issued before the
        one certsync installed and serves now. Default: False: an older
        publication (a master's mine cache restored from a backup) is refused
        and the newer certificate keeps serving.

    paused
        Deploy nothing, and say so (pillar ``paused: true``). Deploys are
        also paused after a roll back (``certsync.rolled_back``) until
        ``certsync.resumed`` (``state.apply certsync.resume``).

    Per-name directories (``sni``): mailcow serves ``name/<dir>/`` for the
    names in its ``domains`` file. The hostname's own is kept (see ``sni``);
    another whose names the certificate all covers is kept in step; one it
    does not cover is left alone and reported. The wire check probes every
    endpoint for the hostname, each name of the updated directories (SNI) and
    without SNI (the top-level pair).
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    hold = {}  # the DANE gate's record to publish, or its steps done
    held = _paused(name, paused)
    if held:
        return {**ret, "result": True, "comment": held}
    try:
        serving = _Serving(
            hostname,
            services,
            (mailcow_dir, reload_commands, mail_domains),
            endpoints,
            probe_address,
            verify_timeout,
        )
        dane = _dane_settings(dane)
        with (
            _deploy_lock(name),
            _source_pair(source, hostname, live_dir, source_minion, fingerprint) as pair,
        ):
            ret = _deploy(ret, serving, pair, (min_days, sni, ca_file, dane, hold, allow_older))
        ret["comment"] = "\n".join([ret["comment"], *hold.get("notes", [])])
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret.update(result=False, changes={}, comment=f"Nothing deployed: {exc}")
    except Exception as exc:  # a run never ends in a traceback, and is recorded
        log.error("certsync: unexpected error deploying into %s", name, exc_info=True)
        ret.update(
            result=False,
            changes={},
            comment=f"Nothing deployed: unexpected {type(exc).__name__}: {exc}",
        )
    _record_run(name, ret, hold.get("record"))
    return ret


def _paused(name, by_pillar):
    """Why deploys into ``name`` are paused (the pillar, or a roll back), or None."""
    if by_pillar:
        return "Paused by the pillar (paused: true): nothing deployed"
    pause = (
        __salt__["certsync_monitor.paused"](name) if "certsync_monitor.paused" in __salt__ else None
    )
    if not pause:
        return None
    return (
        f"Paused since {_utc(pause['since'])} ({pause['reason']}): nothing deployed. "
        "To deploy again: salt <this minion> state.apply certsync.resume"
    )


def _record_run(name, ret, dane_pending=None):
    """Note the run's result for monitoring (certsync_monitor); a dry run is not a run."""
    if __opts__["test"] or "certsync_monitor.record_deploy" not in __salt__:
        return
    installed = bool(ret["changes"].get("new"))  # even when a later step failed
    try:
        __salt__["certsync_monitor.record_deploy"](
            name,
            ret["result"],
            installed,
            ret["comment"],
            dane_pending=dane_pending,
            certificate=__salt__["certsync.deployed_info"](name) if installed else None,
        )
    except OSError as exc:
        log.warning("certsync: cannot record the result of the run for %s: %s", name, exc)


def _deploy(ret, serving, pair, options):
    """Validate, plan, install and serve one source pair."""
    fullchain, key, origin = pair
    min_days, sni, ca_file, dane, hold, allow_older = options
    name, hostname = ret["name"], serving.hostname
    validation = __salt__["certsync.validate"](
        fullchain, key, hostname, min_days=min_days, ca_file=ca_file
    )
    if not validation["valid"]:
        ret["comment"] = "Source pair is invalid, nothing deployed:\n" + "\n".join(
            validation["problems"]
        )
        return ret
    layout = _sni_layout(fullchain, name, sni, hostname)
    serving.names = [hostname, *layout["names"], ""]  # and without SNI: the top-level pair
    serving.preflight()  # in a dry run too: a service that is not there fails both
    hold["notes"] = [
        *_uncovered_lines(layout["uncovered"]),
        *_dropped_lines(layout["dropped"]),
        *_mailcow_checks(serving, validation),
    ]
    served = serving.set_aside_unreachable() if serving.endpoints else {}
    hold["notes"] += serving.unreachable_lines()
    plan = _plan(fullchain, key, layout["dirs"], layout["domains"])
    if not plan:
        ret = _converge_served(ret, serving, validation, origin, served)
        verified = serving.endpoints and ret["result"] is not False
        return _dane_retire(ret, hostname, dane) if dane and verified else ret
    old = __salt__["certsync.deployed_info"](name)
    older = not allow_older and _older_than_served(name, old, validation)
    if older:
        ret["comment"] = older
        return ret
    held = dane and _dane_gate(ret, hostname, fullchain, hold, dane)
    if held:
        return held
    ret["changes"] = {
        **ret["changes"],
        "old": _summary(old or {}),
        "new": _summary(validation),
        "dirs": [directory for directory, _ in plan],
    }
    if __opts__["test"]:
        return _test_plan(ret, serving, plan, origin, served)
    done = _apply(fullchain, key, plan, layout["domains"])
    new, previous = validation["fingerprint"], (old or {}).get("fingerprint")
    try:
        served = not serving.active or serving.make_served(new)
        if not served:
            return _fail_and_roll_back(ret, serving, name, done, new, previous)
    except Exception as exc:  # whatever it is, the previous pair comes back
        return _restore_after_error(ret, done, exc)
    ret["result"] = True
    ret["comment"] = f"Installed certificate {new} from {origin} into {', '.join(done)}"
    if serving.log:
        ret["comment"] += f"; {'; '.join(serving.log)}"
        ret["changes"]["served"] = sorted(serving.last) if serving.endpoints else []
    ret["comment"] += "".join(f"\nDANE: {step}" for step in hold.get("steps", []))
    if dane and serving.endpoints:
        return _dane_retire(ret, hostname, dane)
    if dane:
        ret["comment"] += "\nDANE: no endpoints verified, so no old TLSA record is removed"
    return ret


def _older_than_served(name, served, validation):
    """Why the source's certificate must not replace what is served, or None: certsync
    installed what is served (its deploy record says so) and the source's certificate
    was issued before it (an older mine entry, e.g. a restored master cache)."""
    if not served or "certsync_monitor.last_deploy" not in __salt__:
        return None
    installed = (__salt__["certsync_monitor.last_deploy"](name) or {}).get("certificate") or {}
    if installed.get("fingerprint") != served["fingerprint"]:
        return None  # not certsync's own (mailcow's, a hand copy): nothing to compare
    if not validation.get("not_before") or validation["not_before"] >= served["not_before"]:
        return None
    return (
        f"Nothing deployed: the source's certificate {_short(validation['fingerprint'])} was "
        f"issued {validation['not_before']}, before the one certsync installed and serves "
        f"({_short(served['fingerprint'])}, issued {served['not_before']}): an older "
        "publication (a restored master cache?) never replaces a newer certificate. "
        "To deploy it anyway: allow_older: true"
    )


def _dane_settings(dane):
    if not dane:
        return None
    if dane is not True and not isinstance(dane, dict):
        raise SaltInvocationError("dane must be true or a mapping (port, nameservers, ...)")
    if "maildns.tlsa_gate" not in __salt__:
        raise SaltInvocationError("dane is on but the maildns module is not available")
    return dane


def _dane_gate(ret, hostname, fullchain, hold, dane):
    """None when the new certificate may go live (DANE); else the state's return."""
    gate = __salt__["maildns.tlsa_gate"](
        hostname, fullchain, os.path.join(ret["name"], "cert.pem"), dane, test=__opts__["test"]
    )
    ret["changes"] = {"tlsa": {"added": gate["added"]}} if gate["added"] else {}
    if gate["ready"]:
        hold["steps"] = gate["steps"]
        return None
    hold["record"] = gate.get("publish") or f"{gate['name']}. IN TLSA {gate['record']}"
    ret["result"] = None if __opts__["test"] else False
    ret["comment"] = "\n".join([*(f"DANE: {step}" for step in gate["steps"]), gate["comment"]])
    return ret


def _dane_retire(ret, hostname, dane):
    """After the new pair is served: remove the old TLSA record of an RFC 2136 rollover."""
    try:
        retired = __salt__["maildns.tlsa_retire"](
            hostname, os.path.join(ret["name"], "cert.pem"), dane, test=__opts__["test"]
        )
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["result"] = False
        ret["comment"] += (
            f"\nDANE: the old TLSA record is still published ({exc}); the next run removes it"
        )
        return ret
    if retired["removed"]:
        verb = "would remove" if retired["pending"] else "removed"
        ret["comment"] += f"\nDANE: {verb} the old TLSA record {'; '.join(retired['removed'])}"
        if not retired["pending"]:
            ret["changes"].setdefault("tlsa", {})["removed"] = retired["removed"]
    return ret


def _restore_after_error(ret, done, exc):
    restore_errors = _restore(done)
    ret["changes"] = {}
    ret["comment"] = f"{exc}; restored the previous pair in: {', '.join(done)}"
    if restore_errors:
        ret["comment"] += f"; restoring FAILED: {'; '.join(restore_errors)}"
    return ret


def _test_plan(ret, serving, plan, origin, served):
    ret["result"] = None
    lines = [f"Would install the pair from {origin}: {_describe_plan(plan)}"]
    if serving.services:
        lines.append(f"Would reload {', '.join(serving.services)}")
    if serving.endpoints:
        new = ret["changes"]["new"]["fingerprint"]
        old = ret["changes"]["old"]["fingerprint"]
        names = _pair_names(ret["name"], new, old)
        lines.append("Served now:")
        lines += _indented(_served_report(served, new, names))
    ret["comment"] = "\n".join(lines)
    return ret


def rolled_back(
    name,
    hostname,
    services=None,
    mailcow_dir=DEFAULT_MAILCOW_DIR,
    reload_commands=None,
    endpoints=None,
    probe_address=None,
    verify_timeout=60,
):
    """
    Undo the deploy of the certificate ``name`` holds, and keep it undone: the
    previous pair back in ``name`` and in every per-name directory the same
    deploy changed, as one step (``certsync.rollback``), then the services
    reloaded (restarted where the reload does not take) and every endpoint
    checked on the wire; deploys into ``name`` (the schedule's, the reactor's)
    are paused until ``certsync.resumed``. The arguments are
    ``certsync.deployed``'s. With ``test=True`` the comment gives the plan.

    .. code-block:: yaml

        mailcow-rolled-back:
          certsync.rolled_back:
            - name: /opt/mailcow-dockerized/data/assets/ssl
            - hostname: mail.example.com
            - services: [postfix-mailcow, dovecot-mailcow, nginx-mailcow]
            - endpoints: [smtp, imaps, https]
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    try:
        serving = _Serving(
            hostname,
            services,
            (mailcow_dir, reload_commands, None),
            endpoints,
            probe_address,
            verify_timeout,
        )
        with _deploy_lock(name):
            plan = __salt__["certsync.rollback_plan"](name)
            steps = [
                f"{step['dir']}: {_short(step['holds'])} -> {_short(step['restores'])}"
                for step in plan
            ]
            serving.preflight()
            if __opts__["test"]:
                ret["result"] = None
                ret["comment"] = "\n".join(
                    ["Would roll back:", *_indented(steps)]
                    + ([f"Would reload {', '.join(serving.services)}"] if serving.services else [])
                    + ["Would pause the deploys until certsync.resumed"]
                )
                return ret
            restored = __salt__["certsync.rollback"](name)
            __salt__["certsync_monitor.pause"](
                name, f"rolled back from {_short(plan[0]['holds'])} by certsync.rolled_back"
            )
            serving.names = [hostname, *(os.path.basename(s["dir"]) for s in plan[1:]), ""]
            served = not serving.active or serving.make_served(restored["restored"], True)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = f"Nothing rolled back: {exc}"
        return ret
    ret["changes"] = {
        "rolled_back": {"old": plan[0]["holds"], "new": plan[0]["restores"]},
        "dirs": [step["dir"] for step in plan],
        "paused": True,
    }
    ret["result"] = bool(served)
    lines = ["Rolled back:", *_indented(steps)]
    if serving.log:
        lines.append("; ".join(serving.log))
    if serving.endpoints:
        verdict = "served on every endpoint" if served else "NOT served everywhere"
        lines.append(f"The previous pair {_short(restored['restored'])} is {verdict}")
        lines += _indented(_served_report(serving.last, restored["restored"], {}))
    lines.append(
        "Deploys are paused (schedule and reactor deploy nothing); to deploy again: "
        "salt <this minion> state.apply certsync.resume"
    )
    ret["comment"] = "\n".join(lines)
    return ret


def resumed(name):
    """
    Let deploys into ``name`` run again after a roll back
    (``certsync.rolled_back``). The formula's ``certsync.resume`` applies it,
    then the deploy.

    .. code-block:: yaml

        mailcow-resumed:
          certsync.resumed:
            - name: /opt/mailcow-dockerized/data/assets/ssl
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    pause = __salt__["certsync_monitor.paused"](name)
    if not pause:
        ret["comment"] = f"Deploys into {name} are not paused"
        return ret
    if __opts__["test"]:
        ret.update(result=None, comment=f"Would resume the deploys into {name}")
        return ret
    __salt__["certsync_monitor.resume"](name)
    ret["changes"] = {"paused": {"old": True, "new": False}}
    ret["comment"] = f"Deploys into {name} resumed (paused for: {pause['reason']})"
    return ret


def settings_valid(name="certsync"):
    """
    The formula's first state: fail, naming each problem, when this minion's
    ``certsync`` pillar has a key the formula does not know (with the closest
    one it knows), lacks ``hostname``, or names a source or consumers but not
    this minion's id (``certsync.check_settings``). A minion meant to have no
    role says so with ``certsync:no_role: true``.

    .. code-block:: yaml

        certsync-settings:
          certsync.settings_valid: []
    """
    checked = __salt__["certsync.check_settings"]()
    role = checked["role"] or "none"
    ret = {"name": name, "changes": {}, "result": checked["valid"], "comment": ""}
    if checked["valid"]:
        ret["comment"] = f"The certsync pillar is valid; role: {role} ({checked['why']})"
        return ret
    lines = [*checked["problems"]]
    if not checked["role"] and checked["why"] not in lines:
        lines.append(checked["why"])
    ret["comment"] = "The certsync pillar needs fixing:\n" + "\n".join(f"- {x}" for x in lines)
    return ret


def published(name, consumers, source=None, live_dir=None, force=False):
    """
    Publish the certificate for ``name`` (the mail host name) from this
    source minion to the ``consumers`` through the Salt mine: one entry per
    consumer, readable only by it, with the private key sealed to its
    recipient key; then ``certsync/published`` is fired. Changes (and the
    event) only when the certificate or a consumer's recipient key changed;
    otherwise the mine entries are refreshed quietly.

    name
        The host name the certificate covers.

    consumers
        The consumer minion ids.

    source / live_dir
        Where the pair is, as in :py:func:`deployed`.

    force
        Fire ``certsync/published`` even when nothing changed.
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    try:
        fullchain, key, origin = _resolve_source(source, name, live_dir)
        done = __salt__["certsync_mine.publish"](
            fullchain, key, consumers, hostname=name, force=force, test=__opts__["test"]
        )
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = f"Nothing published: {exc}"
        return ret
    lines = []
    if done["missing_recipient_key"]:
        lines.append(
            "No recipient key in the mine for "
            + ", ".join(done["missing_recipient_key"])
            + " (apply the consumer state there first)"
        )
    if done["problems"]:
        lines.append("Warning, the consumers will refuse it: " + "; ".join(done["problems"]))
    fingerprint = done["fingerprint"]
    if not done["changed"] and not force:
        ret["result"] = not done["missing_recipient_key"]
        lines.insert(0, f"Certificate {fingerprint} from {origin} is already published")
    elif __opts__["test"]:
        ret["result"] = None
        lines.insert(0, f"Would publish certificate {fingerprint} from {origin}")
        ret["changes"] = {"fingerprint": fingerprint, "consumers": done["consumers"]}
    else:
        ret["result"] = not done["missing_recipient_key"]
        consumers = ", ".join(done["consumers"]) or "nobody"
        lines.insert(0, f"Published certificate {fingerprint} from {origin} for {consumers}")
        ret["changes"] = {
            "fingerprint": fingerprint,
            "not_after": done["not_after"],
            "consumers": done["consumers"],
        }
    ret["comment"] = "\n".join(lines)
    return ret


def recipient_published(name, sources):
    """
    Make this consumer's recipient key pair (created once, 0600, in the
    minion's ``pki_dir``) and put its public half in the mine for the
    ``sources`` only. When the key is new (a rebuilt host), fire
    ``certsync/recipient`` so that the sources seal for it again.

    name
        A label for the state.

    sources
        The source minion ids allowed to read the public key.
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    try:
        done = __salt__["certsync_mine.publish_recipient_key"](sources, test=__opts__["test"])
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = str(exc)
        return ret
    if __opts__["test"]:
        ret["result"] = None if done["created"] else True
        ret["comment"] = (
            "Would create the recipient key and publish its public half"
            if done["created"]
            else "The recipient key exists; its public half would be refreshed in the mine"
        )
        return ret
    ret["result"] = True
    if done["created"]:
        __salt__["event.send"]("certsync/recipient", {"sources": done["sources"]})
        ret["changes"] = {"created": True, "public": done["public"]}
        ret["comment"] = (
            f"Created the recipient key and published it for {', '.join(done['sources'])}"
        )
    else:
        ret["comment"] = f"The recipient key is published for {', '.join(done['sources'])}"
    return ret


def key_reused(name, hostname=None):
    """
    Make certbot keep the key of a lineage across renewals, so that a
    ``TLSA 3 1 1`` record (and anything else pinning the key) survives NPM's
    renewals: ``reuse_key = True`` under ``[renewalparams]`` of the lineage's
    renewal file, every other line kept, written atomically with its mode
    and owner. certbot's default, and NPM's, is a new key at every renewal.

    name
        The lineage's live directory, e.g. ``/etc/nginx/letsencrypt/live/npm-5``
        (its renewal file is ``<config dir>/renewal/npm-5.conf``), or, with
        ``hostname``, NPM's ``live/`` directory.

    hostname
        Optional: find the lineage under ``name`` whose certificate covers
        this name (as ``certsync.find_source`` does).

    .. code-block:: yaml

        npm-keeps-its-key:
          certsync.key_reused:
            - name: /etc/nginx/letsencrypt/live/npm-5
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    try:
        lineage_dir = __salt__["certsync.find_source"](hostname, name)["dir"] if hostname else name
        done = __salt__["certsync.set_reuse_key"](lineage_dir, test=__opts__["test"])
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = f"reuse_key not set: {exc}"
        return ret
    if not done["changed"]:
        ret["result"] = True
        ret["comment"] = f"{done['renewal_file']} already keeps the key (reuse_key = True)"
        return ret
    ret["changes"] = {"reuse_key": {"old": False, "new": True}, "file": done["renewal_file"]}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"Would set reuse_key = True in {done['renewal_file']}"
    else:
        ret["result"] = True
        ret["comment"] = (
            f"Set reuse_key = True in {done['renewal_file']}: certbot renew keeps the key of "
            f"{done['lineage']} from now on"
        )
    return ret
