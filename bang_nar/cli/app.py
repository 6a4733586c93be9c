"""Serve a local web page that decodes a source with every decoding mode of one model, side by side: outputs, ms per
mode, speed-up vs AR beam, NAR words that differ from AR greedy, nar_verify's AR passes; a tab decodes a .txt file
to a CSV.

Needs the `app` extra (Gradio): pip install "bang-nar[app]". Without --model it serves the SPMD model that
`bang-nar demo` saved in ./bang-nar-demo. The model loads once; requests queue (--concurrency at a time). Flags
take dashes or underscores (--max-queue, --max_queue).

    bang-nar demo --quick && bang-nar app
    bang-nar app --model out/spmd --port 7861
"""

import argparse
import sys

from ._args import CLIError, accept_both_spellings, positive_int

INSTALL_HINT = 'Gradio is not installed; install the app extra: pip install "bang-nar[app]"'


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("app", help="web page comparing the decoding modes of a model (Gradio)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="BANG model folder or Hub id (default: ./bang-nar-demo/nar_spmd from `bang-nar demo`)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=positive_int, default=7860)
    parser.add_argument("--concurrency", type=positive_int, default=1, help="decodes run at the same time")
    parser.add_argument("--max-queue", type=positive_int, default=64, help="requests that may wait in the queue")
    accept_both_spellings(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise CLIError(INSTALL_HINT)
    from bang_nar.app import DEMO_MODEL, build_app, default_model_path

    from ._args import load_model_and_tokenizer

    model_path = args.model or default_model_path()
    if model_path is None:
        raise CLIError(f"no --model given and no demo model in ./{DEMO_MODEL.as_posix()}; make it with "
                       "`bang-nar demo --quick` (or pass --model DIR_OR_HUB_ID).")
    print(f"Loading {model_path} ...", file=sys.stderr)
    model, tokenizer = load_model_and_tokenizer(str(model_path))
    page = build_app(model_path, model=model, tokenizer=tokenizer, concurrency_limit=args.concurrency,
                     max_queue=args.max_queue)
    print(f"Serving {model_path} on http://{args.host}:{args.port} (Ctrl+C stops)", file=sys.stderr)
    page.launch(server_name=args.host, server_port=args.port, share=False, ssr_mode=False, quiet=True,
                show_error=True)
    return 0
