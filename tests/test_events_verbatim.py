"""A webhook body of one item is stored as it came (``event_heads.one_item_body``).

The contract under test: when ``one_item_body`` accepts a body, that text can stand as the
event's ``raw``: ``event_heads(payload, body=text)`` gives the full parse's events but for
``raw``, and ``parse_stored(text)`` gives the full parse's event back with ``raw == text``.
When it refuses (more than one item, other top-level keys, not UTF-8, a surrogate escape),
ingest keeps the canonical re-serialisation.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instaset import webhook
from instaset.event_heads import VERBATIM_MAX_BYTES, event_heads, one_item_body
from instaset.events import (
    VERBATIM_KINDS,
    Event,
    EventKind,
    parse_stored,
    parse_webhook,
)
from tests.test_events import (
    ALL_FIXTURES,
    CHANGE,
    DATA,
    ENVELOPE,
    HEAD,
    IDS,
    IG,
    ITEM,
    JSON,
    MESSAGE,
    PROPERTY,
    TIMES,
    USER,
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
    # Kinds whose raw SQL reads into keep the canonical raw (no duplicated key in it).
    assert [h.raw for h in heads] == [text if full[0].kind in VERBATIM_KINDS else full[0].raw]
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


# Meta's usual delivery, one message in one entry, which event_heads reads without the
# general walk: its every attribute is drawn here (ids and times of any JSON type, echoes,
# unsends, standby, an entry without id or time, a message that is not an object).
PARTIES = st.fixed_dictionaries({
    "sender": st.fixed_dictionaries({"id": st.sampled_from([IG, USER, 7])}),
    "recipient": st.fixed_dictionaries({"id": st.sampled_from([IG, USER])}),
    "timestamp": st.sampled_from([1740000000001, 1740000000, None]),
})
_ABSENT = object()
FLAGS = st.fixed_dictionaries({
    "is_echo": st.sampled_from([True, False, 1, "true", _ABSENT]),
    "is_deleted": st.sampled_from([False, True, 1, _ABSENT]),
    "mid": st.sampled_from(["m1", "", 5, 1.5, None, _ABSENT]),
}).map(lambda flags: {k: v for k, v in flags.items() if v is not _ABSENT})
ONE_DM = st.builds(
    lambda entry, key, head, message, flags: {
        "object": "instagram",
        "entry": [{**entry, key: [{**head, "message": (
            {**message, **flags} if isinstance(message, dict) else message)}]}]},
    st.fixed_dictionaries({}, optional={"id": IDS, "time": TIMES}),
    st.sampled_from(["messaging", "standby"]),
    HEAD | PARTIES,
    MESSAGE | st.sampled_from([None, [], "m1"]),
    FLAGS,
)


@settings(PROPERTY, max_examples=400)
@given(ONE_DM)
def test_the_usual_dm_reads_as_the_general_walk_does(payload: Any) -> None:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if assert_stands_as_raw(payload, body):
        return
    # Refused as a body (a surrogate escape, or not UTF-8): still read the same way.
    text = body.decode("utf-8", "replace")
    assert [_but_raw(h) for h in event_heads(payload, body=text)] == [
        _but_raw(e) for e in parse_webhook(payload)]


def _utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


DM = item(message={"mid": "m1", "text": "hi"})
DM_ENTRY: dict[str, object] = {"id": IG, "time": 1740000000000, "messaging": [DM]}
TWO_ENTRIES = {"object": "instagram", "entry": [DM_ENTRY, DM_ENTRY]}
EXTRA_TOP = {**envelope(DM), "extra": 1}
EXTRA_ENTRY = {"object": "instagram", "entry": [{**DM_ENTRY, "changes": []}]}
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
    (envelope(DM), codecs.BOM_UTF8 + json.dumps(envelope(DM)).encode()),  # json.loads takes it
    (envelope(DM), json.dumps(envelope(DM)).encode("utf-16-le")),  # ... and these: NUL bytes
    (envelope(DM), json.dumps(envelope(DM)).encode("utf-16-be")),
    (envelope(DM), json.dumps(envelope(DM)).encode("utf-32")),
    (envelope(DM), json.dumps(envelope(DM), indent=VERBATIM_MAX_BYTES).encode()),  # padding
], ids=["two-items", "two-entries", "extra-top-level-key", "extra-entry-key", "lone-object",
        "no-object", "array", "surrogate-escape", "not-utf8", "utf8-bom", "utf16-le", "utf16-be",
        "utf32", "oversized"])
def test_other_bodies_keep_the_canonical_raw(payload: object, body: bytes | None) -> None:
    data = body if body is not None else json.dumps(payload).encode()
    assert one_item_body(payload, data) is None
    # ... and event_heads without a body still gives the canonical raw.
    assert [e.raw for e in event_heads(payload)] == [e.raw for e in parse_webhook(payload)]


def test_bodies_json_loads_takes_but_that_are_not_utf8_json_text() -> None:
    """The refused encodings above all decode to the same payload: only the text differs."""
    for body in (codecs.BOM_UTF8 + json.dumps(envelope(DM)).encode(),
                 json.dumps(envelope(DM)).encode("utf-16-le"),
                 json.dumps(envelope(DM)).encode("utf-32")):
        assert json.loads(body) == envelope(DM)


READ = item(read={"mid": "m1"})
COMMENT = {"field": "comments", "value": {"id": "c1", "text": "guide", "from": {"id": "5"},
                                          "media": {"id": "17890000000000001"}}}


@pytest.mark.parametrize("payload", [envelope(READ), envelope(COMMENT, key="changes")],
                         ids=["read", "comment"])
def test_kinds_sql_reads_into_keep_the_canonical_raw(payload: dict[str, Any]) -> None:
    body = json.dumps(payload, indent=1).encode()
    text = one_item_body(payload, body)
    assert text is not None  # the body qualifies ...
    (full,) = parse_webhook(payload)
    assert full.kind not in VERBATIM_KINDS
    (head,) = event_heads(payload, body=text)
    assert head.raw == full.raw != text  # ... but its raw is the canonical one


SOURCES = Path(__file__).resolve().parents[1] / "instaset"


def test_every_sql_read_inside_a_raw_is_about_a_kind_stored_canonically() -> None:
    """SQLite takes the first of a duplicated JSON key, Python the last: SQL may read inside
    the raw of read receipts and comments only, whose raw is always canonical. A new
    json_extract of a raw for another kind must take that kind out of VERBATIM_KINDS."""
    paths: set[str] = set()
    for f in [*SOURCES.rglob("*.py"), *SOURCES.rglob("*.sql")]:
        paths.update(re.findall(r"json_extract\(\s*\w+\.raw\s*,\s*'([^']+)'", f.read_text()))
    assert paths, "the scan found nothing: the pattern is stale"
    read_or_comment = re.compile(r"\.read\.mid$|\.value\.media(\.id|_id)$")
    assert sorted(p for p in paths if not read_or_comment.search(p)) == []
    assert not {EventKind.READ, EventKind.COMMENT, EventKind.LIVE_COMMENT,
                EventKind.MENTION, EventKind.UNKNOWN} & VERBATIM_KINDS


def _loads_outcome(decode: Any, body: bytes) -> tuple[str, object]:
    try:
        return ("value", decode(body))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity
        return (type(exc).__name__, str(exc))
    except RecursionError:
        return ("RecursionError", "")


@PROPERTY
@given(st.binary(max_size=200)
       | st.builds(lambda p, enc: json.dumps(p).encode(enc), JSON,
                   st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32-be"]))
       | st.sampled_from([b"NaN", b'{"a": Infinity}', b"[-Infinity]", codecs.BOM_UTF8 + b"{}",
                          b'{"a": 1e400}', b"[-1e999, 2.5]"]))
def test_the_webhook_decodes_a_body_exactly_as_json_loads_does(body: bytes) -> None:
    """webhook._decode_body keeps one decoder for every request; it must answer every body
    as ``json.loads(body, parse_constant=..., parse_float=...)`` does: the same value or the
    same error."""
    def reference(b: bytes) -> object:
        return json.loads(b, parse_constant=webhook._no_constant, parse_float=webhook._finite)
    assert _loads_outcome(webhook._decode_body, body) == _loads_outcome(reference, body)


def test_the_usual_dm_read_takes_every_list_of_an_entry() -> None:
    """event_heads given a body that one_item_body would refuse (its entry holds a second
    list) still reads every list, as the general walk does."""
    payload = {"object": "instagram", "entry": [{**DM_ENTRY, "standby": [DM]}]}
    heads = event_heads(payload, body=json.dumps(payload))
    assert [_but_raw(h) for h in heads] == [_but_raw(e) for e in parse_webhook(payload)]
    assert [h.standby for h in heads] == [False, True]
