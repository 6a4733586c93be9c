"""Sequence-level distillation: add the AR stream's beam-search targets to a dataset (with provenance).

Shards across processes under `accelerate launch` / `torchrun`, resumable, merged back in order; progress on
stderr. Flags take underscores or dashes (--num_beams, --num-beams).

    bang-nar distill --model out/ar --data train.jsonl --output_dir out/distilled

By default the beam is 16 wide and each source keeps the hypotheses that hold 95% of the beam's probability
(k from the data, docs/spmd.md), less any that repeats a more probable kept one in half of its slots or more
(distinct modes): as many targets as the teacher has distinct likely outputs, at most 16.
"""

import argparse
from dataclasses import dataclass, field

# = bang_nar.trainer.sequence_kd.DEFAULT_NUM_BEAMS / DEFAULT_PROBABILITY_MASS / DEFAULT_MIN_DISTANCE
# (tests/test_sequence_kd.py checks); literals here because importing the trainer (torch) would slow down every
# `bang-nar` command.
DEFAULT_NUM_BEAMS = 16
DEFAULT_PROBABILITY_MASS = 0.95
DEFAULT_MIN_DISTANCE = 0.5


@dataclass
class DistillArguments:
    model: str = field(metadata={"help": "AR-fine-tuned BANG model folder or Hub id (the teacher)."})
    output_dir: str = field(metadata={"help": "Writes OUTPUT_DIR/dataset and OUTPUT_DIR/provenance.json."})
    num_beams: int = field(
        default=DEFAULT_NUM_BEAMS, metadata={"help": "Beam size (the most targets kept per source)."}
    )
    length_penalty: float = field(default=1.2, metadata={"help": "Beam-search length penalty."})
    num_return_sequences: int | None = field(
        default=None,
        metadata={
            "help": "k-best targets kept per source (default: the beam size). The SPMD student picks, per "
            "sample, the one closest to its own mode; k = 1 keeps the teacher's mode spread."
        },
    )
    probability_mass: float = field(
        default=DEFAULT_PROBABILITY_MASS,
        metadata={
            "help": "k from the data: of those k, keep per source the most probable hypotheses holding this "
            "share of their probability (teacher-forced log-probs). 1 keeps all k."
        },
    )
    min_distance: float = field(
        default=DEFAULT_MIN_DISTANCE,
        metadata={
            "help": "Distinct modes: drop a target that differs from a more probable kept one in fewer than this "
            "share of its slots (a slot-wise mix of two modes, or a near-copy). 0 keeps them."
        },
    )
    kd_top_n: int | None = field(
        default=None,
        metadata={
            "help": "Also store, for every kept target, the teacher's N most probable tokens and their log-probs at "
            "each position (columns kd_top_ids, kd_top_log_probs; float16 log-probs, 6 bytes per entry), for "
            "`bang-nar train --kd_target stored`, which then runs no teacher pass (docs/spmd.md#stored-kd). "
            "Default: none stored."
        },
    )
    max_new_tokens: int = field(default=64, metadata={"help": "Longest distilled target."})
    batch_size: int = field(default=32, metadata={"help": "Sources per generate call (one resumable chunk)."})
    no_resume: bool = field(default=False, metadata={"help": "Recompute chunks of an earlier run."})


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "distill", help="AR beam-search targets for sequence KD / SPMD", add_help=False, description=__doc__
    )
    parser.set_defaults(run=run, parse=parse, passthrough=True)


def _hf_parser():
    from ._args import DataArguments, hf_parser

    return hf_parser("bang-nar distill", __doc__, (DistillArguments, DataArguments))


def parse(argv: list[str]):
    """`(distill_args, data_args)` from the command line, numbers checked; no arguments is a usage error."""
    from ._args import check_counts, check_writable_dir, parse_dataclasses

    parser = _hf_parser()
    distill_args, data_args = parse_dataclasses(parser, argv, "--model, --data and --output_dir.")
    if distill_args.num_return_sequences is None:  # the default: the whole beam (k-best lists, issue 10)
        distill_args.num_return_sequences = distill_args.num_beams
    check_counts(
        parser, distill_args, ("num_beams", "num_return_sequences", "max_new_tokens", "batch_size", "kd_top_n")
    )
    check_counts(parser, data_args, ("max_source_length", "max_target_length", "max_samples"))
    if not 0.0 < distill_args.probability_mass <= 1.0:
        parser.error(
            f"--probability_mass must be in (0, 1], got {distill_args.probability_mass}; 1 keeps every hypothesis"
        )
    if not 0.0 <= distill_args.min_distance <= 1.0:
        parser.error(f"--min_distance must be in [0, 1], got {distill_args.min_distance}; 0 keeps near-copies")
    if distill_args.num_return_sequences > distill_args.num_beams:
        parser.error(
            f"--num_return_sequences ({distill_args.num_return_sequences}) cannot exceed --num_beams "
            f"({distill_args.num_beams}); raise --num_beams"
        )
    check_writable_dir(distill_args.output_dir, "--output_dir")
    return distill_args, data_args


def run(args: argparse.Namespace) -> int:
    from bang_nar.pipeline import prepare_dataset
    from bang_nar.trainer import distill_dataset
    from bang_nar.trainer.sequence_kd import StaleChunksError

    from ._args import CLIError, load_data, load_model_and_tokenizer

    distill_args, data_args = parse(args.args)
    data = load_data(data_args)  # first: a bad data file is reported before the model loads
    model, tokenizer = load_model_and_tokenizer(distill_args.model)
    data = prepare_dataset(data, tokenizer, data_args.max_source_length, data_args.max_target_length)
    if distill_args.kd_top_n is not None and distill_args.kd_top_n > model.config.vocab_size:
        raise CLIError(
            f"--kd_top_n {distill_args.kd_top_n} exceeds the teacher's vocabulary ({model.config.vocab_size} tokens); "
            "use at most that"
        )
    try:
        result = distill_dataset(
            model,
            data,
            distill_args.output_dir,
            num_beams=distill_args.num_beams,
            length_penalty=distill_args.length_penalty,
            num_return_sequences=distill_args.num_return_sequences,
            max_new_tokens=distill_args.max_new_tokens,
            batch_size=distill_args.batch_size,
            teacher_name=distill_args.model,
            probability_mass=None if distill_args.probability_mass == 1.0 else distill_args.probability_mass,
            min_distance=distill_args.min_distance or None,
            kd_top_n=distill_args.kd_top_n,
            tokenizer=tokenizer,
            resume=not distill_args.no_resume,
        )
    except StaleChunksError as error:
        raise CLIError(str(error)) from None
    print(
        f"Distilled {len(result)} examples with {distill_args.model} (beam {distill_args.num_beams}, "
        f"k={distill_args.num_return_sequences}) → {distill_args.output_dir}"
    )
    if distill_args.probability_mass < 1.0 or distill_args.min_distance > 0:
        kept = sum(len(c) for c in result["kd_labels"]) / max(len(result), 1)
        print(
            f"k from the data: {kept:.2f} targets per source on average (--probability_mass "
            f"{distill_args.probability_mass}, --min_distance {distill_args.min_distance})"
        )
    if distill_args.kd_top_n is not None:
        print(
            f"Stored the teacher's top-{distill_args.kd_top_n} log-probs of every target position (kd_top_ids, "
            "kd_top_log_probs): train with --kd_target stored to skip the teacher pass"
        )
    return 0
