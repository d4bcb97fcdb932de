"""A model's reply as an Instagram DM shows it: plain text.

Instagram renders no Markdown or HTML, so ``**Yes!**`` would arrive with its asterisks. Pure:
:func:`plain_text` drops emphasis markers, heading marks and HTML tags, and turns a Markdown
link ``[text](url)`` into ``text url`` (the URL stays for the link guardrail to check).
"""

from __future__ import annotations

import re

_LINK = re.compile(r"\[([^\]\n]+)\]\((\S+?)\)")
_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>")
_EMPHASIS = re.compile(r"(\*\*|__|~~)(?=\S)(.+?)(?<=\S)\1")
_STAR = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+", re.MULTILINE)
_CODE = re.compile(r"`([^`\n]+)`")


def plain_text(reply: str) -> str:
    """``reply`` without Markdown/HTML markup (see the module docstring)."""
    text = _LINK.sub(r"\1 \2", reply)
    text = _TAG.sub("", text)
    text = _EMPHASIS.sub(r"\2", text)
    text = _STAR.sub(r"\1", text)
    text = _HEADING.sub("", text)
    return _CODE.sub(r"\1", text)
