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
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from instaset.sandbox.model import Undelivered
from instaset.sandbox.wire import KNOWN_FIELDS, signed_delivery

log = logging.getLogger("instaset.sandbox")

NOT_SUBSCRIBED = "the account is not subscribed (POST /{ig-id}/subscribed_apps)"


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
    _tasks: set[asyncio.Task[None]]
    _session: aiohttp.ClientSession | None

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

    # -- delivery ------------------------------------------------------------------------

    def build_signed(self, payload: object) -> tuple[bytes, dict[str, str]]:
        """Raw body and headers of a delivery signed with ``app_secret``."""
        return signed_delivery(payload, self.app_secret)

    async def deliver(self, payload: dict[str, object]) -> int:
        """POST ``payload`` signed to ``webhook_url``; returns the HTTP status. Raises
        ``ConnectionError`` when the webhook cannot be reached. Subscriptions are not looked
        at (see the module docstring)."""
        if not self.webhook_url:
            raise ValueError("the sandbox has no webhook_url to deliver to")
        raw, headers = self.build_signed(payload)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                self.webhook_url, data=raw, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
            ) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectionError(
                f"cannot deliver webhook to {self.webhook_url}: {type(exc).__name__}"
            ) from None
        self.deliveries.append((payload, status))
        return status

    async def _deliver_event(self, field: str, payload: dict[str, object]) -> None:
        """A user's event of ``field``: POSTed now when the account gets it, else withheld."""
        if self.delivers(field):
            await self.deliver(payload)
        else:
            self.withheld.append(Undelivered(payload, f"{field}: {NOT_SUBSCRIBED}"))

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
        task = asyncio.get_running_loop().create_task(self._deliver_later(payload, wait))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver_later(self, payload: dict[str, object], delay: float) -> None:
        await asyncio.sleep(delay)
        reason = "not attempted"
        for attempt in range(max(1, self.delivery_attempts)):
            if attempt:
                await asyncio.sleep(self.retry_delay * 2 ** (attempt - 1))
            try:
                status = await self.deliver(payload)
            except (ConnectionError, ValueError) as exc:
                reason = str(exc)
                continue
            if 200 <= status < 300:
                return
            reason = f"HTTP {status}"
        log.warning("sandbox gave up delivering a webhook: %s", reason)
        self.undelivered.append(Undelivered(payload, reason))
