"""``instaset stats``: the funnel per workflow and per media, delivery figures, and activity.

The document (``--json``)::

    {"since": ISO, "until": ISO,
     "totals":    {"triggers", "sent", "read", "clicks", "leads", "qualified", "booked",
                   "refused", "pending", "conversations"},
     "workflows": [{"workflow", "triggers", "sent", "read", "clicks", "leads", "qualified",
                    "booked", "refused", "pending"}],          # "(your replies)": inbox replies
     "media":     [{"media_id", "comments", "triggers", "sent", "read", "clicks", "leads",
                    "qualified", "booked", "refused", "pending"}],
     "refused_by_reason": {reason: count},
     "ai": {"available": bool, "calls", "tokens", "failures"},
     "first_response": {"conversations", "median_seconds"},
     "messages_per_day": [{"date": "YYYY-MM-DD", "in", "out"}]}

Definitions: a *trigger* is one decision of a workflow that produced at least one send; *sent*
counts messages Meta accepted (sender actions and reactions excluded); *read* counts sent
messages at or before the last message the person's read receipts name; *clicks* are human
clicks on tracked links; *leads / qualified / booked* count contacts by their current stage
(lead: any stage after ``new`` or the tag ``lead``; qualified: qualified, booked or customer;
booked: booked or customer) among the contacts a workflow fired for (or who commented on the
media) in the period. Refused counts sends refused by the rules or failed at Meta.
"""

from __future__ import annotations

import csv
import io
import statistics
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from instaset.store import stats as store
from instaset.timefmt import human_duration, iso_utc

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from instaset.store.db import Database

FUNNEL = ("triggers", "sent", "read", "clicks", "leads", "qualified", "booked", "refused",
          "pending")
HUMAN = "(your replies)"
NO_WORKFLOW = "(no workflow)"


def _blank() -> dict[str, int]:
    return dict.fromkeys(FUNNEL, 0)


def _bump(target: dict[str, int], row: Any, keys: tuple[str, ...]) -> None:
    for k in keys:
        target[k] += int(row[k] or 0)


async def compute(db: Database, since: float, now: float) -> dict[str, Any]:
    """The stats document for the period [since, now]."""
    workflows: dict[str, dict[str, int]] = {}
    media: dict[str, dict[str, int]] = {}
    totals = _blank()
    send_keys = ("triggers", "sent", "read", "refused", "pending")
    for row in await store.send_groups(db, since):
        name = row["workflow"] or (HUMAN if row["sent_by"] == "human" else NO_WORKFLOW)
        _bump(workflows.setdefault(name, _blank()), row, send_keys)
        _bump(totals, row, send_keys)
        if row["media"]:
            _bump(media.setdefault(str(row["media"]), _blank()), row, send_keys)
    for row in await store.clicks_by(db, since):
        n = int(row["clicks"])
        workflows.setdefault(row["workflow"] or NO_WORKFLOW, _blank())["clicks"] += n
        totals["clicks"] += n
        if row["media"]:
            media.setdefault(str(row["media"]), _blank())["clicks"] += n
    lead_keys = ("leads", "qualified", "booked")
    for row in await store.leads_by_workflow(db, since):
        _bump(workflows.setdefault(str(row["workflow"]), _blank()), row, lead_keys)
    comments: dict[str, int] = {}
    for row in await store.leads_by_media(db, since):
        if row["media"] is None:
            continue
        _bump(media.setdefault(str(row["media"]), _blank()), row, lead_keys)
        comments[str(row["media"])] = int(row["comments"])
    stages = await store.stage_totals(db, since)
    if stages is not None:
        _bump(totals, stages, lead_keys)
    waits = await store.first_responses(db, since)
    ai = await store.ai_usage(db, since)
    per_day = await store.messages_per_day(db, since)
    return {
        "since": iso_utc(since),
        "until": iso_utc(now),
        "totals": {**totals, "conversations": int(stages["contacts"]) if stages else 0},
        "workflows": [{"workflow": k, **v} for k, v in sorted(
            workflows.items(), key=lambda kv: (kv[0].startswith("("), -kv[1]["triggers"], kv[0]))],
        "media": [{"media_id": k, "comments": comments.get(k, 0), **v} for k, v in sorted(
            media.items(), key=lambda kv: (-comments.get(kv[0], 0), kv[0]))],
        "refused_by_reason": await store.refusals(db, since),
        "ai": {"available": ai is not None, "calls": ai[0] if ai else 0,
               "tokens": ai[1] if ai else 0, "failures": ai[2] if ai else 0},
        "first_response": {
            "conversations": len(waits),
            "median_seconds": round(statistics.median(waits), 1) if waits else None,
        },
        "messages_per_day": [
            {"date": datetime.fromtimestamp(int(r["day"]) * 86400, UTC).date().isoformat(),
             "in": int(r["n_in"] or 0), "out": int(r["n_out"] or 0)}
            for r in per_day
        ],
    }


def to_csv(doc: dict[str, Any]) -> str:
    """One funnel table: ``scope,name,comments,triggers,...`` (scope: total, workflow,
    media), then ``refused`` rows by reason."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["scope", "name", "comments", *FUNNEL])
    w.writerow(["total", "", "", *(doc["totals"][k] for k in FUNNEL)])
    for row in doc["workflows"]:
        w.writerow(["workflow", row["workflow"], "", *(row[k] for k in FUNNEL)])
    for row in doc["media"]:
        w.writerow(["media", row["media_id"], row["comments"], *(row[k] for k in FUNNEL)])
    for reason, n in doc["refused_by_reason"].items():
        w.writerow(["refused", reason, "", *(n if k == "refused" else "" for k in FUNNEL)])
    return buf.getvalue()


def _rate(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.0f}%)" if whole and part else str(part)


def _funnel_table(title: str, first: str, rows: list[dict[str, Any]], with_comments: bool
                  ) -> Table:
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    t.add_column(first, no_wrap=True)
    if with_comments:
        t.add_column("comments", justify="right", no_wrap=True)
    for k in FUNNEL[:-1]:
        t.add_column(k, justify="right", no_wrap=True)
    for r in rows:
        cells = [str(r.get("workflow") or r.get("media_id"))]
        if with_comments:
            cells.append(str(r["comments"]))
        cells += [str(r["triggers"]), str(r["sent"]), _rate(r["read"], r["sent"]),
                  _rate(r["clicks"], r["sent"]), str(r["leads"]), str(r["qualified"]),
                  str(r["booked"]), str(r["refused"])]
        t.add_row(*cells)
    return t


def bar_chart(days: list[dict[str, Any]], width: int = 40) -> Table:
    """Messages per day as horizontal bars (in: cyan, out: magenta)."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title="messages per day (UTC)", title_justify="left", show_header=False,
              show_edge=False, pad_edge=False, box=None)
    t.add_column("date")
    t.add_column("bar")
    t.add_column("n", justify="right")
    peak = max((d["in"] + d["out"] for d in days), default=0)
    for d in days:
        scale = width / peak if peak else 0
        n_in, n_out = round(d["in"] * scale), round(d["out"] * scale)
        bar = Text("█" * n_in, style="cyan") + Text("█" * n_out, style="magenta")
        t.add_row(d["date"], bar, f"{d['in']} in / {d['out']} out")
    return t


def render(doc: dict[str, Any], console: Console) -> None:
    tot = doc["totals"]
    console.print(f"[bold]instaset stats[/] {doc['since']} → {doc['until']}")
    console.print(
        f"triggers {tot['triggers']} · sent {tot['sent']} · read {_rate(tot['read'], tot['sent'])}"
        f" · clicks {tot['clicks']} · conversations {tot['conversations']} · leads {tot['leads']}"
        f" · qualified {tot['qualified']} · booked {tot['booked']}",
        markup=False, highlight=False,
    )
    if doc["workflows"]:
        console.print(_funnel_table("per workflow", "workflow", doc["workflows"], False))
    if doc["media"]:
        console.print(_funnel_table("per media (comments)", "media", doc["media"], True))
    if doc["refused_by_reason"]:
        console.print("refused: " + ", ".join(
            f"{k} {v}" for k, v in doc["refused_by_reason"].items()), markup=False)
    ai = doc["ai"]
    console.print(
        f"AI: {ai['calls']} calls, {ai['tokens']} tokens, {ai['failures']} failures"
        if ai["available"] else "AI: no AI calls recorded", markup=False)
    fr = doc["first_response"]
    if fr["median_seconds"] is not None:
        console.print(f"median time to first response: {human_duration(fr['median_seconds'])}"
                      f" over {fr['conversations']} conversations", markup=False)
    if doc["messages_per_day"]:
        console.print(bar_chart(doc["messages_per_day"]))
