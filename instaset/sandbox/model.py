"""The sandbox's records: what it received, what it stores, what it was told to break."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

_VERSION = re.compile(r"^/v\d+\.\d+(?=/)")

FaultKind = Literal["status", "graph_error", "delay", "drop_after_send", "error_after_send"]


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request the sandbox received. ``body`` is the parsed JSON body, the form fields as
    a dict, or None; ``headers`` keeps only Authorization, Content-Type and User-Agent; ``at``
    is the sandbox clock when it arrived.

    ``status`` is the HTTP status the sandbox answered (None until it has, or when a fault
    dropped the connection instead). ``accepted`` says the sandbox carried the call out (a
    send stored and echoed): False for a call it refused (rate limit, window, validation, a
    fault answered before it), True for one a fault answered with an error after it."""

    method: str
    path: str
    query: dict[str, str]
    body: object
    headers: dict[str, str]
    at: float
    status: int | None = None
    accepted: bool = False

    @property
    def route(self) -> str:
        """``path`` without its ``/vNN.N`` prefix."""
        return _VERSION.sub("", self.path)

    @property
    def json(self) -> dict[str, object]:
        """The body as a dict (empty when there was none), for terse assertions."""
        return dict(self.body) if isinstance(self.body, Mapping) else {}


@dataclass(frozen=True, slots=True)
class Fault:
    """A failure to inject into the next ``times`` requests whose path and query contain
    ``path_contains``.

    - ``status``: answer ``status`` with ``message`` as a plain-text (unparseable) body, or a
      Graph envelope when ``code`` is given.
    - ``graph_error``: answer ``status`` with a Graph envelope (``code``, ``subcode``,
      ``message``). Throttling codes get 100 % ``X-App-Usage`` headers unless ``headers``
      are given.
    - ``delay``: wait ``delay`` seconds, then answer normally.
    - ``drop_after_send``: do the work (record, store, echo), then never answer: hang for
      ``delay`` seconds (or until the sandbox stops) when ``delay`` > 0, else drop the
      connection.
    - ``error_after_send``: do the work (record, store, echo), then answer like a
      ``graph_error`` fault (Meta's "unexpected error" on a send that did go out).
    """

    kind: FaultKind
    path_contains: str = ""
    times: int = 1
    status: int = 500
    code: int | None = None
    subcode: int | None = None
    message: str = ""
    delay: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class StoredMessage:
    mid: str
    igsid: str
    direction: Literal["in", "out"]
    text: str | None
    attachments: list[object]
    at: float


@dataclass(slots=True)
class Conversation:
    id: str
    igsid: str
    messages: list[StoredMessage] = field(default_factory=list)
    updated_at: float = 0.0
    seq: int = 0  # tie-breaker for "newest first" when the clock does not move


@dataclass(slots=True)
class Comment:
    id: str
    igsid: str
    username: str
    text: str
    media_id: str
    at: float
    parent_id: str | None = None
    hidden: bool = False
    private_replied: bool = False
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How the sandbox delivers webhooks, as unkindly as Meta may (reference §2.3; performance
    §1): failed deliveries retried, several updates in one POST, duplicates, any order.

    - ``retries``: further attempts at a user event (DM, comment, link) whose POST failed (a
      non-2xx answer, no connection, or ``timeout``): the first at once, then after
      ``retry_base``, doubling up to ``retry_cap`` seconds, as Meta retries "immediately,
      then a few more times with decreasing frequency" (its 36 h shortened to a test's
      patience). Echoes keep :attr:`~instaset.sandbox.Sandbox.delivery_attempts`.
    - ``timeout``: how long a POST may take before it counts as failed (Meta: 20 s).
    - ``batch_window``: > 0 holds events (user events and echoes) for that many seconds and
      POSTs them together, at most ``batch_max`` updates a POST; items of the same account
      are put in one ``entry`` or in several, by the seeded coin. 0: one POST per event.
    - ``duplicate_every`` / ``duplicate_rate``: every Nth event, or a share of them, is
      delivered once more after the first delivery (in the next batch when batching).
    - ``reorder``: the items of a batch go out shuffled.
    - ``lose_answers``: the first N POSTs reach the webhook but count as failed, as when
      Meta's timeout fires before the answer arrives; they are retried (a duplicate the
      receiver already stored).
    - ``seed``: the seed of every random choice above, so a run can be repeated.

    The default is Meta's retrying with none of the rest: each event alone, once, in order.
    """

    retries: int = 3
    retry_base: float = 0.05
    retry_cap: float = 1.0
    timeout: float = 20.0
    batch_window: float = 0.0
    batch_max: int = 1000
    duplicate_every: int = 0
    duplicate_rate: float = 0.0
    reorder: bool = False
    lose_answers: int = 0
    seed: int = 0

    def retry_delay(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (1 is the first retry)."""
        return 0.0 if attempt <= 1 else min(self.retry_cap, self.retry_base * 2 ** (attempt - 2))


@dataclass(frozen=True, slots=True)
class Undelivered:
    """A webhook the sandbox gave up delivering, and the last reason."""

    payload: dict[str, object]
    reason: str
