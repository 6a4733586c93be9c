"""Generate from a file or stdin (one source per line) to a file or stdout.

    echo "the source text" | bang-nar generate --model out/spmd --mode nar
    bang-nar generate --model out/ar --mode ar --num-beams 4 --input sources.txt --output outputs.txt
"""

import argparse
import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="decode sources (stdin/file → stdout/file)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="BANG model folder or Hub id")
    parser.add_argument("--mode", choices=["nar", "ar", "nar_verify"], default=None,
                        help="default: the model's config.generation_mode")
    parser.add_argument("--input", default="-", help="text file, one source per line ('-' = stdin)")
    parser.add_argument("--output", default="-", help="output file ('-' = stdout)")
    parser.add_argument("--num-beams", type=int, default=4, help="AR beam size")
    parser.add_argument("--length-penalty", type=float, default=1.2, help="AR length penalty")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="AR length limit / NAR slots")
    parser.add_argument("--num-candidates", type=int, default=1, help="NAR candidates rescored by the AR stream")
    parser.add_argument("--no-repeat-ngram-size", type=int, default=0, help="NAR n-gram blocking")
    parser.add_argument("--suppress-repeats", action="store_true", help="NAR: never repeat the previous token")
    parser.add_argument("--max-source-length", type=int, default=None, help="truncate longer sources (reported)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from bang_nar.pipeline import build_model, generate_texts

    model = build_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    mode = args.mode or model.config.generation_mode
    stream = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
    with stream:
        sources = [line.rstrip("\n") for line in stream]
    empty = [i + 1 for i, s in enumerate(sources) if not s.strip()]
    if empty:
        raise SystemExit(f"{args.input}: empty source on line(s) {empty[:10]}; remove them or put text there.")
    options = {"ar": {"num_beams": args.num_beams, "length_penalty": args.length_penalty,
                      "max_new_tokens": args.max_new_tokens or 64},
               "nar": {"num_candidates": args.num_candidates, "no_repeat_ngram_size": args.no_repeat_ngram_size,
                       "suppress_repeats": args.suppress_repeats, "max_new_tokens": args.max_new_tokens},
               "nar_verify": {"max_new_tokens": args.max_new_tokens}}[mode]
    texts, _, elapsed = generate_texts(model, tokenizer, sources, mode, batch_size=args.batch_size,
                                       max_source_length=args.max_source_length, **options)
    output = "".join(text + "\n" for text in texts)
    if args.output == "-":
        sys.stdout.write(output)
    else:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(output)
    print(f"{len(texts)} outputs ({mode}) in {elapsed:.2f} s, {1000 * elapsed / max(1, len(texts)):.1f} ms/sample",
          file=sys.stderr)
    return 0
