"""Smaller SPMD trainer contracts (issue 13): size guard before the all-gather, `return_outputs` in training, pad ids in
the AR term, `model_init`, the default λ0 of hard/linear pacing, bounded metric buffers."""

import pytest
import torch

from bang_nar.trainer import SelfPacedState, SPMDDataCollator, SPMDSeq2SeqTrainer
from tests.conftest import tiny_model
from tests.spmd_toy import single_thread, spmd_args, spmd_trainer, toy_dataset  # noqa: F401 (autouse fixture)


def _batch(num: int = 4) -> dict[str, torch.Tensor]:
    return SPMDDataCollator(pad_token_id=0)(list(toy_dataset(num=num)))


class UnevenAccelerator:
    """Rank 0 of 2 whose peer holds 3 samples; a gather of unequal sizes would hang (NCCL) or fail obscurely."""

    num_processes, process_index, even_batches = 2, 0, False

    def __init__(self):
        self.gathered = []

    def gather(self, tensor):
        self.gathered.append(tuple(tensor.shape))
        if tensor.dim() == 1 and tensor.numel() == 1:  # the size exchange
            return torch.cat([tensor, tensor.new_tensor([3])])
        raise AssertionError("the statistics were gathered before the sizes were compared")


@pytest.mark.parametrize("even_batches", [False, True])
def test_unequal_batches_are_caught_before_the_gather(even_batches):
    accelerator = UnevenAccelerator()
    accelerator.even_batches = even_batches
    state = SelfPacedState()
    with pytest.raises(RuntimeError, match=r"sizes \[2, 3\].*even_batches"):
        # even_batches=True skips the check (the accelerator guarantees equal sizes) unless asked (spmd_debug)
        state.update(0, 0.0, 10, torch.rand(2, 6), accelerator, check_sizes=even_batches)
    assert accelerator.gathered == [(1,)]


def test_return_outputs_in_training_gives_the_training_loss(tmp_path):
    model = tiny_model(seed=3).train()
    trainer = spmd_trainer(tmp_path, model=model, pace_mode="none")
    batch = _batch()
    loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    torch.testing.assert_close(loss, trainer.compute_loss(model, batch))
    assert loss.requires_grad and outputs["logits"].shape[:2] == (4, batch["labels"].size(1))
    ar = spmd_trainer(tmp_path, model=model, dataset=toy_dataset().remove_columns("kd_labels"), train_mode="ar")
    ar_loss, _ = ar.compute_loss(model, batch, return_outputs=True)
    torch.testing.assert_close(ar_loss, ar.compute_loss(model, batch))
    eval_loss = trainer.compute_loss(model.eval(), batch)
    assert not torch.allclose(eval_loss, loss)  # the evaluation loss is another quantity (gold NAR only)


@pytest.mark.parametrize("train_mode", ["ar", "nar"])
def test_ar_term_treats_pad_ids_as_padding(tmp_path, train_mode):
    """Labels padded with the pad id (0) instead of -100 give the same AR loss, as they do for candidates and the
    model's own `labels` loss."""
    model = tiny_model(seed=3).train()
    batch = _batch()
    padded = {**batch, "labels": batch["labels"].masked_fill(batch["labels"].eq(-100), 0)}
    assert padded["labels"].eq(0).any()
    options = {"train_mode": train_mode, "pace_mode": "none", "spmd_preset": "bang_nar", "ar_loss_weight": 1.0}
    dataset = toy_dataset().remove_columns("kd_labels")
    trainer = spmd_trainer(tmp_path, model=model, dataset=dataset, **options)
    torch.testing.assert_close(trainer.compute_loss(model, padded), trainer.compute_loss(model, batch))


def test_model_init_builds_the_model_and_trains(tmp_path):
    trainer = SPMDSeq2SeqTrainer(
        model_init=lambda: tiny_model(seed=3), args=spmd_args(tmp_path, max_steps=2), train_dataset=toy_dataset()
    )
    assert trainer.data_collator.pad_token_id == 0
    trainer.train()
    assert trainer.state.global_step == 2


@pytest.mark.parametrize("mode", ["hard", "linear"])
def test_default_lambda0_keeps_samples_when_the_loss_is_above_one(tmp_path, mode):
    """The untrained NAR loss is ~log V > 1; a fixed λ0 = 1 kept no sample. The default calibrates λ0 to the q0
    quantile of the first batch, keeps it for later batches, and saves it with the state."""
    trainer = spmd_trainer(tmp_path, max_steps=3, pace_mode=mode, per_device_train_batch_size=8, pace_q0=0.5)
    assert trainer.args.pace_lambda0 is None
    trainer.train()
    logs = [log for log in trainer.state.log_history if "pace/kept_fraction" in log]
    assert logs[0]["nar_loss"] > 1.0
    assert 0.25 <= logs[0]["pace/kept_fraction"] <= 0.75
    lambda0 = trainer.pace_state.state_dict()["lambda0"]
    assert isinstance(lambda0, float) and logs[0]["pace/lambda"] == pytest.approx(lambda0)
    # 16 samples, batch 8: steps 1-2 in epoch 0 (λ0), step 3 in epoch 1 (λ0·μ); λ0 is not recalibrated
    assert [log["pace/lambda"] for log in logs] == pytest.approx([lambda0, lambda0, lambda0 * 1.3])


def test_metric_buffers_stay_bounded_without_logging(tmp_path):
    def stored(trainer):
        return sum(1 for totals in trainer._metrics.values() for _ in totals.values())

    sizes = []
    for steps in (2, 6):
        trainer = spmd_trainer(tmp_path / str(steps), max_steps=steps, logging_strategy="no")
        trainer.log = lambda logs, start_time=None: None  # the end-of-training log would empty the buffers
        trainer.train()
        sizes.append(stored(trainer))
        assert trainer._metrics["train"]["nar_loss"][1] == steps
    assert sizes[0] == sizes[1] > 0


# ---- issue 24: trainer details ---------------------------------------------------------------------------------------


def test_num_items_in_batch_does_not_count_pad_id_labels(tmp_path):
    trainer = spmd_trainer(tmp_path, train_mode="ar", dataset=toy_dataset().remove_columns("kd_labels"))
    batch = _batch()
    labels = batch["labels"].masked_fill(batch["labels"] == -100, 0)  # padded with the pad id (0) instead
    real = int(((labels != 0) & (labels != -100)).sum())
    assert int(trainer._get_num_items_in_batch([{**batch, "labels": labels}], torch.device("cpu"))) == real
    assert int(trainer._get_num_items_in_batch([batch], torch.device("cpu"))) == real


def test_a_frozen_teacher_follows_the_training_precision(tmp_path):
    tiny_model(seed=1).save_pretrained(tmp_path / "teacher")
    trainer = spmd_trainer(tmp_path, teacher=str(tmp_path / "teacher"), kd_alpha=0.5, bf16=True)
    assert trainer.teacher is not None and trainer.teacher.dtype == torch.bfloat16


class OneProcess:
    num_processes, process_index, even_batches = 1, 0, True


def test_a_calibrated_lambda0_is_restored_bit_exact(tmp_path):
    state = SelfPacedState(mode="linear", lambda0=None, growth=1.3)
    state.update(0, 0.0, 10, torch.rand(6, 6, generator=torch.Generator().manual_seed(0)) * 3.7, OneProcess())
    assert isinstance(state.lambda0, torch.Tensor) and state.lambda0.dtype == torch.float32
    torch.save(state.state_dict(), tmp_path / "spmd_state.pt")
    restored = SelfPacedState(mode="linear", lambda0=None, growth=1.3)
    restored.load_state_dict(torch.load(tmp_path / "spmd_state.pt", weights_only=True))
    assert restored.lambda0.dtype == torch.float32 and torch.equal(restored.lambda0, state.lambda0)
    stats = torch.rand(6, 6, generator=torch.Generator().manual_seed(1)) * 3.7
    for epoch in (1.0, 3.0):  # λ(s) = λ0·μ^epoch in float32 on both sides: the same weights, bit for bit
        a, b = state.update(5, epoch, 10, stats, OneProcess()), restored.update(5, epoch, 10, stats, OneProcess())
        assert torch.equal(torch.as_tensor(state.lam), torch.as_tensor(restored.lam))
        assert torch.equal(a.weights, b.weights)


def test_resuming_without_spmd_state_warns(tmp_path):
    trainer = spmd_trainer(tmp_path)
    (tmp_path / "checkpoint-1").mkdir()
    with pytest.warns(UserWarning, match="spmd_state.pt is missing"):
        trainer._load_rng_state(str(tmp_path / "checkpoint-1"))


def test_glancing_draws_from_a_seeded_per_rank_generator(tmp_path, monkeypatch):
    trainer = spmd_trainer(tmp_path, glance_ratio=0.5)
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(5, 60, (8, 1, 12), generator=generator)
    logits = torch.zeros(8, 12, 64)  # every slot wrong: half of each target is revealed
    global_rng = torch.get_rng_state()
    _, rank0 = trainer._glance(logits, targets)
    assert torch.equal(torch.get_rng_state(), global_rng)  # the global RNG is left alone
    assert torch.equal(trainer._glance(logits, targets)[1].ne(-100).sum(), rank0.ne(-100).sum())
    trainer._glance_key = None  # a fresh run at the same step draws the same slots
    assert torch.equal(trainer._glance(logits, targets)[1], rank0)
    monkeypatch.setattr(type(trainer.args), "process_index", property(lambda self: 1))
    trainer._glance_key = None
    assert not torch.equal(trainer._glance(logits, targets)[1], rank0)  # another rank reveals other slots
