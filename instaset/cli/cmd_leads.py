"""``instaset leads [--stage S | --all] [--json|--csv]``, ``leads explain CONTACT`` and
``leads rescore`` (``instaset bookings`` lives in :mod:`instaset.cli.cmd_bookings`).

Leads are listed best score first with the reasons behind each score; ``explain`` shows the
stored score (what ``leads`` lists) with each reason and the message behind it, and, when
applying the current rules to what is stored now gives another score (the rules changed, or
a rescore is pending), that one next to it, never in its place (``rescore`` in ``--json``);
``rescore`` stores fresh scores for every contact (after the rules changed) and queues the
"qualified" notifications the daemon then delivers; while the daemon runs (it keeps the rules
it started with) it warns first, then asks on a terminal, and without one refuses unless
``--yes``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import typer

from instaset.cli.app import app, handle_errors, is_tty, open_db, run_async, sub_app
from instaset.cli.cmd_config import load_or_exit
from instaset.errors import InstasetError
from instaset.timefmt import iso_seconds

if TYPE_CHECKING:
    import sqlite3

    from instaset.config import Config
    from instaset.leads import LeadScore, Reason

# Lead scoring, the AI store and the config are imported inside the commands: `instaset
# --help` must not pay for them (see instaset/cli/app.py).

# A copy of instaset.leads.STAGES for the --stage help text only (that module pulls in the
# engine); tests/test_cli_startup.py checks that the two agree. Validation uses the original.
HELP_STAGES = ("new", "engaged", "qualified", "booked", "customer", "lost")
QUALIFIED_STAGES = ("qualified", "booked", "customer")
leads_app = sub_app(help="Leads with their score and the reasons for it.",
                        invoke_without_command=True)
app.add_typer(leads_app, name="leads")




def _reason_json(r: Reason) -> dict[str, Any]:
    d = r.to_dict()
    d["at"] = iso_seconds(r.at)
    return d


def lead_json(row: sqlite3.Row) -> dict[str, Any]:
    from instaset.leads import Reason

    reasons = [Reason.from_dict(d) for d in json.loads(row["reasons"])]
    return {
        "account_id": row["account_id"], "contact_id": row["contact_id"],
        "username": row["username"], "score": row["score"], "stage": row["stage"],
        "reasons": [_reason_json(r) for r in reasons],
        "qualified_at": iso_seconds(row["qualified_at"]),
        "updated_at": iso_seconds(row["updated_at"]),
    }


def _short_reasons(lead: dict[str, Any]) -> str:
    return "; ".join(f"{r['rule']} {r['points']:+d}" for r in lead["reasons"])


@leads_app.callback()
@handle_errors
def leads(
    ctx: typer.Context,
    stage: str | None = typer.Option(
        None, "--stage", help=f"Only this stage: {', '.join(HELP_STAGES)}."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
    as_csv: bool = typer.Option(False, "--csv", help="CSV with a header row on stdout."),
    show_all: bool = typer.Option(False, "--all", help="Every contact who wrote, any stage."),
) -> None:
    """Qualified leads (qualified, booked, customer), best score first, with the reasons for
    each score. --stage picks one stage, --all shows every stage."""
    if ctx.invoked_subcommand is not None:
        return
    from instaset.leads import STAGES

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
        import csv
        import io

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
    from instaset.store import ai as aistore

    db = await open_db(config)
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
    """Why a contact has its score (the stored one `leads` lists): every rule that held,
    with the message behind it; and what rescoring now would give, when that differs."""
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
    from instaset.ai.scoring import lead_input, stored_score
    from instaset.leads import explain, rules_hash, score_lead
    from instaset.store import ai as aistore

    db = await open_db(config)
    try:
        contacts = await aistore.find_contacts(db, ref)
        if not contacts:
            raise InstasetError(f"no contact {ref!r} (use a username or an Instagram-scoped id;"
                                " `instaset leads` lists them)")
        out: list[dict[str, Any]] = []
        for c in contacts:
            async with db.read() as conn:
                inp = await lead_input(conn, c["account_id"], c["id"])
                row = await aistore.get_lead(conn, c["account_id"], c["id"])
            stored = stored_score(row)
            fresh = score_lead(config.leads, inp, stored)
            score = stored if stored is not None else fresh
            differs = stored is not None and _points(stored) != _points(fresh)
            lines = explain(score)
            if differs:
                why = ("the rules changed since it was scored" if row is not None
                       and row["rules_hash"] != rules_hash(config.leads) else
                       "the history changed since it was scored")
                lines += [f"rescoring now gives score {fresh.score}, stage {fresh.stage} "
                          f"({why}; `instaset leads rescore` stores it):"]
                lines += [f"  {line}" for line in explain(fresh)[1:]]
            out.append({
                "account_id": c["account_id"], "contact_id": c["id"],
                "username": c["username"], "score": score.score, "stage": score.stage,
                "reasons": [_reason_json(r) for r in score.reasons], "lines": lines,
                "stored": stored is not None,
                "current_rules": row is not None and row["rules_hash"] == rules_hash(
                    config.leads),
                "updated_at": iso_seconds(row["updated_at"]) if row is not None else None,
                "rescore": {"score": fresh.score, "stage": fresh.stage,
                            "reasons": [_reason_json(r) for r in fresh.reasons],
                            "differs": differs},
            })
        return out
    finally:
        await db.close()


def _points(score: LeadScore) -> tuple[object, ...]:
    """What a rescore may change that `leads` shows: score, stage, each rule's points (not
    a quote retention or an unsend took out)."""
    return score.score, score.stage, tuple((r.rule, r.points) for r in score.reasons)


@leads_app.command("rescore")
@handle_errors
def leads_rescore(
    yes: bool = typer.Option(False, "--yes", "-y",
                             help="Rescore even while instaset serve runs, without asking."),
) -> None:
    """Apply the current lead rules to every contact's history and store the scores.

    While instaset serve runs on this database it keeps the rules it started with: this
    says so first and, on a terminal, asks; with no terminal it refuses unless --yes."""
    from instaset.retention import daemon_lock

    config = load_or_exit()
    with daemon_lock(config.storage.db_path()) as alone:
        pass
    if not alone:
        # The daemon reads its config once, at start: until it restarts it scores with the
        # old rules, and puts back every score it finds stored under other rules. Said before
        # anything is written (the scores, a "qualified" notice), so the creator can stop.
        typer.echo(
            "warning: instaset serve is running on this database with the lead rules it "
            "started with; restart it so it scores with these (until then it puts the "
            "old scores back, within the hour or at a contact's next message)", err=True)
        if not yes:
            if not is_tty():
                raise InstasetError(
                    "nothing rescored: instaset serve is running (see above); restart it "
                    "(it rescores with the current rules as it starts), or pass --yes to "
                    "rescore now anyway")
            if not typer.confirm("Rescore now anyway?", default=False):
                raise InstasetError("nothing rescored")
    count = run_async(_rescore)(config)
    typer.echo(f"rescored {count} leads")


async def _rescore(config: Config) -> int:
    from instaset.ai.scoring import rescore_all

    db = await open_db(config)
    try:
        return await rescore_all(db, config.leads, time.time(), only_stale=False)
    finally:
        await db.close()


__all__ = ["leads_app"]
