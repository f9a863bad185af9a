"""
Two test hosts linked by a veth pair, each in a network namespace of its own
(iproute2's ``ip netns``): ``mail`` (the mailcow host, where the egress
checks and firewall run) at ``.1`` and ``peer`` (the relay and the master) at
``.2`` of a /30 from 10.231.0.0/16. Nothing else is reachable from either.
"""

import contextlib
import secrets
import shutil
import subprocess
import uuid

IP = shutil.which("ip") or "/usr/sbin/ip"


def ip(*args, netns=None, check=True):
    """``ip <args>``, in ``netns`` when given."""
    prefix = [IP, "netns", "exec", netns] if netns else []
    return subprocess.run(
        [*prefix, IP, *args], capture_output=True, text=True, timeout=60, check=check
    )


class HostPair:
    """The ``mail`` and ``peer`` namespaces and the link between them."""

    def __init__(self):
        tag = uuid.uuid4().hex[:6]
        self.mail, self.peer = f"cs-mail-{tag}", f"cs-peer-{tag}"
        block = secrets.randbelow(16384) * 4  # a /30 in 10.231.0.0/16
        self.mail_address = f"10.231.{block // 256}.{block % 256 + 1}"
        self.peer_address = f"10.231.{block // 256}.{block % 256 + 2}"
        self._veth = (f"csm{tag}", f"csp{tag}")

    def start(self):
        for netns in (self.mail, self.peer):
            ip("netns", "add", netns)
            ip("link", "set", "lo", "up", netns=netns)
        mail_if, peer_if = self._veth
        ip("link", "add", mail_if, "type", "veth", "peer", "name", peer_if)
        for netns, link, address in (
            (self.mail, mail_if, self.mail_address),
            (self.peer, peer_if, self.peer_address),
        ):
            ip("link", "set", link, "netns", netns)
            ip("addr", "add", f"{address}/30", "dev", link, netns=netns)
            ip("link", "set", link, "up", netns=netns)
        return self

    def popen(self, netns, argv, **kwargs):
        return subprocess.Popen([IP, "netns", "exec", netns, *argv], **kwargs)

    def run(self, netns, argv, timeout=120, input=None, check=False):
        return subprocess.run(
            [IP, "netns", "exec", netns, *argv],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def stop(self):
        for netns in (self.mail, self.peer):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                ip("netns", "del", netns, check=False)
