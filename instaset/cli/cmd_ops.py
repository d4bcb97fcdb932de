"""``instaset backup``, ``restore`` and ``service install``."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from instaset.cli.app import STATE, app, fail, handle_errors, is_tty, run_async, sub_app
from instaset.errors import InstasetError

# instaset.ops (the daemon, aiosqlite) and the config are imported inside the commands:
# `instaset --help` must not pay for them (see instaset/cli/app.py).

service_app = sub_app(help="Run instaset as a service.", no_args_is_help=True)
app.add_typer(service_app, name="service")


@app.command("backup")
@handle_errors
def backup_cmd(
    file: Path | None = typer.Argument(
        None, help="A file, or a folder for a dated file (default: backups/ next to the "
        "database)."),
) -> None:
    """Back up the database (safe while the daemon runs)."""
    from instaset.config import load_config
    from instaset.ops import backup, default_backup_path

    config = load_config(STATE.config_path)
    db_path = config.storage.db_path()
    if file is not None and file.is_dir():
        file = file / default_backup_path(db_path).name  # a folder: a dated file in it
    if file is not None and not file.absolute().parent.is_dir():
        # A drive that is not mounted (/mnt/usb) would otherwise get a backup on the root
        # disk, in a folder made for it, and a "backed up" to go with it.
        raise InstasetError(f"{file.absolute().parent} does not exist (is the drive "
                            "mounted?); create the folder first, or choose another file")
    dest = file or default_backup_path(db_path)
    size = run_async(backup)(db_path, dest)
    typer.echo(f"backed up {db_path} to {dest} ({size} bytes)")


@app.command("restore")
@handle_errors
def restore_cmd(
    file: Path = typer.Argument(..., help="A backup made by `instaset backup`."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Replace the database with a backup (stop the daemon first)."""
    from instaset.config import load_config
    from instaset.ops import restore

    config = load_config(STATE.config_path)
    db_path = config.storage.db_path()
    if not yes:
        if not is_tty():
            raise fail("restore replaces the database; pass --yes to confirm")
        typer.confirm(f"Replace {db_path} with {file}?", abort=True)
    kept = restore(file, db_path)
    typer.echo(f"restored {file} into {db_path}")
    if kept is not None:
        typer.echo(f"the previous database is kept at {kept}")


@service_app.command("install")
@handle_errors
def service_install(
    print_only: bool = typer.Option(False, "--print", help="Print the unit, write nothing."),
) -> None:
    """Write a systemd user unit for `instaset serve` and print the retention cron line."""
    from instaset.config import load_config
    from instaset.ops import cron_line, systemd_unit

    grace = load_config(STATE.config_path).worker.shutdown_grace
    unit = systemd_unit(STATE.config_path, shutdown_grace=grace)
    if print_only:
        typer.echo(unit)
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        path = base / "systemd" / "user" / "instaset.service"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(unit)
        typer.echo(f"wrote {path}")
        typer.echo("start it with: systemctl --user daemon-reload && "
                   "systemctl --user enable --now instaset")
        typer.echo("keep it running after you log out: loginctl enable-linger $USER")
    typer.echo("retention, daily from cron (crontab -e):")
    typer.echo(f"  {cron_line(STATE.config_path)}")
