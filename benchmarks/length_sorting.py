"""Length-sorted batching (issue 22): CPU seconds of `bang-nar generate` / `evaluate` (`pipeline.generate_texts`) and
`bang-nar distill` (`distill_dataset`) with batches as before and with `bang_nar.data.length_sorted_batches`, on a
real file (default: the bundled Du 2017 QG sample), same model, same outputs (checked).

    python benchmarks/length_sorting.py --model out/ar            # any BANG checkpoint folder

"Before" is each path's old batching: generate/evaluate sorted by character count, distillation took the rows in
file order. Times are the process's CPU time (steady on a shared machine), one thread; generate runs A B B A and
reports each one's faster run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import datasets
import torch

from common import print_json_line, set_threads


def _in_order(lengths: Any, batch_size: int) -> list[list[int]]:
    return [list(range(i, min(i + batch_size, len(lengths)))) for i in range(0, len(lengths), batch_size)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default=None, help="jsonl with source/target (default: the Du QG sample, train).")
    parser.add_argument("--num", type=int, default=512, help="Rows used.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mode", default="nar")
    parser.add_argument("--max-source-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    from bang_nar import pipeline as pipeline_module
    from bang_nar.cli._args import load_model_and_tokenizer
    from bang_nar.data import load_du_qg_sample, load_pairs
    from bang_nar.trainer import sequence_kd

    model, tokenizer = load_model_and_tokenizer(args.model)
    model.eval()
    pairs = load_pairs(args.data) if args.data else load_du_qg_sample("train")
    pairs = pairs.select(range(min(args.num, len(pairs))))
    sources = list(pairs["source"])
    sorted_batches = pipeline_module.length_sorted_batches
    by_chars = lambda lengths, size: sorted_batches([len(s) for s in sources], size)  # noqa: E731 (the old key)
    rows = {}
    outputs = {}
    pipeline_module.generate_texts(model, tokenizer, sources[: args.batch_size], args.mode,
                                   max_source_length=args.max_source_length)  # warm-up, untimed
    variants = (("generate: by characters (before)", by_chars), ("generate: by tokens", sorted_batches))
    for name, batching in variants + variants[::-1]:  # A B B A: neither order gets the warmer caches
        pipeline_module.length_sorted_batches = batching
        start = time.process_time()
        outputs[name], _, _ = pipeline_module.generate_texts(model, tokenizer, sources, args.mode,
                                                             batch_size=args.batch_size,
                                                             max_source_length=args.max_source_length)  # fmt: skip
        rows[name] = min(rows.get(name, float("inf")), time.process_time() - start)
    pipeline_module.length_sorted_batches = sorted_batches
    ids = tokenizer(sources, truncation=True, max_length=args.max_source_length)["input_ids"]
    dataset = datasets.Dataset.from_dict({"input_ids": ids})
    for name, batching in (("distill: file order (before)", _in_order), ("distill: length-sorted", sorted_batches)):
        sequence_kd.length_sorted_batches = batching
        with tempfile.TemporaryDirectory() as tmp:
            start = time.process_time()
            result = sequence_kd.distill_dataset(model, dataset, tmp, batch_size=args.batch_size, max_new_tokens=24,
                                                 show_progress=False)  # fmt: skip
            rows[name] = time.process_time() - start
            outputs[name] = list(result["kd_labels"])
    sequence_kd.length_sorted_batches = sorted_batches
    same = {"generate": outputs["generate: by characters (before)"] == outputs["generate: by tokens"],
            "distill": outputs["distill: file order (before)"] == outputs["distill: length-sorted"]}  # fmt: skip
    print(f"| path ({len(sources)} rows, batch {args.batch_size}) | CPU s |\n|---|---|")
    for name, seconds in rows.items():
        print(f"| {name} | {seconds:.1f} |")
    print(f"same outputs: {same}")
    print_json_line({"benchmark": "length_sorting", "rows": len(sources), "batch_size": args.batch_size,
                     "cpu_s": {k: round(v, 2) for k, v in rows.items()}, "same_outputs": same,
                     "torch_threads": torch.get_num_threads()})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
