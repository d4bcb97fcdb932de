"""Soak and chaos benchmark: the real daemon against the sandbox, with mixed traffic, sandbox
faults and ``kill -9`` restarts; then checks that nothing was lost or sent twice.

Usage::

    python bench/soak.py [--minutes 10] [--seed N] [--kills 3] [--rate 50] [--users 300]
                         [--warmup 30] [--catchup-wait 120] [--json] [--keep]

What one run does (everything on 127.0.0.1, bounded in rate, count and time):

1. **Sandbox process** (this file, ``--_sandbox SPEC``): the package's :class:`Sandbox` on a
   fixed port, plus a control server on a second port that creates user actions (DMs, comments,
   the creator typing in the app, reactions, reads), arms faults and reports. A middleware
   records every Send API call and public reply that *took effect* (the message exists at
   "Meta"), whether or not its answer reached the daemon. Echo webhooks are delivered by the
   sandbox itself and retried for about two minutes, as Meta retries failed deliveries.
2. **Daemon**: ``python -m instaset --config <tmp>/config.yaml serve`` (not ``--sandbox``: a
   ``kill -9`` of the daemon must not take "Meta" down with it), with ``graph_url``/``api_url``
   at the sandbox, ``secrets.backend: file`` under a temporary ``INSTASET_HOME`` holding the app
   secret (written with :mod:`instaset.secrets`) and the account token (stored by
   ``instaset connect --token``, the token on stdin), and the workflows of
   ``config.example.yaml``.
3. **Traffic** for ``--minutes`` at ``--rate`` webhooks/s (Poisson arrivals, at most 128 in
   flight): DMs with keywords, batches, quick-reply taps, comments, reactions, reads, echoes of
   the creator typing, redeliveries of earlier bodies (new ``entry.time``, several bodies
   merged into one). A POST that fails or is not answered 200 is retried like Meta does.
   **Faults** every 3-9 s: 5xx, transient Graph errors, throttles with usage headers, delays,
   dropped connections after the work was done, hangs past the daemon's timeout.
   **Kills**: ``--kills`` SIGKILLs at seeded random times, each followed by a restart.
4. **End**: traffic stops, unconsumed faults are cleared, the daemon drains (catch-up
   backfills at most ``--catchup-wait`` s), then gets SIGTERM (it must exit 0). The database
   is read with the stdlib ``sqlite3``.

Checks (definitions in bench/README.md, "Soak"):

- **no event lost**: every dedupe key of every webhook the daemon answered 200 (ours and the
  sandbox's echo deliveries) is an ``events`` row;
- **processed once**: every event has ``processed_at`` and exactly one ``process_event`` job,
  in state ``done``;
- **no duplicate send**: (a) per idempotency key, at most one Send API call took effect at the
  sandbox; (b) per decision (the inbound event a key derives from), no two effects with the
  same target and the same content; (c) every send the daemon recorded as sent with a message
  id took effect at the sandbox, and every effect belongs to some recorded send; (d) no send
  is left ``pending``/``in_flight`` after the drain (a decided message neither sent nor
  refused is lost on the way out);
- **memory / fds** per daemon incarnation, after warm-up: RSS and fd count at start vs end
  (a figure with a verdict, not a failure); throughput and send latency.

Exit code: 0 when the checks hold (memory and fd growth only reported), 1 on a correctness
failure (lost or unprocessed event, duplicate, unexplained or stuck send, daemon not exiting 0
on SIGTERM), 2 when the harness itself could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import yaml
from aiohttp import web
from aiohttp.typedefs import Handler

from instaset.config import load_config
from instaset.events import parse_webhook
from instaset.sandbox import Fault, Sandbox, build_echo_payload, meta_dumps, sign
from instaset.sandbox.faults import FaultQueue
from instaset.sandbox.model import StoredMessage
from instaset.sandbox.views import read_body
from instaset.sandbox.wire import new_mid
from instaset.secrets import APP_SECRET, open_secrets

REPO = Path(__file__).resolve().parents[1]
ACCOUNT = "17841400000000001"
MEDIA = ("17900000000000001", "17900000000000002", "17900000000000003")
MAX_IN_FLIGHT = 128
POST_TRIES = 7  # Meta-like retries of a webhook that failed: 0.5, 1, 2, 4, 8, 16 s apart
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=15)
START_TIMEOUT = 60.0
DRAIN_TIMEOUT = 600.0
CATCHUP_KINDS = frozenset({"catchup_start", "catchup_backfill"})
STOP_TIMEOUT = 60.0
SAMPLE_EVERY = 1.0

JSON = dict[str, Any]

DM_TEXTS = (  # (text, weight): keywords of the example workflows, and plain chatter
    ("Can I get the free guide?", 6), ("guide pls", 4), ("GUÍA por favor", 1),
    ("I'd like to book a call", 4), ("do you do coaching?", 3), ("can I talk to a human", 1),
    ("hi!", 4), ("love your reels 🔥", 3), ("how much is it?", 2), ("not sure yet", 2),
    ("my email is {user}@example.com", 3), ("thanks 🙏", 2),
)
COMMENT_TEXTS = (("GUIDE", 5), ("guide please!", 3), ("love this 🔥", 3), ("nice", 2))
ACTIONS = (  # (action, weight) per tick of the traffic
    ("dm", 40), ("batch", 6), ("quick_reply", 5), ("comment", 14), ("react", 7), ("read", 7),
    ("creator", 3), ("redeliver", 18),
)


class HarnessError(Exception):
    """The benchmark could not run (a process did not start, the sandbox failed)."""


def weighted(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([t for t, _ in table], weights=[w for _, w in table])[0]


# ================================================================ the sandbox process
class SoakSandbox(Sandbox):
    """The package's sandbox plus what the soak needs to observe and drive it."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.effects: list[JSON] = []
        self.faults_injected = 0
        self.busy = 0  # requests being handled: a hang records its effect only when it ends

    def make_app(self) -> web.Application:
        app = super().make_app()

        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            at = time.time()
            self.busy += 1
            try:
                resp = await handler(request)
            finally:
                self.busy -= 1
            # A dropped connection (drop_after_send) still returns the 200 here: the send
            # took effect at "Meta" even though the daemon never heard the answer.
            if request.method == "POST" and resp.status == 200 and isinstance(resp, web.Response):
                await self._record_effect(request, resp, at)
            return resp

        app.middlewares.append(record)
        return app

    async def _record_effect(self, request: web.Request, resp: web.Response, at: float) -> None:
        body, fields = await read_body(request)
        segs = [s for s in request.path.split("/") if s]
        answer = json.loads(resp.text or "{}")
        if segs[-1:] == ["replies"] and len(segs) >= 2:
            self.effects.append({"kind": "public_reply", "target": segs[-2], "at": at,
                                 "content": fields.get("message", ""), "id": answer.get("id")})
            return
        if segs[-1:] != ["messages"] or not isinstance(body, dict):
            return
        raw_recipient = body.get("recipient")
        recipient: JSON = raw_recipient if isinstance(raw_recipient, dict) else {}
        if "sender_action" in body:
            self.effects.append({"kind": "action", "target": str(recipient.get("id")),
                                 "at": at, "content": str(body["sender_action"]), "id": None})
            return
        raw_message = body.get("message")
        message: JSON = raw_message if isinstance(raw_message, dict) else {}
        text = message.get("text")
        content = text if isinstance(text, str) else json.dumps(message, sort_keys=True)
        if "comment_id" in recipient:
            cid = str(recipient["comment_id"])
            comment = self.comments.get(cid)
            self.effects.append({"kind": "private_reply", "target": cid, "at": at,
                                 "user": comment.igsid if comment else None,
                                 "content": content, "id": answer.get("message_id")})
        else:
            self.effects.append({"kind": "dm", "target": str(recipient.get("id")), "at": at,
                                 "content": content, "id": answer.get("message_id")})

    def creator_types(self, igsid: str, text: str) -> JSON:
        """The creator answers in the Instagram app: the message exists, Meta echoes it."""
        now = self.clock()
        mid = new_mid(self.account_id)
        self._store(igsid, StoredMessage(mid, igsid, "out", text, [], now))
        return build_echo_payload(self.account_id, igsid, {"text": text}, mid, int(now * 1000))

    def about_latest(self, igsid: str, what: str, unreact: bool) -> JSON | None:
        """A reaction to, or a read of, the newest message of the thread (None: no thread)."""
        thread = self.thread(igsid)
        if not thread:
            return None
        mid = thread[-1].mid
        ms = int(self.clock() * 1000)
        inner: JSON = {"mid": mid}
        if what == "reaction":
            inner.update({"action": "unreact"} if unreact else
                         {"action": "react", "reaction": "love", "emoji": "\u2764\ufe0f"})
        item = {"sender": {"id": igsid}, "recipient": {"id": self.account_id},
                "timestamp": ms, what: inner}
        return {"object": "instagram",
                "entry": [{"id": self.account_id, "time": ms, "messaging": [item]}]}

    def clear_faults(self) -> None:
        self._faults = FaultQueue()

    def pending_deliveries(self) -> int:
        return len(self._tasks)


def control_app(box: SoakSandbox, stop: asyncio.Event) -> web.Application:
    async def body_of(request: web.Request) -> JSON:
        data = await request.json()
        return data if isinstance(data, dict) else {}

    async def dm(request: web.Request) -> web.Response:
        b = await body_of(request)
        extras: JSON = {}
        if b.get("quick_reply"):
            extras["quick_reply"] = {"payload": b["quick_reply"]}
        payload = await box.user_sends_dm(str(b["user"]), str(b["text"]), deliver=False,
                                          **extras)
        return web.json_response({"payload": payload})

    async def comment(request: web.Request) -> web.Response:
        b = await body_of(request)
        payload = await box.user_comments(str(b["user"]), str(b["text"]), str(b["media"]),
                                          deliver=False)
        return web.json_response({"payload": payload})

    async def creator(request: web.Request) -> web.Response:
        b = await body_of(request)
        return web.json_response({"payload": box.creator_types(str(b["user"]), str(b["text"]))})

    async def about(request: web.Request) -> web.Response:
        b = await body_of(request)
        what = request.match_info["what"]
        return web.json_response(
            {"payload": box.about_latest(str(b["user"]), what, bool(b.get("unreact")))})

    async def fault(request: web.Request) -> web.Response:
        b = await body_of(request)
        box.inject(Fault(**b))
        box.faults_injected += 1
        return web.json_response({})

    async def clear(_request: web.Request) -> web.Response:
        box.clear_faults()
        return web.json_response({})

    async def idle(_request: web.Request) -> web.Response:
        return web.json_response({"pending": box.pending_deliveries() + box.busy,
                                  "deliveries": len(box.deliveries)})

    async def report(_request: web.Request) -> web.Response:
        return web.json_response({
            "effects": box.effects,
            "deliveries": [[p, s] for p, s in box.deliveries],
            "undelivered": [[u.payload, u.reason] for u in box.undelivered],
            "requests": len(box.transcript), "faults_injected": box.faults_injected,
        })

    async def halt(_request: web.Request) -> web.Response:
        stop.set()
        return web.json_response({})

    app = web.Application(client_max_size=64 * 1024**2)
    app.add_routes([
        web.post("/c/dm", dm), web.post("/c/comment", comment), web.post("/c/creator", creator),
        web.post("/c/about/{what}", about), web.post("/c/fault", fault),
        web.post("/c/clear_faults", clear), web.get("/c/idle", idle),
        web.get("/c/report", report), web.post("/c/stop", halt),
    ])
    return app


async def sandbox_main(spec: JSON) -> None:
    """The ``--_sandbox`` process: serve until ``POST /c/stop`` or SIGTERM."""
    box = SoakSandbox(app_secret=os.environ["SOAK_APP_SECRET"], account_id=ACCOUNT,
                      username="soak_creator", token=os.environ["SOAK_TOKEN"],
                      webhook_url=spec["webhook_url"])
    # Meta retries a failed delivery for a long time; ~2 min of retries outlive a restart.
    box.delivery_attempts, box.retry_delay = 10, 0.25
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await box.start("127.0.0.1", int(spec["graph_port"]))
    runner = web.AppRunner(control_app(box, stop), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(spec["control_port"])).start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await box.stop()


# ================================================================ the daemon under test
def free_port(taken: set[int]) -> int:
    """A free port below the ephemeral range: refused connects to a killed daemon pick
    ephemeral local ports, and one landing on the daemon's port would block its restart."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()  # not the seeded one: parallel runs must not pick the same ports
    for port in (rng.randrange(10_000, low) for _ in range(200)):
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise HarnessError("no free port below the ephemeral range")


class Sample(NamedTuple):
    """One look at /proc/PID: RSS and its anonymous part in kB, open fds split into sockets
    (bounded by the connection pools: keep-alive from the load, the client to "Meta") and
    the rest (database files, pipes, epoll: what a leak of handles would grow), threads."""

    t: float
    rss_kb: int
    anon_kb: int
    sockets: int
    other_fds: int
    threads: int
    cpu_s: float  # user + system CPU time so far


@dataclass
class Incarnation:
    """One daemon process and its samples."""

    n: int
    pid: int
    spawned: float
    ready: float | None = None
    ended: float | None = None
    end: str = "running"
    samples: list[Sample] = field(default_factory=list)


def proc_sample(pid: int) -> Sample | None:
    sockets = other = 0
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        # /proc/PID/stat: fields 14 and 15 (utime, stime, in clock ticks) after the ")".
        ticks = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[11:13]
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(FileNotFoundError):  # closed since the listing
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    sockets += 1
                else:
                    other += 1
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    values = {}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "Threads"):
            values[key] = int(rest.split()[0])
    if "VmRSS" not in values:
        return None  # a zombie
    cpu = sum(int(t) for t in ticks) / os.sysconf("SC_CLK_TCK")
    return Sample(time.time(), values["VmRSS"], values.get("RssAnon", 0), sockets, other,
                  values.get("Threads", 0), cpu)


class Daemon:
    def __init__(self, tmp: Path, config: Path, port: int, env: dict[str, str]) -> None:
        self.tmp, self.config, self.port, self.env = tmp, config, port, env
        self.log_path = tmp / "daemon.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.lives: list[Incarnation] = []
        self._sampler: asyncio.Task[None] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(FileNotFoundError):
            text = self.log_path.read_text("utf-8", errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return "(no daemon log)"

    async def start(self, session: aiohttp.ClientSession) -> None:
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"--- soak: start {len(self.lives)} ---\n")
            log.flush()
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "instaset", "--config", str(self.config), "serve",
                "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "WARNING",
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.tmp,
                env=self.env)
        life = Incarnation(len(self.lives), self.proc.pid, time.time())
        self.lives.append(life)
        self._sampler = asyncio.create_task(self._sample(life))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise HarnessError(f"the daemon exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{self.base}/healthz",
                                       timeout=aiohttp.ClientTimeout(total=5)) as resp:
                    if resp.status == 200:
                        life.ready = time.time()
                        return
            await asyncio.sleep(0.05)
        raise HarnessError(f"/healthz never answered:\n{self.log_tail()}")

    async def _sample(self, life: Incarnation) -> None:
        while (sample := proc_sample(life.pid)) is not None:
            life.samples.append(sample)
            await asyncio.sleep(SAMPLE_EVERY)

    async def _ended(self, how: str) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
        life = self.lives[-1]
        life.ended, life.end = time.time(), f"{how}, exit {code}"
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
        return code

    async def kill9(self) -> None:
        assert self.proc is not None and self.proc.returncode is None
        self.proc.kill()  # SIGKILL: no handler, no cleanup, no flush
        await self._ended("kill -9")

    async def sigterm(self) -> int:
        assert self.proc is not None and self.proc.returncode is None
        self.proc.terminate()
        try:
            return await self._ended("SIGTERM")
        except TimeoutError:
            raise HarnessError(f"no exit after SIGTERM:\n{self.log_tail()}") from None

    async def cleanup(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
        if self._sampler is not None:
            self._sampler.cancel()


# ================================================================ traffic
@dataclass
class Posted:
    """One webhook body; posted again (Meta's retries) until the daemon answers 200."""

    kind: str
    payload: JSON
    keys: tuple[str, ...]
    acked: bool = False


@dataclass
class Traffic:
    session: aiohttp.ClientSession
    daemon: Daemon
    control: str
    secret: str
    rng: random.Random
    rate: float
    users: list[str]
    db: Path
    items: list[Posted] = field(default_factory=list)  # originals (redelivery candidates)
    first_post: dict[str, float] = field(default_factory=dict)  # dedupe key -> first POST
    posted_keys: set[str] = field(default_factory=set)
    acked_keys: set[str] = field(default_factory=set)
    actions: collections.Counter[str] = field(default_factory=collections.Counter)
    posts: int = 0
    acked_posts: int = 0
    retries: int = 0
    gave_up: int = 0
    in_flight: int = 0
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def ctl(self, route: str, body: JSON) -> Any:
        async with self.session.post(f"{self.control}{route}", json=body,
                                     timeout=REQUEST_TIMEOUT) as resp:
            if resp.status != 200:
                raise HarnessError(f"sandbox control {route} answered {resp.status}")
            return (await resp.json()).get("payload")

    async def run(self, seconds: float) -> None:
        """Poisson arrivals at ``rate``/s for ``seconds``; each arrival is one action."""
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        end = time.monotonic() + seconds
        next_at = time.monotonic()
        while not self.stop.is_set() and time.monotonic() < end:
            next_at = max(next_at + self.rng.expovariate(self.rate), time.monotonic() - 1.0)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            plan = self.plan()
            await slots.acquire()
            task = asyncio.create_task(self.perform(plan))
            task.add_done_callback(lambda _t: slots.release())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def plan(self) -> JSON:
        """Every random choice of one action, made here so the sequence follows the seed."""
        rng = self.rng
        action = weighted(rng, ACTIONS)
        if action == "redeliver" and len(self.items) < 10:
            action = "dm"
        user = rng.choice(self.users)
        text = weighted(rng, DM_TEXTS).format(user=user)
        plan: JSON = {"action": action, "user": user, "text": text}
        if action == "batch":
            plan["users"] = rng.sample(self.users, rng.randint(2, 4))
            plan["texts"] = [weighted(rng, DM_TEXTS).format(user=u) for u in plan["users"]]
        elif action == "quick_reply":
            plan["text"], plan["quick_reply"] = rng.choice(
                [("Yes please", "BOOK_YES"), ("Not now", "BOOK_NO")])
        elif action == "comment":
            plan["text"], plan["media"] = weighted(rng, COMMENT_TEXTS), rng.choice(MEDIA)
        elif action == "creator":
            # Only a tenth of the users ever get a reply typed by the creator (it pauses them).
            plan["user"] = rng.choice(self.users[: max(1, len(self.users) // 10)])
            plan["text"] = rng.choice(["sure, one sec", "thanks! 😊", "sent you a voice note"])
        elif action in ("react", "read"):
            plan["unreact"] = rng.random() < 0.2
        elif action == "redeliver":
            plan["picks"] = [rng.randrange(len(self.items)) for _ in range(rng.randint(1, 3))]
        return plan

    async def perform(self, plan: JSON) -> None:
        action = str(plan["action"])
        user = plan["user"]
        payload: JSON | None
        match action:
            case "dm" | "quick_reply":
                payload = await self.ctl("/c/dm", {"user": user, "text": plan["text"],
                                                   "quick_reply": plan.get("quick_reply")})
            case "batch":
                payload = merge([await self.ctl("/c/dm", {"user": u, "text": t})
                                 for u, t in zip(plan["users"], plan["texts"], strict=True)])
            case "comment":
                payload = await self.ctl("/c/comment", {"user": user, "text": plan["text"],
                                                        "media": plan["media"]})
            case "creator":
                payload = await self.ctl("/c/creator", {"user": user, "text": plan["text"]})
            case "react" | "read":
                what = "reaction" if action == "react" else "read"
                payload = await self.ctl(f"/c/about/{what}",
                                         {"user": user, "unreact": plan["unreact"]})
            case _:
                payload = merge([self.items[i].payload for i in plan["picks"]])
        if payload is None:
            self.actions[f"{action} (no thread yet, skipped)"] += 1
            return
        self.actions[action] += 1
        item = Posted(action, payload, tuple(e.dedupe_key for e in parse_webhook(payload)))
        if action != "redeliver":
            self.items.append(item)
        await self.deliver(item)

    async def deliver(self, item: Posted) -> None:
        for attempt in range(POST_TRIES):
            if attempt:
                self.retries += 1
                await asyncio.sleep(min(0.5 * 2 ** (attempt - 1), 16.0))
            if await self.post(item):
                return
        self.gave_up += 1

    async def post(self, item: Posted) -> bool:
        now = time.time()
        # A redelivery carries a new send time (entry.time); the items stay byte-identical.
        entries = [{**e, "time": int(now * 1000) if int(e.get("time", 0)) > 10**11 else int(now)}
                   for e in item.payload["entry"]]
        raw = meta_dumps({"object": "instagram", "entry": entries})
        for key in item.keys:
            self.first_post.setdefault(key, now)
            self.posted_keys.add(key)
        self.posts += 1
        self.in_flight += 1
        try:
            async with self.session.post(
                f"{self.daemon.base}/webhook", data=raw, timeout=REQUEST_TIMEOUT,
                headers={"Content-Type": "application/json",
                         "X-Hub-Signature-256": sign(raw, self.secret)},
            ) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.statuses[type(exc).__name__] += 1
            return False
        finally:
            self.in_flight -= 1
        self.statuses[str(status)] += 1
        if status != 200:
            return False
        item.acked = True
        self.acked_posts += 1
        self.acked_keys.update(item.keys)
        return True


def merge(payloads: list[JSON]) -> JSON:
    """Several webhook bodies as one delivery (Meta batches entries)."""
    return {"object": "instagram", "entry": [e for p in payloads for e in p["entry"]]}


FAULTS = (("5xx", 3), ("transient", 3), ("throttle", 2), ("delay", 3), ("drop", 3),
          ("hang", 1))


def plan_fault(rng: random.Random) -> tuple[str, JSON]:
    kind = weighted(rng, FAULTS)
    path = rng.choices(["/messages", "/replies", ""], weights=[6, 2, 2])[0]
    base: JSON = {"path_contains": path, "times": rng.randint(1, 3)}
    if kind == "5xx":
        return kind, {**base, "kind": "status", "status": rng.choice([500, 502, 503])}
    if kind == "transient":
        return kind, {**base, "kind": "graph_error", "status": 500, "code": 2}
    if kind == "throttle":
        # Meta says when access comes back in whole minutes; fractions keep the backlog of a
        # 10-minute run bounded (a throttle blocks the account's sends for 3-6 s).
        regain = rng.choice([0.05, 0.1])
        usage = {ACCOUNT: [{"type": "instagram", "call_count": 100, "total_cputime": 31,
                            "total_time": 44, "estimated_time_to_regain_access": regain}]}
        return kind, {**base, "kind": "graph_error", "status": rng.choice([400, 403]),
                      "code": rng.choice([4, 613, 80002]),
                      "headers": {"X-App-Usage": json.dumps({"call_count": 100}),
                                  "X-Business-Use-Case-Usage": json.dumps(usage)}}
    if kind == "delay":
        return kind, {**base, "kind": "delay", "delay": round(rng.uniform(0.5, 3.0), 2)}
    if kind == "drop":
        return kind, {**base, "kind": "drop_after_send"}
    # Hang past the daemon's 20 s Graph timeout: the outcome is unknown, the echo settles it.
    return kind, {**base, "times": 1, "kind": "drop_after_send", "delay": 25.0}


# ================================================================ reading the results
def ro_connect(db_path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    con.row_factory = sqlite3.Row
    return con


def pending_jobs(db_path: Path) -> dict[str, int]:
    """Work left: jobs ready or running, except the periodic chains (always one ahead)."""
    con = ro_connect(db_path)
    try:
        return {r[0]: int(r[1]) for r in con.execute(
            "SELECT kind, count(*) FROM jobs WHERE state IN ('ready', 'running')"
            " AND key NOT LIKE 'periodic:%' GROUP BY kind")}
    finally:
        con.close()


def at_kill(db_path: Path) -> JSON:
    """What a kill -9 interrupts: sends whose outcome is not recorded yet, jobs running."""
    con = ro_connect(db_path)
    try:
        sends = con.execute("SELECT count(*) FROM sends WHERE state = 'in_flight'").fetchone()
        jobs = con.execute("SELECT count(*) FROM jobs WHERE state = 'running'").fetchone()
        return {"sends_in_flight": int(sends[0]), "jobs_running": int(jobs[0])}
    finally:
        con.close()


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


def spread(values: list[float]) -> JSON:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 3)

    return {"n": len(values), "p50": r(pct(values, 50)), "p90": r(pct(values, 90)),
            "p99": r(pct(values, 99)), "max": r(max(values) if values else None)}


def check_events(db_path: Path, traffic: Traffic, sandbox: JSON) -> JSON:
    con = ro_connect(db_path)
    try:
        events = {r["dedupe_key"]: r for r in con.execute(
            "SELECT id, dedupe_key, kind, received_at, processed_at FROM events")}
        recorded_out = {str(r[0]) for r in con.execute(
            "SELECT mid FROM messages WHERE direction = 'out' AND mid IS NOT NULL")}
        jobs = con.execute("SELECT kind, key, state, finished_at - created_at AS lag"
                           " FROM jobs").fetchall()
        recovered = {int(r[0]) for r in con.execute("SELECT event_id FROM recovered_events")}
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
        runs = con.execute("SELECT count(*), count(finished_at), sum(api_calls),"
                           " sum(recovered), sum(error IS NOT NULL) FROM catchup_runs").fetchone()
    finally:
        con.close()
    echo_acked: set[str] = set()
    echo_all: set[str] = set()
    for payload, status in sandbox["deliveries"]:
        keys = {e.dedupe_key for e in parse_webhook(payload)}
        echo_all |= keys
        if status == 200:
            echo_acked |= keys
    undelivered = {e.dedupe_key for p, _ in sandbox["undelivered"] for e in parse_webhook(p)}
    acked = traffic.acked_keys | echo_acked
    lost = sorted(acked - set(events))
    unprocessed = sorted(k for k, r in events.items() if r["processed_at"] is None)
    per_key = collections.Counter(j["key"] for j in jobs if j["kind"] == "process_event")
    states = {j["key"]: j["state"] for j in jobs if j["kind"] == "process_event"}
    # The echo of a message already recorded is stored processed by ingest, with no job
    # (its processing would change nothing); every other event has exactly one done job.
    at_ingest = {k for k, r in events.items()
                 if r["kind"] == "echo" and per_key[f"event:{k}"] == 0
                 and r["processed_at"] == r["received_at"] and k[4:] in recorded_out}
    bad_jobs = sorted(k for k in events if k not in at_ingest and (
        per_key[f"event:{k}"] != 1 or states.get(f"event:{k}") != "done"))
    dead = collections.Counter(j["kind"] for j in jobs if j["state"] == "dead")
    rec_keys = {k for k, r in events.items() if int(r["id"]) in recovered}
    unexplained = sorted(set(events) - traffic.posted_keys - echo_all - undelivered - rec_keys)
    never_acked = traffic.posted_keys - acked
    return {
        "stored": len(events), "acked_keys": len(acked), "acked_by_sandbox_echoes":
        len(echo_acked), "lost": len(lost), "lost_examples": lost[:5],
        "unprocessed": len(unprocessed), "unprocessed_examples": unprocessed[:5],
        "not_exactly_one_done_job": len(bad_jobs), "bad_job_examples": bad_jobs[:5],
        "processed_at_ingest": len(at_ingest),
        "dead_jobs": dict(dead), "recovered_by_catchup": len(rec_keys),
        "posted_never_acked": len(never_acked),
        "posted_never_acked_but_stored": len(never_acked & set(events)),
        "echoes_undelivered": len(undelivered), "unexplained": len(unexplained),
        "unexplained_examples": unexplained[:5], "integrity": integrity,
        "catchup_runs": dict(zip(("runs", "finished", "api_calls", "recovered", "errors"),
                                 (int(x or 0) for x in runs), strict=True)),
        "by_kind": dict(collections.Counter(str(r["kind"]) for r in events.values())),
        # Queue lag of the events: stored (job created) to processed (job finished).
        "processing_lag_s": spread([float(j["lag"]) for j in jobs
                                    if j["kind"] == "process_event" and j["lag"] is not None]),
    }


Group = tuple[str, str, str]  # (kind, target, content)


def row_group(row: sqlite3.Row) -> Group | None:
    body = json.loads(row["body"])
    kind = str(row["kind"])
    text = body.get("text")
    content = text if isinstance(text, str) and text else "<non-text>"
    if kind in ("private_reply", "public_reply"):
        return kind, str(row["comment_id"]), content
    if kind in ("text", "media", "template"):
        return "dm", str(row["contact_id"]), content
    return None  # sender actions and reactions: idempotent at Meta, not messages


def effect_group(e: JSON) -> Group:
    content = e["content"] if e["content"] and not str(e["content"]).startswith("{") else (
        "<non-text>")
    return str(e["kind"]), str(e["target"]), str(content)


def decision_of(key: str) -> str:
    """``send:{dedupe key}:{n}[#part]`` -> the dedupe key (the inbound event decided on)."""
    return key.removeprefix("send:").split("#")[0].rsplit(":", 1)[0]


def check_sends(db_path: Path, traffic: Traffic, sandbox: JSON) -> JSON:
    """Attribute every effect at the sandbox to a ``sends`` row (see the module docstring).

    An effect whose message id the daemon recorded belongs to that row. An *orphan* (an id
    the daemon never learned: a dropped answer whose echo never matched) is matched by
    (kind, target, content) to a row of the same group created before it: first to a row
    with no recorded id of its own (delivered, but the daemon did not learn it), else it is a
    second effect of a row that already has one: a duplicate."""
    con = ro_connect(db_path)
    try:
        rows = con.execute("SELECT * FROM sends ORDER BY created_at").fetchall()
    finally:
        con.close()
    effects = sorted((e for e in sandbox["effects"] if e["kind"] != "action"),
                     key=lambda e: float(e["at"]))
    effect_ids = {e["id"] for e in effects}
    by_mid = {r["message_id"]: r for r in rows if r["message_id"]}
    groups: dict[Group, list[sqlite3.Row]] = collections.defaultdict(list)
    for r in rows:
        g = row_group(r)
        if g is not None:
            groups[g].append(r)
    attributed: dict[str, list[JSON]] = collections.defaultdict(list)
    unconfirmed: list[str] = []
    unexplained: list[JSON] = []
    taken: set[str] = set()
    for e in effects:
        row = by_mid.get(e["id"])
        if row is not None:
            attributed[row["key"]].append(e)
            continue
        cands = [r for r in groups.get(effect_group(e), []) if r["created_at"] <= e["at"] + 1]
        if not cands:
            unexplained.append(e)
            continue
        free = [r for r in cands if not r["message_id"] and r["key"] not in taken]
        row = free[0] if free else cands[-1]
        taken.add(row["key"])
        if free:
            unconfirmed.append(f"{row['key']} ({row['state']})")
        attributed[row["key"]].append(e)
    key_dups = {k: len(v) for k, v in attributed.items() if len(v) > 1}
    decisions: dict[str, collections.Counter[Group]] = collections.defaultdict(
        collections.Counter)
    for key, effs in attributed.items():
        for e in effs:
            decisions[decision_of(key)][effect_group(e)] += 1
    decision_dups = {d: {f"{g[0]} to {g[1]}: {g[2][:40]}": n for g, n in c.items() if n > 1}
                     for d, c in decisions.items() if any(n > 1 for n in c.values())}
    stuck = sorted(f"{r['key']} ({r['state']}, {r['attempts']} tries)" for r in rows
                   if r["state"] in ("pending", "in_flight"))
    phantom = sorted(r["key"] for r in rows if r["state"] == "sent" and r["message_id"]
                     and r["message_id"] not in effect_ids)
    # Latency: from the first POST of the inbound event to the effect at the sandbox.
    all_lat: list[float] = []
    first: dict[str, float] = {}
    for key, effs in attributed.items():
        start = traffic.first_post.get(decision_of(key))
        if start is None:
            continue
        at = min(float(e["at"]) for e in effs)
        all_lat.append(at - start)
        d = decision_of(key)
        first[d] = min(first.get(d, at), at)
    first_lat = [at - traffic.first_post[d] for d, at in first.items()]
    t_start = min(traffic.first_post.values(), default=0.0)
    minutes: dict[int, list[float]] = collections.defaultdict(list)
    for d, at in first.items():
        minutes[int((traffic.first_post[d] - t_start) // 60)].append(at - traffic.first_post[d])
    return {
        "effects": len(effects),
        "effects_by_kind": dict(collections.Counter(str(e["kind"]) for e in effects)),
        "rows": len(rows), "rows_by_state": dict(collections.Counter(r["state"] for r in rows)),
        "not_sent_reasons": dict(collections.Counter(
            f"{r['state']}:{r['reason']}" for r in rows if r["state"] in ("refused", "failed"))),
        "orphan_effects": sum(1 for e in effects if e["id"] not in by_mid),
        "delivered_not_recorded": len(unconfirmed), "delivered_not_recorded_keys":
        unconfirmed[:5], "duplicate_keys": len(key_dups),
        "duplicate_key_examples": dict(list(key_dups.items())[:5]),
        "duplicate_in_decision": len(decision_dups),
        "duplicate_in_decision_examples": dict(list(decision_dups.items())[:3]),
        "unexplained_effects": len(unexplained),
        "unexplained_examples": [{k: e[k] for k in ("kind", "target", "content")}
                                 for e in unexplained[:3]],
        "stuck": len(stuck), "stuck_examples": stuck[:5],
        "recorded_sent_not_at_sandbox": len(phantom), "phantom_examples": phantom[:5],
        "latency_s": spread(all_lat), "first_reply_latency_s": spread(first_lat),
        "first_reply_by_minute": [[m, len(v), pct(v, 50), pct(v, 99)]
                                  for m, v in sorted(minutes.items())],
    }


def memory_of(life: Incarnation, warmup: float, until: float) -> JSON:
    """RSS and fds of one incarnation from ``warmup`` s after it was ready to ``until`` (the
    end of the traffic): medians over the first and the last 10 % (at least 10 s) of that
    span, and the least-squares slope of RSS. Judged only over at least 60 s."""
    out: JSON = {"n": life.n, "pid": life.pid, "end": life.end,
                 "startup_s": round(life.ready - life.spawned, 2) if life.ready else None,
                 "lifetime_s": round((life.ended or time.time()) - life.spawned, 1)}
    if life.samples:
        out["rss_at_exit_mib"] = round(life.samples[-1].rss_kb / 1024, 1)
    post = [s for s in life.samples if life.ready and life.ready + warmup <= s.t <= until]
    span = post[-1].t - post[0].t if len(post) >= 2 else 0.0
    out["judged_s"] = round(span, 1)
    if len(post) < 4:
        out["verdict"] = "too short to judge"
        return out
    w = max(10.0, span * 0.1)
    head = [s for s in post if s.t <= post[0].t + w]
    tail = [s for s in post if s.t >= post[-1].t - w]

    def med(samples: list[Sample], name: str) -> float:
        return float(statistics.median(getattr(s, name) for s in samples))

    rss0, rss1 = med(head, "rss_kb") / 1024, med(tail, "rss_kb") / 1024
    anon0, anon1 = med(head, "anon_kb") / 1024, med(tail, "anon_kb") / 1024
    fd0, fd1 = med(head, "other_fds"), med(tail, "other_fds")
    ts = [(s.t - post[0].t) / 60 for s in post]
    slope = statistics.linear_regression(ts, [s.rss_kb / 1024 for s in post]).slope
    mem_flat = rss1 - rss0 <= max(4.0, 0.05 * rss0)
    fd_flat = fd1 - fd0 <= 2
    out.update({
        "rss_mib": [round(rss0, 1), round(rss1, 1)], "anon_mib": [round(anon0, 1),
                                                                  round(anon1, 1)],
        "rss_max_mib": round(max(s.rss_kb for s in post) / 1024, 1),
        "rss_slope_mib_per_min": round(slope, 3), "fds": [fd0, fd1],
        "fds_max": max(s.other_fds for s in post),
        "sockets": [med(head, "sockets"), med(tail, "sockets")],
        "sockets_max": max(s.sockets for s in post),
        "threads": [post[0].threads, post[-1].threads],
        "cpu_pct": round(100 * (post[-1].cpu_s - post[0].cpu_s) / span, 1) if span else None,
        "memory": "flat" if mem_flat else "GROWS", "fds_verdict": "flat" if fd_flat else "GROWS",
        "verdict": ("too short to judge" if span < 60 else
                    "flat" if mem_flat and fd_flat else "growth"),
    })
    return out


# ================================================================ the run
def write_config(tmp: Path, db: Path, graph: str) -> Path:
    example = yaml.safe_load((REPO / "config.example.yaml").read_text("utf-8"))
    config = {
        "instagram": {"app_id": "100000000000001", "graph_url": graph, "api_url": graph,
                      "auth_url": graph},
        "storage": {"path": str(db)},
        "secrets": {"backend": "file"},
        # Budgets above the offered load, so the soak measures the daemon (Meta: 300/s text).
        "rate_limits": {"text_per_second": 100, "private_replies_per_hour": 1_000_000},
        "worker": {"backoff_cap": 30},
        # The creator's own replies pause a contact; short, so pausing and resuming both run.
        "handoff": {"pause_for": "30s"},
        "workflows": example["workflows"],
        # The creator's voice too: the catch-all ai_reply answers from these examples and
        # facts (the offline responder: no key here) instead of handing every chatter off.
        "ai": example["ai"],
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), "utf-8")
    path.chmod(0o600)
    return path


async def drain(daemon: Daemon, db: Path, session: aiohttp.ClientSession, control: str,
                catchup_wait: float) -> JSON:
    """Wait until the sandbox has no delivery pending and no request in progress, and the
    daemon no job left, twice in a row. Catch-up backfills (Conversations API walks at 2
    calls/s after every restart) are waited for at most ``catchup_wait`` s; what is left of
    them is reported."""
    started = time.monotonic()
    quiet = 0
    left: dict[str, int] = {}
    pending = 0
    while time.monotonic() - started < DRAIN_TIMEOUT:
        async with session.get(f"{control}/c/idle", timeout=REQUEST_TIMEOUT) as resp:
            pending = int((await resp.json())["pending"])
        left = pending_jobs(db)
        work = [k for k in left if k not in CATCHUP_KINDS]
        catching = sum(n for k, n in left.items() if k in CATCHUP_KINDS)
        patience = catching and time.monotonic() - started < catchup_wait
        quiet = quiet + 1 if pending == 0 and not work and not patience else 0
        if quiet >= 2:
            return {"drained": True, "seconds": round(time.monotonic() - started, 1),
                    "catchup_jobs_left": catching}
        if daemon.proc is None or daemon.proc.returncode is not None:
            raise HarnessError(f"the daemon died while draining:\n{daemon.log_tail()}")
        await asyncio.sleep(1.0)
    return {"drained": False, "seconds": round(time.monotonic() - started, 1),
            "jobs_left": left, "echoes_pending": pending}


async def inject_faults(traffic: Traffic, rng: random.Random, log: collections.Counter[str]
                        ) -> None:
    while not traffic.stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(traffic.stop.wait(), rng.uniform(3.0, 9.0))
            return
        kind, spec = plan_fault(rng)
        async with traffic.session.post(f"{traffic.control}/c/fault", json=spec,
                                        timeout=REQUEST_TIMEOUT) as resp:
            if resp.status != 200:
                raise HarnessError(f"the sandbox refused the fault {spec}")
        log[f"{kind} {spec['path_contains'] or '(any)'}"] += 1


async def kill_restart(traffic: Traffic, session: aiohttp.ClientSession, t0: float,
                       schedule: list[tuple[float, float]], log: list[JSON]) -> None:
    for at, down in schedule:
        await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
        if traffic.stop.is_set():
            return
        state = {"at_s": round(time.monotonic() - t0, 1), "posts_in_flight": traffic.in_flight,
                 **at_kill(traffic.db)}
        await traffic.daemon.kill9()
        await asyncio.sleep(down)
        began = time.monotonic()
        await traffic.daemon.start(session)
        restart = round(time.monotonic() - began, 2)
        log.append({**state, "down_s": round(down, 2), "restart_s": restart})


def log_counts(path: Path) -> JSON:
    text = path.read_text("utf-8", errors="replace") if path.exists() else ""
    lines = text.splitlines()
    return {"warning_lines": sum(" WARNING " in ln or ln.startswith("WARNING") for ln in lines),
            "error_lines": sum(" ERROR " in ln or ln.startswith("ERROR") for ln in lines),
            "tracebacks": text.count("Traceback (most recent call last)")}


async def soak(args: argparse.Namespace, tmp: Path) -> JSON:
    seconds = args.minutes * 60.0
    rng = random.Random(args.seed)
    ports: set[int] = set()
    daemon_port, graph_port, control_port = (free_port(ports) for _ in range(3))
    graph, control = f"http://127.0.0.1:{graph_port}", f"http://127.0.0.1:{control_port}"
    home = tmp / "home"
    home.mkdir(mode=0o700)
    # Throwaway credentials of a local sandbox (seeded like everything else); never printed.
    secret = "soak-" + "".join(rng.choices("abcdef0123456789", k=24))
    token = "IGAAsoak" + "".join(rng.choices("ABCDEFabcdef0123456789", k=40))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("INSTASET_", "GEMINI_", "GOOGLE_"))}
    env.update(INSTASET_HOME=str(home), PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    db = tmp / "soak.db"
    cfg = write_config(tmp, db, graph)
    # The app secret lives in the secret store (0600 file), as `instaset` itself would keep it.
    open_secrets(load_config(cfg, env), env).set(APP_SECRET, secret)
    spec = {"graph_port": graph_port, "control_port": control_port,
            "webhook_url": f"http://127.0.0.1:{daemon_port}/webhook"}
    box_env = {**env, "SOAK_APP_SECRET": secret, "SOAK_TOKEN": token}
    daemon = Daemon(tmp, cfg, daemon_port, env)
    box_proc: asyncio.subprocess.Process | None = None
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            with open(tmp / "sandbox.log", "w", encoding="utf-8") as blog:
                box_proc = await asyncio.create_subprocess_exec(
                    sys.executable, str(Path(__file__).resolve()), "--_sandbox",
                    json.dumps(spec), stdin=asyncio.subprocess.DEVNULL, stdout=blog,
                    stderr=blog, env=box_env, cwd=tmp)
            await wait_control(session, control, box_proc, tmp)
            connect = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "instaset", "--config", str(cfg), "connect", "--token",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, cwd=tmp)
            out, _ = await asyncio.wait_for(connect.communicate(token.encode() + b"\n"),
                                            START_TIMEOUT)
            if connect.returncode != 0:
                raise HarnessError(f"instaset connect --token failed: {out.decode()[-800:]}")
            await daemon.start(session)
            return await drive(args, rng, daemon, session, control, secret, db, seconds, tmp)
        finally:
            await daemon.cleanup()
            if box_proc is not None and box_proc.returncode is None:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.post(f"{control}/c/stop", timeout=REQUEST_TIMEOUT):
                        pass
                try:
                    await asyncio.wait_for(box_proc.wait(), STOP_TIMEOUT)
                except TimeoutError:
                    box_proc.kill()
                    await box_proc.wait()


async def wait_control(session: aiohttp.ClientSession, control: str,
                       proc: asyncio.subprocess.Process, tmp: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise HarnessError("the sandbox process exited: "
                               + (tmp / "sandbox.log").read_text()[-800:])
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(f"{control}/c/idle",
                                   timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.05)
    raise HarnessError("the sandbox never answered")


async def drive(args: argparse.Namespace, rng: random.Random, daemon: Daemon,
                session: aiohttp.ClientSession, control: str, secret: str, db: Path,
                seconds: float, tmp: Path) -> JSON:
    users = [f"{5_500_000_000_000_000 + rng.randrange(10**14)}" for _ in range(args.users)]
    schedule = sorted((rng.uniform(0.1, 0.85) * seconds, rng.uniform(0.05, 2.0))
                      for _ in range(args.kills))
    traffic = Traffic(session, daemon, control, secret, random.Random(args.seed + 1),
                      args.rate, users, db)
    faults: collections.Counter[str] = collections.Counter()
    kills: list[JSON] = []
    load_start = os.getloadavg()
    t0 = time.monotonic()
    tasks = [asyncio.create_task(inject_faults(traffic, random.Random(args.seed + 2), faults)),
             asyncio.create_task(kill_restart(traffic, session, t0, schedule, kills))]
    try:
        await traffic.run(seconds)
        traffic_s = time.monotonic() - t0
        traffic_end = time.time()
        load_end = os.getloadavg()
        traffic.stop.set()
        await asyncio.gather(*tasks)  # a restart in progress completes
        # Actions in flight finish, with their retries (bounded: POST_TRIES, ~32 s of waits).
        try:
            await asyncio.wait_for(asyncio.gather(*list(traffic.tasks)), 180)
        except TimeoutError:
            raise HarnessError("the load's last requests did not finish in 180 s") from None
    finally:
        traffic.stop.set()
        for task in [*tasks, *traffic.tasks]:
            task.cancel()
        await asyncio.gather(*tasks, *traffic.tasks, return_exceptions=True)
    flushed_s = time.monotonic() - t0 - traffic_s
    async with session.post(f"{control}/c/clear_faults", timeout=REQUEST_TIMEOUT):
        pass
    drained = await drain(daemon, db, session, control, args.catchup_wait)
    code = await daemon.sigterm()
    async with session.get(f"{control}/c/report", timeout=aiohttp.ClientTimeout(total=120)) as r:
        sandbox: JSON = await r.json()
    events = check_events(db, traffic, sandbox)
    sends = check_sends(db, traffic, sandbox)
    lives = [memory_of(life, args.warmup, traffic_end) for life in daemon.lives]
    failures = [name for name, bad in (
        ("events lost", events["lost"]), ("events unprocessed", events["unprocessed"]),
        ("events without exactly one done job", events["not_exactly_one_done_job"]),
        ("unexplained events", events["unexplained"]),
        ("duplicate sends (key)", sends["duplicate_keys"]),
        ("duplicate sends (decision)", sends["duplicate_in_decision"]),
        ("unexplained sends", sends["unexplained_effects"]),
        ("recorded sends not at the sandbox", sends["recorded_sent_not_at_sandbox"]),
        ("sends never sent nor refused", sends["stuck"]),
        ("daemon exit code after SIGTERM", code != 0),
        ("database integrity", events["integrity"] != "ok"),
    ) if bad]
    return {
        "seed": args.seed, "minutes": args.minutes, "rate": args.rate, "users": args.users,
        "load_average": {"start": load_start, "end": load_end}, "cpus": os.cpu_count(),
        "traffic": {
            "seconds": round(traffic_s, 1), "flush_s": round(flushed_s, 1),
            "actions": dict(traffic.actions), "posts": traffic.posts,
            "acked_posts": traffic.acked_posts, "retries": traffic.retries,
            "gave_up": traffic.gave_up, "answers": dict(traffic.statuses),
            "posts_per_s": round(traffic.posts / traffic_s, 1),
            "acked_per_s": round(traffic.acked_posts / traffic_s, 1),
            "events_per_s": round(events["stored"] / traffic_s, 1),
            "sends_per_s": round(sends["effects"] / traffic_s, 1),
        },
        "faults": dict(faults), "sandbox_requests": sandbox["requests"],
        "kills": kills, "drain": drained, "exit_code_after_sigterm": code,
        "events": events, "sends": sends, "incarnations": lives,
        "daemon_log": log_counts(daemon.log_path), "tmp": str(tmp),
        "failures": failures,
    }


# ================================================================ output
def render(r: JSON) -> str:
    t, ev, se = r["traffic"], r["events"], r["sends"]
    la = " / ".join(", ".join(f"{x:.1f}" for x in r["load_average"][k]) for k in ("start", "end"))
    lines = [
        f"soak: seed {r['seed']}, {r['minutes']:g} min at {r['rate']:g} webhooks/s, "
        f"{r['users']} users, {len(r['kills'])} kills; load average at the start / end of "
        f"the traffic {la} on {r['cpus']} CPUs",
        f"traffic: {t['seconds']} s (+{t['flush_s']} s of retries), {t['posts']} POSTs, "
        f"{t['acked_posts']} answered 200 ({t['acked_per_s']}/s), {t['retries']} retries, "
        f"{t['gave_up']} given up",
        "  actions: " + ", ".join(f"{k} {v}" for k, v in sorted(t["actions"].items())),
        "  answers: " + ", ".join(f"{k} {v}" for k, v in sorted(t["answers"].items())),
        "faults: " + ", ".join(f"{k} {v}" for k, v in sorted(r["faults"].items())),
        f"  sandbox requests: {r['sandbox_requests']}",
        "kills: " + ("; ".join(
            f"at {k['at_s']} s ({k['posts_in_flight']} POSTs, {k['sends_in_flight']} sends in "
            f"flight, {k['jobs_running']} jobs running), down {k['down_s']} s, restart "
            f"{k['restart_s']} s" for k in r["kills"]) or "none"),
        f"drain: {r['drain']}; exit code after SIGTERM: {r['exit_code_after_sigterm']}",
        f"events: {ev['stored']} stored ({t['events_per_s']}/s), {ev['acked_keys']} acknowledged "
        f"({ev['acked_by_sandbox_echoes']} via sandbox echoes); LOST {ev['lost']}; "
        f"unprocessed {ev['unprocessed']}; not exactly one done job "
        f"{ev['not_exactly_one_done_job']} (echoes of recorded messages stored processed, "
        f"no job: {ev.get('processed_at_ingest', 0)}); dead jobs {ev['dead_jobs'] or 0}",
        f"  recovered by catch-up {ev['recovered_by_catchup']}; posted never acknowledged "
        f"{ev['posted_never_acked']} (stored anyway {ev['posted_never_acked_but_stored']}); "
        f"echoes the sandbox gave up on {ev['echoes_undelivered']}; unexplained {ev['unexplained']}"
        f"; integrity {ev['integrity']}",
        f"  catch-up runs: {ev['catchup_runs']}",
        "  by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(ev["by_kind"].items())),
        f"  processing lag (stored -> processed), s: {ev['processing_lag_s']}",
        f"sends: {se['effects']} took effect at the sandbox ({t['sends_per_s']}/s: "
        + ", ".join(f"{k} {v}" for k, v in sorted(se["effects_by_kind"].items())) + f"); "
        f"{se['rows']} send rows " + str(se["rows_by_state"]),
        f"  DUPLICATES: per key {se['duplicate_keys']}, per decision "
        f"{se['duplicate_in_decision']}; unexplained effects {se['unexplained_effects']}; "
        f"recorded sent but not at the sandbox {se['recorded_sent_not_at_sandbox']}; "
        f"STUCK (never sent nor refused) {se['stuck']}",
        f"  orphan effects {se['orphan_effects']} (delivered, daemon did not record the id: "
        f"{se['delivered_not_recorded']}); not sent: {se['not_sent_reasons'] or 'none'}",
        f"  latency (first POST of the inbound event -> effect), s: first reply "
        f"{se['first_reply_latency_s']}, every send {se['latency_s']}",
        "  first reply by minute of the inbound event (minute: n, p50, p99 s): " + "; ".join(
            f"{m}: {n}, {p50:.3f}, {p99:.3f}" for m, n, p50, p99 in se["first_reply_by_minute"]),
        f"daemon log: {r['daemon_log']}",
        "incarnations (RSS/anon MiB, fds: median of the first vs the last 10 % of the traffic "
        "after warm-up):",
    ]
    for life in r["incarnations"]:
        head = (f"  #{life['n']} pid {life['pid']}: {life['end']}, startup {life['startup_s']} s, "
                f"lived {life['lifetime_s']} s, judged {life['judged_s']} s")
        if "rss_mib" in life:
            head += (f"; RSS {life['rss_mib'][0]} -> {life['rss_mib'][1]} (max "
                     f"{life['rss_max_mib']}, slope {life['rss_slope_mib_per_min']}/min), anon "
                     f"{life['anon_mib'][0]} -> {life['anon_mib'][1]}, non-socket fds "
                     f"{life['fds'][0]:g} -> {life['fds'][1]:g} (max {life['fds_max']}), sockets "
                     f"{life['sockets'][0]:g} -> {life['sockets'][1]:g} (max "
                     f"{life['sockets_max']}), threads {life['threads']}, CPU "
                     f"{life['cpu_pct']} %, "
                     f"RSS at exit {life.get('rss_at_exit_mib')}; "
                     f"memory {life['memory']}, fds {life['fds_verdict']}")
        lines.append(head + f" => {life['verdict']}")
    for name, key in (("lost", "lost_examples"), ("unprocessed", "unprocessed_examples"),
                      ("bad jobs", "bad_job_examples"), ("unexplained", "unexplained_examples")):
        if ev[key]:
            lines.append(f"  e.g. {name}: {ev[key]}")
    for name, key in (("duplicate keys", "duplicate_key_examples"),
                      ("in decision", "duplicate_in_decision_examples"),
                      ("unexplained sends", "unexplained_examples"),
                      ("phantom", "phantom_examples"), ("stuck", "stuck_examples"),
                      ("not recorded", "delivered_not_recorded_keys")):
        if se[key]:
            lines.append(f"  e.g. {name}: {se[key]}")
    lines.append("RESULT: " + ("FAIL: " + ", ".join(r["failures"]) if r["failures"] else
                               "OK: no event lost, every event processed once, no duplicate send"))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="traffic duration (10)")
    p.add_argument("--seed", type=int, default=20250221, help="seed of every random choice")
    p.add_argument("--kills", type=int, default=3, help="kill -9 restarts of the daemon (3)")
    p.add_argument("--rate", type=float, default=50.0, help="webhooks per second (50)")
    p.add_argument("--users", type=int, default=300, help="distinct Instagram users (300)")
    p.add_argument("--warmup", type=float, default=30.0,
                   help="seconds of each daemon's life not judged for memory (30)")
    p.add_argument("--catchup-wait", type=float, default=120.0,
                   help="seconds the drain waits for catch-up backfills (120)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--_sandbox", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.users < 4 or args.kills < 0:
        p.error("--minutes and --rate must be positive, --users at least 4, --kills >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._sandbox is not None:
        asyncio.run(sandbox_main(json.loads(args._sandbox)))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="instaset-soak-"))
    try:
        report = asyncio.run(soak(args, tmp))
    except HarnessError as exc:
        print(f"soak: the harness could not run: {exc}\n(files kept in {tmp})", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
    else:
        print(render(report))
    failed = bool(report["failures"])
    if args.keep or failed:
        print(f"files kept in {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
