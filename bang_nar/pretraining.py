"""BANG pretraining: the objective, the trainer and their helpers (a reconstruction).

The cross-stream visible n-stream decoder and its loss are the model's (`BangDecoder` mode `"n_stream"`,
`BangForConditionalGeneration.n_stream_forward` in `modeling_bang.py`); this module adds the encoder MLM term,
`BangForPreTraining` and `BangPreTrainer`.

BANG's pretraining code was never released. This module implements the reconstruction of
`docs/pretraining.md#reconstruction` ([V] verified, [I] inferred):

- decoder rows `[main (T), P_0 (T), ..., P_{n-1} (T)]`. Main row j is `E[prev_j] + P[p_j]`, where p_j is the
  document position of prev_j (MASS `positions`, the released hooks' "real positions", [V]); every [MASK] slot
  is the same `e_ng + P[p_t + 1]` whatever its stream ([V]). Without `positions`, p_j = j + 1 (fine-tuning);
- the visibility rule [I]: slot `P_s@t` (predicts `target[t]`) sees main rows `j <= max(t-s, 0)` and the
  slots `P_{s'}@(t-s+s')`, `s' <= s`, of its own anti-diagonal group; main rows are causal among themselves;
- buckets from the same positions, as `cal_pretrain_relative_positions` computes them ([V code]):
  `bucket(p_t-p_j+1)` for main keys, `bucket(p_t-p_r)` for slot keys ([I]);
- the loss [V code]: stream s is supervised at t iff `target_idx[t] >= s`; label-smoothed NLL summed over
  all supervised (stream, position) pairs with equal weight and divided by their number. Per-stream weights are an
  option (default all 1, i.e. the released criterion).

Added beyond the reconstruction (README "Pretraining"): an encoder MLM term. The encoder's last hidden state at each
span position goes through the (tied) LM head to predict the original token, weighted by `encoder_mlm_weight`
(default 1; 0 is the released criterion exactly). Without it a from-scratch encoder collapsed to one constant vector
within ~50 steps in every CPU run: the decoder learns the spans as a language model first and the encoder's only
gradient, through cross-attention, pushes it to a constant. With it, the encoder carries each source and the decoder
learns to read it (`encoder_gap` grows instead of staying 0).

Choices where the sources are silent (docs/pretraining.md#open-questions), each a parameter:
- whether pretraining really fed document positions (open question 8): `SpanMaskingCollator(document_positions=True)`
  (default) emits them, as the hooks expect; `False` pretrains on the fine-tuning positions 1..T of the concatenated
  spans instead;
- `num_streams` n defaults to `config.num_streams` (9, inferred from "9gram", open question 1).

Every weight is the fine-tuning model's: `BangForPreTraining` is a `BangForConditionalGeneration` whose forward
defaults to the pretraining objective, and it saves as a plain `BangForConditionalGeneration`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback
from transformers.modeling_outputs import BaseModelOutput

from .generation_bang import check_block_size, resolve_block_size, store_block_size
from .modeling_bang import (
    BangForConditionalGeneration,
    BangPreTrainingOutput,
    cross_stream_pattern,
    stream_supervision,
)

# ---------------------------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------------------------


def cross_stream_decoder(
    model: BangForConditionalGeneration,
    encoder_hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    decoder_input_ids: torch.Tensor,
    num_streams: int,
    visible: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """The decoder's n-stream mode on `[main, P_0..P_{n-1}]` rows → last hidden states [B, (1+n)T, D], main rows
    first. `positions` [B, T]: each main row's document position; `visible` overrides the visibility rule."""
    out = model.get_decoder()(
        input_ids=decoder_input_ids, encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=attention_mask,
        mode="n_stream", num_streams=num_streams, positions=positions, visible=visible, output_hidden_states=True,
        return_dict=True,
    )  # fmt: skip
    return torch.cat([out.main_stream_hidden_state, out.last_hidden_state], dim=1)


def pretraining_forward(
    model: BangForConditionalGeneration,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    decoder_input_ids: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    target_idx: torch.Tensor | None = None,
    encoder_outputs: BaseModelOutput | tuple | None = None,
    num_streams: int | None = None,
    stream_weights: torch.Tensor | list[float] | None = None,
    smoothing_eps: float | None = None,
    block_size: int | None = None,
    return_logits: bool = False,
    positions: torch.Tensor | None = None,
    encoder_labels: torch.Tensor | None = None,
    encoder_mlm_weight: float = 1.0,
) -> BangPreTrainingOutput:
    """The n-stream pretraining forward and loss (docs/pretraining.md) of `model`: `model.n_stream_forward` (see its arguments)
    plus the encoder MLM term.

    Args:
        smoothing_eps: ε of the label-smoothed loss, default `config.label_smoothing` (BANG's criterion).
        positions (`[B, T]`): each target's prev-token position in the document (`SpanMaskingCollator` output,
            released hooks); None: the fine-tuning positions 1..T (semi-NAR fine-tuning).
        encoder_labels (`[B, S]`): the original token at each span position of the source, -100 elsewhere
            (`SpanMaskingCollator` output). With them the loss adds `encoder_mlm_weight` x the encoder MLM term
            (module docstring); 0 or None: the released criterion only.
    """
    epsilon = model.config.label_smoothing if smoothing_eps is None else smoothing_eps
    output, encoder_outputs, _ = model.n_stream_forward(
        input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids, labels=labels,
        target_idx=target_idx, encoder_outputs=encoder_outputs, num_streams=num_streams,
        stream_weights=stream_weights, smoothing_eps=epsilon, block_size=block_size, return_logits=return_logits,
        positions=positions,
    )  # fmt: skip
    if output.loss is not None and encoder_labels is not None and encoder_mlm_weight:
        # Encoder MLM (added, module docstring): each span position of the source predicts its original token.
        on_span = encoder_labels.ne(-100)
        states = encoder_outputs.last_hidden_state[on_span]  # [N_src, D]
        mlm = F.cross_entropy(
            model.lm_head(states).float(), encoder_labels[on_span], label_smoothing=epsilon, reduction="sum"
        ) / on_span.sum().clamp(min=1)  # 0, not nan, without span tokens
        output.encoder_mlm_loss = mlm.detach()
        output.loss = output.loss + encoder_mlm_weight * mlm
    return output


@torch.no_grad()
def encoder_gap(model: torch.nn.Module, batch: dict[str, torch.Tensor], **forward_kwargs) -> torch.Tensor:
    """How much the decoder reads the source: the pretraining loss of `batch` with each sample's source swapped for
    the next sample's (decoder inputs and targets unchanged), minus the loss with its own source; dropout off; the
    encoder MLM term is left out.

    `model` is a `BangForPreTraining` (or its DDP/FSDP wrapper); `batch` is a `SpanMaskingCollator` output with at
    least 2 samples (else nan); `forward_kwargs` go to both forwards (`num_streams`, ...). Near 0 means the decoder
    models the spans as a language model and ignores the encoder. Tiny CPU runs without the encoder MLM term show
    exactly that: the encoder collapses to a constant within ~50 steps (README, "Pretraining").
    """
    if batch["input_ids"].size(0) < 2:
        return torch.full((), float("nan"), device=batch["input_ids"].device)
    batch = {k: v for k, v in batch.items() if k != "encoder_labels"}  # the decoder's loss only
    was_training = model.training
    model.eval()
    try:
        own = model(**batch, **forward_kwargs).loss
        swapped = dict(batch, input_ids=batch["input_ids"].roll(1, 0))
        if "attention_mask" in batch:
            swapped["attention_mask"] = batch["attention_mask"].roll(1, 0)
        other = model(**swapped, **forward_kwargs).loss
    finally:
        model.train(was_training)
    return other - own


class BangForPreTraining(BangForConditionalGeneration):
    """`BangForConditionalGeneration` whose `forward` runs the n-stream pretraining objective by default.

    Same parameters, same state dict: `save_pretrained` writes a plain `BangForConditionalGeneration` checkpoint
    (config `architectures` and `auto_map` unchanged), and `from_pretrained` loads any converted or fine-tuned BANG
    checkpoint to continue pretraining. `forward(mode="ar" | "nar")` and `generate` work as in the parent.
    """

    # The pretraining loss normalises itself (per update: per micro-batch), so the Trainer must divide by the
    # gradient-accumulation steps instead of passing num_items_in_batch.
    accepts_loss_kwargs = False

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        target_idx: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        mode: str = "pretrain",
        num_streams: int | None = None,
        stream_weights: torch.Tensor | list[float] | None = None,
        smoothing_eps: float | None = None,
        block_size: int | None = None,
        return_logits: bool = False,
        positions: torch.Tensor | None = None,
        encoder_labels: torch.Tensor | None = None,
        encoder_mlm_weight: float | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ):
        """`mode="pretrain"` (default): `pretraining_forward`. Other modes: `BangForConditionalGeneration.forward`.

        `num_items_in_batch` (Trainer) is ignored in pretraining: the loss normalises by the supervised
        predictions of all streams, which the Trainer's label count does not know. `encoder_labels` count only in
        pretraining; `encoder_mlm_weight` None means 1.
        """
        if mode != "pretrain":
            return super().forward(
                input_ids=input_ids,
                attention_mask=attention_mask,
                decoder_input_ids=decoder_input_ids,
                labels=labels,
                encoder_outputs=encoder_outputs,
                mode=mode,
                smoothing_eps=smoothing_eps,
                num_items_in_batch=num_items_in_batch,
                block_size=block_size,
                **kwargs,
            )
        return pretraining_forward(
            self,
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            labels=labels,
            target_idx=target_idx,
            encoder_outputs=encoder_outputs,
            num_streams=num_streams,
            stream_weights=stream_weights,
            smoothing_eps=smoothing_eps,
            block_size=block_size,
            return_logits=return_logits,
            positions=positions,
            encoder_labels=encoder_labels,
            encoder_mlm_weight=1.0 if encoder_mlm_weight is None else encoder_mlm_weight,
        )

    def prepare_inputs_for_generation(self, *args, **kwargs):
        # GenerationMixin calls self(**inputs) for AR steps; they must run the AR stream, not pretraining.
        inputs = super().prepare_inputs_for_generation(*args, **kwargs)
        inputs["mode"] = "ar"
        return inputs

    def save_pretrained(self, *args, **kwargs):
        """Save as a plain `BangForConditionalGeneration`, so the checkpoint loads like any BANG model."""
        self.__class__ = BangForConditionalGeneration
        try:
            return self.save_pretrained(*args, **kwargs)
        finally:
            self.__class__ = BangForPreTraining


class _FreezeEncoder(TrainerCallback):
    """Zero the gradients of the encoder's own parameters (not the shared embeddings) for the first `steps` optimizer
    steps. Without the encoder MLM term, the reconstructed objective collapses a from-scratch encoder to a constant
    within ~50 steps (README, "Pretraining"); held still at first, it survives longer but collapses later (measured
    at lr 2e-3). The encoder MLM term is the remedy; this stays for experiments."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step >= self.steps:
            return
        shared = {id(p) for p in model.get_input_embeddings().parameters()}
        for param in model.get_encoder().parameters():
            if id(param) not in shared and param.grad is not None:
                param.grad.zero_()


class BangPreTrainer(Trainer):
    """`Trainer` for `BangForPreTraining` that logs each stream's loss (`loss_stream_s`, mean per supervised
    prediction since the last log, summed over processes) next to the total `loss`, and `encoder_gap` (see
    `encoder_gap`; on the logged step's first micro-batch, averaged over processes; `log_encoder_gap=False` skips it).

    `num_streams` / `stream_weights` / `block_size` / `encoder_mlm_weight` are passed to every pretraining forward
    (None: the defaults). With batches that carry `encoder_labels` (`SpanMaskingCollator`'s default) it also logs
    `loss_encoder_mlm`, the unweighted encoder MLM term (mean over micro-batches since the last log).
    `freeze_encoder_steps` = K keeps the encoder's own weights still for the first K optimizer steps (their gradients
    are zeroed; the shared embeddings train). Without the encoder MLM term this only delays the collapse of a
    from-scratch encoder (README); it stays for experiments.
    Semi-NAR fine-tuning (n = k streams, `target_idx = t mod k`) is `SPMDTrainingArguments(train_mode="semi_nar")`
    (`bang-nar train --train_mode semi_nar`), through `BangForConditionalGeneration.semi_nar_forward`.
    """

    def __init__(
        self,
        *args,
        num_streams: int | None = None,
        stream_weights: list[float] | None = None,
        block_size: int | None = None,
        log_encoder_gap: bool = True,
        freeze_encoder_steps: int = 0,
        encoder_mlm_weight: float | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if freeze_encoder_steps < 0:
            raise ValueError(f"freeze_encoder_steps must be >= 0, got {freeze_encoder_steps}.")
        if encoder_mlm_weight is not None and encoder_mlm_weight < 0:
            raise ValueError(f"encoder_mlm_weight must be >= 0 (0 turns the term off), got {encoder_mlm_weight}.")
        if freeze_encoder_steps:
            self.add_callback(_FreezeEncoder(freeze_encoder_steps))
        self.num_streams = num_streams
        self.stream_weights = stream_weights
        self.block_size = block_size
        self.encoder_mlm_weight = encoder_mlm_weight
        self.log_encoder_gap = log_encoder_gap
        self._stream_sums: torch.Tensor | None = None
        self._stream_counts: torch.Tensor | None = None
        self._mlm_sum: torch.Tensor | None = None  # [sum of encoder MLM terms, micro-batches]
        self._encoder_gap: tuple[int, torch.Tensor] | None = None  # (optimizer step, gap) of the next log

    def _encoder_gap_due(self) -> bool:
        """True on the first micro-batch of an optimizer step that ends in a (step-based) log."""
        if not self.log_encoder_gap or self.args.logging_strategy != "steps" or not self.state.logging_steps:
            return False
        step = self.state.global_step + 1
        return step % self.state.logging_steps == 0 and (self._encoder_gap is None or self._encoder_gap[0] != step)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        forward_kwargs = {
            "num_streams": self.num_streams,
            "stream_weights": self.stream_weights,
            "block_size": self.block_size,
            "encoder_mlm_weight": self.encoder_mlm_weight,
        }
        outputs = model(**inputs, **forward_kwargs)
        if model.training and self._encoder_gap_due():
            # Two extra forwards per log (no grad): does the decoder read the encoder yet? (`encoder_gap`)
            self._encoder_gap = (self.state.global_step + 1, encoder_gap(model, inputs, **forward_kwargs))
        if model.training:
            sums = (outputs.stream_losses.nan_to_num(0.0) * outputs.stream_counts).detach()
            counts = outputs.stream_counts.detach().to(sums.dtype)
            if self._stream_sums is None:
                self._stream_sums, self._stream_counts = sums, counts
            else:
                self._stream_sums, self._stream_counts = self._stream_sums + sums, self._stream_counts + counts
            if outputs.encoder_mlm_loss is not None:
                term = outputs.encoder_mlm_loss.float()
                mlm = torch.stack([term, torch.ones_like(term)])  # [term, one micro-batch]
                self._mlm_sum = mlm if self._mlm_sum is None else self._mlm_sum + mlm
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._stream_sums is not None:
            sums = self.accelerator.reduce(self._stream_sums, reduction="sum")
            counts = self.accelerator.reduce(self._stream_counts, reduction="sum")
            for s, (total, count) in enumerate(zip(sums.tolist(), counts.tolist())):
                if count:
                    logs[f"loss_stream_{s}"] = round(total / count, 4)
            self._stream_sums = self._stream_counts = None
            if self._mlm_sum is not None:
                total, count = self.accelerator.reduce(self._mlm_sum, reduction="sum").tolist()
                logs["loss_encoder_mlm"] = round(total / count, 4)
                self._mlm_sum = None
            if self._encoder_gap is not None and self._encoder_gap[0] == self.state.global_step:
                gap = self.accelerator.reduce(self._encoder_gap[1].float(), reduction="mean")
                logs["encoder_gap"] = round(gap.item(), 4)
        super().log(logs, *args, **kwargs)


__all__ = [
    "BangForPreTraining",
    "BangPreTrainer",
    "BangPreTrainingOutput",
    "check_block_size",
    "cross_stream_decoder",
    "cross_stream_pattern",
    "encoder_gap",
    "pretraining_forward",
    "resolve_block_size",
    "store_block_size",
    "stream_supervision",
]
