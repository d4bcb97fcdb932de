"""Benchmark: ``instaset workflows replay`` over a large stored history, and ``decide()`` per
event, each beside a baseline measured in the same run.

Usage::

    .venv/bin/python bench/replay.py                    # 100000 stored events, 50 workflows
    .venv/bin/python bench/replay.py --events 20000 --no-cli
    .venv/bin/python bench/replay.py --quick            # CI smoke: 10000 events
    .venv/bin/python bench/replay.py --profile /tmp/replay.prof

What one run does (everything in a temporary directory, nothing on the network):

1. Builds a database with the real migrations (``open_database``), then writes ``--events``
   ``events`` rows with ``sqlite3.executemany``, shaped as the ingest writer stores them:
   DMs naming a keyword of one of the 50 workflows (word, any_word, contains, exact, regex and
   emoji modes, with case and accent variants) and DMs matching none (they reach the
   fallback), comments on a few media ids (hits, misses and replies), button postbacks and
   quick-reply taps, two multi-step flows (a DM keyword, a question, then a valid, invalid or
   unrelated answer), story mentions and replies, ad referrals, reactions, and echoes of our
   own sends (some recorded in ``messages`` as the creator typing in the app, which pauses
   automation). 20 % of the senders have a ``contacts`` + ``conversations`` row.
2. **baseline**: the same query replay runs, every row's ``raw`` JSON decoded, no parsing into
   events and no decision. Then **parse**: the same plus ``parse_webhook`` (what
   ``load_history`` does).
3. **replay (library)**: ``load_history`` + ``replay_config``, i.e. ``workflows replay``
   without the CLI's startup and printing.
4. **replay (CLI)**: ``python -m instaset --config ... workflows replay --since all`` in a
   subprocess, its stdout drained to a pipe; the wall time includes interpreter start-up and
   printing every step that fired. Skip it with ``--no-cli``.
5. **decide() micro-bench**: the events replayed in order through ``decide`` (the indexed
   engine, the compiled form cached per workflow list) and through ``decide_scan`` (the
   reference that tries every workflow in priority order), each threading its own
   conversation states; µs per event, and the two must agree on every decision.

Exit 0 when the run completed (targets met or not); 1 on a correctness failure (replay did not
read every event, the CLI count disagrees, or ``decide`` and ``decide_scan`` disagree); 2 when
the harness could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import json
import os
import random
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from instaset.config import load_config  # noqa: E402
from instaset.engine.decide import decide  # noqa: E402
from instaset.engine.state import ConversationState  # noqa: E402
from instaset.events import parse_webhook  # noqa: E402

try:  # the reference scan; older trees have only the one decide
    from instaset.engine.decide import decide_scan
except ImportError:  # pragma: no cover
    decide_scan = decide
from instaset.replay import load_history, replay_config  # noqa: E402
from instaset.sandbox.wire import (  # noqa: E402
    build_comment_payload,
    build_dm_payload,
    build_echo_payload,
)
from instaset.store import history as store_history  # noqa: E402
from instaset.store import replay as store_replay  # noqa: E402
from instaset.store.db import open_database  # noqa: E402

ACCOUNT_ID = "17841400000000001"
TARGET_REPLAY_S = 10.0
SPAN = 30 * 86400.0  # the history covers the last 30 days

TOPICS = (
    "recipe", "workout", "mealplan", "yoga", "nutrición", "pilates", "stretching", "cardio",
    "protein", "vegan", "keto", "running", "marathon", "sleep", "mindset", "posture",
    "mobility", "hiit", "bulking", "cutting", "supplements",
)
ANY_WORD = ("discount code", "group class", "gift card", "bootcamp ticket")
EXACT = ("price", "precio", "info")
CONTAINS = ("human", "agent")
REGEXES = (r"\border\s*#?\d{4,}", r"(?i)\bpromo[-_ ]?code\b")
EMOJI = ("🔥", "❤️")
MEDIA = tuple(f"1790000000000{i:04d}" for i in range(20))
FILLER = (
    "hey", "love", "your", "content", "thanks", "so", "much", "great", "video", "today",
    "question", "about", "the", "last", "reel", "how", "do", "you", "stay", "motivated",
    "amazing", "can", "i", "ask", "something", "hola", "qué", "tal", "gracias", "muy", "bueno",
    "wow", "this", "helped", "me", "a", "lot", "😍", "🙏", "!", "?",
)
PAYLOADS = ("BOOK_CALL", "PRICES", "MENU_GUIDE", "MENU_ABOUT", "UNKNOWN_BUTTON")


def workflows() -> list[dict[str, Any]]:
    """A realistic 50-workflow config for a fitness coach (see the module docs)."""
    wfs: list[dict[str, Any]] = [
        {"name": "human-please", "priority": 20,
         "trigger": {"dm": {"keywords": list(CONTAINS), "match": "contains"}},
         "actions": [{"reply": "Sure, I'll get back to you myself!"},
                     {"handoff": {"pause_for": "2h", "note": "asked for a human"}}]},
        {"name": "free-guide", "priority": 10,
         "trigger": {"dm": {"keywords": ["guide", "free guide", "guía"]}},
         "when": {"cooldown": "24h"},
         "actions": [{"reply": {"variants": ["Hey {username|there}! The guide: {link:guide}",
                                            "Here you go: {link:guide} 💪"]}},
                     {"tag": "guide"},
                     {"ask": {"field": "email", "type": "email",
                              "prompt": "Want the meal plan too? What's your email?",
                              "retry": "Hmm, that doesn't look like an email.",
                              "max_retries": 1}},
                     {"reply": "Thanks! The meal plan is on its way to {email} 🥗"},
                     {"delay": "1h"},
                     {"reply": "Did you get the meal plan, {first_name|friend}?"}]},
        {"name": "quiz", "priority": 10,
         "trigger": {"dm": {"keywords": ["quiz"], "match": "exact"}},
         "actions": [{"ask": {"field": "goal", "type": "choice",
                              "prompt": "What's your goal?",
                              "choices": ["Lose fat", "Build muscle", "Feel better"]}},
                     {"reply": "Great, {goal} it is! Here's a plan: {link:plan}"},
                     {"tag": "quiz"}]},
    ]
    for i, topic in enumerate(TOPICS):
        wf: dict[str, Any] = {
            "name": f"topic-{i:02d}", "priority": 5 if i % 3 == 0 else 0,
            "trigger": {"dm": {"keywords": [topic, f"{topic} tips"]}},
            "actions": [{"reply": f"Here are my best {topic} resources, {{first_name|friend}}: "
                                  f"https://example.com/{i}"},
                        {"tag": f"topic_{i:02d}"}],
        }
        if i % 4 == 0:
            wf["when"] = {"cooldown": "12h"}
        if i % 5 == 1:
            wf["when"] = {"tags_none": ["customer"]}
        wfs.append(wf)
    for i, kw in enumerate(ANY_WORD):
        wfs.append({"name": f"any-{i}", "trigger": {"dm": {"keywords": [kw],
                                                           "match": "any_word"}},
                    "actions": [{"reply": f"About {kw}: https://example.com/any/{i}"}]})
    for i, kw in enumerate(EXACT):
        wfs.append({"name": f"exact-{i}", "priority": 3,
                    "trigger": {"dm": {"keywords": [kw], "match": "exact"}},
                    "actions": [{"buttons": {"text": "Prices", "buttons": [
                        {"title": "Book a call", "payload": "BOOK_CALL"},
                        {"title": "See site", "url": "https://example.com/prices"}]}}]})
    for i, rx in enumerate(REGEXES):
        wfs.append({"name": f"regex-{i}", "priority": 8,
                    "trigger": {"dm": {"keywords": [rx], "match": "regex"}},
                    "actions": [{"reply": "Let me check that for you."},
                                {"notify": "@{username} asked: {text}"}]})
    wfs.append({"name": "emoji-love", "trigger": {"dm": {"keywords": list(EMOJI)}},
                "actions": [{"reply": "🥰"}]})
    for i in range(3):
        wfs.append({"name": f"comment-media-{i}", "priority": 10,
                    "trigger": {"comment": {"keywords": ["guide", "recipe", "link"],
                                            "media": [MEDIA[i]]}},
                    "actions": [{"private_reply": "Hey {username|there}! Here it is 📩"},
                                {"public_reply": ["Sent! 📩", "Check your DMs 🙌",
                                                  "On its way!"]},
                                {"tag": "commenter"}]})
    wfs.append({"name": "comment-any", "priority": 5,
                "trigger": {"comment": {"keywords": ["guide", "info", "🔥"], "media": "any"}},
                "actions": [{"private_reply": "Hi! The guide: {link:guide}"},
                            {"public_reply": "Check your DMs!"}]})
    wfs.append({"name": "comment-price", "priority": 4,
                "trigger": {"comment": {"keywords": ["price", "how much"], "media": "any",
                                        "replies": True}},
                "actions": [{"private_reply": "Prices are on https://example.com/prices"}]})
    wfs.append({"name": "live-hello", "trigger": {"live_comment": {"keywords": ["hi", "hello"]}},
                "actions": [{"private_reply": "Thanks for joining the live!"}]})
    wfs.append({"name": "book-call", "priority": 6,
                "trigger": {"dm": {"keywords": ["call", "coaching", "book"]},
                            "postback": {"payload": ["BOOK_CALL"]}},
                "actions": [{"reply": {"text": "Want to pick a time?", "quick_replies": [
                    {"title": "Yes please", "payload": "BOOK_YES"},
                    {"title": "Not now", "payload": "BOOK_NO"}]}},
                    {"tag": "lead"}, {"stage": "engaged"}, {"score": {"points": 10}}]})
    wfs.append({"name": "book-yes", "trigger": {"postback": {"payload": ["BOOK_YES"]}},
                "actions": [{"reply": "Great, here's my calendar: https://example.com/cal"},
                            {"notify": "@{username} is booking"}]})
    wfs.append({"name": "book-no", "trigger": {"postback": {"payload": ["BOOK_NO"]}},
                "actions": [{"reply": "No problem!"}]})
    wfs.append({"name": "prices", "trigger": {"postback": {"payload": ["PRICES"]}},
                "actions": [{"reply": "1:1 coaching is $99/month."}]})
    wfs.append({"name": "menu", "trigger": {"postback": {"payload": ["MENU_GUIDE",
                                                                     "MENU_ABOUT"]}},
                "actions": [{"reply": "Here's what I do: https://example.com/about"}]})
    wfs.append({"name": "story-mention", "trigger": {"story_mention": True},
                "actions": [{"reply": "Thanks for the mention, {username|friend}! 🙏"}]})
    wfs.append({"name": "story-reply", "trigger": {"story_reply": {"keywords": []}},
                "when": {"cooldown": "1h"},
                "actions": [{"reply": "Glad you liked the story!"}]})
    wfs.append({"name": "ad-referral", "trigger": {"referral": {"ref": ["spring_ad"]}},
                "actions": [{"reply": "Thanks for checking out the spring offer!"}]})
    wfs.append({"name": "welcome", "priority": 1, "trigger": {"first_message": True},
                "actions": [{"reply": "Hi {username|there}, welcome! 👋"}]})
    wfs.append({"name": "ask-me", "trigger": {"fallback": True},
                "when": {"cooldown": "1h", "quiet_hours": {"days": "daily", "from": "23:00",
                                                           "to": "07:00"}},
                "actions": [{"reply": "Thanks for your message! I'll reply soon."}]})
    assert len(wfs) == 50, len(wfs)
    return wfs


@dataclass(slots=True)
class Built:
    events: int
    seconds: float


def _mid(n: int) -> str:
    return base64.b64encode(f"ig_message_item:1:bench:{n:012d}".encode()).decode()


def _filler(rng: random.Random, k: int) -> list[str]:
    return [rng.choice(FILLER) for _ in range(k)]


def _vary(rng: random.Random, word: str) -> str:
    roll = rng.random()
    if roll < 0.2:
        return word.upper()
    if roll < 0.35:
        return word.capitalize() + rng.choice(("!", "?", "..."))
    if roll < 0.45:
        return word.replace("ó", "o").replace("í", "i")
    return word


def _hit_text(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.55:
        kw = _vary(rng, rng.choice(TOPICS))
    elif roll < 0.65:
        kw = rng.choice(ANY_WORD).split()[rng.randrange(2)]
    elif roll < 0.72:
        return _vary(rng, rng.choice(EXACT))
    elif roll < 0.77:
        kw = rng.choice((f"order #{rng.randrange(10000, 99999)}", "PROMO-CODE", "promo code"))
    elif roll < 0.82:
        kw = rng.choice(EMOJI)
    elif roll < 0.88:
        kw = rng.choice(("call", "coaching", "book"))
    else:
        kw = rng.choice(("a real human", "talk to an agent"))
    words = _filler(rng, rng.randrange(1, 6))
    words.insert(rng.randrange(len(words) + 1), kw)
    return " ".join(words)


def build_rows(n: int, now: float, seed: int = 7) -> tuple[list[tuple[Any, ...]],
                                                              list[tuple[Any, ...]], set[str]]:
    """(events rows, messages rows for the creator's own app replies, igsids) for ``n``
    events over the ``SPAN`` before ``now``, ids in time order."""
    rng = random.Random(seed)
    users = max(10, n // 5)
    start = now - SPAN
    raw: list[tuple[float, str, dict[str, object], bool]] = []  # at, igsid, payload, human
    counter = 0

    def dm(igsid: str, at: float, text: str | None, extras: dict[str, object] | None = None
           ) -> None:
        nonlocal counter
        counter += 1
        raw.append((at, igsid, build_dm_payload(ACCOUNT_ID, igsid, text, _mid(counter),
                                                int(at * 1000), extras=extras), False))

    while len(raw) < n:
        igsid = f"5{rng.randrange(users):015d}"
        at = start + rng.random() * (SPAN - 600)
        roll = rng.random()
        if roll < 0.22:
            dm(igsid, at, _hit_text(rng))
        elif roll < 0.47:
            dm(igsid, at, " ".join(_filler(rng, rng.randrange(2, 12))))
        elif roll < 0.55:  # the guide flow: keyword, then the answer to the email question
            dm(igsid, at, rng.choice(("free guide please", "GUIDE", "la guía por favor")))
            answer = rng.random()
            if answer < 0.7:
                dm(igsid, at + rng.uniform(20, 300), f"{igsid[-6:]}@Example.com")
            elif answer < 0.9:
                dm(igsid, at + 40, "my email is nope")
                dm(igsid, at + 90, f"user{igsid[-4:]}@mail.example.org")
            else:
                dm(igsid, at + 60, "what about recipes?")
        elif roll < 0.59:  # the quiz flow: exact keyword, then a choice (text or tap)
            dm(igsid, at, "Quiz")
            choice = rng.choice(("Lose fat", "Build muscle", "Feel better"))
            if rng.random() < 0.5:
                dm(igsid, at + 30, choice, {"quick_reply": {"payload": choice}})
            else:
                dm(igsid, at + 30, choice.lower())
        elif roll < 0.79:  # comments
            counter += 1
            media = rng.choice(MEDIA)
            hit = rng.random() < 0.45
            opener = rng.choice(("GUIDE", "recipe pls", "link?", "price?", "🔥🔥", "info"))
            text = (" ".join([opener, *_filler(rng, rng.randrange(0, 3))]) if hit
                    else " ".join(_filler(rng, rng.randrange(1, 8))))
            parent = f"1800{counter:012d}" if rng.random() < 0.15 else None
            payload = build_comment_payload(ACCOUNT_ID, igsid, f"user_{igsid[-6:]}", text, media,
                                            f"1790{counter:012d}", int(at), parent_id=parent,
                                            media_product_type=("LIVE" if rng.random() < 0.03
                                                                else "FEED"))
            if payload["entry"] and rng.random() < 0.03:  # a live comment
                entry = payload["entry"][0]  # type: ignore[index]
                entry["changes"][0]["field"] = "live_comments"
            raw.append((float(int(at)), igsid, payload, False))
        elif roll < 0.85:  # button postbacks
            counter += 1
            pb = rng.choice(PAYLOADS)
            item = {"sender": {"id": igsid}, "recipient": {"id": ACCOUNT_ID},
                    "timestamp": int(at * 1000),
                    "postback": {"mid": _mid(counter), "title": pb.title(), "payload": pb}}
            raw.append((at, igsid, {"object": "instagram", "entry": [
                {"id": ACCOUNT_ID, "time": int(at * 1000), "messaging": [item]}]}, False))
        elif roll < 0.89:  # quick-reply taps
            tap = rng.choice(("BOOK_YES", "BOOK_NO", "OTHER"))
            dm(igsid, at, tap.title(), {"quick_reply": {"payload": tap}})
        elif roll < 0.91:
            dm(igsid, at, None, {"attachments": [{"type": "story_mention", "payload": {
                "url": "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1"}}]})
        elif roll < 0.94:
            dm(igsid, at, rng.choice(("🔥🔥", "love this", "so true")), {"reply_to": {"story": {
                "id": "17900000000000099", "url": "https://lookaside.fbsbx.com/s"}}})
        elif roll < 0.95:
            dm(igsid, at, "Is this still available?", {"referral": {
                "ref": rng.choice(("spring_ad", "other_ad")), "source": "ADS",
                "type": "OPEN_THREAD"}})
        elif roll < 0.97:  # a reaction: stored, never decided on
            counter += 1
            item = {"sender": {"id": igsid}, "recipient": {"id": ACCOUNT_ID},
                    "timestamp": int(at * 1000),
                    "reaction": {"mid": _mid(counter), "action": "react", "reaction": "love",
                                 "emoji": "❤️"}}
            raw.append((at, igsid, {"object": "instagram", "entry": [
                {"id": ACCOUNT_ID, "time": int(at * 1000), "messaging": [item]}]}, False))
        else:  # an echo of our own send; a third of them typed by the creator in the app
            counter += 1
            payload = build_echo_payload(ACCOUNT_ID, igsid, {"text": "thanks!"}, _mid(counter),
                                         int(at * 1000))
            raw.append((at, igsid, payload, rng.random() < 0.33))
    raw = raw[:n]
    raw.sort(key=lambda r: r[0])
    ev_rows: list[tuple[Any, ...]] = []
    msg_rows: list[tuple[Any, ...]] = []
    igsids: set[str] = set()
    for i, (at, igsid, payload, human) in enumerate(raw, start=1):
        parsed = parse_webhook(payload)
        ev = parsed[0]
        ev_rows.append((i, ev.dedupe_key, ACCOUNT_ID, ev.kind.value, ev.contact_id, at, at, at,
                        json.dumps(payload, separators=(",", ":"))))
        igsids.add(igsid)
        if human:
            msg_rows.append((ACCOUNT_ID, igsid, ev.dedupe_key, "out", "human", "thanks!", i, at))
    return ev_rows, msg_rows, igsids


async def _create_db(path: Path, now: float) -> None:
    db = await open_database(path, synchronous="NORMAL")
    try:
        await store_history.upsert_account(db, ACCOUNT_ID, username="bench_coach", now=now)
    finally:
        await db.close()


def build_db(path: Path, n: int, now: float) -> Built:
    """The bench database: real migrations, then rows written with ``executemany``."""
    t0 = time.perf_counter()
    asyncio.run(_create_db(path, now))
    ev_rows, msg_rows, igsids = build_rows(n, now)
    known = sorted(igsids)[: len(igsids) // 5]
    conn = sqlite3.connect(path)
    try:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO events(id, dedupe_key, account_id, kind, contact_id, occurred_at,"
            " received_at, processed_at, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", ev_rows)
        conn.executemany(
            "INSERT INTO messages(account_id, contact_id, mid, direction, sent_by, text,"
            " event_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", msg_rows)
        conn.executemany(
            "INSERT INTO contacts(account_id, id, username, first_seen_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [(ACCOUNT_ID, c, f"user_{c[-6:]}", now - SPAN, now) for c in known])
        conn.executemany(
            "INSERT INTO conversations(account_id, contact_id, state, updated_at)"
            " VALUES (?, ?, '{}', ?)", [(ACCOUNT_ID, c, now) for c in known])
        conn.execute("COMMIT")
    finally:
        conn.close()
    return Built(len(ev_rows), time.perf_counter() - t0)


def write_config(path: Path, db: Path) -> None:
    config = {
        "instagram": {"app_secret": "bench-replay-secret"},
        "storage": {"path": str(db), "synchronous": "NORMAL"},
        "secrets": {"backend": "file"},
        "workflows": workflows(),
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
                    encoding="utf-8")


# ------------------------------------------------------------------------------ phases


async def _read_rows(db_path: Path) -> list[tuple[int, str, float]]:
    db = await open_database(db_path, synchronous="NORMAL")
    try:
        return await store_replay.events_between(db, None, time.time() + 3600)
    finally:
        await db.close()


@dataclass(slots=True)
class Timing:
    """Wall and CPU seconds of one phase (CPU: this process, or the CLI child's user+sys).
    The machine may be shared: CPU seconds are the steadier figure then."""

    wall: float
    cpu: float


class Clock:
    def __init__(self) -> None:
        self.w, self.c = time.perf_counter(), time.process_time()

    def stop(self) -> Timing:
        return Timing(time.perf_counter() - self.w, time.process_time() - self.c)


def phase_baseline(db_path: Path) -> tuple[Timing, Timing, int]:
    """(read + json-decode, read + decode + parse_webhook, rows)."""
    clock = Clock()
    rows = asyncio.run(_read_rows(db_path))
    decoded = [json.loads(raw) for _, raw, _ in rows]
    t_decode = clock.stop()
    clock = Clock()
    rows = asyncio.run(_read_rows(db_path))
    parsed = [parse_webhook(json.loads(raw)) for _, raw, _ in rows]
    t_parse = clock.stop()
    assert len(decoded) == len(parsed)
    return t_decode, t_parse, len(rows)


async def _library_replay(cfg_path: Path) -> tuple[int, int, Timing, Timing]:
    config = load_config(cfg_path)
    clock = Clock()
    db = await open_database(config.storage.db_path(), synchronous="NORMAL")
    try:
        history = await load_history(db, since=None, until=time.time() + 3600)
    finally:
        await db.close()
    t_load = clock.stop()
    clock = Clock()
    report = replay_config(config, history)
    t_run = clock.stop()
    fired = sum(1 for s in report.steps if s.outcome.fired)
    return report.events, fired, t_load, t_run


def phase_cli(cfg_path: Path, tree: Path = ROOT) -> tuple[Timing, int]:
    """(timing, events the CLI said it replayed), running the ``instaset`` package of
    ``tree`` (this checkout by default)."""
    env = {**os.environ, "INSTASET_HOME": str(cfg_path.parent / "home"),
           "PYTHONPATH": str(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "instaset", "--config", str(cfg_path), "workflows", "replay",
         "--since", "all"], env=env, cwd=tree, capture_output=True, timeout=900, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = Timing(time.perf_counter() - t0, after.ru_utime + after.ru_stime
                     - before.ru_utime - before.ru_stime)
    if proc.returncode != 0:
        raise HarnessError(f"workflows replay exited {proc.returncode}:\n"
                           f"{proc.stderr.decode(errors='replace')[-2000:]}")
    m = re.search(r"replayed (\d+) events", proc.stdout.decode(errors="replace"))
    return seconds, int(m.group(1)) if m else -1


def phase_decide(cfg_path: Path, db_path: Path, limit: int) -> tuple[float, float, int, int]:
    """(µs/event indexed, µs/event scan, events decided, disagreements)."""
    from instaset.daemon import engine_settings

    config = load_config(cfg_path)
    settings = engine_settings(config, ACCOUNT_ID)
    rows = asyncio.run(_read_rows(db_path))
    events = []
    for _, raw, _ in rows:
        parsed = parse_webhook(json.loads(raw))
        ev = parsed[0]
        if ev.is_from_business or ev.contact_id is None:
            continue
        events.append(ev)
        if len(events) >= limit:
            break
    wfs = config.workflows
    results: list[list[Any]] = []
    timings: list[float] = []
    for fn in (decide, decide_scan):
        states: dict[str, ConversationState] = {}
        out: list[Any] = []
        t0 = time.perf_counter()
        for ev in events:
            contact = ev.contact_id or ""
            before = states.get(contact) or ConversationState(ACCOUNT_ID, contact)
            d = fn(ev, before, wfs, settings, ev.occurred_at)
            states[contact] = d.state
            out.append(d)
        timings.append(time.perf_counter() - t0)
        results.append(out)
    bad = sum(1 for a, b in zip(results[0], results[1], strict=True) if a != b)
    n = len(events)
    return timings[0] / n * 1e6, timings[1] / n * 1e6, n, bad


class HarnessError(Exception):
    """The benchmark could not run."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000, help="stored events (100000)")
    ap.add_argument("--decide-events", type=int, default=30_000,
                    help="events for the decide() micro-bench (30000)")
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI subprocess timing")
    ap.add_argument("--before-tree", type=Path,
                    help="also time the CLI of another source tree (a directory holding an "
                    "`instaset` package, e.g. `git archive HEAD` extracted): the before figure")
    ap.add_argument("--quick", action="store_true", help="CI smoke: 10000 events")
    ap.add_argument("--profile", type=Path, help="write a cProfile of the library replay")
    ap.add_argument("--keep", type=Path, help="build the database in this directory and keep it")
    ap.add_argument("--reuse", action="store_true",
                    help="with --keep: reuse the database already there (same --events)")
    args = ap.parse_args(argv)
    if args.quick:
        args.events, args.decide_events = 10_000, 5_000
    try:
        with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp_name:
            tmp = args.keep or Path(tmp_name)
            tmp.mkdir(parents=True, exist_ok=True)
            db_path, cfg_path = tmp / "replay.db", tmp / "config.yaml"
            now = time.time()
            if args.reuse and args.keep is not None and db_path.exists():
                with sqlite3.connect(db_path) as conn:
                    count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
                built = Built(int(count), 0.0)
            else:
                db_path.unlink(missing_ok=True)
                built = build_db(db_path, args.events, now - 60)
            write_config(cfg_path, db_path)
            print(f"replay bench: {built.events} stored events, 50 workflows "
                  f"(built in {built.seconds:.1f} s), python {sys.version.split()[0]}")
            t_decode, t_parse, nrows = phase_baseline(db_path)
            prof = cProfile.Profile() if args.profile else None
            if prof is not None:
                prof.enable()
            replayed, fired, t_load, t_run = asyncio.run(_library_replay(cfg_path))
            if prof is not None:
                prof.disable()
                prof.dump_stats(str(args.profile))
            cli = None if args.no_cli else phase_cli(cfg_path)
            before = None if args.before_tree is None else phase_cli(cfg_path, args.before_tree)
            us_idx, us_scan, ndec, bad = phase_decide(cfg_path, db_path, args.decide_events)
    except HarnessError as exc:
        print(f"harness error: {exc}", file=sys.stderr)
        return 2

    def line(name: str, t: Timing, n: int, extra: str = "") -> None:
        print(f"  {name:<33} {t.wall:6.2f} s {t.cpu:6.2f} s {n / t.wall:>9,.0f} "
              f"{n / max(t.cpu, 1e-9):>9,.0f}  x{t.cpu / t_decode.cpu:4.1f}{extra}")

    load = os.getloadavg()[0]
    print(f"phase (same rows, same run; load average {load:.1f} on {os.cpu_count()} CPUs)")
    print(f"  {'':<33} {'wall':>8} {'CPU':>8} {'ev/s wall':>9} {'ev/s CPU':>9}  "
          "CPU vs baseline")
    line("baseline: read + json decode", t_decode, nrows)
    line("read + decode + parse_webhook", t_parse, nrows)
    t_lib = Timing(t_load.wall + t_run.wall, t_load.cpu + t_run.cpu)
    line("replay, library (load + decide)", t_lib, replayed,
         f"  (load {t_load.cpu:.2f} s + replay {t_run.cpu:.2f} s CPU; {fired} fired)")
    if cli is not None:
        line("replay, CLI `workflows replay`", cli[0], max(cli[1], 1))
    if before is not None:
        line("replay, CLI of --before-tree", before[0], max(before[1], 1))
    print(f"decide() per event over {ndec} events: indexed {us_idx:.1f} µs, "
          f"scan (reference) {us_scan:.1f} µs, x{us_scan / us_idx:.1f}")
    if cli is not None:
        ok = cli[0].wall < TARGET_REPLAY_S
        print(f"target: `workflows replay` of {args.events} events < {TARGET_REPLAY_S:.0f} s: "
              f"{cli[0].wall:.2f} s wall ({cli[0].cpu:.2f} s CPU) {'PASS' if ok else 'FAIL'}")
    broken = []
    if replayed != built.events:
        broken.append(f"library replay read {replayed} of {built.events} events")
    if before is not None and before[1] != built.events:
        broken.append(f"--before-tree CLI replay said {before[1]} events, stored {built.events}")
    if cli is not None and cli[1] != built.events:
        broken.append(f"CLI replay said {cli[1]} events, stored {built.events}")
    if bad:
        broken.append(f"decide and decide_scan disagree on {bad} of {ndec} events")
    for b in broken:
        print(f"CORRECTNESS: {b}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
