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

The period starts at the beginning of the hour that contains ``since`` (UTC) and runs to now:
the figures come from hourly rollups kept by triggers (migration 0010), so a query sums whole
hours and costs the same on a quiet or a busy database. ``"since"`` in the document is that
hour. :func:`compute_scan` computes the same document from the rows themselves (the
reference the rollups are tested against).

Definitions (a send, a message, a comment... belongs to the period by its creation time):

- *triggers*: decisions of a workflow that produced a send, counted once, at the first send
  stored for the decision (sends of a decision share the key ``send:{event}:``, and its AI
  replies, their slots and the AI's fallback, keyed after the AI job ``ai:{event}:{n}``,
  belong to it: :data:`instaset.store.stats.DECISION_OF_KEY`, migration 0023; resumed
  flows and message chunks ``#n`` are not new decisions), in that send's row.
- *sent*: sends of the period Meta accepted (messages; sender actions and reactions excluded).
- *read*: sends of the period that were sent and that the person has read by now: their
  message is not newer than the newest of our messages one of their read receipts named.
- *refused*: sends of the period refused by the rules or failed at Meta (by reason in
  ``refused_by_reason``), the messages the engine refused while deciding among them (a
  private reply to a comment over 7 days old, a DM after the 24 h window: stored as refused
  sends, see :func:`instaset.automation._refused_sends`). Not the public reply held back
  because the private reply it announces did not go (``private_reply_not_sent``): the
  private reply's refusal counts the miss, once, whether the engine or the outbox caught
  it (the engine drops such a public reply unstored); *pending*: sends of the period
  still pending or in flight.
- *clicks*: human clicks on tracked links in the period (crawlers are not counted).
- *leads / qualified / booked*: contacts by their current stage (lead: any stage after
  ``new`` or the tag ``lead``; qualified: qualified, booked or customer; booked: booked or
  customer). Per workflow: the contacts it last fired for in the period; per media: the
  contacts whose last comment on it is in the period; totals: conversations updated in the
  period (``conversations`` counts them).
- *media*: the media of the comment (or live comment) a send, link or comment was about.
  *comments* are other people's: the account's own (its public replies come back from Meta
  as comments) are not counted. Comments and read receipts count once the daemon has
  processed their event (normally within a second).
- *first_response*: a wait starts when the person writes and none of their messages is
  waiting for an answer; our next message (automation or human) ends it. ``conversations``
  counts the answered waits that started in the period, ``median_seconds`` is their median
  with each wait rounded down to its histogram bucket (to 0.1 s below 20 s, then by at most
  2.5 %: 5 s steps at 2 to 5 minutes, for instance).
- *messages_per_day*: messages in and out per UTC day of the period.

Erasing a contact or deleting history (purge) does not take back what the rollups already
counted; removing an account does (its rollup rows go with it).
"""

from __future__ import annotations

import csv
import io
import re
import statistics
from typing import TYPE_CHECKING, Any

from instaset.store import stats as store
from instaset.timefmt import human_duration, iso_utc, utc

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

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


HOUR = 3600
# The wait buckets (tenths of a second): below each bound, values are rounded down to a
# multiple of the step (at most 2.5 % of the values it applies to). The same ladder as the
# CASE in migration 0010 (keep them equal; tests/test_stats_rollup.py compares them).
_STEPS = ((200, 1), (500, 5), (1000, 10), (2000, 20), (5000, 50), (10**4, 100),
          (2 * 10**4, 200), (5 * 10**4, 500), (10**5, 1000), (2 * 10**5, 2000),
          (5 * 10**5, 5000), (10**6, 10**4), (2 * 10**6, 2 * 10**4), (5 * 10**6, 5 * 10**4),
          (10**7, 10**5), (2 * 10**7, 2 * 10**5), (5 * 10**7, 5 * 10**5))


def period_start(since: float) -> int:
    """The first hour (hours since the epoch) of the period that contains ``since``."""
    return int(since // HOUR)


def _step(tenths: int) -> int:
    return next((step for bound, step in _STEPS if tenths < bound), 10**6)


def wait_bucket(tenths: int) -> int:
    """The histogram bucket of a wait given in tenths of a second."""
    return tenths - tenths % _step(tenths)


def bucket_seconds(bucket: int) -> float:
    """The wait a bucket stands for: its lower bound (the wait rounded down to the step)."""
    return bucket / 10


def median_of(histogram: list[tuple[int, int]]) -> float | None:
    """Median of the waits of a (bucket, count) histogram sorted by bucket."""
    total = sum(n for _, n in histogram)
    if not total:
        return None
    wanted = sorted({(total - 1) // 2, total // 2})
    values: list[float] = []
    seen = 0
    for bucket, n in histogram:
        while wanted and wanted[0] < seen + n:
            values.append(bucket_seconds(bucket))
            wanted.pop(0)
        seen += n
    return round(statistics.fmean(values), 1)


async def compute(db: Database, since: float, now: float) -> dict[str, Any]:
    """The stats document for the period from the hour of ``since`` to ``now``, from the
    rollups (a few small indexed reads)."""
    hour = period_start(since)
    return _document(
        hour, now,
        sends=await store.send_groups(db, hour),
        clicks=await store.clicks_by(db, hour),
        by_workflow=await store.leads_by_workflow(db, hour),
        by_media=await store.leads_by_media(db, hour),
        stages=await store.stage_totals(db, hour),
        waits=await store.wait_histogram(db, hour),
        ai=await store.ai_usage(db, hour * HOUR),
        per_day=await store.messages_per_day(db, hour),
        refused=await store.refusals(db, hour),
    )


async def compute_scan(db: Database, since: float, now: float) -> dict[str, Any]:
    """The same document as :func:`compute`, from the rows (the reference; slow on a large
    database)."""
    hour = period_start(since)
    start = float(hour * HOUR)
    counts: dict[int, int] = {}
    for tenths in await store.waits_scan(db, start):
        b = wait_bucket(tenths)
        counts[b] = counts.get(b, 0) + 1
    return _document(
        hour, now,
        sends=await store.send_groups_scan(db, start),
        clicks=await store.clicks_by_scan(db, start),
        by_workflow=await store.leads_by_workflow_scan(db, start),
        by_media=await store.leads_by_media_scan(db, start),
        stages=await store.stage_totals_scan(db, start),
        waits=sorted(counts.items()),
        ai=await store.ai_usage(db, start),
        per_day=await store.messages_per_day_scan(db, start),
        refused=await store.refusals_scan(db, start),
    )


def _document(
    hour: int, now: float, *, sends: list[Any], clicks: list[Any], by_workflow: list[Any],
    by_media: list[Any], stages: Any, waits: list[tuple[int, int]],
    ai: tuple[int, int, int] | None, per_day: list[Any], refused: dict[str, int],
) -> dict[str, Any]:
    workflows: dict[str, dict[str, int]] = {}
    media: dict[str, dict[str, int]] = {}
    totals = _blank()
    send_keys = ("triggers", "sent", "read", "refused", "pending")
    for row in sends:
        name = row["workflow"] or (HUMAN if row["sent_by"] == "human" else NO_WORKFLOW)
        _bump(workflows.setdefault(name, _blank()), row, send_keys)
        _bump(totals, row, send_keys)
        if row["media"]:
            _bump(media.setdefault(str(row["media"]), _blank()), row, send_keys)
    for row in clicks:
        n = int(row["clicks"])
        workflows.setdefault(row["workflow"] or NO_WORKFLOW, _blank())["clicks"] += n
        totals["clicks"] += n
        if row["media"]:
            media.setdefault(str(row["media"]), _blank())["clicks"] += n
    lead_keys = ("leads", "qualified", "booked")
    for row in by_workflow:
        _bump(workflows.setdefault(str(row["workflow"]), _blank()), row, lead_keys)
    comments: dict[str, int] = {}
    for row in by_media:
        if row["media"] is None:
            continue
        _bump(media.setdefault(str(row["media"]), _blank()), row, lead_keys)
        comments[str(row["media"])] = int(row["comments"])
    if stages is not None:
        _bump(totals, stages, lead_keys)
    return {
        "since": iso_utc(hour * HOUR),
        "until": iso_utc(now),
        "totals": {**totals, "conversations": int(stages["contacts"]) if stages else 0},
        "workflows": [{"workflow": k, **v} for k, v in sorted(
            workflows.items(), key=lambda kv: (kv[0].startswith("("), -kv[1]["triggers"], kv[0]))],
        "media": [{"media_id": k, "comments": comments.get(k, 0), **v} for k, v in sorted(
            media.items(), key=lambda kv: (-comments.get(kv[0], 0), kv[0]))],
        "refused_by_reason": refused,
        "ai": {"available": ai is not None, "calls": ai[0] if ai else 0,
               "tokens": ai[1] if ai else 0, "failures": ai[2] if ai else 0},
        "first_response": {
            "conversations": sum(n for _, n in waits),
            "median_seconds": median_of(waits),
        },
        "messages_per_day": [
            {"date": utc(int(r["day"]) * 86400).date().isoformat(),
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
                  ) -> Text:
    header = [first, *(["comments"] if with_comments else []), *FUNNEL[:-1]]
    body = []
    for r in rows:
        cells = [str(r.get("workflow") or r.get("media_id"))]
        if with_comments:
            cells.append(str(r["comments"]))
        cells += [str(r["triggers"]), str(r["sent"]), _rate(r["read"], r["sent"]),
                  _rate(r["clicks"], r["sent"]), str(r["leads"]), str(r["qualified"]),
                  str(r["booked"]), str(r["refused"])]
        body.append(cells)
    return _columns(title, header, body)


def _columns(title: str, header: list[str], rows: list[list[str]]) -> Text:
    """A titled table as styled text: columns as wide as their widest cell, the first
    left-aligned, the others right-aligned. A rich Table measured every cell again on each
    print: ~65 ms for the two funnel tables of a 90-day period."""
    from rich.cells import cell_len
    from rich.text import Text

    widths = [max(cell_len(c) for c in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(c + " " * (w - cell_len(c)) if i == 0 else " " * (w - cell_len(c)) + c
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    out = Text(title, style="italic")
    out.append("\n" + line(header), style="bold")
    for r in rows:
        out.append("\n" + line(r))
    return out


def bar_chart(days: list[dict[str, Any]], width: int = 40) -> Text:
    """Messages per day as horizontal bars (in: cyan, out: magenta), one line per day.
    Plain styled lines, not a rich Table: laying out a 90-row table cost ~70 ms."""
    from rich.text import Text

    chart = Text("messages per day (UTC)")
    peak = max((d["in"] + d["out"] for d in days), default=0)
    scale = width / peak if peak else 0
    counts = [f"{d['in']} in / {d['out']} out" for d in days]
    wide = max((len(c) for c in counts), default=0)
    for d, count in zip(days, counts, strict=True):
        n_in, n_out = round(d["in"] * scale), round(d["out"] * scale)
        chart.append(f"\n{d['date']} ")
        chart.append("█" * n_in, style="cyan")
        chart.append("█" * n_out, style="magenta")
        chart.append(" " * (width - n_in - n_out + 1) + count.rjust(wide))
    return chart


def render(doc: dict[str, Any], console: Console) -> None:
    tot = doc["totals"]
    # Whole seconds for people (the document keeps the exact time).
    until = re.sub(r"\.\d+(?=Z$)", "", str(doc["until"]))
    console.print(f"[bold]instaset stats[/] {doc['since']} → {until}")
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
