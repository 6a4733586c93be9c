"""Convert an original fairseq BANG checkpoint to a Hugging Face folder (config, safetensors, tokenizer, card).

The file is read with torch.load(weights_only=True) and an allow-list; a file holding other Python objects is
refused, never unpickled in full. Flags take dashes or underscores (--load-sep, --load_sep).

    bang-nar convert checkpoint_base_9gram_ck35.pt ./bang-base
    bang-nar convert finetuned_nar.pt ./bang-nar-qg --load-sep
"""

import argparse

from ._args import CLIError, accept_both_spellings, positive_int


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="fairseq BANG checkpoint → Hugging Face folder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="fairseq .pt file (fine-tuned or pretraining layout)")
    parser.add_argument("output_dir", help="folder to write config.json, model.safetensors, tokenizer and README.md")
    parser.add_argument(
        "--load-sep", action="store_true", help="copy the [SEP] embedding row into [X_SEP] (the original's --load-sep)"
    )
    parser.add_argument("--vocab-file", default=None, help="vocab.txt to bundle (default: BANG's BERT-uncased vocab)")
    parser.add_argument(
        "--generation-mode",
        choices=["ar", "nar"],
        default=None,
        help="default generate() mode to store (default: from the checkpoint's --nar-ratio)",
    )
    parser.add_argument(
        "--max-source-positions",
        type=positive_int,
        default=None,
        help="encoder position limit (default: the checkpoint's --max-source-positions, else 512)",
    )
    parser.add_argument(
        "--max-target-positions",
        type=positive_int,
        default=None,
        help="decoder position limit (default: the checkpoint's --max-target-positions, else 512)",
    )
    parser.add_argument(
        "--max-len-b",
        type=positive_int,
        default=200,
        help="fairseq-generate --max-len-b stored in the AR generation config (default 200)",
    )
    accept_both_spellings(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bang_nar.convert_bang_original_checkpoint import convert_bang_checkpoint

    overrides = {"generation_mode": args.generation_mode} if args.generation_mode else {}
    try:
        model = convert_bang_checkpoint(
            args.checkpoint,
            args.output_dir,
            load_sep=args.load_sep,
            vocab_file=args.vocab_file,
            max_source_positions=args.max_source_positions,
            max_target_positions=args.max_target_positions,
            max_len_b=args.max_len_b,
            **overrides,
        )
    except ValueError as error:  # the converter's refusals name the file; the user's file, not a bug: one line
        raise CLIError(" ".join(str(error).split())) from None
    config = model.config
    print(
        f"Converted {args.checkpoint} → {args.output_dir}: {model.num_parameters():,} parameters, "
        f"d_model={config.d_model}, layers={config.encoder_layers}+{config.decoder_layers}, "
        f"heads={config.decoder_attention_heads}, default mode={config.generation_mode}."
    )
    return 0
