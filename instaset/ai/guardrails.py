"""When the AI must not answer on its own. Pure: no I/O.

:func:`check_reply` says whether an :class:`~instaset.ai.answer.Answer` may be sent, or why the
conversation goes to the creator instead (a stable slug plus a human-readable detail):

- the contact asks for a human, asks for a refund or complains (read from their message,
  whatever the model thought);
- the model itself asks for a human, or classified the message so;
- the reply is empty or the model is unsure (``confidence`` below the minimum);
- the reply states a price or a link that is not in the creator's facts (the model may not
  make up offers);
- the reply is longer than what is sent in one go: one private reply (1000 bytes) to a
  comment, two DMs to a message. The prompt asks for under 900 characters; a longer answer
  is a model running on (a repetition loop went out as 30 DMs), and to a comment only the
  first 1000 bytes could go out at all (the rest waits for a DM that may never come).

:func:`grounded` keeps only the lead facts the contact really said: a score explains itself
with the contact's words, never with a quote the model made up. :func:`quoted_in` is the same
test for one stored quote (which of them an unsent message takes with it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from instaset.ai.answer import Answer, LeadFact
from instaset.engine.triggers import fold
from instaset.graph_wire import MAX_TEXT_BYTES

MIN_CONFIDENCE = 0.5
MAX_COMMENT_REPLY_BYTES = MAX_TEXT_BYTES  # a private reply is one message
MAX_DM_REPLY_BYTES = 2 * MAX_TEXT_BYTES  # split into at most two DMs

# Phrases, not bare words that sales questions use too ("for a person over 50", "I'm a real
# estate agent", "a broken wrist", "I'm terrible at ...", "my old gym was the worst" each
# paused a lead for 12 h). The model's own reading (intent, needs_human) still hands off
# what these miss.
_WHO = r"(you|someone|somebody|a person|a human|an agent|a real person|a representative)"
_HUMAN = re.compile(
    r"\b(human|real person|actual person|live agent|support agent|representative"
    rf"|customer service|(talk|speak|chat) (to|with) {_WHO}|call me"
    r"|i (want|need) (an agent|a human|a real person)"
    r"|are you (a )?(bot|robot|ai))\b"
)
_REFUND = re.compile(
    r"\b(refund\w*|money back|chargeback|reembolso|cancel my (order|subscription))\b"
)
_BAD = r"(terrible|awful|worst|horrible)"
_THING = r"(service|experience|product|purchase|course|program|coaching|coach|support|quality)"
_VERY = r"(the |so |really |absolutely )?"
# What is bad is us, or what was bought: "you are the worst", "worst coach ever", "it's
# broken", a message that is only "terrible" or "this is the worst". Not the contact's own
# week, knees or diet ("I had the worst week ever", "is it broken down into modules?").
_COMPLAINT = re.compile(
    r"\b(complain\w*|scam\w*|rip ?off|disappointed|unacceptable|angry|furious|fraud"
    r"|not working|doesn'?t work"
    r"|(it'?s|it is|is|was|are|were|arrived|came|still) broken(?! (down|into|up))"
    rf"|{_BAD} {_THING}( ever)?"
    rf"|(you|you'?re|your {_THING})( is| are| was| were)? {_VERY}{_BAD})\b"
    rf"|\b(this|that|it)('?s| is| was) {_VERY}{_BAD}\W*$"
    rf"|^\W*{_VERY}{_BAD}\W*$"
)
_CURRENCY = r"[$€£¥₹]"
_AMOUNT = r"\d[\d,]*(?:\.\d+)?"
_CODES = r"usd|eur|gbp|cad|aud|chf|inr"
# A price: a currency sign, code or word before or after the amount. ("8 per class" is as
# often a capacity as a price: held, it would pause the conversation for nothing.)
_PRICE = re.compile(
    rf"(?:{_CURRENCY}|\b(?:{_CODES})\b)\s?({_AMOUNT})"
    rf"|({_AMOUNT})\s?(?:{_CURRENCY}|(?:{_CODES}|dollars?|euros?|bucks|pounds?)\b)",
    re.IGNORECASE,
)
# In the creator's own facts an amount also counts after a price word ("Price: 90").
_FACT_PRICE = re.compile(rf"\b(?:price|cost|fee|rate)s?\b\s*(?:is|are|of)?\s*:?\s*({_AMOUNT})",
                         re.IGNORECASE)
# A link: with a scheme or www; any domain followed by a path (evil.ru/pay, goo.gl/x); or a
# bare domain under a common TLD (maya.fit). A false alarm only holds the reply for the
# creator; a missed link sends the contact somewhere the creator never named.
_URL = re.compile(
    r"(?:https?://|www\.)[^\s<>\"')]+"
    r"|\b[\w-]+(?:\.[\w-]+)*\.[a-z]{2,24}/[^\s<>\"')]*"
    r"|\b[\w-]+(?:\.[\w-]+)*\.(?-i:com|net|org|io|co|me|ly|app|link|shop|store|bio|page|gg"
    r"|tv|fit|coach|club|life|live|online|site|info|biz|ai|xyz|uk|de|es|fr|it|nl|ca|au|us|ru"
    r"|cn|in|br|mx|jp|kr|pl|se|no|dk|fi|be|at|ch|pt|ie|nz|za|gl|gy|to|cc|ws|sh|so|li|click"
    r"|top|pro|vip|win|bet|cash|money|finance|example)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Verdict:
    send: bool
    reason: str | None = None  # slug: human_requested, refund, complaint, needs_human, ...
    detail: str = ""


OK = Verdict(True)


def _amount(text: str) -> str:
    value = text.replace(",", "")
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value


def prices(text: str) -> list[str]:
    """Normalised amounts stated as prices in ``text`` ("$1,200.00" -> "1200")."""
    return [_amount(m.group(1) or m.group(2)) for m in _PRICE.finditer(text)]


def _norm_url(url: str) -> str:
    url = url.rstrip(".,!?;:").lower()
    url = re.sub(r"^https?://", "", url)
    url = re.sub(r"^www\.", "", url)
    return url.rstrip("/")


def urls(text: str) -> list[str]:
    """Normalised links in ``text`` (no scheme, no ``www.``, no trailing slash)."""
    return [_norm_url(m.group(0)) for m in _URL.finditer(text)]


def unverified(reply: str, facts: Sequence[str]) -> Verdict:
    """A price or link in ``reply`` that none of ``facts`` contains."""
    fact_text = "\n".join(facts)
    # Only amounts the facts state as prices: "$90 per 30-minute call" makes 90 a known
    # price, not 30 (any number of the facts once let "$30" and "$1" through).
    known_prices = set(prices(fact_text)) | {_amount(n) for n in _FACT_PRICE.findall(fact_text)}
    for amount in prices(reply):
        if amount not in known_prices:
            return Verdict(False, "unverified_price",
                           f"the reply states a price ({amount}) that is not in ai.facts")
    # Every word of the facts counts as a link the creator wrote (whatever its domain).
    known_urls = set(urls(fact_text)) | {_norm_url(word) for word in fact_text.split()}
    for url in urls(reply):
        if url not in known_urls:
            return Verdict(False, "unverified_link",
                           f"the reply has a link ({url}) that is not in ai.facts")
    return OK


def contact_needs_human(incoming: str) -> Verdict:
    """What the contact's own message says, whatever a model made of it."""
    text = fold(incoming)
    if _REFUND.search(text):
        return Verdict(False, "refund", "the contact asks for a refund")
    if _COMPLAINT.search(text):
        return Verdict(False, "complaint", "the contact complains")
    if _HUMAN.search(text):
        return Verdict(False, "human_requested", "the contact asks for a person")
    return OK


def too_long(reply: str, *, comment: bool) -> Verdict:
    """Whether ``reply`` is longer than one answer is sent as (see the module docstring)."""
    size = len(reply.encode("utf-8"))
    limit = MAX_COMMENT_REPLY_BYTES if comment else MAX_DM_REPLY_BYTES
    if size <= limit:
        return OK
    what = "a private reply to a comment" if comment else "an answer (two DMs)"
    return Verdict(False, "too_long",
                   f"the AI's reply is {size} bytes; {what} takes at most {limit}")


def check_reply(
    answer: Answer, incoming: str, facts: Sequence[str], *,
    min_confidence: float = MIN_CONFIDENCE, comment: bool = False,
) -> Verdict:
    """Whether ``answer`` may be sent in reply to ``incoming`` (``comment``: as the private
    reply to a comment); see the module docstring."""
    verdict = contact_needs_human(incoming)
    if not verdict.send:
        return verdict
    if answer.intent in ("refund", "complaint", "human"):
        return Verdict(False, answer.intent if answer.intent != "human" else "human_requested",
                       f"the message reads as {answer.intent}")
    if answer.needs_human:
        return Verdict(False, "needs_human", "the AI asks for you to answer")
    if not answer.reply.strip() and not answer.offer_booking:
        return Verdict(False, "empty_reply", "the AI wrote nothing")
    if answer.confidence < min_confidence:
        return Verdict(False, "low_confidence",
                       f"the AI is unsure (confidence {answer.confidence:.2f})")
    verdict = too_long(answer.reply, comment=comment)
    if not verdict.send:
        return verdict
    return unverified(answer.reply, facts)


_QUOTE_MARKS = " \t\"'“”‘’«».…"


def grounded(facts: Sequence[LeadFact], said: Sequence[str]) -> tuple[LeadFact, ...]:
    """The ``facts`` backed by what the contact wrote (``said``: their messages).

    A fact whose evidence (folded, quote marks trimmed) is in one of the messages is kept as
    it is; one whose evidence is not but whose value is keeps that message as its evidence;
    any other is dropped: the model claimed words nobody wrote."""
    folded = [(text, fold(text)) for text in said if text]
    kept: list[LeadFact] = []
    for fact in facts:
        evidence = fold(fact.evidence.strip(_QUOTE_MARKS))
        if evidence and any(evidence in f for _t, f in folded):
            kept.append(fact)
            continue
        # The value itself, as whole words of at least 3 characters: "now" is not in "know",
        # "500" not in "15000".
        value = fold(fact.value.strip(_QUOTE_MARKS))
        pattern = (re.compile(rf"(?<!\w){re.escape(value)}(?!\w)") if len(value) >= 3
                   else None)
        source = next((t for t, f in folded if pattern and pattern.search(f)), None)
        if source is not None:
            kept.append(LeadFact(fact.name, fact.value, source))
    return tuple(kept)


def quoted_in(evidence: str, said: Sequence[str]) -> bool:
    """Whether ``evidence`` (a fact's quote, as :func:`grounded` kept it) is words of one of
    the texts ``said``: folded, quote marks trimmed, as :func:`grounded` compares them."""
    needle = fold(evidence.strip(_QUOTE_MARKS))
    return bool(needle) and any(needle in fold(text) for text in said if text)


def quoted_from(evidence: str, said: Sequence[tuple[str, str | None]], anchor: object
                ) -> str | None:
    """The mid of the message a fact's ``evidence`` quotes (``said``: the contact's texts
    with their mids, oldest first): ``anchor`` (the message answered) when it holds the
    words, else the newest that does; None when none does (a comment)."""
    mids = [mid for text, mid in said if quoted_in(evidence, [text])]
    if isinstance(anchor, str) and anchor in mids:
        return anchor
    return next((mid for mid in reversed(mids) if mid is not None), None)
