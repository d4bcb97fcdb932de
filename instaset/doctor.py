"""``instaset doctor``: check the setup and say what to fix.

Contract: :func:`run_checks` returns one :class:`Check` per thing looked at, each ``ok``,
``warn``, ``fail`` or ``skip``, with the fix and a pointer into the README for anything not
ok. ``doctor`` exits 1 when any check fails (warnings do not). Network checks (token and
subscriptions at Meta, the public URL reaching ``GET /webhook``) are skipped, with a note,
when there is no token or with ``offline``. No check prints a token or a secret.

Secrets are looked for where ``serve`` looks (:func:`instaset.secrets.app_secrets`): the app
secret may be in the config/environment or in the secret store, and a secret store that
cannot be opened or read (no OS keyring, a secrets file others can read) is a failed
"secret store" check with the fix, not an exception.
"""

from __future__ import annotations

import asyncio
import json
import secrets as pysecrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from instaset import tokens as tokens_mod
from instaset.catchup import doctor_checks as catchup_checks
from instaset.config import Config, load_config
from instaset.doctor_notify import check_notifications, redact_error
from instaset.errors import (
    ConfigError,
    ForeignDatabaseError,
    GraphError,
    InstasetError,
    SecretsError,
    TokenInvalid,
    Transient,
)
from instaset.graph import GraphClient
from instaset.inbox import iso_utc
from instaset.paths import not_a_directory
from instaset.retention import DAY, daemon_lock
from instaset.secrets import FileSecrets, SecretStore, app_secrets, open_secrets
from instaset.store import history
from instaset.store import jobs as jobstore
from instaset.store.db import Database, open_database
from instaset.store.migrate import migrations
from instaset.timefmt import human_duration
from instaset.tokens import TokenProvider

README = "docs/setup.md"
REQUIRED_FIELDS = ("messages",)
RECOMMENDED_FIELDS = ("comments", "message_reactions", "messaging_postbacks", "messaging_seen")
EXPIRY_WARN = 7 * DAY
BACKLOG_WARN = 300.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    message: str
    fix: str | None = None
    ref: str | None = None  # README section, e.g. "README.md#setup-meta-app"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _ref(anchor: str) -> str:
    return f"{README}#{anchor}"


def check_config(path: Path | None) -> tuple[Config | None, Check]:
    try:
        config = load_config(path)
    except ConfigError as exc:
        shown = "; ".join(exc.problems[:5]) + (" ..." if len(exc.problems) > 5 else "")
        return None, Check("config", "fail", shown, "fix the lines named above, then run "
                           "`instaset workflows validate`", _ref("configuration"))
    where = str(config.source) if config.source else "built-in defaults (no config file)"
    return config, Check("config", "ok", f"{where}: {len(config.workflows)} workflows")


def _store_fix(store: SecretStore | None, exc: Exception) -> str:
    if store is None or store.name == "keyring":  # the fix `instaset connect --token` prints
        return ("unlock the keyring, or set `secrets.backend: file` in the config (then run "
                "`instaset connect` again: tokens do not move between backends)")
    if isinstance(store, FileSecrets) and isinstance(exc, OSError):
        return f"make {store.path.parent} a directory this user can read and write"
    return "fix the secrets file as said above (a JSON object, mode 0600)"


def check_secret_store(config: Config, store: SecretStore | None = None
                       ) -> tuple[list[bytes], Check]:
    """Read the app secrets the way ``serve`` does (:func:`instaset.secrets.app_secrets`:
    config and environment first, then the secret store ``secrets.backend`` names; ``store``
    overrides it). Returns them and a "secret store" check, failed when the store cannot be
    opened or read (a keyring that does not work, a secrets file others can read...): then
    only the config's secrets are returned. Blocking (keyring): call it in a thread."""
    try:
        if store is None:
            store = open_secrets(config)
        found = app_secrets(config, store)
    except (SecretsError, OSError) as exc:
        message = str(exc) if isinstance(exc, SecretsError) else _os_error(exc)
        return list(config.instagram.webhook_secrets()), Check(
            "secret store", "fail", f"secrets.backend {config.secrets.backend}: {message}",
            _store_fix(store, exc), _ref("configuration"))
    where = (f"file {store.path}" if isinstance(store, FileSecrets)
             else "OS keyring, service instaset" if store.name == "keyring" else store.name)
    return found, Check("secret store", "ok", f"{where} (secrets.backend: "
                        f"{config.secrets.backend})")


def _os_error(exc: OSError) -> str:
    what = exc.strerror or type(exc).__name__
    return f"{what}: {exc.filename}" if exc.filename is not None else what


def check_secrets(config: Config, store: SecretStore | None = None) -> list[Check]:
    """The secret store, the app secret (config, environment or secret store, as ``serve``
    finds it) and the verify token. Blocking (keyring): call it in a thread."""
    found, store_check = check_secret_store(config, store)
    out: list[Check] = [store_check]
    ig = config.instagram
    if found:
        n = len(found)
        stored = n - len(ig.webhook_secrets())
        where = f" ({stored} in the secret store)" if stored else ""
        out.append(Check("app secret", "ok",
                         f"{n} webhook secret{'s' if n > 1 else ''} set{where}"))
    else:
        unread = store_check.status == "fail"
        out.append(Check(
            "app secret", "fail",
            "no app secret" + (" in the config, and the secret store cannot be read"
                               if unread else "") + ": every webhook will be refused",
            "set INSTASET_APP_SECRET (or instagram.app_secret in the config) to the Instagram "
            "app secret from the Meta App Dashboard, or put it in the secret store under the "
            "key `app_secret` (OS keyring service `instaset`, or secrets.json in the data "
            "directory with `secrets.backend: file`)", _ref("setup-meta-app")))
    if ig.verify_token is not None and ig.verify_token.get_secret_value():
        out.append(Check("verify token", "ok", "set"))
    else:
        out.append(Check("verify token", "fail", "no verify token: Meta cannot verify the "
                         "webhook URL", "set INSTASET_VERIFY_TOKEN (or instagram.verify_token)"
                         " and enter the same value in the App Dashboard",
                         _ref("setup-meta-app")))
    return out


async def check_database(db: Database) -> list[Check]:
    out: list[Check] = []
    rows = await db.fetchall("PRAGMA integrity_check")
    problems = [str(r[0]) for r in rows if str(r[0]) != "ok"]
    if problems:
        out.append(Check("database integrity", "fail", "; ".join(problems[:3]),
                         "stop the daemon, back up the file and restore the last good backup",
                         _ref("backups")))
    else:
        out.append(Check("database integrity", "ok", f"{db.path}"))
    version, known = await db.schema_version(), len(migrations())
    out.append(Check("schema", "ok" if version == known else "fail",
                     f"version {version} (this instaset: {known})",
                     None if version == known else "upgrade instaset", None))
    mode = await db.fetchone("PRAGMA journal_mode")
    wal = mode is not None and str(mode[0]).lower() == "wal"
    out.append(Check("journal", "ok" if wal else "warn", f"journal_mode={mode[0] if mode else '?'}",
                     None if wal else "the file system may not support WAL (network shares "
                     "do not): keep the database on a local disk", _ref("configuration")))
    return out


async def check_queue(db: Database, now: float, daemon_running: bool) -> list[Check]:
    out: list[Check] = []
    counts = await jobstore.counts_by_state(db)
    overdue = await db.fetchone(
        "SELECT count(*) FROM jobs WHERE state = 'ready' AND run_at < ?", (now - BACKLOG_WARN,))
    late = int(overdue[0]) if overdue else 0
    # Events ingest acknowledged under load and had not moved into events when it stopped
    # (or died): no job yet; the next start moves them.
    staged = await db.fetchone(
        "SELECT count(*), coalesce(sum(received_at < ?), 0) FROM staged_events",
        (now - BACKLOG_WARN,))
    late += int(staged[1]) if staged else 0
    status = "ok"
    msg = f"{counts['ready']} ready, {counts['running']} running, {counts['dead']} dead"
    if staged and staged[0]:
        msg += f", {staged[0]} events staged by ingest"
    fix = None
    if late and not daemon_running:
        status, fix = "warn", "start the daemon: `instaset serve` (or its systemd unit)"
        msg += f"; {late} jobs or events overdue and no daemon is running"
    elif late:
        status, fix = "warn", "the daemon is behind: look at its log for errors or throttling"
        msg += f"; {late} jobs or events overdue by more than {int(BACKLOG_WARN)} s"
    out.append(Check("queue", status, msg, fix, _ref("troubleshooting") if fix else None))
    if counts["dead"]:
        last = await db.fetchone("SELECT kind, last_error FROM jobs WHERE state = 'dead'"
                                 " ORDER BY finished_at DESC LIMIT 1")
        detail = (f"; latest: {last['kind']}: {redact_error(last['last_error'] or '')[:120]}"
                  if last else "")
        out.append(Check("dead letters", "warn", f"{counts['dead']} jobs gave up{detail}",
                         "fix the cause above; dead jobs are kept for inspection and removed "
                         "by `instaset purge` after the retention period",
                         _ref("troubleshooting")))
    out.append(Check("daemon", "ok" if daemon_running else "warn",
                     "running" if daemon_running else "not running on this database",
                     None if daemon_running else "start it: `instaset serve`",
                     None if daemon_running else _ref("running-it")))
    return out


async def check_accounts(
    db: Database, config: Config, tokens: TokenProvider, now: float, *, offline: bool,
    graph: GraphClient | None,
) -> list[Check]:
    out: list[Check] = []
    accounts = await history.list_accounts(db)
    if not accounts:
        return [Check("accounts", "warn", "no Instagram account connected",
                      "run `instaset connect` (or `instaset serve --sandbox` to try it out)",
                      _ref("connect-an-account"))]
    for a in accounts:
        name = f"@{a['username']}" if a["username"] else a["id"]
        if a["sandbox"]:
            out.append(Check(f"account {name}", "ok", "sandbox account (no Meta checks)"))
            continue
        if a["state"] == "disconnected":
            # Disconnected on purpose (`disconnect`, or the app removed at Meta): its
            # history stays for `export`; nothing is broken, so doctor does not fail.
            out.append(Check(f"account {name}", "warn", "disconnected: no automation; its "
                             "history is kept", "`instaset connect` to use it again, or "
                             "`instaset disconnect --purge` to erase it",
                             _ref("connect-an-account")))
            continue
        if a["state"] != "connected":
            out.append(Check(f"account {name}", "fail", f"state {a['state']}",
                             "run `instaset connect` again", _ref("connect-an-account")))
            continue
        try:
            token = await tokens.token(a["id"])
        except SecretsError as exc:  # already reported by the "secret store" check
            out.append(Check(f"token {name}", "fail", str(exc), "fix the secret store (see "
                             "the secret store check), then run `instaset connect` if the "
                             "token is gone", _ref("connect-an-account")))
            continue
        if not token:
            out.append(Check(f"token {name}", "fail", "no access token stored (or the secret "
                             "store cannot be read)", "run `instaset connect`; on a server "
                             "without a keyring set secrets.backend: file",
                             _ref("connect-an-account")))
        else:
            out.append(_expiry(name, a["token_expires_at"], now))
        stored = json.loads(a["subscribed_fields"] or "[]")
        if token and not offline and graph is not None:
            out.append(await _subscriptions(graph, a["id"], name, token))
        else:
            why = "offline" if offline else "no token"
            missing = [f for f in REQUIRED_FIELDS if f not in stored]
            out.append(Check(
                f"subscriptions {name}", "skip",
                f"not checked at Meta ({why}); last known: {', '.join(stored) or 'none'}",
                "run `instaset connect` to subscribe" if missing else None,
                _ref("connect-an-account") if missing else None))
    return out


def _expiry(name: str, expires_at: float | None, now: float) -> Check:
    if expires_at is None:
        return Check(f"token {name}", "ok", "stored; no expiry recorded")
    left = expires_at - now
    if left <= 0:
        return Check(f"token {name}", "fail", f"expired at {iso_utc(expires_at)}",
                     "run `instaset connect` again", _ref("connect-an-account"))
    if left < EXPIRY_WARN:
        return Check(f"token {name}", "warn", f"expires in {human_duration(left)}",
                     "the daemon refreshes it while it runs; if it keeps failing, run "
                     "`instaset connect`", _ref("connect-an-account"))
    return Check(f"token {name}", "ok", f"valid until {iso_utc(expires_at)}")


async def _subscriptions(graph: GraphClient, account_id: str, name: str, token: str) -> Check:
    try:
        fields = await graph.subscribed_fields(account_id, token=token)
    except TokenInvalid as exc:
        return Check(f"subscriptions {name}", "fail", f"Meta rejected the token: {exc.message}",
                     "run `instaset connect` again", _ref("connect-an-account"))
    except Transient as exc:
        return Check(f"subscriptions {name}", "warn", f"cannot reach Meta: {exc.message}",
                     "check the network and run doctor again", None)
    except GraphError as exc:
        return Check(f"subscriptions {name}", "fail", exc.describe(),
                     "check the app's permissions in the Meta App Dashboard",
                     _ref("setup-meta-app"))
    missing = [f for f in REQUIRED_FIELDS if f not in fields]
    if missing:
        return Check(f"subscriptions {name}", "fail", f"not subscribed to {', '.join(missing)}"
                     f" (subscribed: {', '.join(fields) or 'nothing'})",
                     "run `instaset connect` to subscribe again", _ref("connect-an-account"))
    absent = [f for f in RECOMMENDED_FIELDS if f not in fields]
    if absent:
        return Check(f"subscriptions {name}", "warn", f"subscribed to {', '.join(fields)}; "
                     f"missing {', '.join(absent)}", "run `instaset connect` to subscribe to "
                     "every field", _ref("connect-an-account"))
    return Check(f"subscriptions {name}", "ok", ", ".join(fields))


async def check_public_url(config: Config, session: aiohttp.ClientSession | None,
                           *, offline: bool) -> Check:
    url = config.server.public_url
    verify = config.instagram.verify_token
    if not url:
        return Check("public URL", "warn", "server.public_url is not set: Meta cannot reach "
                     "this server", "put the daemon behind HTTPS (e.g. a reverse proxy or a "
                     "tunnel) and set server.public_url", _ref("public-url"))
    if offline or session is None:
        return Check("public URL", "skip", f"{url} not checked (offline)")
    if verify is None or not verify.get_secret_value():
        return Check("public URL", "skip", f"{url} not checked (no verify token)")
    challenge = pysecrets.token_hex(8)
    params = {"hub.mode": "subscribe", "hub.verify_token": verify.get_secret_value(),
              "hub.challenge": challenge}
    target = url.rstrip("/") + "/webhook"
    try:
        async with session.get(target, params=params,
                               timeout=aiohttp.ClientTimeout(total=10)) as resp:
            body = (await resp.text())[:200]
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Check("public URL", "fail", f"{target} is unreachable ({type(exc).__name__})",
                     "start the daemon and check the proxy or tunnel in front of it",
                     _ref("public-url"))
    if status == 200 and body.strip() == challenge:
        return Check("public URL", "ok", f"{target} answers Meta's verification")
    return Check("public URL", "fail", f"{target} answered HTTP {status} to the verification",
                 "make sure the URL reaches `instaset serve` and both use the same verify "
                 "token", _ref("public-url"))


async def check_retention(db: Database, config: Config, now: float) -> Check:
    row = await db.fetchone("SELECT min(created_at) FROM messages")
    oldest = row[0] if row else None
    days = config.retention.days
    if oldest is None or now - oldest <= (days + 2) * DAY:
        return Check("retention", "ok", f"{days} days")
    return Check("retention", "warn", f"messages from {iso_utc(oldest)} are older than "
                 f"retention.days={days}", "run `instaset purge` (the daemon applies it daily)",
                 _ref("retention"))


async def run_checks(
    config_path: Path | None, *, offline: bool = False, clock: Callable[[], float] = time.time,
    tokens: TokenProvider | None = None,
) -> list[Check]:
    """Every check, in the order they are shown."""
    now = clock()
    config, first = check_config(config_path)
    checks = [first]
    if config is None:
        return [*checks, Check("everything else", "skip", "needs a valid config")]
    checks += await asyncio.to_thread(check_secrets, config)
    db_path = config.storage.db_path()
    blocked = not_a_directory(db_path.parent)
    if blocked is not None:  # e.g. INSTASET_HOME names a file: nothing can be created there
        checks.append(Check("database", "fail", f"{db_path} cannot be created: {blocked}",
                            "point INSTASET_HOME (or storage.path) at a directory, or move "
                            "the file out of the way", _ref("configuration")))
        db = None
    elif db_path.is_dir():
        checks.append(Check("database", "fail", f"{db_path} is a directory",
                            "storage.path names the database file itself: point it at a "
                            f"file, e.g. {db_path / 'instaset.db'}", _ref("configuration")))
        db = None
    elif not db_path.exists():
        checks.append(Check("database", "warn", f"{db_path} does not exist yet",
                            "it is created by `instaset serve` or `instaset connect`",
                            _ref("running-it")))
        db = None
    else:
        try:
            db = await open_database(db_path, synchronous=config.storage.synchronous)
        except ForeignDatabaseError as exc:
            return [*checks, Check("database", "fail", exc.problem, exc.fix,
                                   _ref("doctor-database"))]
        except InstasetError as exc:
            return [*checks, Check("database", "fail", str(exc), "restore a backup or upgrade "
                                   "instaset", _ref("backups"))]
    async with aiohttp.ClientSession() as session:
        try:
            if db is not None:
                with daemon_lock(db_path) as free:
                    running = not free
                checks += await check_database(db)
                checks += await check_queue(db, now, running)
                provider = tokens if tokens is not None else tokens_mod.default_tokens(config)
                ig = config.instagram
                graph = GraphClient(session, graph_url=ig.graph_url, api_version=ig.api_version,
                                    api_url=ig.api_url, timeout=10.0)
                checks += await check_accounts(db, config, provider, now, offline=offline,
                                               graph=graph)
                checks.append(await check_retention(db, config, now))
                checks += await check_notifications(db, now, config=config.notify)
                checks += await catchup_checks(db)
            checks.append(await check_public_url(config, session, offline=offline))
        finally:
            if db is not None:
                await db.close()
    return checks


def failed(checks: list[Check]) -> bool:
    return any(c.status == "fail" for c in checks)
