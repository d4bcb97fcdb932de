"""POST /webhook end to end: signatures, storage, dedupe, batches, limits, never a 500."""

from __future__ import annotations

import asyncio
import codecs
import io
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instaset import webhook
from instaset.config import Config
from instaset.daemon import Runtime, runtime
from instaset.events import MessageEditEvent, ReactionEvent, parse_webhook
from instaset.queue import NewJob
from instaset.store import jobs as jobstore
from instaset.webhook import make_app
from tests.conftest import DATA, SECRET, SECRET2, connect_account, sign

ClientFactory = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]

WEBHOOK_FIXTURES = sorted(
    [p for p in DATA.glob("*.json") if "entry" in p.read_text("utf-8")]
    + list((DATA / "events").glob("*.json"))
)


def make_config(tmp_path: Path, **server: Any) -> Config:
    return Config.model_validate(
        {
            "instagram": {"app_secret": SECRET, "meta_app_secret": SECRET2,
                          "verify_token": "meatyhamhock"},
            "storage": {"path": str(tmp_path / "wh.db")},
            "server": {"max_body_bytes": 2_000_000, **server},
        }
    )


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[Runtime]:
    async with runtime(make_config(tmp_path)) as r:
        r.writer.start()
        try:
            yield r
        finally:
            await r.writer.stop()


@pytest.fixture
async def client(rt: Runtime, aiohttp_client: ClientFactory) -> TestClient:  # type: ignore[type-arg]
    return await aiohttp_client(make_app(rt.web))


async def post(client: TestClient, body: bytes, secret: str | None = SECRET,  # type: ignore[type-arg]
               header: str | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["X-Hub-Signature-256"] = header
    elif secret is not None:
        headers["X-Hub-Signature-256"] = sign(body, secret)
    data = io.BytesIO(body) if len(body) > 1_000_000 else body
    resp = await client.post("/webhook", data=data, headers=headers)
    await resp.read()
    return resp.status


def dm(mid: str, text: str = "hi", account: str = "17841400000000001",
       sender: str = "555") -> dict[str, Any]:
    return {"object": "instagram", "entry": [{"id": account, "time": 1740157200749, "messaging": [
        {"sender": {"id": sender}, "recipient": {"id": account}, "timestamp": 1740157200421,
         "message": {"mid": mid, "text": text}}]}]}


async def event_count(rt: Runtime) -> int:
    row = await rt.db.fetchone("SELECT count(*) FROM events")
    assert row is not None
    return int(row[0])


# -- verification ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "status", "body"),
    [
        ("hub.mode=subscribe&hub.verify_token=meatyhamhock&hub.challenge=1158201444", 200,
         "1158201444"),
        ("hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1158201444", 403, None),
        ("hub.mode=unsubscribe&hub.verify_token=meatyhamhock&hub.challenge=1", 403, None),
        ("hub.mode=subscribe&hub.verify_token=meatyhamhock&hub.challenge=<script>", 403, None),
        # opaque: Meta's docs use CHALLENGE_ACCEPTED; anything URI-unreserved is echoed
        ("hub.mode=subscribe&hub.verify_token=meatyhamhock&hub.challenge=CHALLENGE_ACCEPTED",
         200, "CHALLENGE_ACCEPTED"),
        ("hub.mode=subscribe&hub.verify_token=meatyhamhock&hub.challenge=abc-DEF_1.2~", 200,
         "abc-DEF_1.2~"),
        ("hub.mode=subscribe&hub.verify_token=meatyhamhock&hub.challenge=a%22b", 403, None),
        ("hub.mode=subscribe&hub.verify_token=meatyhamhock&hub.challenge=%C3%A9t%C3%A9", 403, None),
        ("hub.mode=subscribe&hub.verify_token=meatyhamhock&hub.challenge=", 403, None),
        ("", 403, None),
    ],
)
async def test_verification(client: TestClient, query: str, status: int,  # type: ignore[type-arg]
                            body: str | None) -> None:
    resp = await client.get(f"/webhook?{query}")
    assert resp.status == status
    if body is not None:
        assert await resp.text() == body


# -- signatures ------------------------------------------------------------------------------
async def test_signatures(client: TestClient, rt: Runtime) -> None:  # type: ignore[type-arg]
    await connect_account(rt.db, "17841400000000001")
    body = json.dumps(dm("m-sig")).encode()
    assert await post(client, body, secret=None) == 401
    assert await post(client, body, secret="not-the-secret") == 403
    assert await post(client, body, header="sha1=abc") == 403
    assert await post(client, body, header="sha256=") == 403
    assert await event_count(rt) == 0  # nothing stored on a mismatch
    assert await post(client, body, secret=SECRET2) == 200  # the second secret works
    assert await post(client, body, secret=SECRET) == 200
    assert await event_count(rt) == 1


async def test_raw_bytes_with_meta_escapes_verify_and_parse(
    client: TestClient, rt: Runtime  # type: ignore[type-arg]
) -> None:
    await connect_account(rt.db, "17841400000000001")
    raw = (DATA / "events" / "escapes.json").read_bytes()
    assert b"\\/" in raw and b"\\ud83d\\ude00" in raw
    reserialised = json.dumps(json.loads(raw)).encode()
    assert await post(client, raw, header=sign(reserialised)) == 403  # only raw bytes verify
    assert await post(client, raw) == 200
    await rt.worker.run_burst()
    row = await rt.db.fetchone("SELECT text FROM messages WHERE mid = 'mid-escapes'")
    assert row is not None and row[0] == "see https://example.com/a/b 😀 Olá"


async def test_a_one_item_body_is_stored_as_it_came(
    client: TestClient, rt: Runtime  # type: ignore[type-arg]
) -> None:
    """No re-serialisation for Meta's usual delivery: the stored raw is the body's text
    (here indented, keys unsorted), and the worker processes it like any other."""
    await connect_account(rt.db, "17841400000000001")
    body = json.dumps(dm("mid-verbatim", "Olá 👋"), indent=2, ensure_ascii=False).encode()
    assert await post(client, body) == 200
    row = await rt.db.fetchone("SELECT raw FROM events WHERE dedupe_key = 'msg:mid-verbatim'")
    assert row is not None and row[0] == body.decode()
    await rt.worker.run_burst()
    msg = await rt.db.fetchone("SELECT text FROM messages WHERE mid = 'mid-verbatim'")
    assert msg is not None and msg[0] == "Olá 👋"
    # A lone surrogate escape cannot be stored as it came: that event is stored canonically.
    lone = json.dumps(dm("mid-lone", "\ud800")).encode("utf-8", "surrogatepass")
    assert b"\\ud800" in lone
    assert await post(client, lone) == 200
    row = await rt.db.fetchone("SELECT raw FROM events WHERE dedupe_key = 'msg:mid-lone'")
    assert row is not None and row[0] != lone.decode()


async def test_a_lone_surrogate_costs_its_own_text_not_the_delivery(
    client: TestClient, rt: Runtime  # type: ignore[type-arg]
) -> None:
    """Half of an emoji (a lone surrogate escape) anywhere in a batch: refusing the body
    would lose every event in it for good (Meta redelivers the same bytes). It becomes
    U+FFFD in its own event; the others are stored as they are."""
    await connect_account(rt.db, "17841400000000001")
    entry = dm("m-ok")["entry"][0]
    items = [dm("m-ok", "ok 😀")["entry"][0]["messaging"][0],
             dm("m-cut", "cut \ud83d")["entry"][0]["messaging"][0]]
    items[0]["message"]["extra"] = "fine"
    body = json.dumps({"object": "instagram", "entry": [{**entry, "messaging": items}]}
                      ).encode("utf-8", "surrogatepass")
    assert b"\\ud83d\"" in body
    assert await post(client, body) == 200
    await rt.worker.run_burst()
    rows = await rt.db.fetchall("SELECT mid, text FROM messages ORDER BY mid")
    assert [tuple(r) for r in rows] == [("m-cut", "cut \ufffd"), ("m-ok", "ok 😀")]
    # An id with one is no id (it would fail every commit: a 503 for ever): the item is kept
    # as an unknown event, stored and skipped.
    bad = json.dumps(dm("\ud800")).encode("utf-8", "surrogatepass")
    assert await post(client, bad) == 200
    kinds = await rt.db.fetchall("SELECT kind FROM events ORDER BY id")
    assert [r[0] for r in kinds] == ["message", "message", "unknown"]


async def test_bodies_that_are_not_utf8_json_text_are_stored_canonically(
    client: TestClient, rt: Runtime  # type: ignore[type-arg]
) -> None:
    """json.loads takes a UTF-8 BOM and UTF-16/32 bodies: their text is not what any reader
    of the stored raw can parse, so they are stored re-serialised, and processed."""
    await connect_account(rt.db, "17841400000000001")
    bodies = {
        "mid-bom": codecs.BOM_UTF8 + json.dumps(dm("mid-bom")).encode(),
        "mid-utf16": json.dumps(dm("mid-utf16")).encode("utf-16-le"),
        "mid-utf32": json.dumps(dm("mid-utf32")).encode("utf-32"),
    }
    for body in bodies.values():
        assert await post(client, body) == 200
    rows = await rt.db.fetchall(
        "SELECT dedupe_key, json_valid(raw), raw FROM events ORDER BY id")
    assert [(r[0], r[1]) for r in rows] == [(f"msg:{mid}", 1) for mid in bodies]
    assert [parse_webhook(json.loads(r[2]))[0].dedupe_key for r in rows] == [
        f"msg:{mid}" for mid in bodies]
    await rt.worker.run_burst()
    stored = await rt.db.fetchall("SELECT mid FROM messages ORDER BY id")
    assert [r[0] for r in stored] == list(bodies)


# -- every fixture is stored as the right events ---------------------------------------------
@pytest.mark.parametrize("path", WEBHOOK_FIXTURES, ids=lambda p: p.name)
async def test_fixture_stored_as_parsed(client: TestClient, rt: Runtime,  # type: ignore[type-arg]
                                        path: Path) -> None:
    raw = path.read_bytes()
    expected = parse_webhook(json.loads(raw))
    for account in {e.account_id for e in expected}:
        await connect_account(rt.db, account)
    assert await post(client, raw) == 200
    rows = await rt.db.fetchall("SELECT dedupe_key, kind, account_id, raw FROM events ORDER BY id")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (e.dedupe_key, str(e.kind), e.account_id) for e in expected
    ]
    # The stored raw item parses back to the same event.
    assert [parse_webhook(json.loads(r[3]))[0] for r in rows] == expected
    jobs = await rt.db.fetchall("SELECT key FROM jobs WHERE kind = 'process_event'")
    assert sorted(j[0] for j in jobs) == sorted(f"event:{e.dedupe_key}" for e in expected)
    await rt.worker.run_burst()
    # An edit or reaction of a message not stored waits for it (it may come later).
    stored = {r[0] for r in await rt.db.fetchall("SELECT mid FROM messages")}
    waiting = sorted(e.dedupe_key for e in expected
                     if isinstance(e, MessageEditEvent | ReactionEvent) and e.mid not in stored)
    left = await rt.db.fetchall(
        "SELECT dedupe_key FROM events WHERE processed_at IS NULL ORDER BY dedupe_key")
    assert [r[0] for r in left] == waiting
    states = await rt.db.fetchall(
        "SELECT state, count(*), max(attempts) FROM jobs WHERE kind = 'process_event'"
        " GROUP BY state ORDER BY state")
    # Waiting spends none of the job's tries.
    assert [tuple(r) for r in states] == [
        (state, n, tries) for state, n, tries in (("done", len(expected) - len(waiting), 1),
                                                  ("ready", len(waiting), 0)) if n]


async def test_the_dashboard_comment_sample_is_stored_as_a_comment(
    client: TestClient, rt: Runtime,  # type: ignore[type-arg]
) -> None:
    """Meta's dashboard "Test" sample is one bare ``changes[]`` element: in the envelope
    Meta delivers it in, it is stored (and processed) as a comment reply."""
    change = json.loads((DATA / "comment_change_dashboard_test.json").read_text("utf-8"))
    body = json.dumps({"object": "instagram", "entry": [
        {"id": "17841400000000001", "time": 1740157200, "changes": [change]}]}).encode()
    await connect_account(rt.db, "17841400000000001")
    assert await post(client, body) == 200
    row = await rt.db.fetchone("SELECT kind, dedupe_key, contact_id FROM events")
    assert row is not None and (row[0], row[2]) == ("comment", "232323232")
    assert "17865799348089039" in row[1]
    await rt.worker.run_burst()
    left = await rt.db.fetchone("SELECT count(*) FROM events WHERE processed_at IS NULL")
    assert left is not None and left[0] == 0


# -- batching, dedupe, accounts --------------------------------------------------------------
async def test_thousand_item_batch_in_one_post(client: TestClient, rt: Runtime) -> None:  # type: ignore[type-arg]
    await connect_account(rt.db, "17841400000000001")
    entries = []
    for e in range(10):
        entries.append({"id": "17841400000000001", "time": 1740157200749, "messaging": [
            {"sender": {"id": f"u{i}"}, "recipient": {"id": "17841400000000001"},
             "timestamp": 1740157200421 + i, "message": {"mid": f"m{e}-{i}", "text": "x"}}
            for i in range(100)]})
    body = json.dumps({"object": "instagram", "entry": entries}).encode()
    assert await post(client, body) == 200
    assert await event_count(rt) == 1000
    row = await rt.db.fetchone("SELECT count(*) FROM jobs")
    assert row is not None and row[0] == 1000


async def test_redelivery_is_stored_once(client: TestClient, rt: Runtime) -> None:  # type: ignore[type-arg]
    await connect_account(rt.db, "17841400000000001")
    first = dm("m-redeliver")
    again = dm("m-redeliver")
    again["entry"][0]["time"] = 1740157299999  # Meta's retry carries a new send time
    for payload in (first, again, first):
        assert await post(client, json.dumps(payload).encode()) == 200
    assert await event_count(rt) == 1
    await rt.worker.run_burst()
    assert await post(client, json.dumps(first).encode()) == 200  # after processing too
    row = await rt.db.fetchone("SELECT count(*) FROM jobs WHERE kind = 'process_event'")
    assert row is not None and row[0] == 1
    msgs = await rt.db.fetchone("SELECT count(*) FROM messages")
    assert msgs is not None and msgs[0] == 1
    text = await (await client.get("/metrics")).text()
    assert "instaset_webhook_duplicates_total 3.0" in text


async def test_a_key_twice_in_one_batch_is_stored_once_in_delivery_order(
    client: TestClient, rt: Runtime  # type: ignore[type-arg]
) -> None:
    """The batch is inserted by one statement: items keep their delivery order (rowids of
    the events and of their jobs), and a key that comes twice is stored once."""
    await connect_account(rt.db, "17841400000000001")
    entry = dm("m-a")["entry"][0]
    items = [dm(mid)["entry"][0]["messaging"][0] for mid in ("m-c", "m-a", "m-b", "m-a")]
    body = {"object": "instagram", "entry": [{**entry, "messaging": items}]}
    assert await post(client, json.dumps(body).encode()) == 200
    events = await rt.db.fetchall("SELECT dedupe_key FROM events ORDER BY id")
    assert [r[0] for r in events] == ["msg:m-c", "msg:m-a", "msg:m-b"]
    jobs = await rt.db.fetchall("SELECT key FROM jobs ORDER BY id")
    assert [r[0] for r in jobs] == ["event:msg:m-c", "event:msg:m-a", "event:msg:m-b"]
    text = await (await client.get("/metrics")).text()
    assert "instaset_webhook_duplicates_total 1.0" in text


async def test_events_for_unconnected_accounts_are_dropped(
    client: TestClient, rt: Runtime, caplog: pytest.LogCaptureFixture,  # type: ignore[type-arg]
) -> None:
    caplog.set_level("INFO", logger="instaset.webhook")
    await connect_account(rt.db, "17841400000000001")
    body = {"object": "instagram", "entry": [
        dm("m-ours")["entry"][0], dm("m-theirs", account="999")["entry"][0]]}
    assert await post(client, json.dumps(body).encode()) == 200
    rows = await rt.db.fetchall("SELECT dedupe_key FROM events")
    assert [r[0] for r in rows] == ["msg:m-ours"]
    text = await (await client.get("/metrics")).text()
    assert "instaset_webhook_dropped_total 1.0" in text
    assert "instaset_webhook_duplicates_total 0.0" in text
    # Said in the log (Meta's dashboard test sample lands here: the operator must see it
    # arrived), once per account in a while, not once per event.
    assert await post(client, json.dumps(dm("m-theirs-2", account="999")).encode()) == 200
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert lines == ["webhook: 1 event(s) for account 999 dropped: not connected here (a "
                     "dashboard test sample, or connect it with `instaset connect`)"]
    text = await (await client.get("/metrics")).text()
    assert "instaset_webhook_dropped_total 2.0" in text


async def test_concurrent_requests_share_commits(client: TestClient, rt: Runtime) -> None:  # type: ignore[type-arg]
    await connect_account(rt.db, "17841400000000001")
    bodies = [json.dumps(dm(f"c{i}")).encode() for i in range(200)]
    statuses = await asyncio.gather(*(post(client, b) for b in bodies))
    assert statuses == [200] * 200
    # Every 200 is stored: in events, or (batches of several requests) in the staging table.
    # One statement, one snapshot: two reads could straddle a move of staged rows.
    row = await rt.db.fetchone("SELECT (SELECT count(*) FROM events)"
                               " + (SELECT count(*) FROM staged_events)")
    assert row is not None and row[0] == 200
    assert rt.writer.batches < 200  # group commit: some requests shared a transaction
    await rt.writer.settle()
    assert (await event_count(rt), await staged_count(rt)) == (200, 0)
    assert rt.writer.moved > 0  # the burst went through the staging table
    jobs = await rt.db.fetchall("SELECT j.key, e.dedupe_key FROM jobs j JOIN events e"
                                " ON e.id = json_extract(j.payload, '$.event_id')"
                                " WHERE j.kind = 'process_event'")
    assert sorted(r[0] for r in jobs) == sorted(f"event:{r[1]}" for r in jobs)
    assert len(jobs) == 200


async def staged_count(rt: Runtime) -> int:
    row = await rt.db.fetchone("SELECT count(*) FROM staged_events")
    assert row is not None
    return int(row[0])


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[1, 2]", b'{"entry": 5}', b'"just a string"', b"\xff\xfe\x00",
     b"[" * 100_000],
)
async def test_malformed_bodies_are_400(client: TestClient, rt: Runtime,  # type: ignore[type-arg]
                                        body: bytes) -> None:
    await connect_account(rt.db, "1")
    assert await post(client, body) == 400
    assert await event_count(rt) == 0


async def test_unreadable_bodies_and_odd_signatures_are_4xx(
    client: TestClient, rt: Runtime,  # type: ignore[type-arg]
) -> None:
    """Found in review: these got a 503 (and a traceback in the log)."""
    await connect_account(rt.db, "17841400000000001")
    body = json.dumps(dm("m-odd")).encode()
    resp = await client.post("/webhook", data=b"this is not gzip", headers={
        "Content-Encoding": "gzip", "X-Hub-Signature-256": sign(b"this is not gzip", SECRET)})
    assert resp.status == 400
    for header in ("sha256=\u00e9", "sha256=" + "\u00e9" * 64, "sha256=" + "0" * 63):
        assert await post(client, body, header=header.encode().decode("unicode_escape")) == 403
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        odd = body.replace(b'"time":', b'"time":' + constant + b', "x":', 1)
        assert odd != body
        assert await post(client, odd) == 400
    assert await event_count(rt) == 0


async def test_numbers_out_of_range_and_deep_nesting_are_400(
    client: TestClient, rt: Runtime,  # type: ignore[type-arg]
) -> None:
    """Found by the session-11 input audit: ``1e400`` decoded to infinity (past the NaN and
    Infinity guard) and was stored back as ``Infinity``, so ``export`` wrote invalid JSON;
    a body nested ~950 levels deep was accepted, and ``export`` and ``workflows replay``
    then failed on it with a RecursionError."""
    await connect_account(rt.db, "17841400000000001")
    body = json.dumps(dm("m-odd")).encode()
    for number in (b"1e400", b"-1e999"):
        odd = body.replace(b'"time":', b'"time":' + number + b', "x":', 1)
        assert odd != body
        assert await post(client, odd) == 400
    for levels, status in ((webhook.MAX_DEPTH - 5, 200), (webhook.MAX_DEPTH + 1, 400),
                           (950, 400)):
        # The envelope, entry[], an entry, messaging[], an item, message: 6 levels, then
        # the rest as nested arrays in the message (written as text: json.dumps itself
        # cannot go that deep from here).
        nested = b"[" * (levels - 6) + b"]" * (levels - 6)
        deep = json.dumps(dm(f"m-deep-{levels}")).encode().replace(
            b'"text":', b'"x": ' + nested + b', "text":', 1)
        assert await post(client, deep) == status, levels
    assert await event_count(rt) == 1


async def test_a_delivery_with_too_many_items_is_413_unparsed(
    client: TestClient, rt: Runtime,  # type: ignore[type-arg]
) -> None:
    await connect_account(rt.db, "17841400000000001")
    item = dm("m-x")["entry"][0]["messaging"][0]
    body = json.dumps({"object": "instagram", "entry": [
        {"id": "17841400000000001", "time": 1, "messaging": [item] * 10_001}]}).encode()
    assert await post(client, body) == 413
    assert await event_count(rt) == 0


async def test_the_smallest_delivery_with_too_many_items_is_413(
    client: TestClient, rt: Runtime,  # type: ignore[type-arg]
) -> None:
    """Items of two bytes each ("0,"), the fewest bytes 10,001 items can take (20,013 in
    all): the item count is skipped only for bodies too small to hold more than the
    limit."""
    await connect_account(rt.db, "17841400000000001")
    body = json.dumps({"entry": [0] * 10_001}, separators=(",", ":")).encode()
    assert len(body) == 20_013
    assert await post(client, body) == 413
    assert await event_count(rt) == 0


async def test_oversized_body_is_413(client: TestClient, rt: Runtime) -> None:  # type: ignore[type-arg]
    body = b'{"entry":[' + b" " * 2_100_000 + b"]}"
    assert await post(client, body) == 413
    assert await event_count(rt) == 0


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2000))
async def test_arbitrary_bytes_never_500(client: TestClient, body: bytes) -> None:  # type: ignore[type-arg]
    for secret in (SECRET, "wrong"):
        assert await post(client, body, secret=secret) in {200, 400, 403}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["entry", "id", "messaging", "changes", "standby",
                                       "message", "mid", "text", "sender", "recipient",
                                       "field", "value", "time", "timestamp", "object"])
                      | st.text(max_size=5), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=json_values)
async def test_arbitrary_json_never_500(client: TestClient, rt: Runtime,  # type: ignore[type-arg]
                                        payload: object) -> None:
    await connect_account(rt.db, "1")
    body = json.dumps(payload).encode()
    assert await post(client, body) in {200, 400}
    wrapped = json.dumps({"object": "instagram", "entry": [
        {"id": "1", "time": 1, "messaging": [payload], "changes": [payload]}]}).encode()
    assert await post(client, wrapped) in {200, 400}


# -- health and metrics ----------------------------------------------------------------------
async def test_healthz_and_metrics(client: TestClient, rt: Runtime) -> None:  # type: ignore[type-arg]
    await connect_account(rt.db, "17841400000000001", "coach")
    assert await post(client, json.dumps(dm("m-h")).encode()) == 200
    assert await post(client, b"{}", secret="bad") == 403
    resp = await client.get("/healthz")
    health = await resp.json()
    assert resp.status == 200
    assert health["status"] == "ok" and health["database"] == "ok"
    assert health["queue_depth"] == 1
    assert health["accounts"] == [
        {"id": "17841400000000001", "username": "coach", "state": "connected"}]
    await rt.worker.run_burst()
    text = await (await client.get("/metrics")).text()
    assert 'instaset_events_total{kind="message"} 1.0' in text
    assert 'instaset_webhook_rejections_total{reason="bad_signature"} 1.0' in text
    done = await rt.db.fetchone("SELECT count(*) FROM jobs WHERE state = 'done'")
    assert done is not None and done[0] >= 1  # the event's job, and what it led to
    assert f'instaset_jobs{{state="done"}} {float(done[0])}' in text
    assert "instaset_queue_depth 0.0" in text
    assert 'instaset_job_latency_seconds_count{kind="process_event",outcome="done"}' in text


async def test_queue_depth_counts_due_and_running_jobs_not_scheduled_ones(
    client: TestClient, rt: Runtime,  # type: ignore[type-arg]
) -> None:
    """An idle daemon showed a queue depth of 4: its periodic jobs, due hours later."""
    now = time.time()
    await jobstore.enqueue(rt.db, [
        NewJob("later", "later-1", {}, run_at=now + 3600),
        NewJob("later", "later-2", {}, run_at=now + 60),
        NewJob("due", "due-1", {}, run_at=now - 1),
        NewJob("due", "due-2", {}, run_at=now - 1),
    ], now)
    claimed = await jobstore.claim(rt.db, "w-test", now, 60, limit=1)
    assert [j.key for j in claimed] == ["due-1"]  # the other due one stays ready
    health = await (await client.get("/healthz")).json()
    assert health["queue_depth"] == 2  # due-2 ready and due-1 running; not the later ones
    assert health["jobs"]["ready"] >= 3  # the "jobs" counts still list every ready job
    text = await (await client.get("/metrics")).text()
    assert "instaset_queue_depth 2.0" in text
