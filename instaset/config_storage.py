"""Where the database is, read from the config file without validating the rest of it.

Read-only commands (``inbox``, ``inbox show``, ``stats``) need only ``storage``. Building the
whole config costs a CLI start ~70 ms of pydantic model classes (the workflow language
among them), and a typo in a workflow should not lock the creator out of reading their
inbox while they fix it. :func:`quick_storage` reads the file's ``storage`` section (and
``INSTASET_DB``) exactly as :func:`instaset.config.load_config` would resolve it; whenever
anything is not plainly valid (including a top-level key the full config does not know:
``storag:`` would otherwise silently mean "the default database") it returns None and the
caller falls back to the full loader, whose messages name the file, the line and the fix.

Such a command still says when the rest of the config is broken (one warning line, from the
full loader): it is not silent about it. So that this does not build the models at every
command, a config the full loader accepted is remembered by :func:`config_stamp` (a digest of
the file, the environment variables that feed the loader, instaset's version and its
modules) in the data directory's ``config-checked``; only a config (or an instaset) changed
since costs the full check.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from instaset import __version__
from instaset.errors import InstasetError
from instaset.paths import default_config_path, default_db_path, ensure_data_dir

CONFIG_ENV = "INSTASET_CONFIG"
DB_ENV = "INSTASET_DB"
SYNCHRONOUS = ("NORMAL", "FULL")
TOP_LEVEL_KEYS = frozenset({
    "instagram", "server", "storage", "worker", "rate_limits", "handoff", "ai", "retention",
    "secrets", "notify", "sandbox", "leads", "booking", "timezone", "workflows",
    "ice_breakers", "menu",
})
"""The keys ``config.yaml`` may have at its top level: the fields of
:class:`instaset.config_models.Config` that the file may set (all but ``source``). Spelled
out here because importing the model costs what this module saves;
tests/test_cli_review.py checks that it matches the model."""


CHECKED_FILENAME = "config-checked"
_STAMPED_ENV = (CONFIG_ENV, DB_ENV, "INSTASET_HOST", "INSTASET_PORT")
"""The variables besides the file that can make the full loader refuse a config (the secret
ones take any text, and stay out of the digest)."""


@dataclass(frozen=True, slots=True)
class StorageLocation:
    """The database file and the ``synchronous`` mode to open it with."""

    path: Path
    synchronous: Literal["NORMAL", "FULL"] = "FULL"


def config_file(path: Path | None, env: Mapping[str, str]) -> tuple[Path, bool]:
    """The config file to read and whether it was named explicitly (``--config`` or
    ``$INSTASET_CONFIG``: then it must exist; a missing default file means defaults)."""
    from_env = env.get(CONFIG_ENV, "")
    explicit = path is not None or bool(from_env)
    if path is None:
        path = Path(from_env) if from_env else default_config_path(env)
    return path.expanduser(), explicit


def quick_storage(path: Path | None = None,
                  env: Mapping[str, str] | None = None) -> StorageLocation | None:
    """The configured database location, or None when the full loader must decide (the file
    is unreadable, is not YAML, or its ``storage`` section is not plainly valid)."""
    environ = os.environ if env is None else env
    file, explicit = config_file(path, environ)
    section: object = {}
    if file.exists():
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            data = yaml.load(text, Loader=loader)
        except (yaml.YAMLError, ValueError, OverflowError, RecursionError):
            return None
        if data is None:
            data = {}
        if not isinstance(data, dict) or not set(data) <= TOP_LEVEL_KEYS:
            return None
        section = data.get("storage") or {}
    elif explicit:
        return None
    if not isinstance(section, dict) or not set(section) <= {"path", "synchronous"}:
        return None
    sync = section.get("synchronous", "FULL")
    if sync not in SYNCHRONOUS:
        return None
    db = environ.get(DB_ENV, "")
    if db:
        return StorageLocation(Path(db).expanduser().absolute(), sync)
    raw = section.get("path")
    if raw is None:
        return StorageLocation(default_db_path(environ), sync)
    if not isinstance(raw, str) or not raw:
        return None
    where = Path(raw).expanduser()
    if not where.is_absolute():
        where = file.absolute().parent / where
    return StorageLocation(where, sync)


def config_stamp(path: Path | None = None, env: Mapping[str, str] | None = None,
                 package: Path | None = None) -> str:
    """A digest of what the full loader's verdict on the config depends on: instaset's
    version and its modules (size and time of each), which file, its bytes (or that it is
    missing) and the non-secret variables that override it. ``package``: another source
    tree than this one (tests)."""
    environ = os.environ if env is None else env
    file, _explicit = config_file(path, environ)
    digest = hashlib.sha256(f"{__version__}\0{file.absolute()}\0".encode())
    # The code that judges it: an upgrade (or an edit of a source tree) that keeps the
    # version number may refuse what the old code accepted. Sizes and mtimes of the
    # package's modules: a few hundred stat calls, no reading.
    package = package or Path(__file__).resolve().parent
    for module in sorted(package.rglob("*.py")):
        with contextlib.suppress(OSError):
            st = module.stat()
            digest.update(f"\0{module.relative_to(package)}:{st.st_size}:{st.st_mtime_ns}"
                          .encode())
    try:
        digest.update(file.read_bytes())
    except OSError as exc:
        digest.update(f"\0unreadable {exc.errno}".encode())
    for name in _STAMPED_ENV:
        digest.update(f"\0{name}={environ.get(name, '')}".encode())
    return digest.hexdigest()


def checked(stamp: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether the config with this :func:`config_stamp` was the last one found valid."""
    from instaset.paths import data_dir

    try:
        return (data_dir(env) / CHECKED_FILENAME).read_text("ascii").strip() == stamp
    except (OSError, UnicodeDecodeError):
        return False


def remember_checked(stamp: str, env: Mapping[str, str] | None = None) -> None:
    """Record that the config with this stamp is valid. A cache: failing to write it only
    costs the full check next time."""
    with contextlib.suppress(OSError, InstasetError):
        target = ensure_data_dir(env) / CHECKED_FILENAME
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(stamp + "\n")
