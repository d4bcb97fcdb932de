"""Tracked links: URLs in our replies go through the daemon's ``GET /l/{code}`` redirect, which
counts the click and answers 302 to the original URL.

Contracts:
- :func:`track_links` rewrites every http(s) URL in the automation's outgoing texts and
  template buttons into ``{base_url}/l/{code}`` and records the link, inside the caller's
  transaction (the one that enqueues the sends). The code derives from the send's
  idempotency key, the URL's position and the URL, so enqueueing the same send again reuses
  the same codes (``ON CONFLICT DO NOTHING``). The creator's own replies (``sent_by="human"``)
  are left exactly as typed.
- The redirect only ever sends people to a URL stored by :func:`track_links` (no open
  redirect). Unknown codes answer 404. Link-preview crawlers (Instagram fetches every link to
  draw its preview) and HEAD requests are redirected but not counted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import aiosqlite
from aiohttp import web

from instaset.engine.templating import URL_RE
from instaset.outbox import Outgoing
from instaset.rules import SendKind
from instaset.store import stats as store

if TYPE_CHECKING:
    from instaset.daemon import Runtime

URL = URL_RE
CODE = re.compile(r"^[a-z2-7]{10}$")
# Sentence punctuation glued to the end of a URL belongs to the sentence.
_TRAILING = ".,;:!?)]}'\""
_CRAWLERS = re.compile(
    r"bot\b|crawler|spider|facebookexternalhit|facebot|preview|whatsapp|slack|discord|"
    r"telegram|embedly|curl/|python-requests|go-http-client",
    re.IGNORECASE,
)


def link_code(send_key: str, index: int, url: str) -> str:
    """A stable 10-character code (50 bits) for the ``index``-th URL of a send."""
    digest = hashlib.sha256(f"{send_key}\x00{index}\x00{url}".encode()).digest()
    return base64.b32encode(digest).decode("ascii")[:10].lower()


def is_crawler(user_agent: str) -> bool:
    return not user_agent or bool(_CRAWLERS.search(user_agent))


def _split_url(match: str) -> tuple[str, str]:
    url = match
    while url and url[-1] in _TRAILING:
        # Keep a closing bracket that closes one opened inside the URL (wiki-style links).
        if url[-1] == ")" and url.count("(") >= url.count(")"):
            break
        url = url[:-1]
    return url, match[len(url):]


class _Rewriter:
    def __init__(self, base_url: str, out: Outgoing) -> None:
        self.prefix = base_url.rstrip("/") + "/l/"
        self.out = out
        self.links: list[tuple[str, str]] = []  # (code, url)

    def url(self, url: str) -> str:
        if url.startswith(self.prefix) or not URL.fullmatch(url):
            return url
        code = link_code(self.out.key, len(self.links), url)
        self.links.append((code, url))
        return self.prefix + code

    def text(self, text: str) -> str:
        def sub(m: re.Match[str]) -> str:
            url, tail = _split_url(m.group(0))
            return self.url(url) + tail

        return URL.sub(sub, text)

    def template(self, raw: str) -> str:
        data = json.loads(raw)

        def walk(node: Any) -> Any:
            if isinstance(node, dict):
                return {k: (self.url(v) if k == "url" and isinstance(v, str) else walk(v))
                        for k, v in node.items()}
            if isinstance(node, list):
                return [walk(v) for v in node]
            return node

        return json.dumps(walk(data), ensure_ascii=False)


async def track_links(
    conn: aiosqlite.Connection, outs: Sequence[Outgoing], *, base_url: str | None, now: float,
) -> list[Outgoing]:
    """``outs`` with their URLs replaced by tracked links (see the module docstring). With no
    ``base_url`` (no ``server.public_url``) nothing is rewritten: a link must reach us."""
    if not base_url:
        return list(outs)
    result: list[Outgoing] = []
    for out in outs:
        if out.sent_by == "human":
            result.append(out)
            continue
        rw = _Rewriter(base_url, out)
        new = out
        if out.kind in (SendKind.TEXT, SendKind.PRIVATE_REPLY) and out.text:
            new = replace(out, text=rw.text(out.text))
        elif out.kind == SendKind.TEMPLATE and out.template:
            new = replace(out, template=rw.template(out.template))
        if rw.links:
            await store.insert_links(conn, [
                (code, url, out.account_id, out.contact_id, out.key, out.workflow, now)
                for code, url in rw.links
            ])
        result.append(new)
    return result


def redirect_route(rt: Runtime) -> web.RouteDef:
    async def follow(request: web.Request) -> web.StreamResponse:
        code = request.match_info["code"]
        link = await store.get_link(rt.db, code) if CODE.match(code) else None
        if link is None:
            return web.Response(status=404, text="unknown link", content_type="text/plain")
        if request.method == "GET" and not is_crawler(request.headers.get("User-Agent", "")):
            await store.record_click(rt.db, code, link["account_id"], link["contact_id"],
                                     rt.clock())
        return web.Response(status=302, headers={
            "Location": link["url"], "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
        })

    return web.get("/l/{code}", follow)


def install(rt: Runtime) -> None:
    """Serve ``GET /l/{code}`` from the daemon."""
    rt.web.extra_routes.append(redirect_route(rt))
