"""backup / restore / service install, and a database from the oldest schema migrating."""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from instaset.cli import app
from instaset.daemon import single_instance
from instaset.errors import InstasetError, StoreError
from instaset.ops import backup, cron_line, restore, systemd_unit
from instaset.store import history
from instaset.store.db import open_database
from instaset.store.migrate import migrations

runner = CliRunner()


def write_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f'storage:\n  path: "{tmp_path / "live.db"}"\n')
    return cfg


async def fill(path: Path, n: int) -> None:
    db = await open_database(path)
    try:
        await history.upsert_account(db, "acct", username="c", now=1.0)
        async with db.tx() as conn:
            for i in range(n):
                await history.touch_contact(conn, "acct", f"u{i}", now=float(i))
                await history.insert_message(
                    conn, account_id="acct", contact_id=f"u{i}", mid=f"m{i}", direction="in",
                    sent_by="contact", text=f"hello {i}", attachments=[], created_at=float(i))
    finally:
        await db.close()


def count(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


async def test_backup_while_open_and_restore_round_trip(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    await fill(live, 50)
    writer = await open_database(live)  # the "daemon" keeps writing during the backup
    try:
        async def keep_writing() -> None:
            for i in range(50, 80):
                async with writer.tx() as conn:
                    await history.touch_contact(conn, "acct", f"u{i}", now=float(i))
                await asyncio.sleep(0)

        task = asyncio.create_task(keep_writing())
        size = await backup(live, tmp_path / "b.db")
        await task
    finally:
        await writer.close()
    assert size > 0
    copied = count(tmp_path / "b.db", "contacts")
    assert 50 <= copied <= 80  # one consistent snapshot, somewhere in the middle
    assert count(tmp_path / "b.db", "messages") == 50
    kept = restore(tmp_path / "b.db", live)
    assert kept is not None and count(kept, "contacts") == 80
    assert count(live, "contacts") == copied


def test_restore_refuses_while_daemon_runs_and_bad_files(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    asyncio.run(fill(live, 3))
    src = tmp_path / "src.db"
    asyncio.run(fill(src, 7))
    with single_instance(live), pytest.raises(InstasetError, match="already running"):
        restore(src, live)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="not an instaset database"):
        restore(junk, live)
    newer = tmp_path / "newer.db"
    asyncio.run(fill(newer, 1))
    conn = sqlite3.connect(newer)
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this instaset"):
        restore(newer, live)
    assert count(live, "contacts") == 3  # untouched by the refusals


def test_cli_backup_restore_and_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(tmp_path)
    asyncio.run(fill(tmp_path / "live.db", 5))
    out = runner.invoke(app, ["--config", str(cfg), "backup", str(tmp_path / "bk.db")])
    assert out.exit_code == 0, out.output
    # A folder that is not there (an unmounted drive): refused, nothing created.
    missing = tmp_path / "usb" / "bk.db"
    out = runner.invoke(app, ["--config", str(cfg), "backup", str(missing)])
    assert out.exit_code == 1 and "does not exist (is the drive mounted?)" in out.stderr
    assert not missing.parent.exists()
    # An existing folder gets a dated file in it (it said "Is a directory: ...part").
    folder = tmp_path / "kept"
    folder.mkdir()
    out = runner.invoke(app, ["--config", str(cfg), "backup", str(folder)])
    assert out.exit_code == 0, out.output
    [made] = folder.iterdir()
    assert made.name.startswith("instaset-") and count(made, "contacts") == 5
    assert count(tmp_path / "bk.db", "contacts") == 5
    out = runner.invoke(app, ["--config", str(cfg), "restore", str(tmp_path / "bk.db")])
    assert out.exit_code == 1 and "--yes" in out.output  # no TTY, no --yes: refused
    out = runner.invoke(app, ["--config", str(cfg), "restore", "--yes", str(tmp_path / "bk.db")])
    assert out.exit_code == 0, out.output
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    out = runner.invoke(app, ["--config", str(cfg), "service", "install"])
    assert out.exit_code == 0, out.output
    unit = (tmp_path / "xdg" / "systemd" / "user" / "instaset.service").read_text()
    assert "-m instaset --config" in unit and unit.rstrip().endswith("WantedBy=default.target")
    assert "ExecStart=" in unit and " serve" in unit
    assert "TimeoutStopSec=30" in unit  # worker.shutdown_grace (10 s by default) + 20
    assert "purge" in out.output and "* * *" in out.output


async def test_oldest_schema_upgrades_with_every_row(tmp_path: Path) -> None:
    """Build a database at schema 0001 only, fill it, then open it with every migration."""
    path = tmp_path / "old.db"
    first = migrations()[0]
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at REAL NOT NULL) STRICT;" + first.sql
        + f"INSERT INTO schema_migrations VALUES (1, '{first.name}', 0);"
        "INSERT INTO accounts(id, username, created_at, updated_at) VALUES ('a', 'c', 0, 0);"
        "INSERT INTO contacts(account_id, id, username, first_seen_at, updated_at)"
        " VALUES ('a', 'u1', 'x', 0, 0);"
        "INSERT INTO conversations(account_id, contact_id, updated_at) VALUES ('a', 'u1', 0);"
        "INSERT INTO events(dedupe_key, account_id, kind, occurred_at, received_at, raw)"
        " VALUES ('msg:1', 'a', 'message', 0, 0, '{}');"
        "INSERT INTO messages(account_id, contact_id, mid, direction, sent_by, text, created_at)"
        " VALUES ('a', 'u1', 'm1', 'in', 'contact', 'hi', 0);"
        "INSERT INTO jobs(kind, key, run_at, created_at) VALUES ('x', 'k', 0, 0);"
        "INSERT INTO sends(key, account_id, kind, body, created_at, updated_at)"
        " VALUES ('s', 'a', 'text', '{}', 0, 0);"
    )
    conn.commit()
    conn.close()
    db = await open_database(path)
    try:
        assert await db.schema_version() == len(migrations())
        for table, expected in [("accounts", 1), ("contacts", 1), ("conversations", 1),
                                ("events", 1), ("messages", 1), ("jobs", 1), ("sends", 1)]:
            row = await db.fetchone(f"SELECT count(*) FROM {table}")
            assert row is not None and row[0] == expected, table
        msg = await db.fetchone("SELECT text, attachments FROM messages")
        assert msg is not None and msg[0] == "hi" and json.loads(msg[1]) == []
    finally:
        await db.close()


async def _tls_roundtrip(tmp_path: Path) -> None:
    """`serve --tls-cert/--tls-key` for real: /healthz over HTTPS."""
    import ssl

    import aiohttp

    from instaset.config import Config
    from instaset.daemon import serving, tls_context

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    config = Config.model_validate({"storage": {"path": str(tmp_path / "tls.db")}})
    async with serving(config, host="127.0.0.1", port=0,
                       ssl_context=tls_context(cert, key)) as srv:
        assert srv.url.startswith("https://")
        client_ctx = ssl.create_default_context(cafile=str(cert))
        client_ctx.check_hostname = False
        async with aiohttp.ClientSession() as session, session.get(
            f"{srv.url}/healthz", ssl=client_ctx, timeout=aiohttp.ClientTimeout(total=10)
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["database"] == "ok"


_NEEDS_OPENSSL = pytest.mark.skipif(shutil.which("openssl") is None,
                                    reason="needs the openssl command")


@_NEEDS_OPENSSL
async def test_serve_over_tls(tmp_path: Path) -> None:
    from instaset.daemon import tls_context

    await _tls_roundtrip(tmp_path)
    with pytest.raises(InstasetError, match="cannot load the TLS certificate"):
        tls_context(tmp_path / "key.pem", tmp_path / "cert.pem")


@_NEEDS_OPENSSL
def test_serve_over_tls_on_the_daemon_loop(tmp_path: Path) -> None:
    """The same on the loop `instaset serve` runs (uvloop where installed)."""
    import asyncio
    import importlib.util

    from instaset.cli.app import run_server

    async def on_that_loop() -> str:
        await _tls_roundtrip(tmp_path)
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    expected = "asyncio" if importlib.util.find_spec("uvloop") is None else "uvloop"
    assert run_server(on_that_loop)() == expected


def test_the_service_runs_on_the_files_this_command_sees(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """INSTASET_HOME / INSTASET_DB and the config this command reads reach the unit and the
    cron line (without them the service ran on ~/.local/share/instaset: another config,
    database and secrets file; docs audit)."""
    home = tmp_path / "my home%"
    home.mkdir()
    (home / "config.yaml").write_text("{}\n", "utf-8")
    monkeypatch.chdir(tmp_path)
    env = {"INSTASET_HOME": str(home), "INSTASET_DB": "data/x.db"}
    unit = systemd_unit(None, env)
    assert f'Environment="INSTASET_HOME={str(home).replace("%", "%%")}"' in unit
    assert f'Environment="INSTASET_DB={tmp_path / "data" / "x.db"}"' in unit
    [start] = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert shlex.split(start.replace("%%", "%"))[-3:] == [
        "--config", str(home / "config.yaml"), "serve"]
    line = cron_line(None, env)
    assert line.startswith("17 3 * * * INSTASET_HOME=") and line.endswith(" purge")
    assert "\\%" in line and shlex.split(line.replace("\\%", "%"))[5] == f"INSTASET_HOME={home}"
    # No config file yet: none named (the daemon would look where this command looks).
    empty = tmp_path / "empty"
    empty.mkdir()
    bare = systemd_unit(None, {"INSTASET_HOME": str(empty)}, shutdown_grace=45)
    assert "TimeoutStopSec=65" in bare
    assert f'Environment="INSTASET_HOME={empty}"' in bare and "--config" not in bare


async def test_serve_says_at_start_when_webhooks_cannot_work(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Without an app secret every webhook is refused and without a verify token Meta
    cannot verify the URL: said when the daemon starts, not at Meta's first delivery."""
    import logging

    from instaset.config import Config
    from instaset.daemon import serving

    def config(name: str, **instagram: str) -> Config:
        return Config.model_validate({"storage": {"path": str(tmp_path / f"{name}.db")},
                                      "secrets": {"backend": "memory"},
                                      "instagram": instagram})

    caplog.set_level(logging.WARNING, "instaset")
    async with serving(config("bare"), host="127.0.0.1", port=0):
        pass
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("no app secret: every webhook will be refused") for m in said)
    assert any(m.startswith("no verify token") for m in said)
    caplog.clear()
    async with serving(config("set", app_secret="s3cret", verify_token="vt"),
                       host="127.0.0.1", port=0):
        pass
    assert not [r for r in caplog.records if "no app secret" in r.getMessage()
                or "no verify token" in r.getMessage()]
    caplog.clear()
    async with serving(config("empty", app_secret="s3cret", verify_token=""),
                       host="127.0.0.1", port=0):
        pass
    assert any(r.getMessage().startswith("no verify token") for r in caplog.records)


def test_version_option() -> None:
    from typer.testing import CliRunner

    from instaset import __version__
    from instaset.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"instaset {__version__}\n"


async def test_a_port_in_use_names_the_ways_to_choose_another(tmp_path: Path) -> None:
    import socket

    from instaset.config import Config
    from instaset.daemon import serving

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = Config.model_validate({"storage": {"path": str(tmp_path / "p.db")},
                                        "secrets": {"backend": "memory"}})
        with pytest.raises(InstasetError, match=f"cannot listen on 127.0.0.1:{port}") as info:
            async with serving(config, host="127.0.0.1", port=port):
                pass
    assert "--port, server.port or INSTASET_PORT" in str(info.value)
