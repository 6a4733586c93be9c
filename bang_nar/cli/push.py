"""Upload a trained or converted model folder (weights, config, tokenizer, model card) to the Hugging Face Hub.

Needs a token with write access (--token, HF_TOKEN or `hf auth login`), checked before anything is sent. Flags take
dashes or underscores (--repo-id, --repo_id). --space also creates a Gradio Space (app.py, requirements.txt,
README.md) serving the `bang-nar app` page on the pushed model; its id defaults to REPO_ID-demo.

    bang-nar push --model out/spmd --repo-id you/bang-nar-qg-spmd
    bang-nar push --model out/spmd --repo-id you/bang-nar-qg-spmd --space
"""

import argparse

from ._args import CLIError, accept_both_spellings


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "push",
        help="upload model, tokenizer and card to the Hub",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="local model folder (from train or convert)")
    parser.add_argument("--repo-id", required=True, help="Hub repository, e.g. you/bang-nar-qg")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    parser.add_argument("--commit-message", default="Upload BANG model with bang-nar")
    parser.add_argument(
        "--space",
        nargs="?",
        const="",
        default=None,
        metavar="SPACE_ID",
        help="also create a Gradio Space with the `bang-nar app` page (default id: REPO_ID-demo)",
    )
    parser.add_argument(
        "--space-requirement",
        default=None,
        help="pip line the Space installs this package with (default: bang-nar[app]==this version)",
    )
    accept_both_spellings(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bang_nar.hub import HubError, push_model, push_space

    space_id = (args.space or f"{args.repo_id}-demo") if args.space is not None else None
    try:
        url = push_model(
            args.model, args.repo_id, private=args.private, token=args.token, commit_message=args.commit_message
        )
        print(f"Pushed {args.model} → {url}")
        if space_id is not None:
            space_url = push_space(
                args.repo_id, space_id, private=args.private, token=args.token, requirement=args.space_requirement
            )
            print(f"Space {space_id} (bang-nar app on {args.repo_id}) → {space_url}")
    except HubError as error:
        raise CLIError(str(error)) from None
    return 0
