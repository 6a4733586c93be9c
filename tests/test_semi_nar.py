"""Block-wise semi-NAR decoding (shared/docs/bang_pretraining.md §5 reconstruction) on tiny models."""

import pytest
import torch

from bang_nar.pretraining import pretraining_forward

from .conftest import random_batch, tiny_model


def _greedy(model, input_ids, mask, max_new_tokens):
    return model.generate(input_ids, attention_mask=mask, mode="ar", max_new_tokens=max_new_tokens, num_beams=1,
                          do_sample=False)


@torch.no_grad()
@pytest.mark.parametrize("seed", range(4))
def test_block_size_one_is_ar_greedy_token_for_token(seed):
    model = tiny_model(seed)
    input_ids, mask, _ = random_batch(batch_size=5, source_length=11, seed=100 + seed)
    out = model.generate(input_ids, attention_mask=mask, mode="semi_nar", block_size=1, max_new_tokens=12,
                         return_dict_in_generate=True)
    assert torch.equal(out.sequences, _greedy(model, input_ids, mask, 12))
    assert out.num_steps == out.sequences.size(1) - 1


@torch.no_grad()
@pytest.mark.parametrize("block_size", [2, 3, 5])
def test_each_block_is_the_pretraining_group_argmax(block_size):
    """Every block equals the argmax of the §3.1 group that pretraining trains, given the decoded prefix: the cached
    incremental decode computes exactly the n-stream forward's slots P_s@(g+s)."""
    model = tiny_model(1)
    input_ids, mask, _ = random_batch(batch_size=3, source_length=9, seed=7)
    max_new = 10
    out = model.generate(input_ids, attention_mask=mask, mode="semi_nar", block_size=block_size,
                         max_new_tokens=max_new, return_dict_in_generate=True)
    seq = out.sequences  # [B, 1+L]
    assert out.num_steps <= -(-max_new // block_size)
    # Teacher-force the decoded prefix through the pretraining forward with block_size streams.
    full = pretraining_forward(model, input_ids, mask, decoder_input_ids=seq[:, :-1], num_streams=block_size,
                               return_logits=True).logits  # [B, n, T, V]
    for b in range(seq.size(0)):
        row = seq[b, 1:]
        length = int(row.ne(0).sum())
        for t in range(length):
            g = (t // block_size) * block_size  # first row of this block: prefix y_0..y_g known
            assert full[b, t - g, t].argmax().item() == row[t].item(), (b, t)


@torch.no_grad()
def test_semi_nar_stops_and_validates(model):
    input_ids, mask, _ = random_batch()
    out = model.generate(input_ids, attention_mask=mask, mode="semi_nar", block_size=4, max_new_tokens=6)
    assert out.size(1) <= 7 and out[:, 0].eq(model.config.decoder_start_token_id).all()
    for row in out[:, 1:].tolist():  # pads only after the first [SEP]
        if 102 in row:
            assert all(token == 0 for token in row[row.index(102) + 1:])
    with pytest.raises(ValueError, match="block_size"):
        model.generate(input_ids, attention_mask=mask, mode="semi_nar", block_size=0)
    with pytest.raises(ValueError, match="num_beams"):
        model.generate(input_ids, attention_mask=mask, mode="semi_nar", num_beams=2)
