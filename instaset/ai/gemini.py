"""Gemini through the google-genai SDK (async), with structured output and no surprises.

Contract of :meth:`GeminiResponder.answer`: one HTTP request per call (SDK retries off: the
durable job queue owns retries; automatic function calling disabled, so a declared tool is
never executed by the SDK), the :class:`ReplySchema` as ``response_schema`` for the reply,
and every failure mapped to :class:`GeminiError` (an :class:`~instaset.errors.AIError`) with
an ``outcome`` slug:

======================  ==========  ==========================================
outcome                 retryable   cause
======================  ==========  ==========================================
``rate_limited``        yes         HTTP 429; ``retry_after`` from its ``retryDelay``
``server_error``        yes         HTTP 5xx / 408
``timeout``             yes         no answer within ``ai.timeout_ms``
``network``             yes         connection refused / reset
``malformed``           yes         ``parsed is None`` without another reason
``client_error``        no          other 4xx (bad key, bad model, bad request)
``safety``              no          prompt blocked or the answer stopped for SAFETY
``max_tokens``          no          the answer was cut off (``MAX_TOKENS``)
======================  ==========  ==========================================

Speed (bench/ai.py): the SDK converts its arguments on every call, and two of the conversions
cost more than the HTTP round trip to a local server. A pydantic class as ``response_schema``
is turned into a JSON schema and then a :class:`types.Schema` each time, so the client holds
the converted :class:`types.Schema` (computed once; the wire ``responseSchema`` is the same,
tests/test_ai_gemini.py compares it with the SDK's own conversion of :class:`ReplySchema`).
With a ``types.Schema`` the SDK's ``parsed`` is a plain dict, which :func:`read_response`
validates against :class:`ReplySchema` itself, as the SDK would. The contents go as plain
dicts (``types.Content`` instances take the SDK's union validation ~1 ms slower for the
same request) and the config as a dict (no deep copy of the schema per call).
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from google.genai._transformers import t_schema
from pydantic import BaseModel, ValidationError

from instaset.ai.answer import Answer, LeadFact, Usage
from instaset.ai.prompt import Prompt
from instaset.errors import AIError

OFFER_BOOKING = "offer_booking"
_SAFETY_REASONS = {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION",
                   "IMAGE_SAFETY"}


class LeadField(BaseModel):
    name: str
    value: str
    evidence: str


class ReplySchema(BaseModel):
    """The structured output the model must produce (no defaults: the Gemini schema subset
    does not support them)."""

    reply: str
    intent: str
    lead_fields: list[LeadField]
    confidence: float
    needs_human: bool


class GeminiError(AIError):
    def __init__(self, message: str, *, outcome: str, retryable: bool,
                 retry_after: float | None = None, usage: Usage | None = None) -> None:
        self.outcome = outcome
        self.usage = usage
        super().__init__(message, retryable=retryable, retry_after=retry_after)


_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
_RETRY_IN = re.compile(r"retry in (\d+(?:\.\d+)?)\s*s", re.IGNORECASE)


def retry_delay(details: Any) -> float | None:
    """Seconds from a 429 body's ``google.rpc.RetryInfo.retryDelay`` ("53s", "1.5s"), else
    from its "Please retry in 53.01s." message; None when it says nothing."""
    error = details.get("error") if isinstance(details, dict) else None
    if not isinstance(error, dict):
        return None
    for item in error.get("details") or []:
        if isinstance(item, dict) and isinstance(item.get("retryDelay"), str):
            m = _DELAY.match(item["retryDelay"])
            if m:
                return float(m.group(1))
    m = _RETRY_IN.search(str(error.get("message") or ""))
    return float(m.group(1)) if m else None


def map_api_error(exc: genai_errors.APIError) -> GeminiError:
    code = exc.code or 0
    text = f"Gemini answered HTTP {code} {exc.status or ''}: {(exc.message or '')[:300]}".strip()
    if code == 429:
        return GeminiError(text, outcome="rate_limited", retryable=True,
                           retry_after=retry_delay(exc.details))
    if code >= 500 or code == 408:
        return GeminiError(text, outcome="server_error", retryable=True)
    return GeminiError(text, outcome="client_error", retryable=False)


def _usage(resp: types.GenerateContentResponse) -> Usage | None:
    u = resp.usage_metadata
    if u is None:
        return None
    return Usage(u.prompt_token_count, u.candidates_token_count, u.total_token_count)


def _name(value: object) -> str:
    return str(getattr(value, "name", value) or "")


def _reply(parsed: object) -> ReplySchema | None:
    """The :class:`ReplySchema` in ``response.parsed``: the SDK gives an instance when the
    config carried the pydantic class, the decoded JSON when it carried the converted
    :class:`types.Schema` (what :class:`GeminiResponder` sends). A value that does not fit
    is None, as the SDK's own parsing makes it."""
    if isinstance(parsed, ReplySchema):
        return parsed
    if isinstance(parsed, dict):
        try:
            return ReplySchema.model_validate(parsed)
        except ValidationError:
            return None
    return None


def reply_schema() -> types.Schema:
    """:class:`ReplySchema` as the SDK converts a pydantic ``response_schema`` on each call
    (``t_schema``), computed once; the SDK sends a ``types.Schema`` unchanged."""
    schema = t_schema(None, ReplySchema)
    if schema is None:  # pragma: no cover - t_schema returns None only for a falsy origin
        raise TypeError("ReplySchema did not convert to a Gemini schema")
    return schema


def read_response(resp: types.GenerateContentResponse, model: str) -> Answer:
    """The :class:`Answer` in a response, or the :class:`GeminiError` it amounts to."""
    usage = _usage(resp)
    block = resp.prompt_feedback.block_reason if resp.prompt_feedback else None
    if block is not None:
        raise GeminiError(f"Gemini blocked the prompt ({_name(block)})", outcome="safety",
                          retryable=False, usage=usage)
    finish = _name(resp.candidates[0].finish_reason) if resp.candidates else ""
    if finish in _SAFETY_REASONS:
        raise GeminiError(f"Gemini stopped the answer ({finish})", outcome="safety",
                          retryable=False, usage=usage)
    calls = resp.function_calls or []
    offer = any(c.name == OFFER_BOOKING for c in calls)
    parsed = _reply(resp.parsed)
    if parsed is not None:
        return Answer(
            reply=parsed.reply.strip(), intent=parsed.intent.strip().lower() or "other",
            confidence=max(0.0, min(1.0, parsed.confidence)), needs_human=parsed.needs_human,
            lead_facts=tuple(
                LeadFact(f.name.strip().lower(), f.value.strip(), f.evidence.strip())
                for f in parsed.lead_fields if f.name.strip() and f.value.strip()
            ),
            offer_booking=offer, backend="gemini", model=model, usage=usage,
        )
    if finish == "MAX_TOKENS":
        raise GeminiError("Gemini's answer was cut off (MAX_TOKENS)", outcome="max_tokens",
                          retryable=False, usage=usage)
    if offer:
        # Only the function call: offer the slots with no lead-in text.
        return Answer(reply="", intent="booking", confidence=1.0, needs_human=False,
                      offer_booking=True, backend="gemini", model=model, usage=usage)
    raise GeminiError("Gemini's answer did not fit the reply schema", outcome="malformed",
                      retryable=True, usage=usage)


class GeminiResponder:
    """One async google-genai client for the daemon's lifetime. Given an aiohttp
    ``session``, requests go through it (its owner closes it); otherwise :meth:`aclose`."""

    def __init__(self, *, api_key: str, model: str, base_url: str | None = None,
                 timeout_ms: int = 20000, temperature: float = 0.4,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.model = model
        self.temperature = temperature
        self.own_session = session is None
        # With a session of ours the SDK keeps none of its own (nothing left unclosed).
        self.client = genai.Client(
            api_key=api_key,
            # retry_options with one attempt: without any, the SDK silently retries a
            # refused connection after sleeping 1-10 s; the job queue owns retries.
            http_options=types.HttpOptions(
                base_url=base_url, timeout=timeout_ms, aiohttp_client=session,
                retry_options=types.HttpRetryOptions(attempts=1),
            ),
        )
        # Everything in the config but the system instruction is the same on every call:
        # built once (see the module docstring). The SDK neither mutates nor keeps them.
        self.base_config: types.GenerateContentConfigDict = {
            "temperature": temperature,
            "response_mime_type": "application/json",
            "response_schema": reply_schema(),
            "automatic_function_calling": {"disable": True},
        }
        self.booking_config: types.GenerateContentConfigDict = {
            **self.base_config,
            "tools": [types.Tool(function_declarations=[types.FunctionDeclaration(
                name=OFFER_BOOKING,
                description="Send the person the creator's next free appointment times as "
                            "buttons to tap. Use when they want to book a call or session.",
            )])],
        }

    def config(self, prompt: Prompt, *, booking: bool) -> types.GenerateContentConfigDict:
        """The request config: :attr:`base_config` (or :attr:`booking_config`) plus the
        prompt's system instruction. A dict, so the SDK validates it instead of deep-copying
        a config model (and its schema) on every call."""
        base = self.booking_config if booking else self.base_config
        return {**base, "system_instruction": prompt.system}

    async def answer(self, prompt: Prompt, *, booking: bool = False) -> Answer:
        contents: list[types.ContentDict] = [
            {"role": role, "parts": [{"text": text}]} for role, text in prompt.turns
        ]
        try:
            resp = await self.client.aio.models.generate_content(
                model=self.model, contents=contents,
                config=self.config(prompt, booking=booking),
            )
        except genai_errors.APIError as exc:
            raise map_api_error(exc) from None
        except TimeoutError:
            raise GeminiError("Gemini did not answer in time", outcome="timeout",
                              retryable=True) from None
        except aiohttp.ClientError as exc:
            raise GeminiError(f"cannot reach Gemini: {exc}", outcome="network",
                              retryable=True) from None
        except Exception as exc:
            # Whatever else the SDK raises reading the answer: a 200 that is no JSON (a
            # proxy's page, a wrong ai.base_url) raises json's own error. Unmapped, it
            # skipped the fallback and the handoff (see the module docstring's contract).
            raise GeminiError(f"Gemini's answer could not be read ({type(exc).__name__}: "
                              f"{str(exc)[:200]})", outcome="malformed",
                              retryable=True) from None
        return read_response(resp, self.model)

    async def aclose(self) -> None:
        await self.client.aio.aclose()
        self.client.close()
