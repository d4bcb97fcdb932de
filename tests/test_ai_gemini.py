"""The Gemini wrapper with the real google-genai SDK against the fake Gemini server."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from google.genai import types

from instaset.ai.gemini import OFFER_BOOKING, GeminiError, GeminiResponder, ReplySchema, retry_delay
from instaset.ai.prompt import Example, PromptInput, Turn, build_prompt
from tests.fake_gemini import (
    FakeGemini,
    Scripted,
    candidate_body,
    function_call,
    held,
    malformed,
    max_tokens,
    prompt_blocked,
    rate_limited,
    reply,
    safety,
    server_error,
)

INPUT = PromptInput(
    persona="I'm Maya, a strength coach. Casual, warm, one emoji max.",
    facts=("Coaching is $90 per session", "Book at https://maya.fit/book"),
    examples=(Example("do you do online coaching?", "Yes! All my coaching is online 💪"),),
    past_replies=(Example("how long is a session", "An hour, usually on Zoom", "history"),),
    conversation=(Turn("contact", "hey"), Turn("creator", "Hey! What's up?"),
                  Turn("contact", "how much is coaching?")),
    username="sam",
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini() as server:
        yield server


@pytest.fixture
async def gemini(fake: FakeGemini) -> AsyncIterator[GeminiResponder]:
    async with aiohttp.ClientSession() as session:
        yield GeminiResponder(api_key="test-key", model="gemini-test", base_url=fake.url,
                              timeout_ms=300, session=session)


async def test_request_carries_prompt_and_schema_and_answer_is_parsed(
    fake: FakeGemini, gemini: GeminiResponder
) -> None:
    fake.script(reply("It's $90 a session!", intent="pricing", confidence=0.82,
                      lead_fields=[{"name": "Budget", "value": "$100",
                                    "evidence": "I can spend $100"}]))
    answer = await gemini.answer(build_prompt(INPUT))

    assert answer.reply == "It's $90 a session!"
    assert answer.intent == "pricing"
    assert answer.confidence == pytest.approx(0.82)
    assert not answer.needs_human and not answer.offer_booking
    assert [(f.name, f.value, f.evidence) for f in answer.lead_facts] == [
        ("budget", "$100", "I can spend $100")]
    assert answer.usage is not None and answer.usage.total_tokens == 150
    assert (answer.backend, answer.model) == ("gemini", "gemini-test")

    [req] = fake.requests
    assert req.path == "/v1/models/gemini-test:generateContent"
    assert req.headers["x-goog-api-key"] == "test-key"
    assert "I'm Maya, a strength coach" in req.system
    assert "- Coaching is $90 per session" in req.system
    assert "Reply: Yes! All my coaching is online 💪" in req.system
    assert 'Reply: "An hour, usually on Zoom"' in req.system
    assert req.turns == [("user", "hey"), ("model", "Hey! What's up?"),
                         ("user", "how much is coaching?")]
    gen = req.body["generationConfig"]
    assert gen["responseMimeType"] == "application/json"
    schema = gen["responseSchema"]
    assert set(schema["required"]) == {"reply", "intent", "lead_fields", "confidence",
                                       "needs_human"}
    assert "tools" not in req.body  # no booking tool unless booking is on


async def test_booking_function_call_is_declared_and_not_executed(
    fake: FakeGemini, gemini: GeminiResponder
) -> None:
    fake.script(function_call("offer_booking", text="Let's find a time!"))
    answer = await gemini.answer(build_prompt(INPUT), booking=True)
    assert answer.offer_booking and answer.reply == "Let's find a time!"
    assert len(fake.requests) == 1  # automatic function calling is off: one request
    decl = fake.requests[0].body["tools"][0]["functionDeclarations"][0]
    assert decl["name"] == "offer_booking"

    fake.script(function_call("offer_booking"))  # a bare call, no text part
    bare = await gemini.answer(build_prompt(INPUT), booking=True)
    assert bare.offer_booking and bare.reply == "" and bare.intent == "booking"


@pytest.mark.parametrize(
    ("scripted", "outcome", "retryable", "retry_after"),
    [
        (rate_limited("7s"), "rate_limited", True, 7.0),
        (rate_limited("1.5s"), "rate_limited", True, 1.5),
        (server_error(500), "server_error", True, None),
        (server_error(503), "server_error", True, None),
        (server_error(400), "client_error", False, None),
        (safety(), "safety", False, None),
        (prompt_blocked(), "safety", False, None),
        (max_tokens(), "max_tokens", False, None),
        (malformed(), "malformed", True, None),
        (held(), "timeout", True, None),  # never released: the 300 ms timeout fires
        # a 200 that is no JSON (a proxy's page, a wrong ai.base_url): the SDK's own decoding
        # error once escaped, and the job died without the fallback or a handoff
        (Scripted(200, "<html>proxy says hi</html>"), "malformed", True, None),
        (Scripted(200, "[1, 2]"), "malformed", True, None),
    ],
    ids=["429", "429-fraction", "500", "503", "400", "safety", "blocked", "max-tokens",
         "malformed", "timeout", "not-json", "json-not-an-answer"],
)
async def test_failures_map_to_ai_errors(
    fake: FakeGemini, gemini: GeminiResponder, scripted: object, outcome: str,
    retryable: bool, retry_after: float | None,
) -> None:
    fake.script(scripted)  # type: ignore[arg-type]
    with pytest.raises(GeminiError) as info:
        await gemini.answer(build_prompt(INPUT))
    assert info.value.outcome == outcome
    assert info.value.retryable is retryable
    assert info.value.retry_after == retry_after
    assert len(fake.requests) == 1  # the SDK never retries on its own


@pytest.mark.parametrize("booking", [False, True], ids=["reply", "booking"])
async def test_request_is_the_one_the_sdk_builds_from_the_pydantic_schema(
    fake: FakeGemini, gemini: GeminiResponder, booking: bool
) -> None:
    """The precomputed schema, dict contents and dict config (see gemini.py's docstring)
    put on the wire exactly what the SDK sends for the plain formulation: Content models
    and the pydantic class as ``response_schema``; the shared schema is not altered by use."""
    prompt = build_prompt(INPUT)
    other = build_prompt(dataclasses.replace(
        INPUT, persona="Someone else", conversation=(Turn("contact", "and in person?"),)))
    await gemini.answer(prompt, booking=booking)
    await gemini.answer(other, booking=booking)
    await gemini.answer(prompt, booking=booking)
    tools = [types.Tool(function_declarations=[types.FunctionDeclaration(
        name=OFFER_BOOKING,
        description="Send the person the creator's next free appointment times as "
                    "buttons to tap. Use when they want to book a call or session.",
    )])] if booking else None
    await gemini.client.aio.models.generate_content(
        model="gemini-test",
        contents=[types.Content(role=role, parts=[types.Part(text=text)])
                  for role, text in prompt.turns],
        config=types.GenerateContentConfig(
            system_instruction=prompt.system, temperature=0.4,
            response_mime_type="application/json", response_schema=ReplySchema, tools=tools,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True)),
    )
    first, second, again, plain = (json.dumps(r.body) for r in fake.requests)
    assert first == plain and again == plain
    assert json.loads(second)["generationConfig"] == json.loads(plain)["generationConfig"]
    assert json.loads(second)["systemInstruction"] != json.loads(plain)["systemInstruction"]
    assert ("tools" in json.loads(plain)) is booking


async def test_json_that_does_not_fit_the_schema_is_malformed(
    fake: FakeGemini, gemini: GeminiResponder
) -> None:
    fake.script(Scripted(200, candidate_body(json.dumps({"reply": "hi", "intent": 1}))))
    with pytest.raises(GeminiError) as info:
        await gemini.answer(build_prompt(INPUT))
    assert (info.value.outcome, info.value.retryable) == ("malformed", True)


async def test_unreachable_server_is_a_retryable_network_error() -> None:
    fake = FakeGemini()
    url = await fake.start()
    await fake.stop()  # nothing listens there any more
    async with aiohttp.ClientSession() as session:
        gemini = GeminiResponder(api_key="k", model="m", base_url=url, session=session)
        with pytest.raises(GeminiError) as info:
            await gemini.answer(build_prompt(INPUT))
    assert info.value.outcome == "network" and info.value.retryable


async def test_own_session_is_closed(fake: FakeGemini) -> None:
    gemini = GeminiResponder(api_key="k", model="m", base_url=fake.url)
    assert (await gemini.answer(build_prompt(INPUT))).reply == "Sure!"
    await gemini.aclose()


def test_retry_delay_parsing() -> None:
    assert retry_delay({"error": {"details": [{"retryDelay": "53s"}]}}) == 53.0
    assert retry_delay({"error": {"message": "Please retry in 12.5s.", "details": []}}) == 12.5
    assert retry_delay({"error": {"message": "quota", "details": [{"x": 1}]}}) is None
    assert retry_delay("not json") is None
