"""Reconstructed BANG pretraining on CPU (issue 14): does it lower every stream's loss, and does it help fine-tuning?

Part A (`raw`): a tiny BANG pretrains with `BangPreTrainer` on shared raw text (Gigaword sample articles, word-level
vocabulary); the per-stream losses of the first and last logging windows are compared.

Part B (`controlled`): the controlled lexical task (`bang_nar.multimodality`). One tiny model pretrains on text of
a disjoint task draw: `--pretrain-text unpaired` (the sources and, shuffled separately, the targets: no source next
to its translation; its words are i.i.d., so span masking there can teach word frequencies and little else),
`paired` (each `source target` pair as one document, as in translation-language-model pretraining) or
`interleaved` (each source word followed by its translation: the lexicon as bigrams). Then the pretrained model and the same architecture from scratch (same
init seed) are fine-tuned with equal budgets (same steps, batch, learning rate): AR (decoded greedy and semi-NAR
k = 2, 4) and NAR (`bang_nar` preset). Multi-reference BLEU-4 on held-out sources.

    python benchmarks/pretraining.py --data-dir ../shared/data        # both parts, ~8-10 min on 1 CPU thread
    python benchmarks/pretraining.py --parts controlled --seeds 0,1
    python benchmarks/pretraining.py --parts controlled --pretrain-text interleaved --num-train 1000 \
        --pretrain-sentences 4000 --pretrain-steps 1000 --steps 300 --out pretraining_interleaved  # README numbers

Outputs: Markdown tables and one JSON line; `results/pretraining.json`.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import pipeline
from common import RESULTS_DIR, finish_machine_info, machine_info, markdown_table, print_json_line, set_threads, write_json

DIMS = {"d_model": 128, "layers": 2, "heads": 4, "ffn": 256}


def pretrain(model, chunks, collator, *, steps, batch_size, lr, seed, num_streams, logging_steps) -> tuple[list, float]:
    """`BangPreTrainer` for `steps`; returns the log history and wall seconds."""
    from transformers import PrinterCallback, TrainingArguments

    from bang_nar.pretraining import BangPreTrainer

    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=batch_size, max_steps=steps, learning_rate=lr,
            warmup_steps=steps // 10, lr_scheduler_type="linear", weight_decay=0.01, report_to=[],
            save_strategy="no", logging_steps=logging_steps, disable_tqdm=True, use_cpu=True, seed=seed,
            remove_unused_columns=False, dataloader_num_workers=0,
        )  # fmt: skip
        trainer = BangPreTrainer(model=model, args=args, train_dataset=chunks, data_collator=collator,
                                 num_streams=num_streams)
        trainer.remove_callback(PrinterCallback)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    model.eval()
    return trainer.state.log_history, seconds


def stream_windows(history: list[dict[str, Any]], num_streams: int, window: int) -> list[dict[str, Any]]:
    """Per stream: mean logged loss over the first and the last `window` logging steps."""
    logs = [h for h in history if "loss_stream_0" in h]
    rows = []
    for s in range(num_streams):
        values = [h[f"loss_stream_{s}"] for h in logs if f"loss_stream_{s}" in h]
        first, last = sum(values[:window]) / window, sum(values[-window:]) / window
        rows.append({"stream": s, "first": first, "last": last, "drop": first - last})
    return rows


def part_raw(args) -> dict[str, Any]:
    from bang_nar.multimodality import build_word_tokenizer
    from bang_nar.pretraining import BangForPreTraining
    from bang_nar.pretraining_data import SpanMaskingCollator, load_text_dataset, pack_documents

    path = Path(args.data_dir) / "gigaword_sample" / "train.article.txt"
    text = load_text_dataset(path).select(range(args.raw_documents))
    tokenizer = build_word_tokenizer(text["text"], max_vocab_size=args.raw_vocab)
    chunks = pack_documents(text, tokenizer, args.raw_chunk)
    collator = SpanMaskingCollator(tokenizer, span_block_size=args.raw_block, mask_ratio=args.raw_mask_ratio,
                                   generator=torch.Generator().manual_seed(0))
    num_streams = int(args.raw_block * args.raw_mask_ratio)
    torch.manual_seed(0)
    config = pipeline.bang_config(tokenizer, DIMS, max_positions=args.raw_chunk)
    config.num_streams = num_streams
    model = BangForPreTraining(config)
    history, seconds = pretrain(model, chunks, collator, steps=args.raw_steps, batch_size=args.batch_size,
                                lr=args.pretrain_lr, seed=0, num_streams=num_streams, logging_steps=10)
    rows = stream_windows(history, num_streams, window=3)
    print(f"\n## Part A: pretraining on {path.parent.name}/{path.name} ({args.raw_documents} documents, "
          f"{len(chunks)} chunks of {args.raw_chunk} tokens, vocab {len(tokenizer)}, n = {num_streams} streams, "
          f"{args.raw_steps} steps x batch {args.batch_size}, {seconds:.0f} s)\n")
    print(markdown_table(rows, [("stream", "stream"), ("first", "loss, first 3 logs"), ("last", "loss, last 3 logs"),
                                ("drop", "drop")], digits=3))  # fmt: skip
    return {"rows": rows, "seconds": seconds, "chunks": len(chunks), "vocab": len(tokenizer), "num_streams": num_streams}


def unpaired_corpus(num_modes: int, size: int, seed: int) -> list[str]:
    """Sources and targets of a disjoint task draw, each side shuffled on its own: text in the task's language
    without any source-translation pairing."""
    from bang_nar.multimodality import make_multimodality_task

    other = make_multimodality_task(num_modes, size, 0, seed)
    rng = random.Random(seed)
    sources, targets = list(other.train["source"]), list(other.train["target"])
    rng.shuffle(sources)
    rng.shuffle(targets)
    documents = sources + targets
    rng.shuffle(documents)
    return documents


def paired_corpus(num_modes: int, size: int, seed: int, interleaved: bool = False) -> list[str]:
    """Each pair of a disjoint task draw as one document: `source target` (text in which translations appear, as in
    translation-language-model pretraining) or, `interleaved`, each source word followed by its translation. No
    fine-tuning pair and no eval source is among them."""
    from bang_nar.multimodality import make_multimodality_task

    other = make_multimodality_task(num_modes, size, 0, seed)
    pairs = zip(other.train["source"], other.train["target"])
    if interleaved:
        return [" ".join(f"{s} {t}" for s, t in zip(source.split(), target.split())) for source, target in pairs]
    return [f"{source} {target}" for source, target in pairs]


def part_controlled(args, seed: int) -> dict[str, Any]:
    import datasets

    from bang_nar.data import tokenize_pairs
    from bang_nar.modeling_bang import BangForConditionalGeneration
    from bang_nar.multimodality import build_word_tokenizer, make_multimodality_task, multi_reference_scores
    from bang_nar.pretraining import BangForPreTraining
    from bang_nar.pretraining_data import SpanMaskingCollator, pack_documents

    task = make_multimodality_task(args.num_modes, args.num_train, args.num_eval, seed)
    tokenizer = build_word_tokenizer(task)
    train_set, _ = tokenize_pairs(task.train, tokenizer, 16, 16)
    eval_set, _ = tokenize_pairs(task.eval, tokenizer, 16, 16)
    # Disjoint draw: a different seed, and no eval source appears in it.
    draw = (args.num_modes, args.pretrain_sentences, 10_000 + seed)
    documents = {"unpaired": lambda: unpaired_corpus(*draw), "paired": lambda: paired_corpus(*draw),
                 "interleaved": lambda: paired_corpus(*draw, interleaved=True)}[args.pretrain_text]()
    # The source words of each document (a pair's target has as many words as its source).
    source_of = {"unpaired": lambda w: w, "paired": lambda w: w[: len(w) // 2], "interleaved": lambda w: w[::2]}
    eval_sources = {tuple(s.split()) for s in task.eval["source"]}
    documents = [d for d in documents if tuple(source_of[args.pretrain_text](d.split())) not in eval_sources]
    chunks = pack_documents(datasets.Dataset.from_dict({"text": documents}), tokenizer, 32)
    collator = SpanMaskingCollator(tokenizer, span_block_size=8, mask_ratio=0.5,
                                   generator=torch.Generator().manual_seed(seed))
    config = pipeline.bang_config(tokenizer, DIMS, max_positions=32)
    config.num_streams = 4
    torch.manual_seed(seed)
    scratch = BangForConditionalGeneration(config)
    pretrained = BangForPreTraining(config)
    pretrained.load_state_dict(scratch.state_dict())  # same init: the only difference is pretraining
    history, pretrain_s = pretrain(pretrained, chunks, collator, steps=args.pretrain_steps, batch_size=args.batch_size,
                                   lr=args.pretrain_lr, seed=seed, num_streams=4, logging_steps=10)
    pretrained.__class__ = BangForConditionalGeneration  # fine-tune as a plain BANG model
    hyper = {"batch_size": args.batch_size, "learning_rate": args.lr, "seed": seed, "device": "cpu"}
    results: dict[str, dict[str, Any]] = {}
    for start_name, start in (("scratch", scratch), ("pretrained", pretrained)):
        recipes = {
            "ar": ({"train_mode": "ar"}, {"ar greedy": {"mode": "ar", "num_beams": 1},
                                          "semi_nar k=2": {"mode": "semi_nar", "block_size": 2},
                                          "semi_nar k=4": {"mode": "semi_nar", "block_size": 4}}),
            "nar": ({"spmd_preset": "bang_nar"}, {"nar": {"mode": "nar"}}),
            # Semi-NAR fine-tuning (§5 item 5): the n-stream objective on pairs, n = k = 4, target_idx = t mod 4.
            "semi_nar k=4": ({"train_mode": "semi_nar", "semi_nar_block_size": 4},
                             {"semi_nar k=4": {"mode": "semi_nar", "block_size": 4},
                              "semi_nar k=2": {"mode": "semi_nar", "block_size": 2}, "nar": {"mode": "nar"}}),
        }
        for recipe in args.recipes.split(","):
            train_fields, decodes = recipes[recipe]
            model = pipeline.fresh_copy(start)
            train_s = pipeline.train(model, train_set, steps=args.steps, warmup_steps=args.steps // 10,
                                     **train_fields, **hyper)
            for decode_name, options in decodes.items():
                out = pipeline.decode(model, tokenizer, eval_set, options, max_new_tokens=14, batch_size=256,
                                      device="cpu")
                scores = multi_reference_scores(out["texts"], task.eval["references"])
                results[f"{start_name} | {recipe} fine-tune | {decode_name}"] = {
                    "start": start_name, "fine_tune": recipe, "decode": decode_name, "bleu": scores["bleu"],
                    "mode_consistency": scores["mode_consistency"], "ms_per_sample": out["ms_per_sample"],
                    "train_s": train_s,
                }
    streams = stream_windows(history, 4, window=2)
    return {"results": results, "pretrain_s": pretrain_s, "pretrain_streams": streams, "chunks": len(chunks)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="raw,controlled")
    parser.add_argument("--data-dir", default="../shared/data", help="Folder with gigaword_sample/ (relative to the "
                        "working directory, so result files hold no machine paths).")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--raw-documents", type=int, default=4000)
    parser.add_argument("--raw-vocab", type=int, default=5000)
    parser.add_argument("--raw-chunk", type=int, default=128)
    parser.add_argument("--raw-block", type=int, default=32)
    parser.add_argument("--raw-mask-ratio", type=float, default=0.125)
    parser.add_argument("--raw-steps", type=int, default=300)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--num-modes", type=int, default=1)
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-eval", type=int, default=200)
    parser.add_argument("--pretrain-sentences", type=int, default=4000)
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--pretrain-text", choices=["unpaired", "paired", "interleaved"], default="unpaired",
                        help="Part B pretraining text: 'unpaired' (sources and targets each shuffled on their own), "
                        "'paired' (each 'source target' pair of a disjoint draw as one document) or 'interleaved' "
                        "(each source word followed by its translation).")
    parser.add_argument("--steps", type=int, default=150, help="Fine-tuning steps of every row (equal budget).")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", default="pretraining", help="Result file name under results/ (without .json).")
    parser.add_argument("--recipes", default="ar,nar", help="Fine-tuning recipes: ar, nar, 'semi_nar k=4'.")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    set_threads(args.threads)
    pipeline.quiet_logs()
    info = machine_info("cpu")
    started = time.perf_counter()
    payload: dict[str, Any] = {"settings": vars(args) | {"dims": DIMS}}
    parts = args.parts.split(",")
    if "raw" in parts:
        payload["raw"] = part_raw(args)
    if "controlled" in parts:
        payload["controlled"] = {}
        for seed in [int(s) for s in args.seeds.split(",")]:
            run = part_controlled(args, seed)
            payload["controlled"][seed] = run
            print(f"\n## Part B, seed {seed}: M = {args.num_modes}, {args.num_train} train pairs; pretraining "
                  f"{args.pretrain_steps} steps on {run['chunks']} {args.pretrain_text} chunks ({run['pretrain_s']:.0f} s); "
                  f"every fine-tune {args.steps} steps x batch {args.batch_size}, lr {args.lr}\n")
            print(markdown_table(list(run["results"].values()), [
                ("start", "start"), ("fine_tune", "fine-tune"), ("decode", "decode"), ("bleu", "BLEU-4"),
                ("mode_consistency", "mode consistency %"), ("ms_per_sample", "ms/sample"), ("train_s", "train s")]))
            print("\nPretraining per-stream loss (first 2 logs -> last 2 logs): " + ", ".join(
                f"s{r['stream']} {r['first']:.2f}->{r['last']:.2f}" for r in run["pretrain_streams"]))
    payload["seconds"] = time.perf_counter() - started
    payload["machine"] = finish_machine_info(info)
    write_json(RESULTS_DIR / f"{args.out}.json", payload)
    print_json_line(payload)


if __name__ == "__main__":
    main()
