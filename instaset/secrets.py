"""Where access tokens and app secrets live: the OS keyring, a 0600 file, or memory.

Contract:
- :func:`open_secrets` picks the backend named by ``secrets.backend``:

  - ``keyring``: the OS keyring, service ``instaset`` (one entry per key);
  - ``file``: ``<data dir>/secrets.json``, mode 0600 in a 0700 directory, written atomically;
    a file that group or others can read is refused (the error says ``chmod 600``);
  - ``memory``: a process-wide dict, for tests (nothing survives the process);
  - ``auto`` (default): the keyring when a real OS keyring works, else the file, announced by
    ONE warning per process that names the file.

- Keys are plain strings: :func:`token_key` for an account's access token, ``app_secret`` and
  ``meta_app_secret`` for the app secrets. Values never appear in an exception message or a
  log line: errors name the key and the backend only.
- Every method is synchronous (keyring is); async callers wrap them in ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import keyring
import keyring.core
import keyring.errors
from keyring.backends import fail, null

from instaset.config import Config
from instaset.errors import SecretsError
from instaset.paths import data_dir

log = logging.getLogger("instaset.secrets")

SERVICE = "instaset"
FILE_NAME = "secrets.json"
APP_SECRET = "app_secret"
META_APP_SECRET = "meta_app_secret"


def token_key(account_id: str) -> str:
    """The key of an account's access token."""
    return f"token:{account_id}"


class SecretStore(Protocol):
    """A key-value store for secrets. ``name`` says which backend, for messages."""

    name: str

    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str) -> None: ...

    def delete(self, key: str) -> bool:
        """Remove ``key``; True when it was there."""
        ...


class MemorySecrets:
    """Secrets in a dict. By default every instance shares one process-wide dict, so that a
    CLI command and the daemon code it runs in-process (tests) see the same secrets."""

    name = "memory"
    _shared: dict[str, str] = {}  # noqa: RUF012 - deliberately process-wide

    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.values = MemorySecrets._shared if values is None else values

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def set(self, key: str, value: str) -> None:
        self.values[key] = value

    def delete(self, key: str) -> bool:
        return self.values.pop(key, None) is not None

    @classmethod
    def reset(cls) -> None:
        """Forget every shared secret (test isolation)."""
        cls._shared.clear()


class FileSecrets:
    """A JSON object in a 0600 file. Writes go to a temp file in the same directory (created
    0600 by mkstemp), are fsynced, then renamed over the old file: a crash leaves the old or
    the new content, never a torn file."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _load(self) -> dict[str, str]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise SecretsError(
                f"{self.path} can be read by other users; run `chmod 600 {self.path}` "
                "(and check who may have read it)"
            )
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise SecretsError(
                f"cannot read the secrets file {self.path}: {type(exc).__name__}"
            ) from None
        if not isinstance(data, dict):
            raise SecretsError(f"the secrets file {self.path} is not a JSON object")
        return {str(k): str(v) for k, v in data.items()}

    def _save(self, data: Mapping[str, str]) -> None:
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".secrets.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(dict(data), fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._load().get(key)

    def set(self, key: str, value: str) -> None:
        with self._lock:
            data = self._load()
            data[key] = value
            self._save(data)

    def delete(self, key: str) -> bool:
        with self._lock:
            data = self._load()
            if key not in data:
                return False
            del data[key]
            self._save(data)
            return True


class KeyringSecrets:
    """The OS keyring (whatever ``keyring.get_keyring()`` is), service ``instaset``."""

    name = "keyring"

    def __init__(self, service: str = SERVICE) -> None:
        self.service = service

    def _fail(self, action: str, key: str, exc: Exception) -> SecretsError:
        # The backend's message never contains the value; keep only its class to be sure.
        return SecretsError(
            f"the OS keyring could not {action} {key!r} ({type(exc).__name__}); unlock the "
            "keyring, or set `secrets.backend: file` in the config"
        )

    def get(self, key: str) -> str | None:
        try:
            value: str | None = keyring.get_password(self.service, key)
        except keyring.errors.KeyringError as exc:
            raise self._fail("read", key, exc) from None
        return value

    def set(self, key: str, value: str) -> None:
        try:
            keyring.set_password(self.service, key, value)
        except keyring.errors.KeyringError as exc:
            raise self._fail("store", key, exc) from None

    def delete(self, key: str) -> bool:
        try:
            keyring.delete_password(self.service, key)
        except keyring.errors.PasswordDeleteError:
            return False
        except keyring.errors.KeyringError as exc:
            raise self._fail("delete", key, exc) from None
        return True


def os_keyring_usable() -> bool:
    """True when the keyring library found a real OS keyring (priority >= 1). The fail and
    null backends, and plaintext ones such as keyrings.alt's (priority < 1), do not count."""
    try:
        kr = keyring.get_keyring()
        return not isinstance(kr, fail.Keyring | null.Keyring) and bool(
            keyring.core.recommended(kr)
        )
    except Exception:  # a backend whose priority check itself blows up is not usable
        return False


_warned: set[Path] = set()


def secrets_file(env: Mapping[str, str] | None = None) -> Path:
    return data_dir(env) / FILE_NAME


def open_secrets(config: Config, env: Mapping[str, str] | None = None) -> SecretStore:
    """The secret store ``config.secrets.backend`` names (see the module docstring)."""
    backend = config.secrets.backend
    if backend == "memory":
        return MemorySecrets()
    if backend == "keyring":
        return KeyringSecrets()
    path = secrets_file(env)
    if backend == "file":
        return FileSecrets(path)
    if os_keyring_usable():
        return KeyringSecrets()
    if path not in _warned:
        _warned.add(path)
        log.warning(
            "no OS keyring is available; secrets are stored in %s (mode 0600, readable by "
            "this user). Set `secrets.backend: file` to silence this warning, or install and "
            "unlock an OS keyring.", path,
        )
    return FileSecrets(path)


def app_secrets(config: Config, store: SecretStore | None) -> list[bytes]:
    """Every configured app secret, UTF-8 encoded, without duplicates: the config's (which
    includes ``INSTASET_APP_SECRET``) first, then the ones in the secret store."""
    out = list(config.instagram.webhook_secrets())
    if store is not None:
        for key in (APP_SECRET, META_APP_SECRET):
            value = store.get(key)
            if value and value.encode() not in out:
                out.append(value.encode())
    return out


__all__ = [
    "APP_SECRET",
    "META_APP_SECRET",
    "SERVICE",
    "FileSecrets",
    "KeyringSecrets",
    "MemorySecrets",
    "SecretStore",
    "app_secrets",
    "open_secrets",
    "os_keyring_usable",
    "secrets_file",
    "token_key",
]
