"""Tracked links: rewriting URLs in outgoing sends, and the daemon's ``/l/{code}`` redirect."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from instaset import links
from instaset.config import Config
from instaset.daemon import Runtime, runtime
from instaset.outbox import Outgoing, enqueue_sends
from instaset.rules import SendKind
from instaset.store.db import Database
from instaset.webhook import make_app
from tests.conftest import connect_account

ClientFactory = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]
BASE = "https://creator.example"
ACCT = "17841400000000001"
BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Instagram 300.0"


def text_send(key: str, text: str, **kw: object) -> Outgoing:
    return Outgoing(key=key, kind=SendKind.TEXT, account_id=ACCT, contact_id="555", text=text,
                    workflow="guide", **kw)  # type: ignore[arg-type]


async def track(db: Database, outs: list[Outgoing], base: str | None = BASE) -> list[Outgoing]:
    async with db.tx() as conn:
        return await links.track_links(conn, outs, base_url=base, now=100.0)


async def test_text_urls_become_tracked_links_with_stable_codes(db: Database) -> None:
    out = text_send("send:msg:m1:0", "Guide: https://example.com/guide. Book (https://x.io/b)!")
    [new] = await track(db, [out])
    code1 = links.link_code("send:msg:m1:0", 0, "https://example.com/guide")
    code2 = links.link_code("send:msg:m1:0", 1, "https://x.io/b")
    # Sentence punctuation stays outside the link.
    assert new.text == f"Guide: {BASE}/l/{code1}. Book ({BASE}/l/{code2})!"
    rows = await db.fetchall("SELECT code, url, contact_id, send_key, workflow FROM links"
                             " ORDER BY url")
    assert [tuple(r) for r in rows] == [
        (code1, "https://example.com/guide", "555", "send:msg:m1:0", "guide"),
        (code2, "https://x.io/b", "555", "send:msg:m1:0", "guide"),
    ]
    # Re-enqueueing the same send (a reprocessed event) reuses the same codes.
    [again] = await track(db, [out])
    assert again.text == new.text
    count = await db.fetchone("SELECT count(*) FROM links")
    assert count is not None and count[0] == 2


@pytest.mark.parametrize(
    ("text", "url", "tail"),
    [
        ("Here: https://example.com/guide💪 Enjoy!", "https://example.com/guide", "💪 Enjoy!"),
        ("詳しくはこちら：https://example.com/guide。ぜひ！", "https://example.com/guide",
         "。ぜひ！"),
        ("Grab it (https://example.com/guide)…", "https://example.com/guide", ")…"),
        ("https://de.wikipedia.org/wiki/Straße ok", "https://de.wikipedia.org/wiki/Straße", " ok"),
        ("see https://en.wikipedia.org/wiki/Foo_(bar).", "https://en.wikipedia.org/wiki/Foo_(bar)",
         "."),
    ],
)
async def test_what_is_glued_after_a_url_stays_in_the_message(
    db: Database, text: str, url: str, tail: str
) -> None:
    """Found by the s11 audit: an emoji, CJK text or "…" written right after a URL was
    taken into the link: it vanished from the message and the redirect went to a broken
    URL."""
    [new] = await track(db, [text_send("send:msg:m9:0", text)])
    (row,) = await db.fetchall("SELECT code, url FROM links")
    assert row["url"] == url
    assert new.text is not None and new.text.endswith(f"{BASE}/l/{row['code']}{tail}")


async def test_templates_human_replies_and_no_public_url(db: Database) -> None:
    tpl = json.dumps({"type": "button", "text": "Pick", "buttons": [
        {"type": "web_url", "url": "https://example.com/book", "title": "Book"},
        {"type": "postback", "title": "No", "payload": "NO"}]})
    template = Outgoing(key="send:t:0", kind=SendKind.TEMPLATE, account_id=ACCT,
                        contact_id="555", template=tpl)
    human = text_send("human:1", "my link https://example.com/me", sent_by="human")
    new_tpl, same_human = await track(db, [template, human])
    buttons = json.loads(new_tpl.template or "{}")["buttons"]
    assert buttons[0]["url"] == f"{BASE}/l/{links.link_code('send:t:0', 0, 'https://example.com/book')}"
    assert buttons[1] == {"type": "postback", "title": "No", "payload": "NO"}
    assert same_human == human  # the creator's own words are sent as typed
    plain = text_send("send:x:0", "see https://example.com")
    assert await track(db, [plain], base=None) == [plain]  # no public URL: nothing to reach
    rows = await db.fetchall("SELECT send_key FROM links")
    assert [r[0] for r in rows] == ["send:t:0"]


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[Runtime]:
    config = Config.model_validate({"storage": {"path": str(tmp_path / "links.db")}})
    async with runtime(config) as r:  # the daemon installs the links feature itself
        yield r


async def test_redirect_counts_human_clicks_only(rt: Runtime,
                                                 aiohttp_client: ClientFactory) -> None:
    await connect_account(rt.db, ACCT)
    client = await aiohttp_client(make_app(rt.web))  # the daemon's app, with the route
    [out] = await track(rt.db, [text_send("send:msg:m2:0", "go https://example.com/guide")])
    async with rt.db.tx() as conn:
        await enqueue_sends(conn, [out], 100.0)
    path = (out.text or "").split(BASE)[1]
    for ua in (BROWSER, BROWSER, "facebookexternalhit/1.1", ""):
        resp = await client.get(path, headers={"User-Agent": ua}, allow_redirects=False)
        assert resp.status == 302
        assert resp.headers["Location"] == "https://example.com/guide"
        assert resp.headers["Cache-Control"] == "no-store"
    head = await client.head(path, headers={"User-Agent": BROWSER}, allow_redirects=False)
    assert head.status == 302
    rows = await rt.db.fetchall("SELECT code, account_id, contact_id FROM clicks")
    code = path.rsplit("/", 1)[1]
    assert [tuple(r) for r in rows] == [(code, ACCT, "555")] * 2  # crawler, empty UA, HEAD: no
    for bad in ("/l/aaaaaaaaaa", "/l/NOT-A-CODE", "/l/" + "a" * 200):
        resp = await client.get(bad, allow_redirects=False)
        assert resp.status == 404
