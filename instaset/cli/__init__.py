"""The ``instaset`` command line. Importing a command module registers its commands."""

from __future__ import annotations

from instaset.cli import (  # noqa: F401  # noqa: F401
    cmd_accounts,
    cmd_bookings,
    cmd_config,
    cmd_contacts,
    cmd_data,
    cmd_demo,
    cmd_drafts,
    cmd_inbox,
    cmd_leads,
    cmd_ops,
    cmd_serve,
    cmd_workflows,
)
from instaset.cli.app import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
