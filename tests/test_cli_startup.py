"""``instaset --help`` stays fast: importing the CLI must not import the heavy stack.

Every ``instaset`` invocation (``--help`` included) imports :mod:`instaset.cli` and all of its
command modules, so those modules import only typer, the standard library and a few
dependency-free instaset modules at top level; everything else is imported inside the
commands (see ``instaset/cli/app.py``). These tests check that contract in a fresh
interpreter (the test process itself has long imported everything), check that the program
still starts and lists its commands, and render every command's ``--help``: typer resolves
parameter annotations from each module's globals, so a parameter type that moved into a
function body would only fail there. No test measures time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from instaset.cli import app

# Imported by the commands that need them, never by `import instaset.cli`.
HEAVY = (
    "aiohttp",
    "aiosqlite",
    "pydantic",
    "google.genai",
    "yaml",
    "textual",
    "uvloop",  # the daemon's loop only (cli.app.server_loop_factory)
    "asyncio",  # ~50 ms of the 300 ms budget on its own
    "rich",  # ~25 ms: cli.app makes its consoles on first use
    "instaset.config",
    "instaset.daemon",
    "instaset.engine",
    "instaset.store",
)
# The instaset modules the CLI may import at top level: they import only the standard library.
LIGHT_INSTASET = {"instaset", "instaset.errors", "instaset.logsetup", "instaset.oneline",
                  "instaset.timefmt"}

# Top-level commands of the external interface (shared/interface.md, "Commands").
INTERFACE_COMMANDS = (
    "init", "serve", "demo", "simulate", "connect", "accounts", "disconnect", "workflows",
    "inbox", "leads", "bookings", "stats", "export", "purge", "doctor",
)


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    # A wide terminal so rich never folds a command name; no colour codes in the output.
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


def test_importing_the_cli_leaves_the_heavy_stack_alone() -> None:
    res = _python("-c", "import json, sys, instaset.cli; print(json.dumps(sorted(sys.modules)))")
    assert res.returncode == 0, res.stderr
    loaded = set(json.loads(res.stdout))
    # Sanity: the probe really imported the CLI and its command modules.
    assert {"instaset.cli", "instaset.cli.cmd_leads", "typer"} <= loaded
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == [], (
        f"`import instaset.cli` imported {heavy}: move those imports into the command "
        "functions (see instaset/cli/app.py)"
    )
    other = sorted(m for m in loaded if (m == "instaset" or m.startswith("instaset."))
                   and not m.startswith("instaset.cli") and m not in LIGHT_INSTASET)
    assert other == [], (
        f"`import instaset.cli` imported {other}; import them inside the commands, or add a "
        "module that imports only the standard library to LIGHT_INSTASET"
    )


def test_python_m_instaset_help_lists_every_interface_command() -> None:
    res = _python("-m", "instaset", "--help")
    assert res.returncode == 0, res.stderr
    # Plain click help (see instaset/cli/app.py): "Commands:" then "  name  help text" rows.
    rows = res.stdout.split("Commands:", 1)[1].splitlines()
    listed = {line.split()[0] for line in rows if line.startswith("  ") and line.strip()}
    missing = [c for c in INTERFACE_COMMANDS if c not in listed]
    assert missing == [], f"`instaset --help` does not list {missing}:\n{res.stdout}"


def _walk(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _walk(sub, (*path, name))


# Built at collection time on purpose: a parameter annotation that typer cannot resolve
# fails here, naming the command module.
COMMAND_PATHS = list(_walk(typer.main.get_command(app)))


def test_the_command_tree_is_complete() -> None:
    # Groups with subcommands of their own, so the walk below really descends.
    for path in (("inbox", "show"), ("leads", "explain"), ("workflows", "replay"),
                 ("contacts", "forget"), ("service", "install"), ("simulate", "comment")):
        assert path in COMMAND_PATHS


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda p: " ".join(p) or "instaset")
def test_every_command_help_renders(path: tuple[str, ...]) -> None:
    res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    [usage] = [line for line in res.output.splitlines() if "Usage:" in line]
    # The usage line names the command that rendered: "Usage: root inbox show [OPTIONS] ...".
    words = usage.split()
    assert words[0] == "Usage:" and words[2:2 + len(path)] == list(path), usage


def test_leads_help_stages_match_the_scoring_stages() -> None:
    from instaset.cli.cmd_leads import HELP_STAGES
    from instaset.leads import STAGES

    assert HELP_STAGES == STAGES
