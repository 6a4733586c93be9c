"""What the subcommands share: argument dataclasses (parsed with `HfArgumentParser`), argparse helpers that keep one
flag style (both `--foo-bar` and `--foo_bar`), and loaders that turn bad input into one-line `CLIError`s."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# Word-level tokenizers (--word_vocab_size) above this share of [UNK] in the training tokens get a warning.
UNK_WARN_RATE = 0.05


class CLIError(Exception):
    """A mistake the user fixes from the command line; `bang-nar` prints the message as one line and exits 2."""


def _integer(text: str, minimum: int, requirement: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (batch sizes, beams, candidates)."""
    return _integer(text, 1, "at least 1")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (0 switches a feature off, e.g. --no-repeat-ngram-size)."""
    return _integer(text, 0, "0 (off) or more")


def port_number(text: str) -> int:
    """argparse type: a TCP port, 1-65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {value}")
    return value


def check_writable_dir(path: str, flag: str) -> None:
    """Refuse, before any work, an output folder that cannot be created or written: it is a file, it lies under a
    file, or its nearest existing folder is read-only. Nothing is created here."""
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise CLIError(f"{flag} {path}: is a file, not a folder. Pass a folder path (it is created if missing).")
    _check_nearest_folder(target, path, flag)


def check_writable_file(path: str, flag: str) -> None:
    """Refuse, before any work, an output file that cannot be written: a folder, under a file, or read-only."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise CLIError(f"{flag} {path}: is a folder. Pass a file path, e.g. {Path(path) / 'outputs.txt'}.")
    if target.exists() and not os.access(target, os.W_OK):
        raise CLIError(f"{flag} {path}: the file is read-only. Pass another path or make it writable.")
    _check_nearest_folder(target.parent, path, flag)


def _check_nearest_folder(target: Path, path: str, flag: str) -> None:
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CLIError(f"{flag} {path}: {existing} is a file, so nothing can be written under it. Pass another path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CLIError(f"{flag} {path}: the folder {existing} is read-only. Pass a path you can write to.")


def check_counts(parser: argparse.ArgumentParser, values: object, names: tuple[str, ...], minimum: int = 1) -> None:
    """A usage error (one line) for the first field of `values` in `names` that is set and below `minimum`."""
    for name in names:
        value = getattr(values, name)
        if value is not None and value < minimum:
            parser.error(f"--{name} must be at least {minimum}, got {value}")


def hf_parser(prog: str, description: str, dataclass_types: tuple) -> argparse.ArgumentParser:
    """The HfArgumentParser of a subcommand that takes every field of `dataclass_types` as a flag (`train`,
    `distill`, `pretrain`), with one-line usage errors."""
    from transformers import HfArgumentParser

    return one_line_errors(
        HfArgumentParser(
            dataclass_types, prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
        )
    )


def parse_dataclasses(parser: argparse.ArgumentParser, argv: list[str], required: str) -> tuple:
    """`argv` into the parser's dataclasses; no arguments at all is a usage error naming the `required` flags."""
    if not argv:
        parser.exit(2, f"{parser.prog}: error: no arguments; give at least {required}\n")
    try:
        *parsed, unknown = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    except ValueError as error:  # a dataclass's __post_init__ refused a value or a combination of flags
        parser.error(" ".join(str(error).split()))
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return tuple(parsed)


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Usage errors as one line with a pointer to --help: `train`'s full usage lists every TrainingArguments field."""

    def error(message: str):
        parser.exit(2, f"{parser.prog}: error: {message} (`{parser.prog} --help` lists the flags)\n")

    parser.error = error
    return parser


def accept_both_spellings(parser: argparse.ArgumentParser) -> None:
    """Let every `--foo-bar` option also be given as `--foo_bar` (the spelling of `train`/`distill`'s flags).

    The alias is registered for parsing only, so `--help` shows one spelling per option.
    """
    for option, action in list(parser._option_string_actions.items()):
        if option.startswith("--") and "-" in option[2:]:
            parser._option_string_actions.setdefault("--" + option[2:].replace("-", "_"), action)


@dataclass
class DataArguments:
    """Where the source/target pairs come from (`bang_nar.data.load_pairs`)."""

    data: str = field(
        metadata={
            "help": "Hub dataset name, local json/jsonl/csv/parquet file, or a source .txt file "
            "with a parallel target file (src-*.txt → tgt-*.txt)."
        }
    )
    target_file: str | None = field(
        default=None, metadata={"help": "Parallel target .txt when it is not found by name."}
    )
    split: str | None = field(default=None, metadata={"help": "Split of a Hub/folder dataset (e.g. train)."})
    source_column: str = field(default="source", metadata={"help": "Column holding the source text."})
    target_column: str = field(default="target", metadata={"help": "Column holding the target text."})
    qg_format: bool = field(default=False, metadata={"help": "GLGE QG input: '{answer} [SEP] {context}'."})
    answer_column: str | None = field(default=None, metadata={"help": "Answer column for --qg_format."})
    max_source_length: int = field(default=512, metadata={"help": "Tokens kept per source (truncation is reported)."})
    max_target_length: int = field(default=128, metadata={"help": "Tokens kept per target (truncation is reported)."})
    max_samples: int | None = field(default=None, metadata={"help": "Use only the first N pairs."})


@dataclass
class ModelArguments:
    """Which model and tokenizer to start from."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Saved/converted BANG folder or Hub id. Omit to train from scratch (--model_size)."},
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Tokenizer folder; default: the model's, or BANG's BERT-uncased one from scratch."},
    )
    model_size: Literal["tiny", "small", "base"] = field(default="tiny", metadata={"help": "From-scratch size."})
    word_vocab_size: int | None = field(
        default=None,
        metadata={
            "help": "From scratch: build a word-level tokenizer "
            "with this many words from the training data "
            "instead of BERT's 30,522 pieces."
        },
    )


def check_training_arguments(parser: argparse.ArgumentParser, model_args: ModelArguments, training_args) -> None:
    """Usage errors (one line, exit 2) for the numbers and combinations of `train` / `pretrain` that Trainer would
    accept and then crash on (ZeroDivisionError) or silently reinterpret (`--max_steps -5` trains by epochs,
    `--max_steps 0` trains one step, `--num_train_epochs 0` saves an untrained model)."""
    args = training_args
    check_counts(parser, args, ("per_device_train_batch_size", "per_device_eval_batch_size",
                                "gradient_accumulation_steps"))  # fmt: skip
    check_counts(parser, model_args, ("word_vocab_size",), minimum=8)
    if args.learning_rate < 0:
        parser.error(f"--learning_rate must be 0 or more, got {args.learning_rate}")
    if args.max_steps == 0 or args.max_steps < -1:
        parser.error(
            f"--max_steps must be at least 1 (or -1, the default: train --num_train_epochs epochs), got "
            f"{args.max_steps}"
        )
    if args.max_steps == -1 and not args.num_train_epochs > 0:
        parser.error(f"--num_train_epochs must be above 0 (or give --max_steps N), got {args.num_train_epochs}")
    if args.load_best_model_at_end:
        parser.error(
            "--load_best_model_at_end needs evaluation data, which this command does not take; drop it "
            "and pick a checkpoint-N folder with `bang-nar evaluate`"
        )
    if model_args.word_vocab_size and (model_args.model_name_or_path or model_args.tokenizer_name_or_path):
        parser.error(
            "--word_vocab_size builds a new tokenizer for a model trained from scratch; a model or tokenizer "
            "path brings its own. Drop --word_vocab_size or the path"
        )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and args.world_size != launched:
        # torchrun/accelerate started several processes, but no process group formed (no GPU and no --use_cpu):
        # each would train alone and all would write the same output folder.
        parser.error(
            f"this is a launch of {launched} processes, but they run as {args.world_size} (no usable "
            "distributed backend: no GPU per process); pass --use_cpu to train them together on CPU (gloo), "
            "or start one process"
        )
    check_writable_dir(args.output_dir, "--output_dir")  # a CLIError: `bang-nar` prints it as one line


def load_data(data_args: DataArguments):
    """`load_pairs` with the CLI's options, cut to `max_samples`."""
    from bang_nar.data import load_pairs

    pairs = load_pairs(
        data_args.data,
        source_column=data_args.source_column,
        target_column=data_args.target_column,
        split=data_args.split,
        qg_format=data_args.qg_format,
        answer_column=data_args.answer_column,
        target_file=data_args.target_file,
    )
    if hasattr(pairs, "keys"):
        raise CLIError(f"--data {data_args.data}: has splits {sorted(pairs.keys())}; choose one with --split.")
    if data_args.max_samples is not None:
        pairs = pairs.select(range(min(data_args.max_samples, len(pairs))))
    return pairs


def check_model_folder(name: str, flag: str = "--model", *, tokenizer_only: bool = False) -> None:
    """Refuse, in one line, a local folder that transformers could not load without asking questions.

    A config.json without `model_type` makes `AutoTokenizer` ask the trust_remote_code [y/N] question on stdin;
    the CLI never prompts, so such a folder is an error here. Names that are not local paths are Hub ids.
    `tokenizer_only`: the folder needs no config.json (a tokenizer folder), but one it has must name its type.
    """
    path = Path(name).expanduser()
    if not path.exists():
        if name.startswith((".", "/", "~")) or name.count("/") > 1 or path.suffix:
            raise CLIError(f"{flag} {name}: no such folder. Pass the output folder of `bang-nar train` or `convert`.")
        return  # a Hub id such as "user/model"
    if not path.is_dir():
        raise CLIError(
            f"{flag} {name}: not a folder. Pass the output folder of `bang-nar train` or `convert` "
            "(for a fairseq .pt file, run `bang-nar convert` first)."
        )
    config_file = path / "config.json"
    if not config_file.is_file():
        if tokenizer_only:
            return
        raise CLIError(f"{config_file}: missing. Pass a model folder written by `bang-nar train` or `convert`.")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CLIError(f"{config_file}: not valid JSON ({error}). Re-save the model folder.") from None
    found = config.get("model_type") if isinstance(config, dict) else None
    if not found or (found != "bang" and not tokenizer_only):
        problem = f"'model_type' is {found!r}" if found else "no 'model_type'"
        raise CLIError(
            f'{config_file}: {problem}; a BANG folder needs "model_type": "bang" (folders written by '
            "`bang-nar train` or `convert` have it)."
        )


def check_model_paths(model_args: ModelArguments) -> None:
    """`check_model_folder` for --model_name_or_path and --tokenizer_name_or_path, before any data is read."""
    if model_args.model_name_or_path:
        check_model_folder(model_args.model_name_or_path, "--model_name_or_path")
    if model_args.tokenizer_name_or_path:
        check_model_folder(model_args.tokenizer_name_or_path, "--tokenizer_name_or_path", tokenizer_only=True)


def load_auto_tokenizer(name: str, flag: str = "--model", *, tokenizer_only: bool = False):
    """`AutoTokenizer.from_pretrained(name)` after `check_model_folder`, never running or asking about remote code."""
    from transformers import AutoTokenizer

    check_model_folder(name, flag, tokenizer_only=tokenizer_only)
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError) as error:  # not local, not on the Hub (or offline), or a folder without tokenizer
        # files: transformers explains in its first line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CLIError(f"{flag} {name}: cannot load a tokenizer: {first}") from None


def load_model_and_tokenizer(name: str, flag: str = "--model"):
    """A saved BANG model and its tokenizer, with one-line errors for folders that are not BANG models."""
    from bang_nar.pipeline import build_model

    tokenizer = load_auto_tokenizer(name, flag)
    return build_model(name), tokenizer


def check_source_lengths(
    sources: list[str], tokenizer, model, max_source_length: int | None, where: str, unit: str = "line"
) -> None:
    """Refuse, before generating, a source longer than the model takes unless --max-source-length truncates it.

    `where` names the input (file or stdin) and `unit` its records ("line" or "row"), so the error points at one.
    """
    if max_source_length is not None:
        return
    limit = model.config.max_position_embeddings
    lengths = [len(ids) for ids in tokenizer(list(sources), truncation=False, verbose=False)["input_ids"]]
    long = [i for i, n in enumerate(lengths) if n > limit]
    if long:
        first = long[0]
        raise CLIError(
            f"{where} {unit} {first + 1}: the source has {lengths[first]} tokens but the model takes {limit} "
            f"({len(long)} such source(s)); pass --max-source-length {limit} to truncate them explicitly."
        )


def load_tokenizer(model_args: ModelArguments, texts=None):
    """The tokenizer named by the arguments, the model's own, a word-level one from `texts`, or BANG's."""
    from bang_nar import load_bang_tokenizer

    name = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    if name is not None:
        if model_args.tokenizer_name_or_path:
            return load_auto_tokenizer(name, "--tokenizer_name_or_path", tokenizer_only=True)
        return load_auto_tokenizer(name, "--model_name_or_path")
    if model_args.word_vocab_size:
        from bang_nar.multimodality import build_word_tokenizer

        return build_word_tokenizer(texts, max_vocab_size=model_args.word_vocab_size)
    return load_bang_tokenizer()


def resolve_checkpoint(resume: str | None, command: str) -> Path | None:
    """--resume_from_checkpoint: a checkpoint-N folder, or a folder whose newest complete checkpoint-N is used (one
    with its trainer_state.json, written last; folders that lack it, from a run killed while saving, are skipped
    and named). Says which checkpoint `bang-nar COMMAND` resumes from."""
    if not resume:
        return None
    path = Path(resume).expanduser()
    if not path.is_dir():
        raise CLIError(
            f"--resume_from_checkpoint {resume}: no such folder. Pass a checkpoint-N folder of an earlier "
            "run (written with --save_strategy steps), or that run's --output_dir."
        )
    if (path / "trainer_state.json").is_file():
        return path
    steps = sorted(
        (int(match.group(1)), child)
        for child in path.iterdir()
        if child.is_dir() and (match := re.fullmatch(r"checkpoint-(\d+)", child.name))
    )
    complete = [child for _, child in steps if (child / "trainer_state.json").is_file()]
    incomplete = [child.name for _, child in steps if not (child / "trainer_state.json").is_file()]
    if not complete and incomplete:
        raise CLIError(
            f"--resume_from_checkpoint {resume}: its checkpoint folders {incomplete} are incomplete "
            "(no trainer_state.json: the run stopped while saving); start without --resume_from_checkpoint."
        )
    if not complete:
        raise CLIError(
            f"--resume_from_checkpoint {resume}: no checkpoint-N folder (with trainer_state.json) in it. "
            "Checkpoints are written with --save_strategy steps --save_steps N."
        )
    skipped = f"; skipped incomplete {incomplete}" if incomplete else ""
    print(
        f"bang-nar {command}: resuming from {complete[-1]} (the newest complete checkpoint{skipped}).", file=sys.stderr
    )
    return complete[-1]
