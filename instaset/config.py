"""Loading ``config.yaml`` with ``file:line:column`` errors; the models are in
:mod:`instaset.config_models` and re-exported here, so ``from instaset.config import Config``
(and every other model, :func:`parse_duration`, :data:`Duration`...) keeps working.

Every model is strict about keys (``extra="forbid"``): a typo in our own YAML is an error that
names the file, the line, the dotted path and a suggestion, e.g.::

    config.yaml:14:7: workflows[2].trigger: unknown key 'keywrods' (did you mean 'keywords'?)

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
working directory when it comes from ``INSTASET_DB``). Secrets print as ``**********`` and
serialise to JSON as ``"***"``, so a JSON dump of a config never contains one.
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import GenerateJsonSchema

from instaset.config_models import (
    DURATION_PATTERN,
    WEB_URL_PATTERN,
    AIConfig,
    AIExample,
    BookingConfig,
    Config,
    Duration,
    HandoffConfig,
    InstagramConfig,
    LeadRule,
    LeadsConfig,
    NotifyConfig,
    RateLimitConfig,
    RetentionConfig,
    SandboxConfig,
    Secret,
    SecretsConfig,
    ServerConfig,
    SmtpConfig,
    StorageConfig,
    WorkerConfig,
    format_duration,
    parse_duration,
)
from instaset.config_storage import CONFIG_ENV, DB_ENV, config_file
from instaset.config_yaml import (
    ConfigLoader,
    at,
    duplicate_keys,
    locate,
    problem,
    reader_problem,
    yaml_problem,
)
from instaset.engine.model import (
    NAME_PATTERN,
    URL_OR_LINK_PATTERN,
    URL_PATTERN,
    Workflow,
    check_workflow_names,
)
from instaset.engine.values import BARE_CLOCK_NUMBERS, YamlWord, yaml_bool
from instaset.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Environment overrides
# ---------------------------------------------------------------------------------------------

ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "INSTASET_APP_SECRET": ("instagram", "app_secret"),
    "INSTASET_META_APP_SECRET": ("instagram", "meta_app_secret"),
    "INSTASET_VERIFY_TOKEN": ("instagram", "verify_token"),
    DB_ENV: ("storage", "path"),
    "INSTASET_HOST": ("server", "host"),
    "INSTASET_PORT": ("server", "port"),
}
"""Environment variable -> (section, key) it overrides."""



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
        if var == DB_ENV:
            value = str(Path(value).expanduser().absolute())
        data[section] = {**current, key: value}
        applied[(section, key)] = var
    return applied


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
            model.model_validate({key: True}, context=_CONTEXT)
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
            return (f"{_describe(value)} in quotes is text, not true: "
                    f"write '{field}: true' without quotes")
        return f"{_describe(value)} is not allowed here: write '{field}: true' or remove the line"
    if truth is not None:
        switches = [_field(m, "enabled") for m in _models_at(loc)]
        if any(f is not None and f.annotation is bool for f in switches):
            state = "on" if truth else "off"
            return (f"must be a mapping of keys, got {_describe(value)} (to turn {field} "
                    f"{state}, write 'enabled: {_describe(value)}' under '{field}:')")
    return None


def _describe(value: Any) -> str:
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


def _without_echoes(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
    got = _describe(value)
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


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


_CONTEXT = {BARE_CLOCK_NUMBERS: False}
"""Validation context of a config file: :class:`ConfigLoader` keeps ``18:00`` a string, so
an int where a time of day goes is a bare number (``from: 9``), refused with a hint."""


def _workflow_set_errors(raw: object) -> list[dict[str, Any]]:
    """Problems of the workflows taken together (duplicate names), located at the later one.
    Works on the raw list so that it is reported alongside the other problems."""
    first: dict[str, Workflow] = {}
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        try:
            wf = Workflow.model_validate(item, context=_CONTEXT)
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
    try:
        loader = ConfigLoader(text)
    except yaml.reader.ReaderError as exc:  # checked up front, for the whole text
        raise ConfigError(reader_problem(exc, text, filename)) from None
    try:
        root = loader.get_single_node()
        problems = duplicate_keys(root, filename)
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(yaml_problem(exc, filename)) from None
    except yaml.reader.ReaderError as exc:
        raise ConfigError(reader_problem(exc, text, filename)) from None
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as exc:
        raise ConfigError(f"{filename}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()

    if data is None:
        data = {}
    if not isinstance(data, dict):
        _line, where = at(filename, root)
        raise ConfigError(
            f"{where}: the top level must be a mapping of keys, got {_describe(data)}"
        )
    data = dict(data)
    errors: list[dict[str, Any]] = []
    if "source" in data:  # a real field, but not one the file may set
        errors.append({"type": "extra_forbidden", "loc": ("source",), "msg": "", "input": None})
        del data["source"]
    from_env = _apply_env(data, environ)
    config: Config | None = None
    try:
        config = Config.model_validate(data, context=_CONTEXT)
    except ValidationError as exc:
        errors.extend(dict(e) for e in exc.errors(include_url=False))
    errors.extend(_workflow_set_errors(data.get("workflows")))
    problems += _format_errors(_without_echoes(errors), root, filename, from_env)
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
    path, explicit = config_file(path, environ)
    if not path.exists() and not explicit:
        return parse_config_text("", str(path), environ)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as exc:
        # Where the editor shows it, not a byte offset.
        before = exc.object[:exc.start]
        line = before.count(b"\n") + 1
        column = len(before.rsplit(b"\n", 1)[-1].decode("utf-8", "replace")) + 1
        raise ConfigError(
            f"{path}:{line}:{column}: not UTF-8 (byte 0x{exc.object[exc.start]:02x}); save the"
            " file as UTF-8") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"{path}: cannot read config file: {reason}") from None
    config = parse_config_text(text, str(path), environ, base_dir=path.absolute().parent)
    return config.model_copy(update={"source": path.absolute()})


class _Schema(GenerateJsonSchema):
    def encode_default(self, dft: Any) -> Any:
        # pydantic writes a timedelta default as ISO 8601 ("PT12H"), which the config's own
        # duration pattern refuses: an editor inserting it would write an invalid config.
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``config.yaml``, for editors and ``config schema``."""
    schema = Config.model_json_schema(mode="validation", schema_generator=_Schema)
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
    "DURATION_PATTERN",
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
    "SmtpConfig",
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
