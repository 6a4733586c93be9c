"""The controlled multi-modality benchmark (issue 7; after Zhou, Gu & Neubig, ICLR 2020): AR vs NAR vs SPMD.

Each source of `bang_nar.multimodality` has M in {1, 2, 4} valid targets (a hidden per-sentence choice of synonym
table and word order); training targets are drawn uniformly among them. An NAR decoder predicts every position
independently, so as M grows it mixes choices across positions; sequence KD (and SPMD) should undo that.

Protocol (equal budgets, see `pipeline.py`): a tiny BANG is fine-tuned from scratch in AR mode (stage 1); it distils
the training set (beam 4); from that start every method trains the same number of further steps (stage 2): AR
(decoded greedy and with beam 4), NAR `bang_nar`, NAR `seq_kd`, NAR `spmd`, and SPMD without self-paced weights,
without the token KL, without the AR-stream loss. Scores on held-out sources: multi-reference BLEU-4 against all M
valid targets, mode consistency (% outputs equal to one valid target), repetition rate (% tokens equal to the one
before), ms/sample. Mean ± sd over seeds.

    python benchmarks/multimodality.py            # M = 1,2,4 x 3 seeds, <= ~30 min on 2 CPU cores
    python benchmarks/multimodality.py --quick    # M = 1,4 x 1 seed, few steps: a smoke run (~2-3 min)

Outputs: Markdown tables, one JSON line, `results/multimodality[_quick].json` + `.png`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

import pipeline
from common import (
    RESULTS_DIR,
    display_path,
    finish_machine_info,
    machine_info,
    markdown_table,
    mean_sd,
    print_json_line,
    save_plot,
    set_threads,
    write_json,
)

DIMS = {"d_model": 128, "layers": 2, "heads": 4, "ffn": 256}
MAX_TARGET_TOKENS = 14  # 12 words + [SEP], plus one slot


def run_one(num_modes: int, seed: int, args: argparse.Namespace, methods: list[str]) -> dict[str, dict[str, Any]]:
    """Stage 1 + distillation + stage 2 for every method on one (M, seed) task; returns scores per method.

    Runs in a worker process: sets its own thread count and quiet logs."""
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    pipeline.quiet_logs()
    from bang_nar.data import tokenize_pairs
    from bang_nar.multimodality import build_word_tokenizer, make_multimodality_task, multi_reference_scores

    task = make_multimodality_task(num_modes, args.num_train, args.num_eval, seed)
    tokenizer = build_word_tokenizer(task)
    train_set, _ = tokenize_pairs(task.train, tokenizer, 16, 16)
    eval_set, _ = tokenize_pairs(task.eval, tokenizer, 16, 16)
    hyper = {"batch_size": args.batch_size, "learning_rate": args.lr, "seed": seed, "device": args.device}

    torch.manual_seed(seed)
    start = pipeline.BangForConditionalGeneration(pipeline.bang_config(tokenizer, DIMS, max_positions=32))
    stage1_s = pipeline.train(
        start, train_set, steps=args.ar_steps, warmup_steps=args.ar_steps // 10, train_mode="ar", **hyper
    )
    distilled, distil_s = pipeline.distil(start, train_set, max_new_tokens=MAX_TARGET_TOKENS)
    kd_exact = sum(k[0] == g for k, g in zip(distilled["kd_labels"], distilled["labels"])) / len(distilled)

    trained: dict[str, tuple[Any, float]] = {}
    results: dict[str, dict[str, Any]] = {}
    for name in methods:
        spec = pipeline.METHODS[name]
        model, train_s = pipeline.trained_model(name, trained, start, distilled, args.steps, **hyper)
        out = pipeline.decode(
            model, tokenizer, eval_set, spec["decode"], max_new_tokens=MAX_TARGET_TOKENS,
            batch_size=args.eval_batch, device=args.device,
        )  # fmt: skip
        scores = multi_reference_scores(out["texts"], task.eval["references"])
        results[name] = {
            "bleu": scores["bleu"],
            "mode_consistency": scores["mode_consistency"],
            "repetition_rate": pipeline.repetition_rate(out["tokens"]),
            "ms_per_sample": out["ms_per_sample"],
            "train_s": train_s,
            "example": out["texts"][0],
        }
    meta = {"stage1_s": stage1_s, "distil_s": distil_s, "kd_equals_gold": kd_exact,
            "reference_repetition_rate": pipeline.repetition_rate(eval_set["labels"]), "example_refs": task.eval["references"][0],
            "seconds": time.perf_counter() - started}  # fmt: skip
    return {"methods": results, "meta": meta}


def summarise(runs: dict[int, list[dict[str, Any]]], methods: list[str]) -> list[dict[str, Any]]:
    rows = []
    for num_modes, seed_runs in runs.items():
        for name in methods:
            row: dict[str, Any] = {"M": num_modes, "method": name, "seeds": len(seed_runs)}
            for key in ("bleu", "mode_consistency", "repetition_rate", "ms_per_sample", "train_s"):
                mean, sd = mean_sd([r["methods"][name][key] for r in seed_runs])
                row[key], row[key + "_sd"] = mean, sd
                row[key + "_fmt"] = f"{mean:.1f} ± {sd:.1f}" if key != "ms_per_sample" else f"{mean:.2f} ± {sd:.2f}"
            rows.append(row)
    return rows


def plot(rows: list[dict[str, Any]], methods: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = sorted({r["M"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "bleu", "multi-reference BLEU-4"), (axes[1], "mode_consistency", "mode consistency %")):
        for name in methods:
            points = [next(r for r in rows if r["M"] == m and r["method"] == name) for m in modes]
            ax.errorbar(modes, [p[key] for p in points], yerr=[p[key + "_sd"] for p in points], marker="o",
                        capsize=3, label=name, linestyle="--" if name.startswith("ar") else "-")  # fmt: skip
        ax.set_xticks(modes)
        ax.set_xlabel("M (valid targets per source)")
        ax.set_ylabel(label)
    axes[1].legend(fontsize=7)
    fig.suptitle("Controlled multi-modality: mean ± sd over seeds (tiny BANG, equal step budgets)")
    return save_plot(fig, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="M = 1,4, one seed, few steps (smoke run).")
    parser.add_argument("--modes", default="1,2,4")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(pipeline.DEFAULT_METHODS))
    parser.add_argument("--num-train", type=int, default=4000)
    parser.add_argument("--num-eval", type=int, default=200)
    parser.add_argument("--ar-steps", type=int, default=500, help="Stage 1: AR steps from scratch (the teacher).")
    parser.add_argument("--steps", type=int, default=150, help="Stage 2: steps of every method from the teacher.")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-batch", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker process.")
    parser.add_argument("--jobs", type=int, default=2, help="(M, seed) tasks run in parallel processes.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--tag", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.modes, args.seeds = "1,4", "0"
        args.num_train, args.num_eval, args.ar_steps, args.steps = 1000, 100, 60, 30
    args.tag = args.tag or ("quick" if args.quick else None)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    pipeline.quiet_logs()
    info = machine_info(args.device)
    info["jobs"] = args.jobs
    requested = [m.strip() for m in args.methods.split(",") if m.strip()]
    methods, missing = pipeline.available_methods(requested)
    print(f"# multi-modality benchmark ({info['date_utc']}, {info['host_cpu']}, {info['torch_threads']} threads, "
          f"load {info['loadavg_start']})")  # fmt: skip
    if missing:
        print(f"(not in this modeling_bang.py yet, skipped: {', '.join(missing)})")
    started = time.perf_counter()
    runs: dict[int, list[dict[str, Any]]] = defaultdict(list)
    jobs = [(int(m), int(s)) for m in args.modes.split(",") for s in args.seeds.split(",")]
    # One process per (M, seed) task, `--jobs` at a time, each with `--threads` torch threads (default 1: these
    # models are too small to gain from intra-op threads, and the cores are better spent on parallel tasks).
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_one, m, s, args, methods): (m, s) for m, s in jobs}
        done = {}
        for future in as_completed(futures):
            num_modes, seed = futures[future]
            run = done[(num_modes, seed)] = future.result()
            line = ", ".join(f"{n} {r['bleu']:.1f}/{r['mode_consistency']:.0f}%" for n, r in run["methods"].items())
            print(f"[M={num_modes} seed={seed}] {run['meta']['seconds']:.0f}s; BLEU/consistency: {line}", flush=True)
    for key in jobs:
        runs[key[0]].append(done[key])
    rows = summarise(runs, methods)
    table = markdown_table(
        rows,
        [("M", "M"), ("method", "method"), ("bleu_fmt", "multi-ref BLEU-4"), ("mode_consistency_fmt", "mode consistency %"),
         ("repetition_rate_fmt", "repetition %"), ("ms_per_sample_fmt", f"ms/sample (batch {args.eval_batch})"),
         ("train_s_fmt", "stage-2 train s")],
    )  # fmt: skip
    info = finish_machine_info(info)
    total = time.perf_counter() - started
    print(f"\n## Controlled multi-modality (mean ± sd over seeds {args.seeds})\n\n{table}\n")
    kd = {m: [r["meta"]["kd_equals_gold"] for r in rs] for m, rs in runs.items()}
    ref_rep = {m: [r["meta"]["reference_repetition_rate"] for r in rs] for m, rs in runs.items()}
    print(f"Teacher (stage 1, {args.ar_steps} AR steps) beam-4 output equals the sampled gold target on "
          + ", ".join(f"M={m}: {100 * sum(v) / len(v):.0f}%" for m, v in kd.items())
          + " of training sources; repetition rate of the references: "
          + ", ".join(f"M={m}: {sum(v) / len(v):.1f}%" for m, v in ref_rep.items()) + ".")  # fmt: skip
    print(f"Model {DIMS}, word-level vocabulary {len(pipeline_vocab())}; {args.num_train} train / {args.num_eval} eval "
          f"sources; stage 1 {args.ar_steps} AR steps, stage 2 {args.steps} steps per method; batch {args.batch_size}, "
          f"lr {args.lr}; total {total / 60:.1f} min.")  # fmt: skip
    payload = {
        "benchmark": "multimodality",
        "machine": info,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)} | {"dims": DIMS, "methods": methods,
                                                                                  "skipped_methods": missing},
        "rows": rows,
        "runs": {m: rs for m, rs in runs.items()},
        "total_seconds": round(total, 1),
    }  # fmt: skip
    name = "multimodality" + (f"_{args.tag}" if args.tag else "")
    json_path = write_json(args.out / f"{name}.json", payload)
    png_path = plot(rows, methods, args.out / f"{name}.png")
    print(f"wrote {display_path(json_path)} and {display_path(png_path)}")
    print_json_line({
        "benchmark": "multimodality", "machine": {k: info[k] for k in ("date_utc", "host_cpu", "torch_threads",
        "torch", "transformers", "loadavg_start", "loadavg_end")}, "total_seconds": round(total, 1),
        "bleu": {f"M{r['M']}/{r['method']}": round(r["bleu"], 2) for r in rows},
        "mode_consistency": {f"M{r['M']}/{r['method']}": round(r["mode_consistency"], 1) for r in rows},
    })  # fmt: skip
    return 0


def pipeline_vocab() -> tuple[str, ...]:
    from bang_nar.multimodality import SPECIAL_TOKENS, VOCABULARY

    return SPECIAL_TOKENS + VOCABULARY


if __name__ == "__main__":
    raise SystemExit(main())
