"""The cheaper SPMD step computes the same thing: one NAR log-softmax shared by ℓ_NAR and the KL, and a frozen
teacher that encodes each source once."""

from __future__ import annotations

import torch
from bang_nar.trainer import SPMDDataCollator
from bang_nar.trainer.spmd_loss import sequence_kd_nll, token_kd_divergence

from tests.conftest import tiny_model
from tests.spmd_toy import single_thread, spmd_trainer, toy_dataset  # noqa: F401 (autouse fixture)


def test_shared_log_probs_give_the_same_kl_and_gradients():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 11, generator=generator, requires_grad=True)
    teacher = torch.randn(2, 1, 5, 11, generator=generator)
    candidates = torch.randint(0, 11, (2, 1, 5), generator=generator)
    mask = torch.ones(2, 1, 5, dtype=torch.bool)
    mask[0, 0, 3:] = False

    def total(shared: bool) -> tuple[torch.Tensor, torch.Tensor]:
        nll, parts = sequence_kd_nll(logits, candidates, 0.1)
        kd, _ = token_kd_divergence(logits.unsqueeze(1), teacher, mask,
                                    student_log_probs=parts["log_probs"].unsqueeze(1) if shared else None)
        (grad,) = torch.autograd.grad(nll + kd, logits)
        return kd.detach(), grad

    (kd_shared, grad_shared), (kd_plain, grad_plain) = total(True), total(False)
    torch.testing.assert_close(kd_shared, kd_plain)
    torch.testing.assert_close(grad_shared, grad_plain)
    assert kd_plain > 0


def test_frozen_teacher_encodes_each_source_once(tmp_path):
    teacher_dir = tmp_path / "teacher"
    tiny_model(seed=11).save_pretrained(teacher_dir)
    dataset = toy_dataset(num=4, k=3)
    trainer = spmd_trainer(tmp_path / "run", dataset=dataset, teacher=str(teacher_dir), mix_strategy="all")
    rows: list[int] = []
    hook = trainer.teacher.get_encoder().register_forward_hook(lambda module, args, kwargs, out: rows.append(
        kwargs["input_ids"].size(0)), with_kwargs=True)
    batch = SPMDDataCollator(pad_token_id=0)(list(dataset))
    model = trainer.model.train()
    loss = trainer.compute_loss(model, batch)
    hook.remove()
    assert torch.isfinite(loss)
    assert rows == [4]  # one row per source, although the teacher scores 3 targets of each
