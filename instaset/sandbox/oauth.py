"""Business Login for the sandbox: the authorize page, single-use codes, and the token
endpoints (code exchange, long-lived exchange, refresh), with Meta's two error envelopes."""

from __future__ import annotations

import html
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode

from aiohttp import web

from instaset.sandbox.wire import graph_error, oauth_error

SHORT_TTL = 3600.0
LONG_TTL = 60 * 86400.0
CODE_TTL = 3600.0
REFRESH_MIN_AGE = 86400.0  # "the token must be at least 24 h old" (reference §1.6)
BASIC = "instagram_business_basic"
MESSAGES = "instagram_business_manage_messages"
COMMENTS = "instagram_business_manage_comments"
DEFAULT_SCOPES = (BASIC, MESSAGES)
# Business Login's scopes (reference §1.3). The old names (business_basic, ...) were
# deprecated on 2025-01-27 and are refused like any unknown name.
VALID_SCOPES = frozenset({
    BASIC, MESSAGES, COMMENTS, "instagram_business_content_publish",
    "instagram_business_manage_insights",
})
# What the sandbox's own token (``Sandbox.token``, a dashboard-generated token) carries.
ALL_MESSAGING_SCOPES = (BASIC, MESSAGES, COMMENTS)

TokenKind = Literal["short", "long"]


@dataclass(slots=True)
class TokenInfo:
    kind: TokenKind
    issued_at: float
    expires_at: float
    scopes: tuple[str, ...] = ALL_MESSAGING_SCOPES


@dataclass(frozen=True, slots=True)
class CodeInfo:
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    issued_at: float


class TokenBook:
    """Which tokens are valid right now. A token is valid until it expires or is revoked;
    refreshing issues a new token and leaves the old one valid until its own expiry."""

    def __init__(
        self,
        clock: Callable[[], float],
        initial_token: str,
        scopes: tuple[str, ...] = ALL_MESSAGING_SCOPES,
    ) -> None:
        self._clock = clock
        self.tokens: dict[str, TokenInfo] = {}
        self.revoked: set[str] = set()
        self.codes: dict[str, CodeInfo] = {}
        now = clock()
        self.tokens[initial_token] = TokenInfo("long", now, now + LONG_TTL, scopes)

    def now(self) -> float:
        return self._clock()

    def problem(self, token: str | None) -> web.Response | None:
        """None when ``token`` may be used; else Meta's error answer."""
        if not token:
            return graph_error(
                400,
                2500,
                "An active access token must be used to query information about the current user.",
            )
        if token in self.revoked:
            return graph_error(
                400,
                190,
                "Error validating access token: The session has been invalidated because the "
                "user changed their password or Facebook has changed the session for security "
                "reasons.",
                subcode=460,
            )
        info = self.tokens.get(token)
        if info is None:
            return graph_error(400, 190, "Invalid OAuth access token - Cannot parse access token")
        if self._clock() >= info.expires_at:
            return graph_error(
                400, 190, "Error validating access token: Session has expired.", subcode=463
            )
        return None

    def lacks(self, token: str | None, scope: str) -> web.Response | None:
        """None when the (valid) ``token`` was granted ``scope``; else Meta's code 10 with no
        subcode, "Permission denied" (reference §5.4, a real diagnostic). The HTTP status is
        not in the reference: 403, as for the other code-10 answer there [unverified]."""
        info = self.tokens.get(token or "")
        if info is None or scope in info.scopes:
            return None
        return graph_error(
            403, 10, f"(#10) Permission denied: the token lacks {scope}", type="IGApiException"
        )

    def mint(self, kind: TokenKind, scopes: tuple[str, ...]) -> tuple[str, TokenInfo]:
        now = self._clock()
        token = f"IGAAsandbox{'S' if kind == 'short' else 'L'}{secrets.token_urlsafe(24)}"
        info = TokenInfo(kind, now, now + (SHORT_TTL if kind == "short" else LONG_TTL), scopes)
        self.tokens[token] = info
        return token, info

    def revoke(self, token: str | None = None) -> None:
        """Revoke one token, or every token issued so far (new OAuth grants still work)."""
        victims = [token] if token is not None else list(self.tokens)
        for t in victims:
            self.tokens.pop(t, None)
            self.revoked.add(t)

    def issue_code(self, client_id: str, redirect_uri: str, scopes: tuple[str, ...]) -> str:
        code = "AQ" + secrets.token_urlsafe(32)
        self.codes[code] = CodeInfo(client_id, redirect_uri, scopes, self._clock())
        return code


def needed_scope(
    segs: list[str], body: object, node_type: Callable[[str], str | None]
) -> str | None:
    """The scope a Graph call needs beyond ``instagram_business_basic`` (reference §4.4, §7,
    §8): messaging and its reads need manage_messages; comments, their replies and private
    replies manage_comments. ``segs`` is the path without its version; ``node_type`` names
    what ``/{id}`` is (instaset.sandbox.fields schema names)."""
    edge = segs[1] if len(segs) == 2 else None
    node = node_type(segs[0]) if len(segs) == 1 else None
    if edge == "messages":
        recipient = body.get("recipient") if isinstance(body, Mapping) else None
        private = isinstance(recipient, Mapping) and "comment_id" in recipient
        return COMMENTS if private else MESSAGES
    if edge == "replies" or node == "IGComment":
        return COMMENTS
    if edge in ("conversations", "messenger_profile") or node in (
        "IGConversation", "IGMessage", "IGUserProfile"
    ):
        return MESSAGES
    return None


def _page(title: str, body: str, status: int = 200) -> web.Response:
    doc = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body>{body}</body></html>"
    )
    return web.Response(text=doc, status=status, content_type="text/html")


def scope_problem(raw: str) -> str | None:
    """Why the ``scope`` list ``raw`` (comma- or space-separated) cannot be granted, or None.

    Meta's answer to a bad scope is not in the reference [unverified]; this mirrors Facebook
    Login's dialog ("Invalid Scopes: ...") on an error page, and refuses a list without the
    required ``instagram_business_basic`` (reference §1.3) the same way."""
    names = [s for s in raw.replace(" ", ",").split(",") if s]
    bad = [n for n in names if n not in VALID_SCOPES]
    if bad:
        return f"Invalid Scopes: {', '.join(bad)}"
    if names and BASIC not in names:
        return f"Invalid Scopes: {BASIC} is required"
    return None


def _redirect(uri: str, params: Mapping[str, str], fragment: str = "") -> web.Response:
    sep = "&" if "?" in uri else "?"
    location = uri + sep + urlencode({k: v for k, v in params.items() if v}) + fragment
    return web.Response(status=302, headers={"Location": location})


class OAuthRoutes:
    """The OAuth handlers. ``params`` passed to each is the merged query + form fields."""

    def __init__(
        self,
        book: TokenBook,
        *,
        app_secret: str,
        app_user_id: str,
        shape: Callable[[], Literal["data", "flat"]],
    ) -> None:
        self.book = book
        self.app_secret = app_secret
        self.app_user_id = app_user_id
        self._shape = shape

    def authorize(self, params: Mapping[str, str]) -> web.Response:
        """``GET /oauth/authorize``: the consent page with an Allow and a Deny link."""
        missing = [
            p for p in ("client_id", "redirect_uri", "response_type", "scope") if not params.get(p)
        ]
        if missing or params.get("response_type") != "code":
            why = f"missing {', '.join(missing)}" if missing else "response_type must be code"
            return _page("Invalid request", f"<p id='error'>Invalid request: {why}</p>", 400)
        bad_scope = scope_problem(params["scope"])
        if bad_scope is not None:
            return _page("Invalid request", f"<p id='error'>{html.escape(bad_scope)}</p>", 400)
        keep = {
            k: params[k] for k in ("client_id", "redirect_uri", "scope", "state") if k in params
        }
        query = html.escape(urlencode(keep), quote=True)
        scopes = html.escape(params["scope"])
        return _page(
            "Allow access",
            f"<h1>instaset sandbox</h1><p>The app {html.escape(params['client_id'])} asks for: "
            f"{scopes}</p>"
            f"<p><a id='allow' href='/oauth/authorize/allow?{query}'>Allow</a> "
            f"<a id='deny' href='/oauth/authorize/deny?{query}'>Deny</a></p>",
        )

    def decide(self, params: Mapping[str, str], allow: bool) -> web.Response:
        """The user's click: redirect to ``redirect_uri`` with a code (plus Meta's ``#_``) or
        with ``error=access_denied``. ``state`` is echoed either way."""
        uri = params.get("redirect_uri", "")
        if not uri.startswith(("http://", "https://")):
            return _page("Invalid request", "<p id='error'>redirect_uri is missing</p>", 400)
        state = params.get("state", "")
        if not allow:
            return _redirect(
                uri,
                {
                    "error": "access_denied",
                    "error_reason": "user_denied",
                    "error_description": "The user denied your request",
                    "state": state,
                },
            )
        bad_scope = scope_problem(params.get("scope", ""))
        if bad_scope is not None:
            return _page("Invalid request", f"<p id='error'>{html.escape(bad_scope)}</p>", 400)
        raw_scopes = params.get("scope", "").replace(" ", ",")
        scopes = tuple(s for s in raw_scopes.split(",") if s) or DEFAULT_SCOPES
        code = self.book.issue_code(params.get("client_id", ""), uri, scopes)
        return _redirect(uri, {"code": code, "state": state}, "#_")

    def access_token(self, params: Mapping[str, str]) -> web.Response:
        """``POST /oauth/access_token``: code -> short-lived token. Codes work once."""
        for name in ("client_id", "client_secret", "grant_type", "redirect_uri", "code"):
            if not params.get(name):
                return oauth_error(f"Missing required parameter: {name}")
        if params["grant_type"] != "authorization_code":
            return oauth_error("Invalid grant_type: must be authorization_code")
        if params["client_secret"] != self.app_secret:
            return oauth_error("Error validating client secret.")
        code = params["code"].removesuffix("#_")
        info = self.book.codes.get(code)
        now = self.book.now()
        if info is None or now - info.issued_at > CODE_TTL:
            return oauth_error("Matching code was not found or was already used")
        if info.redirect_uri != params["redirect_uri"] or info.client_id != params["client_id"]:
            return oauth_error(
                "Error validating verification code. Please make sure your redirect_uri is "
                "identical to the one you used in the OAuth dialog request"
            )
        del self.book.codes[code]
        token, _ = self.book.mint("short", info.scopes)
        if self._shape() == "flat":
            return web.json_response(
                {
                    "access_token": token,
                    "user_id": int(self.app_user_id),
                    "permissions": list(info.scopes),
                }
            )
        item = {
            "access_token": token,
            "user_id": self.app_user_id,
            "permissions": ",".join(info.scopes),
        }
        return web.json_response({"data": [item]})

    def exchange(self, params: Mapping[str, str], token: str | None) -> web.Response:
        """``GET /access_token?grant_type=ig_exchange_token``: short -> long-lived."""
        if params.get("grant_type") != "ig_exchange_token":
            return graph_error(400, 100, "(#100) grant_type must be ig_exchange_token")
        if params.get("client_secret") != self.app_secret:
            return graph_error(400, 100, "Error validating client secret.")
        problem = self.book.problem(token)
        if problem is not None:
            return problem
        new, _ = self.book.mint("long", self.book.tokens[token or ""].scopes)
        return web.json_response(
            {"access_token": new, "token_type": "bearer", "expires_in": int(LONG_TTL)}
        )

    def refresh(self, params: Mapping[str, str], token: str | None) -> web.Response:
        """``GET /refresh_access_token?grant_type=ig_refresh_token``: long -> new long."""
        if params.get("grant_type") != "ig_refresh_token":
            return graph_error(400, 100, "(#100) grant_type must be ig_refresh_token")
        problem = self.book.problem(token)
        if problem is not None:
            return problem
        assert token is not None
        info = self.book.tokens[token]
        if info.kind != "long":
            return graph_error(400, 100, "(#100) Only long-lived tokens can be refreshed")
        if self.book.now() - info.issued_at < REFRESH_MIN_AGE:
            # Reference §1.6 gives the rule, not Meta's answer [unverified]: a code-100
            # refusal, which clients classify as an invalid request (not a dead token).
            return graph_error(
                400, 100, "(#100) The access token must be at least 24 hours old to be refreshed",
                type="IGApiException",
            )
        new, _ = self.book.mint("long", info.scopes)
        return web.json_response(
            {"access_token": new, "token_type": "bearer", "expires_in": int(LONG_TTL)}
        )
