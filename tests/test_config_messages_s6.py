"""Config error messages a review found confusing, as the creator reads them.

1. A yes/no value where only ``true`` means something (``typing: false``, ``handoff: false``)
   says what to write instead of pydantic's "must be True" / "must be a mapping of keys".
2. An unclosed quote is reported where the quote opened, not where PyYAML gave up (often
   lines later); other YAML errors read as before.
"""

# Expected messages read best one per line, so long lines are allowed here.
# ruff: noqa: E501

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from instaset.cli import app
from instaset.config import parse_config_text
from instaset.config_yaml import yaml_problem
from tests.config_helpers import problems

runner = CliRunner()




def workflow(trigger: str = "dm: {keywords: [hi]}", steps: str = "- reply: hi") -> str:
    body = "".join(f"      {line}\n" for line in steps.splitlines())
    return ("workflows:\n  - name: welcome\n    trigger:\n"
            f"      {trigger}\n    actions:\n{body}")


# --- 1. yes/no values --------------------------------------------------------------------------

FLAG_CASES = [
    ("typing-false", workflow(steps="- reply: Hello\n- typing: false\n- reply: there"),
     "config.yaml:7:17: workflows[0].actions[1].typing: false is not allowed here: write 'typing: true' or remove the line"),
    ("typing-quoted-true", workflow(steps="- typing: 'true'"),
     "config.yaml:6:17: workflows[0].actions[0].typing: 'true' in quotes is text, not true: write 'typing: true' without quotes"),
    ("typing-zero", workflow(steps="- typing: 0"),
     "config.yaml:6:17: workflows[0].actions[0].typing: 0 is not allowed here: write 'typing: true' or remove the line"),
    ("typing-flow-style", workflow(steps="- {typing: false}"),
     "config.yaml:6:18: workflows[0].actions[0].typing: false is not allowed here: write 'typing: true' or remove the line"),
    ("handoff-false", workflow(steps="- handoff: false"),
     "config.yaml:6:18: workflows[0].actions[0].handoff: false is not allowed here: write 'handoff: true' or remove the line"),
    ("offer-booking-false", workflow(steps="- offer_booking: false"),
     "config.yaml:6:24: workflows[0].actions[0].offer_booking: false is not allowed here: write 'offer_booking: true' or remove the line"),
    ("first-message-false", workflow(trigger="first_message: false"),
     "config.yaml:4:22: workflows[0].trigger.first_message: false is not allowed here: write 'first_message: true' or remove the line"),
    ("story-mention-quoted-yes", workflow(trigger="story_mention: 'yes'"),
     "config.yaml:4:22: workflows[0].trigger.story_mention: 'yes' in quotes is text, not true: write 'story_mention: true' without quotes"),
    ("booking-false", "booking: false\n",
     "config.yaml:1:10: booking: must be a mapping of keys, got false (to turn booking off, write 'enabled: false' under 'booking:')"),
    ("booking-true", "booking: true\n",
     "config.yaml:1:10: booking: must be a mapping of keys, got true (to turn booking on, write 'enabled: true' under 'booking:')"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in FLAG_CASES], ids=[c[0] for c in FLAG_CASES])
def test_flag_snapshots(text: str, expected: str) -> None:
    assert problems(text) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # no 'true' shorthand and no 'enabled' switch: nothing better to say than before
        ("ai: false\n", "config.yaml:1:5: ai: must be a mapping of keys, got false"),
        (workflow(steps="- score: false"),
         "config.yaml:6:16: workflows[0].actions[0].score: must be a number of points (score: 20) or {points: 20, reason: TEXT}, got false"),
        (workflow(steps="- score: lots"),
         "config.yaml:6:16: workflows[0].actions[0].score: must be a number of points (score: 20) or {points: 20, reason: TEXT}, got 'lots'"),
        # a list of one bad item is not also "too short"; a bad item of the list branch is
        # not also "must be 'any'"
        (workflow(steps="- buttons: {text: x, buttons: [{title: B, url: 'https://x.example', payload: P}]}"),
         "config.yaml:6:38: workflows[0].actions[0].buttons.buttons[0]: a button has either url or payload, not both"),
        (workflow(trigger="comment: {keywords: [x], media: [17900000000000001]}"),
         "config.yaml:4:40: workflows[0].trigger.comment.media[0]: must be a string, got 17900000000000001 (put it in quotes)"),
        (workflow(trigger="dm: false"),
         "config.yaml:4:11: workflows[0].trigger.dm: must be a mapping of keys, got false"),
        ("workflows:\n  - false\n", "config.yaml:2:5: workflows[0]: must be a mapping of keys, got false"),
        # other literals keep their wording and suggestion
        (workflow(steps="- ai_reply: drfat"),
         "config.yaml:6:19: workflows[0].actions[0].ai_reply: must be 'auto', 'draft' or 'off', got 'drfat' (did you mean 'draft'?)"),
    ],
)
def test_other_wrong_values_keep_their_wording(text: str, expected: str) -> None:
    assert problems(text) == [expected]


@pytest.mark.parametrize("steps", ["- typing: true", "- handoff: true", "- offer_booking: true", "- ai_reply: true"])
def test_the_suggested_fix_is_valid(steps: str) -> None:
    config = parse_config_text(workflow(steps=steps), "config.yaml", {})
    assert config.workflows[0].actions[0].kind == steps[2:].split(":")[0]


@pytest.mark.parametrize("value", ["off", "no", "false", "'off'"])
def test_ai_reply_off_unquoted_is_off_not_an_error(value: str) -> None:
    """YAML reads a bare `off` as false: `ai_reply: off` (as the docs write it) is mode off;
    the message used to advise `ai_reply: true`, which is auto."""
    config = parse_config_text(workflow(steps=f"- ai_reply: {value}"), "config.yaml", {})
    step = config.workflows[0].actions[0]
    assert step.ai_reply is not None and step.ai_reply.mode == "off"


def test_an_empty_typing_step_means_true_like_an_empty_handoff_means_defaults() -> None:
    config = parse_config_text(workflow(steps="- typing:\n- reply: hi"), "config.yaml", {})
    typing, reply = config.workflows[0].actions
    assert (typing.kind, typing.typing) == ("typing", True)
    assert reply.kind == "reply"


def test_the_suggested_trigger_fix_is_valid() -> None:
    config = parse_config_text(workflow(trigger="first_message: true"), "config.yaml", {})
    assert config.workflows[0].trigger.first_message is not None


def test_a_step_with_two_problems_reports_both() -> None:
    text = workflow(steps="- typing: false\n- handoff: false")
    assert problems(text) == [
        "config.yaml:6:17: workflows[0].actions[0].typing: false is not allowed here: write 'typing: true' or remove the line",
        "config.yaml:7:18: workflows[0].actions[1].handoff: false is not allowed here: write 'handoff: true' or remove the line",
    ]


# --- 2. quotes ---------------------------------------------------------------------------------

QUOTE_CASES = [
    # the usual case: the next value's opening quote closes the text, YAML fails right after
    ("unclosed-then-next-quote", workflow(steps='- reply: "Hello\n- reply: "there"\n- tag: vip'),
     'config.yaml:6:16: invalid YAML: unclosed quote starting here? The text runs on to the next " (line 7, column 16) and YAML cannot read what follows it; add the closing " on line 6'),
    ("unclosed-in-mapping", 'ai:\n  persona: "Jess\n  model: "gemini"\nserver: {port: 1}\n',
     'config.yaml:2:12: invalid YAML: unclosed quote starting here? The text runs on to the next " (line 3, column 10) and YAML cannot read what follows it; add the closing " on line 2'),
    ("unclosed-in-flow-list", workflow(trigger='dm: {keywords: ["hi, hello]}', steps='- reply: "Hello"'),
     'config.yaml:4:23: invalid YAML: unclosed quote starting here? The text runs on to the next " (line 6, column 16) and YAML cannot read what follows it; add the closing " on line 4'),
    # no other quote follows: PyYAML's own "while scanning a quoted scalar"
    ("unclosed-to-end-of-file", workflow(steps='- reply: "Hello there'),
     'config.yaml:6:16: invalid YAML: unclosed quote starting here: no closing " before the end of the file; add it where the text should end'),
    ("unclosed-single-to-end-of-file", "timezone: UTC\nai:\n  persona: 'I am Jess\nserver:\n  port: 8080\n",
     "config.yaml:3:12: invalid YAML: unclosed quote starting here: no closing ' before the end of the file; add it where the text should end"),
    ("unclosed-to-document-separator", 'timezone: "UTC\n---\nx: 1\n',
     "config.yaml:1:11: invalid YAML: unclosed quote starting here: no closing \" before the document separator '---' on line 2; add it where the text should end"),
    # a quote inside the text closes it early
    ("apostrophe-in-single-quotes", "ai:\n  persona: 'I'm Jess'\n",
     "config.yaml:2:14: invalid YAML: this ' ends the quoted text started at column 12, and YAML cannot read what follows it; inside '...' write an apostrophe twice (I''m) or put the text in double quotes"),
    ("quote-in-double-quotes", 'ai:\n  persona: "He said "hi" to me"\n',
     'config.yaml:2:21: invalid YAML: this " ends the quoted text started at column 12, and YAML cannot read what follows it; inside "..." write a quote as \\" or put the text in single quotes'),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in QUOTE_CASES], ids=[c[0] for c in QUOTE_CASES])
def test_quote_snapshots(text: str, expected: str) -> None:
    assert problems(text) == [expected]


@pytest.mark.parametrize("text", [c[1] for c in QUOTE_CASES], ids=[c[0] for c in QUOTE_CASES])
def test_the_position_is_a_quote_character(text: str) -> None:
    [problem] = problems(text)
    found = re.match(r"config\.yaml:(\d+):(\d+): ", problem)
    assert found is not None
    line, column = int(found[1]), int(found[2])
    char = text.splitlines()[line - 1][column - 1]
    assert char in "'\""
    assert f" {char}" in problem  # the message names the quote it is about


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a quoted text over two lines is valid YAML: junk after its closing quote is not a
        # quote problem (there is a space between them), so PyYAML's words stay
        ('ai:\n  persona: "Jess\n    the coach" extra\n',
         "config.yaml:3:16: invalid YAML: expected <block end>, but found '<scalar>' (while parsing a block mapping started on line 2)"),
        ("server:\n  port: 1\n host: x\n",
         "config.yaml:3:2: invalid YAML: expected <block end>, but found '<block mapping start>' (while parsing a block mapping started on line 1)"),
        ("a: [1, 2\nb: 3\n",
         "config.yaml:2:2: invalid YAML: expected ',' or ']', but got ':' (while parsing a flow sequence started on line 1)"),
        ("server: {port: 1\nstorage: {}\n",
         "config.yaml:2:8: invalid YAML: expected ',' or '}', but got ':' (while parsing a flow mapping started on line 1)"),
        ('ai:\n  persona: "C:\\path"\n',
         "config.yaml:2:16: invalid YAML: found unknown escape character 'p' (while scanning a double-quoted scalar started on line 2)"),
        ("a: 1\n---\nb: 2\n",
         "config.yaml:2:1: invalid YAML: but found another document (expected a single document in the stream started on line 1)"),
        ("server:\n  port: 1\n    host: x\n", "config.yaml:3:9: invalid YAML: mapping values are not allowed here"),
        ("workflows:\n\t- name: x\n",
         "config.yaml:2:1: invalid YAML: found character '\\t' that cannot start any token (while scanning for the next token); indent with spaces: YAML does not allow tabs"),
    ],
)
def test_other_yaml_errors_read_as_before(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_without_the_text_the_opening_quote_is_still_the_position() -> None:
    # read from a stream, PyYAML's marks do not carry the text: the quote character is
    # unknown and the "closed early" check cannot run, but nothing breaks
    text = 'ai:\n  persona: "Jess\n'
    with pytest.raises(yaml.MarkedYAMLError) as info:
        yaml.compose(io.StringIO(text), Loader=yaml.SafeLoader)
    assert yaml_problem(info.value, "config.yaml") == (
        "config.yaml:2:12: invalid YAML: unclosed quote starting here: no closing quote before the end of the file; add it where the text should end"
    )
    text = 'ai:\n  persona: "Jess\n  model: "x"\n'
    with pytest.raises(yaml.MarkedYAMLError) as info:
        yaml.compose(io.StringIO(text), Loader=yaml.SafeLoader)
    assert yaml_problem(info.value, "config.yaml").startswith("config.yaml:3:11: invalid YAML: expected <block end>")


# --- through the CLI ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (workflow(steps="- reply: Hello\n- typing: false"),
         "config.yaml:7:17: workflows[0].actions[1].typing: false is not allowed here: write 'typing: true' or remove the line"),
        (workflow(steps='- reply: "Hello\n- reply: "there"'),
         'config.yaml:6:16: invalid YAML: unclosed quote starting here? The text runs on to the next " (line 7, column 16) and YAML cannot read what follows it; add the closing " on line 6'),
    ],
)
def test_workflows_validate_prints_the_message(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    result = runner.invoke(app, ["--config", str(path), "workflows", "validate"])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"{tmp_path}/{expected}"
