"""`bang-nar` subcommands end to end on real small files: every `--help`, and one tiny real run of each.

The pipeline runs as a user would (`python -m bang_nar ...` in a subprocess): train AR → distill → train NAR with
the `spmd` preset → evaluate (nar, ar, nar_verify) → generate, plus `demo --quick`. One AR model and one SPMD model
are shared by the module (module-scoped fixtures), so the whole file stays within a few minutes on 2 busy cores.
`convert` is run in tests/test_conversion.py; `push` against a mocked Hub in tests/test_hub_cards.py.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from bang_nar.cli import SUBCOMMANDS, build_parser, main, parse_args
from bang_nar.multimodality import make_multimodality_task

# One thread per process: tiny models run fastest so, and several threads thrash a busy 2-core runner.
# Offline flags: nothing in these runs may touch the network.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
       "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}  # fmt: skip
TINY_TRAIN = ["--max_steps", "3", "--per_device_train_batch_size", "8", "--report_to", "none", "--use_cpu",
              "--save_strategy", "no", "--disable_tqdm", "true"]  # fmt: skip


def bang_nar(*args: str, cwd: Path, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m bang_nar ARGS` in `cwd`; on failure show its output in the assertion."""
    result = subprocess.run([sys.executable, "-m", "bang_nar", *args], cwd=cwd, env=ENV, input=stdin, text=True,
                            capture_output=True, timeout=600)  # fmt: skip
    if check:
        assert result.returncode == 0, f"bang-nar {' '.join(args)} failed:\n{result.stdout}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """train.jsonl (64 pairs) and eval.jsonl (8 pairs, with all valid `references`) of the multi-modality task."""
    root = tmp_path_factory.mktemp("cli")
    task = make_multimodality_task(2, 64, 8, seed=0)
    task.train.to_json(str(root / "train.jsonl"))
    task.eval.to_json(str(root / "eval.jsonl"))
    return root


@pytest.fixture(scope="module")
def ar_run(workdir) -> subprocess.CompletedProcess:
    return bang_nar("train", "--data", "train.jsonl", "--output_dir", "ar", "--train_mode", "ar",
                    "--word_vocab_size", "500", *TINY_TRAIN, cwd=workdir)  # fmt: skip


@pytest.fixture(scope="module")
def distill_run(workdir, ar_run) -> subprocess.CompletedProcess:
    return bang_nar("distill", "--model", "ar", "--data", "train.jsonl", "--output_dir", "distilled",
                    "--num_beams", "2", "--max_new_tokens", "16", cwd=workdir)  # fmt: skip


@pytest.fixture(scope="module")
def spmd_run(workdir, distill_run) -> subprocess.CompletedProcess:
    return bang_nar("train", "--model_name_or_path", "ar", "--data", "distilled", "--output_dir", "spmd",
                    "--train_mode", "nar", "--spmd_preset", "spmd", *TINY_TRAIN, cwd=workdir)  # fmt: skip


# ---- help -------------------------------------------------------------------------------------------------------

HELP_MENTIONS = {
    "convert": ["--load-sep", "bang-nar convert"],
    "train": ["--train_mode", "--semi_nar_block_size", "--spmd_preset", "--kd_alpha", "--pace_mode", "--learning_rate", "--word_vocab_size",
              "Without --train_mode", "trains the AR teacher", "--resume_from_checkpoint"],
    "distill": ["--num_beams", "--length_penalty", "--source_column"],
    "evaluate": ["--modes", "--update-card", "nar_verify", "--max-source-length"],
    "generate": ["--input", "--output", "--mode", "--block-size"],
    "push": ["--repo-id", "--private", "--space"],
    "demo": ["--quick", "--data", "du-qg-sample", "smoke run"],
    "pretrain": ["--num_streams", "--mask_ratio", "--streaming", "reconstruction"],
    "app": ["--model", "--port", "--host", "--concurrency", "bang-nar[app]", "bang-nar demo --quick"],
}


def test_top_level_help_lists_every_subcommand(workdir):
    out = bang_nar("--help", cwd=workdir).stdout
    assert all(name in out for name in SUBCOMMANDS)
    assert main([]) == 2  # no subcommand: usage, exit code 2


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help(name, capsys):
    assert sorted(HELP_MENTIONS) == sorted(SUBCOMMANDS)
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"bang-nar {name}" in out
    for flag in HELP_MENTIONS[name]:
        assert flag in out, f"{name} --help lacks {flag}"


# ---- the pipeline --------------------------------------------------------------------------------------------------


def test_train_ar_writes_model_tokenizer_and_card(workdir, ar_run):
    assert "Trained 3 steps (AR)" in ar_run.stderr and "Saved to ar." in ar_run.stderr
    folder = workdir / "ar"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "modeling_bang.py", "README.md"):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "bang" and config["vocab_size"] <= 500 + 10  # the word-level tokenizer
    assert re.search(r"Word-level tokenizer: \d+ tokens for \d+ distinct words; \[UNK\] is [\d.]+%", ar_run.stderr)
    assert "warning: Word-level" not in ar_run.stderr  # 500 words cover the 300-word task
    card = (folder / "README.md").read_text()
    assert "**ar** mode" in card and "`train.jsonl`" in card and "SPMD reconstruction" in card
    assert "| optimizer steps | `3 (max_steps 3)` |" in card and "| batch per update | `8 (8 per device" in card


def test_distill_writes_targets_with_provenance(workdir, distill_run):
    import datasets

    assert "Distilled 64 examples with ar (beam 2, k=2)" in distill_run.stdout  # k-best by default (issue 10)
    assert "distil (rank 0): 100%" in distill_run.stderr  # tqdm progress, on stderr
    data = datasets.load_from_disk(str(workdir / "distilled" / "dataset"))
    assert len(data) == 64 and "kd_labels" in data.column_names and {len(c) for c in data["kd_labels"]} <= {1, 2}
    provenance = json.loads((workdir / "distilled" / "provenance.json").read_text())
    assert provenance["teacher"] == "ar" and provenance["num_beams"] == 2
    # the defaults of issue 21: k from the data, then distinct modes; the mean kept is printed
    assert provenance["probability_mass"] == 0.95 and provenance["min_distance"] == 0.5
    kept = sum(len(c) for c in data["kd_labels"]) / len(data)
    assert f"k from the data: {kept:.2f} targets per source on average" in distill_run.stdout


def test_train_nar_with_the_spmd_preset(workdir, spmd_run):
    assert "Trained 3 steps (nar, preset spmd)" in spmd_run.stderr
    card = ModelCard.load(workdir / "spmd" / "README.md")
    assert "**nar** mode" in card.text and "(SPMD preset `spmd`)" in card.text
    assert "teacher `ar`, AR beam 2, length penalty 1.2" in card.text  # read from the distilled folder
    assert "| `kd_alpha` | `0.5` |" in card.text and "| `pace_mode` | `percentile` |" in card.text


def test_evaluate_all_modes_and_update_the_card(workdir, spmd_run):
    run = bang_nar("evaluate", "--model", "spmd", "--data", "eval.jsonl", "--modes", "nar", "ar", "nar_verify",
                   "--num-beams", "2", "--max-new-tokens", "16", "--output-dir", "eval", "--update-card",
                   cwd=workdir)  # fmt: skip
    results = json.loads((workdir / "eval" / "results.json").read_text())
    assert list(results) == ["nar", "ar (beam 2)", "nar_verify"]
    for row in results.values():
        assert row["num_samples"] == 8 and 0 <= row["bleu"] <= 100 and row["ms_per_sample"] > 0
    table = (workdir / "eval" / "results.md").read_text()
    assert table in run.stdout and "| nar_verify |" in table
    assert "Updated the model card" in run.stdout
    assert all(f"generate ({mode}): 100%" in run.stderr for mode in ("nar", "ar", "nar_verify"))  # progress
    card = ModelCard.load(workdir / "spmd" / "README.md")
    systems = {r.metric_config for r in card.data.eval_results}
    assert systems == {"nar", "ar (beam 2)", "nar_verify"}
    bleu = {r.metric_config: r.metric_value for r in card.data.eval_results if r.metric_type == "bleu"}
    assert bleu["nar"] == pytest.approx(results["nar"]["bleu"], abs=1e-4)
    assert "| eval.jsonl | - | ar (beam 2) |" in card.text


def test_generate_stdin_to_stdout(workdir, spmd_run):
    sources = "apple river stone cloud garden window\nviolin trumpet guitar piano\n"
    run = bang_nar("generate", "--model", "spmd", "--mode", "nar", cwd=workdir, stdin=sources)
    assert len(run.stdout.splitlines()) == 2
    assert "2 outputs (nar) in" in run.stderr and "ms/sample" in run.stderr
    assert "generate (nar): 100%" in run.stderr  # tqdm progress, on stderr


def test_generate_file_to_file(workdir, ar_run, capsys):
    (workdir / "sources.txt").write_text("apple river stone\ntiger eagle rabbit turtle\nhammer needle\n")
    args = ["generate", "--model", str(workdir / "ar"), "--mode", "ar", "--num-beams", "2", "--max-new-tokens", "8",
            "--input", str(workdir / "sources.txt"), "--output", str(workdir / "outputs.txt")]  # fmt: skip
    assert main(args) == 0
    assert len((workdir / "outputs.txt").read_text().splitlines()) == 3
    assert "3 outputs (ar)" in capsys.readouterr().err


def test_train_semi_nar_then_generate_uses_its_block_size(workdir, ar_run, capsys):
    run = bang_nar("train", "--model_name_or_path", "ar", "--data", "train.jsonl", "--output_dir", "semi",
                   "--train_mode", "semi_nar", "--semi-nar-block-size", "3", *TINY_TRAIN, cwd=workdir)  # fmt: skip
    assert "Trained 3 steps (semi_nar, k = 3)" in run.stderr
    assert json.loads((workdir / "semi" / "generation_config.json").read_text())["block_size"] == 3
    assert json.loads((workdir / "semi" / "config.json").read_text())["generation_mode"] == "semi_nar"
    assert "n = k = 3 [MASK] streams" in (workdir / "semi" / "README.md").read_text()
    (workdir / "semi_sources.txt").write_text("apple river stone\ntiger eagle rabbit turtle\n")
    assert main(["generate", "--model", str(workdir / "semi"), "--input", str(workdir / "semi_sources.txt"),
                 "--output", str(workdir / "semi_out.txt"), "--max-new-tokens", "6"]) == 0  # fmt: skip
    assert len((workdir / "semi_out.txt").read_text().splitlines()) == 2
    assert "2 outputs (semi_nar)" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(workdir / "semi"), "--data", str(workdir / "eval.jsonl"), "--modes",
                 "semi_nar", "ar", "--num-beams", "1", "--output-dir", str(workdir / "semi_eval")]) == 0  # fmt: skip
    results = json.loads((workdir / "semi_eval" / "results.json").read_text())
    assert list(results) == ["semi_nar", "ar (beam 1)"] and results["semi_nar"]["num_samples"] == 8


def test_generate_refuses_an_empty_line(workdir, ar_run, capsys):
    (workdir / "gappy.txt").write_text("apple river\n\ntiger eagle\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--model", str(workdir / "ar"), "--input", str(workdir / "gappy.txt")])
    assert exit_info.value.code == 2
    assert "gappy.txt: empty source on line(s) [2]" in capsys.readouterr().err


def test_data_errors_name_the_file_in_one_line(workdir):
    (workdir / "bad.jsonl").write_text('{"source": "apple river", "tgt": "red blue"}\n')
    run = bang_nar("train", "--data", "bad.jsonl", "--output_dir", "bad", "--word_vocab_size", "50", *TINY_TRAIN,
                   cwd=workdir, check=False)  # fmt: skip
    assert run.returncode == 2
    assert "bang-nar train: error: bad.jsonl: missing column 'target'" in run.stderr
    assert "Available columns: ['source', 'tgt']" in run.stderr and "Traceback" not in run.stderr


def test_evaluate_data_error_through_main(workdir, capsys):
    (workdir / "short.jsonl").write_text('{"question": "a"}\n')
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", "unused", "--data", str(workdir / "short.jsonl"), "--output-dir", "x"])
    assert exit_info.value.code == 2
    assert "short.jsonl: missing column 'source'" in capsys.readouterr().err


def test_demo_quick(tmp_path):
    run = bang_nar("demo", "--quick", "--output-dir", "demo", cwd=tmp_path)
    folder = tmp_path / "demo"
    for name in ("results.md", "results.json", "results.png", "timings.json"):
        assert (folder / name).is_file(), name
    results = json.loads((folder / "results.json").read_text())
    assert list(results) == ["AR greedy", "AR beam 4", "NAR (BANG recipe)", "NAR (seq-KD, 1-best)", "NAR (SPMD)",
                             "SPMD + nar_verify"]
    assert "| system | BLEU-4 |" in run.stdout and "| NAR (SPMD) |" in run.stdout
    assert "speed-up vs AR beam 4" in run.stdout and "our reconstruction" in run.stdout
    assert "demo --quick is a smoke run" in run.stdout and "demo --quick is a smoke run" in run.stderr
    assert (folder / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- the first hour of a new user: resume, defaults, one flag style, one-line errors, progress -------------------


def one_line_error(stderr: str, command: str) -> str:
    """The error a user sees: exactly one line, `bang-nar COMMAND: error: ...`, and no traceback."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and len(lines) >= 1, stderr[-3000:]
    assert lines[-1].startswith(f"bang-nar {command}: error: "), stderr[-3000:]
    return lines[-1]


def logged_losses(stdout: str) -> list[str]:
    """The per-step losses the Trainer prints (`{'loss': '5.663', ...}`), as printed."""
    return [ast.literal_eval(line)["loss"] for line in stdout.splitlines() if line.startswith("{'loss'")]


def test_train_resumes_from_a_stopped_run(workdir):
    args = ["--data", "train.jsonl", "--train_mode", "ar", "--word_vocab_size", "500", "--max_steps", "6",
            "--save_steps", "3", "--logging_steps", "1", "--per_device_train_batch_size", "8", "--report_to", "none",
            "--use_cpu", "--disable_tqdm", "true"]  # fmt: skip
    full = bang_nar("train", *args, "--output_dir", "run_full", cwd=workdir)
    # A run stopped after step 3 leaves just its checkpoint-3; resume from that run's output folder.
    shutil.copytree(workdir / "run_full" / "checkpoint-3", workdir / "run_stopped" / "checkpoint-3")
    resumed = bang_nar("train", *args, "--output_dir", "run_stopped", "--resume_from_checkpoint", "run_stopped",
                       cwd=workdir)  # fmt: skip

    assert "Trained 6 steps (resumed from run_stopped/checkpoint-3) (AR)" in resumed.stderr
    full_losses, resumed_losses = logged_losses(full.stdout), logged_losses(resumed.stdout)
    assert len(full_losses) == 6 and len(resumed_losses) == 3  # only steps 4-6 ran again
    assert resumed_losses == full_losses[3:]  # the same model, optimizer, schedule and batches as without the stop
    state = json.loads((workdir / "run_stopped" / "checkpoint-6" / "trainer_state.json").read_text())
    reference = json.loads((workdir / "run_full" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    losses = {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}
    expected = {e["step"]: e["loss"] for e in reference["log_history"] if "loss" in e}
    assert sorted(losses) == [1, 2, 3, 4, 5, 6] and losses == pytest.approx(expected, abs=1e-5)


def test_train_resume_from_a_missing_or_empty_folder_is_a_one_line_error(workdir, capsys):
    (workdir / "no_checkpoints").mkdir(exist_ok=True)
    base = ["train", "--data", str(workdir / "train.jsonl"), "--output_dir", str(workdir / "unused"), "--use_cpu",
            "--report_to", "none"]  # fmt: skip
    for folder, message in [("nowhere", "nowhere: no such folder"), ("no_checkpoints", "no checkpoint-N folder")]:
        with pytest.raises(SystemExit) as exit_info:
            main([*base, "--resume_from_checkpoint", str(workdir / folder)])
        assert exit_info.value.code == 2
        line = one_line_error(capsys.readouterr().err, "train")
        assert "--resume_from_checkpoint" in line and message in line


@pytest.mark.parametrize("name", ["train", "distill"])
def test_train_and_distill_without_arguments_are_usage_errors(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name])
    assert exit_info.value.code == 2
    assert "no arguments; give at least" in one_line_error(capsys.readouterr().err, name)


def test_train_without_a_mode_trains_the_ar_teacher_and_reports_unknown_words(workdir):
    run = bang_nar("train", "--data", "train.jsonl", "--output_dir", "default", "--word_vocab_size", "20",
                   *TINY_TRAIN, cwd=workdir)  # fmt: skip
    assert "no --train_mode was given, so this trains the AR teacher (--train_mode ar)" in run.stderr
    assert "Next: `bang-nar distill --model default --data train.jsonl --output_dir DISTILLED`" in run.stderr
    assert "Trained 3 steps (AR)" in run.stderr
    assert json.loads((workdir / "default" / "config.json").read_text())["generation_mode"] == "ar"
    # 20 words for a 300-word task: most tokens are [UNK], which the user is told, with the fix.
    found = re.search(r"warning: Word-level tokenizer: .*\[UNK\] is ([\d.]+)% of the training tokens", run.stderr)
    assert found and float(found.group(1)) > 50 and "Raise --word_vocab_size (now 20)" in run.stderr


def test_train_with_a_preset_that_needs_distilled_targets_names_the_cli_flags(workdir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(workdir / "train.jsonl"), "--output_dir", str(workdir / "unused"),
              "--train_mode", "nar", "--use_cpu", "--report_to", "none"])  # fmt: skip
    assert exit_info.value.code == 2
    line = one_line_error(capsys.readouterr().err, "train")
    assert "distilled targets" in line and "`bang-nar distill --model AR_MODEL" in line
    assert "--spmd_preset bang_nar" in line and "spmd_preset='" not in line  # CLI flags, not Python syntax
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(workdir / "train.jsonl"), "--output_dir", str(workdir / "unused"),
              "--train_mode", "semi_nar", "--semi_nar_targets", "ar_kd", "--use_cpu", "--report_to", "none"])  # fmt: skip
    assert exit_info.value.code == 2
    line = one_line_error(capsys.readouterr().err, "train")
    assert "--semi_nar_targets ar_kd trains on distilled targets" in line and "bang-nar distill" in line


def _example_commands(text: str) -> list[list[str]]:
    """`bang-nar ...` example lines of a help text (continued lines joined), as argv lists without `bang-nar`."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        if not re.match(r"\s*(bang-nar |echo .*\| bang-nar )", line):
            continue
        tokens = shlex.split(line, comments=True)
        tokens = tokens[tokens.index("bang-nar") + 1 :]
        ends = [i for i, token in enumerate(tokens) if token in {"|", ">", "<", "&&", ";"}]
        commands.append(tokens[: ends[0]] if ends else tokens)
    return commands


def test_every_example_in_every_help_text_parses(capsys):
    texts = []
    for argv in [["--help"], *[[name, "--help"] for name in SUBCOMMANDS]]:
        with pytest.raises(SystemExit):
            main(argv)
        texts.append(capsys.readouterr().out)
    examples = [command for text in texts for command in _example_commands(text)]
    assert len(examples) >= 12 and {argv[0] for argv in examples if argv[0] != "--help"} == set(SUBCOMMANDS)
    repo = Path(__file__).resolve().parents[1]
    if (repo / "README.md").is_file():  # and the examples of the README and the docs (not installed with the package)
        page_examples = [command for page in [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]
                         for command in _example_commands(page.read_text(encoding="utf-8"))]
        assert len(page_examples) >= 20
        examples += page_examples
    for argv in examples:
        if argv == ["--help"]:
            continue
        try:
            parse_args(argv)
        except SystemExit as error:
            raise AssertionError(f"bang-nar {' '.join(argv)} does not parse: {capsys.readouterr().err}") from error


def _subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    from bang_nar.cli import distill, pretrain, train

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {**subparsers.choices, "train": train._hf_parser(), "distill": distill._hf_parser(),
            "pretrain": pretrain._hf_parser()}


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_flag_takes_dashes_and_underscores(name):
    table = _subcommand_parsers()[name]._option_string_actions
    flags = [o for o in table if o.startswith("--") and re.search(r"\w[-_]\w", o)]
    assert flags, name
    for flag in flags:
        other = "--" + (flag[2:].replace("-", "_") if "-" in flag[2:] else flag[2:].replace("_", "-"))
        assert table.get(other) is table[flag], f"bang-nar {name} takes {flag} but not {other}"


def test_both_spellings_parse_to_the_same_values():
    dashes = parse_args(["evaluate", "--model", "m", "--data", "d.jsonl", "--output-dir", "o", "--num-beams", "2",
                         "--max-source-length", "64"])  # fmt: skip
    underscores = parse_args(["evaluate", "--model", "m", "--data", "d.jsonl", "--output_dir", "o", "--num_beams", "2",
                              "--max_source_length", "64"])  # fmt: skip
    assert vars(dashes) == vars(underscores) and dashes.output_dir == "o" and dashes.max_source_length == 64
    _, _, training_args = parse_args(["train", "--data", "d.jsonl", "--output-dir", "o", "--train-mode", "ar",
                                      "--use-cpu", "--report-to", "none"]).parsed  # fmt: skip
    assert training_args.output_dir == "o" and training_args.train_mode == "ar"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--model", "m", "--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
        (["generate", "--model", "m", "--num_beams", "0"], "argument --num-beams: must be at least 1, got 0"),
        (["evaluate", "--model", "m", "--data", "d.jsonl", "--output-dir", "o", "--num-beams", "0"],
         "argument --num-beams: must be at least 1, got 0"),
        (["evaluate", "--model", "m", "--data", "d.jsonl", "--output-dir", "o", "--batch-size", "x"],
         "argument --batch-size: 'x' is not an integer"),
        (["train", "--data", "d.jsonl", "--output_dir", "o", "--model_size", "huge"], "invalid choice: 'huge'"),
        (["distill", "--model", "m", "--data", "d.jsonl", "--output_dir", "o", "--batch_size", "0"],
         "--batch_size must be at least 1, got 0"),
        (["distill", "--model", "m", "--data", "d.jsonl", "--output_dir", "o", "--num_beams", "2",
          "--num_return_sequences", "3"], "--num_return_sequences (3) cannot exceed --num_beams (2)"),
        (["demo", "--threads", "0"], "argument --threads: must be at least 1, got 0"),
    ],
    ids=["generate-batch", "generate-beams", "evaluate-beams", "evaluate-not-int", "train-size", "distill-batch",
         "distill-k", "demo-threads"],  # fmt: skip
)
def test_numeric_and_choice_options_are_validated(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in one_line_error(err, argv[0])
    if argv[0] in ("train", "distill"):  # their full usage would list every TrainingArguments field
        assert len(err.strip().splitlines()) == 1


def test_evaluate_refuses_a_long_source_naming_a_flag_it_accepts(workdir, ar_run, capsys):
    (workdir / "long.jsonl").write_text(json.dumps({"source": " ".join(["apple"] * 600), "target": "red"}) + "\n")
    argv = ["evaluate", "--model", str(workdir / "ar"), "--data", str(workdir / "long.jsonl"), "--modes", "ar",
            "--num-beams", "1", "--max-new-tokens", "4", "--output-dir", str(workdir / "long_eval")]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    line = one_line_error(capsys.readouterr().err, "evaluate")
    assert "long.jsonl example 1: the source has 601 tokens but the model takes 512" in line
    flag, value = re.search(r"pass (--[\w-]+) (\d+)", line).groups()
    assert main([*argv, flag, value]) == 0  # the flag the message names is one evaluate takes
    assert json.loads((workdir / "long_eval" / "results.json").read_text())["ar (beam 1)"]["num_samples"] == 1


def test_a_folder_without_model_type_is_refused_without_a_prompt(workdir, ar_run):
    folder = workdir / "no_model_type"
    folder.mkdir(exist_ok=True)
    for path in (workdir / "ar").iterdir():
        if path.is_file():
            shutil.copy(path, folder)
    config = json.loads((folder / "config.json").read_text())
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    # stdin attached, holding sources that a prompt would take as answers
    run = bang_nar("generate", "--model", "no_model_type", "--mode", "ar", cwd=workdir, stdin="apple river\ny\n",
                   check=False)  # fmt: skip
    assert run.returncode == 2 and run.stdout == ""
    assert "[y/N]" not in run.stderr and "trust_remote_code" not in run.stderr
    line = one_line_error(run.stderr, "generate")
    assert "no_model_type/config.json: no 'model_type'" in line and '"model_type": "bang"' in line


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jsonl", b"", "empty.jsonl: the file is empty"),
        ("latin.jsonl", b'{"source": "a b", "target": "c"}\n{"source": "caf\xe9", "target": "x"}\n',
         "latin.jsonl line 2: not UTF-8 (byte 0xe9)"),
        ("records.jsonl", b'{"source": "a b", "target": "c"}\n["a b", "c"]\n',
         "records.jsonl line 2: a JSON list, not an object"),
        ("header.csv", b"source,target\n", "header.csv: no examples"),
    ],
    ids=["empty", "not-utf8", "not-an-object", "header-only"],
)
def test_bad_data_is_a_one_line_error_naming_file_and_line(workdir, capsys, name, content, message):
    (workdir / name).write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(workdir / name), "--output_dir", str(workdir / "unused"), "--use_cpu",
              "--report_to", "none"])  # fmt: skip
    assert exit_info.value.code == 2
    assert message in one_line_error(capsys.readouterr().err, "train")


def test_generate_refuses_non_utf8_stdin_with_the_line(workdir, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"apple river\ncaf\xe9 stone\n")))
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--model", str(workdir / "never_loaded")])  # sources are read before the model
    assert exit_info.value.code == 2
    assert "stdin line 2: not UTF-8 (byte 0xe9)" in one_line_error(capsys.readouterr().err, "generate")


def test_convert_refuses_a_pickle_payload_in_one_line_without_running_it(tmp_path, capsys):
    import torch

    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")  # unpickling this creates the marker file

    torch.save({"model": {"w": torch.zeros(2)}, "extra": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(tmp_path / "evil.pt"), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    line = one_line_error(err, "convert")
    assert len(err.strip().splitlines()) == 1
    assert re.search(r"refused global [\w.]*open", line) and "weights_only=False" not in err
    assert not marker.exists() and not (tmp_path / "out").exists()
    torch.load(tmp_path / "evil.pt", weights_only=False)  # the payload is live: full unpickling runs it
    assert marker.exists()
