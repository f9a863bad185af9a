"""
The ``mailcow`` consumer kind: mailcow-dockerized's certificate layout
=====================================================================

mailcow (postfix, dovecot, nginx) reads its pair from ``data/assets/ssl``:
``cert.pem`` and ``key.pem`` at the top, and with ``ENABLE_SSL_SNI=y`` one
per-name directory ``ssl/<name>/`` per served name set, whose ``domains``
file lists the names it serves ahead of the top-level pair. This module
says which of those directories a certificate is installed into, which are
left alone and why, and what each one serves now; and, as a kind behind
``certsync_consumer``, what a deploy checks in ``mailcow.conf``, how the
compose services take the new pair (reload, restart) and which one serves
each endpoint. mailcow's containers, ``mailcow.conf`` and relay log are the
``mailcow`` module's.

Settings (``certsync_deploy.deploy`` takes them as arguments; ``name`` is
``<mailcow_dir>/data/assets/ssl``):

mailcow_dir
    The mailcow-dockerized checkout (for the compose project name).
    Default: ``/opt/mailcow-dockerized``.

services
    Compose services to reload after an install (and to restart when a
    reload does not take), e.g. ``[postfix-mailcow, dovecot-mailcow,
    nginx-mailcow]``. Default: none, only the files are managed (an empty
    list is the same; the ``mailcow`` module, and docker-py, are then not
    needed).

reload_commands
    Mapping of service name to the argv list that reloads it inside its
    container, for releases that need other commands than the defaults.

mail_domains
    The mail domains mailcow serves: ``autodiscover.<d>`` and
    ``autoconfig.<d>`` (unless ``AUTODISCOVER_SAN=n``) and the
    ``ADDITIONAL_SAN`` names of mailcow.conf are served with the top-level
    pair; the comment warns about each one the certificate does not cover.

sni
    With mailcow's ``ENABLE_SSL_SNI=y``, per-name directories
    ``name/<dns-name>/`` that already exist for a name the certificate
    covers are kept in step too. Default: True. The hostname's own directory
    (``name/<hostname>/``, which mailcow's ACME client leaves on every host
    where it ran and serves whatever ``ENABLE_SSL_SNI`` says) is kept either
    way: certsync writes the pair there and a ``domains`` file listing the
    hostname and the certificate's other names; the names mailcow's list had
    that the certificate does not cover are named in a warning (mailcow's
    list is kept as ``domains.mailcow``). Another per-name directory whose
    names the certificate all covers is kept in step; one it does not cover
    is left alone and reported.

With ``services``, when ``mailcow_dir`` holds a ``mailcow.conf``: its
``MAILCOW_HOSTNAME`` must be ``hostname``; bare endpoint names take their
ports and addresses from it (``SMTP_PORT=IP:PORT`` ...); nothing is
deployed while acme-mailcow runs without ``SKIP_LETS_ENCRYPT=y``. A stale
endpoint restarts the compose service that serves it (``SERVES``).
"""

import os

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "certsync_consumer_mailcow"

DEFAULT_DIR = "/opt/mailcow-dockerized"
#: Where mailcow reads its pair, under its checkout (the only place this path is built).
SSL_DIR = "data/assets/ssl"
#: The compose service that serves each endpoint type.
SERVES = {
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
#: The settings of a mailcow consumer (``certsync_deploy.deploy`` documents each).
SETTINGS = ("mailcow_dir", "services", "reload_commands", "mail_domains", "sni")

#: A per-name dir's list of the names mailcow serves from it, and mailcow's own list
#: as it was before certsync first rewrote it (kept once by certsync.install).
DOMAINS_FILE = "domains"
ORIGINAL_DOMAINS_FILE = "domains.mailcow"
#: In a per-name dir a route of its own keeps (``ssl/<hostname>/``): the route's
#: hostname. The hostname route's plan leaves such a dir to its route.
ROUTE_MARK = "certsync.route"


def __virtual__():
    if "certsync.deployed_info" not in __salt__:
        return (False, "certsync_consumer_mailcow needs the certsync execution module")
    return __virtualname__


def _domains(directory, name=DOMAINS_FILE):
    """The names a per-name dir serves (its ``domains`` file, lower-case); None
    without one."""
    return __utils__["certsync_files.read_names"](os.path.join(directory, name))


def _domains_text(directory, names):
    """The text of the ``domains`` file listing ``names``: the file's own when it lists
    them already (written again as it is: no change for a different spacing), else the
    names on one line."""
    path = os.path.join(directory, DOMAINS_FILE)
    text = __utils__["certsync_files.read_list"](path)
    if text is not None and __utils__["certsync_files.names_in"](text) == names:
        return text
    return " ".join(names) + "\n"


def sni_plan(dest, fullchain, hostname=None):
    """
    What to do with mailcow's per-name directories ``dest/<name>/``. mailcow
    (postfix, dovecot, nginx) serves each directory's pair for the names in
    its ``domains`` file, ahead of the top-level pair, whatever
    ``ENABLE_SSL_SNI`` says. A directory whose names the certificate in
    ``fullchain`` all covers is listed in ``update``; one with a name it does
    not cover is left alone and reported in ``uncovered`` (its names, those
    missing, its own certificate's fingerprint and expiry). Only real
    directories named by a valid DNS name, holding a ``domains`` file, count.

    hostname
        mailcow's ``MAILCOW_HOSTNAME``. Its own directory (``dest/<hostname>/``,
        left by mailcow's ACME client, which nothing renews once it is stood
        down) is taken over whenever the certificate covers the hostname: it
        is in ``update``, with the names its ``domains`` file is to list in
        ``domains`` (the hostname and the certificate's other names), and the
        names mailcow's own list had that the certificate does not cover in
        ``dropped`` (mailcow serves the top-level pair for them from then on).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_consumer_mailcow.sni_plan \
            /opt/mailcow-dockerized/data/assets/ssl /etc/letsencrypt/live/npm-5/fullchain.pem \\
            hostname=mail.example.com
    """
    __salt__["certsync.destination"](dest)
    leaf = __utils__["certsync_pem.read_certs"](fullchain)[0]
    plan = {"update": [], "names": {}, "uncovered": {}, "domains": {}, "dropped": {}}
    own_dir = (
        str(hostname).lower()
        if hostname and __utils__["certsync_pem.covers"](leaf, str(hostname))
        else None
    )
    for entry in sorted(os.listdir(dest)):
        directory = os.path.join(dest, entry)
        if (
            not __utils__["certsync_pem.is_dns_name"](entry)
            or os.path.islink(directory)
            or not os.path.isdir(directory)
        ):
            continue
        names = _domains(directory)
        if not names or os.path.isfile(os.path.join(directory, ROUTE_MARK)):
            continue  # none served, or a route's own (see layout)
        if entry.lower() == own_dir:
            _take_over(plan, directory, leaf, own_dir)
            continue
        missing = [
            __utils__["certsync_pem.shown"](name)
            for name in names
            if not __utils__["certsync_pem.is_dns_name"](name)
            or not __utils__["certsync_pem.covers"](leaf, name)
        ]
        if not missing:
            plan["update"].append(directory)
            plan["names"][directory] = names
            continue
        own = __salt__["certsync.deployed_info"](directory) or {}
        plan["uncovered"][entry] = {
            "dir": directory,
            "names": names,
            "missing": missing,
            "fingerprint": own.get("fingerprint"),
            "not_after": own.get("not_after"),
            "days_left": own.get("days_left"),
        }
    return plan


def _own_names(directory, leaf, hostname):
    """A per-name dir certsync keeps for ``hostname``: the names its ``domains`` lists
    (the hostname first, then the certificate's other names; wildcards left to the
    top-level pair), and those mailcow's own list had that the certificate does not
    cover."""
    sans = [n.lower() for n in __utils__["certsync_pem.dns_sans"](leaf) if "*" not in n]
    names = list(dict.fromkeys([hostname, *sans]))
    mailcows = _domains(directory, ORIGINAL_DOMAINS_FILE)
    listed = mailcows if mailcows is not None else (_domains(directory) or [])
    dropped = [
        __utils__["certsync_pem.shown"](n)
        for n in listed
        if not __utils__["certsync_pem.is_dns_name"](n)
        or not __utils__["certsync_pem.covers"](leaf, n)
    ]
    return names, dropped


def _take_over(plan, directory, leaf, hostname):
    """The hostname's own dir, kept by certsync (see :py:func:`_own_names`)."""
    names, dropped = _own_names(directory, leaf, hostname)
    plan["update"].append(directory)
    plan["names"][directory] = names
    plan["domains"][directory] = names
    if dropped:
        plan["dropped"][os.path.basename(directory)] = {"dir": directory, "names": dropped}


def sni_dirs(dest, fullchain):
    """
    The per-name directories ``dest/<name>/`` that the certificate in
    ``fullchain`` is installed into: those whose ``domains`` names it all
    covers (see :py:func:`sni_plan`, which also lists those left alone).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_consumer_mailcow.sni_dirs \
            /opt/mailcow-dockerized/data/assets/ssl /etc/letsencrypt/live/npm-5/fullchain.pem
    """
    return sni_plan(dest, fullchain)["update"]


# --------------------------------------------------------------------------
# The consumer kind (certsync_consumer's interface)
# --------------------------------------------------------------------------


def settings():
    """
    The settings a mailcow consumer takes: ``mailcow_dir`` (the checkout),
    ``services`` (compose services to reload), ``reload_commands``,
    ``mail_domains`` and ``sni``.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_consumer_mailcow.settings
    """
    return list(SETTINGS)


def dest(hostname, given, route="default"):
    """
    The directory mailcow reads the pair from: ``<mailcow_dir>/data/assets/ssl``
    for the default route and for a route whose hostname is mailcow's
    ``MAILCOW_HOSTNAME``; for another route, its per-name dir
    ``data/assets/ssl/<hostname>/``, which mailcow serves for the names its
    ``domains`` file lists (:py:func:`layout` writes it).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_consumer_mailcow.dest mail.example.com \\
            '{mailcow_dir: /opt/mailcow-dockerized}'
        salt mailcow-host certsync_consumer_mailcow.dest mail.b.example.com \\
            '{mailcow_dir: /opt/mailcow-dockerized}' route=b
    """
    mailcow_dir = _checkout(given)
    top = f"{mailcow_dir}/{SSL_DIR}"
    if route in (None, "", "default") or str(hostname).lower() == _mailcow_hostname(mailcow_dir):
        return top
    if not __utils__["certsync_pem.is_dns_name"](str(hostname)) or "*" in str(hostname):
        raise SaltInvocationError(
            f"route {route}: {str(hostname)[:80]!r} cannot name a mailcow per-name dir"
        )
    return f"{top}/{str(hostname).lower()}"


def _checkout(given):
    """The mailcow checkout the settings ``given`` name (``mailcow_dir``)."""
    return str((given or {}).get("mailcow_dir") or DEFAULT_DIR).rstrip("/")


def _mailcow_hostname(mailcow_dir):
    """``MAILCOW_HOSTNAME`` from ``mailcow.conf`` (lower-case), or None without one."""
    if not _has_conf(mailcow_dir) or "mailcow.conf_get" not in __salt__:
        return None
    return (__salt__["mailcow.conf_get"]("MAILCOW_HOSTNAME", mailcow_dir) or "").lower() or None


def _route_dir(dest):
    """The per-name dir ``dest`` is when a route of its own keeps it
    (``data/assets/ssl/<name>``): its name; None for the top-level dir."""
    parent, name = os.path.split(str(dest).rstrip("/"))
    if parent.endswith(f"/{SSL_DIR}") and __utils__["certsync_pem.is_dns_name"](name):
        return name.lower()
    return None


def _has_conf(mailcow_dir):
    return os.path.isfile(os.path.join(mailcow_dir, "mailcow.conf"))


def _conf_endpoints(endpoints, mailcow_dir):
    """Bare protocol names take their ports and addresses from mailcow.conf."""
    bare = isinstance(endpoints, (list, tuple)) and all(":" not in str(e) for e in endpoints)
    if not endpoints or not bare or not _has_conf(mailcow_dir):
        return endpoints
    return __salt__["mailcow.endpoints"](mailcow_dir, list(endpoints))


def prepare(dest, hostname, endpoints, given):
    """
    The settings of a mailcow consumer checked and completed (see
    ``certsync_consumer``): with ``services``, bare endpoint names take their
    ports and addresses from ``mailcow.conf``.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_consumer_mailcow.prepare \\
            /opt/mailcow-dockerized/data/assets/ssl mail.example.com '[smtp]' \\
            '{services: [postfix-mailcow]}'
    """
    strings = __utils__["certsync_args.strings"]
    services = strings(given.get("services"), "services", "compose service names")
    if services and "mailcow.reload" not in __salt__:
        raise SaltInvocationError(
            "services given but the mailcow module is not available: install docker "
            "(salt-pip install docker), then restart the minion"
        )
    commands = given.get("reload_commands") or None
    __utils__["certsync_args.argv_map"](commands, "reload_commands")
    mailcow_dir = given.get("mailcow_dir") or DEFAULT_DIR
    return {
        "services": services,
        "endpoints": _conf_endpoints(endpoints, mailcow_dir) if services else endpoints,
        # a route's own dir restarts postfix at each renewal (its SNI map is a copy)
        "backoff": dest if _route_dir(dest) else mailcow_dir,
        "sni_only": bool(_route_dir(dest)),
        "mailcow_dir": mailcow_dir,
        "reload_commands": commands,
        "mail_domains": strings(given.get("mail_domains"), "mail_domains", "domains") or None,
        "sni": given.get("sni") is not False,
        "hostname": hostname,
        "dest": dest,
    }


def _short(fingerprint):
    return f"{fingerprint[:16]}..." if fingerprint else "nothing"


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


def layout(dest, fullchain, hostname, prepared):
    """
    Where the pair goes: ``dest``, the hostname's own per-name dir, and with
    ``sni`` the per-name dirs the certificate covers (see :py:func:`sni_plan`);
    the names those serve, the ``domains`` lists certsync writes, and notes
    for the dirs left alone.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_consumer_mailcow.layout \\
            /opt/mailcow-dockerized/data/assets/ssl /etc/letsencrypt/live/npm-5/fullchain.pem \\
            mail.example.com '{sni: true}'
    """
    if _route_dir(dest):
        return _route_layout(dest, fullchain, hostname)
    sni = prepared.get("sni") is not False
    plan = sni_plan(dest, fullchain, hostname=hostname)
    kept = plan["update"] if sni else [d for d in plan["update"] if d in plan["domains"]]
    names = [n for directory in kept for n in plan["names"][directory]]
    return {
        "dirs": [dest, *kept],
        "names": list(dict.fromkeys(names)),
        "files": {d: {DOMAINS_FILE: _domains_text(d, n)} for d, n in plan["domains"].items()},
        "originals": {DOMAINS_FILE: ORIGINAL_DOMAINS_FILE},
        "notes": [
            *_uncovered_lines(plan["uncovered"] if sni else {}),
            *_dropped_lines(plan["dropped"]),
        ],
    }


def _route_layout(dest, fullchain, hostname):
    """A route's own per-name dir: the pair, its ``domains`` (:py:func:`_own_names`)
    and the route's mark."""
    leaf = __utils__["certsync_pem.read_certs"](fullchain)[0]
    names, dropped = _own_names(dest, leaf, str(hostname).lower())
    return {
        "dirs": [dest],
        "names": names[1:],
        "files": {dest: {DOMAINS_FILE: _domains_text(dest, names), ROUTE_MARK: f"{names[0]}\n"}},
        "originals": {DOMAINS_FILE: ORIGINAL_DOMAINS_FILE},
        "notes": _dropped_lines(
            {os.path.basename(dest): {"dir": dest, "names": dropped}} if dropped else {}
        ),
    }


def checks(hostname, validation, test, prepared):
    """
    What ``mailcow.conf`` says, with ``services``: ``MAILCOW_HOSTNAME`` must
    be ``hostname``, no acme-mailcow may run without ``SKIP_LETS_ENCRYPT=y``
    (in a dry run a note: the formula stands it down first). Returns notes,
    among them a warning for each name mailcow serves with the top-level pair
    that the certificate lacks.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_consumer_mailcow.checks mail.example.com \\
            '{sans: [mail.example.com]}' False '{services: [postfix-mailcow]}'
    """
    mailcow_dir = prepared.get("mailcow_dir") or DEFAULT_DIR
    if not prepared.get("services") or not _has_conf(mailcow_dir):
        return []
    configured = _mailcow_hostname(mailcow_dir)
    own_dir = _route_dir(prepared.get("dest") or "")
    wrong = None if own_dir else _not_the_hostname(mailcow_dir, configured, hostname)
    if wrong:
        raise SaltInvocationError(wrong)
    acme = __salt__["mailcow.acme_status"](mailcow_dir)
    notes = []
    if acme["fights"] and test:  # the formula's state before this one stands it down
        notes.append(
            f"acme-mailcow ({acme['name']}) runs without SKIP_LETS_ENCRYPT=y: the real run "
            "deploys only once it is stood down (the formula's certsync-acme-stood-down does "
            "that first; alone: mailcow.acme_stood_down)"
        )
    elif acme["fights"]:
        raise CommandExecutionError(
            f"acme-mailcow ({acme['name']}) runs without SKIP_LETS_ENCRYPT=y in its environment "
            "and would overwrite the pair: set SKIP_LETS_ENCRYPT=y in mailcow.conf and run "
            f"`docker compose up -d` in {mailcow_dir} (the state mailcow.acme_stood_down "
            "does both)"
        )
    if not configured or own_dir:  # a route's own dir: mailcow serves it by SNI alone
        return notes
    lacking = __salt__["mailcow.missing_names"](
        validation["sans"], mailcow_dir, prepared.get("mail_domains")
    )
    if lacking:
        notes.append(
            f"Warning: the certificate lacks {', '.join(lacking)}, which mailcow's nginx serves "
            "with the top-level pair (client autoconfiguration over HTTPS breaks)"
        )
    return notes


def _not_the_hostname(mailcow_dir, configured, hostname):
    """Why the top-level pair cannot be ``hostname``'s: mailcow serves it as its
    ``MAILCOW_HOSTNAME`` (``configured``), which names another host (None: it does not)."""
    if not configured or configured == str(hostname).lower():
        return None
    return (
        f"{os.path.join(mailcow_dir, 'mailcow.conf')}: MAILCOW_HOSTNAME={configured!r}, but "
        f"the certificate is deployed for {hostname!r}: one of them is wrong (a name other "
        "than MAILCOW_HOSTNAME is a route of its own, served from its per-name dir)"
    )


def unservable(dest, hostname, given):
    """
    Why mailcow cannot serve the certificate of ``hostname`` from ``dest`` (what
    :py:func:`dest` said) with these settings: the top-level pair is served as
    ``MAILCOW_HOSTNAME``, so with ``services`` a route going there must be that
    name (a route's own per-name dir takes any name :py:func:`dest` accepts).
    Sentences; none when it can, or before ``mailcow.conf`` is there.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_consumer_mailcow.unservable \\
            /opt/mailcow-dockerized/data/assets/ssl mail.b.example.com \\
            '{mailcow_dir: /opt/mailcow-dockerized, services: [postfix-mailcow]}'
    """
    mailcow_dir = _checkout(given)
    if not (given or {}).get("services") or _route_dir(dest):
        return []
    wrong = _not_the_hostname(mailcow_dir, _mailcow_hostname(mailcow_dir), hostname)
    return [wrong] if wrong else []


def preflight(prepared):
    """
    Fail before anything changes when Docker or a compose service is not
    there.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_consumer_mailcow.preflight '{services: [postfix-mailcow]}'
    """
    if prepared.get("services"):
        __salt__["mailcow.containers"](prepared["services"], prepared.get("mailcow_dir"))


def drift(dest, prepared):
    """
    mailcow reads the pair in ``dest`` itself: no copies that could differ.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_consumer_mailcow.drift \\
            /opt/mailcow-dockerized/data/assets/ssl '{}'
    """
    return []


def reload(dest, prepared):
    """
    Reload the compose ``services`` inside their containers (``mailcow.reload``).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_consumer_mailcow.reload \\
            /opt/mailcow-dockerized/data/assets/ssl '{services: [postfix-mailcow]}'
    """
    return __salt__["mailcow.reload"](
        prepared["services"], prepared.get("mailcow_dir"), prepared.get("reload_commands")
    )


def restart(services, dest, prepared):
    """
    Restart these compose services (``mailcow.restart``).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_consumer_mailcow.restart '[postfix-mailcow]' \\
            /opt/mailcow-dockerized/data/assets/ssl '{}'
    """
    return __salt__["mailcow.restart"](services, prepared.get("mailcow_dir"))


def stale(protocols, prepared):
    """
    The compose services that serve these endpoint types, among ``services``.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_consumer_mailcow.stale '[smtp, https]' \\
            '{services: [postfix-mailcow, nginx-mailcow]}'
    """
    serving = {SERVES.get(protocol) for protocol in protocols}
    return [service for service in prepared.get("services") or [] if service in serving]


def uncovered(dest, hostname, prepared):
    """
    mailcow's per-name dirs the deployed certificate does not cover (left alone;
    none reported without ``sni``), and the names certsync dropped from the
    hostname's own dir (mailcow serves them the top-level pair, which lacks them).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_consumer_mailcow.uncovered \
            /opt/mailcow-dockerized/data/assets/ssl mail.example.com '{sni: true}'
    """
    cert = os.path.join(dest, "cert.pem")
    if not os.path.isfile(cert) or _route_dir(dest):  # a route's own dir: no others in it
        return {"uncovered": {}, "dropped": {}}
    plan = sni_plan(dest, cert, hostname=hostname)
    sni = prepared.get("sni") is not False
    return {"uncovered": plan["uncovered"] if sni else {}, "dropped": plan["dropped"]}
