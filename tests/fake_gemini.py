"""A fake Gemini API: a real aiohttp server on 127.0.0.1 that the real google-genai SDK talks
to through ``ai.base_url``. Scripted per test: each request takes the next scripted answer
(or the default one) and is recorded with its path, headers and JSON body.

    async with FakeGemini() as fake:
        fake.script(reply("Hi!"), rate_limited("7s"), server_error())
        ... GeminiResponder(api_key="test", model="m", base_url=fake.url) ...
        fake.requests[0].body["systemInstruction"]
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DEADLINE_MS = 60_000
"""``ai.timeout_ms`` for tests that do not test the deadline itself. The fake answers in
milliseconds, but on a loaded machine a call can take seconds (the loop is shared with the
daemon, the sandbox and this server), and a call past its deadline is retried later with
backoff: ``settle()`` then returns with the reply still to come and the test fails on what
is missing. A held answer (:func:`held`) must also outlast the tests' own waits (10 s)."""


@dataclass
class Scripted:
    status: int = 200
    body: Any = None  # dict -> JSON; str -> raw text
    hold: bool = False  # wait until FakeGemini.release() (or the server stops)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def system(self) -> str:
        parts = self.body.get("systemInstruction", {}).get("parts", [])
        return "".join(p.get("text", "") for p in parts)

    @property
    def turns(self) -> list[tuple[str, str]]:
        return [(c.get("role", ""), "".join(p.get("text", "") for p in c.get("parts", [])))
                for c in self.body.get("contents", [])]


def structured(**fields: Any) -> dict[str, Any]:
    """A ReplySchema object with defaults for the fields not given."""
    out: dict[str, Any] = {"reply": "Sure!", "intent": "question", "lead_fields": [],
                           "confidence": 0.9, "needs_human": False}
    out.update(fields)
    return out


def candidate_body(text: str | None, *, finish: str = "STOP",
                   function_call: dict[str, Any] | None = None) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if text is not None:
        parts.append({"text": text})
    if function_call is not None:
        parts.append({"functionCall": function_call})
    cand: dict[str, Any] = {"finishReason": finish, "index": 0}
    if parts:
        cand["content"] = {"role": "model", "parts": parts}
    return {"candidates": [cand],
            "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 30,
                              "totalTokenCount": 150},
            "modelVersion": "fake-gemini"}


def reply(text: str = "Sure!", **fields: Any) -> Scripted:
    """A 200 with the structured JSON reply."""
    return Scripted(200, candidate_body(json.dumps(structured(reply=text, **fields))))


def function_call(name: str = "offer_booking", text: str | None = None) -> Scripted:
    """A 200 whose answer calls ``name`` (with a structured lead-in when ``text``)."""
    lead_in = json.dumps(structured(reply=text, intent="booking")) if text is not None else None
    return Scripted(200, candidate_body(lead_in, function_call={"name": name, "args": {}}))


def rate_limited(delay: str = "7s") -> Scripted:
    return Scripted(429, {"error": {
        "code": 429, "status": "RESOURCE_EXHAUSTED",
        "message": f"You exceeded your current quota. Please retry in {delay}.",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}],
    }})


def server_error(status: int = 500) -> Scripted:
    return Scripted(status, {"error": {"code": status, "status": "INTERNAL",
                                       "message": "Internal error encountered."}})


def safety() -> Scripted:
    return Scripted(200, candidate_body(None, finish="SAFETY"))


def prompt_blocked() -> Scripted:
    return Scripted(200, {"promptFeedback": {"blockReason": "SAFETY"}})


def max_tokens() -> Scripted:
    return Scripted(200, candidate_body('{"reply": "It is a long st', finish="MAX_TOKENS"))


def malformed() -> Scripted:
    return Scripted(200, candidate_body("this is not JSON"))


def held(then: Scripted | None = None) -> Scripted:
    """Answers only once released (a slow model, or a timeout when never released)."""
    s = then or reply()
    return Scripted(s.status, s.body, hold=True)


@dataclass
class FakeGemini:
    default: Scripted = field(default_factory=reply)
    requests: list[Request] = field(default_factory=list)
    _script: deque[Scripted] = field(default_factory=deque)
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    url: str = ""

    def script(self, *answers: Scripted) -> None:
        self._script.extend(answers)

    def release(self) -> None:
        self._released.set()

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Request(request.path, dict(request.headers), await request.json()))
        answer = self._script.popleft() if self._script else self.default
        if answer.hold:
            await self._released.wait()
        if isinstance(answer.body, str):
            return web.Response(status=answer.status, text=answer.body,
                                content_type="text/plain")
        return web.json_response(answer.body or {}, status=answer.status)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{version}/models/{model}:generateContent", self._generate)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeGemini:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
