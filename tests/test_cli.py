"""`bang-nar` subcommands end to end on real small files: every `--help`, and one tiny real run of each.

The pipeline runs as a user would (`python -m bang_nar ...` in a subprocess): train AR → distill → train NAR with
the `spmd` preset → evaluate (nar, ar, nar_verify) → generate, plus `demo --quick`. One AR model and one SPMD model
are shared by the module (module-scoped fixtures), so the whole file stays within a few minutes on 2 busy cores.
`convert` is run in tests/test_conversion.py; `push` against a mocked Hub in tests/test_hub_cards.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from bang_nar.cli import SUBCOMMANDS, main
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
    "train": ["--train_mode", "--spmd_preset", "--kd_alpha", "--pace_mode", "--learning_rate", "--word_vocab_size"],
    "distill": ["--num_beams", "--length_penalty", "--source_column"],
    "evaluate": ["--modes", "--update-card", "nar_verify"],
    "generate": ["--input", "--output", "--mode"],
    "push": ["--repo-id", "--private"],
    "demo": ["--quick", "--data", "du-qg-sample"],
    "pretrain": ["--num_streams", "--mask_ratio", "--streaming", "reconstruction"],
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
    card = (folder / "README.md").read_text()
    assert "**ar** mode" in card and "`train.jsonl`" in card and "SPMD reconstruction" in card
    assert "| optimizer steps | `3 (max_steps 3)` |" in card and "| batch per update | `8 (8 per device" in card


def test_distill_writes_targets_with_provenance(workdir, distill_run):
    import datasets

    assert "Distilled 64 examples with ar (beam 2, k=1)" in distill_run.stdout
    data = datasets.load_from_disk(str(workdir / "distilled" / "dataset"))
    assert len(data) == 64 and "kd_labels" in data.column_names
    provenance = json.loads((workdir / "distilled" / "provenance.json").read_text())
    assert provenance["teacher"] == "ar" and provenance["num_beams"] == 2


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


def test_generate_file_to_file(workdir, ar_run, capsys):
    (workdir / "sources.txt").write_text("apple river stone\ntiger eagle rabbit turtle\nhammer needle\n")
    args = ["generate", "--model", str(workdir / "ar"), "--mode", "ar", "--num-beams", "2", "--max-new-tokens", "8",
            "--input", str(workdir / "sources.txt"), "--output", str(workdir / "outputs.txt")]  # fmt: skip
    assert main(args) == 0
    assert len((workdir / "outputs.txt").read_text().splitlines()) == 3
    assert "3 outputs (ar)" in capsys.readouterr().err


def test_generate_refuses_an_empty_line(workdir, ar_run):
    (workdir / "gappy.txt").write_text("apple river\n\ntiger eagle\n")
    with pytest.raises(SystemExit, match=r"gappy.txt: empty source on line\(s\) \[2\]"):
        main(["generate", "--model", str(workdir / "ar"), "--input", str(workdir / "gappy.txt")])


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
    assert (folder / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
