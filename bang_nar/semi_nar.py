"""Block-wise semi-NAR decoding (a reconstruction: docs/pretraining.md#semi-nar).

No source describes BANG's semi-NAR inference. This is the decoding that fits the cross-stream pretraining
(`bang_nar.pretraining`) exactly: k tokens per step, AR across blocks. At a step whose known prefix ends at row g,
the decoder runs the new main-stream tokens (KV-cached across steps, as in AR mode) and k [MASK] slots
`P_0@g .. P_{k-1}@(g+k-1)`, the anti-diagonal group g of pretraining: slot s sees main rows <= g and the slots before it.
The argmax of each slot gives y_{g+1} .. y_{g+k}; they become main-stream tokens of the next step.

k = 1 is AR greedy (slot 0 is the AR predicting stream); k covering the whole output is NAR except that the slots
see M0 = `[SEP]` (the M0 caveat). Blocks of k <= `num_streams` are what pretraining trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import ModelOutput

from .modeling_bang import (
    BangForConditionalGeneration,
    _bias_from_visibility,
    _key_padding_bias,
    relative_position_bucket,
)
from .pretraining import resolve_block_size


@dataclass
class BangSemiNARGenerateOutput(ModelOutput):
    """`generate(mode="semi_nar", return_dict_in_generate=True)`: `sequences` [B, 1+L] (`[SEP]`-started like AR,
    pads after the first `[SEP]`) and `num_steps`, the decoder passes used (⌈L/k⌉ for the longest row)."""

    sequences: torch.Tensor | None = None
    num_steps: int | None = None


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


@torch.no_grad()
def generate_semi_nar(
    model: BangForConditionalGeneration,
    inputs: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    encoder_outputs: BaseModelOutput | None = None,
    block_size: int | None = None,
    max_new_tokens: int | None = None,
    return_dict_in_generate: bool = False,
    input_ids: torch.Tensor | None = None,
    num_beams: int | None = None,
    **unused_generation_kwargs,
) -> torch.Tensor | BangSemiNARGenerateOutput:
    """Greedy block-wise semi-NAR decoding with `block_size` = k tokens per decoder pass.

    `block_size` defaults to the generation config's `block_size` (a model fine-tuned with `train_mode="semi_nar"`
    stores its k there), else 4. `max_new_tokens` defaults to the padded source length (the NAR rule). Rows stop at
    their first `[SEP]`; the loop stops when all rows have. Beam search over blocks is not implemented (`num_beams` > 1
    is refused).
    """
    config = model.config
    input_ids = inputs if inputs is not None else input_ids
    if num_beams is not None and num_beams > 1:
        raise ValueError("mode='semi_nar' decodes greedily block by block; drop num_beams (or use mode='ar').")
    block_size = resolve_block_size(model, block_size)
    if encoder_outputs is None:
        if input_ids is None:
            raise ValueError("generate(mode='semi_nar') needs input_ids (the source) or encoder_outputs.")
        if attention_mask is None:
            attention_mask = input_ids.ne(config.pad_token_id).long()
        encoder_outputs = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
    elif attention_mask is None:
        raise ValueError("With encoder_outputs, pass the source attention_mask too (pads must stay masked).")
    states = encoder_outputs.last_hidden_state
    max_new_tokens = max_new_tokens if max_new_tokens is not None else states.size(1)
    if not 1 <= max_new_tokens < config.max_position_embeddings:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} must be in [1, {config.max_position_embeddings - 1}] "
            "(the decoder's position table; the [MASK] slots look up pos+1)."
        )

    decoder = model.get_decoder()
    batch_size, device = states.size(0), states.device
    dtype = decoder.emb_layer_norm.weight.dtype
    encoder_bias = _key_padding_bias(attention_mask, dtype)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    sequences = torch.full((batch_size, 1), config.decoder_start_token_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    new_main, produced, num_steps = sequences, 0, 0
    while produced < max_new_tokens and not bool(finished.all()):
        k = min(block_size, max_new_tokens - produced)
        num_past = cache.get_seq_length()
        num_new = new_main.size(1)
        g = num_past + num_new - 1  # last known main row
        main_positions = num_past + 1 + torch.arange(num_new, device=device)
        slot_positions = g + 2 + torch.arange(k, device=device)  # row t = g+s looks up P[t+2]
        main = decoder.embed_tokens(new_main) + decoder.embed_positions(main_positions)
        slots = decoder.ngram_input_embed.weight[0] + decoder.embed_positions(slot_positions)
        hidden = torch.cat([main, slots.expand(batch_size, -1, -1)], dim=1)
        hidden = F.dropout(decoder.emb_layer_norm(hidden), config.dropout, model.training)
        visible, distance = semi_nar_step_pattern(num_new, num_past, k, device)
        bias = _bias_from_visibility(visible, dtype)
        buckets = relative_position_bucket(distance, config.num_buckets, config.relative_max_distance)
        last = len(decoder.layers) - 1
        for index, layer in enumerate(decoder.layers):
            # num_main + cache: the main rows' keys/values join the KV cache; the slots' do not (AR-mode layout).
            # The last layer computes the slots only: nothing reads the main rows' outputs (as in AR mode).
            hidden = layer(hidden, bias, buckets, states, encoder_bias, num_new, cache,
                           query_start=num_new if index == last else 0)
        tokens = model.lm_head(hidden).argmax(-1)  # [B, k]
        # After a row's first [SEP] (in an earlier block or earlier in this one) it only gets pads.
        is_eos = tokens.eq(config.eos_token_id).long()
        after_eos = finished[:, None] | ((is_eos.cumsum(1) - is_eos) > 0)
        tokens = tokens.masked_fill(after_eos, config.pad_token_id)
        finished |= is_eos.bool().any(1)
        sequences = torch.cat([sequences, tokens], dim=1)
        new_main, produced, num_steps = tokens, produced + k, num_steps + 1
    if not return_dict_in_generate:
        return sequences
    return BangSemiNARGenerateOutput(sequences=sequences, num_steps=num_steps)


__all__ = ["BangSemiNARGenerateOutput", "generate_semi_nar", "semi_nar_step_pattern"]
