"""Logging: one named logger per subsystem, one line per event, to stderr.

stderr is what journald (and ``docker logs``) collect, so the daemon never writes log files.
Two formats:

- ``text`` (default): ``<time> <LEVEL> <logger>: <message>``, for people.
- ``json``: one JSON object per line with exactly ``ts`` (ISO 8601 UTC, milliseconds, ``Z``),
  ``level``, ``logger`` and ``msg``, plus ``exc`` (the formatted traceback) when the record
  carries an exception. Newlines inside a message stay escaped inside the JSON string, so a
  line is always one record; non-ASCII is escaped too, so every line is valid ASCII JSON.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import TextIO


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class JsonFormatter(logging.Formatter):
    """A record -> one line of JSON (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC)
        out: dict[str, str] = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=True)


def make_formatter(fmt: LogFormat | str = LogFormat.TEXT) -> logging.Formatter:
    """The formatter for ``fmt``; :class:`ValueError` names the accepted values otherwise."""
    try:
        kind = LogFormat(str(fmt).lower())
    except ValueError:
        choices = ", ".join(f.value for f in LogFormat)
        raise ValueError(f"unknown log format {fmt!r}; use one of: {choices}") from None
    if kind is LogFormat.JSON:
        return JsonFormatter()
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def setup_logging(
    level: str = "INFO", fmt: LogFormat | str = LogFormat.TEXT, stream: TextIO | None = None,
) -> None:
    """Send the ``instaset`` loggers to ``stream`` (default: stderr) at ``level`` in ``fmt``.
    Calling it again replaces the previous setup (no duplicated lines)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    root = logging.getLogger("instaset")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
