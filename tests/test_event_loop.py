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


class _Node:
    """A weak-referenceable object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.peer: object = self


def test_startup_heap_is_frozen_after_its_garbage_is_collected() -> None:
    """``instaset serve`` freezes what start-up built, so the collector's full passes stop
    walking it (each pass stalled the event loop ~75 ms under load); the garbage of start-up
    (cycles no one refers to) is collected first, not frozen for ever."""
    import gc
    import weakref

    from instaset.daemon import freeze_startup_heap

    kept = [{"n": i} for i in range(1000)]
    dropped = _Node()  # a cycle: only the collector frees it
    gone = weakref.ref(dropped)
    del dropped
    try:
        freeze_startup_heap()
        assert gone() is None
        assert gc.get_freeze_count() >= len(kept)
        tracked = {id(o) for gen in range(3) for o in gc.get_objects(generation=gen)}
        assert id(kept) not in tracked and id(kept[0]) not in tracked
    finally:
        gc.unfreeze()
    assert any(o is kept for o in gc.get_objects())
