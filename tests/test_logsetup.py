"""Log output: the text format, and the JSON format (one object per line) end to end."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from instaset.logsetup import JsonFormatter, LogFormat, make_formatter, setup_logging
from tests.http_helpers import run_json_serve

pytestmark = pytest.mark.usefixtures("restore_loggers")


def test_json_lines_have_exactly_the_documented_keys() -> None:
    stream = io.StringIO()
    setup_logging("DEBUG", "json", stream=stream)
    before = time.time()
    logging.getLogger("instaset.webhook").info("stored %d events", 3)
    logging.getLogger("instaset.worker").debug("line one\nline two: «ünïcode» \ud800")
    logging.getLogger("instaset.worker.deep").warning('quote " and backslash \\')
    after = time.time()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # the newline inside a message did not split a record
    records = [json.loads(line) for line in lines]
    assert all(line.isascii() for line in lines)
    assert [set(r) for r in records] == [{"ts", "level", "logger", "msg"}] * 3
    assert [(r["level"], r["logger"]) for r in records] == [
        ("INFO", "instaset.webhook"), ("DEBUG", "instaset.worker"),
        ("WARNING", "instaset.worker.deep")]
    assert records[0]["msg"] == "stored 3 events"
    assert records[1]["msg"] == "line one\nline two: «ünïcode» \ud800"
    assert records[2]["msg"] == 'quote " and backslash \\'
    for r in records:
        assert r["ts"].endswith("Z") and len(r["ts"]) == len("2026-01-02T03:04:05.678Z")
        ts = datetime.strptime(r["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert before - 0.001 <= ts.timestamp() <= after + 0.001


def test_json_exception_is_in_the_same_line() -> None:
    stream = io.StringIO()
    setup_logging("INFO", LogFormat.JSON, stream=stream)
    try:
        raise RuntimeError("disk on fire")
    except RuntimeError:
        logging.getLogger("instaset.store").exception("could not commit")
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["msg"] == "could not commit" and record["level"] == "ERROR"
    assert record["exc"].startswith("Traceback (most recent call last):")
    assert record["exc"].rstrip().endswith("RuntimeError: disk on fire")


def test_level_filters_and_setup_replaces_handlers() -> None:
    stream = io.StringIO()
    setup_logging("WARNING", "json", stream=stream)
    setup_logging("WARNING", "json", stream=stream)  # again: still one handler
    log = logging.getLogger("instaset.x")
    log.info("hidden")
    log.warning("shown")
    assert [json.loads(x)["msg"] for x in stream.getvalue().splitlines()] == ["shown"]


def test_text_format_is_the_default() -> None:
    stream = io.StringIO()
    setup_logging("INFO", stream=stream)
    logging.getLogger("instaset.daemon").info("hello")
    line = stream.getvalue().strip()
    assert line.endswith(" INFO instaset.daemon: hello")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_text_lines_cannot_be_forged_by_ids_from_outside() -> None:
    """Found by the s11 input audit: a sender id "x\nERROR fake" (Meta-signed, but from
    outside) wrote a second, fake ERROR line; a NUL made grep call the log binary."""
    stream = io.StringIO()
    setup_logging("INFO", stream=stream)
    log = logging.getLogger("instaset.worker")
    log.info("%s -> %s", "x\nERROR fake\x00\x1b[31m", "guide")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("job failed")
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith(" INFO instaset.worker: x ERROR fake [31m -> guide")
    assert lines[1].endswith(" ERROR instaset.worker: job failed")
    assert lines[2] == "Traceback (most recent call last):"  # a traceback keeps its lines


def test_unknown_format_is_refused() -> None:
    assert isinstance(make_formatter("JSON"), JsonFormatter)
    with pytest.raises(ValueError, match="use one of: text, json"):
        make_formatter("xml")


def test_serve_log_format_json_every_stderr_line_is_json(tmp_path: Path) -> None:
    """`instaset serve --log-format json` for real: start, wait for "listening", SIGTERM."""
    lines = run_json_serve(tmp_path, lambda _port, _stderr, _lines: None)
    records = [json.loads(line) for line in lines if line.strip()]
    messages = [r["msg"] for r in records]
    assert any(m.startswith("instaset listening on http://127.0.0.1:") for m in messages)
    assert messages[-1] == "instaset stopped"
    assert {r["logger"] for r in records} >= {"instaset.daemon", "instaset.worker"}
    # The daemon runs on uvloop where it is installed (a dependency on Linux and macOS).
    expected_loop = "asyncio" if importlib.util.find_spec("uvloop") is None else "uvloop"
    assert f"event loop: {expected_loop}" in messages
