"""Replay: run a config's workflows over the stored history, and compare two configs.

Contract:

- **Read-only.** :func:`load_history` only reads (``instaset.store.replay``); nothing is
  sent, stored or enqueued. It can run beside a live daemon.
- **AI offline.** An ``ai_reply`` step is answered by the offline responder (the creator's
  examples and facts, no network, no Gemini) and its guardrails: the report notes what it
  would have replied, or why it would have handed the message to the creator.
- **Faithful.** Events are replayed in the order they happened, each with its own time as
  ``now``, through the same pure :func:`~instaset.engine.decide` the daemon uses, from a
  fresh conversation state per contact (or the stored one, ``start="stored"``). What the
  daemon does around the engine is mirrored: a ``delay`` continuation runs (``resume``) when
  its time comes between events; the echo of the creator's own reply (typed in the
  Instagram app, or sent with ``instaset inbox reply``; not an edited draft) pauses
  automation for ``handoff.pause_for``. Contact facts the engine does not own (username,
  follower status) are seeded from the database.
- **Deterministic.** Same history and same config give the same report, byte for byte: the
  engine has no clock and no randomness (variants are picked by a hash of the event key).

:func:`instaset.replay_diff.diff` lines up two reports of the same history (current config
vs a candidate) by event key and lists every event whose decision (workflow and actions)
changed.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from instaset.automation import load_state
from instaset.config import Config
from instaset.engine.actions import (
    Action,
    GenerateAIReply,
    HandOff,
    Notify,
    OfferBooking,
    PrivateReply,
    PublicReply,
    RemoveTag,
    Schedule,
    ScoreLead,
    SendButtons,
    SendMedia,
    SendTemplate,
    SendText,
    SetField,
    SetStage,
    SetTag,
    TypingOn,
)
from instaset.engine.compiled import compiled
from instaset.engine.conditions import fmt_time
from instaset.engine.decide import decide, resume
from instaset.engine.model import Workflow
from instaset.engine.settings import EngineSettings
from instaset.engine.state import ConversationState
from instaset.events import (
    CommentEvent,
    Event,
    EventKind,
    MessageEvent,
    PostbackEvent,
    parse_stored,
    with_plausible_time,
)
from instaset.store import replay as store
from instaset.store.db import Database

__all__ = [
    "History",
    "Outcome",
    "Replayer",
    "Report",
    "Step",
    "StoredEvent",
    "describe_action",
    "iso",
    "load_history",
    "replay_config",
]

Start = Literal["fresh", "stored"]
ContactKey = tuple[str, str]  # (account_id, contact_id)


def iso(ts: float) -> str:
    """UTC ISO 8601 with a ``Z``, to the second (what JSON output uses)."""
    return fmt_time(ts)


def _short(text: str, limit: int = 80) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


def offline_ai(config: Config) -> Callable[[str, bool], str]:
    """What an ``ai_reply`` step would do, from the offline responder and the guardrails the
    daemon applies (the creator's examples and facts; no history of past replies)."""
    from instaset.ai.guardrails import check_reply
    from instaset.ai.offline import OfflineResponder
    from instaset.ai.prompt import Example, PromptInput, Turn

    responder = OfflineResponder()
    examples = tuple(Example(e.message, e.reply) for e in config.ai.examples)
    facts = tuple(config.ai.facts)

    def answer(incoming: str, is_comment: bool) -> str:
        inp = PromptInput(
            persona=config.ai.persona, facts=facts, examples=examples, past_replies=(),
            conversation=(Turn("contact", incoming),), is_comment=is_comment,
            booking=config.booking.enabled and not is_comment,
        )
        if not incoming.strip():
            return "AI (offline): nothing to answer (no text)"
        reply = responder.answer(inp)
        verdict = check_reply(reply, incoming, facts)
        if not verdict.send:
            return f"AI (offline): would hand it to you ({verdict.reason}: {verdict.detail})"
        booking = " and offer booking slots" if reply.offer_booking else ""
        text = json.dumps(_short(reply.reply, 80), ensure_ascii=False)
        return f"AI (offline): would reply {text}{booking}"

    return answer


def describe_action(action: Action, *, limit: int = 80) -> str:
    """One line for a human: ``reply "Hey!" [Yes | No]``, ``tag lead``, ``handoff 12h``."""

    def q(text: str) -> str:
        return json.dumps(_short(text, limit), ensure_ascii=False)

    match action:
        case SendText():
            chips = " | ".join(r.title for r in action.quick_replies)
            return f"reply {q(action.text)}" + (f" [{chips}]" if chips else "")
        case PrivateReply():
            return f"private reply {q(action.text)}"
        case PublicReply():
            return f"public reply {q(action.text)}" + (
                " (if the private reply is sent)" if action.after_private else "")
        case SendMedia():
            return f"{action.kind} {action.url}"
        case SendButtons():
            return f"buttons {q(action.text)} [{' | '.join(b.title for b in action.buttons)}]"
        case SendTemplate():
            return f"template [{' | '.join(c.title for c in action.elements)}]"
        case GenerateAIReply():
            return f"AI reply ({action.mode}, offline responder)"
        case OfferBooking():
            return "offer booking" + (f" {q(action.text)}" if action.text else "")
        case TypingOn():
            return "typing indicator"
        case SetTag():
            return f"tag {action.tag}"
        case RemoveTag():
            return f"untag {action.tag}"
        case SetField():
            return f"set {action.name} = {q(action.value)}"
        case SetStage():
            return f"stage {action.stage}"
        case ScoreLead():
            return f"score {action.points:+d}" + (f" ({action.reason})" if action.reason else "")
        case HandOff():
            return f"hand off (automation paused {action.pause_for_seconds // 3600} h)"
        case Notify():
            return f"notify you {q(action.text)}"
        case Schedule():
            return f"continue at step {action.step + 1} at {iso(action.run_at)}"
    return action.type  # pragma: no cover - every action kind is matched above


_MESSAGE_TYPES = (SendText, PrivateReply, PublicReply, SendMedia, SendButtons, SendTemplate,
                  GenerateAIReply, OfferBooking)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one config decided for one event or continuation. ``fired`` is True when the
    workflow started here (not an answer to its question nor a continuation)."""

    workflow: str | None
    fired: bool
    actions: tuple[Action, ...]
    trace: tuple[str, ...]

    @property
    def refused(self) -> tuple[str, ...]:
        """Trace lines of messages the rules refused (window closed, comment too old...)."""
        return tuple(line for line in self.trace if ": refused " in line)

    @property
    def messages(self) -> tuple[Action, ...]:
        """The actions that put something in front of the contact (or under their comment)."""
        return tuple(a for a in self.actions if isinstance(a, _MESSAGE_TYPES))

    @property
    def is_nothing(self) -> bool:
        return self.workflow is None and not self.actions

    def same_as(self, other: Outcome) -> bool:
        """Same workflow and same actions (traces may word skipped workflows differently)."""
        return self.workflow == other.workflow and self.actions == other.actions

    def summary(self, limit: int = 80) -> str:
        """``free-guide: reply "Here you go"; tag guide`` or ``nothing``."""
        if self.workflow is None and not self.actions:
            return "nothing"
        parts = [describe_action(a, limit=limit) for a in self.actions]
        if not parts and self.refused:
            parts = [line.split(": ", 1)[-1] for line in self.refused]
        return f"{self.workflow or '-'}: " + ("; ".join(parts) if parts else "no actions")

    def to_json(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "fired": self.fired,
            "actions": [a.to_dict() for a in self.actions],
            "trace": list(self.trace),
            "refused": list(self.refused),
        }


NOTHING = Outcome(None, False, (), ())


@dataclass(frozen=True, slots=True)
class Step:
    """One replayed event (``event_id`` set) or delayed continuation (``kind`` is
    ``"continuation"``, ``key`` is ``resume:<event key>:<workflow>:<step>``)."""

    key: str
    event_id: int | None
    kind: str
    at: float
    account_id: str
    contact_id: str
    username: str | None
    text: str | None
    outcome: Outcome
    notes: tuple[str, ...] = ()

    def label(self) -> str:
        """``2024-06-03T10:00:00Z @maya dm "guide please"``."""
        who = f"@{self.username}" if self.username else self.contact_id
        what = {"message": "dm", "live_comment": "live comment"}.get(self.kind, self.kind)
        text = f" {json.dumps(_short(self.text, 60), ensure_ascii=False)}" if self.text else ""
        return f"{iso(self.at)} {who} {what}{text}"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "event_id": self.event_id,
            "kind": self.kind,
            "at": iso(self.at),
            "account_id": self.account_id,
            "contact_id": self.contact_id,
            "username": self.username,
            "text": self.text,
            **self.outcome.to_json(),
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class WorkflowCounts:
    """Per workflow: times it started, messages it would send, messages refused."""

    fired: int = 0
    messages: int = 0
    refused: int = 0

    def to_json(self) -> dict[str, int]:
        return {"fired": self.fired, "messages": self.messages, "refused": self.refused}


@dataclass(frozen=True, slots=True)
class Report:
    """The replay of one config over one history."""

    steps: tuple[Step, ...]
    events: int  # events read from the history (including ones automation never sees)
    since: float | None
    until: float
    source: str | None = None  # the config file replayed

    def counts(self) -> dict[str, WorkflowCounts]:
        """Workflow name -> counts, by name."""
        acc: dict[str, list[int]] = {}
        for s in self.steps:
            o = s.outcome
            if o.workflow is None:
                continue
            c = acc.setdefault(o.workflow, [0, 0, 0])
            c[0] += int(o.fired)
            c[1] += len(o.messages)
            c[2] += len(o.refused)
        return {name: WorkflowCounts(*acc[name]) for name in sorted(acc)}

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "since": iso(self.since) if self.since is not None else None,
            "until": iso(self.until),
            "events": self.events,
            "counts": {k: v.to_json() for k, v in self.counts().items()},
            "steps": [s.to_json() for s in self.steps],
        }


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A stored event; ``human_echo``: the creator's own reply, typed in the Instagram app
    or, with ``inbox_reply``, sent with ``instaset inbox reply``."""

    id: int
    event: Event
    human_echo: bool = False
    inbox_reply: bool = False


@dataclass(frozen=True, slots=True)
class History:
    """What a replay reads: the events in order and the per-contact starting states."""

    events: tuple[StoredEvent, ...]
    states: Mapping[ContactKey, ConversationState]
    since: float | None
    until: float


async def load_history(
    db: Database, *, since: float | None, until: float, start: Start = "fresh"
) -> History:
    """Read the events with ``since <= occurred_at <= until`` and the starting states.

    ``fresh``: a new state per contact, seeded only with facts the engine does not own
    (username, follower status). ``stored``: each conversation's current stored state."""
    rows = await store.events_between(db, since, until)
    human = await store.human_reply_event_ids(db, since)
    events: list[StoredEvent] = []
    append = events.append
    for event_id, raw, received_at in rows:  # one query; decoding is the whole cost per row
        parsed = parse_stored(raw)
        if len(parsed) == 1:
            # The time the daemon decided with (an implausible one was the arrival time).
            event = with_plausible_time(parsed[0], received_at)
            via = human.get(event_id)
            append(StoredEvent(event_id, event, via is not None, via == "inbox"))
    states: dict[ContactKey, ConversationState] = {}
    for conv in await store.conversation_rows(db):
        acct, contact = str(conv["account_id"]), str(conv["contact_id"])
        stored = load_state(conv, acct, contact)
        states[(acct, contact)] = stored if start == "stored" else ConversationState(
            account_id=acct, contact_id=contact, username=stored.username,
            follower=stored.follower,
        )
    return History(tuple(events), states, since, until)


@dataclass(order=True, slots=True)
class _Pending:
    run_at: float
    seq: int
    account_id: str = field(compare=False)
    contact_id: str = field(compare=False)
    schedule: Schedule = field(compare=False)
    origin: str = field(compare=False)
    live: bool = field(default=False, compare=False)  # continues a live comment's workflow


class Replayer:
    """Replays events through the engine for one set of workflows (pure, no I/O).

    ``settings_for(account_id)`` gives the engine settings of an account;
    ``pause_for_seconds`` is how long the creator's own reply (app or inbox) pauses
    automation; ``private_replies_per_hour`` notes when the daemon's private-reply budget
    would hold a reply back (it delays, it does not drop)."""

    def __init__(
        self,
        workflows: Sequence[Workflow],
        settings_for: Callable[[str], EngineSettings],
        *,
        pause_for_seconds: float,
        private_replies_per_hour: int | None = None,
        ai: Callable[[str, bool], str] | None = None,
    ) -> None:
        # Compiled once here (priority order, trigger index), not looked up per event.
        self.workflows = compiled(workflows)
        self.settings_for = settings_for
        self.pause_for_seconds = pause_for_seconds
        self.private_replies_per_hour = private_replies_per_hour
        # (incoming text, is a comment) -> one line on what the offline AI would do.
        self.ai = ai

    def run(
        self,
        events: Iterable[StoredEvent],
        states: Mapping[ContactKey, ConversationState],
        *,
        until: float,
        since: float | None = None,
        source: str | None = None,
    ) -> Report:
        st: dict[ContactKey, ConversationState] = dict(states)
        pending: list[_Pending] = []
        private_log: dict[str, deque[float]] = {}
        turns: dict[str, dict[str, int]] = {}  # account -> workflow -> public replies so far
        steps: list[Step] = []
        seq = itertools.count()
        count = 0

        def state_of(acct: str, contact: str) -> ConversationState:
            return st.get((acct, contact)) or ConversationState(acct, contact)

        def record(step: Step, decision_actions: tuple[Action, ...], acct: str,
                   contact: str, live: bool) -> None:
            # A live comment's private reply has its own (per second) budget, not this one.
            notes = () if live else self._budget_notes(decision_actions, step.at,
                                                       private_log, acct)
            steps.append(replace(step, notes=(*step.notes, *notes)) if notes else step)
            for a in decision_actions:
                if isinstance(a, PublicReply) and step.outcome.workflow is not None:
                    mine = turns.setdefault(acct, {})
                    mine[step.outcome.workflow] = mine.get(step.outcome.workflow, 0) + 1
                if isinstance(a, Schedule):
                    heapq.heappush(pending, _Pending(a.run_at, next(seq), acct, contact, a,
                                                     step.key, live))

        def flush(t: float) -> None:
            while pending and pending[0].run_at <= t:
                p = heapq.heappop(pending)
                before = state_of(p.account_id, p.contact_id)
                d = resume(before, self.workflows, self.settings_for(p.account_id),
                           p.schedule.workflow, p.schedule.step, p.run_at,
                           comment_id=p.schedule.comment_id,
                           comment_at=p.schedule.comment_at, public_ok=p.schedule.public_ok,
                           text=p.schedule.text,
                           turns=turns.get(p.account_id, {}),
                           private_used=p.schedule.private_used,
                           private_made=p.schedule.private_made,
                           private_missed=p.schedule.private_missed)
                st[(p.account_id, p.contact_id)] = d.state
                key = f"resume:{p.origin}:{p.schedule.workflow}:{p.schedule.step}"
                step = Step(key, None, "continuation", p.run_at, p.account_id, p.contact_id,
                            d.state.username, None, Outcome(d.workflow, False, d.actions, d.trace))
                record(step, d.actions, p.account_id, p.contact_id, p.live)

        for se in events:
            count += 1
            ev = se.event
            flush(ev.occurred_at)
            contact = ev.contact_id
            if contact is None or contact == ev.account_id:
                continue
            key = (ev.account_id, contact)
            before = state_of(*key)
            if se.human_echo:
                # As the daemon does: a longer pause set before stands, and a question
                # asked before the creator's message is dropped.
                until_ts = max(ev.occurred_at + self.pause_for_seconds,
                               before.paused_until or 0.0)
                awaiting = before.awaiting
                if awaiting is not None and awaiting.asked_at <= ev.occurred_at:
                    awaiting = None
                st[key] = replace(before, paused_until=until_ts, awaiting=awaiting)
                how = "with `instaset inbox reply`" if se.inbox_reply else "in the Instagram app"
                line = f"you replied {how}: automation paused until {iso(until_ts)}"
                steps.append(Step(ev.dedupe_key, se.id, ev.kind.value, ev.occurred_at,
                                  ev.account_id, contact, before.username, _text(ev),
                                  Outcome(None, False, (), (line,))))
                continue
            if ev.is_from_business:
                continue  # our own sends and comments: the pipeline never decides on them
            d = decide(ev, before, self.workflows, self.settings_for(ev.account_id),
                       ev.occurred_at, turns=turns.get(ev.account_id, {}))
            st[key] = d.state
            fired = d.workflow is not None and (
                d.state.fired.get(d.workflow) != before.fired.get(d.workflow)
            )
            step = Step(ev.dedupe_key, se.id, ev.kind.value, ev.occurred_at, ev.account_id,
                        contact, d.state.username, _text(ev),
                        Outcome(d.workflow, fired, d.actions, d.trace))
            if self.ai is not None and any(isinstance(a, GenerateAIReply) for a in d.actions):
                line = self.ai(_text(ev) or "", isinstance(ev, CommentEvent))
                step = replace(step, notes=(*step.notes, line))
            record(step, d.actions, ev.account_id, contact,
                   ev.kind is EventKind.LIVE_COMMENT)
        flush(until)
        return Report(tuple(steps), count, since, until, source)

    def _budget_notes(self, actions: tuple[Action, ...], at: float,
                      log: dict[str, deque[float]], acct: str) -> tuple[str, ...]:
        limit = self.private_replies_per_hour
        if limit is None:
            return ()
        notes: list[str] = []
        q = log.setdefault(acct, deque())
        for a in actions:
            if not isinstance(a, PrivateReply):
                continue
            while q and q[0] <= at - 3600:
                q.popleft()
            if len(q) >= limit:
                wait = q[0] + 3600 - at
                notes.append(f"private reply held back {wait / 60:.0f} min by the "
                             f"{limit}/h budget (rate_limits.private_replies_per_hour)")
            q.append(at)
        return tuple(notes)


def _text(ev: Event) -> str | None:
    if isinstance(ev, MessageEvent | CommentEvent):
        return ev.text
    if isinstance(ev, PostbackEvent):
        return ev.title or ev.payload
    return None


def replay_config(config: Config, history: History) -> Report:
    """Replay ``config``'s workflows over ``history`` with the daemon's engine settings."""
    from instaset.daemon import engine_settings  # the daemon imports the world; only here

    cache: dict[str, EngineSettings] = {}

    def settings_for(acct: str) -> EngineSettings:
        if acct not in cache:
            cache[acct] = engine_settings(config, acct)
        return cache[acct]

    replayer = Replayer(
        config.workflows, settings_for,
        pause_for_seconds=config.handoff.pause_for.total_seconds(),
        private_replies_per_hour=config.rate_limits.private_replies_per_hour,
        ai=offline_ai(config),
    )
    source = str(config.source) if config.source is not None else None
    return replayer.run(history.events, history.states, until=history.until,
                        since=history.since, source=source)
