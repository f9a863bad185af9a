"""
Mail clients for the benchmarks and tests: one complete session per call, as a mail user
agent or a sending server has it, and a long session held open across a deploy.

A session connects, reads the greeting, starts TLS where the protocol does
(STARTTLS, STLS), shakes hands with SNI for a given name, makes one exchange
(EHLO/NOOP/QUIT; CAPABILITY/LOGOUT; CAPA/QUIT; ManageSieve CAPABILITY/LOGOUT;
HTTP GET /) and reports ``outcome`` (ok, refused, reset, timeout, protocol,
handshake), the certificate it got (SHA-256 of the leaf), start and end.
A long session on IMAP, POP3 or ManageSieve can be logged in first (LOGIN,
USER/PASS, AUTHENTICATE PLAIN), as a mail user agent's open session is; used
again, it runs a command only a logged-in session may (NOOP, STAT, LISTSCRIPTS).
Certificates are not verified (the test CA is not the point): what is served
is recorded instead.
"""

import base64
import hashlib
import multiprocessing
import queue
import socket
import ssl
import threading
import time

#: endpoint name -> (how TLS starts, the protocol spoken)
KINDS = {
    "smtp": ("starttls", "smtp"),
    "submission": ("starttls", "smtp"),
    "smtps": ("implicit", "smtp"),
    "imap": ("starttls", "imap"),
    "imaps": ("implicit", "imap"),
    "pop3": ("starttls", "pop3"),
    "pop3s": ("implicit", "pop3"),
    "sieve": ("starttls", "sieve"),
    "https": ("implicit", "http"),
}
MAX_LINES = 200  # a reply longer than this is a protocol error


class ProtocolError(Exception):
    """The server answered something the protocol does not allow here."""


def _context():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


CONTEXT = _context()


class _Lines:
    """Line reading over a socket (plain, then TLS), bounded in count."""

    def __init__(self, sock):
        self.sock, self.buffer = sock, b""

    def line(self):
        for _ in range(10_000):
            if b"\r\n" in self.buffer or b"\n" in self.buffer:
                line, _, rest = self.buffer.partition(b"\n")
                self.buffer = rest
                return line.rstrip(b"\r").decode("latin-1")
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ProtocolError("connection closed mid-reply")
            self.buffer += chunk
        raise ProtocolError("a line without an end")

    def send(self, text):
        self.sock.sendall(text.encode("ascii") + b"\r\n")


def _smtp_reply(lines, code):
    for _ in range(MAX_LINES):
        line = lines.line()
        if not line.startswith(code):
            raise ProtocolError(f"expected {code}, got {line[:40]!r}")
        if line[3:4] != "-":
            return
    raise ProtocolError("an endless reply")


def _tagged(lines, tag):
    for _ in range(MAX_LINES):
        line = lines.line()
        if line.startswith(f"{tag} OK"):
            return
        if line.startswith(f"{tag} "):
            raise ProtocolError(f"{tag}: {line[:40]!r}")
    raise ProtocolError("an endless reply")


def _pop3_ok(lines, multiline=False):
    line = lines.line()
    if not line.startswith("+OK"):
        raise ProtocolError(f"expected +OK, got {line[:40]!r}")
    for _ in range(MAX_LINES if multiline else 0):
        if lines.line() == ".":
            return
    if multiline:
        raise ProtocolError("an endless reply")


def _sieve_ok(lines):
    for _ in range(MAX_LINES):
        line = lines.line()
        if line.startswith("OK"):
            return
        if line.startswith(("NO", "BYE")):
            raise ProtocolError(line[:40])
    raise ProtocolError("an endless reply")


def _greeting(proto, lines):
    if proto == "smtp":
        _smtp_reply(lines, "220")
    elif proto == "imap":
        greeting = lines.line()
        if not greeting.startswith("* OK"):
            raise ProtocolError(f"no IMAP greeting: {greeting[:60]!r}")
    elif proto == "pop3":
        _pop3_ok(lines)
    elif proto == "sieve":
        _sieve_ok(lines)  # the capabilities, then OK


def _starttls(proto, lines):
    if proto == "smtp":
        lines.send("EHLO bench.invalid")
        _smtp_reply(lines, "250")
        lines.send("STARTTLS")
        _smtp_reply(lines, "220")
    elif proto == "imap":
        lines.send("a STARTTLS")
        _tagged(lines, "a")
    elif proto == "pop3":
        lines.send("STLS")
        _pop3_ok(lines)
    elif proto == "sieve":
        lines.send("STARTTLS")
        _sieve_ok(lines)


def _smtp(lines, host, done):
    lines.send("EHLO bench.invalid")
    _smtp_reply(lines, "250")
    lines.send("NOOP")
    _smtp_reply(lines, "250")
    if done:
        lines.send("QUIT")
        _smtp_reply(lines, "221")


def _imap(lines, host, done):
    lines.send("b CAPABILITY")
    _tagged(lines, "b")
    if done:
        lines.send("c LOGOUT")
        _tagged(lines, "c")


def _pop3(lines, host, done):
    lines.send("CAPA")
    _pop3_ok(lines, multiline=True)
    if done:
        lines.send("QUIT")
        _pop3_ok(lines)


def _sieve(lines, host, done):
    lines.send("CAPABILITY")
    _sieve_ok(lines)
    if done:
        lines.send("LOGOUT")
        _sieve_ok(lines)


def _http(lines, host, done):
    connection = "close" if done else "keep-alive"
    lines.send(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: {connection}\r\n")
    status = lines.line()
    if not status.startswith("HTTP/1.1 "):
        raise ProtocolError(f"not HTTP: {status[:40]!r}")
    length = 0
    for _ in range(MAX_LINES):
        header = lines.line()
        if not header:
            break
        if header.lower().startswith("content-length:"):
            length = int(header.split(":", 1)[1])
    for _ in range(10_000):
        if len(lines.buffer) >= length:
            lines.buffer = lines.buffer[length:]
            return
        chunk = lines.sock.recv(4096)
        if not chunk:
            return
        lines.buffer += chunk


#: The one exchange of a session per protocol; with ``done``, its end (QUIT, LOGOUT).
EXCHANGES = {"smtp": _smtp, "imap": _imap, "pop3": _pop3, "sieve": _sieve, "http": _http}


def _exchange(proto, lines, host, done=True):
    EXCHANGES[proto](lines, host, done)


def _outcome(exc):
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return "handshake"
    return "protocol"


def open_session(endpoint, port, name, timeout=5, address="127.0.0.1", progress=None):
    """Connect and get as far as the exchange: (lines, fingerprint). ``progress``, a
    dict, is told each phase as it starts (``phase``): where a failed session stopped."""
    how, proto = KINDS[endpoint]
    progress = {} if progress is None else progress
    progress["phase"] = "connect"
    sock = socket.create_connection((address, port), timeout=timeout)
    lines = _Lines(sock)
    try:
        if how == "starttls":
            progress["phase"] = "greeting"
            _greeting(proto, lines)
            progress["phase"] = "starttls"
            _starttls(proto, lines)
        progress["phase"] = "handshake"
        tls = CONTEXT.wrap_socket(sock, server_hostname=name)
        lines = _Lines(tls)
        fingerprint = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
        if how == "implicit" or proto == "sieve":
            progress["phase"] = "tls greeting"
            if proto == "sieve":
                _sieve_ok(lines)  # RFC 5804: the capabilities again after STARTTLS
            else:
                _greeting(proto, lines)
        return lines, fingerprint
    except BaseException:
        sock.close()
        raise


def session(endpoint, port, name, timeout=5, address="127.0.0.1"):
    """One complete session: a dict with start, end, outcome, error, fingerprint, and
    the phase it was in when it ended (connect, greeting, starttls, handshake, tls
    greeting, exchange)."""
    start = time.monotonic()
    row = {"endpoint": endpoint, "name": name, "start": start, "fingerprint": None}
    lines = None
    try:
        lines, row["fingerprint"] = open_session(endpoint, port, name, timeout, address, row)
        row["phase"] = "exchange"
        _exchange(KINDS[endpoint][1], lines, name)
        row["outcome"] = "ok"
    except (OSError, ProtocolError, ValueError) as exc:
        row["outcome"], row["error"] = _outcome(exc), f"{type(exc).__name__}: {exc}"[:120]
    finally:
        if lines is not None:
            lines.sock.close()
    row["end"] = time.monotonic()
    return row


def failed_session(row, origin, against):
    """One line for a failed ``session`` row: where, when (seconds from ``origin``,
    a time.monotonic() value named by ``against``), the phase it stopped in and
    what it got."""
    return (
        f"{row['endpoint']} {row['name']} from {row['start'] - origin:+.3f} to "
        f"{row['end'] - origin:+.3f} s of {against}, in its {row.get('phase')}: "
        f"{row['outcome']}, {row.get('error')}"
    )


def _login(proto, lines, user):
    """Log ``user`` in (any password: the look-alike's passdb takes it)."""
    if proto == "imap":
        lines.send(f"l LOGIN {user} secret")
        _tagged(lines, "l")
    elif proto == "pop3":
        lines.send(f"USER {user}")
        _pop3_ok(lines)
        lines.send("PASS secret")
        _pop3_ok(lines)
    elif proto == "sieve":
        plain = base64.b64encode(f"\0{user}\0secret".encode()).decode("ascii")
        lines.send(f'AUTHENTICATE "PLAIN" "{plain}"')
        _sieve_ok(lines)
    else:
        raise ValueError(f"no login for {proto}")


def _logged_in_use(proto, lines):
    """A command only a logged-in session may run."""
    if proto == "imap":
        lines.send("n NOOP")
        _tagged(lines, "n")
    elif proto == "pop3":
        lines.send("STAT")
        _pop3_ok(lines)
    else:
        lines.send("LISTSCRIPTS")
        _sieve_ok(lines)


#: The protocols whose long sessions can be logged in.
LOGINS = ("imap", "pop3", "sieve")


class LongSession:
    """A session opened (TLS up, greeting read), logged in as ``user`` when given,
    and left idle; :py:meth:`use` makes its exchange later."""

    def __init__(self, endpoint, port, name, timeout=5, user=None):
        self.endpoint, self.name, self.user = endpoint, name, user
        self.lines, self.fingerprint = open_session(endpoint, port, name, timeout)
        if user:
            try:
                _login(KINDS[endpoint][1], self.lines, user)
            except BaseException:
                self.lines.sock.close()
                raise

    def use(self):
        """The exchange on the open session: None when it worked, else the error."""
        proto = KINDS[self.endpoint][1]
        try:
            if self.user:
                _logged_in_use(proto, self.lines)
            else:
                _exchange(proto, self.lines, self.name, done=False)
            return None
        except (OSError, ProtocolError, ValueError) as exc:
            return f"{_outcome(exc)}: {type(exc).__name__}: {exc}"[:120]
        finally:
            self.lines.sock.close()


def _client(endpoint, port, names, pause, stop, deadline, timeout, rows, lock):
    """One client: complete sessions one after another, ``names`` in turn for SNI."""
    for count in range(1_000_000):
        if stop.is_set() or time.monotonic() > deadline:
            return
        row = session(endpoint, port, names[count % 2], timeout=timeout)
        with lock:
            rows.append(row)
        stop.wait(pause)


def _clients_process(clients, timing, channels):
    """A client process: a thread per client until ``stop`` (or ``limit`` s); its
    rows go to ``out`` at the end."""
    (pause, limit, timeout), (ready, stop, out) = timing, channels
    rows, lock, deadline = [], threading.Lock(), time.monotonic() + limit
    threads = [
        threading.Thread(
            target=_client,
            args=(endpoint, port, names, pause, stop, deadline, timeout, rows, lock),
            daemon=True,
        )
        for endpoint, port, names in clients
    ]
    for thread in threads:
        thread.start()
    ready.release()
    for thread in threads:
        thread.join(limit + timeout + 5)
    out.put(rows)


class Fleet:
    """``per_endpoint`` clients on each endpoint looping on complete sessions, with
    ``pause`` s between a client's sessions, spread over ``processes`` processes
    (one Python process is bound by its interpreter lock). Half the clients of an
    endpoint begin with the first of ``names`` for SNI, half with the second. Used
    as a context manager; ``rows`` holds every session once it is left."""

    def __init__(self, endpoints, per_endpoint, names, pause, processes=2, limit=120, timeout=5):
        self.timeout, self.rows = timeout, []
        clients = [
            (endpoint, port, names if number % 2 == 0 else names[::-1])
            for endpoint, port in endpoints.items()
            for number in range(per_endpoint)
        ]
        context = multiprocessing.get_context("spawn")
        self.ready, self.stop, self.out = context.Semaphore(0), context.Event(), context.Queue()
        self.processes = [
            context.Process(
                target=_clients_process,
                args=(
                    clients[n::processes],
                    (pause, limit, timeout),
                    (self.ready, self.stop, self.out),
                ),
                daemon=True,
            )
            for n in range(processes)
        ]

    def __enter__(self):
        for process in self.processes:
            process.start()
        for _ in self.processes:
            if not self.ready.acquire(timeout=60):
                self.__exit__()
                raise RuntimeError("a client process did not start within 60 s")
        return self

    def __exit__(self, *exc):
        self.stop.set()
        wait = self.timeout + 10
        for _ in self.processes:
            try:
                self.rows += self.out.get(timeout=wait)
            except queue.Empty:
                break
        for process in self.processes:
            process.join(wait)
            if process.is_alive():
                process.kill()
