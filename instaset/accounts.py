"""Accounts: Business Login (``instaset connect``), token lifecycle, disconnect, and Meta's
deauthorize and data-deletion callbacks.

Contracts:

- Connect: :meth:`AccountService.begin` stores a random ``state`` and gives the authorize URL.
  ``GET /oauth/callback`` (:meth:`AccountService.handle_callback`) claims the state once (an
  unknown, reused or expired state is refused before anything else), then exchanges the code
  (both response shapes), gets the long-lived token, reads ``/me`` (its ``user_id`` is the
  account id used everywhere), stores the token in the secret store, upserts the account and
  subscribes :data:`WEBHOOK_FIELDS`. The outcome is written to the state's row, which the
  waiting ``connect`` reads: the callback may run in the daemon or in connect's own listener
  (:mod:`instaset.connect_flow`).
- Tokens: the ``refresh_tokens`` periodic job refreshes a token older than 24 h once it is
  within :data:`REFRESH_WITHIN` of expiry. A failed refresh within :data:`WARN_WITHIN` of
  expiry notifies (once per token); code 190, an expired or a missing token marks the account
  ``reconnect_needed`` and notifies (once per token). An account the sender marked
  ``reconnect_needed`` is notified the same way.
- Meta's callbacks (``POST /meta/deauthorize``, ``POST /meta/data-deletion``): a
  ``signed_request`` is verified with every configured app secret; malformed 400, wrong
  signature or an ``issued_at`` in the future 403, never 500. Its age is not held against
  it (the signature authenticates it; Meta's own example is years old), but a
  deauthorization issued before an account's current token leaves that account connected:
  it is about an earlier connection. The signed ``user_id`` is matched against
  accounts (id, app-scoped id), then contacts. Data deletion answers
  ``{"url", "confirmation_code"}`` and keeps a receipt without personal data.
- No token or app secret ever reaches a log line, an exception message or a page.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from secrets import token_hex, token_urlsafe
from typing import TYPE_CHECKING, cast
from urllib.parse import urlencode

import yarl
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from instaset.config import Config, InstagramConfig
from instaset.errors import GraphError, InstasetError, InvalidParameter, TokenInvalid, Transient
from instaset.graph import GraphClient
from instaset.http_body import in_time, too_slow
from instaset.notify import notify_job
from instaset.oauth_pages import deletion_status_page, not_found_page, result_page
from instaset.oneline import one_line
from instaset.proxy import client_view, external_base_url, valid_host
from instaset.queue import enqueue
from instaset.secrets import SecretStore, app_secrets, open_secrets, token_key
from instaset.signed_request import CLOCK_SKEW, SignedRequestError, parse_signed_request
from instaset.store import accounts as acctstore
from instaset.store import history
from instaset.store.db import Database
from instaset.store.jobs import Job
from instaset.timefmt import iso_or_none
from instaset.token_health import REJECTED, reconnect_notice

if TYPE_CHECKING:
    from instaset.daemon import Runtime

log = logging.getLogger("instaset.accounts")

SCOPES = (
    "instagram_business_basic",
    "instagram_business_manage_messages",
    "instagram_business_manage_comments",
)
WEBHOOK_FIELDS = (
    "messages", "messaging_postbacks", "messaging_seen", "message_reactions",
    "messaging_referral", "comments", "live_comments",
)  # fmt: skip
DAY = 86400.0
STATE_TTL = 1800.0  # an authorize URL is good for 30 minutes
LONG_LIVED = 60 * DAY  # assumed lifetime when Meta did not say (dashboard tokens)
REFRESH_MIN_AGE = DAY  # Meta refuses to refresh younger tokens
REFRESH_WITHIN = 30 * DAY  # refresh from day 30 of 60
WARN_WITHIN = 7 * DAY
REFRESH_INTERVAL = 3600.0
_CODE = re.compile(r"[A-Za-z0-9]{1,64}")


@dataclass(frozen=True, slots=True)
class CallbackResult:
    """What ``/oauth/callback`` answers (``outcome``: connected, denied or failed)."""

    outcome: str
    headline: str
    detail: str
    status: int = 200


@dataclass(frozen=True, slots=True)
class DisconnectResult:
    account_id: str
    unsubscribed: bool
    token_deleted: bool
    deleted: dict[str, int] = field(default_factory=dict)
    sandbox: bool = False  # the sandbox's account: nothing at Meta to unsubscribe


def redirect_uri(config: Config) -> str:
    """``instagram.redirect_uri``, else ``<server.public_url>/oauth/callback``, else the local
    listener's callback URL."""
    if config.instagram.redirect_uri:
        return config.instagram.redirect_uri
    if config.server.public_url:
        return config.server.public_url.rstrip("/") + "/oauth/callback"
    host = config.server.host if config.server.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"http://{host}:{config.server.port}/oauth/callback"


def redirect_warning(config: Config) -> str | None:
    """What to tell the creator when the OAuth redirect is a plain-http local URL and the
    sign-in goes to Meta (which takes only https redirect URIs registered for the app);
    None when it is fine (https, or the sandbox, which takes any)."""
    redirect = redirect_uri(config)
    if redirect.startswith("https://") or config.instagram.api_url != (
            InstagramConfig.model_fields["api_url"].default):
        return None
    return (f"the sign-in redirects to {redirect}, which Meta refuses (it takes only https "
            "redirect URIs registered in the app's dashboard): set server.public_url to your "
            "https address, or instagram.redirect_uri (see docs/setup.md, Public URL)")


def authorize_url(config: Config, state: str, redirect: str) -> str:
    query = urlencode({
        "client_id": config.instagram.app_id, "redirect_uri": redirect, "response_type": "code",
        "scope": ",".join(SCOPES), "state": state,
    })
    return f"{config.instagram.auth_url.rstrip('/')}/oauth/authorize?{query}"


# What Meta's code exchange says, and what to do about it, most specific first (every
# GraphError's text ends in "(code N)": "code" alone says nothing).
_EXCHANGE_ERRORS = (
    (re.compile(r"redirect_uri", re.I),
     "Meta says the redirect URI is not the one the sign-in used: set instagram.redirect_uri "
     "(or server.public_url) to the URI registered in the app's dashboard, then run "
     "`instaset connect` again."),
    (re.compile(r"client secret|app secret", re.I),
     "Meta refused the app secret: set INSTASET_APP_SECRET (or instagram.app_secret) to the "
     "Instagram app secret from the app's dashboard, then run `instaset connect` again."),
    (re.compile(r"application|platform app|client[_ ]id|app id", re.I),
     "Meta does not know this app: check instagram.app_id (the Instagram app ID from the "
     "app's dashboard), then run `instaset connect` again."),
    (re.compile(r"authorization code|verification code|code (has|was) (expired|been used|"
                r"already used|not found)|matching code", re.I),
     "The authorization code expired or was already used (a code works once, within an "
     "hour). Run `instaset connect` again."),
)


def _explain(exc: InstasetError) -> str:
    """Why a connect failed, in words; GraphError messages are already token-free."""
    text = str(exc)
    if isinstance(exc, InvalidParameter):
        for pattern, advice in _EXCHANGE_ERRORS:
            if pattern.search(text):
                return f"{advice} ({text})"
    if isinstance(exc, Transient):
        return f"Instagram could not be reached; try again in a minute ({text})."
    return f"Instagram refused the connection: {text}"


class AccountService:
    """Everything the feature does; the routes, the periodic job and the CLI call this."""

    def __init__(
        self, config: Config, db: Database, graph: GraphClient,
        store: SecretStore | None = None, *, clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.db = db
        self.graph = graph
        self._store = store
        self.clock = clock
        self._store_unreadable = False  # logged once, until the store reads again

    @property
    def store(self) -> SecretStore:
        if self._store is None:  # opened lazily: a daemon that never needs it never warns
            self._store = open_secrets(self.config)
        return self._store

    async def _get(self, key: str) -> str | None:
        return await asyncio.to_thread(self.store.get, key)

    async def _set(self, key: str, value: str) -> None:
        await asyncio.to_thread(self.store.set, key, value)

    async def _delete(self, key: str) -> bool:
        return await asyncio.to_thread(self.store.delete, key)

    async def secrets(self) -> list[bytes]:
        """The app secrets (config/env first, then the secret store). When the store cannot
        be read (a locked OS keyring on a headless server) the config's secrets are used
        alone, as the webhook does (``daemon.serving``): Meta's deauthorize and
        data-deletion callbacks must not wait for a keyring someone has to unlock. The
        store's error is logged once (again only after it read in between); without a
        secret in the config it stands."""
        try:
            found = await asyncio.to_thread(app_secrets, self.config, self.store)
        except InstasetError as exc:
            configured = self.config.instagram.webhook_secrets()
            if not configured:
                raise
            if not self._store_unreadable:
                self._store_unreadable = True
                log.warning("the secret store cannot be read (%s); checking signatures with "
                            "the app secret from the config alone until it can", exc)
            return configured
        self._store_unreadable = False
        return found

    # -- connect ---------------------------------------------------------------------------
    async def begin(self) -> tuple[str, str]:
        """A new connect attempt: ``(state, authorize URL)``."""
        if not self.config.instagram.app_id:
            raise InstasetError("instagram.app_id is not set; copy your Instagram app id from "
                                "Meta's App Dashboard into the config")
        if not await self.secrets():
            raise InstasetError("no Instagram app secret is configured; set env "
                                "INSTASET_APP_SECRET or instagram.app_secret")
        state = token_urlsafe(24)
        redirect = redirect_uri(self.config)
        await acctstore.create_state(self.db, state, redirect, self.clock(), STATE_TTL)
        return state, authorize_url(self.config, state, redirect)

    async def handle_callback(self, query: Mapping[str, str]) -> CallbackResult:
        """The OAuth redirect. Never raises for anything Meta or the browser sent."""
        state = query.get("state", "")
        row = await acctstore.claim_state(self.db, state, self.clock()) if state else None
        if row is None:
            return CallbackResult(
                "failed", "This sign-in could not be verified",
                "The sign-in link is unknown, expired or was already used (wrong state), so "
                "nothing was connected.", 400)
        if query.get("error"):
            detail = one_line(query.get("error_description") or query.get("error_reason")
                              or query["error"])[:300]
            result = CallbackResult("denied", "Access was not granted",
                                    f"Instagram says: {detail}. Nothing was connected.")
        elif not query.get("code"):
            result = CallbackResult("failed", "Connection failed",
                                    "Instagram sent no authorization code.", 400)
        else:
            try:
                info = await self.complete_code(query["code"], str(row["redirect_uri"]))
            except InstasetError as exc:
                result = CallbackResult("failed", "Connection failed", _explain(exc), 400)
            else:
                await acctstore.finish_state(self.db, state, "connected", info.account_id,
                                         info.summary())
                return CallbackResult("connected", f"Connected @{info.username or '?'}",
                                      info.summary())
        await acctstore.finish_state(self.db, state, result.outcome, None, result.detail)
        log.info("connect %s: %s", result.outcome, result.detail)
        return result

    async def complete_code(self, code: str, redirect: str) -> Connected:
        secret = (await self.secrets())[0].decode()
        grant = await self.graph.exchange_code(
            client_id=self.config.instagram.app_id, client_secret=secret,
            redirect_uri=redirect, code=code,
        )
        long = await self.graph.long_lived_token(grant.access_token, client_secret=secret)
        return await self.store_token(long.access_token, long.expires_in, grant.user_id)

    async def store_token(
        self, token: str, expires_in: int | None, scoped_hint: str | None = None
    ) -> Connected:
        """Check ``token`` with ``/me``, store it, upsert the account and subscribe it."""
        me = await self.graph.me(token=token)
        account_id = me.get("user_id")
        if not isinstance(account_id, str) or not account_id:
            raise GraphError("Meta's /me answer had no user_id; is this an Instagram "
                             "professional account token?")
        raw_name, raw_id = me.get("username"), me.get("id")
        username = raw_name if isinstance(raw_name, str) and raw_name else None
        scoped = raw_id if isinstance(raw_id, str) and raw_id else scoped_hint
        now = self.clock()
        expires_at = now + expires_in if expires_in else None
        await self._set(token_key(account_id), token)  # before the row: never a row without
        subscribed: tuple[str, ...] = ()
        warning = None
        try:
            await self.graph.subscribe(account_id, WEBHOOK_FIELDS, token=token)
            subscribed = WEBHOOK_FIELDS
        except GraphError as exc:
            warning = f"the webhook subscription failed ({exc}); run `instaset connect` again"
            log.warning("account %s: %s", account_id, warning)
        await history.upsert_account(
            self.db, account_id, username=username, now=now,
            app_scoped_id=scoped, token_expires_at=expires_at, subscribed_fields=subscribed,
        )
        log.info("connected account %s (@%s)", account_id, username)
        return Connected(account_id, username, scoped, expires_at, subscribed, warning)

    # -- token lifecycle -------------------------------------------------------------------
    async def refresh_job(self, job: Job) -> None:
        """The ``refresh_tokens`` periodic job: see the module docstring."""
        del job
        now = self.clock()
        for row in await history.list_accounts(self.db):
            if row["sandbox"] or row["state"] == "disconnected":
                continue
            try:
                await self._lifecycle(row, now)
            except InstasetError as exc:  # one account's trouble must not stop the others
                log.warning("token check of account %s failed: %s", row["id"], exc)

    async def _lifecycle(self, row: sqlite3.Row, now: float) -> None:
        acct = str(row["id"])
        issued = float(row["token_issued_at"] or row["created_at"])
        expires = float(row["token_expires_at"] or issued + LONG_LIVED)
        if row["state"] == "reconnect_needed":
            await self._notify_reconnect(row, "Meta no longer accepts its token", now)
            return
        if now >= expires:
            await self.mark_reconnect(row, "its token expired", now)
            return
        if now - issued < REFRESH_MIN_AGE or expires - now > REFRESH_WITHIN:
            return
        token = await self._get(token_key(acct))
        if token is None:
            await self.mark_reconnect(row, "no token is stored for it", now)
            return
        try:
            grant = await self.graph.refresh_token(token)
        except TokenInvalid:
            await self.mark_reconnect(row, REJECTED, now)
            return
        except GraphError as exc:
            log.warning("could not refresh the token of account %s: %s", acct, exc)
            if expires - now <= WARN_WITHIN:
                day = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%d")
                text = (f"The access token of @{row['username'] or acct} expires on {day} and "
                        f"could not be refreshed ({exc}). Run `instaset connect` before then.")
                await self._notify(f"token-expiring:{acct}:{int(issued)}", acct, text, now)
            return
        # A `disconnect` or deauthorize may have deleted the token while Meta answered: the
        # new one must not bring it back (looked at before and after storing it).
        if not await self._still_connected(acct):
            return
        await self._set(token_key(acct), grant.access_token)
        if not await self._still_connected(acct):
            await self._delete(token_key(acct))
            return
        new_expiry = now + (grant.expires_in or LONG_LIVED)
        await acctstore.set_token_times(self.db, acct, now, new_expiry, now)
        log.info("refreshed the token of account %s; it expires %s", acct, iso_or_none(new_expiry))

    async def _still_connected(self, account_id: str) -> bool:
        row = await history.get_account(self.db, account_id)
        if row is not None and row["state"] != "disconnected":
            return True
        log.info("account %s was disconnected during its token refresh: the new token is "
                 "not kept", account_id)
        return False

    async def mark_reconnect(self, row: sqlite3.Row, why: str, now: float) -> None:
        await acctstore.mark_reconnect_needed(self.db, str(row["id"]), now)
        await self._notify_reconnect(row, why, now)

    async def _notify_reconnect(self, row: sqlite3.Row, why: str, now: float) -> None:
        await enqueue(self.db, [reconnect_notice(row, why, now)], now)


    async def _notify(self, key: str, account_id: str, text: str, now: float) -> None:
        await enqueue(self.db, [notify_job(key, account_id, None, "token", text, now)], now)

    # -- disconnect ------------------------------------------------------------------------
    async def disconnect(self, account_id: str, *, purge: bool) -> DisconnectResult:
        """Unsubscribe (best effort), delete the token, stop automation (state
        ``disconnected``); with ``purge`` delete every row of the account in one transaction."""
        row = await history.get_account(self.db, account_id)
        if row is None:
            raise InstasetError(f"no connected account {account_id}; see `instaset accounts`")
        token = await self._get(token_key(account_id))
        unsubscribed = False
        if token is not None and not row["sandbox"]:
            try:
                await self.graph.unsubscribe(account_id, token=token)
                unsubscribed = True
            except GraphError as exc:
                log.warning("could not unsubscribe account %s (continuing): %s", account_id, exc)
        # The state first, then the token: a token refresh finishing meanwhile sees the
        # account disconnected and drops its new token (see _lifecycle).
        await acctstore.set_disconnected(self.db, account_id, self.clock())
        had = await self._delete(token_key(account_id))
        deleted: dict[str, int] = {}
        if purge:
            async with self.db.tx() as conn:
                deleted = await acctstore.delete_account_data(conn, account_id)
        if had:
            deleted["tokens"] = 1
        return DisconnectResult(account_id, unsubscribed, had, deleted,
                                sandbox=bool(row["sandbox"]))

    # -- Meta's callbacks ------------------------------------------------------------------
    async def deauthorize(self, user_id: str, issued_at: float | None = None) -> list[str]:
        """Remove the tokens of the accounts ``user_id`` names and stop their automation;
        not for an account whose token was issued after ``issued_at`` (the deauthorization
        was about an earlier connection: a late or replayed callback must not undo a
        `connect` made since)."""
        ids = await acctstore.accounts_for_user(self.db, user_id)
        if issued_at is not None:
            newer = await acctstore.connected_after(self.db, ids, issued_at + CLOCK_SKEW)
            if newer:
                log.info("deauthorize callback issued before %d account(s) connected again: "
                         "left connected", len(newer))
            ids = [a for a in ids if a not in newer]
        for acct in ids:  # the state first, then the token (see disconnect)
            await acctstore.set_disconnected(self.db, acct, self.clock())
            await self._delete(token_key(acct))
        log.info("deauthorize callback: %d account(s) disconnected", len(ids))
        return ids

    async def delete_data(self, user_id: str) -> tuple[str, dict[str, int]]:
        """Delete what ``user_id`` names (accounts first, else contacts); keep a receipt.
        Returns ``(confirmation code, {table: rows deleted})``."""
        ids = await acctstore.accounts_for_user(self.db, user_id)
        found = await acctstore.contacts_for_user(self.db, user_id)
        contacts = [c for c in found if c[0] not in ids]
        counts: dict[str, int] = {}
        for acct in ids:  # tokens first: a crash then leaves data but no way to use it
            # (each account disconnected first: a token refresh then drops its new token)
            await acctstore.set_disconnected(self.db, acct, self.clock())
            if await self._delete(token_key(acct)):
                counts["tokens"] = counts.get("tokens", 0) + 1
        code = token_hex(10).upper()
        now = self.clock()
        async with self.db.tx() as conn:
            parts = [await acctstore.delete_account_data(conn, a) for a in ids]
            parts += [await acctstore.delete_contact_data(conn, a, c) for a, c in contacts]
            for part in parts:
                for table, n in part.items():
                    counts[table] = counts.get(table, 0) + n
            matched = "account" if ids else "contact" if contacts else "nothing"
            await acctstore.add_receipt(conn, code, matched, counts, now)
        log.info("data deletion %s: matched %s, deleted %s", code, matched, counts)
        return code, counts


@dataclass(frozen=True, slots=True)
class Connected:
    """A freshly connected account. ``warning`` says what did not work (subscription)."""

    account_id: str
    username: str | None
    app_scoped_id: str | None
    expires_at: float | None
    subscribed: tuple[str, ...]
    warning: str | None = None

    def summary(self) -> str:
        expiry = iso_or_none(self.expires_at) or "unknown (refreshed automatically)"
        text = (f"Instagram account @{self.username or '?'} ({self.account_id}) is connected; "
                f"its token expires {expiry}; webhook fields: {len(self.subscribed)}.")
        return f"{text} Warning: {self.warning}." if self.warning else text


# -- HTTP --------------------------------------------------------------------------------------
def callback_route(service: AccountService) -> web.RouteDef:
    async def callback(request: web.Request) -> web.Response:
        r = await service.handle_callback(request.query)
        return result_page(r.outcome, r.headline, r.detail, r.status)

    return web.get("/oauth/callback", callback)


def meta_routes(service: AccountService) -> list[web.RouteDef]:
    async def signed_user(request: web.Request) -> tuple[str, float] | web.Response:
        try:
            form = await in_time(request, request.post)
        except TimeoutError:
            return too_slow()
        except (ValueError, LookupError, web.RequestPayloadError, HttpProcessingError):
            # A bad charset, a broken multipart part, a body that is not what its
            # Content-Encoding says: the client's fault, answered 400 below.
            form = None
        value = form.get("signed_request") if form is not None else None
        if not isinstance(value, str) or not value:
            return web.json_response({"error": "missing signed_request"}, status=400)
        try:
            payload = parse_signed_request(value, await service.secrets(), now=service.clock())
        except SignedRequestError as exc:
            log.info("signed_request refused on %s: %s", request.path, exc)
            return web.json_response({"error": str(exc)}, status=exc.status)
        # parse_signed_request made both: user_id a str, issued_at a float.
        return str(payload["user_id"]), cast(float, payload["issued_at"])

    async def deauthorize(request: web.Request) -> web.Response:
        signed = await signed_user(request)
        if isinstance(signed, web.Response):
            return signed
        await service.deauthorize(*signed)
        return web.json_response({"success": True})

    async def data_deletion(request: web.Request) -> web.Response:
        signed = await signed_user(request)
        if isinstance(signed, web.Response):
            return signed
        user = signed[0]
        # The status URL is settled before anything is deleted: a Host header it cannot be
        # built from must not leave a deletion done and its receipt unanswered.
        from_host = not service.config.server.public_url
        if from_host and not valid_host(client_view(request).host):
            return web.json_response({"error": "bad Host header"}, status=400)
        try:
            base = external_base_url(request, service.config.server.public_url)
            parsed = yarl.URL(base)
        except ValueError:
            parsed = None
        if (parsed is None or parsed.scheme not in ("http", "https") or not parsed.host
                or (from_host and (" " in base or parsed.path not in ("", "/")
                                   or parsed.query_string or parsed.fragment))):
            return web.json_response({"error": "bad Host header"}, status=400)
        code, _counts = await service.delete_data(user)
        url = f"{base.rstrip('/')}/meta/data-deletion/{code}"
        return web.json_response({"url": url, "confirmation_code": code})

    async def status(request: web.Request) -> web.Response:
        code = request.match_info["code"]
        row = await acctstore.get_receipt(service.db, code) if _CODE.fullmatch(code) else None
        if row is None:
            return not_found_page(code[:64])
        return deletion_status_page(row["code"], row["status"], row["summary"],
                                    row["requested_at"], row["completed_at"])

    return [
        web.post("/meta/deauthorize", deauthorize),
        web.post("/meta/data-deletion", data_deletion),
        web.get("/meta/data-deletion/{code}", status),
    ]


def install(rt: Runtime) -> None:
    """Routes (callback, Meta's callbacks) and the ``refresh_tokens`` job. (A 190 met by a
    send marks the account and notifies in the outbox: :mod:`instaset.token_health`.)"""
    service = AccountService(rt.config, rt.db, rt.graph, clock=rt.clock)
    rt.web.extra_routes.extend([callback_route(service), *meta_routes(service)])
    rt.add_periodic("refresh_tokens", REFRESH_INTERVAL, service.refresh_job)


