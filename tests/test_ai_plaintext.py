"""A model's reply as Instagram shows it: plain text (AI audit: markup was sent as typed)."""

from __future__ import annotations

import pytest

from instaset.ai.plaintext import plain_text


@pytest.mark.parametrize(("reply", "sent"), [
    ("**Yes!** <b>we</b> do", "Yes! we do"),
    ("Book [here](https://maya.fit/book)", "Book here https://maya.fit/book"),
    ("## Prices\nCoaching is $90", "Prices\nCoaching is $90"),
    ("I *love* it, ~~not~~ really", "I love it, not really"),
    ("use `code`", "use code"),
    # what only looks like markup stays
    ("2*3*4 = 24 and 5 * 3", "2*3*4 = 24 and 5 * 3"),
    ("a_b_c and #hashtag and <3", "a_b_c and #hashtag and <3"),
    ("Great 💪🔥", "Great 💪🔥"),
])
def test_plain_text(reply: str, sent: str) -> None:
    assert plain_text(reply) == sent
