"""``instaset export``: everything stored about the accounts (or one contact) as portable,
versioned JSON; leads as CSV. Never a secret: tokens live in the secret store, never in the
database, and columns whose names look secret are dropped from other features' tables.

Format ``instaset-export`` version 1 (``EXPORT_SCHEMA`` is its JSON Schema; ``instaset export
--schema`` prints it)::

    {
      "format": "instaset-export", "version": 1,
      "exported_at": "2025-03-01T12:00:00Z",          # every time is ISO 8601 UTC
      "scope": {"type": "all" | "account" | "contact", "account_id": str|null,
                "contact_id": str|null},
      "accounts": [{"id", "username", "state", "sandbox", "subscribed_fields",
                    "token_expires_at", "created_at"}],
      "contacts": [{
          "account_id", "id", "username", "name", "first_seen_at",
          "stage", "tags", "fields",                    # the workflow engine's view
          "conversation": {"last_inbound_at", "last_message_at", "paused_until", "unread",
                           "state"},                   # state: the engine's full JSON
          "messages": [{"mid", "direction", "text", "created_at", "sent_by", "attachments",
                        "media", "reactions", "reply_to", "edited", "deleted_at", "preview"}],
          "sends":    [{"key", "kind", "state", "sent_by", "reason", "detail", "workflow",
                        "text", "message_id", "created_at", "updated_at"}],
                                               # detail: why a refused or failed send did
                                               # not go, in Meta's words (message and code)
                                               # or the sending rules'; null when it went
                                               # out, or was refused by an older instaset
          "links":    [{"code", "url", "created_at", "clicks": [ISO time, ...]}],
          "notifications": [{"kind", "text", "created_at", "delivered_at"}],
          "events":   [{"id", "kind", "occurred_at", "received_at", "payload"}],  # Meta's
                                               # (id null: acknowledged, still staged)
          "other": {table: [row, ...]}                 # other features' rows (drafts, leads)
      }],
      "events": [{"account_id", "contact_id", "id", "kind", "occurred_at", "received_at",
                  "payload"}],                     # Meta's events filed under no contact:
                                               # the account's own comments and replies,
                                               # unknown kinds, mentions (not in a
                                               # contact's export; absent there)
      "notifications": [...]                           # account-level ones
    }

Readers must ignore keys they do not know; a new key is not a new version. A change that
removes or redefines a key bumps ``version``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import IO, Any

from instaset.errors import InstasetError
from instaset.inbox import ContactRef, iso_utc, message_json
from instaset.outbox import Outgoing
from instaset.store import retention as tables
from instaset.store.db import Database
from instaset.store.ingest import any_staged

FORMAT = "instaset-export"
VERSION = 1
# Column (and table) names that may hold a secret. "prompt_tokens" (a count) does not match.
_SECRETISH = re.compile(r"(^|_)(access_|refresh_)?token$|secret|password|api_?key|credential",
                        re.IGNORECASE)
_SPINE = frozenset({"messages", "sends", "events", "notifications", "links", "clicks",
                    "conversations", "staged_events"})
PAGE = 500

_T = {"type": "string"}
_TN = {"type": ["string", "null"]}
_I = {"type": "integer"}
_IN = {"type": ["integer", "null"]}


def _obj(props: dict[str, Any], *, extra: bool = True) -> dict[str, Any]:
    return {"type": "object", "required": sorted(props), "properties": props,
            "additionalProperties": extra}


def _arr(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


EXPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "instaset export, version 1",
    **_obj({
        "format": {"const": FORMAT},
        "version": {"const": VERSION},
        "exported_at": _T,
        "scope": _obj({"type": {"enum": ["all", "account", "contact"]},
                       "account_id": _TN, "contact_id": _TN}),
        "accounts": _arr(_obj({"id": _T, "username": _TN, "state": _T,
                               "sandbox": {"type": "boolean"},
                               "subscribed_fields": _arr(_T),
                               "token_expires_at": _TN, "created_at": _TN})),
        "contacts": _arr(_obj({
            "account_id": _T, "id": _T, "username": _TN, "name": _TN, "first_seen_at": _TN,
            "stage": _T, "tags": _arr(_T), "fields": {"type": "object"},
            "conversation": {"type": ["object", "null"]},
            "messages": _arr(_obj({"mid": _TN, "direction": {"enum": ["in", "out"]},
                                   "text": _TN, "created_at": _T,
                                   "sent_by": {"enum": ["contact", "automation", "human"]},
                                   "attachments": _arr({"type": "object"})})),
            "sends": _arr(_obj({"key": _T, "kind": _T, "state": _T, "sent_by": _T,
                                "reason": _TN, "workflow": _TN, "text": _TN,
                                "message_id": _TN, "created_at": _T, "updated_at": _T})),
            "links": _arr(_obj({"code": _T, "url": _T, "created_at": _T,
                                "clicks": _arr(_T)})),
            "notifications": _arr({"type": "object"}),
            "events": _arr(_obj({"id": _IN, "kind": _T, "occurred_at": _TN,
                                 "received_at": _TN, "payload": {}})),
            "other": {"type": "object"},
        })),
        "notifications": _arr(_obj({"kind": _T, "text": _T, "created_at": _T,
                                    "delivered_at": _TN})),
    }),
}
# Since 2026-12 (a new key, version 1 still): not required, so older exports stay valid.
EXPORT_SCHEMA["properties"]["events"] = _arr(_obj({
    "account_id": _T, "contact_id": _TN, "id": _IN, "kind": _T, "occurred_at": _TN,
    "received_at": _TN, "payload": {}}))

# Since 2026-12 too (a new key, version 1 still; not required): a send's refusal in words.
EXPORT_SCHEMA["properties"]["contacts"]["items"]["properties"]["sends"]["items"][
    "properties"]["detail"] = _TN

# Events filed under no exported contact (no contact id, the account's own, or one without
# a contacts row), staged ones last (id null), ?1: the account or NULL for all; paged by ?2.
_UNFILED_EVENTS = """
SELECT id, account_id, contact_id, kind, occurred_at, received_at, raw, staged, n FROM (
  SELECT id, account_id, contact_id, kind, occurred_at, received_at, raw, 0 AS staged, id AS n
  FROM events e WHERE (?1 IS NULL OR account_id = ?1) AND (contact_id IS NULL
    OR NOT EXISTS (SELECT 1 FROM contacts k WHERE k.account_id = e.account_id
                   AND k.id = e.contact_id))
  UNION ALL
  SELECT NULL, account_id, contact_id, kind, occurred_at, received_at, raw, 1, id
  FROM staged_events s WHERE (?1 IS NULL OR account_id = ?1) AND (contact_id IS NULL
    OR NOT EXISTS (SELECT 1 FROM contacts k WHERE k.account_id = s.account_id
                   AND k.id = s.contact_id)))
WHERE (staged, n) > (?2, ?3) ORDER BY staged, n LIMIT ?4
"""


def _clean_row(row: Any) -> dict[str, Any]:
    """A row of another feature's table, without secret-looking columns; JSON text columns
    are kept as text (their meaning is that feature's)."""
    return {k: row[k] for k in row.keys() if not _SECRETISH.search(k)}  # noqa: SIM118


def _notification(row: Any) -> dict[str, Any]:
    return {"kind": row["kind"], "text": row["text"], "created_at": iso_utc(row["created_at"]),
            "delivered_at": iso_utc(row["delivered_at"])}


def _send(row: Any) -> dict[str, Any]:
    try:
        text = Outgoing.from_json(row["body"]).text
    except (ValueError, TypeError, KeyError):
        text = None
    return {"key": row["key"], "kind": row["kind"], "state": row["state"],
            "sent_by": row["sent_by"], "reason": row["reason"], "detail": row["detail"],
            "workflow": row["workflow"],
            "text": text, "message_id": row["message_id"],
            "created_at": iso_utc(row["created_at"]), "updated_at": iso_utc(row["updated_at"])}


async def _contact_doc(
    db: Database, acct: str, cid: str, others: list[str], events: bool, staged: bool,
) -> dict[str, Any]:
    k = await db.fetchone(
        "SELECT k.*, v.state, v.last_inbound_at, v.last_message_at, v.paused_until, v.unread"
        " FROM contacts k LEFT JOIN conversations v ON v.account_id = k.account_id"
        " AND v.contact_id = k.id WHERE k.account_id = ? AND k.id = ?", (acct, cid))
    assert k is not None
    state = json.loads(k["state"]) if k["state"] else None
    st = state or {}
    args = (acct, cid)
    msgs = await db.fetchall("SELECT * FROM messages WHERE account_id = ? AND contact_id = ?"
                             " ORDER BY created_at, id", args)
    sends = await db.fetchall("SELECT * FROM sends WHERE account_id = ? AND contact_id = ?"
                              " ORDER BY created_at, key", args)
    links = await db.fetchall(
        "SELECT l.code, l.url, l.created_at, (SELECT json_group_array(c.at) FROM"
        " (SELECT at FROM clicks c WHERE c.code = l.code ORDER BY at) c) AS clicks"
        " FROM links l WHERE l.account_id = ? AND l.contact_id = ? ORDER BY l.created_at", args)
    notes = await db.fetchall("SELECT * FROM notifications WHERE account_id = ?"
                              " AND contact_id = ? ORDER BY created_at, id", args)
    doc: dict[str, Any] = {
        "account_id": acct, "id": cid, "username": k["username"], "name": k["name"],
        "first_seen_at": iso_utc(k["first_seen_at"]),
        "stage": st.get("stage") or "new", "tags": st.get("tags") or [],
        "fields": st.get("fields") or {},
        "conversation": None if k["unread"] is None else {
            "last_inbound_at": iso_utc(k["last_inbound_at"]),
            "last_message_at": iso_utc(k["last_message_at"]),
            "paused_until": iso_utc(k["paused_until"]), "unread": k["unread"], "state": state,
        },
        "messages": [message_json(m) for m in msgs],
        "sends": [_send(s) for s in sends],
        "links": [{"code": r["code"], "url": r["url"], "created_at": iso_utc(r["created_at"]),
                   "clicks": [iso_utc(t) for t in json.loads(r["clicks"] or "[]")]}
                  for r in links],
        "notifications": [_notification(n) for n in notes],
        "events": [],
        "other": {},
    }
    if events:
        # With the events ingest has acknowledged and not moved into events yet (staged
        # under load: store/ingest.py), after the others, in arrival order. Staged rows have
        # no contact index: when there are none (the usual case), they are not looked for.
        sql = ("SELECT id, kind, occurred_at, received_at, raw FROM events"
               " WHERE account_id = ?1 AND contact_id = ?2 ORDER BY id")
        if staged:
            sql = ("SELECT id, kind, occurred_at, received_at, raw FROM ("
                   " SELECT id, kind, occurred_at, received_at, raw, 0 AS staged, id AS n"
                   " FROM events WHERE account_id = ?1 AND contact_id = ?2 UNION ALL"
                   " SELECT NULL, kind, occurred_at, received_at, raw, 1, id FROM staged_events"
                   " WHERE account_id = ?1 AND contact_id = ?2) ORDER BY staged, n")
        rows = await db.fetchall(sql, args)
        doc["events"] = [{"id": r["id"], "kind": r["kind"],
                          "occurred_at": iso_utc(r["occurred_at"]),
                          "received_at": iso_utc(r["received_at"]),
                          "payload": json.loads(r["raw"])} for r in rows]
    for t in others:
        rows = await db.fetchall(f"SELECT * FROM {t} WHERE account_id = ? AND contact_id = ?",
                                 args)
        if rows:
            doc["other"][t] = [_clean_row(r) for r in rows]
    return doc


async def _contacts(db: Database, account_id: str | None) -> AsyncIterator[tuple[str, str]]:
    cursor = ("", "")
    while True:
        page = await tables.contacts_page(db, account_id, cursor, PAGE)
        if not page:
            return
        for item in page:
            yield item
        cursor = page[-1]


async def _scope(
    db: Database, account_id: str | None, contact: ContactRef | None
) -> AsyncIterator[tuple[str, str]]:
    if contact is not None:
        yield (contact.account_id, contact.contact_id)
        return
    async for item in _contacts(db, account_id):
        yield item


async def write_export(
    db: Database, out: IO[str], now: float, *, account_id: str | None = None,
    contact: ContactRef | None = None, events: bool = True,
    progress: Callable[[int], None] = lambda _n: None,
) -> int:
    """Stream the export document to ``out`` (one contact in memory at a time). Returns the
    number of contacts written."""
    cols = await tables.columns(db)
    others = [t for t in tables.contact_tables(cols) if t not in _SPINE
              and not _SECRETISH.search(t)]
    scope: dict[str, str | None]
    if contact is not None:
        scope = {"type": "contact", "account_id": contact.account_id,
                 "contact_id": contact.contact_id}
        account_id = contact.account_id
    else:
        scope = {"type": "account" if account_id else "all", "account_id": account_id,
                 "contact_id": None}
    accts = await db.fetchall("SELECT * FROM accounts WHERE ?1 IS NULL OR id = ?1 ORDER BY id",
                              (account_id,))
    head = {
        "format": FORMAT, "version": VERSION, "exported_at": iso_utc(now), "scope": scope,
        "accounts": [{"id": a["id"], "username": a["username"], "state": a["state"],
                      "sandbox": bool(a["sandbox"]),
                      "subscribed_fields": json.loads(a["subscribed_fields"] or "[]"),
                      "token_expires_at": iso_utc(a["token_expires_at"]),
                      "created_at": iso_utc(a["created_at"])} for a in accts],
    }
    text = json.dumps(head, ensure_ascii=False, indent=1)
    out.write(text[: text.rindex("}")].rstrip() + ',\n "contacts": [')
    staged = await any_staged(db)
    n = 0
    async for acct, cid in _scope(db, account_id, contact):
        doc = await _contact_doc(db, acct, cid, others, events, staged=staged)
        out.write(("\n  " if n == 0 else ",\n  ") + json.dumps(doc, ensure_ascii=False))
        n += 1
        progress(n)
    notes: list[Any] = []
    if contact is None:
        if events:
            await _write_unfiled_events(db, out, account_id)
        notes = await db.fetchall(
            "SELECT * FROM notifications WHERE contact_id IS NULL AND (?1 IS NULL OR"
            " account_id = ?1 OR account_id IS NULL) ORDER BY created_at, id", (account_id,))
    out.write("\n ],\n \"notifications\": " + json.dumps([_notification(r) for r in notes],
                                                          ensure_ascii=False) + "\n}\n")
    return n


async def _write_unfiled_events(db: Database, out: IO[str], account_id: str | None) -> None:
    """The top-level ``events``, a page at a time."""
    out.write('\n ],\n "events": [')
    cursor: tuple[int, int] = (-1, 0)
    first = True
    while True:
        rows = await db.fetchall(_UNFILED_EVENTS, (account_id, *cursor, PAGE))
        for r in rows:
            item = {"account_id": r["account_id"], "contact_id": r["contact_id"],
                    "id": r["id"], "kind": r["kind"], "occurred_at": iso_utc(r["occurred_at"]),
                    "received_at": iso_utc(r["received_at"]), "payload": json.loads(r["raw"])}
            out.write(("\n  " if first else ",\n  ") + json.dumps(item, ensure_ascii=False))
            first = False
        if len(rows) < PAGE:
            return
        cursor = (int(rows[-1]["staged"]), int(rows[-1]["n"]))


def read_export(text: str) -> dict[str, Any]:
    """Parse an export, refusing anything that is not ``instaset-export`` version 1."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InstasetError(f"not an instaset export: invalid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InstasetError("not an instaset export: \"format\" is not \"instaset-export\"")
    if doc.get("version") != VERSION:
        raise InstasetError(f"instaset export version {doc.get('version')!r} is not supported "
                            f"(this instaset reads version {VERSION})")
    return doc


_LEAD_SQL = (
    "SELECT k.account_id, k.id, k.username, k.name, k.first_seen_at, v.state,"
    " v.last_message_at, v.paused_until"
    " FROM conversations v JOIN contacts k ON k.account_id = v.account_id AND k.id = v.contact_id"
    " WHERE (?1 IS NULL OR v.account_id = ?1)"
    " AND (coalesce(json_extract(v.state, '$.stage'), 'new') != 'new'"
    "  OR EXISTS (SELECT 1 FROM json_each(v.state, '$.tags') WHERE value = 'lead'))"
    " ORDER BY v.last_message_at DESC"
)


async def leads_csv(db: Database, account_id: str | None = None) -> str:
    """Leads (any stage after ``new``, or tagged ``lead``) as CSV: identity, stage, tags, one
    column per captured field (``field:email`` ...), first seen and last message times."""
    rows = await db.fetchall(_LEAD_SQL, (account_id,))
    states = [json.loads(r["state"] or "{}") for r in rows]
    field_names = sorted({str(k) for s in states for k in (s.get("fields") or {})})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["account_id", "contact_id", "username", "name", "stage", "tags",
                *(f"field:{f}" for f in field_names), "first_seen_at", "last_message_at"])
    for r, s in zip(rows, states, strict=True):
        fields = s.get("fields") or {}
        w.writerow([r["account_id"], r["id"], r["username"] or "", r["name"] or "",
                    s.get("stage") or "new", " ".join(sorted(s.get("tags") or [])),
                    *(fields.get(f, "") for f in field_names),
                    iso_utc(r["first_seen_at"]) or "", iso_utc(r["last_message_at"]) or ""])
    return buf.getvalue()
