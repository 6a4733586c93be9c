"""Evaluate a model on pairs: BLEU-4, sentence BLEU, ROUGE, METEOR (with WordNet), distinct-n, repetition, latency.

Writes OUTPUT_DIR/results.json and results.md; one row per decoding mode; progress on stderr. Flags take dashes or
underscores (--output-dir, --output_dir).

    bang-nar evaluate --model out/spmd --data test.jsonl --modes nar ar nar_verify --output_dir out/eval
"""

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

from ._args import accept_both_spellings, non_negative_int, positive_int


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score generations (quality and ms/sample per mode)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="BANG model folder or Hub id")
    parser.add_argument("--data", required=True, help="pairs: Hub name, json/jsonl/csv/parquet, or source .txt")
    parser.add_argument("--target-file", default=None, help="parallel target .txt when not found by name")
    parser.add_argument("--split", default=None)
    parser.add_argument("--source-column", default="source")
    parser.add_argument("--target-column", default="target")
    parser.add_argument("--max-samples", type=positive_int, default=None)
    parser.add_argument(
        "--max-source-length",
        type=positive_int,
        default=None,
        help="truncate longer sources (counted and reported); without it they are refused",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["nar", "ar"],
        choices=["nar", "ar", "nar_verify", "semi_nar"],
        help="semi_nar decodes with the model's generation_config.block_size (else 4)",
    )
    parser.add_argument("--num-beams", type=positive_int, default=4, help="AR beam size")
    parser.add_argument("--length-penalty", type=float, default=1.2, help="AR length penalty")
    parser.add_argument("--max-new-tokens", type=positive_int, default=64, help="AR length limit")
    parser.add_argument(
        "--num-candidates", type=positive_int, default=1, help="NAR candidates rescored by the AR stream"
    )
    parser.add_argument(
        "--no-repeat-ngram-size", type=non_negative_int, default=0, help="NAR n-gram blocking during argmax"
    )
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument(
        "--update-card",
        action="store_true",
        help="merge the scores into MODEL/README.md (Hub EvalResults and the card's metrics table)",
    )
    accept_both_spellings(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bang_nar.evaluation import write_results

    from ._args import DataArguments, check_source_lengths, check_writable_dir, load_data, load_model_and_tokenizer

    check_writable_dir(args.output_dir, "--output-dir")  # before decoding: an unwritable folder must not cost the work
    data = load_data(
        DataArguments(
            data=args.data,
            target_file=args.target_file,
            split=args.split,
            source_column=args.source_column,
            target_column=args.target_column,
            max_samples=args.max_samples,
        )
    )
    model, tokenizer = load_model_and_tokenizer(args.model)
    check_source_lengths(list(data["source"]), tokenizer, model, args.max_source_length, args.data, unit="example")
    systems = {}
    for mode in args.modes:
        if mode == "ar":
            systems[f"ar (beam {args.num_beams})"] = {
                "mode": "ar",
                "num_beams": args.num_beams,
                "length_penalty": args.length_penalty,
                "max_new_tokens": args.max_new_tokens,
            }
        elif mode == "nar":
            systems["nar"] = {
                "mode": "nar",
                "num_candidates": args.num_candidates,
                "no_repeat_ngram_size": args.no_repeat_ngram_size,
            }
        else:
            systems[mode] = {"mode": mode}
    table = _evaluate_resumably(args, model, tokenizer, data, systems)
    json_path, md_path = write_results(table, args.output_dir, title=f"{args.model} on {args.data}")
    print(md_path.read_text())
    print(f"Wrote {json_path} and {md_path}")
    if args.update_card:
        from bang_nar.hub import describe_device, update_model_card_metrics

        card = update_model_card_metrics(
            args.model, table, args.data, split=args.split, systems=systems, device=describe_device(model.device)
        )
        print(f"Updated the model card {card}")
    return 0


def _evaluate_resumably(args: argparse.Namespace, model, tokenizer, data, systems: dict) -> dict:
    """`evaluate_model` one system (row) at a time; each finished row goes to OUTPUT_DIR/results.partial.json at
    once, keyed by the model, data and settings, so the same command after a kill skips the rows already done."""
    from bang_nar.pipeline import evaluate_model

    partial = Path(args.output_dir) / "results.partial.json"
    key = hashlib.sha256(
        json.dumps(
            [
                os.path.abspath(args.model),
                list(data["source"]),
                list(data["target"]),
                systems,
                args.max_source_length,
                args.batch_size,
            ],
            sort_keys=True,
        ).encode()
    ).hexdigest()
    saved = json.loads(partial.read_text()) if partial.is_file() else {}
    table = saved.get("rows", {}) if saved.get("key") == key else {}
    if table:
        print(f"Resuming {partial}: rows {sorted(table)} already scored.", file=sys.stderr)
    partial.parent.mkdir(parents=True, exist_ok=True)
    for name, options in systems.items():
        if name in table:
            continue
        row = evaluate_model(
            model,
            tokenizer,
            data,
            {name: options},
            batch_size=args.batch_size,
            max_source_length=args.max_source_length,
            show_progress=True,
        )[name]
        table[name] = {k: v for k, v in row.items() if k != "examples"}
        scratch = partial.with_suffix(".tmp")
        scratch.write_text(json.dumps({"key": key, "rows": table}))
        os.replace(scratch, partial)  # never a half-written file
    partial.unlink()
    return {name: table[name] for name in systems}
