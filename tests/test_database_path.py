"""What ``storage.path`` may point at (s17 audit D2, D7): a directory is one clean error
(exit 1, no traceback from aiosqlite's worker thread after it); another program's SQLite
file is refused before instaset writes anything into it, while an empty file is new."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from instaset.doctor import run_checks
from instaset.errors import ForeignDatabaseError
from instaset.store.db import open_database


def _cli(*argv: str, config: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INSTASET_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "instaset", *argv, "--config", str(config)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_a_directory_as_the_database_is_one_error_and_no_traceback(tmp_path: Path) -> None:
    """aiosqlite's failed connect left its worker thread to post to the closed loop: in
    about half the runs "RuntimeError: Event loop is closed" followed the message."""
    folder = tmp_path / "dirdb"
    folder.mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage:\n  path: {folder}\n", "utf-8")
    for argv in [("inbox",), ("accounts",), ("stats",), ("export",)] * 3:
        done = _cli(*argv, config=cfg, home=tmp_path / "home")
        assert done.returncode == 1, (argv, done.stderr)
        assert done.stderr == (
            f"error: cannot open database {folder}: it is a directory; storage.path names "
            f"the database file itself (e.g. {folder / 'instaset.db'})\n"), (argv, done.stderr)


def test_a_failed_connect_leaves_no_thread_to_post_to_a_closed_loop(tmp_path: Path) -> None:
    """The same race below the directory check (which now answers first): SQLite itself
    refusing the path. Each run opens and closes its own event loop, as a CLI command does;
    before the fix about half of them printed a thread's traceback."""
    folder = tmp_path / "dirdb"
    folder.mkdir()
    script = (
        "import asyncio, sqlite3, sys\n"
        "from pathlib import Path\n"
        "from instaset.store.db import _start\n"
        "for _ in range(10):\n"
        "    try:\n"
        f"        asyncio.run(_start(Path({str(folder)!r})))\n"
        "    except sqlite3.Error:\n"
        "        pass\n"
        "    else:\n"
        "        sys.exit('opened a directory')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def _foreign(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE x(a)")
        conn.execute("INSERT INTO x VALUES (1)")
    conn.close()


def _objects(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute("SELECT type, name FROM sqlite_master").fetchall())
    finally:
        conn.close()


async def test_another_programs_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    _foreign(path)
    before = path.read_bytes()
    with pytest.raises(ForeignDatabaseError) as info:
        await open_database(path)
    message = str(info.value)
    assert message.startswith(f"{path} is not an instaset database: it holds 1 schema object")
    assert "no schema_migrations table" in message
    assert "set storage.path (or INSTASET_DB) to a new file" in message
    assert _objects(path) == [("table", "x")]
    assert path.read_bytes() == before  # not even switched to WAL
    assert not Path(f"{path}-wal").exists()


@pytest.mark.parametrize("empty", ["zero bytes", "no table"])
async def test_an_empty_file_is_set_up_as_a_new_database(tmp_path: Path, empty: str) -> None:
    path = tmp_path / "new.db"
    path.touch()
    if empty == "no table":
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA user_version=7")
        conn.close()
    db = await open_database(path)
    await db.close()
    assert ("table", "schema_migrations") in _objects(path)


async def test_an_instaset_database_opens_again(tmp_path: Path) -> None:
    path = tmp_path / "i.db"
    await (await open_database(path)).close()
    await (await open_database(path)).close()  # its own tables are no reason to refuse it


def test_the_cli_and_doctor_refuse_it_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    _foreign(path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage:\n  path: {path}\n", "utf-8")
    done = _cli("accounts", config=cfg, home=tmp_path / "home")
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {path} is not an instaset database: ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert _objects(path) == [("table", "x")]


async def test_doctor_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    _foreign(path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage:\n  path: {path}\n", "utf-8")
    [database] = [c for c in await run_checks(cfg, offline=True) if c.name == "database"]
    assert database.status == "fail"
    assert database.message.startswith(f"{path} is not an instaset database")
    assert database.fix is not None and database.fix.startswith("set storage.path")
    assert database.ref == "docs/setup.md#doctor-database"
    assert _objects(path) == [("table", "x")]


def test_doctor_says_a_directory_is_not_a_database_file(tmp_path: Path) -> None:
    """A newcomer's audit (s17): doctor said "unable to open database file" and suggested
    restoring a backup or upgrading instaset."""
    folder = tmp_path / "dirdb"
    folder.mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage:\n  path: {folder}\n", "utf-8")
    env = {**os.environ, "INSTASET_HOME": str(tmp_path / "home"), "COLUMNS": "1000"}
    done = subprocess.run([sys.executable, "-m", "instaset", "doctor", "--offline", "--config",
                           str(cfg)], capture_output=True, text=True, env=env, timeout=120)
    assert f"{folder} is a directory" in done.stdout, done.stdout
    assert str(folder / "instaset.db") in done.stdout
    assert "restore a backup" not in done.stdout
