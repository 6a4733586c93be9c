"""Issue 24, property-based: generated malformed data files and option values thrown at the CLI in process
(`main([...])`). Every case must end in exit 2, one error line (after any `datasets` progress bars), no traceback,
and nothing written. The model folder is a stub (a config.json naming BANG, no weights or tokenizer), so a case that
passes every check on its data still stops, when the model loads, with a one-line error: no case trains or decodes."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bang_nar.cli import main

TRIED = {"data": 0, "options": 0}
# derandomize: the same cases on every run (a CI failure reproduces); database=None: no .hypothesis folder is written.
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True,
                database=None)


def assert_one_line_refusal(argv: list[str], folder: Path) -> None:
    before = sorted(folder.rglob("*"))
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()), contextlib.chdir(folder):
        try:
            code = main(argv)
        except SystemExit as exit_info:
            code = exit_info.code
    lines = [line for line in stderr.getvalue().strip().splitlines() if line.strip()]
    assert code == 2, (argv, stderr.getvalue()[-2000:])
    assert lines and lines[-1].startswith(f"bang-nar {argv[0]}: error: "), (argv, lines)
    assert all(" examples" in line for line in lines[:-1]), (argv, lines)  # progress bars only
    assert "Traceback" not in stderr.getvalue()
    assert sorted(folder.rglob("*")) == before, argv  # nothing written


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=6)  # fmt: skip
records = st.dictionaries(st.sampled_from(["source", "target", "text", "src", ""]), json_values, max_size=3)
jsonl_text = st.lists(st.one_of(records.map(lambda r: __import__("json").dumps(r)), st.text(max_size=20)),
                      max_size=4).map("\n".join)  # fmt: skip
data_files = st.one_of(
    st.tuples(st.just("data.jsonl"), jsonl_text.map(str.encode)),
    st.tuples(st.just("data.csv"), st.text(alphabet="ab,\"\n\r ", max_size=30).map(str.encode)),
    st.tuples(st.just("data.json"), st.binary(max_size=40)),
    st.tuples(st.just("src-data.txt"), st.binary(max_size=40)),
)


@FUZZ
@given(data=data_files, command=st.sampled_from(["train", "evaluate", "distill", "generate", "pretrain"]))
def test_malformed_data_files_are_refused_in_one_line(data, command):
    name, content = data
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root)
        (folder / "model").mkdir()
        (folder / "model" / "config.json").write_text('{"model_type": "bang"}')
        (folder / name).write_bytes(content)
        if name.startswith("src-"):
            (folder / "tgt-data.txt").write_bytes(content[::-1])
        argv = {"train": ["train", "--data", name, "--output_dir", "out", "--model_name_or_path", "./model"],
                "evaluate": ["evaluate", "--model", "./model", "--data", name, "--output-dir", "out"],
                "distill": ["distill", "--model", "./model", "--data", name, "--output_dir", "out"],
                "generate": ["generate", "--model", "./model", "--input", name, "--output", "out.txt"],
                "pretrain": ["pretrain", "--data", name, "--output_dir", "out", "--model_name_or_path", "./model",
                             "--max_steps", "1"]}[command]  # fmt: skip
        assert_one_line_refusal(argv, folder)
    TRIED["data"] += 1


numbers = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True).map(str),
                    st.sampled_from(["", "x", "1e999", "-0", "nan", "0x10", "1_000"]))  # fmt: skip
OPTIONS = {
    "train": ["--per_device_train_batch_size", "--gradient_accumulation_steps", "--learning_rate", "--max_steps",
              "--num_train_epochs", "--max_source_length", "--max_target_length", "--max_samples", "--word_vocab_size",
              "--semi_nar_block_size", "--kd_alpha", "--pace_q0", "--nar_ratio"],
    "distill": ["--num_beams", "--num_return_sequences", "--max_new_tokens", "--batch_size", "--max_source_length"],
    "generate": ["--num-beams", "--length-penalty", "--max-new-tokens", "--num-candidates", "--no-repeat-ngram-size",
                 "--max-source-length", "--block-size", "--batch-size"],
    "evaluate": ["--num-beams", "--max-new-tokens", "--num-candidates", "--no-repeat-ngram-size", "--batch-size",
                 "--max-samples"],
    "app": ["--port", "--concurrency", "--max-queue", "--max-chars", "--max-upload-mb"],
    "pretrain": ["--max_documents", "--max_source_length", "--span_block_size", "--mask_ratio", "--mask_prob",
                 "--num_streams", "--max_steps", "--per_device_train_batch_size"],
    "convert": ["--max-source-positions", "--max-target-positions", "--max-len-b"],
}  # fmt: skip
BASE = {
    "train": ["train", "--data", "missing.jsonl", "--output_dir", "out", "--model_name_or_path", "./no-model"],
    "distill": ["distill", "--model", "./no-model", "--data", "missing.jsonl", "--output_dir", "out"],
    "generate": ["generate", "--model", "./no-model", "--input", "missing.txt", "--output", "out.txt", "--mode", "ar"],
    "evaluate": ["evaluate", "--model", "./no-model", "--data", "missing.jsonl", "--output-dir", "out"],
    "app": ["app", "--model", "./no-model", "--port", "1"],
    "pretrain": ["pretrain", "--data", "missing.txt", "--output_dir", "out", "--model_name_or_path", "./no-model"],
    "convert": ["convert", "missing.pt", "out"],
}  # fmt: skip
option_cases = st.sampled_from(sorted(OPTIONS)).flatmap(
    lambda command: st.tuples(st.just(command), st.lists(st.tuples(st.sampled_from(OPTIONS[command]), numbers),
                                                         min_size=1, max_size=3)))  # fmt: skip


@settings(FUZZ, max_examples=150)
@given(case=option_cases)
def test_option_values_are_refused_in_one_line(case):
    command, options = case
    argv = list(BASE[command])
    for flag, value in options:
        argv += [flag, value] if not value.startswith("-") else [f"{flag}={value}"]
    with tempfile.TemporaryDirectory() as root:
        assert_one_line_refusal(argv, Path(root))
    TRIED["options"] += 1


def test_report_how_many_cases_were_tried():
    """Runs after the two properties (file order): the counts go to the test log (`pytest -s`) and must be real."""
    print(f"\nCLI fuzz: {TRIED['data']} malformed data files, {TRIED['options']} option-value cases")
    assert TRIED["data"] >= 80 and TRIED["options"] >= 120
