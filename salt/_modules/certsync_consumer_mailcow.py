"""
The ``mailcow`` consumer kind: mailcow-dockerized's certificate layout
=====================================================================

mailcow (postfix, dovecot, nginx) reads its pair from ``data/assets/ssl``:
``cert.pem`` and ``key.pem`` at the top, and with ``ENABLE_SSL_SNI=y`` one
per-name directory ``ssl/<name>/`` per served name set, whose ``domains``
file lists the names it serves ahead of the top-level pair. This module
says which of those directories a certificate is installed into, which are
left alone and why, and what each one serves now. mailcow's containers,
``mailcow.conf`` and relay log are the ``mailcow`` module's.
"""

import os

__virtualname__ = "certsync_consumer_mailcow"


def __virtual__():
    if "certsync.deployed_info" not in __salt__:
        return (False, "certsync_consumer_mailcow needs the certsync execution module")
    return __virtualname__


def _domains(directory):
    """The names a per-name dir serves (its ``domains`` file); None without one."""
    return __salt__["certsync.domains"](directory)


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
        if not names:
            continue
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


def _take_over(plan, directory, leaf, hostname):
    """The hostname's own dir, kept by certsync: its ``domains`` the certificate's names
    (the hostname first; wildcards left to the top-level pair, which has them too)."""
    names = [hostname] + [
        n.lower()
        for n in __utils__["certsync_pem.dns_sans"](leaf)
        if "*" not in n and n.lower() != hostname
    ]
    names = list(dict.fromkeys(names))
    plan["update"].append(directory)
    plan["names"][directory] = names
    plan["domains"][directory] = names
    mailcows = __salt__["certsync.domains"](directory, original=True)
    listed = mailcows if mailcows is not None else (_domains(directory) or [])
    dropped = [
        __utils__["certsync_pem.shown"](n)
        for n in listed
        if not __utils__["certsync_pem.is_dns_name"](n)
        or not __utils__["certsync_pem.covers"](leaf, n)
    ]
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
