"""Keyword ranking of tools (BM25 over name and description), for search_tools and the API."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_SPLIT = re.compile(r"[^A-Za-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def tokens(text: str) -> list[str]:
    words = []
    for part in _SPLIT.split(_CAMEL.sub(" ", text or "")):
        if part:
            words.append(part.lower())
    return words


def rank(query: str, docs: Sequence[tuple[str, str]], limit: int = 10) -> list[tuple[int, float]]:
    """Indices and scores of ``docs`` ((name, description) pairs) best first; name hits weigh double."""
    q = set(tokens(query))
    if not q or not docs:
        return []
    bags = [Counter(tokens(name) * 2 + tokens(desc)) for name, desc in docs]
    avg = sum(sum(b.values()) for b in bags) / len(bags) or 1.0
    df = Counter(t for b in bags for t in set(b) if t in q)
    n = len(bags)
    k1, b = 1.2, 0.75
    scored = []
    for i, bag in enumerate(bags):
        length = sum(bag.values())
        score = 0.0
        for t in q:
            tf = bag.get(t, 0)
            if not tf:
                continue
            idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
            score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg))
        name = docs[i][0].lower()
        if query.lower() in name:
            score += 1.0  # a substring of the name is a strong signal for short queries
        if score > 0:
            scored.append((i, round(score, 4)))
    scored.sort(key=lambda s: (-s[1], s[0]))
    return scored[:limit]
