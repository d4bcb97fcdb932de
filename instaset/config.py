"""The models of ``config.yaml`` and loading them with ``file:line`` errors.

Every model is frozen and strict about keys (``extra="forbid"``): a typo in our own YAML is an
error that names the file, the line, the dotted path and a suggestion, e.g.::

    config.yaml:14: workflows[2].trigger: unknown key 'keywrods' (did you mean 'keywords'?)

All problems are collected and reported together in one :class:`~instaset.errors.ConfigError`
(one problem per line). An empty file, or no file at the default location, is a valid config.

Environment overrides (they win over the file; an empty value counts as unset):

- ``INSTASET_APP_SECRET`` -> ``instagram.app_secret``
- ``INSTASET_META_APP_SECRET`` -> ``instagram.meta_app_secret``
- ``INSTASET_VERIFY_TOKEN`` -> ``instagram.verify_token``
- ``INSTASET_DB`` -> ``storage.path``
- ``INSTASET_HOST`` / ``INSTASET_PORT`` -> ``server.host`` / ``server.port``
- ``INSTASET_CONFIG``: the config file itself (when no path is passed to :func:`load_config`)
- ``INSTASET_HOME``: the data directory (see :mod:`instaset.paths`)

A relative ``storage.path`` is resolved against the directory of the config file (against the
working directory when it comes from ``INSTASET_DB``). Secrets are :class:`SecretStr`: they
print as ``**********`` and serialise to JSON as ``"***"``, so a JSON dump of a config never
contains one.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import types
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from instaset.engine.model import Hours, Workflow, check_workflow_names
from instaset.errors import ConfigError
from instaset.paths import data_dir, default_config_path

# ---------------------------------------------------------------------------------------------
# Reusable field types
# ---------------------------------------------------------------------------------------------

_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([wdhms])")
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?\s*[wdhms]\s*)+$|^\s*\d+(\.\d+)?\s*$"
_DURATION_HINT = "use a number of seconds or a string like '30s', '15m', '12h', '7d', '2w'"


def parse_duration(value: object) -> timedelta:
    """``"30s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"2w"``, compounds like ``"1h30m"``, or a
    number of seconds (int, float or numeric string) -> :class:`timedelta`. Negative, NaN and
    boolean values are refused with :class:`ValueError`."""
    seconds: float
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):  # bool is an int; `pause_for: yes` is a mistake, not 1 s
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif text and re.fullmatch(r"(\s*\d+(\.\d+)?\s*[wdhms])+\s*", text):
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
        else:
            raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    else:
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must be a finite, non-negative time")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling in one unit: 12 h -> ``"12h"``, 90 min -> ``"90m"``."""
    micros = value // timedelta(microseconds=1)
    if micros % 1_000_000:
        return f"{micros / 1_000_000:g}s"
    seconds = micros // 1_000_000
    for unit, size in _UNIT_SECONDS.items():
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return "0s"


Duration = Annotated[
    timedelta,
    PlainValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "number", "minimum": 0},
            ],
            "description": "A duration: '30s', '15m', '12h', '7d', '2w', or seconds.",
            "examples": ["30s", "15m", "12h", "7d"],
        }
    ),
]
"""A :class:`timedelta` written as ``"12h"`` etc. in YAML; serialises back to that form."""


def _mask(secret: SecretStr) -> str:
    return "***" if secret.get_secret_value() else ""


Secret = Annotated[SecretStr, PlainSerializer(_mask, return_type=str, when_used="json")]
"""A secret string; never serialised to JSON in clear."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1)
    trusted_proxies: list[str] = Field(default_factory=list)


class StorageConfig(_Model):
    path: Path | None = None
    synchronous: Literal["NORMAL", "FULL"] = "FULL"

    def db_path(self, env: Mapping[str, str] | None = None) -> Path:
        """``path`` (with ``~`` expanded) or ``data_dir(env)/instaset.db``."""
        if self.path is not None:
            return self.path.expanduser()
        return data_dir(env) / "instaset.db"


class WorkerConfig(_Model):
    # Jobs mostly wait on the network (Meta, Gemini); the database work of each is short.
    concurrency: int = Field(default=32, ge=1)
    lease_seconds: float = Field(default=120, gt=0)
    max_attempts: int = Field(default=6, ge=1)
    backoff_base: float = Field(default=2.0, ge=0)
    backoff_cap: float = Field(default=600, ge=0)
    poll_interval: float = Field(default=1.0, ge=0)
    shutdown_grace: float = Field(default=10, ge=0)


class RateLimitConfig(_Model):
    text_per_second: float = Field(default=5, gt=0)
    media_per_second: float = Field(default=1, gt=0)
    private_replies_per_hour: int = Field(default=200, ge=1)
    conversations_per_second: float = Field(default=2, gt=0)


class HandoffConfig(_Model):
    pause_for: Duration = timedelta(hours=12)


class AIExample(_Model):
    message: str
    reply: str


class AIConfig(_Model):
    model: str = "gemini-3.8-flash"
    base_url: str | None = None
    api_key_env: str | None = None
    persona: str = ""
    facts: list[str] = Field(default_factory=list)
    examples: list[AIExample] = Field(default_factory=list)
    timeout_ms: int = Field(default=20000, ge=1)
    max_attempts: int = Field(default=3, ge=1)
    fallback_message: str | None = None

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
    points: int
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
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"invalid regex {self.regex!r}: {exc}") from None
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

    qualified_at: int = Field(default=50, ge=1)
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


def _default_availability() -> list[Hours]:
    return [Hours.model_validate({"days": "mon-fri", "from": "09:00", "to": "17:00"})]


class BookingConfig(_Model):
    """Appointment slots, in the top-level ``timezone``: weekly ``availability`` minus
    ``blackout`` dates and existing bookings, ``slot_length`` long, ``buffer`` apart, from
    ``min_notice`` ahead up to ``horizon`` ahead."""

    enabled: bool = False
    title: str = "Call"
    slot_length: Duration = timedelta(minutes=30)
    buffer: Duration = timedelta(0)
    min_notice: Duration = timedelta(hours=2)
    horizon: Duration = timedelta(days=14)
    offer: int = Field(default=5, ge=1, le=13)
    availability: list[Hours] = Field(default_factory=_default_availability)
    blackout: list[date] = Field(default_factory=list)
    intro: str = "Here are my next free times ({timezone}). Tap one to book it:"
    confirmation: str = "You're booked for {when} ({timezone}). See you then!"
    unavailable: str = "Sorry, that time is no longer free. Here are the next ones:"

    @field_validator("slot_length")
    @classmethod
    def _positive_length(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 60:
            raise ValueError("slot_length must be at least 1 minute")
        return value


class RetentionConfig(_Model):
    days: int = Field(default=90, ge=1)


class SecretsConfig(_Model):
    backend: Literal["auto", "keyring", "file", "memory"] = "auto"


class SmtpConfig(_Model):
    """Email notifications: one message per notification, to ``to_addr``."""

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    username: str | None = None
    password: Secret | None = None
    from_addr: str
    to_addr: str


class NotifyConfig(_Model):
    command: str | None = None
    webhook_url: str | None = None
    desktop: bool = False
    smtp: SmtpConfig | None = None


class SandboxConfig(_Model):
    account_id: str = "17841400000000001"
    username: str = "sandbox_creator"
    port: int = Field(default=0, ge=0, le=65535)


_SECTIONS = (
    "instagram", "server", "storage", "worker", "rate_limits", "handoff",
    "ai", "retention", "secrets", "notify", "sandbox", "leads", "booking",
)  # fmt: skip


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
    workflows: list[Workflow] = Field(default_factory=list)
    source: SkipJsonSchema[Path | None] = Field(default=None, exclude=True)
    """Where this config was loaded from; None for defaults. Never read from the YAML."""

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # A section whose keys are all commented out parses as null: treat it as "defaults".
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if not (v is None and k in _SECTIONS)}
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

    @property
    def tzinfo(self) -> ZoneInfo:
        """``timezone`` as a :class:`ZoneInfo` (used to show and book local times)."""
        return ZoneInfo(self.timezone)


# ---------------------------------------------------------------------------------------------
# Environment overrides
# ---------------------------------------------------------------------------------------------

ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "INSTASET_APP_SECRET": ("instagram", "app_secret"),
    "INSTASET_META_APP_SECRET": ("instagram", "meta_app_secret"),
    "INSTASET_VERIFY_TOKEN": ("instagram", "verify_token"),
    "INSTASET_DB": ("storage", "path"),
    "INSTASET_HOST": ("server", "host"),
    "INSTASET_PORT": ("server", "port"),
}
"""Environment variable -> (section, key) it overrides."""

CONFIG_ENV = "INSTASET_CONFIG"


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[tuple[str, str], str]:
    """Write the env overrides into ``data`` (copying sections, which YAML anchors may share).
    Returns which locations came from which variable, to word errors about them."""
    applied: dict[tuple[str, str], str] = {}
    for var, (section, key) in ENV_OVERRIDES.items():
        value = env.get(var, "")
        if not value:
            continue
        current = data.get(section)
        if current is None:
            current = {}
        if not isinstance(current, dict):
            continue  # the file's own type error is reported; nothing to override into
        if var == "INSTASET_DB":
            value = str(Path(value).expanduser().absolute())
        data[section] = {**current, key: value}
        applied[(section, key)] = var
    return applied


# ---------------------------------------------------------------------------------------------
# YAML with line numbers
# ---------------------------------------------------------------------------------------------


def _where(filename: str, line: int | None) -> str:
    return f"{filename}:{line}" if line is not None else filename


def _dotted(parts: Sequence[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problem(where: str, parts: Sequence[str | int], message: str) -> str:
    path = _dotted(parts)
    return f"{where}: {path}: {message}" if path else f"{where}: {message}"


def _yaml_problem(exc: yaml.MarkedYAMLError, filename: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    message = exc.problem or exc.context or "unreadable YAML"
    if exc.problem and exc.context:
        started = f" started on line {exc.context_mark.line + 1}" if exc.context_mark else ""
        message += f" ({exc.context}{started})"
    return f"{_where(filename, line)}: invalid YAML: {message}"


def _key_text(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else "<complex key>"


def _duplicate_keys(root: yaml.Node | None, filename: str) -> list[tuple[int, str]]:
    """Every key that appears twice in one mapping (YAML loaders silently keep the last)."""
    found: list[tuple[int, str]] = []
    seen_nodes: set[int] = set()

    def walk(node: yaml.Node, parts: list[str | int]) -> None:
        if id(node) in seen_nodes:  # aliases share nodes; also guards recursive anchors
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = _key_text(key_node)
                line = key_node.start_mark.line + 1
                if key in first_line:
                    message = f"duplicate key '{key}' (first defined on line {first_line[key]})"
                    found.append((line, _problem(_where(filename, line), parts, message)))
                else:
                    first_line[key] = line
                walk(value_node, [*parts, key])
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, [*parts, i])

    if root is not None:
        walk(root, [])
    return found


def _locate(
    root: yaml.Node | None, loc: Sequence[str | int]
) -> tuple[list[str | int], yaml.Node | None, yaml.Node | None]:
    """Follow a pydantic ``loc`` through the node tree. Returns the path that exists in the
    YAML, the deepest node reached and the key node of the last mapping step. Elements that
    do not exist in the YAML (union tags, missing keys) are skipped."""
    parts: list[str | int] = []
    node, key_node = root, None
    for item in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(item, str):
            # the last matching key wins, as in the constructed dict (merge keys come first)
            pairs = [(k, v) for k, v in node.value if _key_text(k) == item]
            if pairs:
                key_node, node = pairs[-1]
                parts.append(item)
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(item, int)
            and 0 <= item < len(node.value)
        ):
            node, key_node = node.value[item], None
            parts.append(item)
    return parts, node, key_node


# ---------------------------------------------------------------------------------------------
# Turning pydantic errors into one line each
# ---------------------------------------------------------------------------------------------


def _flatten(annotations: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for ann in annotations:
        origin = get_origin(ann)
        if origin is Annotated:
            out.extend(_flatten([get_args(ann)[0]]))
        elif origin is Union or origin is types.UnionType:
            out.extend(_flatten([a for a in get_args(ann) if a is not type(None)]))
        else:
            out.append(ann)
    return out


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _field_names(model: type[BaseModel]) -> list[str]:
    """The keys a model accepts as YAML spells them (aliases, e.g. ``from`` for ``from_``)."""
    fields = model.model_fields.items()
    return [f.alias or n for n, f in fields if not (model is Config and n == "source")]


def _field(model: type[BaseModel], key: str | int) -> Any:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field
    return None


def _has_tag(model: type[BaseModel], tag: str | int) -> bool:
    if model.__name__ == tag:
        return True
    for field in model.model_fields.values():
        if get_origin(field.annotation) is Literal and tag in get_args(field.annotation):
            return True
    return False


def _allowed_keys(loc: Sequence[str | int]) -> list[str]:
    """The keys the model at ``loc`` accepts, found by walking Config's annotations. Union
    members are narrowed by the tags pydantic puts in ``loc``; if that is not possible, the
    keys of every member are offered."""
    current: list[Any] = [Config]
    for item in loc:
        nxt: list[Any] = []
        for ann in _flatten(current):
            origin = get_origin(ann)
            if _is_model(ann):
                field = _field(ann, item)
                if field is not None:
                    nxt.append(field.annotation)
            elif origin in (list, tuple, set, frozenset, Sequence) and isinstance(item, int):
                nxt.extend(get_args(ann)[:1])
            elif origin in (dict, Mapping):
                nxt.extend(get_args(ann)[1:2])
        if nxt:
            current = nxt
        else:
            tagged = [a for a in _flatten(current) if _is_model(a) and _has_tag(a, item)]
            current = tagged or current
    keys: list[str] = []
    for ann in _flatten(current):
        if _is_model(ann):
            keys += [k for k in _field_names(ann) if k not in keys]
    return keys


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _human(error: Mapping[str, Any], field: str | int | None) -> str:
    kind, msg, value = error["type"], str(error["msg"]), error.get("input")
    got = _describe(value)
    if kind == "extra_forbidden":
        return f"unknown key '{field}'"
    if kind == "missing":
        return f"missing required key '{field}'"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping of keys, got {got}"
    if kind == "list_type":
        return f"must be a list, got {got}"
    if kind == "string_type":
        hint = " (put it in quotes)" if isinstance(value, int | float) else ""
        return f"must be a string, got {got}{hint}"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    if msg.startswith("Input should be "):
        rest = msg[len("Input should be ") :]
        if kind.endswith("_parsing"):
            rest = rest.split(", ")[0]
        return f"must be {rest}, got {got}"
    return msg[:1].lower() + msg[1:]


def _format_errors(
    errors: Sequence[Mapping[str, Any]],
    root: yaml.Node | None,
    filename: str,
    from_env: Mapping[tuple[str, str], str],
) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for error in errors:
        loc: tuple[str | int, ...] = tuple(error["loc"])
        field = loc[-1] if loc else None
        message = _human(error, field)
        env_var = next((v for k, v in from_env.items() if loc[: len(k)] == k), None)
        if env_var is not None:
            out.append((1 << 30, _problem(f"{env_var} (environment)", loc, message)))
            continue
        if error["type"] == "extra_forbidden":
            parts, _node, key_node = _locate(root, loc)
            parts = parts[:-1] if parts and parts[-1] == field else parts
            close = difflib.get_close_matches(str(field), _allowed_keys(loc[:-1]), n=1)
            if close:
                message += f" (did you mean '{close[0]}'?)"
            anchor = key_node
        else:
            target = loc[:-1] if error["type"] == "missing" else loc
            parts, anchor, _key = _locate(root, target)
        line = anchor.start_mark.line + 1 if anchor is not None else None
        out.append((line or 0, _problem(_where(filename, line), parts, message)))
    return out


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def _workflow_set_errors(raw: object) -> list[dict[str, Any]]:
    """Problems of the workflows taken together (duplicate names), located at the later one.
    Works on the raw list so that it is reported alongside the other problems."""
    first: dict[str, Workflow] = {}
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        try:
            wf = Workflow.model_validate(item)
        except ValidationError:
            continue  # reported by the validation of the whole config
        if wf.name not in first:
            first[wf.name] = wf
            continue
        for message in check_workflow_names([first[wf.name], wf]):
            loc = ("workflows", i, "name")
            errors.append({"type": "value_error", "loc": loc, "msg": message, "input": wf.name})
    return errors


def parse_config_text(
    text: str,
    filename: str,
    env: Mapping[str, str] | None = None,
    *,
    base_dir: Path | None = None,
) -> Config:
    """Parse and validate YAML ``text``; ``filename`` is only used in messages.

    Applies the environment overrides (``env`` defaults to ``os.environ``). A relative
    ``storage.path`` from the file is resolved against ``base_dir`` (default: the working
    directory). Raises :class:`ConfigError` listing every problem, sorted by line.
    """
    environ = os.environ if env is None else env
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        problems = _duplicate_keys(root, filename)
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_yaml_problem(exc, filename)) from None
    except yaml.YAMLError as exc:  # e.g. a reader error (bad control character)
        raise ConfigError(f"{filename}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()

    if data is None:
        data = {}
    if not isinstance(data, dict):
        line = root.start_mark.line + 1 if root is not None else None
        raise ConfigError(
            f"{_where(filename, line)}: the top level must be a mapping of keys, "
            f"got {_describe(data)}"
        )
    data = dict(data)
    errors: list[dict[str, Any]] = []
    if "source" in data:  # a real field, but not one the file may set
        errors.append({"type": "extra_forbidden", "loc": ("source",), "msg": "", "input": None})
        del data["source"]
    from_env = _apply_env(data, environ)
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        errors.extend(dict(e) for e in exc.errors(include_url=False))
    errors.extend(_workflow_set_errors(data.get("workflows")))
    problems += _format_errors(errors, root, filename, from_env)
    if problems or config is None:
        raise ConfigError([msg for _line, msg in sorted(problems, key=lambda p: p[0])])

    path = config.storage.path
    if path is not None and not path.expanduser().is_absolute():
        resolved = (base_dir or Path.cwd()) / path.expanduser()
        storage = config.storage.model_copy(update={"path": resolved})
        config = config.model_copy(update={"storage": storage})
    return config


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load the config file at ``path``.

    ``path`` None means ``$INSTASET_CONFIG`` when set (then it must exist), else
    :func:`~instaset.paths.default_config_path`; a missing file at the default location
    gives the defaults plus env overrides. An explicitly given file that is missing or
    unreadable is a :class:`ConfigError` naming it. ``Config.source`` is the file read, or None.
    """
    environ = os.environ if env is None else env
    from_env = environ.get(CONFIG_ENV, "")
    explicit = path is not None or bool(from_env)
    if path is None:
        path = Path(from_env) if from_env else default_config_path(environ)
    path = path.expanduser()
    if not path.exists() and not explicit:
        return parse_config_text("", str(path), environ)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{path}: cannot read config file: {reason}") from None
    config = parse_config_text(text, str(path), environ, base_dir=path.absolute().parent)
    return config.model_copy(update={"source": path.absolute()})


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``config.yaml``, for editors and ``config schema``."""
    schema = Config.model_json_schema(mode="validation")
    schema["title"] = "instaset config.yaml"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def config_to_json(config: Config) -> dict[str, Any]:
    """The effective config as JSON-ready data: secrets as ``"***"``, durations as ``"12h"``."""
    data = config.model_dump(mode="json", by_alias=True)
    # unset workflow options are noise here; the file's own spelling is what people wrote
    data["workflows"] = [
        wf.model_dump(mode="json", by_alias=True, exclude_none=True) for wf in config.workflows
    ]
    data["source"] = str(config.source) if config.source is not None else None
    return data


_INIT_TEMPLATE = """\
# instaset configuration. Every key is optional; see config.example.yaml in the instaset
# repository for all of them, or run `instaset config schema` for the JSON Schema.
# Secrets belong in the environment (INSTASET_APP_SECRET, INSTASET_VERIFY_TOKEN, ...) or in
# the secret store (`instaset connect`), not in this file.

instagram:
  app_id: ""                       # your Instagram app id (Meta App Dashboard)
  # app_secret: ""                 # prefer env INSTASET_APP_SECRET or the secret store
  # meta_app_secret: ""            # optional second secret accepted for webhook signatures
  # verify_token: ""               # prefer env INSTASET_VERIFY_TOKEN
  # redirect_uri: "https://example.com/oauth/callback"

server:
  host: "127.0.0.1"
  port: 8787
  # public_url: "https://example.com"   # how Meta and browsers reach this server

# storage:
#   path: null                     # default: instaset.db in the data directory

ai:
  model: "gemini-3.8-flash"        # the key comes from env GEMINI_API_KEY
  persona: ""                      # who you are and how you talk, in a few sentences
  facts: []                        # things the assistant may say (prices, links, hours)
  examples: []                     # - {message: "...", reply: "..."}

handoff:
  pause_for: 12h                   # automation pauses this long after you reply yourself

retention:
  days: 90                         # `instaset purge` deletes data older than this

timezone: "UTC"                    # IANA name, e.g. "Europe/Berlin"

workflows: []                      # see config.example.yaml
"""


def render_init_config() -> str:
    """The commented config ``instaset init`` writes. It contains no secret: every secret key
    is commented out. It loads to the defaults."""
    return _INIT_TEMPLATE


__all__ = [
    "CONFIG_ENV",
    "ENV_OVERRIDES",
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
    "StorageConfig",
    "WorkerConfig",
    "config_json_schema",
    "config_to_json",
    "format_duration",
    "load_config",
    "parse_config_text",
    "parse_duration",
    "render_init_config",
]
