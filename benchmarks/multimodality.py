"""The controlled multi-modality benchmark (issue 10; after Zhou, Gu & Neubig, ICLR 2020): which NAR recipe commits
to one mode when a source has M valid targets.

Each source of `bang_nar.multimodality` has M in {1, 2, 4, 8} valid targets (a hidden per-sentence choice of
synonym table, word order and rotation); training targets are drawn uniformly among them. An NAR decoder predicts
every position independently, so it mixes choices across positions unless its training targets let it settle on one.

Protocol, per (M, seed):
1. Teacher: a tiny BANG trained from scratch in AR mode for `--ar-max-steps` (linear decay), its greedy exact match
   (mode consistency) on the held-out sources checked every `--ar-eval-every` steps to show the plateau (it stops
   early only at 100%). Its greedy and beam-4 scores are the AR rows.
2. The teacher distils the training set: beam 4, length penalty 1.2, the 4 best (`bang-nar distill`'s default);
   rows that ask for 8 candidates get beam 8 / 8 best. Row "1-best" uses the first candidate only (`kd_top_k=1`).
3. Every NAR row trains from a copy of the teacher for each budget in `--budgets` (a separate run per budget, linear
   schedule to its end), then decodes one pass (`--slots` slots, cut at [SEP]).
Scores on held-out sources: multi-reference BLEU-4 against all M valid targets, mode consistency (% of outputs equal
to one valid target), training seconds. Mean ± sd over seeds. The oracle row trains NAR on one mode only (choice 0),
the upper bound for any distillation.

    python benchmarks/multimodality.py --modes 4 --seeds 0,1,2                      # one M per call (writes _M4)
    python benchmarks/multimodality.py --summarise                                   # tables + plot from every task
    python benchmarks/multimodality.py --quick                                      # smoke run, ~2 min

Outputs: Markdown tables, one JSON line, `results/multimodality_M{M}.json` and one file per finished task in
`results/multimodality_runs/`; `--summarise` merges those into `results/multimodality.{md,json,png}`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import datasets
import torch

import pipeline
from bang_nar.trainer.sequence_kd import DEFAULT_MIN_DISTANCE, DEFAULT_NUM_BEAMS, DEFAULT_PROBABILITY_MASS
from common import (
    RESULTS_DIR,
    display_path,
    finish_machine_info,
    machine_info,
    markdown_table,
    mean_sd,
    print_json_line,
    set_threads,
    write_json,
)

DIMS = {"d_model": 128, "layers": 2, "heads": 4, "ffn": 256}
MAX_TARGET_TOKENS = 14  # 12 words + [SEP], plus one slot

# NAR rows: SPMDTrainingArguments fields, which targets (`gold`, `oracle` = choice 0 only, `kd4` / `kd8` = the k-best
# distillation), and decode options. `spmd` with no overrides is the package default recipe.
NAR_METHODS: dict[str, dict[str, Any]] = {
    "oracle (NAR on one mode)": {"train": {"spmd_preset": "bang_nar"}, "data": "oracle"},
    "bang_nar (gold)": {"train": {"spmd_preset": "bang_nar"}, "data": "gold"},
    "seq_kd (1-best)": {"train": {"spmd_preset": "seq_kd", "kd_top_k": 1}, "data": "kd4"},
    "spmd_reconstruction (gold + 1-best)": {"train": {"spmd_preset": "spmd_reconstruction", "kd_top_k": 1}, "data": "kd4"},
    "spmd (default: 4-best)": {"train": {"spmd_preset": "spmd"}, "data": "kd4"},
    "spmd w/o self-paced": {"train": {"spmd_preset": "spmd", "pace_mode": "none"}, "data": "kd4"},
    "spmd w/o token KD": {"train": {"spmd_preset": "spmd", "kd_alpha": 0.0}, "data": "kd4"},
    "spmd w/o AR loss": {"train": {"spmd_preset": "spmd", "ar_loss_weight": 0.0}, "data": "kd4"},
    "spmd + gold in C_i": {"train": {"spmd_preset": "spmd", "target_sources": ["gold", "ar_kd"]}, "data": "kd4"},
    "seq_kd + min_loss (4-best)": {"train": {"spmd_preset": "seq_kd"}, "data": "kd4"},
    "spmd 2-best": {"train": {"spmd_preset": "spmd", "kd_top_k": 2}, "data": "kd4"},
    "spmd 8-best (beam 8)": {"train": {"spmd_preset": "spmd"}, "data": "kd8"},
    "spmd 16-best (beam 16)": {"train": {"spmd_preset": "spmd"}, "data": "kd16"},
    # `bang-nar distill`'s default since issue 21: beam 16, k from the data (95% of the beam's probability mass), of
    # those only distinct modes (no target within half of its slots of a more probable kept one)
    "spmd (default: k from the data + distinct modes)": {"train": {"spmd_preset": "spmd"}, "data": "modes"},
    "spmd (k from the data: mass only)": {"train": {"spmd_preset": "spmd"}, "data": "mass"},
    # issue 22: the token KL from the teacher's top-8 stored at distillation time (no teacher pass; β = 0)
    "spmd stored top-8 KD (default lists)": {"train": {"spmd_preset": "spmd", "kd_target": "stored"},
                                             "data": "modes_top8"},  # fmt: skip
    "seq_kd + min_loss (k from the data)": {"train": {"spmd_preset": "seq_kd"}, "data": "mass"},
    "spmd + glancing 0.5→0.1 (k from the data)": {"train": {"spmd_preset": "spmd", "glance_ratio": 0.5,
                                                           "glance_ratio_end": 0.1}, "data": "mass"},  # fmt: skip
    # "verify": also score the student's AR stream through nar_verify (= its AR greedy), which these rows train
    # differently from the default.
    "spmd teacher w/o dropout": {"train": {"spmd_preset": "spmd", "teacher_dropout": False}, "data": "kd4",
                                 "verify": True},  # fmt: skip
    "spmd AR term on m_i (one AR pass)": {"train": {"spmd_preset": "spmd", "ar_loss_target": "chosen"},
                                          "data": "kd4", "verify": True},  # fmt: skip
    "spmd + glancing 0.5→0.1": {"train": {"spmd_preset": "spmd", "glance_ratio": 0.5, "glance_ratio_end": 0.1},
                                "data": "kd4"},  # fmt: skip
}
DEFAULT_NAR = "spmd (default: k from the data + distinct modes)"
# Rows renamed since their results were written: the first default of issue 21 kept every target of the mass cut.
RENAMED_ROWS = {"spmd (default: k from the data)": "spmd (k from the data: mass only)"}
# Distilled data sets: name → (beam, k, probability mass, min slot distance); "modes" is `bang-nar distill`'s default.
DISTILLED: dict[str, tuple[int, int, float | None, float | None]] = {
    "kd4": (4, 4, None, None), "kd8": (8, 8, None, None), "kd16": (16, 16, None, None),
    "mass": (DEFAULT_NUM_BEAMS, DEFAULT_NUM_BEAMS, DEFAULT_PROBABILITY_MASS, None),
    "modes": (DEFAULT_NUM_BEAMS, DEFAULT_NUM_BEAMS, DEFAULT_PROBABILITY_MASS, DEFAULT_MIN_DISTANCE),
    "modes_top8": (DEFAULT_NUM_BEAMS, DEFAULT_NUM_BEAMS, DEFAULT_PROBABILITY_MASS, DEFAULT_MIN_DISTANCE),
}  # fmt: skip
STORED_TOP_N = {"modes_top8": 8}  # distilled sets that also store the teacher's top-n per position (kd_top_n)
AR_ROWS = {"AR greedy (teacher)": {"mode": "ar", "num_beams": 1}, "AR beam 4 (teacher)": {"mode": "ar", "num_beams": 4}}
VERIFY_ROW = "spmd + nar_verify"  # the row name of the fixed-k default's nar_verify scores (earlier results)
FIXED_K_DEFAULT = "spmd (default: 4-best)"  # the default before issue 21


def _dataset_for(kind: str, train_set: Any, oracle_set: Any, distilled: dict[str, Any]) -> Any:
    if kind == "gold":
        return train_set
    if kind == "oracle":
        return oracle_set
    return distilled[kind]


def train_teacher(
    num_modes: int, seed: int, args: argparse.Namespace, tokenizer: Any, train_set: Any, greedy_score: Any
) -> tuple[Any, list[tuple[int, float]], float, Path | None]:
    """The task's AR teacher: a tiny BANG from scratch in AR mode for `args.ar_max_steps` (linear decay, warm-up
    100), its greedy exact match (`greedy_score(model)["mode_consistency"]`) checked every `args.ar_eval_every`
    steps; stops early only at 100%. Kept in `args.cache_dir` (when set) and reused by later calls on the same task.
    Returns `(teacher, curve [(step, %)], seconds, cache folder or None)`."""
    hyper = {"batch_size": args.batch_size, "learning_rate": args.lr, "seed": seed, "device": args.device}
    key = f"M{num_modes}_seed{seed}_n{args.num_train}_ar{args.ar_max_steps}e{args.ar_eval_every}"
    key += "_order" if args.word_order else ""
    cache = args.cache_dir / key if args.cache_dir else None
    if cache is not None and (cache / "teacher" / "config.json").is_file():
        teacher = pipeline.BangForConditionalGeneration.from_pretrained(cache / "teacher")
        saved = json.loads((cache / "teacher.json").read_text(encoding="utf-8"))
        return teacher.eval(), [tuple(h) for h in saved["history"]], saved["seconds"], cache
    torch.manual_seed(seed)
    teacher = pipeline.BangForConditionalGeneration(pipeline.bang_config(tokenizer, DIMS, max_positions=32))
    # Linear decay over the whole budget: a constant 1e-3 made teachers collapse after a few hundred steps.
    # The curve (greedy exact match every --ar-eval-every steps) shows where it plateaus; training stops
    # early only at 100%.
    stop = pipeline.PlateauStop(
        lambda: greedy_score(teacher)["mode_consistency"],
        every=args.ar_eval_every, patience=args.ar_max_steps, ceiling=100.0,
    )  # fmt: skip
    teacher_s = pipeline.train(teacher, train_set, steps=args.ar_max_steps, warmup_steps=100, train_mode="ar",
                               callbacks=[stop], **hyper)  # fmt: skip
    history = stop.history
    if cache is not None:
        teacher.save_pretrained(cache / "teacher")
        (cache / "teacher.json").write_text(json.dumps({"history": history, "seconds": teacher_s}), encoding="utf-8")
    return teacher.eval(), history, teacher_s, cache


def distil_k_best(
    teacher: Any, train_set: Any, kinds: Any, cache: Path | None
) -> tuple[dict[str, Any], dict[str, float]]:
    """The teacher's k-best lists (`kd_labels`) for each name of `kinds` (see `DISTILLED`), reused from `cache` when
    there; returns `({name: dataset}, {name: seconds})` (seconds of the first computation, also when reused)."""
    distilled, distil_s = {}, {}
    for kind in sorted(kinds):
        beam, k, mass, distance = DISTILLED[kind]
        name = kind if mass is None else f"{kind}{beam}_{mass}" + (f"_{distance}" if distance is not None else "")
        top_n = STORED_TOP_N.get(kind)
        folder = cache / name if cache is not None else None
        if folder is not None and folder.is_dir():
            distilled[kind] = datasets.load_from_disk(str(folder))
            distil_s[kind] = json.loads((folder / "seconds.json").read_text()) if (folder / "seconds.json").is_file() else 0.0
            continue
        distilled[kind], distil_s[kind] = pipeline.distil(
            teacher, train_set, max_new_tokens=MAX_TARGET_TOKENS, num_beams=beam, num_return_sequences=k,
            probability_mass=mass, min_distance=distance, **({"kd_top_n": top_n} if top_n else {}),
        )  # fmt: skip
        if folder is not None:
            distilled[kind].save_to_disk(str(folder))
            (folder / "seconds.json").write_text(json.dumps(distil_s[kind]))
    return distilled, distil_s


def coverage(distilled: Any, tokenizer: Any, task: Any) -> dict[str, Any]:
    """How many distinct valid modes the lists hold per source, for each prefix length k (the teacher's k-best
    coverage), with the mean list length and the share of listed targets that are valid."""
    texts = [tokenizer.batch_decode(c, skip_special_tokens=True) for c in distilled["kd_labels"]]
    valid = [set(task.valid_targets(s)) for s in task.train["source"]]
    longest = max(len(t) for t in texts)
    per_k = [sum(len({t for t in ts[:k] if t in v}) for ts, v in zip(texts, valid)) / len(texts)
             for k in range(1, longest + 1)]  # fmt: skip
    listed = sum(len(ts) for ts in texts)
    return {"modes_at_k": per_k, "mean_k": listed / len(texts),
            "valid_share": sum(t in v for ts, v in zip(texts, valid) for t in ts) / listed}  # fmt: skip


def run_one(num_modes: int, seed: int, args: argparse.Namespace, plan: list[tuple[str, int]]) -> dict[str, Any]:
    """Teacher to plateau, distillation, then every (NAR row, budget) of `plan` on one (M, seed) task."""
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    pipeline.quiet_logs()
    from bang_nar.data import tokenize_pairs
    from bang_nar.multimodality import build_word_tokenizer, make_multimodality_task, multi_reference_scores, translate

    task = make_multimodality_task(num_modes, args.num_train, args.num_eval, seed, word_order=args.word_order)
    tokenizer = build_word_tokenizer(task)
    train_set, _ = tokenize_pairs(task.train, tokenizer, 16, 16)
    oracle_pairs = task.train.map(lambda row: {"target": translate(row["source"], 0, args.word_order)})
    oracle_set, _ = tokenize_pairs(oracle_pairs, tokenizer, 16, 16)
    eval_set, _ = tokenize_pairs(task.eval, tokenizer, 16, 16)
    refs = task.eval["references"]
    hyper = {"batch_size": args.batch_size, "learning_rate": args.lr, "seed": seed, "device": args.device}

    def score(model: Any, options: dict[str, Any]) -> dict[str, Any]:
        out = pipeline.decode(model, tokenizer, eval_set, options, max_new_tokens=args.slots,
                              batch_size=args.eval_batch, device=args.device)  # fmt: skip
        scores = multi_reference_scores(out["texts"], refs)
        return {"bleu": scores["bleu"], "mode_consistency": scores["mode_consistency"],
                "ms_per_sample": out["ms_per_sample"], "example": out["texts"][0], "passes": out.get("passes")}  # fmt: skip

    # 1. teacher, until greedy exact match plateaus (kept in --cache-dir, so further calls on the same task reuse it)
    teacher, history, teacher_s, cache = train_teacher(
        num_modes, seed, args, tokenizer, train_set, lambda model: score(model, AR_ROWS["AR greedy (teacher)"])
    )
    teacher.eval()
    rows: dict[str, dict[str, Any]] = {}
    for name, options in AR_ROWS.items():
        rows[name] = {**score(teacher, options), "train_s": teacher_s, "budget": history[-1][0]}

    # 2. distillation: 4-best always (the 1-best rows and the coverage), the others when a row asks for them
    kinds = {"kd4"} | {NAR_METHODS[m]["data"] for m, _ in plan if NAR_METHODS[m]["data"] in DISTILLED}
    distilled, distil_s = distil_k_best(teacher, train_set, kinds, cache)
    covered = {kind: coverage(data, tokenizer, task) for kind, data in distilled.items()}

    # 3. NAR rows
    results: dict[str, dict[str, Any]] = {}
    for name, budget in plan:
        spec = NAR_METHODS[name]
        model = pipeline.fresh_copy(teacher)
        data = _dataset_for(spec["data"], train_set, oracle_set, distilled)
        train_s = pipeline.train(model, data, steps=budget, warmup_steps=budget // 10, **spec["train"], **hyper)
        results[f"{name} @{budget}"] = {**score(model, {"mode": "nar"}), "train_s": train_s, "budget": budget,
                                        "method": name, "distil_s": distil_s.get(spec["data"], 0.0)}  # fmt: skip
        if name in (DEFAULT_NAR, FIXED_K_DEFAULT) or spec.get("verify"):
            verify = VERIFY_ROW if name == FIXED_K_DEFAULT else f"{name} + nar_verify"
            results[f"{verify} @{budget}"] = {**score(model, {"mode": "nar_verify"}), "train_s": train_s,
                                              "budget": budget, "method": verify}  # fmt: skip
            print(f"  [M={num_modes} seed={seed}] {verify} @{budget}: "
                  f"{results[f'{verify} @{budget}']['passes']:.2f} passes per sequence", flush=True)
        print(f"  [M={num_modes} seed={seed}] {name} @{budget}: BLEU {results[f'{name} @{budget}']['bleu']:.1f}, "
              f"consistency {results[f'{name} @{budget}']['mode_consistency']:.1f}% ({train_s:.0f}s)", flush=True)  # fmt: skip
    for name, row in rows.items():
        results[name] = {**row, "method": name}
    modes_in_kbest = covered["kd4"]["modes_at_k"][-1]  # distinct valid modes in the 4-best lists
    meta = {"teacher_curve": history, "teacher_steps": history[-1][0], "teacher_s": teacher_s,
            "distil_s": distil_s, "mean_valid_modes_in_4best": modes_in_kbest, "coverage": covered,
            "example_refs": refs[0], "seconds": time.perf_counter() - started}  # fmt: skip
    return {"M": num_modes, "seed": seed, "results": results, "meta": meta}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± sd over seeds per (M, row)."""
    rows = []
    for num_modes in sorted({r["M"] for r in runs}):
        seed_runs = [r for r in runs if r["M"] == num_modes]
        names = list(dict.fromkeys(k for r in seed_runs for k in r["results"]))
        ar_greedy = mean_sd([r["results"]["AR greedy (teacher)"]["bleu"] for r in seed_runs])[0]
        for key in names:
            present = [r["results"][key] for r in seed_runs if key in r["results"]]
            row: dict[str, Any] = {"M": num_modes, "row": key, "method": present[0]["method"], "seeds": len(present),
                                   "budget": present[0]["budget"]}  # fmt: skip
            for metric in ("bleu", "mode_consistency", "ms_per_sample", "train_s"):
                mean, sd = mean_sd([p[metric] for p in present])
                row[metric], row[metric + "_sd"] = mean, sd
                row[metric + "_fmt"] = f"{mean:.1f} ± {sd:.1f}" if metric != "ms_per_sample" else f"{mean:.2f}"
            row["bleu_vs_ar_greedy"] = row["bleu"] / ar_greedy if ar_greedy else None
            if key.startswith("AR"):
                row["budget_fmt"] = "teacher " + "/".join(str(p["budget"]) for p in present)
            else:
                row["budget_fmt"] = str(row["budget"])
            rows.append(row)
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Mode consistency against speed-up over the AR teacher's beam 4, one panel per M, at the first NAR budget.

    One point per recipe (the ablation rows stay in the table); the AR rows are the teacher's.
    """
    from bang_nar.plotting import System, quality_vs_speedup_figure, save_figure, speedups

    budget = min(r["budget"] for r in rows if "@" in r["row"])  # NAR rows are named "<recipe> @<steps>"
    panels = []
    for m in sorted({r["M"] for r in rows}):
        chosen = {r["row"].replace(f" @{budget}", ""): r for r in rows if r["M"] == m
                  and (r["row"].startswith("AR") or r["row"].endswith(f"@{budget}"))
                  and not any(word in r["row"] for word in ("w/o", "+ gold", "min_loss", "glancing"))}
        baseline = next(name for name in chosen if name.startswith("AR beam"))
        speed = speedups({name: r["ms_per_sample"] for name, r in chosen.items()}, baseline)
        panels.append((f"M = {m} valid targets per source",
                       [System(name, speed[name], r["mode_consistency"]) for name, r in chosen.items()]))
    fig = quality_vs_speedup_figure(panels, quality_label="mode consistency % (mean over seeds)", baseline="AR beam 4",
                                    title=f"Controlled multi-modality: NAR recipes after {budget} steps vs the AR teacher",
                                    panel_size=(7.0, 5.0))
    return save_figure(fig, path, dpi=80)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="M = 4, one seed, few steps (smoke run).")
    parser.add_argument("--summarise", action="store_true", help="Only merge results/multimodality_M*.json.")
    parser.add_argument("--modes", default="4")
    parser.add_argument("--word-order", action="store_true",
                        help="The order-changing variant (modes differ in word order too; M in 2, 4, 8, 16); results "
                             "go to results/multimodality_order*.")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(NAR_METHODS), help="NAR rows (comma-separated names).")
    parser.add_argument("--budgets", default="600,1800", help="NAR step budgets; each row trains once per budget.")
    parser.add_argument("--plateau-methods", default="seq_kd (1-best),spmd (default: 4-best)",
                        help="Rows that also run the budgets beyond the first (the others run the first only).")
    parser.add_argument("--num-train", type=int, default=4000)
    parser.add_argument("--num-eval", type=int, default=200)
    parser.add_argument("--ar-max-steps", type=int, default=1800, help="Teacher budget (AR steps from scratch).")
    parser.add_argument("--ar-eval-every", type=int, default=300)
    parser.add_argument("--slots", type=int, default=MAX_TARGET_TOKENS)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-batch", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker process.")
    parser.add_argument("--jobs", type=int, default=2, help="(M, seed) tasks run in parallel processes.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="Keep each task's teacher and distilled data here and reuse them in later calls.")
    parser.add_argument("--tag", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.modes, args.seeds, args.budgets = "4", "0", "60"
        args.methods = "bang_nar (gold),seq_kd (1-best),spmd (default: 4-best)"
        args.num_train, args.num_eval, args.ar_max_steps, args.ar_eval_every = 500, 50, 60, 30
        args.tag = args.tag or "quick"
    return args


def _plan(args: argparse.Namespace) -> list[tuple[str, int]]:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in NAR_METHODS]
    if unknown:
        raise SystemExit(f"multimodality.py: unknown --methods {unknown}; choose from {list(NAR_METHODS)}.")
    budgets = [int(b) for b in args.budgets.split(",")]
    plateau = {m.strip() for m in args.plateau_methods.split(",")}
    return [(m, b) for b in budgets for m in methods if b == budgets[0] or m in plateau]


def _stem(args: argparse.Namespace) -> str:
    """Result file stem: the order-changing variant keeps its own files (its (M, seed) tasks are other data)."""
    return "multimodality_order" if args.word_order else "multimodality"


def _renamed(run: dict[str, Any]) -> dict[str, Any]:
    """A task file with its rows under today's names (`RENAMED_ROWS`; `name @budget` and `name + nar_verify` too)."""
    results = {}
    for key, value in run["results"].items():
        for old, new in RENAMED_ROWS.items():
            if key.startswith(old + " @") or key.startswith(old + " + "):
                key, value = new + key[len(old) :], {**value, "method": new + value["method"][len(old) :]}
        results[key] = value
    return {**run, "results": results}


def _merged_runs(folder: Path) -> list[dict[str, Any]]:
    """Every per-task file of `folder` (`M{M}_seed{s}[_tag].json`, written as each task finishes), merged per
    (M, seed): rows from several calls on the same task (e.g. `--tag ablations`) join its results."""
    merged: dict[tuple[int, int], dict[str, Any]] = {}
    for path in sorted(folder.glob("M*_seed*.json")):
        run = _renamed(json.loads(path.read_text(encoding="utf-8")))
        key = (run["M"], run["seed"])
        if key not in merged:
            merged[key] = run
        else:
            for row, value in run["results"].items():  # the first call's rows (e.g. its teacher's) win
                merged[key]["results"].setdefault(row, value)
            for part in ("coverage", "distil_s"):  # each call's distilled sets (timed where first computed)
                slot = merged[key]["meta"].setdefault(part, {})
                for kind, value in run["meta"].get(part, {}).items():
                    if value or kind not in slot:
                        slot[kind] = value
    return [merged[key] for key in sorted(merged)]


def _write_summary(args: argparse.Namespace) -> int:
    stem = _stem(args)
    runs = _merged_runs(args.out / f"{stem}_runs")
    if not runs:
        raise SystemExit("multimodality.py --summarise: no results/multimodality_runs/*.json yet; run with --modes first.")
    rows = summarise(runs)
    table = markdown_table(
        rows,
        [("M", "M"), ("row", "system"), ("budget_fmt", "steps"), ("bleu_fmt", "multi-ref BLEU-4"),
         ("bleu_vs_ar_greedy", "÷ AR greedy BLEU"), ("mode_consistency_fmt", "mode consistency %"),
         ("train_s_fmt", "train s"), ("seeds", "seeds")],
    )  # fmt: skip
    teacher = "; ".join(f"M={r['M']} seed {r['seed']}: {r['meta']['teacher_curve']}" for r in runs)
    kbest = ", ".join(f"M={r['M']} seed {r['seed']}: {r['meta']['mean_valid_modes_in_4best']:.2f}" for r in runs
                      if r["meta"].get("mean_valid_modes_in_4best") is not None)  # fmt: skip
    timing = ", ".join(f"M={r['M']} seed {r['seed']}: {r['meta']['seconds'] / 60:.0f} min" for r in runs)
    cover = "; ".join(
        f"M={r['M']} seed {r['seed']} {kind} ({DISTILLED[kind][0]}-beam, mass {DISTILLED[kind][2]}, min distance "
        f"{DISTILLED[kind][3]}): "
        f"{' / '.join(f'{m:.2f}' for m in c['modes_at_k'])} modes at k = 1..{len(c['modes_at_k'])}, mean list "
        f"{c['mean_k']:.2f}, {100 * c['valid_share']:.1f}% valid, distilled in {r['meta']['distil_s'].get(kind, 0):.0f} s"
        for r in runs for kind, c in r["meta"].get("coverage", {}).items()
    )  # fmt: skip
    text = (f"## Controlled multi-modality (mean ± sd over seeds)\n\n{table}\n\n"
            f"Teachers' greedy exact match on the eval sources, (step, %) every 300 steps: {teacher}.\n\n"
            f"Distinct valid modes among the teacher's 4-best lists (mean per source): {kbest}.\n\n"
            f"Wall time per (M, seed) task of the main calls: {timing}.\n"
            + (f"\nThe teacher's coverage (distinct valid modes among the first k targets of each list, mean per "
               f"source), list length, share of valid targets, distillation seconds: {cover}.\n" if cover else ""))  # fmt: skip
    print(text)
    (args.out / f"{stem}.md").write_text(text, encoding="utf-8")
    write_json(args.out / f"{stem}.json", {"benchmark": stem, "rows": rows, "runs": runs})
    print(f"wrote {display_path(plot(rows, args.out / f'{stem}.png'))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summarise:
        return _write_summary(args)
    set_threads(args.threads)
    pipeline.quiet_logs()
    info = machine_info(args.device)
    info["jobs"] = args.jobs
    plan = _plan(args)
    print(f"# multi-modality benchmark ({info['date_utc']}, {info['host_cpu']}, {args.threads} thread(s) x "
          f"{args.jobs} jobs, load {info['loadavg_start']})", flush=True)  # fmt: skip
    started = time.perf_counter()
    jobs = [(int(m), int(s)) for m in args.modes.split(",") for s in args.seeds.split(",")]
    runs = []
    # One process per (M, seed), `--jobs` at a time, one torch thread each: these models are too small to gain
    # from intra-op threads, and the cores are better spent on parallel tasks.
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_one, m, s, args, plan): (m, s) for m, s in jobs}
        for future in as_completed(futures):
            run = future.result()
            runs.append(run)
            # Each finished task is kept at once, so a long call that dies later loses nothing.
            write_json(args.out / f"{_stem(args)}_runs" / f"M{run['M']}_seed{run['seed']}{'_' + args.tag if args.tag else ''}.json", run)
            print(f"[M={run['M']} seed={run['seed']}] done in {run['meta']['seconds']:.0f}s "
                  f"(teacher {run['meta']['teacher_steps']} steps)", flush=True)  # fmt: skip
    runs.sort(key=lambda r: (r["M"], r["seed"]))
    total = time.perf_counter() - started
    info = finish_machine_info(info)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "cache_dir")} | {"dims": DIMS, "plan": plan}
    payload = {"benchmark": "multimodality", "machine": info, "settings": settings, "runs": runs,
               "total_seconds": round(total, 1)}  # fmt: skip
    for num_modes in sorted({r["M"] for r in runs}):
        name = f"{_stem(args)}_M{num_modes}" + (f"_{args.tag}" if args.tag else "")
        per_m = {**payload, "runs": [r for r in runs if r["M"] == num_modes]}
        print(f"wrote {display_path(write_json(args.out / f'{name}.json', per_m))}")
    rows = summarise(runs)
    print(markdown_table(rows, [("M", "M"), ("row", "system"), ("budget_fmt", "steps"), ("bleu_fmt", "BLEU-4"),
                                ("mode_consistency_fmt", "consistency %"), ("train_s_fmt", "train s")]))  # fmt: skip
    print_json_line({"benchmark": "multimodality", "total_seconds": round(total, 1),
                     "mode_consistency": {f"M{r['M']}/{r['row']}": round(r["mode_consistency"], 1) for r in rows}})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
