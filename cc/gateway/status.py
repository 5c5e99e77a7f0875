"""``/status`` (HTML) and ``/status.json``: the connected sessions, for ``--admin`` only.

The page reloads itself (a meta refresh, every 5 s or ``?refresh=N``), needs no
script, and turns its table into one card per session on a narrow screen, so it
reads on a phone at 3 a.m.  Everything shown is escaped; a Content-Security-Policy
forbids scripts and framing anyway.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cc.gateway.admin import refusal
from cc.gateway.routes import Reply, Request, Router
from cc.protocol.status import age, human_bytes, status_document

__all__ = ["register", "render_html", "status_json", "status_page"]

DEFAULT_REFRESH = 5
_SECURITY = (
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
)


async def _document(req: Request) -> dict[str, Any]:
    figures = await req.gateway.fleet.figures()
    named = req.gateway.named_services
    return status_document(
        figures.rows,
        version=req.gateway.config.version,
        workers=len(figures.workers) or 1,
        services=named.rows() if named is not None else None,
    )


async def status_json(req: Request) -> Reply:
    refused = await refusal(req)
    if refused is not None:
        return refused
    body = json.dumps(await _document(req), indent=1).encode() + b"\n"
    return Reply(200, body, "application/json", _SECURITY)


async def status_page(req: Request) -> Reply:
    refused = await refusal(req)
    if refused is not None:
        return refused
    page = render_html(await _document(req), refresh=_refresh(req.request.target))
    return Reply(200, page.encode(), "text/html; charset=utf-8", _SECURITY)


def _refresh(target: str) -> int:
    values = parse_qs(urlsplit(target).query).get("refresh", [])
    try:
        return min(300, max(1, int(values[-1]))) if values else DEFAULT_REFRESH
    except ValueError:
        return DEFAULT_REFRESH


_STYLE = """
body{font:15px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
background:#f6f7f9;color:#1c2430}
header{background:#1c2430;color:#fff;padding:12px 16px}
header h1{font-size:18px;margin:0}
header p{margin:4px 0 0;color:#c8d0dc;font-size:13px}
main{padding:12px}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}
th,td{text-align:left;padding:8px 10px;border-bottom:1px solid #e3e6eb;vertical-align:top}
th{font-size:12px;text-transform:uppercase;color:#5a6678;background:#eef0f3}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{font-size:13px;background:#eef0f3;border-radius:3px;padding:1px 4px;
display:inline-block;margin:1px 0;word-break:break-all}
.err{color:#a1260d}
.none{color:#8a94a3}
.empty{padding:24px;text-align:center;color:#5a6678;background:#fff}
@media (max-width:700px){
 thead{display:none}
 table,tbody,tr,td{display:block;width:auto}
 tr{margin:0 0 12px;border-radius:6px;box-shadow:0 1px 3px #0003;background:#fff}
 td{border:0;padding:4px 12px}
 td.num{text-align:left}
 td::before{content:attr(data-label);display:inline-block;min-width:8em;
 font-size:12px;text-transform:uppercase;color:#5a6678}
 td:first-child{padding-top:10px;font-weight:600}
 td:last-child{padding-bottom:10px}
}
"""


def render_html(document: dict[str, Any], *, refresh: int = DEFAULT_REFRESH) -> str:
    """The status document as a self-refreshing page (no script)."""
    import html  # here: it loads its entity table (~0.4 MB), and few gateways show the page

    esc = html.escape
    now = float(document["generated"])
    rows = []
    for row in document["sessions"]:
        remotes = "".join(f"<code>{esc(r)}</code> " for r in row["remotes"]) or "-"
        error = esc(row.get("last_error") or "")
        error_class = "err last-error" if error else "none last-error"
        bytes_in, bytes_out = int(row["bytes_in"]), int(row["bytes_out"])
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["since"]))
        rows.append(
            f'<tr class="session" data-session="{int(row["id"])}"'
            f' data-user="{esc(row["user"])}" data-bytes-in="{bytes_in}"'
            f' data-bytes-out="{bytes_out}" data-open="{int(row["open"])}">'
            f'<td class="user" data-label="User">{esc(row["user"])}</td>'
            f'<td class="peer" data-label="Peer">{esc(row["peer"])}</td>'
            f'<td class="version" data-label="Version">{esc(row["version"])}</td>'
            f'<td class="since" data-label="Since" title="{since}">'
            f"{age(now - float(row['since']))} ago</td>"
            f'<td class="remotes" data-label="Remotes">{remotes}</td>'
            f'<td class="num open" data-label="Open">{int(row["open"])}</td>'
            f'<td class="num in" data-label="In" title="{bytes_in} bytes from the connector">'
            f"{human_bytes(bytes_in)}</td>"
            f'<td class="num out" data-label="Out" title="{bytes_out} bytes to the connector">'
            f"{human_bytes(bytes_out)}</td>"
            f'<td class="{error_class}" data-label="Last error">{error or "-"}</td></tr>'
        )
    if rows:
        body = (
            "<table><thead><tr><th>User</th><th>Peer</th><th>Version</th><th>Since</th>"
            "<th>Remotes</th><th>Open</th><th>In</th><th>Out</th><th>Last error</th>"
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        )
    else:
        body = '<p class="empty">No connector is connected.</p>'
    if document.get("not_shown"):
        body += f"<p>... and {int(document['not_shown'])} more sessions not shown.</p>"
    services = document.get("services") or []
    if services:
        body += (
            "<h2>Named services</h2><table><thead><tr><th>Path</th><th>Servers</th>"
            "<th>Waiting</th><th>Linked</th></tr></thead><tbody>"
            + "".join(
                f'<tr class="service" data-path="{esc(str(s["path"]))}">'
                f'<td class="path" data-label="Path"><code>{esc(str(s["path"]))}</code></td>'
                f'<td class="num" data-label="Servers">{int(s["servers"])}</td>'
                f'<td class="num" data-label="Waiting">{int(s["waiting"])}</td>'
                f'<td class="num" data-label="Linked">{int(s["linked"])}</td></tr>'
                for s in services
            )
            + "</tbody></table>"
        )
    generated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    count = int(document["session_count"])
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f'<meta http-equiv=refresh content="{refresh}">'
        f"<title>cloud-connector gateway: {count} session(s)</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<header><h1>cloud-connector gateway</h1><p>"
        f'<span id="count">{count}</span> session(s) &middot; version '
        f"{esc(str(document['version']))} &middot; {int(document['workers'])} worker(s)"
        f" &middot; {generated} &middot; refreshes every {refresh} s</p></header>"
        f"<main>{body}</main></body></html>"
    )


def register(router: Router) -> None:
    router.add("/status", status_page, before_backend=True)
    router.add("/status.json", status_json, before_backend=True)
