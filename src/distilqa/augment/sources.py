"""Where replacement candidates come from.

- `mlm`: the top-K predictions of a masked LM at the word's position (single-piece words only;
  other words fall back to a static source, as TinyBERT used GloVe for them).
- `glove`: the K nearest GloVe neighbours (cosine) among the V most frequent words, read by
  streaming the first V lines of the file.
- `embeddings`: the K nearest whole-word tokens in a model's input-embedding matrix: works
  offline with any local model, hence the default.

Results must not depend on how the input is sharded or batched, or sharded runs would differ from
the unsharded one in the last float bit and pick other candidates. So static sources compute every
word type of the whole input in one fixed order, and the masked LM batches fixed groups of
paragraphs that shards never split (see `augment.GROUP_SIZE`).
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from distilqa.augment.words import STOP_WORDS, Word
from distilqa.errors import ConfigError, DataError, ModelError
from distilqa.model_io import load_pretrained

NO_SOURCE = "none"
_WORD_MARKERS = ("Ġ", "▁")  # byte-level BPE and SentencePiece mark a token that starts after a space


@dataclass(frozen=True, slots=True)
class ParagraphJob:
    context: str
    words: list[Word]


Proposal = tuple[str, list[str]]  # (source name, candidates best first)


class CandidateSource(ABC):
    name: str

    def prepare(self, jobs: Sequence[ParagraphJob], k: int) -> None:  # noqa: B027 (optional hook)
        """See the whole input once before any group is proposed (static sources compute here)."""

    @abstractmethod
    def propose(self, jobs: Sequence[ParagraphJob], k: int) -> list[list[Proposal]]:
        """For each paragraph, for each of its words: where its candidates came from, and them."""


class StaticSource(CandidateSource):
    """Candidates that depend on the word type only, computed once per type and cached."""

    def __init__(self) -> None:
        self.cache: dict[str, list[str]] = {}

    @abstractmethod
    def neighbours(self, types: list[str], k: int) -> dict[str, list[str]]:
        """Lower-cased word type -> up to k neighbour words, nearest first."""

    def prepare(self, jobs: Sequence[ParagraphJob], k: int) -> None:
        self.prepare_types((w.text.lower() for job in jobs for w in job.words), k)

    def prepare_types(self, types: Iterable[str], k: int) -> None:
        todo = sorted(set(types) - self.cache.keys())
        if todo:
            self.cache.update(self.neighbours(todo, k))

    def lookup(self, word: str) -> list[str]:
        return self.cache.get(word.lower(), [])

    def propose(self, jobs: Sequence[ParagraphJob], k: int) -> list[list[Proposal]]:
        return [[(self.name, self.lookup(w.text)) for w in job.words] for job in jobs]


def _top_neighbours(
    queries: Any, matrix: Any, names: list[str], types: list[str], k: int, chunk: int = 1024
) -> dict[str, list[str]]:
    """Cosine top-k rows of `matrix` (rows already unit length) for each query row, skipping the word itself."""
    import torch

    out: dict[str, list[str]] = {}
    queries = torch.nn.functional.normalize(queries.float(), dim=1)
    for begin in range(0, len(types), chunk):
        sims = queries[begin : begin + chunk] @ matrix.T
        top = sims.topk(min(k + 4, matrix.shape[0]), dim=1).indices.tolist()
        for word, row in zip(types[begin : begin + chunk], top, strict=True):
            picked: list[str] = []
            for j in row:
                name = names[j]
                if name.lower() != word and name not in picked:
                    picked.append(name)
                if len(picked) == k:
                    break
            out[word] = picked
    return out


class GloveSource(StaticSource):
    name = "glove"

    def __init__(self, path: str | os.PathLike[str], vocab_size: int = 100_000) -> None:
        super().__init__()
        import torch

        if vocab_size < 1:
            raise ConfigError(f"glove vocabulary size must be positive, got {vocab_size}")
        self.path = os.fspath(path)
        words: list[str] = []
        vectors: list[list[float]] = []
        dim = None
        try:
            with open(self.path, encoding="utf-8", errors="strict") as f:
                for lineno, line in enumerate(f, 1):
                    if lineno > vocab_size:
                        break  # the V most frequent words are the first V lines; the rest is never read
                    parts = line.rstrip().split(" ")
                    if dim is None:
                        dim = len(parts) - 1
                    if len(parts) - 1 != dim or dim < 1:
                        raise DataError(f"{self.path}: line {lineno}: expected a word and {dim} numbers")
                    word = parts[0]
                    if not word.isalpha() or word.lower() in STOP_WORDS:
                        continue
                    try:
                        vectors.append([float(x) for x in parts[1:]])
                    except ValueError:
                        raise DataError(f"{self.path}: line {lineno}: not a number in the vector of {word!r}") from None
                    words.append(word)
        except FileNotFoundError:
            raise DataError(f"{self.path}: no such file") from None
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.path}: not UTF-8 text (byte {exc.start})") from None
        if not words:
            raise DataError(f"{self.path}: no word vectors found")
        self.words = words
        self.index = {w.lower(): i for i, w in reversed(list(enumerate(words)))}
        self.matrix = torch.nn.functional.normalize(torch.tensor(vectors), dim=1)

    def neighbours(self, types: list[str], k: int) -> dict[str, list[str]]:
        known = [t for t in types if t in self.index]
        out = {t: [] for t in types}
        if known:
            queries = self.matrix[[self.index[t] for t in known]]
            out.update(_top_neighbours(queries, self.matrix, self.words, known, k))
        return out


class VocabularyView:
    """The whole-word alphabetic tokens of a tokenizer, by kind (after a space or not)."""

    def __init__(self, tokenizer: Any) -> None:
        raw = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        special = set(tokenizer.all_special_ids)
        self.surface: list[str] = []
        self.spaced: list[bool] = []
        self.word_ids_spaced: list[int] = []
        self.word_ids_plain: list[int] = []
        for i, token in enumerate(raw):
            token = token or ""
            spaced = token.startswith(_WORD_MARKERS)
            surface = token[1:] if spaced else token
            self.surface.append(surface)
            self.spaced.append(spaced)
            if i in special or token.startswith("##"):
                continue
            if len(surface) >= 2 and surface.isascii() and surface.isalpha() and surface.lower() not in STOP_WORDS:
                (self.word_ids_spaced if spaced else self.word_ids_plain).append(i)

    def whole_word_ids(self) -> list[int]:
        """Tokens that are words by themselves (spaced ones when the tokenizer marks spaces)."""
        return self.word_ids_spaced or self.word_ids_plain


class EmbeddingSource(StaticSource):
    """Nearest whole-word tokens in a model's input embeddings (a word of several pieces: their mean)."""

    name = "embeddings"

    def __init__(self, model_dir: str | os.PathLike[str], model: Any = None, tokenizer: Any = None) -> None:
        super().__init__()
        import torch

        self.model_dir = os.fspath(model_dir)
        if tokenizer is None or model is None:
            tokenizer, model = load_pretrained(self.model_dir, "AutoModel")
        self.tokenizer = tokenizer
        self.vocab = VocabularyView(tokenizer)
        with torch.no_grad():
            self.embeddings = model.get_input_embeddings().weight.detach().float().clone()
        self.candidate_ids = self.vocab.whole_word_ids()
        if not self.candidate_ids:
            raise ModelError(f"{self.model_dir}: the tokenizer has no whole-word tokens to propose")
        self.names = [self.vocab.surface[i] for i in self.candidate_ids]
        self.matrix = torch.nn.functional.normalize(self.embeddings[self.candidate_ids], dim=1)

    def neighbours(self, types: list[str], k: int) -> dict[str, list[str]]:
        import torch

        encoded = self.tokenizer([" " + t for t in types], add_special_tokens=False)["input_ids"]
        queries = torch.stack([self.embeddings[ids].mean(dim=0) for ids in encoded])
        return _top_neighbours(queries, self.matrix, self.names, types, k)


class MLMSource(CandidateSource):
    """Top-K masked-LM predictions for single-piece words; other words go to `fallback`.

    Speed over the straightforward way (one masked copy per word, batches of 16, full-vocabulary
    logits at every position): several words are masked in one copy, spread evenly so that each
    keeps most of its context; copies of many paragraphs are batched together, sorted by length;
    and the vocabulary projection runs only at the masked positions.
    """

    name = "mlm"

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        fallback: StaticSource | None = None,
        masks_per_copy: int = 8,
        batch_size: int = 64,
        max_len: int = 256,
        threads: int = 0,
    ) -> None:
        import torch

        if masks_per_copy < 1 or batch_size < 1 or max_len < 8:
            raise ConfigError("masks_per_copy and batch_size must be positive and max_len at least 8")
        if threads:
            torch.set_num_threads(threads)
        self.model_dir = os.fspath(model_dir)
        self.tokenizer, self.model = load_pretrained(self.model_dir, "AutoModelForMaskedLM")
        if self.tokenizer.mask_token_id is None:
            raise ModelError(f"{self.model_dir}: the tokenizer has no mask token, so it is not a masked LM")
        self.fallback = (
            fallback if fallback is not None else EmbeddingSource(self.model_dir, self.model, self.tokenizer)
        )
        self.masks_per_copy = masks_per_copy
        self.batch_size = batch_size
        self.vocab = VocabularyView(self.tokenizer)
        enc = self.tokenizer("x")
        seq = enc.sequence_ids()
        first = seq.index(0)
        last = len(seq) - 1 - seq[::-1].index(0)
        self.prefix = enc["input_ids"][:first]
        self.suffix = enc["input_ids"][last + 1 :]
        self.chunk_len = max_len - len(self.prefix) - len(self.suffix)
        self.allowed = {}
        for spaced in (True, False):
            mask = torch.full((len(self.tokenizer),), float("-inf"))
            ids = self.vocab.word_ids_spaced if spaced else self.vocab.word_ids_plain
            if ids:
                mask[ids] = 0.0
            self.allowed[spaced] = mask
        # the candidate pass is ~78 PFLOP on SQuAD train x20: a GPU when the pod has one (the fallback's
        # embedding table was copied above and stays on the CPU)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        base = self.model.base_model
        heads = [m for _, m in self.model.named_children() if m is not base]
        self.head = heads[0] if len(heads) == 1 else None  # None: fall back to the full forward

    def single_pieces(self, job: ParagraphJob, offsets: list[tuple[int, int]]) -> list[int | None]:
        """For each word, the index of the one token that spells it exactly, or None."""
        starts = {o[0]: i for i, o in enumerate(offsets)}
        out: list[int | None] = []
        for w in job.words:
            i = starts.get(w.start)
            out.append(i if i is not None and offsets[i][1] == w.end else None)
        return out

    def prepare(self, jobs: Sequence[ParagraphJob], k: int) -> None:
        encoded = self.tokenizer([j.context for j in jobs], add_special_tokens=False, return_offsets_mapping=True)
        multi = []
        for job, offsets in zip(jobs, encoded["offset_mapping"], strict=True):
            pieces = self.single_pieces(job, [tuple(o) for o in offsets])
            multi.extend(w.text.lower() for w, p in zip(job.words, pieces, strict=True) if p is None)
        self.fallback.prepare_types(multi, k)

    def propose(self, jobs: Sequence[ParagraphJob], k: int) -> list[list[Proposal]]:
        import torch

        encoded = self.tokenizer([j.context for j in jobs], add_special_tokens=False, return_offsets_mapping=True)
        proposals: list[list[Proposal]] = []
        # (token ids, [(masked position, paragraph, word, original token id)])
        copies: list[tuple[list[int], list[tuple[int, int, int, int]]]] = []
        for p, (job, ids, offsets) in enumerate(
            zip(jobs, encoded["input_ids"], encoded["offset_mapping"], strict=True)
        ):
            pieces = self.single_pieces(job, [tuple(o) for o in offsets])
            row: list[Proposal] = []
            by_chunk: dict[int, list[tuple[int, int]]] = {}
            for w, (word, token) in enumerate(zip(job.words, pieces, strict=True)):
                if token is None:
                    row.append((self.fallback.name, self.fallback.lookup(word.text)))
                else:
                    row.append((NO_SOURCE, []))
                    by_chunk.setdefault(token // self.chunk_len, []).append((token, w))
            proposals.append(row)
            for chunk, items in by_chunk.items():
                lo = chunk * self.chunk_len
                chunk_ids = ids[lo : lo + self.chunk_len]
                n_copies = math.ceil(len(items) / self.masks_per_copy)
                for c in range(n_copies):
                    masked = list(chunk_ids)
                    targets = []
                    for token, w in items[c::n_copies]:  # spread the masks of one copy evenly
                        masked[token - lo] = self.tokenizer.mask_token_id
                        targets.append((len(self.prefix) + token - lo, p, w, ids[token]))
                    copies.append((self.prefix + masked + self.suffix, targets))
        copies.sort(key=lambda c: len(c[0]), reverse=True)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        with torch.inference_mode():
            for begin in range(0, len(copies), self.batch_size):
                batch = copies[begin : begin + self.batch_size]
                width = len(batch[0][0])
                input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                rows, cols, where = [], [], []
                for r, (ids, targets) in enumerate(batch):
                    input_ids[r, : len(ids)] = torch.tensor(ids)
                    attention[r, : len(ids)] = 1
                    for position, p, w, original in targets:
                        rows.append(r)
                        cols.append(position)
                        where.append((p, w, original))
                input_ids, attention = input_ids.to(self.device), attention.to(self.device)
                if self.head is not None:
                    hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention).last_hidden_state
                    logits = self.head(hidden[rows, cols])
                else:
                    logits = self.model(input_ids=input_ids, attention_mask=attention).logits[rows, cols]
                logits = logits.float().cpu()
                for n, (p, w, original) in enumerate(where):
                    proposals[p][w] = (self.name, self.pick(logits[n], original, jobs[p].words[w].text, k))
        return proposals

    def pick(self, logits: Any, original_token: int, word: str, k: int) -> list[str]:
        """The k best whole-word predictions of the original's kind (after a space or not), not the word itself."""
        scores = logits + self.allowed[self.vocab.spaced[original_token]]
        picked: list[str] = []
        for t in scores.topk(min(k + 1, scores.shape[0])).indices.tolist():
            if scores[t] == float("-inf"):
                break
            surface = self.vocab.surface[t]
            if surface.lower() != word.lower():
                picked.append(surface)
            if len(picked) == k:
                break
        return picked
