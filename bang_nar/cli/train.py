"""Fine-tune BANG in AR, NAR or mixed mode, with the SPMD presets (bang_nar | seq_kd | spmd).

Every `SPMDTrainingArguments` / `Seq2SeqTrainingArguments` field is a flag of the same name (`--help` lists them);
runs unchanged under `accelerate launch` / `torchrun`.

    bang-nar train --data train.jsonl --output_dir out/ar --train_mode ar --max_steps 2000
    bang-nar distill --model out/ar --data train.jsonl --output_dir out/distilled
    bang-nar train --model_name_or_path out/ar --data out/distilled --output_dir out/spmd --train_mode nar \
        --spmd_preset spmd --max_steps 4000
"""

import argparse
import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="fine-tune (AR / NAR / mixed; presets bang_nar, seq_kd, spmd)",
                                   add_help=False, description=__doc__)
    parser.set_defaults(run=run, passthrough=True)


def run(args: argparse.Namespace) -> int:
    from transformers import HfArgumentParser

    from bang_nar.pipeline import build_model, prepare_dataset, train_model
    from bang_nar.trainer import SPMDTrainingArguments

    from ._args import DataArguments, ModelArguments, load_tokenizer

    parser = HfArgumentParser((DataArguments, ModelArguments, SPMDTrainingArguments), prog="bang-nar train",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_args, model_args, training_args = parser.parse_args_into_dataclasses(args.args or ["--help"])
    data = _load_training_data(data_args, training_args)
    texts = list(data["source"]) + list(data["target"]) if "source" in data.column_names else None
    tokenizer = load_tokenizer(model_args, texts)
    model = build_model(model_args.model_name_or_path, tokenizer, size=model_args.model_size, seed=training_args.seed)
    if "input_ids" not in data.column_names:
        data = prepare_dataset(data, tokenizer, data_args.max_source_length, data_args.max_target_length)
    trainer = train_model(model, tokenizer, data, training_args, card_values={"dataset": data_args.data})
    if not trainer.is_world_process_zero():
        return 0
    history = trainer.state.log_history
    losses = [entry["loss"] for entry in history if "loss" in entry]
    mean_loss = next((entry["train_loss"] for entry in reversed(history) if "train_loss" in entry), None)
    summary = f"logged loss {losses[0]:.3f} → {losses[-1]:.3f}" if len(losses) > 1 else f"mean loss {mean_loss:.3f}"
    recipe = "AR" if training_args.train_mode == "ar" else f"{training_args.train_mode}, preset {training_args.spmd_preset}"
    print(f"Trained {trainer.state.global_step} steps ({recipe}); {summary}. Saved to {training_args.output_dir}.",
          file=sys.stderr)
    return 0


def _load_training_data(data_args, training_args):
    """A folder written by `bang-nar distill` (tokenized, with distilled targets) or raw pairs."""
    from pathlib import Path

    import datasets

    from ._args import load_data

    folder = Path(data_args.data)
    if (folder / "dataset").is_dir() and (folder / "provenance.json").is_file():
        data = datasets.load_from_disk(str(folder / "dataset"))
        if data_args.max_samples is not None:
            data = data.select(range(min(data_args.max_samples, len(data))))
        return data
    return load_data(data_args)
