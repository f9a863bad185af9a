"""
ufw: the outbound rules of a host whose firewall is ufw
=======================================================

:depends: ufw (Debian's package)

A mailcow host that denies outbound traffic by default with ufw must let
certsync's relay and the Salt master's ports through. ufw owns its chains
and rewrites them on every reload, so the rules go through ufw itself
(``ufw allow out proto tcp to <address> port <port> comment ...``, argv
lists, never a shell); what is in place is read from ``ufw status``, parsed
line by line, so a second run adds nothing.
"""

import re

import salt.utils.path
from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "certsync_ufw"

#: A rule line of ``ufw status``: To, Action (with its direction), From, # comment.
_RULE = re.compile(
    r"^(?P<to>\S.*?)\s{2,}(?P<action>ALLOW|DENY|REJECT|LIMIT)(?: (?P<direction>IN|OUT|FWD))?"
    r"\s+(?P<source>\S.*?)(?:\s+# (?P<comment>.*))?$"
)
_PORT = re.compile(r"^(?P<port>\d+(?::\d+)?)(?:/(?P<proto>tcp|udp))?$")
MAX_COMMENT = 100


def __virtual__():
    return __virtualname__


def _ufw():
    return salt.utils.path.which("ufw")


def _run(*args):
    """``ufw <args>`` in the C locale (its output is parsed); an error names ufw's
    complaint."""
    binary = _ufw()
    if not binary:
        raise CommandExecutionError("ufw is not installed on this host")
    result = __salt__["cmd.run_all"](
        [binary, *args], python_shell=False, env={"LANG": "C", "LC_ALL": "C"}, ignore_retcode=True
    )
    if result["retcode"] != 0:
        why = (result["stderr"] or result["stdout"]).strip().splitlines()
        raise CommandExecutionError(
            f"ufw {' '.join(args)} failed: {why[-1] if why else 'exit ' + str(result['retcode'])}"
        )
    return result["stdout"]


def _parse_to(text):
    """``10.0.0.2 2525/tcp``, ``2525/tcp (v6)``, ``Anywhere``: address, port, proto, v6."""
    words = text.split()
    v6 = "(v6)" in words
    words = [w for w in words if w != "(v6)"]
    address, port, proto = None, None, None
    for word in words:
        match = _PORT.match(word)
        if match and port is None:
            port, proto = match["port"], match["proto"]
        elif address is None and word not in ("Anywhere", "on"):
            address = word
    return {"address": address, "port": port, "proto": proto, "v6": v6}


def parse_status(text):
    """
    ``ufw status`` as data: ``active`` and each rule's ``address``, ``port``,
    ``proto``, ``v6``, ``action`` (allow, deny, ...), ``direction`` (in,
    out, fwd), ``source`` and ``comment``. Lines that are not rules are
    skipped.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_ufw.parse_status "$(ufw status)"
    """
    lines = str(text).splitlines()
    active = any(line.strip() == "Status: active" for line in lines)
    rules = []
    in_table = False
    for line in lines:
        if line.startswith("--"):
            in_table = True
            continue
        match = _RULE.match(line.rstrip()) if in_table else None
        if not match:
            continue
        rules.append(
            {
                **_parse_to(match["to"]),
                "action": match["action"].lower(),
                "direction": (match["direction"] or "IN").lower(),
                "source": match["source"].replace(" (v6)", ""),
                "comment": match["comment"],
            }
        )
    return {"active": active, "rules": rules}


def status():
    """
    What ``ufw status`` says, parsed (see :py:func:`parse_status`).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_ufw.status
    """
    return parse_status(_run("status"))


def active():
    """
    True when ufw is installed and ``ufw status`` says it is active: the
    ``auto`` firewall backend of the formula's egress rules.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_ufw.active
    """
    if not _ufw():
        return False
    return status()["active"]


def _checked(port, address):
    port = __utils__["certsync_args.port"](port, "port")
    if address in (None, "", "any"):
        return port, None
    address = str(address)
    if not re.fullmatch(r"[0-9A-Fa-f:.]+(?:/\d{1,3})?", address):
        raise SaltInvocationError(f"address {address!r} is not an IP address or network")
    return port, address


def rule(port, address=None, comment="certsync"):
    """
    The argv that allows TCP out to ``address`` (any when not given) on
    ``port``, with ``comment``.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_ufw.rule 2525 address=192.0.2.25 comment='certsync: relay'
    """
    port, address = _checked(port, address)
    comment = str(comment)
    if not comment.isprintable() or len(comment) > MAX_COMMENT:
        raise SaltInvocationError(f"comment must be printable, at most {MAX_COMMENT} characters")
    return [
        "allow",
        "out",
        "proto",
        "tcp",
        "to",
        address or "any",
        "port",
        str(port),
        "comment",
        comment,
    ]


def allowed_out(port, address=None, rules=None):
    """
    Whether ufw already allows TCP out to ``address`` (any when not given)
    on ``port``, by ``ufw status`` (or the parsed ``rules`` given).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_ufw.allowed_out 2525 address=192.0.2.25
    """
    port, address = _checked(port, address)
    rules = status()["rules"] if rules is None else rules
    return any(
        r["action"] == "allow"
        and r["direction"] == "out"
        and r["port"] == str(port)
        and r["proto"] in ("tcp", None)
        and r["address"] == address
        for r in rules
    )


def allow_out(port, address=None, comment="certsync"):
    """
    Add the rule of :py:func:`rule` through ufw (which keeps it across its
    reloads); ufw's answer is returned.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_ufw.allow_out 2525 address=192.0.2.25 comment='certsync: relay'
    """
    return _run(*rule(port, address, comment)).strip()


def delete_out(port, address=None):
    """
    Delete the rule that allows TCP out to ``address`` on ``port`` (for
    taking certsync off a host); ufw's answer is returned.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_ufw.delete_out 2525 address=192.0.2.25
    """
    argv = rule(port, address)[:-2]  # a rule is deleted by its match, not its comment
    return _run("delete", *argv).strip()
