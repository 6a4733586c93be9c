"""Length-sorted batching: batches of similar source length, results back in the input order."""

from __future__ import annotations

import pytest
import torch
from bang_nar.trainer import distill_dataset

from bang_nar.data import length_sorted_batches
from tests.conftest import tiny_model
from tests.spmd_toy import single_thread, toy_dataset  # noqa: F401 (autouse fixture)


def test_batches_cover_every_index_once_shortest_first():
    lengths = [5, 1, 4, 1, 3, 9, 2]
    batches = length_sorted_batches(lengths, 3)
    assert batches == [[1, 3, 6], [4, 2, 0], [5]]  # stable: equal lengths keep their order
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert length_sorted_batches([], 4) == []
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        length_sorted_batches(lengths, 0)


def test_distillation_decodes_sorted_chunks_and_keeps_row_order(tmp_path, monkeypatch):
    model = tiny_model(seed=5)
    dataset = toy_dataset(num=8).remove_columns("kd_labels")
    settings = {"num_beams": 2, "num_return_sequences": 1, "max_new_tokens": 5, "show_progress": False}
    alone = distill_dataset(model, dataset, tmp_path / "alone", batch_size=1, **settings)
    widths: list[int] = []
    real_generate = model.generate

    def recording_generate(*args, **kwargs):
        widths.append(kwargs["input_ids"].size(1))
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", recording_generate)
    batched = distill_dataset(model, dataset, tmp_path / "batched", batch_size=4, **settings)
    assert list(batched["kd_labels"]) == list(alone["kd_labels"])  # row i holds source i's hypotheses
    lengths = sorted(len(s) for s in dataset["input_ids"])
    assert widths == [lengths[3], lengths[7]]  # each chunk pads only to its own longest source
    assert torch.tensor(widths).sum() < 2 * max(lengths)
