"""Loading ``config.yaml`` with ``file:line:column`` errors (worded by
:mod:`instaset.config_errors`); the models are in :mod:`instaset.config_models` and
re-exported here, so ``from instaset.config import Config`` (and every other model,
:func:`parse_duration`, :data:`Duration`...) keeps working.

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

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic.json_schema import GenerateJsonSchema

from instaset.config_errors import describe, format_errors, without_echoes
from instaset.config_models import (
    DURATION_PATTERN,
    SECTIONS,
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
    VALIDATION_CONTEXT,
    ConfigLoader,
    at,
    duplicate_keys,
    reader_problem,
    yaml_problem,
)
from instaset.engine.model import Workflow, check_workflow_names
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
# Public API
# ---------------------------------------------------------------------------------------------


def _workflow_set_errors(raw: object) -> list[dict[str, Any]]:
    """Problems of the workflows taken together (duplicate names), located at the later one.
    Works on the raw list so that it is reported alongside the other problems."""
    first: dict[str, Workflow] = {}
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        try:
            wf = Workflow.model_validate(item, context=VALIDATION_CONTEXT)
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
            f"{where}: the top level must be a mapping of keys, got {describe(data)}"
        )
    data = dict(data)
    errors: list[dict[str, Any]] = []
    if "source" in data:  # a real field, but not one the file may set
        errors.append({"type": "extra_forbidden", "loc": ("source",), "msg": "", "input": None})
        del data["source"]
    from_env = _apply_env(data, environ)
    config: Config | None = None
    try:
        config = Config.model_validate(data, context=VALIDATION_CONTEXT)
    except ValidationError as exc:
        errors.extend(dict(e) for e in exc.errors(include_url=False))
    errors.extend(_workflow_set_errors(data.get("workflows")))
    problems += format_errors(without_echoes(errors), root, filename, from_env)
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
    # Config's own before-validator reads a section left empty (null) as its defaults; a
    # model-level validator has no input type to publish, so the schema says it here.
    properties = schema["properties"]
    for name in (*SECTIONS, "workflows"):
        prop = properties[name]
        shape = {k: v for k, v in prop.items() if k not in ("default", "description", "title")}
        meta = {k: v for k, v in prop.items() if k not in shape}
        properties[name] = {**meta, "anyOf": [shape, {"type": "null"}]}
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
