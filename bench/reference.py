"""The ingest bench with a third server: the smallest durable group commit.

What the ingest ratio's target means on this machine. ``bench/ingest.py`` compares
``instaset serve`` with a bare aiohttp 200. This script adds, in each round and under the same
load, the group-commit pattern that our performance notes recommend for a webhook receiver:
one aiohttp handler that checks ``X-Hub-Signature-256``, decodes the JSON, takes the ``mid``
and puts the row on an ``asyncio.Queue``; one writer task that takes what is queued,
``executemany`` + ``commit`` through aiosqlite (WAL, the same ``synchronous`` as instaset),
then answers every request of the batch. One table with a unique ``mid``; no worker, no
job rows, no other parsing. It is the floor of what any server that commits before its 200
costs, so the three ratios printed (reference/bare, instaset/bare, instaset/reference) say
how much of instaset's gap is durability itself and how much is instaset's own work.

    .venv/bin/python bench/reference.py                 # 3 rounds: bare, instaset, reference
    .venv/bin/python bench/reference.py --rounds 5 --rate-seconds 2

Options are bench/ingest.py's (``--requests``, ``--connections``, ``--sync``, ``--rounds``
(default 3 here), ``--rate``, ``--rate-seconds``, ``--client``, ``--json``). Exit code 0
when the run completed, 1 when a server answered 200 for a row it had not committed, 2 when
the harness could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ingest  # bench/ingest.py: load generators, servers, results

MAX_BATCH = 1024
Rounds = list[tuple[ingest.ServerResult, ingest.ServerResult, ingest.ServerResult]]
_TABLE = ("CREATE TABLE IF NOT EXISTS inbound_events(id INTEGER PRIMARY KEY, mid TEXT UNIQUE, "
          "received_at REAL, body BLOB)")
_INSERT = "INSERT OR IGNORE INTO inbound_events(mid, received_at, body) VALUES (?, ?, ?)"


async def _reference_main(port: int, db_path: str, synchronous: str) -> None:
    """The reference server (a subprocess): the pattern in the module docstring."""
    import aiosqlite
    from serve_http import serve_until_signal  # bench/serve_http.py

    db = await aiosqlite.connect(db_path)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute(f"PRAGMA synchronous={synchronous}")
    await db.execute(_TABLE)
    await db.commit()
    queue: asyncio.Queue[tuple[tuple[str, float, bytes], asyncio.Future[None]]] = (
        asyncio.Queue())

    async def writer() -> None:
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < MAX_BATCH:
                batch.append(queue.get_nowait())
            try:
                await db.executemany(_INSERT, [row for row, _ in batch])
                await db.commit()
            except Exception as exc:  # every request of the batch gets a 503
                await db.rollback()
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    async def webhook(request: web.Request) -> web.Response:
        raw = await request.read()
        expected = "sha256=" + hmac.new(ingest.SECRET, raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-Hub-Signature-256", ""), expected):
            return web.Response(status=403, text="bad signature")
        try:
            mid = json.loads(raw)["entry"][0]["messaging"][0]["message"]["mid"]
        except (ValueError, LookupError, TypeError):
            return web.Response(status=400, text="malformed")
        fut = asyncio.get_running_loop().create_future()
        queue.put_nowait(((str(mid), time.time(), raw), fut))
        try:
            await fut
        except Exception:
            return web.Response(status=503, text="storage error")
        return web.Response(text="EVENT_RECEIVED", content_type="text/plain")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    task = asyncio.create_task(writer())
    app = web.Application()
    app.add_routes([web.post("/webhook", webhook), web.get("/healthz", healthz)])
    try:
        await serve_until_signal(app, port, "reference group commit")
    finally:
        task.cancel()
        await db.close()


def _committed(db_path: Path) -> int:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM inbound_events").fetchone()[0])


def one_round(args: argparse.Namespace, rnd: int, tmpdir: Path, env: dict[str, str]
              ) -> tuple[ingest.ServerResult, ingest.ServerResult, ingest.ServerResult]:
    """bare, instaset (bench/ingest.py's round), then the reference: each alone on the box."""
    db_path = tmpdir / f"reference{rnd}.db"
    argv = [sys.executable, str(Path(__file__).resolve()), "--_reference-server", "0",
            str(db_path), args.sync]
    server = ingest.Server("reference", argv, tmpdir / f"reference{rnd}.log", env)
    bare, inst = ingest.one_round(args, rnd, tmpdir, env)
    try:
        ref = ingest.bench_server("reference", rnd, server, args, db_path=None)
    finally:
        server.stop()
    ref.committed = _committed(db_path)
    return bare, ref, inst


def _ratios(rounds: Rounds) -> dict[str, float]:
    def med(a: int, b: int) -> float:
        return statistics.median(r[a].rps / r[b].rps if r[b].rps else 0.0 for r in rounds)

    return {"reference/bare": med(1, 0), "instaset/bare": med(2, 0),
            "instaset/reference": med(2, 1)}


def render(args: argparse.Namespace, rounds: Rounds) -> str:
    lines = [
        f"ingest: bare aiohttp 200, the reference group commit, instaset serve; "
        f"{args.connections} connections, {args.requests} requests per server and round, "
        f"synchronous={args.sync}, load average before: {args.loadavg}",
        "",
        f"{'round':<6} {'server':<10} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'srv CPU loop+db':>16} {'open p99 ms':>12} {'acked':>7} {'committed':>9}",
    ]
    for group in rounds:
        for r in group:
            cpu = f"{r.main_cpu_pct or 0:.0f}%+{r.other_cpu_pct or 0:.0f}%"
            open_p99 = f"{r.open_loop.p99_ms:.2f}" if r.open_loop else "-"
            committed = "-" if r.committed is None else str(r.committed)
            lines.append(f"{r.round:<6} {r.name:<10} {r.rps:>7.0f} {r.p50_ms:>7.2f} "
                         f"{r.p99_ms:>7.2f} {cpu:>16} {open_p99:>12} {r.acknowledged:>7} "
                         f"{committed:>9}")
        lines.append(
            f"       ratios: reference/bare {group[1].rps / max(group[0].rps, 1e-9):.2f}, "
            f"instaset/bare {group[2].rps / max(group[0].rps, 1e-9):.2f}, "
            f"instaset/reference {group[2].rps / max(group[1].rps, 1e-9):.2f}")
    medians = ", ".join(f"{k} {v:.2f}" for k, v in _ratios(rounds).items())
    lines += ["", f"closed-loop throughput, medians of the per-round ratios: {medians}"]
    return "\n".join(lines)


def _durable(rounds: Rounds) -> bool:
    return all(r.committed is not None and r.committed >= r.acknowledged
               for group in rounds for r in group[1:])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--_reference-server"]:
        port, db_path, synchronous = int(argv[1]), argv[2], argv[3]
        with asyncio.Runner(loop_factory=ingest._server_loop_factory()) as runner:
            runner.run(_reference_main(port, db_path, synchronous))
        return 0
    if not any(a == "--rounds" or a.startswith("--rounds=") for a in argv):
        argv += ["--rounds", "3"]
    args = ingest.parse_args(argv)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("INSTASET_CONFIG", None)
    args.loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        with tempfile.TemporaryDirectory(prefix="instaset-reference-") as tmp:
            rounds = [one_round(args, rnd, Path(tmp), env) for rnd in range(1, args.rounds + 1)]
    except ingest.HarnessError as exc:
        print(f"benchmark could not run: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"ratios": _ratios(rounds),
                          "rounds": [[asdict(r) for r in group] for group in rounds]}, indent=2))
    else:
        print(render(args, rounds))
    return 0 if _durable(rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
