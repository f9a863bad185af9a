"""
The far side of an egress test, run inside a network namespace by
``tests/support/netns.py``: a smarthost (aiosmtpd: STARTTLS required, AUTH
PLAIN/LOGIN required) on ``--relay-port`` and plain TCP listeners on the Salt
master's ports (``--tcp``), all on ``--address``. Prints ``ready`` once every
socket listens; runs until killed.

    python -m support.egress_peer --address 10.0.0.2 --cert c.pem --key k.pem \\
        --relay-port 2525 --tcp 4505 4506 --login user:password
"""

import argparse
import socket
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class _Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 accepted by the test relay"


def _authenticator(user, password):
    def check(server, session, envelope, mechanism, data):
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            user.encode(),
            password.encode(),
        )
        return AuthResult(success=ok)

    return check


def _listen(address, port):
    sock = socket.create_server((address, port))

    def accept():
        while True:
            conn, _ = sock.accept()
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    return sock


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--relay-port", type=int, required=True)
    parser.add_argument("--tcp", type=int, nargs="*", default=[])
    parser.add_argument("--login", required=True, help="user:password")
    args = parser.parse_args(argv)
    user, _, password = args.login.partition(":")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    controller = Controller(
        _Sink(),
        hostname=args.address,
        port=args.relay_port,
        server_hostname="relay.example.test",
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        authenticator=_authenticator(user, password),
    )
    controller.start()
    listeners = [_listen(args.address, port) for port in args.tcp]
    print("ready", flush=True)
    try:
        threading.Event().wait()
    finally:
        controller.stop()
        for sock in listeners:
            sock.close()


if __name__ == "__main__":
    sys.exit(main())
