"""Pretrain BANG (or continue pretraining) on raw text with the reconstructed cross-stream n-stream objective.

The objective, the span masking and the positions are a reconstruction (bang_nar/pretraining.py,
bang_nar/pretraining_data.py), not the authors' code. Every `TrainingArguments` field is a flag of the same name;
runs under `accelerate launch` / `torchrun` like `train`. `--resume_from_checkpoint last` resumes the newest
checkpoint in `--output_dir`.

    bang-nar pretrain --data corpus.txt --output_dir out/pre --model_size tiny --max_steps 2000
    bang-nar pretrain --data user/wiki_dataset --streaming --output_dir out/pre --max_steps 125000
    bang-nar pretrain --model_name_or_path bang-hf --data domain.jsonl --text_column body --output_dir out/domain
"""

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class PretrainArguments:
    """Raw text and the reconstructed objective's knobs (defaults: MASS's, docs/pretraining.md#reconstruction)."""

    data: str = field(
        metadata={
            "help": "Raw text: a .txt file (one document per line), a .json/.jsonl/.csv/.parquet "
            "file, a folder of .txt files, or a Hub dataset name."
        }
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the text (record files, Hub)."})
    split: str = field(default="train", metadata={"help": "Split of a Hub/folder dataset."})
    dataset_config: str | None = field(default=None, metadata={"help": "Config name of a Hub dataset."})
    streaming: bool = field(default=False, metadata={"help": "Stream the corpus (needs --max_steps)."})
    max_documents: int | None = field(default=None, metadata={"help": "Use only the first N documents."})
    max_source_length: int = field(default=512, metadata={"help": "Tokens per packed chunk (the encoder input)."})
    num_streams: int | None = field(
        default=None,
        metadata={"help": "n [MASK] streams (default: the model config's num_streams, 9 for a new model)."},
    )
    stream_weights: str | None = field(
        default=None,
        metadata={"help": "Comma-separated loss weight per stream (default: all 1, the released criterion)."},
    )
    span_block_size: int = field(default=64, metadata={"help": "Tokens per block; one masked span per block."})
    mask_ratio: float = field(default=0.15, metadata={"help": "Span length = int(block length x mask_ratio)."})
    mask_prob: float = field(default=0.8, metadata={"help": "Share of span tokens replaced by [MASK] in the source."})
    keep_prob: float = field(default=0.1, metadata={"help": "Share of span tokens kept in the source."})
    random_prob: float = field(default=0.1, metadata={"help": "Share of span tokens replaced by a random token."})
    encoder_mlm_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight of the encoder MLM term (added to the reconstruction: each span position of the source "
            "predicts its token through the LM head). Without it a from-scratch encoder collapses to a constant "
            "(README, Pretraining); 0 trains the released criterion only."
        },
    )
    freeze_encoder_steps: int = field(
        default=0,
        metadata={
            "help": "Keep the encoder's own weights still for the first N optimizer steps (the shared embeddings train); "
            "an experiment that only delays the collapse which --encoder_mlm_weight prevents."
        },
    )
    document_positions: bool = field(
        default=True,
        metadata={
            "help": "Give each masked token its position in the document, as the released hooks expect; "
            "--no_document_positions uses the fine-tuning positions 1..T of the concatenated spans."
        },
    )


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain on raw text (reconstructed BANG n-stream objective)",
        add_help=False,
        description=__doc__,
    )
    parser.set_defaults(run=run, parse=parse, passthrough=True)


def _hf_parser():
    from transformers import TrainingArguments

    from ._args import ModelArguments, hf_parser

    return hf_parser("bang-nar pretrain", __doc__, (PretrainArguments, ModelArguments, TrainingArguments))


def parse(argv: list[str]):
    """`(data_args, model_args, training_args)` from the command line; no arguments at all is a usage error."""
    from ._args import check_counts, check_training_arguments, parse_dataclasses

    parser = _hf_parser()
    data_args, model_args, training_args = parse_dataclasses(
        parser, argv, "--data and --output_dir (`bang-nar pretrain --help` lists every flag)."
    )
    check_counts(parser, data_args, ("max_documents", "max_source_length", "num_streams", "span_block_size"))
    for name in ("mask_ratio", "mask_prob", "keep_prob", "random_prob"):
        if not 0 <= getattr(data_args, name) <= 1:
            parser.error(f"--{name} must be in [0, 1], got {getattr(data_args, name)}")
    if data_args.streaming and training_args.max_steps <= 0:
        parser.error("--streaming needs --max_steps (a streamed corpus has no length to count epochs by)")
    check_training_arguments(parser, model_args, training_args)
    return data_args, model_args, training_args


def run(args: argparse.Namespace) -> int:
    data_args, model_args, training_args = parse(list(args.args or []))
    trainer = pretrain(data_args, model_args, training_args)
    if not trainer.is_world_process_zero():
        return 0
    last = _last_stream_losses(trainer.state.log_history)
    print(
        f"Pretrained {trainer.state.global_step} steps; last per-stream losses, encoder gap and encoder MLM loss "
        f"{last}. Saved to {training_args.output_dir}.",
        file=sys.stderr,
    )
    return 0


def pretrain(data_args: PretrainArguments, model_args, training_args):
    """Load and pack the text, build or load the model, train with `BangPreTrainer`, save model, tokenizer, card."""

    from bang_nar.pipeline import config_for_tokenizer
    from bang_nar.pretraining import BangForPreTraining, BangPreTrainer
    from bang_nar.pretraining_data import SpanMaskingCollator, load_text_dataset, pack_documents

    from ._args import CLIError, check_model_paths, load_tokenizer, resolve_checkpoint

    check_model_paths(model_args)
    source = Path(data_args.data)
    if source.is_file() and source.stat().st_size == 0:
        raise CLIError(f"--data {data_args.data}: the file is empty; give raw text, one document per line.")
    try:
        text = load_text_dataset(
            data_args.data,
            text_column=data_args.text_column,
            split=data_args.split,
            streaming=data_args.streaming,
            dataset_config=data_args.dataset_config,
        )
    except Exception as error:  # datasets/pyarrow could not parse the user's own file: one line, as train says it
        from bang_nar.data import DataFormatError

        if not source.is_file() or isinstance(error, DataFormatError):
            raise
        cause = " ".join(str(error.__cause__ or error).split())[:300]
        raise CLIError(
            f"--data {data_args.data}: could not be read as {source.suffix[1:] or 'text'} ({cause}); "
            "give raw text, one document per line (.txt) or one record per line (.jsonl)."
        ) from None
    if data_args.max_documents is not None:
        text = (
            text.take(data_args.max_documents)
            if data_args.streaming
            else text.select(range(min(data_args.max_documents, len(text))))
        )
    texts_for_vocab = None
    if model_args.word_vocab_size and model_args.model_name_or_path is None and not model_args.tokenizer_name_or_path:
        if data_args.streaming:
            raise CLIError(
                "--word_vocab_size builds a vocabulary from the whole corpus; it cannot stream. Pass "
                "--tokenizer_name_or_path instead."
            )
        texts_for_vocab = text[data_args.text_column]
    tokenizer = load_tokenizer(model_args, texts_for_vocab)

    if model_args.model_name_or_path is not None:
        model = BangForPreTraining.from_pretrained(model_args.model_name_or_path)
        init = model_args.model_name_or_path
    else:
        import torch

        torch.manual_seed(training_args.seed)
        model = BangForPreTraining(config_for_tokenizer(tokenizer, model_args.model_size))
        init = f"random initialisation (size {model_args.model_size}, seed {training_args.seed})"
    if data_args.num_streams is not None:
        model.config.num_streams = data_args.num_streams
    if data_args.max_source_length > model.config.max_position_embeddings:
        raise CLIError(
            f"--max_source_length {data_args.max_source_length} exceeds the model's "
            f"{model.config.max_position_embeddings} positions; lower it."
        )
    weights = None
    if data_args.stream_weights:
        try:
            weights = [float(w) for w in data_args.stream_weights.split(",")]
        except ValueError:
            raise CLIError(
                f"--stream_weights {data_args.stream_weights}: give numbers separated by commas, e.g. 1,1,0.5."
            ) from None
        if len(weights) != model.config.num_streams:
            raise CLIError(
                f"--stream_weights has {len(weights)} weights but there are {model.config.num_streams} "
                "streams; give one per stream."
            )

    chunks = pack_documents(text, tokenizer, data_args.max_source_length, text_column=data_args.text_column)
    if not data_args.streaming and len(chunks) == 0:
        raise CLIError(
            f"--data {data_args.data}: no text to pretrain on (every document is blank); give raw text, "
            "one document per line."
        )
    collator = SpanMaskingCollator(
        tokenizer,
        span_block_size=data_args.span_block_size,
        mask_ratio=data_args.mask_ratio,
        mask_prob=data_args.mask_prob,
        keep_prob=data_args.keep_prob,
        random_prob=data_args.random_prob,
        document_positions=data_args.document_positions,
        encoder_labels=data_args.encoder_mlm_weight != 0,
    )
    resume = training_args.resume_from_checkpoint
    # "last": this run's output folder, whose newest complete checkpoint (as `bang-nar train` picks it) is resumed.
    checkpoint = resolve_checkpoint(training_args.output_dir if resume == "last" else resume, "pretrain")
    resume = str(checkpoint) if checkpoint is not None else None
    training_args.remove_unused_columns = False  # the collator builds every model input from input_ids
    trainer = BangPreTrainer(
        model=model,
        args=training_args,
        train_dataset=chunks,
        data_collator=collator,
        processing_class=tokenizer,
        num_streams=model.config.num_streams,
        stream_weights=weights,
        freeze_encoder_steps=data_args.freeze_encoder_steps,
        encoder_mlm_weight=data_args.encoder_mlm_weight,
    )
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(training_args.output_dir)
        _write_card(trainer, data_args, init, weights)
    return trainer


def _last_stream_losses(history) -> dict[str, float]:
    """The last logged per-stream losses, with the `encoder_gap` and `loss_encoder_mlm` of the same log when there."""
    for entry in reversed(history):
        streams = {
            k: v for k, v in entry.items() if k.startswith("loss_stream_") or k in ("encoder_gap", "loss_encoder_mlm")
        }
        if any(k.startswith("loss_stream_") for k in streams):
            return streams
    return {}


def _write_card(trainer, data_args: PretrainArguments, init: str, weights) -> None:
    from bang_nar import __version__
    from bang_nar.hub import display_name, render_model_card

    config = trainer.model.config
    output_dir = Path(trainer.args.output_dir)
    values = dict(
        model_name=output_dir.name,
        num_streams=config.num_streams,
        label_smoothing=config.label_smoothing,
        stream_weights="all equal" if weights is None else ", ".join(f"{w:g}" for w in weights),
        max_source_length=data_args.max_source_length,
        span_block_size=data_args.span_block_size,
        mask_ratio=data_args.mask_ratio,
        replace_probs=f"{data_args.mask_prob:g}/{data_args.keep_prob:g}/{data_args.random_prob:g}",
        encoder_mlm=f"weight {data_args.encoder_mlm_weight:g}"
        if data_args.encoder_mlm_weight
        else "off (`--encoder_mlm_weight 0`: the released criterion only)",
        positions="each masked token at its position in the document, as the released code's unused hooks expect "
        "(relative buckets from the same positions)"
        if data_args.document_positions
        else "fine-tuning positions 1..T over the concatenated spans (`--no_document_positions`)",
        dataset=display_name(data_args.data),
        init=display_name(init) if Path(init).exists() else init,
        steps=trainer.state.global_step,
        stream_losses=_last_stream_losses(trainer.state.log_history) or "none logged",
        config_summary=f"d_model {config.d_model}, {config.encoder_layers}+{config.decoder_layers} layers, "
        f"{config.decoder_attention_heads} heads, vocab {config.vocab_size}",
        bang_nar_version=__version__,
    )
    (output_dir / "README.md").write_text(render_model_card("pretrained", values))
