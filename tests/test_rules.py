"""Instagram's sending rules (:func:`rules.check_send`) and the per-account send budgets
(:class:`ratelimit.Budgets`), table-driven, on explicit times and a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instaset.ratelimit import WINDOW_MARGIN, Budget, Budgets, SendClass, budgets_from_config
from instaset.rules import (
    HUMAN_AGENT_SECONDS,
    MAX_QUICK_REPLIES,
    PRIVATE_REPLY_SECONDS,
    WINDOW_SECONDS,
    Clearance,
    Refusal,
    SendFacts,
    SendKind,
    check_send,
)

NOW = 1_760_000_000.0
H = 3600.0
D = 24 * H
OPEN = Clearance(human_agent_tag=False)
TAGGED = Clearance(human_agent_tag=True)


def facts(kind: SendKind = SendKind.TEXT, *, human: bool = False, state: str = "connected",
          inbound_ago: float | None = H, paused_for: float | None = None,
          comment_ago: float | None = None, used: bool = False,
          titles: tuple[str, ...] = (), after_private: bool = False) -> SendFacts:
    """Facts as seen at ``NOW``: the contact last wrote ``inbound_ago`` s ago, the pause ends
    ``paused_for`` s from now (negative: ended), the comment is ``comment_ago`` s old."""
    return SendFacts(
        kind=kind, human=human, account_state=state,
        last_inbound_at=None if inbound_ago is None else NOW - inbound_ago,
        paused_until=None if paused_for is None else NOW + paused_for,
        comment_at=None if comment_ago is None else NOW - comment_ago,
        private_reply_used=used, quick_reply_titles=titles, after_private=after_private,
    )


def verdict(f: SendFacts) -> Clearance | str:
    """The clearance, or the refusal's reason slug."""
    out = check_send(f, NOW)
    return out.reason if isinstance(out, Refusal) else out


CASES: list[tuple[str, SendFacts, Clearance | str]] = [
    # The 24 h window, automation.
    ("text 1h", facts(), OPEN),
    ("text exactly 24h", facts(inbound_ago=WINDOW_SECONDS), OPEN),
    ("text 24h+1s", facts(inbound_ago=WINDOW_SECONDS + 1), "window_closed"),
    ("text never messaged", facts(inbound_ago=None), "window_closed"),
    ("media 25h", facts(SendKind.MEDIA, inbound_ago=25 * H), "window_closed"),
    ("template 25h", facts(SendKind.TEMPLATE, inbound_ago=25 * H), "window_closed"),
    ("react 25h", facts(SendKind.REACT, inbound_ago=25 * H), "window_closed"),
    ("react 1h", facts(SendKind.REACT), OPEN),
    # A human reply: no tag inside 24 h, HUMAN_AGENT up to 7 days, then closed.
    ("human 1h untagged", facts(human=True), OPEN),
    ("human exactly 24h untagged", facts(human=True, inbound_ago=WINDOW_SECONDS), OPEN),
    ("human 25h tagged", facts(human=True, inbound_ago=25 * H), TAGGED),
    ("human media 6d tagged", facts(SendKind.MEDIA, human=True, inbound_ago=6 * D), TAGGED),
    ("human exactly 7d tagged", facts(human=True, inbound_ago=HUMAN_AGENT_SECONDS), TAGGED),
    ("human 7d+1s", facts(human=True, inbound_ago=HUMAN_AGENT_SECONDS + 1), "window_closed"),
    ("human never messaged", facts(human=True, inbound_ago=None), "window_closed"),
    # Sender actions are never human-tagged: only the 24 h window.
    ("action 1h", facts(SendKind.SENDER_ACTION), OPEN),
    ("human action 23h", facts(SendKind.SENDER_ACTION, human=True, inbound_ago=23 * H), OPEN),
    ("human action 25h", facts(SendKind.SENDER_ACTION, human=True, inbound_ago=25 * H),
     "window_closed"),
    # A pause stops automation, never the human.
    ("paused automation", facts(paused_for=H), "paused"),
    ("paused human", facts(human=True, paused_for=H), OPEN),
    ("paused human 25h", facts(human=True, paused_for=H, inbound_ago=25 * H), TAGGED),
    ("pause ends now", facts(paused_for=0.0), OPEN),
    ("pause ended", facts(paused_for=-1.0), OPEN),
    ("paused private reply", facts(SendKind.PRIVATE_REPLY, paused_for=H, comment_ago=H),
     "paused"),
    ("paused public reply", facts(SendKind.PUBLIC_REPLY, paused_for=H), "paused"),
    # Private replies: one per comment, within 7 days of it; no DM window needed.
    ("private reply fresh, never messaged",
     facts(SendKind.PRIVATE_REPLY, inbound_ago=None, comment_ago=H), OPEN),
    ("private reply exactly 7d",
     facts(SendKind.PRIVATE_REPLY, comment_ago=PRIVATE_REPLY_SECONDS), OPEN),
    ("private reply 7d+1s",
     facts(SendKind.PRIVATE_REPLY, comment_ago=PRIVATE_REPLY_SECONDS + 1),
     "private_reply_expired"),
    ("private reply unknown time", facts(SendKind.PRIVATE_REPLY, comment_ago=None),
     "private_reply_expired"),
    ("private reply used", facts(SendKind.PRIVATE_REPLY, comment_ago=H, used=True),
     "private_reply_used"),
    ("human private reply 8d",
     facts(SendKind.PRIVATE_REPLY, human=True, comment_ago=8 * D), "private_reply_expired"),
    # Public replies need no window at all.
    ("public reply never messaged", facts(SendKind.PUBLIC_REPLY, inbound_ago=None), OPEN),
    ("public reply 30d", facts(SendKind.PUBLIC_REPLY, inbound_ago=30 * D), OPEN),
    # A public reply announcing the comment's private reply goes only if that one did.
    ("public reply after the private reply went",
     facts(SendKind.PUBLIC_REPLY, after_private=True, used=True), OPEN),
    ("public reply after a private reply not sent",
     facts(SendKind.PUBLIC_REPLY, after_private=True), "private_reply_not_sent"),
    ("public reply of a workflow without private reply", facts(SendKind.PUBLIC_REPLY), OPEN),
    ("paused public reply after a private reply not sent",
     facts(SendKind.PUBLIC_REPLY, after_private=True, paused_for=H), "paused"),
    # The account's state comes first, for every kind and sender.
    ("reconnect needed", facts(state="reconnect_needed"), "account_reconnect_needed"),
    ("disconnected human", facts(human=True, state="disconnected"), "account_disconnected"),
    ("reconnect needed public", facts(SendKind.PUBLIC_REPLY, state="reconnect_needed"),
     "account_reconnect_needed"),
    ("reconnect needed private",
     facts(SendKind.PRIVATE_REPLY, comment_ago=H, state="reconnect_needed"),
     "account_reconnect_needed"),
    # Quick replies: at most 13, titles at most 20 characters.
    ("13 quick replies", facts(titles=tuple(f"q{i}" for i in range(MAX_QUICK_REPLIES))), OPEN),
    ("14 quick replies", facts(titles=tuple(f"q{i}" for i in range(MAX_QUICK_REPLIES + 1))),
     "invalid_quick_replies"),
    ("title 20 chars", facts(titles=("x" * 20,)), OPEN),
    ("title 21 chars", facts(titles=("ok", "x" * 21)), "invalid_quick_replies"),
    ("title 20 emoji", facts(titles=("😀" * 20,)), OPEN),
    ("14 quick replies, human, closed window",
     facts(human=True, inbound_ago=30 * D, titles=("a",) * 14), "invalid_quick_replies"),
]


@pytest.mark.parametrize(("name", "f", "expected"), CASES, ids=[c[0] for c in CASES])
def test_check_send(name: str, f: SendFacts, expected: Clearance | str) -> None:
    assert verdict(f) == expected


def test_refusals_explain_themselves() -> None:
    closed = check_send(facts(inbound_ago=30 * H), NOW)
    assert isinstance(closed, Refusal) and "30.0 h" in closed.detail and "24 h" in closed.detail
    human = check_send(facts(human=True, inbound_ago=9 * D), NOW)
    assert isinstance(human, Refusal) and "9.0 days" in human.detail and "7 days" in human.detail
    unknown = check_send(facts(SendKind.PRIVATE_REPLY, comment_ago=None), NOW)
    assert isinstance(unknown, Refusal) and "unknown" in unknown.detail
    account = check_send(facts(state="reconnect_needed"), NOW)
    assert isinstance(account, Refusal) and "instaset connect" in account.detail


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    kind=st.sampled_from(list(SendKind)), human=st.booleans(),
    inbound_ago=st.none() | st.floats(0, 60 * D), paused_for=st.none() | st.floats(-D, D),
)
def test_never_tagged_unless_a_human_writes_outside_24h(
    kind: SendKind, human: bool, inbound_ago: float | None, paused_for: float | None
) -> None:
    f = facts(kind, human=human, inbound_ago=inbound_ago, paused_for=paused_for, comment_ago=H)
    out = check_send(f, NOW)
    if isinstance(out, Clearance) and out.human_agent_tag:
        assert human and kind not in (SendKind.SENDER_ACTION, SendKind.PRIVATE_REPLY,
                                      SendKind.PUBLIC_REPLY)
        assert inbound_ago is not None and WINDOW_SECONDS < inbound_ago <= HUMAN_AGENT_SECONDS
    # A human send is never refused for a pause; automation always is while it lasts.
    paused = f.paused_until is not None and f.paused_until > NOW
    assert (isinstance(out, Refusal) and out.reason == "paused") == (paused and not human)


# -- budgets ---------------------------------------------------------------------------------
class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


ACCT = "17841400000000001"


def test_budget_allows_limit_then_says_how_long_to_wait() -> None:
    clock = FakeClock()
    b = Budgets({SendClass.TEXT: Budget(3, 1.0)}, clock)
    assert [b.reserve(ACCT, SendClass.TEXT) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = b.reserve(ACCT, SendClass.TEXT)
    assert wait == pytest.approx(1.0 * WINDOW_MARGIN)
    clock.t += wait / 2
    assert b.reserve(ACCT, SendClass.TEXT) == pytest.approx(wait / 2)  # a refusal records nothing
    clock.t += wait / 2  # the whole window passed: three slots again, and no fourth
    assert [b.reserve(ACCT, SendClass.TEXT) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.reserve(ACCT, SendClass.TEXT) == pytest.approx(1.0 * WINDOW_MARGIN)


def test_budgets_are_per_account_and_class() -> None:
    clock = FakeClock()
    b = Budgets({SendClass.TEXT: Budget(1, 1.0), SendClass.MEDIA: Budget(1, 1.0)}, clock)
    assert b.reserve(ACCT, SendClass.TEXT) == 0.0
    assert b.reserve(ACCT, SendClass.TEXT) > 0
    assert b.reserve(ACCT, SendClass.MEDIA) == 0.0
    assert b.reserve("other", SendClass.TEXT) == 0.0
    # A class without a budget is never held back.
    assert all(b.reserve(ACCT, SendClass.PUBLIC_REPLY) == 0.0 for _ in range(100))


def test_block_holds_the_class_until_meta_said() -> None:
    clock = FakeClock()
    b = Budgets({SendClass.TEXT: Budget(100, 1.0)}, clock)
    b.block(ACCT, SendClass.TEXT, 60.0)
    assert b.reserve(ACCT, SendClass.TEXT) == pytest.approx(60.0)
    assert b.reserve(ACCT, SendClass.MEDIA) == 0.0  # other classes are not blocked
    assert b.reserve("other", SendClass.TEXT) == 0.0  # nor other accounts
    b.block(ACCT, SendClass.TEXT, 10.0)  # a shorter block does not shorten the longer one
    clock.t += 30.0
    assert b.reserve(ACCT, SendClass.TEXT) == pytest.approx(30.0)
    clock.t += 30.0
    assert b.reserve(ACCT, SendClass.TEXT) == 0.0


def test_budgets_from_config() -> None:
    b = budgets_from_config(20, 0.5, 200)
    assert b.budgets == {
        SendClass.TEXT: Budget(20, 1.0),
        SendClass.MEDIA: Budget(1, 2.0),  # 0.5/s: one send per 2 s
        SendClass.PRIVATE_REPLY: Budget(200, 3600.0),
        SendClass.PUBLIC_REPLY: Budget(20, 1.0),
        SendClass.LIVE_PRIVATE_REPLY: Budget(5, 1.0),  # its own, per second (default 5)
    }
    live = budgets_from_config(20, 0.5, 200, live_private_replies_per_second=0.5)
    assert live.budgets[SendClass.LIVE_PRIVATE_REPLY] == Budget(1, 2.0)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    limit=st.integers(1, 8),
    window=st.sampled_from([0.5, 1.0, 2.0, 3600.0]),
    steps=st.lists(st.integers(0, 400), min_size=1, max_size=120),
    obey=st.booleans(),
)
def test_never_more_than_limit_in_any_window(
    limit: int, window: float, steps: list[int], obey: bool
) -> None:
    """Whatever the arrival pattern (steps in 1/128 of the window), the accepted sends never
    exceed ``limit`` within any ``window`` (Meta's, without our margin); and a caller that
    waits what it was told is then accepted (the budget never starves it; float rounding at
    the edge may ask for one more millisecond)."""
    clock = FakeClock(0.0)
    b = Budgets({SendClass.TEXT: Budget(limit, window)}, clock)
    accepted: list[float] = []
    for step in steps:
        clock.t += step * window / 128
        wait = b.reserve(ACCT, SendClass.TEXT)
        if wait == 0.0:
            accepted.append(clock.t)
        elif obey:
            clock.t += wait
            again = b.reserve(ACCT, SendClass.TEXT)
            if again:  # float rounding at the window's edge: one more millisecond at most
                assert again == 0.001
                clock.t += again
                assert b.reserve(ACCT, SendClass.TEXT) == 0.0
            accepted.append(clock.t)
    for i, t in enumerate(accepted):
        assert sum(1 for u in accepted[i:] if u < t + window) <= limit


def test_a_burst_is_paced_not_doubled_at_the_window_edge() -> None:
    """A sliding log, not a token bucket: 2x the limit never fits in one window, even
    straddling a boundary."""
    clock = FakeClock(0.0)
    b = Budgets({SendClass.TEXT: Budget(5, 1.0)}, clock)
    clock.t = 0.99
    assert [b.reserve(ACCT, SendClass.TEXT) for _ in range(5)] == [0.0] * 5
    clock.t = 1.01
    assert all(b.reserve(ACCT, SendClass.TEXT) > 0 for _ in range(5))
    clock.t = 0.99 + WINDOW_MARGIN
    assert [b.reserve(ACCT, SendClass.TEXT) for _ in range(5)] == [0.0] * 5



def test_a_waiting_send_gets_its_own_slot_and_wakes_once() -> None:
    """Over budget, each keyed send is handed a distinct future slot: coming back at that
    time it goes at once, and the slots never put more than ``limit`` in any window."""
    clock = FakeClock(0.0)
    b = Budgets({SendClass.TEXT: Budget(2, 1.0)}, clock)
    waits = {f"k{i}": b.reserve(ACCT, SendClass.TEXT, f"k{i}") for i in range(7)}
    assert [w for w in waits.values() if w == 0.0] == [0.0, 0.0]
    slots = sorted(w for w in waits.values() if w > 0)
    assert slots == pytest.approx([1.05, 1.05, 2.1, 2.1, 3.15])
    starts = [0.0, 0.0]
    for key, wait in sorted(waits.items(), key=lambda kv: kv[1]):
        if wait == 0.0:
            continue
        clock.t = wait
        assert b.reserve(ACCT, SendClass.TEXT, key) == 0.0  # its turn: no second wait
        starts.append(clock.t)
    for i, t in enumerate(starts):
        assert sum(1 for u in starts[i:] if u < t + 1.0) <= 2
