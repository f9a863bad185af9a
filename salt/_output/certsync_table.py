"""
certsync's results as tables people can read
============================================

``--out=certsync_table`` prints ``maildns.audit`` as one aligned row per
record with a ``PASS``/``FAIL``/``ERR`` mark (and a count at the end), and
``certsync_status.report`` (a minion's part) or ``salt-run certsync.status`` as
marked lines. Any other return is printed by Salt's ``nested`` outputter.
JSON and YAML (``--out=json``, ``--out=yaml``) are unchanged.

.. code-block:: bash

    salt mailcow maildns.audit example.com mail.example.com --out=certsync_table
    salt-run certsync.status --out=certsync_table
"""

import unicodedata

import salt.output
import salt.utils.color

__virtualname__ = "certsync_table"

MARKS = {"pass": "PASS", "fail": "FAIL", "error": "ERR"}
COLORS = {"PASS": "GREEN", "FAIL": "RED", "ERR": "YELLOW", "INFO": "CYAN"}
FOUND_WIDTH = 56


def __virtual__():
    return __virtualname__


def _nested(data):
    """Salt's ``nested`` outputter. Asked by name with the command line's opts, Salt hands
    back the outputter ``--out`` names (this one): itself again, until RecursionError."""
    return salt.output.out_format(data, "nested", {**__opts__, "output": "nested"}).rstrip()


def _colors():
    if __opts__.get("no_color") or not __opts__.get("color", True):
        return None
    return salt.utils.color.get_colors(True, __opts__.get("color_theme"))


def _mark(mark, colors):
    text = f"{mark:<4}"
    if colors is None:
        return text
    return f"{colors[COLORS.get(mark, 'ENDC')]}{text}{colors['ENDC']}"


def _printable(text):
    """Control and format characters (ESC, C1, DEL, bidi overrides) as their escapes:
    a cell from a DNS record or a log cannot drive the terminal."""
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if unicodedata.category(char) in ("Cc", "Cf")
        else char
        for char in text
    )


def _short(value, width=FOUND_WIDTH):
    text = " ".join(str(value if value is not None else "").split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _table(lines, colors):
    """``lines``: (mark, first column, second, third); the columns aligned, every cell
    escaped (``_printable``)."""
    lines = [(mark, *(_printable(str(cell)) for cell in cells)) for mark, *cells in lines]
    first = max((len(line[1]) for line in lines), default=0)
    second = max((len(line[2]) for line in lines), default=0)
    return [
        f"{_mark(mark, colors)}  {a:<{first}}  {b:<{second}}  {c}".rstrip()
        for mark, a, b, c in lines
    ]


def _audit(ret, colors):
    lines = [
        (
            MARKS.get(row.get("result"), "ERR"),
            str(row.get("record")),
            _short(row.get("found")),
            str(row.get("why") or ""),
        )
        for row in ret["rows"]
        if isinstance(row, dict)
    ]
    counts = {mark: sum(line[0] == mark for line in lines) for mark in ("PASS", "FAIL", "ERR")}
    summary = (
        f"{len(lines)} rows: {counts['PASS']} pass, {counts['FAIL']} fail, {counts['ERR']} error"
    )
    return [*_table(lines, colors), summary]


def _fingerprint(value):
    return _short(value, 19) if value else "none"


def _consumer(ret):
    deployed = ret.get("deployed")
    lines = [("INFO", "deployed", _fingerprint(deployed), f"{ret.get('days_left')} days left")]
    if ret.get("paused"):
        lines.append(("INFO", "deploys", "paused", str(ret["paused"])))
    for endpoint, served in sorted((ret.get("served") or {}).items()):
        ok = served == deployed
        lines.append(("PASS" if ok else "FAIL", f"served {endpoint}", _fingerprint(served), ""))
    for endpoint, why in sorted((ret.get("unreachable") or {}).items()):
        lines.append(("FAIL", f"served {endpoint}", "unreachable", str(why)))
    for entry, row in sorted((ret.get("uncovered") or {}).items()):
        missing = ", ".join(row.get("missing", [])) if isinstance(row, dict) else str(row)
        lines.append(("FAIL", f"per-name dir {entry}", "left alone", f"not covered: {missing}"))
    for name in ret.get("missing_names") or []:
        lines.append(("FAIL", f"name {name}", "not covered", "mailcow serves it"))
    relay = ret.get("relay")
    if isinstance(relay, dict):
        why = "; ".join(relay.get("blocked") or []) or (relay.get("last_failure") or {}).get(
            "reason", ""
        )
        mark = "PASS" if relay.get("ok") else "FAIL"
        lines.append((mark, f"relay {relay.get('relay')}", f"sent {relay.get('sent', 0)}", why))
    tlsa = ret.get("tlsa")
    if isinstance(tlsa, dict):
        ok = tlsa.get("deployed_matches") is True
        stale = ", ".join(r[:20] + "..." for r in tlsa.get("stale") or [])
        lines.append(("PASS" if ok else "FAIL", "TLSA", "matches" if ok else "no match", stale))
    return lines


def _source(ret):
    renewal = ret.get("renewal") or {}
    kept = renewal.get("next_renewal_keeps_key")
    return [
        (
            "INFO",
            "certificate",
            _fingerprint(ret.get("fingerprint")),
            f"{ret.get('days_left')} days left",
        ),
        (
            "PASS" if kept else "FAIL" if kept is False else "INFO",
            "next renewal",
            "keeps the key" if kept else "makes a new key" if kept is False else "unknown",
            renewal.get("why", renewal.get("error", "")),
        ),
    ]


def _fleet(ret):
    lines = []
    for source, row in sorted((ret.get("sources") or {}).items()):
        lines.append(
            (
                "PASS" if row.get("result") else "FAIL",
                f"source {source}",
                _fingerprint(row.get("fingerprint")),
                row.get("error", ""),
            )
        )
    for consumer, row in sorted((ret.get("consumers") or {}).items()):
        lines.append(
            (
                "PASS" if row.get("agree") else "FAIL",
                f"consumer {consumer}",
                _fingerprint(row.get("deployed_fingerprint")),
                row.get("error", ""),
            )
        )
    return lines


def _render(ret, colors):
    """The lines of one return of a shape this outputter knows, else None. A return of
    that shape with values of others (a list where a mapping was, a number where a
    list was) is None too: Salt's ``nested`` outputter shows it, never a traceback
    (Salt's own fallback would ask for this outputter again)."""
    try:
        return _lines(ret, colors)
    except (AttributeError, TypeError, KeyError, ValueError):
        return None


def _lines(ret, colors):
    if isinstance(ret, dict) and isinstance(ret.get("rows"), list):
        return _audit(ret, colors)
    if isinstance(ret, dict) and ret.get("role") == "consumer":
        return _table(_consumer(ret), colors)
    if isinstance(ret, dict) and ret.get("role") == "source":
        return _table(_source(ret), colors)
    if isinstance(ret, dict) and "role" in ret and ret["role"] is None and "why" in ret:
        return _table([("INFO", "certsync role", "none", str(ret["why"]))], colors)
    if isinstance(ret, dict) and "consumers" in ret and "sources" in ret:
        return _table(_fleet(ret), colors)
    return None


def output(data, **kwargs):
    """The table of one return, or of each minion's."""
    colors = _colors()
    own = _render(data, colors)
    if own is not None:
        return "\n".join(own)
    blocks = []
    for minion, ret in data.items() if isinstance(data, dict) else [("", data)]:
        rendered = _render(ret, colors)
        if rendered is None:
            rendered = [_nested({minion: ret})]
            blocks.append("\n".join(rendered))
            continue
        blocks.append(
            "\n".join([f"{_printable(str(minion))}:", *("    " + line for line in rendered)])
        )
    return "\n".join(blocks)
