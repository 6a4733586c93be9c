"""The whole method on a CPU in a few minutes, nothing downloaded: AR teacher → distil (k from the data) → NAR (BANG
recipe), NAR (seq-KD 1-best) and NAR (SPMD) → evaluate; prints a table and saves results.{json,md,png}. The default
task: the order-changing multi-modality variant, M = 8 (--lexical: modes differ in wording only).

    bang-nar demo
    bang-nar demo --data du-qg-sample --output-dir demo-qg
    bang-nar demo --quick

--quick is a smoke run (tiny budgets, about a minute): it checks that the pipeline runs, and its scores are near
zero by design. Flags take dashes or underscores (--output-dir, --output_dir).
"""

import argparse
import sys

from ._args import accept_both_spellings, positive_int

SMOKE_NOTE = (
    "demo --quick is a smoke run: tiny budgets check that the pipeline runs end to end; its scores mean "
    "nothing. Run `bang-nar demo` (a few minutes) for the real comparison."
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="end-to-end AR → distil → NAR/SPMD → evaluate demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output-dir", default="bang-nar-demo")
    parser.add_argument(
        "--data",
        choices=["multimodality", "du-qg-sample"],
        default="multimodality",
        help="generated multi-modality task (default) or the bundled Du 2017 QG sample",
    )
    parser.add_argument(
        "--num-modes",
        type=int,
        choices=[1, 2, 4, 8, 16],
        default=8,
        help="valid targets per source in the multi-modality task (2-16; 1-8 with --lexical)",
    )
    parser.add_argument(
        "--lexical",
        action="store_true",
        help="the lexical multi-modality task (modes differ in wording only) instead of the default "
        "order-changing variant (wording and word order)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="torch CPU threads (default 1: the tiny demo models run fastest on one thread, and "
        "several threads slow down badly when other processes share the cores)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run of the pipeline (~1 min)")
    accept_both_spellings(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bang_nar.demo import DemoSettings, run_demo

    settings = DemoSettings.quick if args.quick else DemoSettings
    if args.quick:  # said before and after the table, so nobody reads its near-zero scores as results
        print(SMOKE_NOTE, file=sys.stderr)
    unsupported = args.num_modes == (16 if args.lexical else 1)  # lexical task: M 1-8; order-changing: 2-16
    if args.data == "multimodality" and unsupported:
        raise SystemExit(
            f"bang-nar demo: --num-modes {args.num_modes} needs {'no ' if args.lexical else ''}--lexical "
            "(lexical task: 1, 2, 4, 8; order-changing variant: 2, 4, 8, 16)"
        )
    run_demo(args.output_dir, data=args.data,
             settings=settings(num_modes=args.num_modes, word_order=not args.lexical, seed=args.seed),
             threads=args.threads)  # fmt: skip
    if args.quick:
        print(SMOKE_NOTE)
    return 0
