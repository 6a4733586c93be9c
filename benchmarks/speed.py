"""Speed of BANG decoding (NAR vs AR) and of training steps, with HF BART and ProphetNet as peers (issue 7).

Claims measured, side by side in one run (ratios are what to read on a shared machine):
- NAR generate (decode length 24) is >= 8x faster than AR beam 4 (20 tokens) at batch 1 on a CPU (>= 15x on a GPU);
- NAR generate costs <= 1.15x the bare forward floor (one encoder + one NAR decoder pass of length 24, with logits);
- our AR beam search costs <= 1.1x HF BART's of equal size (HF ProphetNet of equal size is the other peer).
Plus training step time: SPMD preset vs plain NAR preset vs a BART Seq2SeqTrainer step on the same small model.

All models have random weights (no downloads). Every AR decode is forced to exactly 20 new tokens
(`min_new_tokens = max_new_tokens = 20`), so greedy and beam runs of all models do the same work. Within a grid cell
the methods are timed round-robin (repeat r runs every method once), and ratios are medians of per-repeat ratios.

    python benchmarks/speed.py                      # default CPU grid (<= ~10 min on 2 cores), writes results/
    python benchmarks/speed.py --quick              # smoke run (tiny model only; ~1-2 min on a quiet machine)
    python benchmarks/speed.py --grid full          # base+small x batch 1,32 x source 64,256 (slow on a CPU)
    python benchmarks/speed.py --device cuda --grid full --repeats 10

Outputs: a Markdown table per part on stdout, one JSON line last, and `results/speed[_<tag>].json` + `.png`.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import itertools
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import PrinterCallback, TrainerCallback

from common import (
    RESULTS_DIR,
    _sync,
    display_path,
    finish_machine_info,
    machine_info,
    markdown_table,
    median,
    paired_ratio,
    paired_timings,
    print_json_line,
    save_plot,
    set_threads,
    write_json,
)

SIZES: dict[str, dict[str, int]] = {
    # BangConfig() defaults = BANG base (docs/architecture.md#model).
    "base": {"d_model": 768, "layers": 6, "heads": 12, "ffn": 3072},
    "small": {"d_model": 256, "layers": 3, "heads": 4, "ffn": 1024},
    "tiny": {"d_model": 64, "layers": 2, "heads": 2, "ffn": 128},
}
VOCAB_SIZE = 30522  # the bundled BERT-uncased vocabulary
PAD, CLS, SEP = 0, 101, 102
NAR_LENGTH = 24
AR_TOKENS = 20
LENGTH_PENALTY = 1.2

ALL_METHODS = (
    "nar", "floor", "ar_greedy", "ar_beam4", "bart_floor", "bart_greedy", "bart_beam4", "prophetnet_greedy", "prophetnet_beam4",
    "nar_verify", "nar_candidates4", "ar_greedy_sdpa", "ar_beam4_sdpa",
)  # fmt: skip
# Which model each method needs.
_NEEDS = {"bart_floor": "bart", "bart_greedy": "bart", "bart_beam4": "bart", "prophetnet_greedy": "prophetnet",
          "prophetnet_beam4": "prophetnet",
          "ar_greedy_sdpa": "bang_sdpa", "ar_beam4_sdpa": "bang_sdpa"}

GRIDS: dict[str, dict[str, Any]] = {
    # (size, batch, source length) cells. `default` fits ~10 min on 2 shared CPU cores; base at batch 32 does not.
    "quick": {"cells": [("tiny", 1, 64)], "repeats": 2, "warmup": 1},
    "default": {
        "cells": [("base", 1, 64), ("base", 1, 256), ("small", 1, 64), ("small", 1, 256), ("small", 32, 64),
                  ("small", 32, 256)],
        "repeats": 5, "warmup": 1,
    },  # fmt: skip
    "full": {
        "cells": list(itertools.product(("base", "small"), (1, 32), (64, 256))),
        "repeats": 5, "warmup": 1,
    },  # fmt: skip
}

RATIOS = (
    # (key, numerator, denominator, target description)
    ("ar_beam4_over_nar", "ar_beam4", "nar", ">= 8 (CPU, batch 1); >= 15 (GPU)"),
    ("nar_over_floor", "nar", "floor", "<= 1.15"),
    ("ar_beam4_over_bart_beam4", "ar_beam4", "bart_beam4", "<= 1.05"),
    ("ar_greedy_over_bart_greedy", "ar_greedy", "bart_greedy", "<= 1.05"),
    ("ar_greedy_sdpa_over_bart_greedy", "ar_greedy_sdpa", "bart_greedy", "<= 1.05 (attn_implementation='sdpa')"),
    ("ar_beam4_sdpa_over_bart_beam4", "ar_beam4_sdpa", "bart_beam4", "<= 1.05 (attn_implementation='sdpa')"),
    ("prophetnet_beam4_over_bart_beam4", "prophetnet_beam4", "bart_beam4", "(reference, issue: ~1.5)"),
    # HF ProphetNet with one predicting stream runs the same two streams per step as BANG's AR mode: the equal peer.
    ("ar_greedy_over_prophetnet_greedy", "ar_greedy", "prophetnet_greedy", "(same two-stream structure)"),
    ("ar_beam4_over_prophetnet_beam4", "ar_beam4", "prophetnet_beam4", "(same two-stream structure)"),
    ("bart_beam4_over_bart_floor", "bart_beam4", "bart_floor", "(physical AR/one-pass ratio, issue: ~8.9)"),
    ("nar_verify_over_nar", "nar_verify", "nar", "(reference)"),
    ("nar_candidates4_over_nar", "nar_candidates4", "nar", "(reference)"),
)


# ---- models ----------------------------------------------------------------------------------------------------


def build_models(size: str, needed: set[str], device: str, seed: int) -> dict[str, torch.nn.Module]:
    """Random-init BANG, and (when needed) HF BART and HF ProphetNet of the same dimensions and vocabulary.

    ProphetNet uses `ngram=1` (one predicting stream), the structure BANG's AR mode has; every model gets the same
    special ids and a generation config holding nothing but those ids, so no model-specific default (forced BOS/EOS,
    n-gram blocking) changes the work done.
    """
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        GenerationConfig,
        ProphetNetConfig,
        ProphetNetForConditionalGeneration,
    )

    from bang_nar import BangConfig, BangForConditionalGeneration

    dims = SIZES[size]
    ids = {"pad_token_id": PAD, "bos_token_id": CLS, "eos_token_id": SEP, "decoder_start_token_id": SEP}
    models: dict[str, torch.nn.Module] = {}
    torch.manual_seed(seed)
    models["bang"] = BangForConditionalGeneration(
        BangConfig(
            vocab_size=VOCAB_SIZE, d_model=dims["d_model"], encoder_layers=dims["layers"],
            decoder_layers=dims["layers"], encoder_attention_heads=dims["heads"],
            decoder_attention_heads=dims["heads"], encoder_ffn_dim=dims["ffn"], decoder_ffn_dim=dims["ffn"], **ids,
        )
    )  # fmt: skip
    if "bang_sdpa" in needed:  # the same weights with the SDPA kernel (eager is the default and the reference)
        models["bang_sdpa"] = copy.deepcopy(models["bang"])
        models["bang_sdpa"].set_attn_implementation("sdpa")
    if "bart" in needed:
        models["bart"] = BartForConditionalGeneration(
            BartConfig(
                vocab_size=VOCAB_SIZE, d_model=dims["d_model"], encoder_layers=dims["layers"],
                decoder_layers=dims["layers"], encoder_attention_heads=dims["heads"],
                decoder_attention_heads=dims["heads"], encoder_ffn_dim=dims["ffn"], decoder_ffn_dim=dims["ffn"],
                max_position_embeddings=512, forced_eos_token_id=None, **ids,
            )
        )  # fmt: skip
    if "prophetnet" in needed:
        models["prophetnet"] = ProphetNetForConditionalGeneration(
            ProphetNetConfig(
                vocab_size=VOCAB_SIZE, hidden_size=dims["d_model"], num_encoder_layers=dims["layers"],
                num_decoder_layers=dims["layers"], num_encoder_attention_heads=dims["heads"],
                num_decoder_attention_heads=dims["heads"], encoder_ffn_dim=dims["ffn"], decoder_ffn_dim=dims["ffn"],
                ngram=1, **ids,
            )
        )  # fmt: skip
    for model in models.values():
        model.generation_config = GenerationConfig(**ids)
        model.to(device).eval()
    return models


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def nar_options() -> dict[str, bool]:
    """Decoding options of `modeling_bang.py` beyond plain NAR that may or may not exist yet (detected, not assumed)."""
    from bang_nar import configuration_bang, modeling_bang

    params = inspect.signature(modeling_bang.BangForConditionalGeneration._generate_nar).parameters
    return {
        "nar_verify": "nar_verify" in getattr(configuration_bang, "GENERATION_MODES", ()),
        "nar_candidates4": "num_candidates" in params,
    }


def method_fns(
    models: dict[str, torch.nn.Module], methods: list[str], batch: int, source_length: int, device: str, seed: int
) -> dict[str, Callable[[], Any]]:
    """Zero-argument closures, one per method, on one random batch (no padding; the source ends with [SEP])."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1000, VOCAB_SIZE, (batch, source_length), generator=generator)
    input_ids[:, -1] = SEP
    input_ids = input_ids.to(device)
    attention_mask = torch.ones_like(input_ids)
    slots = torch.ones(batch, NAR_LENGTH, dtype=torch.long, device=device)
    bart_decoder_ids = torch.full((batch, NAR_LENGTH), 1000, dtype=torch.long, device=device)
    bart_decoder_ids[:, 0] = SEP
    forced = {"min_new_tokens": AR_TOKENS, "max_new_tokens": AR_TOKENS, "do_sample": False}
    greedy = {**forced, "num_beams": 1}
    beam = {**forced, "num_beams": 4, "length_penalty": LENGTH_PENALTY}
    bang = models["bang"]
    src = {"attention_mask": attention_mask}
    table: dict[str, Callable[[], Any]] = {
        "nar": lambda: bang.generate(input_ids, **src, mode="nar", max_new_tokens=NAR_LENGTH),
        "floor": lambda: bang(input_ids, **src, decoder_attention_mask=slots, mode="nar").logits,
        "ar_greedy": lambda: bang.generate(input_ids, **src, mode="ar", **greedy),
        "ar_beam4": lambda: bang.generate(input_ids, **src, mode="ar", **beam),
        "nar_verify": lambda: bang.generate(input_ids, **src, mode="nar_verify", max_new_tokens=NAR_LENGTH),
        "nar_candidates4": lambda: bang.generate(
            input_ids, **src, mode="nar", max_new_tokens=NAR_LENGTH, num_candidates=4
        ),
    }
    if "bang_sdpa" in models:
        bang_sdpa = models["bang_sdpa"]
        table |= {
            "ar_greedy_sdpa": lambda: bang_sdpa.generate(input_ids, **src, mode="ar", **greedy),
            "ar_beam4_sdpa": lambda: bang_sdpa.generate(input_ids, **src, mode="ar", **beam),
        }
    if "bart" in models:
        bart = models["bart"]
        table |= {
            "bart_floor": lambda: bart(input_ids, **src, decoder_input_ids=bart_decoder_ids).logits,
            "bart_greedy": lambda: bart.generate(input_ids, **src, **greedy),
            "bart_beam4": lambda: bart.generate(input_ids, **src, **beam),
        }
    if "prophetnet" in models:
        prophetnet = models["prophetnet"]
        table["prophetnet_greedy"] = lambda: prophetnet.generate(input_ids, **src, **greedy)
        table["prophetnet_beam4"] = lambda: prophetnet.generate(input_ids, **src, **beam)
    return {name: table[name] for name in methods}


def check_forced_lengths(fns: dict[str, Callable[[], Any]]) -> dict[str, int]:
    """New tokens each AR method produced (must be exactly AR_TOKENS for a fair comparison)."""
    lengths = {}
    for name, fn in fns.items():
        if name.endswith(("greedy", "beam4")):
            out = fn()
            sequences = out if isinstance(out, torch.Tensor) else out.sequences
            lengths[name] = int(sequences.size(1)) - 1  # minus the decoder start token
    return lengths


# ---- decoding grid ---------------------------------------------------------------------------------------------


def run_decoding(args: argparse.Namespace, cells: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    available = nar_options()
    methods = [m for m in args.methods if available.get(m, True)]
    skipped = [m for m in args.methods if not available.get(m, True)]
    if skipped:
        print(f"(not in this modeling_bang.py yet, skipped: {', '.join(skipped)})")
    needed = {_NEEDS[m] for m in methods if m in _NEEDS}
    results = []
    models: dict[str, torch.nn.Module] = {}
    current_size = None
    for size, batch, source_length in cells:
        if size != current_size:
            models = build_models(size, needed, args.device, args.seed)
            current_size = size
        fns = method_fns(models, methods, batch, source_length, args.device, args.seed)
        started = time.perf_counter()
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lengths = check_forced_lengths(fns)
            times = paired_timings(
                fns, warmup=args.warmup, repeats=args.repeats, device=args.device, time_budget_s=args.cell_budget_s,
                clock=time.process_time if args.clock == "cpu" else time.perf_counter,
            )  # fmt: skip
        row: dict[str, Any] = {
            "size": size,
            "params_bang": parameter_count(models["bang"]),
            "batch": batch,
            "source_length": source_length,
            "repeats": len(next(iter(times.values()))),
            "new_tokens": lengths,
            "loadavg": list(os.getloadavg()),
            "seconds": round(time.perf_counter() - started, 1),
            "ms_per_sample": {m: 1000 * median(t) / batch for m, t in times.items()},
            "samples_per_s": {m: batch / median(t) for m, t in times.items()},
            "raw_s": {m: [round(x, 5) for x in t] for m, t in times.items()},
            "ratios": {
                key: paired_ratio(times[num], times[den]) for key, num, den, _ in RATIOS if num in times and den in times
            },
        }
        results.append(row)
        print(
            f"[{size} b={batch} s={source_length}] {row['repeats']} repeats in {row['seconds']}s, "
            f"load {row['loadavg'][0]:.2f}: " + ", ".join(f"{m} {v:.1f}" for m, v in row["ms_per_sample"].items())
            + " ms/sample",
            flush=True,
        )
    return results


def decoding_tables(rows: list[dict[str, Any]]) -> tuple[str, str]:
    methods = list(rows[0]["ms_per_sample"])
    flat = [
        {"cell": f"{r['size']} / {r['batch']} / {r['source_length']}", "repeats": r["repeats"],
         **{m: r["ms_per_sample"][m] for m in methods}}
        for r in rows
    ]  # fmt: skip
    latency = markdown_table(flat, [("cell", "size / batch / src len"), ("repeats", "n"), *((m, m) for m in methods)], 1)
    ratio_keys = [k for k, *_ in RATIOS if k in rows[0]["ratios"]]
    flat = [{"cell": f"{r['size']} / {r['batch']} / {r['source_length']}", **r["ratios"]} for r in rows]
    ratios = markdown_table(flat, [("cell", "size / batch / src len"), *((k, k) for k in ratio_keys)], 2)
    targets = "\n".join(f"- `{k}`: target {t}" for k, _, _, t in RATIOS if k in ratio_keys)
    return latency, ratios + "\n\n" + targets


# ---- training steps --------------------------------------------------------------------------------------------


class StepTimer(TrainerCallback):
    """Records the wall time of every optimizer step (forward, backward, optimizer step); on an accelerator the
    queued work is waited for at both ends, or the times would only measure the kernel launches."""

    def __init__(self, device: str = "cpu"):
        self.times: list[float] = []
        self._t0 = 0.0
        self._device = device

    def on_step_begin(self, args, state, control, **kwargs):
        _sync(self._device)
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _sync(self._device)
        self.times.append(time.perf_counter() - self._t0)


def run_training_steps(args: argparse.Namespace) -> dict[str, Any]:
    """Step time of BART (stock Seq2SeqTrainer) and BANG (SPMDSeq2SeqTrainer: AR, and NAR presets) on one size."""
    import datasets
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, default_data_collator

    from bang_nar.trainer import SPMDSeq2SeqTrainer, SPMDTrainingArguments

    size, batch, source_length, target_length = args.train_size, args.train_batch, 64, NAR_LENGTH
    generator = torch.Generator().manual_seed(args.seed)
    n = batch * (args.train_steps + 1)
    sources = torch.randint(1000, VOCAB_SIZE, (n, source_length), generator=generator)
    sources[:, -1] = SEP
    labels = torch.randint(1000, VOCAB_SIZE, (n, target_length), generator=generator)
    labels[:, -1] = SEP
    kd = torch.randint(1000, VOCAB_SIZE, (n, target_length), generator=generator)
    kd[:, -1] = SEP
    columns = {"input_ids": sources.tolist(), "labels": labels.tolist()}
    plain = datasets.Dataset.from_dict({**columns, "attention_mask": torch.ones_like(sources).tolist()})
    with_kd = datasets.Dataset.from_dict({**columns, "kd_labels": [[row] for row in kd.tolist()]})

    common = {
        "per_device_train_batch_size": batch, "max_steps": args.train_steps, "learning_rate": 1e-4,
        "report_to": [], "save_strategy": "no", "logging_strategy": "no", "disable_tqdm": True,
        "dataloader_num_workers": 0, "use_cpu": args.device == "cpu", "seed": args.seed,
        "bf16": getattr(args, "train_bf16", False),
    }  # fmt: skip
    variants: dict[str, Callable[[str], Any]] = {}
    models = build_models(size, {"bart"}, args.device, args.seed)

    def bart_trainer(out: str):
        return Seq2SeqTrainer(
            model=models["bart"].train(), args=Seq2SeqTrainingArguments(output_dir=out, **common),
            train_dataset=plain, data_collator=default_data_collator,
        )  # fmt: skip

    def bang_trainer(preset: str, train_mode: str = "nar") -> Callable[[str], Any]:
        def build(out: str):
            spmd_args = SPMDTrainingArguments(output_dir=out, spmd_preset=preset, train_mode=train_mode, **common)
            data = with_kd if spmd_args.uses_distilled_targets else plain.remove_columns("attention_mask")
            return SPMDSeq2SeqTrainer(model=models["bang"].train(), args=spmd_args, train_dataset=data)

        return build

    variants["bart (Seq2SeqTrainer)"] = bart_trainer
    variants["bang ar (train_mode=ar)"] = bang_trainer("bang_nar", "ar")
    variants["bang nar (preset bang_nar)"] = bang_trainer("bang_nar")
    variants["bang nar (preset seq_kd)"] = bang_trainer("seq_kd")
    variants["bang nar (preset spmd)"] = bang_trainer("spmd")
    if getattr(args, "train_variants", None):  # a subset, e.g. from gpu.py
        variants = {name: build for name, build in variants.items() if name in args.train_variants}

    times: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainers = {name: build(os.path.join(tmp, str(i))) for i, (name, build) in enumerate(variants.items())}
        for trainer in trainers.values():
            trainer.remove_callback(PrinterCallback)
        for _ in range(args.train_rounds):  # round-robin, like the decoding cells
            for name, trainer in trainers.items():
                timer = StepTimer(args.device)
                trainer.add_callback(timer)
                trainer.train()
                trainer.remove_callback(timer)
                times[name].extend(timer.times[1:])  # the first step of each call warms up
    bart = times["bart (Seq2SeqTrainer)"]
    tokens = batch * (source_length + target_length)  # per step
    rows = [
        {"variant": name, "steps": len(t), "ms_per_step": 1000 * median(t), "ms_per_sample": 1000 * median(t) / batch,
         "tokens_per_s": tokens / median(t), "vs_bart": median(t) / median(bart)}
        for name, t in times.items()
    ]  # fmt: skip
    return {
        "size": size, "batch": batch, "source_length": source_length, "target_length": target_length,
        "note": "SPMDSeq2SeqTrainer from bang_nar.trainer; random data; kd_labels random (k=1) for seq_kd/spmd; "
        "spmd = NAR pass + AR teacher pass (no_grad) + AR gold pass (beta=0.5); ms_per_step = forward + backward + "
        "optimizer step (median); vs_bart is a ratio of medians",
        "rows": rows, "raw_s": times, "loadavg": list(os.getloadavg()),
    }  # fmt: skip


# ---- plot, main ------------------------------------------------------------------------------------------------


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bang_nar.plotting import plain_log_axis

    methods = list(rows[0]["ms_per_sample"])
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(rows)), 4))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        ax.bar(
            [j + i * width for j in range(len(rows))],
            [r["ms_per_sample"][method] for r in rows],
            width,
            label=method,
        )
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))])
    ax.set_xticklabels([f"{r['size']}\nb={r['batch']} s={r['source_length']}" for r in rows], fontsize=8)
    ax.set_yscale("log")
    values = [v for r in rows for v in r["ms_per_sample"].values()]
    plain_log_axis(ax.yaxis, min(values) / 1.5, max(values) * 1.5)  # ticks read `20`, not `2 × 10^1`
    ax.set_ylabel("ms / sample (log scale)")
    ax.set_title("BANG NAR vs AR vs peers (random weights, median)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    return save_plot(fig, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Smoke run: tiny size, batch 1, source 64 (+ tiny training).")
    parser.add_argument("--grid", choices=sorted(GRIDS), default=None, help="Preset grid of (size, batch, source) cells.")
    parser.add_argument("--sizes", default=None, help="Comma list overriding the grid, e.g. base,small.")
    parser.add_argument("--batch-sizes", default=None, help="Comma list overriding the grid, e.g. 1,32.")
    parser.add_argument("--source-lengths", default=None, help="Comma list overriding the grid, e.g. 64,256.")
    parser.add_argument("--methods", default=",".join(ALL_METHODS), help=f"Comma list from {ALL_METHODS}.")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--cell-budget-s", type=float, default=None, help="Stop a cell's repeats after this long.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: the process's CPU time (with --threads 1 and --device cpu; steady on a loaded "
                        "machine, blind to waiting).")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-train", action="store_true", help="Skip the training-step part.")
    parser.add_argument("--train-size", default=None, help="Model size of the training-step part (default small).")
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--train-steps", type=int, default=4, help="Steps per train() call (the first is dropped).")
    parser.add_argument("--train-rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--tag", default=None, help="Suffix of the result files (default: device; quick runs add _quick).")
    args = parser.parse_args(argv)
    grid = GRIDS[args.grid or ("quick" if args.quick else "default")]
    cells = list(grid["cells"])
    if args.sizes or args.batch_sizes or args.source_lengths:
        sizes = args.sizes.split(",") if args.sizes else sorted({c[0] for c in cells}, key=list(SIZES).index)
        batches = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else sorted({c[1] for c in cells})
        lengths = [int(s) for s in args.source_lengths.split(",")] if args.source_lengths else sorted({c[2] for c in cells})
        cells = list(itertools.product(sizes, batches, lengths))
    args.cells = cells
    args.repeats = args.repeats or grid["repeats"]
    args.warmup = grid["warmup"] if args.warmup is None else args.warmup
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(args.methods) - set(ALL_METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {ALL_METHODS}")
    if args.clock == "cpu" and (args.device != "cpu" or args.threads != 1):
        parser.error("--clock cpu needs --device cpu --threads 1 (CPU time adds up every thread's work).")
    if args.quick:
        args.train_size = args.train_size or "tiny"
        args.train_batch, args.train_steps, args.train_rounds = min(args.train_batch, 4), 3, 1
        args.cell_budget_s = args.cell_budget_s or 20
    args.train_size = args.train_size or "small"
    args.tag = args.tag or (args.device.split(":")[0] + ("_quick" if args.quick else ""))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    info = machine_info(args.device)
    started = time.perf_counter()
    print(f"# speed benchmark ({info['date_utc']}, {info['host_cpu']}, {info['torch_threads']} threads, "
          f"device {args.device}, load {info['loadavg_start']})")  # fmt: skip
    print(f"cells (size, batch, source length): {args.cells}; repeats {args.repeats}, warmup {args.warmup}")
    rows = run_decoding(args, args.cells)
    latency, ratios = decoding_tables(rows)
    print("\n## Decoding: ms / sample (median)\n\n" + latency)
    print("\n## Ratios (median of per-repeat ratios)\n\n" + ratios)
    training = None
    if not args.no_train:
        training = run_training_steps(args)
        print(f"\n## Training step ({training['size']}, batch {training['batch']}, source {training['source_length']}, "
              f"target {training['target_length']})\n")  # fmt: skip
        print(markdown_table(training["rows"], [("variant", "variant"), ("steps", "n"), ("ms_per_step", "ms/step"),
                                                ("ms_per_sample", "ms/sample"), ("vs_bart", "x BART")], 2))  # fmt: skip
        print(f"\n{training['note']}")
    info = finish_machine_info(info)
    payload = {
        "benchmark": "speed",
        "machine": info,
        "settings": {
            "nar_length": NAR_LENGTH, "ar_tokens": AR_TOKENS, "length_penalty": LENGTH_PENALTY,
            "repeats": args.repeats, "warmup": args.warmup, "cells": args.cells, "methods": args.methods,
            "sizes": {s: SIZES[s] for s in {c[0] for c in args.cells} | {args.train_size}}, "vocab_size": VOCAB_SIZE,
            "prophetnet_ngram": 1, "weights": "random init, no downloads", "clock": args.clock,
        },  # fmt: skip
        "decoding": rows,
        "training": training,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    json_path = write_json(args.out / f"speed_{args.tag}.json", payload)
    png_path = plot(rows, args.out / f"speed_{args.tag}.png")
    print(f"\nwrote {display_path(json_path)} and {display_path(png_path)} in {payload['total_seconds']}s")
    summary = {
        "benchmark": "speed", "machine": {k: info[k] for k in ("date_utc", "host_cpu", "torch_threads", "device",
        "torch", "transformers", "loadavg_start", "loadavg_end")},
        "ratios": {f"{r['size']}/b{r['batch']}/s{r['source_length']}": {k: round(v, 3) for k, v in r["ratios"].items()}
                   for r in rows},
        "training_vs_bart": {r["variant"]: round(r["vs_bart"], 3) for r in training["rows"]} if training else None,
    }  # fmt: skip
    print_json_line(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
