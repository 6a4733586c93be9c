"""Fine-tune BANG in AR, NAR or mixed mode, with the SPMD presets (bang_nar | seq_kd | spmd).

Every `SPMDTrainingArguments` / `Seq2SeqTrainingArguments` field is a flag of the same name (`--help` lists them;
`--foo_bar` and `--foo-bar` both work); runs unchanged under `accelerate launch` / `torchrun`.

Without --train_mode (and without --spmd_preset): data from `bang-nar distill` (it has distilled targets) trains NAR
with the spmd preset; any other data trains the AR teacher (--train_mode ar), the first step of the pipeline below,
and says what to run next. --resume_from_checkpoint takes a checkpoint-N folder, or an output folder to resume from
its latest checkpoint-N (checkpoints are written with --save_strategy steps --save_steps N).

    bang-nar train --data train.jsonl --output_dir out/ar --train_mode ar --max_steps 2000
    bang-nar distill --model out/ar --data train.jsonl --output_dir out/distilled
    bang-nar train --model_name_or_path out/ar --data out/distilled --output_dir out/spmd --train_mode nar \\
        --spmd_preset spmd --max_steps 4000
    bang-nar train --data train.jsonl --output_dir out/ar --train_mode ar --max_steps 2000 \\
        --resume_from_checkpoint out/ar
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Flags that choose the recipe; when none is given, the data decides (see the module docstring).
_RECIPE_FLAGS = ("train_mode", "spmd_preset", "target_sources", "kd_target")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune (AR / NAR / mixed; presets bang_nar, seq_kd, spmd)",
        add_help=False,
        description=__doc__,
    )
    parser.set_defaults(run=run, parse=parse, passthrough=True)


def _hf_parser():
    from bang_nar.trainer import SPMDTrainingArguments

    from ._args import DataArguments, ModelArguments, hf_parser

    return hf_parser("bang-nar train", __doc__, (DataArguments, ModelArguments, SPMDTrainingArguments))


def parse(argv: list[str]):
    """`(data_args, model_args, training_args)` from the command line; no arguments at all is a usage error."""
    from ._args import check_counts, check_training_arguments, parse_dataclasses

    parser = _hf_parser()
    data_args, model_args, training_args = parse_dataclasses(
        parser, argv, "--data and --output_dir (`bang-nar train --help` lists every flag)."
    )
    check_counts(parser, data_args, ("max_source_length", "max_target_length", "max_samples"))
    check_training_arguments(parser, model_args, training_args)
    return data_args, model_args, training_args


def _given(argv: list[str], name: str) -> bool:
    """Whether flag `name` is on the command line, in either spelling, as `--flag value` or `--flag=value`."""
    spellings = {f"--{name}", f"--{name.replace('_', '-')}"}
    return any(token.split("=", 1)[0] in spellings for token in argv)


def run(args: argparse.Namespace) -> int:
    from bang_nar.pipeline import build_model, prepare_dataset, train_model

    from ._args import CLIError, check_model_paths, load_auto_tokenizer, load_tokenizer, resolve_checkpoint

    argv = list(args.args or [])
    data_args, model_args, training_args = parse(argv)
    check_model_paths(model_args)
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, "train")
    teacher_note = ""
    data = _load_training_data(data_args, training_args)
    if training_args.uses_distilled_targets and training_args.kd_column not in data.column_names:
        if training_args.train_mode == "semi_nar":
            raise CLIError(
                f"--semi_nar_targets ar_kd trains on distilled targets, and {data_args.data} has none (no "
                f"'{training_args.kd_column}' column). Run `bang-nar distill --model AR_MODEL --data {data_args.data} "
                "--output_dir DISTILLED` and train with --data DISTILLED, or drop --semi_nar_targets (gold)."
            )
        if any(_given(argv, name) for name in _RECIPE_FLAGS):
            raise CLIError(
                f"--train_mode {training_args.train_mode} with --spmd_preset {training_args.spmd_preset} trains on "
                f"distilled targets, and {data_args.data} has none (no '{training_args.kd_column}' column). Run "
                f"`bang-nar distill --model AR_MODEL --data {data_args.data} --output_dir DISTILLED` and train with "
                "--data DISTILLED, or train NAR on gold targets with --spmd_preset bang_nar."
            )
        # No recipe chosen and nothing distilled yet: the first step of the pipeline, the AR teacher.
        argv += ["--train_mode", "ar"]
        data_args, model_args, training_args = parse(argv)
        out = training_args.output_dir
        teacher_note = (
            f"bang-nar train: {data_args.data} has no distilled targets and no --train_mode was given, so this "
            f"trains the AR teacher (--train_mode ar). Next: `bang-nar distill --model {out} --data "
            f"{data_args.data} --output_dir DISTILLED`, then `bang-nar train --model_name_or_path {out} --data "
            "DISTILLED --train_mode nar --output_dir OUT`."
        )
    stored = ("kd_top_ids", "kd_top_log_probs")  # = bang_nar.trainer.collator.KD_TOP_IDS / KD_TOP_LOG_PROBS
    if training_args.uses_stored_kd and any(c not in data.column_names for c in stored):
        raise CLIError(
            f"--kd_target stored reads the teacher's top-n log-probs from the data, and {data_args.data} has none "
            f"(no {' / '.join(stored)} columns). Distil with `bang-nar distill --model AR_MODEL --data TRAIN "
            "--output_dir DISTILLED --kd_top_n 8`, or drop --kd_target stored (a teacher pass each step)."
        )
    texts = list(data["source"]) + list(data["target"]) if "source" in data.column_names else None
    if (
        checkpoint is not None
        and model_args.tokenizer_name_or_path is None
        and (checkpoint / "tokenizer_config.json").is_file()
    ):
        # The checkpoint's own tokenizer: a word-level one (--word_vocab_size) must keep the ids it was trained with.
        tokenizer = load_auto_tokenizer(str(checkpoint), "--resume_from_checkpoint", tokenizer_only=True)
    else:
        tokenizer = load_tokenizer(model_args, texts)
    model = build_model(model_args.model_name_or_path, tokenizer, size=model_args.model_size, seed=training_args.seed)
    if teacher_note:  # once the model loaded: an error before it stays the only line
        print(teacher_note, file=sys.stderr)
    if "input_ids" not in data.column_names:
        data = prepare_dataset(data, tokenizer, data_args.max_source_length, data_args.max_target_length)
    if model_args.word_vocab_size and model_args.model_name_or_path is None and texts is not None:
        _report_unknown_words(data, tokenizer, model_args.word_vocab_size, texts)
    trainer = train_model(
        model,
        tokenizer,
        data,
        training_args,
        card_values={"dataset": data_args.data},
        resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None,
    )
    if not trainer.is_world_process_zero():
        return 0
    history = trainer.state.log_history
    losses = [entry["loss"] for entry in history if "loss" in entry]
    mean_loss = next((entry["train_loss"] for entry in reversed(history) if "train_loss" in entry), None)
    summary = f"logged loss {losses[0]:.3f} → {losses[-1]:.3f}" if len(losses) > 1 else f"mean loss {mean_loss:.3f}"
    recipe = {"ar": "AR", "semi_nar": f"semi_nar, k = {training_args.semi_nar_block_size}"}.get(
        training_args.train_mode, f"{training_args.train_mode}, preset {training_args.spmd_preset}"
    )
    resumed = f" (resumed from {checkpoint})" if checkpoint is not None else ""
    print(
        f"Trained {trainer.state.global_step} steps{resumed} ({recipe}); {summary}. Saved to {training_args.output_dir}.",
        file=sys.stderr,
    )
    return 0


def _report_unknown_words(data, tokenizer, vocab_size: int, texts: list[str]) -> None:
    """How much of the training text the word-level tokenizer maps to [UNK]; a warning above UNK_WARN_RATE."""
    from ._args import UNK_WARN_RATE

    unk, total = tokenizer.unk_token_id, 0
    unknown = 0
    for column in ("input_ids", "labels"):
        for ids in data[column]:
            total += len(ids)
            unknown += sum(1 for i in ids if i == unk)
    rate = unknown / max(1, total)
    distinct = len({word for text in texts for word in text.split()})
    line = (
        f"Word-level tokenizer: {len(tokenizer)} tokens for {distinct} distinct words; [UNK] is {100 * rate:.1f}% "
        "of the training tokens"
    )
    if rate > UNK_WARN_RATE:
        print(
            f"warning: {line} (above {100 * UNK_WARN_RATE:.0f}%): the model cannot learn or produce those words. "
            f"Raise --word_vocab_size (now {vocab_size}) towards {distinct}.",
            file=sys.stderr,
        )
    else:
        print(f"{line}.", file=sys.stderr)


def _load_training_data(data_args, training_args):
    """A folder written by `bang-nar distill` (tokenized, with distilled targets) or raw pairs."""
    import datasets

    from ._args import load_data

    folder = Path(data_args.data)
    if (folder / "dataset").is_dir() and (folder / "provenance.json").is_file():
        data = datasets.load_from_disk(str(folder / "dataset"))
        if data_args.max_samples is not None:
            data = data.select(range(min(data_args.max_samples, len(data))))
        return data
    return load_data(data_args)
