"""The single-file build: scripts/build_zipapp.py makes one executable file that runs
instaset with nothing but a bare Python of the same minor version.

The build downloads instaset's dependencies from the package index, so it takes about a
minute; it is skipped (with the reason) only when the index cannot be reached. The file is
run by its own shebang with an environment that holds no inherited variable, a temporary
HOME, and a ``pythonX.Y`` on PATH that is the base interpreter started with ``-I -S``: no
site-packages, no user site, no PYTHON* variables, so every import must come from the file.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from instaset.config import load_config

pytestmark = [pytest.mark.build, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "build_zipapp.py"
EXAMPLE = ROOT / "config.example.yaml"
BUILD_TIMEOUT = 1200  # s, the whole build (the script bounds each step by --timeout)
RUN_TIMEOUT = 180  # s, one run of the built file (the first one unpacks it)
PYTHON = f"python{sys.version_info.major}.{sys.version_info.minor}"


def index_unreachable() -> str | None:
    """Why the package index cannot be reached, or None when it can."""
    index = os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple/"
    url = index.rstrip("/") + "/shiv/"
    context = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
    try:
        with urllib.request.urlopen(url, timeout=15, context=context) as resp:
            resp.read(1)
    except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
        return f"the package index {index} is unreachable ({exc}); the build needs it"
    return None


class Built:
    def __init__(self, pyz: Path, root: Path) -> None:
        self.pyz = pyz
        self.root = root
        bindir = root / "bin"
        bindir.mkdir()
        base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
        shim = bindir / PYTHON
        # The shebang's `/usr/bin/env pythonX.Y` finds this: a bare, isolated interpreter.
        shim.write_text(f'#!/bin/sh\nexec "{base}" -I -S "$@"\n', "utf-8")
        shim.chmod(0o755)
        home = root / "home"
        home.mkdir()
        self.env = {
            "PATH": f"{bindir}{os.pathsep}/usr/bin{os.pathsep}/bin",
            "HOME": str(home),
            "SHIV_ROOT": str(root / "shiv"),
            "INSTASET_HOME": str(home / "instaset"),
            "LANG": "C.UTF-8",
            "COLUMNS": "100",
        }

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.pyz), *args], env=self.env, cwd=cwd or self.root,
                              capture_output=True, text=True, timeout=RUN_TIMEOUT,
                              stdin=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    reason = index_unreachable()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("zipapp")
    pyz = root / "dist" / "instaset"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(pyz), "--timeout", str(BUILD_TIMEOUT // 2)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"built {pyz}" in done.stdout
    return Built(pyz, root)


def test_one_executable_file(built: Built) -> None:
    assert [p.name for p in built.pyz.parent.iterdir()] == ["instaset"]
    assert os.access(built.pyz, os.X_OK)
    with built.pyz.open("rb") as f:
        assert f.readline() == f"#!/usr/bin/env {PYTHON}\n".encode()


def test_the_interpreter_alone_has_no_dependencies(built: Built) -> None:
    """What the other tests prove rests on this: the shim's Python cannot import them."""
    probe = subprocess.run([PYTHON, "-c", "import aiohttp"], env=built.env, capture_output=True,
                           text=True, timeout=RUN_TIMEOUT, check=False)
    assert probe.returncode == 1 and "No module named 'aiohttp'" in probe.stderr


def test_help(built: Built) -> None:
    done = built.run("--help")
    assert done.returncode == 0, done.stderr
    for command in ("serve", "connect", "workflows", "doctor", "backup", "demo"):
        assert command in done.stdout


def test_workflows_validate_the_example(built: Built) -> None:
    expected = len(load_config(EXAMPLE).workflows)
    done = built.run("--config", str(EXAMPLE), "workflows", "validate")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().lower() == f"config ok: {expected} workflows"


def test_workflows_validate_reports_file_and_line(built: Built) -> None:
    bad = built.root / "config.yaml"
    bad.write_text("server:\n  port: 8787\n  prot: 1\n", "utf-8")
    done = built.run("--config", str(bad), "workflows", "validate")
    assert done.returncode == 1
    assert "config.yaml:3:3: server: unknown key 'prot'" in done.stderr
    assert "Traceback" not in done.stderr


def test_demo(built: Built) -> None:
    """The whole pipeline from the file: sandbox server, SQLite, migrations, workflows."""
    done = built.run("demo")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "every step through the real pipeline" in done.stdout
