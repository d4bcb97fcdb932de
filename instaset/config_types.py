"""The reusable field types of ``config.yaml``'s models (:mod:`instaset.config_models`,
:mod:`instaset.config_booking`): durations, secrets, URLs that may hold a credential, and
the base of every section's model."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    WithJsonSchema,
)

from instaset.timefmt import DURATION_PATTERN, format_duration, parse_duration

# ---------------------------------------------------------------------------------------------
# Reusable field types
# ---------------------------------------------------------------------------------------------

Duration = Annotated[
    timedelta,
    PlainValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "number", "minimum": 0},
            ],
            "description": "A duration: '30s', '15m', '12h', '7d', '2w', or seconds.",
            "examples": ["30s", "15m", "12h", "7d"],
        }
    ),
]
"""A :class:`timedelta` written as ``"12h"`` etc. in YAML; serialises back to that form."""


def _mask(secret: SecretStr) -> str:
    return "***" if secret.get_secret_value() else ""


Secret = Annotated[SecretStr, PlainSerializer(_mask, return_type=str, when_used="json")]
"""A secret string; never serialised to JSON in clear."""


def mask_url(url: str) -> str:
    """``url`` as ``scheme://host/…``: without its path, query and user info, which may be a
    credential (a Telegram bot token, a Slack or Discord webhook path). The host is kept as
    written (a port too, even a wrong one; IPv6 in brackets); ``/…`` stands for whatever
    followed it. Never raises: a URL ``urlsplit`` cannot read (``http://[::1``), or one with
    no scheme or host, is ``(a URL)``; ``""`` stays ``""``. Used for ``config show``, the
    notifier's errors and ``doctor``."""
    if not url:
        return ""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return "(a URL)"
    host = parts.netloc.rpartition("@")[2]  # as written, no user info
    if not parts.scheme or not host:
        return "(a URL)"
    rest = "/…" if parts.path.strip("/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{host}{rest}"


SecretUrl = Annotated[str, PlainSerializer(mask_url, return_type=str, when_used="json")]
"""A URL that may hold a credential: serialised to JSON (``config show``) as
:func:`mask_url` shows it."""


class ConfigModel(BaseModel):
    """A section of the config: frozen, and strict about keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)
