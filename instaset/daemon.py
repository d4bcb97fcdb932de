"""``instaset serve``: the webhook listener and the worker in one asyncio process.

Contract: :func:`run_daemon` returns (exit 0) after SIGTERM/SIGINT once the listener stopped
accepting, in-flight jobs finished or the grace period ran out, and the database closed.
Only one daemon runs per database (a lock file next to it): that is what lets a restart make
every job the previous process left "running" due again at once, instead of waiting for the
lease to lapse after a kill -9.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import importlib
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp
from aiohttp import web

from instaset.accounts import WEBHOOK_FIELDS
from instaset.automation import WorkflowAutomation
from instaset.config import Config
from instaset.config_models import JOB_SHARE_OF_LEASE
from instaset.engine.settings import EngineSettings
from instaset.errors import InstasetError
from instaset.graph import GraphClient
from instaset.metrics import Metrics
from instaset.notify import NOTIFY_CONCURRENCY, Notifier
from instaset.outbox import Deliverer
from instaset.paths import not_a_directory
from instaset.pipeline import Pipeline
from instaset.proxy import ProxySettings
from instaset.queue import NewJob
from instaset.ratelimit import Budgets, SendClass, budgets_from_config
from instaset.sandbox import Limits, Sandbox
from instaset.secrets import app_secrets, open_secrets
from instaset.simulate import remember_stored_users, sandbox_routes
from instaset.store import history
from instaset.store import jobs as jobstore
from instaset.store import sends as sendstore
from instaset.store.db import Database, open_database
from instaset.store.ingest import IngestWriter
from instaset.store.jobs import Job
from instaset.tokens import StaticTokens, TokenProvider, default_tokens
from instaset.webhook import WebContext, make_app
from instaset.worker import Handler, Worker, WorkerSettings, worker_alive

log = logging.getLogger("instaset")

# The secret the sandbox signs its webhooks with when the config has none. It protects
# nothing real: the sandbox only ever talks to this daemon on this machine.
SANDBOX_SECRET = "instaset-sandbox-secret"
# An idle connection (kept alive after a request, or one that never sent a complete
# request) is closed after this long; aiohttp's default is an hour, so a few idle clients
# could hold file descriptors that webhook deliveries need.
KEEPALIVE_SECONDS = 75.0


@contextlib.contextmanager
def single_instance(db_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<db>.lock`` for the daemon's lifetime."""
    lock_path = db_path.with_name(db_path.name + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        problem = not_a_directory(lock_path.parent)  # e.g. INSTASET_HOME names a file
        if problem is None:
            raise
        raise InstasetError(problem) from None
    fh: IO[str] = open(lock_path, "w")  # noqa: SIM115 - held for the whole context
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InstasetError(
                f"another instaset serve is already running on {db_path} "
                "(stop it first, or point storage.path at another database)"
            ) from None
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()


def worker_settings(config: Config) -> WorkerSettings:
    w = config.worker
    return WorkerSettings(
        concurrency=w.concurrency, lease_seconds=w.lease_seconds, backoff_base=w.backoff_base,
        backoff_cap=w.backoff_cap, poll_interval=w.poll_interval, shutdown_grace=w.shutdown_grace,
        job_timeout=max(1.0, w.lease_seconds * JOB_SHARE_OF_LEASE),
        # A notification may wait its whole bound on a channel that does not answer: a few
        # at a time, in the slots the replies leave (see notify.NOTIFY_CONCURRENCY).
        kind_limits=(("notify", NOTIFY_CONCURRENCY),),
    )


@dataclass
class Runtime:
    """Everything one daemon owns. Built by :func:`runtime`, torn down when it exits."""

    config: Config
    db: Database
    metrics: Metrics
    writer: IngestWriter
    worker: Worker
    pipeline: Pipeline
    web: WebContext
    wake: asyncio.Event
    graph: GraphClient
    deliverer: Deliverer
    budgets: Budgets
    handlers: dict[str, Handler] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    tokens: TokenProvider = field(default_factory=lambda: StaticTokens({}))
    periodic: dict[str, float] = field(default_factory=dict)  # job kind -> interval (s)
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def add_periodic(self, kind: str, interval: float, handler: Handler) -> None:
        """Run ``handler`` every ``interval`` seconds through the durable queue: one job per
        time slot (key ``periodic:{kind}:{slot}``), each scheduling the next, so a restart
        neither skips nor doubles a run."""

        async def run_and_reschedule(job: Job) -> None:
            await handler(job)
            await jobstore.enqueue(self.db, [periodic_job(kind, interval, self.clock())],
                                   self.clock())

        self.handlers[kind] = run_and_reschedule
        self.periodic[kind] = interval

    async def start(self) -> None:
        """What a starting daemon does before it listens: schedule the periodic jobs and
        run the features' start hooks."""
        await self.start_periodic()
        for hook in self.on_start:
            await hook()

    async def start_periodic(self) -> None:
        now = self.clock()
        await jobstore.enqueue(
            self.db, [periodic_job(k, iv, now - iv) for k, iv in self.periodic.items()], now
        )


def periodic_job(kind: str, interval: float, after: float) -> NewJob:
    """The job of the first slot that starts after ``after``."""
    slot = int(after // interval) + 1
    return NewJob(kind, f"periodic:{kind}:{slot}", {"slot": slot}, run_at=slot * interval)


# Feature modules: each has ``install(rt: Runtime) -> None`` that registers its job handlers,
# periodic jobs and HTTP routes. Listed here so that the daemon's shape is visible in one place.
FEATURES: tuple[str, ...] = (
    "instaset.accounts", "instaset.catchup", "instaset.ai.feature", "instaset.booking",
    "instaset.retention", "instaset.links",
)


def install_features(rt: Runtime) -> None:
    for name in FEATURES:
        importlib.import_module(name).install(rt)


def engine_settings(config: Config, account_id: str) -> EngineSettings:
    return EngineSettings(
        account_id=account_id, timezone=config.timezone,
        default_pause_seconds=int(config.handoff.pause_for.total_seconds()),
    )


@contextlib.asynccontextmanager
async def runtime(
    config: Config, *, secrets: list[bytes] | None = None, clock: Callable[[], float] = time.time,
    graph_url: str | None = None, tokens: TokenProvider | None = None,
    account_id: str = "",
) -> AsyncIterator[Runtime]:
    """Open the database and build the pieces (nothing listens or runs yet).
    ``graph_url`` overrides ``instagram.graph_url``/``api_url`` (the sandbox)."""
    db = await open_database(config.storage.db_path(), synchronous=config.storage.synchronous)
    session = aiohttp.ClientSession()
    try:
        metrics = Metrics()
        ig = config.instagram
        graph = GraphClient(
            session, graph_url=graph_url or ig.graph_url, api_version=ig.api_version,
            api_url=graph_url or ig.api_url,
        )
        rl = config.rate_limits
        budgets = budgets_from_config(
            rl.text_per_second, rl.media_per_second, rl.private_replies_per_hour,
            # An injected clock (tests, replay) drives the budgets too.
            clock=time.monotonic if clock is time.time else clock,
            live_private_replies_per_second=rl.live_private_replies_per_second,
        )
        # The hourly private-reply budget outlives a restart: the last hour's count (of
        # replies to post and reel comments; a live comment's reply has its own budget).
        now = clock()
        for acct, starts in (await sendstore.recent_private_replies(db, now - 3600)).items():
            budgets.seed(acct, SendClass.PRIVATE_REPLY, [now - t for t in starts])
        token_provider = tokens if tokens is not None else default_tokens(config)
        deliverer = Deliverer(db, graph, token_provider, budgets, metrics=metrics, clock=clock)
        automation = WorkflowAutomation(
            db, config.workflows, engine_settings(config, account_id), clock=clock,
            link_base=config.server.public_url,
        )
        settings = worker_settings(config)
        notifier = Notifier(db, config.notify, clock=clock, job_seconds=settings.job_timeout,
                            hidden_env=[config.ai.api_key_env or ""])
        wake = asyncio.Event()
        writer = IngestWriter(
            db.connect_sync_writer(), gate=db.gate, wake=wake,
            max_attempts=config.worker.max_attempts,
            clock=clock,
            # The worker is built below; the writer asks only once it runs.
            ran_dry=lambda: worker.ran_dry_at,
        )
        pipeline = Pipeline(
            db, automation=automation, ledger=deliverer,
            pause_for_seconds=config.handoff.pause_for.total_seconds(), clock=clock,
        )
        handlers: dict[str, Handler] = {
            "process_event": pipeline.process_event,
            "first_plan": pipeline.first_plan,
            "send": deliverer.deliver,
            "resume_flow": automation.resume_flow,
            "notify": notifier.handle,
        }

        def on_finish(job: jobstore.Job, outcome: str, latency: float) -> None:
            metrics.job_latency.labels(job.kind, outcome).observe(max(0.0, latency))

        worker = Worker(
            db, handlers, settings, wake=wake, clock=clock, on_finish=on_finish,
            busy=lambda: writer.busy,
            recent=lambda: writer.arrived_within(settings.spread_window),
        )
        verify = config.instagram.verify_token
        web_ctx = WebContext(
            db=db, writer=writer, metrics=metrics,
            secrets=secrets if secrets is not None else config.instagram.webhook_secrets(),
            verify_token=verify.get_secret_value() if verify is not None else None,
            max_body_bytes=config.server.max_body_bytes,
            proxy=ProxySettings.from_config(config.server), clock=clock,
        )
        rt = Runtime(config, db, metrics, writer, worker, pipeline, web_ctx, wake, graph,
                     deliverer, budgets, handlers, clock, token_provider)
        install_features(rt)
        yield rt
    finally:
        await session.close()
        await db.close()


@dataclass
class Serving:
    """A running daemon: its runtime, the URL it listens on, and the sandbox if any."""

    rt: Runtime
    url: str
    sandbox: Sandbox | None
    worker_task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def serving(
    config: Config, *, host: str, port: int, sandbox: bool = False,
    say: Callable[[str], None] = lambda _msg: None, ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Serving]:
    """Listen and work until the context exits; then stop accepting, commit everything
    already accepted, and let the worker finish its in-flight jobs (within the grace)."""
    with single_instance(config.storage.db_path()):
        secrets = config.instagram.webhook_secrets()
        if not sandbox:
            # An app secret may also live in the secret store instead of the config.
            with contextlib.suppress(InstasetError):
                secrets = app_secrets(config, open_secrets(config))
            if not secrets:
                # Said at start, not at Meta's first delivery (doctor says it too).
                log.warning("no app secret: every webhook will be refused (403); set "
                            "instagram.app_secret (or INSTASET_APP_SECRET) and restart")
            verify = config.instagram.verify_token
            if verify is None or not verify.get_secret_value():
                log.warning("no verify token: Meta cannot verify the webhook URL; set "
                            "instagram.verify_token (or INSTASET_VERIFY_TOKEN) and restart")
        async with contextlib.AsyncExitStack() as stack:
            graph_url: str | None = None
            tokens: TokenProvider | None = None
            box: Sandbox | None = None
            if sandbox:
                if not secrets:
                    secrets = [SANDBOX_SECRET.encode()]
                # Meta's rate limits and usage header on (the daemon keeps within them).
                box = Sandbox(
                    app_secret=secrets[0].decode(), account_id=config.sandbox.account_id,
                    username=config.sandbox.username, limits=Limits(),
                )
                # Half the echoes come before the Send API's answer, as they often do at
                # Meta (reference §3.1), so the demo and `serve --sandbox` meet both orders.
                box.echo_first = 0.5
                graph_url = await box.start(port=config.sandbox.port)
                stack.push_async_callback(box.stop)
                tokens = StaticTokens({box.account_id: box.token})
                say(f"sandbox Instagram at {graph_url} (account @{box.username})")
            rt = await stack.enter_async_context(
                runtime(config, secrets=secrets, graph_url=graph_url, tokens=tokens,
                        account_id=box.account_id if box else "")
            )
            if box is not None:
                # The sandbox account starts connected and subscribed, as after `connect`:
                # subscribed through the sandbox's API, as `connect` subscribes at Meta.
                await rt.graph.subscribe(box.account_id, WEBHOOK_FIELDS, token=box.token)
                await history.upsert_account(
                    rt.db, box.account_id, username=box.username, now=rt.clock(), sandbox=True,
                    subscribed_fields=WEBHOOK_FIELDS,
                )
                # Started again on the same data: the contacts of the earlier runs are
                # Instagram users it knows, with their messaging windows.
                await remember_stored_users(box, rt.db)
                rt.web.extra_routes.extend(sandbox_routes(box))
            released = await jobstore.release_orphaned(rt.db, worker_alive)
            if released:
                log.info("%d jobs left running by a process that died are due again", released)
            # The writer runs before the first request can arrive: a restart with Meta's
            # backlog waiting must not answer 503 to the first deliveries.
            await rt.start()
            rt.writer.start()
            runner = web_runner(make_app(rt.web))
            await runner.setup()
            try:
                await web.TCPSite(
                    runner, host, port, reuse_address=True, ssl_context=ssl_context
                ).start()
            except OSError as exc:
                await runner.cleanup()
                await rt.writer.stop()
                raise InstasetError(
                    f"cannot listen on {host}:{port}: {exc.strerror} (another program uses "
                    "the port? choose another with --port, server.port or INSTASET_PORT)"
                ) from None
            scheme = "https" if ssl_context is not None else "http"
            url = f"{scheme}://{_connect_host(host)}:{_bound_port(runner, port)}"
            if box is not None:
                box.webhook_url = f"{url}/webhook"
            worker_stop = asyncio.Event()
            worker_task = asyncio.create_task(rt.worker.run(worker_stop), name="worker")
            try:
                yield Serving(rt, url, box, worker_task)
            finally:
                # Stop accepting first; every request already accepted is committed before
                # the writer stops; then the worker finishes its in-flight jobs.
                await runner.cleanup()
                await rt.writer.stop()
                worker_stop.set()
                await worker_task


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context from PEM files, with a clear error when they do not load."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise InstasetError(
            f"cannot load the TLS certificate {cert} / key {key}: {exc}; both must be PEM files"
        ) from None
    return ctx


async def run_daemon(
    config: Config, *, host: str, port: int, sandbox: bool = False,
    announce: Callable[[str], None] | None = None, ssl_context: ssl.SSLContext | None = None,
    stopped_early: Callable[[], bool] = lambda: False,
) -> int:
    """Serve until SIGTERM/SIGINT. Returns the process exit code.

    Owns the process's stop signals (only ``instaset serve`` calls it): ``stopped_early``
    says whether one came before this was called (the start stops at once), and once the
    stop is under way further ones are ignored, so a second SIGTERM or Ctrl-C cannot kill
    the process in the middle of its graceful stop, nor turn its exit code 0 into -15."""
    say = announce or (lambda msg: print(msg, file=sys.stderr, flush=True))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if stopped_early():
        stop.set()
    try:
        async with serving(config, host=host, port=port, sandbox=sandbox, say=say,
                           ssl_context=ssl_context) as srv:
            say(f"instaset listening on {srv.url} (pid {os.getpid()})")
            freeze_startup_heap()
            log.info("event loop: %s", type(loop).__module__.split(".")[0])
            await _until(stop, srv.worker_task)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)  # restores the default (death): not that
            signal.signal(sig, signal.SIG_IGN)
    say("instaset stopped")
    return 0


def freeze_startup_heap() -> None:
    """Collect what start-up left, then move every object alive now (modules, config,
    pydantic and google-genai classes: ~120,000 objects) out of the collector's sight.

    Why: CPython's oldest generation is collected when it has grown by a quarter, and such a
    collection walks every tracked object. Under a burst of webhooks that happened a few
    times a minute and stalled the event loop for ~75 ms each time (measured with
    ``gc.callbacks`` during bench/ingest.py's closed loop), which every request in flight
    waited for. Frozen objects are never collected: only objects alive at start, which live
    as long as the process anyway, are frozen."""
    gc.collect()
    gc.freeze()


async def _until(stop: asyncio.Event, worker_task: asyncio.Task[None]) -> None:
    """Wait for a stop signal; a worker that died on its own stops the daemon too."""
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({stopper, worker_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if worker_task.done() and not worker_task.cancelled() and worker_task.exception():
        raise InstasetError(f"the worker stopped: {worker_task.exception()}")


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def web_runner(app: web.Application, keepalive: float = KEEPALIVE_SECONDS) -> web.AppRunner:
    """The daemon's HTTP runner: no access log (a line per webhook halves aiohttp's
    throughput), 5 s for requests in progress at shutdown, and idle connections closed
    after ``keepalive`` seconds."""
    return web.AppRunner(app, access_log=None, shutdown_timeout=5.0,
                         keepalive_timeout=keepalive)


def _bound_port(runner: web.AppRunner, fallback: int) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return fallback
