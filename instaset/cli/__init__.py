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
    try:
        sys.argv[1:] = hoist_config(sys.argv[1:])
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    app()


def _global_options(args: list[str]) -> int:
    """How many of ``args`` are global options given before the command (``--config X``,
    ``-c X``, ``--config=X``, ``-cX``)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config", "-c") and i + 1 < len(args):
            i += 2
        elif arg.startswith("--config=") or (arg.startswith("-c") and len(arg) > 2):
            i += 1
        else:
            break
    return i


def hoist_config(args: list[str]) -> list[str]:
    """``--config PATH`` (or ``--config=PATH``) given after the command moves in front of
    it, where the global option is parsed: `instaset inbox --config x.yaml` works like
    `instaset --config x.yaml inbox`. Nothing after ``--`` moves, and nothing in
    `workflows replay`, whose own ``--config OTHER`` names the config to compare with
    (also after a global ``--config CURRENT``). Raises ValueError when the config is given
    both before and after the command: which one was meant is not ours to guess."""
    lead = _global_options(args)
    given, args = list(args[:lead]), list(args[lead:])
    if args[:2] == ["workflows", "replay"]:
        return given + args
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
    if given and front:
        raise ValueError(f"--config is given twice ({' '.join(given)} before the command, "
                         f"{' '.join(front)} after it): give it once")
    return given + front + rest


__all__ = ["app", "hoist_config", "main"]
