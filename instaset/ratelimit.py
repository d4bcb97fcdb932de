"""Per-account send budgets (in memory: one daemon per database).

Contract: :meth:`Budgets.reserve` either records a send and returns 0, or returns how many
seconds to wait; it never lets more than ``limit`` sends of one class start within any
``window`` seconds for one account (a sliding log, not a token bucket: a bucket allows a
burst of twice the rate across a window boundary). A throttling answer from Meta blocks the
account's class until the time Meta gave.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class SendClass(StrEnum):
    TEXT = "text"  # text, quick replies, templates, reactions, sender actions, stickers
    MEDIA = "media"  # audio, video, images, files
    PRIVATE_REPLY = "private_reply"
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
        self._log: dict[tuple[str, SendClass], collections.deque[float]] = {}
        self._blocked: dict[tuple[str, SendClass], float] = {}

    def reserve(self, account_id: str, cls: SendClass) -> float:
        now = self.clock()
        key = (account_id, cls)
        blocked = self._blocked.get(key, 0.0)
        if blocked > now:
            return blocked - now
        budget = self.budgets.get(cls)
        if budget is None:
            return 0.0
        window = budget.window * WINDOW_MARGIN
        log = self._log.setdefault(key, collections.deque())
        while log and log[0] <= now - window:
            log.popleft()
        if len(log) >= budget.limit:
            return max(0.001, log[0] + window - now)
        log.append(now)
        return 0.0

    def block(self, account_id: str, cls: SendClass, seconds: float) -> None:
        """Meta said we are throttled: nothing of this class goes out for ``seconds``."""
        key = (account_id, cls)
        self._blocked[key] = max(self._blocked.get(key, 0.0), self.clock() + seconds)


def budgets_from_config(
    text_per_second: float, media_per_second: float, private_replies_per_hour: int,
    clock: Callable[[], float] = time.monotonic,
) -> Budgets:
    def per_second(rate: float) -> Budget:
        # A fractional rate (0.5/s) becomes 1 send per 2 s.
        return Budget(1, 1 / rate) if rate < 1 else Budget(int(rate), 1.0)

    return Budgets(
        {
            SendClass.TEXT: per_second(text_per_second),
            SendClass.MEDIA: per_second(media_per_second),
            SendClass.PRIVATE_REPLY: Budget(private_replies_per_hour, 3600.0),
            SendClass.PUBLIC_REPLY: per_second(text_per_second),
        },
        clock,
    )
