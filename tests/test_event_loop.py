"""The daemon's event loop: uvloop where it is installed, asyncio's otherwise
(``instaset.cli.app.server_loop_factory`` / ``run_server``)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from instaset.cli.app import run_server, server_loop_factory


async def _loop_module(tag: str) -> tuple[str, str]:
    await asyncio.sleep(0)
    return tag, type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_serve_runs_on_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")
    assert run_server(_loop_module)("x") == ("x", "uvloop")


def test_without_uvloop_it_is_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    assert server_loop_factory() is None
    assert run_server(_loop_module)("y") == ("y", "asyncio")


def test_run_server_propagates_the_coroutine_error() -> None:
    async def boom() -> None:
        raise LookupError("from the daemon")

    with pytest.raises(LookupError, match="from the daemon"):
        run_server(boom)()
