"""Booking settings under which no slot is ever free are refused at load while slots are
offered (s19 left it): a ``slot_length`` longer than every window of ``availability``, or a
``min_notice`` not shorter than ``horizon``, loaded, and then every offer, tap and reschedule
sent ``booking.no_slots`` and notified the creator. What is refused is checked against the
slot walk itself (:func:`free_slots`), and so is the boundary that stays accepted: a window
exactly ``slot_length`` long holds one slot."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import yaml

from instaset.booking import free_slots
from instaset.config import BookingConfig, parse_config_text
from tests.config_helpers import problems

OFFER = ("workflows:\n  - name: book\n    trigger: {dm: {keywords: [book]}}\n"
         "    actions: [{offer_booking: true}]\n")
NINE_TO_TEN = ('[{days: mon-fri, from: "09:00", to: "10:00"},'
               ' {days: sat, from: "22:00", to: "22:30"}]')
# Every quarter hour of two weeks that span a DST change (Berlin, 30 March 2025), as "now".
NOWS = [datetime(2025, 3, 24, tzinfo=UTC).timestamp() + 900 * i for i in range(14 * 96)]
BERLIN = ZoneInfo("Europe/Berlin")


def never_a_slot(text: str) -> bool:
    """Whether ``free_slots`` finds nothing for the ``booking:`` section of ``text`` (read
    without the config-level checks) at any of :data:`NOWS`."""
    cfg = BookingConfig.model_validate(yaml.safe_load(text)["booking"])
    return not any(free_slots(cfg, BERLIN, now, limit=1) for now in NOWS[::7])


WHY = "so every booking offer (from {who}) finds no free time"
REFUSED = [
    ("booking:\n  slot_length: 61m\n  availability: " + NINE_TO_TEN + "\n" + OFFER,
     "config.yaml:2:16: booking.slot_length: 61m is longer than every window of"
     " booking.availability (the longest, 09:00-10:00, is 1h), "
     + WHY.format(who="workflow 'book'") + "; make it at most 1h, or widen the hours"),
    # a window across midnight is measured across it; 25 h is longer than any day
    ("booking:\n  enabled: true\n  slot_length: 25h\n  availability:\n"
     '    - {days: daily, from: "09:00", to: "09:00"}\n',
     "config.yaml:3:16: booking.slot_length: 25h is longer than every window of"
     " booking.availability (the longest, 09:00-09:00, is 1d), "
     # (not "or widen the hours": a whole day is as wide as they go)
     + WHY.format(who="booking.enabled: true") + "; make it at most 1d"),
    # only the hours are written: they are the mistake the error points at
    ("booking:\n  enabled: true\n  availability:\n"
     '    - {days: mon-fri, from: "23:50", to: "00:10"}\n' + OFFER,
     "config.yaml:4:5: booking.availability: every window is shorter than"
     " booking.slot_length (30m; the longest, 23:50-00:10, is 20m), "
     + WHY.format(who="booking.enabled: true and workflow 'book'")
     + "; widen the hours, or set booking.slot_length to at most 20m"),
    ("booking:\n  enabled: true\n  min_notice: 3d\n  horizon: 2d\n",
     "config.yaml:3:15: booking.min_notice: 3d is not shorter than booking.horizon (2d): a"
     " slot must start at least min_notice and at most horizon from now, "
     + WHY.format(who="booking.enabled: true") + "; make it shorter than 2d, or"
     " booking.horizon longer"),
    ("booking:\n  min_notice: 1d\n  horizon: 24h\n" + OFFER,
     "config.yaml:2:15: booking.min_notice: 1d is not shorter than booking.horizon (1d): a"
     " slot must start at least min_notice and at most horizon from now, "
     + WHY.format(who="workflow 'book'") + "; make it shorter than 1d, or booking.horizon"
     " longer"),
    # a min_notice of 0 cannot be shorter: the horizon is the one to fix (found in review)
    ("booking:\n  enabled: true\n  min_notice: 0s\n  horizon: 0s\n",
     "config.yaml:4:12: booking.horizon: 0s is not longer than booking.min_notice (0s): a"
     " slot must start at least min_notice and at most horizon from now, "
     + WHY.format(who="booking.enabled: true") + "; make it longer than 0s"),
    # only the horizon is written, under the default min_notice (2h)
    ("booking:\n  enabled: true\n  horizon: 90m\n",
     "config.yaml:3:12: booking.horizon: 90m is not longer than booking.min_notice (2h): a"
     " slot must start at least min_notice and at most horizon from now, "
     + WHY.format(who="booking.enabled: true") + "; make it longer than 2h, or"
     " booking.min_notice shorter"),
]


@pytest.mark.parametrize(("text", "expected"), REFUSED)
def test_settings_that_never_give_a_slot_are_refused(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_both_mistakes_are_reported_together() -> None:
    text = "booking:\n  enabled: true\n  slot_length: 9h\n  min_notice: 2d\n  horizon: 1d\n"
    assert [p.split(": ")[1] for p in problems(text)] == [
        "booking.slot_length", "booking.min_notice"]


@pytest.mark.parametrize(("text", "expected"), REFUSED[:3])
def test_what_is_refused_finds_no_slot_indeed(text: str, expected: str) -> None:
    # (min_notice against horizon is plain arithmetic: see free_slots' first lines)
    assert never_a_slot(text)


ACCEPTED = [
    # a window exactly slot_length long holds one slot (free_slots: `t + length <= end`)
    "booking:\n  enabled: true\n  slot_length: 1h\n  availability: " + NINE_TO_TEN + "\n",
    "booking:\n  enabled: true\n  slot_length: 24h\n  min_notice: 0s\n  horizon: 3d\n"
    '  availability: [{days: daily, from: "09:00", to: "09:00"}]\n',
    "booking:\n  enabled: true\n  slot_length: 20m\n  min_notice: 0s\n"
    '  availability: [{days: mon-fri, from: "23:50", to: "00:10"}]\n',
    # a bookable span of 1 minute: some "now" has a slot in it
    "booking:\n  enabled: true\n  min_notice: 1d\n  horizon: 1441m\n"
    '  availability: [{days: daily, from: "00:00", to: "24:00"}]\n',
    # the longest window is not the first (found in review: only the first was measured)
    "booking:\n  enabled: true\n  slot_length: 2h\n  availability:\n"
    '    - {days: mon, from: "09:00", to: "10:00"}\n'
    '    - {days: tue, from: "09:00", to: "12:00"}\n',
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_the_boundary_loads_and_gives_slots(text: str) -> None:
    parse_config_text(text, "config.yaml", {})
    assert not never_a_slot(text)


@pytest.mark.parametrize(
    "text",
    [
        "booking:\n  slot_length: 2h\n  availability: " + NINE_TO_TEN + "\n",  # unused
        "booking:\n  min_notice: 3d\n  horizon: 2d\n",
        "booking:\n  enabled: true\n  link: https://cal.com/jess\n  min_notice: 3d\n"
        "  horizon: 2d\n  slot_length: 2h\n  availability: " + NINE_TO_TEN + "\n" + OFFER,
        "booking:\n  min_notice: 3d\n  horizon: 2d\n" + OFFER.replace(
            "- name: book\n", "- name: book\n    enabled: false\n"),
    ],
)
def test_they_load_where_no_slot_is_offered(text: str) -> None:
    # as booking.availability: [] does: the slot settings are never read
    parse_config_text(text, "config.yaml", {})
