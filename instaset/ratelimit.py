"""Per-account send budgets (in memory: one daemon per database).

Contract: :meth:`Budgets.reserve` either records a send and returns 0, or returns how many
seconds to wait; it never lets more than ``limit`` sends of one class start within any
``window`` seconds for one account (a sliding log, not a token bucket: a bucket allows a
burst of twice the rate across a window boundary). A throttling answer from Meta blocks the
account's class until the time Meta gave.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum


class SendClass(StrEnum):
    TEXT = "text"  # text, quick replies, templates, reactions, sender actions, stickers
    MEDIA = "media"  # audio, video, images, files
    PRIVATE_REPLY = "private_reply"  # to a comment on a post or reel: an hourly budget
    LIVE_PRIVATE_REPLY = "live_private_reply"  # to a live comment: per second (Meta: 100/s)
    PUBLIC_REPLY = "public_reply"


@dataclass(frozen=True, slots=True)
class Budget:
    limit: int
    window: float  # seconds


# Margin on the window: the daemon's clock and Meta's (the sandbox's) see the same sends a few
# milliseconds apart, so a window a hair longer than Meta's keeps us under theirs.
WINDOW_MARGIN = 1.05


class Budgets:
    def __init__(
        self, budgets: dict[SendClass, Budget], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.budgets = budgets
        self.clock = clock
        # Per (account, class): start times of sends, sorted; future ones are held slots.
        self._log: dict[tuple[str, SendClass], list[float]] = {}
        self._held: dict[tuple[tuple[str, SendClass], str], float] = {}
        self._blocked: dict[tuple[str, SendClass], float] = {}

    def seed(self, account_id: str, cls: SendClass, ages: Sequence[float]) -> None:
        """Count sends made before this process started (``ages``: seconds ago each one
        started), so a restart does not hand out a fresh budget for the rest of its window."""
        now = self.clock()
        log = self._log.setdefault((account_id, cls), [])
        for age in ages:
            bisect.insort(log, now - max(0.0, age))

    def reserve(self, account_id: str, cls: SendClass, key: str = "") -> float:
        """0 when the send may start now (and it is counted), else the seconds to wait.

        Over budget, the send is given its own future slot (held under ``key``), so each
        waiting send wakes once, at its turn, instead of all of them waking whenever the
        oldest slot frees and most going back to sleep."""
        now = self.clock()
        slot_key = (account_id, cls)
        blocked = self._blocked.get(slot_key, 0.0)
        if blocked > now:
            return blocked - now
        held = self._held.pop((slot_key, key), None) if key else None
        if held is not None:
            if held <= now + 0.002:
                return 0.0
            self._held[(slot_key, key)] = held
            return held - now
        budget = self.budgets.get(cls)
        if budget is None:
            return 0.0
        window = budget.window * WINDOW_MARGIN
        log = self._log.setdefault(slot_key, [])
        cut = bisect.bisect_right(log, now - window)
        del log[:cut]
        if len(log) < budget.limit:
            bisect.insort(log, now)
            return 0.0
        slot = max(now, log[-budget.limit] + window)
        if key:  # only a caller that can come back for it gets a slot held
            bisect.insort(log, slot)
            self._held[(slot_key, key)] = slot
            self._forget_stale_holds(now)
        return max(0.001, slot - now)

    def _forget_stale_holds(self, now: float) -> None:
        # A held slot whose send never came back (refused meanwhile) must not pile up.
        if len(self._held) > 10_000:
            for k in [k for k, t in self._held.items() if t < now - 3600]:
                del self._held[k]

    def block(self, account_id: str, cls: SendClass, seconds: float) -> bool:
        """Meta said we are throttled: nothing of this class goes out for ``seconds``.
        True when the class was not blocked already (a new throttling episode)."""
        key = (account_id, cls)
        now = self.clock()
        before = self._blocked.get(key, 0.0)
        self._blocked[key] = max(before, now + seconds)
        return before <= now


def budgets_from_config(
    text_per_second: float, media_per_second: float, private_replies_per_hour: int,
    clock: Callable[[], float] = time.monotonic, *,
    live_private_replies_per_second: float = 5.0,
) -> Budgets:
    """The budgets of ``rate_limits``. Private replies to live comments have their own,
    per second: Meta allows them only during the broadcast (at 100/s), so they must not
    wait an hour behind the replies to post and reel comments (750/h at Meta)."""
    def per_second(rate: float) -> Budget:
        # A fractional rate (0.5/s) becomes 1 send per 2 s.
        return Budget(1, 1 / rate) if rate < 1 else Budget(int(rate), 1.0)

    return Budgets(
        {
            SendClass.TEXT: per_second(text_per_second),
            SendClass.MEDIA: per_second(media_per_second),
            SendClass.PRIVATE_REPLY: Budget(private_replies_per_hour, 3600.0),
            SendClass.LIVE_PRIVATE_REPLY: per_second(live_private_replies_per_second),
            SendClass.PUBLIC_REPLY: per_second(text_per_second),
        },
        clock,
    )
