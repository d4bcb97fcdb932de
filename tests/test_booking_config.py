"""The booking messages' placeholders are checked when the config loads (audit s16 #1): an
unknown one or a lone brace used to pass `workflows validate` and then raise at every send
(no booking made, or the whole event's processing dead). Each message takes exactly the
names the booking code fills it with; what the loader accepts goes out filled in."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

import instaset.booking_desk
import instaset.booking_lifecycle
from instaset.booking import slot_payload
from instaset.cli import app
from instaset.config import BookingConfig, load_config, parse_config_text
from instaset.config_booking import BOOKING_TEXT_PLACEHOLDERS
from instaset.errors import ConfigError
from instaset.format_check import format_problem
from tests.config_helpers import problems
from tests.sending_harness import Clock, open_harness
from tests.test_booking_lifecycle import IGSID, NOW, quick, rows, tap, texts

REPO = Path(__file__).resolve().parent.parent

BAD = """\
timezone: UTC
booking:
  enabled: true
  intro: "Hi {username}! Pick a time ({timezone}):"
  confirmation: "You're booked for your {title} on {when} ({timezone})!"
  reminder: "Reminder: {title} on {when} ({Timezone})"
  cancelled: "Your {title} is off :-{"
  moved: "Moved to {when} }"
  reschedule_intro: "New time for {title} on {when}?"
  link: https://cal.com/jess/30min
  link_text: "Book here: {url}"
"""


def test_unknown_placeholders_and_lone_braces_are_located_errors(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BAD)
    try:
        load_config(path, env={})
    except ConfigError as exc:
        problems = exc.problems
    else:
        raise AssertionError("loaded a config whose booking texts cannot be filled")
    assert problems == [
        f"{path}:4:10: booking.intro: unknown placeholder {{username}} (this message can use"
        " {timezone})",
        f"{path}:5:17: booking.confirmation: unknown placeholder {{title}} (this message can"
        " use {when}, {timezone})",
        f"{path}:6:13: booking.reminder: unknown placeholder {{Timezone}} (did you mean"
        " {timezone}? this message can use {title}, {when}, {timezone})",
        f"{path}:7:14: booking.cancelled: a lone '{{': write {{{{ for a literal '{{' (this"
        " message can use {title}, {when}, {timezone})",
        f"{path}:8:10: booking.moved: a lone '}}': write }}}} for a literal '}}' (this message"
        " can use {title}, {when}, {timezone})",
        f"{path}:9:21: booking.reschedule_intro: unknown placeholder {{when}} (this message"
        " can use {title}, {timezone})",
        f"{path}:11:14: booking.link_text: unknown placeholder {{url}} (this message can use"
        " {link})",
    ]


def test_workflows_validate_fails_on_them(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BAD)
    result = CliRunner().invoke(app, ["--config", str(path), "workflows", "validate"])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 7 and all(line.startswith(f"{path}:") for line in lines)
    assert lines[0].endswith("booking.intro: unknown placeholder {username} (this message"
                             " can use {timezone})")


def test_other_template_mistakes() -> None:
    names = ("when", "timezone")
    assert format_problem("{when} ({timezone}), {{literally}}", names) is None
    assert format_problem("{when!r}", names) == (
        "placeholder {when!r}: write it as {when}, with nothing after the name")
    assert format_problem("{when:%H}", names) == (
        "placeholder {when:%H}: write it as {when}, with nothing after the name")
    assert format_problem("{} and {0}", names) == (
        "unknown placeholders {}, {0} (this message can use {when}, {timezone}; write {{ and"
        " }} for a literal brace)")
    assert format_problem("{when.year} {title}", names) == (
        "unknown placeholders {when.year}, {title} (did you mean {when}? this message can"
        " use {when}, {timezone}; write {{ and }} for a literal brace)")
    assert format_problem("ends open {when", names) == (
        "a lone '{': write {{ for a literal '{' (this message can use {when}, {timezone})")
    assert format_problem("{timezone}", ()) == (
        "unknown placeholder {timezone} (this message takes no placeholders)")


def test_the_defaults_and_the_shipped_example_load() -> None:
    for name, names in BOOKING_TEXT_PLACEHOLDERS.items():
        default = BookingConfig.model_fields[name].default
        assert format_problem(default, names) is None, name
    load_config(REPO / "config.example.yaml", env={})  # raises if a text there is refused


def _cfg_field(node: ast.expr) -> str | None:
    """``F`` of an expression ``<...>.cfg.F``."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and (
            node.value.attr == "cfg"):
        return node.attr
    return None


def _code_placeholders() -> dict[str, set[frozenset[str]]]:
    """Booking field -> the keyword sets the booking code passes to its ``.format``."""
    trees = [ast.parse(Path(str(m.__file__)).read_text("utf-8"))
             for m in (instaset.booking_desk, instaset.booking_lifecycle)]
    calls = [n for tree in trees for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute)]
    [text_def] = [n for tree in trees for n in ast.walk(tree)
                  if isinstance(n, ast.FunctionDef) and n.name == "_text"]
    [text_format] = [n for n in ast.walk(text_def) if isinstance(n, ast.Call)
                     and isinstance(n.func, ast.Attribute) and n.func.attr == "format"]
    found: dict[str, set[frozenset[str]]] = defaultdict(set)
    for call in calls:
        assert isinstance(call.func, ast.Attribute)
        field = _cfg_field(call.func.value)
        if call.func.attr == "format" and field is not None:
            found[field].add(frozenset(str(k.arg) for k in call.keywords))
        elif call.func.attr == "_text":
            assert isinstance(call.args[0], ast.Constant), ast.unparse(call)
            found[str(call.args[0].value)].add(
                frozenset(str(k.arg) for k in text_format.keywords))
    return found


def test_the_checked_names_are_the_ones_the_code_fills_in() -> None:
    """If the booking code formats another text, or with other names, the check at load has
    to follow (BOOKING_TEXT_PLACEHOLDERS in config_booking.py)."""
    found = _code_placeholders()
    assert {f: {frozenset(n)} for f, n in BOOKING_TEXT_PLACEHOLDERS.items()} == dict(found)


async def test_what_loads_is_sent_filled_in(tmp_path: Path) -> None:
    """Every placeholder the loader accepts, and doubled braces, through the real daemon:
    offer, booking, reschedule, move, reminder and cancel all go out."""
    path = tmp_path / "config.yaml"
    path.write_text("""\
timezone: UTC
booking:
  enabled: true
  min_notice: 0
  horizon: 7d
  offer: 3
  availability: [{days: daily, from: "09:00", to: "17:00"}]
  reminders: [1h]
  intro: "{{1}} Pick ({timezone}):"
  confirmation: "{{2}} {when} ({timezone})"
  reschedule_intro: "{{3}} {title} ({timezone})"
  moved: "{{4}} {title} {when} ({timezone})"
  reminder: "{{5}} {title} {when} ({timezone})"
  cancelled: "{{6}} {title} {when} ({timezone})"
  title: Chat
workflows:
  - name: book
    trigger: {dm: {keywords: [book]}}
    actions:
      - offer_booking: true
""")
    config = load_config(path, env={})
    # the runtime installs the booking feature itself, from the config it is given
    async with open_harness(
        tmp_path, clock=Clock(NOW, frozen=True),
        workflows=[w.model_dump(by_alias=True, exclude_none=True) for w in config.workflows],
        extra={"timezone": "UTC",
               "booking": config.booking.model_dump(mode="json", by_alias=True)},
    ) as h:
        await h.dm(IGSID, "book")
        await h.settle()
        assert texts(h) == ["{1} Pick (UTC):"]
        assert quick(h)[0][1] == slot_payload(NOW + 3 * 3600)
        await tap(h, *quick(h)[0])  # Monday 09:00
        await tap(h, "Reschedule", dict(quick(h))["Reschedule"])
        await tap(h, *quick(h)[1])  # Monday 10:00
        await h.settle(advance_up_to=3 * 3600)  # the 09:00 reminder of 10:00
        [booking] = await rows(h, "SELECT id FROM bookings")
        await tap(h, "Cancel", f"BOOKING_CANCEL:{booking['id']}")
        assert texts(h) == [
            "{1} Pick (UTC):",
            "{2} Monday 02 June 2025, 09:00 (UTC)",
            "{3} Chat (UTC)",
            "{4} Chat Monday 02 June 2025, 10:00 (UTC)",
            "{5} Chat Monday 02 June 2025, 10:00 (UTC)",
            "{6} Chat Monday 02 June 2025, 10:00 (UTC)",
        ]
        assert await rows(h, "SELECT state, last_error FROM jobs WHERE state != 'done'") == []


async def test_the_link_text_is_sent_filled_in(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("""\
booking:
  enabled: true
  link: https://cal.com/jess/30min
  link_text: "{{Book}} here: {link}"
workflows:
  - name: book
    trigger: {dm: {keywords: [book]}}
    actions:
      - offer_booking: true
""")
    config = load_config(path, env={})
    async with open_harness(
        tmp_path, clock=Clock(NOW, frozen=True),
        workflows=[w.model_dump(by_alias=True, exclude_none=True) for w in config.workflows],
        extra={"booking": config.booking.model_dump(mode="json", by_alias=True)},
    ) as h:
        await h.dm(IGSID, "book")
        await h.settle()
        assert texts(h) == [
            f"{{Book}} here: https://cal.com/jess/30min?utm_content={IGSID}"]


@pytest.mark.parametrize("key", sorted(BOOKING_TEXT_PLACEHOLDERS))
@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_booking_text_is_a_located_error(key: str, blank: str) -> None:
    """Found by the s18 config audit: only the placeholders were checked, so `intro: ""`
    loaded and Meta refused every booking offer ("message text must not be empty"); the same
    held for each booking text."""
    text = f"timezone: UTC\nbooking:\n  enabled: true\n  {key}: {blank!r}\n"
    (found,) = problems(text)
    assert found.startswith(f"config.yaml:4:{len(key) + 5}: booking.{key}: must not be blank"
                            f" (got {blank!r}); write the message, or leave the key out"), found


ADD_HOURS = ('add some, e.g. - {days: mon-fri, from: "09:00", to: "17:00"}, or set'
             " booking.link to your scheduling page")
OFFER = ("workflows:\n  - name: book\n    trigger: {dm: {keywords: [book]}}\n"
         "    actions: [{offer_booking: true}]\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("booking:\n  availability: []\n" + OFFER,
         "config.yaml:2:17: booking.availability: no weekly hours, so every booking offer"
         " (from workflow 'book') finds no free time; " + ADD_HOURS),
        ("booking:\n  enabled: true\n  availability: []\n",
         "config.yaml:3:17: booking.availability: no weekly hours, so every booking offer"
         " (from booking.enabled: true) finds no free time; " + ADD_HOURS),
    ],
)
def test_no_hours_while_booking_is_offered_is_refused(text: str, expected: str) -> None:
    # It loaded, then every offer, tap and reschedule sent booking.no_slots and notified
    # the creator.
    assert problems(text) == [expected]


@pytest.mark.parametrize(
    "text",
    [
        "booking:\n  availability: []\n",  # booking unused: the hours are never read
        "booking:\n  enabled: true\n  link: https://cal.com/jess\n  availability: []\n" + OFFER,
        "booking:\n  availability: []\n" + OFFER.replace("- name: book\n",
                                                        "- name: book\n    enabled: false\n"),
    ],
)
def test_no_hours_load_where_no_slot_is_offered(text: str) -> None:
    assert parse_config_text(text, "config.yaml", {}).booking.availability == []
