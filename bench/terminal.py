"""Terminal benchmark: ``inbox``, ``stats`` and ``purge`` on a large database, in one run.

Usage::

    python bench/terminal.py [--conversations 100000] [--messages 1000000]
                             [--purge-messages N] [--runs 5] [--quick] [--json]

What one run does (everything on 127.0.0.1, in a temporary directory):

1. **Baseline**: the wall time of ``python -c pass``, ``python -m instaset --help`` and
   ``python -c "import instaset"`` (median of ``--runs``), so that the reader sees how much of
   each CLI figure is interpreter start.
2. **Read database**: created through the project's own ``open_database`` (every migration),
   then filled with plain ``sqlite3.executemany`` in a few transactions: one account,
   ``--conversations`` contacts and conversations (stage, tags, workflows fired), and
   ``--messages`` messages spread over 120 days (inbound with their raw event and finished
   ``process_event`` job; outbound with their ``sends`` row, some refused, some by the human),
   comment events on 20 media with private replies, read receipts, tracked links and clicks,
   AI call records.
3. **Reads**, each as a real CLI subprocess (``python -m instaset --config ... <cmd>``) and
   in-process (the query function alone, on an open database), median of ``--runs``:
   ``inbox``, ``inbox --json``, ``inbox show <contact>``, ``stats --since 30d --json``,
   ``stats --since 90d``.
4. **Purge database**: the same shape with ``--purge-messages`` messages all older than 90
   days (plus a tenth of that in the last 90 days). The real daemon (``instaset serve``) runs
   on it with its worker; a generator process POSTs signed webhook DMs (about 100/s, 4
   connections); after a few seconds of load, ``instaset purge --older-than 90d --yes --json``
   runs as a subprocess. Reported: purge wall time, rows deleted per table, what it did about
   space, the webhook latency (send to 200, i.e. ingest commit included) median / p99 / max
   during the purge and outside it, non-200 answers, and whether every acknowledged event is
   in the database afterwards (looked up by its ``msg:{mid}`` key).

Exit codes: 0 when the run completed (targets met or not: a benchmark, not a test); 1 on a
correctness failure (a CLI command failed, an acknowledged event is missing, a non-200 answer
or a "database is locked" in the daemon's log); 2 when the harness could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import multiprocessing
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the checkout
    sys.path.insert(0, str(ROOT))

ACCOUNT_ID = "17841400000000001"
SECRET = b"bench-secret"
DAY = 86400.0
SPAN_DAYS = 120
WORKFLOWS = ("comment-guide", "price-list", "book-call", "welcome")
MEDIA = tuple(f"1790000000000{i:04d}" for i in range(20))
STAGES = (("new", 55), ("engaged", 25), ("qualified", 10), ("booked", 6), ("customer", 4))
CONTACT_BASE = 5_000_000_000_000_000
# A reused database (--workdir) built under an older schema is migrated by the daemon at
# start: a backfilling migration takes tens of seconds on 1M messages.
START_TIMEOUT = 300.0
TARGET_READ_S = 0.5
TARGET_PURGE_S = 10.0


class HarnessError(Exception):
    """The benchmark could not run."""


# ------------------------------------------------------------------------------ the data


@dataclass(slots=True)
class Rows:
    contacts: list[tuple[Any, ...]] = field(default_factory=list)
    conversations: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    messages: list[tuple[Any, ...]] = field(default_factory=list)
    jobs: list[tuple[Any, ...]] = field(default_factory=list)
    sends: list[tuple[Any, ...]] = field(default_factory=list)
    links: list[tuple[Any, ...]] = field(default_factory=list)
    clicks: list[tuple[Any, ...]] = field(default_factory=list)
    ai_calls: list[tuple[Any, ...]] = field(default_factory=list)

    def size(self) -> int:
        return len(self.messages) + len(self.events) + len(self.jobs) + len(self.sends)


_SQL = {
    "contacts": "INSERT INTO contacts(account_id, id, username, name, first_seen_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
    "conversations": "INSERT INTO conversations(account_id, contact_id, state, last_inbound_at,"
                     " last_message_at, paused_until, unread, updated_at)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "events": "INSERT INTO events(id, dedupe_key, account_id, kind, contact_id, occurred_at,"
              " received_at, processed_at, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "messages": "INSERT INTO messages(account_id, contact_id, mid, direction, sent_by, text,"
                " attachments, event_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "jobs": "INSERT INTO jobs(kind, key, payload, state, attempts, run_at, created_at,"
            " started_at, finished_at) VALUES ('process_event', ?, ?, 'done', 1, ?, ?, ?, ?)",
    "sends": "INSERT INTO sends(key, account_id, contact_id, comment_id, kind, body, state,"
             " sent_by, message_id, reason, workflow, attempts, created_at, updated_at)"
             " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
    "links": "INSERT INTO links(code, url, account_id, contact_id, send_key, workflow,"
             " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    "clicks": "INSERT INTO clicks(code, account_id, contact_id, at) VALUES (?, ?, ?, ?)",
    "ai_calls": "INSERT INTO ai_calls(job_key, attempt, account_id, contact_id, backend, model,"
                " outcome, prompt_tokens, output_tokens, total_tokens, latency_ms, created_at)"
                " VALUES (?, 1, ?, ?, 'gemini', 'gemini-2.5-flash', ?, ?, ?, ?, ?, ?)",
}
_TEXTS = ("hi! is this still available?", "how much is the linen shirt in M?",
          "can I book a call for thursday?", "guide please 🙏", "thanks so much!!",
          "do you ship to Lisbon?")


def _dm_raw(mid: str, sender: str, ms: int, text: str) -> str:
    return json.dumps({"object": "instagram", "entry": [{"id": ACCOUNT_ID, "time": ms,
        "messaging": [{"sender": {"id": sender}, "recipient": {"id": ACCOUNT_ID},
                       "timestamp": ms, "message": {"mid": mid, "text": text}}]}]},
        separators=(",", ":"))


class Builder:
    """Rows for one database; times are drawn from ``spans`` ((days ago from, to, share))."""

    def __init__(self, now: float, seed: int) -> None:
        self.now = now
        self.rnd = random.Random(seed)
        self.event_id = 0
        self.mid_n = 0

    def _stage(self) -> str:
        return self.rnd.choices([s for s, _ in STAGES], [w for _, w in STAGES])[0]

    def conversation(self, rows: Rows, i: int, n_messages: int, start: float) -> None:
        r = self.rnd
        contact = str(CONTACT_BASE + i)
        rows.contacts.append((ACCOUNT_ID, contact, f"user{i}", f"User {i}", start, start))
        t = start
        first_message = len(rows.messages)
        fired: dict[str, float] = {}
        last_in: float | None = None
        event_key = ""
        comment_id: str | None = None
        if r.random() < 0.1:  # the conversation started with a comment on a post
            self.event_id += 1
            comment_id = f"1800{i:013d}"
            event_key = f"comment:{comment_id}"
            raw = json.dumps({"object": "instagram", "entry": [{"id": ACCOUNT_ID,
                "time": int(t * 1000), "changes": [{"field": "comments", "value": {
                    "id": comment_id, "text": "guide", "from": {"id": contact,
                    "username": f"user{i}"}, "media": {"id": r.choice(MEDIA),
                    "media_product_type": "REELS"}}}]}]}, separators=(",", ":"))
            rows.events.append((self.event_id, event_key, ACCOUNT_ID, "comment", contact,
                                t, t, t + 0.3, raw))
            rows.jobs.append((f"event:{event_key}", json.dumps({"event_id": self.event_id}),
                              t, t, t + 0.2, t + 0.3))
        for j in range(n_messages):
            self.mid_n += 1
            mid = f"aWdfZAG1faXRlbToxOklHTWVzc2FnZA{self.mid_n:012d}"
            inbound = j % 2 == 0 and not (j == 0 and comment_id)
            if inbound:
                text = r.choice(_TEXTS)
                self.event_id += 1
                event_key = f"msg:{mid}"
                rows.events.append((self.event_id, event_key, ACCOUNT_ID, "message", contact,
                                    t, t, t + 0.3, _dm_raw(mid, contact, int(t * 1000), text)))
                rows.jobs.append((f"event:{event_key}",
                                  json.dumps({"event_id": self.event_id}), t, t, t + 0.2,
                                  t + 0.3))
                rows.messages.append((ACCOUNT_ID, contact, mid, "in", "contact", text, "[]",
                                      self.event_id, t))
                last_in = t
                t += r.lognormvariate(4.0, 1.5)  # the answer: seconds to hours
            else:
                human = r.random() < 0.1
                workflow = None if human else r.choice(WORKFLOWS)
                refused = r.random() < 0.03
                key = (f"inbox:{contact}:{mid}" if human
                       else f"send:{event_key or 'start'}:{j}")
                private = comment_id is not None and j == 0
                kind = "private_reply" if private else "text"
                text = "Here is the guide: https://example.com/guide"
                rows.sends.append((key, ACCOUNT_ID, contact, comment_id if private else None,
                                   kind, json.dumps({"message": {"text": text}}),
                                   "refused" if refused else "sent",
                                   "human" if human else "automation", None if refused else mid,
                                   "window_closed" if refused else None, workflow, t, t + 0.4))
                if not refused:
                    rows.messages.append((ACCOUNT_ID, contact, mid, "out",
                                          "human" if human else "automation", text, "[]", None,
                                          t))
                    if r.random() < 0.2:  # they read it
                        self.event_id += 1
                        rk = f"read:{ACCOUNT_ID}:{contact}:{mid}"
                        at = t + r.uniform(5, 3600)
                        raw = json.dumps({"object": "instagram", "entry": [{"id": ACCOUNT_ID,
                            "time": int(at * 1000), "messaging": [{"sender": {"id": contact},
                            "recipient": {"id": ACCOUNT_ID}, "timestamp": int(at * 1000),
                            "read": {"mid": mid}}]}]}, separators=(",", ":"))
                        rows.events.append((self.event_id, rk, ACCOUNT_ID, "read", contact,
                                            at, at, at + 0.3, raw))
                        rows.jobs.append((f"event:{rk}", json.dumps({"event_id":
                                          self.event_id}), at, at, at + 0.2, at + 0.3))
                if workflow:
                    fired[workflow] = t
                    if r.random() < 0.05:
                        code = hashlib.sha256(key.encode()).hexdigest()[:10]
                        rows.links.append((code, "https://example.com/guide", ACCOUNT_ID,
                                           contact, key, workflow, t))
                        if r.random() < 0.4:
                            rows.clicks.append((code, ACCOUNT_ID, contact, t + 60))
                    if r.random() < 0.05:
                        tokens = r.randint(300, 1500)
                        rows.ai_calls.append((f"ai:{key}", ACCOUNT_ID, contact,
                                              "ok" if r.random() < 0.97 else "timeout",
                                              tokens - 100, 100, tokens, r.uniform(300, 2000),
                                              t))
                t += r.expovariate(1 / 7200.0)  # their next message: about two hours later
            t = min(t, self.now - 1)
        stage = self._stage()
        tags = ["lead"] if stage != "new" and r.random() < 0.5 else []
        state = json.dumps({"stage": stage, "tags": tags, "fields": {}, "fired": fired})
        last = max(start, *(m[-1] for m in rows.messages[first_message:]))
        unread = r.randint(1, 3) if r.random() < 0.2 else 0
        paused = self.now + 3600 if r.random() < 0.02 else None
        rows.conversations.append((ACCOUNT_ID, contact, state, last_in, last, paused, unread,
                                   last))


def _open_with_migrations(path: Path) -> None:
    """Create the file through the project's own code: every migration, the bench account."""
    from instaset.store.db import open_database
    from instaset.store.history import upsert_account

    async def go() -> None:
        db = await open_database(path)
        try:
            await upsert_account(db, ACCOUNT_ID, username="bench", now=time.time())
        finally:
            await db.close()

    asyncio.run(go())


def _time_ordered(rows: Rows) -> None:
    """Sort every table by its time column and renumber events in that order: a real
    database is written as time passes, so rowids follow time, and the time-range reads (and
    the purge) touch contiguous pages, as they would in production."""
    rows.events.sort(key=lambda e: e[6])
    new_id = {e[0]: i for i, e in enumerate(rows.events, start=1)}
    rows.events[:] = [(i, *e[1:]) for i, e in enumerate(rows.events, start=1)]
    rows.messages.sort(key=lambda m: m[-1])
    rows.messages[:] = [(*m[:7], new_id.get(m[7]) if m[7] else None, m[8])
                        for m in rows.messages]
    rows.jobs.sort(key=lambda j: j[3])
    rows.jobs[:] = [(j[0], json.dumps({"event_id": new_id[json.loads(j[1])["event_id"]]}),
                     *j[2:]) for j in rows.jobs]
    for table, col in (("sends", -2), ("links", -1), ("clicks", -1), ("ai_calls", -1),
                       ("contacts", 4), ("conversations", -1)):
        getattr(rows, table).sort(key=lambda r, c=col: r[c])


def build(path: Path, conversations: int, spans: list[tuple[float, float, int]],
          now: float, seed: int = 7) -> dict[str, int]:
    """Fill ``path``. ``spans``: (days ago, days ago, messages) - each conversation's
    messages fall in one span; conversations are dealt to spans in proportion."""
    _open_with_migrations(path)
    b = Builder(now, seed)
    total_msgs = sum(n for _, _, n in spans)
    rows = Rows()
    conv_i = 0
    for s_i, (old, young, n_msgs) in enumerate(spans):
        n_conv = (conversations * n_msgs // total_msgs if s_i < len(spans) - 1
                  else conversations - conv_i)
        per, extra = divmod(n_msgs, max(1, n_conv))
        for k in range(n_conv):
            start = now - b.rnd.uniform(young, old) * DAY
            b.conversation(rows, conv_i, per + (1 if k < extra else 0), start)
            conv_i += 1
    _time_ordered(rows)
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    counts: dict[str, int] = {}
    chunk = 250_000
    for table, sql in _SQL.items():
        data = getattr(rows, table)
        for i in range(0, len(data), chunk):
            conn.execute("BEGIN")
            conn.executemany(sql, data[i:i + chunk])
            conn.execute("COMMIT")
        counts[table] = len(data)
    # No ANALYZE: instaset never runs it, so the planner sees what it sees in production.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return counts


# ------------------------------------------------------------------------------ timing


def _env() -> dict[str, str]:
    # PYTHONPATH: the CLI subprocesses import the same checkout as this script.
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="140", PYTHONPATH=str(ROOT))
    env.pop("INSTASET_CONFIG", None)
    return env


def compile_checkout() -> None:
    """Write the checkout's bytecode before anything is timed, as ``pip install`` does for an
    installed package. Where the environment sets ``PYTHONDONTWRITEBYTECODE``, an import
    never writes it, and every CLI run would compile instaset's ~150 modules again: about
    0.14 s of the ~0.3 s ``--help`` on a slow machine, which no installed copy pays.
    ``compileall`` writes the files whatever that variable says (into ``__pycache__``,
    which git ignores)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "instaset")],
                   check=True, capture_output=True, timeout=300)


def time_cmd(argv: list[str], runs: int, env: dict[str, str]) -> tuple[list[float], str]:
    """Wall times of ``runs`` runs of ``argv``; raises HarnessError when it fails."""
    times: list[float] = []
    out = ""
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise CommandFailed(f"{' '.join(argv[-4:])} exited {proc.returncode}:\n"
                                f"{proc.stderr[-2000:]}")
        out = proc.stdout
    return times, out


class CommandFailed(Exception):
    """A measured CLI command failed (a correctness failure, exit 1)."""


def time_inprocess(db_path: Path, runs: int, contact: str) -> dict[str, list[float]]:
    """The query functions alone on an open database (no interpreter start, no rendering)."""
    from instaset import inbox, stats
    from instaset.store.db import open_database

    async def go() -> dict[str, list[float]]:
        db = await open_database(db_path)
        out: dict[str, list[float]] = {}
        try:
            ref = await inbox.resolve_contact(db, contact)
            cases: list[tuple[str, Callable[[], Any]]] = [
                ("inbox", lambda: inbox.conversations(db, time.time(), limit=50)),
                ("inbox --json", lambda: inbox.conversations(db, time.time(), limit=50)),
                ("inbox show", lambda: inbox.thread(db, ref, time.time(), mark_read=False)),
                ("stats --since 30d --json",
                 lambda: stats.compute(db, time.time() - 30 * DAY, time.time())),
                ("stats --since 90d",
                 lambda: stats.compute(db, time.time() - 90 * DAY, time.time())),
            ]
            for name, fn in cases:
                out[name] = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    await fn()
                    out[name].append(time.perf_counter() - t0)
        finally:
            await db.close()
        return out

    return asyncio.run(go())


# ------------------------------------------------------------------------------ ingest load


def _sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()


class Daemon:
    """``instaset serve`` in a subprocess; stderr to ``log``."""

    def __init__(self, config: Path, log: Path, env: dict[str, str]) -> None:
        self.log = log
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "instaset", "--config", str(config), "serve", "--host",
                 "127.0.0.1", "--port", "0", "--log-level", "WARNING"],
                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env)
        self.port = 0

    def wait_ready(self) -> None:
        import re

        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(f"daemon exited {self.proc.returncode}:\n{self.tail()}")
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)",
                          self.log.read_text(errors="replace"))
            if m:
                self.port = int(m.group(1))
                with contextlib.suppress(OSError), urllib.request.urlopen(
                        f"http://127.0.0.1:{self.port}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            time.sleep(0.05)
        raise HarnessError(f"daemon not healthy after {START_TIMEOUT:.0f} s:\n{self.tail()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _built(path: Path, args: argparse.Namespace, make: Callable[[], dict[str, int]]
           ) -> dict[str, int]:
    """Build ``path`` (its row counts), or with ``--workdir`` reuse it when it exists (the
    counts then come from a side file): building 1M messages takes minutes."""
    counts = path.with_name(path.name + ".counts.json")
    if args.workdir is not None and path.exists() and counts.exists():
        return dict(json.loads(counts.read_text()))
    path.unlink(missing_ok=True)
    built = make()
    counts.write_text(json.dumps(built))
    return built


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def purge_under_ingest(tmp: Path, args: argparse.Namespace, env: dict[str, str]
                       ) -> dict[str, Any]:
    now = time.time()
    db_path = tmp / "purge.db"
    pristine = tmp / "purge.pristine.db"
    old = args.purge_messages
    t0 = time.perf_counter()
    built = _built(pristine, args, lambda: build(
        pristine, args.conversations,
        [(SPAN_DAYS, 91.0, old), (90.0, 0.0, max(1, old // 10))], now, seed=11))
    shutil.copyfile(pristine, db_path)
    build_s = time.perf_counter() - t0
    config = tmp / "purge.yaml"
    config.write_text(json.dumps({"instagram": {"app_secret": SECRET.decode()},
                                  "storage": {"path": str(db_path)},
                                  "worker": {"poll_interval": 0.2},
                                  # The daemon's own daily retention would run at start and
                                  # purge before the measured CLI purge does.
                                  "retention": {"days": 3650}}))
    daemon = Daemon(config, tmp / "daemon.log", env)
    ctx = multiprocessing.get_context("spawn")
    try:
        daemon.wait_ready()
        url = f"http://127.0.0.1:{daemon.port}/webhook"
        parent, child = ctx.Pipe(duplex=False)
        lead = 3.0
        stop_at = time.time() + lead + 600.0  # pushed earlier once the purge is done
        # The generator stops on its own at stop_at; we shorten it through a file flag below.
        flag = tmp / "stop"
        flag.unlink(missing_ok=True)
        gen = ctx.Process(target=_generator_until, args=(url, "p", args.ingest_rate, 4,
                                                        stop_at, str(flag), child))
        gen.start()
        time.sleep(lead)
        p0w = time.time()
        p0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "instaset", "--config", str(config), "purge",
             "--older-than", "90d", "--yes", "--json"],
            capture_output=True, text=True, env=env, timeout=900)
        purge_s = time.perf_counter() - p0
        p1w = time.time()
        time.sleep(2.0)
        flag.write_text("stop")
        results: list[tuple[float, float, int, str]] = parent.recv()
        gen.join(timeout=30)
    finally:
        code = daemon.stop()
    if proc.returncode != 0:
        raise CommandFailed(f"purge exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    during = [lat for st, lat, _, _ in results if p0w <= st <= p1w]
    outside = [lat for st, lat, _, _ in results if not p0w <= st <= p1w]
    acked = [mid for _, _, status, mid in results if status == 200]
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        missing = sum(1 for mid in acked if conn.execute(
            "SELECT 1 FROM events WHERE dedupe_key = ?", (f"msg:{mid}",)).fetchone() is None)
        left_old = conn.execute("SELECT count(*) FROM messages WHERE created_at < ?",
                                (p0w - 90 * DAY,)).fetchone()[0]
    finally:
        conn.close()
    log = daemon.log.read_text(errors="replace")
    return {
        "built": built, "build_seconds": round(build_s, 1),
        "purge_seconds": round(purge_s, 2), "report": report,
        "messages_deleted": report["counts"].get("messages", 0),
        "old_messages_left": left_old,
        "requests": len(results), "requests_during_purge": len(during),
        "non_200": sum(1 for _, _, s, _ in results if s != 200),
        "ingest_ms_during": _summary(during), "ingest_ms_outside": _summary(outside),
        "acknowledged": len(acked), "acknowledged_missing": missing,
        "locked_in_log": log.count("database is locked"), "daemon_exit": code,
    }


def _generator_until(url: str, tag: str, rate: float, connections: int, stop_at: float,
                     flag: str, out: Connection) -> None:
    """:func:`_generator` that also stops as soon as the file ``flag`` exists."""
    import threading

    def watch() -> None:
        while not os.path.exists(flag):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGUSR1)

    stop = {"at": stop_at}

    def on_flag(_sig: int, _frame: object) -> None:
        stop["at"] = 0.0

    signal.signal(signal.SIGUSR1, on_flag)
    threading.Thread(target=watch, daemon=True).start()
    _generator_stoppable(url, tag, rate, connections, stop, out)


def _generator_stoppable(url: str, tag: str, rate: float, connections: int,
                         stop: dict[str, float], out: Connection) -> None:
    import aiohttp

    async def main() -> list[tuple[float, float, int, str]]:
        results: list[tuple[float, float, int, str]] = []
        period = connections / rate
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async def one(c: int) -> None:
                n = 0
                next_at = time.monotonic() + c * period / connections
                while time.time() < stop["at"]:
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                    next_at = max(next_at + period, time.monotonic())
                    mid = f"aWdfZAG1faXRlbToxOklHTWVzc2FnZA-live-{tag}-{c}-{n}"
                    sender = str(489760440000000 + (n * connections + c) % 397)
                    n += 1
                    ms = int(time.time() * 1000)
                    body = _dm_raw(mid, sender, ms, "is this still available?").encode()
                    started = time.time()
                    t0 = time.perf_counter()
                    try:
                        async with session.post(url, data=body, headers={
                                "Content-Type": "application/json",
                                "X-Hub-Signature-256": _sign(body)}) as resp:
                            await resp.read()
                            status = resp.status
                    except (aiohttp.ClientError, TimeoutError):
                        status = 0
                    results.append((started, time.perf_counter() - t0, status, mid))

            await asyncio.gather(*(one(c) for c in range(connections)))
        return results

    out.send(asyncio.run(main()))
    out.close()


def _summary(lat: list[float]) -> dict[str, float | int | None]:
    ms = [x * 1000 for x in lat]
    return {"n": len(ms), "median": _r(statistics.median(ms) if ms else None),
            "p99": _r(_pct(ms, 99)), "max": _r(max(ms) if ms else None)}


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


# ------------------------------------------------------------------------------ the run


READS: list[tuple[str, list[str]]] = [
    ("inbox", ["inbox"]),
    ("inbox --json", ["inbox", "--json"]),
    ("inbox show", ["inbox", "show", "{contact}"]),
    ("stats --since 30d --json", ["stats", "--since", "30d", "--json"]),
    ("stats --since 90d", ["stats", "--since", "90d"]),
]


def reads(tmp: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    now = time.time()
    db_path = tmp / "read.db"
    t0 = time.perf_counter()
    built = _built(db_path, args, lambda: build(
        db_path, args.conversations, [(SPAN_DAYS, 0.0, args.messages)], now))
    build_s = time.perf_counter() - t0
    config = tmp / "read.yaml"
    config.write_text(json.dumps({"storage": {"path": str(db_path)}}))
    contact = "user7"
    py = [sys.executable, "-m", "instaset", "--config", str(config)]
    cli: dict[str, list[float]] = {}
    for name, argv in READS:
        times, _ = time_cmd([*py, *(a.format(contact=contact) for a in argv)], args.runs, env)
        cli[name] = times
    inproc = time_inprocess(db_path, args.runs, contact)
    return {"built": built, "build_seconds": round(build_s, 1),
            "db_mb": round(db_path.stat().st_size / 1e6), "cli": cli, "inprocess": inproc}


def baseline(args: argparse.Namespace, env: dict[str, str]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    out["python -c pass"] = time_cmd([sys.executable, "-c", "pass"], args.runs, env)[0]
    out["python -m instaset --help"] = time_cmd(
        [sys.executable, "-m", "instaset", "--help"], args.runs, env)[0]
    out['python -c "import instaset"'] = time_cmd(
        [sys.executable, "-c", "import instaset"], args.runs, env)[0]
    return out


def _med(v: list[float]) -> float:
    return statistics.median(v)


def render(doc: dict[str, Any]) -> str:
    lines = [f"instaset terminal bench: {doc['conversations']} conversations, "
             f"{doc['messages']} messages ({doc['runs']} runs each, median; load "
             f"{doc['loadavg']})", ""]
    lines.append("baseline (interpreter start)")
    for name, v in doc["baseline"].items():
        lines.append(f"  {name:<34} {_med(v) * 1000:8.0f} ms")
    r = doc.get("reads")
    if r:
        lines += ["", f"reads (database built in {r['build_seconds']} s, {r['db_mb']} MB: "
                  + ", ".join(f"{k} {v}" for k, v in r["built"].items()) + ")",
                  f"  {'command':<26} {'CLI ms':>8} {'in-process ms':>14}  target"]
        for name, _ in READS:
            c = _med(r["cli"][name])
            i = _med(r["inprocess"][name])
            ok = "met" if c < TARGET_READ_S else "MISSED"
            lines.append(f"  {name:<26} {c * 1000:8.0f} {i * 1000:14.1f}  <500 ms CLI: {ok}")
    p = doc.get("purge")
    if p:
        d, o = p["ingest_ms_during"], p["ingest_ms_outside"]
        lines += ["", f"purge --older-than 90d under ingest (database built in "
                  f"{p['build_seconds']} s: " + ", ".join(
                      f"{k} {v}" for k, v in p["built"].items()) + ")",
                  f"  wall time                 {p['purge_seconds']:8.2f} s   "
                  f"(target < {TARGET_PURGE_S:.0f} s: "
                  f"{'met' if p['purge_seconds'] < TARGET_PURGE_S else 'MISSED'})",
                  f"  messages deleted          {p['messages_deleted']:8d}   "
                  f"(old messages left: {p['old_messages_left']})",
                  f"  rows deleted              {p['report']['total']:8d}   "
                  + ", ".join(f"{k} {v}" for k, v in p["report"]["counts"].items()),
                  f"  space                     {p['report']['space']}",
                  f"  ingest during purge       n={d['n']} median {d['median']} ms, "
                  f"p99 {d['p99']} ms, max {d['max']} ms",
                  f"  ingest outside purge      n={o['n']} median {o['median']} ms, "
                  f"p99 {o['p99']} ms, max {o['max']} ms",
                  f"  non-200 answers           {p['non_200']}",
                  f"  acknowledged / missing    {p['acknowledged']} / "
                  f"{p['acknowledged_missing']}",
                  f"  'database is locked' in daemon log: {p['locked_in_log']}"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conversations", type=int, default=100_000)
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--purge-messages", type=int, default=None,
                   help="old messages in the purge database (default: --messages)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--ingest-rate", type=float, default=100.0, help="webhooks per second")
    p.add_argument("--skip-reads", action="store_true")
    p.add_argument("--skip-purge", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2,000 conversations, 20,000 messages, 2 runs")
    p.add_argument("--json", action="store_true")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep the databases here and reuse them on the next run (the"
                        " built databases are only valid for the same sizes and day)")
    args = p.parse_args(argv)
    if args.quick:
        args.conversations, args.messages, args.runs = 2_000, 20_000, 2
    if args.purge_messages is None:
        args.purge_messages = args.messages
    if min(args.conversations, args.messages, args.runs) < 1 or args.ingest_rate <= 0:
        p.error("sizes, --runs and --ingest-rate must be positive")
    return args


@contextlib.contextmanager
def _tmpdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="instaset-terminal-") as tmp:
        yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = _env()
    compile_checkout()
    doc: dict[str, Any] = {"conversations": args.conversations, "messages": args.messages,
                           "purge_messages": args.purge_messages, "runs": args.runs,
                           "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    ok = True
    try:
        with _tmpdir(args.workdir) as tmp:
            doc["baseline"] = baseline(args, env)
            if not args.skip_reads:
                doc["reads"] = reads(tmp, args, env)
            if not args.skip_purge:
                doc["purge"] = purge_under_ingest(tmp, args, env)
                p = doc["purge"]
                ok = (p["acknowledged_missing"] == 0 and p["non_200"] == 0
                      and p["locked_in_log"] == 0 and p["old_messages_left"] == 0)
    except CommandFailed as exc:
        print(f"correctness failure: {exc}", file=sys.stderr)
        return 1
    except (HarnessError, OSError, subprocess.SubprocessError, EOFError) as exc:
        print(f"harness failure: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(doc, indent=2) if args.json else render(doc))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
