"""
ufw: the outbound rules of a host whose firewall is ufw
=======================================================

:depends: ufw (Debian's package)

A mailcow host that denies outbound traffic by default with ufw must let
certsync's relay and the Salt master's ports through. ufw owns its chains
and rewrites them on every reload, so the rules go through ufw itself
(``ufw allow out proto tcp to <address> port <port> comment ...``, argv
lists, never a shell); what is in place is read from the rules files ufw
writes itself (one ``### tuple ###`` line a rule, in the order it matches
them), so a second run adds nothing and a rule listed first that denies the
traffic is seen.
"""

import binascii
import ipaddress
import shlex

import salt.utils.path
from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "certsync_ufw"

#: The files ufw keeps its user rules in, one ``### tuple ###`` line a rule, in the order
#: its chains match them (ufw 0.36: ``<config_dir>/ufw/user.rules`` and ``user6.rules``).
RULES_FILES = {False: "/etc/ufw/user.rules", True: "/etc/ufw/user6.rules"}
MAX_RULES_BYTES = 4 * 1024 * 1024
MAX_COMMENT = 100
_TUPLE = "### tuple ###"
_ANY_ADDRESS = ("0.0.0.0/0", "::/0")


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
            f"ufw {command(args)} failed: {why[-1] if why else 'exit ' + str(result['retcode'])}"
        )
    return result["stdout"]


def command(argv):
    """
    ``ufw`` and ``argv`` as one shell-quoted line (to show, never to run).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_ufw.command '[allow, out, comment, "certsync: relay"]'
    """
    return "ufw " + shlex.join(str(arg) for arg in argv)


def _comment(hexed):
    try:
        text = binascii.unhexlify(hexed[: len(hexed) // 2 * 2]).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return None
    return __utils__["certsync_util.printable"](text)


def _interfaces(field):
    """``out``, ``out_eth0``, ``in_eth0!out_eth1``: the direction and each interface."""
    found = {"in": "", "out": ""}
    for part in field.split("!"):
        direction, _, interface = part.partition("_")
        if direction not in found:
            return None
        found[direction] = interface
    direction = field.split("!")[0].partition("_")[0]
    return direction, found["in"], found["out"]


def parse_rules(text, v6=False):
    """
    ufw's user rules file (``user.rules``, or ``user6.rules`` with ``v6``) as
    data, one rule a ``### tuple ###`` line, in the order ufw matches them:
    ``action`` (allow, deny, reject, limit), ``log``, ``route``, ``proto``,
    ``dport``, ``dst``, ``sport``, ``src``, ``direction`` (in, out),
    ``interface_in``, ``interface_out``, ``app``, ``v6`` and ``comment``
    (hex-decoded and escaped). ufw writes these files itself: unlike ``ufw
    status``, they are not padded into columns, keep comments hex-encoded
    (a comment cannot fake a line) and hold each rule's interface and source.
    Lines that are not rule tuples are skipped, as ufw skips them.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_ufw.parse_rules "$(cat /etc/ufw/user.rules)"
    """
    rules = []
    for line in str(text).splitlines():
        if not line.startswith(_TUPLE):
            continue
        body, _, hexed = line[len(_TUPLE) :].partition(" comment=")
        fields = body.split()
        if len(fields) not in (7, 9):
            continue
        where = _interfaces(fields[-1])
        if where is None:
            continue
        action, _, log = fields[0].partition("_")
        route = action.startswith("route:")
        rules.append(
            {
                "action": action.removeprefix("route:"),
                "log": log or None,
                "route": route,
                "proto": fields[1],
                "dport": fields[2],
                "dst": fields[3],
                "sport": fields[4],
                "src": fields[5],
                "direction": where[0],
                "interface_in": where[1],
                "interface_out": where[2],
                "app": len(fields) == 9 and fields[6:8] != ["-", "-"],
                "v6": bool(v6),
                "comment": _comment(hexed.strip()) if hexed else None,
            }
        )
    return rules


def _read_rules(v6):
    path = RULES_FILES[v6]
    try:
        data = __utils__["certsync_files.read_regular"](path, MAX_RULES_BYTES)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CommandExecutionError(f"{path}: cannot read ufw's rules: {exc.strerror}") from None
    return parse_rules(data.decode("utf-8", "replace"), v6)


def status():
    """
    Whether ufw is ``active`` (``ufw status``) and its user ``rules`` in the
    order it matches them, IPv4's then IPv6's (see :py:func:`parse_rules`).

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_ufw.status
    """
    lines = _run("status").splitlines()
    active = any(line.strip() == "Status: active" for line in lines)
    return {"active": active, "rules": [*_read_rules(False), *_read_rules(True)]}


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
    try:
        ipaddress.ip_network(address, strict=False)
    except ValueError:
        raise SaltInvocationError(
            f"address {address[:80]!r} is not an IP address or network"
        ) from None
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


def _ports(field):
    """The ports a rule's port field names (``any``, ``2525``, ``8000:8080``,
    ``25,587,8000:8080``), as (low, high) ranges; None for any."""
    if field == "any":
        return None
    ranges = []
    for part in field.split(","):
        low, _, high = part.partition(":")
        if not low.isdigit() or (high and not high.isdigit()):
            return []
        ranges.append((int(low), int(high or low)))
    return ranges


def _covers(rule_net, net):
    """How the rule's address covers ``net``: "all", "some" or "none"."""
    if rule_net in _ANY_ADDRESS:
        return "all"
    try:
        rule_net = ipaddress.ip_network(rule_net, strict=False)
    except ValueError:
        return "some"  # ufw's own; not read here: never taken as allowing
    if rule_net.version != net.version:
        return "none"
    if net.subnet_of(rule_net):
        return "all"
    return "some" if rule_net.overlaps(net) else "none"


def _match(rule, port, net):
    """How ``rule`` matches TCP out to ``net`` on ``port``: "all", "some" or "none"."""
    if rule["route"] or rule["direction"] != "out" or rule["v6"] != (net.version == 6):
        return "none"
    if rule["proto"] not in ("tcp", "any"):
        return "none"
    ports = _ports(rule["dport"])
    if ports is not None and not any(low <= port <= high for low, high in ports):
        return "none"
    covered = _covers(rule["dst"], net)
    if covered == "none":
        return "none"
    limited = (
        rule["interface_in"]
        or rule["interface_out"]
        or rule["src"] not in _ANY_ADDRESS
        or rule["sport"] != "any"
        or rule["app"]
    )
    return "some" if limited or covered == "some" else "all"


def allowed_out(port, address=None, rules=None):
    """
    Whether ufw lets TCP out to ``address`` (any IPv4 address when not
    given) on ``port``, by its rules in the order it matches them (from
    :py:func:`status`, or the ``rules`` given): the first rule that can
    match that traffic decides. An ALLOW counts only when it covers all of
    it (no interface, source or source port limit, the address within its
    destination); a DENY, REJECT or LIMIT that can match any of it, listed
    first, means no; IPv6 rules count only for an IPv6 address.

    CLI Example:

    .. code-block:: bash

        salt mailcow-host certsync_ufw.allowed_out 2525 address=192.0.2.25
    """
    port, address = _checked(port, address)
    net = ipaddress.ip_network(address or "0.0.0.0/0", strict=False)
    rules = status()["rules"] if rules is None else rules
    for rule in rules:
        match = _match(rule, port, net)
        if match == "none":
            continue
        if rule["action"] != "allow":
            return False  # denied, rejected or rate-limited before any allow
        if match == "all":
            return True
    return False


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
