"""`bang-nar demo`: the whole method end to end on a CPU in a few minutes, with nothing downloaded.

1. train a tiny BANG model in AR mode (the teacher; the same weights hold both streams);
2. distil: AR-stream beam search (beam 16, length penalty 1.2) over the training sources, keeping per source the
   hypotheses that hold 95% of the beam's probability, less slot-wise mixes and near-copies (k from the data with
   distinct modes: `bang-nar distill`'s default);
3. fine-tune NAR from the teacher's weights with the `bang_nar` preset (gold targets, BANG's own recipe), with
   sequence KD on the 1-best (`seq_kd`, `kd_top_k=1`, the usual remedy) and with the default `spmd` preset (the
   candidate of the k-best the student already follows, token KD from the AR stream, self-paced weights, AR loss);
4. evaluate AR (greedy, beam 4) and the NAR models: quality and ms/sample; print a table, save JSON/Markdown/PNG.

The default task is the order-changing variant of the controlled multi-modality task (`bang_nar.multimodality`,
`word_order=True`) with M = 8: each source has 8 valid targets that differ in wording and in word order, the
situation in which NAR models mix modes. 1-best distillation keeps the teacher's own spread over the modes; the
k-best lists (k from the data, here about M) let SPMD commit to one. `word_order=False` gives the lexical task.
`data="du-qg-sample"` runs the same pipeline on real text (a bundled Du 2017 QG sample): tiny from-scratch models
trained for minutes give smoke-test numbers there, not paper numbers.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .evaluation import write_results
from .hub import update_model_card_metrics
from .pipeline import build_model, evaluate_model, prepare_dataset, train_model

logger = logging.getLogger(__name__)

SPMD_RECONSTRUCTION_NOTE = (
    "SPMD is our reconstruction of Qi et al. 2022 from the paper's abstract (docs: README, section SPMD)."
)


@dataclass
class DemoSettings:
    """Budgets of the demo; `quick()` shrinks everything for tests and smoke runs."""

    num_modes: int = 8
    word_order: bool = True  # the order-changing variant (issue 21); False: modes differ in wording only
    num_train: int = 4000
    num_eval: int = 300
    size: str = "tiny"
    ar_steps: int = (
        1200  # the M = 4 teacher reaches 100% greedy exact match at ~900 steps (benchmarks/multimodality.py)
    )
    nar_steps: int = 600
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0

    @classmethod
    def quick(cls, **overrides: Any) -> DemoSettings:
        values = dict(num_train=256, num_eval=32, ar_steps=12, nar_steps=12, batch_size=16)
        values.update(overrides)
        return cls(**values)


def _load_task(data: str, settings: DemoSettings):
    """(train pairs, eval pairs, tokenizer, max source/target length) for the demo's data choice."""
    if data == "multimodality":
        from .multimodality import build_word_tokenizer, make_multimodality_task

        task = make_multimodality_task(settings.num_modes, settings.num_train, settings.num_eval, seed=settings.seed,
                                       word_order=settings.word_order)  # fmt: skip
        return task.train, task.eval, build_word_tokenizer(task), 16, 16
    if data == "du-qg-sample":
        from .data import load_du_qg_sample
        from .multimodality import build_word_tokenizer

        sample = load_du_qg_sample()
        train, evaluation = sample["train"], sample["eval"]
        if settings.num_train < len(train):
            train = train.select(range(settings.num_train))
        if settings.num_eval < len(evaluation):
            evaluation = evaluation.select(range(settings.num_eval))
        # A small word vocabulary from the training text learns in minutes; BERT's 30,522 pieces do not.
        tokenizer = build_word_tokenizer(list(train["source"]) + list(train["target"]), max_vocab_size=8000)
        return train, evaluation, tokenizer, 128, 32
    raise ValueError(f"Unknown demo data {data!r}; choose 'multimodality' or 'du-qg-sample'.")


def _training_args(output_dir: Path, settings: DemoSettings, **overrides: Any):
    from .trainer import SPMDTrainingArguments

    values: dict[str, Any] = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        warmup_steps=max(1, (overrides.get("max_steps") or settings.nar_steps) // 20),
        weight_decay=0.01,
        max_grad_norm=1.0,
        logging_steps=50,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        seed=settings.seed,
        data_seed=settings.seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    values.update(overrides)
    return SPMDTrainingArguments(**values)


SUMMARY_COLUMNS = {
    "bleu": "BLEU-4",
    "mode_consistency": "mode consistency %",
    "rougeL": "ROUGE-L",
    "repetition_rate": "repetition %",
    "ms_per_sample": "ms/sample",
}


def summary_table(results: dict[str, dict[str, Any]], title: str) -> str:
    """The compact Markdown table the demo prints (the full one is in results.md)."""
    columns = [c for c in SUMMARY_COLUMNS if any(r.get(c) is not None for r in results.values())]
    fastest_ar = min((r["ms_per_sample"] for n, r in results.items() if n.startswith("AR beam")), default=None)
    lines = [
        f"## {title}",
        "",
        "| system | " + " | ".join(SUMMARY_COLUMNS[c] for c in columns) + " | speed-up vs AR beam 4 |",
        "|---|" + "---:|" * (len(columns) + 1),
    ]
    for name, row in results.items():
        cells = ["n/a" if row.get(c) is None else f"{row[c]:.1f}" for c in columns]
        speedup = f"{fastest_ar / row['ms_per_sample']:.1f}x" if fastest_ar else "n/a"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {speedup} |")
    return "\n".join(lines)


def plot_results(results: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """Quality (mode consistency when every row has it, else BLEU-4) against speed-up over AR beam 4, one point each."""
    from .plotting import System, quality_vs_speedup_figure, save_figure, speedups

    key, label = (
        ("mode_consistency", "mode consistency %")
        if all(r.get("mode_consistency") is not None for r in results.values())
        else ("bleu", "BLEU-4")
    )
    baseline = next((name for name in results if name.startswith("AR beam")), next(iter(results)))
    speed = speedups({name: row["ms_per_sample"] for name, row in results.items()}, baseline)
    systems = [System(name, speed[name], row[key]) for name, row in results.items()]
    fig = quality_vs_speedup_figure([(title, systems)], quality_label=label, baseline=baseline)
    return save_figure(fig, path, dpi=110)


def run_demo(
    output_dir: str | Path = "bang-nar-demo",
    *,
    data: str = "multimodality",
    settings: DemoSettings | None = None,
    threads: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the demo pipeline; returns the results rows (also written to `output_dir/results.{json,md,png}`)."""
    from .trainer import distill_dataset

    settings = settings or DemoSettings()
    if threads:
        torch.set_num_threads(threads)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str, began: float) -> None:
        timings[name] = round(time.perf_counter() - began, 1)
        print(f"[demo] {name}: {timings[name]:.0f} s", flush=True)

    t = time.perf_counter()
    train_pairs, eval_pairs, tokenizer, max_source, max_target = _load_task(data, settings)
    train = prepare_dataset(train_pairs, tokenizer, max_source, max_target)
    card = {"dataset": data, "num_modes": settings.num_modes if data == "multimodality" else None}
    if data == "multimodality":
        card["word_order"] = settings.word_order
    step("data", t)

    t = time.perf_counter()
    teacher = build_model(
        tokenizer=tokenizer,
        size=settings.size,
        seed=settings.seed,
        max_position_embeddings=max(max_source, max_target) + 2,
    )
    train_model(
        teacher,
        tokenizer,
        train,
        _training_args(
            output_dir / "ar_teacher", settings, train_mode="ar", max_steps=settings.ar_steps, spmd_preset="bang_nar"
        ),
        card_values=card,
    )
    step("train AR teacher", t)

    t = time.perf_counter()
    distilled = distill_dataset(  # the defaults of `bang-nar distill`: beam 16, k from the data, distinct modes
        teacher,
        train,
        output_dir / "distilled",
        length_penalty=1.2,
        max_new_tokens=max_target,
        batch_size=128,
        teacher_name="demo AR teacher",
        resume=False,
    )
    step("distil (AR beam 16, k from the data, distinct modes)", t)

    students = {}
    recipes = {  # folder: (dataset, SPMDTrainingArguments fields)
        "bang_nar": (train, {"spmd_preset": "bang_nar"}),
        "seq_kd_1best": (distilled, {"spmd_preset": "seq_kd", "kd_top_k": 1}),
        "spmd": (distilled, {"spmd_preset": "spmd"}),
    }
    for name, (dataset, fields) in recipes.items():
        t = time.perf_counter()
        student = build_model(output_dir / "ar_teacher")
        train_model(
            student,
            tokenizer,
            dataset,
            _training_args(
                output_dir / f"nar_{name}", settings, train_mode="nar", max_steps=settings.nar_steps, **fields
            ),
            card_values=card,
        )
        students[name] = student
        step(f"train NAR ({name})", t)

    t = time.perf_counter()
    evaluations = [
        (
            "ar_teacher",
            teacher,
            {
                "AR greedy": {"mode": "ar", "num_beams": 1, "do_sample": False, "max_new_tokens": max_target},
                "AR beam 4": {"mode": "ar", "num_beams": 4, "length_penalty": 1.2, "max_new_tokens": max_target},
            },
        ),
        ("nar_bang_nar", students["bang_nar"], {"NAR (BANG recipe)": {"mode": "nar"}}),
        ("nar_seq_kd_1best", students["seq_kd_1best"], {"NAR (seq-KD, 1-best)": {"mode": "nar"}}),
        ("nar_spmd", students["spmd"], {"NAR (SPMD)": {"mode": "nar"}, "SPMD + nar_verify": {"mode": "nar_verify"}}),
    ]
    results: dict[str, dict[str, Any]] = {}
    for folder, model, systems in evaluations:
        rows = evaluate_model(model, tokenizer, eval_pairs, systems)
        results.update(rows)
        # Each model's card gets its own scores (EvalResults in the metadata, table in the text).
        table = {name: {k: v for k, v in row.items() if k != "examples"} for name, row in rows.items()}
        update_model_card_metrics(output_dir / folder, table, f"bang-nar {data}", split="eval", systems=systems)
    step("evaluate", t)

    total = time.perf_counter() - started
    title = f"bang-nar demo: {data}" + (
        f" (M={settings.num_modes} valid targets per source{', word order' if settings.word_order else ''})"
        if data == "multimodality"
        else ""
    )
    _, md_path = write_results(
        {k: {m: v for m, v in r.items() if m != "examples"} for k, r in results.items()},
        output_dir,
        name="results",
        title=title,
    )
    plot_path = plot_results(results, output_dir / "results.png", title)
    (output_dir / "timings.json").write_text(json.dumps({**timings, "total_s": round(total, 1)}, indent=2) + "\n")
    print()
    print(summary_table(results, title))
    print(SPMD_RECONSTRUCTION_NOTE)
    if data != "multimodality":
        print("Real-text scores of a tiny model trained from scratch for minutes are a smoke test, not paper numbers.")
    print(f"\nTotal {total / 60:.1f} min. Table: {md_path}  Plot: {plot_path}")
    return results


__all__ = ["DemoSettings", "plot_results", "run_demo", "summary_table"]
