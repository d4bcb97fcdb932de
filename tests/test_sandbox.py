"""The sandbox behaves like Meta: window and private-reply rules on an injected clock, signed
echo webhooks checked by a real receiver, Business Login codes, conversation paging, faults
and token revocation."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from instaset.errors import (
    GraphError,
    InvalidParameter,
    Throttled,
    TokenInvalid,
    Transient,
    WindowClosed,
)
from instaset.graph import GraphClient
from instaset.sandbox import (
    Fault,
    Sandbox,
    build_comment_payload,
    build_dm_payload,
    meta_dumps,
    run_sandbox,
    sign,
)
from tests.conftest import on_loopback

DATA = Path(__file__).parent / "data"
SECRET = "sandbox-test-app-secret"
ACCT = "17841400000000001"
IGSID = "1129842642640637"
T0 = 1_760_000_000.0
HOUR = 3600.0
APP_ID = "990602627938098"
REDIRECT = "https://app.test/oauth/callback"
DAY = 86400.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def real(name: str) -> dict[str, object]:
    data = json.loads((DATA / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def dig(value: Any, *path: str | int) -> Any:
    """Walk into parsed JSON (keeps the tests free of casts)."""
    for key in path:
        value = value[key]
    return value


def shape(value: object) -> object:
    """Keys and nesting of a JSON value, without the values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1 that checks Meta's signature over the raw bytes."""

    url: str = ""
    status: int = 200
    raw: list[bytes] = field(default_factory=list)
    valid: list[bool] = field(default_factory=list)

    def payloads(self) -> list[dict[str, object]]:
        return [json.loads(r) for r in self.raw]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()

    async def webhook(request: web.Request) -> web.Response:
        raw = await request.read()
        expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        rec.raw.append(raw)
        rec.valid.append(
            hmac.compare_digest(request.headers.get("X-Hub-Signature-256", ""), expected)
        )
        return web.Response(status=rec.status)

    app = web.Application()
    app.router.add_post("/webhook", webhook)
    async with on_loopback(app) as base:
        rec.url = f"{base}/webhook"
        yield rec


@pytest.fixture
async def sandbox(clock: Clock) -> AsyncIterator[Sandbox]:
    sb = Sandbox(app_secret=SECRET, clock=clock)
    sb.echo_delay = 0.0
    sb.retry_delay = 0.0
    sb.subscribe(["messages", "comments"])  # as `instaset connect` leaves an account
    await sb.start()
    sb.add_user(IGSID, "alice")
    yield sb
    await sb.stop()


async def post_json(
    session: aiohttp.ClientSession, sandbox: Sandbox, path: str, body: object, token: str = ""
) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token or sandbox.token}"}
    async with session.post(f"{sandbox.base_url}{path}", json=body, headers=headers) as resp:
        return resp.status, await resp.json()


def text_body(recipient: str, text: str) -> dict[str, object]:
    return {"recipient": {"id": recipient}, "message": {"text": text}}


# ------------------------------------------------------------------------- messaging window


async def test_window_is_24h_after_the_last_inbound_message(
    sandbox: Sandbox, session: aiohttp.ClientSession, clock: Clock
) -> None:
    path = f"/v25.0/{ACCT}/messages"
    status, body = await post_json(session, sandbox, path, text_body(IGSID, "first"))
    assert (status, body) == (403, real("send_error_outside_window_real.json"))

    await sandbox.user_sends_dm(IGSID, "hi", deliver=False)
    clock.t += 24 * HOUR
    status, body = await post_json(session, sandbox, path, text_body(IGSID, "just in time"))
    assert status == 200 and body["recipient_id"] == IGSID
    assert str(body["message_id"]).startswith("aWdf")

    clock.t += 1
    status, body = await post_json(session, sandbox, path, text_body(IGSID, "too late"))
    assert (status, body) == (403, real("send_error_outside_window_real.json"))

    await sandbox.user_sends_dm(IGSID, "back again", deliver=False)
    status, _ = await post_json(session, sandbox, path, text_body(IGSID, "reopened"))
    assert status == 200


async def test_human_agent_tag_extends_the_window_to_7_days(
    sandbox: Sandbox, graph: GraphClient, clock: Clock
) -> None:
    await sandbox.user_sends_dm(IGSID, "hi", deliver=False)
    clock.t += 3 * DAY
    with pytest.raises(WindowClosed):
        await graph.send_text(ACCT, IGSID, "bot reply", token=sandbox.token)
    result = await graph.send_text(
        ACCT, IGSID, "human reply", token=sandbox.token, human_agent=True
    )
    assert result.message_id is not None
    clock.t += 4 * DAY + 1
    with pytest.raises(WindowClosed):
        await graph.send_text(ACCT, IGSID, "human, too late", token=sandbox.token, human_agent=True)


async def test_unknown_recipient_gets_metas_real_error(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    status, body = await post_json(session, sandbox, f"/{ACCT}/messages", text_body("777", "hi"))
    assert (status, body) == (400, real("send_error_user_not_found_real.json"))


async def test_users_known_from_stored_data_keep_their_windows(
    sandbox: Sandbox, session: aiohttp.ClientSession, graph: GraphClient, clock: Clock
) -> None:
    """``serve --sandbox`` started again tells the sandbox the stored contacts (s16 fresh
    audit, finding 2): each is a user Meta knows, with the window of their last message;
    anyone else is still unknown."""
    sandbox.know_user("2001", "carol", T0 - 2 * HOUR)
    sandbox.know_user("2002", None, T0 - 30 * HOUR)
    sandbox.know_user("2003", "only_commented", None)
    path = f"/{ACCT}/messages"
    status, body = await post_json(session, sandbox, path, text_body("2001", "hi carol"))
    assert status == 200 and body["recipient_id"] == "2001"
    with pytest.raises(WindowClosed):
        await graph.send_text(ACCT, "2002", "bot, too late", token=sandbox.token)
    sent = await graph.send_text(ACCT, "2002", "human", token=sandbox.token, human_agent=True)
    assert sent.message_id is not None and sandbox.users["2002"] == "user_2002"
    with pytest.raises(WindowClosed):
        await graph.send_text(ACCT, "2003", "never wrote", token=sandbox.token, human_agent=True)
    status, body = await post_json(session, sandbox, path, text_body("2004", "who?"))
    assert (status, body) == (400, real("send_error_user_not_found_real.json"))
    # A message received since is newer than the stored one: it counts.
    await sandbox.user_sends_dm(IGSID, "hi", deliver=False)
    sandbox.know_user(IGSID, "alice", T0 - 8 * DAY)
    status, _ = await post_json(session, sandbox, path, text_body(IGSID, "still open"))
    assert status == 200


async def test_comment_ids_look_like_metas_and_differ_between_sandboxes() -> None:
    """Comment ids used to restart at 17900000000000001 in each sandbox, so a sandbox
    started again on the same data reused ids the daemon had stored (s16 fresh audit,
    finding 1). A seeded base keeps them predictable for tests."""
    ids: list[str] = []
    for _ in range(2):
        box = Sandbox(app_secret=SECRET)
        for n in range(2):
            payload = await box.user_comments(IGSID, f"c{n}", "18000000001", deliver=False)
            ids.append(str(dig(payload, "entry", 0, "changes", 0, "value", "id")))
    assert len(set(ids)) == 4
    assert all(len(i) == 17 and i.isdigit() and i.startswith("1790") for i in ids)
    assert int(ids[1]) == int(ids[0]) + 1
    seeded = Sandbox(app_secret=SECRET, comment_id_base=1)
    first = await seeded.user_comments(IGSID, "x", "18000000001", deliver=False)
    assert dig(first, "entry", 0, "changes", 0, "value", "id") == "17900000000000001"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (text_body(IGSID, "é" * 501), "1000"),
        (
            {"recipient": {"id": IGSID}, "sender_action": "typing_on", "message": {"text": "x"}},
            "alone",
        ),
        ({"recipient": {"id": IGSID}, "message": {}}, "text or attachment"),
        ({"message": {"text": "x"}}, "recipient"),
        (
            {"recipient": {"id": IGSID}, "message": {"attachments": [{"type": "image"}] * 11}},
            "1 to 10",
        ),
        (
            {"recipient": {"id": IGSID}, "tag": "ACCOUNT_UPDATE", "message": {"text": "x"}},
            "HUMAN_AGENT",
        ),
    ],
    ids=[
        "too_long",
        "action_with_message",
        "empty_message",
        "no_recipient",
        "11_images",
        "bad_tag",
    ],
)
async def test_malformed_sends_are_code_100(
    sandbox: Sandbox, session: aiohttp.ClientSession, body: dict[str, object], needle: str
) -> None:
    await sandbox.user_sends_dm(IGSID, "hi", deliver=False)
    status, answer = await post_json(session, sandbox, f"/{ACCT}/messages", body)
    error = answer["error"]
    assert status == 400 and isinstance(error, dict)
    assert error["code"] == 100 and needle in str(error["message"])
    assert sandbox.thread(IGSID)[-1].direction == "in"  # nothing was stored as sent


async def test_form_encoded_send_is_accepted(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    await sandbox.user_sends_dm(IGSID, "hi", deliver=False)
    form = {
        "recipient": json.dumps({"id": IGSID}),
        "message": json.dumps({"text": "form"}),
        "access_token": sandbox.token,
    }
    async with session.post(f"{sandbox.base_url}/me/messages", data=form) as resp:
        assert resp.status == 200
    assert sandbox.thread(IGSID)[-1].text == "form"


# --------------------------------------------------------------------------- comments


async def test_one_private_reply_per_comment_within_7_days(
    sandbox: Sandbox, graph: GraphClient, clock: Clock
) -> None:
    first = await sandbox.user_comments(IGSID, "how much?", "18000000001", deliver=False)
    second = await sandbox.user_comments(IGSID, "hello?", "18000000001", deliver=False)
    cid1 = dig(first, "entry", 0, "changes", 0, "value", "id")
    cid2 = dig(second, "entry", 0, "changes", 0, "value", "id")

    result = await graph.private_reply(ACCT, cid1, "Sent you the prices", token=sandbox.token)
    assert result.recipient_id == IGSID
    with pytest.raises(GraphError) as info:
        await graph.private_reply(ACCT, cid1, "again", token=sandbox.token)
    assert info.value.code == 10900 and not info.value.retryable
    # A private reply does not open the DM window: the user must answer first.
    with pytest.raises(WindowClosed):
        await graph.send_text(ACCT, IGSID, "follow-up", token=sandbox.token)

    clock.t += 7 * DAY + 1
    with pytest.raises(WindowClosed):
        await graph.private_reply(ACCT, cid2, "late", token=sandbox.token)
    assert len(sandbox.send_attempts()) == 4  # every attempt is recorded, only one was made
    assert [r.json["message"] for r in sandbox.sends()] == [{"text": "Sent you the prices"}]
    assert [m.text for m in sandbox.thread(IGSID)] == ["Sent you the prices"]


async def test_public_replies_only_under_visible_top_level_comments(
    sandbox: Sandbox, graph: GraphClient
) -> None:
    top = await sandbox.user_comments(IGSID, "nice", "18000000001", deliver=False)
    cid = dig(top, "entry", 0, "changes", 0, "value", "id")
    reply_id = await graph.public_reply(cid, "thanks!", token=sandbox.token)
    with pytest.raises(InvalidParameter):
        await graph.public_reply(reply_id, "nested", token=sandbox.token)
    await graph.hide_comment(cid, True, token=sandbox.token)
    with pytest.raises(InvalidParameter):
        await graph.public_reply(cid, "to hidden", token=sandbox.token)
    await graph.hide_comment(cid, False, token=sandbox.token)
    assert not sandbox.comments[cid].hidden
    with pytest.raises(InvalidParameter):
        await graph.public_reply("999", "no such comment", token=sandbox.token)


# ----------------------------------------------------------------------------- webhooks


async def test_send_echo_is_delivered_signed_and_meta_shaped(
    sandbox: Sandbox, graph: GraphClient, receiver: Receiver
) -> None:
    sandbox.webhook_url = receiver.url
    await sandbox.user_sends_dm(IGSID, "hi", deliver=False)
    text = "Olá, see https://x.test/a 🥰"
    result = await graph.send_text(ACCT, IGSID, text, token=sandbox.token)
    await graph.sender_action(ACCT, IGSID, "typing_on", token=sandbox.token)
    await sandbox.drain()

    assert receiver.valid == [True]  # one echo (the sender action has none), signature ok
    raw = receiver.raw[0]
    assert b"https:\\/\\/x.test\\/a" in raw and b"\\ud83e\\udd70" in raw and raw.isascii()
    echo = receiver.payloads()[0]
    assert shape(echo) == shape(real("dm_echo_text_real.json"))
    item = dig(echo, "entry", 0, "messaging", 0)
    assert item["sender"] == {"id": ACCT} and item["recipient"] == {"id": IGSID}
    assert item["message"] == {"mid": result.message_id, "text": text, "is_echo": True}
    assert item["timestamp"] == int(T0 * 1000)
    assert sandbox.undelivered == []


async def test_undeliverable_echo_is_retried_then_recorded(
    sandbox: Sandbox, graph: GraphClient, receiver: Receiver
) -> None:
    receiver.status = 500
    sandbox.webhook_url = receiver.url
    await sandbox.user_sends_dm(IGSID, "hi", deliver=False)
    await graph.send_text(ACCT, IGSID, "echo me", token=sandbox.token)
    await sandbox.drain()
    assert len(receiver.raw) == sandbox.delivery_attempts == 3
    assert [u.reason for u in sandbox.undelivered] == ["HTTP 500"]


async def test_user_dm_is_delivered_signed_with_ms_timestamps(
    sandbox: Sandbox, receiver: Receiver, clock: Clock
) -> None:
    sandbox.webhook_url = receiver.url
    payload = await sandbox.user_sends_dm(IGSID, "Omg", quick_reply={"payload": "YES"})
    assert receiver.valid == [True] and receiver.payloads() == [payload]
    plain = json.loads(json.dumps(payload))
    del plain["entry"][0]["messaging"][0]["message"]["quick_reply"]
    assert shape(plain) == shape(real("dm_text_real_tester.json"))
    entry = dig(payload, "entry", 0)
    assert entry["time"] == int(clock.t * 1000)
    assert entry["messaging"][0]["message"]["quick_reply"] == {"payload": "YES"}
    assert sandbox.deliveries == [(payload, 200)]


async def test_user_comment_is_a_changes_entry_in_seconds(
    sandbox: Sandbox, receiver: Receiver, clock: Clock
) -> None:
    sandbox.webhook_url = receiver.url
    payload = await sandbox.user_comments(
        IGSID, "This is an example.", "123123123", parent_id="1231"
    )
    assert receiver.valid == [True]
    entry = dig(payload, "entry", 0)
    assert entry["time"] == int(clock.t) and entry["id"] == ACCT
    assert shape(entry["changes"][0]) == shape(real("comment_change_dashboard_test.json"))
    assert entry["changes"][0]["value"]["from"] == {"id": IGSID, "username": "alice"}


async def test_own_public_reply_comes_back_as_a_comment_event(
    sandbox: Sandbox, graph: GraphClient, receiver: Receiver
) -> None:
    payload = await sandbox.user_comments(IGSID, "nice", "18000000001", deliver=False)
    cid = dig(payload, "entry", 0, "changes", 0, "value", "id")
    sandbox.webhook_url = receiver.url
    new_id = await graph.public_reply(cid, "thank you", token=sandbox.token)
    await sandbox.drain()
    value = dig(receiver.payloads(), 0, "entry", 0, "changes", 0, "value")
    assert value["id"] == new_id and value["from"]["id"] == ACCT and value["parent_id"] == cid


def test_pure_builders_and_signature() -> None:
    body = meta_dumps({"a": "x/y", "b": "é"})
    assert body == b'{"a":"x\\/y","b":"\\u00e9"}'
    assert sign(body, "k") == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    dm = build_dm_payload("1", "2", "hey", "mid.1", 1740157200421)
    assert shape(dm) == shape(real("dm_text_real_tester.json"))
    comment = build_comment_payload("1", "2", "u", "t", "m", "c", 1740156774, parent_id="p")
    assert shape(dig(comment, "entry", 0, "changes", 0)) == shape(
        real("comment_change_dashboard_test.json")
    )
    sandbox = Sandbox(app_secret="k")
    raw, headers = sandbox.build_signed(dm)
    assert json.loads(raw) == dm and headers["X-Hub-Signature-256"] == sign(raw, "k")


async def test_deliver_without_a_listener_raises_connection_error(sandbox: Sandbox) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sandbox.webhook_url = f"http://127.0.0.1:{port}/webhook"
    with pytest.raises(ConnectionError):
        await sandbox.deliver({"object": "instagram", "entry": []})


# -------------------------------------------------------------------------------- OAuth


async def authorize(
    session: aiohttp.ClientSession, sandbox: Sandbox, choice: str, state: str = "st8"
) -> URL:
    query = {
        "client_id": APP_ID,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "instagram_business_basic,instagram_business_manage_messages",
        "state": state,
    }
    async with session.get(f"{sandbox.base_url}/oauth/authorize", params=query) as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
    marker = f"id='{choice}' href='"
    href = page.split(marker, 1)[1].split("'", 1)[0].replace("&amp;", "&")
    async with session.get(f"{sandbox.base_url}{href}", allow_redirects=False) as resp:
        assert resp.status == 302
        return URL(resp.headers["Location"])


async def test_oauth_flow_codes_are_single_use(
    sandbox: Sandbox, graph: GraphClient, session: aiohttp.ClientSession, clock: Clock
) -> None:
    location = await authorize(session, sandbox, "allow")
    assert str(location).startswith("https://app.test/oauth/callback?")
    assert location.query["state"] == "st8" and location.fragment == "_"
    code = location.query["code"]
    kw = {"client_id": APP_ID, "client_secret": SECRET, "redirect_uri": REDIRECT}
    grant = await graph.exchange_code(code=code + "#_", **kw)
    assert grant.user_id == sandbox.app_user_id
    assert grant.permissions == ("instagram_business_basic", "instagram_business_manage_messages")
    with pytest.raises(InvalidParameter, match="already used"):
        await graph.exchange_code(code=code, **kw)
    form = {**kw, "code": code, "grant_type": "authorization_code"}
    async with session.post(f"{sandbox.base_url}/oauth/access_token", data=form) as resp:
        assert resp.status == 400
        assert await resp.json() == {
            "error_type": "OAuthException",
            "code": 400,
            "error_message": "Matching code was not found or was already used",
        }

    long = await graph.long_lived_token(grant.access_token, client_secret=SECRET)
    assert long.expires_in == 60 * 86400
    assert (await graph.me(token=long.access_token))["user_id"] == ACCT
    clock.t += HOUR + 1  # the short-lived token has expired, the long-lived one has not
    with pytest.raises(TokenInvalid):
        await graph.me(token=grant.access_token)
    clock.t += DAY  # a long-lived token can be refreshed once it is 24 h old
    refreshed = await graph.refresh_token(long.access_token)
    assert refreshed.access_token not in (long.access_token, grant.access_token)
    assert (await graph.me(token=refreshed.access_token))["username"] == "sandbox_creator"


async def test_oauth_deny_wrong_secret_and_flat_shape(
    sandbox: Sandbox, graph: GraphClient, session: aiohttp.ClientSession
) -> None:
    denied = await authorize(session, sandbox, "deny", state="s2")
    assert denied.query["error"] == "access_denied" and denied.query["state"] == "s2"
    assert "code" not in denied.query

    code = (await authorize(session, sandbox, "allow")).query["code"]
    kw = {"client_id": APP_ID, "redirect_uri": REDIRECT}
    with pytest.raises(InvalidParameter, match="client secret"):
        await graph.exchange_code(code=code, client_secret="wrong", **kw)
    with pytest.raises(InvalidParameter, match="redirect_uri"):
        await graph.exchange_code(
            code=code,
            client_secret=SECRET,
            client_id=kw["client_id"],
            redirect_uri="https://evil.test/",
        )
    sandbox.oauth_shape = "flat"
    grant = await graph.exchange_code(code=code, client_secret=SECRET, **kw)
    assert grant.user_id == sandbox.app_user_id and len(grant.permissions) == 2
    async with session.get(
        f"{sandbox.base_url}/oauth/authorize", params={"client_id": "1"}
    ) as resp:
        assert resp.status == 400


# --------------------------------------------------------------------------- conversations


async def test_conversations_are_paginated_newest_first(
    sandbox: Sandbox, session: aiohttp.ClientSession, clock: Clock
) -> None:
    for n in range(12):
        clock.t += 60
        await sandbox.user_sends_dm(f"70{n:02d}", f"msg {n}", deliver=False)
    clock.t += 60
    await sandbox.user_sends_dm("7003", "bumped", deliver=False)  # moves to the front

    headers = {"Authorization": f"Bearer {sandbox.token}"}
    url: str | None = (
        f"{sandbox.base_url}/v25.0/me/conversations"
        "?platform=instagram&fields=participants,updated_time&limit=5"
    )
    order: list[str] = []
    pages = 0
    while url:
        async with session.get(url, headers=headers) as resp:
            body = await resp.json()
        pages += 1
        order += [c["participants"]["data"][1]["id"] for c in body["data"]]
        url = body.get("paging", {}).get("next")
    assert pages == 3
    assert order == ["7003"] + [f"70{n:02d}" for n in reversed(range(12)) if n != 3]

    async with session.get(
        f"{sandbox.base_url}/me/conversations", params={"user_id": "7003"}, headers=headers
    ) as resp:
        conv = (await resp.json())["data"][0]
    async with session.get(
        f"{sandbox.base_url}/{conv['id']}", params={"fields": "messages"}, headers=headers
    ) as resp:
        msgs = (await resp.json())["messages"]["data"]
    assert len(msgs) == 2
    assert msgs[0]["created_time"] > msgs[1]["created_time"]


# ----------------------------------------------------------------------- faults and tokens


async def test_faults_hit_matching_paths_the_given_number_of_times(
    sandbox: Sandbox, graph: GraphClient
) -> None:
    sandbox.inject(Fault("status", path_contains="/subscribed_apps", status=503, times=2))
    for _ in range(2):
        with pytest.raises(Transient):
            await graph.subscribed_fields(ACCT, token=sandbox.token)
    assert (await graph.me(token=sandbox.token))["user_id"] == ACCT  # other paths unaffected
    assert await graph.subscribed_fields(ACCT, token=sandbox.token) == ["messages", "comments"]

    buc = json.dumps(
        {ACCT: [{"type": "instagram", "call_count": 100, "estimated_time_to_regain_access": 3}]}
    )
    sandbox.inject(
        Fault("graph_error", code=4, status=403, headers={"X-Business-Use-Case-Usage": buc})
    )
    with pytest.raises(Throttled) as info:
        await graph.me(token=sandbox.token)
    assert info.value.retry_after == 180.0 and info.value.code == 4

    sandbox.inject(Fault("graph_error", code=2, status=500))
    with pytest.raises(Transient) as tinfo:
        await graph.me(token=sandbox.token)
    assert tinfo.value.code == 2


async def test_delay_fault_then_normal_answer(sandbox: Sandbox, graph: GraphClient) -> None:
    sandbox.inject(Fault("delay", path_contains="/me", delay=0.01))
    assert (await graph.me(token=sandbox.token))["user_id"] == ACCT
    assert len(sandbox.transcript) == 1


async def test_revoked_tokens_answer_190_until_reconnected(
    sandbox: Sandbox, session: aiohttp.ClientSession, graph: GraphClient
) -> None:
    sandbox.revoke_token()
    bearer = {"Authorization": f"Bearer {sandbox.token}"}
    async with session.get(f"{sandbox.base_url}/v25.0/me", headers=bearer) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["code"] == 190 and error["type"] == "OAuthException"
    with pytest.raises(TokenInvalid):
        await graph.subscribe(ACCT, ["messages"], token=sandbox.token)
    async with session.get(
        f"{sandbox.base_url}/me", params={"access_token": "IGAAnot-issued"}
    ) as resp:
        assert (await resp.json())["error"]["code"] == 190
    async with session.get(f"{sandbox.base_url}/me") as resp:
        assert (await resp.json())["error"]["code"] == 2500
    code = (await authorize(session, sandbox, "allow")).query["code"]
    grant = await graph.exchange_code(
        code=code, client_id=APP_ID, client_secret=SECRET, redirect_uri=REDIRECT
    )
    assert (await graph.me(token=grant.access_token))["user_id"] == ACCT


async def test_drop_subscription_and_profile_roundtrip(
    sandbox: Sandbox, graph: GraphClient, session: aiohttp.ClientSession
) -> None:
    await graph.subscribe("me", ["messages", "comments"], token=sandbox.token)
    sandbox.drop_subscription()
    assert await graph.subscribed_fields(ACCT, token=sandbox.token) == []
    await graph.set_ice_breakers(ACCT, [("Prices?", "P"), ("Hours?", "H")], token=sandbox.token)
    headers = {"Authorization": f"Bearer {sandbox.token}"}
    async with session.get(
        f"{sandbox.base_url}/v25.0/me/messenger_profile",
        params={"fields": "ice_breakers"},
        headers=headers,
    ) as resp:
        data = (await resp.json())["data"]
    assert data[0]["call_to_actions"][1] == {"question": "Hours?", "payload": "H"}
    with pytest.raises(ValueError):
        await graph.set_ice_breakers(ACCT, [("q", "p")] * 5, token=sandbox.token)


async def test_transcript_records_requests_with_the_clock(
    sandbox: Sandbox, graph: GraphClient, clock: Clock
) -> None:
    clock.t = T0 + 42
    await graph.me(token=sandbox.token)
    rec = sandbox.transcript[0]
    assert (rec.method, rec.path, rec.route, rec.at) == ("GET", "/v25.0/me", "/me", T0 + 42)
    assert rec.query["fields"].startswith("user_id,") and rec.body is None
    assert set(rec.headers) <= {"Authorization", "Content-Type", "User-Agent"}


async def test_run_sandbox_serves_until_stopped(session: aiohttp.ClientSession) -> None:
    sandbox = await run_sandbox("127.0.0.1", 0, app_secret=SECRET, username="demo_creator")
    try:
        bearer = {"Authorization": f"Bearer {sandbox.token}"}
        url = f"{sandbox.base_url}/v99.9/me"
        async with session.get(url, params={"fields": "username"}, headers=bearer) as resp:
            assert await resp.json() == {"username": "demo_creator", "id": sandbox.app_user_id}
    finally:
        await sandbox.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with session.get(f"{sandbox.base_url}/me"):
            pass
