"""Decoding beyond BANG (issue: AR-verified NAR drafts, candidate rescoring, repetition control)."""

import pytest
import torch

from bang_nar.convert_bang_original_checkpoint import convert_bang_checkpoint
from bang_nar.modeling_bang import constrained_argmax, nar_candidates
from safetensors.torch import load_file

from .conftest import golden_path, random_batch, tiny_model


def _greedy(model, input_ids, mask, max_new_tokens):
    return model.generate(input_ids, attention_mask=mask, mode="ar", max_new_tokens=max_new_tokens, num_beams=1,
                          do_sample=False, original_compatible=False)


@torch.no_grad()
@pytest.mark.parametrize("seed", range(8))
def test_nar_verify_is_token_for_token_ar_greedy(seed):
    model = tiny_model(seed)
    input_ids, mask, _ = random_batch(batch_size=5, source_length=11, seed=100 + seed)
    out = model.generate(input_ids, attention_mask=mask, mode="nar_verify", return_dict_in_generate=True)
    assert torch.equal(out.sequences, _greedy(model, input_ids, mask, input_ids.size(1)))
    # Each round confirms at least one token, so passes never exceed the tokens produced.
    produced = out.sequences[:, 1:].ne(0).sum(1)
    assert (out.ar_passes >= 1).all() and (out.ar_passes <= produced).all()
    limited = model.generate(input_ids, attention_mask=mask, mode="nar_verify", max_new_tokens=4)
    assert torch.equal(limited, _greedy(model, input_ids, mask, 4))


@torch.no_grad()
def test_nar_verify_needs_one_pass_when_streams_agree():
    """If the NAR draft is what AR greedy would say, one AR pass confirms the whole sequence."""
    model = tiny_model(3)
    input_ids, mask, _ = random_batch(batch_size=2, seed=5)
    greedy = _greedy(model, input_ids, mask, input_ids.size(1))
    # Make the NAR stream reproduce greedy exactly: feed the greedy tokens as a forced draft.
    original = model._nar_logits

    def forced_draft(encoder_outputs, attention_mask, num_slots):
        logits = original(encoder_outputs, attention_mask, num_slots)
        target = torch.cat([greedy[:, 1:], greedy.new_zeros(greedy.size(0), num_slots)], 1)[:, :num_slots]
        target = torch.where(target.eq(0), torch.full_like(target, 102), target)
        return torch.nn.functional.one_hot(target, logits.size(-1)).float() * 100

    model._nar_logits = forced_draft
    out = model.generate(input_ids, attention_mask=mask, mode="nar_verify", return_dict_in_generate=True)
    assert torch.equal(out.sequences, greedy)
    assert out.ar_passes.tolist() == [1, 1]


@torch.no_grad()
def test_nar_verify_on_golden_checkpoint():
    model = convert_bang_checkpoint(golden_path("checkpoint.pt"))
    case = load_file(golden_path("cases.safetensors"))
    src = case["src_tokens_right_padded"]
    mask = src.ne(0).long()
    # The converted model's generation config sets original_compatible: nar_verify follows AR's rules, as AR does.
    out = model.generate(src, attention_mask=mask, mode="nar_verify", return_dict_in_generate=True)
    ar = model.generate(src, attention_mask=mask, mode="ar", num_beams=1, do_sample=False, max_new_tokens=src.size(1))
    assert torch.equal(out.sequences, ar)
    plain = model.generate(src, attention_mask=mask, mode="nar_verify", original_compatible=False)
    assert torch.equal(plain, _greedy(model, src, mask, src.size(1)))
    assert not torch.equal(plain, ar)  # a row whose plain greedy starts with [SEP]


def test_constrained_argmax_hand_case():
    logits = torch.full((1, 6, 10), -10.0)
    # Unconstrained argmax: 3 3 4 3 4 5
    for t, token in enumerate([3, 3, 4, 3, 4, 5]):
        logits[0, t, token] = 5.0
    logits[0, :, 7] = 1.0  # runner-up everywhere
    assert constrained_argmax(logits).tolist() == [[3, 3, 4, 3, 4, 5]]
    assert constrained_argmax(logits, suppress_repeats=True).tolist() == [[3, 7, 4, 3, 4, 5]]
    # bigram (3, 4) is used at t=1..2 → at t=4 token 4 after 3 is banned
    assert constrained_argmax(logits, no_repeat_ngram_size=2).tolist() == [[3, 3, 4, 3, 7, 5]]


@torch.no_grad()
@pytest.mark.parametrize("n", [2, 3])
def test_repetition_options_never_emit_blocked_ngrams(n):
    model = tiny_model(1)
    input_ids, mask, _ = random_batch(batch_size=4, source_length=30, seed=9)
    raw = model.generate(input_ids, attention_mask=mask, mode="nar", no_repeat_ngram_size=n, suppress_repeats=True, nar_postprocess=False)
    for row in raw.tolist():
        assert all(a != b for a, b in zip(row, row[1:]))
        ngrams = [tuple(row[i : i + n]) for i in range(len(row) - n + 1)]
        assert len(ngrams) == len(set(ngrams))
    plain = model.generate(input_ids, attention_mask=mask, mode="nar", nar_postprocess=False)
    assert any(a == b for row in plain.tolist() for a, b in zip(row, row[1:]))  # the constraint had work to do


def test_nar_candidates_hand_case():
    logits = torch.zeros(1, 5, 8)
    logits[0, :, 4] = 3.0  # argmax token 4 at every slot ...
    logits[0, 2, 6] = 4.0  # ... but [SEP]=6 at slot 2
    logits[0, 4, 6] = 2.5  # [SEP] second most likely at slot 4 (token 4 still wins there)
    logits[0, 1, 5] = 2.9  # slot 1 is the least confident before the cut; its runner-up is 5
    tokens = logits.argmax(-1)
    candidates = nar_candidates(logits, tokens, num_candidates=3, sep_token_id=6)
    assert candidates[0, 0].tolist() == [4, 4, 6, 4, 4]  # the argmax itself
    assert candidates[0, 1].tolist() == [4, 4, 6, 4, 4]  # most likely [SEP] slot is the argmax cut
    assert candidates[0, 2].tolist() == [4, 5, 6, 4, 4]  # substitution at the weakest slot
    longer = nar_candidates(logits, tokens, num_candidates=5, sep_token_id=6)
    assert longer[0, 2].tolist() == [4, 4, 4, 4, 6]  # cut at slot 4: the earlier [SEP] takes its best other token


@torch.no_grad()
def test_rescoring_picks_the_candidate_with_the_best_ar_score():
    model = tiny_model(2)
    input_ids, mask, _ = random_batch(batch_size=3, seed=4)
    out = model.generate(input_ids, attention_mask=mask, mode="nar", num_candidates=4, return_dict_in_generate=True)
    assert out.candidates.shape[:2] == (3, 4)
    for b in range(3):
        independent = []
        for candidate in out.candidates[b]:
            labels = candidate[candidate.ne(0)][None]
            logits = model(input_ids=input_ids[b : b + 1], attention_mask=mask[b : b + 1], labels=labels).logits
            log_probs = logits.log_softmax(-1).gather(-1, labels[..., None]).squeeze(-1)
            independent.append(log_probs.mean().item())
        assert out.candidate_scores[b].tolist() == pytest.approx(independent, abs=1e-4)
        assert torch.equal(out.sequences[b], out.candidates[b, max(range(4), key=lambda k: independent[k])])
    single = model.generate(input_ids, attention_mask=mask, mode="nar")
    assert torch.equal(out.candidates[:, 0, : single.size(1)], single)


def test_nar_modes_reject_beams_and_bad_candidate_counts(model):
    x = torch.tensor([[5, 6, 102]])
    with pytest.raises(ValueError, match="num_candidates for NAR rescoring"):
        model.generate(x, mode="nar_verify", num_beams=2)
    with pytest.raises(ValueError, match="num_candidates must be >= 1"):
        model.generate(x, mode="nar", num_candidates=0)
    with pytest.raises(ValueError, match="exists only in generate"):
        model(input_ids=x, decoder_input_ids=x, mode="nar_verify")


@torch.no_grad()
def test_decoding_options_survive_save_and_load(tmp_path):
    from bang_nar import BangForConditionalGeneration

    model = tiny_model(4)
    input_ids, mask, _ = random_batch(seed=12)
    options = [
        {"mode": "nar", "num_candidates": 3},
        {"mode": "nar", "no_repeat_ngram_size": 2, "suppress_repeats": True},
        {"mode": "nar_verify"},
        {"mode": "ar", "num_beams": 4, "max_new_tokens": 6, "original_compatible": True},
    ]
    before = [model.generate(input_ids, attention_mask=mask, **o) for o in options]
    model.save_pretrained(tmp_path)
    loaded = BangForConditionalGeneration.from_pretrained(tmp_path).eval()
    for option, expected in zip(options, before):
        assert torch.equal(loaded.generate(input_ids, attention_mask=mask, **option), expected), option


@torch.no_grad()
def test_candidates_keep_repeats_without_postprocessing():
    model = tiny_model(1)
    input_ids, mask, _ = random_batch(batch_size=4, source_length=30, seed=9)
    out = model.generate(input_ids, attention_mask=mask, mode="nar", num_candidates=3, nar_postprocess=False,
                         return_dict_in_generate=True)
    plain = model.generate(input_ids, attention_mask=mask, mode="nar", nar_postprocess=False)
    # The first candidate is the raw argmax cut at its first [SEP], repeats included.
    for b in range(4):
        cut = [t for t in out.candidates[b, 0].tolist() if t != 0]
        row = plain[b].tolist()
        assert cut[:-1] == row[: len(cut) - 1] and cut[-1] == 102
    assert any(a == b for row in out.candidates[:, 0].tolist() for a, b in zip(row, row[1:]) if a not in (0, 102))


@pytest.mark.parametrize(
    ("mode", "option", "value", "message"),
    [
        ("nar", "do_sample", True, "does not support do_sample=True: NAR modes take the argmax"),
        ("semi_nar", "do_sample", True, "does not support do_sample=True"),
        ("semi_nar", "num_return_sequences", 2, "does not support num_return_sequences=2"),
        ("nar", "streamer", object(), "does not support streamer"),
        ("nar", "length_penalty", 2.0, "does not support length_penalty=2.0"),
        ("nar", "logits_processor", [object()], "does not support logits_processor"),
        ("nar", "num_return_sequences", 2, "num_candidates >= 2"),
        ("nar_verify", "num_return_sequences", 2, "does not support num_return_sequences=2"),
        ("semi_nar", "no_repeat_ngram_size", 2, "does not support no_repeat_ngram_size=2.*nar_verify"),
        ("nar_verify", "temperature", 0.5, "does not support temperature=0.5"),
        ("nar", "eos_token_id", 7, "does not support eos_token_id=7"),
    ],
)
def test_nar_modes_refuse_options_they_do_not_honour(model, mode, option, value, message):
    with pytest.raises(ValueError, match=message):
        model.generate(torch.tensor([[5, 6, 102]]), mode=mode, **{option: value})


@torch.no_grad()
def test_nar_modes_reject_unknown_names_and_accept_defaults(model):
    x = torch.tensor([[5, 6, 102]])
    for mode in ("nar", "nar_verify"):
        with pytest.raises(TypeError, match="num_beam"):
            model.generate(x, mode=mode, num_beam=2)
    plain = model.generate(x, mode="nar")
    defaults = {"do_sample": False, "num_beams": 1, "streamer": None, "eos_token_id": 102, "output_scores": True,
                "synced_gpus": False, "labels": x}  # what Seq2SeqTrainer(predict_with_generate) passes
    assert torch.equal(model.generate(x, mode="nar", **defaults), plain)


@torch.no_grad()
def test_max_new_tokens_from_the_generation_config(model):
    input_ids, mask, _ = random_batch(seed=3)
    expected = {m: model.generate(input_ids, attention_mask=mask, mode=m, max_new_tokens=4, nar_postprocess=False)
                if m == "nar" else model.generate(input_ids, attention_mask=mask, mode=m, max_new_tokens=4)
                for m in ("nar", "nar_verify")}
    assert expected["nar"].shape == (3, 4)
    model.generation_config.max_new_tokens = 4
    model.generation_config.num_beams = 4  # an AR setting of the model: not applied to (nor refused by) NAR modes
    try:
        assert torch.equal(model.generate(input_ids, attention_mask=mask, mode="nar", nar_postprocess=False), expected["nar"])
        assert torch.equal(model.generate(input_ids, attention_mask=mask, mode="nar_verify"), expected["nar_verify"])
        assert model.generate(input_ids, attention_mask=mask, mode="nar", max_new_tokens=6, nar_postprocess=False).shape == (3, 6)
    finally:
        model.generation_config.max_new_tokens = None
        model.generation_config.num_beams = 1


@torch.no_grad()
def test_num_return_sequences_returns_the_best_candidates():
    model = tiny_model(2)
    input_ids, mask, _ = random_batch(batch_size=3, seed=4)
    out = model.generate(input_ids, attention_mask=mask, mode="nar", num_candidates=4, num_return_sequences=3,
                         return_dict_in_generate=True)
    assert out.sequences.size(0) == 9 and out.sequences_scores.shape == (9,)
    for b in range(3):
        ranked = sorted(range(4), key=lambda k: -out.candidate_scores[b, k].item())[:3]
        for j, k in enumerate(ranked):
            assert torch.equal(out.sequences[3 * b + j], out.candidates[b, k])
            assert out.sequences_scores[3 * b + j] == out.candidate_scores[b, k]
    best = model.generate(input_ids, attention_mask=mask, mode="nar", num_candidates=4)
    assert torch.equal(best, out.sequences[::3])


@torch.no_grad()
def test_nar_forward_without_decoder_inputs_uses_the_source_length(model):
    input_ids, mask, _ = random_batch(seed=6)
    out = model(input_ids=input_ids, attention_mask=mask, mode="nar")
    slots = torch.ones_like(input_ids)
    assert torch.equal(out.logits, model(input_ids=input_ids, attention_mask=mask, decoder_attention_mask=slots, mode="nar").logits)
    assert torch.equal(out.logits.argmax(-1), model.generate(input_ids, attention_mask=mask, mode="nar", nar_postprocess=False))


def test_static_cache_is_refused_in_one_line_in_every_mode(model):
    input_ids, mask, _ = random_batch()
    for mode in ("ar", "nar", "nar_verify", "semi_nar"):
        with pytest.raises(ValueError, match=f"mode='{mode}'.*cache_implementation='static'.*dynamic cache"):
            model.generate(input_ids, attention_mask=mask, mode=mode, max_new_tokens=4, cache_implementation="static")
    dynamic = model.generate(input_ids, attention_mask=mask, mode="ar", max_new_tokens=4, cache_implementation="dynamic")
    assert torch.equal(dynamic, model.generate(input_ids, attention_mask=mask, mode="ar", max_new_tokens=4))


@torch.no_grad()
def test_nar_verify_scores_are_ar_greedy_per_step_scores(model):
    input_ids, mask, _ = random_batch()
    options = dict(attention_mask=mask, max_new_tokens=6, output_scores=True, return_dict_in_generate=True)
    verify = model.generate(input_ids, mode="nar_verify", **options)
    greedy = model.generate(input_ids, mode="ar", num_beams=1, do_sample=False, original_compatible=False, **options)
    assert torch.equal(verify.sequences, greedy.sequences) and len(verify.scores) == len(greedy.scores)
    transition = model.compute_transition_scores(verify.sequences, verify.scores, normalize_logits=True)
    expected = model.compute_transition_scores(greedy.sequences, greedy.scores, normalize_logits=True)
    real = verify.sequences[:, 1:].ne(model.config.pad_token_id)
    assert real.any() and torch.allclose(transition[real], expected[real], atol=1e-5)


def test_bang_generation_config_holds_the_mode_validates_and_survives_save_load(tmp_path):
    from bang_nar import BangForConditionalGeneration
    from bang_nar.generation_bang import BangGenerationConfig

    model = tiny_model()
    assert isinstance(model.generation_config, BangGenerationConfig) and model.generation_config._from_model_config
    input_ids, mask, _ = random_batch()
    model.generation_config.mode, model.generation_config.num_candidates = "nar", 3
    model.generation_config.block_size = 2
    model.save_pretrained(tmp_path)
    loaded = BangForConditionalGeneration.from_pretrained(tmp_path).eval()
    config = loaded.generation_config
    assert isinstance(config, BangGenerationConfig)
    assert (config.mode, config.num_candidates, config.block_size, config.original_compatible) == ("nar", 3, 2, False)
    with torch.no_grad():  # plain generate() decodes in the saved mode with the saved candidates
        assert torch.equal(loaded.generate(input_ids, attention_mask=mask, max_new_tokens=5),
                           model.generate(input_ids, attention_mask=mask, mode="nar", num_candidates=3, max_new_tokens=5))
        explicit = BangGenerationConfig(mode="semi_nar", block_size=3, max_new_tokens=5)
        assert torch.equal(loaded.generate(input_ids, attention_mask=mask, generation_config=explicit),
                           model.generate(input_ids, attention_mask=mask, mode="semi_nar", block_size=3, max_new_tokens=5))
    for bad, message in (({"mode": "fast"}, "mode='fast' is not a BANG decoding mode"),
                         ({"block_size": 0}, "block_size must be a positive int"),
                         ({"num_candidates": 0}, "num_candidates must be a positive int"),
                         ({"original_compatible": "yes"}, "original_compatible must be True or False")):
        with pytest.raises(ValueError, match=message):
            BangGenerationConfig(**bad)


@torch.no_grad()
@pytest.mark.parametrize("mode", ["nar", "nar_verify", "semi_nar"])
def test_max_length_counts_the_start_token_like_ar(model, mode):
    """Seq2SeqTrainer passes `max_length=generation_max_length`: the one-pass modes give that many tokens with the
    [SEP] start, like AR (NAR has no start token: max_length - 1 slots)."""
    input_ids, mask, _ = random_batch()
    by_length = model.generate(input_ids, attention_mask=mask, mode=mode, max_length=5)
    assert torch.equal(by_length, model.generate(input_ids, attention_mask=mask, mode=mode, max_new_tokens=4))
    if mode == "nar":  # raw slots: exactly max_length - 1
        raw = model.generate(input_ids, attention_mask=mask, mode=mode, max_length=5, nar_postprocess=False)
        assert raw.size(1) == 4
    both = model.generate(input_ids, attention_mask=mask, mode=mode, max_length=5, max_new_tokens=3)
    assert torch.equal(both, model.generate(input_ids, attention_mask=mask, mode=mode, max_new_tokens=3))


@torch.no_grad()
def test_nar_verify_follows_original_compatible_like_ar_greedy():
    """On a converted model (original_compatible=True) nar_verify equals AR greedy under the same rules: no [SEP]
    first, no [PAD], [SEP] forced as the last allowed token."""
    input_ids, mask, _ = random_batch(batch_size=4, seed=7)
    checked_first = checked_forced = False
    for seed in range(4):
        model = tiny_model(seed)
        model.generation_config.original_compatible = True
        if seed == 3:  # favour [SEP] everywhere, so that plain greedy emits it first and the rule must act
            bonus = torch.zeros(model.config.vocab_size).index_fill(0, torch.tensor([102]), 8.0)
            model.lm_head.register_forward_hook(lambda module, args, out: out + bonus)
        for limit in (3, 8):
            verify = model.generate(input_ids, attention_mask=mask, mode="nar_verify", max_new_tokens=limit)
            greedy = model.generate(input_ids, attention_mask=mask, mode="ar", num_beams=1, do_sample=False,
                                    max_new_tokens=limit)
            assert torch.equal(verify, greedy), (seed, limit)
            plain = model.generate(input_ids, attention_mask=mask, mode="nar_verify", max_new_tokens=limit,
                                   original_compatible=False)
            checked_first |= bool(plain[:, 1].eq(102).any())  # the rules changed a first token
            checked_forced |= verify.size(1) == limit + 1 and bool(verify[:, limit].eq(102).any()) and not torch.equal(
                verify, plain)
    assert checked_first and checked_forced
