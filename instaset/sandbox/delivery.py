"""How the sandbox delivers webhooks, and whether it delivers them at all.

Meta sends an account's events only when the account is subscribed (``POST
/{ig-id}/subscribed_apps``, reference §2.4: "You must also subscribe…") and only for fields
the app itself is subscribed to in the App Dashboard (Webhooks › Instagram object). Which
fields the *account* named does not narrow it: "Account level webhooks customization is not
supported: an account subscribed to any field delivers every field the app is subscribed to"
(reference §2.3). So an event of ``field`` goes out when the account's subscription is not
empty and ``field`` is in :attr:`DeliveryMixin.app_fields`; otherwise it is kept in
``withheld`` and nothing is POSTed.

:meth:`DeliveryMixin.deliver` is the raw POST (a hand-built payload, like the App Dashboard's
Test button) and does not look at subscriptions; the user simulation and the echoes go
through :meth:`DeliveryMixin.delivers`.

How they are delivered follows :attr:`DeliveryMixin.delivery` (a
:class:`~instaset.sandbox.model.DeliveryPolicy`): by default a user event is POSTed at once
(the first attempt inside ``user_sends_dm`` and the like) and, when that fails, retried in
the background like Meta retries; an echo is POSTed ``echo_delay`` s after the send. The
policy can also batch events into one POST, deliver some twice and shuffle them (reference
§2.3: "batching cannot be guaranteed", "Your server should handle deduplication";
performance §1: no ordering guarantee). Every background delivery is a task that
:meth:`~instaset.sandbox.Sandbox.drain` waits for.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import aiohttp

from instaset.sandbox.model import DeliveryPolicy, Undelivered
from instaset.sandbox.wire import KNOWN_FIELDS, signed_delivery

log = logging.getLogger("instaset.sandbox")

NOT_SUBSCRIBED = "the account is not subscribed (POST /{ig-id}/subscribed_apps)"
STOPPED = "the sandbox stopped before the webhook was delivered"
LOST_ANSWER = "the answer was lost (as when Meta's timeout fires before it arrives)"
_ITEM_KEYS = ("messaging", "changes", "standby")


def batch_body(
    payloads: Sequence[Mapping[str, object]], rng: random.Random, *, reorder: bool
) -> dict[str, object]:
    """One delivery holding every update of ``payloads``, as Meta aggregates them: the items
    (``messaging``/``changes``/``standby``) in order, or shuffled with ``reorder``; an item
    joins the previous ``entry`` when that is the same account's and the same kind, by a coin
    of ``rng`` (so both several ``entry[]`` and several items per entry occur)."""
    items: list[tuple[object, object, str, object]] = []
    for payload in payloads:
        entries = payload.get("entry")
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, Mapping):
                continue
            for key in _ITEM_KEYS:
                found = entry.get(key)
                for item in found if isinstance(found, list) else []:
                    items.append((entry.get("id"), entry.get("time"), key, item))
    if reorder:
        rng.shuffle(items)
    out: list[dict[str, Any]] = []
    for account, at, key, item in items:
        last = out[-1] if out else None
        if last is not None and last["id"] == account and key in last and rng.random() < 0.5:
            last[key].append(item)
            if isinstance(at, int) and isinstance(last["time"], int):
                last["time"] = max(last["time"], at)
            continue
        out.append({"id": account, "time": at, key: [item]})
    return {"object": "instagram", "entry": out}


class DeliveryMixin:
    """Webhook delivery for :class:`~instaset.sandbox.server.Sandbox` (which sets these)."""

    app_secret: str
    webhook_url: str | None
    subscribed: list[str]
    app_fields: frozenset[str]
    echo_delay: float
    delivery_attempts: int
    retry_delay: float
    deliveries: list[tuple[dict[str, object], int]]
    undelivered: list[Undelivered]
    withheld: list[Undelivered]
    _tasks: set[asyncio.Task[Any]]
    _session: aiohttp.ClientSession | None
    _policy: DeliveryPolicy
    _policy_rng: random.Random  # the user events' duplicates
    _echo_rng: random.Random  # the echoes'
    _batch_rng: random.Random  # batch_body's coins and shuffles
    _lost_left: int
    _event_no: int
    _echo_no: int
    _pending: list[dict[str, object]]
    _again: list[dict[str, object]]
    _flush: asyncio.Task[None] | None
    _closing: asyncio.Event

    # -- subscriptions -------------------------------------------------------------------

    def subscribe(self, fields: tuple[str, ...] | list[str]) -> None:
        """Subscribe the account as ``POST /{ig-id}/subscribed_apps?subscribed_fields=...``
        does (same field-name check), for tests that drive no daemon. Raises ``ValueError``
        for a field Meta would refuse."""
        bad = [f for f in fields if f not in KNOWN_FIELDS]
        if bad or not fields:
            raise ValueError(f"field {bad[0] if bad else '(none)'} is not available")
        self.subscribed[:] = list(dict.fromkeys(fields))

    def drop_subscription(self) -> None:
        """What ``DELETE /{ig-id}/subscribed_apps`` does: no more webhooks for the account."""
        self.subscribed.clear()

    def delivers(self, field: str) -> bool:
        """Whether Meta would send this account's events of webhook ``field`` now."""
        return bool(self.subscribed) and field in self.app_fields

    # -- the policy ----------------------------------------------------------------------

    @property
    def delivery(self) -> DeliveryPolicy:
        """How webhooks are delivered (see the module docstring). Setting it starts its
        seeded choices and its count of lost answers afresh; a batch being gathered is
        still delivered, under the policy it was gathered by."""
        return self._policy

    @delivery.setter
    def delivery(self, policy: DeliveryPolicy) -> None:
        self._policy = policy
        # One stream of choices per kind: echoes come whenever the daemon sends, and must
        # not shift which user events the same seed duplicates.
        self._policy_rng = random.Random(policy.seed)
        self._echo_rng = random.Random(f"echoes-{policy.seed}")
        self._batch_rng = random.Random(f"batches-{policy.seed}")
        self._lost_left = policy.lose_answers
        self._event_no = self._echo_no = 0
        self._pending, self._again, self._flush = [], [], None

    # -- delivery ------------------------------------------------------------------------

    def build_signed(self, payload: object) -> tuple[bytes, dict[str, str]]:
        """Raw body and headers of a delivery signed with ``app_secret``."""
        return signed_delivery(payload, self.app_secret)

    async def deliver(self, payload: dict[str, object]) -> int:
        """POST ``payload`` signed to ``webhook_url``; returns the HTTP status. Raises
        ``ConnectionError`` when the webhook cannot be reached or does not answer within the
        policy's ``timeout``, and when the sandbox is stopping (no session is opened then:
        nothing would close it). Subscriptions are not looked at (see the module docstring)."""
        if not self.webhook_url:
            raise ValueError("the sandbox has no webhook_url to deliver to")
        raw, headers = self.build_signed(payload)
        if self._closing.is_set():
            raise ConnectionError(f"cannot deliver webhook to {self.webhook_url}: {STOPPED}")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=self._policy.timeout)
        try:
            async with self._session.post(
                self.webhook_url, data=raw, headers=headers, timeout=timeout
            ) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
            # RuntimeError: "Session is closed", when stop() closed it under this POST.
            raise ConnectionError(
                f"cannot deliver webhook to {self.webhook_url}: {type(exc).__name__}"
            ) from None
        self.deliveries.append((payload, status))
        return status

    async def _deliver_event(self, field: str, payload: dict[str, object]) -> None:
        """A user's event of ``field``: delivered by the policy when the account gets it,
        else withheld. Unbatched, the first attempt is made before this returns; retries and
        a duplicate follow in the background."""
        if not self.delivers(field):
            self.withheld.append(Undelivered(payload, f"{field}: {NOT_SUBSCRIBED}"))
            return
        if not self.webhook_url:
            raise ValueError("the sandbox has no webhook_url to deliver to")
        if self._policy.batch_window > 0:
            self._batched(payload)
            return
        await self._first_post(payload)

    async def deliver_event(self, payload: dict[str, object], *, wait: float | None = None
                            ) -> int:
        """Deliver a user event built with ``deliver=False`` as ``user_sends_dm`` would (for
        the daemon's ``/sandbox/*`` routes): returns the status the webhook answered the
        first POST with; a failed POST is retried and a duplicate sent in the background,
        and an event given up is in ``undelivered``. Subscriptions are the caller's to
        check (:meth:`delivers`).

        ``wait``: return after at most that many seconds; the POST is not cut short (the
        policy's ``timeout`` is Meta's) and goes on in the background. Raises
        ``ConnectionError`` when the first POST got no answer (or none within ``wait``),
        ``ValueError`` without ``webhook_url`` or under a batching policy (a batch has no
        status of its own event)."""
        if not self.webhook_url:
            raise ValueError("the sandbox has no webhook_url to deliver to")
        if self._policy.batch_window > 0:
            raise ValueError("a batched event has no status of its own (batch_window > 0)")
        task = asyncio.get_running_loop().create_task(self._first_post(payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            status, failed = await asyncio.wait_for(asyncio.shield(task), wait)
        except TimeoutError:
            raise ConnectionError(
                f"the webhook at {self.webhook_url} has not answered within {wait:g} s; the "
                f"sandbox waits up to {self._policy.timeout:g} s, as Meta does, and retries "
                "it if it fails") from None
        if status is None:
            raise ConnectionError(failed)
        return status

    async def _first_post(self, payload: dict[str, object]) -> tuple[int | None, str | None]:
        """The first POST of an unbatched user event, its retries and duplicate spawned;
        returns its status (None when there was no answer) and why it failed (None when
        it did not)."""
        policy = self._policy
        again = self._duplicated()
        try:
            status, failed = await self._try(payload)
        except asyncio.CancelledError:  # stop() cancelled deliver_event's task
            if self._closing.is_set():
                self.undelivered.append(Undelivered(payload, STOPPED))
            raise
        if self._closing.is_set():
            # stop() cut it (or came right after): nothing is spawned that it would not see.
            if failed is not None:
                self.undelivered.append(Undelivered(payload, failed))
            return status, failed
        if failed is not None:
            self._spawn(self._attempts(payload, 1 + policy.retries, policy.retry_delay,
                                       start=1, reason=failed))
        if again:
            self._spawn(self._attempts(payload, 1 + policy.retries, policy.retry_delay))
        return status, failed

    def _emit(self, field: str, payload: dict[str, object], *, delay: float | None = None
              ) -> asyncio.Task[None] | None:
        """Deliver an event of ``field`` in the background after ``delay`` (default
        ``echo_delay``), retrying a few times; returns the task (None when nothing is sent)."""
        if not self.webhook_url:
            return None
        if not self.delivers(field):
            self.withheld.append(Undelivered(payload, f"{field}: {NOT_SUBSCRIBED}"))
            return None
        wait = self.echo_delay if delay is None else delay
        return self._spawn(self._deliver_later(payload, wait))

    async def _deliver_later(self, payload: dict[str, object], delay: float) -> None:
        await asyncio.sleep(delay)
        if self._policy.batch_window > 0:
            await asyncio.wait({self._batched(payload, echo=True)})
            return
        again = self._duplicated(echo=True)
        for _copy in range(2 if again else 1):
            await self._attempts(payload, self.delivery_attempts,
                                 lambda n: self.retry_delay * 2 ** (n - 1))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _duplicated(self, *, echo: bool = False) -> bool:
        """Whether the policy delivers this event (the next user event or echo counted, each
        kind on its own count and seeded RNG) twice."""
        if echo:
            self._echo_no += 1
            number, rng = self._echo_no, self._echo_rng
        else:
            self._event_no += 1
            number, rng = self._event_no, self._policy_rng
        policy = self._policy
        if policy.duplicate_every > 0 and number % policy.duplicate_every == 0:
            return True
        return policy.duplicate_rate > 0 and rng.random() < policy.duplicate_rate

    async def _attempt(self, payload: dict[str, object]) -> str | None:
        """One POST; None when it succeeded, else why it failed."""
        return (await self._try(payload))[1]

    async def _try(self, payload: dict[str, object]) -> tuple[int | None, str | None]:
        """One POST: the status answered (None when none came), and why it failed (None
        when it succeeded)."""
        try:
            status = await self.deliver(payload)
        except (ConnectionError, ValueError) as exc:
            return None, str(exc)
        if not 200 <= status < 300:
            return status, f"HTTP {status}"
        if self._lost_left > 0:
            self._lost_left -= 1
            return status, LOST_ANSWER
        return status, None

    async def _attempts(
        self, payload: dict[str, object], tries: int, wait: Callable[[int], float], *,
        start: int = 0, reason: str = "not attempted",
    ) -> None:
        """Attempts ``start`` to ``tries - 1`` (attempt n > 0 after ``wait(n)`` s) until one
        succeeds; else the payload is recorded in ``undelivered`` (also when stop() cancels
        it: the webhook was not delivered)."""
        try:
            for attempt in range(start, max(1, tries)):
                if attempt:
                    await asyncio.sleep(wait(attempt))
                failed = await self._attempt(payload)
                if failed is None:
                    return
                reason = failed
        except asyncio.CancelledError:
            if self._closing.is_set():
                self.undelivered.append(Undelivered(payload, STOPPED))
            raise
        log.warning("sandbox gave up delivering a webhook: %s", reason)
        self.undelivered.append(Undelivered(payload, reason))

    # -- batching ------------------------------------------------------------------------

    def _batched(self, payload: dict[str, object], *, counted: bool = True,
                 echo: bool = False) -> asyncio.Task[None]:
        """Add ``payload`` to the batch being gathered; returns the task that delivers it.
        A batch belongs to the policy it was started under: setting :attr:`delivery` while
        it is gathered starts the next one afresh, and the old one is still delivered."""
        if self._flush is None or self._flush.done():
            self._pending, self._again = [], []
            self._flush = self._spawn(self._flush_after(
                self._policy, self._batch_rng, self._pending, self._again))
        self._pending.append(payload)
        if counted and self._duplicated(echo=echo):
            self._again.append(payload)  # delivered again in the batch after this one
        return self._flush

    async def _flush_after(
        self, policy: DeliveryPolicy, rng: random.Random,
        pending: list[dict[str, object]], again: list[dict[str, object]],
    ) -> None:
        try:
            await asyncio.sleep(policy.batch_window)
        except asyncio.CancelledError:
            if self._closing.is_set():  # stop() cut the batch: none of it was delivered
                self.undelivered.extend(Undelivered(p, STOPPED) for p in pending)
            raise
        if self._pending is pending:
            self._flush = None  # what comes from now on is the next batch
            self._pending, self._again = [], []
        await self._post_batch(pending, policy, rng)
        if not again:
            return
        if policy is self._policy:
            for payload in again:
                self._batched(payload, counted=False)
        else:  # the policy was replaced meanwhile: its duplicates go out under it, alone
            await self._post_batch(again, policy, rng)

    async def _post_batch(self, pending: list[dict[str, object]], policy: DeliveryPolicy,
                          rng: random.Random) -> None:
        size = max(1, policy.batch_max)
        for i in range(0, len(pending), size):
            body = batch_body(pending[i : i + size], rng, reorder=policy.reorder)
            await self._attempts(body, 1 + policy.retries, policy.retry_delay)
