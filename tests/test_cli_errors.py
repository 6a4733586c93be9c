"""Issue 24: nothing a user does ends in a traceback or lost work.

User errors (bad values, paths, ports, data) end in one line naming the problem and the fix, exit 2, before any
work starts (docs/cli.md, "Errors"); `--help` and argument errors answer without importing torch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bang_nar.cli import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1"}  # fmt: skip


def one_line(capsys, argv: list[str]) -> str:
    """Run `main(argv)` in process; assert exit 2 and one error line (after any progress bars of `datasets`), no
    usage block and no traceback; return that line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2, exit_info.value.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith(f"bang-nar {argv[0]}: error: "), lines
    assert all(" examples" in line or not line.strip() for line in lines[:-1]), lines  # progress bars only
    return lines[-1]


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--model", "m", "--num-beams", "0"],
                                  ["app", "--port", "99999"]])  # fmt: skip
def test_help_and_argument_errors_do_not_import_torch(argv):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "bang_nar", *argv], check=False, env=ENV,
                            text=True, capture_output=True, timeout=120)  # fmt: skip
    assert result.returncode in (0, 2), result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported and "transformers" not in imported


TRAIN = ["train", "--data", "train.jsonl", "--output_dir", "out", "--max_steps", "2"]


@pytest.mark.parametrize("extra, message", [
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be at least 1"),
    (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be at least 1"),
    (["--learning_rate", "-1"], "--learning_rate must be 0 or more"),
    (["--max_source_length", "0"], "--max_source_length must be at least 1"),
    (["--no_such_flag", "1"], "unrecognized arguments: --no_such_flag"),
    (["--semi_nar_block_size", "4", "--train_mode", "ar"], "semi_nar_block_size applies to train_mode='semi_nar'"),
    (["--bf16", "--fp16"], "bf16"),
    (["--load_best_model_at_end"], "--load_best_model_at_end requires the save and eval strategy to match"),
    (["--load_best_model_at_end", "--eval_strategy", "steps", "--save_strategy", "steps"],
     "--load_best_model_at_end needs evaluation data"),
    (["--max_steps", "-5"], "--max_steps must be at least 1"),
    (["--max_steps", "0"], "--max_steps must be at least 1"),
    (["--max_steps", "-1", "--num_train_epochs", "0"], "--num_train_epochs must be above 0"),
    (["--model_name_or_path", "some/model", "--word_vocab_size", "100"], "--word_vocab_size builds a new tokenizer"),
])  # fmt: skip
def test_train_refuses_bad_numbers_and_conflicts_in_one_line(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    error = one_line(capsys, TRAIN + extra)
    assert message in error
    assert not (tmp_path / "out").exists()


def _unwritable_paths(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Output paths that cannot be written, with the words their error must contain."""
    (tmp_path / "a_file").write_text("x")
    paths = {"a file": (str(tmp_path / "a_file"), "is a file"),
             "under a file": (str(tmp_path / "a_file" / "sub"), "is a file, so nothing can be written under it")}  # fmt: skip
    if os.geteuid() != 0:  # root writes anywhere: a read-only folder only refuses other users
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        paths["read-only"] = (str(tmp_path / "ro" / "out"), "is read-only")
    return paths


@pytest.mark.parametrize("command", ["train", "distill", "evaluate", "pretrain"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, command):
    for path, words in _unwritable_paths(tmp_path).values():
        argv = {"train": ["train", "--data", "missing.jsonl", "--output_dir", path],
                "distill": ["distill", "--model", "m", "--data", "missing.jsonl", "--output_dir", path],
                "evaluate": ["evaluate", "--model", "m", "--data", "missing.jsonl", "--output-dir", path],
                "pretrain": ["pretrain", "--data", "missing.txt", "--output_dir", path]}[command]  # fmt: skip
        error = one_line(capsys, argv)
        assert words in error and path in error


def test_generate_checks_its_output_path_before_anything_else(tmp_path, capsys):
    paths = _unwritable_paths(tmp_path)
    del paths["a file"]  # an output file may exist: it is replaced
    for path, words in paths.values():
        error = one_line(capsys, ["generate", "--model", "no-such-model", "--input", "missing.txt", "--output", path])
        assert words in error, error
    (tmp_path / "folder").mkdir()
    assert "is a folder" in one_line(capsys, ["generate", "--model", "m", "--output", str(tmp_path / "folder")])
    assert "is a folder" in one_line(capsys, ["generate", "--model", "m", "--input", str(tmp_path / "folder")])


@pytest.mark.parametrize("argv, message", [
    (["generate", "--model", "m", "--no-repeat-ngram-size", "-1"], "must be 0 (off) or more"),
    (["evaluate", "--model", "m", "--data", "d", "--output-dir", "o", "--no-repeat-ngram-size", "-1"],
     "must be 0 (off) or more"),
    (["generate", "--model", "m", "--mode", "nar", "--num-beams", "4"], "--num-beams applies to --mode ar only"),
    (["generate", "--model", "m", "--mode", "ar", "--num-candidates", "2"], "--num-candidates applies to --mode nar"),
    (["generate", "--model", "m", "--mode", "nar", "--block-size", "2"], "--block-size applies to --mode semi_nar"),
    (["app", "--port", "99999"], "a port is 1-65535"),
    (["convert", "x.pt", "out", "--max-source-positions", "-1"], "must be at least 1"),
    (["app", "--max-upload-mb", "0"], "must be above 0"),
    (["distill", "--model", "m", "--data", "d", "--output_dir", "o", "--max_source_length", "0"],
     "--max_source_length must be at least 1"),
    (["pretrain", "--data", "d.txt", "--output_dir", "o", "--mask_ratio", "2"], "--mask_ratio must be in [0, 1]"),
])  # fmt: skip
def test_option_values_are_refused_in_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert message in one_line(capsys, argv)
    assert list(tmp_path.iterdir()) == []


def test_app_refuses_a_busy_port_before_loading_a_model(capsys):
    import socket

    pytest.importorskip("gradio")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        error = one_line(capsys, ["app", "--model", "no-such-model", "--port", str(port)])
    assert f"--port {port}: cannot listen there" in error


def test_pretrain_on_an_empty_file_is_one_line(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    error = one_line(capsys, ["pretrain", "--data", str(tmp_path / "empty.txt"), "--output_dir", str(tmp_path / "o"),
                              "--max_steps", "1", "--use_cpu", "--report_to", "none"])  # fmt: skip
    assert "empty.txt" in error
    assert not (tmp_path / "o").exists()


def test_a_dataset_with_several_splits_needs_split(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text('{"source": "a b", "target": "c d"}\n')
    error = one_line(capsys, ["evaluate", "--model", "m", "--data", str(folder), "--output-dir", str(tmp_path / "o")])
    assert "choose one with --split" in error


def test_a_multi_process_launch_without_a_backend_refuses_in_one_line(tmp_path):
    """`torchrun --nproc_per_node 2 -m bang_nar train` on CPU without --use_cpu: each process would train alone and
    write the same folder; each refuses instead, before any work."""
    env = {**ENV, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "bang_nar", "train", "--data", "d.jsonl", "--output_dir", "out"],
                            cwd=tmp_path, env=env, text=True, capture_output=True, timeout=300, check=False)  # fmt: skip
    output = result.stdout + result.stderr
    refusals = [line for line in output.splitlines() if "this is a launch of 2 processes, but they run as 1" in line]
    assert len(refusals) == 2 and all("--use_cpu" in line for line in refusals), output[-3000:]
    assert "bang_nar/" not in output  # no traceback through our code (torchrun reports the exit codes itself)
    assert result.returncode != 0 and not (tmp_path / "out").exists()
