"""The full-screen inbox, driven with Textual's pilot over a real SQLite database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from instaset.inbox import ContactRef
from instaset.store import history
from instaset.store.db import Database, open_database
from instaset.timefmt import iso_utc
from instaset.tui import InboxApp

ACCT = "17841400000000001"
ALICE = "1129842642640637"
BOB = "2229842642640638"
NOW = 1_800_000_000.0
HOUR = 3600.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def add_message(db: Database, contact: str, *, text: str | None, at: float,
                      inbound: bool, sent_by: str = "contact",
                      attachments: list[dict[str, object]] | None = None,
                      stage: str | None = None) -> None:
    async with db.tx() as conn:
        await history.touch_contact(conn, ACCT, contact, at)
        await history.insert_message(
            conn, account_id=ACCT, contact_id=contact, mid=f"m{contact}{at}",
            direction="in" if inbound else "out", sent_by=sent_by, text=text,
            attachments=attachments or [], created_at=at)
        await history.update_conversation(
            conn, ACCT, contact, at, message_at=at, inbound_at=at if inbound else None,
            unread_delta=1 if inbound else 0,
            state=json.dumps({"stage": stage}) if stage else None)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(tmp_path / "inbox.db", synchronous="NORMAL")
    try:
        await history.upsert_account(database, ACCT, username="creator", now=NOW - 10 * HOUR)
        async with database.tx() as conn:
            await history.touch_contact(conn, ACCT, ALICE, NOW - 5 * HOUR, username="alice")
            await history.touch_contact(conn, ACCT, BOB, NOW - 5 * HOUR, username="bob")
        # Alice: an old conversation (bot answered); Bob: newer, sent a photo, unread.
        await add_message(database, ALICE, text="can I get the guide?", at=NOW - 3 * HOUR,
                          inbound=True, stage="engaged")
        await add_message(database, ALICE, text="Here is the guide", at=NOW - 3 * HOUR + 5,
                          inbound=False, sent_by="automation")
        await add_message(database, BOB, text="look at this", at=NOW - HOUR, inbound=True,
                          attachments=[{"type": "image", "url": "https://cdn.example/x.jpg"}],
                          stage="qualified")
        await add_message(database, BOB, text="hello?", at=NOW - HOUR + 60, inbound=True)
        yield database
    finally:
        await database.close()


def table_rows(app: InboxApp) -> list[list[str]]:
    table = app.query_one("#conversations", DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def thread_text(app: InboxApp) -> str:
    return str(app.query_one("#thread", Static).render())


async def test_list_thread_reply_and_pause(db: Database) -> None:
    sent: list[tuple[ContactRef, str]] = []

    async def send(ref: ContactRef, text: str) -> str:
        sent.append((ref, text))
        return f"sent to {ref.label}"

    clock = Clock(NOW)
    app = InboxApp(db, send, clock=clock, poll_interval=3600, pause_for=2 * HOUR)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        rows = table_rows(app)
        # Newest first, with unread counts, stages, automation and window state.
        assert [r[0] for r in rows] == ["@bob", "@alice"]
        assert rows[0][1:5] == ["2", "qualified", "on", "23h 1m left"]
        assert rows[1][1:5] == ["1", "engaged", "on", "21h 0m left"]
        # The newest conversation is shown first (and so marked read) ...
        assert "them: look at this [image]" in thread_text(app)
        # ... then the user moves to Alice's.
        await pilot.press("down")
        await pilot.pause()
        text = thread_text(app)
        assert "them: can I get the guide?" in text
        assert "bot: Here is the guide" in text
        assert "look at this" not in text

        # Enter on the list goes to the reply box; Enter there sends as the human.
        await pilot.press("enter")
        assert app.focused is app.query_one("#reply", Input)
        await pilot.press(*"thanks!")
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert sent == [(ContactRef(ACCT, ALICE, "alice"), "thanks!")]
        assert str(app.query_one("#status", Static).render()) == "sent to @alice"
        assert app.query_one("#reply", Input).value == ""

        # In the reply box, "p" is text; back in the list, it pauses Alice's automation.
        await pilot.press("p")
        assert app.query_one("#reply", Input).value == "p"
        row = await db.fetchone("SELECT paused_until FROM conversations WHERE contact_id = ?",
                                (ALICE,))
        assert row is not None and row["paused_until"] is None
        await pilot.press("escape", "p")
        await pilot.pause()
        row = await db.fetchone("SELECT paused_until FROM conversations WHERE contact_id = ?",
                                (ALICE,))
        assert row is not None and row["paused_until"] == NOW + 2 * HOUR
        assert table_rows(app)[1][3] == "paused 2h 0m"
        await pilot.press("r")
        await pilot.pause()
        row = await db.fetchone("SELECT paused_until FROM conversations WHERE contact_id = ?",
                                (ALICE,))
        assert row is not None and row["paused_until"] is None
        assert table_rows(app)[1][3] == "on"

        # Bob's thread was viewed: read. Alice writes again: the next poll shows it on top.
        assert table_rows(app)[0][1] == ""
        clock.now = NOW + 60
        await add_message(db, ALICE, text="one more question", at=NOW, inbound=True)
        await app.reload()
        await pilot.pause()
        rows = table_rows(app)
        assert [r[0] for r in rows] == ["@alice", "@bob"]
        assert "them: one more question" in thread_text(app)  # still the selected thread


async def test_send_error_is_shown(db: Database) -> None:
    from instaset.errors import InstasetError

    async def send(ref: ContactRef, text: str) -> str:
        raise InstasetError("the reply is empty")

    app = InboxApp(db, send, clock=Clock(NOW), poll_interval=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app.query_one("#reply", Input).focus()
        await pilot.press("x", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert str(app.query_one("#status", Static).render()) == "error: the reply is empty"


async def test_a_refusals_words_are_cut_to_one_line(db: Database) -> None:
    """A refused send's stored words (up to 1000 characters, Meta's or the rules') show in
    the thread on one line, cut as `inbox show` cuts them; the message's own text stays."""
    from instaset import inbox
    from instaset.oneline import DETAIL_CHARS
    from instaset.store import sends as sendstore
    from instaset.tui import render_thread

    words = "Meta said\nsomething long " + " ".join(f"word{i}" for i in range(150))
    async with db.tx() as conn:
        await sendstore.insert_refused(conn, [(
            "send:late", ACCT, BOB, None, "text",
            json.dumps({"key": "send:late", "kind": "text", "account_id": ACCT,
                        "contact_id": BOB, "text": "the guide"}),
            "automation", "guide", "window_closed", words, NOW)])
    doc = await inbox.thread(db, ContactRef(ACCT, BOB, "bob"), NOW)
    assert [h["detail"] for h in doc["held"]] == [words]  # whole, stored
    [line] = [ln for ln in render_thread(doc, NOW).plain.splitlines() if "not sent" in ln]
    stamp = iso_utc(NOW)[:16].replace("T", " ")  # in its place in time, with its time
    shown = line.removeprefix(f"{stamp} bot: not sent (window_closed: ").removesuffix(
        "): the guide")
    assert len(shown) == DETAIL_CHARS and shown.endswith("…")
    assert shown.startswith("Meta said something long word0 word1")


async def test_the_thread_is_in_time_order_with_unsent_sends_and_public_replies(
    db: Database,
) -> None:
    """s17 fresh audit, finding 4 (the TUI shares `inbox show`'s order): a refused image
    stands where it was decided, with its time and ``[image]`` (it has no text); a public
    reply that went out shows when it went."""
    from instaset import inbox
    from instaset.store import sends as sendstore
    from instaset.tui import render_thread

    async with db.tx() as conn:
        await sendstore.insert_refused(conn, [(
            "send:img", ACCT, BOB, None, "media",
            json.dumps({"key": "send:img", "kind": "media", "account_id": ACCT,
                        "contact_id": BOB, "media_type": "image",
                        "media_url": "https://example.com/p.png"}),
            "automation", "pics", "window_closed", "the window closed", NOW - HOUR + 30)])
        await sendstore.insert_sends(conn, [(
            "send:pub", ACCT, BOB, "c1", "public_reply",
            json.dumps({"key": "send:pub", "kind": "public_reply", "account_id": ACCT,
                        "contact_id": BOB, "comment_id": "c1", "text": "Check your DMs"}),
            "human", "pics", NOW - HOUR + 40)])
        await conn.execute("UPDATE sends SET state = 'sent', updated_at = ? WHERE key = ?",
                           (NOW - HOUR + 120, "send:pub"))
    doc = await inbox.thread(db, ContactRef(ACCT, BOB, "bob"), NOW)
    lines = render_thread(doc, NOW).plain.splitlines()[2:]
    def stamp(at: float) -> str:
        return iso_utc(at)[:16].replace("T", " ")

    assert lines == [
        f"{stamp(NOW - HOUR)} them: look at this [image]",
        f"{stamp(NOW - HOUR)} bot: not sent (window_closed: the window closed): [image]",
        f"{stamp(NOW - HOUR + 60)} them: hello?",
        f"{stamp(NOW - HOUR + 120)} you: public reply under the comment: Check your DMs",
    ]
