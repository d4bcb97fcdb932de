"""The built-in Instagram sandbox: a real aiohttp server speaking Meta's wire format toward
the daemon (Send API, comments, Conversations API, subscriptions, messenger profile, Business
Login OAuth, typed error envelopes, signed echo webhooks), with user simulation, a request
transcript (each request with its answer) and fault injection. Used by ``serve --sandbox``,
``demo``, ``simulate`` and tests.

Rules it enforces like Meta: a user may be messaged within 24 h of their last message or
postback tap (7 days with the ``HUMAN_AGENT`` tag); a comment gets one private reply, within
7 days; texts are at most 1000 UTF-8 bytes; unknown recipients, bad tokens and revoked
tokens get Meta's real error bodies; webhooks go out only for a subscribed account
(:mod:`.delivery`); tokens carry their scopes (code 10 without the one a call needs); a
field a node does not have is code 100 (:mod:`.fields`); a long-lived token is refreshed
only from 24 h of age. ``echo_first`` delivers echoes before the Send API's answer. A failed
webhook delivery of a user event is retried; a :class:`DeliveryPolicy` can also batch,
duplicate and shuffle deliveries. :class:`Limits` (on in ``serve --sandbox``) throttles like
Meta (2 Conversations API calls a second, 750 private replies an hour, a BUC budget) and
sends its usage header. ``sends()`` lists only the messages it made (what a user got);
a send it refused is in the transcript and ``send_attempts()``, with its status.
"""

from instaset.sandbox.limits import Limits
from instaset.sandbox.model import (
    Comment,
    Conversation,
    DeliveryPolicy,
    Fault,
    Recorded,
    StoredMessage,
    Undelivered,
)
from instaset.sandbox.server import Sandbox, run_sandbox
from instaset.sandbox.wire import (
    build_comment_payload,
    build_dm_payload,
    build_echo_payload,
    build_postback_payload,
    meta_dumps,
    sign,
    signed_delivery,
)

__all__ = [
    "Comment",
    "Conversation",
    "DeliveryPolicy",
    "Fault",
    "Limits",
    "Recorded",
    "Sandbox",
    "StoredMessage",
    "Undelivered",
    "build_comment_payload",
    "build_dm_payload",
    "build_echo_payload",
    "build_postback_payload",
    "meta_dumps",
    "run_sandbox",
    "sign",
    "signed_delivery",
]
