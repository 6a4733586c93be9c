"""Library functions behind the CLI: build, train (AR / NAR / SPMD presets), distil, generate, evaluate.

The CLI subcommands only wire arguments to these functions; Python users call them directly:

```python
from bang_nar.pipeline import build_model, prepare_dataset, train_model, evaluate_model
```
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import torch

from .configuration_bang import BangConfig
from .data import length_sorted_batches, tokenize_pairs
from .evaluation import compute_generation_metrics
from .modeling_bang import BangForConditionalGeneration, nar_scan
from .postprocess import decode_nar

logger = logging.getLogger(__name__)

# From-scratch sizes. "base" is BANG base (docs/architecture.md#model); the others are for CPU runs and tests.
MODEL_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(
        d_model=128,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
    ),
    "small": dict(
        d_model=256,
        encoder_layers=3,
        decoder_layers=3,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=1024,
        decoder_ffn_dim=1024,
    ),
    "base": {},
}


def config_for_tokenizer(tokenizer: Any, size: str = "tiny", **overrides: Any) -> BangConfig:
    """A from-scratch `BangConfig` of `size` whose vocabulary and special ids are the tokenizer's.

    BANG's conventions: `[SEP]` is both eos and decoder start, `[CLS]` is bos (unused in data).
    """
    if size not in MODEL_SIZES:
        raise ValueError(f"Unknown model size {size!r}; choose one of {sorted(MODEL_SIZES)}.")
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if sep is None or tokenizer.pad_token_id is None:
        raise ValueError("The tokenizer needs a pad token and a [SEP]/eos token (BANG ends every sequence with it).")
    values: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=sep,
        decoder_start_token_id=sep,
        unk_token_id=tokenizer.unk_token_id,
        bos_token_id=tokenizer.cls_token_id,
        mask_token_id=tokenizer.mask_token_id,
        **MODEL_SIZES[size],
    )
    values.update(overrides)
    return BangConfig(**values)


def build_model(
    model_name_or_path: str | Path | None = None,
    tokenizer: Any = None,
    *,
    size: str = "tiny",
    seed: int = 0,
    **config_overrides: Any,
) -> BangForConditionalGeneration:
    """Load a saved/converted BANG model, or (no path) initialise a `size` model for `tokenizer` with `seed`."""
    if model_name_or_path is not None:
        return BangForConditionalGeneration.from_pretrained(model_name_or_path, **config_overrides)
    if tokenizer is None:
        raise ValueError("A model built from scratch needs the tokenizer (for its vocabulary and special ids).")
    torch.manual_seed(seed)
    return BangForConditionalGeneration(config_for_tokenizer(tokenizer, size, **config_overrides))


def prepare_dataset(
    pairs: datasets.Dataset, tokenizer: Any, max_source_length: int, max_target_length: int
) -> datasets.Dataset:
    """Tokenize `source`/`target` pairs (BANG convention `tokens [SEP]`); truncation is counted and logged."""
    tokenized, report = tokenize_pairs(pairs, tokenizer, max_source_length, max_target_length)
    message = f"Tokenized: {report}"
    if report.truncated_sources or report.truncated_targets:
        logger.warning(message)
    else:
        logger.info(message)
    return tokenized


def train_model(
    model: BangForConditionalGeneration,
    tokenizer: Any,
    train_dataset: datasets.Dataset,
    args: Any,
    *,
    eval_dataset: datasets.Dataset | None = None,
    card_values: dict[str, Any] | None = None,
    resume_from_checkpoint: str | bool | None = None,
) -> Any:
    """Train with `SPMDSeq2SeqTrainer` under `args` (`SPMDTrainingArguments`); save model, tokenizer and card.

    Returns the trainer (its `state.log_history` holds the loss parts per step).
    """
    from .trainer import SPMDSeq2SeqTrainer
    from .trainer.collator import KD_TOP_IDS, KD_TOP_LOG_PROBS

    keep = ["input_ids", "attention_mask", "labels", args.kd_column]
    if getattr(args, "uses_stored_kd", False):  # the teacher's stored top-n (docs/spmd.md#stored-kd)
        keep += [KD_TOP_IDS, KD_TOP_LOG_PROBS]
    columns = [c for c in keep if c in train_dataset.column_names]
    trainer = SPMDSeq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset.select_columns(columns),
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
    )
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    # A model fine-tuned for NAR (semi-NAR) decodes NAR (semi-NAR) by default (generate() without mode,
    # `bang-nar generate`); a semi-NAR model's k is in its generation config (`block_size`).
    trainer.model.config.generation_mode = args.train_mode if args.train_mode in ("nar", "semi_nar") else "ar"
    trainer.save_model(args.output_dir)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(args.output_dir)
        trainer.create_model_card(**(card_values or {}))
    return trainer


def ids_to_text(tokenizer: Any, ids: Sequence[int]) -> str:
    """Ids → space-separated words: special tokens dropped, `##` wordpieces merged, no other clean-up.

    Predictions and references go through the same function, so scores compare like with like.
    """
    special = set(tokenizer.all_special_ids)
    tokens = tokenizer.convert_ids_to_tokens([i for i in ids if i not in special])
    return " ".join(tokens).replace(" ##", "")


def normalize_references(tokenizer: Any, texts: Sequence[str]) -> list[str]:
    """References in the tokenizer's own normal form (lower-casing, punctuation split), like the predictions."""
    return [ids_to_text(tokenizer, ids) for ids in tokenizer(list(texts), truncation=False)["input_ids"]]


@torch.no_grad()
def generate_texts(
    model: BangForConditionalGeneration,
    tokenizer: Any,
    sources: Sequence[str],
    mode: str,
    *,
    batch_size: int = 64,
    max_source_length: int | None = None,
    show_progress: bool = False,
    **generate_kwargs: Any,
) -> tuple[list[str], list[list[int]] | None, float]:
    """Generate for `sources` in `mode`; returns `(texts, raw NAR tokens or None, generation seconds)`.

    NAR outputs go through the original post-processing (`decode_nar`); AR outputs through `ids_to_text`.
    Truncation of over-long sources is refused unless `max_source_length` is given (then it is logged).
    """
    from tqdm.auto import tqdm

    model.eval()
    device = model.device
    limit = max_source_length or model.config.max_position_embeddings
    texts: list[str] = [""] * len(sources)
    raw_tokens: list[list[int]] = [[] for _ in sources]
    elapsed = 0.0
    truncated = 0
    # Batches of similar token length waste little padding; results go back to the input order.
    lengths = [len(ids) for ids in tokenizer(list(sources), truncation=False, verbose=False)["input_ids"]]
    batches = length_sorted_batches(lengths, batch_size)
    for batch in tqdm(batches, desc=f"generate ({mode})", disable=not show_progress):
        encoded = tokenizer([sources[i] for i in batch], padding=True, return_tensors="pt")
        if encoded["input_ids"].size(1) > limit:
            if max_source_length is None:
                raise ValueError(
                    f"A source has {encoded['input_ids'].size(1)} tokens but the model takes {limit}; pass "
                    "max_source_length (e.g. --max-source-length) to truncate explicitly."
                )
            truncated += int(encoded["attention_mask"].sum(1).gt(limit).sum())
            encoded = tokenizer(
                [sources[i] for i in batch], padding=True, truncation=True, max_length=limit, return_tensors="pt"
            )
        encoded = {k: v.to(device) for k, v in encoded.items()}
        start = time.perf_counter()
        if mode == "nar":
            out = model.generate(**encoded, mode="nar", return_dict_in_generate=True, **generate_kwargs)
            sequences, raw = out.sequences, out.raw_sequences
        else:
            sequences, raw = model.generate(**encoded, mode=mode, **generate_kwargs), None
        elapsed += time.perf_counter() - start
        decoded = (
            decode_nar(tokenizer, sequences)
            if mode == "nar"
            else [ids_to_text(tokenizer, s) for s in sequences.tolist()]
        )
        # Raw NAR slots up to the first non-leading [SEP], no dedup: the input of the repetition rate.
        raw_rows = (
            [nar_scan(row, model.config.eos_token_id, dedup=False) for row in raw.tolist()]
            if raw is not None
            else [[] for _ in batch]
        )
        for i, text, raw_row in zip(batch, decoded, raw_rows):
            texts[i], raw_tokens[i] = text, raw_row
    if truncated:
        logger.warning("Truncated %d of %d sources to %d tokens.", truncated, len(sources), limit)
    return texts, (raw_tokens if mode == "nar" else None), elapsed


def evaluate_model(
    model: BangForConditionalGeneration,
    tokenizer: Any,
    dataset: datasets.Dataset,
    systems: dict[str, dict[str, Any]],
    *,
    batch_size: int = 64,
    metrics: Sequence[str] | None = None,
    max_source_length: int | None = None,
    show_progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Score `model` on `dataset` (`source`, `target`, optional `references`) for each named decoding setup.

    `systems` maps a row name to `generate` options including `mode`, e.g.
    `{"nar": {"mode": "nar"}, "ar beam 4": {"mode": "ar", "num_beams": 4, "length_penalty": 1.2}}`.
    Each row holds the metrics of `bang_nar.evaluation`, latency (ms/sample, samples/s) and, where a
    `references` column lists every valid target, multi-reference BLEU and mode consistency.
    `max_source_length` truncates longer sources (counted and logged); without it they are refused.
    """
    from .multimodality import multi_reference_scores

    sources = list(dataset["source"])
    has_multi = "references" in dataset.column_names
    references = (
        [normalize_references(tokenizer, refs) for refs in dataset["references"]]
        if has_multi
        else normalize_references(tokenizer, dataset["target"])
    )
    results: dict[str, dict[str, Any]] = {}
    for name, options in systems.items():
        options = dict(options)
        mode = options.pop("mode")
        texts, raw, elapsed = generate_texts(
            model,
            tokenizer,
            sources,
            mode,
            batch_size=batch_size,
            max_source_length=max_source_length,
            show_progress=show_progress,
            **options,
        )
        kwargs = {"metrics": metrics} if metrics is not None else {}
        row = compute_generation_metrics(texts, references, raw_predictions=raw, elapsed_s=elapsed, **kwargs)
        if has_multi:
            row.update({k: v for k, v in multi_reference_scores(texts, references).items() if k != "bleu"})
        row["examples"] = texts[:3]
        results[name] = row
    return results


__all__ = [
    "MODEL_SIZES",
    "build_model",
    "config_for_tokenizer",
    "evaluate_model",
    "generate_texts",
    "ids_to_text",
    "normalize_references",
    "prepare_dataset",
    "train_model",
]
