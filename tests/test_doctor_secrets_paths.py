"""Audit s9 findings 2, 4, 5 and 6: doctor finds the app secret where ``serve`` does and
reports a secret store that cannot be read; INSTASET_HOME naming a regular file is an
error that says so (no traceback); an unreachable Graph API names the URL and what to check.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail
from typer.testing import CliRunner

from instaset.cli import app
from instaset.doctor import run_checks
from instaset.errors import InstasetError, Transient
from instaset.graph import GraphClient
from instaset.paths import ensure_data_dir, not_a_directory
from instaset.sandbox import Sandbox
from instaset.store import history
from instaset.store.db import open_database

STORE_SECRET = "storesecret-s9"
KEYRING_FIX = "unlock the keyring, or set `secrets.backend: file` in the config"
ACCT = "17841400000000042"
REPO = Path(__file__).resolve().parent.parent


def home() -> Path:
    return Path(os.environ["INSTASET_HOME"])


def write_config(tmp_path: Path, **sections: Any) -> Path:
    data: dict[str, Any] = {
        "instagram": {"verify_token": "vt-s9"},
        "storage": {"path": str(tmp_path / "s9.db"), "synchronous": "NORMAL"},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(data), "utf-8")
    return path


def store_file(values: dict[str, str]) -> Path:
    """The file backend's secrets.json in $INSTASET_HOME, as `connect` would leave it."""
    home().mkdir(mode=0o700, parents=True, exist_ok=True)
    path = home() / "secrets.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(values, fh)
    return path


def doctor_json(cfg: Path) -> tuple[int, dict[str, dict[str, Any]], str]:
    result = CliRunner().invoke(app, ["--config", str(cfg), "doctor", "--offline", "--json"])
    doc = json.loads(result.stdout)
    return result.exit_code, {c["name"]: c for c in doc["checks"]}, result.output


# -- finding 2: the app secret in the secret store -------------------------------------------


def test_doctor_finds_the_app_secret_in_the_secret_store(tmp_path: Path) -> None:
    store_file({"app_secret": STORE_SECRET})
    cfg = write_config(tmp_path, secrets={"backend": "file"})
    code, checks, output = doctor_json(cfg)
    assert checks["app secret"]["status"] == "ok", checks["app secret"]
    assert "1 in the secret store" in checks["app secret"]["message"]
    assert checks["secret store"]["status"] == "ok"
    assert str(home() / "secrets.json") in checks["secret store"]["message"]
    assert code == 0, output  # nothing else fails offline without a database
    assert STORE_SECRET not in output


def test_doctor_counts_config_and_store_secrets_once_each(tmp_path: Path) -> None:
    store_file({"app_secret": "cfg-secret", "meta_app_secret": STORE_SECRET})
    cfg = write_config(tmp_path, secrets={"backend": "file"},
                       instagram={"app_secret": "cfg-secret"})
    _, checks, output = doctor_json(cfg)
    assert checks["app secret"]["status"] == "ok"
    # the store's app_secret duplicates the config's: 2 distinct secrets, 1 from the store
    assert checks["app secret"]["message"] == "2 webhook secrets set (1 in the secret store)"
    assert "cfg-secret" not in output and STORE_SECRET not in output


def test_no_app_secret_anywhere_names_both_places(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, secrets={"backend": "file"})
    code, checks, _ = doctor_json(cfg)
    assert code == 1
    secret = checks["app secret"]
    assert secret["status"] == "fail"
    assert "INSTASET_APP_SECRET" in secret["fix"] and "instagram.app_secret" in secret["fix"]
    assert "secret store" in secret["fix"] and "`app_secret`" in secret["fix"]


# -- finding 5: a secret backend that cannot be used -----------------------------------------


@pytest.fixture
def no_os_keyring() -> Iterator[None]:
    """The keyring library's own "no backend" keyring, as on a server without one."""
    before: KeyringBackend = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        keyring.set_keyring(before)


def test_doctor_reports_a_keyring_backend_without_a_keyring(
    tmp_path: Path, no_os_keyring: None
) -> None:
    cfg = write_config(tmp_path, secrets={"backend": "keyring"},
                       instagram={"app_secret": "cfg-secret"})
    code, checks, output = doctor_json(cfg)
    assert code == 1
    store = checks["secret store"]
    assert store["status"] == "fail"
    assert "NoKeyringError" in store["message"] and "'app_secret'" in store["message"]
    assert KEYRING_FIX in store["fix"]
    # the config's secret is still found
    assert checks["app secret"]["status"] == "ok"
    assert "cfg-secret" not in output


async def test_connect_token_gives_the_fix_doctor_gives(tmp_path: Path) -> None:
    """`connect --token` (a real process, the keyring library's "no keyring" backend,
    Meta played by the sandbox) stops on the keyring with the fix doctor names."""
    async with Sandbox(app_secret="cfg-secret", account_id=ACCT, username="ivy") as box:
        url = box.base_url or ""
        cfg = write_config(tmp_path, secrets={"backend": "keyring"},
                           instagram={"app_secret": "cfg-secret", "graph_url": url,
                                      "api_url": url})
        env = {**os.environ, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
               "PYTHONPATH": str(REPO)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "instaset", "--config", str(cfg), "connect", "--token",
            env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            async with asyncio.timeout(60):
                _, err = await proc.communicate(box.token.encode() + b"\n")
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 1
    assert "NoKeyringError" in err.decode() and KEYRING_FIX in err.decode()
    assert box.token not in err.decode()


def test_keyring_failure_without_any_app_secret_says_the_store_is_unread(
    tmp_path: Path, no_os_keyring: None
) -> None:
    cfg = write_config(tmp_path, secrets={"backend": "keyring"})
    _, checks, _ = doctor_json(cfg)
    assert checks["secret store"]["status"] == "fail"
    assert "secret store cannot be read" in checks["app secret"]["message"]


async def test_token_read_failure_is_a_check_not_an_exception(
    tmp_path: Path, no_os_keyring: None
) -> None:
    cfg = write_config(tmp_path, secrets={"backend": "keyring"},
                       instagram={"app_secret": "cfg-secret"})
    db = await open_database(tmp_path / "s9.db", synchronous="NORMAL")
    try:
        await history.upsert_account(db, ACCT, username="ivy", now=time.time(),
                                     sandbox=False, subscribed_fields=["messages"])
    finally:
        await db.close()
    checks = {c.name: c for c in await run_checks(cfg, offline=True)}
    token = checks["token @ivy"]
    assert token.status == "fail" and "NoKeyringError" in token.message
    assert checks["secret store"].status == "fail"


def test_unreadable_secrets_file_is_a_secret_store_failure(tmp_path: Path) -> None:
    path = store_file({"app_secret": STORE_SECRET})
    path.chmod(0o644)
    cfg = write_config(tmp_path, secrets={"backend": "file"})
    code, checks, output = doctor_json(cfg)
    assert code == 1
    assert checks["secret store"]["status"] == "fail"
    assert "chmod 600" in checks["secret store"]["message"]
    assert STORE_SECRET not in output


# -- finding 4: INSTASET_HOME is a regular file ----------------------------------------------


@pytest.fixture
def home_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    afile = tmp_path / "afile"
    afile.write_text("not a directory\n", "utf-8")
    monkeypatch.setenv("INSTASET_HOME", str(afile))
    return afile


def test_init_with_home_a_file_exits_1_without_traceback(home_is_a_file: Path) -> None:
    result = CliRunner().invoke(app, ["init"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert f"INSTASET_HOME ({home_is_a_file}) is not a directory" in result.stderr
    assert "set INSTASET_HOME to a directory" in result.stderr
    assert home_is_a_file.read_text("utf-8") == "not a directory\n"  # left alone


def test_init_with_config_below_a_file_names_it(tmp_path: Path, home_is_a_file: Path) -> None:
    target = home_is_a_file / "config.yaml"
    result = CliRunner().invoke(app, ["--config", str(target), "init"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception
    assert "is not a directory" in result.stderr and str(home_is_a_file) in result.stderr


def test_database_commands_with_home_a_file_name_the_cause(home_is_a_file: Path) -> None:
    result = CliRunner().invoke(app, ["inbox", "--json"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception
    err = result.stderr
    assert f"cannot create database {home_is_a_file / 'instaset.db'}" in err
    assert "INSTASET_HOME" in err and "is not a directory" in err
    assert "File exists" not in err


def test_home_below_a_file_is_named_too(tmp_path: Path, home_is_a_file: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSTASET_HOME", str(home_is_a_file / "sub"))
    result = CliRunner().invoke(app, ["init"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception
    assert f"cannot be created: {home_is_a_file} is not a directory" in result.stderr


def test_doctor_with_home_a_file_fails_the_database_check(home_is_a_file: Path) -> None:
    result = CliRunner().invoke(app, ["doctor", "--offline", "--json"])
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["database"]["status"] == "fail"
    assert "INSTASET_HOME" in checks["database"]["message"]


def test_not_a_directory_and_ensure_data_dir(tmp_path: Path) -> None:
    env = {"INSTASET_HOME": str(tmp_path / "new" / "home")}
    assert not_a_directory(tmp_path / "new" / "home", env) is None  # missing: creatable
    made = ensure_data_dir(env)
    assert made.is_dir() and (made.stat().st_mode & 0o777) == 0o700
    assert not_a_directory(made, env) is None
    other = tmp_path / "plain"
    other.write_text("x", "utf-8")
    assert not_a_directory(other / "db" / "x", env) == (
        f"{other} is not a directory, so {other / 'db' / 'x'} cannot be created; move "
        f"{other} out of the way or choose another location")
    with pytest.raises(InstasetError, match=r"INSTASET_HOME \(.*plain\) is not a directory"):
        ensure_data_dir({"INSTASET_HOME": str(other)})
    assert other.read_text("utf-8") == "x"


# -- finding 6: an unreachable Graph API -----------------------------------------------------


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that is bound but not listening: connecting is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


async def test_unreachable_graph_names_the_url_and_the_config_key(
    session: aiohttp.ClientSession, refused_port: int
) -> None:
    graph_url = f"http://127.0.0.1:{refused_port}"
    graph = GraphClient(session, graph_url=graph_url + "/", api_version="v23.0",
                        api_url="https://api.instagram.example", timeout=5.0)
    with pytest.raises(Transient) as info:
        await graph.me(token="IGAAsecret-token")
    exc = info.value
    assert exc.outcome_unknown is False  # never connected: nothing was sent
    assert exc.message.startswith("cannot connect to Meta for me: ")
    assert f"{graph_url} cannot be reached (ClientConnectorError)" in exc.message
    assert "check the network connection, or instagram.graph_url in the config" in exc.message
    assert "IGAAsecret-token" not in str(exc)

    # The token GETs carry the token and the app secret in the query string: never shown.
    with pytest.raises(Transient) as info:
        await graph.long_lived_token("IGAAshort-token", client_secret="app-sec")
    text = str(info.value)
    assert f"{graph_url} cannot be reached" in text
    assert "IGAAshort-token" not in text and "app-sec" not in text and "?" not in text


async def test_unreachable_api_url_names_api_url_without_user_info(
    session: aiohttp.ClientSession, refused_port: int
) -> None:
    graph = GraphClient(session, graph_url="https://graph.instagram.example",
                        api_version="v23.0",
                        api_url=f"http://user:pw-s9@127.0.0.1:{refused_port}/meta", timeout=5.0)
    with pytest.raises(Transient) as info:
        await graph.exchange_code(client_id="1", client_secret="app-sec",
                                  redirect_uri="https://x.example/cb", code="the-code")
    exc = info.value
    assert exc.outcome_unknown is False
    assert f"http://127.0.0.1:{refused_port}/meta cannot be reached" in exc.message
    assert "instagram.api_url" in exc.message and "instagram.graph_url" not in exc.message
    assert "pw-s9" not in exc.message and "the-code" not in exc.message


def test_serve_with_home_a_file_names_the_cause(home_is_a_file: Path) -> None:
    """`serve` takes its lock beside the database first: that said only "File exists"."""
    from instaset.daemon import single_instance
    from instaset.errors import InstasetError
    from instaset.paths import default_db_path

    with pytest.raises(InstasetError) as info, single_instance(default_db_path()):
        pass
    assert str(info.value).startswith(f"INSTASET_HOME ({home_is_a_file}) is not a directory")
