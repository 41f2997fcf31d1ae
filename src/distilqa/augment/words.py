"""Which words of a context may be replaced, and how a replacement takes the original's case."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Letters only: digits, punctuation and mixed tokens ("F1", "3rd") are never replaced.
_WORD = re.compile(r"[^\W\d_]+")

# English function words: replacing them breaks grammar without teaching the student anything.
STOP_WORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most
    my myself no nor not now of off on once only or other our ours ourselves out over own same she
    should so some such than that the their theirs them themselves then there these they this those
    through to too under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves also may might must shall upon via per yet however thus
    s t d ll m o re ve y
    """.split()
)


@dataclass(frozen=True, slots=True)
class Word:
    start: int  # character offsets in the context, end exclusive
    end: int
    text: str


@dataclass(slots=True)
class WordScan:
    """The words of one context, split into those that may be replaced and counts of the others."""

    replaceable: list[Word]
    total: int = 0
    stop_words: int = 0
    in_answers: int = 0
    too_short: int = 0


def scan_words(context: str, protected: list[tuple[int, int]]) -> WordScan:
    """Alphabetic words of `context` outside every `protected` [start, end) span, minus stop-words."""
    scan = WordScan([])
    spans = sorted(protected)
    for m in _WORD.finditer(context):
        scan.total += 1
        start, end, text = m.start(), m.end(), m.group()
        if any(s < end and start < e for s, e in spans):
            scan.in_answers += 1
        elif len(text) < 2:
            scan.too_short += 1
        elif text.lower() in STOP_WORDS:
            scan.stop_words += 1
        else:
            scan.replaceable.append(Word(start, end, text))
    return scan


def match_case(candidate: str, original: str) -> str:
    """Give `candidate` the capitalisation pattern of `original` (ALL CAPS, Title, or as proposed)."""
    if len(original) > 1 and original.isupper():
        return candidate.upper()
    if original[:1].isupper():
        return candidate[:1].upper() + candidate[1:]
    return candidate
