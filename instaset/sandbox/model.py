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
    is the sandbox clock when it arrived."""

    method: str
    path: str
    query: dict[str, str]
    body: object
    headers: dict[str, str]
    at: float

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
class Undelivered:
    """A webhook the sandbox gave up delivering, and the last reason."""

    payload: dict[str, object]
    reason: str
