"""A TLS endpoint on loopback serving one certificate, for probes in tests."""

import contextlib
import socket
import ssl
import threading

ACCEPT_TIMEOUT = 30
MAX_CONNECTIONS = 50


class TLSServer:
    """Serve ``certfile``/``keyfile`` (implicit TLS) on ``address`` (127.0.0.1) and
    ``port`` (any free one) until closed.

    Bounded: at most MAX_CONNECTIONS handshakes, each accept waits at most
    ACCEPT_TIMEOUT seconds.
    """

    def __init__(self, certfile, keyfile, address="127.0.0.1", port=0):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(certfile), str(keyfile))
        self.sock = socket.create_server((address, port))
        self.sock.settimeout(ACCEPT_TIMEOUT)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        for _ in range(MAX_CONNECTIONS):
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(5)
                    tls.recv(1)
            except OSError:
                pass

    def close(self):
        # shutdown() wakes a thread blocked in accept(); close() alone does not.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(ACCEPT_TIMEOUT)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
