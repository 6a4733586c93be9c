"""Two CPU processes (torchrun, gloo) against one process with the same global batch: SPMD thresholds identical on
both ranks, final weights equal to the single-process run; distillation sharded and merged back in order.

`accelerate launch --cpu --num_processes 2` silently starts ONE process with accelerate 1.15, so the workers are
started with `torchrun --standalone --nproc_per_node 2 -m tests.test_spmd_distributed OUT` and assert the world size.
"""

import json
import os
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

from bang_nar.trainer import distill_dataset
from tests.conftest import tiny_model
from tests.spmd_toy import run_two_processes, single_thread, spmd_trainer, toy_dataset  # noqa: F401

# Random mixing and percentile pacing: both need the cross-rank agreement under test.
OPTIONS = dict(spmd_preset="spmd_reconstruction", mix_strategy="random", max_steps=4, optim="sgd", learning_rate=0.05, pace_q0=0.25)
DISTIL = dict(num_beams=3, num_return_sequences=2, max_new_tokens=5, batch_size=2, show_progress=False)


class RecordThresholds(TrainerCallback):
    def __init__(self, pace_state):
        self.pace_state, self.thresholds = pace_state, []

    def on_step_end(self, args, state, control, **kwargs):
        self.thresholds.append(float(self.pace_state.threshold))  # a device tensor during training


def run_training(output_dir: Path, batch_size: int) -> tuple[torch.nn.Module, list[float], int]:
    trainer = spmd_trainer(output_dir, per_device_train_batch_size=batch_size, **OPTIONS)
    recorder = RecordThresholds(trainer.pace_state)
    trainer.add_callback(recorder)
    trainer.train()
    return trainer.model, recorder.thresholds, trainer.accelerator.num_processes


def worker(out: Path) -> None:
    """Runs in each torchrun process."""
    torch.set_num_threads(1)
    assert int(os.environ["WORLD_SIZE"]) == 2, "start with torchrun --nproc_per_node 2"
    model, thresholds, world = run_training(out / "train", batch_size=2)
    assert world == 2 and torch.distributed.get_world_size() == 2
    rank = torch.distributed.get_rank()
    (out / f"thresholds_{rank}.json").write_text(json.dumps({"world": world, "thresholds": thresholds}))
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / f"weights_{rank}.pt")
    kd = distill_dataset(tiny_model(seed=5), toy_dataset(num=7).remove_columns("kd_labels"), out / "kd", **DISTIL)
    (out / f"kd_{rank}.json").write_text(json.dumps(list(kd["kd_labels"])))


def test_two_processes_match_one_process_with_the_global_batch(tmp_path):
    run_two_processes("tests.test_spmd_distributed", tmp_path)

    model, thresholds, world = run_training(tmp_path / "single", batch_size=4)
    assert world == 1
    ranks = [json.loads((tmp_path / f"thresholds_{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["thresholds"] == ranks[1]["thresholds"]
    assert len(thresholds) == 4
    for ours, single in zip(ranks[0]["thresholds"], thresholds):
        assert abs(ours - single) < 1e-5
    single_weights = model.state_dict()
    for r in (0, 1):
        for name, value in torch.load(tmp_path / f"weights_{r}.pt").items():
            torch.testing.assert_close(value, single_weights[name], rtol=1e-5, atol=1e-6, msg=name)

    alone = distill_dataset(tiny_model(seed=5), toy_dataset(num=7).remove_columns("kd_labels"), tmp_path / "kd1", **DISTIL)
    for r in (0, 1):
        assert json.loads((tmp_path / f"kd_{r}.json").read_text()) == list(alone["kd_labels"])
    assert json.loads((tmp_path / "kd" / "provenance.json").read_text())["num_processes"] == 2


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
