"""``instaset inbox drafts``, ``inbox approve``, ``inbox edit`` and ``inbox reject``: acting on
the replies the AI held back (draft mode, or a guardrail hand-off). The rules (what is sent,
as whom, inside which window, exactly once) are in :mod:`instaset.drafts`.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import typer

from instaset.cli.app import handle_errors, is_tty, run_async
from instaset.cli.cmd_inbox import inbox_app
from instaset.oneline import one_line

if TYPE_CHECKING:
    from instaset.drafts import DraftOutcome

# Config, store, daemon and the drafts logic are imported inside the commands: `instaset
# --help` must not pay for them.


def _short(text: str | None, n: int = 70) -> str:
    t = " ".join((text or "").split())
    return t if len(t) <= n else t[: n - 1] + "…"


def _who(d: dict[str, Any]) -> str:
    return f"@{d['username']}" if d["username"] else str(d["contact_id"])


def _line(d: dict[str, Any]) -> str:
    why = "draft mode" if d["reason"] == "draft" else f"held: {d['reason']}"
    conf = "" if d["confidence"] is None else f"  confidence {d['confidence']:.2f}"
    intent = f"  intent {d['intent']}" if d["intent"] else ""
    where = "  (private reply to a comment)" if d["comment_id"] else ""
    state = "" if d["state"] == "pending" else f"  [{d['state']}]"
    return f"#{d['id']}  {_who(d)}  {d['created_at']}  {why}{intent}{conf}{where}{state}"


@inbox_app.command("drafts")
@handle_errors
def drafts_cmd(
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
    all_: bool = typer.Option(False, "--all", help="Also the sent and discarded drafts."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="How many drafts."),
) -> None:
    """AI drafts waiting for you, newest first: who, when, why it was held, the text."""
    from instaset.cli.cmd_config import load_or_exit
    from instaset.drafts import list_drafts
    from instaset.store.db import open_database

    config = load_or_exit()
    now = time.time()

    @run_async
    async def load() -> dict[str, Any]:
        db = await open_database(config.storage.db_path(), synchronous=config.storage.synchronous)
        try:
            return await list_drafts(db, now, include_all=all_, limit=limit)
        finally:
            await db.close()

    doc = load()
    if as_json:
        typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    pending = doc["counts"]["pending"]
    typer.echo(f"{pending} draft{'' if pending == 1 else 's'} waiting")
    for d in doc["drafts"]:
        typer.echo(_line(d))
        typer.echo(f"    {_short(d['text']) or '(no text: the AI handed off)'}")
        send = d["send"]
        if send is not None:
            sent = "edited, " if send["edited"] else ""
            typer.echo(f"    {sent}send {send['state']}"
                       + (f" ({send['reason']})" if send["reason"] else "")
                       + (f": {_short(send['text'])}" if send["edited"] else ""))
    if pending:
        typer.echo("approve: `instaset inbox approve ID`  edit: `instaset inbox edit ID TEXT`"
                   "  reject: `instaset inbox reject ID`")


def _report(outcome: DraftOutcome) -> None:
    what = "edited reply" if outcome.edited else "draft"
    if outcome.state in ("refused", "failed"):
        verb = "refused" if outcome.state == "refused" else "Instagram refused it"
        typer.echo(f"error: {what} #{outcome.draft_id} not sent to {outcome.label} "
                   f"({verb}: {outcome.reason}): {one_line(outcome.detail or '')}", err=True)
        raise typer.Exit(1)
    if outcome.state == "sent":
        tag = " with the HUMAN_AGENT tag (the 24 h window had closed)" \
            if outcome.human_agent_tag else ""
        typer.echo(f"{what} #{outcome.draft_id} sent to {outcome.label}{tag}")
    else:
        typer.echo(f"{what} #{outcome.draft_id} queued for {outcome.label} "
                   f"({outcome.detail or 'waiting for its turn'}); it goes out when "
                   "`instaset serve` runs")


def _send(draft_id: int, text: str | None, wait: float) -> DraftOutcome:
    """Open the runtime (the outbox and its deliverer), approve or edit, close."""
    from instaset import tokens as tokens_mod
    from instaset.cli.cmd_config import load_or_exit
    from instaset.daemon import runtime
    from instaset.drafts import approve, edit

    config = load_or_exit()

    @run_async
    async def go() -> DraftOutcome:
        async with runtime(config, tokens=tokens_mod.default_tokens(config)) as rt:
            if text is None:
                return await approve(rt, draft_id, wait=wait)
            return await edit(rt, draft_id, text, wait=wait)

    return go()


@inbox_app.command("approve")
@handle_errors
def approve_cmd(
    draft_id: int = typer.Argument(..., help="The draft's id (from `instaset inbox drafts`)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    wait: float = typer.Option(30.0, "--wait", min=0, help="Seconds to wait for delivery."),
) -> None:
    """Send the AI's draft as written, as the automation would (24 h window; no pause)."""
    if not yes:
        _confirm(draft_id, f"approving sends draft {draft_id}", "Send this to {who}?")
    _report(_send(draft_id, None, wait))


def _confirm(draft_id: int, doing: str, question: str) -> None:
    """Show the pending draft and ask ``question`` (``{who}``: its contact) on a terminal;
    with no terminal, refuse (the caller skips this with --yes). Exit 1 on no."""
    from instaset.cli.cmd_config import load_or_exit
    from instaset.drafts import draft_json, pending_draft
    from instaset.errors import InstasetError
    from instaset.store.db import open_database

    if not is_tty():
        raise InstasetError(f"{doing}; no terminal to confirm: pass --yes")
    config = load_or_exit()

    @run_async
    async def load() -> dict[str, Any]:
        db = await open_database(config.storage.db_path(),
                                 synchronous=config.storage.synchronous)
        try:
            return draft_json(await pending_draft(db, draft_id), time.time())
        finally:
            await db.close()

    d = load()
    typer.echo(_line(d))
    typer.echo(f"    {d['text']}")
    if not typer.confirm(question.format(who=_who(d))):
        raise typer.Exit(1)


@inbox_app.command("edit")
@handle_errors
def edit_cmd(
    draft_id: int = typer.Argument(..., help="The draft's id (from `instaset inbox drafts`)."),
    text: str = typer.Argument(..., help="What to send instead of the draft."),
    wait: float = typer.Option(30.0, "--wait", min=0, help="Seconds to wait for delivery."),
) -> None:
    """Send your text instead, as you (HUMAN_AGENT after 24 h); the draft keeps its own."""
    _report(_send(draft_id, text, wait))


@inbox_app.command("reject")
@handle_errors
def reject_cmd(
    draft_id: int = typer.Argument(..., help="The draft's id (from `instaset inbox drafts`)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Discard the draft; nothing is sent. It cannot be undone: asks first on a terminal."""
    if not yes:
        _confirm(draft_id, f"rejecting discards draft {draft_id} for good",
                 "Discard this draft for {who}? Nothing is sent, and it cannot be undone.")
    from instaset.cli.cmd_config import load_or_exit
    from instaset.drafts import reject
    from instaset.store.db import open_database

    config = load_or_exit()

    @run_async
    async def go() -> DraftOutcome:
        db = await open_database(config.storage.db_path(), synchronous=config.storage.synchronous)
        try:
            return await reject(db, draft_id, time.time())
        finally:
            await db.close()

    outcome = go()
    typer.echo(f"draft #{outcome.draft_id} for {outcome.label} discarded; nothing was sent")
