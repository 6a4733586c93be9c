"""Reconstructed BANG pretraining on CPU (issue 14): does it lower every stream's loss, and does it help fine-tuning?

Part A (`raw`): a tiny BANG pretrains with `BangPreTrainer` on shared raw text (Gigaword sample articles, word-level
vocabulary); the per-stream losses of the first and last logging windows are compared.

Part B (`controlled`): the controlled lexical task (`bang_nar.multimodality`). A tiny model pretrains once per
`--positions` choice (document positions, the hooks' reading, and/or 1..T) on text of a disjoint task draw:
`--pretrain-text unpaired` (the sources and, shuffled separately, the targets), `paired` (each `source target` pair
as one document, as in translation-language-model pretraining) or `interleaved` (each source word followed by its
translation). Then every start (scratch with the seed's init; each pretrained model) is fine-tuned with every seed
and equal budgets (same steps, batch, learning rate): AR (decoded greedy and semi-NAR k = 4) and NAR (`bang_nar`
preset). Exact match against the valid targets and multi-reference BLEU-4 on held-out sources, mean ± sd over seeds.

Part C (`qg`): Du 2017 QG. The tiny model pretrains on the raw paragraphs of the training articles (the SQuAD 1.1
dev paragraphs; the test articles are disjoint), then it and the same architecture from scratch are fine-tuned AR
and NAR on the 10,570 training pairs with equal budgets; BLEU-4 and ROUGE-L on the first 300 test pairs.

    python benchmarks/pretraining.py --parts controlled --pretrain-text interleaved --num-train 1000 \
        --pretrain-steps 1500 --pretrain-lr 2e-3 --steps 300 --seeds 0,1,2,3,4 --positions document \
        --out pretraining_controlled_mlm
    python benchmarks/pretraining.py --parts qg --qg-pretrain-steps 2000 --pretrain-lr 2e-3 --qg-steps 600 \
        --seeds 0 --cache-dir .pretrain-cache --out pretraining_qg_mlm_s0    # then --seeds 1 / 2 in parallel
    python benchmarks/pretraining.py --parts raw                        # part A

Part D (`collapse`): why the encoder MLM term. The spread of the encoder's output across 32 fixed sources, every 25
steps, while pretraining on SQuAD paragraphs with the released criterion only (learning rates 2e-3, 5e-4, 1e-4; with
every span token left visible in the source; with the encoder held for 50 steps) and with the encoder MLM term, and,
for reference, during AR fine-tuning on QG pairs:

    python benchmarks/pretraining.py --parts collapse --out pretraining_collapse

Parts A-C pretrain with the encoder MLM term (`--encoder-mlm-weight`, default 1; 0: the released criterion only).

Outputs: Markdown tables and one JSON line; `results/<--out>.json`.
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
from common import (RESULTS_DIR, display_path, finish_machine_info, machine_info, markdown_table, mean_sd,
                    print_json_line, set_threads, write_json)

DIMS = {"d_model": 128, "layers": 2, "heads": 4, "ffn": 256}


def pretrain(model, chunks, collator, *, steps, batch_size, lr, seed, num_streams, logging_steps,
             callbacks=(), freeze_encoder_steps=0, encoder_mlm_weight=1.0) -> tuple[list, float]:  # fmt: skip
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
                                 num_streams=num_streams, callbacks=list(callbacks),
                                 freeze_encoder_steps=freeze_encoder_steps, encoder_mlm_weight=encoder_mlm_weight)
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


def seed_rows(runs: dict[str, list[dict[str, Any]]], metrics: tuple[str, ...], digits: int) -> list[dict[str, Any]]:
    """One row per run key (start, fine-tune, decode): each metric's mean over seeds, its sd, and `<metric>_fmt`
    ("mean ± sd") for the tables."""
    rows = []
    for seed_runs in runs.values():
        row = {k: seed_runs[0][k] for k in ("start", "fine_tune", "decode") if k in seed_runs[0]}
        row["seeds"] = len(seed_runs)
        for metric in metrics:
            mean, sd = mean_sd([r[metric] for r in seed_runs])
            row[metric], row[metric + "_sd"], row[metric + "_fmt"] = mean, sd, f"{mean:.{digits}f} ± {sd:.{digits}f}"
        rows.append(row)
    return rows


@torch.no_grad()
def encoder_spread(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> float:
    """Std of the encoder's output across the sources (mean over positions and features), dropout off; about 0.6 at
    init, near 0 once the encoder has collapsed to a constant. `model`'s train/eval mode is restored."""
    was_training = model.training
    states = model.eval().get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    model.train(was_training)
    return states.std(0).mean().item()


def encoder_use(model, chunks, collator, num_streams: int, size: int = 64) -> dict[str, float]:
    """Does the decoder read the encoder, on `size` chunks? `gap`: `bang_nar.pretraining.encoder_gap` (pretraining
    loss with another chunk's source minus with its own; 0 = ignored). `spread`: `encoder_spread` over the chunks."""
    from bang_nar.pretraining import BangForPreTraining, encoder_gap

    probe = BangForPreTraining(model.config)
    probe.load_state_dict(model.state_dict())
    batch = collator([chunks[i] for i in range(min(size, len(chunks)))])
    gap = encoder_gap(probe, batch, num_streams=num_streams).item()
    return {"gap": gap, "spread": encoder_spread(probe, batch["input_ids"], batch["attention_mask"])}


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
    probe = SpanMaskingCollator(tokenizer, span_block_size=args.raw_block, mask_ratio=args.raw_mask_ratio,
                                generator=torch.Generator().manual_seed(1))
    at_init = encoder_use(model, chunks, probe, num_streams)
    history, seconds = pretrain(model, chunks, collator, steps=args.raw_steps, batch_size=args.batch_size,
                                lr=args.pretrain_lr, seed=0, num_streams=num_streams, logging_steps=10,
                                encoder_mlm_weight=args.encoder_mlm_weight)
    rows = stream_windows(history, num_streams, window=3)
    use = encoder_use(model, chunks, probe, num_streams)
    print(f"\n## Part A: pretraining on {path.parent.name}/{path.name} ({args.raw_documents} documents, "
          f"{len(chunks)} chunks of {args.raw_chunk} tokens, vocab {len(tokenizer)}, n = {num_streams} streams, "
          f"{args.raw_steps} steps x batch {args.batch_size}, {seconds:.0f} s)\n")
    print(markdown_table(rows, [("stream", "stream"), ("first", "loss, first 3 logs"), ("last", "loss, last 3 logs"),
                                ("drop", "drop")], digits=3))  # fmt: skip
    print(f"Encoder use: {_encoder_use_line(use)} (at init: {_encoder_use_line(at_init)})")
    return {"rows": rows, "seconds": seconds, "chunks": len(chunks), "vocab": len(tokenizer), "num_streams": num_streams,
            "encoder_use": use, "encoder_use_at_init": at_init}


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


def part_controlled(args) -> dict[str, Any]:
    """Pretrain once per position choice, then fine-tune each start with every seed (scratch: that seed's init)."""
    import datasets

    from bang_nar.data import tokenize_pairs
    from bang_nar.modeling_bang import BangForConditionalGeneration
    from bang_nar.multimodality import build_word_tokenizer, make_multimodality_task, multi_reference_scores
    from bang_nar.pretraining import BangForPreTraining
    from bang_nar.pretraining_data import SpanMaskingCollator, pack_documents

    task = make_multimodality_task(args.num_modes, args.num_train, args.num_eval, args.task_seed)
    tokenizer = build_word_tokenizer(task)
    train_set, _ = tokenize_pairs(task.train, tokenizer, 16, 16)
    eval_set, _ = tokenize_pairs(task.eval, tokenizer, 16, 16)
    # Disjoint draw: a different seed, and no eval source appears in it.
    draw = (args.num_modes, args.pretrain_sentences, 10_000 + args.task_seed)
    documents = {"unpaired": lambda: unpaired_corpus(*draw), "paired": lambda: paired_corpus(*draw),
                 "interleaved": lambda: paired_corpus(*draw, interleaved=True)}[args.pretrain_text]()
    # The source words of each document (a pair's target has as many words as its source).
    source_of = {"unpaired": lambda w: w, "paired": lambda w: w[: len(w) // 2], "interleaved": lambda w: w[::2]}
    eval_sources = {tuple(s.split()) for s in task.eval["source"]}
    documents = [d for d in documents if tuple(source_of[args.pretrain_text](d.split())) not in eval_sources]
    chunks = pack_documents(datasets.Dataset.from_dict({"text": documents}), tokenizer, 32)
    config = pipeline.bang_config(tokenizer, DIMS, max_positions=32)
    config.num_streams = 4

    def init(seed: int) -> BangForConditionalGeneration:
        torch.manual_seed(seed)
        return BangForConditionalGeneration(config)

    starts: dict[str, Any] = {}
    pretraining: dict[str, Any] = {}
    for positions in filter(None, args.positions.split(",")):  # '' = scratch rows only
        model = BangForPreTraining(config)
        model.load_state_dict(init(args.pretrain_seed).state_dict())  # scratch seed `pretrain_seed` + pretraining

        def collator(seed: int) -> SpanMaskingCollator:
            return SpanMaskingCollator(tokenizer, span_block_size=8, mask_ratio=0.5, document_positions=positions ==
                                       "document", generator=torch.Generator().manual_seed(seed))

        at_init = encoder_use(model, chunks, collator(1), 4)
        history, seconds = pretrain(model, chunks, collator(args.pretrain_seed), steps=args.pretrain_steps,
                                    batch_size=args.batch_size, lr=args.pretrain_lr, seed=args.pretrain_seed,
                                    num_streams=4, logging_steps=10, freeze_encoder_steps=args.freeze_encoder_steps,
                                    encoder_mlm_weight=args.encoder_mlm_weight)  # fmt: skip
        pretraining[positions] = {"seconds": seconds, "streams": stream_windows(history, 4, window=3),
                                  "encoder_use": encoder_use(model, chunks, collator(1), 4),
                                  "encoder_use_at_init": at_init}  # fmt: skip
        model.__class__ = BangForConditionalGeneration  # fine-tune as a plain BANG model
        starts[f"pretrained ({positions} positions)"] = model

    recipes = {
        "ar": ({"train_mode": "ar"}, {"ar greedy": {"mode": "ar", "num_beams": 1},
                                      "semi_nar k=4": {"mode": "semi_nar", "block_size": 4}}),
        "nar": ({"spmd_preset": "bang_nar"}, {"nar": {"mode": "nar"}}),
        # Semi-NAR fine-tuning (docs/pretraining.md): the n-stream objective on pairs, n = k = 4, target_idx = t mod 4.
        "semi_nar k=4": ({"train_mode": "semi_nar", "semi_nar_block_size": 4},
                         {"semi_nar k=4": {"mode": "semi_nar", "block_size": 4}}),
    }
    runs: dict[str, list[dict[str, Any]]] = {}
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        hyper = {"batch_size": args.batch_size, "learning_rate": args.lr, "seed": seed, "device": "cpu"}
        for start_name, start in [("scratch", None), *starts.items()]:
            for recipe in args.recipes.split(","):
                train_fields, decodes = recipes[recipe]
                model = init(seed).train() if start is None else pipeline.fresh_copy(start)
                train_s = pipeline.train(model, train_set, steps=args.steps, warmup_steps=args.steps // 10,
                                         **train_fields, **hyper)
                for decode_name, options in decodes.items():
                    out = pipeline.decode(model, tokenizer, eval_set, options, max_new_tokens=14, batch_size=256,
                                          device="cpu")
                    scores = multi_reference_scores(out["texts"], task.eval["references"])
                    runs.setdefault(f"{start_name} | {recipe} | {decode_name}", []).append({
                        "start": start_name, "fine_tune": recipe, "decode": decode_name, "seed": seed,
                        "bleu": scores["bleu"], "exact": scores["mode_consistency"], "train_s": train_s,
                    })  # fmt: skip
    rows = seed_rows(runs, ("exact", "bleu"), digits=1)
    for row, seed_runs in zip(rows, runs.values()):
        row["solved"] = f"{sum(r['exact'] >= 90 for r in seed_runs)}/{len(seed_runs)}"
    return {"rows": rows, "runs": runs, "pretraining": pretraining, "chunks": len(chunks)}


def squad_paragraphs(data_dir: Path) -> list[str]:
    """The SQuAD 1.1 dev paragraphs: the articles of the Du QG training pairs (its test articles are disjoint), in
    the Du files' bracket spelling."""
    import json

    with open(data_dir / "squad_v1.1" / "dev-v1.1.merged.json", encoding="utf-8") as f:
        articles = json.load(f)["data"]
    paragraphs = dict.fromkeys(p["context"] for a in articles for p in a["paragraphs"])  # unique, in order
    return [p.replace("(", " -lrb- ").replace(")", " -rrb- ") for p in paragraphs]


def part_qg(args) -> dict[str, Any]:
    """Du QG: pretrain on the training articles' raw paragraphs, then fine-tune AR and NAR from it and from scratch
    with equal budgets; BLEU-4 / ROUGE-L on the first `--qg-eval` test pairs."""
    import datasets

    from bang_nar.data import tokenize_pairs
    from bang_nar.evaluation import compute_generation_metrics
    from bang_nar.modeling_bang import BangForConditionalGeneration
    from bang_nar.pretraining import BangForPreTraining
    from bang_nar.pretraining_data import SpanMaskingCollator, pack_documents
    from transformers import AutoTokenizer

    from quality import DATASETS, SIZES, read_pairs, train_wordpiece

    data_dir = Path(args.data_dir)
    train_src, train_tgt, eval_src, eval_tgt, max_src, max_tgt = DATASETS["du2017_qg"]
    train_pairs = read_pairs(data_dir, train_src, train_tgt, args.qg_train)
    eval_pairs = read_pairs(data_dir, eval_src, eval_tgt, args.qg_eval)
    paragraphs = squad_paragraphs(data_dir)
    key = (f"qg_pretrained_steps{args.qg_pretrain_steps}_chunk{args.qg_chunk}_n{args.qg_streams}"
           f"_lr{args.pretrain_lr:g}_batch{args.batch_size}_seed{args.pretrain_seed}"
           f"{f'_freeze{args.freeze_encoder_steps}' if args.freeze_encoder_steps else ''}"
           f"{f'_mlm{args.encoder_mlm_weight:g}' if args.encoder_mlm_weight else ''}")
    cache = Path(args.cache_dir) / key if args.cache_dir else None
    if cache is not None and cache.exists():
        # The cached weights' own tokenizer: WordPiece training breaks count ties differently in every process.
        tokenizer = AutoTokenizer.from_pretrained(cache)
    else:
        tokenizer = train_wordpiece(paragraphs + list(train_pairs["source"]) + list(train_pairs["target"]), 8000)
    train_set, _ = tokenize_pairs(train_pairs, tokenizer, max_src, max_tgt)
    eval_set, _ = tokenize_pairs(eval_pairs, tokenizer, max_src, max_tgt)
    config = pipeline.bang_config(tokenizer, SIZES["tiny"], max_positions=128)
    config.num_streams = args.qg_streams

    def init(seed: int) -> BangForConditionalGeneration:
        torch.manual_seed(seed)
        return BangForConditionalGeneration(config)

    chunks = pack_documents(datasets.Dataset.from_dict({"text": paragraphs}), tokenizer, args.qg_chunk)
    pretrained = BangForPreTraining(config)
    pretrained.load_state_dict(init(args.pretrain_seed).state_dict())
    info: dict[str, Any] = {"chunks": len(chunks), "paragraphs": len(paragraphs)}
    if cache is not None and cache.exists():
        pretrained.load_state_dict(BangForConditionalGeneration.from_pretrained(cache).state_dict())
        info["cached"] = True
    else:
        collator = SpanMaskingCollator(tokenizer, span_block_size=4 * args.qg_streams, mask_ratio=0.25,
                                       generator=torch.Generator().manual_seed(args.pretrain_seed))
        history, info["seconds"] = pretrain(pretrained, chunks, collator, steps=args.qg_pretrain_steps,
                                            batch_size=args.batch_size, lr=args.pretrain_lr, seed=args.pretrain_seed,
                                            num_streams=args.qg_streams, logging_steps=10,
                                            freeze_encoder_steps=args.freeze_encoder_steps,
                                            encoder_mlm_weight=args.encoder_mlm_weight)  # fmt: skip
        info["streams"] = stream_windows(history, args.qg_streams, window=3)
        if cache is not None:  # a plain BANG folder with its tokenizer
            pretrained.save_pretrained(cache)
            tokenizer.save_pretrained(cache)
    probe = SpanMaskingCollator(tokenizer, span_block_size=4 * args.qg_streams, mask_ratio=0.25,
                                generator=torch.Generator().manual_seed(1))
    info["encoder_use"] = encoder_use(pretrained, chunks, probe, args.qg_streams)
    info["encoder_use_at_init"] = encoder_use(init(args.pretrain_seed), chunks, probe, args.qg_streams)
    pretrained.__class__ = BangForConditionalGeneration

    recipes = {"ar": ({"train_mode": "ar"}, {"mode": "ar", "num_beams": 1}),
               "nar": ({"spmd_preset": "bang_nar"}, {"mode": "nar"})}
    runs: dict[str, list[dict[str, Any]]] = {}
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        hyper = {"batch_size": args.batch_size, "learning_rate": args.lr, "seed": seed, "device": "cpu"}
        for start_name in ("scratch", "pretrained"):
            for recipe in args.recipes.split(","):
                train_fields, decode = recipes[recipe]
                model = init(seed).train() if start_name == "scratch" else pipeline.fresh_copy(pretrained)
                train_s = pipeline.train(model, train_set, steps=args.qg_steps, warmup_steps=args.qg_steps // 10,
                                         **train_fields, **hyper)
                out = pipeline.decode(model, tokenizer, eval_set, decode, max_new_tokens=max_tgt, batch_size=100,
                                      device="cpu")
                scores = compute_generation_metrics(out["texts"], list(eval_pairs["target"]),
                                                    metrics=("corpus_bleu", "rouge"))
                run = {"start": start_name, "fine_tune": recipe, "seed": seed, "bleu": scores["bleu"],
                       "rougeL": scores["rougeL"], "train_s": train_s, "example": out["texts"][0]}
                runs.setdefault(f"{start_name} | {recipe}", []).append(run)
                print(f"[qg] seed {seed} {start_name} {recipe}: BLEU-4 {run['bleu']:.2f}, ROUGE-L {run['rougeL']:.2f}, "
                      f"{train_s:.0f} s: {run['example']}", flush=True)
    rows = seed_rows(runs, ("bleu", "rougeL"), digits=2)
    return {"rows": rows, "runs": runs, "pretraining": info, "example_reference": eval_pairs["target"][0]}


# Part D runs: (training, learning rate, share of span tokens [MASK]ed / kept / randomised in the source,
# freeze_encoder_steps, encoder MLM weight). All but the last pretraining rows use the released criterion only.
COLLAPSE_RUNS = {
    "pretrain, lr 2e-3": ("pretrain", 2e-3, (0.8, 0.1, 0.1), 0, 0.0),
    "pretrain, lr 5e-4": ("pretrain", 5e-4, (0.8, 0.1, 0.1), 0, 0.0),
    "pretrain, lr 1e-4": ("pretrain", 1e-4, (0.8, 0.1, 0.1), 0, 0.0),
    "pretrain, lr 5e-4, span tokens kept in the source": ("pretrain", 5e-4, (0.0, 1.0, 0.0), 0, 0.0),
    "pretrain, lr 5e-4, encoder held for 50 steps": ("pretrain", 5e-4, (0.8, 0.1, 0.1), 50, 0.0),
    "pretrain, lr 2e-3, encoder MLM term (default)": ("pretrain", 2e-3, (0.8, 0.1, 0.1), 0, 1.0),
    "pretrain, lr 5e-4, encoder MLM term (default)": ("pretrain", 5e-4, (0.8, 0.1, 0.1), 0, 1.0),
    "AR fine-tuning on QG pairs, lr 1e-3 (reference)": ("ar", 1e-3, None, 0, 0.0),
}


def part_collapse(args) -> dict[str, Any]:
    """The spread of the encoder's output over 32 fixed QG sources every 25 steps, during pretraining on SQuAD
    paragraphs (several learning rates; also with every span token left visible, a pure copy task) and, for
    reference, during AR fine-tuning on QG pairs. All runs start from the same init."""
    import datasets
    from transformers import TrainerCallback

    from bang_nar.data import tokenize_pairs
    from bang_nar.modeling_bang import BangForConditionalGeneration
    from bang_nar.pretraining import BangForPreTraining
    from bang_nar.pretraining_data import SpanMaskingCollator, pack_documents
    from quality import DATASETS, SIZES, read_pairs, train_wordpiece

    data_dir = Path(args.data_dir)
    train_src, train_tgt, _, _, max_src, max_tgt = DATASETS["du2017_qg"]
    pairs = read_pairs(data_dir, train_src, train_tgt, 3000)
    paragraphs = squad_paragraphs(data_dir)[:600]
    tokenizer = train_wordpiece(paragraphs + list(pairs["source"]) + list(pairs["target"]), 4000)
    pair_set, _ = tokenize_pairs(pairs, tokenizer, max_src, max_tgt)
    chunks = pack_documents(datasets.Dataset.from_dict({"text": paragraphs}), tokenizer, 64)
    probe = tokenizer(list(pairs["source"][:32]), padding=True, truncation=True, max_length=max_src,
                      return_tensors="pt")
    config = pipeline.bang_config(tokenizer, SIZES["tiny"], max_positions=128)
    config.num_streams = 4

    def spread(model) -> float:
        return encoder_spread(model, probe["input_ids"], probe["attention_mask"])

    class Curve(TrainerCallback):
        def __init__(self, model):
            self.points = [(0, spread(model))]

        def on_step_end(self, args_, state, control, model=None, **kwargs):
            if state.global_step % 25 == 0:
                self.points.append((state.global_step, spread(model)))

    curves = {}
    for name in args.collapse_runs.split(";"):
        kind, lr, replace, freeze, mlm_weight = COLLAPSE_RUNS[name]
        torch.manual_seed(args.pretrain_seed)
        model = (BangForPreTraining if kind == "pretrain" else BangForConditionalGeneration)(config)
        curve = Curve(model)
        if kind == "pretrain":
            mask, keep, rand = replace
            collator = SpanMaskingCollator(tokenizer, span_block_size=16, mask_ratio=0.25, mask_prob=mask,
                                           keep_prob=keep, random_prob=rand)
            pretrain(model, chunks, collator, steps=args.collapse_steps, batch_size=args.batch_size, lr=lr,
                     seed=args.pretrain_seed, num_streams=4, logging_steps=args.collapse_steps, callbacks=[curve],
                     freeze_encoder_steps=freeze, encoder_mlm_weight=mlm_weight)
        else:
            pipeline.train(model, pair_set, steps=args.collapse_steps, warmup_steps=args.collapse_steps // 10,
                           train_mode="ar", batch_size=args.batch_size, learning_rate=lr, seed=args.pretrain_seed,
                           device="cpu", callbacks=[curve])  # fmt: skip
        curves[name] = curve.points
        print(f"[collapse] {name}: " + ", ".join(f"{step}: {value:.3f}" for step, value in curve.points), flush=True)
    return {"curves": curves, "chunks": len(chunks)}


def _encoder_use_line(use: dict[str, float]) -> str:
    return f"encoder_gap {use['gap']:+.4f}, encoder output spread {use['spread']:.4f}"


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
    parser.add_argument("--seeds", default="0,1,2,3,4", help="Fine-tuning seeds (scratch rows: also the init); '' "
                        "pretrains (or loads the cache) and probes only.")
    parser.add_argument("--pretrain-seed", type=int, default=0, help="Init seed of the one pretraining run.")
    parser.add_argument("--freeze-encoder-steps", type=int, default=0, help="Parts B and C: hold the encoder still "
                        "for the first N pretraining steps (BangPreTrainer(freeze_encoder_steps=N)).")
    parser.add_argument("--encoder-mlm-weight", type=float, default=1.0, help="Parts A-C: weight of the encoder MLM "
                        "term (BangPreTrainer(encoder_mlm_weight=...), the package default 1; 0: the released "
                        "criterion only).")
    parser.add_argument("--task-seed", type=int, default=0)
    parser.add_argument("--positions", default="document,target", help="Pretraining runs: 'document' (each masked "
                        "token at its document position, the hooks' reading) and/or 'target' (1..T); '' fine-tunes "
                        "scratch only.")
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
    parser.add_argument("--qg-train", type=int, default=None, help="Part C: first N Du QG training pairs (all).")
    parser.add_argument("--qg-eval", type=int, default=300, help="Part C: first N Du QG test pairs.")
    parser.add_argument("--qg-chunk", type=int, default=64, help="Part C: tokens per pretraining chunk.")
    parser.add_argument("--qg-streams", type=int, default=4, help="Part C: n streams (span = block / 4 tokens).")
    parser.add_argument("--qg-pretrain-steps", type=int, default=1500)
    parser.add_argument("--qg-steps", type=int, default=600, help="Part C: fine-tuning steps of every row.")
    parser.add_argument("--cache-dir", default=None, help="Keep the part C pretrained model and its tokenizer here "
                        "(reused by a later call with the same pretraining settings, e.g. other --seeds in parallel).")
    parser.add_argument("--collapse-runs", default=";".join(COLLAPSE_RUNS), help="Part D runs, ';'-separated.")
    parser.add_argument("--collapse-steps", type=int, default=200)
    parser.add_argument("--recipes", default="ar,nar", help="Fine-tuning recipes: ar, nar, 'semi_nar k=4'.")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    set_threads(args.threads)
    pipeline.quiet_logs()
    info = machine_info("cpu")
    started = time.perf_counter()
    payload: dict[str, Any] = {"settings": vars(args) | {"dims": DIMS}}
    if args.cache_dir:  # results name no folder of this machine
        payload["settings"]["cache_dir"] = display_path(args.cache_dir)
    parts = args.parts.split(",")
    if "raw" in parts:
        payload["raw"] = part_raw(args)
    if "controlled" in parts:
        run = payload["controlled"] = part_controlled(args)
        pretrained = ", ".join(f"{p} positions {r['seconds']:.0f} s" for p, r in run["pretraining"].items())
        print(f"\n## Part B: M = {args.num_modes}, {args.num_train} train pairs; pretraining {args.pretrain_steps} "
              f"steps on {run['chunks']} {args.pretrain_text} chunks ({pretrained}); every fine-tune {args.steps} "
              f"steps x batch {args.batch_size}, lr {args.lr}; seeds {args.seeds}\n")
        print(markdown_table(run["rows"], [
            ("start", "start"), ("fine_tune", "fine-tune"), ("decode", "decode"), ("exact_fmt", "exact match %"),
            ("solved", "seeds >= 90%"), ("bleu_fmt", "BLEU-4")]))
        for positions, result in run["pretraining"].items():
            print(f"\nPretraining ({positions} positions), per-stream loss (first 3 logs -> last 3 logs): " + ", ".join(
                f"s{r['stream']} {r['first']:.2f}->{r['last']:.2f}" for r in result["streams"]))
            print(f"Encoder use: {_encoder_use_line(result['encoder_use'])} (at init: "
                  f"{_encoder_use_line(result['encoder_use_at_init'])})")
    if "qg" in parts:
        run = payload["qg"] = part_qg(args)
        pre = run["pretraining"]
        print(f"\n## Part C: Du QG, pretraining {args.qg_pretrain_steps} steps x {args.batch_size} on {pre['chunks']} "
              f"chunks of {pre['paragraphs']} SQuAD paragraphs; every fine-tune {args.qg_steps} steps; seeds "
              f"{args.seeds}\n")
        print(markdown_table(run["rows"], [("start", "start"), ("fine_tune", "fine-tune"), ("bleu_fmt", "BLEU-4"),
                                           ("rougeL_fmt", "ROUGE-L")]))
        if "streams" in pre:
            print("\nPretraining per-stream loss (first 3 logs -> last 3 logs): " + ", ".join(
                f"s{r['stream']} {r['first']:.2f}->{r['last']:.2f}" for r in pre["streams"]))
        print(f"Encoder use: {_encoder_use_line(pre['encoder_use'])} (at init: "
              f"{_encoder_use_line(pre['encoder_use_at_init'])})")
    if "collapse" in parts:
        run = payload["collapse"] = part_collapse(args)
        steps = [step for step, _ in next(iter(run["curves"].values()))]
        print("\n## Part D: encoder output spread over 32 QG sources (std across sources), by step\n")
        rows = [{"run": name, **{str(step): value for step, value in points}} for name, points in run["curves"].items()]
        print(markdown_table(rows, [("run", "run")] + [(str(step), f"step {step}") for step in steps], digits=3))
    payload["seconds"] = time.perf_counter() - started
    payload["machine"] = finish_machine_info(info)
    write_json(RESULTS_DIR / f"{args.out}.json", payload)
    print_json_line(payload)


if __name__ == "__main__":
    main()
