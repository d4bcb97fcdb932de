"""``instaset workflows test`` and ``instaset workflows replay``: dry runs of the workflows.

Neither command sends, stores or enqueues anything. ``test`` decides one synthetic event
(a DM, a quick-reply tap or a comment) with the same engine and settings as the daemon;
``replay`` runs the workflows over the stored history (see :mod:`instaset.replay`) and, with
``--config-candidate``, lists what a changed config would do differently. Both only read
the database, so they work while ``instaset serve`` runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from instaset.cli.app import handle_errors, run_async
from instaset.cli.cmd_config import load_or_exit, workflows_app
from instaset.errors import ConfigError, InstasetError

if TYPE_CHECKING:
    from instaset.config import Config
    from instaset.engine.decide import Decision
    from instaset.engine.state import ConversationState
    from instaset.events import Event
    from instaset.replay import Report
    from instaset.replay_diff import ReplayDiff

# The engine, the replay, the sandbox payload builders, the config and the store are imported
# inside the functions: `instaset --help` must not pay for them (see instaset/cli/app.py).

__all__ = ["workflows_apply", "workflows_replay", "workflows_test"]

DEFAULT_MEDIA = "test-media"


# --- workflows test -----------------------------------------------------------------------


def _parse_at(value: str | None, config: Config) -> float:
    """``--at``: ISO 8601; without an offset it is the creator's local time (``timezone``)."""
    if value is None:
        return time.time()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InstasetError(
            f"--at {value!r} is not a date and time; use ISO 8601, e.g. 2024-06-03T09:30"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=config.tzinfo)
    return moment.timestamp()


async def _lookup(
    config: Config, who: str, account: str | None
) -> tuple[str, str, str | None, ConversationState | None]:
    """(account id, contact id, username, stored state or None) for ``--from``. Reads the
    database only when it already exists (a dry run never creates one)."""
    from instaset.automation import load_state
    from instaset.cli.cmd_accounts import resolve_account
    from instaset.simulate import stable_igsid
    from instaset.store import replay as store
    from instaset.store.db import open_database

    name = who.lstrip("@")
    path = config.storage.db_path()
    if path.exists():
        db = await open_database(path, synchronous=config.storage.synchronous)
        try:
            own: str | None = None  # the account's username
            if account is not None:  # one that does not exist is an error, not a dry run
                account, own = await resolve_account(db, account)
            row = await store.find_contact(db, name, account)
            if row is not None:
                acct, contact = str(row["account_id"]), str(row["id"])
                conv = await store.conversation_row(db, acct, contact)
                state = load_state(conv, acct, contact) if conv is not None else None
                return acct, contact, row["username"] or _state_name(state, name), state
            if account is None:
                accounts = await store.accounts(db)
                if len(accounts) > 1:
                    ids = ", ".join(str(a["id"]) for a in accounts)
                    raise InstasetError(
                        f"several accounts are connected ({ids}); pick one with --account"
                    )
                if accounts:
                    account, own = str(accounts[0]["id"]), accounts[0]["username"]
            if account is not None and own and name.lower() == own.lower():
                # The account itself (its own comment or message): the pipeline ignores
                # what the business sends, and so must the dry run.
                return account, account, own, None
        finally:
            await db.close()
    acct = account or config.sandbox.account_id
    contact = name if name.isdigit() else stable_igsid(name)
    return acct, contact, None if name.isdigit() else name, None


def _state_name(state: ConversationState | None, fallback: str) -> str | None:
    if state is not None and state.username:
        return state.username
    return None if fallback.isdigit() else fallback


@dataclass(frozen=True, slots=True)
class TestKind:
    """What ``workflows test`` simulates besides a plain DM (at most one of these)."""

    comment: bool = False
    media: str | None = None
    reply_to: str | None = None  # a reply to this comment
    live: bool = False
    quick_reply: str | None = None
    story_reply: bool = False
    mention: bool = False
    postback: str | None = None
    referral: str | None = None

    def describe(self) -> str:
        if self.comment:
            where = "a live video" if self.live else (self.media or DEFAULT_MEDIA)
            return (f"reply to comment {self.reply_to} on {where}" if self.reply_to
                    else f"{'live comment' if self.live else 'comment'} on {where}")
        if self.quick_reply:
            return f"quick-reply tap {self.quick_reply!r}"
        if self.postback:
            return f"button tap {self.postback!r}"
        if self.referral:
            return f"ig.me link with ref {self.referral!r}"
        if self.story_reply:
            return "reply to your story"
        return "story mention" if self.mention else "DM"


def _event(text: str, *, account: str, contact: str, username: str | None, kind: TestKind,
           now: float) -> Event:
    """A synthetic, Meta-shaped event parsed by the real parser. Its key is derived from the
    inputs, so the same test picks the same text variant every time."""
    import hashlib

    from instaset.events import parse_webhook
    from instaset.sandbox import build_comment_payload, build_dm_payload

    seed = hashlib.sha256(f"{account}|{contact}|{kind!r}|{text}".encode()).hexdigest()
    ts_ms = int(now * 1000)
    if kind.comment:
        payload = build_comment_payload(
            account, contact, username or contact, text, kind.media or DEFAULT_MEDIA,
            f"test-comment-{seed[:12]}", int(now), parent_id=kind.reply_to,
        )
        if kind.live:
            for entry in payload["entry"]:  # type: ignore[attr-defined]
                for change in entry["changes"]:
                    change["field"] = "live_comments"
        return parse_webhook(payload)[0]
    item: dict[str, object] | None = None
    if kind.postback is not None:
        item = {"postback": {"mid": f"test-mid-{seed[:12]}", "title": text,
                             "payload": kind.postback}}
    elif kind.referral is not None:
        item = {"referral": {"ref": kind.referral, "source": "IGME_SOURCE_LINK",
                             "type": "OPEN_THREAD"}}
    if item is not None:
        payload = {"object": "instagram", "entry": [{"id": account, "time": ts_ms, "messaging": [
            {"sender": {"id": contact}, "recipient": {"id": account}, "timestamp": ts_ms,
             **item}]}]}
        return parse_webhook(payload)[0]
    extras: dict[str, object] = {}
    if kind.quick_reply:
        extras["quick_reply"] = {"payload": kind.quick_reply}
    if kind.story_reply:
        extras["reply_to"] = {"story": {"id": "test-story", "url": _STORY_URL}}
    if kind.mention:
        extras["attachments"] = [{"type": "story_mention", "payload": {"url": _STORY_URL}}]
    payload = build_dm_payload(account, contact, text, f"test-mid-{seed[:12]}", ts_ms,
                               extras=extras)
    return parse_webhook(payload)[0]


_STORY_URL = "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=test-story"


def _test_json(event: Event, text: str, username: str | None, media: str | None,
               comment: bool, stored: bool, d: Decision, fired: bool) -> dict[str, Any]:
    from instaset.replay import iso

    return {
        "event": {
            "kind": event.kind.value,
            "text": text,
            "from": {"id": event.contact_id, "username": username},
            "media_id": (media or DEFAULT_MEDIA) if comment else None,
            "at": iso(event.occurred_at),
        },
        "account_id": event.account_id,
        "state": "stored" if stored else "fresh",
        "matched": d.workflow is not None,
        "workflow": d.workflow,
        "fired": fired,
        "trace": list(d.trace),
        "actions": [a.to_dict() for a in d.actions],
        "sent": False,
    }


@workflows_app.command("test")
@handle_errors
@run_async
async def workflows_test(
    text: str = typer.Argument(..., help="The text of the DM or comment."),
    comment: bool = typer.Option(False, "--comment", help="A comment instead of a DM."),
    media: str | None = typer.Option(
        None, "--media", help="Media id the comment is on (implies --comment)."
    ),
    sender: str = typer.Option(
        "tester", "--from", help="Username or Instagram-scoped id of the sender; a contact "
        "in the database starts from their stored state."
    ),
    quick_reply: str | None = typer.Option(
        None, "--quick-reply", help="Make the DM a tap on a quick reply with this payload."
    ),
    story_reply: bool = typer.Option(False, "--story-reply",
                                     help="A DM that replies to your story."),
    mention: bool = typer.Option(False, "--mention", help="A mention of you in their story."),
    postback: str | None = typer.Option(
        None, "--postback", help="A tap on a button, ice breaker or menu item with this "
        "payload (TEXT is its title)."),
    referral: str | None = typer.Option(
        None, "--referral", help="Opening the thread through an ig.me link with this ref."),
    reply_to: str | None = typer.Option(
        None, "--reply-to", help="A reply to this comment id (implies --comment)."),
    live: bool = typer.Option(False, "--live", help="A comment on a live video."),
    at: str | None = typer.Option(
        None, "--at", help="When it happens (ISO 8601; no offset = your timezone). Default now."
    ),
    account: str | None = typer.Option(None, "--account", help="Account id (several connected)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Dry run: which workflow a DM or comment would fire, why, and its actions. Sends nothing."""
    from instaset.daemon import engine_settings
    from instaset.engine.decide import decide
    from instaset.engine.state import ConversationState
    from instaset.replay import describe_action

    # Bytes that are not UTF-8 on the command line arrive as lone surrogates, which nothing
    # downstream can encode: shown as U+FFFD, as a phone would.
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    config = load_or_exit()
    is_comment = comment or media is not None or reply_to is not None or live
    kinds = [name for name, given in (
        ("--comment/--media/--reply-to/--live", is_comment),
        ("--quick-reply", quick_reply is not None), ("--story-reply", story_reply),
        ("--mention", mention), ("--postback", postback is not None),
        ("--referral", referral is not None)) if given]
    if len(kinds) > 1:
        raise InstasetError(f"{' and '.join(kinds)} describe different events; give one")
    kind = TestKind(is_comment, media, reply_to, live, quick_reply, story_reply, mention,
                    postback, referral)
    now = _parse_at(at, config)
    acct, contact, username, stored = await _lookup(config, sender, account)
    state = stored or ConversationState(account_id=acct, contact_id=contact, username=username)
    event = _event(text, account=acct, contact=contact, username=username, kind=kind, now=now)
    d = decide(event, state, config.workflows, engine_settings(config, acct), now)
    fired = d.workflow is not None and d.state.fired.get(d.workflow) != state.fired.get(
        d.workflow
    )
    if as_json:
        typer.echo(json.dumps(
            _test_json(event, text, username, media, is_comment, stored is not None, d, fired),
            ensure_ascii=False, indent=2,
        ))
        return
    who = f"@{username}" if username else contact
    what = kind.describe()
    origin = "stored conversation state" if stored is not None else "a new contact"
    typer.echo(f"{what} from {who} ({origin}): {json.dumps(text, ensure_ascii=False)}")
    if d.workflow is None:
        typer.echo("no workflow matched")
    else:
        how = "fires" if fired else "continues"
        typer.echo(f"matched: {d.workflow} ({how})")
    typer.echo("why:")
    for line in d.trace:
        typer.echo(f"  {line}")
    if d.actions:
        typer.echo("actions (a dry run: nothing was sent):")
        for n, action in enumerate(d.actions, start=1):
            typer.echo(f"  {n}. {describe_action(action, limit=200)}")
    else:
        typer.echo("no actions; nothing was sent")


# --- workflows replay ---------------------------------------------------------------------


def _load_candidate(path: Path) -> Config:
    from instaset.config import load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            typer.echo(line, err=True)
        raise typer.Exit(1) from None


def _since(value: str, now: float) -> float | None:
    from instaset.config import parse_duration

    if value.strip().lower() == "all":
        return None
    try:
        return now - parse_duration(value).total_seconds()
    except ValueError:
        raise InstasetError(
            f"--since {value!r} is not a duration; use e.g. 30d, 12h, 90d, or all"
        ) from None


def _print_report(report: Report, show_all: bool) -> None:
    from instaset.replay import iso

    since = iso(report.since) if report.since is not None else "the beginning"
    lines = [f"replayed {report.events} events from {since} to {iso(report.until)} "
             f"(config: {report.source or 'defaults'}); nothing was sent"]
    for step in report.steps:
        o = step.outcome
        paused = any(line.startswith("you replied") for line in o.trace)
        if not (show_all or o.workflow is not None or step.notes or paused):
            continue
        lines.append(step.label())
        lines.append(f"  {o.summary() if not o.is_nothing else '; '.join(o.trace) or 'nothing'}")
        lines.extend(f"  ! {line}" for line in (*o.refused, *step.notes))
    # One write: a replay prints a line per event that fired (100,000s), and one echo per
    # line cost more than a second.
    typer.echo("\n".join(lines))
    _print_counts({k: (v.fired, v.messages, v.refused) for k, v in report.counts().items()},
                  ("fired", "messages", "refused"))


def _print_counts(rows: dict[str, tuple[int, ...]], headers: tuple[str, ...]) -> None:
    if not rows:
        typer.echo("\nno workflow fired")  # after a heading printed without its newline
        return
    width = max(len("workflow"), *(len(n) for n in rows))
    typer.echo("")
    typer.echo("workflow".ljust(width) + "".join(f"  {h:>9}" for h in headers))
    for name, values in rows.items():
        typer.echo(name.ljust(width) + "".join(f"  {v:>9}" for v in values))


def _print_diff(d: ReplayDiff) -> None:
    from instaset.replay import iso

    cur, cand = d.current, d.candidate
    since = iso(cur.since) if cur.since is not None else "the beginning"
    typer.echo(f"replayed {cur.events} events from {since} to {iso(cur.until)} with "
               f"{cur.source or 'the current config'} and {cand.source}; nothing was sent")
    n = len(d.changes)
    typer.echo(f"{n} event{'s' if n != 1 else ''} would be handled differently")
    for change in d.changes:
        typer.echo(change.step.label())
        typer.echo(f"  was: {change.before.summary()}")
        typer.echo("".join(f"    ! {line}\n" for line in change.before.refused), nl=False)
        typer.echo(f"  now: {change.after.summary()}")
        typer.echo("".join(f"    ! {line}\n" for line in change.after.refused), nl=False)
        typer.echo(f"  -> {change.describe()}")
    a, b = cur.counts(), cand.counts()
    rows: dict[str, tuple[int, ...]] = {}
    for name in sorted(set(a) | set(b)):
        fa = a[name].fired if name in a else 0
        fb = b[name].fired if name in b else 0
        ra = a[name].refused if name in a else 0
        rb = b[name].refused if name in b else 0
        rows[name] = (fa, fb, fb - fa, ra, rb)
    typer.echo("\nper workflow: times fired (current, candidate, change), then messages "
               "refused (current, candidate)", nl=False)
    _print_counts(rows, ("current", "candidate", "change", "refused", "refused"))


@workflows_app.command("replay")
@handle_errors
@run_async
async def workflows_replay(
    candidate: Path | None = typer.Option(
        None, "--config-candidate", "--candidate", "--config",
        help="Another config file to compare with the current one (after the command,"
        " --config names this file; the current one is the global --config, given before).",
    ),
    since: str = typer.Option("30d", "--since", help="How far back: 12h, 30d, 90d, or all."),
    start: str = typer.Option(
        "fresh", "--start", help="fresh: every contact starts new; stored: from their "
        "current stored state."
    ),
    show_all: bool = typer.Option(False, "--all", help="List every event, not only those "
                                  "where something fired."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Replay the workflows over the stored history, or diff a candidate config. Read-only."""
    from instaset.replay import load_history, replay_config
    from instaset.replay_diff import diff
    from instaset.store.db import open_database

    config = load_or_exit()
    other = _load_candidate(candidate) if candidate is not None else None
    if start not in ("fresh", "stored"):
        raise InstasetError(f"--start {start!r}: use fresh or stored")
    now = time.time()
    since_ts = _since(since, now)
    path = config.storage.db_path()
    if not path.exists():
        raise InstasetError(
            f"no database at {path}: nothing to replay (run `instaset serve` first, or point "
            "storage.path at your database)"
        )
    db = await open_database(path, synchronous=config.storage.synchronous)
    try:
        history = await load_history(db, since=since_ts, until=now,
                                     start="stored" if start == "stored" else "fresh")
    finally:
        await db.close()
    current = replay_config(config, history)
    if other is None:
        if as_json:
            typer.echo(json.dumps(current.to_json(), ensure_ascii=False, indent=2))
        else:
            _print_report(current, show_all)
        return
    result = diff(current, replay_config(other, history))
    if as_json:
        typer.echo(json.dumps(result.to_json(), ensure_ascii=False, indent=2))
    else:
        _print_diff(result)


# --- workflows apply ----------------------------------------------------------------------


@workflows_app.command("apply")
@handle_errors
@run_async
async def workflows_apply(
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the difference; change nothing."),
    account: str | None = typer.Option(
        None, "--account", help="The account (id or @username) when several are connected."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Push the config's ice breakers and persistent menu to Instagram, after showing how
    they differ from what Instagram has. A section left out of the config is not touched."""
    from instaset.cli.cmd_accounts import resolve_account
    from instaset.daemon import runtime
    from instaset.profile_sync import apply_config

    config = load_or_exit()
    async with runtime(config) as rt:
        account_id, username = await resolve_account(rt.db, account)
        changes = await apply_config(rt, account_id, dry_run=dry_run)
    changed = [c for c in changes if c.changed]
    if as_json:
        typer.echo(json.dumps({
            "account": account_id, "username": username, "dry_run": dry_run,
            "applied": bool(changed) and not dry_run,
            "changes": [{"field": c.field, "changed": c.changed,
                         "current": [list(i) for i in c.current],
                         "wanted": None if c.wanted is None else [list(i) for i in c.wanted]}
                        for c in changes],
        }, ensure_ascii=False, indent=2))
        return
    typer.echo(f"@{username or account_id}:")
    for change in changes:
        for line in change.lines():
            typer.echo(line)
    if not changed:
        typer.echo("nothing to change")
    elif dry_run:
        typer.echo("dry run: nothing was changed on Instagram")
    else:
        typer.echo("applied: " + ", ".join(c.field for c in changed))
