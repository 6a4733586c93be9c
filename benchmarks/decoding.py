"""Decoding options of one trained BANG model: quality, latency and AR passes side by side.

Rows: AR greedy, AR beam 4, NAR, NAR + repeat suppression, NAR + no-repeat bigrams, NAR with 4 AR-rescored
candidates, and `nar_verify` (greedy-exact). Latency at batch 1 and at a larger batch, measured in the same run.
The model must have trained AR and NAR streams, e.g. the SPMD model of the QG demo:

    bang-nar demo --data du-qg-sample --output-dir demo-qg
    python benchmarks/decoding.py --model demo-qg/nar_spmd \
        --data ../shared/data/du2017_qg/src-test.head2000.txt --max-samples 300

Prints a Markdown table and one JSON line; writes `benchmarks/results/decoding.{json,md}`.
"""

import argparse
import json
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch
import transformers
from common import display_path  # run as `python benchmarks/decoding.py`, like the other benchmarks
from transformers import AutoTokenizer

from bang_nar import BangForConditionalGeneration
from bang_nar.data import load_pairs
from bang_nar.pipeline import evaluate_model

SYSTEMS = {
    "AR greedy": {"mode": "ar", "num_beams": 1, "do_sample": False},
    "AR beam 4": {"mode": "ar", "num_beams": 4, "length_penalty": 1.2},
    "NAR": {"mode": "nar"},
    "NAR + suppress_repeats": {"mode": "nar", "suppress_repeats": True},
    "NAR + no_repeat_ngram_size=2": {"mode": "nar", "no_repeat_ngram_size": 2},
    "NAR + 4 candidates (AR rescoring)": {"mode": "nar", "num_candidates": 4},
    "nar_verify (= AR greedy)": {"mode": "nar_verify"},
}


@torch.no_grad()
def batch1_latency(model, tokenizer, sources, options, max_new_tokens, repeats=1) -> float:
    """Median ms per sample at batch size 1 (what an interactive user waits)."""
    timings = []
    limit = model.config.max_position_embeddings
    for source in sources:
        encoded = tokenizer([source], return_tensors="pt", truncation=True, max_length=limit)
        kwargs = dict(options)
        if kwargs["mode"] == "ar":
            kwargs["max_new_tokens"] = max_new_tokens
        start = time.perf_counter()
        for _ in range(repeats):
            model.generate(**encoded, **kwargs)
        timings.append((time.perf_counter() - start) / repeats * 1000)
    return statistics.median(timings)


@torch.no_grad()
def ar_passes(model, tokenizer, sources, batch_size=32) -> tuple[float, float]:
    """Mean AR-stream passes per sequence of nar_verify, and mean tokens produced (greedy AR needs one per token)."""
    passes, tokens = [], []
    for i in range(0, len(sources), batch_size):
        encoded = tokenizer(sources[i : i + batch_size], return_tensors="pt", padding=True, truncation=True,
                            max_length=model.config.max_position_embeddings)
        out = model.generate(**encoded, mode="nar_verify", return_dict_in_generate=True)
        passes += out.ar_passes.tolist()
        tokens += out.sequences[:, 1:].ne(model.config.pad_token_id).sum(1).tolist()
    return statistics.mean(passes), statistics.mean(tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="BANG model folder with trained AR and NAR streams")
    parser.add_argument("--data", required=True, help="evaluation pairs (a source .txt with its parallel target)")
    parser.add_argument("--max-samples", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batch1-samples", type=int, default=50, help="sources timed one at a time")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="AR length limit")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "decoding")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = BangForConditionalGeneration.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    pairs = load_pairs(args.data)
    pairs = pairs.select(range(min(args.max_samples, len(pairs))))
    limit = model.config.max_position_embeddings
    # Sources longer than the model's positions are truncated (as in training), and the count is reported.
    too_long = sum(len(tokenizer(s)["input_ids"]) > limit for s in pairs["source"])
    systems = {name: dict(options, **({"max_new_tokens": args.max_new_tokens} if options["mode"] == "ar" else {}))
               for name, options in SYSTEMS.items()}
    rows = evaluate_model(model, tokenizer, pairs, systems, batch_size=args.batch_size, max_source_length=limit,
                          metrics=["corpus_bleu", "rouge", "repetition"])
    sources = list(pairs["source"])[: args.batch1_samples]
    for name, options in SYSTEMS.items():
        rows[name]["ms_per_sample_batch1"] = batch1_latency(model, tokenizer, sources, options, args.max_new_tokens)
    passes, tokens = ar_passes(model, tokenizer, list(pairs["source"]), args.batch_size)

    ar_batch1 = rows["AR greedy"]["ms_per_sample_batch1"]
    beam_batch1 = rows["AR beam 4"]["ms_per_sample_batch1"]
    lines = [
        f"| decoding | BLEU-4 | ROUGE-L | repetition % | ms/sample (batch {args.batch_size}) | ms/sample (batch 1) "
        "| speed-up vs AR greedy (batch 1) | vs AR beam 4 (batch 1) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        b1 = row["ms_per_sample_batch1"]
        lines.append(f"| {name} | {row['bleu']:.2f} | {row['rougeL']:.2f} | {row['repetition_rate']:.1f} | "
                     f"{row['ms_per_sample']:.2f} | {b1:.2f} | {ar_batch1 / b1:.1f}x | {beam_batch1 / b1:.1f}x |")
    lines.append("")
    lines.append(f"nar_verify: {passes:.2f} AR passes per sequence for {tokens:.2f} tokens (AR greedy: one pass per "
                 f"token), over {len(pairs)} sources.")
    table = "\n".join(lines)
    print(table)
    record = {
        "date": date.today().isoformat(), "model": display_path(args.model), "data": display_path(args.data), "samples": len(pairs),
        "sources_truncated": too_long, "threads": torch.get_num_threads(), "load_avg": os.getloadavg(),
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "transformers": transformers.__version__, "nar_verify_ar_passes": passes, "nar_verify_tokens": tokens,
        "rows": {n: {k: v for k, v in r.items() if k != "examples"} for n, r in rows.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(table + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
