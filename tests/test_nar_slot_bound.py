"""The trained target bound: the trainer stores it as generation_config.max_new_tokens, and NAR decoding with it
gives the first slots of source-length decoding (slot t never depends on later slots), capped by the source rule."""

from __future__ import annotations

import pytest
import torch

from bang_nar import BangForConditionalGeneration
from tests.conftest import random_batch, tiny_model
from tests.spmd_toy import single_thread, spmd_trainer, toy_dataset  # noqa: F401 (autouse fixture)


def _longest(rows) -> int:
    return max(len(row) for row in rows)


@pytest.mark.parametrize(
    ("overrides", "uses_kd"),
    [({}, True), ({"spmd_preset": "bang_nar"}, False), ({"train_mode": "mixed"}, True)],
)
def test_trainer_stores_the_longest_trained_target(tmp_path, overrides, uses_kd):
    dataset = toy_dataset(num=12)
    expected = _longest(dataset["labels"])
    if uses_kd:
        expected = max(expected, _longest([t for ts in dataset["kd_labels"] for t in ts]))
    trainer = spmd_trainer(tmp_path, dataset=dataset, **overrides)
    trainer.save_model()
    reloaded = BangForConditionalGeneration.from_pretrained(tmp_path)
    assert reloaded.generation_config.max_new_tokens == expected


def test_kd_targets_longer_than_gold_set_the_bound(tmp_path):
    dataset = toy_dataset(num=4).map(lambda row: {"kd_labels": [t + [7] * 9 for t in row["kd_labels"]]})
    trainer = spmd_trainer(tmp_path, dataset=dataset)
    assert trainer.model.generation_config.max_new_tokens == _longest([t for ts in dataset["kd_labels"] for t in ts])


def test_ar_training_stores_nothing(tmp_path):
    trainer = spmd_trainer(tmp_path, dataset=toy_dataset(num=4).remove_columns("kd_labels"), train_mode="ar")
    assert trainer.model.generation_config.max_new_tokens is None


@torch.no_grad()
def test_stored_bound_gives_the_first_slots_of_source_length_decoding():
    model = tiny_model(seed=5)
    input_ids, mask, _ = random_batch(batch_size=3, source_length=12, seed=8)
    full = model.generate(input_ids, attention_mask=mask, mode="nar", return_dict_in_generate=True)
    assert full.raw_sequences.shape == (3, 12)  # the original rule: one slot per padded source token
    model.generation_config.max_new_tokens = 4
    stored = model.generate(input_ids, attention_mask=mask, mode="nar", return_dict_in_generate=True)
    assert torch.equal(stored.raw_sequences, full.raw_sequences[:, :4])
    torch.testing.assert_close(stored.positional_scores, full.positional_scores[:, :4])
    # An explicit None (an unset CLI option) keeps the stored bound; candidates and nar_verify use it too.
    explicit_none = model.generate(input_ids, attention_mask=mask, mode="nar", max_new_tokens=None, nar_postprocess=False)
    assert torch.equal(explicit_none, full.raw_sequences[:, :4])
    candidates = model.generate(input_ids, attention_mask=mask, mode="nar", num_candidates=3, return_dict_in_generate=True)
    assert candidates.raw_sequences.shape == (3, 4)
    verify = model.generate(input_ids, attention_mask=mask, mode="nar_verify", return_dict_in_generate=True)
    assert verify.raw_sequences.shape == (3, 4)


@torch.no_grad()
def test_stored_bound_is_capped_by_the_source_rule_and_explicit_values_are_exact():
    model = tiny_model(seed=5)
    input_ids, mask, _ = random_batch(batch_size=2, source_length=5, seed=9)
    original = model.generate(input_ids, attention_mask=mask, mode="nar", nar_postprocess=False)
    model.generation_config.max_new_tokens = 8  # longer than these sources: the source rule decides
    assert torch.equal(model.generate(input_ids, attention_mask=mask, mode="nar", nar_postprocess=False), original)
    explicit = model.generate(input_ids, attention_mask=mask, mode="nar", max_new_tokens=8, nar_postprocess=False)
    assert explicit.shape == (2, 8) and torch.equal(explicit[:, :5], original)


def test_streamed_data_stores_nothing(tmp_path):
    from bang_nar.trainer.spmd_trainer import record_target_bound

    from tests.spmd_toy import spmd_args

    model = tiny_model(seed=5)
    streamed = toy_dataset(num=4).to_iterable_dataset()
    assert record_target_bound(model, streamed, spmd_args(tmp_path)) is None
    assert model.generation_config.max_new_tokens is None
    assert record_target_bound(model, toy_dataset(num=4), spmd_args(tmp_path)) == model.generation_config.max_new_tokens
