"""Issue 24, lost work: real kills (SIGKILL at a chosen point, in a subprocess), then the same command resumes and
loses nothing already finished. Tiny models, a few steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bang_nar.cli._args import resolve_checkpoint
from tests.spmd_toy import single_thread, spmd_trainer  # noqa: F401 (autouse fixture)

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
TRAIN = dict(max_steps=4, save_strategy="steps", save_steps=1, pace_mode="none")


def run_killed(script: str, cwd: Path) -> None:
    """Run `script` in a fresh interpreter; it must die by SIGKILL (the kill it arranges itself)."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, env=ENV, capture_output=True,
                            text=True, timeout=300, check=False)  # fmt: skip
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]


def test_a_kill_while_saving_a_checkpoint_leaves_only_complete_ones(tmp_path):
    out = tmp_path / "run"
    # Killed inside the save of step 3, after the weights are written and before the optimizer and trainer state.
    run_killed(f"""
        import os, signal
        from transformers import Trainer
        from tests.spmd_toy import spmd_trainer
        def save(self, output_dir):
            if self.state.global_step == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, output_dir)
        original, Trainer._save_optimizer_and_scheduler = Trainer._save_optimizer_and_scheduler, save
        spmd_trainer({str(out)!r}, **{TRAIN!r}).train()
        """, tmp_path)  # fmt: skip
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert resolve_checkpoint(str(out), "train") == out / "checkpoint-2"
    resumed = spmd_trainer(str(out), **TRAIN)
    resumed.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    straight = spmd_trainer(str(tmp_path / "straight"), **TRAIN)
    straight.train()
    for (name, a), b in zip(resumed.model.state_dict().items(), straight.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert (out / "checkpoint-3" / "trainer_state.json").is_file()  # saved again, complete, by the resumed run


def test_resume_skips_an_incomplete_checkpoint_of_an_older_run_and_says_so(tmp_path, capsys):
    for step in (1, 2):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-1" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-2" / "model.safetensors").write_bytes(b"\0" * 8)  # cut by a kill
    assert resolve_checkpoint(str(tmp_path), "train") == tmp_path / "checkpoint-1"
    assert "skipped incomplete ['checkpoint-2']" in capsys.readouterr().err


def test_distillation_killed_mid_run_resumes_and_refuses_another_teacher_or_data(tmp_path):
    from bang_nar.trainer import distill_dataset
    from bang_nar.trainer.sequence_kd import StaleChunksError
    from tests.conftest import tiny_model
    from tests.spmd_toy import toy_dataset

    settings = dict(num_beams=2, num_return_sequences=2, max_new_tokens=5, batch_size=3, show_progress=False)
    out = tmp_path / "run"
    # SIGKILL in the third generate call: two chunks are on disk, the third is not.
    run_killed(f"""
        import os, signal
        from bang_nar.trainer import distill_dataset
        from tests.conftest import tiny_model
        from tests.spmd_toy import toy_dataset
        model, calls = tiny_model(seed=5), []
        real = model.generate
        def generate(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        model.generate = generate
        distill_dataset(model, toy_dataset(num=8).remove_columns("kd_labels"), {str(out)!r}, **{settings!r})
        """, tmp_path)  # fmt: skip
    assert sorted(p.name for p in (out / "kd_chunks").glob("0*.json")) == ["00000000.json", "00000001.json"]
    data = toy_dataset(num=8).remove_columns("kd_labels")
    retrained = tiny_model(seed=6)  # the same name, other weights
    with pytest.raises(StaleChunksError, match="teacher_weights_sha256"):
        distill_dataset(retrained, data, out, **settings)
    with pytest.raises(StaleChunksError, match="sources_sha256"):
        distill_dataset(tiny_model(seed=5), toy_dataset(num=8, seed=1).remove_columns("kd_labels"), out, **settings)
    model, calls = tiny_model(seed=5), []
    real = model.generate
    model.generate = lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs)
    resumed = distill_dataset(model, data, out, **settings)
    assert len(calls) == 1  # only the chunk the kill lost
    clean = distill_dataset(tiny_model(seed=5), data, tmp_path / "clean", **settings)
    assert list(resumed["kd_labels"]) == list(clean["kd_labels"])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A random tiny BANG with a word tokenizer of the multi-modality task, saved as `bang-nar train` saves one."""
    from bang_nar.multimodality import build_word_tokenizer, make_multimodality_task
    from bang_nar.pipeline import build_model

    folder = tmp_path_factory.mktemp("crash") / "model"
    task = make_multimodality_task(2, 16, 8, seed=0)
    tokenizer = build_word_tokenizer(task)
    build_model(tokenizer=tokenizer, size="tiny", seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    task.eval.to_json(str(folder.parent / "eval.jsonl"))
    (folder.parent / "sources.txt").write_text("".join(s + "\n" for s in task.eval["source"]))
    return folder


KILL_ON_CALL = """
    import os, signal, sys
    import bang_nar.pipeline as pipeline
    from bang_nar.cli import main
    real, calls = pipeline.{function}, []
    def killing(*args, **kwargs):
        calls.append(1)
        if len(calls) == {call}:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    pipeline.{function} = killing
    main({argv!r})
    """


def test_generate_killed_mid_file_resumes_where_it_stopped(model_dir, capsys, monkeypatch):
    from bang_nar.cli import generate, main

    monkeypatch.setattr(generate, "CHUNK_BATCHES", 1)
    root = model_dir.parent
    argv = ["generate", "--model", str(model_dir), "--mode", "nar", "--input", str(root / "sources.txt"),
            "--output", str(root / "out.txt"), "--batch-size", "3"]  # fmt: skip
    run_killed(KILL_ON_CALL.format(function="generate_texts", call=2, argv=argv).replace(
        "from bang_nar.cli import main", "from bang_nar.cli import main, generate; generate.CHUNK_BATCHES = 1"), root)
    assert not (root / "out.txt").exists()
    assert (root / "out.txt.partial").read_text().count("\n") == 3  # the first chunk of 3, flushed before the kill
    assert main(argv) == 0
    assert "3 of 8 outputs already written" in capsys.readouterr().err
    resumed = (root / "out.txt").read_text()
    assert main([*argv[:-4], "--output", str(root / "straight.txt"), "--batch-size", "3"]) == 0
    assert resumed == (root / "straight.txt").read_text() and resumed.count("\n") == 8
    assert not list(root.glob("*.partial*"))


def test_evaluate_killed_between_modes_keeps_the_finished_rows(model_dir, capsys):
    from bang_nar.cli import main

    root = model_dir.parent
    argv = ["evaluate", "--model", str(model_dir), "--data", str(root / "eval.jsonl"), "--modes", "nar", "ar",
            "--output-dir", str(root / "eval"), "--max-new-tokens", "8"]  # fmt: skip
    run_killed(KILL_ON_CALL.format(function="evaluate_model", call=2, argv=argv), root)
    assert list(json.loads((root / "eval" / "results.partial.json").read_text())["rows"]) == ["nar"]
    assert main(argv) == 0
    assert "rows ['nar'] already scored" in capsys.readouterr().err
    results = json.loads((root / "eval" / "results.json").read_text())
    assert list(results) == ["nar", "ar (beam 4)"] and results["nar"]["num_samples"] == 8
    assert not (root / "eval" / "results.partial.json").exists()
