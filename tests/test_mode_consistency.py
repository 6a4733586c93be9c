"""Issue 10: the mechanisms of mode-consistent SPMD — the Eq. 3 argmin over k-best lists commits every sample to the
mode the student already follows, and glancing training reveals slots in proportion to the first pass's errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from bang_nar.trainer import SPMDDataCollator
from bang_nar.trainer.spmd_loss import candidate_choice, sequence_kd_nll
from tests.conftest import tiny_model
from tests.spmd_toy import single_thread, spmd_trainer, toy_dataset  # noqa: F401 (autouse fixture)

VOCAB, LENGTH, MODES = 64, 5, 4


def _mode_target(sample: int, mode: int) -> list[int]:
    """Mode m of sample i: its own word per position (ids 10 + 12·m + ...), so modes share no token."""
    return [10 + 12 * mode + (sample + t) % 12 for t in range(LENGTH)]


def test_argmin_over_k_best_commits_every_sample_to_the_students_mode():
    """Each sample's 4-best list holds the 4 modes in a different order (the teacher's ranking varies per source);
    the student leans towards mode 2 at every position. The argmin picks mode 2 for every sample, whatever its rank
    in the list; 1-best distillation would give the student each sample's top-ranked mode instead (a mix)."""
    batch, student_mode = 6, 2
    orders = [torch.randperm(MODES, generator=torch.Generator().manual_seed(i)).tolist() for i in range(batch)]
    candidates = torch.tensor([[_mode_target(i, m) for m in order] for i, order in enumerate(orders)])  # [B, K, T]
    logits = torch.zeros(batch, LENGTH, VOCAB)
    for i in range(batch):
        for m in range(MODES):  # every mode is plausible, the student's one a little more
            for t, token in enumerate(_mode_target(i, m)):
                logits[i, t, token] = 2.0 + (1.0 if m == student_mode else 0.0)
    _, parts = sequence_kd_nll(logits, candidates, epsilon=0.1)
    weights, chosen = candidate_choice(parts["per_candidate"], parts["valid"], torch.ones(MODES, dtype=torch.bool))
    picked_modes = [orders[i][int(chosen["index"][i])] for i in range(batch)]
    assert picked_modes == [student_mode] * batch
    assert torch.equal(weights.sum(-1), torch.ones(batch))
    first_ranked = {order[0] for order in orders}
    assert len(first_ranked) > 1  # the 1-best targets of the same batch mix modes


def test_glance_reveals_ceil_ratio_times_errors_of_the_chosen_target(tmp_path):
    trainer = spmd_trainer(tmp_path, spmd_preset="seq_kd", glance_ratio=0.5)
    trainer.state.max_steps, trainer.state.global_step = 10, 0
    target = torch.tensor([[7, 8, 9, 10, 11, -100], [20, 21, 22, -100, -100, -100]])
    logits = torch.zeros(2, 6, VOCAB)
    wrong = [[0, 1, 2, 4], [1]]  # argmax differs from the target at these positions
    for i in range(2):
        for t in range(6):
            token = int(target[i, t]) if target[i, t] >= 0 else 3
            logits[i, t, (token + 1) if t in wrong[i] else token] = 5.0
    torch.manual_seed(0)
    scored, glance_ids = trainer._glance(logits, target[:, None])
    revealed = glance_ids.ge(0)
    assert revealed.sum(-1).tolist() == [math.ceil(0.5 * 4), math.ceil(0.5 * 1)]
    assert torch.equal(glance_ids[revealed], target[revealed])  # revealed slots carry the target's own tokens
    assert (target[revealed] >= 0).all()  # only real slots
    assert torch.equal(scored[:, 0], target.masked_fill(revealed, -100))  # and they are not scored
    trainer.args.glance_ratio = trainer.args.glance_ratio_end = 0.0
    assert not trainer._glance(logits, target[:, None])[1].ge(0).any()


def test_glancing_loss_is_the_nar_loss_of_the_unrevealed_slots_given_the_revealed_ones(tmp_path, monkeypatch):
    dataset = toy_dataset(num=4)
    batch = SPMDDataCollator(pad_token_id=0)(list(dataset))
    model = tiny_model(seed=3).train()
    trainer = spmd_trainer(tmp_path, model=model, dataset=dataset, spmd_preset="seq_kd", glance_ratio=1.0)
    trainer.state.max_steps = 10
    seen = {}
    original = trainer._glance

    def recording(logits, targets):
        seen["targets"] = targets
        seen["scored"], seen["glance_ids"] = original(logits, targets)
        return seen["scored"], seen["glance_ids"]

    monkeypatch.setattr(trainer, "_glance", recording)
    torch.manual_seed(0)
    actual = trainer.compute_loss(model, batch, num_items_in_batch=None)
    assert seen["glance_ids"].ge(0).any(), "an untrained model is wrong somewhere, so something is revealed"
    # Reference: per sample, one NAR pass with the revealed slots fed their gold-token embeddings; label-smoothed
    # cross-entropy over the other slots of the chosen target; mean over samples (no pacing, α = β = 0).
    torch.manual_seed(0)
    losses = []
    for i in range(batch["input_ids"].size(0)):
        target, scored = seen["targets"][i, 0], seen["scored"][i, 0]
        length = int(target.ne(-100).sum())
        source = batch["input_ids"][i][batch["attention_mask"][i].bool()][None]
        glance = seen["glance_ids"][i, :length][None]
        logits = model(input_ids=source, labels=target[:length][None], mode="nar", decoder_glance_ids=glance).logits[0]
        keep = scored[:length].ne(-100)
        losses.append(F.cross_entropy(logits[keep], target[:length][keep], label_smoothing=0.1) if keep.any() else torch.tensor(0.0))
    torch.testing.assert_close(actual, torch.stack(losses).mean(), rtol=1e-5, atol=1e-5)


def test_all_minus_100_glance_ids_change_nothing_and_a_glance_only_affects_later_slots():
    model = tiny_model(seed=3).eval()
    source = torch.randint(5, 60, (2, 7), generator=torch.Generator().manual_seed(0))
    labels = torch.randint(5, 60, (2, 5), generator=torch.Generator().manual_seed(1))
    plain = model(input_ids=source, labels=labels, mode="nar").logits
    none = model(input_ids=source, labels=labels, mode="nar", decoder_glance_ids=torch.full_like(labels, -100)).logits
    glance = torch.full_like(labels, -100)
    glance[:, 2] = labels[:, 2]
    glanced = model(input_ids=source, labels=labels, mode="nar", decoder_glance_ids=glance).logits
    torch.testing.assert_close(none, plain)
    torch.testing.assert_close(glanced[:, :2], plain[:, :2])  # causal [MASK] attention: earlier slots never see it
    assert not torch.allclose(glanced[:, 2:], plain[:, 2:])


@pytest.mark.parametrize("ratio", [0.3, 1.0])
def test_a_glancing_run_trains_and_logs(tmp_path, ratio):
    trainer = spmd_trainer(tmp_path, glance_ratio=ratio, glance_ratio_end=0.1)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)


def test_model_card_recipe_names_k_best_candidates_and_glancing(tmp_path):
    from bang_nar.trainer.spmd_trainer import _card_recipe
    from tests.spmd_toy import spmd_args

    default = _card_recipe(spmd_args(tmp_path))
    assert "the k best AR-stream beam-search targets" in default and "gold" not in default.split("per sample")[0]
    assert "Glancing" not in default
    glancing = _card_recipe(spmd_args(tmp_path, kd_top_k=2, glance_ratio=0.5, glance_ratio_end=0.1))
    assert "the 2 best AR-stream" in glancing and "ratio 0.5 → 0.1" in glancing
