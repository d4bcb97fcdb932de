"""Where instaset keeps its files.

Contract (the external interface, "Where things live"):

- :func:`data_dir` is ``$INSTASET_HOME`` when that variable is set and non-empty, else the
  platformdirs user data directory for ``instaset`` (``~/.local/share/instaset`` on Linux).
  It holds the database, the secrets fallback file and deletion receipts.
- :func:`default_config_path` is ``$INSTASET_HOME/config.yaml`` when INSTASET_HOME is set and
  that file exists, else ``./config.yaml`` when it exists, else ``data_dir()/config.yaml``
  (which may not exist: a missing config at the default location means "all defaults").

Every function takes an optional ``env`` mapping (default: ``os.environ``) so callers and tests
can resolve paths for an environment other than the process's own. None of them create
anything on disk except :func:`ensure_data_dir`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import platformdirs

APP_NAME = "instaset"
HOME_ENV = "INSTASET_HOME"
CONFIG_FILENAME = "config.yaml"
DB_FILENAME = "instaset.db"


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The data directory: ``$INSTASET_HOME`` or the platform's user data dir. Not created."""
    home = _env(env).get(HOME_ENV, "")
    if home:
        return Path(home).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME))


def default_db_path(env: Mapping[str, str] | None = None) -> Path:
    """The database when ``storage.path`` is not set: ``data_dir(env)/instaset.db``."""
    return data_dir(env) / DB_FILENAME


def ensure_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """:func:`data_dir`, created if needed with mode 0700 (it will hold tokens and data)."""
    path = data_dir(env)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """The config file used when no ``--config`` is given (see the module docstring).

    The result is absolute. It need not exist: the last fallback is returned either way.
    """
    environ = _env(env)
    if environ.get(HOME_ENV, ""):
        in_home = data_dir(environ) / CONFIG_FILENAME
        if in_home.is_file():
            return in_home.absolute()
    local = Path.cwd() / CONFIG_FILENAME
    if local.is_file():
        return local
    return (data_dir(environ) / CONFIG_FILENAME).absolute()


__all__ = [
    "APP_NAME",
    "CONFIG_FILENAME",
    "HOME_ENV",
    "data_dir",
    "default_config_path",
    "ensure_data_dir",
]
