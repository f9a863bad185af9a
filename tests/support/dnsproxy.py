"""A DNS server on loopback that misbehaves: it relays every query and update to a
real server (Knot), but after passing on the N-th RFC 2136 UPDATE it closes the
TCP connection instead of answering: the update is done, the client sees EOF."""

import contextlib
import socket
import struct
import threading

UPDATE_OPCODE = 5
MAX_CLIENTS = 200


def _read_exact(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


class ClosingAfterUpdate:
    """Relays to ``upstream_port`` on 127.0.0.1; closes after forwarding update ``close_on``."""

    def __init__(self, upstream_port, close_on=2):
        self.upstream = ("127.0.0.1", upstream_port)
        self.close_on, self.updates = close_on, 0
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        for sock in (self.tcp, self.udp):
            sock.settimeout(1)
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._serve_tcp, daemon=True),
            threading.Thread(target=self._serve_udp, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _serve_tcp(self):
        for _ in range(MAX_CLIENTS):
            while not self.stopping.is_set():
                try:
                    conn, _ = self.tcp.accept()
                    break
                except TimeoutError:
                    continue
            else:
                return
            with conn:
                conn.settimeout(10)
                with contextlib.suppress(OSError, ConnectionError):
                    self._relay_tcp(conn)

    def _relay_tcp(self, conn):
        (size,) = struct.unpack("!H", _read_exact(conn, 2))
        wire = _read_exact(conn, size)
        with socket.create_connection(self.upstream, timeout=10) as up:
            up.sendall(struct.pack("!H", size) + wire)
            (answer_size,) = struct.unpack("!H", _read_exact(up, 2))
            answer = _read_exact(up, answer_size)
        if (wire[2] >> 3) & 0xF == UPDATE_OPCODE:
            self.updates += 1
            if self.updates == self.close_on:
                return  # done upstream; the client gets EOF instead of the answer
        conn.sendall(struct.pack("!H", answer_size) + answer)

    def _serve_udp(self):
        while not self.stopping.is_set():
            try:
                wire, peer = self.udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
                up.settimeout(5)
                try:
                    up.sendto(wire, self.upstream)
                    answer, _ = up.recvfrom(65535)
                except OSError:
                    continue
            self.udp.sendto(answer, peer)

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(5)
        self.tcp.close()
        self.udp.close()


class ClosingServer:
    """A DNS server on loopback that reads one TCP query and closes without an answer;
    over UDP it answers every query truncated (TC), so clients retry over TCP."""

    def __init__(self):
        import socket
        import threading

        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        for sock in (self.tcp, self.udp):
            sock.settimeout(5)
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._tcp, self._udp)]
        for thread in self.threads:
            thread.start()

    def _tcp(self):
        for _ in range(3):  # bounded: a few clients at most
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                conn.recv(65535)  # read the query, then close: the client sees EOF

    def _udp(self):
        import dns.flags
        import dns.message

        for _ in range(3):
            try:
                wire, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            reply = dns.message.make_response(dns.message.from_wire(wire))
            reply.flags |= dns.flags.TC
            self.udp.sendto(reply.to_wire(), peer)

    def close(self):
        self.tcp.close()
        self.udp.close()
