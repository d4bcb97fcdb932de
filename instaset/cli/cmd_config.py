"""``instaset init``, ``instaset config schema|show`` and ``instaset workflows validate``.

:data:`config_app` and :data:`workflows_app` are the sub-Typers; other command modules add
commands to them (e.g. ``workflows test``). Config errors are printed one problem per line on
stderr, exactly as :class:`~instaset.errors.ConfigError` words them, and exit with code 1.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import typer

from instaset.cli.app import STATE, app, fail, handle_errors, sub_app
from instaset.errors import ConfigError

if TYPE_CHECKING:
    from instaset.config import Config
    from instaset.config_storage import StorageLocation

# yaml, the config models (pydantic) and platformdirs are imported inside the commands:
# `instaset --help` must not pay for them (see instaset/cli/app.py).

config_app = sub_app(help="Inspect the configuration.", no_args_is_help=True)
workflows_app = sub_app(help="Check and try the workflows.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(workflows_app, name="workflows")


def load_or_exit() -> Config:
    """The config named by ``--config``/``INSTASET_CONFIG`` or the default one; on a
    :class:`ConfigError` print its lines on stderr (no Rich: it would wrap them) and exit 1."""
    from instaset.config import load_config

    try:
        return load_config(STATE.config_path)
    except ConfigError as exc:
        for line in exc.problems:
            typer.echo(line, err=True)
        raise typer.Exit(1) from None


def storage_or_exit() -> StorageLocation:
    """Only where the database is, for read-only commands: the ``storage`` section read
    without building the whole config (see :mod:`instaset.config_storage`); when that
    section is not plainly valid, the full loader decides (and reports like
    :func:`load_or_exit`)."""
    from instaset.config_storage import StorageLocation, quick_storage

    found = quick_storage(STATE.config_path)
    if found is not None:
        _warn_if_invalid()
        return found
    storage = load_or_exit().storage
    return StorageLocation(storage.db_path(), storage.synchronous)


def _warn_if_invalid() -> None:
    """A read-only command goes on when the config is broken outside ``storage`` (the
    creator can read their inbox while fixing a workflow), but says so on stderr: its first
    problem, as the full loader words it (file:line). A config found valid is remembered
    (:func:`~instaset.config_storage.config_stamp`): the models are built once per change
    of the config, not at every command."""
    from instaset.config_storage import checked, config_stamp, remember_checked

    stamp = config_stamp(STATE.config_path)
    if checked(stamp):
        return
    from instaset.config import load_config

    try:
        load_config(STATE.config_path)
    except ConfigError as exc:
        more = len(exc.problems) - 1
        typer.echo(f"warning: {exc.problems[0]}" + (f" (and {more} more)" if more else "")
                   + "; this command reads only storage.path and goes on; `instaset workflows"
                   " validate` lists every problem", err=True)
        return
    remember_checked(stamp)


@app.command()
@handle_errors
def init(
    force: bool = typer.Option(False, "--force", help="Overwrite an existing config file."),
) -> None:
    """Write a commented config.yaml into the data directory (or to --config)."""
    from instaset.config import render_init_config
    from instaset.paths import CONFIG_FILENAME, ensure_data_dir, not_a_directory

    if STATE.config_path is not None:
        target = STATE.config_path.expanduser()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            problem = not_a_directory(target.parent)
            if problem is None:
                raise
            raise fail(f"cannot write {target}: {problem}") from None
    else:
        target = ensure_data_dir() / CONFIG_FILENAME
    if target.exists() and not force:
        raise fail(f"{target} already exists; use --force to overwrite it")
    # 0600: the file holds no secret now, but it is where people paste one later.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(render_init_config())
    typer.echo(str(target))


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of config.yaml (point your editor's YAML plugin at it)."""
    from instaset.config import config_json_schema

    typer.echo(json.dumps(config_json_schema(), indent=2))


@config_app.command("show")
def config_show(
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Print the effective config (file, defaults and env overrides); secrets as ***."""
    import yaml

    from instaset.config import config_to_json

    data = config_to_json(load_or_exit())
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    source = data.pop("source")
    typer.echo(f"# source: {source or 'built-in defaults (no config file)'}")
    typer.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n"))


@workflows_app.command("validate")
def workflows_validate(
    strict: bool = typer.Option(False, "--strict", help="Exit 1 on warnings too."),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON document on stdout: ok, workflows, errors, warnings."),
) -> None:
    """Check the config and its workflows; exit 1 with file:line errors."""
    from instaset.config import load_config
    from instaset.workflow_lint import lint_config

    if as_json:
        try:
            config = load_config(STATE.config_path)
        except ConfigError as exc:
            typer.echo(json.dumps({"ok": False, "source": None, "workflows": None,
                                   "errors": exc.problems, "warnings": []}, indent=2))
            raise typer.Exit(1) from None
        found = lint_config(config)
        ok = not (strict and found)
        typer.echo(json.dumps({
            "ok": ok, "source": str(config.source) if config.source is not None else None,
            "workflows": len(config.workflows), "errors": [],
            "warnings": [w.to_json() for w in found]}, indent=2))
        if not ok:
            raise typer.Exit(1)
        return
    config = load_or_exit()
    n = len(config.workflows)
    warnings = lint_config(config)
    if strict and warnings:
        typer.echo(f"config loads ({n} workflow{'s' if n != 1 else ''}), but --strict fails "
                   f"it on {len(warnings)} warning{'s' if len(warnings) != 1 else ''}")
    elif config.source is None:
        # Not "OK" alone: a config edited in another place than the one read would pass.
        typer.echo(f"config OK: {n} workflow{'s' if n != 1 else ''} (no config file found: "
                   "the built-in defaults; `instaset init` writes one, --config names one)")
    else:
        typer.echo(f"config OK: {n} workflow{'s' if n != 1 else ''}")
    # Warnings go to stderr: stdout stays one line for scripts.
    for warning in warnings:
        typer.echo(warning.format(), err=True)
    if strict and warnings:
        raise typer.Exit(1)


__all__ = ["config_app", "load_or_exit", "workflows_app"]
