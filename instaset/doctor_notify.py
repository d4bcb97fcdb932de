"""``instaset doctor``'s notification checks: the last notices, the failing ones, the channels.

Contract (each a :class:`~instaset.doctor.Check`):

- ``notification``: the last few notices, ``warn`` when one is not delivered and its job has
  failed (at once, not only after an hour) or it is older than :data:`NOTIFY_LATE`.
- ``failing notifications (CHANNEL)``: one per channel that fails now, ``warn`` at once: how
  many notices wait on it, the latest error (:func:`redact_error`: no URL path or query, no
  token or password), the try and the next one, and the fix for that channel.
- ``undelivered notifications``: all notices not delivered after an hour, counted (still
  retried, or given up).
- ``notify channels``: each configured channel looked at without sending anything: the
  command's program found, the webhook an http(s) URL, SMTP settings that can work, the
  desktop tool on PATH (doctor's own PATH: the daemon's may differ). None configured is
  ``skip``.

No check prints the webhook URL beyond its scheme and host, nor any secret.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sqlite3
from typing import TYPE_CHECKING

from instaset.config import NotifyConfig
from instaset.config_checks import webhook_url_problem
from instaset.config_types import mask_url
from instaset.graph_errors import redact
from instaset.inbox import iso_utc
from instaset.notify import desktop_tool
from instaset.store import history
from instaset.store.db import Database

if TYPE_CHECKING:
    from instaset.doctor import Check

REF = "docs/setup.md#notifications"

NOTIFY_LATE = 3600.0
"""A notification not delivered after this many seconds is worth a warning (its job goes on
retrying for about a day: ``instaset.notify.NOTIFY_MAX_ATTEMPTS``)."""

NOTIFY_FIX = ("check notify.command / webhook_url / smtp / desktop; the daemon's log "
              "(instaset.notify) names the failing channel")

CHANNEL_FIX = {
    "command": "run notify.command by hand as the daemon's user, with a text on stdin: it "
               "must exit 0 within 30 s",
    "webhook": "check notify.webhook_url: it must answer 2xx to a JSON POST",
    "smtp": "check notify.smtp (host, port, starttls, username, password) against your mail "
            "provider's SMTP settings",
    "desktop": "install notify-send (libnotify) or osascript on the daemon's PATH, or set "
               "notify.desktop: false",
}
_CHANNEL_SPLIT = re.compile(r"(?:^|; )(command|webhook|smtp|desktop): ")
_URL = re.compile(r"https?://[^\s'\"<>]+")
_SHELL_WORDS = frozenset({"exec", "env", "nohup", "command", "cd", "set", "export", "if",
                          "for", "while", "case", "{", "(", "!"})


def _shown(url: str) -> str:
    """The webhook URL as doctor shows it: :func:`mask_url` (a chat webhook's path or query
    is its token), saying so when a path was cut."""
    masked = mask_url(url)
    return f"{masked} (path hidden)" if masked.endswith("/…") else masked


def redact_error(text: str, config: NotifyConfig | None = None) -> str:
    """A channel's error as doctor may show it: every URL cut to its scheme and host, the
    configured secrets (SMTP password) and anything token-shaped taken out."""
    secrets: list[str] = []
    if config is not None and config.smtp is not None and config.smtp.password is not None:
        secrets.append(config.smtp.password.get_secret_value())
    text = _URL.sub(lambda m: mask_url(m.group(0)), text)
    return redact(text, secrets)


def channel_errors(last_error: str) -> dict[str, str]:
    """``last_error`` of a ``notify`` job (``channel: Type: message; ...``) by channel; an
    error naming no channel is under ``?``."""
    parts = _CHANNEL_SPLIT.split(last_error)
    out = {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}
    if not out:
        out["?"] = last_error
    return out


async def check_notifications(db: Database, now: float, limit: int = 5,
                              config: NotifyConfig | None = None) -> list[Check]:
    from instaset.doctor import Check

    failing = await history.failing_notifications(db)
    failing_on = {r["key"]: sorted(channel_errors(r["last_error"])) for r in failing}
    out: list[Check] = []
    for r in await history.recent_notifications(db, limit):
        channels = failing_on.get(r["key"]) if r["delivered_at"] is None else None
        stuck = r["delivered_at"] is None and (
            bool(channels) or now - r["created_at"] > NOTIFY_LATE)
        said = ""
        if stuck:
            said = (f" (not delivered: failing on {', '.join(channels)})" if channels
                    else " (not delivered)")
        out.append(Check(
            "notification", "warn" if stuck else "ok",
            f"{iso_utc(r['created_at'])} {r['kind']}: {r['text'][:100]}{said}",
            NOTIFY_FIX if stuck else None, REF if stuck else None))
    out += _failing_channels(failing, config)
    # All of them, not only the last few: a notification is retried for a day, and the
    # ones still trying are told apart from those given up (dead job, or purged).
    late = await history.undelivered_notifications(db, now - NOTIFY_LATE)
    if late:
        retrying = [r["run_at"] for r in late if r["state"] in ("ready", "running")]
        parts = []
        if retrying:
            parts.append(f"{len(retrying)} still retried (next try {iso_utc(min(retrying))})")
        if len(late) > len(retrying):
            parts.append(f"{len(late) - len(retrying)} given up after a day of tries")
        out.append(Check(
            "undelivered notifications", "warn",
            f"{len(late)} not delivered after an hour: " + ", ".join(parts),
            NOTIFY_FIX, REF))
    if config is not None:
        out += check_channels(config)
    return out


def _failing_channels(failing: list[sqlite3.Row], config: NotifyConfig | None) -> list[Check]:
    """One ``failing notifications (CHANNEL)`` warning per channel, from the newest failure."""
    from instaset.doctor import Check

    count: dict[str, int] = {}
    latest: dict[str, tuple[str, sqlite3.Row]] = {}
    for r in failing:  # newest first
        for channel, error in channel_errors(r["last_error"]).items():
            count[channel] = count.get(channel, 0) + 1
            latest.setdefault(channel, (error, r))
    out: list[Check] = []
    for channel in sorted(count):
        error, row = latest[channel]
        when = (f"try {row['attempts']} of {row['max_attempts']}, next try"
                f" {iso_utc(row['run_at'])}" if row["state"] in ("ready", "running")
                else f"given up after {row['attempts']} tries")
        n = count[channel]
        out.append(Check(
            f"failing notifications ({channel})", "warn",
            f"{n} notification{'s' if n != 1 else ''} not delivered on {channel} ({when}):"
            f" {redact_error(error, config)[:300]}",
            CHANNEL_FIX.get(channel, NOTIFY_FIX), REF))
    return out


def check_channels(config: NotifyConfig) -> list[Check]:
    """Each configured channel, looked at without sending (see the module docstring)."""
    from instaset.doctor import Check

    out: list[Check] = []
    if config.command:
        out.append(_command_check(config.command))
    if config.webhook_url:
        problem = webhook_url_problem(config.webhook_url)
        out.append(Check("notify channel (webhook)", "fail", problem, CHANNEL_FIX["webhook"], REF)
                   if problem else
                   Check("notify channel (webhook)", "ok",
                         f"POST to {_shown(config.webhook_url)}"))
    if config.smtp is not None:
        s = config.smtp
        how = "STARTTLS" if s.starttls else "no TLS"
        local = s.host in ("localhost", "127.0.0.1", "::1")
        if s.username and not s.starttls and not local:
            out.append(Check("notify channel (smtp)", "warn",
                             f"{s.host}:{s.port} without STARTTLS: the login and password go"
                             " over the network in clear",
                             "set notify.smtp.starttls: true (port 587)", REF))
        else:
            out.append(Check("notify channel (smtp)", "ok",
                             f"{s.host}:{s.port} ({how}) to {s.to_addr}"))
    if config.desktop:
        tool = desktop_tool()
        path = shutil.which(tool)
        out.append(Check("notify channel (desktop)", "ok", f"{tool} at {path}") if path else
                   Check("notify channel (desktop)", "warn",
                         f"notify.desktop is on but {tool} is not on this PATH: every"
                         " notification stays undelivered", CHANNEL_FIX["desktop"], REF))
    if not out:
        out.append(Check("notify channels", "skip", "none configured: notifications are only"
                         " kept for `instaset inbox` (notify: command, webhook_url, smtp,"
                         " desktop)"))
    return out


def _command_check(command: str) -> Check:
    """Whether ``notify.command``'s program can be found (the daemon runs it with /bin/sh)."""
    from instaset.doctor import Check

    try:
        words = shlex.split(command)
    except ValueError as exc:
        return Check("notify channel (command)", "fail", f"notify.command does not parse as a"
                     f" shell command: {exc}", "fix the quotes in notify.command", REF)
    program = next((w for w in words if "=" not in w.split("/")[0]), "")
    if not program or program in _SHELL_WORDS or any(c in program for c in ";|&<>$`"):
        return Check("notify channel (command)", "ok", "a shell command (not looked into)")
    found = shutil.which(program)
    if found is None:
        return Check("notify channel (command)", "warn",
                     f"notify.command runs {program!r}, which is not found"
                     + (" (no such executable file)" if "/" in program else " on this PATH"),
                     "give its full path, or install it; " + CHANNEL_FIX["command"], REF)
    return Check("notify channel (command)", "ok", f"runs {found}")
