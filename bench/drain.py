"""Benchmark: the worker draining a backlog of stored DMs that need no reply, with the
events of one turn of its loop sharing a commit (``Database.tx(grouped=True)``) beside the
same drain with one commit per event, measured in the same process, interleaved.

Usage::

    .venv/bin/python bench/drain.py                  # 3000 DMs, 3 rounds of each
    .venv/bin/python bench/drain.py --events 10000 --rounds 5
    .venv/bin/python bench/drain.py --quick          # CI smoke: 500 DMs, 1 round
    .venv/bin/python bench/drain.py --json

What one round does (a temporary directory, nothing on the network):

1. A database with the bench account (``bench/ingest.py``'s), and ``--events`` signed 1 KB
   DMs (``bench/ingest.py``'s bodies: 397 senders, text that no workflow matches) stored as
   the daemon stores them: parsed by the webhook's own functions and committed by the real
   ``IngestWriter``, each with its ``process_event`` job.
2. The daemon's runtime (``instaset.daemon.runtime``: the default config, the bench app
   secret) and its ``Worker.run`` loop, as ``instaset serve`` runs it, until no job is due;
   wall time and this process's CPU time over the drain. The new contacts' profile jobs
   (one per sender) are part of the drain.
3. **baseline** (one commit per event): the same, with ``Database.tx(grouped=True)``
   patched in this process to a relaxed transaction of its own, as before grouping.

Exit 0 when the run completed; 1 when a drain left an event unprocessed; 2 when the harness
could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import ingest as ingest_bench  # noqa: E402  (bench/ingest.py: the account and the bodies)

from instaset.config import load_config  # noqa: E402
from instaset.daemon import runtime  # noqa: E402
from instaset.event_heads import event_heads, one_item_body  # noqa: E402
from instaset.store.db import Database  # noqa: E402
from instaset.store.ingest import EventRow  # noqa: E402
from instaset.webhook import _decode_body  # noqa: E402


async def _drain(tmp: Path, events: int, grouped: bool) -> dict[str, float]:
    db_path = tmp / f"drain-{'g' if grouped else 'b'}-{time.monotonic_ns()}.db"
    await ingest_bench._create_account(db_path)
    cfg = tmp / "config.yaml"
    cfg.write_text(json.dumps({"instagram": {"app_secret": "bench-secret"},
                               "storage": {"path": str(db_path)},
                               "secrets": {"backend": "file"}}))
    # Everything the runtime opens (the secrets file) in the temporary directory.
    config = load_config(cfg, env={"INSTASET_HOME": str(tmp)})
    original = Database.tx
    if not grouped:
        def one_commit_each(self: Database, *, relaxed: bool = False,
                            grouped: bool = False) -> Any:
            return original(self, relaxed=relaxed or grouped)
        Database.tx = one_commit_each  # type: ignore[method-assign]
    try:
        async with runtime(config) as rt:
            rt.writer.start()
            for raw, _sig in ingest_bench.make_bodies(f"d{time.monotonic_ns()}", events):
                payload = _decode_body(raw)
                found = event_heads(payload, body=one_item_body(payload, raw))
                await rt.writer.submit([EventRow(e.dedupe_key, e.account_id, str(e.kind),
                                                 e.contact_id, e.occurred_at, e.raw)
                                        for e in found])
            await rt.writer.settle()
            stop = asyncio.Event()
            t0, c0 = time.perf_counter(), time.process_time()
            task = asyncio.create_task(rt.worker.run(stop))
            due = "SELECT count(*) FROM jobs WHERE state IN ('ready', 'running') AND run_at <= ?"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                row = await rt.db.fetchone(due, (time.time(),))
                if row is not None and not row[0]:
                    break
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            stop.set()
            await asyncio.wait_for(task, 30)
            row = await rt.db.fetchone("SELECT count(*) FROM events WHERE processed_at IS NULL")
            left = int(row[0]) if row is not None else -1
            await rt.writer.stop()
    finally:
        Database.tx = original  # type: ignore[method-assign]
    return {"wall_s": wall, "cpu_s": cpu, "events_per_s": events / wall,
            "cpu_us_per_event": cpu / events * 1e6, "unprocessed": left}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--events", type=int, default=3000, help="DMs in the backlog (3000)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of each (3)")
    p.add_argument("--quick", action="store_true", help="CI smoke: 500 DMs, 1 round")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = p.parse_args(argv)
    events, rounds = (500, 1) if args.quick else (args.events, args.rounds)
    runs: dict[str, list[dict[str, float]]] = {"grouped": [], "baseline": []}
    try:
        with tempfile.TemporaryDirectory(prefix="instaset-drain-") as tmp:
            os.environ["INSTASET_HOME"] = tmp  # the runtime's files (secrets) go there
            for _ in range(rounds):
                for name in ("baseline", "grouped"):
                    runs[name].append(asyncio.run(_drain(Path(tmp), events, name == "grouped")))
    except Exception as exc:  # the harness, not the code under test
        print(f"drain bench could not run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    median = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
              for name, rs in runs.items()}
    lost = any(r["unprocessed"] for rs in runs.values() for r in rs)
    if args.json:
        print(json.dumps({"events": events, "rounds": runs, "median": median,
                          "speedup": median["grouped"]["events_per_s"]
                          / median["baseline"]["events_per_s"]}, indent=2))
    else:
        print(f"drain of {events} stored DMs that need no reply ({rounds} interleaved rounds, "
              "medians):")
        for name, label in (("baseline", "one commit per event"),
                            ("grouped", "one commit per loop turn")):
            m = median[name]
            walls = ", ".join(f"{r['wall_s']:.2f}" for r in runs[name])
            print(f"  {label:26s} {m['events_per_s']:8.0f} events/s  "
                  f"{m['cpu_us_per_event']:6.0f} us CPU per event  (walls {walls} s)")
        speedup = median["grouped"]["events_per_s"] / median["baseline"]["events_per_s"]
        print(f"  speed-up {speedup:.2f}x; unprocessed after the drains: "
              f"{'some (FAIL)' if lost else 'none'}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
