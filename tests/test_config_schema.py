"""`instaset config schema` describes the YAML creators write: every short form the loader
expands (``tag: guide``, ``reply: "text"``, ``fallback: true``, ``days: mon-fri``,
``ai_reply: auto``, ``offer_booking: true``, variants lists, an empty section), checked with
a real JSON Schema validator against the repository's example config and the YAML examples
of the README and docs (s17 audit D1: the schema of the expanded models marked the example
config red in 13 places)."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from instaset.config import config_json_schema, parse_config_text
from instaset.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _validator() -> jsonschema.protocols.Validator:
    schema = config_json_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _problems(data: object) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in _validator().iter_errors(data)]


def _blocks(path: Path) -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", path.read_text("utf-8"), re.S | re.M)


def _as_config(block: str) -> str:
    """A docs example as a whole config: fragments (a trigger, a `when`, steps) go into a
    workflow, as tests/test_workflow_lint.py wraps them to load them."""
    first = next(line for line in block.splitlines() if line and not line.startswith("#"))
    if re.match(r"[a-z_]+:", first) and not first.startswith(("trigger:", "when:")):
        return block
    if block.startswith(("trigger:", "when:")):
        body = block.replace("\n", "\n    ")
        text = f"workflows:\n  - name: t\n    {body}\n"
        if not block.startswith("trigger:"):
            text += "    trigger: {fallback: true}\n"
        return text + ("    actions: [{private_reply: x}]\n" if "comment:" in block
                       else "    actions: [{reply: x}]\n")
    steps = block.replace("\n", "\n      ")
    return ("workflows:\n  - name: t\n    trigger: {comment: {keywords: [x]}}\n"
            f"    actions:\n      {steps}\n")


def _examples() -> list[tuple[str, str]]:
    out = [("config.example.yaml", (ROOT / "config.example.yaml").read_text("utf-8"))]
    for doc in ("README.md", "docs/workflows.md", "docs/setup.md"):
        out += [(f"{doc} example {i}", _as_config(b))
                for i, b in enumerate(_blocks(ROOT / doc), start=1)]
    return out


def test_the_docs_have_the_examples_this_test_reads() -> None:
    names = [name for name, _ in _examples()]
    assert sum(n.startswith("docs/workflows.md") for n in names) >= 28
    assert any(n.startswith("README.md") for n in names)


@pytest.mark.parametrize(("name", "text"), _examples(), ids=[n for n, _ in _examples()])
def test_the_schema_accepts_every_example_the_loader_accepts(name: str, text: str) -> None:
    parse_config_text(text, name, env={})  # the loader's verdict first: it is valid
    # yaml.safe_load is YAML 1.1, as editors' YAML 1.2 differs only on yes/no/on/off and
    # base-60 numbers, which the examples do not use unquoted
    assert _problems(yaml.safe_load(text)) == []


SHORT_FORMS = """\
booking:
  availability:
    - {days: mon-fri, from: "09:00", to: "17:00"}
    - {days: [sat, 6], from: "10:00", to: "12:00"}
handoff:
worker:
workflows:
  - name: short
    trigger:
      fallback: true
      story_reply: true
      referral: true
      story_mention:
      dm: {keywords: guide}
    when:
      tags_none: customer
      fields: {plan: pro, level: [a, b], email: {exists: true}}
    actions:
      - reply: "Hi {username|there}"
      - reply: {text: pick one, quick_replies: [Yes, {title: No, payload: NO}]}
      - reply: [one, two]
      - tag: guide
      - untag: [a, b]
      - ai_reply: auto
      - ai_reply: true
      - ai_reply:
      - handoff: true
      - handoff:
      - offer_booking: true
      - score: 20
      - score: {points: 5, reason: asked}
      - typing: true
      - delay: 30s
"""


def test_the_schema_accepts_each_short_form() -> None:
    parse_config_text(SHORT_FORMS, "short.yaml", env={})
    assert _problems(yaml.safe_load(SHORT_FORMS)) == []


@pytest.mark.parametrize("text", [
    "bogus: 1\n",
    "instagram:\n  app_id: '1'\n  bogus_key: 3\n",
    "workflows:\n  - name: w\n    trigger: {fallback: true}\n    actions: [{reply: x}]\n"
    "    keywrods: [x]\n",
    "workflows:\n  - name: w\n    trigger: {fallback: true}\n    actions: [{replly: x}]\n",
    "workflows:\n  - name: w\n    trigger: {fallback: true}\n    actions: [{ai_reply: maybe}]\n",
    "workflows:\n  - name: w\n    trigger: {fallback: false}\n    actions: [{reply: x}]\n",
    "booking:\n  availability: [{days: 7}]\n",
])
def test_the_schema_still_refuses_what_the_loader_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_config_text(text, "bad.yaml", env={})
    assert _problems(yaml.safe_load(text)) != []
