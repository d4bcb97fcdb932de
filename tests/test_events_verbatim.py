"""A webhook body of one item is stored as it came (``events.one_item_body``).

The contract under test: when ``one_item_body`` accepts a body, that text can stand as the
event's ``raw``: ``event_heads(payload, body=text)`` gives the full parse's events but for
``raw``, and ``parse_stored(text)`` gives the full parse's event back with ``raw == text``.
When it refuses (more than one item, other top-level keys, not UTF-8, a surrogate escape),
ingest keeps the canonical re-serialisation.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instaset.events import (
    Event,
    event_heads,
    one_item_body,
    parse_stored,
    parse_webhook,
)
from tests.test_events import (
    ALL_FIXTURES,
    CHANGE,
    DATA,
    ENVELOPE,
    IG,
    ITEM,
    JSON,
    PROPERTY,
    envelope,
    item,
)


def _but_raw(event: Event) -> tuple[object, ...]:
    return (event.kind, event.account_id, event.dedupe_key, event.occurred_at,
            event.contact_id, event.standby)


def assert_stands_as_raw(payload: object, body: bytes) -> bool:
    """True when ``body`` was accepted; then it parses, in every way ingest and the worker
    use it, to the events of the canonical path."""
    text = one_item_body(payload, body)
    if text is None:
        return False
    assert text == body.decode("utf-8")
    full = parse_webhook(payload)
    assert len(full) == 1
    heads = event_heads(payload, body=text)
    assert [h.raw for h in heads] == [text]
    assert [_but_raw(h) for h in heads] == [_but_raw(e) for e in full]
    assert parse_stored(text) == [dataclasses.replace(full[0], raw=text)]
    return True


def test_every_one_item_fixture_stands_as_its_own_raw() -> None:
    accepted = []
    for name in ALL_FIXTURES:
        body = (DATA / name).read_bytes()
        if assert_stands_as_raw(json.loads(body), body):
            accepted.append(name)
    # The usual deliveries (a DM, a comment) are among them; the batches are not.
    assert "dm_text_real_tester.json" in accepted
    assert "events/standby.json" not in accepted


ONE_ITEM = (
    st.builds(lambda it, key: envelope(it, key=key), ITEM | JSON,
              st.sampled_from(["messaging", "standby"]))
    | st.builds(lambda ch: envelope(ch, key="changes"), CHANGE | JSON)
)


@PROPERTY
@given(ONE_ITEM | ENVELOPE, st.sampled_from([None, 1]), st.booleans())
def test_any_accepted_body_parses_like_the_canonical_path(
    payload: Any, indent: int | None, ascii_only: bool
) -> None:
    body = json.dumps(payload, indent=indent, ensure_ascii=ascii_only).encode(
        "utf-8", "surrogatepass")
    assert_stands_as_raw(payload, body)


@PROPERTY
@given(ONE_ITEM)
def test_one_item_envelopes_are_accepted(payload: Any) -> None:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if b"\\u" in body or not _utf8(body):
        return  # the refusals below
    assert assert_stands_as_raw(payload, body)


def _utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


DM = item(message={"mid": "m1", "text": "hi"})
TWO_ENTRIES = {"object": "instagram", "entry": [envelope(DM)["entry"][0]] * 2}
EXTRA_TOP = {**envelope(DM), "extra": 1}
EXTRA_ENTRY = {"object": "instagram",
               "entry": [{**envelope(DM)["entry"][0], "changes": []}]}
LONE_OBJECT = {"object": "instagram", "entry": [{"id": IG, "messaging": DM}]}


@pytest.mark.parametrize(("payload", "body"), [
    (envelope(DM, DM), None),  # two items
    (TWO_ENTRIES, None),
    (EXTRA_TOP, None),
    (EXTRA_ENTRY, None),  # a second list, even an empty one
    (LONE_OBJECT, None),  # parsed leniently as [item]: its canonical raw differs
    ({"entry": envelope(DM)["entry"]}, None),  # no "object"
    ([envelope(DM)], None),  # the array form
    (envelope(item(message={"mid": "m1", "text": "\ud83d\ude00"})),
     b'{"object":"instagram","entry":[{"id":"1","messaging":[{"message":{"text":'
     b'"\\ud83d\\ude00"}}]}]}'),  # a surrogate escape: could be a lone one
    (envelope(item(message={"mid": "m1", "text": "caf\u00e9"})),
     json.dumps(envelope(item(message={"mid": "m1", "text": "caf\u00e9"})),
                ensure_ascii=False).encode("latin-1")),  # not UTF-8
], ids=["two-items", "two-entries", "extra-top-level-key", "extra-entry-key", "lone-object",
        "no-object", "array", "surrogate-escape", "not-utf8"])
def test_other_bodies_keep_the_canonical_raw(payload: object, body: bytes | None) -> None:
    data = body if body is not None else json.dumps(payload).encode()
    assert one_item_body(payload, data) is None
    # ... and event_heads without a body still gives the canonical raw.
    assert [e.raw for e in event_heads(payload)] == [e.raw for e in parse_webhook(payload)]
