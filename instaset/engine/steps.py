"""Running a workflow's steps under Instagram's messaging rules (pure: no I/O, no clock).

:class:`Run` is the scratch of one decision while its steps run: the actions so far, the
state, the trace. :func:`run_steps` runs the steps from one index until the end or a step
that suspends (``ask``, ``delay``, ``handoff``). The messaging rules while running steps: a
DM (text, media, buttons, template, booking offer, typing, AI auto-reply) needs the 24 h
window open, else it is refused with a trace line. On a comment, the first message becomes
the comment's one private reply (refused if the comment is over 7 days old); later messages
go as DMs only if the contact's window is open (they messaged within 24 h), else they are
refused. A public reply needs a top-level, non-live comment; in a workflow that answers
the comment privately with a text, it announces that private reply ("Sent it to your
DMs!"), so wherever it stands it goes right after it and only if it is sent
(``PublicReply.after_private``; held across a ``delay`` before the private reply). An
``ask`` whose field is already known is skipped. :func:`~instaset.engine.decide.decide`
chooses the workflow and freezes the run into a :class:`~instaset.engine.decide.Decision`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from instaset.engine.actions import (
    Action,
    Button,
    GenerateAIReply,
    HandOff,
    Notify,
    OfferBooking,
    PrivateReply,
    PublicReply,
    QuickReplySpec,
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
    TemplateCard,
    TypingOn,
)
from instaset.engine.conditions import fmt_time
from instaset.engine.model import ActionStep, AskSpec, ButtonSpec, Workflow
from instaset.engine.settings import EngineSettings
from instaset.engine.state import Awaiting, ConversationState
from instaset.engine.templating import has_placeholders, render

__all__ = ["PRIVATE_REPLY_MAX_AGE", "WINDOW_CLOSED", "Refused", "Run", "hand_off",
           "held_before", "private_reply_ahead", "run_steps", "send_question",
           "withhold_public_replies"]

#: A comment accepts its private reply for 7 days.
PRIVATE_REPLY_MAX_AGE = 7 * 86400
WINDOW_CLOSED = "24 h window closed"  # the trace's words for it


@dataclass(frozen=True, slots=True)
class Refused:
    """A message the rules refused while the steps ran (its trace line says the same).
    ``reason`` is the slug the outbox gives the same refusal at delivery: ``window_closed``,
    ``private_reply_expired`` (comment over 7 days old), ``private_reply_not_text``, or
    ``private_reply_used`` (after a comment's private reply, a commenter who has not
    answered gets nothing more); ``detail`` is in words. ``action``: the message refused
    (the private reply a comment was to get, else the DM), stored as a refused send."""

    step: int  # 0-based
    what: str  # the step kind: reply, private_reply, media...
    reason: str
    detail: str
    action: Action | None = None


@dataclass(slots=True)
class Run:
    """Mutable scratch for running steps; frozen into a Decision at the end."""

    wf: Workflow
    state: ConversationState
    settings: EngineSettings
    now: float
    seed: str
    text: str | None = None
    comment_id: str | None = None
    comment_at: float | None = None  # when the comment was written (private replies: 7 days)
    public_to: str | None = None  # the comment a public reply answers: a top-level post one
    private_used: bool = False
    # The comment's private reply is a text this workflow sent before (this decision, or
    # the one before a delay): a public reply after it announces it.
    private_made: bool = False
    # Before a delay, the rules refused the comment's private reply (carried by Schedule):
    # public replies after the delay are dropped as those of this decision would be.
    private_missed_before: bool = False
    turns: Mapping[str, int] | None = None  # see decide(): public replies in turn
    # Public replies placed before the comment's private reply, held until it is made:
    # they go right after it and only if it is sent (release_held, run_steps).
    held: list[PublicReply] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)

    def note(self, step: int, message: str) -> None:
        self.trace.append(f"{self.wf.name} step {step + 1}: {message}")

    def refuse(self, step: int, what: str, reason: str, detail: str,
               action: Action | None = None) -> None:
        """Record that the rules refused ``what`` (the message ``action``) at ``step``
        (trace line and marker)."""
        self.note(step, f"refused {what}: {detail}")
        self.refused.append(Refused(step, what, reason, detail, action))

    def render(self, template: str) -> str:
        if not has_placeholders(template):
            return template
        st = self.state
        values = st.fields.as_dict()
        values["username"] = st.username or ""
        if not values.get("first_name") and st.fields.get("name"):
            values["first_name"] = st.fields["name"].split()[0]
        extra = {"text": self.text} if self.text else None
        return render(template, values, extra)

    def pick(self, texts: Sequence[str], step: int) -> str:
        if len(texts) == 1:
            return texts[0]
        digest = hashlib.sha256(f"{self.seed}|{self.wf.name}|{step}".encode()).digest()
        return texts[int.from_bytes(digest[:8], "big") % len(texts)]

    def release_held(self) -> None:
        """Emit the held public replies here: waiting for the private reply just made (a
        text), or going whatever becomes of it (no private reply made: an AI's, which is its
        own job's, or none at all)."""
        if self.held:
            self.actions.extend(replace(p, after_private=self.private_made)
                                for p in self.held)
            self.held.clear()

    def window_open(self) -> bool:
        return self.state.window_open(self.now, self.settings.window_seconds)

    def message(self, step: int, what: str, as_dm: Action, as_private: Action | None) -> bool:
        """Emit a message to the contact under the messaging rules; False if refused."""
        if self.comment_id is not None and not self.private_used:
            if as_private is None:
                self.refuse(step, what, "private_reply_not_text",
                            "a comment's private reply can only be text", as_dm)
                return False
            if self.comment_at is not None and self.now - self.comment_at > (
                PRIVATE_REPLY_MAX_AGE
            ):
                self.refuse(step, what, "private_reply_expired", "comment is older than 7 days",
                            as_private)
                return False
            self.private_used = True
            # Not an AI reply: it is generated and sent by a job of its own, after this
            # decision's sends may have gone.
            self.private_made = isinstance(as_private, PrivateReply)
            self.actions.append(as_private)
            self.release_held()
            return True
        if not self.window_open():
            if self.comment_id is not None:
                self.refuse(step, what, "private_reply_used",
                            "a commenter gets one private reply until they answer", as_dm)
            else:
                self.refuse(step, what, "window_closed", WINDOW_CLOSED, as_dm)
            return False
        self.actions.append(as_dm)
        return True


def send_question(run: Run, i: int, ask: AskSpec, *, retry: bool) -> bool:
    template = ask.retry if retry and ask.retry is not None else ask.prompt
    text = run.render(template)
    qrs = tuple(QuickReplySpec(c, c) for c in ask.choices)
    return run.message(i, "ask", SendText(text, qrs), PrivateReply(run.comment_id or "", text))


def hand_off(run: Run, i: int, pause_for: int | None, note: str | None) -> None:
    pause = pause_for or run.settings.default_pause_seconds
    until = run.now + pause
    run.state = replace(run.state, paused_until=until, awaiting=None)
    who = f"@{run.state.username}" if run.state.username else run.state.contact_id
    run.actions.append(HandOff(pause, note or ""))
    run.actions.append(Notify(f"{who} needs you ({run.wf.name})" + (f": {note}" if note else "")))
    run.note(i, f"handed off, automation paused until {fmt_time(until)}")


def _button(b: ButtonSpec, run: Run) -> Button:
    return Button(b.title, run.render(b.url) if b.url else None, b.payload)


def run_steps(run: Run, start: int) -> None:
    """Run ``run.wf``'s steps from ``start`` until the end or a step that suspends. Public
    replies still held at the end go as they are (no private reply was made for them to
    wait for); across a ``delay`` they stay held: :func:`held_before` finds them again when
    the workflow continues."""
    steps = run.wf.actions
    for i in range(start, len(steps)):
        if not _step(run, i, steps[i]):
            if run.held and steps[i].delay is not None and i + 1 < len(steps):
                run.note(i, "public_reply held until the private reply after the delay")
                run.held.clear()
                return
            break
    run.release_held()


def private_reply_ahead(wf: Workflow, i: int) -> bool:
    """Whether a step after ``i`` is meant to send the comment's private reply as a text
    (``reply``, ``private_reply``, ``ask``) before the workflow ends or an auto ``ai_reply``
    takes that reply (the AI's goes by a job of its own, which public replies do not wait
    for). Media, buttons and templates do not count: a comment's private reply is text."""
    for step in wf.actions[i + 1:]:
        kind = step.kind
        if kind in ("reply", "private_reply", "ask"):
            return True
        if kind == "handoff" or (kind == "ai_reply" and step.ai_reply is not None
                                 and step.ai_reply.mode == "auto"):
            return False
    return False


def held_before(run: Run, step: int) -> None:
    """Hold again the public replies before ``step`` that were held when the run before a
    ``delay`` suspended: those ahead of the private reply, when no message has taken the
    comment's private reply yet (``run.private_used``, as ``resume`` derives it)."""
    if run.public_to is None or run.comment_id is None or run.private_used:
        return
    for j in range(step):
        spec = run.wf.actions[j].public_reply
        if spec is not None and private_reply_ahead(run.wf, j):
            run.held.append(PublicReply(run.public_to, _public_text(run, j, spec.texts()),
                                        after_private=True))


def _public_text(run: Run, i: int, variants: Sequence[str]) -> str:
    if run.turns is not None and len(variants) > 1:
        # In turn across comments: the same public reply twice running under a post
        # looks like spam (a hash pick did that 5 times in a row over 30 comments).
        return run.render(variants[run.turns.get(run.wf.name, 0) % len(variants)])
    return run.render(run.pick(variants, i))


def _step(run: Run, i: int, step: ActionStep) -> bool:
    """Run one step; False when the workflow suspends or ends here."""
    st = run.state
    if step.reply is not None:
        text = run.render(run.pick(step.reply.texts(), i))
        qrs = tuple(QuickReplySpec(q.title, q.effective_payload) for q in step.reply.quick_replies)
        run.message(i, "reply", SendText(text, qrs), PrivateReply(run.comment_id or "", text))
    elif step.private_reply is not None:
        if run.comment_id is None or run.private_used:
            run.note(i, "skipped private_reply: not answering an unanswered comment")
        else:
            text = run.render(run.pick(step.private_reply.texts(), i))
            run.message(i, "private_reply", SendText(text), PrivateReply(run.comment_id, text))
    elif step.public_reply is not None:
        if run.public_to is None:
            run.note(i, "skipped public_reply: only top-level post comments take public replies")
        else:
            text = _public_text(run, i, step.public_reply.texts())
            if (run.comment_id is not None and not run.private_used
                    and private_reply_ahead(run.wf, i)):
                # Placed before the private reply it announces ("Sent it to your DMs!"):
                # it waits for it all the same, wherever the creator put it.
                run.held.append(PublicReply(run.public_to, text, after_private=True))
                run.note(i, "public_reply waits for the private reply")
            else:
                run.actions.append(PublicReply(run.public_to, text,
                                               after_private=run.private_made))
    elif step.tag is not None:
        for tag in step.tag:
            run.actions.append(SetTag(tag))
        run.state = replace(st, tags=st.tags | set(step.tag))
    elif step.untag is not None:
        for tag in step.untag:
            run.actions.append(RemoveTag(tag))
        run.state = replace(st, tags=st.tags - set(step.untag))
    elif step.set_ is not None:
        fields = st.fields
        for name, template in step.set_.items():
            value = run.render(template)
            run.actions.append(SetField(name, value))
            fields = fields.set(name, value)
        run.state = replace(st, fields=fields)
    elif step.stage is not None:
        run.actions.append(SetStage(step.stage))
        run.state = replace(st, stage=step.stage)
    elif step.ask is not None:
        ask = step.ask
        if st.fields.get(ask.field):
            run.note(i, f"{ask.field} already known, question skipped")
            return True
        if not send_question(run, i, ask, retry=False):
            run.note(i, "stopped: the question could not be sent")
            return False
        aw = Awaiting(run.wf.name, i, ask.field, ask.type.value, 0, run.now)
        run.state = replace(run.state, awaiting=aw)
        run.note(i, f"waiting for {ask.field}")
        return False
    elif step.delay is not None:
        if i + 1 < len(run.wf.actions):
            at = run.now + step.delay
            run.actions.append(Schedule(at, run.wf.name, i + 1, run.comment_id,
                                        public_ok=run.public_to is not None,
                                        comment_at=run.comment_at, text=run.text,
                                        **_private_so_far(run)))
            run.note(i, f"continues at {fmt_time(at)}")
        return False
    elif step.ai_reply is not None:
        mode = step.ai_reply.mode
        if mode == "off":
            run.note(i, "ai_reply is off")
        elif mode == "draft":
            run.actions.append(GenerateAIReply("draft", run.comment_id))
        else:
            run.message(
                i, "ai_reply", GenerateAIReply("auto"), GenerateAIReply("auto", run.comment_id)
            )
    elif step.handoff is not None:
        note = run.render(step.handoff.note) if step.handoff.note else None
        hand_off(run, i, step.handoff.pause_for, note)
        return False
    elif step.notify is not None:
        run.actions.append(Notify(run.render(step.notify)))
    elif step.media is not None:
        run.message(i, "media", SendMedia(step.media.type, step.media.url), None)
    elif step.buttons is not None:
        buttons = tuple(_button(b, run) for b in step.buttons.buttons)
        run.message(i, "buttons", SendButtons(run.render(step.buttons.text), buttons), None)
    elif step.template is not None:
        cards = tuple(
            TemplateCard(
                run.render(e.title),
                run.render(e.subtitle) if e.subtitle else None,
                e.image_url,
                e.url,
                tuple(_button(b, run) for b in e.buttons),
            )
            for e in step.template.elements
        )
        run.message(i, "template", SendTemplate(cards), None)
    elif step.score is not None:
        run.actions.append(ScoreLead(step.score.points, step.score.reason))
    elif step.offer_booking is not None:
        intro = run.render(step.offer_booking.text) if step.offer_booking.text else None
        run.message(i, "offer_booking", OfferBooking(intro), None)
    elif step.typing is not None:
        if run.window_open():
            run.actions.append(TypingOn())
        else:
            run.note(i, "skipped typing: 24 h window closed")
    return True


# A private reply the workflow meant to send and the rules refused.
_PRIVATE_MISSED = frozenset({"private_reply_expired", "private_reply_not_text"})


def _private_so_far(run: Run) -> dict[str, bool]:
    """What a delay's continuation carries of the comment's private reply (nothing for a
    workflow that answers no comment)."""
    if run.comment_id is None:
        return {}
    return {"private_used": run.private_used, "private_made": run.private_made,
            "private_missed": private_missed(run)}


def private_missed(run: Run) -> bool:
    """Whether the workflow tried to answer the comment privately and the rules refused
    every try so far (in this decision, or before a delay)."""
    return not run.private_used and (run.private_missed_before or any(
        r.reason in _PRIVATE_MISSED for r in run.refused))


def withhold_public_replies(run: Run) -> None:
    """A public reply announces the comment's private reply ("Sent it to your DMs!"): when
    the workflow tried to answer the comment privately and the rules refused every try (the
    comment is over 7 days old, or only media was offered), its public replies are dropped
    too, wherever they stand in the workflow. (The outbox does the same for a private reply
    refused or failed at delivery: see ``PublicReply.after_private``.)"""
    if not private_missed(run):
        return
    kept: list[Action] = [a for a in run.actions if not isinstance(a, PublicReply)]
    if len(kept) < len(run.actions):
        run.actions = kept
        run.trace.append(f"{run.wf.name}: skipped public_reply: the comment's private reply "
                         "was refused")
