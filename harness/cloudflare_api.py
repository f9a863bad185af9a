"""
A stand-in for Cloudflare's v4 API, for tests: the calls certsync's
``cloudflare`` DNS provider makes (zones list and get, dns_records list with
pagination, create, delete, token verify), with Cloudflare's envelope
(``{"success", "errors": [{"code", "message"}], "messages", "result",
"result_info"}``), its bearer tokens and their permissions, and injected
faults (a status and error code, a 429 with Retry-After, a dropped
connection). The TLSA records it holds are written through to a Knot zone
over RFC 2136 (TSIG-signed), so the zone's authoritative servers answer what
the API holds, as Cloudflare's own servers do.

Responses carry every field the official library's models require, so a
client with strict response validation holds each answer to those models.
"""

import datetime
import http.server
import json
import threading
import time
import urllib.parse
import uuid

import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update

from .knot import TSIG_ALGORITHM, TSIG_NAME

PREFIX = "/client/v4"
ACCOUNT = {"id": "0" * 31 + "a", "name": "certsync tests"}


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


class Fault:
    """One injected answer: for requests whose method and path match, ``times`` times."""

    def __init__(
        self,
        method,
        path_part,
        status,
        code=None,
        headers=None,
        times=1,
        drop=False,
        message="Injected",
        body=None,
        drip=0.0,
    ):
        self.method, self.path_part, self.status = method, path_part, status
        self.code, self.headers, self.times, self.drop = code, headers or {}, times, drop
        self.message, self.body, self.drip = message, body, drip

    def payload(self, authorization):
        """The body to answer: ``body`` as given (bytes, or JSON of any shape), else
        Cloudflare's error envelope whose message may quote the request's
        ``Authorization`` header (``{authorization}``), as some of its errors do."""
        if isinstance(self.body, bytes):
            return self.body
        if self.body is not None:
            return json.dumps(self.body).encode()
        message = self.message.replace("{authorization}", authorization)
        return json.dumps(_errors(self.code, message)).encode()


class CloudflareApi:
    """The stand-in on 127.0.0.1, serving ``zone`` (written through to ``knot``)."""

    def __init__(self, knot, auto_ttl=300, max_per_page=5_000_000, write_through=True):
        self.knot, self.auto_ttl, self.max_per_page = knot, auto_ttl, max_per_page
        self.write_through = write_through  # off: the API's records only, no Knot behind
        self.zone = {
            "id": uuid.uuid4().hex,
            "name": knot.zone,
            "status": "active",
            "paused": False,
            "type": "full",
            "development_mode": 0,
            "name_servers": [f"ns1.{knot.zone}"],
            "original_name_servers": None,
            "original_registrar": None,
            "original_dnshost": None,
            "created_on": _now(),
            "modified_on": _now(),
            "activated_on": _now(),
            "meta": {"step": 2, "custom_certificate_quota": 0, "page_rule_quota": 3},
            "owner": {"id": None, "type": "user", "email": None},
            "account": ACCOUNT,
            "tenant": {"id": None, "name": None},
            "tenant_unit": {"id": None},
            "permissions": ["#dns_records:edit", "#dns_records:read", "#zone:read"],
            "plan": {"id": "0feeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "name": "Free Website"},
        }
        self.tokens = {}  # token -> {"edit": bool, "zones": {zone names}}
        self.records = {}  # id -> record as the API answers it
        self.faults = []
        self.requests = []  # (method, path, authorization header seen)
        self.extra_auth_headers = []  # the X-Auth-* headers of each request, if any
        self.extra_zones = []  # other zones the tokens may read (no records served)
        self.lock = threading.Lock()
        self.server = None

    # -- set-up ---------------------------------------------------------------------
    def token(self, value, edit=True, zones=None):
        """Accept bearer ``value``: allowed ``zones`` (default: this one), editing or not."""
        self.tokens[value] = {"edit": edit, "zones": set(zones or [self.zone["name"]])}
        return value

    def fail(self, method, path_part, status, code=None, headers=None, times=1, **how):
        """Answer the next ``times`` matching requests with ``status`` (and error ``code``),
        or drop the connection without an answer (``drop=True``); ``message``, ``body``
        and ``drip`` (seconds between the body's bytes) as :class:`Fault` takes them."""
        with self.lock:
            self.faults.append(Fault(method, path_part, status, code, headers, times, **how))

    def seed(self, name, data, write_through=True):
        """A record the zone holds before the test (through the API's own create); without
        ``write_through`` when the Knot zone was started with it."""
        with self.lock:
            body = {"type": "TLSA", "name": name, "ttl": 1, "data": data}
            return self._create(body, write_through)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.server.server_port}{PREFIX}"

    def update_settings(self, **extra):
        """``dane: update`` for this stand-in (the token only in the pillar)."""
        return {
            "provider": "cloudflare",
            "zone": self.zone["name"],
            "api_url": self.base_url,
            "auth_port": self.knot.port,
            "strict": True,
            **extra,
        }

    def dane(self, port=25, update=None, **extra):
        return {
            "port": port,
            "nameservers": ["127.0.0.1"],
            "dns_port": self.knot.port,
            "update": {**self.update_settings(), **(update or {})},
            **extra,
        }

    def start(self):
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self):
                api.handle(self)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # -- requests -------------------------------------------------------------------
    def handle(self, request):
        url = urllib.parse.urlsplit(request.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        auth = request.headers.get("Authorization", "")
        with self.lock:
            self.requests.append((request.command, url.path, auth))
            self.extra_auth_headers.append(
                {k: v for k, v in request.headers.items() if k.lower().startswith("x-auth")}
            )
            fault = self._fault(request.command, url.path)
        if fault and fault.drop:
            request.close_connection = True
            request.wfile.flush()
            request.connection.close()
            return
        if fault:
            status, data, headers = fault.status, fault.payload(auth), fault.headers
        else:
            with self.lock:
                status, payload, headers = self._route(request.command, url.path, query, body, auth)
            data = json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            request.send_header(key, value)
        request.end_headers()
        if fault and fault.drip:
            _drip(request, data, fault.drip)
        else:
            request.wfile.write(data)

    def _fault(self, method, path):
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and fault.path_part in path:
                fault.times -= 1
                return fault
        return None

    def _route(self, method, path, query, body, auth):
        grant = self.tokens.get(auth.removeprefix("Bearer "))
        if not auth.startswith("Bearer ") or grant is None:
            return 403, _errors(10000, "Authentication error"), {}
        if not path.startswith(PREFIX):
            return 404, _errors(7000, "No route for that URI"), {}
        parts = path[len(PREFIX) :].strip("/").split("/")
        if parts == ["user", "tokens", "verify"]:
            return 200, _ok({"id": uuid.uuid4().hex, "status": "active"}), {}
        if parts[0] != "zones":
            return 404, _errors(7000, "No route for that URI"), {}
        readable = self.zone["name"] in grant["zones"]
        if len(parts) == 1 and method == "GET":
            wanted = query.get("name")
            zones = [self.zone] if readable and wanted in (None, self.zone["name"]) else []
            return 200, _page(zones, query, self.max_per_page), {}
        zone = self._zone(parts[1], readable)
        if zone is None:
            return (
                404,
                _errors(
                    7003, "Could not route to /zones, perhaps your object identifier is invalid?"
                ),
                {},
            )
        if len(parts) == 2 and method == "GET":
            return 200, _ok(zone), {}
        if zone is not self.zone or parts[2:3] != ["dns_records"]:
            return 404, _errors(7000, "No route for that URI"), {}
        if len(parts) == 3 and method == "GET":
            return 200, _page(self._listed(query), query, self.max_per_page), {}
        if not grant["edit"]:
            return 403, _errors(10000, "Authentication error"), {}
        if len(parts) == 3 and method == "POST":
            return self._create(json.loads(body or b"{}"))
        if len(parts) == 4 and method == "DELETE":
            return self._delete(parts[3])
        return 405, _errors(10405, "Method not allowed"), {}

    def _zone(self, zone_id, readable):
        """The zone of ``zone_id`` a token may read (this one, or one of extra_zones)."""
        if zone_id == self.zone["id"]:
            return self.zone if readable else None
        return next((z for z in self.extra_zones if z["id"] == zone_id), None)

    def _listed(self, query):
        name = (query.get("name.exact") or query.get("name") or "").lower()
        kind = query.get("type")
        return [
            r
            for r in sorted(self.records.values(), key=lambda r: r["created_on"])
            if (not name or r["name"] == name) and (not kind or r["type"] == kind)
        ]

    def _create(self, body, write_through=True):
        data, name = body.get("data") or {}, str(body.get("name", "")).lower().rstrip(".")
        ttl = body.get("ttl", 1)
        if body.get("type") != "TLSA":
            return 400, _errors(9000, "The stand-in takes TLSA records only"), {}
        if not (name == self.zone["name"] or name.endswith("." + self.zone["name"])):
            return 400, _errors(9005, "Content for TLSA record is invalid. Name not in zone"), {}
        if not (ttl == 1 or 60 <= ttl <= 86400):
            return 400, _errors(9021, "Invalid TTL. Must be between 60 and 86400 or 1"), {}
        try:
            fields = [int(data[k]) for k in ("usage", "selector", "matching_type")]
            certificate = bytes.fromhex(str(data["certificate"])).hex()
        except (KeyError, TypeError, ValueError):
            return 400, _errors(9005, "Content for TLSA record is invalid"), {}
        content = " ".join([*map(str, fields), certificate])
        if any(r["name"] == name and r["content"] == content for r in self.records.values()):
            return 400, _errors(81058, "An identical record already exists."), {}
        if write_through and self.write_through:
            self._write_through(name, add=content, ttl=self.auto_ttl if ttl == 1 else ttl)
        record = {
            "id": uuid.uuid4().hex,
            "name": name,
            "type": "TLSA",
            "content": content,
            "data": dict(zip(("usage", "selector", "matching_type"), fields, strict=True))
            | {"certificate": certificate},
            "ttl": ttl,
            "proxied": False,
            "proxiable": False,
            "comment": body.get("comment"),
            "tags": [],
            "settings": {},
            "meta": {},
            "created_on": _now(),
            "modified_on": _now(),
        }
        self.records[record["id"]] = record
        return 200, _ok(record), {}

    def _delete(self, record_id):
        record = self.records.get(record_id)
        if record is None:
            return 404, _errors(81044, "Record does not exist."), {}
        if self.write_through:
            self._write_through(record["name"], delete=record["content"])
        del self.records[record_id]
        return 200, _ok({"id": record_id}), {}

    def _write_through(self, name, add=None, delete=None, ttl=None):
        """The change, as Cloudflare's servers would serve it, into the Knot zone."""
        key = dns.tsig.Key(TSIG_NAME, self.knot.secret, TSIG_ALGORITHM)
        message = dns.update.UpdateMessage(self.knot.zone, keyring=key)
        owner = dns.name.from_text(name)
        if add:
            message.add(owner, ttl, _rdata(add))
        if delete:
            message.delete(owner, _rdata(delete))
        response = dns.query.tcp(message, "127.0.0.1", port=self.knot.port, timeout=5)
        if response.rcode() != dns.rcode.NOERROR:
            raise RuntimeError(f"knot refused {name}: {dns.rcode.to_text(response.rcode())}")


def _drip(request, data, every, most=60):
    """The body a byte at a time, ``every`` seconds apart, for ``most`` bytes at most
    (a server that holds a client's read open far past its read timeout)."""
    for byte in data[:most]:
        try:
            request.wfile.write(bytes([byte]))
            request.wfile.flush()
        except OSError:  # the client gave up
            return
        time.sleep(every)
    request.close_connection = True


def _rdata(content):
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, content)


def _ok(result, info=None):
    body = {"success": True, "errors": [], "messages": [], "result": result}
    if info:
        body["result_info"] = info
    return body


def _errors(code, message):
    return {
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": None,
    }


def _page(items, query, max_per_page):
    page = max(int(float(query.get("page", 1))), 1)
    per_page = min(max(int(float(query.get("per_page", 100))), 1), max_per_page)
    chunk = items[(page - 1) * per_page : page * per_page]
    total_pages = max((len(items) + per_page - 1) // per_page, 1)
    info = {
        "page": page,
        "per_page": per_page,
        "count": len(chunk),
        "total_count": len(items),
        "total_pages": total_pages,
    }
    return _ok(chunk, info)
