"""Crash safety of the real daemon: ``kill -9`` under webhook load loses nothing acknowledged
and processes nothing twice; SIGTERM or SIGINT under load exits 0 and loses nothing acknowledged.

Each test runs ``python -m instaset serve`` as a subprocess on 127.0.0.1 and drives it with
concurrent signed ``POST /webhook`` requests (single DMs, batches of several items, and
redeliveries of earlier items). Only POSTs answered 200 count as acknowledged: a request the
server died under, or that was refused while it was down, was never promised to be stored.
The database is then inspected with the stdlib ``sqlite3`` after a graceful stop.

Randomness (when to kill, what to post) comes from ``random.Random`` seeded by
``INSTASET_CHAOS_SEED`` (default below), printed in every failure message. Nothing asserts on
elapsed time; every wait is bounded and fails with the daemon's log attached.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import os
import random
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import pytest
import yaml

from instaset.store.db import open_database
from instaset.store.history import upsert_account

SECRET = "crash-secret"
ACCOUNT = "17841400000000001"
SEED = int(os.environ.get("INSTASET_CHAOS_SEED", "20250221"))
REPO = Path(__file__).resolve().parents[1]

POSTERS = 6
KILLS = 3
MAX_POSTS_PER_POSTER = 20_000  # a hard cap; the orchestrator stops the load long before
# Message times of the run: recent, or the daemon's own retention (90 days by default, run
# at start) purges their history rows while the test still expects them.
BASE_MS = int(time.time() * 1000) - 3_600_000
LOAD_HARD_LIMIT_S = 120.0  # posters give up on their own after this, whatever happens
START_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def free_port() -> int:
    """A free port below the ephemeral range when possible.

    While the daemon is down, the posters' refused connects pick ephemeral local ports; one of
    them could land on the daemon's own port (a TCP self-connect) and block the restart. A
    port outside that range cannot be picked by connect()."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()  # not the seeded one: parallel runs must not pick the same ports
    for port in [rng.randrange(10_000, low) for _ in range(50)] if low > 10_050 else []:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``pred`` every 5 ms until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (seed {SEED})")
        await asyncio.sleep(0.005)


# -- the daemon under test -------------------------------------------------------------------
class Daemon:
    """One ``instaset serve`` at a time on a fixed port and database; restartable."""

    def __init__(self, tmp: Path, port: int) -> None:
        self.tmp = tmp
        self.port = port
        self.db_path = tmp / "crash.db"
        self.config = tmp / "crash.yaml"
        self.log_path = tmp / "daemon.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.up = False  # set once /healthz answered, cleared just before we stop it
        self.generation = 0  # bumped by every kill -9
        self.config.write_text(yaml.safe_dump({
            "instagram": {"app_secret": SECRET},
            "storage": {"path": str(self.db_path)},
            # A short backoff cap: a job that failed under load must not outlast the drain.
            "worker": {"poll_interval": 0.05, "lease_seconds": 30, "backoff_base": 0.2,
                       "backoff_cap": 2},
        }))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except FileNotFoundError:
            return "(no daemon log)"
        return "\n".join(text.splitlines()[-lines:])

    async def start(self, session: aiohttp.ClientSession) -> None:
        assert self.proc is None or self.proc.returncode is not None
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        log: TextIO
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"--- start (generation {self.generation}) ---\n")
            log.flush()
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "instaset", "--config", str(self.config), "serve",
                "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "INFO",
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.tmp,
                env=env,
            )
        await self.health(session, timeout=START_TIMEOUT_S)
        self.up = True

    async def health(self, session: aiohttp.ClientSession, timeout: float) -> dict[str, Any]:
        """The first 200 answer of ``/healthz`` from the current process."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise AssertionError(
                    f"daemon exited with {self.proc.returncode} (seed {SEED}):\n"
                    f"{self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{self.base}/healthz",
                                       timeout=aiohttp.ClientTimeout(total=5)) as resp:
                    if resp.status == 200:
                        body: dict[str, Any] = await resp.json()
                        return body
            await asyncio.sleep(0.05)
        raise AssertionError(f"/healthz never answered (seed {SEED}):\n{self.log_tail()}")

    async def drained(self, session: aiohttp.ClientSession) -> None:
        """Poll until the daemon is healthy and none of the events' jobs is ready or running.

        The jobs table is read directly (WAL lets a reader in beside the daemon) rather than
        waiting for ``queue_depth == 0``: a periodic job of another feature may be running,
        or come due, while the events' jobs are drained."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        pending = -1
        while time.monotonic() < deadline:
            body = await self.health(session, timeout=START_TIMEOUT_S)
            pending = pending_event_jobs(self.db_path)
            if pending == 0:
                assert body["database"] == "ok", body
                return
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"{pending} event jobs never drained (seed {SEED}):\n{self.log_tail()}")

    async def kill9(self) -> None:
        assert self.proc is not None and self.proc.returncode is None
        self.up = False
        self.generation += 1
        self.signal(signal.SIGKILL)  # no handler, no cleanup, no flush
        await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)

    def stop_signal(self, sig: signal.Signals = signal.SIGTERM) -> None:
        assert self.proc is not None and self.proc.returncode is None
        self.up = False
        self.signal(sig)

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` with ``os.kill``, never ``Process.send_signal``/``kill``.

        Those go through ``Popen.send_signal``, which first polls (``waitpid(WNOHANG)``): a
        child that has just exited is reaped there, behind asyncio's child watcher, and
        ``proc.wait()`` then reports 255 ("Unknown child process pid") instead of the real
        exit code. ``os.kill`` reaps nothing; a child already gone is not an error here."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    async def exit_code(self) -> int:
        assert self.proc is not None
        try:
            return await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            raise AssertionError(
                f"daemon did not stop on its signal (seed {SEED}):\n{self.log_tail()}") from None

    async def cleanup(self) -> None:
        """Never leave a daemon behind, whatever failed."""
        if self.proc is not None and self.proc.returncode is None:
            self.signal(signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)


async def connect_account(db_path: Path) -> None:
    db = await open_database(db_path)
    try:
        await upsert_account(db, ACCOUNT, username="c", now=time.time())
    finally:
        await db.close()


# -- the load ---------------------------------------------------------------------------------
@dataclass
class Load:
    """Concurrent posters and everything they measured."""

    daemon: Daemon
    items: dict[str, dict[str, Any]] = field(default_factory=dict)  # mid -> messaging item
    attempted: list[str] = field(default_factory=list)  # every mid ever posted, in order
    acked: set[str] = field(default_factory=set)  # mids of POSTs answered 200
    posts: int = 0
    acked_posts: int = 0
    acked_batches: int = 0  # 200s for POSTs of more than one item
    acked_redeliveries: int = 0  # 200s for POSTs that repeated earlier items
    errors: int = 0  # connection failures and timeouts (never acknowledged)
    broken_by_kill: int = 0  # requests started on a live daemon that then was killed
    in_flight: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def new_item(self, poster: int, n: int, rng: random.Random) -> dict[str, Any]:
        mid = f"crash-{poster}-{n}"
        sender = f"9{poster}{rng.randrange(4)}"  # a handful of contacts per poster
        item = {"sender": {"id": sender}, "recipient": {"id": ACCOUNT},
                "timestamp": BASE_MS + n, "message": {"mid": mid, "text": f"hi {mid}"}}
        self.items[mid] = item
        self.attempted.append(mid)
        return item

    @staticmethod
    def envelope(items: list[dict[str, Any]], rng: random.Random) -> bytes:
        """One payload; items are split over one or two entries, as Meta batches them."""
        cut = rng.randint(1, len(items)) if len(items) > 1 and rng.random() < 0.5 else len(items)
        groups = [g for g in (items[:cut], items[cut:]) if g]
        when = BASE_MS + 749 + rng.randrange(10**6)  # a redelivery carries a new send time
        return json.dumps({"object": "instagram", "entry": [
            {"id": ACCOUNT, "time": when, "messaging": g} for g in groups]}).encode()

    async def poster(self, session: aiohttp.ClientSession, poster: int) -> None:
        rng = random.Random(SEED * 1000 + poster)
        deadline = time.monotonic() + LOAD_HARD_LIMIT_S
        n = 0
        for _ in range(MAX_POSTS_PER_POSTER):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            roll = rng.random()
            redelivery = roll < 0.15 and len(self.attempted) >= 10
            if redelivery:
                mids = rng.sample(self.attempted, rng.randint(1, 3))
                items = [self.items[m] for m in mids]
            else:
                count = 1 if roll < 0.6 else rng.randint(2, 6)
                items = []
                for _ in range(count):
                    n += 1
                    items.append(self.new_item(poster, n, rng))
                mids = [i["message"]["mid"] for i in items]
            body = self.envelope(items, rng)
            generation, started_live = self.daemon.generation, self.daemon.up
            self.posts += 1
            self.in_flight += 1
            try:
                async with session.post(
                    f"{self.daemon.base}/webhook", data=body, timeout=REQUEST_TIMEOUT,
                    headers={"Content-Type": "application/json",
                             "X-Hub-Signature-256": sign(body)},
                ) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError, OSError):
                self.errors += 1
                if started_live and self.daemon.generation != generation:
                    self.broken_by_kill += 1
                await asyncio.sleep(0.02)  # the daemon is down or restarting: do not spin
                continue
            finally:
                self.in_flight -= 1
            if status != 200:
                self.statuses[status] += 1
                continue
            self.acked.update(mids)
            self.acked_posts += 1
            self.acked_batches += len(items) > 1
            self.acked_redeliveries += redelivery

    async def new_acks(self, load_for: float) -> None:
        """Let the load run ``load_for`` seconds, then until some new post was acknowledged."""
        before = len(self.acked)
        await asyncio.sleep(load_for)
        await until(lambda: len(self.acked) > before, 60, "a newly acknowledged post")

    def summary(self) -> str:
        return (f"seed={SEED} posts={self.posts} acked_posts={self.acked_posts} "
                f"acked_events={len(self.acked)} batches={self.acked_batches} "
                f"redeliveries={self.acked_redeliveries} errors={self.errors} "
                f"broken_by_kill={self.broken_by_kill} statuses={dict(self.statuses)}")


# -- checking the database --------------------------------------------------------------------
def pending_event_jobs(db_path: Path) -> int:
    con = sqlite3.connect(db_path, timeout=30)
    try:
        row = con.execute("SELECT count(*) FROM jobs WHERE kind = 'process_event'"
                          " AND state IN ('ready', 'running')").fetchone()
        return int(row[0])
    finally:
        con.close()


def stored_events(db_path: Path) -> dict[str, tuple[int, float | None]]:
    """dedupe_key -> (event id, processed_at)."""
    con = sqlite3.connect(db_path)
    try:
        return {r[0]: (r[1], r[2]) for r in con.execute(
            "SELECT dedupe_key, id, processed_at FROM events")}
    finally:
        con.close()


def assert_nothing_acked_lost(load: Load, events: dict[str, tuple[int, float | None]]) -> None:
    missing = sorted(m for m in load.acked if f"msg:{m}" not in events)
    assert not missing, (
        f"{len(missing)} acknowledged events are not stored, e.g. {missing[:5]} "
        f"({load.summary()})")
    invented = sorted(k for k in events if k.removeprefix("msg:") not in load.items)
    assert not invented, f"stored events nobody posted: {invented[:5]}"


def assert_processed_exactly_once(db_path: Path, load: Load) -> None:
    events = stored_events(db_path)
    assert_nothing_acked_lost(load, events)
    con = sqlite3.connect(db_path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        unprocessed = sorted(k for k, (_, at) in events.items() if at is None)
        assert not unprocessed, f"stored but never processed: {unprocessed[:5]}"

        jobs = con.execute("SELECT kind, key, state, payload FROM jobs").fetchall()
        by_state = collections.Counter(state for _, _, state, _ in jobs)
        assert by_state["dead"] == 0, f"dead jobs: {by_state}"
        per_key = collections.Counter(key for kind, key, _, _ in jobs if kind == "process_event")
        expected_keys = {f"event:{k}" for k in events}
        assert set(per_key) == expected_keys, (
            f"jobs without events: {sorted(set(per_key) - expected_keys)[:5]}, "
            f"events without jobs: {sorted(expected_keys - set(per_key))[:5]}")
        assert max(per_key.values()) == 1
        for kind, key, state, payload in jobs:
            if kind != "process_event":
                continue  # other features' jobs (periodic ones) are not this test's subject
            assert state == "done", f"job {key} is {state}"
            assert json.loads(payload)["event_id"] == events[key.removeprefix("event:")][0]

        # One history row per DM, pointing at its event.
        messages = con.execute(
            "SELECT mid, event_id, count(*) OVER (PARTITION BY mid) FROM messages"
            " WHERE direction = 'in'").fetchall()
        assert all(c == 1 for _, _, c in messages)
        assert {mid: ev for mid, ev, _ in messages} == {
            k.removeprefix("msg:"): eid for k, (eid, _) in events.items()}

        # The unread counter is bumped once per processing: a second processing of any event
        # would show here even though the message row itself is deduplicated by mid.
        expected_unread = collections.Counter(
            load.items[k.removeprefix("msg:")]["sender"]["id"] for k in events)
        unread = dict(con.execute(
            "SELECT contact_id, unread FROM conversations WHERE account_id = ?", (ACCOUNT,)))
        wrong = {c: (unread.get(c), n) for c, n in expected_unread.items() if unread.get(c) != n}
        assert not wrong and set(unread) == set(expected_unread), (
            f"unread (got, expected) per contact: {wrong}: an event was processed twice")
    finally:
        con.close()


# -- the tests --------------------------------------------------------------------------------
@pytest.mark.chaos
async def test_kill_9_under_load_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    daemon = Daemon(tmp_path, free_port())
    await connect_account(daemon.db_path)
    in_flight_at_kill: list[int] = []
    async with aiohttp.ClientSession() as session:
        load = Load(daemon)
        posters: list[asyncio.Task[None]] = []
        try:
            await daemon.start(session)
            posters = [asyncio.create_task(load.poster(session, i)) for i in range(POSTERS)]
            for _ in range(KILLS):
                # This incarnation must have acknowledged something, and be mid-request.
                await load.new_acks(rng.uniform(0.3, 2.0))
                await until(lambda: load.in_flight >= 2, 30, "requests in flight")
                in_flight_at_kill.append(load.in_flight)
                await daemon.kill9()
                await asyncio.sleep(rng.uniform(0.0, 0.5))  # posters meet a closed port
                await daemon.start(session)
            await load.new_acks(rng.uniform(0.3, 1.0))
            load.stop.set()
            await asyncio.wait_for(asyncio.gather(*posters), 60)
            await daemon.drained(session)
            daemon.stop_signal()
            assert await daemon.exit_code() == 0, daemon.log_tail()
        finally:
            load.stop.set()
            for task in posters:
                task.cancel()
            await asyncio.gather(*posters, return_exceptions=True)
            await daemon.cleanup()

    print(load.summary(), f"in_flight_at_kill={in_flight_at_kill}")
    assert len(in_flight_at_kill) == KILLS
    assert sum(in_flight_at_kill) > 0
    assert load.broken_by_kill > 0, f"no request was cut by a kill ({load.summary()})"
    assert load.acked and load.acked_batches > 0 and load.acked_redeliveries > 0, load.summary()
    # 503 ("retry later") is a legal answer under storage trouble; anything else is a defect.
    assert set(load.statuses) <= {503}, load.summary()
    assert_processed_exactly_once(daemon.db_path, load)


@pytest.mark.chaos
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_stop_signal_under_load_exits_0_and_keeps_every_ack(
    tmp_path: Path, sig: signal.Signals,
) -> None:
    rng = random.Random(SEED + 1)
    daemon = Daemon(tmp_path, free_port())
    await connect_account(daemon.db_path)
    async with aiohttp.ClientSession() as session:
        load = Load(daemon)
        posters: list[asyncio.Task[None]] = []
        try:
            await daemon.start(session)
            posters = [asyncio.create_task(load.poster(session, i)) for i in range(POSTERS)]
            await load.new_acks(rng.uniform(0.3, 1.5))
            await until(lambda: load.in_flight >= 2, 30, "requests in flight")
            in_flight_at_term = load.in_flight
            daemon.stop_signal(sig)
            code = await daemon.exit_code()  # the posters keep posting while it stops
            load.stop.set()
            await asyncio.wait_for(asyncio.gather(*posters), 60)
        finally:
            load.stop.set()
            for task in posters:
                task.cancel()
            await asyncio.gather(*posters, return_exceptions=True)
            await daemon.cleanup()

    print(load.summary(), f"in_flight_at_term={in_flight_at_term}")
    assert code == 0, daemon.log_tail()
    assert in_flight_at_term > 0 and load.acked, load.summary()
    assert set(load.statuses) <= {503}, load.summary()
    events = stored_events(daemon.db_path)
    assert_nothing_acked_lost(load, events)
    con = sqlite3.connect(daemon.db_path)
    try:
        jobs = dict(con.execute(
            "SELECT key, state FROM jobs WHERE kind = 'process_event'").fetchall())
    finally:
        con.close()
    # Every stored event kept its job; a graceful stop finishes in-flight jobs (none running).
    assert set(jobs) == {f"event:{k}" for k in events}
    assert set(jobs.values()) <= {"ready", "done"}, collections.Counter(jobs.values())
    for key, (_, processed_at) in events.items():
        if jobs[f"event:{key}"] == "done":
            assert processed_at is not None


@pytest.mark.chaos
async def test_stop_signals_repeated_during_the_stop_still_exit_0(tmp_path: Path) -> None:
    """An impatient operator (or supervisor) sends SIGTERM again and again while the daemon
    stops: the graceful stop goes on and the exit code stays 0 (a second signal used to
    land after the loop's handlers were removed, and killed the process: -15)."""
    daemon = Daemon(tmp_path, free_port())
    await connect_account(daemon.db_path)
    async with aiohttp.ClientSession() as session:
        try:
            await daemon.start(session)
            assert daemon.proc is not None
            daemon.stop_signal(signal.SIGTERM)
            sent = 1
            while daemon.proc.returncode is None and sent < 2000:
                daemon.signal(signal.SIGINT if sent % 2 else signal.SIGTERM)
                sent += 1
                await asyncio.sleep(0.005)
            code = await daemon.exit_code()
        finally:
            await daemon.cleanup()
    assert sent > 2, "the daemon stopped before a second signal could be sent"
    assert code == 0, daemon.log_tail()
    assert "instaset stopped" in daemon.log_tail()
