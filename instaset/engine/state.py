"""Per-conversation state the engine reads and returns (persisted by the store as JSON).

The engine is the only writer of this state's automation fields: the daemon stores
``Decision.state`` as-is. Other subsystems change it with ``dataclasses.replace`` (e.g. the
worker sets ``paused_until`` when the creator types in the Instagram app, or ``follower``
after a user-profile lookup).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

__all__ = ["LEAD_STAGES", "Awaiting", "ConversationState", "FrozenMap"]

V = TypeVar("V")
T = TypeVar("T")


class FrozenMap(Mapping[str, V]):
    """An immutable, hashable ``str``-keyed mapping (so states stay frozen and comparable)."""

    __slots__ = ("_data", "_hash")

    def __init__(self, items: Mapping[str, V] | Iterable[tuple[str, V]] = ()) -> None:
        self._data: dict[str, V] = dict(items)
        self._hash: int | None = None

    def __getitem__(self, key: str) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    # Mapping's own get() goes through __getitem__ and an exception; the engine calls get()
    # several times per event, so it goes straight to the dict.
    @overload
    def get(self, key: str, /) -> V | None: ...

    @overload
    def get(self, key: str, default: V | T, /) -> V | T: ...

    def get(self, key: str, default: object = None, /) -> object:
        return self._data.get(key, default)

    def as_dict(self) -> dict[str, V]:
        """A new plain ``dict`` with the same items."""
        return dict(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._data) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def set(self, key: str, value: V) -> FrozenMap[V]:
        """A copy with ``key`` set to ``value``."""
        return FrozenMap({**self._data, key: value})


#: The lead stages lead scoring ranks (:mod:`instaset.leads`), in order; any other stage
#: name is the creator's own, set by a workflow's ``stage`` step.
LEAD_STAGES = ("new", "engaged", "qualified", "booked", "customer", "lost")


@dataclass(frozen=True, slots=True)
class Awaiting:
    """A question the contact has not answered yet (from an ``ask:`` step).

    ``step`` is the index of the ask step in ``workflow``'s actions; ``retries`` counts the
    invalid answers so far; ``asked_at`` is when the question was (last) asked.
    """

    workflow: str
    step: int
    field: str
    type: str
    retries: int = 0
    asked_at: float = 0.0


def _empty_str_map() -> FrozenMap[str]:
    return FrozenMap()


def _empty_float_map() -> FrozenMap[float]:
    return FrozenMap()


@dataclass(frozen=True, slots=True)
class ConversationState:
    """What the engine knows about one contact of one account.

    - ``last_inbound_at``: time of the contact's last message or button tap (the 24 h window).
    - ``paused_until``: automation is paused (handoff, or the creator typing) until then.
    - ``is_new``: the contact has never messaged (``first_message`` triggers fire only then).
    - ``fired``: workflow name -> last time it fired for this contact (cooldowns).
    - ``follower``: whether the contact follows the account, ``None`` when unknown.
    - ``lead_stage``: the contact's lead stage as lead scoring last stored it (engaged,
      qualified, booked: at least the workflow-set ``stage``), what a ``stage`` condition
      tests; None when never scored (then ``stage``). Read with the row, never stored here.
    """

    account_id: str
    contact_id: str
    username: str | None = None
    tags: frozenset[str] = frozenset()
    fields: FrozenMap[str] = field(default_factory=_empty_str_map)
    stage: str = "new"
    last_inbound_at: float | None = None
    paused_until: float | None = None
    is_new: bool = True
    awaiting: Awaiting | None = None
    fired: FrozenMap[float] = field(default_factory=_empty_float_map)
    follower: bool | None = None
    lead_stage: str | None = None

    def __post_init__(self) -> None:
        # Accept plain dicts/sets from callers while keeping the state hashable and frozen.
        if not isinstance(self.fields, FrozenMap):
            object.__setattr__(self, "fields", FrozenMap(self.fields))
        if not isinstance(self.fired, FrozenMap):
            object.__setattr__(self, "fired", FrozenMap(self.fired))
        if not isinstance(self.tags, frozenset):
            object.__setattr__(self, "tags", frozenset(self.tags))

    # Copies for the two changes decide() makes on most events. They build the state
    # directly: ``dataclasses.replace`` walks the field list on every call, and replay makes
    # these copies 100,000 times. (tests/test_engine_compiled.py checks them against it.)

    def with_inbound(self, at: float) -> ConversationState:
        """A copy with ``last_inbound_at = at`` and ``is_new = False`` (an inbound message)."""
        return ConversationState(
            self.account_id, self.contact_id, self.username, self.tags, self.fields,
            self.stage, at, self.paused_until, False, self.awaiting, self.fired, self.follower,
            self.lead_stage,
        )

    def with_fired(self, workflow: str, at: float) -> ConversationState:
        """A copy recording that ``workflow`` fired at ``at`` (for cooldowns)."""
        return ConversationState(
            self.account_id, self.contact_id, self.username, self.tags, self.fields,
            self.stage, self.last_inbound_at, self.paused_until, self.is_new, self.awaiting,
            self.fired.set(workflow, at), self.follower, self.lead_stage,
        )

    def window_open(self, now: float, window_seconds: int = 86400) -> bool:
        """Whether automation may DM the contact at ``now``."""
        return self.last_inbound_at is not None and now - self.last_inbound_at < window_seconds

    def paused(self, now: float) -> bool:
        return self.paused_until is not None and self.paused_until > now

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "contact_id": self.contact_id,
            "username": self.username,
            "tags": sorted(self.tags),
            "fields": dict(self.fields),
            "stage": self.stage,
            "last_inbound_at": self.last_inbound_at,
            "paused_until": self.paused_until,
            "is_new": self.is_new,
            "awaiting": None
            if self.awaiting is None
            else {
                "workflow": self.awaiting.workflow,
                "step": self.awaiting.step,
                "field": self.awaiting.field,
                "type": self.awaiting.type,
                "retries": self.awaiting.retries,
                "asked_at": self.awaiting.asked_at,
            },
            "fired": dict(self.fired),
            "follower": self.follower,
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), stable for equal states."""
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConversationState:
        aw = d.get("awaiting")
        return cls(
            account_id=str(d["account_id"]),
            contact_id=str(d["contact_id"]),
            username=d.get("username"),
            tags=frozenset(d.get("tags") or ()),
            fields=FrozenMap({str(k): str(v) for k, v in (d.get("fields") or {}).items()}),
            stage=str(d.get("stage") or "new"),
            last_inbound_at=d.get("last_inbound_at"),
            paused_until=d.get("paused_until"),
            is_new=bool(d.get("is_new", True)),
            awaiting=None if not aw else Awaiting(**aw),
            fired=FrozenMap({str(k): float(v) for k, v in (d.get("fired") or {}).items()}),
            follower=d.get("follower"),
        )

    @classmethod
    def from_json(cls, text: str) -> ConversationState:
        return cls.from_dict(json.loads(text))
