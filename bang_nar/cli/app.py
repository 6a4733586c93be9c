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
import socket
import sys

from ._args import CLIError, accept_both_spellings, port_number, positive_int

INSTALL_HINT = 'Gradio is not installed; install the app extra: pip install "bang-nar[app]"'


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "app",
        help="web page comparing the decoding modes of a model (Gradio)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default=None,
        help="BANG model folder or Hub id (default: ./bang-nar-demo/nar_spmd from `bang-nar demo`)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=port_number, default=7860)
    parser.add_argument("--concurrency", type=positive_int, default=1, help="decodes run at the same time")
    parser.add_argument("--max-queue", type=positive_int, default=64, help="requests that may wait in the queue")
    parser.add_argument(
        "--max-chars",
        type=positive_int,
        default=10_000,
        help="characters of a source read (the rest is cut before tokenizing; the page says so)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=_positive_float,
        default=2.0,
        help="largest .txt the file tab decodes (bigger uploads are refused unread)",
    )
    accept_both_spellings(parser)
    parser.set_defaults(run=run)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def check_port_free(host: str, port: int) -> None:
    """Refuse, before the model loads, an address this process cannot listen on (busy port, unknown host)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
    except OSError as error:
        raise CLIError(
            f"--host {host} --port {port}: cannot listen there ({error.strerror or error}); pass another "
            "--port (or stop what uses it)."
        ) from None


def run(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise CLIError(INSTALL_HINT)
    check_port_free(args.host, args.port)
    from bang_nar.app import DEMO_MODEL, build_app, default_model_path

    from ._args import check_model_folder, load_model_and_tokenizer

    model_path = args.model or default_model_path()
    if model_path is None:
        raise CLIError(
            f"no --model given and no demo model in ./{DEMO_MODEL.as_posix()}; make it with "
            "`bang-nar demo --quick` (or pass --model DIR_OR_HUB_ID)."
        )
    check_model_folder(str(model_path))  # before "Loading": a wrong path is one line
    print(f"Loading {model_path} ...", file=sys.stderr)
    model, tokenizer = load_model_and_tokenizer(str(model_path))
    page = build_app(
        model_path,
        model=model,
        tokenizer=tokenizer,
        concurrency_limit=args.concurrency,
        max_queue=args.max_queue,
        max_chars=args.max_chars,
        max_upload_mb=args.max_upload_mb,
    )
    print(f"Serving {model_path} on http://{args.host}:{args.port} (Ctrl+C stops)", file=sys.stderr)
    page.launch(server_name=args.host, server_port=args.port, share=False, ssr_mode=False, quiet=True, show_error=True)
    return 0
