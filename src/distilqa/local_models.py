"""Tokenizers and randomly initialised models built on this machine, with no hub download.

The smoke profile, the tests and the speed benchmarks need real Hugging Face directories of a
known shape; the hub is out of reach in CI, so they are built here: a RoBERTa-style byte-level BPE
or a BERT-style WordPiece tokenizer trained on some text, and a model of any depth and width.
Weights are random: good for shapes, speed and plumbing, meaningless for accuracy.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

TokenizerKind = Literal["bpe", "wordpiece"]


def train_tokenizer(
    texts: Iterable[str], out_dir: str | os.PathLike[str], kind: TokenizerKind = "bpe", vocab_size: int = 8000
) -> Path:
    """Train a fast tokenizer on `texts` and save it as a Hugging Face tokenizer directory."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if kind == "bpe":
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer)
        tok.post_processor = processors.RobertaProcessing(
            ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")), trim_offsets=True
        )
        wrapped = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<s>",
            eos_token="</s>",
            sep_token="</s>",
            cls_token="<s>",
            unk_token="<unk>",
            pad_token="<pad>",
            mask_token="<mask>",
            model_input_names=["input_ids", "attention_mask"],
        )
    elif kind == "wordpiece":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
        tok.train_from_iterator(texts, trainer)
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        wrapped = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            cls_token="[CLS]",
            sep_token="[SEP]",
            unk_token="[UNK]",
            pad_token="[PAD]",
            mask_token="[MASK]",
            model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        )
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}")
    wrapped.model_max_length = 512
    wrapped.save_pretrained(out)
    return out


def random_qa_model(tokenizer_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], **shape: int) -> Path:
    """A randomly initialised extractive-QA model matching the tokenizer (RoBERTa for BPE, BERT for WordPiece)."""
    return random_model(tokenizer_dir, out_dir, "qa", **shape)


def random_mlm_model(tokenizer_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], **shape: int) -> Path:
    """A randomly initialised masked LM matching the tokenizer."""
    return random_model(tokenizer_dir, out_dir, "mlm", **shape)


def random_model(
    tokenizer_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    head: Literal["qa", "mlm"],
    *,
    num_layers: int = 2,
    hidden_size: int = 64,
    num_heads: int = 2,
    intermediate_size: int | None = None,
    seed: int = 0,
) -> Path:
    import torch
    import transformers
    from transformers import AutoTokenizer, BertConfig, RobertaConfig

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    suffix = {"qa": "ForQuestionAnswering", "mlm": "ForMaskedLM"}[head]
    if "token_type_ids" in tokenizer.model_input_names:
        config = BertConfig(max_position_embeddings=512, type_vocab_size=2, **common)
        model = getattr(transformers, "Bert" + suffix)(config)
    else:
        config = RobertaConfig(
            max_position_embeddings=514,
            type_vocab_size=1,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            **common,
        )
        model = getattr(transformers, "Roberta" + suffix)(config)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
