"""SPMDSeq2SeqTrainer on the tiny model: the loss against a plain per-sample reference of docs/spmd.md for every
preset and option, stop-gradient, pace schedule, gradient accumulation, resume, AR/mixed modes, eval, model card."""

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from bang_nar.trainer import SPMDDataCollator, SelfPacedState
from tests.conftest import tiny_model
from tests.spmd_toy import single_thread, spmd_args, spmd_trainer, toy_dataset  # noqa: F401 (autouse fixture)


def _real(row: torch.Tensor) -> torch.Tensor:
    return row[row.ne(-100)]


def reference(model, batch, args, teacher=None, uniform=None, keep_fraction=1.0, lam=None):
    """docs/spmd.md computed the slow way: one sample at a time, unpadded, one NAR decoder of length |c| per
    candidate, the teacher as a separate full AR forward. Returns (loss, difficulties)."""
    eps, tau, alpha = args.label_smoothing_factor, args.kd_temperature, args.kd_alpha
    teacher = teacher if teacher is not None else model
    sample_losses, difficulties = [], []
    for i in range(batch["input_ids"].size(0)):
        source = _real(batch["input_ids"][i].masked_fill(batch["attention_mask"][i] == 0, -100))[None]
        candidates = [_real(batch["labels"][i])] if "gold" in args.target_sources else []
        if "ar_kd" in args.target_sources:
            candidates += [_real(c) for c in batch["kd_labels"][i][: args.kd_top_k] if c.ne(-100).any()]
        rows = []  # (ℓ_NAR, KL, disagreement) per candidate
        for c in candidates:
            nar = model(input_ids=source, labels=c[None], mode="nar").logits[0]  # decoder length |c|
            nll = F.cross_entropy(nar, c, label_smoothing=eps)  # Eq. 1
            with torch.no_grad():
                q = teacher(input_ids=source, labels=c[None], mode="ar").logits[0]
            kl = tau**2 * F.kl_div((nar / tau).log_softmax(-1), (q / tau).log_softmax(-1), log_target=True, reduction="none").sum(-1).mean()
            rows.append((nll, kl, (nar.argmax(-1) != c).float().mean()))
        if args.mix_strategy == "all":
            chosen = rows
        elif args.mix_strategy == "random":
            n_kd = len(rows) - 1
            chosen = [rows[1 + int(uniform[i] / args.p_mix * n_kd)]] if uniform[i] < args.p_mix else [rows[0]]
        else:
            chosen = [min(rows, key=lambda r: float(r[0].detach()))]
        sample_losses.append(sum((1 - alpha) * r[0] + alpha * r[1] for r in chosen) / len(chosen))  # Eq. 4
        signal = {"nar_loss": 0, "ar_nar_kl": 1, "disagreement": 2}[args.pace_signal]
        difficulties.append(sum(float(r[signal]) for r in chosen) / len(chosen))  # Eq. 5
    d = torch.tensor(difficulties)
    if args.pace_mode == "percentile":  # Eq. 6
        keep = math.ceil(keep_fraction * len(d) - 1e-9)
        v = torch.zeros(len(d))
        v[torch.sort(d, stable=True).indices[:keep]] = 1
    elif args.pace_mode == "hard":
        v = (d < lam).float()
    elif args.pace_mode == "linear":
        v = (1 - d / lam).clamp_min(0)
    else:
        v = torch.ones(len(d))
    loss = sum(v[i] * sample_losses[i] for i in range(len(d))) / max(float(v.sum()), 1.0)  # Eq. 7
    if args.ar_loss_weight:
        ar = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"], mode="ar", smoothing_eps=eps)
        loss = loss + args.ar_loss_weight * ar.loss
    return loss, d


CASES = {
    "preset-bang_nar": {"spmd_preset": "bang_nar"},
    "preset-seq_kd": {"spmd_preset": "seq_kd"},
    "preset-spmd": {},
    "preset-spmd_reconstruction": {"spmd_preset": "spmd_reconstruction"},
    "kd-top-1": {"spmd_preset": "spmd_reconstruction", "kd_top_k": 1},
    "token-kd-only": {"spmd_preset": "bang_nar", "kd_alpha": 1.0},
    "temperature-2": {"kd_temperature": 2.0, "pace_mode": "none"},
    "mix-random": {"spmd_preset": "spmd_reconstruction", "mix_strategy": "random", "p_mix": 0.6},
    "mix-all": {"mix_strategy": "all"},
    "signal-ar_nar_kl": {"pace_signal": "ar_nar_kl"},
    "signal-disagreement": {"pace_signal": "disagreement", "pace_q0": 0.75},
    "pace-hard": {"pace_mode": "hard"},
    "pace-linear": {"pace_mode": "linear"},
    "pace-none": {"pace_mode": "none"},
    "frozen-teacher": {"teacher": "FROZEN"},
}


@pytest.fixture(scope="module")
def frozen_teacher_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher")
    tiny_model(seed=11).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_loss_matches_the_reference(tmp_path, overrides, frozen_teacher_dir):
    overrides = {k: (frozen_teacher_dir if v == "FROZEN" else v) for k, v in overrides.items()}
    dataset = toy_dataset(num=4)
    batch = SPMDDataCollator(pad_token_id=0)(list(dataset))
    model = tiny_model(seed=3).train()
    args = spmd_args(tmp_path, **overrides)
    teacher = tiny_model(seed=11).eval() if args.teacher != "self" else None
    uniform = torch.rand(4, generator=torch.Generator().manual_seed(args.seed))
    # λ0 = the median difficulty, so that hard/linear weights are neither all 0 nor all 1.
    _, d = reference(model, batch, args, teacher, uniform, lam=1.0)
    if args.pace_mode in ("hard", "linear"):
        args = spmd_args(tmp_path, pace_lambda0=float(d.median()) + 1e-3, **overrides)
    trainer = spmd_trainer(tmp_path, model=model, dataset=dataset, pace_lambda0=args.pace_lambda0, **overrides)
    trainer.state.max_steps = 10  # step 0 of 10: q(0) = q0
    expected, _ = reference(model, batch, args, teacher, uniform, keep_fraction=args.pace_q0, lam=args.pace_lambda0)
    actual = trainer.compute_loss(model, batch, num_items_in_batch=None)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        trainer.compute_loss(model, batch, num_items_in_batch=batch["labels"].ne(-100).sum()), expected, rtol=1e-5, atol=1e-5
    ) if args.mix_strategy != "random" else None  # a second call draws new random choices


def test_teacher_gets_no_gradient(tmp_path):
    """The loss gradient equals the reference's with the teacher as a constant copy: no gradient through q_AR."""
    dataset = toy_dataset(num=4)
    batch = SPMDDataCollator(pad_token_id=0)(list(dataset))
    model = tiny_model(seed=3).train()
    trainer = spmd_trainer(tmp_path, model=model, dataset=dataset, kd_alpha=1.0, ar_loss_weight=0.0, pace_mode="none")
    trainer.compute_loss(model, batch).backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    reference(model, batch, trainer.args, teacher=copy.deepcopy(model))[0].backward()
    assert ours.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, grad in ours.items():
        torch.testing.assert_close(grad, model.get_parameter(name).grad, rtol=1e-4, atol=1e-6, msg=name)


def test_frozen_teacher_stays_frozen(tmp_path, frozen_teacher_dir):
    dataset = toy_dataset(num=4)
    trainer = spmd_trainer(tmp_path, dataset=dataset, teacher=frozen_teacher_dir, max_steps=2)
    before = {n: p.clone() for n, p in trainer.teacher.named_parameters()}
    trainer.train()
    assert all(p.grad is None and torch.equal(p, before[n]) for n, p in trainer.teacher.named_parameters())


def test_pace_schedule_follows_q_and_ends_with_every_sample(tmp_path):
    trainer = spmd_trainer(tmp_path, max_steps=8, pace_q0=0.25, pace_warmup_ratio=0.5, per_device_train_batch_size=8)
    trainer.train()
    logs = [log for log in trainer.state.log_history if "pace/kept_fraction" in log]
    for log in logs:
        q = 0.25 + 0.75 * min(1.0, (log["step"] - 1) / 4)  # the loss of step s is computed at s - 1 updates
        assert log["pace/keep_target"] == pytest.approx(q)
        assert log["pace/kept_fraction"] == pytest.approx(math.ceil(q * 8 - 1e-9) / 8)
    assert [log["pace/kept_fraction"] for log in logs[4:]] == [1.0] * 4


def test_state_schedule_lambda_grows_per_epoch():
    state = SelfPacedState(mode="hard", lambda0=2.0, growth=1.5)
    state.schedule(step=3, epoch=2.7, max_steps=10)
    assert state.lam == pytest.approx(2.0 * 1.5**2)


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    """Without percentile pacing, 2 micro-batches of 2 give the update of one batch of 4 (Trainer convention)."""
    weights = []
    for batch_size, accumulation in ((4, 1), (2, 2)):
        trainer = spmd_trainer(
            tmp_path / str(batch_size), pace_mode="none", max_steps=2, per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation, optim="sgd",  # Adam would blow up float noise in zero gradients
        )  # fmt: skip
        trainer.train()
        weights.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_resume_gives_the_uninterrupted_weights(tmp_path):
    """Mixed AR/NAR draws, random mixing and percentile pacing all continue identically after a resume."""
    options = dict(train_mode="mixed", nar_ratio=0.7, spmd_preset="spmd_reconstruction", mix_strategy="random",
                   max_steps=6, save_strategy="steps", save_steps=3)  # fmt: skip
    full = spmd_trainer(tmp_path / "full", **options)
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-3"
    assert (checkpoint / "spmd_state.pt").is_file()
    resumed = spmd_trainer(tmp_path / "resumed", **options)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.pace_state.state_dict()["step"] == full.pace_state.state_dict()["step"]
    assert torch.equal(resumed.pace_state.generator.get_state(), full.pace_state.generator.get_state())
    for (name, a), (_, b) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_four_step_train_logs_metrics_and_saves(tmp_path, precision):
    trainer = spmd_trainer(tmp_path, max_steps=4, mix_strategy="all", bf16=precision == "bf16")  # CPU autocast
    trainer.train()
    trainer.save_model()
    log = trainer.state.log_history[0]
    for key in ("loss", "nar_loss", "kd_loss", "ar_loss", "pace/mean_weight", "pace/kept_fraction", "pace/threshold",
                "mix/from_gold", "mix/from_distilled"):  # fmt: skip
        assert key in log and math.isfinite(log[key]), key
    assert load_file(tmp_path / "model.safetensors")


def test_ar_mode_is_the_model_loss_and_mixed_draws_both(tmp_path):
    dataset = toy_dataset(num=4)
    batch = SPMDDataCollator(pad_token_id=0)(list(dataset))
    model = tiny_model(seed=3).train()
    trainer = spmd_trainer(tmp_path, model=model, dataset=dataset.remove_columns("kd_labels"), train_mode="ar")
    expected = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}, mode="ar", smoothing_eps=0.1).loss
    torch.testing.assert_close(trainer.compute_loss(model, batch), expected)
    mixed = spmd_trainer(tmp_path / "mixed", train_mode="mixed", nar_ratio=0.5, max_steps=8)
    mixed.train()
    kinds = {log["nar_batch"] for log in mixed.state.log_history if "nar_batch" in log}
    assert kinds == {0.0, 1.0}


def test_missing_distilled_column_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="kd_labels.*distill_dataset"):
        spmd_trainer(tmp_path, dataset=toy_dataset().remove_columns("kd_labels"))
    spmd_trainer(tmp_path, dataset=toy_dataset().remove_columns("kd_labels"), spmd_preset="bang_nar")  # fine


def test_evaluate_with_nar_generate(tmp_path):
    trainer = spmd_trainer(tmp_path, predict_with_generate=True, per_device_eval_batch_size=4)
    metrics = trainer.evaluate(eval_dataset=toy_dataset(num=8, seed=1))
    assert math.isfinite(metrics["eval_loss"])
    predictions = trainer.predict(toy_dataset(num=4, seed=1)).predictions
    assert predictions.shape[0] == 4
    plain = spmd_trainer(tmp_path, per_device_eval_batch_size=4)
    expected = plain.evaluate(eval_dataset=toy_dataset(num=8, seed=1))["eval_loss"]
    assert metrics["eval_loss"] == pytest.approx(expected, rel=1e-5)


def test_model_card_says_reconstruction(tmp_path):
    trainer = spmd_trainer(tmp_path)
    trainer.create_model_card(model_name="bang-spmd-toy", dataset_name="toy")
    card = Path(tmp_path, "README.md").read_text()
    assert "SPMD reconstruction" in card and "2205.11162" in card and "| `kd_alpha` | `0.5` |" in card
    assert "- spmd" in card and "{{" not in card
