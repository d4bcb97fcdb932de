"""Checks of config values that must hold as the code using them reads them: URLs parsed
as ``urlsplit`` parses them, email addresses as the notifier's email header parses them.

Contract: each ``*_problem`` function returns None for a good value, else the reason in
words with the fix (the config models raise it, located at the key's line); none raises.
"""

from __future__ import annotations

import email.policy
import re
from email.message import EmailMessage
from email.utils import getaddresses
from urllib.parse import urlsplit

__all__ = [
    "API_VERSION_PATTERN",
    "base_url_problem",
    "booking_link_problem",
    "email_address_problem",
    "webhook_url_problem",
]

API_VERSION_PATTERN = r"v\d+\.\d+"
"""A Graph API version as Meta names it (``v25.0``): every Graph call's path starts with it,
and Meta (like the sandbox) answers any other first segment with "Unknown path components"."""


def webhook_url_problem(url: str) -> str | None:
    """Why ``url`` cannot take a notification's JSON POST (None: it can). The message never
    repeats the URL: a chat webhook's URL carries its token."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return "webhook_url is not a valid URL (check the host and the port)"
    if parts.scheme not in ("http", "https") or not parts.hostname or any(
            c.isspace() for c in url.strip()):
        return ("webhook_url must be an http(s) URL without spaces, e.g."
                " https://hooks.slack.com/services/...: each notification is POSTed to it as"
                " JSON")
    return None


def base_url_problem(name: str, url: str, example: str, *, base: bool = True) -> str | None:
    """Why ``url`` cannot be the URL that the key ``name`` holds (None: it can): it must be
    absolute (http(s), a host, a valid port, no spaces), since instaset joins paths to it
    (``base``: no ``?query`` or ``#fragment`` either, which the joined path would land in).
    Without a scheme (``graph.instagram.com``) every call failed as a connection error, and
    links and redirects built on ``server.public_url`` went out as text that is no link."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        return f"{name} is not a valid URL ({exc}), e.g. {example}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{name} must start with https:// (or http://) and a host, e.g. {example}"
    if any(c.isspace() for c in url):
        return f"{name} must not contain spaces, e.g. {example}"
    if parts.fragment or (base and parts.query):
        return (f"{name} must not have a {'#fragment' if parts.fragment else '?query'}"
                f" (instaset adds paths after it), e.g. {example}")
    return None


def booking_link_problem(link: str) -> str | None:
    """Why ``booking.link`` cannot be offered (None: it can). Parsed as each offer parses it
    (:func:`instaset.booking_slots.booking_link`, ``{contact_id}`` filled in): a link
    ``urlsplit`` refuses made every booking offer raise, and its event was retried until
    dead."""
    example = "e.g. https://cal.com/you/30min"
    if not link.startswith(("https://", "http://")):
        return f"link must be an http(s) URL, {example}"
    try:
        parts = urlsplit(link.replace("{contact_id}", "0"))
        parts.port  # noqa: B018 - raises ValueError for a port out of range
        problem = None if parts.hostname else "no host"
    except ValueError as exc:
        problem = str(exc)
    if problem is None and any(c.isspace() for c in link):
        problem = "it has a space"
    return None if problem is None else f"not a valid URL ({problem}), {example}"


def email_address_problem(name: str, value: str) -> str | None:
    """Why ``value`` cannot be the ``name`` header (``from_addr``, ``to_addr``) of a
    notification's email (None: it can). The header is built as
    :func:`instaset.notify.email_for` builds it: its parser is stricter than an address
    pattern (``a@[b`` passed one, then every notification failed for a day)."""
    if "\r" in value or "\n" in value:
        return f"{name} must be on one line (it holds a line break)"
    if not value.isascii():
        return (f"{name} must be ASCII, as the email's header is sent: write a non-ASCII"
                " domain in its xn-- form")
    found = getaddresses([value])
    if not value.strip() or not found or any(
            not re.fullmatch(r"[^@\s]+@[^@\s]+", addr) for _, addr in found):
        return (f"{name} must be an email address, e.g. me@example.com (several:"
                " comma-separated)")
    msg = EmailMessage(policy=email.policy.default.clone(max_line_length=998))
    try:
        msg["To"] = value
        header = msg["To"]
        broken = bool(header.defects) or not getattr(header, "addresses", ())
        msg.set_content("x")
        msg.as_bytes()
    except (ValueError, TypeError, AttributeError, IndexError, UnicodeError):
        broken = True
    if broken:
        return (f"{name} {value!r} cannot be read as an email header; write it as"
                " me@example.com or Me <me@example.com> (several: comma-separated)")
    return None
