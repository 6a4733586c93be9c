"""Invariants of the HF BANG model on tiny random models: NAR causality and length independence, AR
teacher-forced = incremental, padding/batch-order independence, save/load (incl. trust_remote_code), generate."""

import subprocess
import sys
import textwrap

import pytest
import torch

from bang_nar import BangForConditionalGeneration
from bang_nar.modeling_bang import label_smoothed_nll_loss, nar_cut_and_dedup, relative_position_bucket
from transformers import AutoModelForSeq2SeqLM

from .conftest import random_batch, tiny_model

ATOL = 1e-5


def test_relative_bucket_thresholds_match_spec_table():
    """docs/architecture.md#buckets thresholds for (32, 128), n = query - key; future keys collapse to 0."""
    starts = {16: 16, 19: 17, 21: 18, 24: 19, 27: 20, 31: 21, 35: 22, 40: 23, 46: 24, 52: 25, 59: 26, 67: 27, 77: 28, 87: 29, 99: 30, 113: 31}
    n = torch.arange(-5, 600)
    buckets = relative_position_bucket(n, 32, 128)
    assert buckets[n < 0].eq(0).all()
    assert torch.equal(buckets[(n >= 0) & (n < 16)], torch.arange(16))
    for start, bucket in starts.items():
        assert buckets[n == start].item() == bucket
        assert buckets[n == start - 1].item() == bucket - 1
    assert buckets[n >= 113].eq(31).all()


@torch.no_grad()
def test_nar_position_t_independent_of_later_slots_and_length(model):
    input_ids, mask, _ = random_batch()
    encoder_outputs = model.get_encoder()(input_ids=input_ids, attention_mask=mask)
    logits = {}
    for length in (3, 8, 40):
        slots = torch.ones(input_ids.size(0), length, dtype=torch.long)
        logits[length] = model(attention_mask=mask, encoder_outputs=encoder_outputs, decoder_attention_mask=slots, mode="nar").logits
    assert torch.allclose(logits[3], logits[8][:, :3], atol=ATOL)
    assert torch.allclose(logits[8], logits[40][:, :8], atol=ATOL)
    # Padded slots after real ones (training with shorter targets) do not change the real slots either.
    slots = torch.tensor([[1] * 8, [1] * 5 + [0] * 3, [1] * 2 + [0] * 6])
    padded = model(attention_mask=mask, encoder_outputs=encoder_outputs, decoder_attention_mask=slots, mode="nar").logits
    assert torch.allclose(padded[slots.bool()], logits[8][slots.bool()], atol=ATOL)


@torch.no_grad()
def test_nar_ignores_decoder_token_ids(model):
    input_ids, mask, labels = random_batch()
    a = model(input_ids=input_ids, attention_mask=mask, labels=labels, mode="nar").logits
    other_tokens = torch.where(labels.ne(-100), (labels + 7) % 100 + 1, torch.zeros_like(labels))
    b = model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=other_tokens, mode="nar").logits
    rows = labels.ne(-100)
    assert torch.allclose(a[rows], b[rows], atol=ATOL)


@torch.no_grad()
def test_ar_is_causal(model):
    input_ids, mask, labels = random_batch()
    full = model(input_ids=input_ids, attention_mask=mask, labels=labels, mode="ar").logits
    changed = labels.clone()
    changed[:, 3:] = torch.where(changed[:, 3:].ne(-100), 42, -100)
    partial = model(input_ids=input_ids, attention_mask=mask, labels=changed, mode="ar").logits
    # logits[t] sees decoder inputs <= t, i.e. labels < t: positions 0..3 are unaffected by labels[3:].
    assert torch.allclose(full[:, :4], partial[:, :4], atol=ATOL)
    assert not torch.allclose(full[:, 5:], partial[:, 5:], atol=ATOL)


@torch.no_grad()
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ar_teacher_forced_equals_incremental(seed):
    model = tiny_model(seed)
    input_ids, mask, labels = random_batch(seed=seed + 10)
    teacher = model(input_ids=input_ids, attention_mask=mask, labels=labels, mode="ar").logits
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels)
    encoder_outputs = model.get_encoder()(input_ids=input_ids, attention_mask=mask)
    cache, steps = None, []
    for t in range(labels.size(1)):
        out = model(attention_mask=mask, encoder_outputs=encoder_outputs, decoder_input_ids=decoder_input_ids[:, t : t + 1], cache=cache, use_cache=True)
        cache = out.cache
        steps.append(out.logits)
    rows = labels.ne(-100)
    assert (torch.cat(steps, 1) - teacher)[rows].abs().max() < ATOL
    # Two-token chunks through the cache agree too (the mask builder handles any number of new steps).
    cache, chunks = None, []
    for t in range(0, labels.size(1), 2):
        out = model(attention_mask=mask, encoder_outputs=encoder_outputs, decoder_input_ids=decoder_input_ids[:, t : t + 2], cache=cache, use_cache=True)
        cache = out.cache
        chunks.append(out.logits)
    assert (torch.cat(chunks, 1) - teacher)[rows].abs().max() < ATOL


@torch.no_grad()
@pytest.mark.parametrize("mode", ["ar", "nar"])
def test_batch_order_and_padding_side_independence(model, mode):
    input_ids, mask, labels = random_batch()
    base = model(input_ids=input_ids, attention_mask=mask, labels=labels, mode=mode).logits
    order = torch.tensor([2, 0, 1])
    permuted = model(input_ids=input_ids[order], attention_mask=mask[order], labels=labels[order], mode=mode).logits
    rows = labels.ne(-100)
    assert torch.allclose(permuted[rows[order]], base[order][rows[order]], atol=ATOL)
    # Left padding: move each source's tokens to the right end; positions come from the mask.
    left = torch.zeros_like(input_ids)
    for i, n in enumerate(mask.sum(1).tolist()):
        left[i, -n:] = input_ids[i, :n]
    left_logits = model(input_ids=left, attention_mask=left.ne(0).long(), labels=labels, mode=mode).logits
    assert torch.allclose(left_logits[rows], base[rows], atol=ATOL)
    # Each sample alone (no padding at all) gives the same result as inside the padded batch.
    for i in range(input_ids.size(0)):
        n, m = int(mask[i].sum()), int(rows[i].sum())
        alone = model(input_ids=input_ids[i : i + 1, :n], labels=labels[i : i + 1, :m], mode=mode).logits
        assert torch.allclose(alone[0], base[i, :m], atol=ATOL)


@torch.no_grad()
@pytest.mark.parametrize("mode", ["ar", "nar", "semi_nar"])
def test_default_loss_is_plain_cross_entropy(model, mode):
    """Transformers convention: `forward(labels=...)` is cross-entropy; BANG's ε = 0.1 is the trainer's to pass."""
    input_ids, mask, labels = random_batch()
    extra = {"block_size": 2} if mode == "semi_nar" else {}
    out = model(input_ids=input_ids, attention_mask=mask, labels=labels, mode=mode, **extra)
    smoothed = model(input_ids=input_ids, attention_mask=mask, labels=labels, mode=mode, smoothing_eps=0.1, **extra)
    assert smoothed.loss.item() != pytest.approx(out.loss.item(), rel=1e-4)
    if mode != "semi_nar":  # semi-NAR's loss averages over its k streams' predictions
        expected = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_loss_is_label_smoothed_token_mean_and_backpropagates(model):
    input_ids, mask, labels = random_batch()
    model.train()
    for mode in ("ar", "nar"):
        out = model(input_ids=input_ids, attention_mask=mask, labels=labels, mode=mode, smoothing_eps=0.1)
        log_probs = out.logits.log_softmax(-1)
        rows = labels.ne(-100)
        nll = -log_probs[rows].gather(-1, labels[rows][:, None]).squeeze(-1)
        smooth = -log_probs[rows].sum(-1)
        expected = ((0.9 * nll + 0.1 / log_probs.size(-1) * smooth).sum() / rows.sum()).item()
        assert out.loss.item() == pytest.approx(expected, rel=1e-5)
        model.zero_grad()
        out.loss.backward()
        assert model.model.decoder.ngram_input_embed.weight.grad.abs().sum() > 0
        assert model.model.shared.weight.grad.abs().sum() > 0
    assert label_smoothed_nll_loss(out.logits, labels, 0.0, num_items_in_batch=rows.sum() * 2).item() < out.loss.item()


@torch.no_grad()
def test_generate_nar_is_argmax_of_forward_and_postprocessed(model):
    input_ids, mask, _ = random_batch()
    out = model.generate(input_ids, attention_mask=mask, mode="nar", return_dict_in_generate=True, output_logits=True)
    assert out.raw_sequences.shape == input_ids.shape  # original rule: padded source length
    assert torch.equal(out.raw_sequences, out.slot_logits.argmax(-1))
    assert torch.equal(out.sequences, nar_cut_and_dedup(out.raw_sequences, 102, 101, 0))
    assert model.generate(input_ids, attention_mask=mask, mode="nar", max_new_tokens=4, nar_postprocess=False).shape == (3, 4)
    assert torch.equal(
        model.generate(input_ids, attention_mask=mask, mode="nar", max_new_tokens=4, nar_postprocess=False),
        out.raw_sequences[:, :4],
    )


def test_nar_cut_and_dedup_rules():
    raw = torch.tensor([[102, 5, 5, 101, 6, 5, 102, 7], [102, 102, 102, 102, 102, 102, 102, 102], [8, 9, 9, 9, 10, 11, 12, 13]])
    out = nar_cut_and_dedup(raw, sep_token_id=102, cls_token_id=101, pad_token_id=0)
    assert out.tolist() == [[5, 6, 5, 102, 0, 0, 0], [102, 0, 0, 0, 0, 0, 0], [8, 9, 10, 11, 12, 13, 102]]


@torch.no_grad()
def test_generate_ar_greedy_matches_manual_loop_with_padded_batch(model):
    input_ids, mask, _ = random_batch()
    generated = model.generate(input_ids, attention_mask=mask, mode="ar", max_new_tokens=6, do_sample=False, num_beams=1)
    for i in range(input_ids.size(0)):
        n = int(mask[i].sum())
        decoder = torch.tensor([[102]])
        for _ in range(6):
            logits = model(input_ids=input_ids[i : i + 1, :n], decoder_input_ids=decoder, use_cache=False).logits
            decoder = torch.cat([decoder, logits[:, -1:].argmax(-1)], 1)
            if decoder[0, -1] == 102:
                break
        assert generated[i, : decoder.size(1)].tolist() == decoder[0].tolist()
    beams = model.generate(input_ids, attention_mask=mask, mode="ar", num_beams=4, length_penalty=1.2, max_new_tokens=6, num_return_sequences=2)
    assert beams.shape[0] == 6 and beams[:, 0].eq(102).all()


def test_generation_mode_default_comes_from_config():
    model = tiny_model(generation_mode="nar")
    input_ids, mask, _ = random_batch()
    assert torch.equal(model.generate(input_ids, attention_mask=mask), model.generate(input_ids, attention_mask=mask, mode="nar"))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, x: m(input_ids=x, decoder_input_ids=x, mode="semi"), "mode must be one of"),
        (lambda m, x: m(input_ids=torch.ones(1, 65, dtype=torch.long), decoder_input_ids=x), "The source has 65 positions"),
        (lambda m, x: m(input_ids=x, labels=torch.ones(1, 70, dtype=torch.long), mode="nar"), "The NAR decoder has 70"),
        (lambda m, x: m(input_ids=x, mode="ar"), "AR mode needs decoder_input_ids"),
        (lambda m, x: m.generate(x, mode="nar", num_beams=4), "does not support num_beams=4"),
        (lambda m, x: m.generate(x, mode="ar", original_compatible=True, num_beams=4), "needs max_new_tokens"),
        (lambda m, x: m.generate(x, mode="beam"), "mode must be one of"),
    ],
)
def test_bad_inputs_raise_clear_errors(model, call, message):
    with pytest.raises(ValueError, match=message):
        call(model, torch.tensor([[5, 6, 102]]))


@torch.no_grad()
def test_save_load_round_trip_and_auto_classes(model, tmp_path):
    input_ids, mask, labels = random_batch()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    expected = model(input_ids=input_ids, attention_mask=mask, labels=labels, mode="nar").logits
    for loader in (BangForConditionalGeneration, AutoModelForSeq2SeqLM):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert loaded.lm_head.weight.data_ptr() == loaded.model.shared.weight.data_ptr()
        assert torch.equal(loaded(input_ids=input_ids, attention_mask=mask, labels=labels, mode="nar").logits, expected)
        assert torch.equal(loaded.generate(input_ids, attention_mask=mask, mode="ar", max_new_tokens=5), model.generate(input_ids, attention_mask=mask, mode="ar", max_new_tokens=5))


def test_trust_remote_code_loads_without_the_package(model, tmp_path):
    """A saved checkpoint carries modeling/configuration files and loads where `bang_nar` cannot be imported."""
    model.save_pretrained(tmp_path / "ckpt")
    input_ids, mask, _ = random_batch()
    expected = model.generate(input_ids, attention_mask=mask, mode="nar").tolist()
    script = textwrap.dedent(
        f"""
        import sys
        class BlockBangNar:
            def find_spec(self, name, path, target=None):
                if name == "bang_nar" or name.startswith("bang_nar."):
                    raise ImportError("bang_nar is blocked in this test")
        sys.meta_path.insert(0, BlockBangNar())
        import torch
        from transformers import AutoModelForSeq2SeqLM
        model = AutoModelForSeq2SeqLM.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
        assert "bang_nar" not in sys.modules and not type(model).__module__.startswith("bang_nar")
        ids = torch.tensor({input_ids.tolist()})
        print(model.generate(ids, attention_mask=ids.ne(0).long(), mode="nar").tolist())
        """
    )
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(expected)
