"""The copies of an unsent message's words outside its history row and its lead (Meta's
rule: honour an unsend), taken out in the unsend's transaction, before the message is
scrubbed (its texts are read here; :func:`instaset.ai.scoring.forget_unsent` does the lead,
:mod:`instaset.store.unsend` the history row and the raw events):

- The creator's notifications about the contact (recorded, and the ``notify`` job's copy,
  so a delivery still waiting goes without them): each of the message's texts (also its
  earlier, edited ones) and each value an ``ask:`` step captured from it becomes
  :data:`UNSENT`, where it stands as words: the AI's "needs you" / draft notices quote the
  message (``: "<text>"``, on one line, cut at 120 characters), a workflow's ``notify:`` or
  ``handoff`` note may template ``{text}`` or ``{phone}``. The "qualified" notification is
  the lead's (``forget_unsent``).
- The AI drafts answering the message (:func:`instaset.store.unsend.retire_drafts`): their
  text was written to it, so it goes, and a pending one is discarded (reason ``unsent``):
  approving it would answer what the contact took back, which an ``auto`` reply no longer
  does (:data:`instaset.store.ai._ANSWERED_LATER`).
- A workflow continuation waiting out a ``delay`` after the message loses the text it
  carries for ``{text}`` (:func:`instaset.store.unsend.drop_resume_text`; the continuation
  itself checks again when it runs: :meth:`instaset.automation.WorkflowAutomation.resume_flow`).
  It still runs: the workflow started before the unsend, as a reply already queued goes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import aiosqlite

from instaset.ai.guardrails import prices, urls
from instaset.store import history, unsend

UNSENT = "[unsent]"
"""What a notification says where it quoted an unsent message (or a value taken from it)."""

AI_QUOTE_CHARS = 120
"""How much of the message the AI's notification quotes (``AIReplies._notify``)."""


def quote_forms(texts: Iterable[str]) -> list[str]:
    """The ways a notification can quote each of ``texts``: as it is, stripped, on one line,
    and cut as the AI's notification cuts it, and the links and prices in it as the AI
    guardrail's notice names them (``the reply has a link (x.example/pay)``: a reply that
    repeated the contact's link); longest first (a longer quote is taken whole before a
    shorter one inside it)."""
    forms: set[str] = set()
    for text in texts:
        one_line = text.strip().replace("\n", " ")
        forms |= {text, text.strip(), one_line, one_line[:AI_QUOTE_CHARS].rstrip(),
                  *urls(text), *prices(text)}
    return sorted((f for f in forms if f.strip()), key=lambda f: (-len(f), f))


def unquoted(text: str, forms: Iterable[str]) -> str:
    """``text`` with each of ``forms`` that stands as words (not inside a longer word: an
    unsent "hi" leaves "this" alone) replaced by :data:`UNSENT`."""
    for form in forms:
        before = r"(?<!\w)" if form[0].isalnum() or form[0] == "_" else ""
        after = r"(?!\w)" if form[-1].isalnum() or form[-1] == "_" else ""
        text = re.sub(before + re.escape(form) + after, UNSENT, text)
    return text


async def forget_copies(conn: aiosqlite.Connection, mid: str, account_id: str,
                       contact_id: str, said: list[str], now: float) -> None:
    """Take the copies of the contact's unsent message ``mid`` out (see the module), in the
    conversation the unsend came from (the caller checked that the message, if stored, is
    of it). ``said``: its texts (:func:`instaset.store.unsend.contacts_words`; none when
    retention already took the message, whose copies, a pending draft or a value captured
    from it, go too)."""
    acct, contact = account_id, contact_id
    values = [str(r["value"]) for r in await unsend.captured_from(conn, mid, acct, contact)
              if r["value"] is not None and str(r["value"]).strip()]
    await unsend.retire_drafts(conn, mid, acct, contact, now)
    await unsend.drop_resume_text(conn, acct, contact, mid)
    forms = quote_forms([*said, *values])
    if not forms:
        return
    for row in await unsend.notification_texts(conn, acct, contact):
        key, text = row[0], row[1]
        if key is None or text is None or str(key).startswith("lead-qualified:"):
            continue
        new = unquoted(str(text), forms)
        if new != text:
            await history.rewrite_notification(conn, str(key), str(text), new)
