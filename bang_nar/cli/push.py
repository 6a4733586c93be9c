"""Upload a trained or converted model folder (weights, config, tokenizer, model card) to the Hugging Face Hub.

Needs a token with write access (--token, HF_TOKEN or `hf auth login`), checked before anything is sent. Flags take
dashes or underscores (--repo-id, --repo_id).

    bang-nar push --model out/spmd --repo-id you/bang-nar-qg-spmd
"""

import argparse

from ._args import CLIError, accept_both_spellings


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("push", help="upload model, tokenizer and card to the Hub", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="local model folder (from train or convert)")
    parser.add_argument("--repo-id", required=True, help="Hub repository, e.g. you/bang-nar-qg")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    parser.add_argument("--commit-message", default="Upload BANG model with bang-nar")
    accept_both_spellings(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bang_nar.hub import HubError, push_model

    try:
        url = push_model(args.model, args.repo_id, private=args.private, token=args.token,
                         commit_message=args.commit_message)
    except HubError as error:
        raise CLIError(str(error)) from None
    print(f"Pushed {args.model} → {url}")
    return 0
