"""Raw text → span-masked pretraining batches for `bang_nar.pretraining` (docs/pretraining.md#reconstruction).

The data pipeline the released pretraining hooks expect is MASS's `MaskedLanguagePairDataset` [V code; its use by
BANG is inferred]. This module reproduces it with `datasets` and a collator, adding `target_idx` (docs/pretraining.md):

1. `load_text_dataset`: local `.txt` (one document per line), `.json`/`.jsonl`/`.csv`/`.parquet` files, a folder
   of `.txt` files, or a Hub dataset; `streaming=True` for corpora that do not fit on disk or in memory.
2. `pack_documents`: tokenize without special tokens, end every document with `[SEP]`, and pack the token stream
   into chunks of `max_length` tokens (`--sample-break-mode none`); a shorter tail stays a shorter chunk.
3. `SpanMaskingCollator`: per chunk and per `span_block_size`-token block from index 1, one span of
   `int(len(block) · mask_ratio)` tokens at a uniform start. The spans of a chunk are concatenated into one target;
   the decoder input is the token before each target; `target_idx` is the index inside its span; `positions` is
   each target's index in the chunk, which is its prev token's 1-based position (MASS `positions`). In the
   source, span tokens become `[MASK]` / stay / become a random token with probabilities 0.8 / 0.1 / 0.1.

Every ratio is a field. Defaults are MASS's (64-token blocks, 15%: 9-token spans for full blocks, hence the
inferred n = 9 streams).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch

from .data import DataFormatError

_RECORD_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def load_text_dataset(
    source: str | os.PathLike,
    *,
    text_column: str = "text",
    split: str = "train",
    streaming: bool = False,
    dataset_config: str | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Raw text as a dataset with a string column `text_column`.

    `source`: a `.txt` file (one document per line; blank lines are skipped later), a record file
    (`.json`/`.jsonl`/`.csv`/`.parquet`), a folder of `.txt` files, or anything `datasets.load_dataset` takes
    (a Hub dataset name or a dataset folder). `streaming=True` returns an `IterableDataset`.
    """
    path = Path(source)
    suffix = path.suffix.lower()
    if path.is_file() and suffix == ".txt":
        data = datasets.load_dataset("text", data_files=str(path), split="train", streaming=streaming)
        text_column_found = "text"
    elif path.is_file() and suffix in _RECORD_BUILDERS:
        data = datasets.load_dataset(_RECORD_BUILDERS[suffix], data_files=str(path), split="train", streaming=streaming)
        text_column_found = text_column
    elif path.is_dir() and any(path.glob("*.txt")) and not any(path.glob("*.py")):
        files = sorted(str(p) for p in path.glob("*.txt"))
        data = datasets.load_dataset("text", data_files=files, split="train", streaming=streaming)
        text_column_found = "text"
    elif path.suffix and not path.exists() and suffix in (*_RECORD_BUILDERS, ".txt"):
        raise FileNotFoundError(f"{source}: no such file; check the path of the pretraining text.")
    else:
        data = datasets.load_dataset(str(source), dataset_config, split=split, streaming=streaming)
        text_column_found = text_column
    columns = data.column_names
    if columns is not None and text_column_found not in columns:
        raise DataFormatError(
            f"{source}: no text column {text_column_found!r} (columns: {columns}); pass --text_column with the "
            "column that holds the raw text."
        )
    if text_column_found != text_column:
        data = data.rename_column(text_column_found, text_column)
    return data


def pack_documents(
    data: datasets.Dataset | datasets.IterableDataset,
    tokenizer: Any,
    max_length: int,
    *,
    text_column: str = "text",
    batch_size: int = 1000,
) -> datasets.Dataset | datasets.IterableDataset:
    """Tokenize documents, append `[SEP]` to each and pack them into chunks of `max_length` token ids.

    Returns a dataset with one column, `input_ids`. Documents are never split at chunk boundaries on purpose;
    a chunk may hold the end of one document and the start of the next (MASS `--sample-break-mode none`). Each
    `batch_size` documents end in a chunk of up to `max_length` tokens: the tail is kept, not dropped.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (a span needs the token before it), got {max_length}.")
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if sep is None:
        raise ValueError("The tokenizer needs a [SEP]/eos token to separate packed documents.")

    def pack(batch: dict[str, list]) -> dict[str, list]:
        texts = [text for text in batch[text_column] if text and text.strip()]
        stream: list[int] = []
        for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]:
            stream.extend(ids)
            stream.append(sep)
        return {"input_ids": [stream[i : i + max_length] for i in range(0, len(stream), max_length)]}

    columns = data.column_names
    return data.map(pack, batched=True, batch_size=batch_size, remove_columns=columns)


@dataclass
class SpanMaskingCollator:
    """MASS-style span masking with `target_idx` (module docstring). Call it on features with `input_ids`.

    Returns `input_ids` / `attention_mask` (masked source, right-padded), `decoder_input_ids` (the token before
    each target, padded with pad), `labels` (span tokens, -100 padding), `target_idx` (index inside the span,
    -1 padding), with `document_positions`, `positions` (each target's index in the chunk, 0 padding) and, with
    `encoder_labels`, `encoder_labels` (source-aligned: the original token at every span position, -100 elsewhere),
    all `[B, ·]` long tensors.

    Fields:
        tokenizer: gives `pad_token_id`, `mask_token_id`, the special ids and the vocabulary size.
        span_block_size: tokens per block; one span per block (MASS `block_size` 64).
        mask_ratio: span length = int(block length × mask_ratio) (MASS 0.15).
        mask_prob, keep_prob, random_prob: what a span token becomes in the source: `[MASK]`, itself, a random
            non-special token (MASS 0.8 / 0.1 / 0.1; normalised to sum 1).
        first_maskable: blocks start at this index (MASS 1: every span has a token before it).
        generator: a seeded `torch.Generator` for reproducible masks (default: torch's global RNG, which the
            Trainer seeds).
        document_positions: emit `positions`, so the decoder places each target at its place in the document,
            as the released hooks expect (docs/pretraining.md). False: the fine-tuning positions 1..T of the
            concatenated spans.
        encoder_labels: emit `encoder_labels` for the encoder MLM term of `pretraining_forward` (an addition to
            the reconstruction: it keeps a from-scratch encoder from collapsing, README "Pretraining").
    """

    tokenizer: Any
    span_block_size: int = 64
    mask_ratio: float = 0.15
    mask_prob: float = 0.8
    keep_prob: float = 0.1
    random_prob: float = 0.1
    first_maskable: int = 1
    generator: torch.Generator | None = None
    document_positions: bool = True
    encoder_labels: bool = True
    _random_ids: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.span_block_size < 1:
            raise ValueError(f"span_block_size must be >= 1, got {self.span_block_size}.")
        if not 0.0 < self.mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1], got {self.mask_ratio}.")
        probs = (self.mask_prob, self.keep_prob, self.random_prob)
        if min(probs) < 0 or sum(probs) <= 0:
            raise ValueError(f"mask_prob, keep_prob, random_prob must be >= 0 with a positive sum, got {probs}.")
        if self.first_maskable < 1:
            raise ValueError("first_maskable must be >= 1: the first target needs a token before it.")
        if self.tokenizer.pad_token_id is None or (self.mask_prob > 0 and self.tokenizer.mask_token_id is None):
            raise ValueError("The tokenizer needs a pad token and, with mask_prob > 0, a [MASK] token.")
        special = set(self.tokenizer.all_special_ids)
        self._random_ids = torch.tensor([i for i in range(len(self.tokenizer)) if i not in special])

    def span_positions(self, length: int) -> list[list[int]]:
        """The masked spans of a chunk of `length` tokens, one per block (blocks too short for a token get none)."""
        spans = []
        for block_start in range(self.first_maskable, length, self.span_block_size):
            block_length = min(self.span_block_size, length - block_start)
            span_length = int(block_length * self.mask_ratio)
            if span_length == 0:
                continue
            offset = int(torch.randint(block_length - span_length + 1, (1,), generator=self.generator))
            start = block_start + offset
            spans.append(list(range(start, start + span_length)))
        return spans

    def _replace(self, tokens: torch.Tensor) -> torch.Tensor:
        probs = torch.tensor([self.mask_prob, self.keep_prob, self.random_prob], dtype=torch.float)
        choice = torch.multinomial(probs, tokens.numel(), replacement=True, generator=self.generator)
        random = self._random_ids[torch.randint(len(self._random_ids), tokens.shape, generator=self.generator)]
        masked = torch.full_like(tokens, self.tokenizer.mask_token_id if self.mask_prob > 0 else 0)
        return torch.where(choice == 0, masked, torch.where(choice == 1, tokens, random))

    def __call__(self, features: Iterable[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sources, prevs, targets, indices, position_rows, source_labels = [], [], [], [], [], []
        for feature in features:
            tokens = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            spans = self.span_positions(len(tokens))
            positions = torch.tensor([p for span in spans for p in span], dtype=torch.long)
            source = tokens.clone()
            if len(positions):
                source[positions] = self._replace(tokens[positions])
            sources.append(source)
            source_labels.append(torch.full_like(tokens, -100).index_copy(0, positions, tokens[positions]))
            position_rows.append(positions)
            prevs.append(tokens[positions - 1] if len(positions) else positions)
            targets.append(tokens[positions] if len(positions) else positions)
            indices.append(torch.tensor([i for span in spans for i in range(len(span))], dtype=torch.long))
        pad = self.tokenizer.pad_token_id
        batch = {
            "input_ids": _pad(sources, pad),
            "attention_mask": _pad([torch.ones_like(s) for s in sources], 0),
            "decoder_input_ids": _pad(prevs, pad),
            "labels": _pad(targets, -100),
            "target_idx": _pad(indices, -1),
        }
        if self.document_positions:
            batch["positions"] = _pad(position_rows, 0)
        if self.encoder_labels:
            batch["encoder_labels"] = _pad(source_labels, -100)
        return batch


def _pad(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    width = max(1, max(len(r) for r in rows))
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


__all__ = ["SpanMaskingCollator", "load_text_dataset", "pack_documents"]
