"""The pydantic models of ``config.yaml``, one per section (``booking:`` in
:mod:`instaset.config_booking`; the reusable field types in :mod:`instaset.config_types`).

Every model is frozen and strict about keys (``extra="forbid"``); :mod:`instaset.config` turns
their validation errors into ``file:line`` messages. ``Config()`` is the default
configuration. Durations are :data:`Duration` (``"12h"`` in YAML, back to that form in JSON).
Secrets are :data:`Secret` (:class:`SecretStr`): they print as ``**********`` and serialise to
JSON as ``"***"``, so a JSON dump of a config never contains one.

Import these from :mod:`instaset.config`, which re-exports every public name here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import InitErrorDetails, PydanticCustomError

from instaset.config_booking import (
    BOOKING_TEXT_PLACEHOLDERS,
    BookingConfig,
    availability_problem,
    no_slot_problems,
)
from instaset.config_checks import (
    API_VERSION_PATTERN,
    base_url_problem,
    email_address_problem,
    webhook_url_problem,
)
from instaset.config_types import ConfigModel as _Model
from instaset.config_types import Duration, Secret, SecretUrl
from instaset.engine.model import MAX_POINTS, Workflow
from instaset.engine.trigger_model import nested_repeat, repeat_refusal
from instaset.engine.values import check_not_blank
from instaset.paths import default_db_path
from instaset.timefmt import DURATION_PATTERN, format_duration, parse_duration

# ---------------------------------------------------------------------------------------------
# The models
# ---------------------------------------------------------------------------------------------


class InstagramConfig(_Model):
    """The Meta app (Instagram API with Instagram Login) and the Graph endpoints."""

    app_id: str = ""
    app_secret: Secret | None = None
    meta_app_secret: Secret | None = None
    verify_token: Secret | None = None
    api_version: str = "v25.0"
    graph_url: str = "https://graph.instagram.com"
    api_url: str = "https://api.instagram.com"
    auth_url: str = "https://www.instagram.com"
    redirect_uri: str | None = None

    @field_validator("api_version")
    @classmethod
    def _graph_version(cls, value: str) -> str:
        # Every Graph call's path starts with it: "v25" or "25.0" failed each one with
        # "Unknown path components".
        if re.fullmatch(API_VERSION_PATTERN, value) is None:
            raise ValueError(f"api_version must be a Graph API version like v25.0 (got "
                             f"{value!r}): every Graph call's path starts with it")
        return value

    @field_validator("graph_url", "api_url", "auth_url", "redirect_uri")
    @classmethod
    def _absolute_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        name = str(info.field_name)
        example = {"graph_url": "https://graph.instagram.com", "api_url":
                   "https://api.instagram.com", "auth_url": "https://www.instagram.com"}.get(
                       name, "https://example.com/oauth/callback")
        problem = None if value is None else base_url_problem(
            name, value, example, base=name != "redirect_uri")
        if problem is not None:
            raise ValueError(problem)
        return value

    def webhook_secrets(self) -> list[bytes]:
        """The configured, non-empty secrets a webhook signature may match, UTF-8 encoded,
        ``app_secret`` first, without duplicates. Empty when none is configured here (the
        caller may then look in the secret store)."""
        out: list[bytes] = []
        for secret in (self.app_secret, self.meta_app_secret):
            raw = secret.get_secret_value().encode() if secret is not None else b""
            if raw and raw not in out:
                out.append(raw)
        return out


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    public_url: str | None = None
    # A floor: a smaller limit refuses Meta's own deliveries (one DM with an attachment is
    # a few KB; a batch of 1000 items several hundred), and every event is lost.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("public_url")
    @classmethod
    def _public_base(cls, value: str | None) -> str | None:
        # Tracked links ({public_url}/l/CODE), the OAuth redirect and doctor's webhook check
        # are built on it: without a scheme a contact got "example.com/l/CODE", no link.
        problem = None if value is None else base_url_problem(
            "public_url", value, "https://dm.example.com")
        if problem is None and value is not None and value.rstrip("/").endswith("/webhook"):
            problem = ("public_url is this server's base URL, without /webhook (instaset adds"
                       " /webhook, /oauth/callback and /l/ itself), e.g. https://dm.example.com")
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_ranges(cls, value: list[str]) -> list[str]:
        # The parse `serve` uses (proxy.TrustedProxies.parse), so that validate and doctor
        # refuse a bad entry too, at its line. Imported here: instaset.proxy pulls in
        # aiohttp, which loading a config does not need otherwise.
        from instaset.proxy import parse_network

        problems: list[InitErrorDetails] = []
        for i, entry in enumerate(value):
            try:
                parse_network(entry)
            except ValueError:
                problems.append(InitErrorDetails(
                    type=PydanticCustomError("value_error", "{entry} is not an IP address or"
                                             " CIDR range (e.g. 127.0.0.1, ::1 or 10.0.0.0/8)",
                                             {"entry": repr(entry)}),
                    loc=(i,), input=entry))
        if problems:
            raise ValidationError.from_exception_data("trusted_proxies", problems)
        return value


class StorageConfig(_Model):
    path: Path | None = None
    synchronous: Literal["NORMAL", "FULL"] = "FULL"

    def db_path(self, env: Mapping[str, str] | None = None) -> Path:
        """``path`` (with ``~`` expanded) or :func:`~instaset.paths.default_db_path`."""
        if self.path is not None:
            return self.path.expanduser()
        return default_db_path(env)


JOB_SHARE_OF_LEASE = 0.75
"""A job is cut off at this share of its lease (the rest is the margin before another
worker may take it over)."""


class WorkerConfig(_Model):
    # Jobs mostly wait on the network (Meta, Gemini); the database work of each is short.
    concurrency: int = Field(default=32, ge=1, le=1000)
    # At least 30 s: a job is cut off at 3/4 of its lease, and a call to Meta may take 20 s;
    # a shorter lease would cut sends off mid-call and make their outcome unknown.
    lease_seconds: float = Field(default=120, ge=30, allow_inf_nan=False)
    max_attempts: int = Field(default=6, ge=1, le=100)
    backoff_base: float = Field(default=2.0, ge=0, allow_inf_nan=False)
    backoff_cap: float = Field(default=600, ge=0, allow_inf_nan=False)
    # At least 10 ms: 0 made the idle worker run its claim query in a tight loop.
    poll_interval: float = Field(default=1.0, ge=0.01, allow_inf_nan=False)
    shutdown_grace: float = Field(default=10, ge=0, allow_inf_nan=False)
    # (allow_inf_nan=False: YAML's .inf passed ge=0; a poll_interval of .inf never ran a
    # delayed step. The upper bounds: SQLite's integers end at 2**63, and a concurrency or
    # attempt count that large failed every claim or every webhook.)


MIN_RATE = 0.001
"""Per second (one every ~17 minutes): a rate closer to zero makes the wait between two
calls infinite (1e-320 is a valid float)."""


class RateLimitConfig(_Model):
    text_per_second: float = Field(default=5, ge=MIN_RATE, allow_inf_nan=False)
    media_per_second: float = Field(default=1, ge=MIN_RATE, allow_inf_nan=False)
    private_replies_per_hour: int = Field(default=200, ge=1)  # to post and reel comments
    # Private replies to live comments (Meta: 100/s, only while the broadcast runs).
    live_private_replies_per_second: float = Field(default=5, ge=MIN_RATE,
                                                   allow_inf_nan=False)
    conversations_per_second: float = Field(default=2, ge=MIN_RATE, allow_inf_nan=False)


class HandoffConfig(_Model):
    pause_for: Duration = timedelta(hours=12)

    @field_validator("pause_for")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        # 0 paused nothing: the bot kept answering a contact who asked for a human, and
        # your own replies did not pause it either (a workflow's handoff refuses 0 too).
        if value.total_seconds() <= 0:
            raise ValueError("pause_for must be longer than zero (e.g. 12h)")
        return value


WEB_URL_PATTERN = r"^https?://\S+$"


# What a tap can carry: the longest button title a postback comes from (an ice breaker's
# question; a menu title is shorter) and the longest payload either sends.
ICE_BREAKER_QUESTION_MAX = 80
MENU_TITLE_MAX = 30
POSTBACK_PAYLOAD_MAX = 1000


class IceBreaker(_Model):
    """A question offered before the first message; tapping it sends ``payload`` (a
    ``postback`` trigger answers it)."""

    question: str = Field(min_length=1, max_length=ICE_BREAKER_QUESTION_MAX)
    payload: str = Field(min_length=1, max_length=POSTBACK_PAYLOAD_MAX)

    @model_validator(mode="after")
    def _check(self) -> IceBreaker:
        check_not_blank("question", self.question, "write the question the button shows")
        check_not_blank("payload", self.payload, "write the text a postback trigger matches")
        return self


class MenuItem(_Model):
    """A persistent-menu entry: a ``payload`` for a postback trigger, or a ``url`` to open."""

    title: str = Field(min_length=1, max_length=MENU_TITLE_MAX)
    payload: str | None = Field(default=None, min_length=1, max_length=POSTBACK_PAYLOAD_MAX)
    url: str | None = Field(default=None, pattern=WEB_URL_PATTERN)

    @model_validator(mode="after")
    def _one_target(self) -> MenuItem:
        if (self.payload is None) == (self.url is None):
            raise ValueError("a menu item needs either payload or url, not both")
        check_not_blank("title", self.title, "write the menu entry's label")
        check_not_blank("payload", self.payload, "write the text a postback trigger matches")
        return self


class AIExample(_Model):
    message: str
    reply: str


MIN_AI_TIMEOUT_MS = 1000
"""The shortest ``ai.timeout_ms``: Gemini's answers (a structured JSON reply) take a second
or more, so anything shorter is a mistake (seconds written for milliseconds)."""


class AIConfig(_Model):
    model: str = Field(default="gemini-3.8-flash", min_length=1)
    base_url: str | None = None
    api_key_env: str | None = None
    persona: str = ""
    facts: list[str] = Field(default_factory=list)
    examples: list[AIExample] = Field(default_factory=list)
    # Your own replies to similar messages in other conversations, as style examples (each
    # with the message it answered, redacted): false sends nothing of other conversations.
    past_replies: bool = True
    timeout_ms: int = Field(default=20000, json_schema_extra={"minimum": MIN_AI_TIMEOUT_MS})
    max_attempts: int = Field(default=3, ge=1)
    fallback_message: str | None = None

    @field_validator("timeout_ms")
    @classmethod
    def _milliseconds(cls, value: int) -> int:
        # The SDK takes milliseconds; a structured Gemini answer takes a second or more, so
        # 20 (meant as seconds) timed every call out and every AI reply was handed off.
        if value < MIN_AI_TIMEOUT_MS:
            meant = f" (for {value} s write {value * 1000})" if 1 <= value <= 120 else ""
            raise ValueError(f"timeout_ms is in milliseconds: {value} is {value / 1000:g} s, "
                             "shorter than a Gemini answer takes; write at least "
                             f"{MIN_AI_TIMEOUT_MS} (1 s){meant}")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        # Anything else failed every call as "cannot reach Gemini" with a mangled URL.
        if value is not None and re.fullmatch(r"https?://[^\s/?#]+\S*", value) is None:
            raise ValueError("base_url must be an http(s) URL, e.g. http://127.0.0.1:8080 "
                             "(or remove it for Google's own)")
        return value

    _fallback = field_validator("fallback_message")(lambda v: check_not_blank(
        "", v, "write the text sent when the AI fails, or leave fallback_message out to hand "
        "the conversation to you"))

    def api_key(self, env: Mapping[str, str] | None = None) -> str | None:
        """The Gemini API key: the variable named by ``api_key_env`` if set, else
        ``GEMINI_API_KEY``, else ``GOOGLE_API_KEY``; None when none is set (offline mode)."""
        environ = os.environ if env is None else env
        names = [self.api_key_env] if self.api_key_env else ["GEMINI_API_KEY", "GOOGLE_API_KEY"]
        for name in names:
            if environ.get(name):
                return environ[name]
        return None


class LeadRule(_Model):
    """One named scoring rule: ``points`` (negative allowed) when its single check holds for
    the contact; each rule counts at most once per contact. Checks: ``keywords`` (an inbound
    message contains one, as whole words, case- and accent-insensitive), ``regex`` (searched
    in inbound messages), ``field`` (a contact field is set; with ``equals``, set to that
    value), ``tag`` (the contact has it), ``ai_fact`` (the AI extracted that lead fact, e.g.
    budget, timeline, goal)."""

    name: str = Field(min_length=1)
    points: int = Field(ge=-MAX_POINTS, le=MAX_POINTS)
    keywords: list[str] = Field(default_factory=list)
    regex: str | None = None
    field: str | None = None
    equals: str | None = None
    tag: str | None = None
    ai_fact: str | None = None

    @model_validator(mode="after")
    def _one_check(self) -> LeadRule:
        checks = [k for k in ("keywords", "regex", "field", "tag", "ai_fact") if getattr(self, k)]
        if len(checks) != 1:
            raise ValueError(
                "a lead rule needs exactly one of keywords, regex, field, tag, ai_fact"
                + (f" (got {', '.join(checks)})" if checks else "")
            )
        if self.equals is not None and self.field is None:
            raise ValueError("'equals' only goes with 'field'")
        blank = [kw for kw in self.keywords if not kw.strip()]
        if blank:
            # Scoring checks every message against the rule's keywords: a blank one would
            # fail there, on every message, and hold up the processing of each.
            raise ValueError(f"keywords must not be blank (got {blank[0]!r}); remove it")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            # A count of 2**32 or more raises OverflowError, a deep nesting RecursionError.
            except (re.error, OverflowError, RecursionError) as exc:
                raise ValueError(f"invalid regex {self.regex!r}: {exc}") from None
            if nested_repeat(self.regex):
                raise ValueError(repeat_refusal(self.regex))
        return self


def _default_lead_rules() -> list[LeadRule]:
    return [
        LeadRule(name="asked_price", points=15,
                 keywords=["price", "prices", "cost", "how much", "pricing", "rates"]),
        LeadRule(name="wants_a_call", points=20,
                 keywords=["call", "book", "booking", "coaching", "consultation"]),
        LeadRule(name="gave_email", points=15, field="email"),
        LeadRule(name="budget", points=20, ai_fact="budget"),
        LeadRule(name="timeline", points=15, ai_fact="timeline"),
        LeadRule(name="goal", points=10, ai_fact="goal"),
        LeadRule(name="not_interested", points=-40,
                 keywords=["not interested", "no thanks", "unsubscribe"]),
    ]


class LeadsConfig(_Model):
    """Lead scoring: the score is the sum of the rules that hold plus workflow ``score``
    steps; at ``qualified_at`` points a lead becomes qualified (and you are notified once)."""

    qualified_at: int = Field(default=50, ge=1, le=MAX_POINTS)
    rules: list[LeadRule] = Field(default_factory=_default_lead_rules)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[LeadRule]) -> list[LeadRule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"two lead rules are named {rule.name!r}")
            seen.add(rule.name)
        return rules


class RetentionConfig(_Model):
    days: int = Field(default=90, ge=1)


class SecretsConfig(_Model):
    backend: Literal["auto", "keyring", "file", "memory"] = "auto"


SMTPS_PORT = 465
"""SMTP over implicit TLS: the client speaks TLS from the first byte. The notifier
(:func:`instaset.notify.send_email`, ``smtplib.SMTP``) connects in plain and upgrades with
STARTTLS, so against this port it waits for a greeting that never comes: refused here."""


class SmtpConfig(_Model):
    """Email notifications: one message per notification, to ``to_addr``. Plain SMTP,
    upgraded with STARTTLS when ``starttls``; implicit TLS (port 465) is refused."""

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    username: str | None = None
    password: Secret | None = None
    from_addr: str
    to_addr: str

    @field_validator("port")
    @classmethod
    def _not_smtps(cls, value: int) -> int:
        if value == SMTPS_PORT:
            raise ValueError(
                "port 465 is SMTP over implicit TLS, which instaset does not speak (it connects"
                " in plain and upgrades with STARTTLS): use port 587 with starttls: true, which"
                " mail providers offer beside 465")
        return value

    @field_validator("host")
    @classmethod
    def _some_host(cls, value: str) -> str:
        # "" loaded, then every notification failed ("please run connect() first").
        if not value.strip():
            raise ValueError("host must be the mail server's name, e.g. smtp.example.com")
        return value

    @field_validator("from_addr", "to_addr")
    @classmethod
    def _addresses(cls, value: str, info: ValidationInfo) -> str:
        problem = email_address_problem(str(info.field_name), value)
        if problem is not None:
            raise ValueError(problem)
        return value


class NotifyConfig(_Model):
    command: str | None = None
    webhook_url: SecretUrl | None = None
    desktop: bool = False
    smtp: SmtpConfig | None = None

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _http_webhook(cls, value: object) -> object:
        # Before the type's own validation, on the text as written (whatever type holds it).
        if isinstance(value, str):
            if not value.strip():
                return None  # "" meant "no webhook" before the URL was checked: it still does
            problem = webhook_url_problem(value)
            if problem is not None:
                raise ValueError(problem)
            # Spaces around it (a copy-paste) would be sent as %20: every POST a 404.
            return value.strip()
        return value


class SandboxConfig(_Model):
    account_id: str = Field(default="17841400000000001", min_length=1)
    username: str = Field(default="sandbox_creator", min_length=1)
    port: int = Field(default=0, ge=0, le=65535)


SECTIONS = (
    "instagram", "server", "storage", "worker", "rate_limits", "handoff",
    "ai", "retention", "secrets", "notify", "sandbox", "leads", "booking",
)  # fmt: skip
"""The sections that may be left empty (all their keys commented out: YAML null), meaning
their defaults; ``workflows:`` left empty is no workflow."""


class Config(_Model):
    """The whole ``config.yaml``. ``Config()`` is the default configuration."""

    instagram: InstagramConfig = Field(default_factory=InstagramConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    rate_limits: RateLimitConfig = Field(default_factory=RateLimitConfig)
    handoff: HandoffConfig = Field(default_factory=HandoffConfig)
    ai: AIConfig = Field(default_factory=AIConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    leads: LeadsConfig = Field(default_factory=LeadsConfig)
    booking: BookingConfig = Field(default_factory=BookingConfig)
    timezone: str = "UTC"
    # Left out: Instagram keeps what it has (`workflows apply` does not touch it); [] removes.
    ice_breakers: list[IceBreaker] | None = Field(default=None, max_length=4)
    menu: list[MenuItem] | None = Field(default=None, max_length=20)
    workflows: list[Workflow] = Field(default_factory=list)
    source: SkipJsonSchema[Path | None] = Field(default=None, exclude=True)
    """Where this config was loaded from; None for defaults. Never read from the YAML."""

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # A section whose keys are all commented out parses as null: treat it as "defaults".
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if not (v is None and k in SECTIONS)}
            if data.get("workflows", []) is None:
                data["workflows"] = []
        return data

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        if value == "UTC":  # always valid, even where the system has no tz database
            return value
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name such as 'Europe/Berlin')"
            ) from None
        return value

    @model_validator(mode="after")
    def _ai_call_fits_in_a_job(self) -> Config:
        # One Gemini call runs inside one ai_reply job, which the worker cuts off at 3/4 of
        # its lease: a call allowed to outlast it would die as a bare job timeout, with no
        # fallback and no handoff. (2 s for the job's own work around the call.)
        job_seconds = JOB_SHARE_OF_LEASE * self.worker.lease_seconds
        if self.ai.timeout_ms / 1000 + 2 > job_seconds:
            # Raised with its own location, so the message points at ai.timeout_ms's line.
            problem = PydanticCustomError(
                "ai_timeout_too_long",
                "{timeout} ms does not fit in a worker job ({job} s: 3/4 of "
                "worker.lease_seconds, less 2 s for the job itself); lower it to at most "
                "{most} or raise worker.lease_seconds",
                {"timeout": self.ai.timeout_ms, "job": f"{job_seconds:g}",
                 "most": int((job_seconds - 2) * 1000)},
            )
            raise ValidationError.from_exception_data(type(self).__name__, [InitErrorDetails(
                type=problem, loc=("ai", "timeout_ms"), input=self.ai.timeout_ms)])
        return self

    @model_validator(mode="after")
    def _bookable_hours(self) -> Config:
        offered_by = [wf.name for wf in self.workflows if wf.enabled and any(
            step.kind == "offer_booking" for step in wf.actions)]
        problem = availability_problem(self.booking, offered_by)
        if problem is not None:  # located at booking.availability's line, as above
            raise ValidationError.from_exception_data(type(self).__name__, [InitErrorDetails(
                type=PydanticCustomError("no_hours", problem), loc=("booking", "availability"),
                input=[])])
        errors = [InitErrorDetails(type=PydanticCustomError("no_slots", why),
                                   loc=("booking", key), input=getattr(self.booking, key))
                  for key, why in no_slot_problems(self.booking, offered_by)]
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    @property
    def tzinfo(self) -> ZoneInfo:
        """``timezone`` as a :class:`ZoneInfo` (used to show and book local times)."""
        return ZoneInfo(self.timezone)


__all__ = [
    "BOOKING_TEXT_PLACEHOLDERS",
    "DURATION_PATTERN",
    "SECTIONS",
    "AIConfig",
    "AIExample",
    "BookingConfig",
    "Config",
    "Duration",
    "HandoffConfig",
    "InstagramConfig",
    "LeadRule",
    "LeadsConfig",
    "NotifyConfig",
    "RateLimitConfig",
    "RetentionConfig",
    "SandboxConfig",
    "Secret",
    "SecretsConfig",
    "ServerConfig",
    "SmtpConfig",
    "StorageConfig",
    "WorkerConfig",
    "format_duration",
    "parse_duration",
]
