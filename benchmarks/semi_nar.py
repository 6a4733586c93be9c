"""Semi-NAR speed/quality curve (issue 14): k tokens per decoder pass, k in {1, 2, 4, 8}, next to AR greedy, NAR and
nar_verify, on the controlled lexical task of `bang_nar.multimodality` (M valid targets per source).

Protocol, per M (one seed):
1. The AR teacher of `multimodality.py` (`train_teacher`: same task, dims, batch, lr, steps and `--cache-dir` keys),
   trained from scratch until its greedy exact match reaches 100% (or `--ar-max-steps`).
2. From copies of the teacher, each with `--steps` optimizer steps (equal budget, linear schedule, warm-up 10%):
   semi-NAR fine-tuning (`train_mode="semi_nar"`, n = k streams, target_idx = t mod k) for k = 2, 4, 8 on gold
   (`--semi-nar-targets kd1`: on the teacher's 1-best, i.e. sequence KD), and NAR with the package default recipe (`spmd`, the teacher's 4-best lists). The teacher itself is k = 1 (AR greedy), and is
   also decoded semi-NAR at k = 2, 4, 8 without semi-NAR fine-tuning.
3. Scores on the held-out sources: multi-reference BLEU-4, mode consistency (% of outputs equal to one valid
   target), ms per sample at batch 32 (all sources) and batch 1 (the first `--batch1-samples`), and decoder passes
   per sequence (measured at batch 1: AR = tokens emitted incl. [SEP]; semi-NAR = steps; NAR = 1; nar_verify =
   1 NAR + its AR passes). Times: the minimum over `--timing-rounds` rounds that decode every row in turn, after
   all training, so that a change of machine load does not favour one row.

    python benchmarks/semi_nar.py --modes 1,4 --cache-dir ../.mm-cache     # ~40-60 min on 1 busy CPU thread
    python benchmarks/semi_nar.py --quick                                   # smoke run, a few minutes

Outputs: Markdown tables, one JSON line, `results/semi_nar.json`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

import pipeline
from common import RESULTS_DIR, finish_machine_info, machine_info, markdown_table, print_json_line, set_threads, write_json
from multimodality import MAX_TARGET_TOKENS, distil_k_best, train_teacher

BLOCK_SIZES = (2, 4, 8)


@torch.no_grad()
def batch1_passes(model: Any, eval_set: Any, options: dict[str, Any], num_samples: int, config: Any) -> dict[str, float]:
    """ms per sample and decoder passes per sequence, one source at a time."""
    model.eval()
    mode = options["mode"]
    passes, started = [], time.perf_counter()
    for source in eval_set["input_ids"][:num_samples]:
        input_ids = torch.tensor([source])
        if mode == "ar":
            out = model.generate(input_ids, mode="ar", num_beams=1, do_sample=False, max_new_tokens=MAX_TARGET_TOKENS)
            emitted = out[0, 1:].tolist()
            passes.append(emitted.index(config.eos_token_id) + 1 if config.eos_token_id in emitted else len(emitted))
        elif mode == "semi_nar":
            out = model.generate(input_ids, mode="semi_nar", block_size=options["block_size"],
                                 max_new_tokens=MAX_TARGET_TOKENS, return_dict_in_generate=True)  # fmt: skip
            passes.append(out.num_steps)
        elif mode == "nar":
            model.generate(input_ids, mode="nar", max_new_tokens=MAX_TARGET_TOKENS, nar_postprocess=False)
            passes.append(1)
        else:  # nar_verify
            out = model.generate(input_ids, mode="nar_verify", max_new_tokens=MAX_TARGET_TOKENS,
                                 return_dict_in_generate=True)  # fmt: skip
            passes.append(1 + int(out.ar_passes[0]))
    seconds = time.perf_counter() - started
    return {"ms_per_sample_b1": 1000 * seconds / len(passes), "passes": sum(passes) / len(passes)}


def run_task(num_modes: int, args: argparse.Namespace) -> dict[str, Any]:
    from bang_nar.data import tokenize_pairs
    from bang_nar.multimodality import build_word_tokenizer, make_multimodality_task, multi_reference_scores

    started = time.perf_counter()
    seed = args.seed
    task = make_multimodality_task(num_modes, args.num_train, args.num_eval, seed)
    tokenizer = build_word_tokenizer(task)
    train_set, _ = tokenize_pairs(task.train, tokenizer, 16, 16)
    eval_set, _ = tokenize_pairs(task.eval, tokenizer, 16, 16)
    refs = task.eval["references"]
    hyper = {"batch_size": args.batch_size, "learning_rate": args.lr, "seed": seed, "device": args.device}

    def decode(model: Any, options: dict[str, Any]) -> dict[str, Any]:
        return pipeline.decode(model, tokenizer, eval_set, options, max_new_tokens=MAX_TARGET_TOKENS,
                               batch_size=args.eval_batch, device=args.device)  # fmt: skip

    def greedy_score(model: Any) -> dict[str, Any]:
        return multi_reference_scores(decode(model, {"mode": "ar"})["texts"], refs)

    teacher, curve, teacher_s, cache = train_teacher(num_modes, seed, args, tokenizer, train_set, greedy_score)
    print(f"[M={num_modes}] teacher: {curve} ({teacher_s:.0f} s)", flush=True)
    # (system, tokens per pass, training, train seconds, model, decode options); every model trains first, then all
    # rows are scored and timed together, so a change of machine load does not favour one row.
    plan: list[tuple[str, Any, str, float, Any, dict[str, Any]]] = [
        ("AR greedy (teacher)", 1, "AR", teacher_s, teacher, {"mode": "ar", "num_beams": 1}),
        ("teacher, semi_nar k=1", 1, "AR", teacher_s, teacher, {"mode": "semi_nar", "block_size": 1}),
    ]
    block_sizes = [int(k) for k in args.block_sizes.split(",")]
    for k in block_sizes:  # the AR teacher asked for k tokens per pass without semi-NAR training
        plan.append((f"teacher, semi_nar k={k}", k, "AR", teacher_s, teacher, {"mode": "semi_nar", "block_size": k}))
    distilled, distil_s = distil_k_best(teacher, train_set, {4}, cache)
    # Semi-NAR targets: gold, or the teacher's 1-best (sequence KD: one mode per source, as NAR gets from its k-best).
    targets = {"gold": (train_set, "gold"), "kd1": (distilled[4], "ar_kd")}
    for source in args.semi_nar_targets.split(","):
        suffix = "" if source == "gold" else " on the teacher's 1-best"
        data, semi_nar_targets = targets[source]
        for k in block_sizes:
            model = pipeline.fresh_copy(teacher)
            train_s = pipeline.train(model, data, steps=args.steps, warmup_steps=args.steps // 10, train_mode="semi_nar",
                                     semi_nar_block_size=k, semi_nar_targets=semi_nar_targets, **hyper)  # fmt: skip
            assert model.generation_config.block_size == k
            print(f"[M={num_modes}] semi_nar k={k}{suffix}: {args.steps} steps in {train_s:.0f} s", flush=True)
            plan.append((f"semi_nar fine-tuned{suffix}, k={k}", k, f"AR + semi_nar k={k}", train_s, model,
                         {"mode": "semi_nar", "block_size": k}))  # fmt: skip
            if k == max(block_sizes) and source == "gold":  # the largest k model's stream 0 still predicts AR
                plan.append((f"semi_nar fine-tuned k={k}, decoded AR greedy", 1, f"AR + semi_nar k={k}", train_s,
                             model, {"mode": "ar", "num_beams": 1}))  # fmt: skip
    if not args.skip_nar:
        model = pipeline.fresh_copy(teacher)
        train_s = pipeline.train(model, distilled[4], steps=args.steps, warmup_steps=args.steps // 10,
                                 spmd_preset="spmd", **hyper)  # fmt: skip
        print(f"[M={num_modes}] NAR spmd: {args.steps} steps in {train_s:.0f} s", flush=True)
        plan.append(("NAR (spmd default, 4-best)", "all", "AR + NAR spmd", train_s, model, {"mode": "nar"}))
        plan.append(("spmd + nar_verify", "—", "AR + NAR spmd", train_s, model, {"mode": "nar_verify"}))

    rows = []
    for system, k, training, train_s, model, options in plan:
        out = decode(model, options)
        scores = multi_reference_scores(out["texts"], refs)
        rows.append({"M": num_modes, "system": system, "k": k, "training": training, "train_s": train_s,
                     "bleu": scores["bleu"], "mode_consistency": scores["mode_consistency"],
                     "example": out["texts"][0], "ms_per_sample_b32": [], "ms_per_sample_b1": []})  # fmt: skip
    for _ in range(args.timing_rounds):  # interleaved rounds; the minimum is the least disturbed measurement
        for row, (_, _, _, _, model, options) in zip(rows, plan):
            row["ms_per_sample_b32"].append(decode(model, options)["ms_per_sample"])
            timed = batch1_passes(model, eval_set, options, args.batch1_samples, model.config)
            row["ms_per_sample_b1"].append(timed["ms_per_sample_b1"])
            row["passes"] = timed["passes"]
    for row in rows:
        for key in ("ms_per_sample_b32", "ms_per_sample_b1"):
            row[key + "_rounds"], row[key] = row[key], min(row[key])
        print(f"[M={num_modes}] {row['system']}: BLEU {row['bleu']:.1f}, consistency {row['mode_consistency']:.1f}%, "
              f"{row['passes']:.2f} passes, {row['ms_per_sample_b1']:.1f} ms (b1), "
              f"{row['ms_per_sample_b32']:.2f} ms (b32)", flush=True)  # fmt: skip
    return {"M": num_modes, "seed": seed, "rows": rows, "teacher_curve": curve, "teacher_s": teacher_s,
            "distil_s": distil_s, "seconds": time.perf_counter() - started}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="M = 1, few steps (smoke run).")
    parser.add_argument("--modes", default="1,4", help="M values, run one after the other.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=600, help="Fine-tuning steps of every semi-NAR and NAR model.")
    parser.add_argument("--block-sizes", default=",".join(map(str, BLOCK_SIZES)), help="Semi-NAR k values.")
    parser.add_argument("--semi-nar-targets", default="gold",
                        help="Semi-NAR fine-tuning targets: gold and/or kd1 (the teacher's 1-best), comma-separated.")
    parser.add_argument("--skip-nar", action="store_true", help="No NAR / nar_verify rows.")
    parser.add_argument("--num-train", type=int, default=4000)
    parser.add_argument("--num-eval", type=int, default=200)
    parser.add_argument("--ar-max-steps", type=int, default=1800, help="Teacher budget (as multimodality.py).")
    parser.add_argument("--ar-eval-every", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-batch", type=int, default=32)
    parser.add_argument("--batch1-samples", type=int, default=100)
    parser.add_argument("--timing-rounds", type=int, default=3, help="Interleaved timing rounds (minimum reported).")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="multimodality.py's teacher cache: reuse (or keep) each task's teacher and 4-best lists.")
    parser.add_argument("--out", default="semi_nar", help="Result file name under results/ (without .json).")
    args = parser.parse_args(argv)
    if args.quick:
        args.modes, args.steps, args.num_train, args.num_eval = "1", 30, 500, 50
        args.ar_max_steps, args.ar_eval_every, args.batch1_samples, args.timing_rounds = 60, 30, 10, 2
        args.out = args.out + "_quick"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    pipeline.quiet_logs()
    info = machine_info(args.device)
    print(f"# semi-NAR curve ({info['date_utc']}, {args.threads} thread(s), load {info['loadavg_start']})", flush=True)
    started = time.perf_counter()
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "cache_dir"}
    payload: dict[str, Any] = {"benchmark": "semi_nar", "settings": settings,
                               "tasks": []}  # fmt: skip
    for num_modes in [int(m) for m in args.modes.split(",")]:
        payload["tasks"].append(run_task(num_modes, args))
        write_json(RESULTS_DIR / f"{args.out}.json", payload | {"machine": info})  # kept after each task
        table = markdown_table(payload["tasks"][-1]["rows"], [
            ("M", "M"), ("system", "system"), ("k", "tokens/pass"), ("bleu", "BLEU-4"),
            ("mode_consistency", "mode consistency %"), ("passes", "passes/seq"), ("ms_per_sample_b1", "ms/sample b1"),
            ("ms_per_sample_b32", "ms/sample b32"), ("train_s", "train s")])  # fmt: skip
        print(f"\n{table}\n", flush=True)
    payload["seconds"] = time.perf_counter() - started
    payload["machine"] = finish_machine_info(info)
    write_json(RESULTS_DIR / f"{args.out}.json", payload)
    print_json_line({"benchmark": "semi_nar", "seconds": round(payload["seconds"], 1),
                     "mode_consistency": {f"M{r['M']}/{r['system']}": round(r["mode_consistency"], 1)
                                          for t in payload["tasks"] for r in t["rows"]}})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
