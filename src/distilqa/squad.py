"""SQuAD 2.0 files: load from anywhere, validate once, hand typed objects to the rest of the code.

Validation happens here and only here. Every problem is named by file, article, question id and
what is wrong, so a user can fix the file; nothing is dropped silently. One repair is made: an
`answer_start` that does not point at its text is moved when the text occurs exactly once in the
context (the shipped dev set was rebuilt that way); the repairs are listed on the dataset.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilqa import storage
from distilqa.errors import DataError

MAX_REPORTED_PROBLEMS = 20

DEFAULT_DEV_SET = Path(__file__).parent / "data" / "squad2" / "dev-v2.0.json.gz"


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    answer_start: int

    @property
    def answer_end(self) -> int:
        """Exclusive character end of the answer in its context."""
        return self.answer_start + len(self.text)


@dataclass(slots=True)
class Question:
    id: str
    question: str
    answers: list[Answer]
    is_impossible: bool
    plausible_answers: list[Answer] = field(default_factory=list)


@dataclass(slots=True)
class Paragraph:
    context: str
    qas: list[Question]


@dataclass(slots=True)
class Article:
    title: str
    paragraphs: list[Paragraph]


@dataclass(frozen=True, slots=True)
class Example:
    """One question with its context: the unit that prediction and serving work on."""

    id: str
    question: str
    context: str


@dataclass(slots=True)
class SquadDataset:
    articles: list[Article]
    version: str = "v2.0"
    source: str = "<memory>"
    repairs: list[str] = field(default_factory=list)

    def iter_questions(self) -> Iterator[tuple[Article, Paragraph, Question]]:
        for article in self.articles:
            for paragraph in article.paragraphs:
                for qa in paragraph.qas:
                    yield article, paragraph, qa

    def examples(self) -> list[Example]:
        return [Example(qa.id, qa.question, p.context) for _, p, qa in self.iter_questions()]

    @property
    def num_questions(self) -> int:
        return sum(len(p.qas) for a in self.articles for p in a.paragraphs)

    def has_answer(self) -> dict[str, bool]:
        """Question id -> answerable, in file order (the official metric's order)."""
        return {qa.id: bool(qa.answers) for _, _, qa in self.iter_questions()}

    def gold_answers(self) -> dict[str, list[str]]:
        return {qa.id: [a.text for a in qa.answers] for _, _, qa in self.iter_questions()}

    def select_articles(self, indices: list[int]) -> SquadDataset:
        """A dataset of the articles at `indices` (0-based), e.g. to split train/held-out by article."""
        return SquadDataset([self.articles[i] for i in indices], self.version, self.source)

    def first_questions(self, limit: int) -> SquadDataset:
        """The first `limit` questions (in file order), paragraphs and articles kept around them."""
        articles: list[Article] = []
        left = limit
        for article in self.articles:
            paragraphs = []
            for p in article.paragraphs:
                if left <= 0:
                    break
                paragraphs.append(Paragraph(p.context, p.qas[:left]))
                left -= len(paragraphs[-1].qas)
            if paragraphs:
                articles.append(Article(article.title, paragraphs))
            if left <= 0:
                break
        return SquadDataset(articles, self.version, self.source)

    def to_json(self) -> dict[str, Any]:
        def answers(items: list[Answer]) -> list[dict[str, Any]]:
            return [{"text": a.text, "answer_start": a.answer_start} for a in items]

        data = []
        for article in self.articles:
            paragraphs = []
            for p in article.paragraphs:
                qas = []
                for qa in p.qas:
                    item: dict[str, Any] = {
                        "id": qa.id,
                        "question": qa.question,
                        "answers": answers(qa.answers),
                        "is_impossible": qa.is_impossible,
                    }
                    if qa.plausible_answers:
                        item["plausible_answers"] = answers(qa.plausible_answers)
                    qas.append(item)
                paragraphs.append({"context": p.context, "qas": qas})
            data.append({"title": article.title, "paragraphs": paragraphs})
        return {"version": self.version, "data": data}


def decode_json(raw: bytes, source: str) -> Any:
    """Parse JSON bytes, transparently gunzipping; errors name the source."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{source}: corrupt gzip data: {exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def read_json(uri: str | os.PathLike[str]) -> Any:
    uri = os.fspath(uri)
    return decode_json(storage.read_bytes(uri), uri)


def load_squad(uri: str | os.PathLike[str] | None = None) -> SquadDataset:
    """Load and validate a SQuAD 1.1/2.0 file (local, .gz, https:// or s3://); None = bundled dev set."""
    uri = os.fspath(uri) if uri is not None else str(DEFAULT_DEV_SET)
    return parse_squad(read_json(uri), uri)


def parse_squad(obj: Any, source: str = "<memory>") -> SquadDataset:
    return _Parser(source).parse(obj)


def write_squad(dataset: SquadDataset, uri: str | os.PathLike[str]) -> None:
    """Write as JSON, gzipped when the name ends in .gz."""
    uri = os.fspath(uri)
    data = json.dumps(dataset.to_json(), ensure_ascii=False).encode("utf-8")
    if uri.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    storage.write_bytes(uri, data)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        self.repairs: list[str] = []
        self.seen_ids: dict[str, str] = {}

    def problem(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def parse(self, obj: Any) -> SquadDataset:
        if not isinstance(obj, dict):
            raise DataError(f"{self.source}: expected a JSON object with a 'data' list, got {_kind(obj)}")
        data = obj.get("data")
        if not isinstance(data, list):
            raise DataError(f"{self.source}: expected a 'data' list at the top level, got {_kind(data)}")
        version = obj.get("version", "v2.0")
        articles = [self.article(i, a) for i, a in enumerate(data)]
        if self.problems:
            shown = self.problems[:MAX_REPORTED_PROBLEMS]
            more = len(self.problems) - len(shown)
            lines = "\n  ".join(shown)
            tail = f"\n  ... and {more} more" if more else ""
            raise DataError(f"{self.source}: {len(self.problems)} problem(s):\n  {lines}{tail}")
        return SquadDataset([a for a in articles if a is not None], str(version), self.source, self.repairs)

    def article(self, index: int, obj: Any) -> Article | None:
        where = f"article {index}"
        if not isinstance(obj, dict):
            self.problem(where, f"expected an object, got {_kind(obj)}")
            return None
        title = obj.get("title", "")
        if not isinstance(title, str):
            self.problem(where, f"title must be a string, got {_kind(title)}")
            title = str(title)
        if title:
            where = f'article {index} "{title}"'
        paragraphs = obj.get("paragraphs")
        if not isinstance(paragraphs, list):
            self.problem(where, f"expected a 'paragraphs' list, got {_kind(paragraphs)}")
            return None
        parsed = [self.paragraph(f"{where}, paragraph {j}", p) for j, p in enumerate(paragraphs)]
        return Article(title, [p for p in parsed if p is not None])

    def paragraph(self, where: str, obj: Any) -> Paragraph | None:
        if not isinstance(obj, dict):
            self.problem(where, f"expected an object, got {_kind(obj)}")
            return None
        context = obj.get("context")
        if not isinstance(context, str):
            self.problem(where, f"missing or non-string 'context' ({_kind(context)})")
            return None
        if not context.strip():
            self.problem(where, "empty context")
            return None
        qas = obj.get("qas")
        if not isinstance(qas, list):
            self.problem(where, f"expected a 'qas' list, got {_kind(qas)}")
            return None
        parsed = [self.question(where, k, q, context) for k, q in enumerate(qas)]
        return Paragraph(context, [q for q in parsed if q is not None])

    def question(self, where: str, index: int, obj: Any, context: str) -> Question | None:
        if not isinstance(obj, dict):
            self.problem(f"{where}, question {index}", f"expected an object, got {_kind(obj)}")
            return None
        qid = obj.get("id")
        if not isinstance(qid, str) or not qid:
            self.problem(f"{where}, question {index}", f"missing or non-string 'id' ({_kind(qid)})")
            return None
        where = f"{where}, question {qid}"
        if qid in self.seen_ids:
            self.problem(where, f"duplicate id (first seen at {self.seen_ids[qid]})")
            return None
        self.seen_ids[qid] = where
        text = obj.get("question")
        if not isinstance(text, str) or not text.strip():
            self.problem(where, f"missing or empty 'question' text ({_kind(text)})")
            return None
        answers = self.answers(where, obj.get("answers", []), context, "answers")
        plausible = self.answers(where, obj.get("plausible_answers", []), context, "plausible_answers")
        if answers is None or plausible is None:
            return None
        impossible = obj.get("is_impossible", not answers)
        if not isinstance(impossible, bool):
            self.problem(where, f"'is_impossible' must be true or false, got {_kind(impossible)}")
            return None
        if impossible and answers:
            self.problem(where, "is_impossible is true but the question has answers")
            return None
        if not impossible and not answers:
            self.problem(where, "is_impossible is false but the question has no answers")
            return None
        return Question(qid, text, answers, impossible, plausible)

    def answers(self, where: str, items: Any, context: str, key: str) -> list[Answer] | None:
        if not isinstance(items, list):
            self.problem(where, f"'{key}' must be a list, got {_kind(items)}")
            return None
        out: list[Answer] = []
        ok = True
        for n, item in enumerate(items):
            answer = self.answer(f"{where}, {key}[{n}]", item, context)
            if answer is None:
                ok = False
            else:
                out.append(answer)
        return out if ok else None

    def answer(self, where: str, obj: Any, context: str) -> Answer | None:
        if not isinstance(obj, dict):
            self.problem(where, f"expected an object, got {_kind(obj)}")
            return None
        text = obj.get("text")
        if not isinstance(text, str) or not text:
            self.problem(where, f"missing or empty answer 'text' ({_kind(text)})")
            return None
        start = obj.get("answer_start")
        if start is not None and (not isinstance(start, int) or isinstance(start, bool)):
            self.problem(where, f"'answer_start' must be an integer, got {_kind(start)}")
            return None
        if start is not None and 0 <= start and context[start : start + len(text)] == text:
            return Answer(text, start)
        count = context.count(text)
        if count == 1:
            fixed = context.index(text)
            self.repairs.append(f"{where}: answer_start {start} -> {fixed}")
            return Answer(text, fixed)
        if count == 0:
            self.problem(where, f"answer text {text!r} does not occur in the context")
        else:
            self.problem(
                where,
                f"answer_start {start} does not point at {text!r}, which occurs {count} times "
                "in the context (ambiguous: fix answer_start)",
            )
        return None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
