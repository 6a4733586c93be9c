"""Loading and tokenizing seq2seq pairs for BANG training and evaluation.

Three entry points:

- `load_pairs`: a Hub dataset name or local `json`/`jsonl`/`csv`/`parquet` files, or parallel source/target
  `.txt` files, read through `datasets` and returned with two string columns, `source` and `target`. Bad files
  fail early with an error that names the file, the line (or row) and a fix.
- `tokenize_pairs`: adds `input_ids`, `attention_mask` and `labels` with the tokenizer's own call, so its
  post-processor decides the special tokens (BANG: source = tokens + [SEP], labels = tokens + [SEP]). Truncation
  is counted, logged and returned in a `TokenizationReport`, never silent.
- `load_du_qg_sample`: the bundled demo sample of the Du et al. (2017) QG pairs (CC BY-SA 4.0, see
  `sample_data/du_qg/ATTRIBUTION.md`).
"""

from __future__ import annotations

import codecs
import csv
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

# Extension -> `datasets` builder name. ".txt" is handled here: one example per line, in two parallel files.
_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
SUPPORTED_EXTENSIONS = (*_BUILDERS, ".txt")

# How a parallel target file is named after its source file, tried in order on the file name's parts.
_PARALLEL_NAME_PAIRS = (("src", "tgt"), ("source", "target"), ("article", "title"))

SAMPLE_DATA_DIR = Path(__file__).parent / "sample_data"


class DataFormatError(ValueError):
    """A data file or Hub dataset lacks the shape `load_pairs` needs; the message says where, and how to fix it."""


# ----------------------------------------------------------------------------------------------------------------
# load_pairs


def load_pairs(
    source: PathLike | tuple[PathLike, PathLike],
    *,
    source_column: str = "source",
    target_column: str = "target",
    split: str | None = None,
    qg_format: bool = False,
    answer_column: str | None = None,
    qg_separator: str = "[SEP]",
    target_file: PathLike | None = None,
    dataset_config: str | None = None,
    keep_columns: Sequence[str] = (),
    **load_kwargs: Any,
) -> datasets.Dataset | datasets.DatasetDict:
    """Load source/target pairs as a `datasets.Dataset` with string columns `source` and `target`.

    Args:
        source: one of
            - a local `.json`/`.jsonl`/`.csv`/`.parquet` file with one example per record;
            - a local source `.txt` file (one example per line) whose parallel target file is `target_file`, or
              is named after it (`src-dev.txt` -> `tgt-dev.txt`, `*_source.txt` -> `*_target.txt`,
              `*.article.txt` -> `*.title.txt`), or a `(source_txt, target_txt)` pair;
            - anything else (a Hub dataset name such as `"user/name"`, or a local dataset folder) goes to
              `datasets.load_dataset`.
        source_column, target_column: the columns holding source and target text (record files and Hub
            datasets). They are renamed to `source` and `target`.
        split: Hub/folder datasets only: the split to return. `None` returns a `DatasetDict` of all splits.
        qg_format: build GLGE-style question-generation inputs, `"{answer} [SEP] {context}"`, with the context
            taken from `source_column` and the answer from `answer_column`.
        answer_column: the answer column, required when `qg_format` is set.
        qg_separator: the text between answer and context in QG inputs.
        target_file: the parallel target `.txt` file, when it cannot be inferred from the source file's name.
        dataset_config: the Hub dataset's configuration name (the second argument of `load_dataset`).
        keep_columns: further columns to keep unchanged (e.g. `references` for multi-reference evaluation).
        **load_kwargs: passed to `datasets.load_dataset` (e.g. `cache_dir`, `revision`).

    Returns:
        A `Dataset` for local files (and for a Hub dataset with `split`), else a `DatasetDict`.

    Raises:
        FileNotFoundError: a local file is missing.
        DataFormatError: unknown extension, missing column, empty or non-string value, unreadable JSON line,
            or parallel files with different line counts; the message names the file and line.
    """
    if qg_format and not answer_column:
        raise ValueError("qg_format=True needs answer_column= (the column holding the answer text).")
    if not qg_format and answer_column:
        raise ValueError(f"answer_column={answer_column!r} is only used with qg_format=True; set it or drop it.")

    if isinstance(source, (tuple, list)):
        if len(source) != 2 or target_file is not None:
            raise ValueError("Pass parallel text files as (source_txt, target_txt) or source + target_file=, not both.")
        source, target_file = source

    path = Path(os.path.expanduser(os.fspath(source)))
    if (
        path.is_file()
        or path.suffix.lower() in SUPPORTED_EXTENSIONS
        or target_file is not None
        or (not path.exists() and _looks_like_a_file_path(os.fspath(source)))
    ):
        if split not in (None, "train"):
            raise ValueError(
                f"split={split!r} applies to Hub datasets; a local file is one split. Pass that split's file instead."
            )
        if qg_format and path.suffix.lower() == ".txt":
            raise DataFormatError(
                f"{path}: QG input needs an answer column, and parallel .txt files have none. Put source, answer and "
                "target in a .jsonl/.csv file and pass answer_column=."
            )
        return _load_local(
            path,
            target_file,
            source_column,
            target_column,
            qg_format,
            answer_column,
            qg_separator,
            keep_columns,
            load_kwargs,
        )
    # A Hub dataset name or a local dataset folder: the real `load_dataset` code path.
    loaded = datasets.load_dataset(os.fspath(source), dataset_config, split=split, **load_kwargs)

    def standardize(part: datasets.Dataset, split_name: str | None) -> datasets.Dataset:
        return _standardize(
            part,
            f"{source} (split {split_name!r})",
            None,
            source_column,
            target_column,
            qg_format,
            answer_column,
            qg_separator,
            keep_columns,
        )

    if isinstance(loaded, datasets.DatasetDict):
        return datasets.DatasetDict({name: standardize(part, name) for name, part in loaded.items()})
    if not isinstance(loaded, datasets.Dataset):
        raise DataFormatError(
            f"{source}: load_dataset returned {type(loaded).__name__}; load_pairs needs a map-style Dataset "
            "(do not pass streaming=True)."
        )
    return standardize(loaded, split)


def _looks_like_a_file_path(text: str) -> bool:
    """A missing `./x.tsv` or `/data/x.tsv` is a local file to complain about, not a Hub name ("owner/name")."""
    return bool(Path(text).suffix) and (text.startswith((".", "/", "~")) or len(Path(text).parts) > 2)


def _load_local(
    path: Path,
    target_file: PathLike | None,
    source_column: str,
    target_column: str,
    qg_format: bool,
    answer_column: str | None,
    qg_separator: str,
    keep_columns: Sequence[str],
    load_kwargs: dict[str, Any],
) -> datasets.Dataset:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise DataFormatError(
            f"{path}: unknown extension {path.suffix!r}. Supported: {', '.join(SUPPORTED_EXTENSIONS)} "
            "(or a Hub dataset name). Rename the file or convert it to one of these."
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file. Check the path (relative paths start at {Path.cwd()}).")
    if suffix == ".txt" or target_file is not None:
        if target_file is not None:
            target_path = Path(os.path.expanduser(os.fspath(target_file)))
        else:
            target_path = _infer_target_file(path)
        if not target_path.is_file():
            raise FileNotFoundError(f"{target_path}: no such file (the target parallel to {path}). Pass target_file=.")
        if source_column != "source" or target_column != "target":
            logger.info("Parallel .txt files have no columns; source_column/target_column are ignored.")
        return _load_parallel_text(path, target_path, keep_columns)

    if suffix != ".parquet":
        _check_text_file(path)
    try:
        dataset = datasets.load_dataset(_BUILDERS[suffix], data_files=os.fspath(path), split="train", **load_kwargs)
    except Exception as err:  # `datasets`/pyarrow/pandas errors name no line; find the first bad one ourselves
        if suffix == ".jsonl" or suffix == ".json":
            _raise_json_location(path, err)
        if "corresponds to no data" in str(err):  # `datasets`' words for a file with a header and no rows
            raise DataFormatError(
                f"{path}: no examples (only a header or blank lines). Add one example per record."
            ) from err
        cause = err.__cause__ if isinstance(err, datasets.exceptions.DatasetGenerationError) and err.__cause__ else err
        raise DataFormatError(f"{path}: could not be read as {suffix[1:]}: {' '.join(str(cause).split())}") from err
    if len(dataset) == 0:
        raise DataFormatError(f"{path}: no examples (only a header or blank lines). Add one example per record.")
    return _standardize(
        dataset, str(path), path, source_column, target_column, qg_format, answer_column, qg_separator, keep_columns
    )


def _infer_target_file(path: Path) -> Path:
    """`src-dev.txt` -> `tgt-dev.txt`: swap the first source-ish word in the file name for its target word."""
    stem, suffix = path.name[: -len(path.suffix)], path.suffix
    parts = stem.replace("-", " - ").replace("_", " _ ").replace(".", " . ").split(" ")
    for src_word, tgt_word in _PARALLEL_NAME_PAIRS:
        for i, part in enumerate(parts):
            if part.lower() == src_word:
                parts[i] = tgt_word
                return path.with_name("".join(parts) + suffix)
    raise DataFormatError(
        f"{path}: cannot infer the parallel target file from this name (looked for "
        f"{', '.join(s for s, _ in _PARALLEL_NAME_PAIRS)} in it). Pass target_file= or a (source, target) pair."
    )


def _decode_utf8(path: Path) -> str:
    """The file's text; a `DataFormatError` naming the line of the first byte that is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataFormatError(
            f"{path} line {line}, column {column}: not UTF-8 (byte 0x{data[err.start]:02x}). Save the file as UTF-8, "
            "e.g. `iconv -f latin1 -t utf-8 IN > OUT` if it is Latin-1."
        ) from None


def _check_text_file(path: Path) -> None:
    """Refuse an empty (or all-blank) or non-UTF-8 text file with its name and line, before a parser sees it.

    Streams the file in blocks, so a large data file is not held in memory twice.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    has_text, lines_before = False, 0
    with open(path, "rb") as handle:
        while True:
            block = handle.read(1 << 20)
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError:
                _decode_utf8_block(path, block, lines_before, decoder)
            has_text = has_text or bool(text.strip())
            lines_before += block.count(b"\n")
            if not block:
                break
    if not has_text:
        raise DataFormatError(f"{path}: the file is empty. It needs one example per line (or record).")


def _decode_utf8_block(path: Path, block: bytes, lines_before: int, decoder: Any) -> None:
    """Raise the not-UTF-8 error for a block that failed to decode (bytes carried over from the last block included)."""
    pending = decoder.getstate()[0]
    data = pending + block
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = lines_before + data[: err.start].count(b"\n") + 1
        raise DataFormatError(
            f"{path} line {line}: not UTF-8 (byte 0x{data[err.start]:02x}). Save the file as UTF-8, e.g. "
            "`iconv -f latin1 -t utf-8 IN > OUT` if it is Latin-1."
        ) from None
    raise DataFormatError(f"{path}: not UTF-8 (it ends inside a character). Save the file as UTF-8.")


def _read_lines(path: Path) -> list[str]:
    # Split on "\n" only: str.splitlines() also splits on U+2028 and friends, which would break the line
    # correspondence that `wc -l` and the parallel file rely on.
    lines = _decode_utf8(path).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start an empty one
    return lines


def _load_parallel_text(source_path: Path, target_path: Path, keep_columns: Sequence[str]) -> datasets.Dataset:
    if keep_columns:
        raise ValueError(f"keep_columns={list(keep_columns)!r}: parallel .txt files have no other columns.")
    sources, targets = _read_lines(source_path), _read_lines(target_path)
    for file_path, lines in ((source_path, sources), (target_path, targets)):
        if not any(line.strip() for line in lines):
            raise DataFormatError(f"{file_path}: the file is empty. It needs one example per line.")
    if len(sources) != len(targets):
        shorter, longer = (source_path, target_path) if len(sources) < len(targets) else (target_path, source_path)
        raise DataFormatError(
            f"Parallel files differ in length: {source_path} has {len(sources)} lines, {target_path} has "
            f"{len(targets)}. {longer} line {min(len(sources), len(targets)) + 1} has no partner in {shorter}. "
            "Each source line needs exactly one target line; fix the files (check for stray or missing newlines)."
        )
    for file_path, lines in ((source_path, sources), (target_path, targets)):
        empty = [i for i, line in enumerate(lines, start=1) if not line.strip()]
        if empty:
            raise DataFormatError(
                f"{file_path} line {empty[0]}: empty line ({len(empty)} empty line(s) in all, first at line "
                f"{empty[0]}). Remove the pair on that line from both files, or give it text."
            )
    return datasets.Dataset.from_dict(
        {"source": [line.strip() for line in sources], "target": [line.strip() for line in targets]}
    )


def _raise_json_location(path: Path, err: Exception) -> None:
    """Find the first unparsable line of a JSON Lines file ourselves: pyarrow's message gives no line number."""
    if path.suffix.lower() == ".jsonl":
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as decode_error:
                    raise DataFormatError(
                        f"{path} line {line_number}, column {decode_error.colno}: not valid JSON ({decode_error.msg}). "
                        'Each line must be one JSON object, e.g. {"source": "...", "target": "..."}.'
                    ) from err
                if not isinstance(record, dict):
                    raise DataFormatError(
                        f"{path} line {line_number}: a JSON {type(record).__name__}, not an object. Each line must be "
                        'one JSON object, e.g. {"source": "...", "target": "..."}.'
                    ) from err
    else:
        try:
            with open(path, encoding="utf-8") as handle:
                json.load(handle)
        except json.JSONDecodeError as decode_error:
            raise DataFormatError(
                f"{path} line {decode_error.lineno}, column {decode_error.colno}: not valid JSON ({decode_error.msg})."
            ) from err
    raise DataFormatError(
        f"{path}: could not be read as JSON records: {err.__cause__ or err}. Use a list of objects (.json) or one "
        "object per line (.jsonl), each with the source and target columns."
    ) from err


def _standardize(
    dataset: datasets.Dataset,
    origin: str,
    path: Path | None,
    source_column: str,
    target_column: str,
    qg_format: bool,
    answer_column: str | None,
    qg_separator: str,
    keep_columns: Sequence[str],
) -> datasets.Dataset:
    """Check the columns, then return exactly `source`, `target` (+ `keep_columns`)."""
    text_columns = [source_column, target_column] + ([answer_column] if qg_format else [])
    flags = {source_column: "source_column", target_column: "target_column", answer_column: "answer_column"}
    for column in [*text_columns, *keep_columns]:
        if column not in dataset.column_names:
            flag = flags.get(column, "keep_columns")
            raise DataFormatError(
                f"{origin}: missing column {column!r} (asked for by {flag}=, CLI --{flag.replace('_', '-')}). "
                f"Available columns: {dataset.column_names}. Pass the right name, e.g. "
                f"{flag}={dataset.column_names[0]!r}."
            )
    _check_text_columns(dataset, text_columns, origin, path)

    keep = list(dict.fromkeys([*text_columns, *keep_columns]))
    dataset = dataset.select_columns(keep)
    if qg_format:
        dataset = dataset.map(
            lambda batch: {
                source_column: [
                    f"{answer.strip()} {qg_separator} {context.strip()}"
                    for answer, context in zip(batch[answer_column], batch[source_column])
                ]
            },
            batched=True,
            desc="Composing QG inputs (answer [SEP] context)",
        )
        if answer_column not in keep_columns:
            dataset = dataset.remove_columns(answer_column)
    # Rename through temporary names so swapping `source` and `target` columns works.
    renames = {source_column: "source", target_column: "target"}
    if any(old != new for old, new in renames.items()):
        clashes = [c for c in ("source", "target") if c in keep_columns and c not in renames]
        if clashes:
            raise DataFormatError(f"{origin}: keep_columns {clashes} would be overwritten by the renamed text columns.")
        dataset = dataset.rename_columns({old: f"__bang_{new}" for old, new in renames.items()})
        dataset = dataset.rename_columns({f"__bang_{new}": new for new in renames.values()})
    return dataset.select_columns(["source", "target", *[c for c in keep_columns if c not in ("source", "target")]])


def _check_text_columns(dataset: datasets.Dataset, columns: Sequence[str], origin: str, path: Path | None) -> None:
    """Every text value must be a non-empty string; report the first offending row over all columns."""
    first: tuple[int, str, int] | None = None  # (row, column, count)
    for column in columns:
        feature = dataset.features[column]
        if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
            raise DataFormatError(
                f"{origin}: column {column!r} has type {feature}, but text is needed. Pick a text column, or convert "
                "this one (one string per example; put multiple references in keep_columns instead)."
            )
        values = dataset.with_format("arrow")[column]
        if isinstance(values, pa.Table):  # some `datasets` versions return a one-column table
            values = values.column(0)
        is_bad = pc.or_(pc.is_null(values), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(values.fill_null(""))), 0))
        if isinstance(is_bad, pa.ChunkedArray):
            is_bad = is_bad.combine_chunks()
        bad_rows = pc.indices_nonzero(is_bad)
        if len(bad_rows) and (first is None or bad_rows[0].as_py() < first[0]):
            first = (bad_rows[0].as_py(), column, len(bad_rows))
    if first is not None:
        row, column, count = first
        raise DataFormatError(
            f"{origin} {_row_location(path, row)}: column {column!r} is empty or missing ({count} such row(s) in "
            "that column). Every example needs non-empty source and target text: fill in or drop those rows."
        )


def _row_location(path: Path | None, row: int) -> str:
    """Describe 0-based record `row` as a line number where the format allows one, else as a 1-based row."""
    if path is None:
        return f"row {row + 1}"
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with open(path, encoding="utf-8") as handle:
            seen = -1
            for line_number, line in enumerate(handle, start=1):
                seen += bool(line.strip())  # `datasets` skips blank lines, so count only non-blank ones
                if seen == row:
                    return f"line {line_number}"
    elif suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            next(reader, None)  # header
            start = reader.line_num + 1
            for index, _ in enumerate(reader):
                if index == row:
                    return f"line {start}"
                start = reader.line_num + 1
    return f"row {row + 1}"


# ----------------------------------------------------------------------------------------------------------------
# tokenize_pairs


@dataclass
class TokenizationReport:
    """What `tokenize_pairs` did: how many sources/targets were cut to the maximum length."""

    num_examples: int
    max_source_length: int
    max_target_length: int
    truncated_sources: int
    truncated_targets: int
    longest_source: int  # in tokens, special tokens included, before truncation
    longest_target: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.num_examples} examples; truncated {self.truncated_sources} source(s) to {self.max_source_length} "
            f"tokens (longest {self.longest_source}) and {self.truncated_targets} target(s) to "
            f"{self.max_target_length} tokens (longest {self.longest_target})"
        )


def tokenize_pairs(
    dataset: datasets.Dataset,
    tokenizer: Any,
    max_source_length: int,
    max_target_length: int,
    *,
    num_proc: int | None = None,
) -> tuple[datasets.Dataset, TokenizationReport]:
    """Add `input_ids`, `attention_mask` and `labels` to a `source`/`target` dataset; count what is truncated.

    The tokenizer's own call adds the special tokens, so the result follows its post-processor. BANG expects
    `tokens + [SEP]` on both sides (no [CLS]); every sequence is checked to end in the tokenizer's `sep_token` or
    `eos_token`, truncated ones included (the tokenizer keeps room for them).

    Args:
        dataset: a `Dataset` with string columns `source` and `target` (as returned by `load_pairs`).
        tokenizer: a `transformers` tokenizer (e.g. `BertTokenizerFast` with the bundled vocab, or the word-level
            tokenizer of `bang_nar.multimodality`).
        max_source_length, max_target_length: maximum lengths in tokens, special tokens included.
        num_proc: processes for `Dataset.map`.

    Returns:
        `(dataset, report)`: the dataset with the three new columns (text columns kept), and a
        `TokenizationReport`, which is also logged (as a warning when anything was truncated).
    """
    if isinstance(dataset, datasets.DatasetDict):
        raise TypeError("tokenize_pairs takes one Dataset; call it per split, e.g. tokenize_pairs(ds['train'], ...).")
    missing = [c for c in ("source", "target") if c not in dataset.column_names]
    if missing:
        raise DataFormatError(
            f"tokenize_pairs: dataset lacks column(s) {missing}; load it with "
            "load_pairs(..., source_column=, target_column=)."
        )
    if min(max_source_length, max_target_length) < 2:
        raise ValueError("max_source_length and max_target_length must be >= 2 (at least one token plus [SEP]).")
    end_ids = {i for i in (tokenizer.sep_token_id, tokenizer.eos_token_id) if i is not None}
    if not end_ids:
        raise ValueError("The tokenizer has neither sep_token nor eos_token; BANG sequences end with [SEP]. Set one.")

    def encode(texts: list[str], max_length: int, is_target: bool) -> tuple[dict[str, list], list[bool], list[int]]:
        call = (lambda t, **kw: tokenizer(text_target=t, **kw)) if is_target else (lambda t, **kw: tokenizer(t, **kw))
        full = call(texts, truncation=False, verbose=False)
        lengths = [len(ids) for ids in full["input_ids"]]
        is_cut = [n > max_length for n in lengths]
        cut_rows = [i for i, flag in enumerate(is_cut) if flag]
        if cut_rows:  # re-encode only the long ones, so the tokenizer itself truncates and keeps [SEP]
            cut = call([texts[i] for i in cut_rows], truncation=True, max_length=max_length, verbose=False)
            for key in full:
                for j, i in enumerate(cut_rows):
                    full[key][i] = cut[key][j]
        return full, is_cut, lengths

    def tokenize_batch(batch: dict[str, list]) -> dict[str, list]:
        src, src_cut, src_len = encode(batch["source"], max_source_length, is_target=False)
        tgt, tgt_cut, tgt_len = encode(batch["target"], max_target_length, is_target=True)
        for ids in (*src["input_ids"], *tgt["input_ids"]):
            if not ids or ids[-1] not in end_ids:
                raise ValueError(
                    f"The tokenizer produced a sequence that does not end with [SEP]/eos: {ids[:8]}...; BANG needs "
                    "source = tokens + [SEP] and labels = tokens + [SEP]. Give the tokenizer a post-processor with the "
                    "template '$A [SEP]' (see bang_nar.multimodality.build_word_tokenizer)."
                )
        return {
            "input_ids": src["input_ids"],
            "attention_mask": src["attention_mask"],
            "labels": tgt["input_ids"],
            "_source_cut": src_cut,
            "_target_cut": tgt_cut,
            "_source_len": src_len,
            "_target_len": tgt_len,
        }

    tokenized = dataset.map(tokenize_batch, batched=True, num_proc=num_proc, desc="Tokenizing pairs")
    stat_columns = ["_source_cut", "_target_cut", "_source_len", "_target_len"]
    stats = tokenized.select_columns(stat_columns).with_format("arrow")[:]
    report = TokenizationReport(
        num_examples=len(tokenized),
        max_source_length=max_source_length,
        max_target_length=max_target_length,
        truncated_sources=int(pc.sum(stats["_source_cut"]).as_py() or 0),
        truncated_targets=int(pc.sum(stats["_target_cut"]).as_py() or 0),
        longest_source=int(pc.max(stats["_source_len"]).as_py() or 0),
        longest_target=int(pc.max(stats["_target_len"]).as_py() or 0),
    )
    tokenized = tokenized.remove_columns(stat_columns)
    cls_id = getattr(tokenizer, "cls_token_id", None)
    if cls_id is not None and len(tokenized) and tokenized[0]["input_ids"][0] == cls_id:
        # Not an error (the tokenizer decides), but BANG checkpoints were trained without it.
        logger.warning(
            "Sources start with [CLS]; BANG's convention is tokens + [SEP] without [CLS] "
            "(use bang_nar.load_bang_tokenizer or a '$A [SEP]' post-processor)."
        )
    log = logger.warning if report.truncated_sources or report.truncated_targets else logger.info
    log("Tokenization: %s", report)
    return tokenized, report


# ----------------------------------------------------------------------------------------------------------------
# Bundled Du 2017 QG sample


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of `lengths` in batches of `batch_size`, shortest first: each batch pads to lengths close to its
    own, which NAR decoding pays for twice (source-length slots). Callers put results back by these indices, so the
    output order is the input order. The sort is stable (equal lengths keep their input order)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def load_du_qg_sample(split: str | None = None) -> datasets.Dataset | datasets.DatasetDict:
    """The bundled demo sample of the Du et al. (2017) sentence-level QG pairs (CC BY-SA 4.0).

    `train` is drawn from the Du dev split and `eval` from the head of the Du test split; both are tokenized,
    lowercased text as upstream (see `sample_data/du_qg/ATTRIBUTION.md`). A tiny model trained on it for minutes
    gives smoke-test scores, not paper numbers.

    Args:
        split: `"train"` or `"eval"`; `None` returns a `DatasetDict` with both.
    """
    folder = SAMPLE_DATA_DIR / "du_qg"
    splits = ("train", "eval")
    if split is not None and split not in splits:
        raise ValueError(f"split={split!r}: the Du QG sample has splits {splits}.")
    loaded = {name: load_pairs(folder / f"{name}.jsonl") for name in (splits if split is None else (split,))}
    return loaded[split] if split is not None else datasets.DatasetDict(loaded)


__all__ = [
    "DataFormatError",
    "SUPPORTED_EXTENSIONS",
    "TokenizationReport",
    "length_sorted_batches",
    "load_du_qg_sample",
    "load_pairs",
    "tokenize_pairs",
]
