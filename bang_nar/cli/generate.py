"""Generate from a file or stdin (one source per line) to a file or stdout; progress on stderr.

Flags take dashes or underscores (--num-beams, --num_beams). Sources are read before the model loads, and the
command never prompts.

    echo "the source text" | bang-nar generate --model out/spmd --mode nar
    bang-nar generate --model out/ar --mode ar --num-beams 4 --input sources.txt --output outputs.txt
"""

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

from ._args import CLIError, accept_both_spellings, check_writable_file, non_negative_int, positive_int

# Options that apply to one decoding mode only, with their defaults; given with another mode they are refused, as
# `model.generate` refuses them. --max-new-tokens applies to every mode.
MODE_OPTIONS = {"num_beams": ("ar", 4), "length_penalty": ("ar", 1.2), "num_candidates": ("nar", 1),
                "no_repeat_ngram_size": ("nar", 0), "suppress_repeats": ("nar", False),
                "block_size": ("semi_nar", None)}  # fmt: skip
# Sources decoded between two appends to OUTPUT.partial: what a kill can lose at most.
CHUNK_BATCHES = 4


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="decode sources (stdin/file → stdout/file)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="BANG model folder or Hub id")
    parser.add_argument(
        "--mode",
        choices=["nar", "ar", "nar_verify", "semi_nar"],
        default=None,
        help="default: the model's config.generation_mode",
    )
    parser.add_argument("--input", default="-", help="text file, one source per line ('-' = stdin)")
    parser.add_argument(
        "--output",
        default="-",
        help="output file ('-' = stdout); written as decoding goes (OUTPUT.partial, renamed when "
        "complete), and the same command resumes a killed run",
    )
    parser.add_argument("--num-beams", type=positive_int, default=None, help="AR beam size (default 4)")
    parser.add_argument("--length-penalty", type=float, default=None, help="AR length penalty (default 1.2)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=None, help="AR length limit / NAR slots")
    parser.add_argument(
        "--num-candidates", type=positive_int, default=None, help="NAR candidates rescored by the AR stream (default 1)"
    )
    parser.add_argument(
        "--no-repeat-ngram-size", type=non_negative_int, default=None, help="NAR n-gram blocking (default 0: off)"
    )
    parser.add_argument(
        "--suppress-repeats", action="store_true", default=None, help="NAR: never repeat the previous token"
    )
    parser.add_argument(
        "--max-source-length", type=positive_int, default=None, help="truncate longer sources (reported)"
    )
    parser.add_argument(
        "--block-size",
        type=positive_int,
        default=None,
        help="semi_nar: tokens per step (default: the model's generation_config.block_size, else 4)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=32)
    accept_both_spellings(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bang_nar.pipeline import generate_texts

    from ._args import check_source_lengths, load_model_and_tokenizer

    if args.output != "-":
        check_writable_file(args.output, "--output")  # before decoding: an unwritable path must not cost the work
    if args.mode is not None:
        _check_mode_options(args, args.mode)
    # Sources first: stdin is consumed here, before anything could read it, and bad input fails before the model loads.
    sources = _read_sources(args.input)
    model, tokenizer = load_model_and_tokenizer(args.model)
    mode = args.mode or model.config.generation_mode
    _check_mode_options(args, mode)
    check_source_lengths(
        sources, tokenizer, model, args.max_source_length, "stdin" if args.input == "-" else args.input
    )
    options = {
        name: default if getattr(args, name) is None else getattr(args, name)
        for name, (option_mode, default) in MODE_OPTIONS.items()
        if option_mode == mode
    }
    options["max_new_tokens"] = args.max_new_tokens or (64 if mode == "ar" else None)
    if args.output == "-":
        texts, _, elapsed = generate_texts(
            model,
            tokenizer,
            sources,
            mode,
            batch_size=args.batch_size,
            max_source_length=args.max_source_length,
            show_progress=True,
            **options,
        )
        sys.stdout.write("".join(text + "\n" for text in texts))
        done = len(texts)
    else:
        done, elapsed = _generate_to_file(args, model, tokenizer, sources, mode, options)
    print(f"{done} outputs ({mode}) in {elapsed:.2f} s, {1000 * elapsed / max(1, done):.1f} ms/sample", file=sys.stderr)
    return 0


def _check_mode_options(args: argparse.Namespace, mode: str) -> None:
    """Refuse an option of another decoding mode, as `generate(mode=...)` refuses it, instead of ignoring it."""
    for name, (option_mode, _) in MODE_OPTIONS.items():
        if getattr(args, name) is not None and option_mode != mode:
            flag = "--" + name.replace("_", "-")
            raise CLIError(
                f"{flag} applies to --mode {option_mode} only, and this run decodes {mode}; drop {flag} "
                f"or pass --mode {option_mode}."
            )


def _generate_to_file(
    args: argparse.Namespace, model, tokenizer, sources: list[str], mode: str, options: dict
) -> tuple[int, float]:
    """Decode into OUTPUT.partial a few batches at a time (flushed to disk), then rename it to OUTPUT.

    OUTPUT.partial.json keys the partial file by the model, mode, options and sources: the same command after a kill
    keeps the complete lines already written and decodes only the rest; anything else starts over.
    Returns (outputs decoded by this run, their generation seconds)."""
    from bang_nar.pipeline import generate_texts

    output = Path(args.output)
    partial, key_file = output.with_name(output.name + ".partial"), output.with_name(output.name + ".partial.json")
    key = hashlib.sha256(
        json.dumps(
            [os.path.abspath(args.model), mode, options, args.max_source_length, sources], sort_keys=True
        ).encode()
    ).hexdigest()
    done = 0
    if partial.is_file() and key_file.is_file() and json.loads(key_file.read_text()).get("key") == key:
        kept = partial.read_bytes()
        kept = kept[: kept.rfind(b"\n") + 1]  # a line cut by the kill is decoded again
        done = kept.count(b"\n")
        partial.write_bytes(kept)
        print(f"Resuming {partial}: {done} of {len(sources)} outputs already written.", file=sys.stderr)
    else:
        partial.write_bytes(b"")
        key_file.write_text(json.dumps({"key": key}))
    elapsed, step = 0.0, CHUNK_BATCHES * args.batch_size
    with open(partial, "a", encoding="utf-8") as handle:
        for start in range(done, len(sources), step):
            texts, _, seconds = generate_texts(
                model,
                tokenizer,
                sources[start : start + step],
                mode,
                batch_size=args.batch_size,
                max_source_length=args.max_source_length,
                show_progress=False,
                **options,
            )
            handle.write("".join(text + "\n" for text in texts))
            handle.flush()
            os.fsync(handle.fileno())
            elapsed += seconds
            print(f"generate ({mode}): {min(start + step, len(sources))}/{len(sources)}", file=sys.stderr)
    os.replace(partial, output)
    key_file.unlink()
    return len(sources) - done, elapsed


def _read_sources(name: str) -> list[str]:
    """One source per line from file `name` ('-' = stdin); one-line errors for missing, non-UTF-8 or empty input."""
    where = "stdin" if name == "-" else name
    try:
        if name == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(name, "rb") as handle:
                raw = handle.read()
    except FileNotFoundError:
        raise CLIError(f"--input {name}: no such file.") from None
    except IsADirectoryError:
        raise CLIError(f"--input {name}: is a folder; pass a text file with one source per line.") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise CLIError(
            f"{where} line {line}: not UTF-8 (byte 0x{raw[error.start]:02x}); save the file as UTF-8, "
            "e.g. `iconv -f latin1 -t utf-8`."
        ) from None
    sources = text.split("\n")
    if sources and sources[-1] == "":
        sources.pop()  # the final newline ends the last line
    sources = [line.rstrip("\r") for line in sources]
    if not sources:
        raise CLIError(f"{where}: no sources (the input is empty); give one source per line.")
    empty = [i + 1 for i, line in enumerate(sources) if not line.strip()]
    if empty:
        raise CLIError(f"{where}: empty source on line(s) {empty[:10]}; remove them or put text there.")
    return sources
