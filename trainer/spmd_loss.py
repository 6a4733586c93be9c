"""SPMD losses as pure tensor functions, one per equation of docs/spmd.md (our reconstruction of Qi et al. 2022).

No Trainer, no model, no process group: every function takes tensors and returns `(output, components)`, where
`components` holds detached per-sample pieces for logging and for the next equation. Shapes use `B` (samples),
`K` (candidate targets per sample), `T` (target positions), `V` (vocabulary). Targets are right-padded with -100.

Reading order follows the document: Eq. (1) `gold_nll` / `sequence_kd_nll`, Eq. (2) `token_kd_divergence`,
Eq. (2s) `sparse_kd_divergence` (the stored top-n variant), Eq. (3) `candidate_choice`, Eq. (5) `pace_difficulty`, Eq. (6) `self_paced_weights`, Eq. (4)+(7)
`mixed_distillation_loss`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

MixStrategy = Literal["min_loss", "random", "all"]
PaceMode = Literal["percentile", "hard", "linear", "none"]
PaceSignal = Literal["nar_loss", "ar_nar_kl", "disagreement"]

__all__ = [
    "IGNORE_INDEX",
    "candidate_choice",
    "gold_nll",
    "mixed_distillation_loss",
    "pace_difficulty",
    "self_paced_weights",
    "sequence_kd_nll",
    "sparse_kd_divergence",
    "token_kd_divergence",
]


def _normalise(total: torch.Tensor, count: torch.Tensor, num_items_in_batch: int | torch.Tensor | None) -> torch.Tensor:
    """`total / num_items_in_batch` (Trainer convention: exact under gradient accumulation), else `total / count`."""
    denominator = num_items_in_batch if num_items_in_batch is not None else count.clamp_min(1)
    if isinstance(denominator, torch.Tensor):
        denominator = denominator.to(total.device, non_blocking=True)
    return total / denominator


def _smoothed_token_nll(
    logits: torch.Tensor, targets: torch.Tensor, epsilon: float, extra_ids: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-token `(1-ε)·(-log p(target)) + ε·mean_v(-log p(v))` for K targets sharing one distribution per position.

    logits `[B, T', V]` with T' >= T; targets `[B, K, T]`. Returns `(smoothed [B, K, T], nll [B, K, T], mask,
    log-probs [B, T, V], extra)`, zero where the target is -100. Sharing is exact for the NAR stream: slot t depends
    only on the source and t (causal [MASK] attention, docs/architecture.md#nar-mode), so one pass scores every
    candidate. `extra_ids` `[B, K_e, T, n]` (the stored top-n, docs/spmd.md#stored-kd) are gathered in the same
    gather (`extra` `[B, K_e, T, n]`, else None): its backward then builds one vocabulary-sized gradient, not two.
    """
    if logits.size(1) < targets.size(-1):
        raise ValueError(
            f"logits cover {logits.size(1)} positions but targets have {targets.size(-1)}; run the decoder with at "
            "least as many slots as the longest candidate."
        )
    log_probs = logits[:, : targets.size(-1)].float().log_softmax(-1)  # [B, T, V]
    mask = targets.ne(IGNORE_INDEX)
    # Gather the K targets of each position from the shared [B, T, V] (not from a [B, K, T, V] expansion, whose
    # backward would allocate and reduce K vocabulary-sized buffers).
    index = targets.clamp_min(0).transpose(1, 2)  # [B, T, K]
    num = index.size(-1)
    if extra_ids is not None:
        batch, num_extra, length, n = extra_ids.shape
        index = torch.cat([index, extra_ids.permute(0, 2, 1, 3).reshape(batch, length, num_extra * n)], -1)
    gathered = log_probs.gather(-1, index)  # [B, T, K (+ K_e·n)]
    nll = -gathered[..., :num].transpose(1, 2)  # [B, K, T]
    extra = None
    if extra_ids is not None:
        extra = gathered[..., num:].reshape(batch, length, num_extra, n).permute(0, 2, 1, 3)
    uniform = -log_probs.mean(-1).unsqueeze(1)  # [B, 1, T]: the ε/V·Σ_v term
    smoothed = (1.0 - epsilon) * nll + epsilon * uniform
    return smoothed.masked_fill(~mask, 0.0), nll.masked_fill(~mask, 0.0), mask, log_probs, extra


def sequence_kd_nll(
    logits: torch.Tensor,
    candidates: torch.Tensor,
    epsilon: float = 0.1,
    num_items_in_batch: int | torch.Tensor | None = None,
    extra_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. (1) of docs/spmd.md for every candidate c ∈ C_i: label-smoothed NAR cross-entropy ℓ_NAR(c).

    Args:
        logits: `[B, T', V]` NAR [MASK]-stream logits, `T' >= T`; `logits[:, t]` predicts position t of every candidate.
        candidates: `[B, K, T]` candidate targets (each ends with `[SEP]`), -100 right-padding; an all -100 row is
            an absent candidate.
        epsilon: label smoothing ε.
        num_items_in_batch: divisor of the summed token loss (Trainer convention); default: the token count.
        extra_ids: `[B, K_e, T, n]` token ids whose NAR log-probs to gather as well (the stored top-n of
            docs/spmd.md#stored-kd), in the same gather as the candidates' (one vocabulary-sized gradient in backward).

    Returns:
        `loss`: scalar, summed over every candidate token / `num_items_in_batch` (the sequence-KD NLL when the
        candidates are AR-stream targets). `components`: `per_candidate` `[B, K]` ℓ_NAR(c) (token mean over c,
        `[SEP]` included; 0 for absent ones), `nll_per_candidate` `[B, K]` (ε = 0), `num_tokens` `[B, K]`,
        `valid` `[B, K]` bool, `log_probs` `[B, T, V]` (float32, in the graph: `token_kd_divergence` can reuse them,
        so the NAR log-softmax runs, and back-propagates, once); with `extra_ids`, `extra_log_probs` `[B, K_e, T, n]`
        (in the graph; for `sparse_kd_divergence(student_stored_log_probs=...)`).
    """
    smoothed, nll, mask, log_probs, extra = _smoothed_token_nll(logits, candidates, epsilon, extra_ids)
    num_tokens = mask.sum(-1)  # [B, K]
    denominator = num_tokens.clamp_min(1)
    components = {
        "per_candidate": smoothed.sum(-1) / denominator,
        "nll_per_candidate": (nll.sum(-1) / denominator).detach(),
        "num_tokens": num_tokens,
        "valid": num_tokens > 0,
        "log_probs": log_probs,
    }
    if extra is not None:
        components["extra_log_probs"] = extra
    return _normalise(smoothed.sum(), num_tokens.sum(), num_items_in_batch), components


def gold_nll(
    logits: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float = 0.1,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. (1) of docs/spmd.md on the gold target y: label-smoothed cross-entropy, AR or NAR stream.

    The same formula as the original criterion (docs/architecture.md#loss) and the model's `labels` loss:
    `(1-ε)·NLL + ε/V·Σ_v −log p(v)` per token.

    Args:
        logits: `[B, T', V]` with `T' >= T`; `logits[:, t]` predicts `labels[:, t]`.
        labels: `[B, T]`, -100 right-padding.
        epsilon: label smoothing ε.
        num_items_in_batch: divisor of the summed token loss; default the local token count. The AR term β·ℓ_AR(y)
            of Eq. (7) uses Trainer's count over the whole update (all ranks and accumulation steps).

    Returns:
        `loss`: scalar token-normalised loss. `components`: `per_sequence` `[B]` (token mean per row),
        `nll_per_sequence` `[B]` (ε = 0), `sum_per_sequence` `[B]` (detached), `num_tokens` `[B]`.
    """
    loss, parts = sequence_kd_nll(logits, labels.unsqueeze(1), epsilon, num_items_in_batch)
    per_sequence = parts["per_candidate"].squeeze(1)
    num_tokens = parts["num_tokens"].squeeze(1)
    components = {
        "per_sequence": per_sequence,
        "nll_per_sequence": parts["nll_per_candidate"].squeeze(1),
        "sum_per_sequence": (per_sequence * num_tokens).detach(),
        "num_tokens": num_tokens,
    }
    return loss, components


def token_kd_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
    num_items_in_batch: int | torch.Tensor | None = None,
    student_log_probs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. (2) of docs/spmd.md: KL(c) = mean_t τ²·KL(q_AR^τ(·|c_<t, x) ‖ p_NAR^τ(·|t, x)).

    The teacher is detached here, so gradients reach the student (NAR) logits only, whatever the caller did.

    Args:
        student_logits: `[..., T', V]` NAR logits, `T' >= T`, broadcastable against the teacher's leading dims
            (e.g. `[B, 1, T', V]` against `[B, K, T, V]` to share one NAR pass among K candidates).
        teacher_logits: `[..., T, V]` AR predicting-stream logits teacher-forced on the candidate c.
        mask: `[..., T]` bool, the real tokens of c (`[SEP]` included).
        temperature: τ > 0.
        num_items_in_batch: divisor of the summed token KL; default the token count.
        student_log_probs: `log_softmax(student_logits)` already computed (e.g. `sequence_kd_nll`'s `log_probs`),
            used at τ = 1 instead of a second log-softmax: its backward then runs once for both terms.

    Returns:
        `loss`: scalar token-normalised KL. `components`: `per_sequence` `[...]` KL(c) (token mean per candidate).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    num_positions = teacher_logits.size(-2)
    teacher = teacher_logits.detach().float()
    if temperature == 1.0 and student_log_probs is not None:
        log_p = student_log_probs[..., :num_positions, :]
    else:
        student = student_logits[..., :num_positions, :].float()
        if temperature != 1.0:  # skip two vocabulary-sized divisions (and one in backward) at the default τ = 1
            student, teacher = student / temperature, teacher / temperature
        log_p = student.log_softmax(-1)
    log_q = teacher.log_softmax(-1)
    q = log_q.exp()
    # Σ q·log q has no gradient: computed apart, the graph holds one product q·log p (backward: −q).
    per_token = ((q * log_q).sum(-1) - (q * log_p).sum(-1)) * temperature**2  # [..., T]
    per_token = per_token.masked_fill(~mask, 0.0)
    num_tokens = mask.sum(-1)
    components = {"per_sequence": per_token.sum(-1) / num_tokens.clamp_min(1)}
    return _normalise(per_token.sum(), num_tokens.sum(), num_items_in_batch), components


def sparse_kd_divergence(
    student_logits: torch.Tensor,
    top_ids: torch.Tensor,
    top_log_probs: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
    num_items_in_batch: int | torch.Tensor | None = None,
    student_log_probs: torch.Tensor | None = None,
    student_stored_log_probs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. (2s) of docs/spmd.md (docs/spmd.md#stored-kd): the token KL towards the teacher's stored top-n.

    With S_t the n stored ids of position t and log q_v their stored full-vocabulary log-probs, the target is q
    renormalised over S_t, q̃^τ_v = q_v^{1/τ} / Σ_{u ∈ S_t} q_u^{1/τ} (= softmax over S_t of log q_v / τ), and

    KL_S(c) = mean_t τ² · Σ_{v ∈ S_t} q̃^τ_v · (log q̃^τ_v − log p^τ_NAR(v | t, x)),

    with p_NAR normalised over the whole vocabulary. With n = V it is Eq. (2) exactly; its gradient with respect to
    the student's (tempered) logits is τ·(p^τ − q̃^τ), the dense form with q̃ in place of q.

    Args:
        student_logits: `[B, T', V]` NAR logits, `T' >= T`, shared by the K' targets of a sample.
        top_ids: `[B, K', T, n]` stored token ids (any value where `mask` is False).
        top_log_probs: `[B, K', T, n]` the teacher's log-probs of those ids (finite; any value where masked).
        mask: `[B, K', T]` bool, the real tokens of each target (`[SEP]` included).
        temperature: τ > 0.
        num_items_in_batch: divisor of the summed token KL; default the token count.
        student_log_probs: `log_softmax(student_logits)` already computed, used at τ = 1.
        student_stored_log_probs: `[B, K', T, n]` those log-probs already gathered at `top_ids` (`sequence_kd_nll`'s
            `extra_log_probs`, one gather for both terms), used at τ = 1.

    Returns:
        `loss`: scalar token-normalised KL. `components`: `per_sequence` `[B, K']` KL_S(c) (token mean per target),
        `stored_mass` `[B, K']` (detached): the mean over positions of Σ_{v ∈ S_t} q_v, the teacher's probability
        the n stored ids hold (1 when nothing was cut).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    batch, num, length, n = top_ids.shape
    if temperature == 1.0 and student_stored_log_probs is not None:
        log_p_stored = student_stored_log_probs
    else:
        if temperature == 1.0 and student_log_probs is not None:
            log_p = student_log_probs[:, :length]
        else:
            log_p = (student_logits[:, :length].float() / temperature).log_softmax(-1)
        # Gather the K'·n stored ids of each position from the shared [B, T, V] (no [B, K', T, V] expansion).
        index = top_ids.permute(0, 2, 1, 3).reshape(batch, length, num * n)
        log_p_stored = log_p.gather(-1, index).view(batch, length, num, n).permute(0, 2, 1, 3)  # [B, K', T, n]
    # A -inf log-prob (a token the teacher rules out) would give 0·(−inf) = NaN below; float16's lowest is as good.
    stored = top_log_probs.detach().float().clamp_min(torch.finfo(torch.float16).min)
    log_q = (stored / temperature).log_softmax(-1)  # q̃^τ over S_t
    q = log_q.exp()
    per_token = ((q * log_q).sum(-1) - (q * log_p_stored).sum(-1)) * temperature**2  # [B, K', T]
    per_token = per_token.masked_fill(~mask, 0.0)
    num_tokens = mask.sum(-1)
    denominator = num_tokens.clamp_min(1)
    mass = stored.exp().sum(-1).masked_fill(~mask, 0.0)
    components = {"per_sequence": per_token.sum(-1) / denominator, "stored_mass": mass.sum(-1) / denominator}
    return _normalise(per_token.sum(), num_tokens.sum(), num_items_in_batch), components


def candidate_choice(
    candidate_losses: torch.Tensor,
    valid: torch.Tensor,
    is_distilled: torch.Tensor,
    strategy: MixStrategy = "min_loss",
    p_mix: float = 0.5,
    uniform: torch.Tensor | None = None,
    validate: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. (3) of docs/spmd.md: the target m_i of each sample, as mixing weights over its candidates.

    - `min_loss`: one-hot at argmin_c ℓ_NAR(c) (no gradient; ties go to the first candidate, gold first);
    - `random`: a distilled candidate with probability `p_mix` (chosen uniformly among the valid ones by the same
      draw), else gold; `uniform[i] ~ U[0, 1)` comes from the caller's seeded generator;
    - `all`: uniform weights over the valid candidates (the average of Eq. (4) over C_i).

    Args:
        candidate_losses: `[B, K]` ℓ_NAR(c) (Eq. 1).
        valid: `[B, K]` bool, which candidates exist.
        is_distilled: `[K]` bool, True for AR-stream targets ŷ, False for gold y.
        strategy, p_mix: `mix_strategy` and `p_mix` of SPMDTrainingArguments.
        uniform: `[B]` draws in [0, 1), required by `random` (moved to the losses' device).
        validate: check on the host that every sample has a candidate (and a gold one for `random`). Each check
            is a device sync, so the trainer runs them only with `spmd_debug=True`.

    Returns:
        `weights` `[B, K]` (rows sum to 1). `components`: `index` `[B]` chosen candidate (argmax of the weights),
        `from_gold` `[B]` weight share of gold candidates.
    """
    if validate and not bool(valid.any(-1).all()):
        raise ValueError("Every sample needs at least one valid candidate target; check the collated labels.")
    valid_f = valid.float()
    if strategy == "min_loss":
        masked = candidate_losses.detach().masked_fill(~valid, math.inf)
        weights = F.one_hot(masked.argmin(-1), valid.size(1)).float()
    elif strategy == "random":
        if uniform is None:
            raise ValueError("mix_strategy='random' needs `uniform` draws, one per sample.")
        uniform = uniform.to(valid.device, non_blocking=True)  # a blocking host-to-device copy would sync
        distilled = valid & is_distilled.to(valid.device)  # [B, K]
        gold = valid & ~is_distilled.to(valid.device)
        num_distilled = distilled.sum(-1)  # [B]
        pick_distilled = (uniform < p_mix) & (num_distilled > 0)
        # The same draw picks which distilled target: u / p_mix is again uniform on [0, 1).
        rank = (uniform / max(p_mix, 1e-12) * num_distilled).floor().long().clamp(max=(num_distilled - 1).clamp_min(0))
        nth_distilled = distilled.long().cumsum(-1) - 1  # [B, K]: 0-based rank among distilled candidates
        one_distilled = distilled & (nth_distilled == rank.unsqueeze(-1))
        first_gold = F.one_hot(gold.float().argmax(-1), valid.size(1)).bool() & gold
        if validate and not bool((pick_distilled | gold.any(-1)).all()):
            raise ValueError("mix_strategy='random' needs a gold candidate for every sample (target_sources gold).")
        weights = torch.where(pick_distilled.unsqueeze(-1), one_distilled, first_gold).float()
    elif strategy == "all":
        weights = valid_f / valid_f.sum(-1, keepdim=True)
    else:
        raise ValueError(f"mix_strategy must be 'min_loss', 'random' or 'all', got {strategy!r}.")
    from_gold = (weights * (~is_distilled.to(weights.device)).float()).sum(-1)
    return weights, {"index": weights.argmax(-1), "from_gold": from_gold}


def pace_difficulty(
    signal: PaceSignal,
    nar_loss: torch.Tensor,
    kd_divergence: torch.Tensor | None = None,
    mismatch: torch.Tensor | None = None,
    choice_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. (5) of docs/spmd.md: difficulty d_i of each sample, without gradient.

    Args:
        signal: `nar_loss` (ℓ_NAR(m_i)), `ar_nar_kl` (KL(m_i)) or `disagreement` (fraction of positions of m_i where
            argmax p_NAR ≠ m_i).
        nar_loss, kd_divergence, mismatch: `[B, K]` per candidate (only the one the signal names is needed).
        choice_weights: `[B, K]` from Eq. (3); default uniform. With `mix_strategy='all'` d_i is their average.

    Returns:
        `difficulty` `[B]` (detached), and an empty components dict.
    """
    per_candidate = {"nar_loss": nar_loss, "ar_nar_kl": kd_divergence, "disagreement": mismatch}.get(signal)
    if signal not in ("nar_loss", "ar_nar_kl", "disagreement"):
        raise ValueError(f"pace_signal must be 'nar_loss', 'ar_nar_kl' or 'disagreement', got {signal!r}.")
    if per_candidate is None:
        raise ValueError(f"pace_signal={signal!r} needs its per-candidate values; none were given.")
    if choice_weights is None:
        choice_weights = torch.full_like(per_candidate, 1.0 / per_candidate.size(-1))
    return (choice_weights * per_candidate.detach()).sum(-1), {}


def nar_mismatch(logits: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Helper of Eq. (5) `disagreement`: fraction of the real positions of each candidate where argmax p_NAR ≠ c_t.

    logits `[B, T', V]`, candidates `[B, K, T]` (-100 padded) → `[B, K]` in [0, 1], detached.
    """
    argmax = logits[:, : candidates.size(-1)].detach().argmax(-1).unsqueeze(1)  # [B, 1, T]
    mask = candidates.ne(IGNORE_INDEX)
    wrong = (argmax != candidates) & mask
    return wrong.sum(-1).float() / mask.sum(-1).clamp_min(1)


def self_paced_weights(
    difficulty: torch.Tensor,
    mode: PaceMode = "percentile",
    keep_fraction: float = 1.0,
    lam: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. (6) of docs/spmd.md: self-paced weights v_i ∈ [0, 1] from difficulties d_i.

    - `percentile`: v_i = 1 for the ceil(q·N) easiest samples (ties broken by position, so every rank that sees the
      same gathered vector agrees), else 0; `keep_fraction` = q(s);
    - `hard`: v_i = 1[d_i < λ]; `linear`: v_i = max(0, 1 − d_i/λ), `lam` = λ(s) > 0 (a float, or a 0-dim tensor
      such as a calibrated λ0, which is used on the device without a host check);
    - `none`: v_i = 1.

    Args:
        difficulty: `[N]`, the global micro-batch (all data-parallel ranks) for `percentile`.

    Returns:
        `weights` `[N]` float. `components`: `threshold` (largest kept difficulty for `percentile`, λ for
        `hard`/`linear`, +inf for `none`), `kept_fraction` (share with v_i > 0), `mean_weight`.
    """
    difficulty = difficulty.detach().float()
    num = difficulty.numel()
    if mode == "percentile":
        if not 0.0 < keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}.")
        num_keep = min(num, max(1, math.ceil(keep_fraction * num - 1e-9)))
        ordered, order = torch.sort(difficulty, stable=True)
        weights = torch.zeros_like(difficulty).scatter_(0, order[:num_keep], 1.0)
        # Python-int indexing of the sorted values: indexing by a device tensor would sync with the host. Constants
        # are made with new_full, which fills on the device (new_tensor would copy from the host: a sync).
        threshold = ordered[num_keep - 1] if num else difficulty.new_full((), math.inf)
    elif mode in ("hard", "linear"):
        if lam is None or (not isinstance(lam, torch.Tensor) and lam <= 0):
            raise ValueError(f"pace_mode={mode!r} needs λ > 0, got {lam}.")
        weights = (difficulty < lam).float() if mode == "hard" else (1.0 - difficulty / lam).clamp_min(0.0)
        threshold = lam.to(difficulty) if isinstance(lam, torch.Tensor) else difficulty.new_full((), lam)
    elif mode == "none":
        weights = torch.ones_like(difficulty)
        threshold = difficulty.new_full((), math.inf)
    else:
        raise ValueError(f"pace_mode must be 'percentile', 'hard', 'linear' or 'none', got {mode!r}.")
    components = {
        "threshold": threshold,
        "kept_fraction": (weights > 0).float().mean() if num else difficulty.new_full((), 0.0),
        "mean_weight": weights.mean() if num else difficulty.new_full((), 0.0),
    }
    return weights, components


def mixed_distillation_loss(
    nar_loss: torch.Tensor,
    pace_weights: torch.Tensor,
    kd_alpha: float = 0.5,
    kd_divergence: torch.Tensor | None = None,
    choice_weights: torch.Tensor | None = None,
    ar_loss: torch.Tensor | None = None,
    ar_loss_weight: float = 0.0,
    weight_sum: torch.Tensor | float | None = None,
    num_micro_batches: int = 1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. (4) and Eq. (7) of docs/spmd.md: L_i = Σ_c w_ic·[(1−α)·ℓ_NAR(c) + α·KL(c)], then
    L = Σ_i v_i·L_i / max(Σ_i v_i, 1) + β·ℓ_AR(y).

    Args:
        nar_loss: `[B, K]` ℓ_NAR of the candidates that carry choice weight (K = 1 when m_i is one candidate).
        pace_weights: `[B]` v_i (Eq. 6).
        kd_alpha: α ∈ [0, 1].
        kd_divergence: `[B, K]` KL(c) (Eq. 2); may be None only when α = 0.
        choice_weights: `[B, K]` w_ic (Eq. 3); default one candidate (K must be 1).
        ar_loss: scalar ℓ_AR(y), already normalised (Eq. 1 on the AR stream); None means no AR term.
        ar_loss_weight: β ≥ 0.
        weight_sum: the Σ_i v_i of the denominator, over the **global** micro-batch when data-parallel (so every rank
            uses the same number); default the local `pace_weights.sum()`.
        num_micro_batches: the first term is divided by this too (gradient accumulation: summing the micro-batch
            losses then averages them, as Trainer does); the AR term is not, since `num_items_in_batch` already
            spans the whole update.

    Returns:
        `loss` scalar. `components`: `sample_loss` `[B]` L_i, `nar` `[B]` and `kd` `[B]` (the two parts of L_i,
        detached), `weight_sum`.
    """
    if choice_weights is None:
        if nar_loss.size(-1) != 1:
            raise ValueError("choice_weights is required when more than one candidate per sample is passed.")
        choice_weights = torch.ones_like(nar_loss)
    if kd_divergence is None:
        if kd_alpha != 0:
            raise ValueError(f"kd_alpha={kd_alpha} needs kd_divergence (Eq. 2); pass it or set kd_alpha=0.")
        kd_divergence = torch.zeros_like(nar_loss)
    nar = (choice_weights * nar_loss).sum(-1)  # [B]
    kd = (choice_weights * kd_divergence).sum(-1)
    sample_loss = (1.0 - kd_alpha) * nar + kd_alpha * kd  # Eq. (4)
    if weight_sum is None:
        weight_sum = pace_weights.sum()
    if not isinstance(weight_sum, torch.Tensor):
        weight_sum = sample_loss.new_full((), float(weight_sum))
    denominator = torch.clamp(weight_sum.to(sample_loss.dtype), min=1.0)
    loss = (pace_weights.to(sample_loss.dtype) * sample_loss).sum() / (denominator * num_micro_batches)  # Eq. (7)
    if ar_loss is not None and ar_loss_weight != 0:
        loss = loss + ar_loss_weight * ar_loss
    components = {
        "sample_loss": sample_loss.detach(),
        "nar": nar.detach(),
        "kd": kd.detach(),
        "weight_sum": denominator,
    }
    return loss, components
