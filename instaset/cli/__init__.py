"""The ``instaset`` command line. Importing a command module registers its commands."""

from __future__ import annotations

from instaset.cli import cmd_config, cmd_demo, cmd_serve  # noqa: F401
from instaset.cli import cmd_ops  # noqa: F401
from instaset.cli.app import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
