"""A toy copy-like task and trainer factory shared by the SPMD tests (tiny model from conftest, no downloads)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import pytest
import torch

from bang_nar.trainer import SPMDSeq2SeqTrainer, SPMDTrainingArguments
from tests.conftest import tiny_model

EOS = 102
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models run far faster on one thread, and much faster than several threads on a busy 2-core runner."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_dataset(num: int = 16, k: int = 2, seed: int = 0) -> datasets.Dataset:
    """Sources `a.. [SEP]`; gold = the first tokens shifted by one, `[SEP]`; k distilled variants of varied length."""
    generator = torch.Generator().manual_seed(seed)
    rows: dict[str, list[Any]] = {"input_ids": [], "labels": [], "kd_labels": []}
    for i in range(num):
        n_src = 5 + i % 4
        source = torch.randint(5, 60, (n_src,), generator=generator).tolist()
        gold = [t + 1 for t in source[: 2 + i % 3]]
        variants = []
        for j in range(k):
            variant = list(gold)
            variant[j % len(variant)] = int(torch.randint(5, 60, (), generator=generator))
            variants.append(variant[: len(variant) - (j + i) % 2] + [EOS])
        rows["input_ids"].append(source + [EOS])
        rows["labels"].append(gold + [EOS])
        rows["kd_labels"].append(variants)
    return datasets.Dataset.from_dict(rows)


def spmd_args(output_dir: str, **overrides: Any) -> SPMDTrainingArguments:
    values: dict[str, Any] = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        max_steps=4,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=7,
        data_seed=7,
        disable_tqdm=True,
        train_sampling_strategy="sequential",
        dataloader_num_workers=0,
    )
    values.update(overrides)
    return SPMDTrainingArguments(**values)


def spmd_trainer(output_dir: str, model: Any = None, dataset: datasets.Dataset | None = None, **overrides: Any):
    model = model if model is not None else tiny_model(seed=3)
    dataset = dataset if dataset is not None else toy_dataset()
    return SPMDSeq2SeqTrainer(model=model, args=spmd_args(output_dir, **overrides), train_dataset=dataset)


def run_two_processes(module: str, out: Path) -> None:
    """`torchrun --standalone --nproc_per_node 2 -m module out` (gloo, one thread each); fails with its output.
    (`accelerate launch --cpu --num_processes 2` starts one process in accelerate 1.15, so torchrun is used.)"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", module, str(out)]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
