"""Ingest benchmark: ``instaset serve`` against a bare aiohttp 200, same load, one run.

Usage::

    python bench/ingest.py [--connections 50] [--requests 20000] [--duration-cap 60]
                           [--rate 600] [--rate-seconds 10] [--drain 0]
                           [--sync FULL|NORMAL] [--json] [--quick] [--profile PATH]

What one run does (all on 127.0.0.1, every phase bounded in count and time):

1. Starts the *baseline*: a bare aiohttp app (``access_log=None``) whose ``POST /webhook``
   reads the body and answers 200 (this file, ``--_baseline-server PORT``), in a subprocess.
2. Drives it from two generator processes (aiohttp clients, connections split between them),
   with pre-generated, signed ~1 KB Instagram DM bodies, each with a unique ``mid``: a short
   warm-up, then a barrier, then the measured phase (closed loop).
3. Then, on the same server, an *open-loop* phase: ``--rate`` requests/s in total on the same
   number of connections for ``--rate-seconds``; connection k sends its i-th request at
   ``t0 + (i * connections + k) / rate`` (or as soon as its previous answer arrived, if that
   is later), and latency is measured from that *scheduled* time (no coordinated omission).
4. Stops it, then does the same against the real daemon: ``python -m instaset serve`` on a
   temporary config and database (the account created first), after ``/healthz`` answers.
5. Stops the daemon with SIGTERM and counts the ``events`` rows: every 200 the generators got
   (both phases, warm-ups included) must be a committed row.

Targets: the throughput ratio is read on the closed loop; the p99 target on the open loop,
because in a closed loop latency ~ connections / throughput (Little's law) only restates the
throughput. Contract: exit 0 when the run completed, whether or not the performance targets
were met (this is a benchmark, not a test); exit 1 when an acknowledged event was not
committed (a correctness failure); exit 2 when the harness itself could not run (a server did
not start). Latencies are client-side, so they include the generator's own overhead; see
bench/README.md for the caveats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import hashlib
import hmac
import json
import math
import multiprocessing
import os
import platform
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ACCOUNT_ID = "17841400000000001"
SECRET = b"bench-secret"
BODY_BYTES = 1024
GENERATORS = 2  # the box has 2 cores: one generator per core, the server shares them
REQUEST_TIMEOUT = 10.0
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "data" / "dm_text_real_tester.json"
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
_FILLER = "Hi! Is the linen shirt in the last reel still available in size M? Thanks. "

TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
LATE_MS = 10.0  # an open-loop request that starts later than this after its slot is "late"
OPEN_LEAD = 0.1  # s between the open-loop barrier and the first slot (coroutines set up)
OPEN_DRAIN = 10.0  # s after the last slot during which late requests are still sent
# --drain stops at this queue depth (jobs due or running): the daemon's own periodic jobs
# may be running or come due while the ingest backlog drains.
DRAINED_DEPTH = 10


class HarnessError(Exception):
    """The benchmark could not run (a server did not start, a generator died)."""


# ------------------------------------------------------------------------------ payloads


def make_bodies(tag: str, count: int) -> list[tuple[bytes, str]]:
    """``count`` signed webhook bodies of exactly :data:`BODY_BYTES` bytes, shaped like the
    real DM fixture, for the bench account; ``mid`` is unique per (tag, index).
    Returns (body, ``X-Hub-Signature-256`` value) pairs."""
    template: dict[str, Any] = json.loads(FIXTURE.read_text("utf-8"))
    base_ms = int(time.time() * 1000)
    out: list[tuple[bytes, str]] = []
    for i in range(count):
        doc = copy.deepcopy(template)
        entry = doc["entry"][0]
        entry["id"] = ACCOUNT_ID
        entry["time"] = base_ms + i
        item = entry["messaging"][0]
        # A few hundred distinct senders: the worker then builds real contacts/threads.
        item["sender"]["id"] = str(489760440000000 + i % 397)
        item["recipient"]["id"] = ACCOUNT_ID
        item["timestamp"] = base_ms + i
        item["message"]["mid"] = f"aWdfZAG1faXRlbToxOklHTWVzc2FnZA-bench-{tag}-{i:09d}"
        item["message"]["text"] = ""
        short = len(json.dumps(doc, separators=(",", ":")).encode())
        item["message"]["text"] = (_FILLER * (BODY_BYTES // len(_FILLER) + 1))[
            : max(0, BODY_BYTES - short)
        ]
        body = json.dumps(doc, separators=(",", ":")).encode()
        sig = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        out.append((body, sig))
    return out


# ------------------------------------------------------------------------------ generators


@dataclass(frozen=True, slots=True)
class LoadSpec:
    url: str
    tag: str  # makes every mid of this generator unique
    connections: int
    requests: int  # measured phase
    warmup_requests: int
    warmup_seconds: float
    duration_cap: float
    client: str  # "aiohttp" or "raw"
    # open loop only (rate == 0.0: closed loop)
    rate: float = 0.0  # total requests/s over every generator
    rate_seconds: float = 0.0
    total_connections: int = 0  # over every generator
    first_connection: int = 0  # global index of this generator's first connection


@dataclass(slots=True)
class GenResult:
    warmup_ok: int = 0
    ok: int = 0
    non200: int = 0  # other statuses and transport errors (timeouts, resets)
    errors: int = 0  # transport errors only
    latencies_ms: list[float] = field(default_factory=list)
    start: float = 0.0  # monotonic, shared by all processes on Linux
    end: float = 0.0
    wall_start: float = 0.0  # time.time(), to find the measured rows in the database
    wall_end: float = 0.0
    cpu_seconds: float = 0.0
    failure: str | None = None
    # open loop only: latencies_ms is then measured from the scheduled send time
    service_ms: list[float] = field(default_factory=list)  # from the actual send time
    late: int = 0  # started more than LATE_MS after the scheduled time
    unsent: int = 0  # slot passed OPEN_DRAIN after the schedule's end: never sent


Sender = Callable[[bytes, str], Awaitable[int]]


def _aiohttp_sender(session: aiohttp.ClientSession, url: str) -> Sender:
    async def send(body: bytes, sig: str) -> int:
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sig}
        async with session.post(url, data=body, headers=headers) as resp:
            await resp.read()
            return resp.status

    return send


class _RawSender:
    """A minimal HTTP/1.1 keep-alive client on one connection: one write per request and
    just enough parsing to read the answer. About 5x cheaper in CPU than aiohttp's client, so
    the generators leave more of the 2 cores to the server (closer to the wrk anchors)."""

    def __init__(self, url: str) -> None:
        rest = url.removeprefix("http://")
        hostport, path = rest.split("/", 1)
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)
        self.head = f"POST /{path} HTTP/1.1\r\nHost: {hostport}\r\n".encode()
        self.rw: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def __call__(self, body: bytes, sig: str) -> int:
        if self.rw is None:
            self.rw = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.rw
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                writer.write(b"".join((
                    self.head, b"Content-Type: application/json\r\nX-Hub-Signature-256: ",
                    sig.encode(), b"\r\nContent-Length: ", str(len(body)).encode(),
                    b"\r\n\r\n", body,
                )))
                head = await reader.readuntil(b"\r\n\r\n")
                at = head.lower().find(b"\r\ncontent-length:")
                size = int(head[at + 17 : head.index(b"\r\n", at + 2)]) if at >= 0 else 0
                await reader.readexactly(size)
                return int(head[9:12])
        except BaseException:
            self.close()  # the connection is in an unknown state: open a new one next time
            raise

    def close(self) -> None:
        if self.rw is not None:
            self.rw[1].close()
            self.rw = None


async def _drive(
    senders: list[Sender], bodies: list[tuple[bytes, str]], deadline: float, res: GenResult,
    measure: bool,
) -> None:
    """Closed loop: one coroutine per sender sends the next body as soon as its previous
    answer arrived, until the bodies run out or ``deadline`` passes."""
    it = iter(bodies)  # shared; next() never yields, so no two coroutines take the same body

    async def one_connection(send: Sender) -> None:
        for body, sig in it:
            if time.monotonic() >= deadline:
                return
            t0 = time.perf_counter()
            try:
                status = await send(body, sig)
            except (aiohttp.ClientError, OSError, TimeoutError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, ValueError):
                status = 0
            elapsed_ms = (time.perf_counter() - t0) * 1000.0
            if not measure:
                res.warmup_ok += status == 200
                continue
            res.latencies_ms.append(elapsed_ms)
            if status == 200:
                res.ok += 1
            else:
                res.non200 += 1
                res.errors += status == 0

    await asyncio.gather(*(one_connection(s) for s in senders))


def open_slots(total: int, connections: int, k: int) -> int:
    """How many of the ``total`` open-loop slots go to connection ``k``: the slots
    ``i * connections + k`` below ``total``."""
    return max(0, -(-(total - k) // connections))


async def _drive_open(
    senders: list[Sender], bodies: list[tuple[bytes, str]], spec: LoadSpec, t0: float,
    res: GenResult,
) -> None:
    """Open loop: connection k sends its i-th request at slot ``i * C + k`` of a schedule of
    ``rate`` slots/s starting at ``t0``, or when its previous answer arrives if that is later
    (one request in flight per connection, as in the closed loop). Latency counts from the
    slot, so a stall delays every later slot of that connection and shows in the tail
    instead of being hidden (no coordinated omission). A slot that comes up more than
    :data:`OPEN_DRAIN` s after the schedule's end is not sent (``unsent``), so the phase is
    bounded even against a stalled server."""
    total = round(spec.rate * spec.rate_seconds)
    stop_at = t0 + spec.rate_seconds + OPEN_DRAIN
    it = iter(bodies)  # holds exactly the slots of this generator's connections

    async def one_connection(k: int, send: Sender) -> None:
        for i in range(open_slots(total, spec.total_connections, k)):
            body, sig = next(it)
            slot = t0 + (i * spec.total_connections + k) / spec.rate
            now = time.monotonic()
            if now < slot:
                await asyncio.sleep(slot - now)
                now = time.monotonic()
            if now >= stop_at:
                res.unsent += 1
                continue
            res.late += (now - slot) * 1000.0 > LATE_MS
            try:
                status = await send(body, sig)
            except (aiohttp.ClientError, OSError, TimeoutError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, ValueError):
                status = 0
            done = time.monotonic()
            res.latencies_ms.append((done - slot) * 1000.0)
            res.service_ms.append((done - now) * 1000.0)
            res.end = max(res.end, done)
            if status == 200:
                res.ok += 1
            else:
                res.non200 += 1
                res.errors += status == 0

    await asyncio.gather(*(
        one_connection(spec.first_connection + j, s) for j, s in enumerate(senders)
    ))


async def _generate(spec: LoadSpec, barrier: Barrier) -> GenResult:
    res = GenResult()
    warm = make_bodies(f"{spec.tag}w", spec.warmup_requests)
    bodies = make_bodies(spec.tag, spec.requests)
    if spec.rate:
        total = round(spec.rate * spec.rate_seconds)
        mine = range(spec.first_connection, spec.first_connection + spec.connections)
        assert spec.requests == sum(open_slots(total, spec.total_connections, k) for k in mine)
    connector = aiohttp.TCPConnector(limit=spec.connections)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    raw = [_RawSender(spec.url) for _ in range(spec.connections)]
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        senders: list[Sender] = (
            list(raw) if spec.client == "raw"
            else [_aiohttp_sender(session, spec.url)] * spec.connections
        )
        try:
            warm_deadline = time.monotonic() + spec.warmup_seconds
            await _drive(senders, warm, warm_deadline, res, False)
            # Both generators (and the orchestrator, which samples server CPU) start together.
            barrier.wait(timeout=START_TIMEOUT + spec.warmup_seconds)
            cpu0 = time.process_time()
            res.wall_start = time.time()
            if spec.rate:
                # Each process takes its own t0 right after the barrier: a skew of a few ms
                # between the two only shifts the phase of their slots, not the offered rate.
                res.start = res.end = time.monotonic() + OPEN_LEAD
                await _drive_open(senders, bodies, spec, res.start, res)
            else:
                res.start = time.monotonic()
                deadline = res.start + spec.duration_cap
                await _drive(senders, bodies, deadline, res, True)
                res.end = time.monotonic()
            res.wall_end = time.time()
            res.cpu_seconds = time.process_time() - cpu0
        finally:
            for r in raw:
                r.close()
    return res


def _generator_main(spec: LoadSpec, barrier: Barrier, out: Connection) -> None:
    """Entry point of one generator process: run, send the :class:`GenResult` back."""
    try:
        res = asyncio.run(_generate(spec, barrier))
    except BaseException as exc:  # report, don't hang the orchestrator
        with contextlib.suppress(Exception):
            barrier.abort()
        res = GenResult(failure=f"{type(exc).__name__}: {exc}")
    out.send(res)
    out.close()


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@dataclass(frozen=True, slots=True)
class LoadOutcome:
    gens: list[GenResult]
    main_cpu_pct: float | None  # the server's main (event loop) thread
    other_cpu_pct: float | None  # the server's other threads (aiosqlite's)


def load_specs(url: str, tag: str, args: argparse.Namespace, open_loop: bool) -> list[LoadSpec]:
    """One spec per generator process. Closed loop: ``--requests`` and ``--warmup`` split
    between them. Open loop: each gets the slots of its own connections, and a warm-up of one
    request per connection (it only opens the connections: the server is already warm)."""
    conns = _split(args.connections, GENERATORS)
    if not open_loop:
        reqs = _split(args.requests, GENERATORS)
        warms = _split(args.warmup, GENERATORS)
        return [LoadSpec(url, f"{tag}{i}", conns[i], reqs[i], warms[i], args.warmup_cap,
                         args.duration_cap, args.client) for i in range(GENERATORS)]
    total = round(args.rate * args.rate_seconds)
    specs: list[LoadSpec] = []
    first = 0
    for i, c in enumerate(conns):
        slots = sum(open_slots(total, args.connections, k) for k in range(first, first + c))
        specs.append(LoadSpec(url, f"{tag}o{i}", c, slots, c, args.warmup_cap,
                              args.rate_seconds + OPEN_DRAIN, args.client, args.rate,
                              args.rate_seconds, args.connections, first))
        first += c
    return specs


def run_load(
    url: str, *, tag: str, args: argparse.Namespace, server_pid: int, open_loop: bool = False
) -> LoadOutcome:
    """Drive ``url`` from :data:`GENERATORS` processes, in a closed loop or (``open_loop``)
    at ``--rate``; bounded by the caps plus timeouts."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(GENERATORS + 1)
    procs: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    specs = load_specs(url, tag, args, open_loop)
    for spec in specs:
        recv, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_generator_main, args=(spec, barrier, send), daemon=True)
        child.start()
        send.close()
        procs.append((child, recv))
    budget = START_TIMEOUT + args.warmup_cap + specs[0].duration_cap + REQUEST_TIMEOUT + 30.0
    gens: list[GenResult] = []
    try:
        with contextlib.suppress(threading.BrokenBarrierError):  # a generator failed
            barrier.wait(timeout=START_TIMEOUT + args.warmup_cap + 30.0)
        cpu0, t0 = _thread_cpu(server_pid), time.monotonic()
        for proc, recv in procs:
            left = max(1.0, budget - (time.monotonic() - t0))
            if not recv.poll(left):
                raise HarnessError(f"load generator pid {proc.pid} did not finish in time")
            gens.append(recv.recv())
        cpu1, t1 = _thread_cpu(server_pid), time.monotonic()
    finally:
        for proc, recv in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            recv.close()
    failures = [g.failure for g in gens if g.failure]
    if failures:
        raise HarnessError("load generator failed: " + "; ".join(failures))
    if not cpu0 or not cpu1 or t1 <= t0:
        return LoadOutcome(gens, None, None)
    main = cpu1.get(server_pid, 0.0) - cpu0.get(server_pid, 0.0)
    other = sum(v - cpu0.get(tid, 0.0) for tid, v in cpu1.items() if tid != server_pid)
    return LoadOutcome(gens, 100.0 * main / (t1 - t0), 100.0 * other / (t1 - t0))


def _thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (utime + stime) of every thread of ``pid``, from /proc (Linux only;
    empty elsewhere). The main thread's id is ``pid``."""
    out: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                stat = (task / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                out[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf(
                    "SC_CLK_TCK"
                )
    return out


# ------------------------------------------------------------------------------ servers


def _server_loop_factory() -> Callable[[], Any] | None:
    """`instaset serve`'s event loop factory (imported here: the generator processes that
    import this module need none of instaset)."""
    from instaset.cli.app import server_loop_factory

    return server_loop_factory()


async def _baseline_main(port: int) -> None:
    async def webhook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="EVENT_RECEIVED", content_type="text/plain")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    from serve_http import serve_until_signal  # bench/serve_http.py

    app = web.Application()
    app.add_routes([web.post("/webhook", webhook), web.get("/healthz", healthz)])
    await serve_until_signal(app, port, "bench baseline")


def _profiled_instaset(out: str, instaset_argv: list[str]) -> int:
    """Run the instaset CLI under cProfile with a *thread CPU time* clock: the profile shows
    where the event-loop thread spends CPU, not wall time (idle epoll waits and time the
    process was not scheduled drop out). SQLite work in aiosqlite's thread is not in it."""
    import cProfile
    import runpy

    prof = cProfile.Profile(time.thread_time)
    sys.argv = ["instaset", *instaset_argv]
    code = 0
    prof.enable()
    try:
        runpy.run_module("instaset", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    finally:
        prof.disable()
        prof.dump_stats(out)
    return code


class Server:
    """A server subprocess whose stderr goes to ``log``; it announces its port there."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env
            )
        self.port = 0

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   + self.tail())
            if not self.port:
                m = _LISTENING.search(self.log.read_text(errors="replace"))
                if m:
                    self.port = int(m.group(1))
            if self.port:
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as resp,
                ):
                    if resp.status == 200:
                        return
            time.sleep(0.05)
        raise HarnessError(f"{self.name} not healthy after {START_TIMEOUT:.0f} s:\n"
                           + self.tail())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as resp:
            return str(resp.read().decode())

    def stop(self) -> int:
        """SIGTERM, wait; SIGKILL only if it ignores that. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


async def _create_account(db_path: Path) -> None:
    from instaset.store.db import open_database
    from instaset.store.history import upsert_account

    db = await open_database(db_path)
    try:
        await upsert_account(db, ACCOUNT_ID, username="bench", now=time.time())
    finally:
        await db.close()


# ------------------------------------------------------------------------------ results


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(slots=True)
class OpenResult:
    """The open-loop phase of one server (latencies from the scheduled send time)."""

    offered_rps: float  # --rate
    scheduled: int  # slots in the schedule
    sent: int  # requests sent (any outcome)
    achieved_rps: float  # 200s / (last answer - first slot)
    p50_ms: float
    p99_ms: float
    max_ms: float
    service_p99_ms: float  # from the actual send time: the server's share of the tail
    non200: int  # other statuses and transport errors
    errors: int  # transport errors only
    unsent: int  # slots never sent (more than OPEN_DRAIN s behind the schedule)
    late: int  # sent more than LATE_MS after their slot
    acknowledged: int  # 200s including the connection warm-up
    main_cpu_pct: float | None
    other_cpu_pct: float | None
    client_cpu_pct: list[float]
    # instaset only: the worker's backlog (jobs ready or running, /healthz) when the phase
    # started, after waiting up to --drain s for it to drain (DRAINED_DEPTH)
    queue_at_start: int | None = None
    drain_waited_s: float = 0.0


@dataclass(slots=True)
class ServerResult:
    name: str
    round: int  # 0 for the median row
    requests: int  # measured requests completed (any outcome)
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    non200: int  # other statuses and transport errors
    errors: int  # transport errors only
    elapsed_s: float
    acknowledged: int  # 200s including warm-up, closed and open loop phases
    main_cpu_pct: float | None
    other_cpu_pct: float | None
    client_cpu_pct: list[float]
    open_loop: OpenResult | None = None
    exit_code: int | None = None
    # instaset only
    committed: int | None = None
    processed: int | None = None
    metrics_200: int | None = None
    commits: int | None = None
    rows_per_commit: float | None = None
    max_rows_per_commit: int | None = None


def summarise(name: str, rnd: int, load: LoadOutcome) -> ServerResult:
    gens = load.gens
    lat = sorted(x for g in gens for x in g.latencies_ms)
    elapsed = max(max(g.end for g in gens) - min(g.start for g in gens), 1e-9)
    return ServerResult(
        name=name, round=rnd, requests=len(lat), rps=len(lat) / elapsed,
        p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99), max_ms=lat[-1] if lat else 0.0,
        non200=sum(g.non200 for g in gens), errors=sum(g.errors for g in gens),
        elapsed_s=elapsed, acknowledged=sum(g.ok + g.warmup_ok for g in gens),
        main_cpu_pct=load.main_cpu_pct, other_cpu_pct=load.other_cpu_pct,
        client_cpu_pct=[100.0 * g.cpu_seconds / max(g.end - g.start, 1e-9) for g in gens],
    )


def summarise_open(rate: float, load: LoadOutcome) -> OpenResult:
    gens = load.gens
    lat = sorted(x for g in gens for x in g.latencies_ms)
    svc = sorted(x for g in gens for x in g.service_ms)
    ok = sum(g.ok for g in gens)
    elapsed = max(max(g.end for g in gens) - min(g.start for g in gens), 1e-9)
    return OpenResult(
        offered_rps=rate, scheduled=len(lat) + sum(g.unsent for g in gens), sent=len(lat),
        achieved_rps=ok / elapsed, p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99),
        max_ms=lat[-1] if lat else 0.0, service_p99_ms=percentile(svc, 99),
        non200=sum(g.non200 for g in gens), errors=sum(g.errors for g in gens),
        unsent=sum(g.unsent for g in gens), late=sum(g.late for g in gens),
        acknowledged=ok + sum(g.warmup_ok for g in gens),
        main_cpu_pct=load.main_cpu_pct, other_cpu_pct=load.other_cpu_pct,
        client_cpu_pct=[100.0 * g.cpu_seconds / max(g.end - g.start, 1e-9) for g in gens],
    )


def _med(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _num(values: list[float | None]) -> float:
    return _med(values) or 0.0


def median_open(rows: list[OpenResult]) -> OpenResult:
    """Per-column medians over the rounds (counts: sums, max: max)."""
    return OpenResult(
        offered_rps=rows[0].offered_rps, scheduled=sum(r.scheduled for r in rows),
        sent=sum(r.sent for r in rows), achieved_rps=_num([r.achieved_rps for r in rows]),
        p50_ms=_num([r.p50_ms for r in rows]), p99_ms=_num([r.p99_ms for r in rows]),
        max_ms=max(r.max_ms for r in rows),
        service_p99_ms=_num([r.service_p99_ms for r in rows]),
        non200=sum(r.non200 for r in rows), errors=sum(r.errors for r in rows),
        unsent=sum(r.unsent for r in rows), late=sum(r.late for r in rows),
        acknowledged=sum(r.acknowledged for r in rows),
        main_cpu_pct=_med([r.main_cpu_pct for r in rows]),
        other_cpu_pct=_med([r.other_cpu_pct for r in rows]),
        client_cpu_pct=[_num([r.client_cpu_pct[i] for r in rows])
                        for i in range(len(rows[0].client_cpu_pct))],
        queue_at_start=None if rows[0].queue_at_start is None
        else int(_num([r.queue_at_start for r in rows])),
        drain_waited_s=_num([r.drain_waited_s for r in rows]),
    )


def median_row(rows: list[ServerResult]) -> ServerResult:
    """Per-column medians over the rounds (durability columns: sums)."""
    med, num = _med, _num
    first = rows[0]
    out = ServerResult(
        name=first.name, round=0, requests=sum(r.requests for r in rows),
        rps=num([r.rps for r in rows]), p50_ms=num([r.p50_ms for r in rows]),
        p99_ms=num([r.p99_ms for r in rows]), max_ms=max(r.max_ms for r in rows),
        non200=sum(r.non200 for r in rows), errors=sum(r.errors for r in rows),
        elapsed_s=sum(r.elapsed_s for r in rows),
        acknowledged=sum(r.acknowledged for r in rows),
        main_cpu_pct=med([r.main_cpu_pct for r in rows]),
        other_cpu_pct=med([r.other_cpu_pct for r in rows]),
        client_cpu_pct=[num([r.client_cpu_pct[i] for r in rows])
                        for i in range(len(first.client_cpu_pct))],
    )
    opens = [r.open_loop for r in rows if r.open_loop is not None]
    out.open_loop = median_open(opens) if len(opens) == len(rows) else None
    if first.committed is not None:
        out.committed = sum(r.committed or 0 for r in rows)
        out.processed = sum(r.processed or 0 for r in rows)
        out.metrics_200 = sum(r.metrics_200 or 0 for r in rows)
        out.commits = sum(r.commits or 0 for r in rows)
        out.rows_per_commit = med([r.rows_per_commit for r in rows])
        out.max_rows_per_commit = max(r.max_rows_per_commit or 0 for r in rows)
        codes = {r.exit_code for r in rows}
        out.exit_code = codes.pop() if len(codes) == 1 else None
    return out


def _metric(text: str, name: str, labels: str) -> int | None:
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} ([0-9.e+]+)$", text, re.M)
    return int(float(m.group(1))) if m else None


def inspect_database(db_path: Path, res: ServerResult, window: tuple[float, float]) -> None:
    """Committed rows, and the group-commit shape of the measured window. The writer reads
    the clock once per commit and stamps every row of that commit with it, so the distinct
    ``received_at`` values count the commits (an inference from ingest.py, not an API)."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        res.committed = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
        res.processed = int(conn.execute(
            "SELECT count(*) FROM events WHERE processed_at IS NOT NULL").fetchone()[0])
        rows = conn.execute(
            "SELECT received_at, count(*) FROM events WHERE received_at BETWEEN ? AND ?"
            " GROUP BY received_at", window,
        ).fetchall()
    if rows:
        res.commits = len(rows)
        res.rows_per_commit = sum(int(r[1]) for r in rows) / len(rows)
        res.max_rows_per_commit = max(int(r[1]) for r in rows)


def wait_drained(server: Server, limit: float) -> tuple[int | None, float]:
    """Poll instaset's ``/healthz`` until ``queue_depth`` plus ``staged_events`` (events
    acknowledged under load, not yet moved into events, so without a job yet) is at most
    :data:`DRAINED_DEPTH` or ``limit`` s passed
    (``limit`` 0: one reading). Returns (the last depth read or None, seconds waited)."""
    t0 = time.monotonic()
    depth: int | None = None
    while True:
        with contextlib.suppress(OSError, urllib.error.URLError, ValueError, KeyError):
            health = json.loads(server.get("/healthz"))
            depth = int(health["queue_depth"]) + int(health.get("staged_events", 0))
        waited = time.monotonic() - t0
        if (depth is not None and depth <= DRAINED_DEPTH) or waited >= limit:
            return depth, waited
        time.sleep(min(0.5, limit - waited))


def bench_server(
    name: str, rnd: int, server: Server, args: argparse.Namespace, *, db_path: Path | None
) -> ServerResult:
    """Load one started server, stop it (SIGTERM), and for instaset inspect its database."""
    try:
        server.wait_ready()
        # The open loop first, on a daemon in its steady state (its worker keeping up with
        # what arrives); after the closed loop it would measure the drain of that burst's
        # backlog (~20,000 jobs) instead.
        depth, waited = wait_drained(server, args.drain) if db_path else (None, 0.0)
        open_load = run_load(f"{server.url}/webhook", tag=f"{name[0]}{rnd}", args=args,
                             server_pid=server.proc.pid, open_loop=True)
        load = run_load(f"{server.url}/webhook", tag=f"{name[0]}{rnd}", args=args,
                        server_pid=server.proc.pid)
        res = summarise(name, rnd, load)
        res.open_loop = summarise_open(args.rate, open_load)
        res.open_loop.queue_at_start, res.open_loop.drain_waited_s = depth, waited
        res.acknowledged += res.open_loop.acknowledged
        if db_path is not None:
            with contextlib.suppress(OSError, urllib.error.URLError):
                res.metrics_200 = _metric(
                    server.get("/metrics"), "instaset_webhook_requests_total", 'status="200"'
                )
    finally:
        code = server.stop()
    res.exit_code = code
    if db_path is not None:
        window = (min(g.wall_start for g in load.gens), max(g.wall_end for g in load.gens) + 1)
        inspect_database(db_path, res, window)
    return res


# ------------------------------------------------------------------------------ report


def cpu_per_request(rounds: list[tuple[ServerResult, ServerResult]], which: int, main: bool
                    ) -> float | None:
    """CPU microseconds per closed-loop request of server ``which`` (0 bare, 1 instaset) in
    its event-loop thread (``main``) or its other threads, median over the rounds. Steadier
    than req/s on a shared machine: a cheaper code path shows here even when the throughput,
    set by the commit cycle, does not move."""
    values = []
    for pair in rounds:
        r = pair[which]
        pct = r.main_cpu_pct if main else r.other_cpu_pct
        if pct is not None and r.rps:
            values.append(pct / 100 / r.rps * 1e6)
    return statistics.median(values) if values else None


def ratio(rounds: list[tuple[ServerResult, ServerResult]]) -> float:
    """Median over the rounds of instaset/bare throughput: each pair ran back to back, so a
    per-round ratio cancels most of the drift of a shared, noisy machine."""
    return statistics.median(i.rps / b.rps if b.rps else 0.0 for b, i in rounds)


def verdicts(
    rounds: list[tuple[ServerResult, ServerResult]], inst: ServerResult
) -> dict[str, dict[str, Any]]:
    """The targets: the median closed-loop ratio, the median *open-loop* p99 (a closed loop's
    latency restates its throughput, Little's law), durability summed over every round."""
    r = ratio(rounds)
    committed = inst.committed or 0
    p99 = inst.open_loop.p99_ms if inst.open_loop is not None else math.inf
    rate = inst.open_loop.offered_rps if inst.open_loop is not None else 0.0
    return {
        "throughput_ratio": {"value": round(r, 3), "target": f">= {TARGET_RATIO}",
                             "phase": "closed loop", "pass": r >= TARGET_RATIO},
        "instaset_p99_ms": {"value": round(p99, 2), "target": f"< {TARGET_P99_MS:g}",
                            "phase": f"open loop at {rate:g} req/s",
                            "pass": p99 < TARGET_P99_MS},
        "acknowledged_committed": {
            "value": f"{inst.acknowledged} acked / {committed} committed",
            "target": "committed >= acknowledged", "pass": committed >= inst.acknowledged,
        },
    }


def durable(rounds: list[tuple[ServerResult, ServerResult]]) -> bool:
    """Every round: each 200 the generators got is a committed row."""
    return all((inst.committed or 0) >= inst.acknowledged for _, inst in rounds)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}%"


def render(
    args: argparse.Namespace, rounds: list[tuple[ServerResult, ServerResult]],
    bare: ServerResult, inst: ServerResult,
) -> str:
    v = verdicts(rounds, inst)
    head = (f"{'round':<6} {'server':<9} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'max ms':>7} {'non-200':>7} {'srv CPU loop+db':>15} {'client CPU':>10}")
    lines = [
        f"instaset ingest benchmark: {args.connections} connections over {GENERATORS} "
        f"{args.client} generator processes, {args.requests} requests/server/round "
        f"(+{args.warmup} warm-up), {BODY_BYTES} B signed DM bodies, "
        f"synchronous={args.sync}, {args.rounds} round(s), cap {args.duration_cap:g} s",
        f"python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
        f"{os.cpu_count()} CPUs, load average before: {args.loadavg}, "
        f"servers' event loop: {'uvloop' if _server_loop_factory() else 'asyncio'}, "
        f"{args.machine}",
        "",
        "closed loop: each connection sends its next request as soon as its previous answer "
        "arrived; latency from the actual send",
        "",
        head,
        "-" * len(head),
    ]
    if float(args.loadavg.split()[0]) > (os.cpu_count() or 1):
        lines.insert(2, "WARNING: the machine was busy before the run (load average above the "
                        "CPU count): absolute figures are unreliable; compare ratios only")
    rows = [r for pair in rounds for r in pair]
    if len(rounds) > 1:
        rows += [bare, inst]
    for r in rows:
        srv = f"{_pct(r.main_cpu_pct)}+{_pct(r.other_cpu_pct)}"
        client = "+".join(_pct(c) for c in r.client_cpu_pct)
        lines.append(
            f"{r.round or 'median':<6} {r.name:<9} {r.rps:>7.0f} {r.p50_ms:>7.2f} "
            f"{r.p99_ms:>7.2f} {r.max_ms:>7.1f} {r.non200:>7} {srv:>15} {client:>10}"
        )
    lines.append("")
    per_round = ", ".join(f"{i.rps / b.rps:.2f}" for b, i in rounds if b.rps)
    lines.append(f"throughput instaset/bare (closed loop): {v['throughput_ratio']['value']:.2f} "
                 f"(median of the per-round ratios: {per_round})")
    lines.append(f"closed-loop p99, information only (Little's law: mean latency = "
                 f"connections / throughput): bare {bare.p99_ms:.2f} ms, "
                 f"instaset {inst.p99_ms:.2f} ms")
    us = [cpu_per_request(rounds, w, m) for w, m in ((0, True), (1, True), (1, False))]
    if None not in us:
        lines.append(f"server CPU per request (closed loop, median of the rounds): bare "
                     f"{us[0]:.1f} us on its event loop; instaset {us[1]:.1f} us on its event "
                     f"loop (its worker's share included) + {us[2]:.1f} us in its other "
                     f"threads (the ingest writer's)")
    lines += ["", *render_open(args, rounds, bare, inst)]
    gc = "n/a"
    if inst.commits:
        gc = (f"{inst.commits} commits, median {inst.rows_per_commit:.1f} rows/commit, "
              f"max {inst.max_rows_per_commit} (from received_at stamps)")
    lines.append(f"group commit (measured windows): {gc}")
    lines.append(
        f"durability: {inst.acknowledged} acknowledged (200s of both phases incl. warm-ups), "
        f"{inst.committed} rows committed, /metrics 200s {inst.metrics_200}, "
        f"{inst.processed} processed by the worker at stop, exit code {inst.exit_code}"
    )
    lines.append("targets:")
    for key, item in v.items():
        mark = "PASS" if item["pass"] else "FAIL"
        phase = f", {item['phase']}" if "phase" in item else ""
        lines.append(f"  [{mark}] {key}: {item['value']} (target {item['target']}{phase})")
    return "\n".join(lines)


def render_open(
    args: argparse.Namespace, rounds: list[tuple[ServerResult, ServerResult]],
    bare: ServerResult, inst: ServerResult,
) -> list[str]:
    """The open-loop table: one row per server and round, then the medians."""
    head = (f"{'round':<6} {'server':<9} {'offered':>7} {'achieved':>8} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'max ms':>7} {'non-200':>7} {'unsent':>6} "
            f"{f'late>{LATE_MS:g}ms':>9} {'srv CPU loop+db':>15}")
    lines = [
        f"open loop: {args.rate:g} req/s offered over {args.connections} connections for "
        f"{args.rate_seconds:g} s ({round(args.rate * args.rate_seconds)} requests/server/"
        f"round); latency from the scheduled send time",
        "",
        head,
        "-" * len(head),
    ]
    rows = [r for pair in rounds for r in pair]
    if len(rounds) > 1:
        rows += [bare, inst]
    for r in rows:
        o = r.open_loop
        if o is None:
            continue
        srv = f"{_pct(o.main_cpu_pct)}+{_pct(o.other_cpu_pct)}"
        lines.append(
            f"{r.round or 'median':<6} {r.name:<9} {o.offered_rps:>7.0f} {o.achieved_rps:>8.0f} "
            f"{o.p50_ms:>7.2f} {o.p99_ms:>7.2f} {o.max_ms:>7.1f} {o.non200:>7} {o.unsent:>6} "
            f"{o.late:>9} {srv:>15}"
        )
    if inst.open_loop is not None:
        o = inst.open_loop
        waited = (f"waited {o.drain_waited_s:.1f} s of --drain {args.drain:g}" if args.drain
                  else "--drain 0: not waited for")
        lines += ["", f"instaset worker backlog when the open loop started: "
                      f"{'n/a' if o.queue_at_start is None else o.queue_at_start} jobs ready or "
                      f"running, or events staged ({waited}); the worker drains it during "
                      f"the phase"]
    if bare.open_loop is not None and inst.open_loop is not None:
        lines += [f"open-loop p99 instaset/bare: "
                      f"{inst.open_loop.p99_ms / max(bare.open_loop.p99_ms, 1e-9):.2f}; "
                      f"p99 from the actual send (server share of the tail): "
                      f"bare {bare.open_loop.service_p99_ms:.2f} ms, "
                      f"instaset {inst.open_loop.service_p99_ms:.2f} ms"]
    return lines


def as_json(
    args: argparse.Namespace, rounds: list[tuple[ServerResult, ServerResult]],
    bare: ServerResult, inst: ServerResult,
) -> str:
    doc = {
        "config": {
            "connections": args.connections, "requests": args.requests, "warmup": args.warmup,
            "duration_cap_s": args.duration_cap, "synchronous": args.sync,
            "open_loop_rate": args.rate, "open_loop_seconds": args.rate_seconds,
            "open_loop_late_ms": LATE_MS, "drain_s": args.drain,
            "rounds": args.rounds, "client": args.client, "generators": GENERATORS,
            "body_bytes": BODY_BYTES, "python": platform.python_version(),
            "aiohttp": aiohttp.__version__, "cpus": os.cpu_count(), "loadavg": args.loadavg,
        },
        "median": {"bare": asdict(bare), "instaset": asdict(inst)},
        "rounds": [{"bare": asdict(b), "instaset": asdict(i)} for b, i in rounds],
        "targets": verdicts(rounds, inst),
        "closed_loop_p99_ms_info": {"bare": bare.p99_ms, "instaset": inst.p99_ms},
        "cpu_us_per_request": {
            "bare": {"loop": cpu_per_request(rounds, 0, True)},
            "instaset": {"loop": cpu_per_request(rounds, 1, True),
                         "other_threads": cpu_per_request(rounds, 1, False)},
        },
        "durable_every_round": durable(rounds),
    }
    return json.dumps(doc, indent=2)


def print_profile(path: Path, top: int = 30) -> None:
    import pstats

    print(f"\ncProfile (thread CPU time) of the instaset event-loop thread ({path}), "
          f"top {top} by tottime:", file=sys.stderr)
    stats = pstats.Stats(str(path), stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(top)


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--requests", type=int, default=20000,
                   help="measured requests per server and round")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up requests per server (default: 5%% of --requests, >= 200)")
    p.add_argument("--warmup-cap", type=float, default=5.0, help="warm-up time cap (s)")
    p.add_argument("--duration-cap", type=float, default=60.0,
                   help="time cap of each measured phase (s)")
    p.add_argument("--rate", type=float, default=None,
                   help="open-loop phase: total requests/s offered (default 600; --quick 200)")
    p.add_argument("--rate-seconds", type=float, default=None,
                   help="open-loop phase: length of the schedule (s) (default 10; --quick 3)")
    p.add_argument("--drain", type=float, default=0.0,
                   help="before instaset's open-loop phase, wait up to this many seconds for "
                        "the worker's backlog from the closed loop to drain (default 0)")
    p.add_argument("--sync", choices=["FULL", "NORMAL"], default="FULL")
    p.add_argument("--worker-concurrency", type=int, default=None,
                   help="the daemon's worker.concurrency (default: the config default)")
    p.add_argument("--rounds", type=int, default=1,
                   help="bare/instaset pairs, interleaved; the table adds per-column medians")
    p.add_argument("--client", choices=["aiohttp", "raw"], default="aiohttp",
                   help="load generator client: aiohttp (default) or a minimal raw HTTP/1.1 "
                        "client that leaves more CPU to the server")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke: 2000 requests, 20 connections, 1 round, 20 s cap, "
                        "open loop 200 req/s for 3 s")
    p.add_argument("--profile", type=Path, default=None,
                   help="run instaset under cProfile (event-loop thread CPU), write the stats "
                        "here and print the top; such a run's figures are not comparable")
    p.add_argument("--_baseline-server", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--_profiled-instaset", nargs=argparse.REMAINDER, default=None,
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.connections, args.rounds = 2000, 20, 1
        args.duration_cap = min(args.duration_cap, 20.0)
        args.warmup_cap = min(args.warmup_cap, 2.0)
    if args.warmup is None:
        args.warmup = max(200, args.requests // 20)
    if args.rate is None:
        args.rate = 200.0 if args.quick else 600.0
    if args.rate_seconds is None:
        args.rate_seconds = 3.0 if args.quick else 10.0
    if args.connections < GENERATORS or args.requests < 1 or args.rounds < 1:
        p.error(f"need --connections >= {GENERATORS}, --requests >= 1 and --rounds >= 1")
    if not (args.rate > 0 and args.rate_seconds > 0 and args.rate * args.rate_seconds >= 1):
        p.error("need --rate > 0 and --rate-seconds > 0 (at least one request)")
    if args.drain < 0:
        p.error("need --drain >= 0")
    return args


def one_round(
    args: argparse.Namespace, rnd: int, tmpdir: Path, env: dict[str, str]
) -> tuple[ServerResult, ServerResult]:
    me = str(Path(__file__).resolve())
    baseline = Server("bare", [sys.executable, me, "--_baseline-server", "0"],
                      tmpdir / f"bare{rnd}.log", env)
    try:
        bare = bench_server("bare", rnd, baseline, args, db_path=None)
    finally:
        baseline.stop()

    db_path = tmpdir / f"bench{rnd}.db"
    asyncio.run(_create_account(db_path))
    config = tmpdir / f"config{rnd}.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "instagram": {"app_secret": SECRET.decode()},
        "storage": {"path": str(db_path), "synchronous": args.sync},
        "worker": {"poll_interval": 0.2,
                   **({"concurrency": args.worker_concurrency} if args.worker_concurrency else {})},
    }))
    cli = ["--config", str(config), "serve", "--host", "127.0.0.1", "--port", "0",
           "--log-level", "WARNING"]
    argv = [sys.executable, "-m", "instaset", *cli]
    if args.profile is not None:
        argv = [sys.executable, me, "--_profiled-instaset", str(args.profile.resolve()), *cli]
    daemon = Server("instaset", argv, tmpdir / f"instaset{rnd}.log", env)
    try:
        inst = bench_server("instaset", rnd, daemon, args, db_path=db_path)
    finally:
        daemon.stop()
    if inst.exit_code != 0:
        print(f"instaset exited with {inst.exit_code}:\n{daemon.tail()}", file=sys.stderr)
    return bare, inst


def run(args: argparse.Namespace) -> int:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("INSTASET_CONFIG", None)  # our --config must win
    args.loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    import machine  # bench/machine.py: the VM's speed before the run

    args.machine = machine.describe()
    with tempfile.TemporaryDirectory(prefix="instaset-bench-") as tmp:
        rounds = [one_round(args, rnd, Path(tmp), env) for rnd in range(1, args.rounds + 1)]
    bare = median_row([b for b, _ in rounds])
    inst = median_row([i for _, i in rounds])
    print(as_json(args, rounds, bare, inst) if args.json else render(args, rounds, bare, inst))
    if args.profile is not None:
        print_profile(args.profile)
    return 0 if durable(rounds) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._baseline_server is not None:
        # The same event loop as `instaset serve` (uvloop where installed): the ratio is
        # then instaset's own cost on top of aiohttp, not a difference of loops.
        with asyncio.Runner(loop_factory=_server_loop_factory()) as runner:
            runner.run(_baseline_main(args._baseline_server))
        return 0
    if args._profiled_instaset is not None:
        out, *rest = args._profiled_instaset
        return _profiled_instaset(out, rest)
    try:
        return run(args)
    except HarnessError as exc:
        print(f"benchmark could not run: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
