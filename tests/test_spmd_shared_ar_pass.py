"""`ar_loss_target="chosen"` (issue 13, step cost): the AR term trains on m_i, and with the self-teacher in training
mode one AR pass gives both β·ℓ_AR(m_i) and q_AR."""

import pytest
import torch

from bang_nar.trainer import SPMDDataCollator, SPMDTrainingArguments
from tests.conftest import tiny_model
from tests.spmd_toy import single_thread, spmd_trainer, toy_dataset  # noqa: F401 (autouse fixture)

ONE_CANDIDATE = dict(kd_top_k=1, pace_mode="none")  # m_i is then kd_labels[:, 0] whatever the NAR loss says


def _batch() -> dict[str, torch.Tensor]:
    return SPMDDataCollator(pad_token_id=0)(list(toy_dataset(num=4)))


def _modes_seen(model, monkeypatch) -> list[str]:
    seen: list[str] = []
    original = type(model).forward
    monkeypatch.setattr(
        type(model), "forward", lambda self, *a, **k: seen.append(k.get("mode")) or original(self, *a, **k)
    )
    return seen


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, ["nar", "ar", "ar"]),  # default: AR gold pass + self-teacher pass
        ({"ar_loss_target": "chosen"}, ["nar", "ar"]),  # one AR pass serves both
        ({"ar_loss_target": "chosen", "teacher_dropout": False}, ["nar", "ar", "ar"]),  # eval-mode teacher: its own
        ({"ar_loss_target": "chosen", "kd_alpha": 0.0}, ["nar", "ar"]),  # no teacher needed
    ],
)
def test_passes_per_step(tmp_path, monkeypatch, options, expected):
    model = tiny_model(seed=3).train()
    seen = _modes_seen(model, monkeypatch)
    spmd_trainer(tmp_path, model=model, dataset=toy_dataset(num=4), **options).compute_loss(model, _batch())
    assert seen == expected


def test_shared_pass_gives_the_loss_and_gradients_of_two_passes(tmp_path):
    """Without dropout (tiny_config has none) the training-mode and eval-mode teachers agree, so the shared pass must reproduce the
    two-pass step exactly: same loss, same gradients."""
    batch = _batch()
    results = []
    for teacher_dropout in (True, False):  # True: one shared AR pass; False: AR pass + separate teacher pass
        model = tiny_model(seed=3).train()
        trainer = spmd_trainer(tmp_path, model=model, ar_loss_target="chosen", teacher_dropout=teacher_dropout)
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (shared_loss, shared_grads), (loss, grads) = results
    torch.testing.assert_close(shared_loss, loss)
    assert len(shared_grads) == len(grads) > 0
    for shared, separate in zip(shared_grads, grads):
        torch.testing.assert_close(shared, separate)


def test_ar_term_is_on_the_chosen_candidate(tmp_path):
    """loss(β = 1) − loss(β = 0) is the AR stream's label-smoothed loss on m_i (not on gold)."""
    model = tiny_model(seed=3).train()
    batch = _batch()
    losses = {}
    for beta in (0.0, 1.0):
        options = dict(ar_loss_target="chosen", ar_loss_weight=beta, **ONE_CANDIDATE)
        trainer = spmd_trainer(tmp_path, model=model, **options)
        losses[beta] = trainer.compute_loss(model, batch).detach()
    chosen = batch["kd_labels"][:, 0]

    def ar_loss(labels):
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
        return model(**inputs, labels=labels, mode="ar", smoothing_eps=0.1).loss.detach()

    torch.testing.assert_close(losses[1.0] - losses[0.0], ar_loss(chosen))
    assert not torch.allclose(ar_loss(chosen), ar_loss(batch["labels"]))


def test_unknown_target_is_refused(tmp_path):
    with pytest.raises(ValueError, match="ar_loss_target must be 'gold' or 'chosen', got 'teacher'"):
        SPMDTrainingArguments(output_dir=str(tmp_path), ar_loss_target="teacher", report_to="none")
