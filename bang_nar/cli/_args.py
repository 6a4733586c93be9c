"""Argument dataclasses shared by the subcommands that take data and a model (parsed with `HfArgumentParser`)."""

from dataclasses import dataclass, field


@dataclass
class DataArguments:
    """Where the source/target pairs come from (`bang_nar.data.load_pairs`)."""

    data: str = field(metadata={"help": "Hub dataset name, local json/jsonl/csv/parquet file, or a source .txt file "
                                        "with a parallel target file (src-*.txt → tgt-*.txt)."})
    target_file: str | None = field(default=None, metadata={"help": "Parallel target .txt when it is not found by name."})
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

    model_name_or_path: str | None = field(default=None, metadata={"help": "Saved/converted BANG folder or Hub id. "
                                                                           "Omit to train from scratch (--model_size)."})
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Tokenizer folder; default: the model's, "
                                                                               "or BANG's BERT-uncased one from scratch."})
    model_size: str = field(default="tiny", metadata={"help": "From-scratch size: tiny, small or base."})
    word_vocab_size: int | None = field(default=None, metadata={"help": "From scratch: build a word-level tokenizer "
                                                                        "with this many words from the training data "
                                                                        "instead of BERT's 30,522 pieces."})


def load_data(data_args: DataArguments):
    """`load_pairs` with the CLI's options, cut to `max_samples`."""
    from bang_nar.data import load_pairs

    pairs = load_pairs(
        data_args.data, source_column=data_args.source_column, target_column=data_args.target_column,
        split=data_args.split, qg_format=data_args.qg_format, answer_column=data_args.answer_column,
        target_file=data_args.target_file,
    )
    if hasattr(pairs, "keys"):
        raise ValueError(f"{data_args.data} has splits {sorted(pairs.keys())}; choose one with --split.")
    if data_args.max_samples is not None:
        pairs = pairs.select(range(min(data_args.max_samples, len(pairs))))
    return pairs


def load_tokenizer(model_args: ModelArguments, texts=None):
    """The tokenizer named by the arguments, the model's own, a word-level one from `texts`, or BANG's."""
    from transformers import AutoTokenizer

    from bang_nar import load_bang_tokenizer

    name = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    if name is not None:
        return AutoTokenizer.from_pretrained(name)
    if model_args.word_vocab_size:
        from bang_nar.multimodality import build_word_tokenizer

        return build_word_tokenizer(texts, max_vocab_size=model_args.word_vocab_size)
    return load_bang_tokenizer()
