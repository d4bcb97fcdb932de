"""Tests for instaset.events: every webhook fixture parses to the exact events expected, dedupe
keys survive redeliveries, ``raw`` round-trips, and no JSON input raises anything but
PayloadError."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instaset.errors import PayloadError
from instaset.event_heads import event_heads
from instaset.events import (
    Attachment,
    CommentEvent,
    Event,
    EventKind,
    MentionEvent,
    MessageDeletedEvent,
    MessageEditEvent,
    MessageEvent,
    OptinEvent,
    PostbackEvent,
    ReactionEvent,
    ReadEvent,
    Referral,
    ReferralEvent,
    StoryRef,
    UnknownEvent,
    normalise_timestamp,
    parse_stored,
    parse_webhook,
)

DATA = Path(__file__).parent / "data"
IG = "17841400000000001"  # the business account in tests/data/events/*
USER = "1234567890123456"  # the person in tests/data/events/*
CDN = "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id="

# The dashboard comment fixture is one bare changes[] element; the Test button wraps it like this.
COMMENT_ENTRY = {"id": "0", "time": 1527459824}


def load(name: str) -> Any:
    body = json.loads((DATA / name).read_bytes())
    if name == "comment_change_dashboard_test.json":
        return {"object": "instagram", "entry": [{**COMMENT_ENTRY, "changes": [body]}]}
    return body


def msg(mid: str, **fields: object) -> tuple[type[Event], dict[str, object]]:
    """Expected inbound message from USER to IG (the common case in tests/data/events)."""
    base: dict[str, object] = {
        "kind": EventKind.MESSAGE,
        "account_id": IG,
        "mid": mid,
        "dedupe_key": f"msg:{mid}",
        "contact_id": USER,
        "sender_id": USER,
        "recipient_id": IG,
        "is_echo": False,
        "standby": False,
    }
    return MessageEvent, base | fields


def from_user(cls: type[Event], **fields: object) -> tuple[type[Event], dict[str, object]]:
    return cls, {"account_id": IG, "contact_id": USER, "sender_id": USER, "recipient_id": IG} | {
        "standby": False,
        **fields,
    }


def from_batch(cls: type[Event], **fields: object) -> tuple[type[Event], dict[str, object]]:
    """Expected item of batch_multi_events_synthetic.json ("user" writes to "account")."""
    ids = {"account_id": "account", "contact_id": "user", "sender_id": "user"}
    return cls, ids | {"recipient_id": "account", "standby": False, **fields}


def att(kind: str, n: int) -> tuple[Attachment, ...]:
    url = f"{CDN}{n}&signature=s{n}"
    return (Attachment(kind, url, None, None, f'{{"url":"{url}"}}'),)


REAL_MID_TEXT = (
    "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDcyMTEwNTU4MTM2OjM0MDI4MjM2Njg0MTcxMDMwMTI0NDI3"
    "NjAyNTg0MzYzNjQ5MDY2MjozMjEwMDIzNDUyNDE5MjQ5ODg1NjAzOTM5MjY5NzM4NDk2MAZDZD"
)
REAL_MID_IMAGE = (
    "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDcyMTEwNTU4MTM2OjM0MDI4MjM2Njg0MTcxMDMwMTI0NDI3"
    "NjAyNTg0MzYzNjQ5MDY2MjozMjEwMDIzNjExNTg4MzI3NzM3OTI0MTg2MTg1NjYyNDY0MAZDZD"
)
REAL_MID_ECHO = (
    "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAwNTM4ODY3MTkwOjM0MDI4MjM2Njg0MTcxMDMwMTI0NDI1"
    "ODU5OTE3NTI2OTQwODg3NjozMjUwMzM2MTczNzg4MTI5NDExMzU3NjQ4OTczNTY4NDA5NgZDZD"
)
REAL_MID_SIGNED = (
    "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDY3MjQ5MTIxNDgyOjM0MDI4MjM2Njg0MTcxMDMwMTI0NDI1"
    "OTg3MjMyMDc1ODc1MTAxMjozMjQ2NDU0NDcxOTA0NzY1NzA5MjE5NTA5NTE3NTc1NzgyNAZDZD"
)
IMAGE_URL = (
    "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1151970572602487&signature=AYddBE7nIoOZ"
    "gwxUzmOcNvQdjj-29xgWns_TQqxig-qfUXUUXjn3FsBFrPGA9sDrgJPpxqhyESOuWSx8YDWN_2nDrVU1--ByBoPnPidHow"
    "PGtlqR_W5011Zjt0RbEvRwHJ4h8vDuIIB_qDVf9u3F63x5NtubhGLnBoXy2OhMJLXX_xALKGdIbrtjowK8u253rz5w_vqL"
    "J6VR4d5jEMNjtzMvLNRvIFE"
)
CHATWOOT_TIME = 1631082844.0  # "2021-09-08T06:34:04+0000"
MID = "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAwMDAwMDAwMDAxOj{}ZDZD".format
REEL_TITLE = "Morning routine \u2600\ufe0f\nfull video in bio"
REEL_URL = f"{CDN}3&signature=s3"
POST_URL = f"{CDN}4&signature=s4"

Expectation = tuple[type[Event], dict[str, object]]

EXPECTED: dict[str, list[Expectation]] = {
    "dm_text_real_tester.json": [
        (
            MessageEvent,
            {
                "kind": EventKind.MESSAGE,
                "account_id": "17841472110558136",
                "contact_id": "489760440872775",
                "sender_id": "489760440872775",
                "recipient_id": "17841472110558136",
                "mid": REAL_MID_TEXT,
                "dedupe_key": f"msg:{REAL_MID_TEXT}",
                "text": "Omg",
                "attachments": (),
                "occurred_at": 1740157200.421,
                "is_echo": False,
                "standby": False,
                "is_from_business": False,
            },
        )
    ],
    "dm_image_attachment_real.json": [
        (
            MessageEvent,
            {
                "kind": EventKind.MESSAGE,
                "account_id": "17841472110558136",
                "contact_id": "489760440872775",
                "mid": REAL_MID_IMAGE,
                "text": None,
                "attachments": (
                    Attachment("image", IMAGE_URL, None, None, f'{{"url":"{IMAGE_URL}"}}'),
                ),
                "occurred_at": 1740157286.706,
                "preview": "[image]",
            },
        )
    ],
    "dm_echo_text_real.json": [
        (
            MessageEvent,
            {
                "kind": EventKind.ECHO,
                "account_id": "17841400538867190",
                "sender_id": "17841400538867190",
                "recipient_id": "1129842642640637",
                "contact_id": "1129842642640637",
                "mid": REAL_MID_ECHO,
                "dedupe_key": f"msg:{REAL_MID_ECHO}",
                "text": "Olá, testando amor 🥰",
                "is_echo": True,
                "is_from_business": True,
                "occurred_at": 1762010770.464,
            },
        )
    ],
    "dm_text_signature_test.json": [
        (
            MessageEvent,
            {
                "kind": EventKind.MESSAGE,
                "account_id": "17841467249121482",
                "contact_id": "720612303820175",
                "mid": REAL_MID_SIGNED,
                "text": "Hello",
                "occurred_at": 1759906495.657,  # the item's ms timestamp, not entry.time (s)
            },
        )
    ],
    "chatwoot_dm_deleted_unsend.json": [
        (
            MessageDeletedEvent,
            {
                "kind": EventKind.MESSAGE_DELETED,
                "account_id": "instagram-message-id-123",
                "contact_id": "Sender-id-1",
                "mid": "message-id-to-delete",
                "dedupe_key": "del:message-id-to-delete",
                "occurred_at": CHATWOOT_TIME,
            },
        )
    ],
    "chatwoot_story_reply.json": [
        (
            MessageEvent,
            {
                "kind": EventKind.MESSAGE,
                "account_id": "instagram-message-id-123",
                "contact_id": "Sender-id-1",
                "mid": "message-id-1",
                "text": "This is the story reply",
                "reply_to_story": StoryRef(
                    "chatwoot-app-user-id-1", "https://chatwoot-assets.local/sample.png"
                ),
                "reply_to_mid": None,
                "occurred_at": CHATWOOT_TIME,
            },
        )
    ],
    "chatwoot_story_mention_echo.json": [
        (
            MessageEvent,
            {
                "kind": EventKind.ECHO,
                "account_id": "instagram-message-id-1234",
                "contact_id": "chatwoot-app-user-id-1",  # the recipient of an echo
                "is_echo": True,
                "is_from_business": True,
                "text": None,
                "attachments": (
                    Attachment(
                        "story_mention",
                        "https://www.example.com/test.jpeg",
                        None,
                        None,
                        '{"url":"https://www.example.com/test.jpeg"}',
                    ),
                ),
                "preview": "[story mention]",
                "occurred_at": CHATWOOT_TIME,
            },
        )
    ],
    "comment_change_dashboard_test.json": [
        (
            CommentEvent,
            {
                "kind": EventKind.COMMENT,
                "account_id": "0",
                "comment_id": "17865799348089039",
                "dedupe_key": "comment:17865799348089039",
                "contact_id": "232323232",
                "from_id": "232323232",
                "from_username": "test",
                "media_id": "123123123",
                "media_product_type": "FEED",
                "parent_id": "1231231234",
                "is_reply": True,
                "text": "This is an example.",
                "occurred_at": 1527459824.0,
                "is_from_business": False,
            },
        )
    ],
    "batch_multi_events_synthetic.json": [
        from_batch(
            PostbackEvent,
            kind=EventKind.POSTBACK,
            mid="postback-mid",
            title="Start",
            payload="START",
            dedupe_key="pb:postback-mid",
            occurred_at=1788523200.001,
        ),
        from_batch(
            ReadEvent,
            kind=EventKind.READ,
            mid="read-mid",
            dedupe_key="read:account:user:read-mid",
            occurred_at=1788523200.002,
        ),
        from_batch(
            ReactionEvent,
            kind=EventKind.REACTION,
            mid="reaction-mid",
            action="react",
            reaction="love",
            emoji="❤",
            occurred_at=1788523200.003,
        ),
        from_batch(
            MessageEditEvent,
            kind=EventKind.MESSAGE_EDIT,
            mid="edit-mid",
            text="edited",
            num_edit=2,
            dedupe_key="edit:edit-mid:2",
            occurred_at=1788523200.004,
        ),
        from_batch(
            ReferralEvent,
            kind=EventKind.REFERRAL,
            referral=Referral("campaign", "ADS", "OPEN_THREAD", None),
            occurred_at=1788523200.005,
        ),
    ],
    "events/reaction_react.json": [
        from_user(
            ReactionEvent,
            kind=EventKind.REACTION,
            mid=MID("AwMQ"),
            action="react",
            reaction="love",
            emoji="\u2764\ufe0f",
            occurred_at=1740157300.123,
        )
    ],
    "events/reaction_unreact.json": [
        from_user(ReactionEvent, mid=MID("AwMQ"), action="unreact", reaction=None, emoji=None)
    ],
    "events/postback_with_mid.json": [
        from_user(
            PostbackEvent,
            kind=EventKind.POSTBACK,
            mid=MID("AwMg"),
            dedupe_key=f"pb:{MID('AwMg')}",
            title="See prices",
            payload="PRICES",
            occurred_at=1502905976.377,
        )
    ],
    "events/postback_icebreaker_no_mid.json": [
        from_user(PostbackEvent, mid=None, title="How do I book?", payload="ICEBREAKER_BOOK")
    ],
    "events/read.json": [
        from_user(
            ReadEvent,
            kind=EventKind.READ,
            mid=MID("AwMw"),
            dedupe_key=f"read:{IG}:{USER}:{MID('AwMw')}",
            occurred_at=1740157500.8,
        )
    ],
    "events/referral_standalone.json": [
        from_user(
            ReferralEvent,
            kind=EventKind.REFERRAL,
            referral=Referral("spring_sale", "IGME_SOURCE_LINK", "OPEN_THREAD", None),
        )
    ],
    "events/message_with_ad_referral.json": [
        msg(
            MID("AwNA"),
            text="Is this still available?",
            referral=Referral("ad_ref_42", "ADS", "OPEN_THREAD", "120200000000000042"),
        )
    ],
    "events/message_edit_int.json": [
        from_user(
            MessageEditEvent,
            kind=EventKind.MESSAGE_EDIT,
            mid=MID("AwNQ"),
            text="see you at 5",
            num_edit=1,
            dedupe_key=f"edit:{MID('AwNQ')}:1",
        )
    ],
    "events/message_edit_string.json": [
        from_user(
            MessageEditEvent,
            mid=MID("AwNQ"),
            text="see you at 6",
            num_edit=2,
            dedupe_key=f"edit:{MID('AwNQ')}:2",
        )
    ],
    "events/quick_reply.json": [
        msg(MID("AwNg"), text="ana@example.com", quick_reply_payload="EMAIL_CAPTURE")
    ],
    "events/unsupported.json": [
        msg(
            MID("AwNw"),
            text=None,
            attachments=(),
            is_unsupported=True,
            preview="[unsupported message]",
        )
    ],
    "events/reply_to_mid.json": [
        msg(MID("AwOA"), text="yes please", reply_to_mid=MID("AwNg"), reply_to_story=None)
    ],
    "events/reply_to_story.json": [
        msg(
            MID("AwOQ"),
            text="🔥🔥",
            reply_to_story=StoryRef("17900000000000001", f"{CDN}17900000000000001&signature=AbCd"),
        )
    ],
    "events/attachments_documented_types.json": [
        msg(
            "mid-share",
            attachments=att("share", 1),
            preview="[shared post]",
            occurred_at=1740159000.001,
        ),
        msg("mid-video", attachments=att("video", 2), preview="[video]"),
        msg(
            "mid-ig-reel",
            attachments=(
                Attachment(
                    "ig_reel",
                    REEL_URL,
                    REEL_TITLE,
                    "18000000000000003",
                    '{"reel_video_id":"18000000000000003","title":"Morning routine \u2600\ufe0f'
                    f'\\nfull video in bio","url":"{REEL_URL}"}}',
                ),
            ),
            preview="[reel: Morning routine \u2600\ufe0f full video in bio]",
        ),
        msg(
            "mid-ig-post",
            attachments=(
                Attachment(
                    "ig_post",
                    POST_URL,
                    "Launch day",
                    "18000000000000004",
                    '{"ig_post_media_id":"18000000000000004","title":"Launch day",'
                    f'"url":"{POST_URL}"}}',
                ),
            ),
            preview="[post: Launch day]",
        ),
        msg("mid-reel", attachments=att("reel", 5), preview="[reel]"),
        msg("mid-story", attachments=att("story", 6), preview="[story]"),
        msg("mid-ig-story", attachments=att("ig_story", 7), preview="[story]"),
        msg("mid-audio", attachments=att("audio", 8), preview="[audio]"),
        msg("mid-file", attachments=att("file", 9), preview="[file]"),
        msg(
            "mid-unknown-type",
            attachments=(
                Attachment("avatar_sticker", None, None, None, '{"sticker_id":369239263222822}'),
            ),
            preview="[avatar sticker]",
        ),
        msg(
            "mid-two-images",
            text="which one?",
            attachments=att("image", 10) + att("image", 11),
            preview="which one? [image] [image]",
            occurred_at=1740159000.011,
        ),
    ],
    "events/comment_top_level.json": [
        (
            CommentEvent,
            {
                "kind": EventKind.COMMENT,
                "account_id": IG,
                "comment_id": "18000000000000021",
                "dedupe_key": "comment:18000000000000021",
                "contact_id": USER,
                "from_id": USER,
                "from_username": "ana.makes",
                "media_id": "18000000000000020",
                "media_product_type": "REELS",
                "parent_id": None,
                "is_reply": False,
                "text": "PRICE please",
                "occurred_at": 1740156774.0,  # entry.time in seconds on changes entries
                "is_from_business": False,
            },
        )
    ],
    "events/comment_reply_by_business.json": [
        (
            CommentEvent,
            {
                "kind": EventKind.COMMENT,
                "comment_id": "18000000000000022",
                "from_id": IG,
                "parent_id": "18000000000000021",
                "is_reply": True,
                "is_from_business": True,
            },
        )
    ],
    "events/live_comment.json": [
        (
            CommentEvent,
            {
                "kind": EventKind.LIVE_COMMENT,
                "comment_id": "18000000000000031",
                "dedupe_key": "live:18000000000000031",
                "contact_id": "1234567890123457",
                "media_product_type": "LIVE",
                "text": "hello from Lisbon",
            },
        )
    ],
    "events/mentions.json": [
        (
            MentionEvent,
            {
                "kind": EventKind.MENTION,
                "account_id": "17841405726653026",
                "comment_id": "17894227972186120",
                "media_id": "17918195224117851",
                "dedupe_key": "mention:17894227972186120",
                "contact_id": None,
                "occurred_at": 1520622968.0,
            },
        ),
        (
            MentionEvent,
            {
                "comment_id": None,
                "media_id": "17918195224117852",
                "dedupe_key": "mention:17918195224117852",
            },
        ),
    ],
    "events/standby.json": [
        msg(MID("AxMA"), text="anyone there?", standby=True),
        from_user(ReadEvent, mid=MID("AxMQ"), standby=True),
    ],
    "events/dashboard_changes_messages.json": [
        (
            MessageEvent,
            {
                "kind": EventKind.MESSAGE,
                "account_id": "0",
                "mid": "random_mid",
                "dedupe_key": "msg:random_mid",
                "text": "random_text",
                "contact_id": "12334",
                "recipient_id": "23245",
                "occurred_at": 1527459824.0,  # a digit string, in seconds
                "standby": False,
            },
        )
    ],
    "events/array_of_envelopes.json": [
        (MessageEvent, {"account_id": IG, "mid": "mid-array-1", "text": "first"}),
        (
            MessageEvent,
            {
                "account_id": "17841400000000002",
                "mid": "mid-array-2",
                "text": "second",
                "contact_id": "1234567890123458",
                "occurred_at": 1569262486.349,
            },
        ),
    ],
    "events/optin.json": [
        from_user(
            OptinEvent,
            kind=EventKind.OPTIN,
            payload="WEEKLY_DROPS",
            ref=None,
            optin_type="notification_messages",
        )
    ],
    "events/escapes.json": [msg("mid-escapes", text="see https://example.com/a/b \U0001f600 Olá")],
    "events/unknown_and_malformed.json": [
        (UnknownEvent, {"account_id": IG, "field": "delivery", "occurred_at": 1740159400.1}),
        (UnknownEvent, {"field": "message", "reason": "message is a string, expected an object"}),
        (UnknownEvent, {"field": "message", "reason": "message has no mid"}),
        (UnknownEvent, {"field": None, "occurred_at": 1740159400.9}),  # the bare 42
        (UnknownEvent, {"field": "story_insights", "occurred_at": 1740159400.9}),
        (UnknownEvent, {"field": None, "reason": "change is a string, expected an object"}),
        (UnknownEvent, {"account_id": "", "field": None, "occurred_at": 0.0}),
    ],
}
NOT_WEBHOOKS = [
    "conversations_list_response_real.json",
    "send_error_outside_window_real.json",
    "send_error_user_not_found_real.json",
    "signed_request_example.json",
]
# Every payload fixture, including any added later (those need not be in EXPECTED).
ALL_FIXTURES = sorted(
    str(p.relative_to(DATA)) for p in [*DATA.glob("*.json"), *DATA.glob("events/*.json")]
)


def check(event: Event, cls: type[Event], fields: dict[str, object]) -> None:
    assert type(event) is cls, f"{event!r} is not a {cls.__name__}"
    for name, want in fields.items():
        assert getattr(event, name) == want, f"{cls.__name__}.{name}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_parses_to_expected_events(name: str) -> None:
    events = parse_webhook(load(name))
    assert len(events) == len(EXPECTED[name])
    for event, (cls, fields) in zip(events, EXPECTED[name], strict=True):
        check(event, cls, fields)


def test_batch_fixture_yields_five_kinds_in_order() -> None:
    events = parse_webhook(load("batch_multi_events_synthetic.json"))
    assert [e.kind for e in events] == [
        EventKind.POSTBACK,
        EventKind.READ,
        EventKind.REACTION,
        EventKind.MESSAGE_EDIT,
        EventKind.REFERRAL,
    ]


@pytest.mark.parametrize("name", NOT_WEBHOOKS)
def test_non_webhook_fixtures_are_refused(name: str) -> None:
    with pytest.raises(PayloadError, match="'entry'"):
        parse_webhook(load(name))


def test_bare_change_element_is_not_an_envelope() -> None:
    with pytest.raises(PayloadError, match="no 'entry' list"):
        parse_webhook(json.loads((DATA / "comment_change_dashboard_test.json").read_bytes()))


@pytest.mark.parametrize("name", [n for n in ALL_FIXTURES if n not in NOT_WEBHOOKS])
def test_every_webhook_fixture_round_trips_through_raw(name: str) -> None:
    try:
        events = parse_webhook(load(name))
    except PayloadError:
        if name in EXPECTED:
            raise
        pytest.skip(f"{name} is not a webhook payload")
    assert events
    assert name in EXPECTED or not any(isinstance(e, UnknownEvent) for e in events)
    for event in events:
        assert parse_webhook(json.loads(event.raw)) == [event]
        # The worker's shortcut for stored rows gives the very same event.
        assert parse_stored(event.raw) == [event]


def _common(event: Event) -> tuple[object, ...]:
    return (event.kind, event.account_id, event.dedupe_key, event.occurred_at,
            event.contact_id, event.standby, event.raw)


def assert_heads_match(payload: object) -> None:
    """event_heads (what ingest stores) == the full parse's common attributes, item by item,
    and it refuses exactly what parse_webhook refuses."""
    try:
        full = parse_webhook(payload)
    except PayloadError as exc:
        with pytest.raises(PayloadError, match=re.escape(str(exc))):
            event_heads(payload)
        return
    heads = event_heads(payload)
    assert all(type(h) is Event for h in heads)
    assert [_common(h) for h in heads] == [_common(e) for e in full]


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_event_heads_of_every_fixture_match_the_full_parse(name: str) -> None:
    assert_heads_match(load(name))


def test_parse_stored_of_a_multi_item_row_parses_it_whole() -> None:
    """A row holding more than one item (not written by instaset, e.g. by hand) is parsed
    like a webhook body: each event gets its own raw, not the whole row."""
    body = load("events/standby.json")
    raw = json.dumps(body)
    events = parse_stored(raw)
    assert events == parse_webhook(body) and len(events) > 1
    assert all(e.raw != raw for e in events)


def test_raw_is_compact_sorted_single_item_envelope() -> None:
    [event] = parse_webhook(load("events/standby.json"))[1:]
    assert event.raw == (
        '{"entry":[{"id":"17841400000000001","standby":[{"read":{"mid":"' + MID("AxMQ") + '"},'
        '"recipient":{"id":"17841400000000001"},"sender":{"id":"1234567890123456"},'
        '"timestamp":1740159100200}],"time":1740159100900}],"object":"instagram"}'
    )
    [batch_first, *_] = parse_webhook(load("batch_multi_events_synthetic.json"))
    assert json.loads(batch_first.raw)["object"] == "instagram"  # missing object -> default


def test_meta_escapes_decode_to_the_right_text() -> None:
    body = (DATA / "events" / "escapes.json").read_bytes()
    assert b"https:\\/\\/" in body and b"\\ud83d\\ude00" in body  # the fixture is wire-like
    [event] = parse_webhook(json.loads(body))
    assert isinstance(event, MessageEvent)
    assert event.text == "see https://example.com/a/b 😀 Olá"
    assert "😀" in event.raw and "\\/" not in event.raw


def test_lone_surrogate_is_kept_and_hashed() -> None:
    body = (
        '{"entry":[{"id":"1","messaging":[{"sender":{"id":"2"},"timestamp":5,'
        '"reaction":{"mid":"m","action":"react","emoji":"\\ud83d"}}]}]}'
    )
    [event] = parse_webhook(json.loads(body))
    assert isinstance(event, ReactionEvent) and event.emoji == "\ud83d"
    assert event.dedupe_key.startswith("react:m:") and len(event.dedupe_key) == 8 + 32
    assert parse_webhook(json.loads(event.raw)) == [event]


# ---------------------------------------------------------------- dedupe keys


def redelivered(payload: Any) -> Any:
    """What a Meta retry may look like: new entry.time, other key order, other escaping."""

    def reorder(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: reorder(value[k]) for k in reversed(list(value))}
        if isinstance(value, list):
            return [reorder(v) for v in value]
        return value

    again = copy.deepcopy(payload)
    for envelope in again if isinstance(again, list) else [again]:
        for entry in envelope["entry"]:
            if isinstance(entry, dict):
                entry["time"] = 1799999999999
    return json.loads(json.dumps(reorder(again), ensure_ascii=True, indent=1))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_redelivery_keeps_every_dedupe_key(name: str) -> None:
    first = parse_webhook(load(name))
    again = parse_webhook(redelivered(load(name)))
    # Entry keys come back reversed, so containers (messaging, changes) swap order.
    assert sorted(e.dedupe_key for e in again) == sorted(e.dedupe_key for e in first)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_standby_copy_has_the_same_key(name: str) -> None:
    payload = load(name)
    for envelope in payload if isinstance(payload, list) else [payload]:
        for entry in envelope["entry"]:
            if isinstance(entry, dict) and "messaging" in entry:
                entry["standby"] = entry.pop("messaging")
    normal = {e.dedupe_key for e in parse_webhook(load(name))}
    assert {e.dedupe_key for e in parse_webhook(payload)} == normal


def test_distinct_items_get_distinct_keys() -> None:
    # chatwoot_* reuse one synthetic mid for two different messages; every other fixture
    # item is a different event and must keep its own key.
    keys = [
        e.dedupe_key
        for name in EXPECTED
        if not name.startswith("chatwoot_")
        for e in parse_webhook(load(name))
    ]
    assert len(keys) == len(set(keys)) > 40


def envelope(*items: object, account: object = IG, key: str = "messaging") -> dict[str, object]:
    entry = {"id": account, "time": 1740000000000, key: list(items)}
    return {"object": "instagram", "entry": [entry]}


def item(
    ts: object = 1740000000001, sender: str = USER, recipient: str = IG, **event: object
) -> dict[str, object]:
    return {"sender": {"id": sender}, "recipient": {"id": recipient}, "timestamp": ts, **event}


def keys_of(payload: object) -> list[str]:
    return [e.dedupe_key for e in parse_webhook(payload)]


def test_hashed_keys_tell_similar_items_apart() -> None:
    react = {"mid": "m1", "action": "react", "reaction": "love", "emoji": "❤"}
    keys = keys_of(
        envelope(
            item(reaction=react),
            item(ts=1740000000002, reaction=react),  # reacted again later
            item(reaction={**react, "mid": "m2"}),
            item(reaction={"mid": "m1", "action": "unreact"}),
            item(sender="other", reaction=react),
            item(postback={"title": "A", "payload": "A"}),
            item(postback={"title": "B", "payload": "B"}),
            item(ts=1740000000009, postback={"title": "A", "payload": "A"}),
            item(referral={"ref": "a", "source": "x", "type": "OPEN_THREAD"}),
            item(referral={"ref": "b", "source": "x", "type": "OPEN_THREAD"}),
            item(optin={"type": "notification_messages", "payload": "P1"}),
            item(optin={"type": "notification_messages", "payload": "P2"}),
            item(read={"mid": "m1"}),
            item(read={"mid": "m2"}),
            item(delivery={"mids": ["m1"]}),
            item(delivery={"mids": ["m2"]}),
        )
    )
    assert len(set(keys)) == len(keys) == 16
    # The same unknown item under another account is another event.
    other = keys_of(envelope(item(delivery={"mids": ["m1"]}), account="17841400000000009"))
    assert other[0] not in keys and other[0].startswith("unk:")


def test_postback_without_mid_keeps_its_key_when_entry_time_changes() -> None:
    one = envelope(item(postback={"title": "A", "payload": "A"}))
    two = copy.deepcopy(one)
    two["entry"][0]["time"] = 1750000000000  # type: ignore[index]
    assert keys_of(one) == keys_of(two)
    assert keys_of(one)[0].startswith("pb:") and len(keys_of(one)[0]) == 3 + 32


# ---------------------------------------------------------------- semantics


def test_item_without_timestamp_falls_back_to_entry_time_then_zero() -> None:
    no_ts = {"sender": {"id": USER}, "message": {"mid": "m", "text": "hi"}}
    [event] = parse_webhook(envelope(no_ts))
    assert event.occurred_at == 1740000000.0
    [event] = parse_webhook({"entry": [{"id": IG, "messaging": [no_ts]}]})
    assert event.occurred_at == 0.0


def test_int_ids_are_stringified_and_float_ids_are_not_ids() -> None:
    [event] = parse_webhook(
        {
            "entry": [
                {
                    "id": 17841400000000001,
                    "messaging": [
                        {
                            "sender": {"id": 5.0},
                            "recipient": {"id": 17841400000000001},
                            "message": {"mid": 7},
                        }
                    ],
                }
            ]
        }
    )
    assert isinstance(event, MessageEvent)
    assert (event.account_id, event.recipient_id, event.mid) == (IG, IG, "7")
    assert event.sender_id is None and event.contact_id is None


def test_business_edit_points_at_the_person() -> None:
    [event] = parse_webhook(
        envelope(item(sender=IG, recipient=USER, message_edit={"mid": "m", "num_edit": "x"}))
    )
    assert isinstance(event, MessageEditEvent)
    assert event.is_from_business and event.contact_id == USER
    assert event.num_edit == 0


def test_inbound_message_from_own_account_counts_as_business() -> None:
    [event] = parse_webhook(envelope(item(sender=IG, message={"mid": "m", "is_self": True})))
    assert isinstance(event, MessageEvent)
    assert event.kind == EventKind.MESSAGE and event.is_self and event.is_from_business


def test_inbound_message_is_not_from_business() -> None:
    [event] = parse_webhook(envelope(item(message={"mid": "m", "text": "hi"})))
    assert not event.is_from_business


def test_mention_without_ids_is_unknown() -> None:
    [event] = parse_webhook(envelope({"field": "mentions", "value": {"text": "hi"}}, key="changes"))
    assert isinstance(event, UnknownEvent) and event.field == "mentions"


def test_comment_id_falls_back_to_comment_id_key() -> None:
    [event] = parse_webhook(
        envelope({"field": "comments", "value": {"comment_id": 99, "text": "x"}}, key="changes")
    )
    assert isinstance(event, CommentEvent) and event.dedupe_key == "comment:99"


def test_describe_cuts_long_titles_to_one_short_line() -> None:
    long = Attachment("ig_reel", None, "line one\n" + "x" * 100, "1", "{}")
    assert long.describe() == "[reel: line one " + "x" * 50 + "…]"
    assert len(long.describe()) == len("[reel: ]") + 60
    assert Attachment("", None, None, None, "null").describe() == "[attachment]"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1740157200749, 1740157200.749),
        (1740156774, 1740156774.0),
        (1740156774.5, 1740156774.5),
        (1740157200749.0, 1740157200.749),
        ("1527459824", 1527459824.0),
        (" 1740157200749 ", 1740157200.749),
        ("2021-09-08T06:34:04+0000", CHATWOOT_TIME),
        ("2021-09-08T06:34:04Z", CHATWOOT_TIME),
        ("2021-09-08T08:34:04+02:00", CHATWOOT_TIME),
        ("2021-09-08T06:34:04", CHATWOOT_TIME),  # naive means UTC
        (True, None),
        (None, None),
        (0, None),
        (-5, None),
        (math.nan, None),
        (math.inf, None),
        (10**30, None),
        ("1" * 400, None),
        ("", None),
        ("soon", None),
        ("1969-12-31T00:00:00Z", None),
        ([1740156774], None),
    ],
)
def test_normalise_timestamp(value: object, seconds: float | None) -> None:
    assert normalise_timestamp(value) == seconds


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (None, "webhook body is null"),
        (5, "is a number"),
        ("entry", "is a string"),
        ([{"entry": []}, 3], "array element 1 is a number"),
        ({}, "no 'entry' list"),
        ({"object": "instagram"}, "no 'entry' list"),
        ({"entry": {}}, "'entry' is an object, expected a list"),
        ({"entry": None}, "'entry' is null"),
        ([{"entry": []}, {"entry": "x"}], "array element 1: 'entry' is a string"),
    ],
)
def test_unusable_top_level_raises_payload_error(payload: object, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse_webhook(payload)


def test_empty_batches_are_fine() -> None:
    assert parse_webhook([]) == []
    assert parse_webhook({"entry": []}) == []
    assert parse_webhook({"entry": [{"id": IG, "time": 1, "messaging": None}]}) == []


def test_single_object_where_list_belongs_is_one_item() -> None:
    [event] = parse_webhook({"entry": [{"id": IG, "messaging": item(message={"mid": "m"})}]})
    assert isinstance(event, MessageEvent)
    assert parse_webhook(json.loads(event.raw)) == [event]


def test_deeply_nested_body_is_parsed_or_refused() -> None:
    for depth in (50, 400, 800, 950, 990):
        text = '{"entry":[{"id":"1","messaging":[' + "[" * depth + "]" * depth + "]}]}"
        try:
            payload = json.loads(text)
        except RecursionError:
            continue
        try:
            events = parse_webhook(payload)
        except PayloadError:
            continue
        assert [type(e) for e in events] == [UnknownEvent]


# ---------------------------------------------------------------- properties

TEXT = st.text(max_size=8) | st.sampled_from(["\ud83d", "\ude00", "😀", "\\/", ""])
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
KEYS = TEXT | st.sampled_from(
    ["id", "time", "messaging", "standby", "changes", "message", "mid", "entry", "object"]
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
IDS = st.sampled_from([IG, USER, "", "0"]) | st.integers(-5, 10**17) | st.floats() | JSON
TIMES = (
    st.integers(-10, 3 * 10**15)
    | st.floats()
    | st.sampled_from(["2021-09-08T06:34:04+0000", "1527459824", "2021-13-01", ""])
    | JSON
)


def obj(required: dict[str, st.SearchStrategy[Any]], **optional: st.SearchStrategy[Any]) -> Any:
    return st.fixed_dictionaries(required, optional=optional) | JSON


ATTACHMENT = obj(
    {},
    type=st.sampled_from(["image", "ig_reel", "story_mention", "weird"]) | JSON,
    payload=obj({}, url=TEXT, title=TEXT, reel_video_id=IDS, id=IDS),
)
MESSAGE = obj(
    {"mid": IDS},
    text=TEXT | JSON,
    attachments=st.lists(ATTACHMENT, max_size=3) | JSON,
    is_echo=st.booleans() | JSON,
    is_deleted=st.booleans() | JSON,
    is_unsupported=st.booleans(),
    quick_reply=obj({}, payload=TEXT),
    reply_to=obj({}, mid=IDS, story=obj({}, id=IDS, url=TEXT)),
    referral=obj({}, ref=TEXT, source=TEXT, type=TEXT, ad_id=IDS),
)
BODY = st.one_of(
    st.fixed_dictionaries({"message": MESSAGE}),
    st.fixed_dictionaries({"message_edit": obj({}, mid=IDS, text=TEXT, num_edit=IDS)}),
    st.fixed_dictionaries({"reaction": obj({}, mid=IDS, action=TEXT, reaction=TEXT, emoji=TEXT)}),
    st.fixed_dictionaries({"read": obj({}, mid=IDS)}),
    st.fixed_dictionaries({"postback": obj({}, mid=IDS, title=TEXT, payload=TEXT)}),
    st.fixed_dictionaries({"referral": obj({}, ref=TEXT, source=TEXT)}),
    st.fixed_dictionaries({"optin": obj({}, payload=TEXT, type=TEXT)}),
    st.dictionaries(KEYS, JSON, max_size=2),
)
HEAD = st.fixed_dictionaries(
    {}, optional={"sender": obj({"id": IDS}), "recipient": obj({"id": IDS}), "timestamp": TIMES}
)
ITEM = st.builds(lambda head, body: {**head, **body}, HEAD, BODY) | JSON
CHANGE = obj(
    {
        "field": st.sampled_from(["comments", "live_comments", "mentions", "messages", "x"]) | JSON,
        "value": obj(
            {},
            id=IDS,
            comment_id=IDS,
            media_id=IDS,
            text=TEXT,
            parent_id=IDS,
            timestamp=TIMES,
            **{"from": obj({}, id=IDS, username=TEXT), "media": obj({}, id=IDS)},
        )
        | ITEM,
    }
)
ENTRY = obj(
    {},
    id=IDS,
    time=TIMES,
    messaging=st.lists(ITEM, max_size=4) | JSON,
    standby=st.lists(ITEM, max_size=2),
    changes=st.lists(CHANGE, max_size=3) | JSON,
    other=JSON,
)
ENVELOPE = st.fixed_dictionaries(
    {"entry": st.lists(ENTRY, max_size=3)}, optional={"object": st.just("instagram") | JSON}
)
PROPERTY = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def assert_round_trips(events: list[Event]) -> None:
    for event in events:
        assert isinstance(event, Event)
        assert isinstance(event.account_id, str) and isinstance(event.dedupe_key, str)
        assert math.isfinite(event.occurred_at)
        assert parse_webhook(json.loads(event.raw)) == [event]


@PROPERTY
@given(JSON | ENVELOPE | st.lists(ENVELOPE | JSON, max_size=3))
def test_any_json_gives_events_or_payload_error(payload: object) -> None:
    try:
        events = parse_webhook(payload)
    except PayloadError:
        return
    assert_round_trips(events)


@PROPERTY
@given(JSON | ENVELOPE | st.lists(ENVELOPE | JSON, max_size=3))
def test_event_heads_match_the_full_parse_on_any_json(payload: object) -> None:
    assert_heads_match(payload)


@PROPERTY
@given(ENVELOPE | st.lists(ENVELOPE, max_size=3))
def test_envelopes_never_fail_and_keys_ignore_entry_time(payload: Any) -> None:
    events = parse_webhook(payload)  # entry is always a list here: no PayloadError allowed
    assert_round_trips(events)
    assert sorted(keys_of(redelivered(payload))) == sorted(e.dedupe_key for e in events)


@PROPERTY
@given(st.lists(ITEM, min_size=1, max_size=4))
def test_standby_items_keep_their_keys(items: list[Any]) -> None:
    normal = parse_webhook(envelope(*items))
    standby = parse_webhook(envelope(*items, key="standby"))
    assert [e.dedupe_key for e in standby] == [e.dedupe_key for e in normal]
    assert all(e.standby for e in standby) and not any(e.standby for e in normal)
    assert [e.raw for e in standby] != [e.raw for e in normal]


BUSINESS_SENT = {
    "echo": {"message": {"mid": "m1", "text": "hi", "is_echo": True}},
    "unsend": {"message": {"mid": "m1", "is_deleted": True}},
    "edit": {"message_edit": {"mid": "m1", "text": "hey", "num_edit": 1}},
    "reaction": {"reaction": {"mid": "m1", "action": "react", "reaction": "love"}},
    "read": {"read": {"mid": "m1"}},
    "postback": {"postback": {"mid": "m2", "payload": "P"}},
    "referral": {"referral": {"ref": "a", "source": "x", "type": "OPEN_THREAD"}},
    "optin": {"optin": {"type": "notification_messages", "payload": "P1"}},
}


@pytest.mark.parametrize("kind", sorted(BUSINESS_SENT))
@pytest.mark.parametrize("sender", ["business", "person"])
def test_event_heads_pick_the_same_contact_either_way(kind: str, sender: str) -> None:
    """The contact is the other party: the recipient when the business sent the item."""
    who = (IG, USER) if sender == "business" else (USER, IG)
    payload = envelope(item(sender=who[0], recipient=who[1], **BUSINESS_SENT[kind]))
    assert_heads_match(payload)
    # An echo names its recipient whoever is in "sender" (Meta only echoes the business).
    expected = IG if (kind, sender) == ("echo", "person") else USER
    assert event_heads(payload)[0].contact_id == expected
