"""GraphClient against a real Sandbox (and tiny aiohttp servers) on 127.0.0.1, the error map of
check_response over real and constructed envelopes, and split_text."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from instaset.errors import (
    AlreadyReplied,
    GraphError,
    InvalidParameter,
    PermissionMissing,
    Throttled,
    TokenInvalid,
    Transient,
    UserUnavailable,
    WindowClosed,
)
from instaset.graph import (
    GraphClient,
    QuickReply,
    SendResult,
    TokenGrant,
    check_response,
    parse_usage,
    split_text,
)
from instaset.sandbox import Fault, Sandbox
from tests.http_helpers import reserved_port

DATA = Path(__file__).parent / "data"
SECRET = "graph-test-app-secret"
IGSID = "5550001112223334"
T0 = 1_760_000_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def real(name: str) -> dict[str, object]:
    data = json.loads((DATA / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sandbox(clock: Clock) -> AsyncIterator[Sandbox]:
    sb = Sandbox(app_secret=SECRET, clock=clock)
    await sb.start()
    sb.add_user(IGSID, "alice")
    yield sb
    await sb.stop()


def client_for(session: aiohttp.ClientSession, url: str, timeout: float = 5.0) -> GraphClient:
    return GraphClient(session, graph_url=url, api_version="v25.0", api_url=url, timeout=timeout)


@pytest.fixture
async def tiny(
    session: aiohttp.ClientSession,
) -> AsyncIterator[Callable[[web.Application], Awaitable[GraphClient]]]:
    """Start a hand-written aiohttp app on 127.0.0.1 and give a client pointed at it."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> GraphClient:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return client_for(session, f"http://127.0.0.1:{runner.addresses[0][1]}")

    yield start
    for runner in runners:
        await runner.cleanup()


def answer(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Application:
    async def handler(_request: web.Request) -> web.Response:
        return web.json_response(body, status=status, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


# ---------------------------------------------------------------------------- send bodies

ACCT = "17841400000000001"


async def test_send_text_body_and_result(sandbox: Sandbox, graph: GraphClient) -> None:
    await sandbox.user_sends_dm(IGSID, "hi", deliver=False)
    result = await graph.send_text(ACCT, IGSID, "Hello there", token=sandbox.token)
    rec = sandbox.transcript[-1]
    assert (rec.method, rec.path) == ("POST", f"/v25.0/{ACCT}/messages")
    assert rec.body == {"recipient": {"id": IGSID}, "message": {"text": "Hello there"}}
    assert result.recipient_id == IGSID
    assert result.message_id is not None and result.message_id.startswith("aWdf")
    assert sandbox.thread(IGSID)[-1].mid == result.message_id


async def test_token_travels_in_authorization_header_only(
    sandbox: Sandbox, graph: GraphClient
) -> None:
    await sandbox.user_sends_dm(IGSID, "hi", deliver=False)
    await graph.send_text(ACCT, IGSID, "x", token=sandbox.token)
    await graph.me(token=sandbox.token)
    await graph.subscribed_fields(ACCT, token=sandbox.token)
    for rec in sandbox.transcript:
        assert rec.headers["Authorization"] == f"Bearer {sandbox.token}"
        assert "access_token" not in rec.query
        assert sandbox.token not in rec.path


SEND_CASES: list[tuple[str, Callable[[GraphClient, str], Awaitable[object]], dict[str, object]]] = [
    (
        "quick_replies",
        lambda g, t: g.send_text(
            ACCT,
            IGSID,
            "Pick one",
            token=t,
            quick_replies=[QuickReply("Yes", "YES"), QuickReply("", "", "user_email")],
        ),
        {
            "recipient": {"id": IGSID},
            "message": {
                "text": "Pick one",
                "quick_replies": [
                    {"content_type": "text", "title": "Yes", "payload": "YES"},
                    {"content_type": "user_email"},
                ],
            },
        },
    ),
    (
        "human_agent",
        lambda g, t: g.send_text(ACCT, IGSID, "A human here", token=t, human_agent=True),
        {
            "recipient": {"id": IGSID},
            "messaging_type": "MESSAGE_TAG",
            "tag": "HUMAN_AGENT",
            "message": {"text": "A human here"},
        },
    ),
    *[
        (
            f"attachment_{kind}",
            (
                lambda k: (
                    lambda g, t: g.send_attachment(ACCT, IGSID, k, f"https://x.test/{k}", token=t)
                )
            )(kind),
            {
                "recipient": {"id": IGSID},
                "message": {
                    "attachment": {"type": kind, "payload": {"url": f"https://x.test/{kind}"}}
                },
            },
        )
        for kind in ("image", "audio", "video", "file")
    ],
    (
        "images",
        lambda g, t: g.send_images(
            ACCT, IGSID, ["https://x.test/1.png", "https://x.test/2.png"], token=t
        ),
        {
            "recipient": {"id": IGSID},
            "message": {
                "attachments": [
                    {"type": "image", "payload": {"url": "https://x.test/1.png"}},
                    {"type": "image", "payload": {"url": "https://x.test/2.png"}},
                ]
            },
        },
    ),
    (
        "like_heart",
        lambda g, t: g.send_like_heart(ACCT, IGSID, token=t),
        {"recipient": {"id": IGSID}, "message": {"attachment": {"type": "like_heart"}}},
    ),
    (
        "media_share",
        lambda g, t: g.send_media_share(ACCT, IGSID, "17999", token=t),
        {
            "recipient": {"id": IGSID},
            "message": {"attachment": {"type": "MEDIA_SHARE", "payload": {"id": "17999"}}},
        },
    ),
    (
        "generic_template",
        lambda g, t: g.send_generic_template(
            ACCT,
            IGSID,
            [{"title": "Card", "buttons": [{"type": "postback", "title": "Go", "payload": "GO"}]}],
            token=t,
        ),
        {
            "recipient": {"id": IGSID},
            "message": {
                "attachment": {
                    "type": "template",
                    "payload": {
                        "template_type": "generic",
                        "elements": [
                            {
                                "title": "Card",
                                "buttons": [{"type": "postback", "title": "Go", "payload": "GO"}],
                            }
                        ],
                    },
                }
            },
        },
    ),
    (
        "button_template",
        lambda g, t: g.send_button_template(
            ACCT,
            IGSID,
            "Book?",
            [{"type": "web_url", "url": "https://x.test", "title": "Book"}],
            token=t,
        ),
        {
            "recipient": {"id": IGSID},
            "message": {
                "attachment": {
                    "type": "template",
                    "payload": {
                        "template_type": "button",
                        "text": "Book?",
                        "buttons": [{"type": "web_url", "url": "https://x.test", "title": "Book"}],
                    },
                }
            },
        },
    ),
]


@pytest.mark.parametrize(("name", "call", "expected"), SEND_CASES, ids=[c[0] for c in SEND_CASES])
async def test_send_bodies_are_metas(
    sandbox: Sandbox,
    graph: GraphClient,
    name: str,
    call: Callable[[GraphClient, str], Awaitable[object]],
    expected: dict[str, object],
) -> None:
    await sandbox.user_sends_dm(IGSID, "hi", deliver=False)
    result = await call(graph, sandbox.token)
    assert isinstance(result, SendResult) and result.recipient_id == IGSID
    assert sandbox.transcript[-1].body == expected
    assert sandbox.transcript[-1].route == f"/{ACCT}/messages"


@pytest.mark.parametrize("action", ["mark_seen", "typing_on", "typing_off"])
async def test_sender_action_is_alone_in_its_request(
    sandbox: Sandbox, graph: GraphClient, action: str
) -> None:
    await graph.sender_action(ACCT, IGSID, action, token=sandbox.token)  # type: ignore[arg-type]
    assert sandbox.transcript[-1].body == {"recipient": {"id": IGSID}, "sender_action": action}
    assert sandbox.sends() == []


async def test_react_and_unreact_bodies(sandbox: Sandbox, graph: GraphClient) -> None:
    payload = await sandbox.user_sends_dm(IGSID, "love this", deliver=False)
    mid = payload["entry"][0]["messaging"][0]["message"]["mid"]  # type: ignore[index]
    await graph.react(ACCT, IGSID, mid, "love", token=sandbox.token)
    assert sandbox.transcript[-1].body == {
        "recipient": {"id": IGSID},
        "sender_action": "react",
        "payload": {"message_id": mid, "reaction": "love"},
    }
    await graph.unreact(ACCT, IGSID, mid, token=sandbox.token)
    assert sandbox.transcript[-1].body == {
        "recipient": {"id": IGSID},
        "sender_action": "unreact",
        "payload": {"message_id": mid},
    }


async def test_comment_calls(sandbox: Sandbox, graph: GraphClient) -> None:
    payload = await sandbox.user_comments(IGSID, "price?", "18000000001", deliver=False)
    cid = payload["entry"][0]["changes"][0]["value"]["id"]  # type: ignore[index]
    result = await graph.private_reply(ACCT, cid, "Sent you a DM!", token=sandbox.token)
    assert sandbox.transcript[-1].body == {
        "recipient": {"comment_id": cid},
        "message": {"text": "Sent you a DM!"},
    }
    assert result.recipient_id == IGSID
    new_id = await graph.public_reply(cid, "Check your DMs / inbox", token=sandbox.token)
    rec = sandbox.transcript[-1]
    assert rec.route == f"/{cid}/replies" and rec.body == {"message": "Check your DMs / inbox"}
    assert sandbox.comments[new_id].parent_id == cid
    await graph.hide_comment(cid, True, token=sandbox.token)
    assert sandbox.transcript[-1].query == {"hide": "true"}
    assert sandbox.comments[cid].hidden


async def test_me_subscriptions_and_profile(sandbox: Sandbox, graph: GraphClient) -> None:
    me = await graph.me(token=sandbox.token)
    assert me["user_id"] == ACCT and me["username"] == "sandbox_creator"
    assert isinstance(me["id"], str) and me["id"] != ACCT
    assert sandbox.transcript[-1].query["fields"].split(",") == [
        "user_id", "username", "name", "account_type", "profile_picture_url",
        "followers_count", "follows_count", "media_count",
    ]  # fmt: skip
    await graph.subscribe(ACCT, ["messages", "comments"], token=sandbox.token)
    assert sandbox.transcript[-1].query == {"subscribed_fields": "messages,comments"}
    assert await graph.subscribed_fields(ACCT, token=sandbox.token) == ["messages", "comments"]
    with pytest.raises(InvalidParameter):
        await graph.subscribe(ACCT, ["message_echoes"], token=sandbox.token)
    await graph.unsubscribe(ACCT, token=sandbox.token)
    assert await graph.subscribed_fields(ACCT, token=sandbox.token) == []

    await graph.set_ice_breakers("me", [("Prices?", "PRICES")], token=sandbox.token)
    assert sandbox.transcript[-1].body == {
        "platform": "instagram",
        "ice_breakers": [
            {"call_to_actions": [{"question": "Prices?", "payload": "PRICES"}], "locale": "default"}
        ],
    }
    menu = [{"type": "postback", "title": "Talk to a human", "payload": "HUMAN"}]
    await graph.set_persistent_menu("me", menu, token=sandbox.token)
    assert sandbox.transcript[-1].body == {
        "platform": "instagram",
        "persistent_menu": [{"locale": "default", "call_to_actions": menu}],
    }
    await graph.delete_messenger_profile("me", ["ice_breakers"], token=sandbox.token)
    assert list(sandbox.messenger_profile) == ["persistent_menu"]


async def test_me_ids_become_strings(
    tiny: Callable[[web.Application], Awaitable[GraphClient]],
) -> None:
    graph = await tiny(answer({"user_id": 17841400000000001234, "id": 26160319576992690}))
    me = await graph.me(token="IGAAtoken")
    assert me["user_id"] == "17841400000000001234" and me["id"] == "26160319576992690"


async def test_conversations_paging_and_messages(
    sandbox: Sandbox, graph: GraphClient, clock: Clock
) -> None:
    for n in range(30):
        clock.t += 1
        await sandbox.user_sends_dm(f"9000{n:02d}", f"hello {n}", deliver=False)
    seen: list[dict[str, object]] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = await graph.conversations(ACCT, token=sandbox.token, after=cursor)
        seen.extend(page)
        pages += 1
        if cursor is None:
            break
    assert pages == 2 and len(seen) == 30
    ids = [p["participants"]["data"][1]["id"] for p in seen]  # type: ignore[index]
    assert ids == [f"9000{n:02d}" for n in reversed(range(30))]
    one, nxt = await graph.conversations(ACCT, token=sandbox.token, user_id="900007")
    assert nxt is None and len(one) == 1
    messages = await graph.conversation_messages(str(one[0]["id"]), token=sandbox.token)
    assert len(messages) == 1
    detail = await graph.message(str(messages[0]["id"]), token=sandbox.token)
    assert detail["message"] == "hello 7"
    assert detail["from"] == {"id": "900007", "username": "user_900007"}


# --------------------------------------------------------------------------- error mapping

THROTTLE_USAGE = {"X-App-Usage": json.dumps({"call_count": 100, "total_cputime": 5})}


def env(
    code: int, subcode: int | None = None, message: str = "m", **extra: object
) -> dict[str, object]:
    err: dict[str, object] = {"message": message, "type": "OAuthException", "code": code}
    if subcode is not None:
        err["error_subcode"] = subcode
    err.update(extra)
    return {"error": err}


ERROR_TABLE: list[tuple[str, int, object, type[GraphError]]] = [
    ("real_window", 403, real("send_error_outside_window_real.json"), WindowClosed),
    ("real_user_not_found", 400, real("send_error_user_not_found_real.json"), InvalidParameter),
    ("4", 400, env(4, message="Application request limit reached"), Throttled),
    ("17", 400, env(17), Throttled),
    ("32", 400, env(32), Throttled),
    ("613", 400, env(613), Throttled),
    ("80002", 400, env(80002), Throttled),
    ("4/1349210", 400, env(4, 1349210), Throttled),
    ("x/1349212", 400, env(9, 1349212), Throttled),
    ("190", 400, env(190), TokenInvalid),
    ("190/463", 400, env(190, 463, "Session has expired"), TokenInvalid),
    ("10/2534022", 403, env(10, 2534022), WindowClosed),
    ("10/2018278", 400, env(10, 2018278), WindowClosed),
    (
        "10_window_text",
        400,
        env(10, None, "This message is sent outside of allowed window."),
        WindowClosed,
    ),
    (
        "10_permission",
        400,
        env(10, None, "Application does not have permission"),
        PermissionMissing,
    ),
    ("200", 403, env(200), PermissionMissing),
    ("299", 403, env(299), PermissionMissing),
    ("551", 400, env(551, 1545041, "This person isn't available right now."), UserUnavailable),
    ("100", 400, env(100, None, "Invalid parameter"), InvalidParameter),
    ("10900", 400, env(10900, None, "Activity already replied to"), AlreadyReplied),
    ("1", 500, env(1), Transient),
    ("2", 503, env(2), Transient),
    ("100_is_transient", 400, env(100, is_transient=True), Transient),
    ("unknown_5xx", 500, env(12345), Transient),
    ("429_with_envelope", 429, env(12345, None, "Too many calls"), Throttled),
    ("429_code_100", 429, env(100), Throttled),
    ("unparseable_5xx", 502, None, Transient),
    ("text_5xx", 503, "<html>bad gateway</html>", Transient),
    (
        "oauth_shape",
        400,
        {
            "error_type": "OAuthException",
            "code": 400,
            "error_message": "Matching code was not found or was already used",
        },
        InvalidParameter,
    ),
]


@pytest.mark.parametrize(
    ("name", "status", "body", "cls"), ERROR_TABLE, ids=[e[0] for e in ERROR_TABLE]
)
def test_check_response_maps_codes(
    name: str, status: int, body: object, cls: type[GraphError]
) -> None:
    with pytest.raises(GraphError) as info:
        check_response(status, body, {})
    assert type(info.value) is cls
    assert info.value.status == status
    assert info.value.retryable is (cls in (Throttled, Transient))


def test_real_envelope_fields_are_kept() -> None:
    with pytest.raises(WindowClosed) as info:
        check_response(403, real("send_error_outside_window_real.json"), {})
    err = info.value
    assert (err.code, err.subcode, err.fbtrace_id) == (10, 2534022, "AH8pjdbGEQUjnztFwv_WH7_")
    assert "Essa mensagem foi enviada fora do período permitido." in str(err)


def test_unrecognised_error_bodies_are_plain_graph_errors() -> None:
    for status, body in [(404, {"foo": 1}), (400, env(12345)), (418, None)]:
        with pytest.raises(GraphError) as info:
            check_response(status, body, {})
        assert type(info.value) is GraphError and not info.value.retryable


def test_success_passes_unless_usage_is_full() -> None:
    check_response(200, {"success": True}, {"x-app-usage": '{"call_count":99}'})
    with pytest.raises(Throttled) as info:
        check_response(200, {"success": True}, THROTTLE_USAGE)
    assert info.value.retry_after is None
    buc = {"1784": [{"type": "instagram", "call_count": 100, "estimated_time_to_regain_access": 5}]}
    with pytest.raises(Throttled) as info:
        check_response(200, {}, {"X-Business-Use-Case-Usage": json.dumps(buc)})
    assert info.value.retry_after == 300.0
    # A send that went out must not look failed: the client opts out for POSTs.
    check_response(200, {"message_id": "m"}, THROTTLE_USAGE, throttle_on_success=False)


def test_throttle_error_takes_retry_after_from_buc_minutes() -> None:
    buc = {
        "a": [{"call_count": 12}],
        "b": [{"total_time": 100, "estimated_time_to_regain_access": 2}],
    }
    with pytest.raises(Throttled) as info:
        check_response(400, env(80002), {"X-Business-Use-Case-Usage": json.dumps(buc)})
    assert info.value.retry_after == 120.0


def test_error_messages_never_carry_tokens() -> None:
    body = env(
        190, None, "Bad token IGAAabcdefghijklmnopqrstuvwxyz0123 in access_token=EAAsecretvalue1"
    )
    with pytest.raises(TokenInvalid) as info:
        check_response(400, body, {}, secrets=["mysecret"])
    text = str(info.value)
    assert "IGAAabcdefghijklmnopqrstuvwxyz0123" not in text and "EAAsecretvalue1" not in text
    with pytest.raises(InvalidParameter) as info2:
        check_response(
            400,
            {"error_type": "OAuthException", "code": 400, "error_message": "bad mysecret"},
            {},
            secrets=["mysecret"],
        )
    assert "mysecret" not in str(info2.value)


def test_secret_query_values_in_an_echoed_url_are_hidden() -> None:
    """A refusal's words are stored on the send (``sends.detail``) and shown and exported:
    Meta's message may echo a request URL, plain or percent-encoded. The secret parameters'
    values go (appsecret_proof and client_secret too, not only access_token); the rest of
    the words stay."""
    from instaset.graph import redact

    said = ("Bad request (https://graph.instagram.com/v25.0/me/messages?access_token=tok1234"
            "&appsecret_proof=9f8e7d6c5b4a&recipient=42); retry. Also"
            " redirect=https%3A%2F%2Fx%2Fcb%3Fclient_secret%3Dcafe0123%26code%3D1,"
            " ACCESS_TOKEN=abcdef12")
    assert redact(said) == (
        "Bad request (https://graph.instagram.com/v25.0/me/messages?access_token=***"
        "&appsecret_proof=***&recipient=42); retry. Also"
        " redirect=https%3A%2F%2Fx%2Fcb%3Fclient_secret%3D***, ACCESS_TOKEN=***")


@pytest.mark.parametrize("opening,closing", [("(", ")"), ("[", "]"), ("{", "}")])
def test_a_secret_value_stops_at_the_closing_bracket(opening: str, closing: str) -> None:
    """A URL Meta quotes in brackets: its secret value is hidden, the bracket and the words
    after it stay."""
    from instaset.graph import redact

    said = f"url {opening}https://x/?client_secret=deadbeefcafe0123{closing} words after"
    assert redact(said) == f"url {opening}https://x/?client_secret=***{closing} words after"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"X-App-Usage": "not json"}, None),
        ({"X-App-Usage": '{"call_count":28,"total_cputime":25,"total_time":31}'}, (31, None, None)),
        ({"x-app-usage": '{"call_volume":7,"cpu_time":9}'}, (9.0, None, None)),
        (
            {"X-Business-Use-Case-Usage": json.dumps({
                "1": [{"type": "instagram", "call_count": 12, "total_cputime": 3, "total_time": 4,
                       "estimated_time_to_regain_access": 0}],
                "2": [{"call_count": 40, "estimated_time_to_regain_access": 1.5}],
            })},
            (None, 40.0, 90.0),
        ),
    ],
)  # fmt: skip
def test_parse_usage(headers: dict[str, str], expected: tuple[float | None, ...] | None) -> None:
    usage = parse_usage(headers)
    if expected is None:
        assert usage is None
    else:
        assert usage is not None
        assert (usage.app_pct, usage.buc_pct, usage.regain_seconds) == expected


async def test_errors_through_the_client(
    sandbox: Sandbox, graph: GraphClient, clock: Clock
) -> None:
    with pytest.raises(InvalidParameter) as info:
        await graph.send_text(ACCT, "404404", "hi", token=sandbox.token)
    assert info.value.subcode == 2534014
    with pytest.raises(WindowClosed):
        await graph.send_text(ACCT, IGSID, "never wrote to us", token=sandbox.token)
    sandbox.inject(Fault("graph_error", path_contains="/me", status=400, code=613))
    with pytest.raises(Throttled):
        await graph.me(token=sandbox.token)
    assert graph.last_usage is not None and graph.last_usage.app_pct == 100
    sandbox.revoke_token()
    with pytest.raises(TokenInvalid) as tinfo:
        await graph.me(token=sandbox.token)
    assert sandbox.token not in str(tinfo.value) and tinfo.value.code == 190


async def test_successful_send_with_full_usage_is_not_an_error(
    tiny: Callable[[web.Application], Awaitable[GraphClient]],
) -> None:
    graph = await tiny(answer({"recipient_id": "1", "message_id": "m1"}, headers=THROTTLE_USAGE))
    result = await graph.send_text(ACCT, "1", "hi", token="IGAAtoken")
    assert result == SendResult("1", "m1")
    assert graph.last_usage is not None and graph.last_usage.max_pct == 100
    with pytest.raises(Throttled):
        await graph.me(token="IGAAtoken")


# ---------------------------------------------------------------------------- network errors


async def test_connection_refused_is_known_not_sent(session: aiohttp.ClientSession) -> None:
    # Held, not picked and released: nothing else can start listening on it meanwhile.
    with reserved_port() as port:
        graph = client_for(session, f"http://127.0.0.1:{port}")
        with pytest.raises(Transient) as info:
            await graph.send_text(ACCT, IGSID, "hi", token="IGAAtoken")
    assert info.value.outcome_unknown is False


async def test_post_timeout_is_outcome_unknown(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    assert sandbox.base_url is not None
    graph = client_for(session, sandbox.base_url, timeout=0.3)
    await sandbox.user_sends_dm(IGSID, "hi", deliver=False)
    # The sandbox processes the send, then hangs until it is stopped.
    sandbox.inject(Fault("drop_after_send", path_contains="/messages", delay=60))
    with pytest.raises(Transient) as info:
        await graph.send_text(ACCT, IGSID, "did it go?", token=sandbox.token)
    assert info.value.outcome_unknown is True
    assert sandbox.sends()[-1].json["message"] == {"text": "did it go?"}
    sandbox.inject(Fault("delay", path_contains="/me", delay=60))
    with pytest.raises(Transient) as info:
        await graph.me(token=sandbox.token)
    assert info.value.outcome_unknown is False


async def test_dropped_connection_after_send_is_outcome_unknown(
    sandbox: Sandbox, graph: GraphClient
) -> None:
    await sandbox.user_sends_dm(IGSID, "hi", deliver=False)
    sandbox.inject(Fault("drop_after_send", path_contains="/messages"))
    with pytest.raises(Transient) as info:
        await graph.send_text(ACCT, IGSID, "lost answer", token=sandbox.token)
    assert info.value.outcome_unknown is True
    assert sandbox.thread(IGSID)[-1].text == "lost answer"


async def test_5xx_plain_text_is_transient(sandbox: Sandbox, graph: GraphClient) -> None:
    sandbox.inject(Fault("status", path_contains="/me", status=502, message="<html>oops</html>"))
    with pytest.raises(Transient) as info:
        await graph.me(token=sandbox.token)
    assert info.value.status == 502 and info.value.outcome_unknown is False
    assert (await graph.me(token=sandbox.token))["user_id"] == ACCT


# ------------------------------------------------------------------------------ token grants

GRANT_SHAPES = [
    (
        {"data": [{"access_token": "IGAAshort", "user_id": "26160319576992690",
                   "permissions": "instagram_business_basic,instagram_business_manage_messages"}]},
        "26160319576992690",
    ),
    (
        {"access_token": "IGAAshort", "user_id": 26160319576992690123,
         "permissions": ["instagram_business_basic", "instagram_business_manage_messages"]},
        "26160319576992690123",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("body", "user_id"), GRANT_SHAPES, ids=["data_string", "flat_list_int"])
async def test_exchange_code_accepts_both_shapes(
    tiny: Callable[[web.Application], Awaitable[GraphClient]], body: object, user_id: str
) -> None:
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        assert request.path == "/oauth/access_token" and "Authorization" not in request.headers
        seen.append({k: str(v) for k, v in (await request.post()).items()})
        return web.json_response(body)

    app = web.Application()
    app.router.add_post("/oauth/access_token", handler)
    graph = await tiny(app)
    grant = await graph.exchange_code(
        client_id="990", client_secret="shh", redirect_uri="https://x.test/cb", code="AQcode#_"
    )
    assert grant == TokenGrant(
        "IGAAshort",
        user_id,
        ("instagram_business_basic", "instagram_business_manage_messages"),
        None,
    )
    assert seen == [
        {"client_id": "990", "client_secret": "shh", "grant_type": "authorization_code",
         "redirect_uri": "https://x.test/cb", "code": "AQcode"}
    ]  # fmt: skip
    assert "IGAAshort" not in repr(grant)


async def test_long_lived_and_refresh_put_token_in_query(
    tiny: Callable[[web.Application], Awaitable[GraphClient]],
) -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.path, dict(request.query)))
        return web.json_response(
            {"access_token": "IGAAlong", "token_type": "bearer", "expires_in": 5183944}
        )

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    graph = await tiny(app)
    grant = await graph.long_lived_token("IGAAshort", client_secret="shh")
    assert grant.access_token == "IGAAlong" and grant.expires_in == 5183944
    await graph.refresh_token("IGAAlong")
    assert seen == [
        ("/access_token", {"grant_type": "ig_exchange_token", "client_secret": "shh",
                           "access_token": "IGAAshort"}),
        ("/refresh_access_token", {"grant_type": "ig_refresh_token", "access_token": "IGAAlong"}),
    ]  # fmt: skip


async def test_oauth_error_maps_and_hides_secret(
    tiny: Callable[[web.Application], Awaitable[GraphClient]],
) -> None:
    body = {
        "error_type": "OAuthException",
        "code": 400,
        "error_message": "Invalid secret shh-secret",
    }
    graph = await tiny(answer(body, status=400))
    with pytest.raises(InvalidParameter) as info:
        await graph.exchange_code(
            client_id="1", client_secret="shh-secret", redirect_uri="r", code="c"
        )
    assert "shh-secret" not in str(info.value) and "Invalid secret" in str(info.value)


# ------------------------------------------------------------------- local argument checks


async def test_argument_limits_fail_before_any_request(
    sandbox: Sandbox, graph: GraphClient
) -> None:
    too_many = [QuickReply(f"q{i}", f"P{i}") for i in range(14)]
    with pytest.raises(ValueError, match="at most 13"):
        await graph.send_text(ACCT, IGSID, "pick", token=sandbox.token, quick_replies=too_many)
    with pytest.raises(ValueError, match="1000"):
        await graph.send_text(ACCT, IGSID, "é" * 501, token=sandbox.token)
    with pytest.raises(ValueError):
        await graph.send_images(
            ACCT, IGSID, [f"https://x.test/{i}" for i in range(11)], token=sandbox.token
        )
    with pytest.raises(ValueError):
        await graph.send_attachment(ACCT, IGSID, "sticker", "https://x.test", token=sandbox.token)
    assert sandbox.transcript == []


async def test_exactly_1000_bytes_is_accepted(sandbox: Sandbox, graph: GraphClient) -> None:
    await sandbox.user_sends_dm(IGSID, "hi", deliver=False)
    text = "é" * 500
    await graph.send_text(ACCT, IGSID, text, token=sandbox.token)
    assert sandbox.thread(IGSID)[-1].text == text


def test_quick_reply_validation() -> None:
    assert QuickReply("x" * 20, "P").to_wire() == {
        "content_type": "text",
        "title": "x" * 20,
        "payload": "P",
    }
    with pytest.raises(ValueError, match="at most 20"):
        QuickReply("x" * 21, "P")
    with pytest.raises(ValueError, match="empty"):
        QuickReply("  ", "P")
    with pytest.raises(ValueError, match="content_type"):
        QuickReply("t", "p", "location")
    assert QuickReply("", "", "user_phone_number").to_wire() == {
        "content_type": "user_phone_number"
    }


# ---------------------------------------------------------------------------------- split

SPLIT_TABLE: list[tuple[str, int, list[str]]] = [
    ("", 1000, []),
    ("   \n ", 1000, []),
    ("short enough", 1000, ["short enough"]),
    ("Hello there. How are you? Fine.", 20, ["Hello there.", "How are you? Fine."]),
    ("One! Two? Three.", 10, ["One! Two?", "Three."]),
    ("line one\nline two", 12, ["line one", "line two"]),
    ("aaaa bbbb cccc dddd", 10, ["aaaa bbbb", "cccc dddd"]),
    ("x" * 25, 10, ["x" * 10, "x" * 10, "x" * 5]),
    ("é" * 600, 1000, ["é" * 500, "é" * 100]),
    ("😀" * 300, 1000, ["😀" * 250, "😀" * 50]),
    ("ab 😀😀😀", 9, ["ab", "😀😀", "😀"]),
]


@pytest.mark.parametrize(("text", "limit", "expected"), SPLIT_TABLE)
def test_split_text_table(text: str, limit: int, expected: list[str]) -> None:
    assert split_text(text, limit) == expected


@pytest.mark.parametrize("unit", ["👩\u200d💻", "👍🏽", "e\u0301", "1\ufe0f\u20e3"])
def test_split_text_keeps_composed_characters_whole(unit: str) -> None:
    text = unit * 200
    pieces = split_text(text, 100)
    assert "".join(pieces) == text
    for piece in pieces:
        assert len(piece.encode()) <= 100
        assert piece == unit * (len(piece) // len(unit))


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.text(max_size=400), st.integers(min_value=4, max_value=80))
def test_split_text_properties(text: str, limit: int) -> None:
    pieces = split_text(text, limit)
    assert all(p and len(p.encode("utf-8")) <= limit for p in pieces)
    assert "".join("".join(p.split()) for p in pieces) == "".join(text.split())


def test_split_text_rejects_tiny_limits() -> None:
    with pytest.raises(ValueError):
        split_text("abc", 3)
