"""Train-distil-decode-score plumbing shared by `multimodality.py` and `quality.py` (benchmark scripts only).

Protocol ("equal budgets"): every method gets the same number of optimizer steps at the same batch size and
learning rate, from the same start.
1. Stage 1: one BANG model is fine-tuned from scratch in AR mode for `ar_steps` (the teacher and the common start).
2. The teacher distils the training set (beam 4, length penalty 1.2, the 4 best) into `kd_labels`; `seq_kd` uses
   the 1-best (`kd_top_k=1`), the default `spmd` all four.
3. Stage 2: from a copy of the stage-1 model, each method trains `steps` more: the AR rows continue in AR mode;
   every NAR row trains with its `SPMDSeq2SeqTrainer` preset (teacher = "self" where a teacher is used).
Equal steps are not equal compute: an `spmd` step runs an NAR pass, an AR teacher pass and an AR gold pass, so the
training wall time of each method is reported next to its scores.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from typing import Any

import datasets
import torch
from transformers import PrinterCallback, TrainerCallback

from bang_nar import BangConfig, BangForConditionalGeneration
from bang_nar.generation_bang import nar_scan

# Stage-2 methods. `train`: SPMDTrainingArguments fields; `decode`: how the trained model decodes.
METHODS: dict[str, dict[str, Any]] = {
    "ar greedy": {"train": {"train_mode": "ar"}, "decode": {"mode": "ar", "num_beams": 1}},
    "ar beam4": {"train": {"train_mode": "ar"}, "decode": {"mode": "ar", "num_beams": 4}},
    "nar bang_nar": {"train": {"spmd_preset": "bang_nar"}, "decode": {"mode": "nar"}},
    "nar seq_kd": {"train": {"spmd_preset": "seq_kd", "kd_top_k": 1}, "decode": {"mode": "nar"}},  # 1-best
    "nar spmd": {"train": {"spmd_preset": "spmd"}, "decode": {"mode": "nar"}},  # the default: k-best candidates
    "nar spmd_reconstruction": {
        "train": {"spmd_preset": "spmd_reconstruction", "kd_top_k": 1}, "decode": {"mode": "nar"}
    },
    "spmd w/o self-paced": {"train": {"spmd_preset": "spmd", "pace_mode": "none"}, "decode": {"mode": "nar"}},
    "spmd w/o token KD": {"train": {"spmd_preset": "spmd", "kd_alpha": 0.0}, "decode": {"mode": "nar"}},
    "spmd w/o AR loss": {"train": {"spmd_preset": "spmd", "ar_loss_weight": 0.0}, "decode": {"mode": "nar"}},
    # Decoding options of modeling_bang.py applied to the `nar spmd` model (added only when they exist).
    "spmd + nar K=4 rescoring": {"train": "nar spmd", "decode": {"mode": "nar", "num_candidates": 4}},
    "spmd + nar_verify": {"train": "nar spmd", "decode": {"mode": "nar_verify"}},
}
DEFAULT_METHODS = tuple(METHODS)


def available_methods(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split `names` into those this checkout of modeling_bang.py can decode and those it cannot (yet)."""
    import inspect

    from bang_nar import configuration_bang, modeling_bang

    modes = set(getattr(configuration_bang, "GENERATION_MODES", ("ar", "nar")))
    nar_params = inspect.signature(modeling_bang.BangForConditionalGeneration._generate_nar).parameters
    ok, missing = [], []
    for name in names:
        decode = METHODS[name]["decode"]
        supported = decode["mode"] in modes and ("num_candidates" not in decode or "num_candidates" in nar_params)
        (ok if supported else missing).append(name)
    return ok, missing


def bang_config(tokenizer: Any, dims: dict[str, int], max_positions: int, dropout: float = 0.1) -> BangConfig:
    """A from-scratch BANG config sized `dims` for `tokenizer`'s vocabulary and special ids."""
    sep = tokenizer.sep_token_id
    return BangConfig(
        vocab_size=len(tokenizer),
        d_model=dims["d_model"],
        encoder_layers=dims["layers"],
        decoder_layers=dims["layers"],
        encoder_attention_heads=dims["heads"],
        decoder_attention_heads=dims["heads"],
        encoder_ffn_dim=dims["ffn"],
        decoder_ffn_dim=dims["ffn"],
        max_position_embeddings=max_positions,
        dropout=dropout,
        attention_dropout=dropout,
        activation_dropout=dropout,
        pad_token_id=tokenizer.pad_token_id,
        unk_token_id=tokenizer.unk_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=sep,
        decoder_start_token_id=sep,
        mask_token_id=tokenizer.mask_token_id,
    )


def train(
    model: BangForConditionalGeneration,
    dataset: datasets.Dataset,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    device: str,
    warmup_steps: int = 0,
    lr_scheduler_type: str = "linear",
    callbacks: Sequence[Any] = (),
    weight_decay: float = 0.0,
    **spmd_fields: Any,
) -> float:
    """Train `model` in place for (at most) `steps` optimizer steps with `SPMDSeq2SeqTrainer`; returns wall seconds.

    `callbacks` may stop training early (`PlateauStop`)."""
    from bang_nar.trainer import SPMDSeq2SeqTrainer, SPMDTrainingArguments
    from bang_nar.trainer.collator import KD_TOP_IDS, KD_TOP_LOG_PROBS  # `distill --kd_top_n` (kd_target="stored")

    columns = [c for c in ("input_ids", "labels", "kd_labels", KD_TOP_IDS, KD_TOP_LOG_PROBS) if c in dataset.column_names]
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = SPMDTrainingArguments(
            output_dir=out,
            per_device_train_batch_size=batch_size,
            max_steps=steps,
            learning_rate=learning_rate,
            warmup_steps=warmup_steps,
            lr_scheduler_type=lr_scheduler_type,
            weight_decay=weight_decay,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            use_cpu=device == "cpu",
            seed=seed,
            **spmd_fields,
        )
        if not args.uses_distilled_targets:
            columns = [c for c in columns if c != "kd_labels"]
        trainer = SPMDSeq2SeqTrainer(
            model=model, args=args, train_dataset=dataset.select_columns(columns), callbacks=list(callbacks)
        )
        trainer.remove_callback(PrinterCallback)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    model.eval()
    return seconds


def distil(
    model: BangForConditionalGeneration,
    dataset: datasets.Dataset,
    max_new_tokens: int,
    batch_size: int = 256,
    num_beams: int = 4,
    num_return_sequences: int = 1,
    **distill_options: Any,
) -> tuple[datasets.Dataset, float]:
    """Add the AR teacher's k best beam hypotheses (beam 4, k = 1 by default) as `kd_labels`; returns seconds too.
    `distill_options`: further `distill_dataset` options (e.g. `probability_mass`)."""
    from bang_nar.trainer import distill_dataset

    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        distilled = distill_dataset(
            model.eval(),
            dataset.select_columns(["input_ids", "labels"]),
            out,
            num_beams=num_beams,
            length_penalty=1.2,
            num_return_sequences=num_return_sequences,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            show_progress=False,
            **distill_options,
        )
        distilled = distilled.flatten_indices() if hasattr(distilled, "flatten_indices") else distilled
        distilled = datasets.Dataset.from_dict(distilled.to_dict())  # detach from the temporary folder
        seconds = time.perf_counter() - started
    return distilled, seconds


def _cut(ids: list[int], sep: int, cls: int | None, pad: int) -> list[int]:
    """Output tokens up to the first [SEP] (leading [SEP]s, [CLS] and pads dropped; no repeat removal): the original
    post-processing scan (`nar_scan`) without its repeat removal, on the row without pads."""
    return nar_scan([token for token in ids if token != pad], sep, cls, dedup=False)


@torch.no_grad()
def decode(
    model: BangForConditionalGeneration,
    tokenizer: Any,
    dataset: datasets.Dataset,
    decode_options: dict[str, Any],
    *,
    max_new_tokens: int,
    batch_size: int,
    device: str,
    length_penalty: float = 1.2,
) -> dict[str, Any]:
    """Decode every `input_ids` row of `dataset`; returns texts, token lists (cut at [SEP]) and wall seconds, and for
    `nar_verify` the mean decoder passes per sequence (`passes`: the NAR draft + its AR passes).

    NAR rows use `nar_postprocess=False` and only cut at [SEP] here: BANG's default post-processing also removes
    consecutive repeats, which would hide the repetition this benchmark measures (and break legitimate repeats).
    AR rows are cut at [SEP] the same way. NAR decodes `max_new_tokens` slots (slot t never depends on later
    slots, docs/architecture.md#nar-mode, so extra slots cost time but do not change the cut output).
    """
    model.eval().to(device)
    config = model.config
    options = dict(decode_options)
    mode = options.pop("mode")
    if mode == "ar":
        options.update(max_new_tokens=max_new_tokens, do_sample=False)
        if options.get("num_beams", 1) > 1:
            options["length_penalty"] = length_penalty
    elif mode == "nar":
        options.update(max_new_tokens=max_new_tokens)
        if options.get("num_candidates", 1) == 1:
            options["nar_postprocess"] = False
    else:
        options.update(max_new_tokens=max_new_tokens)
    verify = mode == "nar_verify"
    if verify:
        options["return_dict_in_generate"] = True
    sources = dataset["input_ids"]
    tokens: list[list[int]] = []
    ar_passes: list[int] = []
    started = time.perf_counter()
    for start in range(0, len(sources), batch_size):
        chunk = sources[start : start + batch_size]
        length = max(len(s) for s in chunk)
        input_ids = torch.full((len(chunk), length), config.pad_token_id, dtype=torch.long)
        for i, source in enumerate(chunk):
            input_ids[i, : len(source)] = torch.as_tensor(source)
        input_ids = input_ids.to(device)
        out = model.generate(input_ids, attention_mask=input_ids.ne(config.pad_token_id).long(), mode=mode, **options)
        if verify:
            ar_passes += out.ar_passes.tolist()
            out = out.sequences
        for row in out.tolist():
            tokens.append(_cut(row, config.eos_token_id, config.bos_token_id, config.pad_token_id))
    seconds = time.perf_counter() - started
    texts = tokenizer.batch_decode(tokens, skip_special_tokens=True)
    result = {"texts": texts, "tokens": tokens, "seconds": seconds, "ms_per_sample": 1000 * seconds / len(sources)}
    if verify:
        result["passes"] = 1 + sum(ar_passes) / len(ar_passes)
    return result


def trained_model(
    method: str, cache: dict[str, tuple[Any, float]], start: Any, dataset: datasets.Dataset, steps: int, **hyper: Any
) -> tuple[Any, float]:
    """The stage-2 model of `method` (trained once, then cached; decoding-option rows reuse their base row's model).

    Returns `(model, training seconds)`."""
    spec = METHODS[method]
    key = spec["train"] if isinstance(spec["train"], str) else method
    if key not in cache:
        model = fresh_copy(start)
        cache[key] = (model, train(model, dataset, steps=steps, **METHODS[key]["train"], **hyper))
    return cache[key]


def fresh_copy(model: BangForConditionalGeneration) -> BangForConditionalGeneration:
    return copy.deepcopy(model).train()


def quiet_logs() -> None:
    """Keep benchmark output to tables: silence transformers/datasets info logs and progress bars."""
    import transformers

    transformers.logging.set_verbosity_error()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class PlateauStop(TrainerCallback):
    """Every `every` steps, score the model with `evaluate_fn()` (higher is better); stop training once the score
    gained less than `tolerance` over the last `patience` checks, or reached `ceiling` (after `min_steps`).
    `history` keeps `(step, score)`. The multi-modality teacher trains "until its greedy exact match plateaus"."""

    def __init__(self, evaluate_fn: Any, every: int, patience: int = 2, tolerance: float = 1.0,
                 ceiling: float = 100.0, min_steps: int = 0) -> None:  # fmt: skip
        self.evaluate_fn, self.every, self.patience = evaluate_fn, every, patience
        self.tolerance, self.ceiling, self.min_steps = tolerance, ceiling, min_steps
        self.history: list[tuple[int, float]] = []

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        if state.global_step % self.every:
            return control
        score = self.evaluate_fn()
        model.train()
        self.history.append((state.global_step, score))
        scores = [s for _, s in self.history]
        flat = len(scores) > self.patience and max(scores[-self.patience :]) - scores[-self.patience - 1] < self.tolerance
        if state.global_step >= self.min_steps and (score >= self.ceiling or flat):
            control.should_training_stop = True
        return control
