"""The secret store backends: keyring (through a real keyring backend object), the 0600 file
fallback with its one warning, and the in-memory store; and the token provider over them."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backend
import keyring.errors
import pytest
from keyring.backends import fail

from instaset.config import Config
from instaset.errors import SecretsError
from instaset.secrets import (
    FileSecrets,
    KeyringSecrets,
    MemorySecrets,
    app_secrets,
    open_secrets,
    os_keyring_usable,
    secrets_file,
    token_key,
)
from instaset.tokens import SecretTokens, default_tokens

TOKEN = "IGAAsecret-token-value-0123456789"


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring backend in a dict. Priority -10: importing it must not make keyring's
    auto-detection pick it (see python-stack.md §2.2); tests install it with set_keyring."""

    priority = -10

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if (service, username) not in self.store:
            raise keyring.errors.PasswordDeleteError("not found")
        del self.store[(service, username)]


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    kr = MemoryKeyring()
    keyring.set_keyring(kr)
    try:
        yield kr
    finally:
        keyring.set_keyring(previous)


@pytest.fixture
def no_keyring() -> Iterator[None]:
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        keyring.set_keyring(previous)


def cfg(backend: str, **instagram: str) -> Config:
    return Config.model_validate({"secrets": {"backend": backend}, "instagram": instagram})


def test_keyring_backend_stores_under_service_instaset(memory_keyring: MemoryKeyring) -> None:
    store = open_secrets(cfg("keyring"))
    assert isinstance(store, KeyringSecrets)
    store.set(token_key("1784"), TOKEN)
    assert memory_keyring.store == {("instaset", "token:1784"): TOKEN}
    assert store.get("token:1784") == TOKEN
    assert store.delete("token:1784") is True
    assert store.delete("token:1784") is False
    assert store.get("token:1784") is None


def test_keyring_errors_name_the_key_and_the_fix_not_the_value(no_keyring: None) -> None:
    store = KeyringSecrets()
    with pytest.raises(SecretsError) as info:
        store.set("token:1", TOKEN)
    assert "token:1" in str(info.value) and "secrets.backend: file" in str(info.value)
    assert TOKEN not in str(info.value)


def test_a_test_keyring_is_not_an_os_keyring(memory_keyring: MemoryKeyring) -> None:
    # priority < 1: auto mode must not trust it (nor a plaintext keyrings.alt backend).
    assert not os_keyring_usable()


def test_file_backend_is_0600_in_a_0700_dir_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secrets.json"
    store = FileSecrets(path)
    assert store.get("x") is None and not path.exists()  # reading creates nothing
    store.set(token_key("1"), TOKEN)
    store.set(token_key("2"), "other")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert FileSecrets(path).get(token_key("1")) == TOKEN  # a second instance reads it back
    assert store.delete(token_key("1")) is True
    assert FileSecrets(path).get(token_key("1")) is None
    assert FileSecrets(path).get(token_key("2")) == "other"
    assert [p.name for p in path.parent.iterdir()] == ["secrets.json"]  # no temp files left


def test_file_backend_refuses_a_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    FileSecrets(path).set("k", TOKEN)
    os.chmod(path, 0o644)
    with pytest.raises(SecretsError, match="chmod 600") as info:
        FileSecrets(path).get("k")
    assert TOKEN not in str(info.value)


def test_auto_falls_back_to_the_file_with_one_warning(
    no_keyring: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="instaset.secrets")
    first = open_secrets(cfg("auto"))
    second = open_secrets(cfg("auto"))
    assert isinstance(first, FileSecrets) and isinstance(second, FileSecrets)
    assert first.path == secrets_file()  # in the data directory ($INSTASET_HOME here)
    assert str(secrets_file().parent) == os.environ["INSTASET_HOME"]
    warnings = [r for r in caplog.records if r.name == "instaset.secrets"]
    assert len(warnings) == 1
    assert str(first.path) in warnings[0].getMessage()
    first.set("app_secret", TOKEN)
    assert TOKEN not in caplog.text


def test_explicit_file_backend_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    store = open_secrets(cfg("file"))
    assert isinstance(store, FileSecrets)
    assert not caplog.records


def test_memory_backend_is_shared_in_process_and_resettable() -> None:
    MemorySecrets.reset()
    a = open_secrets(cfg("memory"))
    b = open_secrets(cfg("memory"))
    a.set("k", "v")
    assert b.get("k") == "v"
    MemorySecrets.reset()
    assert b.get("k") is None
    private = MemorySecrets({})
    private.set("k", "w")
    assert a.get("k") is None


def test_app_secrets_config_first_then_store_without_duplicates() -> None:
    store = MemorySecrets({"app_secret": "from-config", "meta_app_secret": "from-store"})
    got = app_secrets(cfg("memory", app_secret="from-config"), store)
    assert got == [b"from-config", b"from-store"]
    assert app_secrets(cfg("memory"), None) == []


async def test_token_provider_caches_for_ttl_and_forget_rereads() -> None:
    store = MemorySecrets({})
    tokens = SecretTokens(cfg("memory"), store, ttl=3600)
    store.set(token_key("1"), "first")
    assert await tokens.token("1") == "first"
    store.set(token_key("1"), "refreshed")  # e.g. by the refresh job or another process
    assert await tokens.token("1") == "first"  # cached: no keyring lookup per send
    tokens.forget("1")
    assert await tokens.token("1") == "refreshed"
    store.set(token_key("1"), "third")
    tokens.forget()
    assert await tokens.token("1") == "third"


async def test_token_provider_rereads_after_the_ttl() -> None:
    store = MemorySecrets({})
    tokens = SecretTokens(cfg("memory"), store, ttl=0.0)
    assert await tokens.token("1") is None
    store.set(token_key("1"), "first")
    assert await tokens.token("1") == "first"


async def test_default_tokens_use_the_configured_backend() -> None:
    MemorySecrets.reset()
    MemorySecrets().set(token_key("9"), TOKEN)
    try:
        assert await default_tokens(cfg("memory")).token("9") == TOKEN
    finally:
        MemorySecrets.reset()
