"""``instaset demo``: the whole pipeline on the embedded defaults, in under a minute.

It starts the daemon against the built-in Instagram sandbox in a temporary data directory,
with the example config's workflows and no Gemini key (the offline responder), plays a short
scripted scene through the real webhook path (signed deliveries, the queue, the engine, the
Send API, echoes), and prints the conversations as the creator would see them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from instaset.config import Config, parse_config_text
from instaset.daemon import Serving, serving
from instaset.sandbox import Sandbox, build_echo_payload
from instaset.simulate import stable_igsid
from instaset.store import history

REEL = "17912345678901234"


def example_config(db_path: Path) -> Config:
    """The example config shipped in the package, with its database in ``db_path``."""
    text = (Path(__file__).parent / "data" / "config.example.yaml").read_text("utf-8")
    cfg = parse_config_text(text, "config.example.yaml")
    return cfg.model_copy(update={
        "storage": cfg.storage.model_copy(update={"path": db_path}),
        "worker": cfg.worker.model_copy(update={"poll_interval": 0.05}),
    })


async def settle(srv: Serving, timeout: float = 20.0) -> None:
    """Wait until the sandbox delivered its echoes and no job is due."""
    deadline = time.monotonic() + timeout
    assert srv.sandbox is not None
    while time.monotonic() < deadline:
        await srv.sandbox.drain()
        row = await srv.rt.db.fetchone(
            "SELECT count(*) FROM jobs WHERE state = 'running'"
            " OR (state = 'ready' AND run_at <= ?)",
            (time.time() + 2.0,),
        )
        if row is not None and row[0] == 0:
            return
        srv.rt.wake.set()
        await asyncio.sleep(0.05)


class Scene:
    def __init__(self, box: Sandbox, srv: Serving, console: Console) -> None:
        self.box = box
        self.srv = srv
        self.console = console

    def user(self, username: str) -> str:
        igsid = stable_igsid(username)
        self.box.add_user(igsid, username)
        return igsid

    async def dm(self, username: str, text: str, *, quick_reply: str | None = None) -> None:
        self.console.print(f"[dim]@{username} sends a DM:[/dim] {text}")
        if quick_reply is None:
            await self.box.user_sends_dm(self.user(username), text)
        else:  # a tap on a quick-reply chip: the text is its title, the payload rides along
            await self.box.user_sends_dm(self.user(username), text,
                                         quick_reply={"payload": quick_reply})
        await settle(self.srv)

    async def comment(self, username: str, text: str) -> None:
        self.console.print(f"[dim]@{username} comments on a reel:[/dim] {text}")
        await self.box.user_comments(self.user(username), text, REEL)
        await settle(self.srv)

    async def tap_first_slot(self, username: str) -> None:
        """Tap the first time slot instaset offered (a quick reply whose payload books it)."""
        igsid = self.user(username)
        for rec in reversed(self.box.sends()):
            body = rec.json if isinstance(rec.json, dict) else {}
            message, recipient = body.get("message"), body.get("recipient")
            replies = message.get("quick_replies") if isinstance(message, dict) else None
            if replies and isinstance(recipient, dict) and recipient.get("id") == igsid:
                first = replies[0]
                await self.dm(username, str(first.get("title")), quick_reply=str(first["payload"]))
                return
        self.console.print(f"[red]no time slots were offered to @{username}[/red]")

    async def creator_types(self, username: str, text: str) -> None:
        """The creator answers in the Instagram app: Meta sends an echo we did not send."""
        self.console.print(f"[dim]you answer @{username} in the Instagram app:[/dim] {text}")
        mid = f"app-{int(time.time() * 1000)}"
        payload = build_echo_payload(self.box.account_id, self.user(username), {"text": text},
                                     mid, int(time.time() * 1000))
        await self.box.deliver(payload)
        await settle(self.srv)


async def play(console: Console) -> int:
    # The demo prints what matters itself; the daemon's own log lines would only interleave.
    logging.getLogger("instaset").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="instaset-demo-") as tmp:
        config = example_config(Path(tmp) / "demo.db")
        async with serving(config, host="127.0.0.1", port=0, sandbox=True) as srv:
            assert srv.sandbox is not None
            console.print(Panel.fit(
                f"instaset demo: the daemon on {srv.url}, Instagram played by the built-in "
                "sandbox,\nworkflows from config.example.yaml, no Meta app, no Gemini key.",
                style="bold"))
            scene = Scene(srv.sandbox, srv, console)
            await scene.dm("maya.moves", "hi!")
            await scene.dm("maya.moves", "Can I get the free guide?")
            await scene.dm("maya.moves", "maya@example.com")
            await scene.dm("maya.moves", "Do you have something for beginners?")
            await scene.comment("leo_lifts", "GUIDE please 🔥")
            await scene.dm("sam.runs", "I'd like to book a coaching call")
            await scene.dm("sam.runs", "Yes please", quick_reply="BOOK_YES")
            await scene.tap_first_slot("sam.runs")
            await scene.dm("alex_k", "can I talk to a real person?")
            await scene.creator_types("alex_k", "Hey Alex, it's me! What's up?")
            await scene.dm("alex_k", "can I get the guide?")
            await print_conversations(srv, console)
    return 0


async def print_conversations(srv: Serving, console: Console) -> None:
    db = srv.rt.db
    assert srv.sandbox is not None
    acct = srv.sandbox.account_id
    names = srv.sandbox.users
    console.print()
    convs = await db.fetchall(
        "SELECT contact_id, paused_until, state FROM conversations WHERE account_id = ?"
        " ORDER BY rowid", (acct,))
    who = {"contact": "them", "automation": "auto", "human": "you "}
    for conv in convs:
        contact = conv["contact_id"]
        name = names.get(contact, contact)
        body = Text()
        for m in await history.thread(db, acct, contact):
            style = "cyan" if m["direction"] == "in" else (
                "green" if m["sent_by"] == "automation" else "magenta")
            body.append(f"{who[m['sent_by']]} ", style=f"bold {style}")
            body.append(f"{m['text'] or '[attachment]'}\n", style=style)
        for s in await db.fetchall(
            "SELECT kind, state, reason, body FROM sends WHERE account_id = ? AND contact_id = ?"
            " AND (kind = 'public_reply' OR state != 'sent') ORDER BY created_at", (acct, contact)
        ):
            if s["kind"] == "public_reply":
                body.append("auto ", style="bold yellow")
                reply = json.loads(s["body"]).get("text")
                body.append(f"(public reply under the comment) {reply}\n", style="yellow")
            else:
                body.append(f"not sent ({s['reason']})\n", style="red")
        footer = " · automation paused (you took over)" if conv["paused_until"] and (
            conv["paused_until"] > time.time()) else ""
        console.print(Panel(body, title=f"@{name}{footer}", title_align="left"))
    row = await db.fetchone("SELECT count(*) FROM notifications")
    notes = await history.recent_notifications(db)
    if notes:
        console.print("[bold]Notifications for you:[/bold]")
        for n in reversed(notes):
            console.print(f"  • {n['text']}")
    sent = await db.fetchone("SELECT count(*) FROM sends WHERE state = 'sent'")
    console.print(f"\n{sent[0] if sent else 0} messages sent, "
                  f"{row[0] if row else 0} notifications, every step through the real pipeline.")
