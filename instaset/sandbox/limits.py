"""Meta's rate limits in the sandbox, and the usage header that reports them.

Reference §5.1 gives, per Instagram professional account, 2 Conversations API calls a second
and 750 private replies an hour (to comments on posts and reels); §5.2 says Instagram calls
fall under Business Use Case (BUC) limits, reported in percent (throttling starts at 100) by
``X-Business-Use-Case-Usage: {"<id>":[{"type":"instagram","call_count":…,"total_cputime":…,
"total_time":…,"estimated_time_to_regain_access":<minutes>}]}``.

:class:`Limits` turns them on (``Sandbox(limits=Limits())``); they are off by default, so a
test on a frozen clock and the benchmarks (hundreds of sends a second) see no throttling and
no header. Counted on the sandbox's clock, per kind of call, over a sliding window: a call
is refused when the calls already accepted in the window reach the limit (refused calls do
not count). Every Graph call is a BUC call, ``subscribed_apps`` (GET and POST) included:
§5.2 puts Instagram Platform requests under BUC limits and exempts none; only the OAuth
routes are outside. Not modelled: the Send API's 300/s and 10/s (the benchmarks go faster; the
daemon paces itself lower), Live private replies (the sandbox has no Live), and CPU time.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from instaset.sandbox.wire import graph_error

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits the sandbox enforces when given one (see the module docstring).

    ``buc_calls_per_hour`` is the account's BUC budget: every Graph call counts, and the
    header's percentages are calls in the last hour over it. Meta's figure is "4800 ×
    impressions" a day, which nobody outside Meta can know (reference §5.2), so the value is
    a choice: an account with about 24 impressions."""

    conversations_per_second: int = 2
    private_replies_per_hour: int = 750
    buc_calls_per_hour: int = 4800


@dataclass(frozen=True, slots=True)
class _Rule:
    bucket: str
    limit: int
    window: float
    code: int
    message: str


# The HTTP status of a throttling error is not in the reference: 400 is a choice (Graph's
# usual status for an error envelope that is not about auth). Codes: 613 "Calls to this api
# have exceeded the rate limit" for one API's own limit; 80002 for the Instagram BUC, which
# the reference marks [memory/unverified] (§5.4).
THROTTLE_STATUS = 400


class Meter:
    """Sliding-window call counts on ``clock``; see :meth:`take`."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._calls: dict[str, deque[float]] = {}
        self.refused = 0  # calls answered with a throttling error

    def _rules(self, limits: Limits, buckets: tuple[str, ...]) -> list[_Rule]:
        rules = [_Rule("buc", limits.buc_calls_per_hour, HOUR, 80002,
                       "(#80002) There have been too many calls to this Instagram account. "
                       "Wait a bit and try again.")]
        if "conversations" in buckets:
            rules.append(_Rule("conversations", limits.conversations_per_second, 1.0, 613,
                               "(#613) Calls to this api have exceeded the rate limit."))
        if "private_replies" in buckets:
            rules.append(_Rule("private_replies", limits.private_replies_per_hour, HOUR, 613,
                               "(#613) Calls to this api have exceeded the rate limit."))
        return rules

    def _window(self, bucket: str, window: float, now: float) -> deque[float]:
        calls = self._calls.setdefault(bucket, deque())
        while calls and calls[0] <= now - window:
            calls.popleft()
        return calls

    def take(self, limits: Limits, buckets: tuple[str, ...], account: str
             ) -> web.Response | None:
        """Count one Graph call of ``buckets`` (every call is also a BUC call); None when it
        may go on, else Meta's throttling error (with the usage header) to answer."""
        now = self.clock()
        wait = 0.0
        refusal: _Rule | None = None
        for rule in self._rules(limits, buckets):
            calls = self._window(rule.bucket, rule.window, now)
            if len(calls) >= rule.limit:
                free_at = calls[len(calls) - rule.limit] + rule.window
                if refusal is None:
                    refusal = rule
                wait = max(wait, free_at - now)
        if refusal is not None:
            self.refused += 1
            return graph_error(THROTTLE_STATUS, refusal.code, refusal.message,
                               type="IGApiException", is_transient=True,
                               headers=self.headers(limits, account=account, regain=wait))
        for rule in self._rules(limits, buckets):
            self._calls.setdefault(rule.bucket, deque()).append(now)
        return None

    def gate(
        self, limits: Limits | None, method: str, segs: list[str], body: object,
        node_type: Callable[[str], str | None], account: str,
    ) -> web.Response | None:
        """:meth:`take` for a Graph call to ``segs`` (version stripped) when ``limits`` are
        on; ``node_type`` tells what a one-segment path is."""
        if limits is None:
            return None
        kinds = buckets(method, segs, body, node_type(segs[0]) if len(segs) == 1 else None)
        return None if kinds is None else self.take(limits, kinds, account)

    def stamp(self, limits: Limits | None, response: web.StreamResponse, method: str,
              segs: list[str], account: str, *, authenticated: bool = True) -> None:
        """Put the usage header on the answer to a Graph call when ``limits`` are on (a
        throttling answer keeps the one it has); not on the answer to a call without a
        valid token (``authenticated`` False), which no account's usage covers."""
        if limits is None or not authenticated or "X-Business-Use-Case-Usage" in response.headers:
            return
        if buckets(method, segs, None, None) is not None:
            response.headers.update(self.headers(limits, account=account))

    def headers(self, limits: Limits, *, account: str, regain: float = 0.0) -> dict[str, str]:
        """``X-Business-Use-Case-Usage`` for ``account`` now. ``estimated_time_to_regain_access``
        is the longer of ``regain`` (seconds until a refused call would pass) and, whenever
        the BUC budget is spent (also on the answer to the call that spent it), the wait
        until a BUC call passes again; in the header's whole minutes (rounded up) from one
        minute on: a wait under a minute (the per-second limit) reads 0, as the unit allows.
        Putting an hourly API limit's wait there too is a choice: where Meta says it is
        unknown. The CPU and time shares are a choice too (half the call share)."""
        now = self.clock()
        calls = self._window("buc", HOUR, now)
        budget = max(1, limits.buc_calls_per_hour)
        if len(calls) >= budget:
            regain = max(regain, calls[len(calls) - budget] + HOUR - now)
        pct = min(100, math.floor(100 * len(calls) / budget))
        minutes = math.ceil(regain / 60) if regain >= 60 else 0
        usage = {"type": "instagram", "call_count": pct, "total_cputime": pct // 2,
                 "total_time": pct // 2, "estimated_time_to_regain_access": minutes}
        return {"X-Business-Use-Case-Usage": json.dumps({account: [usage]})}


def buckets(method: str, segs: list[str], body: object, node_type: str | None
            ) -> tuple[str, ...] | None:
    """Which limited kinds a Graph call to ``segs`` (version stripped) is, besides the BUC;
    None for a call to the OAuth hosts' routes, which no usage limit covers here. The
    Conversations API is the conversation list and the conversation and message nodes (the
    calls instaset's catch-up paces at 2/s)."""
    if segs[:1] == ["oauth"] or segs in (["access_token"], ["refresh_access_token"]):
        return None
    if method == "GET" and (
        segs[-1:] == ["conversations"]
        or (len(segs) == 1 and node_type in ("IGConversation", "IGMessage"))
    ):
        return ("conversations",)
    recipient = body.get("recipient") if isinstance(body, dict) else None
    if method == "POST" and segs[-1:] == ["messages"] and isinstance(recipient, dict) \
            and "comment_id" in recipient:
        return ("private_replies",)
    return ()
