"""One prepared GPU run (issues 7 and 13): decoding speed ratios and training throughput, <= 10 minutes on one GPU.

Prints Markdown tables and one summary JSON line, and writes `results/gpu_<tag>.json`:
1. Decoding (BANG base size, random weights, source 64, forced output length): ms/sample of NAR, AR greedy and AR
   beam 4 (and HF BART beam 4 of equal size), at batch 1 and 32, in fp32 and bf16; ratios AR/NAR;
2. Training steps (`--train-size`, default base, batch 32, source 64, target 24) with `SPMDSeq2SeqTrainer` presets
   `bang_nar` (plain NAR) and `spmd`, and HF BART with the stock `Seq2SeqTrainer`, in fp32 and bf16 autocast:
   ms/step, tokens/s (source + target tokens), SPMD / plain NAR step time, BANG NAR tokens/s / BART tokens/s;
   peak memory of each decoding call (`common.peak_memory_mib`) and of each training run (max allocated on CUDA);
3. Optionally (`--with-quality`) the short Du 2017 QG quality run of `quality.py` (needs the data): the NAR recipes
   side by side on real text, 1-best sequence KD vs the default mode-consistent SPMD (4-best) vs SPMD as written.

    python benchmarks/gpu.py                      # on a CUDA machine
    python benchmarks/gpu.py --smoke --device cpu  # tiny settings: checks the script on a CPU in ~1-2 minutes

Each part stops its repeats once its time budget is spent (at least one measured round always runs).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import speed
from common import RESULTS_DIR, machine_info, markdown_table, median, paired_ratio, paired_timings, write_json
from common import peak_memory_mib  # noqa: I001

HERE = Path(__file__).resolve().parent
DECODE_METHODS = ["nar", "ar_greedy", "ar_beam4", "bart_beam4"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def decoding(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per (dtype, batch): ms/sample per method and the paired AR/NAR ratios."""
    rows = []
    for dtype_name, dtype in DTYPES.items():
        models = speed.build_models(args.size, {"bart"}, args.device, args.seed)
        models = {name: model.to(dtype).eval() for name, model in models.items()}
        for batch in args.batch_sizes:
            fns = speed.method_fns(models, DECODE_METHODS, batch, args.source_length, args.device, args.seed)
            started = time.perf_counter()
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                times = paired_timings(
                    fns, warmup=args.warmup, repeats=args.repeats, device=args.device, time_budget_s=args.cell_budget_s
                )
                memory = {m: peak_memory_mib(fn, args.device) for m, fn in fns.items()}
            row = {
                "dtype": dtype_name, "batch": batch, "repeats": len(times["nar"]),
                "seconds": round(time.perf_counter() - started, 1),
                **{f"{m}_ms_per_sample": 1000 * median(t) / batch for m, t in times.items()},
                **{f"{m}_peak_mib": memory[m] for m in times},
                "ar_beam4_over_nar": paired_ratio(times["ar_beam4"], times["nar"]),
                "ar_greedy_over_nar": paired_ratio(times["ar_greedy"], times["nar"]),
                "ar_beam4_over_bart_beam4": paired_ratio(times["ar_beam4"], times["bart_beam4"]),
            }  # fmt: skip
            rows.append(row)
            print(f"[decode {dtype_name} b={batch}] {row['repeats']} repeats in {row['seconds']}s: AR beam4 / NAR "
                  f"{row['ar_beam4_over_nar']:.1f}x", flush=True)  # fmt: skip
        del models
    return rows


def training(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per precision: step times of BART, BANG plain NAR and SPMD, via `speed.run_training_steps`."""
    rows = []
    for precision in ("fp32", "bf16"):
        options = argparse.Namespace(
            train_size=args.train_size, train_batch=args.train_batch, train_steps=args.train_steps,
            train_rounds=args.train_rounds, device=args.device, seed=args.seed, train_bf16=precision == "bf16",
            train_variants=["bart (Seq2SeqTrainer)", "bang nar (preset bang_nar)", "bang nar (preset spmd)"],
        )  # fmt: skip
        started = time.perf_counter()
        result = speed.run_training_steps(options)
        by_name = {r["variant"]: r for r in result["rows"]}
        bart, nar, spmd = (by_name[n] for n in options.train_variants)
        row = {
            "precision": precision, "size": args.train_size, "batch": args.train_batch,
            "steps": nar["steps"], "seconds": round(time.perf_counter() - started, 1),
            "bart_ms_per_step": bart["ms_per_step"], "bang_nar_ms_per_step": nar["ms_per_step"],
            "spmd_ms_per_step": spmd["ms_per_step"],
            "bart_tokens_per_s": bart["tokens_per_s"], "bang_nar_tokens_per_s": nar["tokens_per_s"],
            "spmd_tokens_per_s": spmd["tokens_per_s"],
            "spmd_over_bang_nar": spmd["ms_per_step"] / nar["ms_per_step"],
            "bart_peak_mib": bart["peak_memory_mib"], "bang_nar_peak_mib": nar["peak_memory_mib"],
            "spmd_peak_mib": spmd["peak_memory_mib"],
            "bang_nar_tokens_per_s_over_bart": nar["tokens_per_s"] / bart["tokens_per_s"],
        }  # fmt: skip
        rows.append(row)
        print(f"[train {precision}] {row['seconds']}s: SPMD / plain NAR {row['spmd_over_bang_nar']:.2f}x, "
              f"NAR tokens/s / BART {row['bang_nar_tokens_per_s_over_bart']:.2f}x", flush=True)  # fmt: skip
    return rows


def quality(args: argparse.Namespace, tag: str, timeout_s: float) -> dict[str, Any]:
    """The short Du 2017 QG run of quality.py, as a subprocess under a time cap; its last JSON line."""
    command = [sys.executable, str(HERE / "quality.py"), "--datasets", "du2017_qg", "--vocab", "bert", "--size", "small",
               "--ar-steps", "1500", "--steps", "500", "--batch-size", "64", "--lr", "5e-4", "--eval-batch", "250",
               "--distil-batch", "512", "--train-limit", "10570", "--eval-limit", "2000", "--device", args.device,
               "--methods", "ar greedy,nar seq_kd,nar spmd,nar spmd_reconstruction",  # issue 10: recipes on real text
               "--tag", tag]  # fmt: skip
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f}s"}
    print(out.stdout[-20000:])
    last = [line for line in out.stdout.splitlines() if line.startswith("{")]
    return json.loads(last[-1]) if out.returncode == 0 and last else {"error": f"exit code {out.returncode}"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="Tiny model, few repeats: checks the script (CPU ok).")
    parser.add_argument("--size", default="base", help="Model size of the decoding part (speed.py SIZES).")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--source-length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cell-budget-s", type=float, default=30, help="Per (dtype, batch) decoding cell.")
    parser.add_argument("--train-size", default="base")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=8, help="Steps per train() call (the first is dropped).")
    parser.add_argument("--train-rounds", type=int, default=2)
    parser.add_argument("--with-quality", action="store_true", help="Also run the short quality.py Du 2017 QG run.")
    parser.add_argument("--quality-cap-s", type=float, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--tag", default=None)
    args = parser.parse_args(argv)
    if args.smoke:
        args.size = args.train_size = "tiny"
        args.batch_sizes, args.source_length, args.repeats, args.warmup, args.cell_budget_s = "1,4", 16, 2, 1, 5
        args.train_batch, args.train_steps, args.train_rounds = 4, 3, 1
    args.batch_sizes = [int(b) for b in str(args.batch_sizes).split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("No CUDA device: run with --device cpu --smoke to check the script, or on a GPU machine.")
        return 2
    tag = args.tag or ("gpu" if args.device.startswith("cuda") else args.device) + ("_smoke" if args.smoke else "")
    info = machine_info(args.device)
    started = time.perf_counter()
    decode_rows = decoding(args)
    train_rows = training(args)
    quality_result = quality(args, tag, args.quality_cap_s) if args.with_quality else None
    total = time.perf_counter() - started

    print(f"\n## Decoding ({args.size}, source {args.source_length}, ms/sample, median)\n")
    columns = [("dtype", "dtype"), ("batch", "batch"), ("repeats", "n"),
               *((f"{m}_ms_per_sample", m) for m in DECODE_METHODS),
               ("ar_beam4_over_nar", "AR beam4 / NAR"), ("ar_greedy_over_nar", "AR greedy / NAR"),
               ("ar_beam4_over_bart_beam4", "BANG / BART beam4"),
               *((f"{m}_peak_mib", f"{m} peak MiB") for m in DECODE_METHODS)]  # fmt: skip
    print(markdown_table(decode_rows, columns, 2))
    print(f"\n## Training step ({args.train_size}, batch {args.train_batch}, source 64, target {speed.NAR_LENGTH})\n")
    columns = [("precision", "precision"), ("steps", "n"), ("bart_ms_per_step", "BART ms/step"),
               ("bang_nar_ms_per_step", "NAR ms/step"), ("spmd_ms_per_step", "SPMD ms/step"),
               ("spmd_over_bang_nar", "SPMD / NAR"), ("bart_tokens_per_s", "BART tok/s"),
               ("bang_nar_tokens_per_s", "NAR tok/s"), ("spmd_tokens_per_s", "SPMD tok/s"),
               ("bang_nar_tokens_per_s_over_bart", "NAR tok/s / BART"), ("bart_peak_mib", "BART peak MiB"),
               ("bang_nar_peak_mib", "NAR peak MiB"), ("spmd_peak_mib", "SPMD peak MiB")]  # fmt: skip
    print(markdown_table(train_rows, columns, 2))
    payload = {"benchmark": "gpu", "machine": info, "settings": {k: v for k, v in vars(args).items() if k != "out"},
               "decoding": decode_rows, "training": train_rows, "quality": quality_result,
               "total_seconds": round(total, 1)}  # fmt: skip
    path = write_json(args.out / f"gpu_{tag}.json", payload)
    print(f"\nwrote {path} in {total:.0f}s")
    summary = {
        "benchmark": "gpu", "device": args.device, "total_s": round(total, 1),
        "ar_beam4_over_nar": {f"{r['dtype']}/b{r['batch']}": round(r["ar_beam4_over_nar"], 2) for r in decode_rows},
        "spmd_over_bang_nar": {r["precision"]: round(r["spmd_over_bang_nar"], 2) for r in train_rows},
        "bang_nar_tokens_per_s_over_bart": {
            r["precision"]: round(r["bang_nar_tokens_per_s_over_bart"], 2) for r in train_rows
        },
    }  # fmt: skip
    print(json.dumps(summary, separators=(",", ":")))
    return 0 if quality_result is None or "error" not in quality_result else 1


if __name__ == "__main__":
    raise SystemExit(main())
