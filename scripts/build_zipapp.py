#!/usr/bin/env python3
"""Build instaset as ONE executable file (a shiv zipapp) that runs on a machine with only
Python installed.

    python scripts/build_zipapp.py                  # -> dist/instaset.pyz
    python scripts/build_zipapp.py --out /tmp/instaset

Contract:

- The file bundles instaset and every runtime dependency; the target needs nothing but a
  CPython of the same minor version as the interpreter that ran this script (default
  shebang ``/usr/bin/env python3.11`` when built with 3.11), on the same OS and CPU
  architecture: aiohttp, pydantic-core and a few others ship compiled wheels, so the file is
  as portable as those wheels (manylinux wheels: any glibc Linux of that architecture).
- On first run shiv unpacks the dependencies into ``~/.shiv`` (``SHIV_ROOT`` overrides it)
  and reuses them afterwards; deleting that directory is always safe.
- shiv itself is installed into a throwaway virtual environment in a temporary directory:
  it is a build tool, never a dependency of instaset, and nothing outside ``--out`` and the
  temporary directory is written (the source is copied first, so the build leaves no
  ``build/`` or ``*.egg-info`` behind in the work tree).
- Packages come from the package index pip is configured for (``pip config list``); extra
  ``--pip-arg`` values are passed to pip as they are (e.g. ``--pip-arg=--no-index
  --pip-arg=--find-links=/srv/wheels`` for an offline build).
- Exit status 0 with the path and size on stdout; non-zero with the failing step's output on
  stderr.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIV_REQUIREMENT = "shiv>=1.0.8,<2"
ENTRY_POINT = "instaset.cli:main"
# What setuptools needs to build the wheel; tests, benches and caches stay out.
SOURCE_FILES = ("pyproject.toml", "README.md", "config.example.yaml")
SOURCE_DIRS = ("instaset",)


class BuildError(Exception):
    """A build step failed; the message names the step and carries its output."""


def default_shebang() -> str:
    """``/usr/bin/env pythonX.Y`` for the building interpreter: the compiled wheels bundled
    in the file only load on that minor version, so ``python3`` alone would be a trap."""
    return f"/usr/bin/env python{sys.version_info.major}.{sys.version_info.minor}"


def copy_source(src: Path, dest: Path) -> Path:
    """Copy what the wheel needs into ``dest``. Symlinks are copied as the files they point
    to (``instaset/data/config.example.yaml`` links out of the package)."""
    dest.mkdir(parents=True)
    for name in SOURCE_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCE_DIRS:
        shutil.copytree(src / name, dest / name, symlinks=False, ignore=ignore)
    return dest


def _run(step: str, args: list[str], timeout: float) -> None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{step}: no result within {timeout:g} s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise BuildError(f"{step} failed (exit {done.returncode}):\n{tail}")


def venv_python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def build(
    out: Path, *, source: Path = ROOT, shebang: str | None = None,
    pip_args: list[str] | None = None, timeout: float = 900.0,
) -> Path:
    """Build the zipapp at ``out`` (parents created, an existing file replaced) and return
    its path. Raises :class:`BuildError` when a step fails or exceeds ``timeout`` seconds."""
    out = out.resolve()
    with tempfile.TemporaryDirectory(prefix="instaset-zipapp-") as tmp_name:
        tmp = Path(tmp_name)
        src = copy_source(source, tmp / "src")
        tools = tmp / "tools"
        venv.create(tools, with_pip=True, clear=True)
        python = str(venv_python(tools))
        _run("installing shiv", [python, "-m", "pip", "install", "--quiet",
                                 SHIV_REQUIREMENT], timeout)
        built = tmp / "instaset.pyz"
        _run("shiv", [
            python, "-m", "shiv",
            "--entry-point", ENTRY_POINT,
            "--output-file", str(built),
            "--python", shebang or default_shebang(),
            "--compressed", "--reproducible",
            str(src), *(pip_args or []),
        ], timeout)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(built), out)
    out.chmod(0o755)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "instaset.pyz",
                        help="the file to write (default: dist/instaset.pyz)")
    parser.add_argument("--python", dest="shebang", default=None,
                        help=f"the shebang interpreter (default: {default_shebang()!r})")
    parser.add_argument("--pip-arg", action="append", default=[],
                        help="an extra argument for pip (repeatable)")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds allowed for each step (default: 900)")
    args = parser.parse_args(argv)
    try:
        path = build(args.out, shebang=args.shebang, pip_args=args.pip_arg,
                     timeout=args.timeout)
    except (BuildError, OSError) as exc:
        print(f"build_zipapp: {exc}", file=sys.stderr)
        return 1
    print(f"built {path} ({path.stat().st_size} bytes); run it with: {path} --help")
    return 0


if __name__ == "__main__":
    sys.exit(main())
