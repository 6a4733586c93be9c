"""PyTorch BANG: one encoder–decoder, two decoding modes (Qi et al. 2021; see docs/architecture.md).

- `mode="ar"`: the ProphetNet predicting stream with ngram = 1 (docs/architecture.md#ar-mode). Logits come from the predicting stream;
  the main stream only supplies keys and values. Incremental decoding caches the main stream.
- `mode="nar"`: every decoder slot is `e_ng + P[pos+1]` with causal self-attention among slots and main-stream
  relative buckets (docs/architecture.md#nar-mode). One pass; position t never depends on later slots or on the decoder length.
- decoder mode `"n_stream"`: the cross-stream visible decoder of pretraining and semi-NAR (main stream plus n [MASK]
  streams, docs/pretraining.md); `n_stream_forward` is its objective, `forward(mode="semi_nar")` semi-NAR
  fine-tuning. Every mode runs the same embedding-plus-layers loop in `BangDecoder.forward`.

Every AR/NAR difference of the network sits in two places: the stream-input builders (`_ar_stream_inputs`,
`_nar_stream_inputs`) and the mask builders (`_ar_attention_mask`, `_nar_attention_mask`). Decoding (the
generate dispatch, NAR argmax constraints, candidates, nar_verify) lives in `generation_bang.py`.

This file imports only torch, transformers, `.configuration_bang` and `.generation_bang`, so `save_pretrained` can
copy them next to a checkpoint for `trust_remote_code=True` loading.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput, Seq2SeqModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_bang import FORWARD_MODES, BangConfig
from .generation_bang import (  # noqa: F401  (re-exported: NAR decoding used to live here)
    BangGenerationConfig,
    BangGenerationMixin,
    BangNARGenerateOutput,
    ForcedEosKeepScoreLogitsProcessor,
    constrained_argmax,
    nar_candidates,
    nar_cut_and_dedup,
    nar_scan,
    resolve_block_size,
)

Mode = Literal["ar", "nar"]


# ---------------------------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------------------------


def relative_position_bucket(distance: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Unidirectional relative bucket of `distance = query_pos - key_pos` (docs/architecture.md#buckets).

    Future keys (distance < 0) collapse to bucket 0. Mirrors
    `ngram_multihead_attention_AR_NAR_mixed.py::_relative_positions_bucket`, including its fp32 log and its
    clamp-then-truncate order, so thresholds match the original exactly.
    """
    n = distance.clamp(min=0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    val_if_large = max_exact + torch.log(n.float() / max_exact) / math.log(max_distance / max_exact) * (
        num_buckets - max_exact
    )
    val_if_large = val_if_large.clamp(max=num_buckets - 1).int()
    return torch.where(is_small, n.int(), val_if_large).long()


def make_positions(is_token: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """fairseq `utils.make_positions`: real tokens get offset+1, offset+2, ... in order; pads get 0 (the zero row).

    Works for left and right padding (docs/architecture.md#model); `offset` is the number of cached decoder positions.
    """
    is_token = is_token.long()
    return (torch.cumsum(is_token, dim=1) + offset) * is_token


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Labels `y1..yn [SEP] (-100)*` → decoder input `[SEP] y1..yn pad*` (fairseq `move_eos_to_beginning`, docs/architecture.md#tokens)."""
    shifted = labels.new_zeros(labels.shape)
    shifted[:, 1:] = labels[:, :-1].clone()
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


def _dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout that is not even dispatched in inference (decode steps are dominated by small-op overhead)."""
    return F.dropout(x, p, True) if training and p > 0 else x


def _bias_from_visibility(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention bias: 0 where visible, the dtype's minimum elsewhere (finite, so no NaN rows)."""
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill(~visible, torch.finfo(dtype).min)


def _ar_attention_mask(
    num_new: int, num_past: int, config: BangConfig, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """AR self-attention pattern over queries `[main (T), predict (T)]` and keys `[main (P+T), predict (T)]`.

    docs/architecture.md#buckets (`cal_finetune_relative_positions`, `ngram_attention_bias`): the main query at absolute
    step a = P+i sees main keys j <= a with bucket(a - j); the predicting query at a sees main keys j <= a with
    bucket(a + 1 - j) and only its own predicting slot, with bucket 0. P = cached steps (0 when teacher-forced).
    Returns `(bias [2T, P+2T], buckets [2T, P+2T])`.
    """
    query_pos = num_past + torch.arange(num_new, device=device)  # [T]
    key_pos = torch.arange(num_past + num_new, device=device)  # [P+T]
    main_distance = query_pos[:, None] - key_pos[None, :]  # [T, P+T]
    own_slot = torch.eye(num_new, dtype=torch.bool, device=device)  # [T, T]
    no_slot = torch.zeros_like(own_slot)
    visible = torch.cat(
        [torch.cat([main_distance >= 0, no_slot], 1), torch.cat([main_distance >= 0, own_slot], 1)], 0
    )  # [2T, P+2T]
    zero = torch.zeros(num_new, num_new, dtype=torch.long, device=device)
    distance = torch.cat(
        [torch.cat([main_distance, zero], 1), torch.cat([main_distance + 1, zero], 1)], 0
    )  # [2T, P+2T]
    buckets = relative_position_bucket(distance, config.num_buckets, config.relative_max_distance)
    return _bias_from_visibility(visible, dtype), buckets


def _nar_attention_mask(
    num_slots: int, config: BangConfig, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """NAR self-attention pattern (docs/architecture.md#nar-mode).

    [MASK] slot i sees slots j <= i with bucket(i - j). Returns `(bias [T, T], buckets [T, T])`.
    """
    pos = torch.arange(num_slots, device=device)
    distance = pos[:, None] - pos[None, :]  # [T, T]
    buckets = relative_position_bucket(distance, config.num_buckets, config.relative_max_distance)
    return _bias_from_visibility(distance >= 0, dtype), buckets


# The cross-stream visible n-stream decoder (pretraining and semi-NAR, docs/pretraining.md): rows
# `[main (T), P_0 (T), ..., P_{n-1} (T)]`, every [MASK] slot `e_ng + P[p_t + 1]` whatever its stream.


def cross_stream_pattern(
    num_rows: int,
    num_streams: int,
    device: torch.device | str | None = None,
    positions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Visibility and distances of the cross-stream visible n-stream decoder (docs/pretraining.md).

    Rows and columns are `[main (T), P_0 (T), ..., P_{n-1} (T)]` with T = `num_rows`, n = `num_streams`.
    Returns `(visible [(1+n)T, (1+n)T] bool, distance [(1+n)T, (1+n)T] long)`, where `distance` = query position
    minus key position as `relative_position_bucket` takes it: `p_t-p_j` main→main, `p_t-p_j+1` slot→main (main keys
    are looked up at pos-1, `cal_pretrain_relative_positions`), `p_t-p_r` slot→slot. Invisible entries hold 0.
    `p` is the row index (fine-tuning positions) or, with `positions` [B, T] (each row's document position),
    those positions; `distance` is then `[B, (1+n)T, (1+n)T]`. Visibility depends on row indices only.
    """
    t = torch.arange(num_rows, device=device)
    size = (1 + num_streams) * num_rows
    visible = torch.zeros(size, size, dtype=torch.bool, device=device)
    query_minus_key = t[:, None] - t[None, :] if positions is None else positions[:, :, None] - positions[:, None, :]
    distance = query_minus_key.new_zeros(*query_minus_key.shape[:-2], size, size)
    visible[:num_rows, :num_rows] = query_minus_key.new_ones(num_rows, num_rows, dtype=torch.bool).tril()
    distance[..., :num_rows, :num_rows] = query_minus_key
    for s in range(num_streams):
        rows = slice((1 + s) * num_rows, (2 + s) * num_rows)
        group = t - s  # the last golden main row each query of stream s may see (clamped below at 0)
        visible[rows, :num_rows] = t[None, :] <= group.clamp(min=0)[:, None]
        distance[..., rows, :num_rows] = query_minus_key + 1
        for earlier in range(s + 1):  # the group's slots of streams 0..s
            cols = slice((1 + earlier) * num_rows, (2 + earlier) * num_rows)
            key_row = group + earlier
            visible[rows, cols] = (t[None, :] == key_row[:, None]) & (key_row[:, None] >= 0)
            distance[..., rows, cols] = query_minus_key
    return visible, distance.masked_fill(~visible, 0)


def semi_nar_step_pattern(
    num_new: int, num_past: int, block_size: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Visibility and distances of one step: queries `[main (m new), slots (k)]`, keys `[main (P+m), slots (k)]`.

    Main query at row a = P+i sees main keys j <= a (distance a-j); slot s (row t = g+s, g = P+m-1) sees every main
    key (distance t-j+1) and slots s' <= s (distance s-s'): the pretraining rule restricted to group g.
    """
    g = num_past + num_new - 1
    main_rows = num_past + torch.arange(num_new, device=device)
    keys = torch.arange(num_past + num_new, device=device)
    slot = torch.arange(block_size, device=device)
    main_distance = main_rows[:, None] - keys[None, :]  # [m, P+m]
    slot_main_distance = (g + slot)[:, None] - keys[None, :] + 1  # [k, P+m]
    slot_distance = slot[:, None] - slot[None, :]  # [k, k]
    visible = torch.cat(
        [
            torch.cat([main_distance >= 0, torch.zeros(num_new, block_size, dtype=torch.bool, device=device)], 1),
            torch.cat([torch.ones_like(slot_main_distance, dtype=torch.bool), slot_distance >= 0], 1),
        ],
        0,
    )
    distance = torch.cat(
        [
            torch.cat([main_distance, torch.zeros(num_new, block_size, dtype=torch.long, device=device)], 1),
            torch.cat([slot_main_distance, slot_distance], 1),
        ],
        0,
    )
    return visible, distance


def stream_supervision(labels: torch.Tensor, target_idx: torch.Tensor, num_streams: int) -> torch.Tensor:
    """`[B, n, T]` bool: slot `P_s@t` is supervised iff `labels[t] != -100` and `target_idx[t] >= s`."""
    streams = torch.arange(num_streams, device=labels.device)[None, :, None]
    return labels.ne(-100)[:, None, :] & (target_idx[:, None, :] >= streams)


def label_smoothed_nll_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """`(1-ε)·NLL + ε/V·Σ_v −log p_v` summed over labelled tokens, divided by their count (docs/architecture.md#loss).

    This is the original criterion (`NgramLmMixedLoss`) normalised by `sample_size` = the number of target tokens
    (each final `[SEP]` included). `num_items_in_batch` (Trainer convention) replaces the local count so that
    gradient accumulation and data parallelism average over the whole update. Labels equal to -100 are ignored.
    """
    total = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        labels.reshape(-1),
        ignore_index=-100,
        label_smoothing=epsilon,
        reduction="sum",
    )
    denominator = num_items_in_batch if num_items_in_batch is not None else labels.ne(-100).sum()
    if isinstance(denominator, torch.Tensor):
        denominator = denominator.to(total.device)
    return total / denominator


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class BangDecoderOutput(ModelOutput):
    """Decoder output. `last_hidden_state` is the stream that produces logits: the predicting stream (AR) or the
    [MASK] stream (NAR). `main_stream_hidden_state` is the AR main stream of the last layer, which the original
    discards (computed only with `output_hidden_states=True`). Per-layer tuples start with the embedding output."""

    last_hidden_state: torch.Tensor | None = None
    main_stream_hidden_state: torch.Tensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    main_stream_hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class BangSeq2SeqModelOutput(Seq2SeqModelOutput):
    """`Seq2SeqModelOutput` whose decoder fields describe the logit-producing stream, plus the AR main stream:
    `main_stream_hidden_state` (last layer) and `decoder_main_stream_hidden_states` (per layer), both only with
    `output_hidden_states=True` in AR mode."""

    main_stream_hidden_state: torch.Tensor | None = None
    decoder_main_stream_hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class BangSeq2SeqLMOutput(Seq2SeqLMOutput):
    """`Seq2SeqLMOutput` plus the AR main stream (see `BangSeq2SeqModelOutput`)."""

    main_stream_hidden_state: torch.Tensor | None = None
    decoder_main_stream_hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class BangPreTrainingOutput(ModelOutput):
    """Output of the n-stream objective (`n_stream_forward`: pretraining, semi-NAR fine-tuning).

    - `loss`: Σ_s w_s · (summed label-smoothed NLL of stream s) / (number of supervised predictions, all streams);
    - `stream_losses` [n]: mean loss per supervised prediction of each stream (nan where a stream has none);
    - `stream_counts` [n]: supervised predictions per stream;
    - `encoder_mlm_loss`: the encoder MLM term of pretraining (mean label-smoothed NLL over span positions,
      unweighted), only with `encoder_labels` (`bang_nar.pretraining.pretraining_forward`);
    - `logits` [B, n, T, V]: every slot's logits, only with `return_logits=True` (memory: n·T·V per sample);
    - `hidden_states` [B, (1+n)T, D]: the decoder's last layer, main rows first, only with `return_logits=True`.
    """

    loss: torch.Tensor | None = None
    stream_losses: torch.Tensor | None = None
    stream_counts: torch.Tensor | None = None
    encoder_mlm_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None


# ---------------------------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------------------------


def bang_eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float = 1.0,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference attention: softmax(q·kᵀ·scaling + mask) in fp32 (fairseq `utils.softmax`), then ·v.

    Transformers attention-interface signature: q [B, H, Lq, D], k/v [B, H, Lk, D], additive mask broadcastable to
    [B, H, Lq, Lk]; returns (output [B, Lq, H, D], probabilities [B, H, Lq, Lk]).
    """
    scores = torch.matmul(query, key.transpose(-1, -2))
    if scaling != 1.0:
        scores = scores * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    if scores.dtype == torch.float32:
        probs = F.softmax(scores, dim=-1)
    else:
        probs = F.softmax(scores.float(), dim=-1).to(query.dtype)
    dropped = _dropout(probs, dropout, module.training)
    return torch.matmul(dropped, value).transpose(1, 2).contiguous(), probs


class BangAttention(nn.Module):
    """Encoder self-attention and decoder cross-attention: fairseq 0.9 `MultiheadAttention` (docs/architecture.md#model).

    Separate q/k/v/out projections with bias; q (bias included) scaled by head_dim**-0.5. The attention kernel
    comes from `config._attn_implementation` ("eager" = `bang_eager_attention_forward`, the reference, or "sdpa");
    `output_attentions=True` always runs the eager kernel, the only one that returns probabilities.
    """

    is_causal = False  # masks are always explicit (SDPA must not assume a causal pattern when the mask is None)

    def __init__(self, config: BangConfig, num_heads: int, layer_idx: int | None = None):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = config.d_model // num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.layer_idx = layer_idx
        self.k_proj = nn.Linear(config.d_model, config.d_model)
        self.v_proj = nn.Linear(config.d_model, config.d_model)
        self.q_proj = nn.Linear(config.d_model, config.d_model)
        self.out_proj = nn.Linear(config.d_model, config.d_model)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:2], self.num_heads, self.head_dim).transpose(1, 2)  # [B, L, H*D] -> [B, H, L, D]

    def _attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Kernel dispatch for an unscaled `query` → (output [B, Lq, H*D] before out_proj, probabilities or None).

        Eager scales q (bias included) before q·kᵀ like fairseq; fused kernels take the same factor as `scale`."""
        implementation = self.config._attn_implementation
        dropout = self.dropout if self.training else 0.0
        if output_attentions or implementation in (None, "eager"):
            out, probs = bang_eager_attention_forward(self, query * self.scaling, key, value, mask, 1.0, dropout)
        else:
            attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, bang_eager_attention_forward)
            out, probs = attention(self, query, key, value, mask, scaling=self.scaling, dropout=dropout)
        return out.reshape(*out.shape[:2], -1), probs

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_bias: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        output_attentions: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Self-attention when `key_value_states` is None, else cross-attention (keys/values cached once).

        Returns the output, or `(output, probabilities)` with `output_attentions=True`."""
        query = self._heads(self.q_proj(hidden_states))
        if key_value_states is None:
            key, value = self._heads(self.k_proj(hidden_states)), self._heads(self.v_proj(hidden_states))
        elif cache is not None and cache.is_updated.get(self.layer_idx):
            layer = cache.cross_attention_cache.layers[self.layer_idx]
            key, value = layer.keys, layer.values
        else:
            key, value = self._heads(self.k_proj(key_value_states)), self._heads(self.v_proj(key_value_states))
            if cache is not None:
                key, value = cache.cross_attention_cache.update(key, value, self.layer_idx)
                cache.is_updated[self.layer_idx] = True
        out, probs = self._attend(query, key, value, attention_bias, output_attentions)
        out = self.out_proj(out)
        return (out, probs) if output_attentions else out


class BangNgramSelfAttention(BangAttention):
    """Decoder self-attention with relative-position logits (docs/architecture.md#buckets;
    `ngram_multihead_attention_AR_NAR_mixed.py::NgramMultiheadAttentionARNARMixed`).

    The original packs q, k, v into one `in_proj`; here they are separate (the converter splits them). Relative
    logits come from the *layer input* of each query: `relative_linear(h)` viewed as [buckets, H] (feature
    j = bucket*H + head), added unscaled. Written fresh from docs/architecture.md#hf-prophetnet: HF ProphetNet's predicting-stream
    gather scrambles (time, head) rows and must not be copied.

    AR (`num_main` = T): queries are `[main, predict]`; the main stream's keys/values go through the KV cache and
    the predicting stream's own keys are appended after them. NAR (`num_main` = None): one plain stream, no cache.
    `query_start` = k computes queries only for rows k.. of `hidden_states` (keys and values still use every row):
    the last AR layer skips the main stream's queries, whose output the model discards.
    """

    def __init__(self, config: BangConfig, layer_idx: int | None = None):
        super().__init__(config, config.decoder_attention_heads, layer_idx)
        self.num_buckets = config.num_buckets
        self.relative_linear = nn.Linear(config.d_model, config.num_buckets * self.num_heads)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_bias: torch.Tensor,
        relative_buckets: torch.Tensor,
        num_main: int | None = None,
        cache: EncoderDecoderCache | None = None,
        output_attentions: bool = False,
        query_start: int = 0,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """`attention_bias` / `relative_buckets` are [Lq, Lk] over all rows of `hidden_states` (queries) and
        all keys (`relative_buckets` may be [B, Lq, Lk]); rows before `query_start` are dropped here."""
        batch_size = hidden_states.size(0)
        query_states = hidden_states[:, query_start:] if query_start else hidden_states
        num_queries = query_states.size(1)
        query = self._heads(self.q_proj(query_states))  # [B, H, Lq, D]
        key, value = self._heads(self.k_proj(hidden_states)), self._heads(self.v_proj(hidden_states))
        if num_main is not None:
            num_rest = key.size(2) - num_main
            main_key, own_key = key.split([num_main, num_rest], dim=2)
            main_value, own_value = value.split([num_main, num_rest], dim=2)
            if cache is not None:
                main_key, main_value = cache.self_attention_cache.update(main_key, main_value, self.layer_idx)
            key = torch.cat([main_key, own_key], dim=2)  # [B, H, P+2T, D]
            value = torch.cat([main_value, own_value], dim=2)

        relative = self.relative_linear(query_states).view(batch_size, num_queries, self.num_buckets, self.num_heads)
        relative = relative.permute(0, 3, 1, 2)  # [B, Lq, buckets, H] -> [B, H, Lq, buckets]
        buckets = relative_buckets[..., query_start:, :] if query_start else relative_buckets
        if buckets.dim() == 3:  # per-sample buckets [B, Lq, Lk] (pretraining on document positions)
            buckets = buckets[:, None]
        index = buckets.expand(batch_size, self.num_heads, *buckets.shape[-2:])  # [B, H, Lq, Lk]
        bias = torch.gather(relative, dim=-1, index=index)
        bias = bias + (attention_bias[query_start:] if query_start else attention_bias)

        out, probs = self._attend(query, key, value, bias, output_attentions)
        out = self.out_proj(out)
        return (out, probs) if output_attentions else out


# ---------------------------------------------------------------------------------------------------------------
# Layers (post-LN, docs/architecture.md#model)
# ---------------------------------------------------------------------------------------------------------------


class _BangFeedForwardLayer(GradientCheckpointingLayer):
    """Owns the feed-forward sublayer `LN(x + drop(fc2(drop_act(gelu(fc1(x))))))` that ends every layer.

    The parameters sit on the layer itself (`fc1`, `fc2`, `final_layer_norm`) so names match the original checkpoint.
    Layers support gradient checkpointing (`model.gradient_checkpointing_enable()`): tensors go positionally.
    """

    def __init__(self, config: BangConfig, ffn_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, config.d_model)
        self.final_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.activation = ACT2FN[config.activation_function]
        self.dropout = config.dropout
        self.activation_dropout = config.activation_dropout

    def feed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = _dropout(self.activation(self.fc1(hidden_states)), self.activation_dropout, self.training)
        out = _dropout(self.fc2(out), self.dropout, self.training)
        return self.final_layer_norm(hidden_states + out)


class BangEncoderLayer(_BangFeedForwardLayer):
    """`transformer.py::TransformerEncoderLayer` (post-LN): self-attention, then feed-forward."""

    def __init__(self, config: BangConfig):
        super().__init__(config, config.encoder_ffn_dim)
        self.self_attn = BangAttention(config, config.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

    def forward(
        self, hidden_states: torch.Tensor, attention_bias: torch.Tensor | None, output_attentions: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out = self.self_attn(hidden_states, attention_bias=attention_bias, output_attentions=output_attentions)
        out, probs = out if output_attentions else (out, None)
        hidden_states = self.feed_forward(
            self.self_attn_layer_norm(hidden_states + _dropout(out, self.dropout, self.training))
        )
        return (hidden_states, probs) if output_attentions else hidden_states


class BangDecoderLayer(_BangFeedForwardLayer):
    """`NgramTransformerDecoderARNARMixedLayer` (post-LN): n-stream self-attention, cross-attention, feed-forward.

    Returns the new states of rows `query_start..` (all rows by default), or `(states, self-attention probs,
    cross-attention probs)` with `output_attentions=True`.
    """

    def __init__(self, config: BangConfig, layer_idx: int):
        super().__init__(config, config.decoder_ffn_dim)
        self.self_attn = BangNgramSelfAttention(config, layer_idx)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.encoder_attn = BangAttention(config, config.decoder_attention_heads, layer_idx)
        self.encoder_attn_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        self_attn_bias: torch.Tensor,
        relative_buckets: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attn_bias: torch.Tensor | None,
        num_main: int | None = None,
        cache: EncoderDecoderCache | None = None,
        output_attentions: bool = False,
        query_start: int = 0,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.self_attn(
            hidden_states,
            self_attn_bias,
            relative_buckets,
            num_main=num_main,
            cache=cache,
            output_attentions=output_attentions,
            query_start=query_start,
        )
        out, self_probs = out if output_attentions else (out, None)
        residual = hidden_states[:, query_start:] if query_start else hidden_states
        hidden_states = self.self_attn_layer_norm(residual + _dropout(out, self.dropout, self.training))
        out = self.encoder_attn(
            hidden_states,
            key_value_states=encoder_hidden_states,
            attention_bias=encoder_attn_bias,
            cache=cache,
            output_attentions=output_attentions,
        )
        out, cross_probs = out if output_attentions else (out, None)
        hidden_states = self.encoder_attn_layer_norm(hidden_states + _dropout(out, self.dropout, self.training))
        hidden_states = self.feed_forward(hidden_states)
        return (hidden_states, self_probs, cross_probs) if output_attentions else hidden_states


# ---------------------------------------------------------------------------------------------------------------
# Pretrained model base
# ---------------------------------------------------------------------------------------------------------------


class BangPreTrainedModel(PreTrainedModel):
    config: BangConfig
    config_class = BangConfig
    generation_config_class = BangGenerationConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["BangEncoderLayer", "BangDecoderLayer"]
    _keys_to_ignore_on_load_unexpected = ["encoder.version", "decoder.version"]

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`; with remote code registered (`import bang_nar`), `auto_map` also maps
        `AutoModel` to `BangModel`, so a saved `BangForConditionalGeneration` loads as either class."""
        if type(self)._auto_class is not None:
            self.config.auto_map = {
                "AutoModel": "modeling_bang.BangModel",
                **(getattr(self.config, "auto_map", None) or {}),
            }
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _check_and_adjust_attn_implementation(self, attn_implementation: str | None, *args, **kwargs) -> str:
        # Eager is the reference (golden parity is measured on it); SDPA only when asked for.
        return super()._check_and_adjust_attn_implementation(attn_implementation or "eager", *args, **kwargs)


def _key_padding_bias(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """[B, S] 1/0 mask → additive bias [B, 1, 1, S] (None without a mask).

    Built whether or not anything is padded: adding zeros changes nothing, and testing `mask.all()` would be a host
    sync and a `torch.compile` graph break.
    """
    if attention_mask is None:
        return None
    return _bias_from_visibility(attention_mask.bool()[:, None, None, :], dtype)


def _check_length(length: int, limit: int, what: str, fix: str) -> None:
    if length > limit:
        raise ValueError(f"{what} has {length} positions but this model has position embeddings for {limit}; {fix}")


class BangEncoder(BangPreTrainedModel):
    """`bang_AR_NAR_mixed.py::TransformerEncoder` (docs/architecture.md#model): tokens + learned positions, LN, post-LN layers."""

    def __init__(self, config: BangConfig, embed_tokens: nn.Embedding | None = None):
        super().__init__(config)
        self.embed_tokens = (
            embed_tokens
            if embed_tokens is not None
            else nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        )
        # 513 rows for 512 positions: row 0 is the pad row (docs/architecture.md#model).
        self.embed_positions = nn.Embedding(config.encoder_max_positions + 1, config.d_model, padding_idx=0)
        self.emb_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList([BangEncoderLayer(config) for _ in range(config.encoder_layers)])
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutput | tuple:
        output_attentions, output_hidden_states = _output_flags(self.config, output_attentions, output_hidden_states)
        _check_length(
            input_ids.size(1),
            self.config.encoder_max_positions,
            "The source",
            f"truncate sources, e.g. tokenizer(..., truncation=True, max_length={self.config.encoder_max_positions}).",
        )
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id).long()
        # Positions from the mask: real tokens get 1..n whatever the padding side (docs/architecture.md#hf-prophetnet).
        hidden = self.embed_tokens(input_ids) + self.embed_positions(make_positions(attention_mask))
        hidden = _dropout(self.emb_layer_norm(hidden), self.config.dropout, self.training)
        hidden = hidden * attention_mask.unsqueeze(-1).to(hidden.dtype)  # the original zeroes pad rows
        bias = _key_padding_bias(attention_mask, hidden.dtype)
        all_hidden = (hidden,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            if output_attentions:
                hidden, probs = layer(hidden, bias, output_attentions=True)
                all_attentions += (probs,)
            else:
                hidden = layer(hidden, bias)
            if output_hidden_states:
                all_hidden += (hidden,)
        output = BaseModelOutput(last_hidden_state=hidden, hidden_states=all_hidden, attentions=all_attentions)
        return output if _use_return_dict(self.config, return_dict) else output.to_tuple()


def _use_return_dict(config: BangConfig, return_dict: bool | None) -> bool:
    return config.return_dict if return_dict is None else return_dict


def _output_flags(config: BangConfig, attentions: bool | None, hidden_states: bool | None) -> tuple[bool, bool]:
    """`output_attentions` / `output_hidden_states` with the config's values as defaults (Transformers convention)."""
    return (
        bool(config.output_attentions if attentions is None else attentions),
        bool(config.output_hidden_states if hidden_states is None else hidden_states),
    )


class BangDecoder(BangPreTrainedModel):
    """`bang_AR_NAR_mixed.py::NgramTransformerDecoder` (docs/architecture.md#ar-mode, NAR mode) for both modes."""

    def __init__(self, config: BangConfig, embed_tokens: nn.Embedding | None = None):
        super().__init__(config)
        self.embed_tokens = (
            embed_tokens
            if embed_tokens is not None
            else nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        )
        # 514 rows for 512 positions: the predicting / [MASK] stream looks up pos + 1 (docs/architecture.md#model).
        self.embed_positions = nn.Embedding(config.max_position_embeddings + 2, config.d_model, padding_idx=0)
        self.ngram_input_embed = nn.Embedding(
            config.ngram, config.d_model
        )  # e_ng, the [MASK]-like vector (docs/architecture.md)
        self.emb_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList([BangDecoderLayer(config, i) for i in range(config.decoder_layers)])
        # Incremental AR steps reuse their (bias, buckets) across steps and generate calls: ~15 small ops per step.
        self._step_masks: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._last_encoder_bias: tuple | None = None
        self.post_init()

    def _ar_masks(self, num_new: int, num_past: int, device: torch.device, dtype: torch.dtype):
        """`_ar_attention_mask`, memoised for one-token steps (at most max_position_embeddings entries per
        device and dtype; teacher-forced chunks and compiled graphs build theirs)."""
        if num_new != 1 or torch.compiler.is_compiling():
            return _ar_attention_mask(num_new, num_past, self.config, device, dtype)
        key = (num_past, device, dtype)
        masks = self._step_masks.get(key)
        if masks is None:
            masks = self._step_masks[key] = _ar_attention_mask(1, num_past, self.config, device, dtype)
        return masks

    def _encoder_bias(self, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        """`_key_padding_bias`, reused while decoding steps pass the same unchanged mask tensor."""
        if mask is None or torch.compiler.is_compiling() or mask.is_inference():  # inference tensors lack _version
            return _key_padding_bias(mask, dtype)
        last = self._last_encoder_bias
        if last is not None and last[0] is mask and last[1] == mask._version and last[2].dtype == dtype:
            return last[2]
        bias = _key_padding_bias(mask, dtype)
        self._last_encoder_bias = (mask, mask._version, bias)
        return bias

    def _ar_stream_inputs(self, input_ids: torch.Tensor, num_past: int) -> torch.Tensor:
        """docs/architecture.md#ar-mode: main stream `E[y_i] + P[pos_i]`, predicting stream `e_ng + P[pos_i + 1]` → [B, 2T, D].

        pos_i = num_past + i + 1 for every slot. fairseq gives right-padding slots position 0 instead, but those
        slots come after every real one, are invisible to them (causal) and are never scored, so real positions
        are identical (golden parity); numbering by index keeps a teacher-forced chunk equal to step-by-step
        decoding even when a pad id is decoded mid-sequence (greedy generate, `nar_verify`).
        """
        positions = num_past + 1 + torch.arange(input_ids.size(1), device=input_ids.device).expand_as(input_ids)
        main_stream = self.embed_tokens(input_ids) + self.embed_positions(positions)
        predict_stream = self.ngram_input_embed.weight[0] + self.embed_positions(positions + 1)
        return torch.cat([main_stream, predict_stream], dim=1)

    def _nar_stream_inputs(self, slot_mask: torch.Tensor, glance_ids: torch.Tensor | None = None) -> torch.Tensor:
        """docs/architecture.md#nar-mode: slot i gets `e_ng + P[pos_i + 1]` (= P[i+2] for real slots, P[1] for pads) → [B, T, D].

        No token embedding is looked up: only the pad pattern (the length) reaches the decoder. Glancing training
        (Qian et al. 2021; training only, not in the original) passes `glance_ids` [B, T]: where it holds a token id
        (>= 0), that slot gets the token's embedding `E[y_i]` instead of `e_ng`; -100 keeps the [MASK] vector.
        """
        positions = self.embed_positions(make_positions(slot_mask) + 1)
        if glance_ids is None:
            return self.ngram_input_embed.weight[0] + positions
        glanced = glance_ids.ge(0).unsqueeze(-1)
        tokens = self.embed_tokens(glance_ids.clamp_min(0))
        return torch.where(glanced, tokens, self.ngram_input_embed.weight[0].expand_as(tokens)) + positions

    def _n_stream_inputs(
        self,
        input_ids: torch.Tensor,
        num_streams: int,
        cache: EncoderDecoderCache | None,
        positions: torch.Tensor | None,
        visible: torch.Tensor | None,
        source_length: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int | None]:
        """Rows, visibility, distances and `num_main` of the n-stream mode (see `forward`).

        Main row j is `E[prev_j] + P[p_j]`, every [MASK] slot `e_ng + P[p_t + 1]` (the same in every stream,
        docs/pretraining.md); p_j = j + 1 (fine-tuning positions, counted after the cached rows) or `positions`."""
        batch_size, num_rows = input_ids.shape
        device = input_ids.device
        if cache is not None:  # one semi-NAR step: new main rows (cached) + k slots of group g = P + m - 1
            num_past = cache.get_seq_length()
            _check_length(
                num_past + num_rows + num_streams,
                self.config.max_position_embeddings + 1,  # slots look up pos + 1 in a table of max + 2 rows
                "The semi-NAR decoder",
                "generate fewer tokens (max_new_tokens).",
            )
            main_positions = num_past + 1 + torch.arange(num_rows, device=device)
            slot_positions = num_past + num_rows + 1 + torch.arange(num_streams, device=device)
            main = self.embed_tokens(input_ids) + self.embed_positions(main_positions)
            slots = self.ngram_input_embed.weight[0] + self.embed_positions(slot_positions)
            hidden = torch.cat([main, slots.expand(batch_size, -1, -1)], dim=1)
            pattern, distance = semi_nar_step_pattern(num_rows, num_past, num_streams, device)
            return hidden, pattern if visible is None else visible, distance, num_rows
        # The highest [MASK] slot position (pos + 1) must have an embedding. Document positions index the source,
        # so its length bounds them without reading the tensor (no host sync).
        if positions is None:
            row_positions = None  # batch-independent buckets
            positions = torch.arange(1, num_rows + 1, device=device).expand(batch_size, -1)
            highest, what = num_rows + 1, f"target has {num_rows} rows"
        else:
            positions = row_positions = positions.to(device)
            highest, what = source_length, f"source has {source_length} tokens"
        if highest > self.config.max_position_embeddings:
            raise ValueError(
                f"The n-stream {what}, so its [MASK] slots need decoder position {highest}, but the model has "
                f"max_position_embeddings={self.config.max_position_embeddings}; use shorter chunks or fewer spans."
            )
        main = self.embed_tokens(input_ids) + self.embed_positions(positions)
        slots = self.ngram_input_embed.weight[0] + self.embed_positions(positions + 1)
        hidden = torch.cat([main, slots.repeat(1, num_streams, 1)], dim=1)
        pattern, distance = cross_stream_pattern(num_rows, num_streams, device, row_positions)
        return hidden, pattern if visible is None else visible, distance, None

    def forward(
        self,
        input_ids: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        slot_mask: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        mode: Literal["ar", "nar", "n_stream"] = "ar",
        glance_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        num_streams: int | None = None,
        positions: torch.Tensor | None = None,
        visible: torch.Tensor | None = None,
    ) -> BangDecoderOutput | tuple:
        """AR: `input_ids` = decoder input (`[SEP] y1..`), with `cache` for incremental steps.
        NAR: `slot_mask` [B, T] (1 = real slot) gives the length; `input_ids`, if given instead, only its pad pattern;
        with neither, the decoder gets as many slots as the padded source (the original generator's rule);
        `glance_ids` [B, T] (glancing training) feeds token embeddings to the slots where it is >= 0.
        `"n_stream"`: the cross-stream visible decoder of pretraining and semi-NAR (docs/pretraining.md), main rows
        `input_ids` (prev tokens) plus `num_streams` [MASK] streams. Without `cache`, teacher-forced: rows
        `[main (T), P_0 (T), ..., P_{n-1} (T)]` under `cross_stream_pattern` (`positions` [B, T]: document
        positions of the main rows; `visible` overrides the pattern); `last_hidden_state` is the slot rows [B, nT, D].
        With `cache` (a semi-NAR step): the new main rows join the cache and `num_streams` = k slots of the next
        group follow them (`semi_nar_step_pattern`); `last_hidden_state` is those k slots.

        The AR main stream's last-layer output is discarded by the original, so the last layer computes it only
        with `output_hidden_states=True`. Attentions are those of the logit-producing stream's queries."""
        output_attentions, output_hidden_states = _output_flags(self.config, output_attentions, output_hidden_states)
        dtype = self.emb_layer_norm.weight.dtype
        device = encoder_hidden_states.device
        if mode == "ar":
            num_past = cache.get_seq_length() if cache is not None else 0
            num_new = input_ids.size(1)
            _check_length(
                num_past + num_new,
                self.config.max_position_embeddings,
                "The AR decoder input",
                "generate fewer tokens (max_new_tokens) or shorten the labels.",
            )
            hidden = self._ar_stream_inputs(input_ids, num_past)
            self_attn_bias, buckets = self._ar_masks(num_new, num_past, device, dtype)
            num_main = split = num_new  # rows before `split`: the main stream
        elif mode == "nar":
            if slot_mask is None and input_ids is None:  # the original generator's rule: as many slots as the source
                slot_mask = torch.ones(encoder_hidden_states.shape[:2], dtype=torch.long, device=device)
            elif slot_mask is None:
                slot_mask = input_ids.ne(self.config.pad_token_id)
            _check_length(
                slot_mask.size(1),
                self.config.max_position_embeddings,
                "The NAR decoder",
                "decode fewer slots (max_new_tokens) or shorten the labels.",
            )
            hidden = self._nar_stream_inputs(slot_mask, glance_ids)
            self_attn_bias, buckets = _nar_attention_mask(slot_mask.size(1), self.config, device, dtype)
            num_main, cache, split = None, None, 0
        elif mode == "n_stream":
            if num_streams is None or num_streams < 1:
                raise ValueError(f"mode='n_stream' needs num_streams >= 1, got {num_streams!r}.")
            hidden, visible, distance, num_main = self._n_stream_inputs(
                input_ids, num_streams, cache, positions, visible, encoder_hidden_states.size(1)
            )
            self_attn_bias = _bias_from_visibility(visible, dtype)
            buckets = relative_position_bucket(distance, self.config.num_buckets, self.config.relative_max_distance)
            split = input_ids.size(1)
        else:
            raise ValueError(f"mode must be one of {(*FORWARD_MODES, 'n_stream')}, got {mode!r}.")

        hidden = _dropout(self.emb_layer_norm(hidden), self.config.dropout, self.training)
        encoder_bias = self._encoder_bias(encoder_attention_mask, hidden.dtype)
        states, main_states = ((hidden[:, split:],), (hidden[:, :split],)) if output_hidden_states else (None, None)
        self_attentions, cross_attentions = ((), ()) if output_attentions else (None, None)
        last, query_start = len(self.layers) - 1, 0
        for index, layer in enumerate(self.layers):
            query_start = split if index == last and not output_hidden_states else 0
            out = layer(
                hidden,
                self_attn_bias,
                buckets,
                encoder_hidden_states,
                encoder_bias,
                num_main=num_main,
                cache=cache,
                output_attentions=bool(output_attentions),
                query_start=query_start,
            )
            if output_attentions:
                hidden, self_probs, cross_probs = out
                keep = split - query_start  # first row of the logit-producing stream in this layer's queries
                self_attentions += (self_probs[:, :, keep:],)
                cross_attentions += (cross_probs[:, :, keep:],)
            else:
                hidden = out
            if output_hidden_states:
                states += (hidden[:, split:],)
                main_states += (hidden[:, :split],)

        skipped = query_start > 0  # the last layer returned the logit-producing stream only
        output = BangDecoderOutput(
            last_hidden_state=hidden if skipped else hidden[:, split:],
            main_stream_hidden_state=hidden[:, :split] if split and not skipped and output_hidden_states else None,
            cache=cache,
            hidden_states=states,
            main_stream_hidden_states=main_states if split else None,
            attentions=self_attentions,
            cross_attentions=cross_attentions,
        )
        return output if _use_return_dict(self.config, return_dict) else output.to_tuple()


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


class BangModel(BangPreTrainedModel):
    """Bare BANG encoder–decoder; `forward(..., mode="ar" | "nar")` returns the logit-producing decoder states."""

    _tied_weights_keys = {
        "encoder.embed_tokens.weight": "shared.weight",
        "decoder.embed_tokens.weight": "shared.weight",
    }

    def __init__(self, config: BangConfig):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        # Parameter tying through `_tied_weights_keys` (not one shared module): loading then initialises a missing
        # `shared.weight` instead of leaving it on the meta device.
        self.encoder = BangEncoder(config)
        self.decoder = BangDecoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.shared = value
        self.encoder.embed_tokens = value
        self.decoder.embed_tokens = value

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")  # Transformers' old name for `cache`
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        mode: Mode = "ar",
        decoder_glance_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BangSeq2SeqModelOutput | tuple:
        output_attentions, output_hidden_states = _output_flags(self.config, output_attentions, output_hidden_states)
        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("Pass input_ids (the source) or precomputed encoder_outputs.")
            encoder_outputs = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                return_dict=True,
            )
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        if attention_mask is None and input_ids is not None:
            attention_mask = input_ids.ne(self.config.pad_token_id).long()

        if mode == "ar":
            if decoder_input_ids is None:
                raise ValueError("AR mode needs decoder_input_ids (or labels on BangForConditionalGeneration).")
            use_cache = use_cache if use_cache is not None else self.config.use_cache
            if use_cache and cache is None:
                cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
            if not use_cache:
                cache = None
        else:
            cache = None
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_attention_mask=attention_mask,
            slot_mask=decoder_attention_mask,
            cache=cache,
            mode=mode,
            glance_ids=decoder_glance_ids if mode == "nar" else None,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        output = BangSeq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            cache=decoder_outputs.cache,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
            main_stream_hidden_state=decoder_outputs.main_stream_hidden_state,
            decoder_main_stream_hidden_states=decoder_outputs.main_stream_hidden_states,
        )
        return output if _use_return_dict(self.config, return_dict) else output.to_tuple()


class BangForConditionalGeneration(BangPreTrainedModel, BangGenerationMixin):
    """BANG with the tied LM head: `forward(..., mode=...)` for training/scoring, `generate(..., mode=...)`."""

    _tied_weights_keys = {"lm_head.weight": "model.shared.weight"}

    def __init__(self, config: BangConfig):
        super().__init__(config)
        self.model = BangModel(config)
        self.lm_head = nn.Linear(
            config.d_model, config.vocab_size, bias=False
        )  # tied, no bias (docs/architecture.md#model)
        self.post_init()

    def get_encoder(self, modality: str | None = None) -> BangEncoder:
        return self.model.encoder

    def get_decoder(self) -> BangDecoder:
        return self.model.decoder

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")  # Transformers' old name for `cache`
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache: Cache | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        mode: Literal["ar", "nar", "semi_nar"] = "ar",
        smoothing_eps: float | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        decoder_glance_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        block_size: int | None = None,
    ) -> BangSeq2SeqLMOutput | tuple:
        r"""
        Args:
            labels (`[B, T]`): targets `y1..yn [SEP]`, right-padded with -100 (pad ids are treated as -100 too).
                AR: `decoder_input_ids` default to the labels shifted right with `[SEP]` first.
                NAR: the decoder has T slots; real slots are the labelled ones (only the pad pattern matters).
            decoder_attention_mask (`[B, T]`): NAR only: 1 for real slots. Without labels or this mask, NAR takes
                the pad pattern of `decoder_input_ids`, and without those too as many slots as the padded source
                (the original NAR generator's rule).
            mode (`"ar"` or `"nar"`): which decoder stream produces the logits (`"semi_nar"`: see below).
            smoothing_eps: ε of a label-smoothed loss; default 0, plain cross-entropy (the Transformers convention).
                BANG's criterion uses ε = 0.1 (`config.label_smoothing`): trainers pass it, e.g. the SPMD trainer's
                `label_smoothing_factor`. (Not named `label_*`: Trainer treats every forward argument containing
                "label" as a label column.)
            num_items_in_batch: divide the summed loss by this (Trainer convention) instead of the local count.
            decoder_glance_ids (`[B, T]`): NAR only, glancing training: slots holding a token id (>= 0) get that
                token's embedding instead of the [MASK] vector; -100 elsewhere. Not part of the original BANG.

            output_attentions / output_hidden_states: per-layer tuples (decoder fields: the logit-producing
                stream; AR main stream: `main_stream_hidden_state`, `decoder_main_stream_hidden_states`).
            return_dict: False returns a tuple. Unknown keyword arguments raise TypeError.

            block_size: `mode="semi_nar"` only (training): k, the tokens per semi-NAR step; default the generation
                config's `block_size`.

        `logits[:, t]` predicts `labels[:, t]` in both modes. `mode="semi_nar"` is the semi-NAR fine-tuning objective
        (`semi_nar_forward`: k [MASK] streams, `target_idx = t mod k`) and returns its `BangPreTrainingOutput`.
        """
        smoothing_eps = 0.0 if smoothing_eps is None else smoothing_eps
        if mode == "semi_nar":
            return self.semi_nar_forward(
                input_ids=input_ids, attention_mask=attention_mask, labels=labels, encoder_outputs=encoder_outputs,
                block_size=block_size, smoothing_eps=smoothing_eps,
            )  # fmt: skip
        if block_size is not None:
            raise ValueError(f"block_size applies to mode='semi_nar' only, got it with mode={mode!r}.")
        if mode not in FORWARD_MODES:
            raise ValueError(
                f"forward() runs one stream: mode must be one of {FORWARD_MODES}, got {mode!r} "
                "('nar_verify' exists only in generate())."
            )
        if labels is not None:
            labels = labels.masked_fill(labels == self.config.pad_token_id, -100)
            use_cache = False
            if mode == "ar" and decoder_input_ids is None:
                decoder_input_ids = shift_tokens_right(
                    labels, self.config.pad_token_id, self.config.decoder_start_token_id
                )
            if mode == "nar" and decoder_attention_mask is None and decoder_input_ids is None:
                decoder_attention_mask = labels.ne(-100).long()

        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask if mode == "nar" else None,
            encoder_outputs=encoder_outputs,
            cache=cache,
            use_cache=use_cache,
            mode=mode,
            decoder_glance_ids=decoder_glance_ids,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.lm_head(outputs.last_hidden_state)

        loss = None
        if labels is not None:
            loss = label_smoothed_nll_loss(logits, labels, smoothing_eps, num_items_in_batch)
        output = BangSeq2SeqLMOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            decoder_hidden_states=outputs.decoder_hidden_states,
            decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            encoder_attentions=outputs.encoder_attentions,
            main_stream_hidden_state=outputs.main_stream_hidden_state,
            decoder_main_stream_hidden_states=outputs.decoder_main_stream_hidden_states,
        )
        return output if _use_return_dict(self.config, return_dict) else output.to_tuple()

    def n_stream_forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        target_idx: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        num_streams: int | None = None,
        stream_weights: torch.Tensor | list[float] | None = None,
        smoothing_eps: float = 0.0,
        block_size: int | None = None,
        return_logits: bool = False,
        positions: torch.Tensor | None = None,
        visible: torch.Tensor | None = None,
    ) -> tuple[BangPreTrainingOutput, BaseModelOutput, torch.Tensor | None]:
        """The n-stream objective (docs/pretraining.md): the cross-stream visible decoder and its loss.

        Args:
            input_ids, attention_mask: the (span-masked) source.
            decoder_input_ids (`[B, T]`): main-stream tokens, the token before each target (`prev`); defaults to
                `labels` shifted right with `[SEP]` first (one span = the whole target).
            labels (`[B, T]`): targets, -100 (or pad) where unsupervised.
            target_idx (`[B, T]`): index of each target inside its span; stream s is supervised where it is >= s.
                Default: `arange(T) % block_size` with `block_size`, else `arange(T)` (the target is one span).
            num_streams: n, default `config.num_streams`.
            stream_weights: one weight per stream (default 1 each: the released criterion).
            smoothing_eps: ε of the label-smoothed NLL (default 0: cross-entropy).
            return_logits: also return every slot's logits [B, n, T, V] and the last layer's rows.
            positions (`[B, T]`): each target's prev-token position in the document; None: positions 1..T.
            visible: overrides the attention pattern (tests).

        The loss sums the label-smoothed NLL over all supervised (stream, position) pairs, stream s weighted by
        `stream_weights[s]`, divided by their number. Returns `(output, encoder_outputs, attention_mask)`.
        """
        config = self.config
        num_streams = num_streams or config.num_streams
        if labels is not None:
            labels = labels.masked_fill(labels == config.pad_token_id, -100)
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("The n-stream forward needs decoder_input_ids (prev tokens) or labels.")
            decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("Pass input_ids (the masked source) or precomputed encoder_outputs.")
            encoder_outputs = self.get_encoder()(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(last_hidden_state=encoder_outputs[0])
        if attention_mask is None and input_ids is not None:
            attention_mask = input_ids.ne(config.pad_token_id).long()

        decoded = self.get_decoder()(
            input_ids=decoder_input_ids, encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_attention_mask=attention_mask, mode="n_stream", num_streams=num_streams, positions=positions,
            visible=visible, output_hidden_states=return_logits, output_attentions=False, return_dict=True,
        )  # fmt: skip
        batch_size, num_rows = decoder_input_ids.shape
        slots = decoded.last_hidden_state.view(batch_size, num_streams, num_rows, -1)  # [B, n, T, D]
        output = BangPreTrainingOutput()
        if return_logits:
            output.logits = self.lm_head(slots)
            output.hidden_states = torch.cat([decoded.main_stream_hidden_state, decoded.last_hidden_state], dim=1)
        if labels is None:
            return output, encoder_outputs, attention_mask

        if target_idx is None:
            target_idx = torch.arange(num_rows, device=labels.device).expand_as(labels)
            if block_size:
                target_idx = target_idx % block_size
        supervised = stream_supervision(labels, target_idx, num_streams)  # [B, n, T]
        targets = labels[:, None, :].expand_as(supervised)[supervised]  # [N]
        stream_of = torch.arange(num_streams, device=labels.device)[None, :, None].expand_as(supervised)[supervised]
        logits = output.logits[supervised] if return_logits else self.lm_head(slots[supervised])  # [N, V]
        losses = F.cross_entropy(logits.float(), targets, label_smoothing=smoothing_eps, reduction="none")  # [N]
        sums = losses.new_zeros(num_streams).index_add(0, stream_of, losses)
        counts = torch.bincount(stream_of, minlength=num_streams)
        weights = (
            torch.ones(num_streams, device=sums.device)
            if stream_weights is None
            else torch.as_tensor(stream_weights, dtype=sums.dtype, device=sums.device)
        )
        if weights.shape != (num_streams,):
            raise ValueError(f"stream_weights needs one weight per stream ({num_streams}), got {tuple(weights.shape)}.")
        output.loss = (weights * sums).sum() / counts.sum().clamp(min=1)
        output.stream_losses = sums.detach() / counts  # nan (0/0) marks a stream without supervision in this batch
        output.stream_counts = counts
        return output, encoder_outputs, attention_mask

    def semi_nar_forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        block_size: int | None = None,
        smoothing_eps: float = 0.0,
        return_logits: bool = False,
    ) -> BangPreTrainingOutput:
        """Semi-NAR fine-tuning (docs/decoding.md): the n-stream objective on (source, target) pairs with n = k =
        `block_size` streams and `target_idx = t mod k`, so slot `P_s@t` learns to predict `target[t]` from the
        targets before its block, as `generate(mode="semi_nar", block_size=k)` asks it to. Every stream has weight
        1; the loss is the mean over all supervised (stream, position) pairs. This is `forward(mode="semi_nar")`
        and the loss of `SPMDTrainingArguments(train_mode="semi_nar")`. `block_size` defaults as in
        `resolve_block_size`."""
        block_size = resolve_block_size(self, block_size)
        if labels is None:
            raise ValueError("Semi-NAR training needs labels (the target of each source).")
        return self.n_stream_forward(
            input_ids=input_ids, attention_mask=attention_mask, labels=labels, encoder_outputs=encoder_outputs,
            num_streams=block_size, block_size=block_size, smoothing_eps=smoothing_eps, return_logits=return_logits,
        )[0]  # fmt: skip

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)


__all__ = [
    "BangDecoderOutput",
    "BangPreTrainingOutput",
    "BangSeq2SeqLMOutput",
    "BangSeq2SeqModelOutput",
    "BangForConditionalGeneration",
    "BangModel",
    "BangPreTrainedModel",
    "BangNARGenerateOutput",
    "ForcedEosKeepScoreLogitsProcessor",
    "constrained_argmax",
    "cross_stream_pattern",
    "nar_candidates",
    "nar_scan",
    "label_smoothed_nll_loss",
    "make_positions",
    "nar_cut_and_dedup",
    "relative_position_bucket",
    "semi_nar_step_pattern",
    "shift_tokens_right",
    "stream_supervision",
]
