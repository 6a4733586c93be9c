"""Parity with the ORIGINAL fairseq BANG code (golden fixtures, docs/development.md#golden): converter + model, fp32, eager.

Tolerances (docs/development.md#golden): logits/hidden atol 1e-4, losses rtol 1e-5, tokens exact.
Rows at pad positions of the target are meaningless in the original and are excluded.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from bang_nar import postprocess_nar
from bang_nar.convert_bang_original_checkpoint import (
    adapt_pretrained_state,
    convert_bang_checkpoint,
    load_fairseq_checkpoint,
)
from bang_nar.tokenization_bang import load_bang_tokenizer

from .conftest import golden_path

ATOL = 1e-4
SETS = {"main": ("checkpoint.pt", "cases.safetensors"), "heads12_long": ("checkpoint_heads12_long.pt", "cases_heads12_long.safetensors")}


@pytest.fixture(scope="module", params=list(SETS))
def golden(request):
    checkpoint, cases = SETS[request.param]
    model = convert_bang_checkpoint(golden_path(checkpoint))
    return request.param, model, load_file(golden_path(cases))


def _project(logits: torch.Tensor, case: dict, name: str) -> dict[str, torch.Tensor]:
    """Views comparable with the stored form: full logits (main set) or subset/logsumexp/max/argmax (long set)."""
    if name in case:
        return {name: logits}
    ids = case["logit_vocab_ids"]
    return {
        f"{name}_subset": logits[..., ids],
        f"{name}_logsumexp": logits.logsumexp(-1),
        f"{name}_max": logits.max(-1).values,
    }


def _assert_close(ours: dict[str, torch.Tensor], case: dict, rows: torch.Tensor) -> None:
    for key, value in ours.items():
        error = (value - case[key])[rows].abs().max().item()
        assert error <= ATOL, f"{key}: max abs error {error:.3g} > {ATOL}"


@torch.no_grad()
def test_encoder_right_and_left_padding(golden):
    _, model, case = golden
    for side, src, expected in (
        ("right", case["src_tokens_right_padded"], case["encoder_out_right_aligned"]),
        ("left", case["src_tokens_left_padded"], case["encoder_out_left_padded"]),
    ):
        mask = src.ne(0).long()
        states = model.get_encoder()(input_ids=src, attention_mask=mask).last_hidden_state
        error = (states - expected)[mask.bool()].abs().max().item()
        assert error <= ATOL, f"{side}-padded encoder: {error:.3g}"


@torch.no_grad()
@pytest.mark.parametrize("padding", ["right", "left"])
def test_ar_teacher_forced(golden, padding):
    name, model, case = golden
    src = case[f"src_tokens_{padding}_padded"]
    out = model(input_ids=src, attention_mask=src.ne(0).long(), decoder_input_ids=case["prev_output_tokens"], mode="ar", use_cache=False,
                output_hidden_states=True)
    rows = case["target"].ne(0)
    _assert_close(_project(out.logits, case, "ar_logits"), case, rows)
    _assert_close({"ar_main_stream_hidden": out.main_stream_hidden_state}, case, rows)
    decoder_out = model.get_decoder()(
        input_ids=case["prev_output_tokens"], encoder_hidden_states=out.encoder_last_hidden_state,
        encoder_attention_mask=src.ne(0).long(), mode="ar",
    )
    _assert_close({"ar_predict_stream_hidden": decoder_out.last_hidden_state}, case, rows)
    if "ar_logits_argmax" in case:
        assert torch.equal(out.logits.argmax(-1)[rows], case["ar_logits_argmax"][rows])


@torch.no_grad()
def test_ar_incremental_with_cache(golden):
    _, model, case = golden
    src, prev = case["src_tokens_right_padded"], case["prev_output_tokens"]
    mask = src.ne(0).long()
    encoder_outputs = model.get_encoder()(input_ids=src, attention_mask=mask)
    cache, steps = None, []
    for t in range(prev.size(1)):
        out = model(attention_mask=mask, encoder_outputs=encoder_outputs, decoder_input_ids=prev[:, t : t + 1], cache=cache, use_cache=True, mode="ar")
        cache = out.cache
        steps.append(out.logits)
    _assert_close(_project(torch.cat(steps, 1), case, "ar_incremental_logits"), case, case["target"].ne(0))


@torch.no_grad()
def test_nar_training_and_long_lengths(golden):
    _, model, case = golden
    src = case["src_tokens_right_padded"]
    mask = src.ne(0).long()
    prev = case["prev_output_tokens"]
    out = model(input_ids=src, attention_mask=mask, decoder_input_ids=prev, mode="nar")
    _assert_close(_project(out.logits, case, "nar_logits"), case, prev.ne(0))
    hidden = model.get_decoder()(input_ids=prev, encoder_hidden_states=out.encoder_last_hidden_state, encoder_attention_mask=mask, mode="nar")
    _assert_close({"nar_hidden": hidden.last_hidden_state}, case, prev.ne(0))

    long_input = case["nar_long_decoder_input"]
    out = model(input_ids=src, attention_mask=mask, decoder_input_ids=long_input, mode="nar")
    everywhere = torch.ones_like(long_input, dtype=torch.bool)
    _assert_close(_project(out.logits, case, "nar_long_logits"), case, everywhere)
    if "nar_long_logits_argmax" in case:
        assert torch.equal(out.logits.argmax(-1), case["nar_long_logits_argmax"])


@torch.no_grad()
def test_losses(golden):
    """Label-smoothed (ε = 0.1, the original criterion; passed explicitly as trainers do) and plain NLL losses."""
    _, model, case = golden
    src = case["src_tokens_right_padded"]
    labels = case["target"]  # pad 0 is treated as ignored, like the original criterion
    ntokens = int(case["ntokens"].reshape(-1)[0])
    for mode in ("ar", "nar"):
        for epsilon, key in ((0.1, f"loss_{mode}"), (0.0, f"loss_{mode}_nll")):
            loss = model(input_ids=src, attention_mask=src.ne(0).long(), labels=labels, mode=mode, smoothing_eps=epsilon).loss
            expected = float(case[key].reshape(-1)[0]) / ntokens
            assert loss.item() == pytest.approx(expected, rel=1e-5), key
        # The golden losses are BANG's criterion, ε = 0.1, which trainers pass: forward's default is plain cross-entropy.
        summed = model(input_ids=src, attention_mask=src.ne(0).long(), labels=labels, mode=mode, num_items_in_batch=1,
                       smoothing_eps=0.1).loss
        assert summed.item() == pytest.approx(float(case[f"loss_{mode}"].reshape(-1)[0]), rel=1e-5)


@torch.no_grad()
def test_nar_generator_tokens_scores_and_postprocessing(golden):
    name, model, case = golden
    src = case["src_tokens_right_padded"]
    out = model.generate(src, attention_mask=src.ne(0).long(), mode="nar", return_dict_in_generate=True)
    assert torch.equal(out.raw_sequences, case["nar_generate_tokens"])
    assert (out.positional_scores - case["nar_generate_positional_scores"]).abs().max().item() <= ATOL
    if name != "main":
        return
    # The last three post-processing cases are the original generator's strings for this batch.
    tokenizer = load_bang_tokenizer(golden_path("vocab.txt"))
    generator_cases = json.loads(golden_path("postprocess_cases.json").read_text())["cases"][-3:]
    for row, expected in zip(out.raw_sequences, generator_cases):
        line = " ".join(tokenizer.convert_ids_to_tokens(row.tolist()))
        assert line == expected["input"]
        assert postprocess_nar(line) == expected["output"]
    from bang_nar.postprocess import decode_nar

    assert decode_nar(tokenizer, out.sequences) == [c["output"] for c in generator_cases]


@torch.no_grad()
def test_beam_search_original_compatible_best_hypotheses():
    """docs/decoding.md#options: beam 4, lenpen 1.2, max_len_b 16 (→ max_new_tokens 17, forced [SEP] keeps its score)."""
    model = convert_bang_checkpoint(golden_path("checkpoint.pt"))
    case = load_file(golden_path("cases.safetensors"))
    src = case["src_tokens_right_padded"]
    out = model.generate(
        src, attention_mask=src.ne(0).long(), mode="ar", num_beams=4, length_penalty=1.2, max_new_tokens=17,
        original_compatible=True, return_dict_in_generate=True, output_scores=True,
    )
    for i in range(src.size(0)):
        length = int(case["beam_lengths"][i, 0])
        assert out.sequences[i, 1 : 1 + length].tolist() == case["beam_best_tokens"][i, :length].tolist()
    assert (out.sequences_scores - case["beam_best_score"]).abs().max().item() <= ATOL


@torch.no_grad()
def test_converted_model_decodes_like_the_original_with_plain_generate(tmp_path):
    """The converter stores fairseq-generate's settings (docs/decoding.md#original); the golden beam used max_len_b 16."""
    model = convert_bang_checkpoint(golden_path("checkpoint.pt"))
    settings = model.generation_config
    assert (settings.num_beams, settings.length_penalty, settings.max_length) == (4, 1.2, 202)  # max_len_b 200
    assert settings.original_compatible is True
    model = convert_bang_checkpoint(golden_path("checkpoint.pt"), tmp_path / "hf", max_len_b=16)
    case = load_file(golden_path("cases.safetensors"))
    src = case["src_tokens_right_padded"]
    from bang_nar import BangForConditionalGeneration

    for candidate in (model, BangForConditionalGeneration.from_pretrained(tmp_path / "hf")):
        out = candidate.generate(src, attention_mask=src.ne(0).long(), return_dict_in_generate=True, output_scores=True)
        for i in range(src.size(0)):
            length = int(case["beam_lengths"][i, 0])
            assert out.sequences[i, 1 : 1 + length].tolist() == case["beam_best_tokens"][i, :length].tolist()
        assert (out.sequences_scores - case["beam_best_score"]).abs().max().item() <= ATOL


@torch.no_grad()
def test_beam_search_without_original_settings_differs_on_forced_eos_sentence():
    """Documented difference (docs/decoding.md#options): HF's default stopping keeps searching past fairseq's point."""
    model = convert_bang_checkpoint(golden_path("checkpoint.pt"))
    case = load_file(golden_path("cases.safetensors"))
    src = case["src_tokens_right_padded"]
    sequences = model.generate(src, attention_mask=src.ne(0).long(), mode="ar", num_beams=4, length_penalty=1.2,
                               max_new_tokens=17, original_compatible=False)
    matches = [
        sequences[i, 1 : 1 + int(case["beam_lengths"][i, 0])].tolist()
        == case["beam_best_tokens"][i, : int(case["beam_lengths"][i, 0])].tolist()
        for i in range(3)
    ]
    assert not all(matches)


def test_pretrained_adaptation_rules():
    """docs/converter.md#mapping: position growth by rotated copies, 2-row ngram keeps row 1, --load-sep."""
    state, _ = load_fairseq_checkpoint(golden_path("checkpoint.pt"))
    golden = load_file(golden_path("pretrained_adaptation.safetensors"))
    pretrained = dict(state)
    for key in ("encoder.embed_positions.weight", "decoder.embed_positions.weight", "decoder.ngram_input_embed.weight"):
        pretrained[key] = golden[f"pretrained.{key}"]
    for mode, load_sep in (("no_load_sep", False), ("load_sep", True)):
        adapted = adapt_pretrained_state(pretrained, 512, load_sep=load_sep)
        for key in ("encoder.embed_positions.weight", "decoder.embed_positions.weight", "decoder.ngram_input_embed.weight"):
            assert torch.equal(adapted[key], golden[f"adapted.{mode}.{key}"]), (mode, key)
        for key in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            assert torch.equal(adapted[key][0:4], golden[f"adapted.{mode}.embed_tokens.rows_0_to_3"]), (mode, key)
            assert torch.equal(adapted[key][102:103], golden[f"adapted.{mode}.embed_tokens.row_102"]), (mode, key)


def test_postprocess_cases():
    cases = json.loads(golden_path("postprocess_cases.json").read_text())["cases"]
    assert len(cases) == 30
    for case in cases:
        assert postprocess_nar(case["input"]) == case["output"], case["name"]


def test_tokenizer_matches_golden_vocab_and_ids():
    tokenizer = load_bang_tokenizer(golden_path("vocab.txt"))  # fairseq "token count" format
    bundled = load_bang_tokenizer()
    assert len(tokenizer) == len(bundled) == 30522
    assert tokenizer.get_vocab() == bundled.get_vocab()
    ids = tokenizer.convert_tokens_to_ids(["[PAD]", "[X_SEP]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    assert ids == [0, 2, 100, 101, 102, 103]
    case = load_file(golden_path("cases.safetensors"))
    encoded = tokenizer(["a cat sat ."])["input_ids"][0]
    length = int(case["src_lengths"][2])
    assert encoded == case["src_tokens_right_padded"][2, :length].tolist()  # source = tokens + [SEP], no [CLS]
