"""``quick_storage``: the database location of read-only commands, read without the whole
config. It must agree with the full loader whenever it answers, step aside (None) whenever
the full loader would object to the storage section, and keep the read commands off the
workflow language's model classes (that is what it is for)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from instaset.cli import app
from instaset.config import load_config
from instaset.config_storage import StorageLocation, quick_storage
from instaset.errors import ConfigError

# (config text or None for "no file at the default location", env, explicit --config)
AGREEING = [
    pytest.param(None, {}, False, id="no-file-defaults"),
    pytest.param("", {}, True, id="empty-file"),
    pytest.param("server: {port: 9000}\n", {}, True, id="no-storage-section"),
    pytest.param("storage:\n  path: data/i.db\n", {}, True, id="relative-path"),
    pytest.param("storage: {path: /srv/x/i.db, synchronous: NORMAL}\n", {}, True,
                 id="absolute-normal"),
    pytest.param("storage: {path: ~/i.db}\n", {}, True, id="home-path"),
    pytest.param("storage: {path: a.db}\n", {"INSTASET_DB": "/tmp/env.db"}, True,
                 id="env-db-wins"),
    pytest.param("storage:\n", {}, True, id="null-section"),
]


def _env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    return {"INSTASET_HOME": str(tmp_path / "home"), "HOME": str(tmp_path / "user"), **extra}


@pytest.mark.parametrize(("text", "extra", "explicit"), AGREEING)
def test_agrees_with_the_full_loader(tmp_path: Path, text: str | None,
                                     extra: dict[str, str], explicit: bool) -> None:
    env = _env(tmp_path, extra)
    cfg = tmp_path / "conf" / "config.yaml"
    if text is not None:
        cfg.parent.mkdir()
        cfg.write_text(text)
    path = cfg if explicit else None
    full = load_config(path, env=env).storage
    quick = quick_storage(path, env=env)
    assert quick == StorageLocation(full.db_path(env), full.synchronous)


def test_instaset_config_env_names_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "elsewhere.yaml"
    cfg.write_text("storage: {path: e.db}\n")
    env = _env(tmp_path, {"INSTASET_CONFIG": str(cfg)})
    assert quick_storage(None, env=env) == StorageLocation(tmp_path / "e.db", "FULL")
    assert load_config(None, env=env).storage.db_path(env) == tmp_path / "e.db"


@pytest.mark.parametrize("text", [
    "storage: {synchronous: OFF}\n",
    "storage: {path: a.db, pth: b.db}\n",
    "storage: [a.db]\n",
    "storage: {path: 5}\n",
    "- a list\n",
    "storage: {path: [unclosed\n",
])
def test_steps_aside_when_the_full_loader_objects(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    assert quick_storage(cfg, env=_env(tmp_path, {})) is None
    with pytest.raises(ConfigError):
        load_config(cfg, env=_env(tmp_path, {}))


def test_an_explicit_missing_file_is_left_to_the_full_loader(tmp_path: Path) -> None:
    assert quick_storage(tmp_path / "nope.yaml", env=_env(tmp_path, {})) is None


BROKEN_WORKFLOW = """\
storage:
  path: inbox.db
workflows:
  - name: hello
    trigger: {keywrods: [hi]}
    actions: [{reply: hello}]
"""


def test_read_commands_work_while_a_workflow_is_broken(tmp_path: Path) -> None:
    """The inbox and stats still open (the daemon refuses the config; validate names it)."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(BROKEN_WORKFLOW)
    runner = CliRunner()
    listing = runner.invoke(app, ["--config", str(cfg), "inbox", "--json"])
    assert listing.exit_code == 0, listing.output
    assert json.loads(listing.stdout)["total"] == 0
    stats = runner.invoke(app, ["--config", str(cfg), "stats", "--json"])
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout)["totals"]["sent"] == 0
    assert (tmp_path / "inbox.db").exists()
    check = runner.invoke(app, ["--config", str(cfg), "workflows", "validate"])
    assert check.exit_code == 1
    assert "keywrods" in check.output


@pytest.mark.parametrize("text", [
    "instagram:\n  app_id: '1'\n  bogus_key: 3\n",
    "storage: {path: i.db}\nserver:\n  port: abc\n",
    BROKEN_WORKFLOW,
], ids=["unknown-key", "bad-value", "workflow-typo"])
def test_read_commands_on_a_broken_config_warn_with_its_first_problem(
        tmp_path: Path, text: str) -> None:
    """They go on (storage is all they read) but are not silent about the rest (s17 audit
    D6): one warning line on stderr, the loader's own first problem with file:line."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(cfg, env={})
    first = info.value.problems[0]
    assert first.startswith(f"{cfg.absolute()}:")
    runner = CliRunner()
    for argv, rc in ((["inbox", "--json"], 0), (["stats", "--json"], 0),
                     (["inbox", "show", "nobody", "--json"], 1)):
        res = runner.invoke(app, ["--config", str(cfg), *argv])
        assert res.exit_code == rc, res.output
        lines = res.stderr.splitlines()
        assert lines[0].startswith(f"warning: {first}"), res.stderr
        assert lines[0].endswith("this command reads only storage.path and goes on; "
                                 "`instaset workflows validate` lists every problem")
        if rc == 0:
            json.loads(res.stdout)  # stdout is still the one JSON document
            assert len(lines) == 1
        else:
            assert lines[1:] == ["error: no contact 'nobody': give a username or an "
                                 "Instagram-scoped id from `instaset inbox`"]


def test_a_valid_config_is_checked_once_and_again_when_it_changes(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("storage: {path: i.db}\n")
    runner = CliRunner()
    first = runner.invoke(app, ["--config", str(cfg), "inbox", "--json"])
    assert (first.exit_code, first.stderr) == (0, "")
    assert (Path(os.environ["INSTASET_HOME"]) / "config-checked").exists()
    cfg.write_text("storage: {path: i.db}\nretention: {days: -5}\n")
    changed = runner.invoke(app, ["--config", str(cfg), "stats", "--json"])
    assert changed.exit_code == 0
    assert changed.stderr.startswith(f"warning: {cfg.absolute()}:2:")
    assert "retention.days" in changed.stderr


def test_a_broken_storage_section_is_reported_like_everywhere_else(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("storage:\n  path: a.db\n  synchronus: FULL\n")
    res = CliRunner().invoke(app, ["--config", str(cfg), "inbox", "--json"])
    assert res.exit_code == 1
    assert "config.yaml:3:3: storage: unknown key" in res.output
    assert "did you mean 'synchronous'" in res.output


@pytest.mark.parametrize(("argv", "says"), [
    (["inbox", "--plain"], "0 conversations"), (["stats", "--since", "90d"], "triggers 0"),
    (["inbox", "show", "nobody", "--json"], "no contact"),
], ids=["inbox", "stats", "inbox show"])
def test_the_read_commands_do_not_build_the_config_models(tmp_path: Path, argv: list[str],
                                                          says: str) -> None:
    """What the fast path is for: the read commands never import the config models, the
    engine, or pydantic (typer 0.29 imports it to convert every option value: ~0.1 s of
    each command's start, hence the pin in pyproject.toml)."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text("storage: {path: i.db}\n")
    modules = tmp_path / "modules.json"
    code = (
        "import json, sys\n"
        "from instaset.cli import app\n"
        "try:\n"
        f"    app(['--config', {str(cfg)!r}, *{argv!r}])\n"
        "finally:\n"
        f"    open({str(modules)!r}, 'w').write(json.dumps(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "120"}
    # The first run of a config checks all of it once (to warn when it is broken) and
    # remembers that it is valid; from then on the command is what is measured.
    primed = subprocess.run([sys.executable, "-m", "instaset", "--config", str(cfg), *argv],
                            capture_output=True, text=True, env=env, timeout=60, check=False)
    assert "warning" not in primed.stderr, primed.stderr
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60, check=False)
    assert says in res.stdout + res.stderr, res.stdout + res.stderr
    loaded = set(json.loads(modules.read_text()))
    assert "instaset.store.db" in loaded  # it did open the database
    heavy = {"instaset.config", "instaset.config_models", "instaset.engine.model",
             "instaset.event_types", "instaset.daemon", "aiohttp", "pydantic"}
    assert heavy.isdisjoint(loaded), sorted(heavy & loaded)


def test_the_checked_stamp_changes_with_the_code_that_judges_the_config(
        tmp_path: Path) -> None:
    """Review D (s17): the stamp of a config found valid named instaset's version only, so
    an upgrade that keeps the version number (0.1.0 then and now) and refuses what the old
    code accepted left inbox and stats silent until the config was edited."""
    from instaset.config_storage import config_stamp
    cfg = tmp_path / "config.yaml"
    cfg.write_text("retention:\n  days: 30\n")
    package = tmp_path / "pkg"
    (package / "engine").mkdir(parents=True)
    module = package / "engine" / "model.py"
    module.write_text("X = 1\n")
    env = {"INSTASET_HOME": str(tmp_path / "home")}
    before = config_stamp(cfg, env, package)
    assert config_stamp(cfg, env, package) == before  # stable while nothing changes
    module.write_text("X = 22\n")  # an upgrade of the code, same version number
    assert config_stamp(cfg, env, package) != before
