"""PyTorch BANG: one encoder–decoder, two decoding modes (Qi et al. 2021; spec = shared/docs/bang_spec.md).

- `mode="ar"`: the ProphetNet predicting stream with ngram = 1 (spec §2.5). Logits come from the predicting stream;
  the main stream only supplies keys and values. Incremental decoding caches the main stream.
- `mode="nar"`: every decoder slot is `e_ng + P[pos+1]` with causal self-attention among slots and main-stream
  relative buckets (spec §2.6). One pass; position t never depends on later slots or on the decoder length.

Every AR/NAR difference sits in three places: the stream-input builders (`_ar_stream_inputs`,
`_nar_stream_inputs`), the mask builders (`_ar_attention_mask`, `_nar_attention_mask`) and the generate
dispatch (`_generate_ar`, `_generate_nar`).

This file imports only torch, transformers and `.configuration_bang`, so `save_pretrained` can copy it next to
a checkpoint for `trust_remote_code=True` loading.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.generation import LogitsProcessor, LogitsProcessorList
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput, Seq2SeqModelOutput
from transformers.utils import ModelOutput

from .configuration_bang import FORWARD_MODES, GENERATION_MODES, BangConfig

Mode = Literal["ar", "nar"]


# ---------------------------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------------------------


def relative_position_bucket(distance: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Unidirectional relative bucket of `distance = query_pos - key_pos` (spec §2.2).

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

    Works for left and right padding (spec §1.3); `offset` is the number of cached decoder positions.
    """
    is_token = is_token.long()
    return (torch.cumsum(is_token, dim=1) + offset) * is_token


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Labels `y1..yn [SEP] (-100)*` → decoder input `[SEP] y1..yn pad*` (fairseq `move_eos_to_beginning`, spec §3.1)."""
    shifted = labels.new_zeros(labels.shape)
    shifted[:, 1:] = labels[:, :-1].clone()
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


def _bias_from_visibility(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention bias: 0 where visible, the dtype's minimum elsewhere (finite, so no NaN rows)."""
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill(
        ~visible, torch.finfo(dtype).min
    )


def _ar_attention_mask(
    num_new: int, num_past: int, config: BangConfig, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """AR self-attention pattern over queries `[main (T), predict (T)]` and keys `[main (P+T), predict (T)]`.

    Spec §2.4-2.5 and §2.9 (`cal_finetune_relative_positions`, `ngram_attention_bias`): the main query at absolute
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
    """NAR self-attention pattern (spec §2.6, `buffered_future_mask` + main-stream buckets).

    [MASK] slot i sees slots j <= i with bucket(i - j). Returns `(bias [T, T], buckets [T, T])`.
    """
    pos = torch.arange(num_slots, device=device)
    distance = pos[:, None] - pos[None, :]  # [T, T]
    buckets = relative_position_bucket(distance, config.num_buckets, config.relative_max_distance)
    return _bias_from_visibility(distance >= 0, dtype), buckets


def label_smoothed_nll_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """`(1-ε)·NLL + ε/V·Σ_v −log p_v` summed over labelled tokens, divided by their count (spec §3.2-3.3).

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


def nar_scan(row: list[int], sep_token_id: int, cls_token_id: int | None = None, dedup: bool = True) -> list[int]:
    """One row of the original first post-processing pass (`post_processed_nar.py`, spec §4.2), on ids.

    A leading `[SEP]` is skipped; a `[SEP]` after something was kept ends the output; `[CLS]` is dropped; with
    `dedup`, a token equal to the previously *kept* token is dropped. `cls_token_id=None, dedup=False` only cuts.
    """
    kept: list[int] = []
    for token in row:
        if token == sep_token_id:
            if kept:
                break
            continue
        if token == cls_token_id or (dedup and kept and token == kept[-1]):
            continue
        kept.append(token)
    return kept


def nar_cut_and_dedup(
    tokens: torch.Tensor, sep_token_id: int, cls_token_id: int | None, pad_token_id: int, dedup: bool = True
) -> torch.Tensor:
    """Id-level first pass of the original NAR post-processing (`nar_scan` per row) on [B, L] ids.

    The kept tokens are left-aligned and followed by one `[SEP]`, then pads. `dedup=False` only cuts (and drops
    `[CLS]`). The word-level second pass (after `##` merging) lives in `bang_nar.postprocess`.
    """
    rows = [nar_scan(row, sep_token_id, cls_token_id, dedup) + [sep_token_id] for row in tokens.tolist()]
    out = tokens.new_full((tokens.size(0), max(len(r) for r in rows)), pad_token_id)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=tokens.dtype)
    return out


def constrained_argmax(
    logits: torch.Tensor, no_repeat_ngram_size: int = 0, suppress_repeats: bool = False
) -> torch.Tensor:
    """Left-to-right argmax over NAR logits [B, L, V] that never emits a banned token (no model pass).

    Banned at slot t: the token chosen at t-1 (`suppress_repeats`), and every token that would complete an n-gram
    already emitted in the row (`no_repeat_ngram_size` = n, as HF's `NoRepeatNGramLogitsProcessor`). Without
    options this is the plain per-slot argmax of the original generator.
    """
    if not no_repeat_ngram_size and not suppress_repeats:
        return logits.argmax(-1)
    batch_size, length, _ = logits.shape
    n = no_repeat_ngram_size
    seen: list[dict[tuple[int, ...], set[int]]] = [{} for _ in range(batch_size)]
    tokens = torch.zeros(batch_size, length, dtype=torch.long, device=logits.device)
    history: list[list[int]] = [[] for _ in range(batch_size)]
    for t in range(length):
        scores = logits[:, t].clone()  # [B, V]
        for b in range(batch_size):
            banned = set()
            if suppress_repeats and history[b]:
                banned.add(history[b][-1])
            if n and len(history[b]) >= n - 1:
                banned |= seen[b].get(tuple(history[b][len(history[b]) - n + 1 :]), set())
            if banned:
                scores[b, list(banned)] = -math.inf
        chosen = scores.argmax(-1)
        tokens[:, t] = chosen
        for b, token in enumerate(chosen.tolist()):
            history[b].append(token)
            if n and len(history[b]) >= n:
                ngram = tuple(history[b][-n:])
                seen[b].setdefault(ngram[:-1], set()).add(ngram[-1])
    return tokens


def _next_index(row: list[int], token: int, start: int, last: int) -> int:
    """Index of the first `token` in `row[start:last + 1]`, or `last` when there is none."""
    for index in range(start, last + 1):
        if row[index] == token:
            return index
    return last


def nar_candidates(
    logits: torch.Tensor, tokens: torch.Tensor, num_candidates: int, sep_token_id: int
) -> torch.Tensor:
    """Raw NAR candidates [B, K, L] around `tokens` (the argmax, first): length variants and substitutions.

    - length variants: cut at each of the slots where `[SEP]` is most probable (earlier `[SEP]`s are replaced by
      their best other token, so the candidate really ends there);
    - substitutions: the least confident slot before the argmax cut takes its second-best token.
    Half of the K-1 extra candidates (rounded up) are length variants. Rows may repeat when a row has fewer
    distinct variants; the rescoring tie-break keeps the first, i.e. the plainer candidate.
    """
    log_probs = logits.float().log_softmax(-1)  # [B, L, V]
    batch_size, length = tokens.shape
    non_sep = log_probs.clone()
    non_sep[..., sep_token_id] = -math.inf
    best_other, second = non_sep.topk(2, dim=-1).indices.unbind(-1)  # [B, L] each
    num_extra = num_candidates - 1
    num_length = min((num_extra + 1) // 2, length)
    candidates = [tokens]
    sep_slots = log_probs[..., sep_token_id].topk(num_length, dim=-1).indices  # [B, n_len]
    slot_index = torch.arange(length, device=tokens.device)
    for j in range(num_length):
        cut = sep_slots[:, j : j + 1]  # [B, 1]
        variant = torch.where(tokens.eq(sep_token_id) & (slot_index < cut), best_other, tokens)
        candidates.append(torch.where(slot_index == cut, torch.full_like(tokens, sep_token_id), variant))
    num_subs = num_extra - num_length
    if num_subs > 0:
        is_sep = tokens.eq(sep_token_id).int()
        before_cut = (is_sep.cumsum(-1) - is_sep) == 0  # slots before the first [SEP]
        confidence = log_probs.max(-1).values.masked_fill(~before_cut, math.inf)
        weakest = confidence.topk(min(num_subs, length), dim=-1, largest=False).indices  # [B, n_sub]
        for j in range(num_subs):
            slot = weakest[:, min(j, weakest.size(1) - 1) : min(j, weakest.size(1) - 1) + 1]
            replaced = torch.where(tokens.gather(1, slot).eq(best_other.gather(1, slot)), second.gather(1, slot), best_other.gather(1, slot))
            candidates.append(torch.where(slot_index == slot, replaced, tokens))
    return torch.stack(candidates, dim=1)


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class BangDecoderOutput(ModelOutput):
    """Decoder output. `last_hidden_state` is the stream that produces logits: the predicting stream (AR) or the
    [MASK] stream (NAR). `main_stream_hidden_state` is the AR main stream, which the original discards."""

    last_hidden_state: torch.Tensor | None = None
    main_stream_hidden_state: torch.Tensor | None = None
    cache: Cache | None = None


@dataclass
class BangNARGenerateOutput(ModelOutput):
    """`generate(mode="nar", return_dict_in_generate=True)` output.

    - `sequences` [B, L']: post-processed ids (first pass of spec §4.2; raw when `nar_postprocess=False`);
    - `raw_sequences` [B, L]: the argmax at every decoder slot, as the original generator returns it;
    - `scores` [B, L]: the raw max logit per slot (the original `positional_scores`, not a log-prob);
    - `logits` [B, L, V]: full logits, only with `output_logits=True`;
    - `candidates` [B, K, L''] and `candidate_scores` [B, K]: with `num_candidates` > 1, every post-processed
      candidate and its length-normalised AR-stream log-probability (the best one is `sequences`);
    - `ar_passes` [B]: `mode="nar_verify"` only, AR-stream passes each row needed (greedy AR needs one per token).
    """

    sequences: torch.Tensor | None = None
    raw_sequences: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    candidates: torch.Tensor | None = None
    candidate_scores: torch.Tensor | None = None
    ar_passes: torch.Tensor | None = None


# ---------------------------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------------------------


def eager_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None,
    dropout: float,
    training: bool,
) -> torch.Tensor:
    """softmax(q·kᵀ + bias)·v with an fp32 softmax (fairseq `utils.softmax(..., onnx_trace=False)`).

    Shapes: q [B, H, Lq, D] (already scaled), k/v [B, H, Lk, D], bias broadcastable to [B, H, Lq, Lk].
    """
    scores = torch.matmul(query, key.transpose(-1, -2))  # [B, H, Lq, Lk]
    if bias is not None:
        scores = scores + bias
    probs = F.softmax(scores.float(), dim=-1).to(query.dtype)
    probs = F.dropout(probs, p=dropout, training=training)
    return torch.matmul(probs, value)  # [B, H, Lq, D]


class BangAttention(nn.Module):
    """Encoder self-attention and decoder cross-attention: fairseq 0.9 `MultiheadAttention` (spec §1.4-1.5).

    Separate q/k/v/out projections with bias; q (bias included) scaled by head_dim**-0.5.
    """

    def __init__(self, config: BangConfig, num_heads: int, layer_idx: int | None = None):
        super().__init__()
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

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_bias: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
    ) -> torch.Tensor:
        """Self-attention when `key_value_states` is None, else cross-attention (keys/values cached once)."""
        query = self._heads(self.q_proj(hidden_states) * self.scaling)
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
        out = eager_attention(query, key, value, attention_bias, self.dropout, self.training)
        out = out.transpose(1, 2).reshape(*hidden_states.shape[:2], -1)  # [B, H, L, D] -> [B, L, H*D]
        return self.out_proj(out)


class BangNgramSelfAttention(BangAttention):
    """Decoder self-attention with relative-position logits (spec §2.1-2.3;
    `ngram_multihead_attention_AR_NAR_mixed.py::NgramMultiheadAttentionARNARMixed`).

    The original packs q, k, v into one `in_proj`; here they are separate (the converter splits them). Relative
    logits come from the *layer input* of each query: `relative_linear(h)` viewed as [buckets, H] (feature
    j = bucket*H + head), added unscaled. Written fresh from spec §2.3 / §7.3: HF ProphetNet's predicting-stream
    gather scrambles (time, head) rows and must not be copied.

    AR (`num_main` = T): queries are `[main, predict]`; the main stream's keys/values go through the KV cache and
    the predicting stream's own keys are appended after them. NAR (`num_main` = None): one plain stream, no cache.
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
    ) -> torch.Tensor:
        batch_size, num_queries, _ = hidden_states.shape
        query = self._heads(self.q_proj(hidden_states) * self.scaling)  # [B, H, Lq, D]
        key, value = self._heads(self.k_proj(hidden_states)), self._heads(self.v_proj(hidden_states))
        if num_main is not None:
            main_key, main_value = key[:, :, :num_main], value[:, :, :num_main]
            if cache is not None:
                main_key, main_value = cache.self_attention_cache.update(main_key, main_value, self.layer_idx)
            key = torch.cat([main_key, key[:, :, num_main:]], dim=2)  # [B, H, P+2T, D]
            value = torch.cat([main_value, value[:, :, num_main:]], dim=2)

        relative = self.relative_linear(hidden_states).view(batch_size, num_queries, self.num_buckets, self.num_heads)
        relative = relative.permute(0, 3, 1, 2)  # [B, Lq, buckets, H] -> [B, H, Lq, buckets]
        index = relative_buckets.expand(batch_size, self.num_heads, *relative_buckets.shape)  # [B, H, Lq, Lk]
        bias = torch.gather(relative, dim=-1, index=index) + attention_bias

        out = eager_attention(query, key, value, bias, self.dropout, self.training)
        out = out.transpose(1, 2).reshape(batch_size, num_queries, -1)  # [B, H, Lq, D] -> [B, Lq, H*D]
        return self.out_proj(out)


# ---------------------------------------------------------------------------------------------------------------
# Layers (post-LN, spec §1.4-1.5)
# ---------------------------------------------------------------------------------------------------------------


class _BangFeedForwardLayer(nn.Module):
    """Owns the feed-forward sublayer `LN(x + drop(fc2(drop_act(gelu(fc1(x))))))` that ends every layer.

    The parameters sit on the layer itself (`fc1`, `fc2`, `final_layer_norm`) so names match the original checkpoint.
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
        out = F.dropout(self.activation(self.fc1(hidden_states)), self.activation_dropout, self.training)
        out = F.dropout(self.fc2(out), self.dropout, self.training)
        return self.final_layer_norm(hidden_states + out)


class BangEncoderLayer(_BangFeedForwardLayer):
    """`transformer.py::TransformerEncoderLayer` (post-LN): self-attention, then feed-forward."""

    def __init__(self, config: BangConfig):
        super().__init__(config, config.encoder_ffn_dim)
        self.self_attn = BangAttention(config, config.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor, attention_bias: torch.Tensor | None) -> torch.Tensor:
        out = F.dropout(self.self_attn(hidden_states, attention_bias=attention_bias), self.dropout, self.training)
        return self.feed_forward(self.self_attn_layer_norm(hidden_states + out))


class BangDecoderLayer(_BangFeedForwardLayer):
    """`NgramTransformerDecoderARNARMixedLayer` (post-LN): n-stream self-attention, cross-attention, feed-forward."""

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
    ) -> torch.Tensor:
        out = self.self_attn(hidden_states, self_attn_bias, relative_buckets, num_main=num_main, cache=cache)
        hidden_states = self.self_attn_layer_norm(hidden_states + F.dropout(out, self.dropout, self.training))
        out = self.encoder_attn(
            hidden_states, key_value_states=encoder_hidden_states, attention_bias=encoder_attn_bias, cache=cache
        )
        hidden_states = self.encoder_attn_layer_norm(hidden_states + F.dropout(out, self.dropout, self.training))
        return self.feed_forward(hidden_states)


# ---------------------------------------------------------------------------------------------------------------
# Pretrained model base
# ---------------------------------------------------------------------------------------------------------------


class BangPreTrainedModel(PreTrainedModel):
    config: BangConfig
    config_class = BangConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["BangEncoderLayer", "BangDecoderLayer"]
    _keys_to_ignore_on_load_unexpected = ["encoder.version", "decoder.version"]


def _key_padding_bias(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """[B, S] 1/0 mask → additive bias [B, 1, 1, S]; None when nothing is padded (the original passes None too)."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return _bias_from_visibility(attention_mask.bool()[:, None, None, :], dtype)


def _check_length(length: int, limit: int, what: str, fix: str) -> None:
    if length > limit:
        raise ValueError(f"{what} has {length} positions but this model has position embeddings for {limit}; {fix}")


class BangEncoder(BangPreTrainedModel):
    """`bang_AR_NAR_mixed.py::TransformerEncoder` (spec §1.4): tokens + learned positions, LN, post-LN layers."""

    def __init__(self, config: BangConfig, embed_tokens: nn.Embedding | None = None):
        super().__init__(config)
        self.embed_tokens = embed_tokens if embed_tokens is not None else nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        # 513 rows for 512 positions: row 0 is the pad row (spec §1.3).
        self.embed_positions = nn.Embedding(config.max_position_embeddings + 1, config.d_model, padding_idx=0)
        self.emb_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList([BangEncoderLayer(config) for _ in range(config.encoder_layers)])
        self.post_init()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutput:
        _check_length(
            input_ids.size(1),
            self.config.max_position_embeddings,
            "The source",
            "truncate sources, e.g. tokenizer(..., truncation=True, "
            f"max_length={self.config.max_position_embeddings}).",
        )
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id).long()
        # Positions from the mask: real tokens get 1..n whatever the padding side (spec §7.2 item 3).
        hidden = self.embed_tokens(input_ids) + self.embed_positions(make_positions(attention_mask))
        hidden = F.dropout(self.emb_layer_norm(hidden), self.config.dropout, self.training)
        hidden = hidden * attention_mask.unsqueeze(-1).to(hidden.dtype)  # the original zeroes pad rows
        bias = _key_padding_bias(attention_mask, hidden.dtype)
        for layer in self.layers:
            hidden = layer(hidden, bias)
        return BaseModelOutput(last_hidden_state=hidden)


class BangDecoder(BangPreTrainedModel):
    """`bang_AR_NAR_mixed.py::NgramTransformerDecoder` (spec §1.6, §2.5-2.6) for both modes."""

    def __init__(self, config: BangConfig, embed_tokens: nn.Embedding | None = None):
        super().__init__(config)
        self.embed_tokens = embed_tokens if embed_tokens is not None else nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        # 514 rows for 512 positions: the predicting / [MASK] stream looks up pos + 1 (spec §1.3).
        self.embed_positions = nn.Embedding(config.max_position_embeddings + 2, config.d_model, padding_idx=0)
        self.ngram_input_embed = nn.Embedding(config.ngram, config.d_model)  # e_ng, the [MASK]-like vector (§2.8)
        self.emb_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList([BangDecoderLayer(config, i) for i in range(config.decoder_layers)])
        self.post_init()

    def _ar_stream_inputs(self, input_ids: torch.Tensor, num_past: int) -> torch.Tensor:
        """Spec §2.5: main stream `E[y_i] + P[pos_i]`, predicting stream `e_ng + P[pos_i + 1]` → [B, 2T, D].

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
        """Spec §2.6: slot i gets `e_ng + P[pos_i + 1]` (= P[i+2] for real slots, P[1] for pads) → [B, T, D].

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

    def forward(
        self,
        input_ids: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        slot_mask: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        mode: Mode = "ar",
        glance_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> BangDecoderOutput:
        """AR: `input_ids` = decoder input (`[SEP] y1..`), with `cache` for incremental steps.
        NAR: `slot_mask` [B, T] (1 = real slot) gives the length; `input_ids`, if given instead, only its pad pattern;
        `glance_ids` [B, T] (glancing training) feeds token embeddings to the slots where it is >= 0."""
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
            self_attn_bias, buckets = _ar_attention_mask(num_new, num_past, self.config, device, dtype)
            num_main = num_new
        elif mode == "nar":
            if slot_mask is None:
                slot_mask = input_ids.ne(self.config.pad_token_id)
            _check_length(
                slot_mask.size(1),
                self.config.max_position_embeddings,
                "The NAR decoder",
                "decode fewer slots (max_new_tokens) or shorten the labels.",
            )
            hidden = self._nar_stream_inputs(slot_mask, glance_ids)
            self_attn_bias, buckets = _nar_attention_mask(slot_mask.size(1), self.config, device, dtype)
            num_main, cache = None, None
        else:
            raise ValueError(f"mode must be one of {FORWARD_MODES}, got {mode!r}.")

        hidden = F.dropout(self.emb_layer_norm(hidden), self.config.dropout, self.training)
        encoder_bias = _key_padding_bias(encoder_attention_mask, hidden.dtype)
        for layer in self.layers:
            hidden = layer(hidden, self_attn_bias, buckets, encoder_hidden_states, encoder_bias, num_main, cache)

        if mode == "ar":
            return BangDecoderOutput(
                last_hidden_state=hidden[:, num_main:], main_stream_hidden_state=hidden[:, :num_main], cache=cache
            )
        return BangDecoderOutput(last_hidden_state=hidden)


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
        self.encoder = BangEncoder(config, self.shared)
        self.decoder = BangDecoder(config, self.shared)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.shared = value
        self.encoder.embed_tokens = value
        self.decoder.embed_tokens = value

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
        **kwargs,
    ) -> Seq2SeqModelOutput:
        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("Pass input_ids (the source) or precomputed encoder_outputs.")
            encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(last_hidden_state=encoder_outputs[0])
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
        )
        return Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            cache=decoder_outputs.cache,
            decoder_hidden_states=(decoder_outputs.main_stream_hidden_state,)
            if decoder_outputs.main_stream_hidden_state is not None
            else None,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
        )


class ForcedEosKeepScoreLogitsProcessor(LogitsProcessor):
    """At the last allowed step, only `[SEP]` may follow, and it keeps the model's own log-prob.

    fairseq 0.9 forces eos at `max_len` this way (golden README §3.7); HF's `forced_eos_token_id` sets the forced
    score to 0 instead, which changes which hypothesis wins.
    """

    def __init__(self, eos_token_id: int, max_length: int):
        self.eos_token_id = eos_token_id
        self.max_length = max_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] == self.max_length - 1:
            eos_scores = scores[:, self.eos_token_id].clone()
            scores = torch.full_like(scores, -math.inf)
            scores[:, self.eos_token_id] = eos_scores
        return scores


class BangForConditionalGeneration(BangPreTrainedModel, GenerationMixin):
    """BANG with the tied LM head: `forward(..., mode=...)` for training/scoring, `generate(..., mode=...)`."""

    _tied_weights_keys = {"lm_head.weight": "model.shared.weight"}

    def __init__(self, config: BangConfig):
        super().__init__(config)
        self.model = BangModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)  # tied, no bias (spec §1.6)
        self.post_init()

    def get_encoder(self, modality: str | None = None) -> BangEncoder:
        return self.model.encoder

    def get_decoder(self) -> BangDecoder:
        return self.model.decoder

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
        mode: Mode = "ar",
        smoothing_eps: float | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        decoder_glance_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        r"""
        Args:
            labels (`[B, T]`): targets `y1..yn [SEP]`, right-padded with -100 (pad ids are treated as -100 too).
                AR: `decoder_input_ids` default to the labels shifted right with `[SEP]` first.
                NAR: the decoder has T slots; real slots are the labelled ones (only the pad pattern matters).
            decoder_attention_mask (`[B, T]`): NAR only: 1 for real slots. Without labels or this mask, NAR takes
                the pad pattern of `decoder_input_ids`.
            mode (`"ar"` or `"nar"`): which decoder stream produces the logits.
            smoothing_eps: ε of the label-smoothed loss; defaults to `config.label_smoothing`. (Not named
                `label_*`: Trainer treats every forward argument containing "label" as a label column.)
            num_items_in_batch: divide the summed loss by this (Trainer convention) instead of the local count.
            decoder_glance_ids (`[B, T]`): NAR only, glancing training: slots holding a token id (>= 0) get that
                token's embedding instead of the [MASK] vector; -100 elsewhere. Not part of the original BANG.

        `logits[:, t]` predicts `labels[:, t]` in both modes.
        """
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
        )
        logits = self.lm_head(outputs.last_hidden_state)

        loss = None
        if labels is not None:
            epsilon = self.config.label_smoothing if smoothing_eps is None else smoothing_eps
            loss = label_smoothed_nll_loss(logits, labels, epsilon, num_items_in_batch)
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            decoder_hidden_states=outputs.decoder_hidden_states,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
        )

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    # -----------------------------------------------------------------------------------------------------------
    # Generation
    # -----------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, *args, mode: str | None = None, **kwargs):
        """Decode with `mode` = `"ar"` (GenerationMixin beam search / greedy), `"nar"` (one pass) or `"nar_verify"`
        (NAR draft verified by the AR stream: exactly AR greedy, in fewer AR passes).

        `mode` defaults to `config.generation_mode`. Options: `_generate_ar`, `_generate_nar`, `_generate_nar_verify`.
        """
        mode = mode or self.config.generation_mode
        if mode == "ar":
            return self._generate_ar(inputs, *args, **kwargs)
        if mode == "nar":
            return self._generate_nar(inputs, **kwargs)
        if mode == "nar_verify":
            return self._generate_nar_verify(inputs, **kwargs)
        if mode == "semi_nar":  # reconstruction (bang_pretraining.md §5), in the bang-nar package only
            try:  # lazy, and inside `try` so trust_remote_code's import check does not require bang_nar
                from bang_nar.semi_nar import generate_semi_nar
            except ImportError as error:
                raise ImportError("generate(mode='semi_nar') needs the bang-nar package installed.") from error
            return generate_semi_nar(self, inputs, **kwargs)
        raise ValueError(f"mode must be one of {GENERATION_MODES}, got {mode!r}.")

    def _generate_ar(self, inputs: torch.Tensor | None = None, *args, original_compatible: bool = False, **kwargs):
        """AR decoding through `GenerationMixin.generate` with the KV cache (spec §4.4).

        `original_compatible=True` reproduces fairseq 0.9's beam search (golden README §3.7): it stops a sentence
        once `num_beams` hypotheses finished (`early_stopping=True`), bans `[SEP]` at the first step
        (`min_new_tokens=1`), never emits `[PAD]`, and forces `[SEP]` as the `max_new_tokens`-th token while keeping
        its log-prob. fairseq's `max_len_b=M` corresponds to `max_new_tokens=M + 1`.
        """
        if original_compatible:
            if kwargs.get("max_new_tokens") is None:
                raise ValueError(
                    "original_compatible=True needs max_new_tokens (fairseq's max_len_b + 1, e.g. 201 for the "
                    "default max_len_b=200), because the forced [SEP] is placed at that step."
                )
            kwargs.setdefault("early_stopping", True)
            kwargs.setdefault("min_new_tokens", 1)
            kwargs.setdefault("suppress_tokens", [self.config.pad_token_id])
            prompt_length = 1 if kwargs.get("decoder_input_ids") is None else kwargs["decoder_input_ids"].size(1)
            processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
            processors.append(
                ForcedEosKeepScoreLogitsProcessor(self.config.eos_token_id, prompt_length + kwargs["max_new_tokens"])
            )
            kwargs["logits_processor"] = processors
        return super().generate(inputs, *args, **kwargs)

    def _encode_for_nar(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        encoder_outputs: BaseModelOutput | None,
        max_new_tokens: int | None,
        num_beams: int | None,
    ) -> tuple[BaseModelOutput, torch.Tensor, int]:
        """Shared set-up of the one-pass modes: encoder outputs, source mask and the number of decoder slots."""
        if num_beams is not None and num_beams > 1:
            raise ValueError(
                f"NAR modes decode every position in one argmax pass; num_beams={num_beams} has no meaning there. "
                "Drop num_beams, use num_candidates for NAR rescoring, or mode='ar' for beam search."
            )
        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("generate(mode='nar') needs input_ids (the source) or encoder_outputs.")
            encoder_outputs = self.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
        if attention_mask is None:
            if input_ids is None:
                raise ValueError("With encoder_outputs, pass the source attention_mask too (pads must stay masked).")
            attention_mask = input_ids.ne(self.config.pad_token_id).long()
        num_slots = max_new_tokens if max_new_tokens is not None else encoder_outputs.last_hidden_state.size(1)
        if num_slots < 1:
            raise ValueError(f"max_new_tokens must be >= 1 for NAR decoding, got {num_slots}.")
        return encoder_outputs, attention_mask, num_slots

    def _nar_logits(self, encoder_outputs: BaseModelOutput, attention_mask: torch.Tensor, num_slots: int) -> torch.Tensor:
        """The one NAR decoder pass with `num_slots` real slots → logits [B, L, V]."""
        batch_size = encoder_outputs.last_hidden_state.size(0)
        slot_mask = torch.ones(batch_size, num_slots, dtype=torch.long, device=attention_mask.device)
        return self(
            attention_mask=attention_mask, encoder_outputs=encoder_outputs, decoder_attention_mask=slot_mask, mode="nar"
        ).logits

    def _ar_sequence_scores(
        self, encoder_outputs: BaseModelOutput, attention_mask: torch.Tensor, candidates: torch.Tensor
    ) -> torch.Tensor:
        """Length-normalised AR-stream log-prob of candidates [B, K, L] (`y.. [SEP] pad*`), in one teacher-forced pass."""
        batch_size, num_candidates, length = candidates.shape
        labels = candidates.reshape(batch_size * num_candidates, length)
        labels = labels.masked_fill(labels.eq(self.config.pad_token_id), -100)
        repeated = BaseModelOutput(
            last_hidden_state=encoder_outputs.last_hidden_state.repeat_interleave(num_candidates, dim=0)
        )
        logits = self(
            attention_mask=attention_mask.repeat_interleave(num_candidates, dim=0),
            encoder_outputs=repeated,
            labels=labels,
            mode="ar",
        ).logits
        token_log_probs = logits.float().log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
        token_log_probs = token_log_probs.masked_fill(labels.eq(-100), 0.0)
        scores = token_log_probs.sum(-1) / labels.ne(-100).sum(-1).clamp(min=1)
        return scores.view(batch_size, num_candidates)

    def _generate_nar(
        self,
        inputs: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | None = None,
        max_new_tokens: int | None = None,
        nar_postprocess: bool = True,
        num_candidates: int = 1,
        no_repeat_ngram_size: int = 0,
        suppress_repeats: bool = False,
        return_dict_in_generate: bool = False,
        output_logits: bool = False,
        input_ids: torch.Tensor | None = None,
        num_beams: int | None = None,
        **unused_generation_kwargs,
    ) -> torch.Tensor | BangNARGenerateOutput:
        """One encoder pass, one decoder pass, argmax per slot (spec §4.1, `BANGNARSequenceGenerator.generate`).

        - The decoder has `max_new_tokens` slots, or the padded source length when None (the original rule). NAR
          attention is causal, so slot t is the same whatever the number of slots (spec §2.6).
        - `nar_postprocess=True` (default) cuts at the first non-leading `[SEP]` and drops `[CLS]` and consecutive
          repeats on ids (`nar_cut_and_dedup`); False returns the raw argmax of every slot.
        - `suppress_repeats` / `no_repeat_ngram_size` constrain the argmax itself (`constrained_argmax`).
        - `num_candidates` = K > 1 builds K candidates (`nar_candidates`: length variants and substitutions) and
          keeps the one with the best length-normalised AR-stream log-prob, scored in one batched teacher-forced
          pass (cost: one AR pass over K·B rows).
        Beam-search and sampling options of `GenerationConfig` do not apply to this mode and are ignored.
        """
        input_ids = inputs if inputs is not None else input_ids
        encoder_outputs, attention_mask, num_slots = self._encode_for_nar(
            input_ids, attention_mask, encoder_outputs, max_new_tokens, num_beams
        )
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}.")
        logits = self._nar_logits(encoder_outputs, attention_mask, num_slots)
        scores = logits.max(dim=-1).values  # [B, L], the original `positional_scores`
        raw = constrained_argmax(logits, no_repeat_ngram_size, suppress_repeats)

        config = self.config
        candidates = candidate_scores = None
        if num_candidates > 1:
            raw_candidates = nar_candidates(logits, raw, num_candidates, config.eos_token_id)  # [B, K, L]
            # Candidates are always cut at [SEP] (they are scored as targets); repeats are dropped only with
            # nar_postprocess, so a legitimately repeated word stays possible without it.
            flat = nar_cut_and_dedup(raw_candidates.flatten(0, 1), config.eos_token_id, config.bos_token_id,
                                     config.pad_token_id, dedup=nar_postprocess)
            candidates = flat.view(raw.size(0), num_candidates, -1)
            candidate_scores = self._ar_sequence_scores(encoder_outputs, attention_mask, candidates)
            best = candidate_scores.argmax(-1)  # first maximum: the plain argmax candidate wins ties
            sequences = candidates[torch.arange(raw.size(0)), best]
        elif nar_postprocess:
            sequences = nar_cut_and_dedup(raw, config.eos_token_id, config.bos_token_id, config.pad_token_id)
        else:
            sequences = raw
        if not return_dict_in_generate:
            return sequences
        return BangNARGenerateOutput(
            sequences=sequences,
            raw_sequences=raw,
            scores=scores,
            logits=logits if output_logits else None,
            candidates=candidates,
            candidate_scores=candidate_scores,
        )

    def _generate_nar_verify(
        self,
        inputs: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | None = None,
        max_new_tokens: int | None = None,
        return_dict_in_generate: bool = False,
        input_ids: torch.Tensor | None = None,
        num_beams: int | None = None,
        **unused_generation_kwargs,
    ) -> torch.Tensor | BangNARGenerateOutput:
        """NAR draft, AR verification: token-for-token AR greedy decoding (`max_new_tokens` = draft length) with
        far fewer AR passes when the streams agree.

        One NAR pass drafts every slot. Each round runs the AR stream teacher-forced over the unconfirmed rest
        (the KV cache holds the confirmed prefix), accepts the longest prefix where the AR argmax equals the draft,
        and appends the AR token at the first disagreement. The NAR stream does not see the prefix, so the draft
        stays valid after a correction. Returns `[SEP]`-started ids like `mode="ar"`, pads after `[SEP]`.
        """
        input_ids = inputs if inputs is not None else input_ids
        encoder_outputs, attention_mask, num_slots = self._encode_for_nar(
            input_ids, attention_mask, encoder_outputs, max_new_tokens, num_beams
        )
        config = self.config
        draft = self._nar_logits(encoder_outputs, attention_mask, num_slots).argmax(-1)  # [B, L]
        batch_size = draft.size(0)
        start = draft.new_full((batch_size, 1), config.decoder_start_token_id)
        rows = torch.cat([start, draft], dim=1).tolist()  # index k >= 1 holds output token k
        confirmed = [1] * batch_size  # indices < confirmed[b] are final
        ar_passes = torch.zeros(batch_size, dtype=torch.long)
        active = list(range(batch_size))  # rows still decoding; finished rows leave the batch and its cache
        states, mask = encoder_outputs.last_hidden_state, attention_mask
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        cached = 0
        while active:
            # Verify up to the draft's next [SEP] only: past it the draft is filler, and a longer AR output is
            # confirmed one token per round anyway. This keeps rounds short when the decode length is the source's.
            end = max(_next_index(rows[b], config.eos_token_id, confirmed[b], num_slots) for b in active)
            inputs = torch.tensor([rows[b][cached:end] for b in active], dtype=draft.dtype, device=draft.device)
            logits = self(
                attention_mask=mask,
                encoder_outputs=BaseModelOutput(last_hidden_state=states),
                decoder_input_ids=inputs,
                cache=cache,
                use_cache=True,
                mode="ar",
            ).logits
            predicted = logits.argmax(-1).tolist()  # predicted[i][j]: AR token for index cached + j + 1
            still_active = []
            for i, b in enumerate(active):
                ar_passes[b] += 1
                k = confirmed[b]
                while True:
                    if k - 1 - cached >= len(predicted[i]):  # verified window exhausted: next round
                        still_active.append(i)
                        break
                    token = predicted[i][k - 1 - cached]
                    agreed = rows[b][k] == token
                    rows[b][k] = token
                    k += 1
                    if token == config.eos_token_id or k > num_slots:
                        rows[b][k:] = [config.pad_token_id] * (len(rows[b]) - k)
                        break
                    if not agreed:
                        still_active.append(i)
                        break
                confirmed[b] = k
            if len(still_active) < len(active):
                keep = torch.tensor(still_active, dtype=torch.long, device=draft.device)
                cache.batch_select_indices(keep)
                states, mask = states[keep], mask[keep]
                active = [active[i] for i in still_active]
            if active:
                # Keys/values stay valid up to the last index whose *input* token was already final this round.
                new_cached = min(confirmed[b] for b in active) - 1
                cache.crop(new_cached - cache.get_seq_length())
                cached = new_cached
        sequences = torch.tensor(rows, dtype=draft.dtype, device=draft.device)
        # Drop columns that are padding in every row (rows that stopped early), like HF generate does.
        keep = int(sequences.ne(config.pad_token_id).any(0).nonzero().max()) + 1
        sequences = sequences[:, :keep]
        if not return_dict_in_generate:
            return sequences
        return BangNARGenerateOutput(sequences=sequences, raw_sequences=draft, ar_passes=ar_passes)


__all__ = [
    "BangForConditionalGeneration",
    "BangModel",
    "BangPreTrainedModel",
    "BangNARGenerateOutput",
    "ForcedEosKeepScoreLogitsProcessor",
    "constrained_argmax",
    "nar_candidates",
    "nar_scan",
    "label_smoothed_nll_loss",
    "make_positions",
    "nar_cut_and_dedup",
    "relative_position_bucket",
    "shift_tokens_right",
]
