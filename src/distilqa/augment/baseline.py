"""The straightforward way to get masked-LM candidates, kept as the benchmark's yardstick.

As Haystack's augment_squad did it: for each paragraph, one copy per single-piece word with that
word masked, batches of 16 copies of the same paragraph, a full forward pass with vocabulary
logits at every position. Same model, same candidate filter, same fallback as `MLMSource`, so
the two differ only in how the work is batched.
"""

from __future__ import annotations

from collections.abc import Sequence

from distilqa.augment.sources import NO_SOURCE, MLMSource, ParagraphJob, Proposal


def baseline_propose(
    source: MLMSource, jobs: Sequence[ParagraphJob], k: int, batch_size: int = 16
) -> list[list[Proposal]]:
    import torch

    tok = source.tokenizer
    out: list[list[Proposal]] = []
    for job in jobs:
        enc = tok(job.context, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]
        pieces = source.single_pieces(job, offsets)
        row: list[Proposal] = []
        copies = []
        for w, (word, token) in enumerate(zip(job.words, pieces, strict=True)):
            if token is None:
                row.append((source.fallback.name, source.fallback.lookup(word.text)))
                continue
            row.append((NO_SOURCE, []))
            lo = token // source.chunk_len * source.chunk_len
            masked = list(ids[lo : lo + source.chunk_len])
            masked[token - lo] = tok.mask_token_id
            copies.append((source.prefix + masked + source.suffix, len(source.prefix) + token - lo, w, ids[token]))
        with torch.inference_mode():
            for begin in range(0, len(copies), batch_size):
                batch = copies[begin : begin + batch_size]
                width = max(len(c[0]) for c in batch)
                input_ids = torch.full((len(batch), width), tok.pad_token_id or 0, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                for r, (seq, *_) in enumerate(batch):
                    input_ids[r, : len(seq)] = torch.tensor(seq)
                    attention[r, : len(seq)] = 1
                logits = source.model(input_ids=input_ids, attention_mask=attention).logits.float()
                for r, (_, position, w, original) in enumerate(batch):
                    row[w] = (source.name, source.pick(logits[r, position], original, job.words[w].text, k))
        out.append(row)
    return out
