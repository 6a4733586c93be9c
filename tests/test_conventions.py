"""Transformers conventions: per-layer outputs, tuples, strict kwargs, SDPA, gradient checkpointing, torch.compile."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from bang_nar.convert_bang_original_checkpoint import convert_bang_checkpoint

from .conftest import golden_path, random_batch, tiny_model


@torch.no_grad()
@pytest.mark.parametrize("mode", ["ar", "nar"])
def test_per_layer_hidden_states_and_attentions(model, mode):
    input_ids, mask, labels = random_batch()
    plain = model(input_ids=input_ids, attention_mask=mask, labels=labels, mode=mode)
    out = model(input_ids=input_ids, attention_mask=mask, labels=labels, mode=mode,
                output_hidden_states=True, output_attentions=True)
    # AR: without hidden states the last layer skips the main stream's rows, so float sums may differ in the last bit.
    assert torch.allclose(out.logits, plain.logits, atol=1e-5) and torch.allclose(out.loss, plain.loss, atol=1e-6)
    batch, source, target, heads = input_ids.size(0), input_ids.size(1), labels.size(1), 2
    config = model.config
    assert len(out.encoder_hidden_states) == config.encoder_layers + 1
    assert torch.equal(out.encoder_hidden_states[-1], out.encoder_last_hidden_state)
    assert len(out.decoder_hidden_states) == config.decoder_layers + 1
    assert all(h.shape == (batch, target, config.d_model) for h in out.decoder_hidden_states)
    assert torch.allclose(model.lm_head(out.decoder_hidden_states[-1]), out.logits)
    assert [a.shape for a in out.encoder_attentions] == [(batch, heads, source, source)] * config.encoder_layers
    keys = 2 * target if mode == "ar" else target  # AR queries see [main, predict] keys
    assert [a.shape for a in out.decoder_attentions] == [(batch, heads, target, keys)] * config.decoder_layers
    assert [a.shape for a in out.cross_attentions] == [(batch, heads, target, source)] * config.decoder_layers
    for probs in (*out.encoder_attentions, *out.decoder_attentions, *out.cross_attentions):
        assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)
    padded = mask[1].eq(0)  # row 1 of random_batch is right-padded
    assert padded.any() and (out.cross_attentions[0][1][..., padded] == 0).all()
    if mode == "ar":
        assert len(out.decoder_main_stream_hidden_states) == config.decoder_layers + 1
        assert torch.equal(out.main_stream_hidden_state, out.decoder_main_stream_hidden_states[-1])
        assert plain.main_stream_hidden_state is None  # the last layer skips the discarded main stream
    else:
        assert out.main_stream_hidden_state is None and out.decoder_main_stream_hidden_states is None


@torch.no_grad()
def test_config_output_flags_are_the_defaults(model):
    input_ids, mask, labels = random_batch()
    model.config.output_hidden_states = model.config.output_attentions = True
    out = model(input_ids=input_ids, attention_mask=mask, labels=labels, mode="nar")
    assert len(out.decoder_hidden_states) == len(out.encoder_hidden_states) == model.config.decoder_layers + 1
    assert len(out.decoder_attentions) == len(out.cross_attentions) == model.config.decoder_layers
    out = model(input_ids=input_ids, attention_mask=mask, labels=labels, output_hidden_states=False,
                output_attentions=False)  # an explicit argument wins over the config
    assert out.decoder_hidden_states is out.encoder_hidden_states is out.decoder_attentions is None


@torch.no_grad()
def test_past_key_values_is_a_deprecated_alias_of_cache(model):
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    input_ids, mask, labels = random_batch()
    decoder_input_ids = labels.clamp_min(0)[:, :3]
    new = model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=decoder_input_ids,
                cache=EncoderDecoderCache(DynamicCache(), DynamicCache()), use_cache=True)
    with pytest.warns(FutureWarning, match="past_key_values"):
        old = model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=decoder_input_ids,
                    past_key_values=EncoderDecoderCache(DynamicCache(), DynamicCache()), use_cache=True)
    assert torch.equal(old.logits, new.logits) and old.cache.get_seq_length() == new.cache.get_seq_length() == 3


def test_missing_shared_embedding_is_initialised_and_tied_on_load(tmp_path):
    from bang_nar import BangForConditionalGeneration

    tiny_model().save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    dropped = {k for k in weights if k.endswith(("shared.weight", "embed_tokens.weight", "lm_head.weight"))}
    assert dropped
    save_file({k: v for k, v in weights.items() if k not in dropped}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    loaded = BangForConditionalGeneration.from_pretrained(tmp_path)
    assert not [name for name, p in loaded.named_parameters() if p.device.type == "meta"]
    shared = loaded.model.shared.weight
    assert shared.std() > 0 and torch.isfinite(shared).all()
    assert loaded.lm_head.weight is shared
    assert loaded.model.encoder.embed_tokens.weight is shared and loaded.model.decoder.embed_tokens.weight is shared


@torch.no_grad()
def test_generate_collects_attentions_and_hidden_states(model):
    input_ids, mask, _ = random_batch()
    out = model.generate(input_ids, attention_mask=mask, mode="ar", max_new_tokens=3, output_attentions=True,
                         output_hidden_states=True, return_dict_in_generate=True, original_compatible=False)
    steps = out.sequences.size(1) - 1
    assert len(out.decoder_attentions) == len(out.decoder_hidden_states) == steps
    assert all(a is not None for step in out.decoder_attentions for a in step)
    assert len(out.encoder_attentions) == model.config.encoder_layers


@torch.no_grad()
def test_return_dict_false_gives_tuples(model):
    input_ids, mask, labels = random_batch()
    as_dict = model(input_ids=input_ids, attention_mask=mask, labels=labels, mode="ar")
    as_tuple = model(input_ids=input_ids, attention_mask=mask, labels=labels, mode="ar", return_dict=False)
    assert isinstance(as_tuple, tuple)
    assert torch.equal(as_tuple[0], as_dict.loss) and torch.equal(as_tuple[1], as_dict.logits)
    encoder = model.get_encoder()(input_ids=input_ids, attention_mask=mask, return_dict=False)
    assert isinstance(encoder, tuple) and torch.equal(encoder[0], as_dict.encoder_last_hidden_state)
    base = model.model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=input_ids, return_dict=False)
    assert isinstance(base, tuple)


def test_unknown_keyword_arguments_are_rejected(model):
    input_ids, mask, labels = random_batch()
    for call in (
        lambda: model(input_ids=input_ids, attention_mask=mask, labes=labels),
        lambda: model.model(input_ids=input_ids, decoder_input_ids=input_ids, labes=labels),
        lambda: model.get_encoder()(input_ids=input_ids, labes=labels),
    ):
        with pytest.raises(TypeError, match="labes"):
            call()
    glance = torch.full_like(labels, -100)  # the glancing-training input stays accepted
    model(input_ids=input_ids, attention_mask=mask, labels=labels, mode="nar", decoder_glance_ids=glance)


@torch.no_grad()
def test_sdpa_matches_eager_and_the_golden_outputs():
    """Eager is the default and the reference; SDPA through the Transformers attention interface agrees."""
    eager = convert_bang_checkpoint(golden_path("checkpoint.pt"))
    assert eager.config._attn_implementation == "eager"
    sdpa = convert_bang_checkpoint(golden_path("checkpoint.pt"))
    sdpa.set_attn_implementation("sdpa")
    assert sdpa.config._attn_implementation == "sdpa"
    case = load_file(golden_path("cases.safetensors"))
    src, prev = case["src_tokens_left_padded"], case["prev_output_tokens"]
    mask, rows = src.ne(0).long(), case["target"].ne(0)
    for mode, golden in (("ar", "ar_logits"), ("nar", "nar_logits")):
        a = eager(input_ids=src, attention_mask=mask, decoder_input_ids=prev, mode=mode, use_cache=False).logits
        b = sdpa(input_ids=src, attention_mask=mask, decoder_input_ids=prev, mode=mode, use_cache=False).logits
        assert (a - b)[rows].abs().max().item() <= 1e-5, mode
        assert (b - case[golden])[rows].abs().max().item() <= 1e-4, mode
    options = dict(attention_mask=mask, return_dict_in_generate=True, output_scores=True, max_length=18)
    beam_eager, beam_sdpa = eager.generate(src, **options), sdpa.generate(src, **options)
    assert torch.equal(beam_eager.sequences, beam_sdpa.sequences)
    assert (beam_eager.sequences_scores - beam_sdpa.sequences_scores).abs().max().item() <= 1e-5
    # Asking for attention probabilities runs the eager kernel, whatever the implementation.
    probs = sdpa(input_ids=src, attention_mask=mask, decoder_input_ids=prev, output_attentions=True).decoder_attentions
    assert probs[0] is not None


def test_gradient_checkpointing_gives_equal_gradients():
    input_ids, mask, labels = random_batch()
    gradients = []
    for checkpointing in (False, True):
        model = tiny_model(5).train()  # dropout is 0 in the tiny config, so both runs compute the same function
        if checkpointing:
            # (Transformers 5 renamed gradient_checkpointing_enable; both set the layers' flag.)
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
            assert all(layer.gradient_checkpointing for layer in model.model.decoder.layers)
        for mode in ("ar", "nar"):
            model(input_ids=input_ids, attention_mask=mask, labels=labels, mode=mode).loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys()
    for name, grad in gradients[0].items():
        assert torch.allclose(grad, gradients[1][name], atol=1e-6, rtol=1e-5), name


def test_forward_compiles_without_graph_breaks():
    """One `explain` call over both modes (most of its time is Dynamo's one-off start-up)."""
    model = tiny_model(6, encoder_layers=1, decoder_layers=1)
    input_ids, mask, labels = random_batch(batch_size=2)

    def both_modes(input_ids, attention_mask, labels):
        ar = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, mode="ar")
        nar = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, mode="nar")
        return ar.loss + nar.loss

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(both_modes)(input_ids, mask, labels)
    torch._dynamo.reset()
    assert explanation.graph_break_count == 0, [str(b.reason) for b in explanation.break_reasons]
    assert explanation.graph_count == 1


def test_decoding_under_inference_mode_and_reused_masks(model):
    """The decoder reuses the encoder bias while the same mask tensor is passed unchanged, and only then."""
    input_ids, mask, _ = random_batch()
    with torch.no_grad():
        expected = model.generate(input_ids, attention_mask=mask, mode="ar", max_new_tokens=4)
        mask[:, 1] = 0  # an in-place change of the same mask tensor must not reuse the old bias
        changed = model.generate(input_ids, attention_mask=mask, mode="ar", max_new_tokens=4)
        assert torch.equal(changed, model.generate(input_ids, attention_mask=mask.clone(), mode="ar", max_new_tokens=4))
        assert not torch.equal(changed, expected)
        mask[:, 1] = 1
        assert torch.equal(model.generate(input_ids, attention_mask=mask, mode="ar", max_new_tokens=4), expected)
    with torch.inference_mode():
        assert torch.equal(model.generate(input_ids, attention_mask=mask.clone(), mode="ar", max_new_tokens=4), expected)
