"""Ingest benchmark: ``instaset serve`` against a bare aiohttp 200, same load, one run.

Usage::

    python bench/ingest.py [--connections 50] [--requests 20000] [--duration-cap 60]
                           [--sync FULL|NORMAL] [--json] [--quick] [--profile PATH]

What one run does (all on 127.0.0.1, every phase bounded in count and time):

1. Starts the *baseline*: a bare aiohttp app (``access_log=None``) whose ``POST /webhook``
   reads the body and answers 200 (this file, ``--_baseline-server PORT``), in a subprocess.
2. Drives it from two generator processes (aiohttp clients, connections split between them),
   with pre-generated, signed ~1 KB Instagram DM bodies, each with a unique ``mid``: a short
   warm-up, then a barrier, then the measured phase (closed loop).
3. Stops it, then does the same against the real daemon: ``python -m instaset serve`` on a
   temporary config and database (the account created first), after ``/healthz`` answers.
4. Stops the daemon with SIGTERM and counts the ``events`` rows: every 200 the generators got
   (warm-up included) must be a committed row.

Contract: exit 0 when the run completed, whether or not the performance targets were met
(this is a benchmark, not a test); exit 1 when an acknowledged event was not committed (a
correctness failure); exit 2 when the harness itself could not run (a server did not start).
Latencies are client-side (request sent to response read), so they include the generator's
own overhead; see bench/README.md for the caveats.
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
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
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


@dataclass(slots=True)
class GenResult:
    warmup_sent: int = 0
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


async def _drive(
    session: aiohttp.ClientSession, url: str, bodies: list[tuple[bytes, str]],
    connections: int, deadline: float, res: GenResult, measure: bool,
) -> None:
    """Closed loop: ``connections`` coroutines each send the next body as soon as their
    previous answer arrived, until the bodies run out or ``deadline`` passes."""
    it = iter(bodies)  # shared; next() never yields, so no two coroutines take the same body

    async def one_connection() -> None:
        for body, sig in it:
            if time.monotonic() >= deadline:
                return
            headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sig}
            t0 = time.perf_counter()
            status = 0
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            elapsed_ms = (time.perf_counter() - t0) * 1000.0
            if not measure:
                res.warmup_sent += 1
                res.warmup_ok += status == 200
                continue
            res.latencies_ms.append(elapsed_ms)
            if status == 200:
                res.ok += 1
            else:
                res.non200 += 1
                res.errors += status == 0

    await asyncio.gather(*(one_connection() for _ in range(connections)))


async def _generate(spec: LoadSpec, barrier: Barrier) -> GenResult:
    res = GenResult()
    warm = make_bodies(f"{spec.tag}w", spec.warmup_requests)
    bodies = make_bodies(spec.tag, spec.requests)
    connector = aiohttp.TCPConnector(limit=spec.connections)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        warm_deadline = time.monotonic() + spec.warmup_seconds
        await _drive(session, spec.url, warm, spec.connections, warm_deadline, res, False)
        # Both generators (and the orchestrator, which samples server CPU) start together.
        barrier.wait(timeout=START_TIMEOUT + spec.warmup_seconds)
        cpu0 = time.process_time()
        res.wall_start = time.time()
        res.start = time.monotonic()
        deadline = res.start + spec.duration_cap
        await _drive(session, spec.url, bodies, spec.connections, deadline, res, True)
        res.end = time.monotonic()
        res.wall_end = time.time()
        res.cpu_seconds = time.process_time() - cpu0
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
    server_cpu_pct: float | None


def run_load(
    url: str, *, tag: str, connections: int, requests: int, warmup_requests: int,
    warmup_seconds: float, duration_cap: float, server_pid: int,
) -> LoadOutcome:
    """Drive ``url`` from :data:`GENERATORS` processes; bounded by the caps plus timeouts."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(GENERATORS + 1)
    procs: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    conns = _split(connections, GENERATORS)
    reqs = _split(requests, GENERATORS)
    warms = _split(warmup_requests, GENERATORS)
    for i in range(GENERATORS):
        spec = LoadSpec(url, f"{tag}{i}", conns[i], reqs[i], warms[i], warmup_seconds,
                        duration_cap)
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_generator_main, args=(spec, barrier, send), daemon=True)
        proc.start()
        send.close()
        procs.append((proc, recv))
    budget = START_TIMEOUT + warmup_seconds + duration_cap + REQUEST_TIMEOUT + 30.0
    try:
        try:
            barrier.wait(timeout=START_TIMEOUT + warmup_seconds + 30.0)
        except Exception:  # BrokenBarrierError: a generator failed; its result says why
            pass
        cpu0, t0 = _proc_cpu_seconds(server_pid), time.monotonic()
        gens: list[GenResult] = []
        for proc, recv in procs:
            left = max(1.0, budget - (time.monotonic() - t0))
            if not recv.poll(left):
                raise HarnessError(f"load generator pid {proc.pid} did not finish in time")
            gens.append(recv.recv())
        cpu1, t1 = _proc_cpu_seconds(server_pid), time.monotonic()
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
    cpu_pct = None
    if cpu0 is not None and cpu1 is not None and t1 > t0:
        cpu_pct = 100.0 * (cpu1 - cpu0) / (t1 - t0)
    return LoadOutcome(gens, cpu_pct)


def _proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` from /proc (Linux), None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------ servers


async def _baseline_main(port: int) -> None:
    async def webhook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="EVENT_RECEIVED", content_type="text/plain")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.add_routes([web.post("/webhook", webhook), web.get("/healthz", healthz)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    print(f"bench baseline listening on http://127.0.0.1:{bound}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


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
                with contextlib.suppress(OSError):
                    with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as resp:
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
class ServerResult:
    name: str
    requests: int  # measured requests completed (any outcome)
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    ok: int
    non200: int
    errors: int
    elapsed_s: float
    acknowledged: int  # 200s including warm-up
    server_cpu_pct: float | None
    client_cpu_pct: list[float]
    exit_code: int | None = None
    # instaset only
    committed: int | None = None
    processed: int | None = None
    metrics_200: int | None = None
    commits: int | None = None
    rows_per_commit: float | None = None
    max_rows_per_commit: int | None = None


def summarise(name: str, load: LoadOutcome) -> ServerResult:
    gens = load.gens
    lat = sorted(x for g in gens for x in g.latencies_ms)
    start = min(g.start for g in gens)
    end = max(g.end for g in gens)
    elapsed = max(end - start, 1e-9)
    return ServerResult(
        name=name, requests=len(lat), rps=len(lat) / elapsed, p50_ms=percentile(lat, 50),
        p99_ms=percentile(lat, 99), max_ms=lat[-1] if lat else 0.0,
        ok=sum(g.ok for g in gens), non200=sum(g.non200 for g in gens),
        errors=sum(g.errors for g in gens), elapsed_s=elapsed,
        acknowledged=sum(g.ok + g.warmup_ok for g in gens),
        server_cpu_pct=load.server_cpu_pct,
        client_cpu_pct=[100.0 * g.cpu_seconds / max(g.end - g.start, 1e-9) for g in gens],
    )


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


def bench_server(
    name: str, server: Server, args: argparse.Namespace, *, db_path: Path | None
) -> ServerResult:
    server.wait_ready()
    try:
        load = run_load(
            f"{server.url}/webhook", tag=name[0], connections=args.connections,
            requests=args.requests, warmup_requests=args.warmup, warmup_seconds=args.warmup_cap,
            duration_cap=args.duration_cap, server_pid=server.proc.pid,
        )
        res = summarise(name, load)
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


def verdicts(bare: ServerResult, inst: ServerResult) -> dict[str, dict[str, Any]]:
    ratio = inst.rps / bare.rps if bare.rps else 0.0
    committed = inst.committed or 0
    return {
        "throughput_ratio": {"value": round(ratio, 3), "target": f">= {TARGET_RATIO}",
                             "pass": ratio >= TARGET_RATIO},
        "instaset_p99_ms": {"value": round(inst.p99_ms, 2), "target": f"< {TARGET_P99_MS:g}",
                            "pass": inst.p99_ms < TARGET_P99_MS},
        "acknowledged_committed": {
            "value": f"{inst.acknowledged} acked / {committed} committed",
            "target": "committed >= acknowledged", "pass": committed >= inst.acknowledged,
        },
    }


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}%"


def render(args: argparse.Namespace, bare: ServerResult, inst: ServerResult) -> str:
    v = verdicts(bare, inst)
    head = (f"{'server':<9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
            f"{'requests':>8} {'non-200':>7} {'srv CPU':>7} {'client CPU':>10}")
    lines = [
        f"instaset ingest benchmark: {args.connections} connections over {GENERATORS} "
        f"generator processes, {args.requests} requests/server (+{args.warmup} warm-up), "
        f"{BODY_BYTES} B signed DM bodies, synchronous={args.sync}, cap {args.duration_cap:g} s",
        f"python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
        f"{os.cpu_count()} CPUs",
        "",
        head,
        "-" * len(head),
    ]
    for r in (bare, inst):
        client = "+".join(_pct(c) for c in r.client_cpu_pct)
        lines.append(
            f"{r.name:<9} {r.rps:>8.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} {r.max_ms:>7.1f} "
            f"{r.requests:>8} {r.non200:>7} {_pct(r.server_cpu_pct):>7} {client:>10}"
        )
    lines.append("")
    lines.append(f"throughput instaset/bare: {v['throughput_ratio']['value']:.2f}")
    gc = "n/a"
    if inst.commits:
        gc = (f"{inst.commits} commits, {inst.rows_per_commit:.1f} rows/commit on average, "
              f"max {inst.max_rows_per_commit} (from received_at stamps)")
    lines.append(f"group commit (measured window): {gc}")
    lines.append(
        f"durability: {inst.acknowledged} acknowledged (200s incl. warm-up), "
        f"{inst.committed} rows committed, /metrics 200s {inst.metrics_200}, "
        f"{inst.processed} processed by the worker at stop, exit code {inst.exit_code}"
    )
    lines.append("targets:")
    for key, item in v.items():
        mark = "PASS" if item["pass"] else "FAIL"
        lines.append(f"  [{mark}] {key}: {item['value']} (target {item['target']})")
    return "\n".join(lines)


def as_json(args: argparse.Namespace, bare: ServerResult, inst: ServerResult) -> str:
    doc = {
        "config": {
            "connections": args.connections, "requests": args.requests, "warmup": args.warmup,
            "duration_cap_s": args.duration_cap, "synchronous": args.sync,
            "generators": GENERATORS, "body_bytes": BODY_BYTES,
            "python": platform.python_version(), "aiohttp": aiohttp.__version__,
            "cpus": os.cpu_count(),
        },
        "bare": asdict(bare),
        "instaset": asdict(inst),
        "targets": verdicts(bare, inst),
    }
    return json.dumps(doc, indent=2)


def print_profile(path: Path, top: int = 30) -> None:
    import pstats

    print(f"\ncProfile of the instaset main thread ({path}), top {top} by tottime:",
          file=sys.stderr)
    stats = pstats.Stats(str(path), stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(top)


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--requests", type=int, default=20000, help="measured requests per server")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up requests per server (default: 5%% of --requests, >= 200)")
    p.add_argument("--warmup-cap", type=float, default=5.0, help="warm-up time cap (s)")
    p.add_argument("--duration-cap", type=float, default=60.0,
                   help="time cap of each measured phase (s)")
    p.add_argument("--sync", choices=["FULL", "NORMAL"], default="FULL")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke: 2000 requests, 20 connections, 20 s cap")
    p.add_argument("--profile", type=Path, default=None,
                   help="run instaset under cProfile, write the stats here and print the top "
                        "(slows instaset down: figures of such a run are not comparable)")
    p.add_argument("--_baseline-server", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.connections = 2000, 20
        args.duration_cap = min(args.duration_cap, 20.0)
        args.warmup_cap = min(args.warmup_cap, 2.0)
    if args.warmup is None:
        args.warmup = max(200, args.requests // 20)
    if args.connections < GENERATORS or args.requests < 1:
        p.error(f"need --connections >= {GENERATORS} and --requests >= 1")
    return args


def run(args: argparse.Namespace) -> int:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("INSTASET_CONFIG", None)  # our --config must win
    with tempfile.TemporaryDirectory(prefix="instaset-bench-") as tmp:
        tmpdir = Path(tmp)
        baseline = Server(
            "bare", [sys.executable, str(Path(__file__).resolve()), "--_baseline-server", "0"],
            tmpdir / "bare.log", env,
        )
        try:
            bare = bench_server("bare", baseline, args, db_path=None)
        finally:
            baseline.stop()

        db_path = tmpdir / "bench.db"
        asyncio.run(_create_account(db_path))
        config = tmpdir / "config.yaml"
        config.write_text(json.dumps({  # JSON is YAML
            "instagram": {"app_secret": SECRET.decode()},
            "storage": {"path": str(db_path), "synchronous": args.sync},
            "worker": {"poll_interval": 0.2},
        }))
        prefix = [sys.executable]
        if args.profile is not None:
            prefix += ["-m", "cProfile", "-o", str(args.profile.resolve())]
        daemon = Server(
            "instaset",
            [*prefix, "-m", "instaset", "--config", str(config), "serve", "--host",
             "127.0.0.1", "--port", "0", "--log-level", "WARNING"],
            tmpdir / "instaset.log", env,
        )
        try:
            inst = bench_server("instaset", daemon, args, db_path=db_path)
        finally:
            daemon.stop()
        if inst.exit_code != 0:
            print(f"instaset exited with {inst.exit_code}:\n{daemon.tail()}", file=sys.stderr)

    print(as_json(args, bare, inst) if args.json else render(args, bare, inst))
    if args.profile is not None:
        print_profile(args.profile)
    durable = verdicts(bare, inst)["acknowledged_committed"]["pass"]
    return 0 if durable else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._baseline_server is not None:
        asyncio.run(_baseline_main(args._baseline_server))
        return 0
    try:
        return run(args)
    except HarnessError as exc:
        print(f"benchmark could not run: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
