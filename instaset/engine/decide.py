"""``decide()``: which workflow an event fires and what to do (pure: no I/O, no clock, no
randomness; variants are picked by a hash of the event's dedupe key, so a replay of the same
history decides the same; public reply variants go in turn, from the ``turns`` the caller
counted).

Order of business for one event:

1. Events caused by the business (echoes, its own comments) change nothing and fire nothing.
2. Bookkeeping: an inbound DM or button tap updates ``last_inbound_at`` (the 24 h window)
   and clears ``is_new``; a comment records the commenter's username when unknown.
3. ``standby`` events (another app owns the thread) and paused conversations
   (``paused_until > now``) stop here: bookkeeping only.
4. A pending question (``awaiting``) consumes the next inbound DM (text or quick-reply tap):
   a valid answer is stored in the field and the workflow continues after its ``ask`` step;
   an invalid one is re-asked (``retry`` text, else the prompt) up to ``max_retries`` times,
   then ``on_fail`` applies (``stop``: drop the question; ``continue``: go on without the
   field; ``handoff``: pause and notify the creator). A question older than the window is
   dropped and the message goes through the triggers. Other events (button taps, comments),
   and a quick-reply tap whose payload a ``postback`` workflow names (unless it is one of
   the question's own choices), go through the triggers and leave the question pending. A
   question whose step was edited since (another field or type there now) is dropped.
5. Triggers, by priority (higher first, then file order). The first workflow whose trigger
   matches and whose ``when`` holds fires. A quick-reply tap tries the workflows whose
   postback trigger names its payload first, then the rest (keywords in its title).
   ``first_message`` needs a contact that never messaged; ``fallback`` fires only on an
   inbound DM text when *no* trigger matched (a keyword blocked by its cooldown does not
   fall back).
6. Steps run in order until the end, an ``ask`` (waits for the answer), a ``delay`` (returns
   a :class:`~instaset.engine.actions.Schedule`; the daemon calls :func:`resume` at
   ``run_at``) or a ``handoff`` (pauses).

The steps run under Instagram's messaging rules: see :mod:`instaset.engine.steps`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from instaset.engine.actions import Action, SetField
from instaset.engine.answers import validate_answer
from instaset.engine.compiled import compiled
from instaset.engine.conditions import check_conditions, fmt_time
from instaset.engine.model import AskSpec, OnFail, Workflow
from instaset.engine.settings import EngineSettings
from instaset.engine.state import Awaiting, ConversationState
from instaset.engine.steps import (
    PRIVATE_REPLY_MAX_AGE,
    WINDOW_CLOSED,
    Refused,
    Run,
    hand_off,
    held_before,
    run_steps,
    send_question,
    withhold_public_replies,
)
from instaset.engine.triggers import FIRST_MESSAGE, inbound_dm, match_trigger
from instaset.events import (
    CommentEvent,
    Event,
    EventKind,
    MessageEvent,
    PostbackEvent,
    ReferralEvent,
)

__all__ = [
    "PRIVATE_REPLY_MAX_AGE",
    "WINDOW_CLOSED",
    "Decision",
    "Refused",
    "decide",
    "decide_scan",
    "needs_follower",
    "resume",
    "validate_answer",
]


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one event (or one scheduled continuation).

    ``workflow`` is the workflow that fired or continued (``None``: nothing did);
    ``actions`` are to be executed in order; ``state`` is the conversation's new state, to be
    stored as-is; ``trace`` says why, one line per fact, for logs, ``workflows test`` and
    replay reports; ``refused`` are the messages the rules refused, for the creator to be
    told (the trace says the same in words)."""

    workflow: str | None
    actions: tuple[Action, ...]
    state: ConversationState
    trace: tuple[str, ...]
    refused: tuple[Refused, ...] = ()


def _bookkeep(event: Event, state: ConversationState) -> ConversationState:
    if event.is_from_business:
        return state
    inbound = inbound_dm(event) is not None or isinstance(event, PostbackEvent)
    if inbound:
        last = state.last_inbound_at
        at = event.occurred_at if last is None else max(last, event.occurred_at)
        if at != last or state.is_new:
            return state.with_inbound(at)
        return state
    if isinstance(event, ReferralEvent) and event.contact_id:
        # An ig.me link or ad opening an existing thread resets the 24 h window (Meta's
        # m.me-link docs); it is no message, so a new contact stays new.
        last = state.last_inbound_at
        if last is None or event.occurred_at > last:
            return replace(state, last_inbound_at=event.occurred_at)
        return state
    if isinstance(event, CommentEvent) and event.from_username and not state.username:
        return replace(state, username=event.from_username)
    return state


def decide(
    event: Event,
    state: ConversationState,
    workflows: Sequence[Workflow],
    settings: EngineSettings,
    now: float,
    *,
    turns: Mapping[str, int] | None = None,
) -> Decision:
    """Decide what ``event`` does to the conversation in ``state`` (see the module docs).

    ``turns``: how many public replies each workflow has made so far (the account's, not
    this conversation's): a ``public_reply`` with variants takes them in turn, variant
    ``turns[workflow] % n``. Without it (a dry run) one is picked by the event's hash.

    ``workflows`` is compiled once per list and cached (:func:`~instaset.engine.compiled.
    compiled`): only the workflows whose trigger could fire on the event are tried, in
    priority order, so the cost barely grows with the number of workflows. The result is
    exactly :func:`decide_scan`'s."""
    cw = compiled(workflows)
    early, new_state, trace, dm = _prologue(event, state, cw.find, cw.handles_payload,
                                            settings, now)
    if early is not None:
        return early
    return _choose(cw.candidates(event, state.is_new), cw.fallbacks, event, state.is_new,
                   new_state, dm, settings, now, trace, turns)


def decide_scan(
    event: Event,
    state: ConversationState,
    workflows: Sequence[Workflow],
    settings: EngineSettings,
    now: float,
    *,
    turns: Mapping[str, int] | None = None,
) -> Decision:
    """The reference :func:`decide`: sorts the workflows and tries every one's trigger, with
    no compiled form and no index. Same contract and same result, slower; kept as the
    oracle the indexed ``decide`` is tested and benchmarked against."""
    early, new_state, trace, dm = _prologue(
        event, state, lambda name: _find(workflows, name),
        lambda payload: any(wf.enabled and _answers_tap(wf, payload) for wf in workflows),
        settings, now,
    )
    if early is not None:
        return early
    ordered = [wf for _, wf in sorted(enumerate(workflows),
                                      key=lambda p: (-p[1].priority, p[0])) if wf.enabled]
    fallbacks = [wf for wf in ordered if wf.trigger.fallback is not None]
    return _choose(ordered, fallbacks, event, state.is_new, new_state, dm, settings, now,
                   trace, turns)


def _choose(
    candidates: Iterable[Workflow], fallbacks: Sequence[Workflow], event: Event,
    is_new: bool, new_state: ConversationState, dm: MessageEvent | None,
    settings: EngineSettings, now: float, trace: list[str],
    turns: Mapping[str, int] | None = None,
) -> Decision:
    """The first of ``candidates`` (enabled, in priority order) whose trigger matches and
    whose conditions hold fires; when no trigger matched a DM with text, the first of the
    ``fallbacks`` whose conditions hold; else nothing does."""
    payload = dm.quick_reply_payload if dm is not None else None
    if payload is not None:
        # A quick-reply tap means its payload: the workflows waiting for that payload go
        # before any keyword the chip's title happens to contain (a chip "Yes, book a
        # call" must not fire the "book" workflow that offered it, again and again).
        ordered = list(candidates)
        taps = [wf for wf in ordered if _answers_tap(wf, payload)]
        tapped = {id(wf) for wf in taps}
        candidates = taps + [wf for wf in ordered if id(wf) not in tapped]
    matched_any = False
    for wf in candidates:
        reason = match_trigger(wf.trigger, event, is_new)
        if reason is None:
            continue
        # A keyword, tap, story or referral that matched means the contact asked for
        # something specific (no generic fallback then); a first message asks for nothing.
        matched_any = matched_any or reason != FIRST_MESSAGE
        failure = check_conditions(wf.name, wf.when, new_state, settings, now)
        if failure is not None:
            trace.append(f"skipped {wf.name}: {reason}, but {failure}")
            continue
        trace.append(f"{wf.name}: {reason}")
        return _fire(wf, event, new_state, settings, now, trace, turns)
    if matched_any or dm is None or not dm.text:
        fallbacks = ()
    for wf in fallbacks:
        failure = check_conditions(wf.name, wf.when, new_state, settings, now)
        if failure is not None:
            trace.append(f"skipped {wf.name}: fallback, but {failure}")
            continue
        trace.append(f"{wf.name}: fallback (no other workflow matched)")
        return _fire(wf, event, new_state, settings, now, trace, turns)
    if not trace:
        trace.append(f"no workflow matched {event.kind.value}")
    return Decision(None, (), new_state, tuple(trace))


def _prologue(
    event: Event,
    state: ConversationState,
    find: Callable[[str], Workflow | None],
    handles_payload: Callable[[str], bool],
    settings: EngineSettings,
    now: float,
) -> tuple[Decision | None, ConversationState, list[str], MessageEvent | None]:
    """Steps 1-4 of the module docs: (a final decision or None, the state after
    bookkeeping, the trace so far, the event as an inbound DM or None)."""
    if event.is_from_business:
        msg = "ignored: sent by the business (echo or own comment)"
        return Decision(None, (), state, (msg,)), state, [], None
    new_state = _bookkeep(event, state)
    if event.standby:
        msg = "standby: another app controls this thread"
        return Decision(None, (), new_state, (msg,)), new_state, [], None
    if state.paused(now):
        assert state.paused_until is not None
        msg = f"paused until {fmt_time(state.paused_until)}: no automation"
        return Decision(None, (), new_state, (msg,)), new_state, [], None
    trace: list[str] = []
    dm = inbound_dm(event)
    aw = new_state.awaiting
    if aw is not None and dm is not None:
        wf = find(aw.workflow)
        ask = _ask_at(wf, aw.step)
        tap = dm.quick_reply_payload
        if wf is None or ask is None or (ask.field, ask.type.value) != (aw.field, aw.type):
            # Edited since it was asked: the step there now asks something else, and an
            # answer stored in its field would be an answer to another question.
            trace.append(f"dropped question for {aw.workflow}: workflow or step no longer exists")
            new_state = replace(new_state, awaiting=None)
        elif now - aw.asked_at >= settings.window_seconds:
            asked = fmt_time(aw.asked_at)
            trace.append(f"dropped stale question for {aw.workflow} (asked {asked})")
            new_state = replace(new_state, awaiting=None)
        elif (tap is not None and handles_payload(tap)
              and validate_answer(ask, None, tap) is None):
            # A chip of an earlier message, whose payload a postback workflow answers, is
            # that workflow's to answer, not this question's; the question stays pending.
            trace.append(f"question for {aw.workflow} still pending: the tap's payload "
                         f"{tap!r} goes to its postback workflow")
        elif tap is None and not (dm.text and dm.text.strip()):
            # A story mention, a photo or a sticker answers no question: it goes through
            # the triggers (a story_mention workflow), and the question stays pending.
            trace.append(f"question for {aw.workflow} still pending: a message without "
                         "text is no answer")
        else:
            answer = _answer(wf, ask, aw, dm, new_state, settings, now, event.dedupe_key)
            return answer, new_state, trace, dm
    return None, new_state, trace, dm


def resume(
    state: ConversationState,
    workflows: Sequence[Workflow],
    settings: EngineSettings,
    workflow_name: str,
    step: int,
    now: float,
    *,
    comment_id: str | None = None,
    comment_at: float | None = None,
    public_ok: bool = False,
    text: str | None = None,
    turns: Mapping[str, int] | None = None,
    private_used: bool | None = None,
    private_made: bool = False,
    private_missed: bool = False,
) -> Decision:
    """Continue ``workflow_name`` at ``step`` (0-based) after a ``delay``: the payload of a
    :class:`~instaset.engine.actions.Schedule` (``comment_at``: when its comment was
    written, for the private reply's 7 days; ``text``: the message answered, for
    ``{text}``; ``private_used``/``private_made``/``private_missed``: what became of the
    comment's private reply before the delay, ``private_used`` None when the payload
    predates them: then read from the steps before it). Nothing runs while the
    conversation is paused or if the workflow was removed or disabled since."""
    if state.paused(now):
        assert state.paused_until is not None
        msg = f"{workflow_name}: continuation dropped, paused until {fmt_time(state.paused_until)}"
        return Decision(None, (), state, (msg,))
    wf = compiled(workflows).find(workflow_name)
    if wf is None or not wf.enabled or step >= len(wf.actions):
        msg = f"{workflow_name}: continuation dropped, workflow or step no longer exists"
        return Decision(None, (), state, (msg,))
    seed = f"resume|{state.contact_id}|{step}|{state.fired.get(wf.name, 0.0)!r}"
    run = Run(wf, state, settings, now, seed, text=text, comment_id=comment_id,
               comment_at=comment_at, public_to=comment_id if public_ok else None, turns=turns)
    if comment_id is not None and private_used is not None:
        # As the steps before the delay left it: an `ask` skipped because its field was
        # known, or a media step refused as a private reply, used nothing.
        run.private_used, run.private_made = private_used, private_made
        run.private_missed_before = private_missed
    else:
        # A continuation queued before the payload carried it: a message step before the
        # delay is taken to have sent the private reply.
        before = wf.actions[:step]
        sent_here = comment_id is not None and any(
            s.kind in ("reply", "private_reply", "ask", "media", "template", "buttons")
            for s in before)
        run.private_used = sent_here or (comment_id is not None and any(
            s.kind == "ai_reply" and s.ai_reply is not None and s.ai_reply.mode == "auto"
            for s in before))
        run.private_made = sent_here
    # Settled by now, whatever it was: a public reply after it goes out only if it went. An
    # ai_reply's private reply is its own job's, which a public reply does not wait for
    # (with or without a delay between them: docs/workflows.md).
    run.trace.append(f"{wf.name}: continuing at step {step + 1} after a delay")
    # A public reply before the delay, placed ahead of the private reply still to come,
    # waits for it here (it was held, not sent, before the delay).
    held_before(run, step)
    run_steps(run, step)
    return _finish(run)


# --- internals ----------------------------------------------------------------------------


def _answers_tap(wf: Workflow, payload: str) -> bool:
    """Whether ``wf``'s ``postback`` trigger names ``payload``."""
    return wf.trigger.postback is not None and payload in wf.trigger.postback.payload


def _find(workflows: Sequence[Workflow], name: str) -> Workflow | None:
    return next((wf for wf in workflows if wf.name == name), None)


def _ask_at(wf: Workflow | None, step: int) -> AskSpec | None:
    if wf is None or step >= len(wf.actions):
        return None
    return wf.actions[step].ask


def _finish(run: Run) -> Decision:
    withhold_public_replies(run)
    return Decision(run.wf.name, tuple(run.actions), run.state, tuple(run.trace),
                    tuple(run.refused))


def _fire(
    wf: Workflow,
    event: Event,
    state: ConversationState,
    settings: EngineSettings,
    now: float,
    trace: list[str],
    turns: Mapping[str, int] | None = None,
) -> Decision:
    state = state.with_fired(wf.name, now)
    run = Run(wf, state, settings, now, event.dedupe_key, trace=trace, turns=turns)
    if isinstance(event, CommentEvent):
        run.comment_id, run.comment_at, run.text = event.comment_id, event.occurred_at, event.text
        if event.kind is EventKind.COMMENT and not event.is_reply:
            run.public_to = event.comment_id
    elif isinstance(event, MessageEvent):
        run.text = event.text
    run_steps(run, 0)
    return _finish(run)


def _answer(
    wf: Workflow,
    ask: AskSpec,
    aw: Awaiting,
    dm: MessageEvent,
    state: ConversationState,
    settings: EngineSettings,
    now: float,
    seed: str,
) -> Decision:
    run = Run(wf, state, settings, now, seed, text=dm.text)
    value = validate_answer(ask, dm.text, dm.quick_reply_payload)
    if value is not None:
        run.state = replace(state, awaiting=None, fields=state.fields.set(ask.field, value))
        run.actions.append(SetField(ask.field, value, captured=True))
        run.trace.append(f"{wf.name}: captured {ask.field} ({ask.type.value})")
        run_steps(run, aw.step + 1)
        return _finish(run)
    if aw.retries < ask.max_retries:
        run.trace.append(
            f"{wf.name}: invalid {ask.type.value} for {ask.field}, "
            f"asking again ({aw.retries + 1}/{ask.max_retries})"
        )
        if send_question(run, aw.step, ask, retry=True):
            run.state = replace(state, awaiting=replace(aw, retries=aw.retries + 1, asked_at=now))
        else:
            run.state = replace(state, awaiting=None)
        return _finish(run)
    run.state = replace(state, awaiting=None)
    run.trace.append(
        f"{wf.name}: no valid {ask.field} after {ask.max_retries} retries, {ask.on_fail.value}"
    )
    if ask.on_fail is OnFail.CONTINUE:
        run_steps(run, aw.step + 1)
    elif ask.on_fail is OnFail.HANDOFF:
        hand_off(run, aw.step, None, f"could not capture {ask.field}")
    return _finish(run)


def needs_follower(workflows: Sequence[Workflow]) -> bool:
    """Whether any enabled workflow has a ``follower`` condition, i.e. whether the daemon
    should look up the contact's follow status (user profile API) before deciding."""
    return any(wf.enabled and wf.when.follower is not None for wf in workflows)
