"""Config models, loading with file:line:column errors, env overrides, paths and the config CLI."""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr, ValidationError
from typer.testing import CliRunner

from instaset.cli import app
from instaset.config import (
    DURATION_PATTERN,
    BookingConfig,
    Config,
    InstagramConfig,
    StorageConfig,
    config_json_schema,
    config_to_json,
    format_duration,
    load_config,
    parse_config_text,
    parse_duration,
    render_init_config,
)
from instaset.errors import ConfigError
from instaset.paths import data_dir, default_config_path
from tests.config_helpers import problems

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config.example.yaml"
SECRET = "s3cr3t-value-never-printed"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own INSTASET_HOME and working directory and no INSTASET_* env."""
    for name in list(os.environ):
        if name.startswith("INSTASET_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    monkeypatch.setenv("INSTASET_HOME", str(home))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return home




# --- defaults and files ---------------------------------------------------------------------


def test_missing_default_config_gives_defaults(_isolated: Path) -> None:
    config = load_config(env={"INSTASET_HOME": str(_isolated)})
    assert config.source is None
    assert config.server.port == 8787
    assert config.handoff.pause_for == timedelta(hours=12)
    assert config.storage.db_path({"INSTASET_HOME": str(_isolated)}) == _isolated / "instaset.db"
    assert config.workflows == []


def test_empty_file_and_null_sections_are_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    assert load_config(empty, env={}).server == Config().server
    assert load_config(empty, env={}).source == empty
    # sections whose keys are all commented out parse as null
    config = parse_config_text("server:\n  # port: 1\nworkflows:\n", "c.yaml", {})
    assert config.server.port == 8787
    assert config.workflows == []


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"{missing}: config file not found")):
        load_config(missing, env={})
    # INSTASET_CONFIG counts as explicit too
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(env={"INSTASET_CONFIG": str(missing)})


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.source == EXAMPLE
    assert config.instagram.app_secret is None
    assert config.storage.synchronous == "FULL"


def _missing_keys(model: type[BaseModel], data: Any, prefix: str) -> list[str]:
    missing: list[str] = []
    for name, field in model.model_fields.items():
        if model is Config and name == "source":
            continue
        if not isinstance(data, dict) or name not in data:
            missing.append(prefix + name)
            continue
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            missing += _missing_keys(sub, data[name], f"{prefix}{name}.")
    return missing


def test_example_config_documents_every_key() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    assert _missing_keys(Config, data, "") == []


def test_example_values_are_the_defaults() -> None:
    # The example doubles as the reference of defaults: it must not drift from the models.
    example = load_config(EXAMPLE, env={}).model_dump()
    defaults = Config().model_dump()
    # Its workflows, ice breakers, menu and AI voice are the example creator's own (the
    # defaults are empty or unmanaged).
    assert len(example.pop("workflows")) >= 5
    defaults.pop("workflows")
    for key in ("ice_breakers", "menu"):
        assert example.pop(key) and defaults.pop(key) is None
    for key in ("persona", "facts", "examples"):
        assert example["ai"].pop(key) and not defaults["ai"].pop(key)
    assert example == defaults


def test_init_config_loads_to_defaults_and_holds_no_secret() -> None:
    text = render_init_config()
    config = parse_config_text(text, "config.yaml", {})
    assert config.model_dump() == Config().model_dump()
    secret_keys = ("app_secret", "meta_app_secret", "verify_token", "api_key")
    live_lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    assert not [ln for ln in live_lines if any(k in ln for k in secret_keys)]
    # but the placeholders are there, commented, so people know where they go
    assert "# app_secret:" in text and "# verify_token:" in text


# --- error messages -------------------------------------------------------------------------


def test_unknown_top_level_key() -> None:
    text = "server:\n  port: 9000\nretension:\n  days: 3\n"
    assert problems(text) == [
        "config.yaml:3:1: unknown key 'retension' (did you mean 'retention'?)"
    ]


def test_unknown_nested_key() -> None:
    text = "instagram:\n  app_id: '1'\n\n  verify_tokn: x\n"
    assert problems(text) == [
        "config.yaml:4:3: instagram: unknown key 'verify_tokn' (did you mean 'verify_token'?)"
    ]


def test_unknown_key_inside_a_list() -> None:
    text = (
        "ai:\n"
        "  examples:\n"
        "    - message: hi\n"
        "      reply: hello\n"
        "    - message: price?\n"
        "      replly: 90\n"
        "      reply: '90'\n"
    )
    assert problems(text) == [
        "config.yaml:6:7: ai.examples[1]: unknown key 'replly' (did you mean 'reply'?)"
    ]


WORKFLOWS = """\
workflows:
  - name: guide
    trigger:
      dm: {keywords: [guide]}
    actions:
      - reply: "Here you go"
  - name: guide
    trigger: {comment: {keywords: [price]}}
    actions:
      - private_reply: "Sent you a DM"
  - name: third
    trigger:
      dm:
        keywrods: [hello]
      keywrods: [hi]
    when:
      hours: {form: "09:00"}
    actions:
      - rpely: hi
"""


def test_workflow_errors_name_line_path_and_suggestion() -> None:
    found = problems(WORKFLOWS)
    assert found[0].startswith("config.yaml:7:11: workflows[1].name: ")
    assert "'guide'" in found[0]
    assert found[1:] == [
        "config.yaml:14:9: workflows[2].trigger.dm: unknown key 'keywrods' "
        "(did you mean 'keywords'?)",
        "config.yaml:15:7: workflows[2].trigger: unknown key 'keywrods'",
        # keys that are Python keywords are suggested as written in YAML (alias 'from')
        "config.yaml:17:15: workflows[2].when.hours: unknown key 'form' (did you mean 'from'?)",
        "config.yaml:19:9: workflows[2].actions[0]: unknown key 'rpely' (did you mean 'reply'?)",
    ]


def test_valid_workflows_load() -> None:
    text = WORKFLOWS.split("  - name: third")[0].replace(
        "name: guide\n    trigger: {", "name: c\n    trigger: {"
    )
    config = parse_config_text(text, "config.yaml", {})
    assert [wf.name for wf in config.workflows] == ["guide", "c"]


def test_unknown_key_without_close_match_has_no_suggestion() -> None:
    assert problems("server:\n  zzzzzz: 1\n") == ["config.yaml:2:3: server: unknown key 'zzzzzz'"]


def test_source_is_not_a_settable_key() -> None:
    assert problems("source: /tmp/x\n") == [
        "config.yaml:1:1: unknown key 'source' (did you mean 'storage'?)"
    ]


def test_wrong_types_name_the_line() -> None:
    text = (
        "instagram:\n"
        "  app_id: 990602627938098\n"
        "server:\n"
        "  port: eighty\n"
        "storage:\n"
        "  synchronous: normal\n"
        "handoff:\n"
        "  pause_for: 12x\n"
        "timezone: Mars/Olympus\n"
        "ai: [1, 2]\n"
    )
    assert problems(text) == [
        "config.yaml:2:11: instagram.app_id: must be a string, got 990602627938098 "
        "(put it in quotes)",
        "config.yaml:4:9: server.port: must be a valid integer, got 'eighty'",
        "config.yaml:6:16: storage.synchronous: must be 'NORMAL' or 'FULL', got 'normal'",
        "config.yaml:8:14: handoff.pause_for: invalid duration '12x': use a number of seconds "
        "or a string like '30s', '15m', '12h', '7d', '2w'",
        "config.yaml:9:11: timezone: unknown time zone 'Mars/Olympus' "
        "(use an IANA name such as 'Europe/Berlin')",
        "config.yaml:10:5: ai: must be a mapping of keys, got a list",
    ]


def test_missing_required_key_in_list_item() -> None:
    text = "ai:\n  examples:\n    - message: hi\n"
    assert problems(text) == ["config.yaml:3:7: ai.examples[0]: missing required key 'reply'"]


def test_out_of_range_value() -> None:
    assert problems("worker:\n  concurrency: 0\n") == [
        "config.yaml:2:16: worker.concurrency: must be greater than or equal to 1, got 0"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("server:\n  port: 1\n host: x\n", "config.yaml:3:2: invalid YAML: "),
        ("a: [1, 2\nb: 3\n", "config.yaml:2:2: invalid YAML: expected ',' or ']'"),
        ("a: 1\n---\nb: 2\n", "config.yaml:2:1: invalid YAML: but found another document"),
        ("x: !python/object 1\n", "config.yaml:1:4: invalid YAML: could not determine"),
    ],
)
def test_yaml_syntax_error_names_the_line(text: str, expected: str) -> None:
    [problem] = problems(text)
    assert problem.startswith(expected)


def test_top_level_must_be_a_mapping() -> None:
    assert problems("- a\n- b\n") == [
        "config.yaml:1:1: the top level must be a mapping of keys, got a list"
    ]


def test_duplicate_keys_are_errors() -> None:
    text = "server:\n  port: 1\n  host: h\n  port: 2\nretention: {days: 3, days: 4}\n"
    assert problems(text) == [
        "config.yaml:4:3: server: duplicate key 'port' (first defined on line 2)",
        "config.yaml:5:22: retention: duplicate key 'days' (first defined on line 5)",
    ]


def test_merge_keys_are_not_duplicates() -> None:
    text = "x-defaults: &d\n  port: 1\nserver:\n  <<: *d\n  port: 2\n"
    # x-defaults is unknown (as it should be), but the merge itself is no duplicate
    assert problems(text) == ["config.yaml:1:1: unknown key 'x-defaults'"]


def test_all_problems_are_collected_in_line_order() -> None:
    text = "worker:\n  concurency: 2\nserver:\n  port: 1\n  port: x\nai:\n  modle: m\n"
    assert problems(text) == [
        "config.yaml:2:3: worker: unknown key 'concurency' (did you mean 'concurrency'?)",
        "config.yaml:5:3: server: duplicate key 'port' (first defined on line 4)",
        "config.yaml:5:9: server.port: must be a valid integer, got 'x'",
        "config.yaml:7:3: ai: unknown key 'modle' (did you mean 'model'?)",
    ]


def test_filename_is_as_given(tmp_path: Path) -> None:
    bad = tmp_path / "my.yaml"
    bad.write_text("servr: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad, env={})
    assert info.value.problems == [f"{bad}:1:1: unknown key 'servr' (did you mean 'server'?)"]


# --- environment ----------------------------------------------------------------------------


def test_env_overrides_win_over_the_file(tmp_path: Path) -> None:
    env = {
        "INSTASET_APP_SECRET": "app-s",
        "INSTASET_META_APP_SECRET": "meta-s",
        "INSTASET_VERIFY_TOKEN": "vt",
        "INSTASET_DB": "rel/x.db",
        "INSTASET_HOST": "0.0.0.0",
        "INSTASET_PORT": "9999",
    }
    text = "instagram:\n  app_secret: from-file\nserver:\n  port: 1\n"
    config = parse_config_text(text, "c.yaml", env)
    assert config.instagram.app_secret == SecretStr("app-s")
    assert config.instagram.verify_token == SecretStr("vt")
    assert config.instagram.webhook_secrets() == [b"app-s", b"meta-s"]
    assert config.server.host == "0.0.0.0"
    assert config.server.port == 9999
    assert config.storage.db_path() == Path.cwd() / "rel" / "x.db"


def test_empty_env_values_are_ignored() -> None:
    config = parse_config_text("server:\n  port: 1\n", "c.yaml", {"INSTASET_PORT": ""})
    assert config.server.port == 1


def test_invalid_env_value_names_the_variable() -> None:
    assert problems("", {"INSTASET_PORT": "http"}) == [
        "INSTASET_PORT (environment): server.port: must be a valid integer, got 'http'"
    ]


def test_env_does_not_leak_through_yaml_anchors() -> None:
    # sandbox shares server's mapping; INSTASET_HOST must not reach sandbox (no such key there)
    text = "server: &s {port: 5}\nsandbox: *s\n"
    config = parse_config_text(text, "c.yaml", {"INSTASET_HOST": "b"})
    assert (config.server.host, config.server.port, config.sandbox.port) == ("b", 5, 5)


def test_relative_storage_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "conf" / "config.yaml"
    cfg.parent.mkdir()
    cfg.write_text("storage:\n  path: data/i.db\n")
    assert load_config(cfg, env={}).storage.db_path() == cfg.parent / "data" / "i.db"


def test_webhook_secrets_skip_empty_and_duplicates() -> None:
    assert InstagramConfig().webhook_secrets() == []
    both = InstagramConfig(app_secret=SecretStr("a"), meta_app_secret=SecretStr("a"))
    assert both.webhook_secrets() == [b"a"]
    only_meta = InstagramConfig(app_secret=SecretStr(""), meta_app_secret=SecretStr("m"))
    assert only_meta.webhook_secrets() == [b"m"]


def test_models_are_frozen_and_strict() -> None:
    with pytest.raises(ValidationError):
        Config().server.port = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        StorageConfig.model_validate({"path": "x", "sync": "FULL"})


# --- paths ----------------------------------------------------------------------------------


def test_data_dir_follows_instaset_home(tmp_path: Path) -> None:
    assert data_dir({"INSTASET_HOME": str(tmp_path)}) == tmp_path
    assert data_dir({}) != tmp_path  # the platform default
    assert data_dir({}).name == "instaset"


def test_default_config_path_precedence(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    env = {"INSTASET_HOME": str(home)}
    assert default_config_path(env) == home / "config.yaml"  # nothing exists anywhere
    (Path.cwd() / "config.yaml").write_text("{}\n")
    assert default_config_path(env) == Path.cwd() / "config.yaml"
    (home / "config.yaml").write_text("{}\n")
    assert default_config_path(env) == home / "config.yaml"


# --- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(minutes=90)),
        (" 1.5h ", timedelta(minutes=90)),
        ("90", timedelta(seconds=90)),
        (45, timedelta(seconds=45)),
        (0.5, timedelta(milliseconds=500)),
        (0, timedelta(0)),
        (timedelta(minutes=3), timedelta(minutes=3)),
    ],
)
def test_duration_parsing(raw: object, expected: timedelta) -> None:
    assert parse_duration(raw) == expected
    # A config field of the generic type (booking.buffer may be 0; handoff.pause_for may not).
    assert BookingConfig.model_validate({"buffer": raw}).buffer == expected
    if isinstance(raw, str):
        assert re.fullmatch(DURATION_PATTERN, raw)  # the JSON Schema accepts it too


@pytest.mark.parametrize("raw", ["", "h", "12x", "-5s", "5 hours", "1e3", True, None, -1, [1],
                                 # months or minutes? ("6M" once meant six minutes)
                                 "6M", "1 M", "1h30M", "6\tM"])
def test_duration_rejects(raw: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(raw)
    if isinstance(raw, str):
        assert not re.fullmatch(DURATION_PATTERN, raw)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(hours=12), "12h"),
        (timedelta(minutes=90), "90m"),
        (timedelta(weeks=2), "2w"),
        (timedelta(days=3), "3d"),
        (timedelta(seconds=61), "61s"),
        (timedelta(milliseconds=1500), "1.5s"),
        (timedelta(0), "0s"),
    ],
)
def test_duration_formatting_round_trips(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(text) == value
    assert BookingConfig(buffer=value).model_dump(mode="json")["buffer"] == text


# --- schema and dumps -----------------------------------------------------------------------


def test_json_schema() -> None:
    schema = config_json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "source" not in schema["properties"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(Config.model_fields) - {"source"}
    pause = schema["$defs"]["HandoffConfig"]["properties"]["pause_for"]
    assert {"type": "string", "pattern": DURATION_PATTERN} in pause["anyOf"]
    json.dumps(schema)  # serialisable as is


def test_duration_defaults_in_the_schema_are_written_as_the_config_writes_them() -> None:
    """An editor inserting a default must write a valid config (pydantic wrote "PT12H",
    which the loader refuses; issue-2 audit)."""
    defaults: list[tuple[str, str, object]] = []
    for name, model in config_json_schema()["$defs"].items():
        for field, prop in model.get("properties", {}).items():
            if {"type": "string", "pattern": DURATION_PATTERN} in prop.get("anyOf", ()):
                defaults.append((name, field, prop.get("default")))
    assert ("HandoffConfig", "pause_for", "12h") in defaults
    assert ("BookingConfig", "horizon", "2w") in defaults
    for name, field, value in defaults:
        assert isinstance(value, str) and re.fullmatch(DURATION_PATTERN, value), (name, field)
    text = "handoff:\n  pause_for: 12h\nbooking:\n  horizon: 2w\n  buffer: 0s\n"
    loaded = parse_config_text(text, "c.yaml", {})
    assert loaded.handoff.pause_for == Config().handoff.pause_for
    assert loaded.booking.horizon == Config().booking.horizon


def test_json_dump_masks_secrets() -> None:
    config = parse_config_text(f"instagram:\n  app_secret: {SECRET}\n", "c.yaml", {})
    data = config_to_json(config)
    assert data["instagram"]["app_secret"] == "***"
    assert SECRET not in json.dumps(data)
    assert SECRET not in repr(config)


# --- CLI ------------------------------------------------------------------------------------

runner = CliRunner()


def test_init_writes_a_loadable_config_and_refuses_to_overwrite(_isolated: Path) -> None:
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    written = _isolated / "config.yaml"
    assert result.stdout.strip() == str(written)
    assert written.read_text() == render_init_config()
    assert written.stat().st_mode & 0o077 == 0
    assert load_config(env={"INSTASET_HOME": str(_isolated)}).source == written

    written.write_text("server:\n  port: 1234\n")
    again = runner.invoke(app, ["init"])
    assert again.exit_code == 1
    assert "already exists" in again.stderr
    assert written.read_text() == "server:\n  port: 1234\n"

    forced = runner.invoke(app, ["init", "--force"])
    assert forced.exit_code == 0
    assert written.read_text() == render_init_config()


def test_workflows_validate_ok_and_failing(_isolated: Path) -> None:
    ok = runner.invoke(app, ["workflows", "validate"])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.strip() == ("config OK: 0 workflows (no config file found: the built-in "
                                 "defaults; `instaset init` writes one, --config names one)")

    two = _isolated.parent / "two.yaml"
    two.write_text(WORKFLOWS.split("  - name: third")[0].replace("name: guide", "name: g2", 1))
    result = runner.invoke(app, ["--config", str(two), "workflows", "validate"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "config OK: 2 workflows"

    bad = _isolated.parent / "bad.yaml"
    bad.write_text("server:\n  port: 1\n  prot: 2\nworker:\n  concurrency: many\n")
    result = runner.invoke(app, ["--config", str(bad), "workflows", "validate"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{bad}:3:3: server: unknown key 'prot' (did you mean 'port'?)",
        f"{bad}:5:16: worker.concurrency: must be a valid integer, got 'many'",
    ]

    via_env = runner.invoke(app, ["workflows", "validate"], env={"INSTASET_CONFIG": str(bad)})
    assert via_env.exit_code == 1

    missing = runner.invoke(app, ["-c", str(bad) + ".nope", "workflows", "validate"])
    assert missing.exit_code == 1
    assert "config file not found" in missing.stderr


def test_config_show_never_prints_secrets(_isolated: Path) -> None:
    _isolated.mkdir(parents=True)
    (_isolated / "config.yaml").write_text(
        f"instagram:\n  app_secret: {SECRET}\n  verify_token: {SECRET}-vt\n"
    )
    env = {"INSTASET_META_APP_SECRET": SECRET + "-meta"}
    text = runner.invoke(app, ["config", "show"], env=env)
    as_json = runner.invoke(app, ["config", "show", "--json"], env=env)
    for result in (text, as_json):
        assert result.exit_code == 0, result.output
        assert SECRET not in result.output
    data = json.loads(as_json.stdout)
    assert data["instagram"]["app_secret"] == "***"
    assert data["instagram"]["meta_app_secret"] == "***"
    assert data["instagram"]["verify_token"] == "***"
    assert data["handoff"]["pause_for"] == "12h"
    assert data["source"] == str(_isolated / "config.yaml")
    assert "app_secret: '***'" in text.stdout


def test_config_schema_command_prints_the_schema() -> None:
    result = runner.invoke(app, ["config", "schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == config_json_schema()


def test_validate_strict_fails_on_warnings_and_says_so(_isolated: Path) -> None:
    warned = _isolated.parent / "warned.yaml"
    warned.write_text("workflows:\n  - name: a\n    trigger: {dm: {keywords: [hi]}}\n"
                      "    actions:\n      - stage: qualifed\n")
    plain = runner.invoke(app, ["--config", str(warned), "workflows", "validate"])
    assert plain.exit_code == 0 and plain.stdout.strip() == "config OK: 1 workflow"
    assert "[unknown-stage]" in plain.stderr
    strict = runner.invoke(app, ["--config", str(warned), "workflows", "validate", "--strict"])
    assert strict.exit_code == 1
    assert strict.stdout.strip() == ("config loads (1 workflow), but --strict fails it on 1"
                                     " warning")


def test_validate_json_lists_errors_and_warnings(_isolated: Path) -> None:
    """Every listing has --json (interface.md): validate's errors and warnings too."""
    warned = _isolated.parent / "warned.yaml"
    warned.write_text("workflows:\n  - name: a\n    trigger: {dm: {keywords: [hi]}}\n"
                      "    actions:\n      - stage: qualifed\n")
    doc = json.loads(runner.invoke(
        app, ["--config", str(warned), "workflows", "validate", "--json"]).stdout)
    assert doc["ok"] is True and doc["workflows"] == 1 and doc["errors"] == []
    assert doc["source"] == str(warned.absolute())
    [warning] = doc["warnings"]
    assert warning["code"] == "unknown-stage" and warning["file"] == str(warned)
    assert warning["line"] == 5 and warning["workflow"] == "a"
    strict = runner.invoke(app, ["--config", str(warned), "workflows", "validate", "--strict",
                                 "--json"])
    assert strict.exit_code == 1 and json.loads(strict.stdout)["ok"] is False

    bad = _isolated.parent / "bad.yaml"
    bad.write_text("server:\n  port: 1\n  prot: 2\n")
    result = runner.invoke(app, ["--config", str(bad), "workflows", "validate", "--json"])
    assert result.exit_code == 1 and result.stderr == ""
    assert json.loads(result.stdout) == {
        "ok": False, "source": None, "workflows": None, "warnings": [],
        "errors": [f"{bad}:3:3: server: unknown key 'prot' (did you mean 'port'?)"]}
