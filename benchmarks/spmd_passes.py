"""Cost of each SPMD pass: loss + backward of `SPMDSeq2SeqTrainer` presets and ablations against plain NAR (issue 13).

Random weights and data (speed.py's model sizes, BERT-size vocabulary, `--candidates` distilled targets per sample),
one micro-batch, no optimizer step. Every variant runs in turn each round (interleaved) and the median is reported,
with the peak memory one step adds above the loaded model (`common.peak_memory_mib`: CPU resident set, CUDA allocated).
On a CPU the time is the process's CPU time, which a shared machine's load barely moves (wall time there swings
several-fold); on CUDA it is wall time with the device synchronised.

    python benchmarks/spmd_passes.py                    # small size, batch 16, 3 rounds (~1 min of CPU time)
    python benchmarks/spmd_passes.py --device cuda --size base --batch 32
    python benchmarks/spmd_passes.py --variants "spmd;spmd, stored top-8 KD (beta=0)"  # these rows only

The stored-KD rows (docs/spmd.md#stored-kd) read random top-n ids and log-probs from the batch (`--top-n` of them
per position) instead of running a teacher; their cost does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import datasets
import torch

import speed
from common import paired_timings, peak_memory_mib, set_threads

VARIANTS = {
    "bang_nar (plain NAR)": {"spmd_preset": "bang_nar"},
    "spmd": {"spmd_preset": "spmd"},
    "spmd, teacher without dropout": {"spmd_preset": "spmd", "teacher_dropout": False},
    "spmd without teacher (alpha=0)": {"spmd_preset": "spmd", "kd_alpha": 0.0},
    "spmd without AR gold pass (beta=0)": {"spmd_preset": "spmd", "ar_loss_weight": 0.0},
    "spmd AR term on m_i (one shared AR pass)": {"spmd_preset": "spmd", "ar_loss_target": "chosen"},
}


def stored_variants(top_n: int) -> dict[str, dict[str, object]]:
    """The stored top-n KD rows (no teacher pass): with the AR gold pass (β = 0.5) and without (β = 0, its default)."""
    stored = {"spmd_preset": "spmd", "kd_target": "stored"}
    return {
        f"spmd, stored top-{top_n} KD (beta=0.5)": {**stored, "ar_loss_weight": 0.5},
        f"spmd, stored top-{top_n} KD (beta=0)": {**stored, "ar_loss_weight": 0.0},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--source-length", type=int, default=64)
    parser.add_argument("--candidates", type=int, default=4, help="Distilled targets per sample (distill's default).")
    parser.add_argument("--rounds", type=int, default=3, help="Measured rounds (one more warms up).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top-n", type=int, default=8, help="Stored top-n entries per position (stored-KD rows).")
    parser.add_argument(
        "--variants", default=None, help="Row names to run, separated by ';' (default: all; plain NAR always runs, it "
        "is the unit)."
    )  # fmt: skip
    args = parser.parse_args(argv)
    variants = {**VARIANTS, **stored_variants(args.top_n)}
    if args.variants:
        chosen = {name.strip() for name in args.variants.split(";") if name.strip()}
        if chosen - set(variants):
            parser.error(f"unknown --variants {sorted(chosen - set(variants))}; rows: {list(variants)}")
        variants = {name: options for name, options in variants.items()
                    if name == "bang_nar (plain NAR)" or name in chosen}  # fmt: skip
    set_threads(args.threads)
    from bang_nar.trainer import SPMDSeq2SeqTrainer, SPMDTrainingArguments

    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, speed.NAR_LENGTH)
    source = torch.randint(1000, speed.VOCAB_SIZE, (args.batch, args.source_length), generator=generator)
    labels = torch.randint(1000, speed.VOCAB_SIZE, shape, generator=generator)
    kd = torch.randint(1000, speed.VOCAB_SIZE, (args.batch, args.candidates, shape[1]), generator=generator)
    for ids in (source, labels, kd):
        ids[..., -1] = speed.SEP
    top_shape = (*kd.shape, args.top_n)
    top_ids = torch.randint(0, speed.VOCAB_SIZE, top_shape, generator=generator)
    top_log_probs = torch.randn(top_shape, generator=generator).log_softmax(-1)
    batch = {"input_ids": source, "attention_mask": torch.ones_like(source), "labels": labels, "kd_labels": kd,
             "kd_top_ids": top_ids, "kd_top_log_probs": top_log_probs}  # fmt: skip
    batch = {k: v.to(args.device) for k, v in batch.items()}
    data = datasets.Dataset.from_dict({k: batch[k].tolist() for k in batch if k != "attention_mask"})
    model = speed.build_models(args.size, set(), args.device, 0)["bang"].train()
    common = dict(per_device_train_batch_size=args.batch, report_to=[], save_strategy="no",
                  use_cpu=args.device == "cpu", disable_tqdm=True)  # fmt: skip
    clock = time.process_time if args.device == "cpu" else time.perf_counter
    num_items = batch["labels"].ne(-100).sum()

    def step(trainer: SPMDSeq2SeqTrainer) -> None:
        model.zero_grad(set_to_none=True)
        trainer.compute_loss(model, batch, num_items_in_batch=num_items).backward()

    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            name: SPMDSeq2SeqTrainer(
                model=model, args=SPMDTrainingArguments(output_dir=f"{tmp}/{i}", **common, **options), train_dataset=data
            )
            for i, (name, options) in enumerate(variants.items())
        }  # fmt: skip
        for trainer in trainers.values():
            trainer.state.max_steps = 10
        fns = {name: (lambda trainer=trainer: step(trainer)) for name, trainer in trainers.items()}
        times = paired_timings(fns, warmup=1, repeats=args.rounds, device=args.device, clock=clock)
        memory = {name: peak_memory_mib(fn, args.device) for name, fn in fns.items()}
    base = statistics.median(times["bang_nar (plain NAR)"])
    unit = "CPU ms" if args.device == "cpu" else "ms"
    print(f"| variant ({args.size}, batch {args.batch}, source {args.source_length}) | {unit} | x plain NAR | peak MiB |"
          "\n|---|---|---|---|")  # fmt: skip
    rows = {}
    for name, values in times.items():
        rows[name] = {"ms": round(1000 * statistics.median(values), 1), "x_plain_nar": round(statistics.median(values) / base, 2),
                      "peak_memory_mib": None if memory[name] is None else round(memory[name], 1)}  # fmt: skip
        print(f"| {name} | {rows[name]['ms']} | {rows[name]['x_plain_nar']} | {rows[name]['peak_memory_mib']} |")
    print(json.dumps({"benchmark": "spmd_passes", "device": args.device, "size": args.size, "batch": args.batch,
                      "candidates": args.candidates, "top_n": args.top_n, "rounds": args.rounds, "rows": rows}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
