"""Draw N augmented copies of every paragraph, keeping the original and every answer.

Determinism: the random draws of copy k of paragraph i come from a generator seeded by
(seed, i, k) alone, and candidates never depend on batching (see `sources`), so a run is
reproducible and shards 1..n concatenated equal the unsharded output. Shards are contiguous ranges
of GROUP_SIZE-paragraph groups: a group is the unit the masked LM batches together.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from distilqa.augment.sources import NO_SOURCE, CandidateSource, ParagraphJob
from distilqa.augment.words import WordScan, match_case, scan_words
from distilqa.errors import ConfigError, DataError
from distilqa.squad import Answer, Article, Paragraph, Question, SquadDataset

GROUP_SIZE = 32
ID_SUFFIX = "-aug"


@dataclass(frozen=True, slots=True)
class AugmentConfig:
    factor: int = 20  # augmented copies per paragraph (the original is kept besides)
    replace_prob: float = 0.4
    candidates: int = 15
    seed: int = 42

    def __post_init__(self) -> None:
        if not isinstance(self.factor, int) or isinstance(self.factor, bool) or self.factor < 0:
            raise ConfigError(f"factor must be a non-negative integer, got {self.factor!r}")
        if not isinstance(self.replace_prob, int | float) or not 0.0 <= self.replace_prob <= 1.0:
            raise ConfigError(f"replace_prob must be between 0 and 1, got {self.replace_prob!r}")
        if not isinstance(self.candidates, int) or isinstance(self.candidates, bool) or self.candidates < 1:
            raise ConfigError(f"candidates must be a positive integer, got {self.candidates!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")


@dataclass(frozen=True, slots=True)
class Shard:
    index: int  # 1-based
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not m:
            raise ConfigError(f"shard must look like i/n (e.g. 2/8), got {text!r}")
        index, count = int(m.group(1)), int(m.group(2))
        if count < 1 or not 1 <= index <= count:
            raise ConfigError(f"shard {text!r}: need 1 <= i <= n")
        return cls(index, count)

    def paragraph_range(self, num_paragraphs: int) -> range:
        groups = -(-num_paragraphs // GROUP_SIZE)
        lo = (self.index - 1) * groups // self.count
        hi = self.index * groups // self.count
        return range(min(lo * GROUP_SIZE, num_paragraphs), min(hi * GROUP_SIZE, num_paragraphs))


@dataclass(slots=True)
class AugmentStats:
    shard: str = "1/1"
    paragraphs_in: int = 0
    questions_in: int = 0
    paragraphs_out: int = 0
    questions_out: int = 0
    words_total: int = 0
    words_replaceable: int = 0
    words_skipped_stop_words: int = 0
    words_skipped_in_answers: int = 0
    words_skipped_too_short: int = 0
    words_without_candidates: int = 0
    replacements_by_source: Counter = field(default_factory=Counter)
    answer_start_repairs_in_input: int = 0
    seconds_candidates: float = 0.0
    seconds_total: float = 0.0

    def add_scan(self, scan: WordScan) -> None:
        self.words_total += scan.total
        self.words_replaceable += len(scan.replaceable)
        self.words_skipped_stop_words += scan.stop_words
        self.words_skipped_in_answers += scan.in_answers
        self.words_skipped_too_short += scan.too_short

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__slots__}
        out["replacements_by_source"] = dict(sorted(self.replacements_by_source.items()))
        out["paragraphs_per_s"] = round(self.paragraphs_in / self.seconds_total, 2) if self.seconds_total else None
        return out


def copy_rng(seed: int, paragraph_index: int, copy: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{paragraph_index}:{copy}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def protected_spans(paragraph: Paragraph) -> list[tuple[int, int]]:
    return [(a.answer_start, a.answer_end) for qa in paragraph.qas for a in (*qa.answers, *qa.plausible_answers)]


def augment_dataset(
    dataset: SquadDataset,
    config: AugmentConfig,
    source: CandidateSource,
    shard: Shard | None = None,
    progress: Callable[[int], Any] | None = None,
) -> tuple[SquadDataset, AugmentStats]:
    t_start = time.perf_counter()
    shard = shard or Shard(1, 1)
    located = [(a, p) for a, article in enumerate(dataset.articles) for p in article.paragraphs]
    scans = [scan_words(p.context, protected_spans(p)) for _, p in located]
    jobs = [ParagraphJob(p.context, scan.replaceable) for (_, p), scan in zip(located, scans, strict=True)]
    stats = AugmentStats(shard=f"{shard.index}/{shard.count}", answer_start_repairs_in_input=len(dataset.repairs))
    t0 = time.perf_counter()
    source.prepare(jobs, config.candidates)  # the whole input: candidates then cannot depend on the shard
    stats.seconds_candidates += time.perf_counter() - t0
    span = shard.paragraph_range(len(located))
    out_paragraphs: dict[int, list[Paragraph]] = {}
    bar = progress(len(span)) if progress else None
    for group_start in range(span.start, span.stop, GROUP_SIZE):
        group = range(group_start, min(group_start + GROUP_SIZE, span.stop))
        t0 = time.perf_counter()
        proposals = source.propose([jobs[i] for i in group], config.candidates)
        stats.seconds_candidates += time.perf_counter() - t0
        for i, paragraph_proposals in zip(group, proposals, strict=True):
            article_index, paragraph = located[i]
            stats.add_scan(scans[i])
            stats.paragraphs_in += 1
            stats.questions_in += len(paragraph.qas)
            stats.words_without_candidates += sum(1 for _, c in paragraph_proposals if not c)
            copies = [paragraph]
            for k in range(1, config.factor + 1):
                copies.append(_augmented_copy(paragraph, jobs[i], paragraph_proposals, config, i, k, stats))
            out_paragraphs.setdefault(article_index, []).extend(copies)
            stats.paragraphs_out += len(copies)
            stats.questions_out += len(paragraph.qas) * len(copies)
        if bar is not None:
            bar.update(len(group))
    if bar is not None:
        bar.close()
    articles = [Article(dataset.articles[a].title, ps) for a, ps in sorted(out_paragraphs.items())]
    stats.seconds_total = round(time.perf_counter() - t_start, 3)
    stats.seconds_candidates = round(stats.seconds_candidates, 3)
    return SquadDataset(articles, dataset.version, dataset.source), stats


def _augmented_copy(
    paragraph: Paragraph,
    job: ParagraphJob,
    proposals: Sequence[tuple[str, list[str]]],
    config: AugmentConfig,
    paragraph_index: int,
    k: int,
    stats: AugmentStats,
) -> Paragraph:
    rng = copy_rng(config.seed, paragraph_index, k)
    pieces: list[str] = []
    shifts: list[tuple[int, int]] = []  # (original end of a replaced word, cumulative length change)
    cursor = delta = 0
    context = paragraph.context
    for word, (source_name, candidates) in zip(job.words, proposals, strict=True):
        draw = rng.random()  # one draw per word whatever happens, so draws never shift between words
        if draw >= config.replace_prob or not candidates or source_name == NO_SOURCE:
            continue
        new = match_case(rng.choice(candidates), word.text)
        pieces.append(context[cursor : word.start])
        pieces.append(new)
        cursor = word.end
        delta += len(new) - len(word.text)
        shifts.append((word.end, delta))
        stats.replacements_by_source[source_name] += 1
    pieces.append(context[cursor:])
    new_context = "".join(pieces)

    def moved(answer: Answer) -> Answer:
        shift = 0
        for end, cumulative in shifts:
            if end > answer.answer_start:
                break
            shift = cumulative
        start = answer.answer_start + shift
        if new_context[start : start + len(answer.text)] != answer.text:  # guards the invariant
            raise DataError(
                f"internal error: answer {answer.text!r} lost in augmentation of paragraph {paragraph_index}"
            )
        return Answer(answer.text, start)

    qas = [
        Question(
            f"{qa.id}{ID_SUFFIX}{k}",
            qa.question,
            [moved(a) for a in qa.answers],
            qa.is_impossible,
            [moved(a) for a in qa.plausible_answers],
        )
        for qa in paragraph.qas
    ]
    return Paragraph(new_context, qas)


def merge_shards(shards: Sequence[SquadDataset]) -> SquadDataset:
    """Concatenate shard outputs in order; an article cut by a shard boundary is joined again."""
    if not shards:
        raise ConfigError("no shards to merge")
    articles: list[Article] = []
    for ds in shards:
        for article in ds.articles:
            if articles and articles[-1].title == article.title:
                articles[-1] = Article(article.title, articles[-1].paragraphs + article.paragraphs)
            else:
                articles.append(Article(article.title, list(article.paragraphs)))
    ids = Counter(qa.id for a in articles for p in a.paragraphs for qa in p.qas)
    dup = [q for q, n in ids.items() if n > 1]
    if dup:
        raise DataError(f"shards overlap: {len(dup)} question id(s) appear twice (first: {dup[0]})")
    return SquadDataset(articles, shards[0].version, "merged shards")
