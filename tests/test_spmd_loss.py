"""Closed-form checks of trainer/spmd_loss.py, one class per equation of docs/spmd.md."""

import math

import pytest
import torch
import torch.nn.functional as F

from bang_nar.modeling_bang import label_smoothed_nll_loss
from bang_nar.trainer.spmd_loss import (
    candidate_choice,
    gold_nll,
    mixed_distillation_loss,
    nar_mismatch,
    pace_difficulty,
    self_paced_weights,
    sequence_kd_nll,
    token_kd_divergence,
)


def _logits(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


LABELS = torch.tensor([[3, 5, 7, 2], [4, 2, -100, -100]])


class TestEq1GoldNll:
    @pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5])
    def test_matches_torch_and_model_loss(self, epsilon):
        logits = _logits(2, 4, 11)
        loss, parts = gold_nll(logits, LABELS, epsilon)
        reference = F.cross_entropy(logits.view(-1, 11), LABELS.view(-1), label_smoothing=epsilon)
        torch.testing.assert_close(loss, reference)
        torch.testing.assert_close(loss, label_smoothed_nll_loss(logits, LABELS, epsilon))
        row1 = F.cross_entropy(logits[1, :2], LABELS[1, :2], label_smoothing=epsilon)
        torch.testing.assert_close(parts["per_sequence"][1], row1)
        assert parts["num_tokens"].tolist() == [4, 2]

    def test_uniform_logits_give_log_v_for_any_epsilon(self):
        loss, _ = gold_nll(torch.zeros(2, 4, 11), LABELS, 0.3)
        torch.testing.assert_close(loss, torch.tensor(math.log(11)))

    def test_num_items_in_batch_divides_the_sum(self):
        logits = _logits(2, 4, 11)
        mean, _ = gold_nll(logits, LABELS, 0.1)
        summed, _ = gold_nll(logits, LABELS, 0.1, num_items_in_batch=12)
        torch.testing.assert_close(summed, mean * 6 / 12)

    def test_sequence_kd_nll_scores_each_candidate_on_shared_logits(self):
        logits = _logits(2, 5, 11)
        candidates = torch.stack([LABELS, torch.tensor([[1, 2, -100, -100], [-100] * 4])], 1)  # [2, 2, 4]
        _, parts = sequence_kd_nll(logits, candidates, 0.1)
        for k in range(2):
            expected = gold_nll(logits[:1], candidates[:1, k], 0.1)[1]["per_sequence"]
            torch.testing.assert_close(parts["per_candidate"][:1, k], expected)
        assert parts["valid"].tolist() == [[True, True], [True, False]]
        assert parts["per_candidate"][1, 1] == 0

    def test_too_few_positions_is_an_error(self):
        with pytest.raises(ValueError, match="at least as many slots"):
            gold_nll(_logits(2, 3, 11), LABELS)


class TestEq2TokenKdDivergence:
    def test_identical_distributions_give_zero(self):
        logits = _logits(2, 4, 11)
        loss, parts = token_kd_divergence(logits, logits.clone(), LABELS.ne(-100))
        assert abs(float(loss)) < 1e-6 and parts["per_sequence"].abs().max() < 1e-6

    @pytest.mark.parametrize("tau", [1.0, 2.0])
    def test_closed_form_two_classes(self, tau):
        student = torch.tensor([[[0.0, 1.0]]])
        teacher = torch.tensor([[[2.0, 0.0]]])
        q = torch.softmax(teacher / tau, -1)[0, 0]
        p = torch.softmax(student / tau, -1)[0, 0]
        expected = tau**2 * float((q * (q.log() - p.log())).sum())
        loss, _ = token_kd_divergence(student, teacher, torch.ones(1, 1, dtype=torch.bool), tau)
        assert float(loss) == pytest.approx(expected, rel=1e-6)

    def test_gradient_reaches_the_student_only(self):
        student = _logits(2, 4, 11).requires_grad_()
        teacher = _logits(2, 4, 11, seed=1).requires_grad_()
        token_kd_divergence(student, teacher, LABELS.ne(-100), 2.0)[0].backward()
        assert teacher.grad is None and student.grad.abs().sum() > 0

    def test_broadcasts_one_nar_pass_over_k_candidates(self):
        student = _logits(2, 5, 11)
        teacher = _logits(2, 3, 4, 11, seed=1)
        mask = torch.ones(2, 3, 4, dtype=torch.bool)
        _, shared = token_kd_divergence(student.unsqueeze(1), teacher, mask)
        _, explicit = token_kd_divergence(student[:, None, :4].expand(-1, 3, -1, -1), teacher, mask)
        torch.testing.assert_close(shared["per_sequence"], explicit["per_sequence"])


class TestEq3CandidateChoice:
    IS_DISTILLED = torch.tensor([False, True, True])
    VALID = torch.tensor([[True, True, True], [True, True, False]])

    def test_min_loss_takes_the_argmin_of_valid_candidates(self):
        losses = torch.tensor([[3.0, 1.0, 2.0], [2.0, 2.0, 0.0]])  # row 1: invalid 0.0 ignored, tie → gold
        weights, parts = candidate_choice(losses, self.VALID, self.IS_DISTILLED, "min_loss")
        assert parts["index"].tolist() == [1, 0]
        assert parts["from_gold"].tolist() == [0.0, 1.0]
        assert weights.sum(-1).tolist() == [1.0, 1.0]

    @pytest.mark.parametrize(
        "p_mix, uniform, expected",
        [(0.0, [0.0, 0.5], [0, 0]), (1.0, [0.1, 0.9], [1, 2]), (0.5, [0.1, 0.3], [1, 2]), (0.5, [0.6, 0.2], [0, 1])],
    )
    def test_random_uses_the_draws(self, p_mix, uniform, expected):
        losses = torch.zeros(2, 3)
        valid = torch.ones(2, 3, dtype=torch.bool)
        _, parts = candidate_choice(losses, valid, self.IS_DISTILLED, "random", p_mix, torch.tensor(uniform))
        assert parts["index"].tolist() == expected

    def test_all_averages_the_valid_candidates(self):
        weights, parts = candidate_choice(torch.zeros(2, 3), self.VALID, self.IS_DISTILLED, "all")
        torch.testing.assert_close(weights, torch.tensor([[1 / 3] * 3, [0.5, 0.5, 0.0]]))
        torch.testing.assert_close(parts["from_gold"], torch.tensor([1 / 3, 0.5]))

    def test_errors(self):
        with pytest.raises(ValueError, match="uniform"):
            candidate_choice(torch.zeros(2, 3), self.VALID, self.IS_DISTILLED, "random")
        with pytest.raises(ValueError, match="mix_strategy"):
            candidate_choice(torch.zeros(2, 3), self.VALID, self.IS_DISTILLED, "best")
        with pytest.raises(ValueError, match="at least one valid"):
            candidate_choice(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool), self.IS_DISTILLED)


class TestEq5PaceDifficulty:
    def test_each_signal_and_the_all_average(self):
        nar, kl = torch.tensor([[1.0, 3.0]]), torch.tensor([[0.2, 0.4]])
        mismatch = nar_mismatch(torch.eye(4)[None, [0, 1, 2]] * 9, torch.tensor([[[0, 1, 3], [0, -100, -100]]]))
        torch.testing.assert_close(mismatch, torch.tensor([[1 / 3, 0.0]]))
        assert pace_difficulty("nar_loss", nar)[0].tolist() == [2.0]
        assert pace_difficulty("ar_nar_kl", nar, kl, choice_weights=torch.tensor([[0.0, 1.0]]))[0].tolist() == [
            pytest.approx(0.4)
        ]
        assert pace_difficulty("disagreement", nar, mismatch=mismatch)[0].item() == pytest.approx(1 / 6)
        with pytest.raises(ValueError, match="needs its per-candidate"):
            pace_difficulty("ar_nar_kl", nar)


class TestEq6SelfPacedWeights:
    D = torch.tensor([3.0, 1.0, 2.0, 4.0])

    def test_none_keeps_everything(self):
        weights, parts = self_paced_weights(self.D, "none")
        assert weights.tolist() == [1.0] * 4 and parts["threshold"] == math.inf

    @pytest.mark.parametrize("q, kept", [(1.0, [1, 1, 1, 1]), (0.5, [0, 1, 1, 0]), (0.3, [0, 1, 1, 0]), (0.01, [0, 1, 0, 0])])
    def test_percentile_keeps_the_easiest_ceil_q_n(self, q, kept):
        weights, parts = self_paced_weights(self.D, "percentile", keep_fraction=q)
        assert weights.tolist() == kept
        assert float(parts["threshold"]) == max(d for d, k in zip(self.D.tolist(), kept) if k)

    def test_percentile_ties_break_by_position(self):
        weights, _ = self_paced_weights(torch.tensor([1.0, 1.0, 1.0, 1.0]), "percentile", keep_fraction=0.5)
        assert weights.tolist() == [1, 1, 0, 0]

    def test_hard_and_linear_with_lambda_extremes(self):
        assert self_paced_weights(self.D, "hard", lam=2.5)[0].tolist() == [0, 1, 1, 0]
        assert self_paced_weights(self.D, "hard", lam=1e-6)[0].sum() == 0
        assert self_paced_weights(self.D, "hard", lam=1e6)[0].sum() == 4
        torch.testing.assert_close(self_paced_weights(self.D, "linear", lam=4.0)[0], torch.tensor([0.25, 0.75, 0.5, 0.0]))
        assert self_paced_weights(self.D, "linear", lam=1e9)[0].min() > 0.999
        with pytest.raises(ValueError, match="λ > 0"):
            self_paced_weights(self.D, "hard", lam=0.0)


class TestEq4And7MixedDistillationLoss:
    NAR = torch.tensor([[2.0], [4.0]])
    KL = torch.tensor([[1.0], [3.0]])

    def test_weights_one_alpha_zero_is_the_plain_mean(self):
        loss, parts = mixed_distillation_loss(self.NAR, torch.ones(2), kd_alpha=0.0)
        assert float(loss) == 3.0 and parts["sample_loss"].tolist() == [2.0, 4.0]

    def test_alpha_beta_and_weights(self):
        v = torch.tensor([1.0, 0.5])
        loss, _ = mixed_distillation_loss(self.NAR, v, 0.25, self.KL, ar_loss=torch.tensor(2.0), ar_loss_weight=0.5)
        sample = [0.75 * 2 + 0.25 * 1, 0.75 * 4 + 0.25 * 3]
        assert float(loss) == pytest.approx((sample[0] + 0.5 * sample[1]) / 1.5 + 1.0)

    def test_small_weight_sum_is_clamped_to_one_and_empty_keeps_the_ar_term(self):
        v = torch.tensor([0.2, 0.0])
        assert float(mixed_distillation_loss(self.NAR, v, 0.0)[0]) == pytest.approx(0.4)
        loss, _ = mixed_distillation_loss(self.NAR, torch.zeros(2), 0.0, ar_loss=torch.tensor(3.0), ar_loss_weight=0.5)
        assert float(loss) == 1.5

    def test_global_weight_sum_and_micro_batches(self):
        loss, _ = mixed_distillation_loss(
            self.NAR, torch.ones(2), 0.0, ar_loss=torch.tensor(1.0), ar_loss_weight=1.0, weight_sum=4.0, num_micro_batches=2
        )
        assert float(loss) == pytest.approx(6 / 8 + 1.0)

    def test_choice_weights_average_candidates(self):
        nar = torch.tensor([[2.0, 6.0]])
        loss, _ = mixed_distillation_loss(nar, torch.ones(1), 0.0, choice_weights=torch.tensor([[0.5, 0.5]]))
        assert float(loss) == 4.0
        with pytest.raises(ValueError, match="choice_weights"):
            mixed_distillation_loss(nar, torch.ones(1), 0.0)
        with pytest.raises(ValueError, match="kd_divergence"):
            mixed_distillation_loss(self.NAR, torch.ones(2), 0.5)
