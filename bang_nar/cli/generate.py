"""Generate from a file or stdin (one source per line) to a file or stdout; progress on stderr.

Flags take dashes or underscores (--num-beams, --num_beams). Sources are read before the model loads, and the
command never prompts.

    echo "the source text" | bang-nar generate --model out/spmd --mode nar
    bang-nar generate --model out/ar --mode ar --num-beams 4 --input sources.txt --output outputs.txt
"""

import argparse
import sys

from ._args import CLIError, accept_both_spellings, positive_int


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="decode sources (stdin/file → stdout/file)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="BANG model folder or Hub id")
    parser.add_argument("--mode", choices=["nar", "ar", "nar_verify", "semi_nar"], default=None,
                        help="default: the model's config.generation_mode")
    parser.add_argument("--input", default="-", help="text file, one source per line ('-' = stdin)")
    parser.add_argument("--output", default="-", help="output file ('-' = stdout)")
    parser.add_argument("--num-beams", type=positive_int, default=4, help="AR beam size")
    parser.add_argument("--length-penalty", type=float, default=1.2, help="AR length penalty")
    parser.add_argument("--max-new-tokens", type=positive_int, default=None, help="AR length limit / NAR slots")
    parser.add_argument("--num-candidates", type=positive_int, default=1, help="NAR candidates rescored by the AR stream")
    parser.add_argument("--no-repeat-ngram-size", type=int, default=0, help="NAR n-gram blocking")
    parser.add_argument("--suppress-repeats", action="store_true", help="NAR: never repeat the previous token")
    parser.add_argument("--max-source-length", type=positive_int, default=None, help="truncate longer sources (reported)")
    parser.add_argument("--block-size", type=positive_int, default=None,
                        help="semi_nar: tokens per step (default: the model's generation_config.block_size, else 4)")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    accept_both_spellings(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bang_nar.pipeline import generate_texts

    from ._args import check_source_lengths, load_model_and_tokenizer

    # Sources first: stdin is consumed here, before anything could read it, and bad input fails before the model loads.
    sources = _read_sources(args.input)
    model, tokenizer = load_model_and_tokenizer(args.model)
    mode = args.mode or model.config.generation_mode
    check_source_lengths(sources, tokenizer, model, args.max_source_length, "stdin" if args.input == "-" else args.input)
    options = {"ar": {"num_beams": args.num_beams, "length_penalty": args.length_penalty,
                      "max_new_tokens": args.max_new_tokens or 64},
               "nar": {"num_candidates": args.num_candidates, "no_repeat_ngram_size": args.no_repeat_ngram_size,
                       "suppress_repeats": args.suppress_repeats, "max_new_tokens": args.max_new_tokens},
               "nar_verify": {"max_new_tokens": args.max_new_tokens},
               "semi_nar": {"max_new_tokens": args.max_new_tokens, "block_size": args.block_size}}[mode]
    texts, _, elapsed = generate_texts(model, tokenizer, sources, mode, batch_size=args.batch_size,
                                       max_source_length=args.max_source_length, show_progress=True,
                                       **options)
    output = "".join(text + "\n" for text in texts)
    if args.output == "-":
        sys.stdout.write(output)
    else:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(output)
    print(f"{len(texts)} outputs ({mode}) in {elapsed:.2f} s, {1000 * elapsed / max(1, len(texts)):.1f} ms/sample",
          file=sys.stderr)
    return 0


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
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise CLIError(f"{where} line {line}: not UTF-8 (byte 0x{raw[error.start]:02x}); save the file as UTF-8, "
                       "e.g. `iconv -f latin1 -t utf-8`.") from None
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
