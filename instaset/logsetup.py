"""Logging: one named logger per subsystem, one line per event, to stderr.

stderr is what journald (and ``docker logs``) collect, so the daemon never writes log files.
Two formats:

- ``text`` (default): ``<time> <LEVEL> <logger>: <message>``, for people. The message is
  made one line (:func:`instaset.oneline.one_line`): ids and texts from outside cannot
  forge a log line or colour a terminal; a traceback still follows on its own lines.
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

from instaset.oneline import one_line


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class LogLevel(StrEnum):
    """What ``serve --log-level`` takes (any case): a level the logging module knows."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    WARN = "WARN"  # logging's own alias
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


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


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message>`` with the message on one line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        if not record.message.isprintable():  # C-fast; almost every message is
            record.message = one_line(record.message)
        return super().formatMessage(record)


def make_formatter(fmt: LogFormat | str = LogFormat.TEXT) -> logging.Formatter:
    """The formatter for ``fmt``; :class:`ValueError` names the accepted values otherwise."""
    try:
        kind = LogFormat(str(fmt).lower())
    except ValueError:
        choices = ", ".join(f.value for f in LogFormat)
        raise ValueError(f"unknown log format {fmt!r}; use one of: {choices}") from None
    if kind is LogFormat.JSON:
        return JsonFormatter()
    return TextFormatter()


def client_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is the HTTP client's doing, not ours: a request that is not valid
    HTTP, a body that is not what its Content-Encoding says or was cut short, a connection
    the client dropped. (aiohttp is looked up only if it is loaded: this module stays
    importable without it.)"""
    if isinstance(exc, ConnectionResetError):
        return True
    faults: list[type[BaseException]] = []
    if (http := sys.modules.get("aiohttp.http_exceptions")) is not None:
        faults.append(http.HttpProcessingError)
    if (proto := sys.modules.get("aiohttp.web_protocol")) is not None:
        faults.append(proto.RequestPayloadError)
    return isinstance(exc, tuple(faults))


class ClientFaults(logging.Filter):
    """aiohttp logs a request the client broke (see :func:`client_fault`) at ERROR with a
    traceback, though it answered it 400 or could not answer at all; anyone could fill the
    log that way. Such a record becomes one INFO line naming the error, without the
    traceback, dropped when ``level`` (the daemon's log level) is above INFO. Other records
    pass unchanged."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and client_fault(exc):
            if self.level > logging.INFO:
                return False
            detail = " ".join(str(exc).split())[:200]  # one line, bounded
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {detail}"
            record.args = None
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def setup_logging(
    level: str = "INFO", fmt: LogFormat | str = LogFormat.TEXT, stream: TextIO | None = None,
) -> None:
    """Send the ``instaset`` loggers to ``stream`` (default: stderr) at ``level`` in ``fmt``,
    and aiohttp's at WARNING through the same format (its client faults as one INFO line,
    see :class:`ClientFaults`), so ``json`` output stays one object per line. Calling it
    again replaces the previous setup (no duplicated lines)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    root = logging.getLogger("instaset")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    web = logging.StreamHandler(handler.stream)
    web.setFormatter(handler.formatter)
    web.addFilter(ClientFaults(root.level))
    aio = logging.getLogger("aiohttp")
    aio.handlers[:] = [web]
    # WARNING: aiohttp's access and debug chatter stay out; its errors come in.
    aio.setLevel(max(logging.WARNING, root.level))
    aio.propagate = False
