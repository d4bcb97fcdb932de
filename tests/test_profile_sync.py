"""Ice breakers and the persistent menu: config, lints, the pure diff, and `instaset
workflows apply` against the sandbox (a real Graph server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from instaset.config import Config, load_config
from instaset.daemon import runtime
from instaset.errors import ConfigError, InstasetError
from instaset.profile_sync import ICE_BREAKERS, MENU, apply_config, diff, wanted
from instaset.sandbox import Sandbox
from instaset.tokens import StaticTokens
from instaset.workflow_lint import lint_config

ACCT = "17841400000000001"
SECRET = "profile-sync-app-secret"

CONFIG = """\
ice_breakers:
  - {question: "How do I get the free guide?", payload: GUIDE}
  - {question: "Can we book a call?", payload: BOOK}
menu:
  - {title: Book a call, payload: BOOK}
  - {title: Website, url: "https://coach.example"}
workflows:
  - name: guide
    trigger: {postback: {payload: [GUIDE]}}
    actions: [{reply: "Here it is"}]
"""


def locale(items: list[dict[str, str]], name: str = "default") -> dict[str, Any]:
    return {"locale": name, "call_to_actions": items}


ICE = [("Q1", "P1"), ("Q2", "P2")]
META_ICE = [locale([{"question": "Q1", "payload": "P1"}, {"question": "Q2", "payload": "P2"}])]


@pytest.mark.parametrize(("current", "ice", "changed", "lines"), [
    ({}, None, False, ["not in the config"]),
    ({ICE_BREAKERS: META_ICE}, ICE, False, ["up to date (2 ice breakers)"]),
    ({ICE_BREAKERS: META_ICE}, [("Q1", "P1"), ("Q3", "P3")], True,
     ["- 'Q2' -> P2", "  'Q1' -> P1", "+ 'Q3' -> P3"]),
    ({}, ICE, True, ["+ 'Q1' -> P1", "+ 'Q2' -> P2"]),
    ({ICE_BREAKERS: META_ICE}, [], True, ["- 'Q1' -> P1", "(all ice breakers removed)"]),
    ({ICE_BREAKERS: [*META_ICE, locale([], "fr_FR")]}, ICE, True, ["locale fr_FR (removed"]),
])
def test_diff(current: dict[str, Any], ice: list[tuple[str, str]] | None, changed: bool,
              lines: list[str]) -> None:
    change = diff(current, ice, None)[0]
    assert change.field == ICE_BREAKERS and change.changed is changed
    text = "\n".join(change.lines())
    for line in lines:
        assert line in text
    assert diff(current, ice, None)[1].changed is False  # the menu is not managed


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(text, "utf-8")
    return load_config(path)


def test_config_keeps_both_and_lints_an_unhandled_payload(tmp_path: Path) -> None:
    config = load(tmp_path, CONFIG)
    assert wanted(config) == ([("How do I get the free guide?", "GUIDE"),
                               ("Can we book a call?", "BOOK")],
                              [("postback", "Book a call", "BOOK"),
                               ("web_url", "Website", "https://coach.example")])
    warnings = [w for w in lint_config(config) if w.code == "unhandled-payload"]
    # BOOK has no postback workflow: both places that send it are flagged, GUIDE is not.
    assert sorted((w.line, w.workflow) for w in warnings) == [(3, "ice_breakers"), (5, "menu")]
    assert all("'BOOK'" in w.message for w in warnings)


@pytest.mark.parametrize(("text", "says"), [
    ("ice_breakers:\n" + "  - {question: q, payload: p}\n" * 5, "at most 4"),
    ("menu:\n  - {title: x, payload: P, url: 'https://a.example'}\n", "not both"),
    ("menu:\n  - {title: this title is longer than thirty characters, payload: P}\n", "30"),
])
def test_invalid_sections_are_errors(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert says in str(info.value) and "config.yaml:" in str(info.value)


async def test_apply_pushes_the_difference_and_then_has_nothing_to_do(tmp_path: Path) -> None:
    async with Sandbox(app_secret=SECRET, account_id=ACCT, username="coach") as box:
        box.messenger_profile[ICE_BREAKERS] = [locale([{"question": "Old", "payload": "OLD"}])]
        data = yaml.safe_load(CONFIG)
        data["storage"] = {"path": str(tmp_path / "d.db")}
        config = Config.model_validate(data)
        async with runtime(config, graph_url=box.base_url,
                           tokens=StaticTokens({ACCT: box.token}), account_id=ACCT) as rt:
            planned = await apply_config(rt, ACCT, dry_run=True)
            assert [c.changed for c in planned] == [True, True]
            assert box.messenger_profile[ICE_BREAKERS] == [
                locale([{"question": "Old", "payload": "OLD"}])]  # a dry run changes nothing
            before = len(box.transcript)
            done = await apply_config(rt, ACCT, dry_run=False)
            assert [c.changed for c in done] == [True, True]
            posts = [r for r in box.transcript[before:] if r.method == "POST"]
            assert len(posts) == 2
            assert box.messenger_profile[ICE_BREAKERS] == [locale([
                {"question": "How do I get the free guide?", "payload": "GUIDE"},
                {"question": "Can we book a call?", "payload": "BOOK"}])]
            assert box.messenger_profile[MENU] == [locale([
                {"type": "postback", "title": "Book a call", "payload": "BOOK"},
                {"type": "web_url", "title": "Website", "url": "https://coach.example"}])]
            before = len(box.transcript)
            again = await apply_config(rt, ACCT, dry_run=False)
            assert [c.changed for c in again] == [False, False]
            assert [r.method for r in box.transcript[before:]] == ["GET", "GET"]

            rt.config = rt.config.model_copy(update={"ice_breakers": []})  # all removed
            await apply_config(rt, ACCT, dry_run=False)
            assert ICE_BREAKERS not in box.messenger_profile
            assert MENU in box.messenger_profile


async def test_apply_without_the_sections_or_a_token_says_what_to_do(tmp_path: Path) -> None:
    config = Config.model_validate({"storage": {"path": str(tmp_path / "d.db")}})
    async with runtime(config, tokens=StaticTokens({}), account_id=ACCT) as rt:
        with pytest.raises(InstasetError, match="no ice_breakers or menu"):
            await apply_config(rt, ACCT, dry_run=True)
        rt.config = rt.config.model_copy(update={"ice_breakers": []})
        with pytest.raises(InstasetError, match="instaset connect"):
            await apply_config(rt, ACCT, dry_run=True)


def test_the_command_shows_the_difference(tmp_path: Path) -> None:
    """`workflows apply --dry-run` then `workflows apply`, as a creator runs them (the
    sandbox in its own process: `serve --sandbox` is not needed, the token comes from
    `connect --token`)."""
    script = f"""
import asyncio, sys
from instaset.sandbox import Sandbox
async def main():
    async with Sandbox(app_secret={SECRET!r}, account_id={ACCT!r}, username="coach") as box:
        print(box.base_url, box.token, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
asyncio.run(main())
"""
    box = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    try:
        assert box.stdout is not None and box.stdin is not None
        url, token = box.stdout.readline().split()
        cfg = tmp_path / "config.yaml"
        data = yaml.safe_load(CONFIG)
        data.update(instagram={"graph_url": url, "api_url": url, "app_secret": SECRET},
                    storage={"path": str(tmp_path / "d.db")}, secrets={"backend": "file"})
        cfg.write_text(yaml.safe_dump(data), "utf-8")
        env = {**os.environ, "INSTASET_HOME": str(tmp_path / "home"),
               "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}

        def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "instaset", "--config", str(cfg), *args],
                                  input=stdin, capture_output=True, text=True, env=env,
                                  timeout=120)

        assert run("connect", "--token", stdin=token + "\n").returncode == 0
        dry = run("workflows", "apply", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "+ 'How do I get the free guide?' -> GUIDE" in dry.stdout
        assert "dry run: nothing was changed" in dry.stdout
        done = run("workflows", "apply")
        assert done.returncode == 0 and "applied: ice_breakers, persistent_menu" in done.stdout
        again = run("workflows", "apply", "--json")
        assert again.returncode == 0 and '"applied": false' in again.stdout
    finally:
        if box.stdin is not None:
            box.stdin.close()
        box.wait(timeout=30)
        if box.stdout is not None:
            box.stdout.close()
