"""The stored sparse KD target (docs/spmd.md#stored-kd): the teacher's top-n log-probs stored by `distill_dataset(...,
kd_top_n=n)` and read by `kd_target="stored"` instead of a teacher pass (Eq. 2s)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import datasets
import pytest
import torch

from bang_nar.trainer import (
    SPMDDataCollator,
    distill_dataset,
    sequence_kd_nll,
    sparse_kd_divergence,
    token_kd_divergence,
)
from bang_nar.trainer.collator import KD_TOP_IDS, KD_TOP_LOG_PROBS
from bang_nar.trainer.sequence_kd import StaleChunksError, load_provenance
from tests.conftest import tiny_model
from tests.spmd_toy import (  # noqa: F401 (autouse fixture)
    run_two_processes,
    single_thread,
    spmd_args,
    spmd_trainer,
    toy_dataset,
)
from tests.test_spmd_device import BlockingHostCopies, count_host_syncs, sync_free_model_masks  # noqa: F401 (fixture)

VOCAB = 128  # tests.conftest.tiny_config
SETTINGS = dict(num_beams=4, num_return_sequences=3, max_new_tokens=6, batch_size=3, show_progress=False)


def _source_only(num: int = 7) -> datasets.Dataset:
    return toy_dataset(num=num).remove_columns("kd_labels")


@torch.no_grad()
def _teacher_log_probs(teacher, source: list[int], target: list[int]) -> torch.Tensor:
    """The teacher's full-vocabulary AR log-probs teacher-forced on one target, alone (no batching): `[|ŷ|, V]`."""
    input_ids = torch.tensor([source])
    labels = torch.tensor([target])
    logits = teacher(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), mode="ar", use_cache=False,
                     decoder_input_ids=teacher.prepare_decoder_input_ids_from_labels(labels)).logits  # fmt: skip
    return logits[0].float().log_softmax(-1)


@pytest.mark.parametrize("options", [{"probability_mass": None, "min_distance": None}, {"probability_mass": 0.6}])
def test_stored_top_n_equal_a_direct_teacher_forced_computation(tmp_path, options):
    """Every kept target (also after k from the data drops some) carries the teacher's own top-n at each position."""
    teacher = tiny_model(seed=5).eval()
    result = distill_dataset(teacher, _source_only(), tmp_path, kd_top_n=5, **SETTINGS, **options)
    assert result.features[KD_TOP_IDS].feature.feature.feature.dtype == "int32"
    assert result.features[KD_TOP_LOG_PROBS].feature.feature.feature.dtype == "float16"
    assert load_provenance(tmp_path)["kd_top_n"] == 5
    for row in result:
        assert len(row[KD_TOP_IDS]) == len(row[KD_TOP_LOG_PROBS]) == len(row["kd_labels"])
        for target, ids, log_probs in zip(row["kd_labels"], row[KD_TOP_IDS], row[KD_TOP_LOG_PROBS]):
            direct = _teacher_log_probs(teacher, row["input_ids"], target)  # [|ŷ|, V]
            values, indices = direct.topk(5, dim=-1)
            assert torch.tensor(ids).tolist() == indices.tolist()
            # float16 precision (the stored precision), most probable first
            torch.testing.assert_close(torch.tensor(log_probs), values.half().float(), atol=2e-3, rtol=2e-3)


def test_distillation_refuses_other_kd_top_n_on_resume_and_bad_values(tmp_path):
    teacher = tiny_model(seed=5)
    distill_dataset(teacher, _source_only(), tmp_path, keep_chunks=True, **SETTINGS)
    settings = json.loads((tmp_path / "kd_chunks" / "settings.json").read_text())
    assert settings["kd_top_n"] is None
    with pytest.raises(StaleChunksError, match="kd_top_n"):
        distill_dataset(teacher, _source_only(), tmp_path, kd_top_n=4, **SETTINGS)
    for bad in (0, VOCAB + 1):
        with pytest.raises(ValueError, match="kd_top_n must be in"):
            distill_dataset(teacher, _source_only(), tmp_path / "bad", kd_top_n=bad, **SETTINGS)


def _dense_and_sparse(n: int, temperature: float, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(3, 7, VOCAB, generator=generator, requires_grad=True)
    teacher = 3 * torch.randn(3, 2, 5, VOCAB, generator=generator)
    mask = torch.ones(3, 2, 5, dtype=torch.bool)
    mask[0, 1, 2:] = False
    mask[2, 0, 4:] = False
    values, indices = teacher.log_softmax(-1).topk(n, dim=-1)
    return student, teacher, mask, indices, values


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_with_n_equal_to_the_vocabulary_the_stored_kl_is_the_dense_kl(temperature):
    """Eq. 2s = Eq. 2 at n = V, as a loss and its gradient; at τ = 1 also with the student's log-probs of the stored
    ids gathered together with ℓ_NAR's (`sequence_kd_nll(extra_ids=...)`, what the trainer does)."""
    student, teacher, mask, indices, values = _dense_and_sparse(VOCAB, temperature)
    dense, dense_parts = token_kd_divergence(student.unsqueeze(1), teacher, mask, temperature)
    (dense_grad,) = torch.autograd.grad(dense, student)
    log_probs = student.log_softmax(-1) if temperature == 1.0 else None
    sparse, sparse_parts = sparse_kd_divergence(student, indices, values, mask, temperature,
                                                student_log_probs=log_probs)  # fmt: skip
    (sparse_grad,) = torch.autograd.grad(sparse, student)
    torch.testing.assert_close(sparse, dense, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sparse_grad, dense_grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sparse_parts["per_sequence"], dense_parts["per_sequence"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sparse_parts["stored_mass"], torch.ones(3, 2))
    if temperature == 1.0:  # one gather for ℓ_NAR and the KL: the same ℓ_NAR + KL and gradients
        candidates = torch.randint(0, VOCAB, (3, 2, 5), generator=torch.Generator().manual_seed(3))

        def both(shared: bool) -> tuple[torch.Tensor, torch.Tensor]:
            nll, parts = sequence_kd_nll(student, candidates, 0.1, extra_ids=indices if shared else None)
            kd, _ = sparse_kd_divergence(student, indices, values, mask, student_log_probs=parts["log_probs"],
                                         student_stored_log_probs=parts.get("extra_log_probs"))  # fmt: skip
            return (nll + kd).detach(), torch.autograd.grad(nll + kd, student)[0]

        (loss_shared, grad_shared), (loss_apart, grad_apart) = both(True), both(False)
        torch.testing.assert_close(loss_shared, loss_apart)
        torch.testing.assert_close(grad_shared, grad_apart)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_small_n_is_the_renormalised_formula(temperature):
    """Eq. 2s by hand: q̃ = q^{1/τ} renormalised over the n stored ids, KL against the full-vocabulary p^τ."""
    student, teacher, mask, indices, values = _dense_and_sparse(3, temperature, seed=1)
    loss, parts = sparse_kd_divergence(student, indices, values, mask, temperature)
    log_p = (student.detach() / temperature).log_softmax(-1)
    expected = torch.zeros(3, 2)
    total, count = 0.0, 0
    for b in range(3):
        for k in range(2):
            per_sample = []
            for t in range(5):
                if not mask[b, k, t]:
                    continue
                weights = [float(values[b, k, t, j]) / temperature for j in range(3)]
                norm = sum(torch.tensor(weights).exp().tolist())
                q = [float(torch.tensor(w).exp()) / norm for w in weights]
                kl = sum(q[j] * (torch.tensor(q[j]).log() - log_p[b, t, indices[b, k, t, j]]) for j in range(3))
                per_sample.append(float(kl) * temperature**2)
            expected[b, k] = sum(per_sample) / len(per_sample)
            total, count = total + sum(per_sample), count + len(per_sample)
    torch.testing.assert_close(parts["per_sequence"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, torch.tensor(total / count), atol=1e-5, rtol=1e-5)
    mass = values.exp().sum(-1)
    assert torch.all((parts["stored_mass"] > 0) & (parts["stored_mass"] < 1))
    torch.testing.assert_close(parts["stored_mass"][1, 0], mass[1, 0].mean())


def _with_exact_top(dataset: datasets.Dataset, teacher, n: int) -> datasets.Dataset:
    """The dataset with the teacher's top-n of every kd target at full precision (no float16 rounding)."""
    ids, log_probs = [], []
    for row in dataset:
        tops = [_teacher_log_probs(teacher, row["input_ids"], target).topk(n, dim=-1) for target in row["kd_labels"]]
        ids.append([top.indices.tolist() for top in tops])
        log_probs.append([top.values.tolist() for top in tops])
    return dataset.add_column(KD_TOP_IDS, ids).add_column(KD_TOP_LOG_PROBS, log_probs)


@pytest.mark.parametrize(
    "options",
    [{"mix_strategy": "min_loss"}, {"mix_strategy": "all"}, {"kd_top_k": 2, "pace_signal": "ar_nar_kl"},
     {"kd_temperature": 2.0}, {"glance_ratio": 0.5}],
    ids=["min_loss", "all", "kd_top_k-ar_nar_kl", "tau2", "glancing"],
)  # fmt: skip
def test_trainer_stored_kl_equals_the_frozen_teacher_kl(tmp_path, options):
    """n = V through the trainer: the loss and gradients of kd_target='stored' are those of the frozen teacher
    that stored them (to 1e-4); with the float16 values `distill_dataset` stores, to float16 precision."""
    teacher_dir = tmp_path / "teacher"
    teacher = tiny_model(seed=11).eval()
    teacher.save_pretrained(teacher_dir)
    dataset = _with_exact_top(toy_dataset(num=4, k=3), teacher, VOCAB)
    batch = SPMDDataCollator(pad_token_id=0)(list(dataset))

    def loss_and_grads(**other):
        trainer = spmd_trainer(tmp_path / "run", dataset=dataset, **options, **other)
        model = trainer.model.train()
        loss = trainer.compute_loss(model, batch)
        grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
        return loss.detach(), grads, trainer

    frozen, frozen_grads, _ = loss_and_grads(teacher=str(teacher_dir))
    stored, stored_grads, trainer = loss_and_grads(kd_target="stored")
    assert trainer.teacher is None and trainer.args.ar_loss_weight == 0.0
    torch.testing.assert_close(stored, frozen, atol=1e-4, rtol=1e-4)
    for a, b in zip(stored_grads, frozen_grads):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # the stored precision (float16 log-probs, as distill_dataset writes them) keeps the loss within 1e-4 too
    rounded = batch | {KD_TOP_LOG_PROBS: batch[KD_TOP_LOG_PROBS].half().float()}
    fresh = spmd_trainer(tmp_path / "run", dataset=dataset, kd_target="stored", **options)  # glancing: same draws
    approx = fresh.compute_loss(fresh.model.train(), rounded).detach()
    torch.testing.assert_close(approx, frozen, atol=1e-4, rtol=1e-4)


def test_training_with_stored_targets_never_runs_a_teacher(tmp_path, monkeypatch):
    """A short run from `distill_dataset(..., kd_top_n=n)` data: no teacher is loaded or called, one NAR pass per
    step (β = 0, the default with stored targets), plus one AR gold pass with β = 0.5."""
    data = distill_dataset(tiny_model(seed=5), _source_only(8), tmp_path / "kd", kd_top_n=6, **SETTINGS)

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher ran")

    monkeypatch.setattr("bang_nar.trainer.spmd_trainer.SPMDSeq2SeqTrainer._teacher_logits", no_teacher)
    for beta, passes in ((None, ["nar"]), (0.5, ["nar", "ar"])):
        options = {} if beta is None else {"ar_loss_weight": beta}
        trainer = spmd_trainer(tmp_path / f"run{beta}", dataset=data, kd_target="stored", max_steps=3, **options)
        assert trainer.teacher is None
        modes: list[str] = []
        hook = trainer.model.register_forward_pre_hook(lambda m, a, kw, seen=modes: seen.append(kw["mode"]),
                                                       with_kwargs=True)  # fmt: skip
        trainer.train()
        hook.remove()
        assert modes == passes * 3
        logs = [e for e in trainer.state.log_history if "kd_loss" in e]
        assert len(logs) == 3 and all(e["kd_loss"] > 0 and 0 < e["kd/stored_mass"] <= 1.0 for e in logs)
        assert ("ar_loss" in logs[0]) == (beta is not None)


def test_the_option_refuses_what_it_cannot_do(tmp_path):
    args = spmd_args(tmp_path, kd_target="stored")
    assert args.uses_stored_kd and args.ar_loss_weight == 0.0 and not args.shares_ar_pass
    assert spmd_args(tmp_path, kd_target="stored", ar_loss_weight=0.5).ar_loss_weight == 0.5
    assert spmd_args(tmp_path, kd_target="stored", mix_strategy="all", glance_ratio=0.0).uses_stored_kd
    refusals = {
        "has the teacher's top-n of the distilled targets only": {"spmd_preset": "spmd_reconstruction"},
        "computes no KL": {"spmd_preset": "seq_kd"},
        "would be unused": {"teacher": "some/teacher"},
        "kd_target must be": {"kd_target": "cached"},
    }
    for message, options in refusals.items():
        with pytest.raises(ValueError, match=message):
            spmd_args(tmp_path, **{"kd_target": "stored", **options})
    with pytest.raises(ValueError, match="kd_target='stored' needs the columns"):
        spmd_trainer(tmp_path / "run", kd_target="stored")  # toy data: distilled targets, no stored top-n


def test_collator_pads_the_stored_columns_with_the_targets():
    features = [
        {"input_ids": [5, 3], "labels": [3], "kd_labels": [[9, 9, 3], [8, 3]],
         KD_TOP_IDS: [[[9, 1], [9, 2], [3, 4]], [[8, 1], [3, 2]]],
         KD_TOP_LOG_PROBS: [[[-0.1, -3.0], [-0.2, -2.0], [-0.3, -1.5]], [[-0.5, -1.0], [-0.25, -2.5]]]},
        {"input_ids": [5, 3], "labels": [3], "kd_labels": [[4, 3]],
         KD_TOP_IDS: [[[4, 7], [3, 7]]], KD_TOP_LOG_PROBS: [[[-0.5, -1.0], [-0.75, -1.25]]]},
    ]  # fmt: skip
    batch = SPMDDataCollator(pad_token_id=0, pad_to_multiple_of=4)(features)
    assert batch["kd_labels"].shape == (2, 2, 4)
    assert batch[KD_TOP_IDS].shape == batch[KD_TOP_LOG_PROBS].shape == (2, 2, 4, 2)
    assert batch[KD_TOP_IDS].dtype == torch.long and batch[KD_TOP_LOG_PROBS].dtype == torch.float32
    assert batch[KD_TOP_IDS][0, 1].tolist() == [[8, 1], [3, 2], [0, 0], [0, 0]]
    assert batch[KD_TOP_LOG_PROBS][1, 0, 1].tolist() == [-0.75, -1.25]
    assert batch[KD_TOP_LOG_PROBS][1, 1].abs().sum() == 0  # an absent candidate: finite zeros, masked by the loss
    with pytest.raises(ValueError, match="Only some features carry 'kd_top_ids'"):
        SPMDDataCollator(pad_token_id=0)([features[0], {k: v for k, v in features[1].items() if "top" not in k}])
    misaligned = [{**features[1], KD_TOP_IDS: [[[4, 7]]], KD_TOP_LOG_PROBS: [[[-0.5, -1.0]]]}]
    with pytest.raises(ValueError, match="has 1 positions but its target"):
        SPMDDataCollator(pad_token_id=0)(misaligned)


def test_cli_flags_parse_and_validate(tmp_path, capsys):
    from bang_nar.cli import distill, train

    base = ["--model", "m", "--data", "d.jsonl", "--output_dir", str(tmp_path / "o")]
    assert distill.parse(base)[0].kd_top_n is None
    assert distill.parse([*base, "--kd_top_n", "8"])[0].kd_top_n == 8
    assert distill.parse([*base, "--kd-top-n", "1"])[0].kd_top_n == 1
    with pytest.raises(SystemExit):
        distill.parse([*base, "--kd_top_n", "0"])
    assert "--kd_top_n must be at least 1, got 0" in capsys.readouterr().err
    train_base = ["--data", "d", "--output_dir", str(tmp_path / "t"), "--use_cpu"]
    assert train.parse([*train_base, "--kd_target", "stored"])[2].uses_stored_kd
    with pytest.raises(SystemExit):
        train.parse([*train_base, "--kd_target", "stored", "--spmd_preset", "bang_nar"])
    assert "kd_target='stored' replaces the teacher pass" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse([*train_base, "--kd_target", "cached"])
    assert "kd_target" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options",
    [{}, {"mix_strategy": "all", "pace_signal": "ar_nar_kl"}, {"ar_loss_weight": 0.5, "ar_loss_target": "chosen"},
     {"glance_ratio": 0.5}, {"train_mode": "mixed", "nar_ratio": 0.5}],
    ids=["min_loss", "all-ar_nar_kl", "beta-on-m_i", "glancing", "mixed"],
)  # fmt: skip
@pytest.mark.usefixtures("sync_free_model_masks")
def test_stored_step_is_device_clean_and_sync_free(tmp_path, options):
    """As tests/test_spmd_device.py for the teacher: on `meta` no CPU tensor meets the model's and no host sync
    happens; a whole training_step on the CPU converts no tensor to Python."""
    dataset = _with_exact_top(toy_dataset(num=4), tiny_model(seed=11).eval(), 5)
    batch = SPMDDataCollator(pad_token_id=0)(list(dataset))
    model = tiny_model(seed=3).train()
    trainer = spmd_trainer(tmp_path, model=model, dataset=dataset, kd_target="stored", **options)
    trainer.state.max_steps = 10
    num_items = batch["labels"].ne(-100).sum()
    with count_host_syncs() as calls:
        for _ in range(3):  # mixed: both modes
            trainer.training_step(model, batch, num_items_in_batch=num_items)
    mixed = options.get("train_mode") == "mixed"
    # mixed: the per-batch mode is drawn from the host generator (a CPU tensor, no device sync), one per step
    assert calls == (["__float__"] * 3 if mixed else [])
    if mixed:
        assert {"ar_loss", "kd/stored_mass"} <= set(trainer._reduce_metrics("train"))  # both modes ran
    if options.get("glance_ratio"):
        return  # glancing's generator cannot live on `meta` (nor does tests/test_spmd_device.py try it)
    model.to("meta")
    model.tie_weights()
    on_meta = {k: v.to("meta") for k, v in batch.items()}
    with BlockingHostCopies() as copies:
        loss = trainer.compute_loss(model, on_meta, num_items_in_batch=torch.tensor(20, device="meta"))
        loss.backward()
    assert loss.device.type == "meta" and copies.copies == []


def test_a_ruled_out_token_gives_a_finite_loss():
    student = torch.randn(1, 2, 6, requires_grad=True)
    ids = torch.tensor([[[[1, 2, 3], [4, 5, 0]]]])
    log_probs = torch.tensor([[[[-0.1, -2.5, -float("inf")], [-0.2, -1.7, -float("inf")]]]])
    loss, _ = sparse_kd_divergence(student, ids, log_probs, torch.ones(1, 1, 2, dtype=torch.bool))
    (grad,) = torch.autograd.grad(loss, student)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_cli_train_refuses_data_without_the_stored_columns(tmp_path, capsys):
    """One line, before any model loads: a distilled folder without --kd_top_n has no stored top-n."""
    from bang_nar.cli import main

    distill_dataset(tiny_model(seed=5), _source_only(3), tmp_path / "kd", **SETTINGS)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(tmp_path / "kd"), "--output_dir", str(tmp_path / "out"), "--kd_target", "stored",
              "--use_cpu"])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("bang-nar train: error: --kd_target stored reads the teacher's top-n") and "--kd_top_n" in err


def test_train_model_keeps_the_stored_columns(tmp_path, monkeypatch):
    """`bang_nar.pipeline.train_model` (what `bang-nar train` calls) selects the columns the trainer reads: with
    kd_target='stored' the stored top-n too (it used to drop them, and the trainer refused the data)."""
    from bang_nar import pipeline
    from bang_nar.trainer import SPMDSeq2SeqTrainer

    seen = {}

    class Stop(Exception):
        pass

    def capture(self, model=None, args=None, **kwargs):
        seen["columns"] = kwargs["train_dataset"].column_names
        raise Stop

    monkeypatch.setattr(SPMDSeq2SeqTrainer, "__init__", capture)
    dataset = toy_dataset(num=2).add_column(KD_TOP_IDS, [[[[5]]]] * 2).add_column(KD_TOP_LOG_PROBS, [[[[-0.5]]]] * 2)
    for kd_target, expected in (("stored", [KD_TOP_IDS, KD_TOP_LOG_PROBS]), ("teacher", [])):
        with pytest.raises(Stop):
            pipeline.train_model(None, None, dataset, spmd_args(tmp_path, kd_target=kd_target))
        assert seen["columns"] == ["input_ids", "labels", "kd_labels", *expected]


# Percentile pacing over the global batch and β = 0.5 (the AR term's global token count): what DDP must agree on.
DDP_OPTIONS = dict(kd_target="stored", ar_loss_weight=0.5, max_steps=3, optim="sgd", learning_rate=0.05, pace_q0=0.25)


def _ddp_training(output_dir: Path, batch_size: int) -> tuple[dict[str, torch.Tensor], int]:
    dataset = _with_exact_top(toy_dataset(num=12, k=3), tiny_model(seed=11).eval(), 6)
    trainer = spmd_trainer(output_dir, dataset=dataset, per_device_train_batch_size=batch_size, **DDP_OPTIONS)
    trainer.train()
    weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    return weights, trainer.accelerator.num_processes


def test_two_processes_match_one_process_with_the_global_batch(tmp_path):
    """Under DDP (torchrun, gloo) the stored-KD run gives the weights of one process with the global batch."""
    run_two_processes("tests.test_sparse_kd", tmp_path)
    single, world = _ddp_training(tmp_path / "single", batch_size=4)
    assert world == 1
    for rank in (0, 1):
        for name, value in torch.load(tmp_path / f"weights_{rank}.pt").items():
            torch.testing.assert_close(value, single[name], rtol=1e-5, atol=1e-6, msg=name)


if __name__ == "__main__":  # one torchrun worker of the test above
    torch.set_num_threads(1)
    assert int(os.environ["WORLD_SIZE"]) == 2, "start with torchrun --nproc_per_node 2"
    out = Path(sys.argv[1])
    weights, num_processes = _ddp_training(out / "train", batch_size=2)
    assert num_processes == 2
    torch.save(weights, out / f"weights_{torch.distributed.get_rank()}.pt")
