"""``instaset leads [--stage S | --all] [--json|--csv]``, ``leads explain CONTACT``,
``leads rescore`` and ``instaset bookings [--json] [--ics] [--upcoming]``.

Leads are listed best score first with the reasons behind each score; ``explain`` applies the
current rules to the stored history and shows each reason with the message behind it;
``rescore`` stores fresh scores for every contact (after the rules changed) and queues the
"qualified" notifications the daemon then delivers.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

import typer

from instaset.ai.scoring import lead_input, rescore_all
from instaset.booking import to_ics
from instaset.cli.app import app, handle_errors, run_async
from instaset.cli.cmd_config import load_or_exit
from instaset.config import Config
from instaset.errors import InstasetError
from instaset.leads import STAGES, Reason, explain, score_lead
from instaset.store import ai as aistore
from instaset.store.db import Database, open_database

QUALIFIED_STAGES = ("qualified", "booked", "customer")
leads_app = typer.Typer(help="Leads with their score and the reasons for it.",
                        invoke_without_command=True)
app.add_typer(leads_app, name="leads")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _open(config: Config) -> Database:
    return await open_database(config.storage.db_path(), synchronous=config.storage.synchronous)


def _reason_json(r: Reason) -> dict[str, Any]:
    d = r.to_dict()
    d["at"] = _iso(r.at)
    return d


def lead_json(row: sqlite3.Row) -> dict[str, Any]:
    reasons = [Reason.from_dict(d) for d in json.loads(row["reasons"])]
    return {
        "account_id": row["account_id"], "contact_id": row["contact_id"],
        "username": row["username"], "score": row["score"], "stage": row["stage"],
        "reasons": [_reason_json(r) for r in reasons],
        "qualified_at": _iso(row["qualified_at"]), "updated_at": _iso(row["updated_at"]),
    }


def _short_reasons(lead: dict[str, Any]) -> str:
    return "; ".join(f"{r['rule']} {r['points']:+d}" for r in lead["reasons"])


@leads_app.callback()
@handle_errors
def leads(
    ctx: typer.Context,
    stage: str | None = typer.Option(
        None, "--stage", help=f"Only this stage: {', '.join(STAGES)}."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
    as_csv: bool = typer.Option(False, "--csv", help="CSV with a header row on stdout."),
    show_all: bool = typer.Option(False, "--all", help="Every contact who wrote, any stage."),
) -> None:
    """Qualified leads (qualified, booked, customer), best score first, with the reasons for
    each score. --stage picks one stage, --all shows every stage."""
    if ctx.invoked_subcommand is not None:
        return
    if as_json and as_csv:
        raise InstasetError("choose either --json or --csv")
    if stage is not None and stage not in STAGES:
        raise InstasetError(f"unknown stage {stage!r} (use one of {', '.join(STAGES)})")
    config = load_or_exit()
    data = run_async(_list)(config, stage)
    if stage is None and not show_all:
        data = [d for d in data if d["stage"] in QUALIFIED_STAGES]
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
    elif as_csv:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["contact_id", "username", "score", "stage", "reasons", "qualified_at",
                         "updated_at"])
        for lead in data:
            writer.writerow([lead["contact_id"], lead["username"] or "", lead["score"],
                             lead["stage"], _short_reasons(lead), lead["qualified_at"] or "",
                             lead["updated_at"]])
        typer.echo(buf.getvalue(), nl=False)
    elif not data:
        typer.echo("no leads" + ("" if show_all or stage else " qualified yet (--all shows "
                                 "every contact)"))
    else:
        for lead in data:
            who = f"@{lead['username']}" if lead["username"] else lead["contact_id"]
            typer.echo(f"{who:<24} {lead['score']:>5}  {lead['stage']:<10} "
                       f"{_short_reasons(lead)}")


async def _list(config: Config, stage: str | None) -> list[dict[str, Any]]:
    db = await _open(config)
    try:
        return [lead_json(r) for r in await aistore.list_leads(db, stage)]
    finally:
        await db.close()


@leads_app.command("explain")
@handle_errors
def leads_explain(
    contact: str = typer.Argument(..., help="A username (@name) or an Instagram-scoped id."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Why a contact has its score: every rule that holds, with the message behind it."""
    config = load_or_exit()
    results = run_async(_explain)(config, contact)
    if as_json:
        typer.echo(json.dumps(results[0] if len(results) == 1 else results, indent=2,
                              ensure_ascii=False))
        return
    for res in results:
        who = f"@{res['username']}" if res["username"] else res["contact_id"]
        typer.echo(f"{who} ({res['contact_id']})")
        for line in res["lines"]:
            typer.echo(f"  {line}")


async def _explain(config: Config, ref: str) -> list[dict[str, Any]]:
    db = await _open(config)
    try:
        contacts = await aistore.find_contacts(db, ref)
        if not contacts:
            raise InstasetError(f"no contact {ref!r} (use a username or an Instagram-scoped id;"
                                " `instaset leads` lists them)")
        out: list[dict[str, Any]] = []
        for c in contacts:
            async with db.read() as conn:
                inp = await lead_input(conn, c["account_id"], c["id"])
            score = score_lead(config.leads, inp)
            out.append({
                "account_id": c["account_id"], "contact_id": c["id"],
                "username": c["username"], "score": score.score, "stage": score.stage,
                "reasons": [_reason_json(r) for r in score.reasons], "lines": explain(score),
            })
        return out
    finally:
        await db.close()


@leads_app.command("rescore")
@handle_errors
def leads_rescore() -> None:
    """Apply the current lead rules to every contact's history and store the scores."""
    config = load_or_exit()
    count = run_async(_rescore)(config)
    typer.echo(f"rescored {count} leads")


async def _rescore(config: Config) -> int:
    db = await _open(config)
    try:
        return await rescore_all(db, config.leads, time.time(), only_stale=False)
    finally:
        await db.close()


@app.command("bookings")
@handle_errors
def bookings(
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
    as_ics: bool = typer.Option(False, "--ics", help="An iCalendar (.ics) file on stdout."),
    upcoming: bool = typer.Option(False, "--upcoming", help="Only those not over yet."),
) -> None:
    """Appointments booked through Instagram, earliest first."""
    config = load_or_exit()
    rows = run_async(_bookings)(config, time.time() if upcoming else None)
    tz = config.tzinfo
    if as_ics:
        typer.echo(to_ics([dict(r) for r in rows], now=time.time()), nl=False)
        return
    data = [{
        "id": r["id"], "account_id": r["account_id"], "contact_id": r["contact_id"],
        "username": r["username"], "title": r["title"], "status": r["status"],
        "start": _iso(r["start_at"]), "end": _iso(r["end_at"]),
        "local_start": datetime.fromtimestamp(r["start_at"], tz).isoformat(),
        "timezone": config.timezone, "created_at": _iso(r["created_at"]),
    } for r in rows]
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    if not data:
        typer.echo("no bookings")
    for b in data:
        who = f"@{b['username']}" if b["username"] else b["contact_id"]
        local = datetime.fromisoformat(b["local_start"]).strftime("%a %d %b %Y %H:%M")
        typer.echo(f"{local} ({config.timezone})  {b['title']:<12} {who}  {b['status']}")


async def _bookings(config: Config, since: float | None) -> list[sqlite3.Row]:
    db = await _open(config)
    try:
        return await aistore.list_bookings(db, since=since)
    finally:
        await db.close()


__all__ = ["leads_app"]
