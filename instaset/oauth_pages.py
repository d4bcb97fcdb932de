"""The small HTML pages people see: the OAuth callback's result, and the status page of a
Meta data-deletion request.

Contract: every value is HTML-escaped; the pages load nothing (no scripts, no external
resources: the CSP forbids it), are never cached, and send no referrer (the callback URL
carries the one-time code). Machine-readable hooks for tests and scripts: the result page's
``<main id="result" data-outcome="...">`` and the status page's ``data-status``.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime

from aiohttp import web

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:4rem auto;padding:0 1rem;"
    "color:#222}h1{font-size:1.4rem}.ok{color:#1a7f37}.bad{color:#b42318}"
    "table{border-collapse:collapse}td{padding:.2rem 1rem .2rem 0}"
)

# Table names as people read them on the deletion status page.
_LABELS = {
    "messages": "messages",
    "contacts": "contacts",
    "conversations": "conversations",
    "events": "raw webhook events",
    "sends": "outgoing messages",
    "jobs": "scheduled jobs",
    "notifications": "notifications",
    "accounts": "connected accounts",
    "tokens": "access tokens",
    "oauth_states": "connection attempts",
}


def _doc(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


def _response(title: str, body: str, status: int) -> web.Response:
    return web.Response(
        text=_doc(title, body), status=status, content_type="text/html", headers=HEADERS
    )


def result_page(outcome: str, headline: str, detail: str, status: int = 200) -> web.Response:
    """The page ``/oauth/callback`` answers: ``outcome`` is ``connected``, ``denied`` or
    ``failed``; ``headline`` and ``detail`` are plain text."""
    css = "ok" if outcome == "connected" else "bad"
    after = (
        "You can close this window and go back to the terminal."
        if outcome == "connected"
        else "Run <code>instaset connect</code> again to retry."
    )
    body = (
        f"<main id='result' data-outcome='{html.escape(outcome, quote=True)}'>"
        f"<h1 class='{css}'>{html.escape(headline)}</h1>"
        f"<p id='detail'>{html.escape(detail)}</p><p>{after}</p></main>"
    )
    return _response(f"instaset: {headline}", body, status)


def _when(ts: float | None) -> str:
    if ts is None:
        return "not yet"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def deletion_status_page(
    code: str, status: str, summary_json: str, requested_at: float, completed_at: float | None
) -> web.Response:
    """The status page of one data-deletion request (a receipt: no personal data)."""
    summary: dict[str, int] = json.loads(summary_json or "{}")
    rows = "".join(
        f"<tr><td>{html.escape(_LABELS.get(table, table.replace('_', ' ')))}</td>"
        f"<td>{int(n)}</td></tr>"
        for table, n in sorted(summary.items())
        if n
    )
    what = (
        f"<p>What was deleted:</p><table id='deleted'>{rows}</table>"
        if rows
        else "<p id='deleted'>No data about this person was stored, so nothing had to be "
        "deleted.</p>"
    )
    done = status == "completed"
    body = (
        f"<main id='status' data-status='{html.escape(status, quote=True)}'>"
        "<h1>Data deletion request</h1>"
        f"<p>Confirmation code: <code id='code'>{html.escape(code)}</code></p>"
        f"<p>Requested: {_when(requested_at)}</p>"
        f"<p class='{'ok' if done else ''}'>Status: <strong>{html.escape(status)}</strong>"
        f"{' on ' + _when(completed_at) if done else ''}</p>{what}"
        "<p>This receipt keeps no personal data: only what was deleted and when.</p></main>"
    )
    return _response("Data deletion status", body, 200)


def not_found_page(code: str) -> web.Response:
    body = (
        "<main id='status' data-status='unknown'><h1>Unknown confirmation code</h1>"
        f"<p>No data deletion request has the code <code>{html.escape(code)}</code>. Check "
        "the link you were given.</p></main>"
    )
    return _response("Unknown confirmation code", body, 404)
