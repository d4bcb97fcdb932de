"""Local text similarity (stdlib only, deterministic): what the offline responder and the
retrieval of the creator's past replies rank by.

A text becomes a sparse vector of word tokens (weight 1) and character trigrams of each word
(weight 0.5), over its case- and accent-folded form; :func:`similarity` is the cosine of two
such vectors, in ``[0, 1]``. Trigrams make "price"/"prices" and small typos count as close;
words keep short exact terms ("hi") meaningful. Very common function words are ignored so
that "how are you" and "how much is it" are not close just for sharing "how".
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from instaset.engine.triggers import fold

_WORD = re.compile(r"\w+", re.UNICODE)
_STOP = (
    "a an the and or but is are am was were be been to of in on at for with it its this that"
    " i me my you your we our he she they them do does did can could would will just so"
    " hi hey hello please thanks thank"
)
STOPWORDS = frozenset(_STOP.split())

Vector = dict[str, float]


def tokens(text: str) -> list[str]:
    """The folded words of ``text`` without stopwords (all words if only stopwords)."""
    words = _WORD.findall(fold(text))
    kept = [w for w in words if w not in STOPWORDS]
    return kept or words


def vector(text: str) -> Vector:
    counts: dict[str, float] = {}
    for word in tokens(text):
        counts["w:" + word] = counts.get("w:" + word, 0.0) + 1.0
        padded = f" {word} "
        for i in range(len(padded) - 2):
            gram = "c:" + padded[i : i + 3]
            counts[gram] = counts.get(gram, 0.0) + 0.5
    return counts


def cosine(a: Vector, b: Vector) -> float:
    if not a or not b:
        return 0.0
    if len(a) > len(b):
        a, b = b, a
    dot = sum(w * b.get(k, 0.0) for k, w in a.items())
    norm = math.sqrt(sum(w * w for w in a.values())) * math.sqrt(sum(w * w for w in b.values()))
    return dot / norm if norm else 0.0


def similarity(a: str, b: str) -> float:
    """Cosine similarity of two texts, 0 (nothing shared) to 1 (same words)."""
    return cosine(vector(a), vector(b))


@dataclass(frozen=True, slots=True)
class Ranked:
    index: int
    score: float


def rank(query: str, texts: Sequence[str], *, k: int, min_score: float = 0.0) -> list[Ranked]:
    """The ``k`` texts most similar to ``query`` with a score of at least ``min_score``,
    best first; ties keep the input order (so results are deterministic)."""
    q = vector(query)
    scored = [Ranked(i, cosine(q, vector(t))) for i, t in enumerate(texts)]
    scored = [r for r in scored if r.score >= min_score and r.score > 0]
    scored.sort(key=lambda r: (-r.score, r.index))
    return scored[:k]
