"""Running instaset for real: backups, restores and the service files.

Contracts:
- :func:`backup` copies the live database with SQLite's online backup API (safe while the
  daemon runs) and checks the copy's integrity.
- :func:`restore` refuses while a daemon holds the database, refuses a file that is not an
  instaset database or is from a newer instaset, keeps the replaced database next to it
  (``.before-restore``), and swaps files atomically.
- :func:`systemd_unit` renders a user unit that runs ``serve`` with this Python; the
  retention cron line runs ``purge`` daily.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import time
import zipfile
from pathlib import Path

from instaset.daemon import single_instance
from instaset.errors import InstasetError, StoreError
from instaset.store.db import inspect_schema_version, migrations, open_database


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


def instaset_command(config_path: Path | None) -> str:
    # From the single-file build, the file itself is the program (no `-m instaset` there).
    if zipfile.is_zipfile(sys.argv[0]):
        args = [str(Path(sys.argv[0]).resolve())]
    else:
        args = [sys.executable, "-m", "instaset"]
    if config_path is not None:
        args += ["--config", str(config_path.resolve())]
    return shlex.join(args)


def systemd_unit(config_path: Path | None) -> str:
    return f"""[Unit]
Description=instaset: Instagram DM automation daemon
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={instaset_command(config_path)} serve
Restart=on-failure
RestartSec=5
# SIGTERM stops it gracefully: it finishes in-flight jobs within worker.shutdown_grace.
KillSignal=SIGTERM
TimeoutStopSec=30
# Logs go to stderr, which journald collects: journalctl --user -u instaset -f

[Install]
WantedBy=default.target
"""


def cron_line(config_path: Path | None) -> str:
    return f"17 3 * * * {instaset_command(config_path)} purge"
