"""Scalar value types of the workflow language: durations, times of day, weekdays, and the
YAML shorthands (a string where a list is expected, ``true`` for an empty block, YAML 1.1
booleans in text positions). Also the field-name and template checks shared by the models,
and :class:`FrozenModel`, their base."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    WithJsonSchema,
)

from instaset import timefmt
from instaset.engine.templating import placeholders

__all__ = [
    "BARE_CLOCK_NUMBERS",
    "MAX_DURATION",
    "ClockTime",
    "Days",
    "Duration",
    "StrList",
    "YamlStr",
    "as_tuple",
    "check_field_name",
    "check_not_blank",
    "check_template",
    "format_clock",
    "parse_clock",
    "parse_days",
    "parse_duration",
    "true_is_empty",
    "true_or_block",
    "unbool",
]


class FrozenModel(BaseModel):
    """The base of the workflow language's models: an unknown key is an error (typos are
    caught), and a model is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


MAX_DURATION = 3650 * 86400
"""The longest delay, pause or cooldown a workflow may have (10 years, in seconds): longer
ones are typos, and would overflow the dates computed from them."""

_DURATION_HINT = "use 30s, 15m, 12h, 7d or 1h30m"
# The grammar's own pattern (the one the JSON Schema publishes), used only to tell why
# timefmt refused a string: a well-formed one can only have been over its 100-year cap.
_WELL_FORMED = re.compile(timefmt.DURATION_PATTERN, re.ASCII)
_SECOND = timedelta(seconds=1)


def _shown(value: object) -> str:
    """The value as written, cut short when it is a wall of digits."""
    text = str(value) if isinstance(value, YamlWord) else repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"


def _not_positive(value: object) -> str:
    return f"a workflow delay, pause or cooldown must be longer than zero (got {_shown(value)})"


def _too_long(value: object) -> str:
    return f"{_shown(value)} is too long: at most 10 years (3650d)"


def _refusal(value: object) -> str:
    """Why :func:`instaset.timefmt.parse_duration` refused ``value``, in workflow words."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and math.isnan(value):
            return f"{_shown(value)} is not a duration ({_DURATION_HINT})"
        return _not_positive(value) if value < 0 else _too_long(value)
    if isinstance(value, timedelta):
        return _not_positive(value) if value < timedelta(0) else _too_long(value)
    if isinstance(value, str) and _WELL_FORMED.fullmatch(value.strip().lower()):
        return _too_long(value)  # the grammar has no sign and no NaN: only the cap is left
    return f"{_shown(value)} is not a duration ({_DURATION_HINT})"


def parse_duration(value: object) -> int:
    """A workflow duration (``delay``, ``cooldown``, ``handoff.pause_for``) -> whole seconds
    in ``1..``:data:`MAX_DURATION`.

    The syntax is exactly that of the config's other durations, because the parsing is
    :func:`instaset.timefmt.parse_duration`'s: ``"30s"``, ``"15m"``, ``"1.5h"``, ``"7d"``,
    ``"2w 3d"``, ``"1h30m"``, or seconds (int, float or numeric string); booleans are refused.
    On top of it, a workflow duration must be longer than zero and at most 10 years. A
    fraction of a second is rounded *up* (``"0.5s"`` -> 1, ``"1.2s"`` -> 2), so a positive
    duration never becomes 0; below a microsecond (:class:`timedelta`'s resolution) it is
    zero, and refused. Anything else is a :class:`ValueError` naming the value and saying why.
    """
    try:
        delta = timefmt.parse_duration(value)
    except (ValueError, OverflowError):  # OverflowError: an int beyond float (10**400)
        raise ValueError(_refusal(value)) from None
    if delta <= timedelta(0):
        raise ValueError(_not_positive(value))
    whole, rest = divmod(delta, _SECOND)  # exact integer arithmetic, no float rounding
    seconds = whole + (rest > timedelta(0))
    if seconds > MAX_DURATION:
        raise ValueError(_too_long(value))
    return seconds


Duration = Annotated[
    int,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": timefmt.DURATION_PATTERN},
                {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DURATION},
            ],
            "description": "A duration: '30s', '15m', '1.5h', '7d', '1h30m', or seconds; "
            "longer than zero, at most 10 years (3650d); whole seconds, rounded up.",
            "examples": ["30s", "15m", "12h", "7d"],
        },
        mode="validation",
    ),
]
"""Seconds, written in YAML as ``30s``, ``15m``, ``1.5h``, ``7d`` (or plain seconds): the
grammar of :func:`instaset.timefmt.parse_duration`, whole seconds in 1..10 years."""

_CLOCK_RE = re.compile(r"^(\d{1,2}):(\d{2})$", re.ASCII)
BARE_CLOCK_NUMBERS = "bare_clock_numbers"
"""Validation context key: ``{BARE_CLOCK_NUMBERS: False}`` makes every int a mistake in a
time of day. The config loader sets it, because its YAML keeps ``18:00`` a string, so an int
there can only be a bare number (``9``, ``1800``)."""


def _clock_hint(value: int) -> str:
    if 0 <= value <= 24:
        return f'write "{value:02d}:00" (in quotes)'
    example = "09:00"
    if 100 <= value <= 2400 and value % 100 < 60:  # perhaps 1800 for 18:00
        example = f"{value // 100:02d}:{value % 100:02d}"
    return f'use "HH:MM" in quotes, e.g. "{example}"'


def parse_clock(value: object, *, numbers_are_minutes: bool = True) -> int:
    """``"09:00"`` -> minutes after midnight (0..1440; ``"24:00"`` is the end of the day).

    An int of at least 60 is taken as minutes when ``numbers_are_minutes``, because a YAML 1.1
    loader (``yaml.safe_load``) reads an unquoted ``18:00`` as the base-60 number 1080, exactly
    the minutes after midnight; such a number is never below 60 (``0:30`` stays a string). A
    smaller int is a bare hour (``from: 9``), refused with a hint, as is every int when
    ``numbers_are_minutes`` is false.
    """
    if isinstance(value, bool):
        raise ValueError('expected a time of day such as "09:00"')
    if isinstance(value, int):
        if value < 60 or not numbers_are_minutes:
            raise ValueError(f"{value} is not a time of day: {_clock_hint(value)}")
        minutes = value
    elif isinstance(value, str) and (m := _CLOCK_RE.match(value.strip())):
        hours, mins = int(m.group(1)), int(m.group(2))
        if mins >= 60:
            raise ValueError(f"{value!r} is not a time of day")
        minutes = hours * 60 + mins
    else:
        raise ValueError(f'{value!r} is not a time of day (use "HH:MM", e.g. "09:00")')
    if not 0 <= minutes <= 1440:
        shown = repr(value) if isinstance(value, str) else f"{value} ({format_clock(value)})"
        raise ValueError(f"{shown} is not a time of day between 00:00 and 24:00")
    return minutes


def format_clock(minutes: int) -> str:
    """Minutes after midnight -> ``"09:00"`` (``1440`` -> ``"24:00"``)."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _validate_clock(value: object, info: ValidationInfo) -> int:
    context = info.context if isinstance(info.context, dict) else {}
    return parse_clock(value, numbers_are_minutes=context.get(BARE_CLOCK_NUMBERS, True))


ClockTime = Annotated[
    int,
    BeforeValidator(_validate_clock),
    PlainSerializer(format_clock, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^\d{1,2}:\d{2}$", "examples": ["09:00"]},
                   mode="validation"),
]
"""Minutes after midnight, written ``"09:00"`` in YAML and JSON."""

_DAY_ALIASES = {
    "weekdays": "mon-fri",
    "weekends": "sat-sun",
    "daily": "mon-sun",
    "every day": "mon-sun",
}


_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day(name: str) -> int:
    """A day's number from its name or any abbreviation of at least three letters
    (``wed``, ``weds``, ``wednesday``); ``monkey`` is not Monday."""
    key = name.strip().lower()
    for number, full in enumerate(_DAY_NAMES):
        if len(key) >= 3 and (full.startswith(key) or (key == "weds" and number == 2)):
            return number
    raise ValueError(f"{name!r} is not a day (use mon, tue, wed, thu, fri, sat, sun)")


def parse_days(value: object) -> tuple[int, ...]:
    """``"mon-fri"``, ``[mon, wed, sat-sun]``, ``weekdays``, ``weekends``, ``daily`` ->
    sorted weekday numbers (Monday = 0). Ranges may wrap (``fri-mon``)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ValueError("expected days such as mon-fri or [mon, wed, fri]")
    days: set[int] = set()
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 6:
            days.add(item)
            continue
        if not isinstance(item, str):
            raise ValueError(f"{item!r} is not a day")
        text = _DAY_ALIASES.get(item.strip().lower(), item)
        if "-" in text:
            first, last = (_day(p) for p in text.split("-", 1))
            span = (last - first) % 7
            days.update((first + i) % 7 for i in range(span + 1))
        else:
            days.add(_day(text))
    return tuple(sorted(days))


_DayNumber = Annotated[int, Field(ge=0, le=6)]
# What the YAML may say (the JSON Schema publishes this, not the parsed tuple of numbers).
Days = Annotated[
    tuple[int, ...],
    BeforeValidator(parse_days, json_schema_input_type=str | list[str | _DayNumber]),
]


class YamlWord(str):
    """An unquoted YAML boolean as the creator wrote it (``yes``, ``No``, ``on``, ``OFF``,
    ``true``...): the config loader gives one for each, because YAML 1.1 reads all of them as
    true or false, and only the position tells which was meant. In a text position (a
    keyword, a title, a choice) it is that text: ``keywords: [on]`` is the keyword "on". In a
    yes/no position it is its :attr:`truth`: pydantic reads yes/no/on/off/true/false as
    booleans, and the shorthand validators below ask :func:`yaml_bool`."""

    @property
    def truth(self) -> bool:
        return self.lower() in ("yes", "true", "on")


def yaml_bool(value: object) -> bool | None:
    """True/False for a boolean or a :class:`YamlWord`; None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, YamlWord):
        return value.truth
    return None


def unbool(value: object) -> object:
    """A boolean in a text position (keywords, titles, payloads, choices) as text: a
    :class:`YamlWord` as written (``on`` stays "on"); a boolean given in Python or JSON-like
    data (no text to keep) as ``Yes`` / ``No``."""
    if isinstance(value, YamlWord):
        return str(value)
    if value is True:
        return "Yes"
    if value is False:
        return "No"
    return value


YamlStr = Annotated[str, BeforeValidator(unbool, json_schema_input_type=str | bool)]


def as_tuple(value: object) -> object:
    """A single string where a list is expected becomes a one-item list."""
    if isinstance(value, str | bool):
        return (unbool(value),)
    if isinstance(value, list | tuple):
        return tuple(unbool(v) for v in value)
    return value


def true_is_empty(value: object) -> object:
    """``first_message: true`` (or yes, on) / ``story_mention:`` (null) mean an empty block."""
    if yaml_bool(value) is True:
        return {}
    return value


def true_or_block(block: Any) -> BeforeValidator:
    """The validator of a block that ``true`` (or null) switches on with its defaults
    (:func:`true_is_empty`); the JSON Schema says so, so that an editor accepts
    ``fallback: true`` as the loader does."""
    return BeforeValidator(true_is_empty, json_schema_input_type=Literal[True] | block | None)


def true_only(value: object) -> object:
    """``typing: true`` (or yes, on) is True; anything else is left for the field to refuse."""
    return True if yaml_bool(value) is True else value


StrList = Annotated[
    tuple[str, ...],
    BeforeValidator(as_tuple, json_schema_input_type=str | bool | list[str | bool]),
]
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


def check_field_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(
            f"field name {name!r} must be lowercase letters, digits and _ (e.g. email, plan)"
        )
    return name


def check_not_blank(what: str, text: str | None, todo: str) -> str | None:
    """Refuse a blank ``text`` (empty or only whitespace; None is "not given" and passes).
    Meta refuses a blank message text, title or payload at every send, so the config refuses
    it at load: ``what`` names the key (empty in a field's own validator, whose error is
    located at the key already), ``todo`` says what to write instead. Returns ``text``."""
    if text is not None and not text.strip():
        raise ValueError(f"{what} must not be blank (got {text!r}); {todo}".lstrip())
    return text


_PLACEHOLDER_LIKE_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:\|[^{}]*)?\}")


def check_template(text: str) -> str:
    """Reject ``{Username}``-style placeholders, which would otherwise be sent literally."""
    for m in _PLACEHOLDER_LIKE_RE.finditer(text):
        name = m.group(1)
        if not _NAME_RE.match(name):
            raise ValueError(
                f"placeholder {{{name}}} must be lowercase letters, digits and _ "
                f"(did you mean {{{name.lower()}}}?)"
            )
    for name in placeholders(text):
        check_field_name(name)
    return text
