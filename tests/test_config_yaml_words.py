"""Unquoted yes/no/on/off/true/false in a config file: text where the config wants text,
true or false where it wants a yes/no.

YAML 1.1 (PyYAML) reads all of them as booleans. Before, a text position turned every true
into "Yes" and every false into "No", so ``keywords: [on]`` was the keyword "Yes" and a
``quick_replies: [On, Off]`` chip said "Yes". The loader now keeps the word as written
(:class:`~instaset.engine.values.YamlWord`) and each position reads it its way.
"""

# Expected messages read best one per line, so long lines are allowed here.
# ruff: noqa: E501

from __future__ import annotations

import json

import pytest

from instaset.config import config_to_json, parse_config_text
from instaset.engine.triggers import match_keywords
from tests.config_helpers import problems

WORDS = ["yes", "Yes", "YES", "no", "No", "on", "On", "ON", "off", "Off", "OFF",
         "true", "True", "false", "FALSE"]


def workflow(trigger: str = "dm: {keywords: [hi]}", steps: str = "- reply: hi") -> str:
    body = "".join(f"      {line}\n" for line in steps.splitlines())
    return ("workflows:\n  - name: w\n    trigger:\n"
            f"      {trigger}\n    actions:\n{body}")


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_config_text(text, "config.yaml", {})


# --- text positions keep the word --------------------------------------------------------------

@pytest.mark.parametrize("word", WORDS)
def test_a_keyword_is_the_word_as_written(word: str) -> None:
    listed = parse(workflow(trigger=f"dm: {{keywords: [{word}, info]}}")).workflows[0]
    assert listed.trigger.dm is not None and listed.trigger.dm.keywords == (word, "info")
    single = parse(workflow(trigger=f"dm: {{keywords: {word}}}")).workflows[0]
    assert single.trigger.dm is not None and single.trigger.dm.keywords == (word,)


def test_an_on_keyword_matches_on_and_not_yes() -> None:
    dm = parse(workflow(trigger="dm: {keywords: [on, off]}")).workflows[0].trigger.dm
    assert dm is not None
    assert match_keywords(dm, "switch it ON please") == "on"
    assert match_keywords(dm, "turn it off") == "off"
    assert match_keywords(dm, "yes") is None  # before: the keywords were "Yes" and "No"


def test_quick_reply_titles_payloads_and_postback_payloads_are_the_words() -> None:
    config = parse(workflow(
        trigger="postback: {payload: [on, FALSE]}",
        steps="- reply: {text: Notify you, quick_replies: [On, Off, {title: Yes, payload: true}]}"))
    w = config.workflows[0]
    assert w.trigger.postback is not None and w.trigger.postback.payload == ("on", "FALSE")
    reply = w.actions[0].reply
    assert reply is not None
    assert [(q.title, q.effective_payload) for q in reply.quick_replies] == [
        ("On", "On"), ("Off", "Off"), ("Yes", "true")]


def test_a_reply_that_is_one_such_word_is_that_text() -> None:
    reply = parse(workflow(steps="- reply: on")).workflows[0].actions[0].reply
    assert reply is not None and reply.texts() == ("on",)


# --- yes/no positions read the truth -----------------------------------------------------------

@pytest.mark.parametrize("word", WORDS)
def test_a_switch_reads_the_word_as_true_or_false(word: str) -> None:
    truth = word.lower() in ("yes", "on", "true")
    config = parse(f"booking:\n  enabled: {word}\n")
    assert config.booking.enabled is truth
    # what `instaset config show` prints is a real boolean, not the word
    shown = json.loads(json.dumps(config_to_json(config)))
    assert shown["booking"]["enabled"] is truth


@pytest.mark.parametrize("word", ["yes", "On", "TRUE"])
def test_the_true_shorthands_take_every_true_word(word: str) -> None:
    w = parse(workflow(trigger=f"first_message: {word}",
                       steps=f"- typing: {word}\n- handoff: {word}\n- reply: hi")).workflows[0]
    assert w.trigger.first_message is not None
    typing, handoff, _ = w.actions
    assert typing.typing is True
    assert handoff.handoff is not None


@pytest.mark.parametrize(("word", "mode"), [
    ("off", "off"), ("no", "off"), ("false", "off"), ("OFF", "off"),
    ("on", "auto"), ("yes", "auto"), ("true", "auto"), ("'off'", "off"), ("draft", "draft"),
])
def test_ai_reply_words(word: str, mode: str) -> None:
    step = parse(workflow(steps=f"- ai_reply: {word}")).workflows[0].actions[0]
    assert step.ai_reply is not None and step.ai_reply.mode == mode


# --- what a wrong one says: the word as the creator wrote it ----------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    (workflow(steps="- typing: off"),
     "config.yaml:6:17: workflows[0].actions[0].typing: off is not allowed here: write 'typing: true' or remove the line"),
    (workflow(trigger="first_message: no"),
     "config.yaml:4:22: workflows[0].trigger.first_message: no is not allowed here: write 'first_message: true' or remove the line"),
    ("booking: off\n",
     "config.yaml:1:10: booking: must be a mapping of keys, got off (to turn booking off, write 'enabled: off' under 'booking:')"),
    ("booking: Yes\n",
     "config.yaml:1:10: booking: must be a mapping of keys, got Yes (to turn booking on, write 'enabled: Yes' under 'booking:')"),
    (workflow(steps="- score: on"),
     "config.yaml:6:16: workflows[0].actions[0].score: must be a number of points (score: 20) or {points: 20, reason: TEXT}, got on"),
])
def test_a_misplaced_word_is_named_as_written(text: str, expected: str) -> None:
    assert expected in problems(text)


def test_an_on_key_is_the_key_on() -> None:
    """`on:` as a key (GitHub Actions' habit) is the key "on", located on its own line;
    before, YAML's true could only be reported at the mapping."""
    text = "workflows:\n  - name: w\n    on: {dm: {keywords: [hi]}}\n    actions: [{reply: hi}]\n"
    assert "config.yaml:3:5: workflows[0]: unknown key 'on'" in problems(text)


@pytest.mark.parametrize("word", ["yes", "true", "On"])
def test_a_field_test_that_reads_as_yes_or_no_is_refused_with_the_two_readings(word: str) -> None:
    """Found by the session-15 fix review: `fields: {vip: yes}` (an error before, "got
    true") became a silent test of the text "yes". It is refused, naming both readings."""
    text = workflow().replace("    actions:", f"    when: {{fields: {{vip: {word}}}}}\n    actions:")
    [problem] = [p for p in problems(text) if "fields" in p]
    assert f"{word} is not a field test" in problem and "exists" in problem
    quoted = workflow().replace("    actions:", f"    when: {{fields: {{vip: '{word}'}}}}\n    actions:")
    when = parse(quoted).workflows[0].when
    assert when.fields["vip"].equals == word
