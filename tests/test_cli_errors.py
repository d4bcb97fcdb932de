"""Errors the CLI reports in one line (exit 1, no traceback), `--config` after the command,
and the permissions of the files that hold people's data."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from instaset.cli import app, hoist_config
from instaset.cli.app import handle_errors
from instaset.ops import backup
from instaset.store.db import open_database

runner = CliRunner()


@pytest.mark.parametrize(("exc", "says"), [
    (sqlite3.OperationalError("attempt to write a readonly database"), "may write"),
    (sqlite3.OperationalError("database is locked"), "another process"),
    (IsADirectoryError(21, "Is a directory", "/tmp/x"), "Is a directory: /tmp/x"),
    (PermissionError(13, "Permission denied", "/data/config.yaml"),
     "Permission denied: /data/config.yaml"),
])
def test_database_and_file_errors_are_one_line(exc: Exception, says: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    @handle_errors
    def command() -> None:
        raise exc

    with pytest.raises(typer.Exit) as info:
        command()
    assert info.value.exit_code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and err.count("\n") == 1


def test_other_exceptions_still_propagate() -> None:
    @handle_errors
    def command() -> None:
        raise KeyError("a bug stays visible")

    with pytest.raises(KeyError):
        command()


@pytest.mark.parametrize(("argv", "expected"), [
    (["inbox", "--config", "c.yaml", "--json"], ["--config", "c.yaml", "inbox", "--json"]),
    (["inbox", "show", "bob", "--config=c.yaml"], ["--config=c.yaml", "inbox", "show", "bob"]),
    (["--config", "c.yaml", "inbox"], ["--config", "c.yaml", "inbox"]),
    (["inbox", "reply", "bob", "--", "--config", "x"], ["inbox", "reply", "bob", "--",
                                                       "--config", "x"]),
    (["inbox", "--config"], ["inbox", "--config"]),  # no value: typer reports it
    # replay's own --config OTHER is the config to compare with, not the global one
    (["workflows", "replay", "--config", "o.yaml"], ["workflows", "replay", "--config",
                                                     "o.yaml"]),
    # ... also after a global --config naming the current config (found by an audit: the
    # candidate was hoisted over the current one, and replay showed no difference)
    (["--config", "c.yaml", "workflows", "replay", "--config", "o.yaml"],
     ["--config", "c.yaml", "workflows", "replay", "--config", "o.yaml"]),
    (["-c", "c.yaml", "workflows", "replay", "--config=o.yaml"],
     ["-c", "c.yaml", "workflows", "replay", "--config=o.yaml"]),
    (["--config=c.yaml", "workflows", "replay", "--config", "o.yaml"],
     ["--config=c.yaml", "workflows", "replay", "--config", "o.yaml"]),
])
def test_config_after_the_command_moves_in_front(argv: list[str], expected: list[str]) -> None:
    assert hoist_config(argv) == expected


@pytest.mark.parametrize("argv", [
    ["--config", "a.yaml", "inbox", "--config", "b.yaml"],
    ["-c", "a.yaml", "stats", "--config=b.yaml"],
])
def test_a_config_before_and_after_the_command_is_refused(argv: list[str]) -> None:
    with pytest.raises(ValueError, match="--config is given twice"):
        hoist_config(argv)


def test_config_after_the_command_works_end_to_end(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere" / "instaset.db"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage:\n  path: {db}\n", "utf-8")
    env = {**os.environ, "INSTASET_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "instaset", "inbox", "--json", "--config",
                           str(cfg)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert db.exists()  # the command used the config given after it
    assert not (tmp_path / "home" / "instaset.db").exists()


async def test_a_new_database_and_its_directory_are_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "instaset.db"
    db = await open_database(path)
    try:
        async with db.tx() as conn:
            await conn.execute("CREATE TABLE t(x)")  # the WAL exists now
    finally:
        await db.close()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    copy = tmp_path / "b.db"
    await backup(path, copy)
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600


def test_backup_into_a_directory_writes_a_dated_file_there(tmp_path: Path) -> None:
    home = Path(os.environ["INSTASET_HOME"])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage:\n  path: {home / 'instaset.db'}\n", "utf-8")
    assert runner.invoke(app, ["--config", str(cfg), "inbox"]).exit_code == 0  # creates it
    target = tmp_path / "dir"
    target.mkdir()
    result = runner.invoke(app, ["--config", str(cfg), "backup", str(target)])
    assert result.exit_code == 0, result.output
    assert [p.name.startswith("instaset-") for p in target.iterdir()] == [True]
    assert not (tmp_path / "dir.part").exists()


@pytest.mark.parametrize("rich", [False, True], ids=["echo", "rich"])
def test_a_reader_that_stops_early_gets_no_error_message(tmp_path: Path, rich: bool) -> None:
    """`instaset inbox | head`: the pipe closes after a few lines; that is no error of the
    command (docs audit: every listing printed 'error: Broken pipe')."""
    script = tmp_path / "lines.py"
    script.write_text(
        "import typer\n"
        "from instaset.cli.app import handle_errors\n"
        "app = typer.Typer()\n"
        "@app.command()\n"
        "@handle_errors\n"
        "def lines(rich: bool = False) -> None:\n"
        "    import sys\n"
        "    cli_app = sys.modules['instaset.cli.app']\n"
        "    for i in range(200_000):\n"
        "        if rich:\n"
        "            cli_app.out_console.print(f'line {i} ' + 'x' * 40)\n"
        "        else:\n"
        "            typer.echo(f'line {i} ' + 'x' * 40)\n"
        "app()\n", "utf-8")
    proc = subprocess.Popen([sys.executable, str(script), *(["--rich"] if rich else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=str(Path(__file__).parent.parent))
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0
    assert first.startswith(b"line 0 ")
    assert err == b""


@pytest.mark.parametrize(("argv", "says"), [
    (["--log-level", "LOUD"], "Invalid value for '--log-level'"),
    (["--port", "99999"], "Invalid value for '--port'"),
    (["--port", "65536"], "Invalid value for '--port'"),
    (["--port", "-1"], "Invalid value for '--port'"),
])
def test_a_bad_serve_option_is_a_usage_error(argv: list[str], says: str) -> None:
    """CLI review, session 15: an unknown log level ended in a traceback, and a port past
    65535 listened on another port (99999 mod 65536, or any free one for 65536)."""
    result = CliRunner().invoke(app, ["serve", *argv])
    assert result.exit_code == 2
    assert says in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("level", ["critical", "WARN", "Debug"])
def test_every_level_logging_knows_is_taken(level: str) -> None:
    """The fix review's point: CRITICAL and WARN worked before the level became a choice."""
    result = CliRunner().invoke(app, ["serve", "--log-level", level, "--port", "70000"])
    assert result.exit_code == 2 and "'--port'" in result.output  # the level was fine


def test_demo_says_that_it_does_not_use_the_config_given(tmp_path: Path) -> None:
    """The demo runs on its own embedded config; a --config given (here an invalid one) was
    silently ignored (s17 audit D5): one line on stderr says so, and the demo still runs."""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"storage:\n  path: {tmp_path / 'mine.db'}\nbogus: 1\n", "utf-8")
    env = {**os.environ, "INSTASET_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "instaset", "demo", "--config", str(cfg)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ("note: the demo runs on its own embedded copy of "
                           f"config.example.yaml; the file you gave ({cfg}) is not read\n")
    assert "every step through the real pipeline" in done.stdout
    assert not (tmp_path / "mine.db").exists() and not (tmp_path / "home").exists()
