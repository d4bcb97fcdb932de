"""Snapshot tests of the workflow lints: each row is a config and the exact warnings
``workflows validate`` would print for it (file:line:column, workflow, place, message,
code)."""

# Expected messages read best one per line, so long lines are allowed here.
# ruff: noqa: E501

from __future__ import annotations

from pathlib import Path

import pytest

from instaset.config import load_config, parse_config_text
from instaset.engine.model import Workflow
from instaset.workflow_lint import lint_config, lint_workflows

ROOT = Path(__file__).resolve().parent.parent

CASES: list[tuple[str, str, list[str]]] = [
    (
        "text-too-long",
        f"""\
workflows:
  - name: long
    trigger:
      dm: {{keywords: [long]}}
    actions:
      - reply: "{"a" * 980}{{username}}"
      - reply:
          variants:
            - "ok"
            - "{"é" * 501}"
      - reply: "{"b" * 960}{{username}}"
      - ask: {{field: email, type: email, prompt: "{"c" * 1001}"}}
""",
        [
            "config.yaml:6:9: warning: long: step 1 (reply): text is 1010 bytes after templating, over Instagram's 1000-byte limit for one message: it goes out as 2 messages (as the private reply to a comment, only the first: the rest needs the commenter's open window) (counting {username} as 30, fields as 50, {text} as 100 and links as 60 bytes) [text-too-long]",
            "config.yaml:10:15: warning: long: step 2 (reply): variant 2 is 1002 bytes, over Instagram's 1000-byte limit for one message: it goes out as 2 messages (as the private reply to a comment, only the first: the rest needs the commenter's open window) [text-too-long]",
            "config.yaml:12:42: warning: long: step 4 (ask): prompt is 1001 bytes, over Instagram's 1000-byte limit for one message: it goes out as 2 messages (as the private reply to a comment, only the first: the rest needs the commenter's open window) [text-too-long]",
        ],
    ),
    (
        "public reply and card limits",
        f"""\
workflows:
  - name: comments
    trigger:
      comment: {{keywords: [x]}}
    actions:
      - private_reply: "thanks"
      - public_reply: "{"b" * 2190}{{username}}"
""",
        [
            "config.yaml:7:9: warning: comments: step 2 (public_reply): text is 2220 characters after templating; the limit is 2200 (counting {username} as 30, fields as 50, {text} as 100 and links as 60 bytes) [text-too-long]",
        ],
    ),
    (
        "quick replies on a comment's private reply",
        """\
workflows:
  - name: pick
    trigger:
      comment: {keywords: [pick]}
    actions:
      - tag: picked
      - reply:
          text: "Which one?"
          quick_replies: [A, B]
  - name: ask-on-comment
    trigger:
      comment: {keywords: [size]}
    actions:
      - ask: {field: size, type: choice, choices: [S, M, L], prompt: "Your size?"}
  - name: card-on-comment
    trigger:
      live_comment: {keywords: [card]}
    actions:
      - template:
          elements: [{title: "Guide"}]
""",
        [
            "config.yaml:7:9: warning: pick: step 2 (reply): on a comment this reply is the comment's private reply, which cannot carry quick replies: they are dropped [quick-replies-on-comment]",
            "config.yaml:14:9: warning: ask-on-comment: step 1 (ask): on a comment this question is the comment's private reply, which cannot carry the choices as quick replies [quick-replies-on-comment]",
            "config.yaml:19:9: warning: card-on-comment: step 1 (template): on a comment the first message is the private reply, which can only be text: this template is refused (start with a reply) [comment-reply-not-text]",
        ],
    ),
    (
        "shadowed by a higher priority identical trigger",
        """\
workflows:
  - name: catch-all
    trigger:
      fallback: true
    actions:
      - reply: "hi"
  - name: guide-low
    trigger:
      dm: {keywords: [guide]}
    actions:
      - reply: "low"
  - name: guide-high
    priority: 5
    trigger:
      dm: {keywords: [guide]}
    actions:
      - reply: "high"
  - name: second-fallback
    trigger:
      fallback: true
    actions:
      - reply: "never"
""",
        [
            "config.yaml:8:5: warning: guide-low: trigger: never fires: guide-high has the same trigger (dm), no conditions, and runs first (priority 5 over 0) [shadowed]",
            "config.yaml:19:5: warning: second-fallback: trigger: never fires: catch-all has the same trigger (fallback), no conditions, and runs first (same priority, earlier in the file) [shadowed]",
        ],
    ),
    (
        "conditions keep the second workflow reachable",
        """\
workflows:
  - name: vip
    priority: 5
    trigger:
      dm: {keywords: [guide]}
    when:
      tags_any: [vip]
    actions:
      - reply: "vip"
  - name: everyone
    trigger:
      dm: {keywords: [Guide, more]}
    actions:
      - reply: "everyone"
""",
        [
            "config.yaml:12:23: warning: everyone: trigger dm: keyword 'Guide' is also in vip, which runs first (priority 5 over 0): here it only fires when their conditions fail [duplicate-keyword]",
        ],
    ),
    (
        "comment keywords on different media do not collide",
        """\
workflows:
  - name: reel-a
    trigger:
      comment: {keywords: [guide], media: ["111"]}
    actions:
      - private_reply: "a"
  - name: reel-b
    trigger:
      comment: {keywords: [guide], media: ["222"]}
    actions:
      - private_reply: "b"
""",
        [],
    ),
    (
        "keywords that never (or always) match after folding",
        """\
workflows:
  - name: kw
    trigger:
      dm: {keywords: ["guide!", "\\ufe0f"], match: word}
      story_reply: {keywords: ["a*", "guía"], match: regex}
      comment: {media: []}
    actions:
      - private_reply: "x"
  - name: exact
    trigger:
      dm: {keywords: ["?!"], match: exact}
    actions:
      - reply: "x"
""",
        [
            "config.yaml:4:23: warning: kw: trigger dm: keyword 'guide!' has punctuation at an edge: in word mode the message must contain it too, so 'guide' alone does not match [keyword-punctuation]",
            "config.yaml:4:33: warning: kw: trigger dm: keyword '\ufe0f' (U+FE0F) is empty once accents and variation selectors are removed, so it never matches [keyword-never-matches]",
            "config.yaml:5:32: warning: kw: trigger story_reply: regex 'a*' matches an empty string, so it matches every message [regex-matches-everything]",
            "config.yaml:5:38: warning: kw: trigger story_reply: regex 'guía' has accents: a message typed without them ('guia') does not match; use a character class such as [ií] [regex-accents]",
            "config.yaml:6:17: warning: kw: trigger comment: media: [] lists no post, so no comment ever matches (use media: any, or list media ids) [no-media]",
            "config.yaml:11:23: warning: exact: trigger dm: keyword '?!' is only punctuation, which exact matching ignores: it matches only messages that are punctuation [keyword-never-matches]",
        ],
    ),
    (
        "fields, links and unreachable steps",
        """\
workflows:
  - name: guide
    trigger:
      dm: {keywords: [guide]}
    when:
      fields: {level: pro}
    actions:
      - reply: "Hi {first_name|there}, your {plan} plan: {link: my guide}"
      - ask: {field: email, type: email, prompt: "Email?"}
      - reply: "Sent to {email} ({tier|basic})"
      - handoff: {note: "wants {plan}"}
      - reply: "never sent"
      - tag: never
  - name: wait
    trigger:
      dm: {keywords: [wait]}
    actions:
      - reply: "ok"
      - delay: 1h
""",
        [
            "config.yaml:6:16: warning: guide: when: condition on field 'level', which no workflow sets (set: or ask:) [unknown-field]",
            "config.yaml:8:9: warning: guide: step 1 (reply): text uses {plan}, which no workflow sets (set: or ask:), so it renders empty; set it or give a fallback: {plan|...} [unknown-field]",
            "config.yaml:8:9: warning: guide: step 1 (reply): {link: my guide} is not a tracked link and would be sent as written; link names are letters, digits, '.', '_' and '-' with no spaces: {link:NAME} [malformed-link]",
            "config.yaml:11:19: warning: guide: step 4 (handoff): note uses {plan}, which no workflow sets (set: or ask:), so it renders empty; set it or give a fallback: {plan|...} [unknown-field]",
            "config.yaml:12:9: warning: guide: step 5 (reply): never runs: the handoff in step 4 ends the workflow (2 steps after it) [unreachable-step]",
            "config.yaml:19:9: warning: wait: step 2 (delay): a delay at the end waits for nothing; remove it or add steps after it [unreachable-step]",
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_lint_snapshots(text: str, expected: list[str]) -> None:
    config = parse_config_text(text, "config.yaml", env={})
    assert [w.format() for w in lint_config(config, text=text, filename="config.yaml")] == expected


def test_unknown_link_names_are_checked_against_the_defined_links() -> None:
    wf = Workflow.model_validate({
        "name": "links", "trigger": {"dm": {"keywords": ["x"]}},
        "actions": [
            {"reply": "Guide: {link:guide} and {link:guid}"},
            {"buttons": {"text": "Book", "buttons": [{"title": "Book", "url": "{link:book}"}]}},
        ],
    })
    warnings = lint_workflows([wf], links={"guide", "calendar"})
    assert [(w.code, w.where, w.message) for w in warnings] == [
        ("unknown-link", "step 1 (reply)", "{link:guid} names no tracked link (defined: calendar, guide)"),
        ("unknown-link", "step 2 (buttons)", "{link:book} names no tracked link (defined: calendar, guide)"),
    ]
    # with no named links defined (today's config), every token would go out as written
    none = "is sent as written: no named links are defined (http(s) URLs in texts are tracked automatically, so write the URL itself)"
    assert [w.message for w in lint_workflows([wf])] == [
        f"{{link:guide}} {none}", f"{{link:guid}} {none}", f"{{link:book}} {none}"]


def test_urls_count_at_their_tracked_length_when_links_are_tracked() -> None:
    text = f"""\
workflows:
  - name: w
    trigger:
      dm: {{keywords: [x]}}
    actions:
      - reply: "{"a" * 985} https://x.co"
"""
    plain = parse_config_text(text, "config.yaml", env={})
    assert lint_config(plain, text=text) == []  # 998 bytes as written
    tracked = parse_config_text("server:\n  public_url: https://dm.example.com/\n" + text,
                                "config.yaml", env={})
    [w] = lint_config(tracked, text=text)  # https://dm.example.com/l/abcdefghij: 35 bytes
    assert (w.code, w.message.split(",")[0]) == ("text-too-long",
                                                 "text is 1021 bytes after templating")


def test_disabled_workflows_neither_shadow_nor_are_shadowed() -> None:
    text = """\
workflows:
  - name: old
    enabled: false
    priority: 9
    trigger:
      dm: {keywords: [guide]}
    actions:
      - reply: "old"
  - name: new
    trigger:
      dm: {keywords: [guide]}
    actions:
      - reply: "new"
"""
    config = parse_config_text(text, "config.yaml", env={})
    assert lint_config(config, text=text) == []


def test_lint_reads_the_config_file_for_lines(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "# my config\n\nworkflows:\n  - name: w\n    trigger:\n      fallback: true\n"
        "    actions:\n      - reply: 'Hi {nickname}'\n",
        "utf-8",
    )
    [warning] = lint_config(load_config(path, env={}))
    assert (warning.file, warning.line, warning.code) == (str(path.absolute()), 8, "unknown-field")
    assert warning.format().startswith(f"{path.absolute()}:8:9: warning: w: step 1 (reply): ")
    assert (warning.to_json()["line"], warning.to_json()["column"]) == (8, 9)


def test_the_example_config_is_clean() -> None:
    config = load_config(ROOT / "config.example.yaml", env={})
    assert config.workflows, "the example config has workflows"
    assert lint_config(config) == []


def _doc_blocks() -> list[str]:
    text = (ROOT / "docs" / "workflows.md").read_text("utf-8")
    return [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]


def test_every_example_in_the_language_reference_validates() -> None:
    """Each YAML example of docs/workflows.md is a whole config, a trigger, a `when` or
    steps; each must load (wrapped into a workflow when it is a fragment)."""
    blocks = _doc_blocks()
    assert len(blocks) >= 28
    for block in blocks:
        if block.startswith("workflows:"):
            text = block
        elif block.startswith(("trigger:", "when:")):
            body = block.replace("\n", "\n    ")
            text = f"workflows:\n  - name: t\n    {body}\n"
            if not block.startswith("trigger:"):
                text += "    trigger: {fallback: true}\n"
            text += "    actions: [{private_reply: x}]\n" if "comment:" in block else (
                "    actions: [{reply: x}]\n")
        else:
            steps = block.replace("\n", "\n      ")
            text = ("workflows:\n  - name: t\n    trigger: {comment: {keywords: [x]}}\n"
                    f"    actions:\n      {steps}\n")
        config = parse_config_text(text, "docs/workflows.md", env={})
        assert config.workflows, block


def test_a_keyword_of_punctuation_only_says_what_to_do() -> None:
    text = ("workflows:\n  - name: c\n    trigger: {dm: {keywords: ['!!!']}}\n"
            "    actions:\n      - reply: hi\n")
    [w] = lint_config(parse_config_text(text, "config.yaml", env={}), text=text)
    assert w.code == "keyword-punctuation"
    assert w.message.endswith("and it is only punctuation: use match: contains to match it")


def _lint_text(text: str) -> list[str]:
    return [w.format() for w in lint_config(parse_config_text(text, "config.yaml", env={}),
                                            text=text)]


def test_a_dm_keyword_above_takes_a_story_replys_same_keyword() -> None:
    """A dm trigger fires on story replies too (issue-4 audit: no warning was given)."""
    text = ("workflows:\n  - name: a\n    priority: 5\n    trigger: {dm: {keywords: [guide]}}\n"
            "    actions:\n      - reply: a\n  - name: e\n"
            "    trigger: {story_reply: {keywords: [guide]}}\n    actions:\n      - reply: e\n")
    assert _lint_text(text) == [
        "config.yaml:8:40: warning: e: trigger story_reply: keyword 'guide' is also in a (its"
        " dm trigger takes story replies too), which runs first (priority 5 over 0): it never"
        " fires here for this keyword [duplicate-keyword]"]
    # The other way round a DM still reaches the dm workflow: nothing to say.
    below = text.replace("priority: 5", "priority: -5")
    assert _lint_text(below) == []


def test_stage_typos_are_flagged_and_stages_of_your_own_are_not() -> None:
    text = ("workflows:\n  - name: a\n    trigger: {dm: {keywords: [hi]}}\n"
            "    when: {stage: [nwe, vip]}\n    actions:\n      - stage: qualifed\n"
            "  - name: b\n    trigger: {dm: {keywords: [vip]}}\n    actions:\n"
            "      - stage: vip\n")
    assert _lint_text(text) == [
        "config.yaml:4:20: warning: a: when: condition on stage 'nwe', which is no lead stage"
        " and which no workflow sets (did you mean 'new'?): it holds only for contacts you"
        " give that stage yourself (instaset contacts set) [unknown-stage]",
        "config.yaml:6:9: warning: a: step 1 (stage): stage 'qualifed' is none of the lead"
        " stages (new, engaged, qualified, booked, customer, lost) (did you mean"
        " 'qualified'?): lead scoring does not rank a stage of your own [unknown-stage]"]


def test_a_duplicate_keyword_is_compared_with_the_holder_that_hides_it_most() -> None:
    """Found by the s11 audit: only the first workflow holding a keyword was compared, so
    low-first was told it fires "when their conditions fail" while tie-b, with no
    conditions and a looser match, runs before it every time."""
    text = ("workflows:\n"
            "  - name: low-first\n    priority: 1\n    trigger: {dm: {keywords: [price]}}\n"
            "    actions:\n      - reply: a\n"
            "  - name: tie-a\n    priority: 5\n    trigger: {dm: {keywords: [price]}}\n"
            "    when: {tags_any: [vip]}\n    actions:\n      - reply: b\n"
            "  - name: tie-b\n    priority: 5\n"
            "    trigger: {dm: {keywords: [cost, price], match: contains}}\n"
            "    actions:\n      - reply: c\n")
    found = [line for line in _lint_text(text) if "low-first" in line.split("warning: ")[1][:10]]
    assert found == [
        "config.yaml:4:31: warning: low-first: trigger dm: keyword 'price' is also in tie-b,"
        " which runs first (priority 5 over 1): it never fires here for this keyword"
        " [duplicate-keyword]"]
