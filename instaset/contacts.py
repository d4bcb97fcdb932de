"""Contacts the creator can correct, and their Instagram profiles.

Contracts:

- :func:`set_fields`, :func:`add_tags`, :func:`remove_tags` read the conversation's engine
  state (``conversations.state``, as :func:`instaset.automation.load_state` reads it), change
  exactly what they name, and write it back inside ONE transaction together with one
  ``contact_changes`` row per actual change (who, when, old and new value). A change to the
  value already stored records nothing. ``name`` lives in the ``contacts`` row and in the
  state's ``name`` field (``{first_name}`` in templates reads the latter); ``stage`` is the
  state's stage; any other name is a captured field (``email`` and ``phone`` are checked and
  normalised as an ``ask:`` step would). An empty value removes the field.
- The same transaction rescores the contact's lead (:func:`instaset.ai.scoring.rescore_in`,
  as ``leads rescore`` does), so every listing shows the correction at once. ``stage`` is
  compared with the state's stage; a lead stage (:data:`instaset.leads.STAGES`) is recorded
  as changed from the stage listings showed, a stage of the creator's own ("vip", as a
  workflow's ``stage`` step may set) from itself. A lead stage the lead's score and
  history would not show (one below theirs: a stage set by hand only raises the computed
  one, except ``customer`` and ``lost``) is refused and nothing changes. A stage set by
  hand that makes the lead qualified (or booked, customer) sends no "qualified" notice, now
  or at a later rescore: the creator set it; one their score reached still does, once.
- :func:`forget` is ``instaset purge --contact``'s deletion (:func:`instaset.retention.
  purge_contacts`): every row about the person, in one transaction.
- :class:`Profiles` fetches the User Profile API for people who messaged the account (only
  they have given Meta's consent) in ``profile`` jobs, never on the path of a reply. The answer
  is cached in ``contact_profiles``; ``contacts.username``/``name`` and the state's
  ``follower`` and ``name`` field follow it, except a name the creator corrected, which a
  refresh never overwrites. A refused lookup (no consent) is recorded and not retried until
  the next refresh.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from instaset.ai.scoring import rescore_in
from instaset.automation import load_state
from instaset.config import LeadsConfig
from instaset.engine.decide import validate_answer
from instaset.engine.model import AskSpec, AskType
from instaset.engine.state import ConversationState, FrozenMap
from instaset.errors import (
    InstasetError,
    InvalidParameter,
    PermissionMissing,
    Throttled,
    TokenInvalid,
    UserUnavailable,
)
from instaset.graph import GraphClient
from instaset.leads import STAGES
from instaset.queue import COMPLETED, NewJob, Outcome, RetryLater
from instaset.retention import purge_contacts
from instaset.store import contacts as store
from instaset.store import jobs as jobstore
from instaset.store import unsend as unsendstore
from instaset.store.db import Database
from instaset.store.jobs import Job, complete_in
from instaset.timefmt import iso_or_none
from instaset.token_health import token_rejected
from instaset.tokens import TokenProvider

log = logging.getLogger("instaset.contacts")

DAY = 86400.0
PROFILE_REFRESH = 7 * DAY
PROFILE_BATCH = 100
CONSENT_CODE = 230  # "User consent is required to access user profile"
RESERVED = frozenset({"username", "id", "tags", "follower"})
_FIELD_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_MAX_VALUE = 1000
_MAX_TAG = 64


@dataclass(frozen=True, slots=True)
class ContactRef:
    account_id: str
    contact_id: str


@dataclass(frozen=True, slots=True)
class Change:
    """One recorded change: ``action`` is set, unset, tag or untag."""

    field: str
    action: str
    old: str | None
    new: str | None


async def resolve(db: Database, ref: str, account_id: str | None = None) -> ContactRef:
    """The one contact ``ref`` names (an Instagram-scoped id or a username, ``@`` optional).
    Raises :class:`InstasetError` when none or several match."""
    rows = await store.find_contacts(db, ref.strip(), account_id)
    if not rows:
        where = f" of account {account_id}" if account_id else ""
        raise InstasetError(
            f"no contact {ref!r}{where}; `instaset contacts` lists them "
            "(use the username or the Instagram-scoped id)"
        )
    if len(rows) > 1:
        accts = ", ".join(sorted({str(r["account_id"]) for r in rows}))
        raise InstasetError(
            f"{ref!r} names contacts of several accounts ({accts}); add --account ACCOUNT"
        )
    return ContactRef(str(rows[0]["account_id"]), str(rows[0]["id"]))


def parse_assignments(items: Sequence[str]) -> list[tuple[str, str | None]]:
    """``FIELD=VALUE`` arguments -> (field, value); an empty value means remove."""
    out: list[tuple[str, str | None]] = []
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise InstasetError(f"{item!r} is not FIELD=VALUE (e.g. email=ana@example.com)")
        if name in RESERVED:
            raise InstasetError(
                f"{name} cannot be set by hand"
                + ("; use `instaset contacts tag`" if name == "tags" else
                   " (it comes from Instagram)")
            )
        if not _FIELD_RE.match(name):
            raise InstasetError(
                f"field name {name!r} must be lowercase letters, digits and _ (e.g. email)"
            )
        value = value.strip()
        if len(value) > _MAX_VALUE:
            raise InstasetError(f"the value of {name} is longer than {_MAX_VALUE} characters")
        out.append((name, value or None))
    if not out:
        raise InstasetError("nothing to set: give FIELD=VALUE (e.g. phone=+15551234567)")
    return out


def normalise(field: str, value: str | None) -> str | None:
    """Check and normalise ``email``/``phone`` as an ``ask:`` step does; others as given."""
    if value is None or field not in ("email", "phone"):
        return value
    kind = AskType.EMAIL if field == "email" else AskType.PHONE
    clean = validate_answer(AskSpec(field=field, prompt="?", type=kind), value, None)
    if clean is None:
        what = "an email address" if field == "email" else "a phone number (7-15 digits)"
        raise InstasetError(f"{value!r} is not {what}")
    return clean


def _without(fields: FrozenMap[str], key: str) -> FrozenMap[str]:
    return FrozenMap({k: v for k, v in fields.items() if k != key})


Edit = Callable[[ConversationState, sqlite3.Row, str], tuple[ConversationState, list[Change]]]


async def _edit(db: Database, ref: ContactRef, now: float, by: str, leads: LeadsConfig,
                change: Edit) -> list[Change]:
    """Read-modify-write of one contact's state and change log, and the rescore of their
    lead, in one transaction. ``change`` gets the state, the conversation row and the stage
    listings show."""
    async with db.tx() as conn:
        await store.ensure_conversation(conn, ref.account_id, ref.contact_id, now)
        row = await store.get_state_row(conn, ref.account_id, ref.contact_id)
        if row is None:
            raise InstasetError(f"contact {ref.contact_id} was deleted meanwhile")
        state = load_state(row, ref.account_id, ref.contact_id)
        shown = await store.shown_stage_in(conn, ref.account_id, ref.contact_id)
        new_state, changes = change(state, row, shown)
        if not changes:
            return []
        await store.set_state(conn, ref.account_id, ref.contact_id, new_state.to_json(), now)
        # A value set by hand is the creator's, not an answer the contact may take back.
        await unsendstore.forget_sources(conn, ref.account_id, ref.contact_id,
                                         [ch.field for ch in changes])
        for ch in changes:
            if ch.field == "name":
                await store.set_contact_columns(
                    conn, ref.account_id, ref.contact_id, now, {"name": ch.new}
                )
            await store.record_change(
                conn, account_id=ref.account_id, contact_id=ref.contact_id, field=ch.field,
                action=ch.action, old=ch.old, new=ch.new, by=by, now=now,
            )
        wanted = next((ch.new for ch in changes if ch.field == "stage"), None)
        score, jobs = await rescore_in(conn, leads, ref.account_id, ref.contact_id, now,
                                       stage_by_hand=wanted is not None)
        if wanted is not None and wanted in STAGES and score.stage != wanted:
            raise InstasetError(  # rolls the whole correction back
                f"stage {wanted!r} would not show: the contact's messages, score and bookings "
                f"put them at {score.stage!r}, and a stage set by hand only raises that one "
                "(customer and lost always apply); nothing changed")
        # "qualified", the first time, unless the stage set here made it (the creator knows)
        await jobstore.enqueue_in(conn, jobs, now)
        return changes


async def set_fields(
    db: Database, ref: ContactRef, values: Sequence[tuple[str, str | None]], *, by: str,
    now: float, leads: LeadsConfig,
) -> list[Change]:
    """Set (or with ``None`` remove) fields; see the module docstring."""
    clean = [(f, normalise(f, v)) for f, v in values]
    for f, v in clean:
        if f == "stage" and v is None:
            raise InstasetError("stage cannot be empty (e.g. stage=customer)")

    def change(st: ConversationState, row: sqlite3.Row, shown: str
               ) -> tuple[ConversationState, list[Change]]:
        out: list[Change] = []
        for f, v in clean:
            if f == "stage":
                # Against the stage the state holds (a stage of the creator's own, "vip",
                # is one too, as a workflow's `stage` step sets it); "from" is what
                # listings showed when that was a lead stage.
                assert v is not None
                if st.stage != v:
                    old_shown = shown if st.stage in STAGES or st.stage == "new" else st.stage
                    out.append(Change("stage", "set", old_shown, v))
                    st = replace(st, stage=v)
                continue
            if f == "name":  # the contacts row is the primary copy, the state's field follows
                old = row["name"]
                if old == v and st.fields.get("name") == v:
                    continue
                if old == v:
                    old = st.fields.get("name")
            else:
                old = st.fields.get(f)
                if old == v:
                    continue
            fields = _without(st.fields, f) if v is None else st.fields.set(f, v)
            st = replace(st, fields=fields)
            out.append(Change(f, "unset" if v is None else "set", old, v))
        return st, out

    return await _edit(db, ref, now, by, leads, change)


def _check_tags(tags: Sequence[str]) -> list[str]:
    out: list[str] = []
    for t in tags:
        tag = t.strip()
        if not tag or len(tag) > _MAX_TAG:
            raise InstasetError(f"tag {t!r} must be 1 to {_MAX_TAG} characters")
        if tag not in out:
            out.append(tag)
    if not out:
        raise InstasetError("give at least one tag")
    return out


async def add_tags(
    db: Database, ref: ContactRef, tags: Sequence[str], *, by: str, now: float,
    leads: LeadsConfig,
) -> list[Change]:
    wanted = _check_tags(tags)

    def change(st: ConversationState, _row: sqlite3.Row, _shown: str
               ) -> tuple[ConversationState, list[Change]]:
        new = [t for t in wanted if t not in st.tags]
        return replace(st, tags=st.tags | set(new)), [Change("tags", "tag", None, t) for t in new]

    return await _edit(db, ref, now, by, leads, change)


async def remove_tags(
    db: Database, ref: ContactRef, tags: Sequence[str], *, by: str, now: float,
    leads: LeadsConfig,
) -> list[Change]:
    wanted = _check_tags(tags)

    def change(st: ConversationState, _row: sqlite3.Row, _shown: str
               ) -> tuple[ConversationState, list[Change]]:
        gone = [t for t in wanted if t in st.tags]
        return (replace(st, tags=st.tags - set(gone)),
                [Change("tags", "untag", t, None) for t in gone])

    return await _edit(db, ref, now, by, leads, change)


async def forget(db: Database, ref: ContactRef) -> dict[str, int]:
    """Delete every row about the contact (the deletion of ``purge --contact``)."""
    report = await purge_contacts(db, [(ref.account_id, ref.contact_id)])
    return dict(report.counts)


# -- reading -----------------------------------------------------------------------------------
def _bool(value: object) -> bool | None:
    return None if value is None else bool(value)


def contact_json(row: sqlite3.Row) -> dict[str, Any]:
    """One contact as the CLI's ``--json`` shows it."""
    raw = row["state"] or "{}"
    data = json.loads(raw) if raw else {}
    follows = _bool(row["is_user_follow_business"])
    if follows is None and data.get("follower") is not None:
        follows = bool(data["follower"])
    return {
        "account_id": row["account_id"],
        "id": row["id"],
        "username": row["username"],
        "name": row["name"],
        "tags": sorted(data.get("tags") or []),
        "fields": dict(data.get("fields") or {}),
        "stage": row["stage"],  # store.ai.shown_stage_sql: as `leads` has it
        "follower": follows,
        "profile": None if row["profile_fetched_at"] is None else {
            "profile_pic": row["profile_pic"],
            "follower_count": row["follower_count"],
            "is_user_follow_business": _bool(row["is_user_follow_business"]),
            "is_business_follow_user": _bool(row["is_business_follow_user"]),
            "fetched_at": iso_or_none(row["profile_fetched_at"]),
            "error": row["profile_error"],
        },
        "first_seen_at": iso_or_none(row["first_seen_at"]),
        "last_message_at": iso_or_none(row["last_message_at"]),
        "last_inbound_at": iso_or_none(row["last_inbound_at"]),
        "paused_until": iso_or_none(row["paused_until"]),
    }


def change_json(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "field": row["field"], "action": row["action"], "old": row["old_value"],
        "new": row["new_value"], "by": row["changed_by"], "at": iso_or_none(row["changed_at"]),
    }


async def listing(db: Database, account_id: str | None = None) -> list[dict[str, Any]]:
    return [contact_json(r) for r in await store.list_contacts(db, account_id)]


async def details(db: Database, ref: ContactRef) -> dict[str, Any]:
    """One contact with its change log (``contacts show --json``)."""
    row = await store.get_contact(db, ref.account_id, ref.contact_id)
    if row is None:
        raise InstasetError(f"contact {ref.contact_id} does not exist (any more)")
    out = contact_json(row)
    out["changes"] = [change_json(c) for c in await store.changes(db, *_pair(ref))]
    return out


def _pair(ref: ContactRef) -> tuple[str, str]:
    return ref.account_id, ref.contact_id


# -- profiles ----------------------------------------------------------------------------------
def profile_from_graph(data: dict[str, object]) -> store.Profile:
    def text(key: str) -> str | None:
        v = data.get(key)
        return v if isinstance(v, str) and v else None

    def flag(key: str) -> bool | None:
        v = data.get(key)
        return v if isinstance(v, bool) else None

    count = data.get("follower_count")
    return store.Profile(
        name=text("name"), username=text("username"), profile_pic=text("profile_pic"),
        follower_count=count if isinstance(count, int) and not isinstance(count, bool) else None,
        is_user_follow_business=flag("is_user_follow_business"),
        is_business_follow_user=flag("is_business_follow_user"),
    )


class Profiles:
    """User Profile API lookups: :meth:`enqueue_due` (from the periodic catch-up job) and
    :meth:`profile_job` (the ``profile`` job handler)."""

    def __init__(
        self, db: Database, graph: GraphClient, tokens: TokenProvider, *,
        clock: Callable[[], float] = time.time, refresh_seconds: float = PROFILE_REFRESH,
        batch: int = PROFILE_BATCH,
    ) -> None:
        self.db = db
        self.graph = graph
        self.tokens = tokens
        self.clock = clock
        self.refresh_seconds = refresh_seconds
        self.batch = batch

    async def enqueue_due(self) -> int:
        """Queue a ``profile`` job for each contact whose profile is missing or stale. The key
        carries the refresh period, so a contact is looked up at most once per period."""
        now = self.clock()
        rows = await store.profiles_due(
            self.db, now=now, refresh_seconds=self.refresh_seconds, limit=self.batch
        )
        period = int(now // self.refresh_seconds)
        jobs = [
            NewJob("profile", f"profile:{r['account_id']}:{r['id']}:{period}",
                   {"account_id": r["account_id"], "contact_id": r["id"]}, run_at=now,
                   max_attempts=4)
            for r in rows
        ]
        if jobs:
            await jobstore.enqueue(self.db, jobs, now)
        return len(jobs)

    async def profile_job(self, job: Job) -> Outcome | None:
        """The ``profile`` job: the lookup's result and the job's completion commit
        together (COMPLETED), except when nothing was written (None: the worker completes)."""
        return await self.fetch(
            str(job.payload["account_id"]), str(job.payload["contact_id"]), job=job
        )

    async def fetch(self, acct: str, contact: str, *, job: Job | None = None
                    ) -> Outcome | None:
        """Look the contact's profile up and apply it (see :meth:`apply`); a refusal is
        recorded, throttling raises :class:`RetryLater`. With ``job``, its completion is
        part of the transaction that records the result (COMPLETED is then returned)."""
        if not await store.contact_exists(self.db, acct, contact):
            return None  # forgotten meanwhile
        token = await self.tokens.token(acct)
        if not token:
            log.info("no token for account %s: profile of %s not fetched", acct, contact)
            return None
        try:
            data = await self.graph.user_profile(contact, token=token)
        except PermissionMissing as exc:
            reason = "no_consent" if exc.code == CONSENT_CODE else "permission_missing"
            return await self._failed(acct, contact, reason, job)
        except (InvalidParameter, UserUnavailable) as exc:
            return await self._failed(acct, contact, type(exc).__name__.lower(), job)
        except TokenInvalid:
            await token_rejected(self.db, self.tokens, acct, token, self.clock())
            return None
        except Throttled as exc:
            raise RetryLater(exc.retry_after or 60.0, "user profile throttled",
                             count_attempt=False) from None
        return await self.apply(acct, contact, profile_from_graph(data), job=job)

    async def _failed(self, acct: str, contact: str, reason: str, job: Job | None
                      ) -> Outcome | None:
        now = self.clock()
        async with self.db.tx(relaxed=True) as conn:
            await store.save_profile(conn, acct, contact, None, now, error=reason)
            if job is not None:
                await complete_in(conn, job, now)
        return None if job is None else COMPLETED

    async def apply(self, acct: str, contact: str, profile: store.Profile, *,
                    job: Job | None = None) -> Outcome | None:
        """Cache ``profile`` and let the contact and its state follow it (one transaction,
        which also completes ``job`` if given: COMPLETED is then returned)."""
        now = self.clock()
        # Relaxed: a lookup lost to a power loss is simply made again.
        async with self.db.tx(relaxed=True) as conn:
            if job is not None:
                await complete_in(conn, job, now)
            row = await store.get_state_row(conn, acct, contact)
            if row is None:
                return None if job is None else COMPLETED
            await store.save_profile(conn, acct, contact, profile, now)
            state = load_state(row, acct, contact)
            new_state = state
            columns: dict[str, str | None] = {}
            changes: list[Change] = []
            if profile.username and profile.username != row["username"]:
                columns["username"] = profile.username
                changes.append(Change("username", "set", row["username"], profile.username))
                new_state = replace(new_state, username=profile.username)
            corrected = await store.corrected_by_creator(conn, acct, contact, "name")
            if profile.name and not corrected and profile.name != row["name"]:
                columns["name"] = profile.name
                changes.append(Change("name", "set", row["name"], profile.name))
                # A name a workflow captured itself is left alone.
                if state.fields.get("name") in (None, row["name"]):
                    new_state = replace(new_state, fields=state.fields.set("name", profile.name))
                    await unsendstore.forget_sources(conn, acct, contact, ("name",))
            if profile.is_user_follow_business is not None:
                new_state = replace(new_state, follower=profile.is_user_follow_business)
            await store.set_contact_columns(conn, acct, contact, now, columns)
            if new_state != state:
                await store.set_state(conn, acct, contact, new_state.to_json(), now)
            for ch in changes:
                await store.record_change(
                    conn, account_id=acct, contact_id=contact, field=ch.field,
                    action=ch.action, old=ch.old, new=ch.new, by="profile", now=now,
                )
        return None if job is None else COMPLETED
