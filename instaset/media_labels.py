"""How a message's media is shown to people: ``[image]``, ``[reel: caption]``.

Its own module so that the inbox can label media without importing every event class.
"""

from __future__ import annotations

from instaset.oneline import one_line

# Types whose own name reads badly; the rest read fine with "_" as a space.
_ATTACHMENT_LABELS = {
    "share": "shared post",
    "ig_post": "post",
    "ig_reel": "reel",
    "ig_story": "story",
    "story_reply": "reply to your story",
}
_DESCRIBE_MAX = 60


def _one_line(text: str) -> str:
    line = one_line(text)
    return line if len(line) <= _DESCRIBE_MAX else line[: _DESCRIBE_MAX - 1] + "…"


def describe_attachment(kind: str, title: str | None) -> str:
    """A one-line placeholder for inboxes and prompts: ``[image]``, ``[reel: caption]``,
    ``[story mention]``. Unknown types show their own name; titles are collapsed to one
    line and cut at 60 characters."""
    label = _ATTACHMENT_LABELS.get(kind) or _one_line(kind.replace("_", " "))
    label = label or "attachment"
    line = _one_line(title or "")
    return f"[{label}: {line}]" if line else f"[{label}]"
