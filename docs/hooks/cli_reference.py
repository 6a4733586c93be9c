"""MkDocs hook: write each `bang-nar` subcommand's `--help` into docs/cli.md at build time, from its own parser.

The page holds the marker `<!-- cli-reference -->`; this hook replaces it, so the reference cannot drift from the
code. `train` and `distill` take their flags from HfArgumentParser (every TrainingArguments field), so their full
list sits in a collapsed block.
"""

from __future__ import annotations

import argparse
import importlib
import os

MARKER = "<!-- cli-reference -->"


def _help_text(parser: argparse.ArgumentParser) -> str:
    os.environ["COLUMNS"] = "110"  # argparse wraps at the terminal width: fix it so the page does not depend on it
    return parser.format_help().rstrip()


def cli_reference() -> str:
    """Markdown: one section per subcommand, in `bang_nar.cli.SUBCOMMANDS` order."""
    from bang_nar.cli import SUBCOMMANDS, build_parser

    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    summaries = {action.dest: action.help for action in subparsers._choices_actions}
    sections = ["## Reference (generated from the parsers)", "", "```text", _help_text(parser), "```"]
    for name in SUBCOMMANDS:
        if name not in subparsers.choices:
            continue
        module = importlib.import_module(f"bang_nar.cli.{name}")
        sub = subparsers.choices[name]
        sections += ["", f"### `bang-nar {name}`", "", f"{summaries.get(name) or ''}".strip(), ""]
        if getattr(module, "_hf_parser", None) is not None:
            hf_parser = module._hf_parser()
            hf_parser.prog = f"bang-nar {name}"
            sections += [f'??? note "Every flag of `bang-nar {name}`"', "", "    ```text"]
            sections += [f"    {line}".rstrip() for line in _help_text(hf_parser).splitlines()]
            sections += ["    ```"]
        else:
            sections += ["```text", _help_text(sub), "```"]
    return "\n".join(sections) + "\n"


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown
