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
anything on disk except :func:`ensure_data_dir`, which raises
:class:`~instaset.errors.InstasetError` (message from :func:`not_a_directory`) when the data
directory cannot be a directory because it, or a folder above it, is a regular file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import platformdirs

from instaset.errors import InstasetError

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
    """:func:`data_dir`, created if needed with mode 0700 (it will hold tokens and data).

    Raises :class:`InstasetError` naming INSTASET_HOME (or the data directory) and the fix
    when that path, or one above it, exists but is not a directory."""
    path = data_dir(env)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        problem = not_a_directory(path, env)
        if problem is None:  # gone or replaced meanwhile: let the OS error speak
            raise
        raise InstasetError(problem) from None
    return path


def _blocker(path: Path) -> Path | None:
    """The deepest existing one of ``path`` and its ancestors when it is not a directory
    (so ``path`` cannot be created as a directory below it), else None."""
    for candidate in (path, *path.parents):
        try:
            if not candidate.exists():
                continue
            return None if candidate.is_dir() else candidate
        except OSError:  # unreadable: not ours to diagnose here
            return None
    return None


def not_a_directory(path: Path, env: Mapping[str, str] | None = None) -> str | None:
    """Why the directory ``path`` cannot exist, with the fix, when ``path`` or one of its
    ancestors is something other than a directory (e.g. a regular file); None otherwise.

    The message names ``INSTASET_HOME`` when the data directory (which that variable sets) is
    the directory concerned or lies below the file in the way, the data directory when
    INSTASET_HOME is not set, else just the file in the way."""
    blocker = _blocker(path)
    if blocker is None:
        return None
    home = data_dir(env)
    in_home = path == home or home in path.parents
    home_blocked = blocker == home or blocker in home.parents
    if not (in_home and home_blocked):
        return (f"{blocker} is not a directory, so {path} cannot be created; move {blocker} "
                "out of the way or choose another location")
    what = (f"INSTASET_HOME ({home})" if _env(env).get(HOME_ENV, "")
            else f"the data directory {home}")
    where = ("is not a directory" if blocker == home
             else f"cannot be created: {blocker} is not a directory")
    return (f"{what} {where}; set INSTASET_HOME to a directory (it is created when "
            f"missing), or move {blocker} out of the way")


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
    "not_a_directory",
]
