"""Pydantic's validation errors of a config, in words, located in the YAML: one
``file:line:column: dotted.path: message`` line per problem. Split from
:mod:`instaset.config`, whose :func:`~instaset.config.parse_config_text` collects the errors
and raises them together.

Contract:

- :func:`format_errors` turns each error into ``(line, text)`` (``line`` the sort key): an
  unknown key is located at the key and suggests the closest accepted one (``did you mean
  'keywords'?``), found by walking :class:`~instaset.config_models.Config`'s annotations; a
  missing key is located at the mapping that lacks it; a value that came from an environment
  variable names the variable instead of a line; two failed branches of one union at one
  place make one line (``must be 'any' or a list``).
- :func:`without_echoes` drops errors that only echo a deeper one (a list "too short"
  because its one item failed), which would mislead.
- :func:`describe` says a YAML value as the creator wrote it (``'abc'``, ``a mapping``,
  ``the date 2024-05-01``, an unquoted ``yes`` as written), a string cut to 40
  characters.

Pure: no I/O; the same errors and YAML give the same lines.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from instaset.config_models import WEB_URL_PATTERN, Config
from instaset.config_yaml import VALIDATION_CONTEXT, at, locate, problem
from instaset.engine.model import NAME_PATTERN, URL_OR_LINK_PATTERN, URL_PATTERN
from instaset.engine.values import YamlWord, yaml_bool

__all__ = ["describe", "format_errors", "without_echoes"]


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


def _models_at(loc: Sequence[str | int]) -> list[type[BaseModel]]:
    """The models that may stand at ``loc``, found by walking Config's annotations. Union
    members are narrowed by the tags pydantic puts in ``loc``; if that is not possible, every
    member is returned."""
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
    return [ann for ann in _flatten(current) if _is_model(ann)]


def _allowed_keys(loc: Sequence[str | int]) -> list[str]:
    """The keys the model at ``loc`` accepts (of every union member if it is ambiguous)."""
    keys: list[str] = []
    for model in _models_at(loc):
        keys += [k for k in _field_names(model) if k not in keys]
    return keys


def _accepts_true(loc: Sequence[str | int]) -> bool:
    """Whether ``key: true`` is valid at ``loc`` (``typing: true``, or a block with a
    ``true`` shorthand such as ``handoff: true``), tried on the models that hold the key."""
    if not loc or not isinstance(loc[-1], str):
        return False
    key = loc[-1]
    for model in _models_at(loc[:-1]):
        if _field(model, key) is None:
            continue
        try:
            model.model_validate({key: True}, context=VALIDATION_CONTEXT)
        except ValidationError as exc:
            if any(tuple(e["loc"])[:1] == (key,) for e in exc.errors()):
                continue
        return True  # errors elsewhere (other keys missing) say nothing about this one
    return False


def _flag_problem(error: Mapping[str, Any], field: str | int | None) -> str | None:
    """Words for a yes/no value where the config wants something else, or None.

    - ``typing: false`` (only ``true`` is allowed) and ``handoff: false`` (``true`` is a
      shorthand for a block with its defaults): there is no "off" to write, so say how to
      switch it on and that leaving the line out is how to have it off.
    - ``booking: false`` (a section with an ``enabled`` switch): point at the switch.
    """
    kind, value = error["type"], error.get("input")
    loc: tuple[str | int, ...] = tuple(error["loc"])
    true_only = kind == "literal_error" and (error.get("ctx") or {}).get("expected") == "True"
    mapping = kind in ("model_type", "model_attributes_type", "dict_type")
    if not (true_only or mapping) or not isinstance(field, str):
        return None
    truth = yaml_bool(value)
    quoted_true = (truth is None and isinstance(value, str)
                   and value.strip().lower() in ("true", "yes", "on"))
    if true_only or ((truth is False or quoted_true) and _accepts_true(loc)):
        if quoted_true:
            return (f"{describe(value)} in quotes is text, not true: "
                    f"write '{field}: true' without quotes")
        return f"{describe(value)} is not allowed here: write '{field}: true' or remove the line"
    if truth is not None:
        switches = [_field(m, "enabled") for m in _models_at(loc)]
        if any(f is not None and f.annotation is bool for f in switches):
            state = "on" if truth else "off"
            return (f"must be a mapping of keys, got {describe(value)} (to turn {field} "
                    f"{state}, write 'enabled: {describe(value)}' under '{field}:')")
    return None


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, YamlWord):
        return str(value)  # an unquoted yes/no/on/off/true/false, as written
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
    if isinstance(value, date):  # YAML reads an unquoted 2024-05-01 as a date
        return f"the date {value.isoformat()}"
    return type(value).__name__


# Patterns of the models, said in words.
_PATTERNS = {
    NAME_PATTERN: "must be letters, digits, '.', '_' or '-', starting with a letter or digit"
                  " (no spaces: welcome-message)",
    URL_PATTERN: "must be a web address starting with http:// or https://",
    URL_OR_LINK_PATTERN: "must be a web address (http:// or https://) or {link:NAME}",
    WEB_URL_PATTERN: "must be a web address starting with http:// or https://, no spaces",
}


_ECHO_TYPES = frozenset({"too_short", "literal_error"})
_PYTHON_TAGS = frozenset({"int", "str", "float", "bool", "list", "dict", "tuple"})


def _plain_loc(loc: Sequence[str | int]) -> tuple[str | int, ...]:
    """``loc`` without pydantic's union-branch tags (``literal['any']``,
    ``function-before[...]``, ``int``, a model's class name): the YAML path it points at."""
    return tuple(p for p in loc if not (isinstance(p, str) and (
        "[" in p or p in _PYTHON_TAGS or p[:1].isupper())))


def without_echoes(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The errors without those that only echo a deeper one: a list that is "too short"
    because its one item failed, or the wrong branch of a union (``must be 'any'``) when
    an item of the list branch has its own error. Those misled ("must have at least 1
    item" for a list of one bad item)."""
    paths = [_plain_loc(e["loc"]) for e in errors]
    return [e for e, path in zip(errors, paths, strict=True)
            if e["type"] not in _ECHO_TYPES
            or not any(len(other) > len(path) and other[:len(path)] == path
                       for other in paths)]


def _human(error: Mapping[str, Any], field: str | int | None) -> str:
    kind, msg, value = error["type"], str(error["msg"]), error.get("input")
    got = describe(value)
    flag = _flag_problem(error, field)
    if flag is not None:
        return flag
    if kind == "extra_forbidden":
        return f"unknown key '{field}'"
    if kind == "invalid_key" and isinstance(value, bool):
        # YAML 1.1 reads an unquoted on/off/yes/no as a boolean, keys included.
        return (f"a key reads as {str(value).lower()}: YAML takes an unquoted on, off, yes or "
                "no for true or false; put the key in quotes ('on': ...)")
    if kind == "missing":
        return f"missing required key '{field}'"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping of keys, got {got}"
    if kind == "string_pattern_mismatch":
        pattern = str((error.get("ctx") or {}).get("pattern", ""))
        readable = _PATTERNS.get(pattern)
        if readable is not None:
            return f"{readable}, got {got}"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list, got {got}"
    if kind == "too_short":
        least = (error.get("ctx") or {}).get("min_length", 1)
        return f"must have at least {least} item{'s' if least != 1 else ''}"
    if kind == "too_long":
        most = (error.get("ctx") or {}).get("max_length")
        return f"must have at most {most} items" if most is not None else msg
    if kind == "string_type":
        hint = " (put it in quotes)" if isinstance(value, int | float | date) else ""
        return f"must be a string, got {got}{hint}"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    if msg.startswith("Input should be "):
        rest = msg[len("Input should be ") :]
        if kind.endswith("_parsing"):
            rest = rest.split(", ")[0]
        hint = ""
        if kind in ("enum", "literal_error") and isinstance(value, str):
            options = re.findall(r"'([^']*)'", str((error.get("ctx") or {}).get("expected", "")))
            close = difflib.get_close_matches(value, options, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"must be {rest}, got {got}{hint}"
    return msg[:1].lower() + msg[1:]


def format_errors(
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
            out.append((1 << 30, problem(f"{env_var} (environment)", loc, message)))
            continue
        if error["type"] == "extra_forbidden":
            parts, _node, key_node = locate(root, loc)
            parts = parts[:-1] if parts and parts[-1] == field else parts
            close = difflib.get_close_matches(str(field), _allowed_keys(loc[:-1]), n=1)
            if close:
                message += f" (did you mean '{close[0]}'?)"
            anchor = key_node
        else:
            target = loc[:-1] if error["type"] == "missing" else loc
            parts, anchor, _key = locate(root, target)
        line, where = at(filename, anchor)
        text = problem(where, parts, message)
        head = problem(where, parts, "")
        if out and out[-1][1].startswith(head + "must be ") and message.startswith("must be "):
            # Two branches of one union at the same place ('any' or a list): one line.
            first = out[-1][1][len(head) + len("must be "):].rsplit(", got ", 1)[0]
            text = f"{head}must be {first} or {message[len('must be '):]}"
            out[-1] = (line, text)
            continue
        out.append((line, text))
    return out
