"""Running instaset for real: backups, restores and the service files.

Contracts:
- :func:`backup` copies the live database with SQLite's online backup API (safe while the
  daemon runs) and checks the copy's integrity.
- :func:`restore` refuses while a daemon holds the database, refuses a file that is not an
  instaset database or is from a newer instaset, keeps the replaced database next to it
  (``.before-restore``), and swaps files atomically.
- :func:`systemd_unit` renders a user unit that runs ``serve`` with this Python, on the
  config, database and secrets this command sees (the config as an absolute path,
  ``INSTASET_HOME``/``INSTASET_DB`` as the unit's environment); the retention cron line
  runs ``purge`` daily on the same.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import sys
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path

from instaset.config_storage import config_file
from instaset.daemon import single_instance
from instaset.errors import InstasetError, StoreError
from instaset.store.db import open_database
from instaset.store.migrate import inspect_schema_version, migrations


def default_backup_path(db_path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return db_path.parent / "backups" / f"instaset-{stamp}.db"


async def backup(db_path: Path, dest: Path) -> int:
    """Back up ``db_path`` to ``dest``; returns the size in bytes."""
    if not db_path.exists():
        raise InstasetError(f"no database at {db_path}; nothing to back up")
    db = await open_database(db_path)
    try:
        await db.backup_to(dest)
    finally:
        await db.close()
    copy = await open_database(dest)
    try:
        if not await copy.integrity_ok():
            raise StoreError(f"the backup {dest} failed its integrity check")
    finally:
        await copy.close()
    return dest.stat().st_size


def restore(src: Path, db_path: Path) -> Path | None:
    """Replace ``db_path`` by ``src``. Returns where the previous database was kept."""
    if not src.is_file():
        raise InstasetError(f"{src} does not exist or is not a file")
    version = inspect_schema_version(src)
    known = len(migrations())
    if version > known:
        raise StoreError(
            f"{src} is at schema version {version}, newer than this instaset ({known}); "
            "upgrade instaset first"
        )
    with single_instance(db_path):  # refuses while `instaset serve` runs on it
        kept: Path | None = None
        if db_path.exists():
            kept = db_path.with_name(db_path.name + ".before-restore")
            shutil.copy2(db_path, kept)
        for suffix in ("-wal", "-shm"):
            db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
        tmp = db_path.with_name(db_path.name + ".restoring")
        shutil.copy2(src, tmp)
        tmp.replace(db_path)
    return kept


# The variables that move instaset's files: the service must see what this shell sees.
PLACE_VARIABLES = ("INSTASET_HOME", "INSTASET_DB")


def _where(config_path: Path | None, env: Mapping[str, str] | None
           ) -> tuple[Path | None, list[tuple[str, str]]]:
    """The config file and the variables a service must get to use what this command uses:
    the config this command would read (named, or the default one when it exists) as an
    absolute path, and ``INSTASET_HOME``/``INSTASET_DB`` (absolute) when they are set in
    ``env`` (default: os.environ)."""
    env = os.environ if env is None else env
    path, explicit = config_file(config_path, env)
    chosen = path.absolute() if explicit or path.exists() else None
    variables = [(name, str(Path(env[name]).expanduser().absolute()))
                 for name in PLACE_VARIABLES if env.get(name)]
    return chosen, variables


def instaset_command(config_path: Path | None) -> str:
    # From the single-file build, the file itself is the program (no `-m instaset` there).
    if zipfile.is_zipfile(sys.argv[0]):
        args = [str(Path(sys.argv[0]).resolve())]
    else:
        args = [sys.executable, "-m", "instaset"]
    if config_path is not None:
        args += ["--config", str(config_path.resolve())]
    return shlex.join(args)


def systemd_unit(config_path: Path | None, env: Mapping[str, str] | None = None, *,
                 shutdown_grace: float = 10.0) -> str:
    """A user unit running ``serve`` on the same config, database and secrets as this
    command (``env``: the environment to read ``INSTASET_*`` from; default os.environ).
    systemd waits ``shutdown_grace`` (``worker.shutdown_grace``) plus 20 s for the graceful
    stop before it kills: a longer grace would otherwise be cut short."""
    config, variables = _where(config_path, env)
    # systemd's own quoting: "NAME=value" with backslashes and quotes escaped, and % (its
    # specifiers) doubled, in ExecStart too.
    lines = "".join(
        'Environment="{}={}"\n'.format(name, value.replace("\\", "\\\\").replace('"', '\\"')
                                        .replace("%", "%%"))
        for name, value in variables)
    command = instaset_command(config).replace("%", "%%")
    return f"""[Unit]
Description=instaset: Instagram DM automation daemon
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
{lines}ExecStart={command} serve
Restart=on-failure
RestartSec=5
# SIGTERM stops it gracefully: it finishes in-flight jobs within worker.shutdown_grace.
KillSignal=SIGTERM
TimeoutStopSec={math.ceil(shutdown_grace) + 20}
# Logs go to stderr, which journald collects: journalctl --user -u instaset -f

[Install]
WantedBy=default.target
"""


def cron_line(config_path: Path | None, env: Mapping[str, str] | None = None) -> str:
    """The daily retention line for crontab, on the same files as :func:`systemd_unit`."""
    config, variables = _where(config_path, env)
    prefix = "".join(f"{name}={shlex.quote(value)} " for name, value in variables)
    line = f"{prefix}{instaset_command(config)} purge"
    return "17 3 * * * " + line.replace("%", "\\%")  # cron reads a bare % as a newline
