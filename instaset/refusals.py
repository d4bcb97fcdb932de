"""Telling the creator about messages that did not go out.

Contract: :func:`refusal_notice` is the notification of one send the outbox refused or that
failed at Meta (or None when nobody is told; :func:`refusal_notice_in` names the contact by
their stored @username); :func:`automation_refusal_notice` is the same
notice for a message of automation, also used for a refusal the engine made while deciding
(which has no send row). Automation's notices go once per contact, reason and day: the key
is the same whichever of the two refused, so a day of refusals is one notice. A private
reply Meta refuses because the comment was answered from elsewhere
(:data:`ALREADY_ANSWERED`) is told once per account and day.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from instaset.notify import notify_job
from instaset.queue import NewJob
from instaset.store import contacts as contactstore

if TYPE_CHECKING:
    import aiosqlite

    from instaset.outbox import Outgoing

# Refusals the creator is told about (design.md: "the send is refused locally with a
# reason, and the creator is told"): a window or deadline that closed, and what Meta refused
# for good. Not: a pause (the creator has the thread), a private reply already given, a
# disconnected account, or a token (its own notice: token_health), or a public reply held
# back because the private reply it announces did not go (that one's notice says it).
TOLD = frozenset({"window_closed", "private_reply_expired"})
# Meta's 10900 on the first try of a private reply: the comment's one private reply was
# given elsewhere (another tool answering the same comments, or the creator by hand), so
# ours was not sent, nor the public reply announcing it. Its usual cause, a second tool on
# the account, answers every comment: one notice per account and day, not per commenter
# (`stats` counts them all under this reason).
ALREADY_ANSWERED = "already_answered"
ALREADY_ANSWERED_WORDS = ("the comment was already answered privately from elsewhere (another "
                          "tool on this account, or by hand in the Instagram app), and a "
                          "comment takes one private reply")
UNTOLD = frozenset({"paused", "private_reply_used", "account_disconnected", "no_token",
                    "token_invalid", "private_reply_not_sent"})


def named(contact_id: str | None, username: str | None) -> str:
    """How a notice names a contact: ``@username`` when known, else the id."""
    return f"@{username}" if username else (contact_id or "?")


def automation_refusal_notice(account_id: str, contact_id: str | None, workflow: str | None,
                              reason: str, detail: str, now: float, *,
                              username: str | None = None) -> NewJob:
    """The notice that a message of automation (of ``workflow``) to ``contact_id`` (named
    ``@username`` when known) was not sent for ``reason``: one per contact, reason and
    day."""
    what = f"workflow {workflow}" if workflow else "automation"
    day = int(now // 86400)
    return notify_job(f"send-refused:{account_id}:{contact_id or '?'}:{reason}:{day}",
                      account_id, contact_id, "refused",
                      f"A message from {what} to {named(contact_id, username)} was not sent"
                      f" ({reason}): {detail}", now)


async def refusal_notice_in(conn: aiosqlite.Connection, out: Outgoing, state: str,
                            reason: str, detail: str, now: float) -> NewJob | None:
    """:func:`refusal_notice`, naming the contact by their stored @username when known."""
    if refusal_notice(out, state, reason, detail, now) is None or out.contact_id is None:
        return refusal_notice(out, state, reason, detail, now)
    username = await contactstore.username_in(conn, out.account_id, out.contact_id)
    return refusal_notice(out, state, reason, detail, now, username=username)


def refusal_notice(out: Outgoing, state: str, reason: str, detail: str, now: float, *,
                   username: str | None = None) -> NewJob | None:
    """The notification of ``out`` refused (or failed) for ``reason``, or None. A human
    reply that did not go out is told (with its text's start); automation's, once per
    contact, reason and day. Reasons with their own notice or none (see above): None."""
    if reason in UNTOLD:
        return None
    if out.sent_by == "human":
        # One per reply (its parts share the key before "#").
        who = named(out.contact_id, username)
        text = (f"Your reply to {who} was not sent ({reason}): {detail}. "
                f"It said: {(out.text or '')[:80]}")
        return notify_job(f"reply-not-sent:{out.key.split('#')[0]}", out.account_id,
                          out.contact_id, "refused", text, now)
    if state != "failed" and reason not in TOLD:
        return None
    if reason == ALREADY_ANSWERED:
        what = f"workflow {out.workflow}" if out.workflow else "automation"
        day = int(now // 86400)
        text = (f"A private reply from {what} to {named(out.contact_id, username)} was not"
                f" sent ({reason}): {detail}. If another tool answers your comments too, turn one "
                "of them off for these posts; the others today are in `instaset stats`.")
        return notify_job(f"send-refused:{out.account_id}:{reason}:{day}", out.account_id,
                          out.contact_id, "refused", text, now)
    return automation_refusal_notice(out.account_id, out.contact_id, out.workflow, reason,
                                     detail, now, username=username)
