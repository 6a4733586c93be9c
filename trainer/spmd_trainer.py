"""`SPMDSeq2SeqTrainer`: BANG fine-tuning (AR, NAR, mixed) with self-paced mixed distillation (docs/spmd.md).

SPMD here is **our reconstruction** from the abstract of Qi et al. 2022 (arXiv 2205.11162); docs/spmd.md is the
definition. `compute_loss` reads as the algorithm; the equations live in `spmd_loss.py`; the cross-rank state of the
self-paced schedule lives in `SelfPacedState`, reduced through the Accelerator in its one method `update`.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import transformers
from huggingface_hub import ModelCardData
from torch import nn
from transformers import Seq2SeqTrainer
from transformers.modeling_outputs import BaseModelOutput

from bang_nar.hub import (
    display_name,
    eval_results_from_table,
    is_hub_id,
    metrics_section,
    render_model_card,
    table_notes,
)

from .collator import KD_TOP_IDS, KD_TOP_LOG_PROBS, SPMDDataCollator
from .spmd_config import SPMDTrainingArguments
from .spmd_loss import (
    IGNORE_INDEX,
    candidate_choice,
    gold_nll,
    mixed_distillation_loss,
    nar_mismatch,
    pace_difficulty,
    self_paced_weights,
    sequence_kd_nll,
    sparse_kd_divergence,
    token_kd_divergence,
)

SPMD_STATE_NAME = "spmd_state.pt"
# Checkpoints are written under this sub-folder of the run folder and renamed into place when complete, so a kill
# during a save never leaves a `checkpoint-N` that resuming would pick (docs/training-on-gpus.md, "Resuming").
STAGING_DIR = ".checkpoint-staging"
MODEL_CARD_TEMPLATE = "spmd_model_card"
# Columns of the per-sample statistics gathered across ranks in `SelfPacedState.update`.
STATS = ("difficulty", "nar_loss", "kd_loss", "from_gold", "ar_loss_sum", "ar_tokens", "stored_mass")


@dataclass
class PaceResult:
    """What `SelfPacedState.update` returns: this rank's v_i, the global Σ v_i, and global per-sample statistics."""

    weights: torch.Tensor  # [b] v_i of this rank's samples
    weight_sum: torch.Tensor  # scalar Σ_i v_i over the global micro-batch
    stats: torch.Tensor  # [N, len(STATS)] every rank's samples, in rank order
    components: dict[str, torch.Tensor]  # threshold, kept_fraction, mean_weight (Eq. 6)


@dataclass
class SelfPacedState:
    """Self-paced schedule (docs/spmd.md Eq. 6) and the RNG of `random` mixing and of the AR/NAR mode draw.

    Identical on every rank: the generator is seeded the same everywhere and every rank draws the global batch's
    numbers; difficulties are all-gathered in `update`, the only cross-rank call. Saved in every checkpoint
    (`state_dict`) and restored on resume, so a resumed run continues the same schedule and the same draws.

    Sync-free: the generator lives on the host (its draws are copied to the device), and the threshold and a
    calibrated λ0 stay device tensors; they become floats only in `state_dict` (checkpoints) and in logs.
    """

    mode: str = "percentile"
    q0: float = 0.5
    warmup_ratio: float = 0.5
    lambda0: float | torch.Tensor | None = 1.0  # None: calibrated on the first update (the q0 quantile of d_i)
    growth: float = 1.3
    seed: int = 42
    step: int = 0  # optimizer step s of the last update
    epoch: int = 0  # completed epochs at the last update
    keep_fraction: float = 1.0  # q(s)
    lam: float | torch.Tensor | None = 1.0  # λ(s)
    threshold: float | torch.Tensor = math.inf  # last threshold (Eq. 6); a device tensor after an update
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.lam = self.lambda0
        self.generator = torch.Generator().manual_seed(self.seed)

    @classmethod
    def from_args(cls, args: SPMDTrainingArguments) -> SelfPacedState:
        return cls(
            mode=args.pace_mode,
            q0=args.pace_q0,
            warmup_ratio=args.pace_warmup_ratio,
            lambda0=args.pace_lambda0,
            growth=args.pace_growth,
            seed=args.seed,
        )

    def schedule(self, step: int, epoch: float, max_steps: int) -> None:
        """Move to optimizer step s: q(s) = q0 + (1 − q0)·min(1, s / (ratio·max_steps)); λ(s) = λ0·μ^epoch."""
        self.step, self.epoch = int(step), int(epoch)
        warmup = self.warmup_ratio * max(max_steps, 0)
        progress = min(1.0, self.step / warmup) if warmup > 0 else 1.0
        self.keep_fraction = self.q0 + (1.0 - self.q0) * progress
        self.lam = self.lambda0 * self.growth**self.epoch if self.lambda0 is not None else None

    def update(
        self, step: int, epoch: float, max_steps: int, stats: torch.Tensor, accelerator: Any, check_sizes: bool = False
    ) -> PaceResult:
        """Eq. (6) over the global micro-batch: advance the schedule, all-gather the per-sample statistics
        `[b, len(STATS)]` (column 0 = d_i), weight every sample, and return this rank's slice.

        Every rank must pass the same b (Trainer's `even_batches` default guarantees it). With `check_sizes` (or when
        the accelerator does not even the batches) the sizes are compared first, since a gather of unequal sizes
        hangs or fails obscurely; the comparison syncs the host, so it is not done otherwise."""
        stats = stats.detach().float()
        num_processes = getattr(accelerator, "num_processes", 1)
        if num_processes > 1 and (check_sizes or not getattr(accelerator, "even_batches", True)):
            sizes = accelerator.gather(torch.tensor([stats.size(0)], device=stats.device))
            if bool((sizes != stats.size(0)).any()):
                raise RuntimeError(
                    f"Ranks passed micro-batches of sizes {sizes.tolist()} to the SPMD all-gather; keep Trainer's "
                    "accelerator_config even_batches=True (the default) or drop_last."
                )
        gathered = accelerator.gather(stats) if num_processes > 1 else stats
        if gathered.size(0) != stats.size(0) * num_processes:
            raise RuntimeError("Ranks passed micro-batches of different sizes; keep Trainer's even_batches=True.")
        if self.lambda0 is None and self.mode in ("hard", "linear"):
            self._calibrate_lambda0(gathered[:, 0])
        elif isinstance(self.lambda0, torch.Tensor) and self.lambda0.device != gathered.device:
            self.lambda0 = self.lambda0.to(gathered.device)  # restored on the host from a checkpoint
        self.schedule(step, epoch, max_steps)  # after the calibration, which sets the λ0 that λ(s) grows from
        weights, components = self_paced_weights(gathered[:, 0], self.mode, self.keep_fraction, self.lam)
        self.threshold = components["threshold"]
        start = getattr(accelerator, "process_index", 0) * stats.size(0)
        local = weights[start : start + stats.size(0)].to(stats.device)
        return PaceResult(local, weights.sum(), gathered, components)

    def _calibrate_lambda0(self, difficulty: torch.Tensor) -> None:
        """λ0 = the q0 quantile of the first global micro-batch's d_i, so `hard`/`linear` start by keeping about a
        fraction q0 whatever the scale of the difficulty (a device tensor: no sync; identical on every rank)."""
        self.lambda0 = torch.quantile(difficulty.float(), self.q0).clamp_min(1e-6)

    def draw_uniform(self, num_local: int, accelerator: Any, device: torch.device | str | None = None) -> torch.Tensor:
        """`[num_local]` U[0, 1) draws for this rank: every rank draws the global batch and keeps its slice, so N
        processes draw exactly what one process with N times the micro-batch would. Drawn on the host generator,
        returned on `device` (the losses' device; a host-to-device copy, not a sync)."""
        num_processes = getattr(accelerator, "num_processes", 1)
        draws = torch.rand(num_local * num_processes, generator=self.generator)
        start = getattr(accelerator, "process_index", 0) * num_local
        return draws[start : start + num_local].to(device or "cpu", non_blocking=True)  # blocking would sync

    def state_dict(self) -> dict[str, Any]:
        """Plain Python values (tensors become floats here, at checkpoint time only) plus the generator state."""
        keys = ("mode", "step", "epoch", "keep_fraction", "lam", "threshold", "lambda0")
        return {
            **{k: _to_float(getattr(self, k)) for k in keys},
            "generator": self.generator.get_state(),
            "lambda0_calibrated": isinstance(self.lambda0, torch.Tensor),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["mode"] != self.mode:
            raise ValueError(
                f"The checkpoint's pace_mode is {state['mode']!r} but this run uses {self.mode!r}; resume with the "
                "same SPMD settings or start a new run."
            )
        for key in ("step", "epoch", "keep_fraction", "lam", "threshold", "lambda0"):
            setattr(self, key, state.get(key, getattr(self, key)))  # lambda0 is absent from older checkpoints
        if state.get("lambda0_calibrated"):  # a float32 tensor when saved: the same float32 value, bit for bit
            self.lambda0 = torch.tensor(self.lambda0, dtype=torch.float32)
        self.generator.set_state(state["generator"])


class SPMDSeq2SeqTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer for BANG: `train_mode` 'ar' / 'nar' / 'mixed' / 'semi_nar'; NAR batches use the SPMD loss
    (Eq. 7), semi-NAR training the n-stream objective with n = k (`BangForConditionalGeneration.semi_nar_forward`).

    Conventions kept from Trainer: `num_items_in_batch` (the AR term is a token mean over the whole update),
    gradient accumulation (micro-batch SPMD losses are averaged), data parallelism (Σ v_i and the percentile are
    global), mixed precision (losses in fp32), `predict_with_generate` (NAR generate, or AR when `train_mode='ar'`).
    """

    args: SPMDTrainingArguments  # for the type checker: Trainer declares `TrainingArguments`
    _tag_names = ["bang-nar", "bang", "spmd", "non-autoregressive", "text2text-generation"]
    _paper = {
        "title": "A Self-Paced Mixed Distillation Method for Non-Autoregressive Generation",
        "id": "2205.11162",
        "note": "SPMD reconstruction from the abstract; see docs/spmd.md",
    }
    # `compute_loss` normalises every term for gradient accumulation itself (see `_scales`).
    loss_is_scaled_for_ga = True

    def __init__(self, model: nn.Module | None = None, args: SPMDTrainingArguments | None = None, **kwargs: Any):
        if not isinstance(args, SPMDTrainingArguments):
            raise TypeError("SPMDSeq2SeqTrainer needs args=SPMDTrainingArguments(...).")
        own_collator = kwargs.get("data_collator") is None
        _check_dataset(kwargs.get("train_dataset"), args)
        super().__init__(model=model, args=args, **kwargs)
        if own_collator:  # after Trainer's init, so that a `model_init` model is built and its pad id known
            self.data_collator = SPMDDataCollator(self.model.config.pad_token_id, kd_column=args.kd_column)
        self.model_accepts_loss_kwargs = True  # compute_loss consumes num_items_in_batch itself
        if args.train_mode == "semi_nar":  # generate(mode="semi_nar") on the trained model decodes with this k
            from bang_nar.pretraining import store_block_size

            store_block_size(self.model, args.semi_nar_block_size)
        record_target_bound(self.model, self.train_dataset, args)
        self.pace_state = SelfPacedState.from_args(args)
        self.teacher = self._load_teacher(args)
        # Running (sum, count) per metric, kept on the device and turned into floats in `log` only: no host sync per
        # step, and bounded memory when logging is off.
        self._metrics: dict[str, dict[str, list[Any]]] = {s: {} for s in ("train", "eval")}

    # ---- the loss ---------------------------------------------------------------------------------------------

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """One micro-batch of docs/spmd.md (NAR batches) or BANG AR fine-tuning (AR batches).

        Every pass runs through `model`, the prepared (DDP/FSDP/DeepSpeed-wrapped) one; the step makes no host sync
        (metrics stay device tensors until `log`; host-side checks only with `spmd_debug`). In training,
        `return_outputs=True` returns `(training loss, {"loss", "logits"})` (the NAR or AR logits of the batch)."""
        if not model.training:
            return self._evaluation_loss(model, inputs, return_outputs, num_items_in_batch)
        if (
            self.args.train_mode == "semi_nar"
        ):  # n-stream objective, n = k (BangForConditionalGeneration.semi_nar_forward)
            return self._semi_nar_batch_loss(model, inputs, return_outputs)
        if self._draw_mode() == "ar":  # 1. mode (BANG's nar_ratio policy)
            loss, logits = self._ar_batch_loss(model, inputs, num_items_in_batch)
            return (loss, {"loss": loss.detach(), "logits": logits}) if return_outputs else loss
        args, eps = self.args, self.args.label_smoothing_factor
        # 2. student: one NAR pass runs the encoder once and scores every candidate (slot t depends only on x and t,
        #    docs/architecture.md); its encoder output is shared by the AR passes below
        candidates, is_distilled = self._candidates(inputs)  # [B, K, T], [K]
        glancing = args.uses_glancing
        # stored top-n KD (docs/spmd.md#stored-kd): ids and log-probs [B, K, T, n]; at τ = 1 the NAR log-probs of the
        # stored ids are gathered with those of the candidates (one vocabulary-sized gradient in backward, not two)
        stored = self._stored_columns(inputs) if args.uses_stored_kd else None
        gather_ids = stored[0] if stored is not None and args.kd_temperature == 1.0 else None
        top_ids, top_log_probs, student_top = None, None, None  # of m_i: [B, K', T, n]
        with torch.no_grad() if glancing else contextlib.nullcontext():  # glancing: this pass only chooses m_i
            nar_logits, encoder_outputs = self._student_nar(model, inputs, candidates.size(-1))
            _, nar = sequence_kd_nll(nar_logits, candidates, eps, extra_ids=None if glancing else gather_ids)  # Eq. 1
        draws = self._mix_draws(candidates.size(0), nar_logits.device)
        choice, chosen = candidate_choice(  # Eq. 3
            nar["per_candidate"], nar["valid"], is_distilled, args.mix_strategy, args.p_mix, draws,
            validate=args.spmd_debug,
        )  # fmt: skip
        if stored is not None:  # the stored entries of m_i, by the same choice: no teacher pass
            top_ids, top_log_probs = _chosen(stored, choice, args.mix_strategy)
            if "extra_log_probs" in nar:
                (student_top,) = _chosen((nar["extra_log_probs"],), choice, args.mix_strategy)
        targets, choice, nar_loss = _selected(candidates, choice, nar["per_candidate"], args.mix_strategy)
        scored = targets  # the positions of m_i that are scored (all of them without glancing)
        if glancing:  # 2b. glance at m_i in proportion to the first pass's errors, train on the other slots
            scored, glance_ids = self._glance(nar_logits, targets)
            # The training pass runs the encoder again: the choosing pass above kept no graph.
            nar_logits, encoder_outputs = self._student_nar(model, inputs, candidates.size(-1), glance_ids)
            nar = sequence_kd_nll(nar_logits, scored, eps, extra_ids=top_ids if gather_ids is not None else None)[1]
            nar_loss = nar["per_candidate"]
            student_top = nar.get("extra_log_probs")
        # 3. the AR stream keeps training (Eq. 7, second term) on gold, or on m_i (`ar_loss_target`)
        ar_loss, ar, teacher_logits = None, None, None
        # On m_i the AR term is a local token mean: Trainer's num_items_in_batch counts gold tokens.
        ar_items = num_items_in_batch if args.ar_loss_target == "gold" else None
        sp_scale, ar_scale = self._scales(ar_items)
        if args.ar_loss_weight > 0 and args.ar_loss_target == "gold":
            ar_logits = self._decode(model, inputs, encoder_outputs, "ar")
            ar_loss, ar = gold_nll(ar_logits, self._gold_labels(inputs), eps, ar_items)
        elif args.ar_loss_weight > 0:
            ar_logits = self._ar_on_targets(model, inputs, encoder_outputs, targets)  # [B·K', T, V]
            ar_loss, ar = gold_nll(ar_logits, targets.flatten(0, 1), eps, ar_items)
            if args.shares_ar_pass:  # the same training-mode pass is the self-teacher's: no second AR pass
                teacher_logits = ar_logits.detach().view(*targets.shape, -1)
        # 4. AR-stream knowledge under no_grad, then the token KL (Eq. 2), or the stored top-n's (Eq. 2s)
        kd, stored_mass = None, None
        if top_ids is not None and top_log_probs is not None:
            kd = sparse_kd_divergence(
                nar_logits, top_ids, top_log_probs, scored.ne(IGNORE_INDEX), args.kd_temperature,
                student_log_probs=nar["log_probs"], student_stored_log_probs=student_top,
            )[1]  # fmt: skip
            kd, stored_mass = kd["per_sequence"], kd["stored_mass"]  # [B, K']
        elif args.needs_teacher:
            if teacher_logits is None:
                teacher_logits = self._teacher_logits(inputs, encoder_outputs, targets, model)  # [B, K', T, V]
            mask = scored.ne(IGNORE_INDEX)
            # The NAR log-probs of ℓ_NAR are reused (one log-softmax and one backward through it for both terms).
            kd = token_kd_divergence(
                nar_logits.unsqueeze(1), teacher_logits, mask, args.kd_temperature,
                student_log_probs=nar["log_probs"].unsqueeze(1),
            )[1]  # fmt: skip
            kd = kd["per_sequence"]  # KL(c): [B, K']
        # 5. self-paced weights over the global micro-batch (Eq. 5-6), then Eq. 4 + 7
        mismatch = nar_mismatch(nar_logits, scored) if args.pace_signal == "disagreement" else None
        difficulty, _ = pace_difficulty(args.pace_signal, nar_loss, kd, mismatch, choice)
        stats = _stats(difficulty, nar_loss, kd, choice, chosen["from_gold"], ar, stored_mass)
        pace = self.pace_state.update(
            self.state.global_step, self.state.epoch or 0.0, self.state.max_steps, stats, self.accelerator,
            check_sizes=args.spmd_debug,
        )  # fmt: skip
        loss, _ = mixed_distillation_loss(
            nar_loss, pace.weights, args.kd_alpha, kd, choice,
            ar_loss * ar_scale / sp_scale if ar_loss is not None else None, args.ar_loss_weight,
            weight_sum=pace.weight_sum, num_micro_batches=self._micro_batches(),
        )  # fmt: skip
        self._record_nar(pace)  # 6. logs
        loss = loss * sp_scale  # 7.
        return (loss, {"loss": loss.detach(), "logits": nar_logits}) if return_outputs else loss

    def _ar_batch_loss(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], num_items_in_batch: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """BANG AR fine-tuning (docs/architecture.md#loss): label-smoothed AR cross-entropy on gold, Trainer-normalised;
        returns `(loss, logits)`."""
        logits = self._decode(model, inputs, None, "ar")
        labels = self._gold_labels(inputs)
        loss, parts = gold_nll(logits, labels, self.args.label_smoothing_factor, num_items_in_batch)
        token_mean = parts["sum_per_sequence"].sum() / parts["num_tokens"].sum().clamp_min(1)
        self._record("train", {"ar_loss": token_mean, "nar_batch": 0.0})
        loss = loss * self._scales(num_items_in_batch)[1]
        return loss, logits

    def _semi_nar_batch_loss(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """Semi-NAR fine-tuning: the n-stream objective on gold (or, with `semi_nar_targets="ar_kd"`, the best
        distilled target) with n = k = `semi_nar_block_size` streams and
        `target_idx = t mod k`, through the prepared `model`'s forward (`mode="semi_nar"`). The loss is the mean over
        this micro-batch's supervised (stream, position) pairs, divided by the accumulation steps."""
        labels = inputs["labels"]
        if self.args.semi_nar_targets == "ar_kd":  # sequence KD: the best distilled target, one mode per source
            if self.args.kd_column not in inputs:
                raise ValueError(
                    f"semi_nar_targets='ar_kd' needs the distilled targets '{self.args.kd_column}' in every batch; "
                    "distil the data first (bang-nar distill) or use semi_nar_targets='gold'."
                )
            labels = inputs[self.args.kd_column][:, 0]
        outputs = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels, mode="semi_nar",
            block_size=self.args.semi_nar_block_size, smoothing_eps=self.args.label_smoothing_factor,
        )  # fmt: skip
        self._record("train", {"semi_nar_loss": outputs.loss, "nar_batch": 0.0})
        loss = outputs.loss / self._micro_batches()
        return (loss, {"loss": loss.detach()}) if return_outputs else loss

    def _evaluation_loss(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool, num_items_in_batch: Any
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """Gold label-smoothed loss in `args.eval_mode`: what NAR (or AR) inference is trained to minimise."""
        extra = {"block_size": self.args.semi_nar_block_size} if self.args.eval_mode == "semi_nar" else {}
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            labels=inputs["labels"],
            mode=self.args.eval_mode,
            smoothing_eps=self.args.label_smoothing_factor,
            **extra,
        )
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    # ---- helpers of compute_loss ------------------------------------------------------------------------------

    def _unwrapped(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def _student_nar(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], num_slots: int, glance_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, BaseModelOutput]:
        """The batch's one encoder pass and the NAR pass, as one forward of the prepared `model` (FSDP and DeepSpeed
        only support calls to the wrapper's forward): NAR logits `[B, T, V]` and the encoder output, which the AR
        gold and self-teacher passes reuse."""
        outputs = self._decode(model, inputs, None, "nar", num_slots, glance_ids=glance_ids, full_output=True)
        return outputs.logits, BaseModelOutput(last_hidden_state=outputs.encoder_last_hidden_state)

    def _gold_labels(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Gold labels with pad ids as -100: the model's `labels` convention, and what `_candidates` does."""
        labels = inputs["labels"]
        return labels.masked_fill(labels == self._unwrapped().config.pad_token_id, IGNORE_INDEX)

    def _mix_draws(self, num_local: int, device: torch.device | str | None = None) -> torch.Tensor | None:
        """U[0, 1) draws of `random` mixing (Eq. 3), from the state's generator, on `device`; None for the other
        strategies."""
        if self.args.mix_strategy != "random":
            return None
        return self.pace_state.draw_uniform(num_local, self.accelerator, device)

    def _draw_mode(self) -> str:
        """BANG's per-batch mode (docs/architecture.md#loss), from the seeded state generator, the same on every rank."""
        if self.args.train_mode != "mixed":
            return self.args.train_mode
        return "nar" if float(torch.rand((), generator=self.pace_state.generator)) < self.args.nar_ratio else "ar"

    def _candidates(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """C_i from `target_sources`: gold first, then the k AR-stream targets → `[B, K, T]`, `is_distilled [K]`."""
        parts: list[torch.Tensor] = []
        if "gold" in self.args.target_sources:
            parts.append(inputs["labels"].unsqueeze(1))
        if "ar_kd" in self.args.target_sources:
            if self.args.kd_column not in inputs:
                raise ValueError(
                    f"target_sources includes 'ar_kd' but the batch has no '{self.args.kd_column}'; distil the data "
                    "first (bang_nar.trainer.distill_dataset) or use spmd_preset='bang_nar'."
                )
            distilled = inputs[self.args.kd_column]
            parts.append(distilled[:, : self.args.kd_top_k] if self.args.kd_top_k else distilled)
        length = max(p.size(-1) for p in parts)
        parts = [nn.functional.pad(p, (0, length - p.size(-1)), value=IGNORE_INDEX) for p in parts]
        candidates = torch.cat(parts, dim=1)
        # The model treats pad ids in labels as padding; do the same so the two agree.
        candidates = candidates.masked_fill(candidates == self._unwrapped().config.pad_token_id, IGNORE_INDEX)
        has_gold = "gold" in self.args.target_sources
        # Built on the device (torch.tensor(list, device=...) would be a blocking host-to-device copy, a sync).
        is_distilled = torch.arange(candidates.size(1), device=candidates.device) >= (1 if has_gold else 0)
        return candidates, is_distilled

    def _stored_columns(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored top-n (docs/spmd.md#stored-kd) of every candidate: `(ids, log-probs)`, each `[B, K, T, n]`.
        Candidates are the distilled targets only (the config refuses gold), so candidate j is stored target j."""
        missing = [c for c in (KD_TOP_IDS, KD_TOP_LOG_PROBS) if c not in inputs]
        if missing:
            raise ValueError(
                f"kd_target='stored' needs {missing} in every batch; distil with `bang-nar distill --kd_top_n N` "
                "(distill_dataset(..., kd_top_n=N)) or use kd_target='teacher'."
            )
        ids, log_probs = inputs[KD_TOP_IDS], inputs[KD_TOP_LOG_PROBS]
        if self.args.kd_top_k:
            ids, log_probs = ids[:, : self.args.kd_top_k], log_probs[:, : self.args.kd_top_k]
        return ids, log_probs

    def _glance(self, nar_logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Glancing (Qian et al. 2021) on the chosen targets `[B, 1, T]` (the config refuses mix_strategy='all' with
        glancing). n_i = slots where the no-grad argmax differs from m_i;
        ⌈r·n_i⌉ of m_i's real slots, drawn uniformly, are revealed. Returns `(targets with revealed slots set to
        -100, so only the others are scored, [B, K', T]; glance ids [B, T], -100 where not revealed)`."""
        ratio = self.args.glance_ratio_at(self.state.global_step, self.state.max_steps)
        target = targets[:, 0]  # [B, T]
        real = target.ne(IGNORE_INDEX)
        wrong = (nar_logits[:, : target.size(-1)].argmax(-1) != target) & real
        num_glance = (wrong.sum(-1).float() * ratio).ceil()  # [B]
        # Uniform random order of the real slots: the first num_glance of them are revealed.
        scores = torch.rand(target.shape, device=target.device, generator=self._glance_generator(target.device))
        scores = scores.masked_fill(~real, 2.0)
        rank = scores.argsort(-1).argsort(-1)
        reveal = real & (rank < num_glance.unsqueeze(-1))
        glance_ids = target.masked_fill(~reveal, IGNORE_INDEX)
        return targets.masked_fill(reveal.unsqueeze(1), IGNORE_INDEX), glance_ids

    def _glance_generator(self, device: torch.device) -> torch.Generator:
        """The glancing draws' generator on `device`, seeded from (seed, rank, optimizer step) at the first draw of
        each step: independent of the global RNG, different on every rank (each rank reveals its own slots), and a
        run resumed at a step continues with the same draws without any saved state."""
        key = (device, self.state.global_step)
        if getattr(self, "_glance_key", None) != key:
            # Tuple hashes of ints are not randomised per process; the CPU generator keeps 32 bits of its seed.
            seed = hash((self.args.seed, self.args.process_index, self.state.global_step)) % 2**32
            self._glance_rng, self._glance_key = torch.Generator(device=device).manual_seed(seed), key
        return self._glance_rng

    def _decode(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], encoder_outputs: BaseModelOutput | None, mode: str,
        num_slots: int | None = None, labels: torch.Tensor | None = None, network: nn.Module | None = None,
        glance_ids: torch.Tensor | None = None, full_output: bool = False,
    ) -> torch.Tensor | Any:  # fmt: skip
        """Logits `[B, T, V]` of one decoder pass (the whole model output with `full_output`): NAR with `num_slots`
        real slots (`glance_ids`: glancing inputs), or AR teacher-forced on `labels` (default gold). Runs through
        `model` (the prepared, wrapped one), sharing `encoder_outputs` (None: the pass runs the encoder). Training
        passes build no KV cache."""
        network = network if network is not None else model
        kwargs: dict[str, Any] = {"attention_mask": inputs["attention_mask"], "mode": mode, "use_cache": False}
        if encoder_outputs is None:
            kwargs["input_ids"] = inputs["input_ids"]
        else:
            kwargs["encoder_outputs"] = encoder_outputs
        if mode == "nar":
            batch_size = inputs["attention_mask"].size(0)
            kwargs["decoder_attention_mask"] = inputs["attention_mask"].new_ones(batch_size, num_slots)
            if glance_ids is not None:
                kwargs["decoder_glance_ids"] = nn.functional.pad(
                    glance_ids, (0, num_slots - glance_ids.size(-1)), value=IGNORE_INDEX
                )
        else:
            labels = inputs["labels"] if labels is None else labels
            kwargs["decoder_input_ids"] = self._unwrapped().prepare_decoder_input_ids_from_labels(labels)
        outputs = network(**kwargs)
        return outputs if full_output else outputs.logits

    @torch.no_grad()
    def _teacher_logits(
        self,
        inputs: dict[str, torch.Tensor],
        encoder_outputs: BaseModelOutput,
        targets: torch.Tensor,
        model: nn.Module | None = None,
    ) -> torch.Tensor:
        """q_AR teacher-forced on the chosen targets `[B, K', T]` → logits `[B, K', T, V]`, under no_grad.

        teacher='self': the student's own AR predicting stream on the batch's encoder output (stop-gradient, the
        encoder pass is shared as docs/spmd.md asks), through the prepared `model` (default: the trainer's), in
        training mode (dropout) or eval mode per `teacher_dropout`; otherwise the frozen checkpoint in eval mode,
        which runs its own encoder."""
        if self.teacher is None:
            network = model if model is not None else self.model_wrapped
            was_training = network.training
            network.train(was_training and self.args.teacher_dropout)
            try:
                logits = self._ar_on_targets(network, inputs, encoder_outputs, targets)
            finally:
                network.train(was_training)
        else:  # the frozen teacher encodes each source once, not once per target
            encoded = self.teacher.get_encoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            logits = self._ar_on_targets(self.teacher, inputs, encoded, targets)
        return logits.view(*targets.shape, -1)

    def _ar_on_targets(
        self, network: nn.Module, inputs: dict[str, torch.Tensor], encoder_outputs: BaseModelOutput | None,
        targets: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """The AR stream of `network` teacher-forced on every target of `targets` `[B, K', T]` → logits
        `[B·K', T, V]`, each sample's source (or its `encoder_outputs`, None: `network` runs its encoder) repeated
        K' times."""
        num = targets.size(1)
        repeat = {k: inputs[k].repeat_interleave(num, 0) for k in ("input_ids", "attention_mask")}
        if encoder_outputs is not None:
            hidden = encoder_outputs.last_hidden_state.repeat_interleave(num, 0)
            encoder_outputs = BaseModelOutput(last_hidden_state=hidden)
        return self._decode(None, repeat, encoder_outputs, "ar", labels=targets.flatten(0, 1), network=network)

    def _micro_batches(self) -> int:
        return int(getattr(self, "current_gradient_accumulation_steps", 1) or 1)

    def _scales(self, num_items_in_batch: Any) -> tuple[float, float]:
        """Multipliers undoing DDP's gradient averaging: `(sp_scale, ar_scale)`.

        The SPMD term is normalised by the global Σ v_i, so each rank's share is multiplied by the world size.
        The AR term follows Trainer: ×world size when `num_items_in_batch` is the global token count; without
        `num_items_in_batch` it is a local token mean, divided by the accumulation steps instead."""
        world = self.accelerator.num_processes
        if num_items_in_batch is None:
            return float(world), 1.0 / self._micro_batches()
        return float(world), float(world) if self.args.average_tokens_across_devices else 1.0

    def _load_teacher(self, args: SPMDTrainingArguments) -> nn.Module | None:
        if args.teacher == "self" or not args.needs_teacher:
            return None
        from bang_nar import BangForConditionalGeneration

        # The training precision: a frozen fp32 teacher under bf16/fp16 would cost twice the memory and time.
        dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
        teacher = BangForConditionalGeneration.from_pretrained(args.teacher, dtype=dtype).to(args.device).eval()
        return teacher.requires_grad_(False)

    # ---- logging ------------------------------------------------------------------------------------------------

    def _record(self, split: str, values: dict[str, float | torch.Tensor]) -> None:
        """Add one step's values to the running (sum, count) of each metric; tensors stay on the device (no sync)."""
        totals = self._metrics[split]
        for key, value in values.items():
            value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
            total = totals.get(key)
            totals[key] = [value, 1] if total is None else [total[0] + value, total[1] + 1]

    def _reduce_metrics(self, split: str) -> dict[str, float]:
        """Means since the last log, as floats: one host transfer for all tensor-valued metrics."""
        totals = self._metrics[split]
        tensors = [k for k, (v, _) in totals.items() if isinstance(v, torch.Tensor)]
        values = dict(zip(tensors, torch.stack([totals[k][0] for k in tensors]).tolist())) if tensors else {}
        means = {k: values.get(k, v) / n for k, (v, n) in totals.items()}
        totals.clear()
        return means

    def _record_nar(self, pace: PaceResult) -> None:
        stats = dict(zip(STATS, pace.stats.unbind(-1)))
        values = {
            "nar_loss": stats["nar_loss"].mean(),
            "kd_loss": stats["kd_loss"].mean(),
            "pace/mean_weight": pace.components["mean_weight"],
            "pace/kept_fraction": pace.components["kept_fraction"],
            "pace/threshold": pace.components["threshold"],
            "mix/from_gold": stats["from_gold"].mean(),
            "mix/from_distilled": 1.0 - stats["from_gold"].mean(),
            "nar_batch": 1.0,
        }
        if self.pace_state.mode == "percentile":
            values["pace/keep_target"] = self.pace_state.keep_fraction
        elif self.pace_state.mode in ("hard", "linear"):
            values["pace/lambda"] = self.pace_state.lam
        if self.args.ar_loss_weight > 0:
            values["ar_loss"] = stats["ar_loss_sum"].sum() / stats["ar_tokens"].sum().clamp_min(1)
        if self.args.uses_stored_kd:  # the teacher's probability the n stored ids hold (1: nothing cut)
            values["kd/stored_mass"] = stats["stored_mass"].mean()
        self._record("train", values)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the means of the recorded loss parts since the last log (TRL pattern)."""
        split = "train" if "loss" in logs or not any(k.startswith("eval_") for k in logs) else "eval"
        metrics = self._reduce_metrics(split)
        prefix = "eval_" if split == "eval" else ""
        super().log({**logs, **{prefix + k: v for k, v in metrics.items()}}, start_time)

    # ---- data, evaluation, checkpoints, model card ------------------------------------------------------------

    def _set_signature_columns_if_needed(self) -> None:
        """Keep the distilled-candidate column, and with `kd_target='stored'` the stored top-n columns, which the
        model's forward does not name."""
        super()._set_signature_columns_if_needed()
        extra = [self.args.kd_column] + ([KD_TOP_IDS, KD_TOP_LOG_PROBS] if self.args.uses_stored_kd else [])
        self._signature_columns += [c for c in extra if c not in self._signature_columns]

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
        **gen_kwargs: Any,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Evaluation: gold loss in `eval_mode`; with `predict_with_generate`, `generate(mode=eval_mode)` (NAR by
        default: the one-pass decode SPMD trains for)."""
        inputs = {k: v for k, v in inputs.items() if k not in (self.args.kd_column, KD_TOP_IDS, KD_TOP_LOG_PROBS)}
        if self.args.predict_with_generate and not prediction_loss_only:
            inputs["mode"] = self.args.eval_mode  # reaches both `generate` and the loss forward
            if self.args.eval_mode == "semi_nar":
                # Seq2SeqTrainer's label smoother scores one logit row per label; the n-stream loss is the model's.
                labels = inputs.pop("labels", None)
                _, generated, _ = super().prediction_step(model, inputs, False, ignore_keys=ignore_keys, **gen_kwargs)
                if labels is None:
                    return None, generated, None
                inputs = self._prepare_inputs({**inputs, "labels": labels})
                with torch.no_grad():
                    loss = self._evaluation_loss(model, inputs, False, None).detach()
                return loss, generated, inputs["labels"]
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs)

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | int | None:
        """Trainer's count of the update's label tokens, with pad-id labels (collators that pad with the pad id
        instead of -100) left out, as the AR term leaves them out (`_gold_labels`)."""
        pad = self._unwrapped().config.pad_token_id
        masked = [
            {**batch, "labels": batch["labels"].masked_fill(batch["labels"] == pad, IGNORE_INDEX)}
            if isinstance(batch.get("labels"), torch.Tensor)
            else batch
            for batch in batch_samples
        ]
        return super()._get_num_items_in_batch(masked, device)

    def _get_output_dir(self, trial: Any) -> str:
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING_DIR) if getattr(self, "_staging_checkpoint", False) else run_dir

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """Trainer's checkpoint, written under `STAGING_DIR` and renamed to `checkpoint-N` once every file is there:
        a `checkpoint-N` folder is always complete. Older checkpoints are rotated after the rename."""
        import shutil

        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

        run_dir = self._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged, final = os.path.join(run_dir, STAGING_DIR, name), os.path.join(run_dir, name)
        if self.args.should_save and os.path.isdir(staged):
            shutil.rmtree(staged)  # left by a run killed while saving
        self.accelerator.wait_for_everyone()
        self._staging_checkpoint = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_checkpoint = False
        self.accelerator.wait_for_everyone()  # every rank's files (RNG states, optimizer shards) are in `staged`
        if self.args.should_save:
            if self.state.best_model_checkpoint and STAGING_DIR in self.state.best_model_checkpoint:
                self.state.best_model_checkpoint = self.state.best_model_checkpoint.replace(
                    os.path.join(run_dir, STAGING_DIR), run_dir
                )
            if os.path.isdir(final):  # the same step saved again (a resumed run): the new one replaces it
                shutil.rmtree(final)
            os.replace(staged, final)
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=False,
            )
        self.accelerator.wait_for_everyone()

    def _save_rng_state(self, output_dir: str) -> None:
        """Checkpoint RNG states, plus the SPMD state (schedule, λ, threshold, mixing RNG): like the RNG states it
        is what a resumed run needs to continue identically, and it is saved and loaded at the same moments."""
        super()._save_rng_state(output_dir)
        if self.args.should_save:
            torch.save(self.pace_state.state_dict(), os.path.join(output_dir, SPMD_STATE_NAME))

    def _load_rng_state(self, checkpoint: str | None) -> None:
        super()._load_rng_state(checkpoint)
        path = os.path.join(checkpoint, SPMD_STATE_NAME) if checkpoint else None
        if path and os.path.isfile(path):
            self.pace_state.load_state_dict(torch.load(path, weights_only=True))
        elif path:
            warnings.warn(
                f"{path} is missing: the SPMD schedule, λ and the mixing/mode draws restart from their "
                "initial state, so this resumed run does not continue the saved one exactly.",
                stacklevel=2,
            )

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
        *,
        dataset: str | None = None,
        eval_results: dict[str, dict[str, Any]] | None = None,
        eval_dataset_name: str | None = None,
        eval_systems: dict[str, dict[str, Any]] | None = None,
        eval_device: str | None = None,
        language: str | list[str] | None = None,
        license: str | None = None,
        finetuned_from: str | None = None,
        dataset_tags: str | list[str] | None = None,
        tasks: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Write `README.md` in `output_dir` from `hub_cards/spmd_model_card.md`, filled from the class metadata
        (`_tag_names`, `_paper`), every `SPMDTrainingArguments` field, the trainer state and the model.

        Args:
            model_name: card title and `model-index` name (default: the output folder's name).
            dataset_name / dataset: the training data (TRL's and Trainer's names for it): a Hub id (also put in the
                metadata), a local file, or a folder written by `bang-nar distill` (its provenance is summarised).
            tags: added to `_tag_names`.
            eval_results: `{system: {metric: value}}` rows, e.g. results.json of `bang-nar evaluate` or
                `bang_nar.pipeline.evaluate_model`; they become `EvalResult`s and the card's metrics table.
            eval_dataset_name / eval_systems / eval_device: the evaluation data (default: the training data), each
                system's decode options and where ms/sample was measured.
            language, license, finetuned_from, dataset_tags: as in `Trainer.create_model_card` (`push_to_hub` passes
                them); `tasks` and `dataset_args` are accepted for the same reason and unused (the task is fixed).
            **kwargs: further facts about the data (e.g. `num_modes=2`), listed under "Data"; None values are skipped.
        """
        from bang_nar import __version__ as bang_nar_version

        if not self.is_world_process_zero():
            return
        data_name = dataset_name or dataset
        tags = _as_list(tags)
        model = self._unwrapped()
        base = finetuned_from or getattr(model.config, "_name_or_path", "") or None
        model_name = model_name or os.path.basename(os.path.normpath(self.args.output_dir))
        results = []
        if eval_results:
            results = eval_results_from_table(
                eval_results,
                eval_dataset_name or data_name or "evaluation data",
                systems=eval_systems,
                device=eval_device,
            )
        card_data = ModelCardData(
            model_name=model_name,
            language=language,
            license=license,
            library_name="transformers",
            tags=list(dict.fromkeys(self._tag_names + tags)),
            base_model=base if is_hub_id(base) else None,
            datasets=[d for d in [data_name, *_as_list(dataset_tags)] if is_hub_id(d)] or None,
            pipeline_tag="text2text-generation",
            eval_results=results or None,
        )
        is_nar = self.args.has_nar_batches
        semi_nar = self.args.train_mode == "semi_nar"
        values = {
            "model_name": model_name,
            "base_model": f"`{display_name(base)}`" if base else _card_scratch(model),
            "dataset": f"`{display_name(data_name)}`" if data_name else "an unspecified dataset",
            "paper_title": self._paper["title"],
            "paper_id": self._paper["id"],
            "train_mode": self.args.train_mode,
            "spmd_preset": self.args.spmd_preset,
            "recipe": _card_recipe(self.args),
            "data": _card_data(data_name, self.train_dataset, self.args, kwargs),
            "spmd_options": _card_spmd_options(self.args),
            "training_setup": _card_training_setup(self.args, self.state, self.accelerator.num_processes),
            "metrics": metrics_section(results, table_notes(eval_results or {})),
            "decoding": _card_decoding(model, is_nar, self.args.semi_nar_block_size if semi_nar else None),
            "use_generate_kwargs": 'mode="nar"'
            if is_nar
            else (
                f'mode="semi_nar", block_size={self.args.semi_nar_block_size}'
                if semi_nar
                else 'mode="ar", num_beams=4, max_new_tokens=64'
            ),
            "use_mode": "nar" if is_nar else ("semi_nar" if semi_nar else "ar"),
            "bang_nar_version": bang_nar_version,
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
        }
        os.makedirs(self.args.output_dir, exist_ok=True)
        with open(os.path.join(self.args.output_dir, "README.md"), "w", encoding="utf-8") as f:
            f.write(render_model_card(MODEL_CARD_TEMPLATE, values, card_data))


# ---- model card pieces (used by `create_model_card` only) ------------------------------------------------------------


def _as_list(value: str | list[str] | None) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _card_cell(value: Any) -> str:
    """A Markdown table cell: the value as code (enums by value), with `|` escaped so it cannot break the row."""
    return "`" + str(getattr(value, "value", value)).replace("|", "\\|") + "`"


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)  # Trainer's str enums print as "SchedulerType.LINEAR" otherwise


def _card_scratch(model: nn.Module) -> str:
    config = model.config
    return (
        f"random initialisation (trained from scratch: d_model={config.d_model}, "
        f"layers={config.encoder_layers}+{config.decoder_layers}, vocab={config.vocab_size})"
    )


def _card_recipe(args: SPMDTrainingArguments) -> str:
    """The loss actually optimised, in words, from the resolved arguments (presets already applied)."""
    ar_gold = f"label-smoothed (ε={args.label_smoothing_factor}) cross-entropy of the AR predicting stream on gold"
    if args.train_mode == "ar":
        return (
            f"- AR fine-tuning (BANG, docs/architecture.md): {ar_gold} targets.\n"
            "- The SPMD options below are recorded but unused: they apply to NAR batches only."
        )
    if args.train_mode == "semi_nar":
        k = args.semi_nar_block_size
        return (
            f"- Semi-NAR fine-tuning (a reconstruction, docs/pretraining.md): label-smoothed (ε="
            f"{args.label_smoothing_factor}) cross-entropy of the cross-stream n-stream decoder on "
            f"{'gold targets' if args.semi_nar_targets == 'gold' else f'the best distilled target (`{args.kd_column}`)'}, "
            f'n = k = {k} [MASK] streams, target_idx = t mod {k}; decode with `generate(mode="semi_nar")` '
            f"(block_size {k} is stored in the generation config).\n"
            "- The SPMD options below are recorded but unused: they apply to NAR batches only."
        )
    lines = []
    if args.train_mode == "mixed":
        lines.append(
            f"- Each batch is NAR with probability `nar_ratio`={args.nar_ratio} (seeded draw), else AR ({ar_gold})."
        )
    k_best = f"the {args.kd_top_k} best" if args.kd_top_k else "the k best"
    sources = {"gold": "the gold target", "ar_kd": f"{k_best} AR-stream beam-search targets (`{args.kd_column}`)"}
    candidates = " and ".join(sources[s] for s in args.target_sources)
    choice = {
        "min_loss": "the candidate with the lowest NAR loss",
        "random": f"a distilled target with probability p_mix={args.p_mix}, else gold",
        "all": "the average over all candidates",
    }[args.mix_strategy]
    eps = args.label_smoothing_factor
    lines.append(f"- NAR cross-entropy (ε={eps}) on {candidates}; per sample: {choice} (Eq. 1, 3).")
    if args.uses_glancing:
        lines.append(
            f"- Glancing training (Qian et al. 2021; beyond docs/spmd.md): ratio {args.glance_ratio} → "
            f"{args.glance_ratio_end} of the first pass's wrong slots revealed; only the other slots are scored."
        )
    if args.kd_alpha > 0 and args.kd_target == "stored":
        lines.append(
            "- Token KL towards the distilling teacher's top-n log-probs stored in the data (`kd_top_ids`, "
            f"`kd_top_log_probs`), renormalised over those n ids; no teacher pass; weight α={args.kd_alpha}, "
            f"temperature τ={args.kd_temperature} (Eq. 2s, 4)."
        )
    elif args.kd_alpha > 0:
        teacher = (
            "the model's own AR stream (stop-gradient)"
            if args.teacher == "self"
            else f"the frozen `{display_name(args.teacher)}`"
        )
        lines.append(
            f"- Token KL towards {teacher}, weight α={args.kd_alpha}, temperature τ={args.kd_temperature} (Eq. 2, 4)."
        )
    else:
        lines.append("- No token KL (α=0).")
    if args.pace_mode == "none":
        lines.append("- No self-paced weighting: every sample has weight 1.")
    else:
        lines.append(
            f"- Self-paced sample weights `{args.pace_mode}` on difficulty `{args.pace_signal}` over the global "
            "batch (Eq. 5, 6)."
        )
    if args.ar_loss_weight > 0:
        lines.append(f"- AR-stream gold loss with weight β={args.ar_loss_weight} (Eq. 7).")
    return "\n".join(lines)


def _card_data(name: str | None, dataset: Any, args: SPMDTrainingArguments, extra: dict[str, Any]) -> str:
    """Where the training pairs came from: size, distillation provenance when the data is a `distill` folder."""
    lines = [f"- Training data: `{name}`" if name else "- Training data: not recorded"]
    if dataset is not None and hasattr(dataset, "__len__"):
        lines.append(f"- Training examples: {len(dataset):,}")
    provenance_path = os.path.join(name, "provenance.json") if name else None
    if provenance_path and os.path.isfile(provenance_path):
        from .sequence_kd import load_provenance

        p = load_provenance(name)
        teacher = display_name(str(p.get("teacher", "?")))
        lines.append(
            f"- Distilled targets (`{p.get('kd_column', args.kd_column)}`) by `bang-nar distill`: teacher `{teacher}`, "
            f"AR beam {p.get('num_beams')}, length penalty {p.get('length_penalty')}, "
            f"{p.get('num_return_sequences')} target(s) per source, at most {p.get('max_new_tokens')} new tokens"
            + _card_mass(p.get("probability_mass"), p.get("min_distance"))
            + (f"; the teacher's top-{p['kd_top_n']} log-probs stored per position" if p.get("kd_top_n") else "")
        )
    elif args.uses_distilled_targets:
        lines.append(f"- Distilled targets: column `{args.kd_column}` of the training data (provenance not recorded)")
    lines += [f"- `{key}`: {value}" for key, value in extra.items() if value is not None]
    return "\n".join(lines)


def _card_mass(mass: float | None, min_distance: float | None = None) -> str:
    """The data-driven k of `bang-nar distill` (docs/spmd.md#k-from-the-data), for the card's data line."""
    text = ""
    if mass is not None:
        text += (
            f"; k from the data: per source, the most probable of those holding {mass:.0%} of their probability "
            "(a source with M likely outputs keeps about M)"
        )
    if min_distance:
        text += (
            f"; distinct modes: a target that differs from a more probable kept one in fewer than {min_distance:.0%} "
            "of its slots (a slot-wise mix or near-copy) is dropped"
        )
    return text


def _card_spmd_options(args: SPMDTrainingArguments) -> str:
    """One row per field declared by `SPMDTrainingArguments` (not its parents), with the first sentence of its help."""
    import dataclasses
    import inspect

    own = inspect.get_annotations(SPMDTrainingArguments)  # fields declared in the subclass only, in order
    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(SPMDTrainingArguments)}
    rows = []
    for name in own:
        # First sentence only ("Eq. 4" is no sentence end); the value column already shows any preset default.
        meaning = re.split(r"(?<=[\w)'])\. (?=[A-Z])", helps.get(name, ""))[0].rstrip(".").replace("|", "\\|")
        rows.append(f"| `{name}` | {_card_cell(getattr(args, name))} | {meaning} |")
    return "\n".join(rows)


def _card_training_setup(args: SPMDTrainingArguments, state: Any, num_processes: int) -> str:
    """Steps, batch, optimiser and seed of the run, and its last logged losses."""
    per_update = args.per_device_train_batch_size * args.gradient_accumulation_steps * num_processes
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    history = getattr(state, "log_history", []) or []
    last = {key: next((e[key] for e in reversed(history) if key in e), None)
            for key in ("loss", "train_loss", "eval_loss", "train_runtime")}  # fmt: skip
    settings = {
        "optimizer steps": (
            f"{state.global_step} (max_steps {args.max_steps})" if args.max_steps > 0 else state.global_step
        ),
        "epochs": round(float(state.epoch or 0.0), 3),
        "batch per update": f"{per_update} ({args.per_device_train_batch_size} per device × "
        f"{args.gradient_accumulation_steps} accumulation × {num_processes} process(es))",
        "learning rate": (f"{args.learning_rate} ({_plain(args.lr_scheduler_type)}, warmup {args.warmup_steps} steps)"),
        "optimizer": f"{_plain(args.optim)}, weight decay {args.weight_decay}, max grad norm {args.max_grad_norm}",
        "precision": precision,
        "seed": f"{args.seed} (data_seed {args.data_seed})",
        "mean training loss": last["train_loss"],
        "last logged loss": last["loss"],
        "last eval loss": last["eval_loss"],
        "runtime (s)": last["train_runtime"],
    }
    return "\n".join(f"| {key} | {_card_cell(value)} |" for key, value in settings.items() if value is not None)


def _card_decoding(model: nn.Module, is_nar: bool, semi_nar_block_size: int | None = None) -> str:
    """The default `generate()` mode and the stored generation options, plus how this recipe is meant to decode."""
    # Only search options: ids, output switches and bookkeeping say nothing about how the model decodes.
    skip = {"transformers_version", "use_cache", "output_attentions", "output_hidden_states", "return_dict_in_generate"}
    stored = {k: v for k, v in model.generation_config.to_diff_dict().items()
              if not k.startswith("_") and not k.endswith("token_id") and k not in skip}  # fmt: skip
    mode = model.config.generation_mode
    lines = [
        f"- Default `generate()` mode (`config.generation_mode`): `{mode}`; pass `mode=` to choose.",
        '- NAR (`mode="nar"`): one encoder and one decoder pass, argmax per slot, output cut at the first `[SEP]` '
        "and consecutive repeats dropped; `num_candidates=K` rescores K NAR candidates with the AR stream; "
        '`mode="nar_verify"` returns AR greedy output token for token, using the NAR draft.',
        '- AR (`mode="ar"`): `GenerationMixin` search, e.g. `num_beams=4, length_penalty=1.2` (BANG\'s setting).',
    ]
    if stored:
        lines.append("- Stored generation config: " + ", ".join(f"`{k}={v}`" for k, v in sorted(stored.items())))
    if is_nar:
        default = f': pass `mode="nar"` (its config still defaults to `{mode}`).' if mode != "nar" else "."
        lines.append("- This model was trained for NAR decoding" + default)
    elif semi_nar_block_size is not None:
        lines.append(
            f"- This model was trained for semi-NAR decoding, {semi_nar_block_size} tokens per step: "
            '`mode="semi_nar"` (its generation config stores `block_size`).'
        )
    else:
        lines.append("- This model was trained in AR mode (e.g. as the teacher of `bang-nar distill`).")
    return "\n".join(lines)


def record_target_bound(model: nn.Module, dataset: Any, args: SPMDTrainingArguments) -> int | None:
    """Store the longest trained target (`[SEP]` included: the NAR slot count it needs) as the model's
    `generation_config.max_new_tokens` when NAR-type batches train it, so that every save carries it and NAR decoding
    runs that many slots (capped by the source rule) instead of one per source token (docs/decoding.md). It caps AR
    decoding of the saved model too. Returns the bound, or None (AR training, or a dataset that is no
    `datasets.Dataset`) where nothing is stored."""
    import datasets
    import pyarrow.compute as pc

    if not (args.has_nar_batches or args.train_mode == "semi_nar") or not isinstance(dataset, datasets.Dataset):
        return None

    columns = ["labels"]
    if args.uses_distilled_targets and args.kd_column in dataset.column_names:
        columns.append(args.kd_column)
    table = dataset.with_format("arrow").select_columns(columns)[:]
    bound = 0
    for name in columns:
        column = table.column(name)
        if name != "labels":  # k targets per example: list<list<int>>
            column = pc.list_flatten(column)
        bound = max(bound, int(pc.max(pc.list_value_length(column)).as_py() or 0))
    if bound < 1:
        return None
    model.generation_config.max_new_tokens = bound
    return bound


def _check_dataset(dataset: Any, args: SPMDTrainingArguments) -> None:
    """Fail before training when the data cannot feed the requested candidates."""
    columns = getattr(dataset, "column_names", None)
    if columns is None:
        return  # not a datasets.Dataset: checked per batch in `_candidates`
    missing = [c for c in ("input_ids", "labels") if c not in columns]
    if args.uses_distilled_targets and args.kd_column not in columns:
        missing.append(args.kd_column)
    stored = [c for c in (KD_TOP_IDS, KD_TOP_LOG_PROBS) if args.uses_stored_kd and c not in columns]
    if stored and not missing:
        raise ValueError(
            f"kd_target='stored' needs the columns {stored} (the teacher's top-n, docs/spmd.md#stored-kd); distil "
            "with `bang-nar distill --kd_top_n N` (distill_dataset(..., kd_top_n=N)) or use kd_target='teacher'."
        )
    if missing:
        hint = (
            f" '{args.kd_column}' holds the AR-stream targets: build it with bang_nar.trainer.distill_dataset, or "
            "use spmd_preset='bang_nar' (gold only)."
            if args.kd_column in missing
            else ""
        )
        raise ValueError(f"train_dataset lacks the column(s) {missing}.{hint}")


def _chosen(tensors: tuple[torch.Tensor, ...], choice: torch.Tensor, strategy: str) -> tuple[torch.Tensor, ...]:
    """Each `[B, K, ...]` tensor at the candidates that carry choice weight: m_i alone (`[B, 1, ...]`, the argmax of
    the Eq. 3 weights `choice` `[B, K]`), or all of them with `strategy == 'all'`."""
    if strategy == "all":
        return tensors
    index = choice.argmax(-1)
    return tuple(t.gather(1, index.view(-1, *[1] * (t.dim() - 1)).expand(-1, 1, *t.shape[2:])) for t in tensors)


def _selected(
    candidates: torch.Tensor, choice: torch.Tensor, nar_loss: torch.Tensor, strategy: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep only the candidates that carry choice weight (`_chosen`): m_i alone (`[B, 1, …]`) unless
    `strategy == 'all'`, so the teacher runs once per sample. Returns `(targets [B, K', T], weights [B, K'],
    ℓ_NAR [B, K'])`."""
    if strategy == "all":
        return candidates, choice, nar_loss
    targets, loss = _chosen((candidates, nar_loss), choice, strategy)
    return targets, torch.ones_like(loss, dtype=choice.dtype), loss


def _stats(
    difficulty: torch.Tensor,
    nar_loss: torch.Tensor,
    kd: torch.Tensor | None,
    choice: torch.Tensor,
    from_gold: torch.Tensor,
    ar: dict[str, torch.Tensor] | None,
    stored_mass: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample `[B, len(STATS)]` statistics for the one all-gather (difficulty first)."""
    zeros = torch.zeros_like(difficulty)
    columns = [
        difficulty,
        (choice * nar_loss).sum(-1),
        (choice * kd).sum(-1) if kd is not None else zeros,
        from_gold,
        ar["sum_per_sequence"] if ar is not None else zeros,
        ar["num_tokens"].float() if ar is not None else zeros,
        (choice * stored_mass).sum(-1) if stored_mass is not None else zeros,
    ]
    return torch.stack([c.detach().float() for c in columns], dim=-1)


def _to_float(value: Any) -> Any:
    return float(value) if isinstance(value, torch.Tensor) else value
