"""`bang-nar` command line: one subcommand per module, each with `add_parser(subparsers)` and `run(args) -> int`.

bang-nar --help
bang-nar demo
bang-nar convert checkpoint.pt ./bang-hf
"""

import argparse
import importlib
import sys

SUBCOMMANDS = ["convert", "train", "distill", "evaluate", "generate", "push", "demo", "pretrain", "app"]


def build_parser() -> argparse.ArgumentParser:
    """The `bang-nar` parser; every usage error is one line with a pointer to `--help` (docs/cli.md, "Errors")."""
    from ._args import one_line_errors

    parser = one_line_errors(
        argparse.ArgumentParser(prog="bang-nar", description="BANG AR/NAR models and SPMD fine-tuning.")
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"bang_nar.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"bang_nar.cli.{name}":
                raise
            continue  # subcommand not built in this version
        module.add_parser(subparsers)
        if name in subparsers.choices:
            one_line_errors(subparsers.choices[name])
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace | None:
    """The subcommand's namespace (flags of `passthrough` subcommands left in `args.args` for HfArgumentParser;
    other unknown flags are an argparse error), or None when no COMMAND is named."""
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        return None
    if getattr(args, "passthrough", False):
        args.args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a whole command line without running it (argparse errors exit 2, `--help` exits 0).

    `train` and `distill` hand their flags to HfArgumentParser (one flag per TrainingArguments field); their parsed
    dataclasses are in `args.parsed`.
    """
    parser = build_parser()
    args = _parse(parser, argv)
    if args is None:
        parser.print_help(sys.stderr)
        parser.exit(2, "bang-nar: error: name a COMMAND.\n")
    if getattr(args, "passthrough", False):
        args.parsed = args.parse(args.args)
    return args


def main(argv: list[str] | None = None) -> int:
    from ._args import CLIError

    parser = build_parser()
    args = _parse(parser, argv)
    if args is None:
        parser.print_help()
        return 2
    import bang_nar

    bang_nar.register_auto_classes()  # once the arguments are checked: `--help` and usage errors skip torch
    try:
        return int(args.run(args) or 0)
    except CLIError as error:
        parser.exit(2, f"bang-nar {args.command}: error: {error}\n")
    except ImportError as error:
        from bang_nar._extras import MissingExtraError

        if not isinstance(error, MissingExtraError):  # a missing extra is the user's to install: one line, no traceback
            raise
        parser.exit(2, f"bang-nar {args.command}: error: {error}\n")
    except (ValueError, FileNotFoundError) as error:
        from bang_nar.data import DataFormatError

        # Bad input files and incomplete model folders are the user's to fix: their messages name the file and the
        # fix, so print one line instead of a traceback. Other errors keep their traceback.
        if not isinstance(error, (DataFormatError, FileNotFoundError)):
            raise
        parser.exit(2, f"bang-nar {args.command}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
