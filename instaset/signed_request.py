"""Meta's ``signed_request`` (the deauthorize and data-deletion callbacks): verify and decode.

Contract: :func:`parse_signed_request` returns the payload only when its HMAC-SHA256
signature matches one of the app secrets (all are compared, in constant time), and raises
:class:`SignedRequestError` with the HTTP status to answer otherwise (400 malformed, 403
refused). Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from collections.abc import Sequence

from instaset.errors import InstasetError

# Clocks differ: an issued_at up to this far ahead of ours is still a past time, and a
# deauthorization this close to a token's issue may predate it.
CLOCK_SKEW = 300.0
MAX_SIGNED_REQUEST = 8192
_B64URL = re.compile(r"[A-Za-z0-9_\-]+=*")


class SignedRequestError(InstasetError):
    """A ``signed_request`` that is refused; ``status`` is 400 (malformed) or 403."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def _b64url(text: str) -> bytes:
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    stripped = text.rstrip("=")
    return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))


def parse_signed_request(
    value: str, keys: Sequence[bytes], *, now: float, max_age: float | None = None,
) -> dict[str, object]:
    """Verify Meta's ``<base64url sig>.<base64url payload>`` and return the payload, with
    ``user_id`` as a string and ``issued_at`` as a float. Raises :class:`SignedRequestError`
    (400 or 403): also for an ``issued_at`` in the future, or older than ``max_age`` when
    one is given."""
    if not keys:
        raise SignedRequestError(403, "no app secret is configured")
    parts = value.strip().split(".")
    if len(value) > MAX_SIGNED_REQUEST or len(parts) != 2 or not all(parts):
        raise SignedRequestError(400, "signed_request is not <signature>.<payload>")
    sig_text, payload_text = parts
    try:
        signature = _b64url(sig_text)
        payload = json.loads(_b64url(payload_text))
    except (ValueError, binascii.Error, RecursionError):
        raise SignedRequestError(400, "signed_request is not base64url-encoded JSON") from None
    if not isinstance(payload, dict):
        raise SignedRequestError(400, "the signed_request payload is not an object")
    algorithm = payload.get("algorithm")
    if not isinstance(algorithm, str) or algorithm.upper() != "HMAC-SHA256":
        raise SignedRequestError(400, "unsupported signed_request algorithm")
    ok = False
    for secret in keys:  # every secret is compared: timing says nothing about which
        expected = hmac.new(secret, payload_text.encode(), hashlib.sha256).digest()
        ok = hmac.compare_digest(signature, expected) | ok
    if not ok:
        raise SignedRequestError(403, "signed_request signature does not match")
    issued = payload.get("issued_at")
    if isinstance(issued, bool) or not isinstance(issued, int | float):
        raise SignedRequestError(400, "signed_request has no issued_at")
    try:
        issued = float(issued)
    except OverflowError:
        raise SignedRequestError(400, "signed_request issued_at is out of range") from None
    # NaN compares false with everything: it would pass every check below.
    if not math.isfinite(issued) or issued - now > CLOCK_SKEW:
        raise SignedRequestError(403, "signed_request issued_at is not a past time")
    if max_age is not None and now - issued > max_age:
        raise SignedRequestError(403, "signed_request is stale (issued_at too old)")
    payload["issued_at"] = issued
    user = payload.get("user_id")
    if isinstance(user, bool) or not isinstance(user, str | int) or not str(user).strip():
        raise SignedRequestError(400, "signed_request has no user_id")
    if not str(user).strip().isascii():  # Meta's ids are digits; "\ud800" cannot be stored
        raise SignedRequestError(400, "signed_request user_id is not an id")
    payload["user_id"] = str(user).strip()
    return payload
