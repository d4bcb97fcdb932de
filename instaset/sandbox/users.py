"""The sandbox's simulated Instagram users: who the account knows, and what a user does (a DM,
an ig.me link, a postback tap, a comment), each stored like Meta stores it, opening the 24 h
messaging window where Meta opens it, and delivered as Meta's webhook
(:mod:`instaset.sandbox.delivery`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from instaset.sandbox.model import Comment, Conversation, StoredMessage
from instaset.sandbox.views import as_list
from instaset.sandbox.wire import (
    build_comment_payload,
    build_dm_payload,
    build_postback_payload,
    build_referral_payload,
    new_mid,
)


class UsersMixin:
    """User simulation for :class:`~instaset.sandbox.server.Sandbox` (which sets these)."""

    account_id: str
    clock: Callable[[], float]
    users: dict[str, str]
    _last_inbound: dict[str, float]

    if TYPE_CHECKING:  # provided by the Sandbox and by DeliveryMixin

        def _store(self, igsid: str, msg: StoredMessage) -> Conversation: ...

        def _new_comment(
            self, igsid: str, username: str, text: str, media_id: str, parent_id: str | None
        ) -> Comment: ...

        async def _deliver_event(self, field: str, payload: dict[str, object]) -> None: ...

    def add_user(self, igsid: str, username: str) -> None:
        self.users[igsid] = username

    def know_user(self, igsid: str, username: str | None, last_inbound_at: float | None) -> None:
        """A user this account already talked to before the sandbox started (``serve
        --sandbox`` again on the same data): Meta knows them, and their messaging window runs
        from their last message (``last_inbound_at``, None when they never wrote)."""
        self.users.setdefault(igsid, username or f"user_{igsid}")
        if last_inbound_at is not None:
            self._last_inbound[igsid] = max(last_inbound_at, self._last_inbound.get(igsid, 0.0))

    # -- user simulation -----------------------------------------------------------------

    async def user_sends_dm(
        self, igsid: str, text: str, *, deliver: bool = True, **extras: object
    ) -> dict[str, object]:
        """The user ``igsid`` DMs the account: store it (opening the 24 h window), build the
        webhook and, with ``deliver``, POST it signed to ``webhook_url``. ``extras`` go into
        ``message`` (``attachments``, ``quick_reply``, ``reply_to``...)."""
        if igsid not in self.users:
            self.add_user(igsid, f"user_{igsid}")
        now = self.clock()
        mid = new_mid(self.account_id)
        atts = extras.get("attachments")
        self._store(igsid, StoredMessage(mid, igsid, "in", text or None, as_list(atts), now))
        self._last_inbound[igsid] = now
        payload = build_dm_payload(
            self.account_id, igsid, text, mid, int(now * 1000), extras=extras
        )
        if deliver:
            await self._deliver_event("messages", payload)
        return payload

    async def user_opens_link(
        self, igsid: str, ref: str, *, deliver: bool = True
    ) -> dict[str, object]:
        """The user opens ``ig.me/<account>?ref=<ref>`` into their existing thread: the 24 h
        window starts again (as Meta documents for m.me links) and a standalone referral
        webhook is built and, with ``deliver``, POSTed."""
        if igsid not in self.users:
            self.add_user(igsid, f"user_{igsid}")
        now = self.clock()
        self._last_inbound[igsid] = now
        payload = build_referral_payload(self.account_id, igsid, ref, int(now * 1000))
        if deliver:
            await self._deliver_event("messaging_referral", payload)
        return payload

    async def user_taps_postback(
        self, igsid: str, title: str, payload: str, *, deliver: bool = True
    ) -> dict[str, object]:
        """The user taps a postback button (an ice breaker, a persistent-menu item): the 24 h
        window opens (reference §4.3, §8; a template's button is taken to do the same) and
        a ``messaging_postbacks`` webhook is built and, with ``deliver``, POSTed."""
        self.users.setdefault(igsid, f"user_{igsid}")
        now = self.clock()
        self._last_inbound[igsid] = now
        body = build_postback_payload(self.account_id, igsid, title, payload,
                                      new_mid(self.account_id), int(now * 1000))
        if deliver:
            await self._deliver_event("messaging_postbacks", body)
        return body

    async def user_comments(
        self,
        igsid: str,
        text: str,
        media_id: str,
        *,
        parent_id: str | None = None,
        deliver: bool = True,
    ) -> dict[str, object]:
        """The user comments on ``media_id`` (comments do not open the DM window)."""
        username = self.users.setdefault(igsid, f"user_{igsid}")
        comment = self._new_comment(igsid, username, text, media_id, parent_id)
        payload = build_comment_payload(
            self.account_id,
            igsid,
            username,
            text,
            media_id,
            comment.id,
            int(comment.at),
            parent_id=parent_id,
        )
        if deliver:
            await self._deliver_event("comments", payload)
        return payload
