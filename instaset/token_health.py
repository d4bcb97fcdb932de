"""Meta's 190 (the access token is invalid or expired) wherever it shows up.

Contract: :func:`token_rejected` is what any feature calls when a Graph call for an
account raised :class:`~instaset.errors.TokenInvalid`: unless a newer token was stored
since (a `connect` the caller's cached copy missed), a connected account becomes
``reconnect_needed`` (sends are refused locally; ``accounts``, ``/healthz`` and ``doctor``
say so) and the creator is notified, once per token (:func:`reconnect_notice`). The
sender, the token refresh, the catch-up check and walk, and the profile lookup all end
here, so none of them leaves a dead account looking connected.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from instaset.notify import notify_job
from instaset.queue import NewJob, enqueue
from instaset.store import accounts as acctstore
from instaset.store import history
from instaset.store.db import Database

if TYPE_CHECKING:
    from instaset.tokens import TokenProvider

REJECTED = "Meta rejected its token (code 190)"


def reconnect_notice(row: sqlite3.Row, why: str, now: float) -> NewJob:
    """The notification that the account ``row`` needs `instaset connect`: one per token
    (keyed by when the token was issued)."""
    acct = str(row["id"])
    issued = int(row["token_issued_at"] or row["created_at"])
    text = (f"Instagram account @{row['username'] or acct} needs reconnecting: {why}. "
            "Automation for it is stopped; run `instaset connect`.")
    return notify_job(f"token-reconnect:{acct}:{issued}", acct, None, "token", text, now)


async def token_replaced(tokens: TokenProvider, account_id: str, failed_token: str | None
                         ) -> bool:
    """Whether the store holds another token than ``failed_token`` now (a `connect` the
    caller's cached copy missed: the next call uses it). Drops the cached copy."""
    tokens.forget(account_id)
    return await tokens.token(account_id) not in (None, failed_token)


async def mark_rejected(db: Database, account_id: str, now: float) -> bool:
    """A connected account becomes ``reconnect_needed`` and the creator is told (one notice
    per token). False when it was not connected."""
    if not await acctstore.mark_reconnect_needed(db, account_id, now):
        return False
    row = await history.get_account(db, account_id)
    if row is not None:
        await enqueue(db, [reconnect_notice(row, REJECTED, now)], now)
    return True


async def token_rejected(db: Database, tokens: TokenProvider, account_id: str,
                         failed_token: str | None, now: float) -> bool:
    """See the module docstring. ``failed_token``: the token Meta refused (None: none was
    stored). True when the account was marked (and the creator told)."""
    if await token_replaced(tokens, account_id, failed_token):
        return False
    return await mark_rejected(db, account_id, now)
