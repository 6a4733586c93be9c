"""Convert an original fairseq BANG checkpoint to a Hugging Face folder (config, safetensors, tokenizer, card).

The file is read with torch.load(weights_only=True) and an allow-list; a file holding other Python objects is
refused, never unpickled in full. Flags take dashes or underscores (--load-sep, --load_sep).

    bang-nar convert checkpoint_base_9gram_ck35.pt ./bang-base
    bang-nar convert finetuned_nar.pt ./bang-nar-qg --load-sep
"""

import argparse
import re

from ._args import CLIError, accept_both_spellings


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("convert", help="fairseq BANG checkpoint → Hugging Face folder", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="fairseq .pt file (fine-tuned or pretraining layout)")
    parser.add_argument("output_dir", help="folder to write config.json, model.safetensors, tokenizer and README.md")
    parser.add_argument("--load-sep", action="store_true",
                        help="copy the [SEP] embedding row into [X_SEP] (original --load-sep, spec §5.3)")
    parser.add_argument("--vocab-file", default=None, help="vocab.txt to bundle (default: BANG's BERT-uncased vocab)")
    parser.add_argument("--generation-mode", choices=["ar", "nar"], default=None,
                        help="default generate() mode to store (default: from the checkpoint's --nar-ratio)")
    parser.add_argument("--max-source-positions", type=int, default=None,
                        help="encoder position limit (default: the checkpoint's --max-source-positions, else 512)")
    parser.add_argument("--max-target-positions", type=int, default=None,
                        help="decoder position limit (default: the checkpoint's --max-target-positions, else 512)")
    parser.add_argument("--max-len-b", type=int, default=200,
                        help="fairseq-generate --max-len-b stored in the AR generation config (default 200)")
    accept_both_spellings(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bang_nar.convert_bang_original_checkpoint import convert_bang_checkpoint

    overrides = {"generation_mode": args.generation_mode} if args.generation_mode else {}
    try:
        model = convert_bang_checkpoint(args.checkpoint, args.output_dir, load_sep=args.load_sep,
                                        vocab_file=args.vocab_file, max_source_positions=args.max_source_positions,
                                        max_target_positions=args.max_target_positions, max_len_b=args.max_len_b,
                                        **overrides)
    except ValueError as error:  # the converter's refusals: the user's file, not a bug, so one line
        raise CLIError(_refusal(args.checkpoint, error)) from None
    config = model.config
    print(
        f"Converted {args.checkpoint} → {args.output_dir}: {model.num_parameters():,} parameters, "
        f"d_model={config.d_model}, layers={config.encoder_layers}+{config.decoder_layers}, "
        f"heads={config.decoder_attention_heads}, default mode={config.generation_mode}."
    )
    return 0


def _refusal(checkpoint: str, error: ValueError) -> str:
    """One line for a refused checkpoint. torch's unpickler message spans many lines and advises retrying with
    weights_only=False, which would run whatever code the file holds; name the refused object instead."""
    text = str(error.__cause__ or error)
    refused = re.search(r"GLOBAL ([\w.]+)", text)
    if refused:
        return (f"{checkpoint}: refused: it holds a Python object outside the allow-list ({refused.group(1)}), and "
                "bang-nar never unpickles checkpoints in full (that could run code from the file). Only tensors, "
                "containers and argparse.Namespace are read; re-save the checkpoint with just those.")
    if "Weights only load failed" in text or error.__cause__ is not None:
        detail = text.split("WeightsUnpickler error:", 1)[-1].strip() if "WeightsUnpickler error:" in text else text
        first = detail.strip().splitlines()[0] if detail.strip() else type(error.__cause__).__name__
        return f"{checkpoint}: not a readable PyTorch checkpoint ({first}). Pass the fairseq .pt file itself."
    return " ".join(str(error).split())  # the converter's own message, on one line
