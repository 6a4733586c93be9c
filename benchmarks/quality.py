"""Real-data quality smoke test: Du 2017 QG and the Gigaword sample, AR vs NAR vs SPMD at equal budgets (issue 7).

On a CPU this trains tiny BANG models from scratch for minutes: the scores are a smoke test of the whole pipeline
(data -> AR teacher -> sequence KD -> NAR/SPMD training -> decoding -> metrics), NOT paper numbers. (The issue
measured a 13M-parameter HF BART trained 20 min from scratch on 2 CPU cores: BLEU-4 ~2.3 on this QG set, with
collapsed outputs.) `--full` is the GPU configuration: base size, BERT vocabulary, all data, many more steps.

Data are read from `../shared/data` (never copied into the repository):
- du2017_qg: train on `src/tgt-dev.txt` (10,570 pairs), evaluate on `src/tgt-test.head2000.txt`;
- gigaword_sample: train on `train.article/title.txt` (10,000), evaluate on `valid.*.filter.head500.txt` (not the
  standard 1,951-pair Gigaword test set).
Protocol as `pipeline.py`: stage 1 AR from scratch (teacher, common start), beam-4 distillation, stage 2 with equal
steps per method. Metrics: BLEU-4, ROUGE-L, METEOR (when NLTK's WordNet is installed), repetition rate, ms/sample.

    python benchmarks/quality.py --quick             # ~3-5 min smoke run on CPU
    python benchmarks/quality.py                     # default CPU smoke test (tiny model, trained 8k WordPiece)
    python benchmarks/quality.py --full --device cuda  # GPU: base size, BERT vocab, all data
    python benchmarks/quality.py --vocab bert        # the bundled 30,522-piece BERT vocabulary instead

Outputs: a Markdown table per dataset, one JSON line, `results/quality[_<tag>].json` + `.png`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import datasets
import torch

import pipeline
from common import (
    RESULTS_DIR,
    display_path,
    finish_machine_info,
    machine_info,
    markdown_table,
    print_json_line,
    set_threads,
    write_json,
)

REPO = Path(__file__).resolve().parents[1]
# The project's data live next to the repository (`../shared/data`); a device copy of the tree may hold `shared/`.
DATA_DIRS = (REPO.parent / "shared" / "data", REPO / "shared" / "data")
DATASETS = {
    # name: (train source, train target, eval source, eval target, max source tokens, max target tokens)
    "du2017_qg": ("du2017_qg/src-dev.txt", "du2017_qg/tgt-dev.txt", "du2017_qg/src-test.head2000.txt",
                  "du2017_qg/tgt-test.head2000.txt", 64, 32),
    "gigaword": ("gigaword_sample/train.article.txt", "gigaword_sample/train.title.txt",
                 "gigaword_sample/valid.article.filter.head500.txt", "gigaword_sample/valid.title.filter.head500.txt",
                 64, 24),
}  # fmt: skip
SIZES = {
    "tiny": {"d_model": 128, "layers": 2, "heads": 4, "ffn": 512},
    "small": {"d_model": 256, "layers": 3, "heads": 4, "ffn": 1024},
    "base": {"d_model": 768, "layers": 6, "heads": 12, "ffn": 3072},
}
DEFAULT_METHODS = ("ar greedy", "ar beam4", "nar bang_nar", "nar seq_kd", "nar spmd", "nar spmd_reconstruction",
                   "spmd + nar K=4 rescoring", "spmd + nar_verify")  # fmt: skip
DISCLAIMER = (
    "Tiny from-scratch models trained for minutes on a CPU give smoke-test numbers, not paper numbers "
    "(published BANG/SPMD results come from large-scale pre-trained models)."
)


def find_data_dir(given: Path | None) -> Path:
    for candidate in ([given] if given else list(DATA_DIRS)):
        if (candidate / "du2017_qg").is_dir():
            return candidate
    raise SystemExit(f"No shared data found in {[str(d) for d in ([given] if given else DATA_DIRS)]}; pass --data-dir.")


def read_pairs(data_dir: Path, source: str, target: str, limit: int | None) -> datasets.Dataset:
    def lines(path: str) -> list[str]:
        with open(data_dir / path, encoding="utf-8") as f:
            return [line.strip() for line in f][:limit]

    sources, targets = lines(source), lines(target)
    if len(sources) != len(targets):
        raise ValueError(f"{source} and {target} have different line counts.")
    return datasets.Dataset.from_dict({"source": sources, "target": targets})


def train_wordpiece(texts: list[str], vocab_size: int) -> Any:
    """A WordPiece tokenizer trained on `texts`, with BANG's special tokens and `$A [SEP]` post-processing.

    The ids differ between processes (the trainer breaks count ties in hash order): save the tokenizer with any
    model that another process will load."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    sep = tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A [SEP]", pair="$A [SEP] $B:1 [SEP]:1", special_tokens=[("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", eos_token="[SEP]", model_input_names=["input_ids", "attention_mask"],
    )  # fmt: skip


def run_dataset(name: str, args: argparse.Namespace, methods: list[str]) -> dict[str, Any]:
    from bang_nar import load_bang_tokenizer
    from bang_nar.data import tokenize_pairs
    from bang_nar.evaluation import compute_generation_metrics

    train_src, train_tgt, eval_src, eval_tgt, max_src, max_tgt = DATASETS[name]
    train_pairs = read_pairs(args.data_dir, train_src, train_tgt, args.train_limit)
    eval_pairs = read_pairs(args.data_dir, eval_src, eval_tgt, args.eval_limit)
    if args.vocab == "bert":
        tokenizer = load_bang_tokenizer()
    else:
        tokenizer = train_wordpiece(list(train_pairs["source"]) + list(train_pairs["target"]), args.vocab_size)
    train_set, train_report = tokenize_pairs(train_pairs, tokenizer, max_src, max_tgt)
    eval_set, _ = tokenize_pairs(eval_pairs, tokenizer, max_src, max_tgt)
    hyper = {"batch_size": args.batch_size, "learning_rate": args.lr, "seed": args.seed, "device": args.device}

    torch.manual_seed(args.seed)
    start = pipeline.BangForConditionalGeneration(pipeline.bang_config(tokenizer, SIZES[args.size], max_positions=128))
    params = sum(p.numel() for p in start.parameters())
    stage1_s = pipeline.train(start, train_set, steps=args.ar_steps, warmup_steps=args.ar_steps // 10,
                              train_mode="ar", **hyper)  # fmt: skip
    distilled, distil_s = pipeline.distil(start, train_set, max_new_tokens=max_tgt, batch_size=args.distil_batch,
                                          num_return_sequences=4)  # fmt: skip
    print(f"[{name}] {params / 1e6:.1f}M params, vocab {len(tokenizer)}: stage 1 {stage1_s:.0f}s, "
          f"distillation {distil_s:.0f}s", flush=True)  # fmt: skip

    trained: dict[str, tuple[Any, float]] = {}
    rows = []
    for method in methods:
        spec = pipeline.METHODS[method]
        model, train_s = pipeline.trained_model(method, trained, start, distilled, args.steps, **hyper)
        out = pipeline.decode(model, tokenizer, eval_set, spec["decode"], max_new_tokens=max_tgt,
                              batch_size=args.eval_batch, device=args.device)  # fmt: skip
        scores = compute_generation_metrics(
            out["texts"], list(eval_pairs["target"]), raw_predictions=out["tokens"],
            metrics=("corpus_bleu", "rouge", "meteor", "repetition"),
        )  # fmt: skip
        row = {"method": method, "bleu": scores["bleu"], "rougeL": scores["rougeL"], "meteor": scores.get("meteor"),
               "repetition_rate": scores["repetition_rate"], "ms_per_sample": out["ms_per_sample"], "train_s": train_s,
               "example": out["texts"][0]}  # fmt: skip
        rows.append(row)
        repetition = "n/a (empty outputs)" if row["repetition_rate"] is None else f"{row['repetition_rate']:.1f}%"
        print(f"[{name}] {method}: BLEU-4 {row['bleu']:.2f}, ROUGE-L {row['rougeL']:.2f}, "
              f"rep {repetition}, {row['ms_per_sample']:.1f} ms/sample", flush=True)  # fmt: skip
    meteor_note = scores.get("meteor_note")
    return {
        "dataset": name, "rows": rows, "params": params, "vocab_size": len(tokenizer), "stage1_s": stage1_s,
        "distil_s": distil_s, "num_train": len(train_set), "num_eval": len(eval_set),
        "truncation": train_report.to_dict(), "meteor_note": meteor_note, "example_reference": eval_pairs["target"][0],
        "example_source": eval_pairs["source"][0],
    }  # fmt: skip


def plot(results: list[dict[str, Any]], path: Path) -> Path:
    """BLEU-4 against speed-up over AR beam 4, one panel per dataset, one labelled point per system."""
    from bang_nar.plotting import System, quality_vs_speedup_figure, save_figure, speedups

    panels = []
    for result in results:
        rows = {r["method"]: r for r in result["rows"]}
        speed = speedups({name: r["ms_per_sample"] for name, r in rows.items()}, "ar beam4")
        panels.append((f"{result['dataset']} (smoke test)", [System(n, speed[n], r["bleu"]) for n, r in rows.items()]))
    fig = quality_vs_speedup_figure(panels, quality_label="BLEU-4", baseline="ar beam4",
                                    title="Tiny from-scratch BANG on CPU: smoke-test scores, not paper numbers")
    return save_figure(fig, path, dpi=90)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Few steps and examples: pipeline smoke run.")
    parser.add_argument("--full", action="store_true", help="GPU run: base size, BERT vocab, all data, long training.")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"From {list(pipeline.METHODS)}.")
    parser.add_argument("--size", choices=sorted(SIZES), default=None)
    parser.add_argument("--vocab", choices=("trained", "bert"), default=None,
                        help="'trained': a WordPiece vocabulary trained on the training pairs (default on CPU); "
                        "'bert': the bundled 30,522-piece BERT vocabulary (default with --full).")  # fmt: skip
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--train-limit", type=int, default=None, help="First N training pairs (default: all).")
    parser.add_argument("--eval-limit", type=int, default=None, help="First N evaluation pairs (default: all).")
    parser.add_argument("--ar-steps", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--eval-batch", type=int, default=None)
    parser.add_argument("--distil-batch", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: these small models gain little from more on a shared CPU).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", type=Path, default=None, help="Folder with du2017_qg/ and gigaword_sample/.")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--tag", default=None)
    args = parser.parse_args(argv)
    args.data_dir = find_data_dir(args.data_dir)
    if args.full:
        preset = {"size": "base", "vocab": "bert", "ar_steps": 3000, "steps": 1500, "batch_size": 64, "lr": 3e-4,
                  "eval_batch": 128, "distil_batch": 256}  # fmt: skip
    elif args.quick:
        preset = {"size": "tiny", "vocab": "trained", "ar_steps": 40, "steps": 20, "batch_size": 32, "lr": 1e-3,
                  "eval_batch": 100, "distil_batch": 128, "train_limit": 1000, "eval_limit": 100}  # fmt: skip
    else:
        preset = {"size": "tiny", "vocab": "trained", "ar_steps": 600, "steps": 300, "batch_size": 32, "lr": 1e-3,
                  "eval_batch": 100, "distil_batch": 128, "train_limit": 4000, "eval_limit": 500}  # fmt: skip
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.tag = args.tag or ("full" if args.full else "quick" if args.quick else None)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    pipeline.quiet_logs()
    info = machine_info(args.device)
    methods, missing = pipeline.available_methods([m.strip() for m in args.methods.split(",") if m.strip()])
    print(f"# quality smoke test ({info['date_utc']}, {info['host_cpu']}, {info['torch_threads']} threads, "
          f"device {args.device}, load {info['loadavg_start']})\n\n{DISCLAIMER}\n")  # fmt: skip
    if missing:
        print(f"(not in this modeling_bang.py yet, skipped: {', '.join(missing)})")
    started = time.perf_counter()
    results = [run_dataset(name, args, methods) for name in args.datasets.split(",")]
    info = finish_machine_info(info)
    for result in results:
        print(f"\n## {result['dataset']}: {result['num_train']} train / {result['num_eval']} eval pairs, "
              f"{result['params'] / 1e6:.1f}M params ({args.size}), vocab {result['vocab_size']} ({args.vocab}), "
              f"stage 1 {args.ar_steps} AR steps + {args.steps} steps per method, batch {args.batch_size}\n")  # fmt: skip
        print(markdown_table(result["rows"], [("method", "method"), ("bleu", "BLEU-4"), ("rougeL", "ROUGE-L"),
                                              ("meteor", "METEOR"), ("repetition_rate", "repetition %"),
                                              ("ms_per_sample", f"ms/sample (batch {args.eval_batch})"),
                                              ("train_s", "stage-2 train s")]))  # fmt: skip
        if result["meteor_note"]:
            print(f"\nMETEOR: {result['meteor_note']}")
        print(f"\nExample: source `{result['example_source'][:120]}`, reference `{result['example_reference']}`; "
              + "; ".join(f"{r['method']}: `{r['example']}`" for r in result["rows"][:5]))  # fmt: skip
    total = time.perf_counter() - started
    print(f"\n{DISCLAIMER} Total {total / 60:.1f} min.")
    payload = {"benchmark": "quality", "disclaimer": DISCLAIMER, "machine": info,
               "settings": {k: display_path(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"} | {"dims": SIZES[args.size],
               "methods": methods, "skipped_methods": missing}, "results": results, "total_seconds": round(total, 1)}  # fmt: skip
    name = "quality" + (f"_{args.tag}" if args.tag else "")
    json_path = write_json(args.out / f"{name}.json", payload)
    png_path = plot(results, args.out / f"{name}.png")
    print(f"wrote {display_path(json_path)} and {display_path(png_path)}")
    print_json_line({
        "benchmark": "quality", "smoke_test": not args.full, "machine": {k: info[k] for k in ("date_utc", "host_cpu",
        "torch_threads", "device", "torch", "transformers", "loadavg_start", "loadavg_end")},
        "total_seconds": round(total, 1),
        "bleu": {f"{r['dataset']}/{row['method']}": round(row["bleu"], 2) for r in results for row in r["rows"]},
    })  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
