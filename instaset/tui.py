"""The full-screen inbox (``instaset inbox`` on a terminal): a Textual app.

Layout: the conversations on the left (newest first: unread count, lead stage, automation
and window state), the selected thread on the right (who sent each message: the contact,
the automation or you; media described; in time order with the comments, the public replies
and the unsent sends, as `inbox show` prints it), and a reply box under it.

Contracts:
- Everything shown comes from :mod:`instaset.inbox` (``conversations``, ``thread``); the app
  polls the database every ``poll_interval`` seconds, so messages the daemon stores show up
  by themselves. Viewing a thread marks it read (``inbox.thread``'s contract).
- A reply is handed to the injected ``send(contact, text)`` (:func:`runtime_sender` wraps
  :func:`instaset.inbox.reply`, which checks the sending rules, sends as the human and pauses
  automation); it runs in a worker, so a slow delivery never freezes the screen, and its
  one-line outcome is shown in the status bar.
- ``p`` pauses automation for the selected contact for ``pause_for`` seconds, ``r`` resumes
  it (both through :func:`instaset.inbox.pause`). They act only while the conversation list
  has the focus: in the reply box those keys are text.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Input, Static

from instaset import inbox, timefmt
from instaset.errors import InstasetError
from instaset.inbox import ContactRef
from instaset.oneline import one_line, printable, refusal_words

if TYPE_CHECKING:
    from instaset.config import Config
    from instaset.daemon import Runtime
    from instaset.store.db import Database

SendFn = Callable[[ContactRef, str], Awaitable[str]]
"""Send ``text`` to the contact as the human; returns a one-line outcome for the status bar.
Raising :class:`InstasetError` shows its message instead."""

SENDER_LABELS = {"contact": "them", "automation": "bot", "human": "you"}
SENDER_STYLES = {"contact": "bold cyan", "automation": "magenta", "human": "bold green"}
WINDOW_STYLES = {"open": "green", "human": "yellow", "closed": "red", "never": "dim"}


def runtime_sender(rt: Runtime, *, wait: float = 30.0) -> SendFn:
    """The real ``send``: :func:`instaset.inbox.reply` through ``rt``, described in one line."""

    async def send(ref: ContactRef, text: str) -> str:
        outcome = await inbox.reply(rt, ref, text, wait=wait)
        until = inbox.iso_utc(outcome.paused_until)
        if outcome.state == "sent":
            tag = " (HUMAN_AGENT tag)" if outcome.human_agent_tag else ""
            return f"sent to {ref.label}{tag}; automation paused until {until}"
        if outcome.state == "queued":
            return (f"queued for {ref.label} ({outcome.detail or 'waiting for its turn'}); "
                    "it goes out when `instaset serve` runs")
        return f"not sent to {ref.label} ({outcome.reason}): {outcome.detail}"

    return send


def _ref(conv: dict[str, Any]) -> ContactRef:
    return ContactRef(conv["account_id"], conv["contact_id"], conv["username"])


def _row_key(ref: ContactRef) -> str:
    return f"{ref.account_id}:{ref.contact_id}"


def _automation_cell(auto: dict[str, Any], now: float) -> str:
    if auto["state"] != "paused" or auto["paused_until"] is None:
        return "on"
    until = _ts(auto["paused_until"])
    return f"paused {timefmt.human_duration(until - now)}"


def _window_cell(window: dict[str, Any]) -> Text:
    state = str(window["state"])
    left = window["seconds_left"]
    if state == "open" and left is not None:
        label = f"{timefmt.human_duration(left)} left"
    elif state == "human" and left is not None:
        label = f"you only, {timefmt.human_duration(left)}"
    else:
        label = "closed" if state == "closed" else "no DM"
    return Text(label, style=WINDOW_STYLES.get(state, ""))


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def render_thread(doc: dict[str, Any], now: float) -> Text:
    """The thread as rich text: a header about the contact, then one block per message."""
    c = doc["contact"]
    who = one_line(f"@{c['username']}" if c["username"] else c["id"])
    out = Text()
    out.append(who, style="bold")
    if c["name"]:
        out.append(f" ({one_line(c['name'])})")
    out.append(f"  stage {c['stage']}  automation {_automation_cell(c['automation'], now)}  "
               "window ")
    out.append_text(_window_cell(c["window"]))
    out.append("\n\n")
    # In time order, as `inbox show` prints it (inbox.timeline).
    items = inbox.timeline(doc)
    for kind, m in items:
        stamp = (inbox.item_time(kind, m) or "")[:16].replace("T", " ")
        out.append(f"{stamp} ", style="dim")
        if kind == "comment":
            where = "a live video" if m["live"] else f"media {m['media_id'] or '?'}"
            out.append("them", style=SENDER_STYLES["contact"])
            out.append(f" ({'comment reply' if m['reply'] else 'comment'} on {where}): ")
            out.append(printable(m["text"] or "[no text]") + "\n")
            continue
        sender = "contact" if kind == "message" and m["direction"] == "in" else m["sent_by"]
        out.append(SENDER_LABELS.get(sender, sender), style=SENDER_STYLES.get(sender, ""))
        out.append(": ")
        if kind == "public_reply":
            out.append(f"public reply under the comment: {printable(m['text'] or '')}\n",
                       style="yellow")
            continue
        if kind == "unsent":
            # The words cut to one line, as `inbox show` shows them (the whole: --json).
            out.append(f"not sent ({refusal_words(m['reason'], m['detail'])}): "
                       f"{printable(m['what'])}\n", style="red")
            continue
        out.append(printable(m["preview"]))
        if m["edited"]:
            out.append(" (edited)", style="dim")
        if m["reactions"]:
            out.append("  " + " ".join(str(v) for v in m["reactions"].values()))
        out.append("\n")
    if not items:
        out.append("no messages yet\n", style="dim")
    return out


class InboxApp(App[None]):
    """The full-screen inbox over ``db``; see the module docstring."""

    TITLE = "instaset inbox"
    CSS = """
    #conversations { width: 3fr; }
    #right { width: 4fr; }
    #thread-scroll { height: 1fr; border: round $primary; }
    #status { height: 1; color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "pause", "Pause automation"),
        Binding("r", "resume", "Resume automation"),
        Binding("escape", "focus_list", "Back to the list"),
        Binding("f5", "reload", "Refresh"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self, db: Database, send: SendFn, *, clock: Callable[[], float] = time.time,
        poll_interval: float = 1.5, pause_for: float = 7 * 86400.0, limit: int = 200,
        account_id: str | None = None,
    ) -> None:
        super().__init__()
        self.db = db
        self.send = send
        self.clock = clock
        self.poll_interval = poll_interval
        self.pause_for = pause_for
        self.limit = limit
        self.account_id = account_id
        self.convs: list[dict[str, Any]] = []
        self.selected: ContactRef | None = None
        self.thread_doc: dict[str, Any] | None = None
        self._rows: list[tuple[Any, ...]] = []
        self._refs: dict[str, ContactRef] = {}

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield DataTable(id="conversations", cursor_type="row", zebra_stripes=True)
            with Vertical(id="right"):
                with VerticalScroll(id="thread-scroll"):
                    yield Static("select a conversation", id="thread")
                yield Input(placeholder="reply as yourself, Enter sends", id="reply")
                yield Static("", id="status")
        yield Footer()

    async def on_mount(self) -> None:
        table = self.query_one("#conversations", DataTable)
        table.add_columns("contact", "unread", "stage", "automation", "window", "last")
        await self.reload()
        table.focus()
        self.set_interval(self.poll_interval, self.reload)

    # -- data ---------------------------------------------------------------------------------
    async def reload(self) -> None:
        """Read the conversations (and the selected thread) again; redraw what changed."""
        now = self.clock()
        self.convs = await inbox.conversations(self.db, now, limit=self.limit,
                                               account_id=self.account_id)
        self._refs = {_row_key(_ref(c)): _ref(c) for c in self.convs}
        rows = [self._row(c, now) for c in self.convs]
        if rows != self._rows:
            self._rows = rows
            self._fill_table(rows)
        if self.selected is None and self.convs:
            self.selected = _ref(self.convs[0])
        await self._load_thread()

    def _row(self, c: dict[str, Any], now: float) -> tuple[Any, ...]:
        who = one_line(f"@{c['username']}" if c["username"] else c["contact_id"])
        last = one_line(c["last_message"] or "")
        if c["last_from"] in ("automation", "human"):
            last = f"{'you' if c['last_from'] == 'human' else 'bot'}: {last}"
        return (_row_key(_ref(c)), Text(who, style="bold" if c["unread"] else ""),
                str(c["unread"] or ""), c["stage"], _automation_cell(c["automation"], now),
                _window_cell(c["window"]), last[:40])

    def _fill_table(self, rows: list[tuple[Any, ...]]) -> None:
        table = self.query_one("#conversations", DataTable)
        keep = _row_key(self.selected) if self.selected is not None else None
        table.clear()
        for key, *cells in rows:
            table.add_row(*cells, key=key)
        if keep is not None and keep in self._refs:
            table.move_cursor(row=table.get_row_index(keep), animate=False)

    async def _load_thread(self) -> None:
        view = self.query_one("#thread", Static)
        if self.selected is None:
            self.thread_doc = None
            view.update("no conversations yet")
            return
        now = self.clock()
        doc = await inbox.thread(self.db, self.selected, now)
        if doc != self.thread_doc:
            self.thread_doc = doc
            view.update(render_thread(doc, now))
            self.query_one("#thread-scroll", VerticalScroll).scroll_end(animate=False)

    async def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        ref = self._refs.get(str(event.row_key.value))
        if ref is not None and ref != self.selected:
            self.selected = ref
            await self._load_thread()

    def on_data_table_row_selected(self, _event: DataTable.RowSelected) -> None:
        self.query_one("#reply", Input).focus()  # Enter on a conversation: answer it

    # -- actions ------------------------------------------------------------------------------
    def status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self.selected is None:
            self.status("select a conversation first")
            return
        event.input.clear()
        self.status(f"sending to {self.selected.label}…")
        self.run_worker(self._send(self.selected, text), group="send")

    async def _send(self, ref: ContactRef, text: str) -> None:
        try:
            result = await self.send(ref, text)
        except InstasetError as exc:
            result = f"error: {exc}"
        self.status(result)
        await self.reload()

    async def action_pause(self) -> None:
        await self._set_pause(pause=True)

    async def action_resume(self) -> None:
        await self._set_pause(pause=False)

    async def _set_pause(self, *, pause: bool) -> None:
        ref = self.selected
        if ref is None:
            return
        now = self.clock()
        try:
            await inbox.pause(self.db, ref, now + self.pause_for if pause else None, now)
        except InstasetError as exc:
            self.status(f"error: {exc}")
            return
        until = inbox.iso_utc(now + self.pause_for)
        self.status(f"automation paused for {ref.label} until {until}" if pause
                    else f"automation resumed for {ref.label}")
        await self.reload()

    async def action_reload(self) -> None:
        await self.reload()

    def action_focus_list(self) -> None:
        self.query_one("#conversations", DataTable).focus()


async def run_inbox(
    config: Config, *, limit: int = 200, account_id: str | None = None
) -> None:
    """Open the runtime (database, Graph client, tokens) and run the app until the user quits;
    everything is closed afterwards."""
    from instaset import tokens as tokens_mod
    from instaset.daemon import runtime

    async with runtime(config, tokens=tokens_mod.default_tokens(config)) as rt:
        app = InboxApp(rt.db, runtime_sender(rt), clock=rt.clock,
                       pause_for=config.handoff.pause_for.total_seconds(),
                       limit=limit, account_id=account_id)
        await app.run_async()
