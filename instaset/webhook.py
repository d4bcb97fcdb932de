"""The HTTP side of the daemon: Meta's webhook, health and metrics.

``POST /webhook`` contract: the raw bytes are checked against ``X-Hub-Signature-256`` with
either configured secret (constant-time); missing signature 401, wrong 403, nothing stored.
Then the body is parsed (malformed 400), split into events, and the events and their jobs are
committed (group commit) before the 200. Oversized bodies get 413. No input produces a 500:
an unexpected failure while storing answers 503 so that Meta redelivers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from instaset.errors import PayloadError
from instaset.event_heads import event_heads, one_item_body
from instaset.event_values import plausible_time
from instaset.http_body import expect_within, in_time, too_large, too_slow_message, with_expect
from instaset.metrics import Metrics
from instaset.proxy import ProxySettings, forwarded_middleware
from instaset.store import jobs as jobstore
from instaset.store.db import Database
from instaset.store.ingest import EventRow, IngestWriter

log = logging.getLogger("instaset.webhook")


@dataclass
class WebContext:
    """What the HTTP handlers need. ``extra_routes`` lets other features add routes."""

    db: Database
    writer: IngestWriter
    metrics: Metrics
    secrets: Sequence[bytes]
    verify_token: str | None
    max_body_bytes: int = 4 * 1024 * 1024
    started_at: float = field(default_factory=time.time)
    extra_routes: list[web.RouteDef] = field(default_factory=list)
    proxy: ProxySettings = field(default_factory=ProxySettings)  # trusts no proxy by default
    clock: Callable[[], float] = time.time  # the runtime's: what "due now" means
    dropped_logged: dict[str, float] = field(default_factory=dict)  # account -> last log


CTX = web.AppKey("ctx", WebContext)


def signature_ok(raw: bytes, header: str, secrets: Sequence[bytes]) -> bool:
    """True when ``header`` (``sha256=<hex>``) is the HMAC-SHA256 of ``raw`` under any secret."""
    if not header.startswith("sha256="):
        return False
    given = header[7:].strip().lower()
    if len(given) != 64 or not given.isascii():
        return False  # compare_digest refuses non-ASCII text: no hex digest looks like that
    ok = False
    for secret in secrets:
        expected = hmac.new(secret, raw, hashlib.sha256).hexdigest()
        # No short-circuit: every secret is compared, so timing says nothing about which.
        ok = hmac.compare_digest(given, expected) | ok
    return ok


# Meta batches at most 1000 updates per delivery; ten times that is refused unparsed.
MAX_ITEMS = 10_000


def _item_count(payload: object) -> int:
    """Items in a webhook body's entries (a cheap upper bound of its events)."""
    envelopes = payload if isinstance(payload, list) else [payload]
    count = 0
    for envelope in envelopes:
        entries = envelope.get("entry") if isinstance(envelope, dict) else None
        for entry in entries if isinstance(entries, list) else ():
            count += 1
            if isinstance(entry, dict):
                count += sum(len(v) for v in entry.values() if isinstance(v, list))
    return count


def _no_constant(name: str) -> object:
    """``json.loads`` accepts NaN and Infinity, which are not JSON: stored, they would make
    the raw event (and any export of it) invalid JSON."""
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    """A JSON number as a float, refusing one out of a float's range (``1e400``): decoded to
    infinity, it would be stored back as ``Infinity`` (see :func:`_no_constant`)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


# One decoder for every request: json.loads given an option builds a new decoder (and its C
# scanner) per call, a third of the cost of decoding a DM.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)

MAX_DEPTH = 64
"""How deeply a webhook body may nest (Meta's are under 10 levels). Deeper ones are
refused: one accepted near the interpreter's recursion limit could not be read back by
deeper code (``export``, ``workflows replay``)."""


def _too_deep(payload: object, limit: int = MAX_DEPTH) -> bool:
    """Whether ``payload`` nests more than ``limit`` arrays/objects (iteratively)."""
    stack: list[tuple[object, int]] = [(payload, 1)]
    while stack:
        node, depth = stack.pop()
        children = (node.values() if isinstance(node, dict)
                    else node if isinstance(node, list) else ())
        for child in children:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _nests_too_deeply(raw: bytes, payload: object) -> bool:
    # Counting brackets is C-fast; only a body with more of them than the limit is walked.
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False
    return _too_deep(payload)


def _decode_body(raw: bytes) -> object:
    """``json.loads(raw, parse_constant=_no_constant)``: the same encoding detection (UTF-8
    with or without a BOM, UTF-16, UTF-32) and the same errors, with :data:`_DECODER`."""
    return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


def storable(raw: str) -> str:
    """``raw`` as a UTF-8 text column can hold it. JSON may carry a lone surrogate escape
    (``\\ud800``, half of an emoji cut off) that UTF-8 cannot encode: it becomes U+FFFD in
    that event only. Refusing the delivery instead would lose every other event in it, for
    good: Meta redelivers the same bytes."""
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        return raw.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return raw


def _reject(ctx: WebContext, status: int, reason: str, text: str) -> web.Response:
    ctx.metrics.rejections.labels(reason).inc()
    ctx.metrics.webhook_requests.labels(str(status)).inc()
    log.info("webhook rejected: %s (%d)", reason, status)
    return web.json_response({"error": text}, status=status)


_CHALLENGE = re.compile(r"[A-Za-z0-9._~-]{1,256}", re.ASCII)


async def verify(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    q = request.query
    token = q.get("hub.verify_token", "")
    challenge = q.get("hub.challenge", "")
    expected = ctx.verify_token
    if (
        q.get("hub.mode") == "subscribe"
        and expected
        and hmac.compare_digest(token.encode(), expected.encode())
        # Meta's challenge is opaque (a number, or e.g. CHALLENGE_ACCEPTED in its examples):
        # any URI-unreserved text is echoed; nothing that could be markup is (XSS).
        and _CHALLENGE.fullmatch(challenge) is not None
    ):
        return web.Response(text=challenge, content_type="text/plain",
                            headers={"X-Content-Type-Options": "nosniff"})
    return web.Response(status=403, text="verification failed", content_type="text/plain")


async def receive(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    if request.content_length is not None and request.content_length > ctx.max_body_bytes:
        return _reject(ctx, 413, "too_large", "body too large")
    try:
        raw = await in_time(request, request.read)
    except TimeoutError:
        resp = _reject(ctx, 408, "slow_body", too_slow_message())
        resp.force_close()
        return resp
    except web.HTTPRequestEntityTooLarge:
        return _reject(ctx, 413, "too_large", "body too large")
    except (web.RequestPayloadError, HttpProcessingError) as exc:
        # A body that is not what its Content-Encoding says, or one cut short. The rest of
        # the stream cannot be read either: answer, then close the connection.
        resp = _reject(ctx, 400, "malformed", f"unreadable body: {type(exc).__name__}")
        resp.force_close()
        return resp
    if not ctx.secrets:
        return _reject(ctx, 403, "no_secret", "no app secret configured; set instagram.app_secret")
    header = request.headers.get("X-Hub-Signature-256")
    if not header:
        return _reject(ctx, 401, "missing_signature", "missing X-Hub-Signature-256")
    if not signature_ok(raw, header, ctx.secrets):
        return _reject(ctx, 403, "bad_signature", "signature does not match")
    try:
        payload = _decode_body(raw)
        if _nests_too_deeply(raw, payload):
            return _reject(ctx, 400, "malformed",
                           f"malformed payload: nested more than {MAX_DEPTH} levels deep")
        # An item takes two bytes at least ("0,"): a smaller body cannot hold too many.
        if len(raw) > 2 * MAX_ITEMS and _item_count(payload) > MAX_ITEMS:
            # Parsing runs on the event loop: a huge signed body must not stall it.
            return _reject(ctx, 413, "too_many_items",
                           f"more than {MAX_ITEMS} events in one delivery")
        # Only what is stored: the worker parses each stored event in full later. A body
        # of one item is stored as it came (no re-serialisation).
        body = one_item_body(payload, raw)
        events = event_heads(payload, body=body)
    except (ValueError, RecursionError, PayloadError) as exc:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors.
        return _reject(ctx, 400, "malformed", f"malformed payload: {str(exc)[:200]}")
    arrived = ctx.clock()
    rows = [
        EventRow(e.dedupe_key, e.account_id, str(e.kind), e.contact_id,
                 plausible_time(e.occurred_at, arrived),
                 e.raw if e.raw is body else storable(e.raw))
        for e in events
    ]
    try:
        result = await ctx.writer.submit(rows)
    except Exception as exc:  # storage trouble is ours, not Meta's: ask for a redelivery
        log.error("could not store %d events: %s", len(rows), exc)
        return _reject(ctx, 503, "storage_error", "temporarily unavailable")
    for e in events:
        ctx.metrics.event_counter(e.kind).inc()
    if result.stored < len(rows):
        ctx.metrics.duplicates.inc(len(rows) - result.stored - result.dropped)
        if result.dropped:
            _dropped(ctx, result.dropped, result.unconnected)
    ctx.metrics.webhook_ok.inc()
    return web.Response(text="EVENT_RECEIVED", content_type="text/plain")


DROPPED_LOG_EVERY = 600.0  # seconds between two log lines about the same account


def _dropped(ctx: WebContext, count: int, accounts: Sequence[str]) -> None:
    """Events of accounts that are not connected were acknowledged and not stored (Meta's
    dashboard test sample, whose account id is 0, or a misconnection): counted, and logged
    once per account every :data:`DROPPED_LOG_EVERY` seconds."""
    ctx.metrics.dropped.inc(count)
    now = ctx.clock()
    last = ctx.dropped_logged
    loud = [a for a in accounts if a not in last or now - last[a] >= DROPPED_LOG_EVERY]
    last.update(dict.fromkeys(loud, now))
    if loud:
        log.info("webhook: %d event(s) for account %s dropped: not connected here "
                 "(a dashboard test sample, or connect it with `instaset connect`)",
                 count, ", ".join(loud))


async def healthz(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    body: dict[str, object] = {"status": "ok", "uptime_s": round(time.time() - ctx.started_at, 1)}
    try:
        counts = await jobstore.counts_by_state(ctx.db)
        rows = await ctx.db.fetchall("SELECT id, username, state FROM accounts ORDER BY id")
        body["database"] = "ok"
        body["queue_depth"] = await jobstore.queue_depth(ctx.db, ctx.clock())
        body["staged_events"] = ctx.writer.backlog  # acknowledged, not yet in events
        body["jobs"] = counts
        body["accounts"] = [
            {"id": r["id"], "username": r["username"], "state": r["state"]} for r in rows
        ]
    except Exception as exc:
        body.update(status="degraded", database=f"error: {type(exc).__name__}")
        return web.json_response(body, status=503)
    return web.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    counts = await jobstore.counts_by_state(ctx.db)
    for state, n in counts.items():
        ctx.metrics.jobs.labels(state).set(n)
    ctx.metrics.queue_depth.set(await jobstore.queue_depth(ctx.db, ctx.clock()))
    ctx.metrics.staged_events.set(ctx.writer.backlog)
    return web.Response(
        body=ctx.metrics.render(), content_type="text/plain", charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def never_500(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Last line of defence: an unexpected error answers 503 (retry later), never a 500; a
    client that dropped the connection is logged as such (one line), not as our error."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        transport = request.transport
        if isinstance(exc, ConnectionResetError) and (transport is None
                                                      or transport.is_closing()):
            # The client went away mid-request (a body cut short): nobody is left to
            # answer, and it is no error of ours. (A reset of another connection, an
            # outbound call's, is ours: below.)
            log.info("%s %s: the client closed the connection", request.method,
                     request.path)
            return web.Response(status=400, text="connection lost")
        log.exception("unexpected error on %s %s", request.method, request.path)
        return web.json_response({"error": "temporarily unavailable"}, status=503)


def make_app(ctx: WebContext) -> web.Application:
    # client_max_size makes aiohttp refuse bigger bodies with 413 before we buffer them.
    app = web.Application(
        client_max_size=ctx.max_body_bytes,
        # Forwarded headers first, so every handler sees the client's address and scheme.
        middlewares=[forwarded_middleware(ctx.proxy), never_500],
    )
    app[CTX] = ctx
    limit = ctx.max_body_bytes

    def refuse_webhook(request: web.Request) -> web.Response:
        return _reject(ctx, 413, "too_large", "body too large")

    bodies = expect_within(limit, too_large)
    app.add_routes(
        [
            web.get("/webhook", verify),
            web.post("/webhook", receive, expect_handler=expect_within(limit, refuse_webhook)),
            web.get("/healthz", healthz),
            web.get("/metrics", metrics),
            # Every other route that takes a body refuses an oversized one before reading it.
            *(with_expect(r, bodies) if r.method not in ("GET", "HEAD") else r
              for r in ctx.extra_routes),
        ]
    )
    return app
