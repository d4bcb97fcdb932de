"""An end-to-end harness for the sending side: the real daemon against the built-in sandbox.

:func:`open_harness` starts, on 127.0.0.1 and for one professional account:

- a :class:`~instaset.sandbox.Sandbox` (Meta) on a shared :class:`Clock`;
- a :class:`~instaset.daemon.Runtime` over a fresh SQLite file whose Graph URL is the
  sandbox's, with the sandbox's token and the account upserted as connected;
- the daemon's webhook app served by a real ``web.AppRunner``, with ``sandbox.webhook_url``
  pointed at it (so echoes and simulated users arrive signed, like Meta's);
- the ingest writer started. The worker is NOT running: tests drive it with
  :meth:`Harness.settle` (bursts) or start ``rt.worker.run(stop)`` themselves.

Two deliberate departures from ``run_daemon``, both about test control, not behaviour:

- the deliverer's rate budgets run on the harness clock (``runtime()`` builds them on
  ``time.monotonic``, which a test cannot move; a throttling block of 60 s could then only
  be waited out in real time);
- ``graph_timeout`` swaps in a :class:`~instaset.graph.GraphClient` with a short timeout on
  its own session, to provoke unknown outcomes quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from instaset.accounts import WEBHOOK_FIELDS
from instaset.config import Config
from instaset.daemon import Runtime, runtime
from instaset.graph import GraphClient
from instaset.outbox import Outgoing, enqueue_sends
from instaset.ratelimit import budgets_from_config
from instaset.rules import SendKind
from instaset.sandbox import Recorded, Sandbox, build_echo_payload
from instaset.sandbox.wire import new_mid
from instaset.store import history
from instaset.store import jobs as jobstore
from instaset.tokens import StaticTokens
from instaset.webhook import make_app

SECRET = "sending-harness-app-secret"
ACCT = "17841400000000001"
USERNAME = "harness_creator"


class Clock:
    """The one clock the daemon and the sandbox share.

    Ticking (default): real time plus an offset, so webhooks, leases and rate budgets behave
    as in production while :meth:`advance` can still jump ahead (24 h windows, 7-day
    limits). Frozen: stands still until advanced, for exact assertions on scheduled times.
    """

    def __init__(self, start: float | None = None, *, frozen: bool = False) -> None:
        now = time.time()
        self.frozen = frozen
        self._t = now if start is None else start
        self._offset = self._t - now

    def __call__(self) -> float:
        return self._t if self.frozen else time.time() + self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        if self.frozen:
            self._t += seconds
        else:
            self._offset += seconds


def make_config(
    db_path: Path,
    *,
    workflows: Sequence[Mapping[str, Any]] = (),
    rate_limits: Mapping[str, Any] | None = None,
    pause_for: str = "12h",
    worker: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    synchronous: str = "NORMAL",
) -> Config:
    """A config for one harness: its own database, fast polling, the given workflows, and
    ``extra`` top-level sections (e.g. ``booking``). ``synchronous="FULL"`` (the daemon's
    default) for a test of what waits on the commits' fsync (``Database.barrier``)."""
    return Config.model_validate(
        {
            **(extra or {}),
            "instagram": {"app_secret": SECRET},
            # NORMAL: the harness's databases are throwaway; fsync per commit only slows
            # the burst tests down without testing anything.
            "storage": {"path": str(db_path), "synchronous": synchronous},
            "worker": {"poll_interval": 0.02, "backoff_base": 2.0, **(worker or {})},
            "rate_limits": dict(rate_limits or {}),
            "handoff": {"pause_for": pause_for},
            "workflows": list(workflows),
        }
    )


@dataclass
class Harness:
    """A running sandbox + daemon pair. See the module docstring."""

    sandbox: Sandbox
    rt: Runtime
    clock: Clock
    config: Config
    account_id: str = ACCT
    echo_timeout: float = 10.0
    _keys: list[str] = field(default_factory=list)

    # -- driving -------------------------------------------------------------------------

    async def settle(self, *, advance_up_to: float = 0.0, max_rounds: int = 500) -> int:
        """Run the worker in bursts, and wait (bounded) for the sandbox's webhook deliveries
        (echoes), until no job is due and no delivery is pending. A job scheduled at most
        ``advance_up_to`` seconds ahead is made due by advancing the clock; later ones are
        left alone. Returns how many jobs ran."""
        total = 0
        for _ in range(max_rounds):
            ran = await self.rt.worker.run_burst()
            total += ran
            before = len(self.sandbox.deliveries) + len(self.sandbox.undelivered)
            await asyncio.wait_for(self.sandbox.drain(), timeout=self.echo_timeout)
            if ran or len(self.sandbox.deliveries) + len(self.sandbox.undelivered) != before:
                continue
            due = await jobstore.next_due_at(self.rt.db)
            if due is None:
                return total
            wait = due - self.clock()
            if wait <= 0:
                continue
            if wait > advance_up_to:
                return total
            self.clock.advance(wait)
        raise AssertionError(f"the daemon did not settle within {max_rounds} rounds")

    async def dm(self, igsid: str, text: str) -> dict[str, object]:
        """The user ``igsid`` DMs the account (stored at the sandbox, webhook delivered)."""
        payload = await self.sandbox.user_sends_dm(igsid, text)
        assert self.sandbox.deliveries[-1] == (payload, 200)
        return payload

    async def post(self, payload: dict[str, object]) -> int:
        """POST ``payload`` to the daemon's webhook, signed with the app secret like Meta."""
        return await self.sandbox.deliver(payload)

    async def creator_types(self, igsid: str, text: str) -> dict[str, object]:
        """The creator answers ``igsid`` in the Instagram app: Meta sends an ``is_echo`` of a
        message instaset never sent."""
        mid = new_mid(self.account_id)
        payload = build_echo_payload(
            self.account_id, igsid, {"text": text}, mid, int(self.clock() * 1000)
        )
        assert await self.post(payload) == 200
        return payload

    async def enqueue(self, *outs: Outgoing) -> list[str]:
        """Persist ``outs`` as one ordered chain, as the automation does."""
        async with self.rt.db.tx() as conn:
            return await enqueue_sends(conn, outs, self.clock())

    def text(self, key: str, igsid: str, text: str, **kw: Any) -> Outgoing:
        return Outgoing(key=key, kind=SendKind.TEXT, account_id=self.account_id,
                        contact_id=igsid, text=text, **kw)

    # -- looking -------------------------------------------------------------------------

    def graph_sends(self, igsid: str | None = None) -> list[Recorded]:
        """Send API requests that carried a message (DMs and private replies), refused ones
        included, optionally only those to ``igsid``."""
        return [
            r for r in self.sandbox.send_attempts()
            if igsid is None or _recipient(r).get("id") == igsid
        ]

    def graph_posts(self) -> list[Recorded]:
        """Every POST the daemon made to the sandbox, in arrival order."""
        return [r for r in self.sandbox.transcript if r.method == "POST"]

    async def send_row(self, key: str) -> sqlite3.Row:
        row = await self.rt.db.fetchone("SELECT * FROM sends WHERE key = ?", (key,))
        assert row is not None, f"no sends row {key}"
        return row

    async def job_row(self, key: str) -> sqlite3.Row:
        row = await self.rt.db.fetchone("SELECT * FROM jobs WHERE key = ?", (key,))
        assert row is not None, f"no job {key}"
        return row

    async def conversation(self, igsid: str) -> sqlite3.Row:
        row = await self.rt.db.fetchone(
            "SELECT * FROM conversations WHERE account_id = ? AND contact_id = ?",
            (self.account_id, igsid),
        )
        assert row is not None, f"no conversation with {igsid}"
        return row

    async def messages(self, igsid: str, direction: str | None = None) -> list[sqlite3.Row]:
        rows = await history.thread(self.rt.db, self.account_id, igsid)
        return [r for r in rows if direction is None or r["direction"] == direction]

    async def echo_events(self, igsid: str) -> list[sqlite3.Row]:
        return await self.rt.db.fetchall(
            "SELECT * FROM events WHERE kind = 'echo' AND contact_id = ? ORDER BY id", (igsid,)
        )

    async def account_state(self) -> str:
        row = await history.get_account(self.rt.db, self.account_id)
        assert row is not None
        return str(row["state"])


def _recipient(r: Recorded) -> dict[str, object]:
    rec = r.json.get("recipient")
    return dict(rec) if isinstance(rec, Mapping) else {}


@contextlib.asynccontextmanager
async def open_harness(
    tmp_path: Path,
    *,
    workflows: Sequence[Mapping[str, Any]] = (),
    clock: Clock | None = None,
    rate_limits: Mapping[str, Any] | None = None,
    pause_for: str = "12h",
    worker: Mapping[str, Any] | None = None,
    graph_timeout: float | None = None,
    name: str = "harness",
    extra: Mapping[str, Any] | None = None,
    synchronous: str = "NORMAL",
) -> AsyncIterator[Harness]:
    """Start a sandbox and a daemon wired to each other; tear both down on exit."""
    clk = clock if clock is not None else Clock()
    config = make_config(tmp_path / f"{name}.db", workflows=workflows,
                         rate_limits=rate_limits, pause_for=pause_for, worker=worker,
                         extra=extra, synchronous=synchronous)
    sandbox = Sandbox(app_secret=SECRET, account_id=ACCT, username=USERNAME, clock=clk)
    async with contextlib.AsyncExitStack() as stack:
        graph_url = await sandbox.start("127.0.0.1")
        stack.push_async_callback(sandbox.stop)
        rt = await stack.enter_async_context(
            runtime(config, secrets=[SECRET.encode()], clock=clk, graph_url=graph_url,
                    tokens=StaticTokens({ACCT: sandbox.token}), account_id=ACCT)
        )
        rl = config.rate_limits
        budgets = budgets_from_config(
            rl.text_per_second, rl.media_per_second, rl.private_replies_per_hour, clock=clk,
            live_private_replies_per_second=rl.live_private_replies_per_second)
        rt.budgets = rt.deliverer.budgets = budgets
        if graph_timeout is not None:
            session = aiohttp.ClientSession()
            stack.push_async_callback(session.close)
            rt.deliverer.graph = GraphClient(
                session, graph_url=graph_url, api_version=config.instagram.api_version,
                api_url=graph_url, timeout=graph_timeout,
            )
        # Subscribed as `instaset connect` leaves an account (through the sandbox's API):
        # the sandbox, like Meta, sends no webhook for an account that is not.
        await rt.graph.subscribe(ACCT, WEBHOOK_FIELDS, token=sandbox.token)
        sandbox.transcript.clear()  # tests look at what the daemon does once connected
        await history.upsert_account(rt.db, ACCT, username=USERNAME, now=clk(), sandbox=True,
                                     subscribed_fields=WEBHOOK_FIELDS)
        runner = web.AppRunner(make_app(rt.web), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        sandbox.webhook_url = f"http://127.0.0.1:{port}/webhook"
        rt.writer.start()
        stack.push_async_callback(rt.writer.stop)
        # Stopping is idempotent; pushed again so that it runs first on exit: it cancels the
        # pending webhook deliveries and releases handlers hanging in a drop_after_send fault.
        stack.push_async_callback(sandbox.stop)
        yield Harness(sandbox, rt, clk, config)


# Shared by tests/test_sending.py and tests/test_sending_settle.py.
IGSID = "1129842642640637"
OTHER = "2229842642640638"
HOUR = 3600.0
GUIDE_TEXT = "Here is the free guide: https://example.com/guide"
GUIDE = {"name": "guide", "trigger": {"dm": {"keywords": ["guide"]}},
         "actions": [{"reply": GUIDE_TEXT}]}
COMMENT_REPLY = "Sent you the guide in DMs!"
COMMENT_GUIDE = {"name": "comment-guide", "trigger": {"comment": {"keywords": ["guide"]}},
                 "actions": [{"private_reply": COMMENT_REPLY}]}

MakeHarness = Callable[..., Awaitable[Harness]]


def body_of(h: Harness, igsid: str) -> list[dict[str, object]]:
    return [r.json for r in h.graph_sends(igsid)]
