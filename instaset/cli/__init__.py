"""The ``instaset`` command line. Importing a command module registers its commands."""

from __future__ import annotations

import sys

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
    sys.argv[1:] = hoist_config(sys.argv[1:])
    app()


def hoist_config(args: list[str]) -> list[str]:
    """``--config PATH`` (or ``--config=PATH``) given after the command moves in front of
    it, where the global option is parsed: `instaset inbox --config x.yaml` works like
    `instaset --config x.yaml inbox`. Nothing after ``--`` moves, and nothing in
    `workflows replay`, whose own ``--config OTHER`` names the config to compare with."""
    if args[:2] == ["workflows", "replay"]:
        return list(args)
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if i > 0 and arg == "--config" and i + 1 < len(args):
            front += args[i:i + 2]
            i += 2
            continue
        if i > 0 and arg.startswith("--config="):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


__all__ = ["app", "hoist_config", "main"]
