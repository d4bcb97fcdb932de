"""Meta's answers as typed errors: response checking, usage headers, redaction.

Contract: :func:`check_response` is the one place where Meta's answers become typed
:class:`~instaset.errors.GraphError` subclasses. :class:`~instaset.graph.GraphClient` and the
sandbox tests both go through it, so the mapping is exercised by every call. Messages are
scrubbed of anything token-shaped (:func:`redact`) before they reach an exception.

This module does no I/O; :mod:`instaset.graph` re-exports its public names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from instaset.errors import (
    AlreadyReplied,
    GraphError,
    InvalidParameter,
    PermissionMissing,
    Throttled,
    TokenInvalid,
    Transient,
    UserUnavailable,
    WindowClosed,
)

THROTTLE_CODES = frozenset({4, 17, 32, 613, 80002})
THROTTLE_SUBCODES = frozenset({1349210, 1349211, 1349212})
WINDOW_SUBCODES = frozenset({2534022, 2018278})
TRANSIENT_CODES = frozenset({1, 2})

_WINDOW_MESSAGE = re.compile(r"allowed window|outside (of )?(the )?(allowed |messaging )?window")
# Token-looking strings: Instagram user tokens (IGAA/IGAB/IGQV...) and Facebook tokens (EAA...).
_TOKENISH = re.compile(r"\b(?:IG[A-Z]{2}|EAA)[A-Za-z0-9_\-]{16,}")
# Query (or form) values that are secrets, as a URL Meta echoes in an error message carries
# them: plain or percent-encoded ("access_token%3D..."), whatever the case. The value runs to
# the next separator or closing bracket (a URL quoted in (), [] or {} keeps its bracket);
# percent-encoded, possibly further (more is hidden, never less).
_SECRET_PARAM = re.compile(
    r"((?:access_token|client_secret|appsecret_proof|fb_exchange_token|input_token"
    r"|refresh_token)(?:=|%3D))[^&\s\"'<>(),;\]}]+", re.IGNORECASE)
_USAGE_KEYS = ("call_count", "total_cputime", "total_time", "call_volume", "cpu_time")


# --------------------------------------------------------------------------------------------
# Usage headers


@dataclass(frozen=True, slots=True)
class Usage:
    """Rate-limit usage in percent (throttling starts at 100) and Meta's estimate, in seconds,
    of when access comes back. ``None`` where the headers did not say."""

    app_pct: float | None
    buc_pct: float | None
    regain_seconds: float | None

    @property
    def max_pct(self) -> float:
        return max(self.app_pct or 0.0, self.buc_pct or 0.0)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that also works on plain dicts."""
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    for key, val in headers.items():
        if key.lower() == lower:
            return val
    return None


def _num(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _max_usage(obj: Mapping[str, object]) -> float | None:
    values = [v for k in _USAGE_KEYS if (v := _num(obj.get(k))) is not None]
    return max(values) if values else None


def _load_header_json(headers: Mapping[str, str], name: str) -> object:
    raw = _header(headers, name)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def parse_usage(headers: Mapping[str, str]) -> Usage | None:
    """Read ``X-App-Usage`` and ``X-Business-Use-Case-Usage`` leniently: the highest of the
    known percentage keys wins, unknown keys and malformed JSON are ignored. ``None`` when
    neither header carries anything usable."""
    app_pct: float | None = None
    buc_pct: float | None = None
    regain_min: float | None = None
    app = _load_header_json(headers, "X-App-Usage")
    if isinstance(app, Mapping):
        app_pct = _max_usage(app)
    buc = _load_header_json(headers, "X-Business-Use-Case-Usage")
    if isinstance(buc, Mapping):
        for entries in buc.values():
            items = entries if isinstance(entries, list) else [entries]
            for item in items:
                if not isinstance(item, Mapping):
                    continue
                pct = _max_usage(item)
                if pct is not None:
                    buc_pct = pct if buc_pct is None else max(buc_pct, pct)
                regain = _num(item.get("estimated_time_to_regain_access"))
                if regain is not None:
                    regain_min = regain if regain_min is None else max(regain_min, regain)
    if app_pct is None and buc_pct is None and regain_min is None:
        return None
    return Usage(app_pct, buc_pct, regain_min * 60.0 if regain_min is not None else None)


# --------------------------------------------------------------------------------------------
# Response checking


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """Remove anything token-like (and the given secrets) from ``text``: token-shaped
    strings, and the values of secret query parameters (``access_token=``,
    ``client_secret=``, ``appsecret_proof=`` ...) as in a URL Meta echoes."""
    for secret in secrets:
        if len(secret) >= 6:  # shorter values are not secrets worth mangling messages for
            text = text.replace(secret, "***")
    text = _SECRET_PARAM.sub(r"\1***", text)
    return _TOKENISH.sub("***", text)


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _classify(
    *,
    message: str,
    code: int | None,
    subcode: int | None,
    status: int,
    is_transient: bool,
    fbtrace_id: str | None,
    usage: Usage | None,
) -> GraphError:
    """Map one Graph error to its class. Order matters: throttling first (it is retryable
    whatever else is said), then the final classes, then transient, then the catch-alls."""

    def make(cls: type[GraphError], text: str) -> GraphError:
        return cls(text, code=code, subcode=subcode, status=status, fbtrace_id=fbtrace_id)

    # HTTP 429 is Meta's rate limiting whatever code its body carries.
    if code in THROTTLE_CODES or subcode in THROTTLE_SUBCODES or status == 429:
        retry = usage.regain_seconds if usage is not None and usage.regain_seconds else None
        return Throttled(
            f"rate limited by Meta{' (HTTP 429)' if status == 429 else ''}: {message}",
            retry_after=retry,
            code=code,
            subcode=subcode,
            status=status,
            fbtrace_id=fbtrace_id,
        )
    if code == 190:
        return make(
            TokenInvalid,
            f"the access token is invalid or expired ({message}); "
            "reconnect the account with `instaset connect`",
        )
    if code == 10 and (subcode in WINDOW_SUBCODES or _WINDOW_MESSAGE.search(message.lower())):
        return make(WindowClosed, f"messaging window is closed: {message}")
    if code == 551:
        return make(UserUnavailable, f"this person cannot be messaged: {message}")
    if code == 10900:
        return make(AlreadyReplied, f"the comment already has its private reply: {message}")
    if is_transient or code in TRANSIENT_CODES:
        return make(Transient, f"temporary Meta error: {message}")
    if code == 10 or (code is not None and 200 <= code <= 299):
        return make(PermissionMissing, f"the app lacks a permission or access level: {message}")
    if code == 100:
        return make(InvalidParameter, f"Meta rejected the request: {message}")
    if status >= 500:
        return make(Transient, f"Meta server error: {message}")
    return make(GraphError, f"Meta API error: {message}")


def check_response(
    status: int,
    body: object,
    headers: Mapping[str, str],
    *,
    throttle_on_success: bool = True,
    secrets: Sequence[str] = (),
) -> None:
    """Raise the typed :class:`GraphError` for a Meta answer, or return for a usable success.

    Recognises the Graph envelope ``{"error": {message, type, code, error_subcode, fbtrace_id,
    is_transient}}`` and the OAuth envelope ``{"error_type", "code", "error_message"}``. A
    success whose usage headers report 100 % raises :class:`Throttled` too, unless
    ``throttle_on_success`` is False (the client passes False for sends: the message went out,
    raising would invite a duplicate). ``secrets`` are scrubbed from messages in addition to
    anything token-shaped.
    """
    usage = parse_usage(headers)
    err = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(err, Mapping):
        raw_msg = err.get("message") or err.get("error_user_msg") or "no message"
        raise _classify(
            message=redact(str(raw_msg)[:500], secrets),
            code=_int(err.get("code")),
            subcode=_int(err.get("error_subcode")),
            status=status,
            is_transient=err.get("is_transient") is True,
            fbtrace_id=str(err["fbtrace_id"]) if err.get("fbtrace_id") else None,
            usage=usage,
        )
    if isinstance(body, Mapping) and ("error_type" in body or "error_message" in body):
        raise _oauth_error(status, body, usage, secrets)
    if isinstance(body, Mapping) and isinstance(err, str):
        # RFC 6749 style {"error": "invalid_request", "error_description": ...}
        desc = body.get("error_description") or err
        raise _oauth_error(
            status, {"error_type": err, "error_message": desc, "code": status}, usage, secrets
        )
    if status >= 500:
        raise Transient(f"Meta server error (HTTP {status})", status=status)
    if status == 429:
        retry = usage.regain_seconds if usage is not None else None
        raise Throttled("rate limited by Meta (HTTP 429)", retry_after=retry, status=status)
    if not 200 <= status < 300:
        raise GraphError(f"unexpected answer from Meta (HTTP {status})", status=status)
    if throttle_on_success and usage is not None and usage.max_pct >= 100:
        raise Throttled(
            f"rate limit usage is at {usage.max_pct:g} %",
            retry_after=usage.regain_seconds or None,
            status=status,
        )


def _oauth_error(
    status: int, body: Mapping[str, object], usage: Usage | None, secrets: Sequence[str]
) -> GraphError:
    message = redact(str(body.get("error_message") or body.get("error_type") or "")[:500], secrets)
    code = _int(body.get("code"))
    # The OAuth envelope's ``code`` mirrors the HTTP status (400); a real Graph code still wins.
    if code is not None and (code < 400 or code > 599):
        return _classify(
            message=message,
            code=code,
            subcode=None,
            status=status,
            is_transient=False,
            fbtrace_id=None,
            usage=usage,
        )
    effective = code or status
    if effective >= 500 or status >= 500:
        return Transient(f"Meta OAuth server error: {message}", code=code, status=status)
    if effective == 429:
        return Throttled(f"rate limited by Meta OAuth: {message}", code=code, status=status)
    return InvalidParameter(f"Meta OAuth error: {message}", code=code, status=status)


__all__ = [
    "THROTTLE_CODES",
    "THROTTLE_SUBCODES",
    "TRANSIENT_CODES",
    "WINDOW_SUBCODES",
    "Usage",
    "check_response",
    "parse_usage",
    "redact",
]
