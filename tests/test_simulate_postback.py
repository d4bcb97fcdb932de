"""An ice-breaker or persistent-menu tap from outside Python: the daemon's
``POST /sandbox/postback`` route and ``instaset simulate postback`` (s19 review #3, related).

Everything runs for real on 127.0.0.1 (helpers of tests/test_simulate_errors.py): the daemon
is ``daemon.serving()``, in sandbox mode or not; the CLI runs through ``CliRunner``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml

from instaset.config import load_config
from instaset.daemon import Serving
from instaset.demo import settle
from tests.test_simulate_errors import (
    assert_clean_failure,
    config_data,
    post,
    run_cli,
    sandbox_daemon,  # noqa: F401  (a fixture)
    threaded_daemon,
    write_config,
)

QUESTION = "How do I get the free guide?"


def tap_config(tmp_path: Path) -> Path:
    """A sandbox config whose ice breaker sends GET_GUIDE, which a workflow answers."""
    data: dict[str, Any] = {
        **config_data(tmp_path, "tap"),
        "ice_breakers": [{"question": QUESTION, "payload": "GET_GUIDE"}],
        "workflows": [{"name": "guide", "trigger": {"postback": {"payload": ["GET_GUIDE"]}},
                       "actions": [{"reply": "Here is the guide"}]}],
    }
    path = tmp_path / "tap.yaml"
    path.write_text(yaml.safe_dump(data), "utf-8")
    return path


def postbacks(deliveries: list[tuple[dict[str, object], int]]) -> list[dict[str, Any]]:
    """The ``postback`` objects of the webhooks the sandbox delivered, with their status."""
    out = []
    for payload, status in deliveries:
        for entry in payload["entry"]:  # type: ignore[attr-defined]
            for item in entry.get("messaging", []):
                if "postback" in item:
                    out.append({**item["postback"], "status": status})
    return out


def test_simulate_postback_taps_an_ice_breaker_that_a_new_user_gets_an_answer_to(
    tmp_path: Path,
) -> None:
    """A newcomer's first act is the tap: the daemon receives Meta's messaging_postbacks
    webhook (titled with the config's question) and may answer, the tap having opened the
    24 h window (the sandbox's sends() holds only what it accepted)."""
    cfg = tap_config(tmp_path)
    with threaded_daemon(load_config(cfg), sandbox=True) as (lt, srv):
        box = srv.sandbox
        assert box is not None
        result = run_cli(cfg, "simulate", "postback", "newbie", "GET_GUIDE", "--url", srv.url)
        assert result.exit_code == 0, result.output
        answer = json.loads(result.stdout)
        assert answer["webhook_status"] == 200
        lt.run(settle(srv))
        [tap] = postbacks(box.deliveries)
        assert (tap["title"], tap["payload"], tap["status"]) == (QUESTION, "GET_GUIDE", 200)
        assert [(r.json["recipient"], r.json["message"]) for r in box.sends()] == [
            ({"id": answer["user"]}, {"text": "Here is the guide"})]


def test_simulate_postback_takes_a_title_and_refuses_an_empty_payload(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "sb")
    with threaded_daemon(load_config(cfg), sandbox=True) as (_lt, srv):
        box = srv.sandbox
        assert box is not None
        assert_clean_failure(run_cli(cfg, "simulate", "postback", "bob", " ", "--url", srv.url),
                             "PAYLOAD must not be empty")
        ok = run_cli(cfg, "simulate", "postback", "bob", "MENU_PRICES", "--title", "Prices",
                     "--url", srv.url)
        assert ok.exit_code == 0, ok.output
        plain = run_cli(cfg, "simulate", "postback", "bob", "NOT_IN_CONFIG", "--url", srv.url)
        assert plain.exit_code == 0, plain.output
        assert [(t["title"], t["payload"]) for t in postbacks(box.deliveries)] == [
            ("Prices", "MENU_PRICES"), ("NOT_IN_CONFIG", "NOT_IN_CONFIG")]


async def test_the_postback_route_refuses_bad_input_and_opens_the_window(
    sandbox_daemon: Serving,  # noqa: F811
) -> None:
    box = sandbox_daemon.sandbox
    assert box is not None
    for body, names in (({"user": "alice"}, "'payload' is required"),
                        ({"user": "alice", "payload": "  "}, "'payload' is required"),
                        ({"user": "alice", "payload": "GO", "title": 5}, "'title' must be"),
                        ({"user": "alice", "payload": "GO", "title": "t" * 81},
                         "the title is 81 characters"),
                        ({"user": "alice", "payload": "P" * 1001},
                         "the payload is 1001 characters"),
                        ({"payload": "GO"}, "'user' is required")):
        status, answer = await post(sandbox_daemon, "/sandbox/postback", body)
        assert status == 400 and names in answer["error"], (body, answer)
    assert box.deliveries == []
    status, answer = await post(sandbox_daemon, "/sandbox/postback",
                                {"user": "alice", "payload": "GO"})
    assert (status, answer["webhook_status"]) == (200, 200)
    assert answer["user"] in box._last_inbound  # the 24 h window runs from the tap
    # The longest a configured button can carry still goes through.
    status, answer = await post(sandbox_daemon, "/sandbox/postback",
                                {"user": "alice", "payload": "P" * 1000, "title": "t" * 80})
    assert (status, answer["webhook_status"]) == (200, 200)
    # A long payload without a title is titled with its first 80 characters.
    status, answer = await post(sandbox_daemon, "/sandbox/postback",
                                {"user": "alice", "payload": "Q" * 1000})
    assert (status, answer["webhook_status"]) == (200, 200)
    assert [(t["title"], len(t["payload"])) for t in postbacks(box.deliveries)] == [
        ("GO", 2), ("t" * 80, 1000), ("Q" * 80, 1000)]


def test_simulate_postback_refuses_what_no_button_could_send(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "sb")
    with threaded_daemon(load_config(cfg), sandbox=True) as (_lt, srv):
        box = srv.sandbox
        assert box is not None
        assert_clean_failure(
            run_cli(cfg, "simulate", "postback", "bob", "GO", "--title", "t" * 81,
                    "--url", srv.url),
            "the title is 81 characters")
        assert_clean_failure(
            run_cli(cfg, "simulate", "postback", "bob", "P" * 1001, "--url", srv.url),
            "the payload is 1001 characters")
        assert box.deliveries == []


def test_simulate_postback_titles_a_menu_tap_with_the_menu_item(tmp_path: Path) -> None:
    """Without --title, a payload the config's menu sends is titled as that menu item (and
    an ice breaker's as its question, above)."""
    data = {**config_data(tmp_path, "menu"),
            "menu": [{"title": "See prices", "payload": "MENU_PRICES"}]}
    cfg = tmp_path / "menu.yaml"
    cfg.write_text(yaml.safe_dump(data), "utf-8")
    with threaded_daemon(load_config(cfg), sandbox=True) as (_lt, srv):
        box = srv.sandbox
        assert box is not None
        result = run_cli(cfg, "simulate", "postback", "bob", "MENU_PRICES", "--url", srv.url)
        assert result.exit_code == 0, result.output
        assert [(t["title"], t["payload"]) for t in postbacks(box.deliveries)] == [
            ("See prices", "MENU_PRICES")]


def test_simulate_postback_signs_a_meta_webhook_for_a_daemon_not_in_sandbox_mode(
    tmp_path: Path,
) -> None:
    data = {**config_data(tmp_path, "real", app_secret="s3cret"),
            "ice_breakers": [{"question": QUESTION, "payload": "GET_GUIDE"}]}
    cfg = tmp_path / "real.yaml"
    cfg.write_text(yaml.safe_dump(data), "utf-8")
    with threaded_daemon(load_config(cfg), sandbox=False) as (lt, srv):
        result = run_cli(cfg, "simulate", "postback", "bob", "GET_GUIDE", "--url", srv.url)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["webhook_status"] == 200

        async def stored() -> list[Any]:
            for _ in range(100):
                rows = await srv.rt.db.fetchall("SELECT kind, raw FROM events")
                if rows:
                    return list(rows)
                await asyncio.sleep(0.05)
            return []

        [row] = lt.run(stored())
        item = json.loads(row["raw"])["entry"][0]["messaging"][0]
        assert row["kind"] == "postback"
        # Titled with the config's question, as the sandbox titles it.
        assert (item["postback"]["title"], item["postback"]["payload"]) == (QUESTION,
                                                                             "GET_GUIDE")
