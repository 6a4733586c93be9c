"""Transformers' generation contract in every mode (issue 23): per-step scores that `compute_transition_scores`
reads, and the constraints `suppress_tokens`, `begin_suppress_tokens`, `bad_words_ids`, `no_repeat_ngram_size`
honoured or refused in one line (docs/decoding.md#constraints)."""

import pytest
import torch

from bang_nar.pretraining import pretraining_forward

from .conftest import random_batch, tiny_model

SEP, PAD, CLS = 102, 0, 101


@pytest.fixture(scope="module")
def model():
    return tiny_model(1)


def _nar_reference(log_probs: torch.Tensor, raw: list[int], dedup: bool = True) -> tuple[list[int], list[float]]:
    """The original post-processing written out again: tokens kept from the slots of `raw`, and each one's NAR
    log-prob (0 for a `[SEP]` appended to a row that has none)."""
    tokens, scores, last = [], [], None
    for slot, token in enumerate(raw):
        if token == SEP:
            if tokens:
                return tokens + [SEP], scores + [log_probs[slot, SEP].item()]
            continue
        if token == CLS or (dedup and token == last):
            continue
        tokens.append(token)
        scores.append(log_probs[slot, token].item())
        last = token
    return tokens + [SEP], scores + [0.0]


# ---- per-step scores ------------------------------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("postprocess", [True, False])
def test_nar_transition_scores_are_the_slot_log_probs_of_the_returned_tokens(model, postprocess):
    input_ids, mask, _ = random_batch(batch_size=4, source_length=14, seed=5)
    out = model.generate(input_ids, attention_mask=mask, mode="nar", nar_postprocess=postprocess,
                         output_scores=True, output_logits=True, return_dict_in_generate=True)
    assert len(out.scores) == len(out.logits) == out.sequences.size(1) and out.scores[0].shape == (4, 128)
    transition = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    assert transition.shape == out.sequences.shape
    # Independently: the NAR forward pass, one slot per source token.
    log_probs = model(input_ids=input_ids, attention_mask=mask, mode="nar").logits.log_softmax(-1)
    for b in range(4):
        raw = out.raw_sequences[b].tolist()
        if postprocess:
            tokens, expected = _nar_reference(log_probs[b], raw)
        else:
            tokens, expected = raw, [log_probs[b, t, token].item() for t, token in enumerate(raw)]
        assert out.sequences[b, : len(tokens)].tolist() == tokens
        torch.testing.assert_close(transition[b, : len(tokens)], torch.tensor(expected), atol=1e-5, rtol=0)
    # Without constraints the processed scores are the raw logits; the original positional scores stay reachable.
    assert all(torch.equal(s, logit) for s, logit in zip(out.scores, out.logits))
    torch.testing.assert_close(out.positional_scores, out.slot_logits.max(-1).values)
    assert torch.equal(out.slot_logits.argmax(-1), out.raw_sequences)


@torch.no_grad()
def test_nar_candidate_transition_scores_follow_the_slots_of_each_returned_candidate(model):
    input_ids, mask, _ = random_batch(batch_size=3, source_length=14, seed=6)
    out = model.generate(input_ids, attention_mask=mask, mode="nar", num_candidates=4, num_return_sequences=2,
                         output_scores=True, return_dict_in_generate=True)
    assert out.sequences.size(0) == 6 and len(out.scores) == out.sequences.size(1)
    transition = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    log_probs = model(input_ids=input_ids, attention_mask=mask, mode="nar").logits.log_softmax(-1)
    for row in range(6):
        b, previous = row // 2, -1
        for j, token in enumerate(out.sequences[row].tolist()):
            if token == PAD:
                break
            # A candidate keeps one token per slot, in slot order: each score is the NAR log-prob of its token at a
            # later slot than the previous one (0 for an appended [SEP]).
            if token == SEP and transition[row, j].item() == 0.0:
                break
            later = [s for s in range(previous + 1, log_probs.size(1))
                     if abs(log_probs[b, s, token].item() - transition[row, j].item()) < 1e-5]
            assert later, (row, j)
            previous = later[0]


@torch.no_grad()
@pytest.mark.parametrize("block_size", [1, 3])
def test_semi_nar_transition_scores_are_the_group_log_probs(model, block_size):
    input_ids, mask, _ = random_batch(batch_size=3, source_length=9, seed=7)
    out = model.generate(input_ids, attention_mask=mask, mode="semi_nar", block_size=block_size, max_new_tokens=10,
                         output_scores=True, output_logits=True, return_dict_in_generate=True)
    seq = out.sequences
    assert len(out.scores) == len(out.logits) == seq.size(1) - 1
    transition = model.compute_transition_scores(seq, out.scores, normalize_logits=True)
    assert transition.shape == seq[:, 1:].shape
    # Independently: the n-stream forward teacher-forced on the output (test_semi_nar.py's group argmax).
    full = pretraining_forward(model, input_ids, mask, decoder_input_ids=seq[:, :-1], num_streams=block_size,
                               return_logits=True).logits.log_softmax(-1)  # [B, n, T, V]
    for b in range(seq.size(0)):
        row = seq[b, 1:].tolist()
        length = len(row) if PAD not in row else row.index(PAD)
        for t in range(length):
            g = (t // block_size) * block_size
            assert transition[b, t].item() == pytest.approx(full[b, t - g, t, row[t]].item(), abs=1e-5), (b, t)
        assert all(not s[b].any() for s in out.scores[length:])  # zeros after the row's end


@torch.no_grad()
def test_nar_verify_transition_scores_are_the_ar_log_probs(model):
    input_ids, mask, _ = random_batch(batch_size=4, source_length=12, seed=8)
    out = model.generate(input_ids, attention_mask=mask, mode="nar_verify", max_new_tokens=10, output_scores=True,
                         output_logits=True, return_dict_in_generate=True)
    transition = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    logits = model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=out.sequences[:, :-1], mode="ar").logits
    expected = logits.log_softmax(-1).gather(-1, out.sequences[:, 1:, None]).squeeze(-1)
    real = out.sequences[:, 1:].ne(PAD)
    assert real.any() and torch.allclose(transition[real], expected[real], atol=1e-5)
    assert all(torch.equal(s, logit) for s, logit in zip(out.scores, out.logits))


# ---- constraints: every mode honours or refuses each option ----------------------------------------------------------

MODES = {
    "ar": dict(mode="ar", num_beams=1, do_sample=False, original_compatible=False),
    "nar": dict(mode="nar"),
    "nar_candidates": dict(mode="nar", num_candidates=3),
    "nar_verify": dict(mode="nar_verify"),
    "semi_nar": dict(mode="semi_nar", block_size=3),
}
OPTIONS = ("suppress_tokens", "begin_suppress_tokens", "bad_words_ids", "bad_words_ids_multi", "no_repeat_ngram_size")
# docs/decoding.md#constraints: "ok" = honoured; otherwise the refusal's message (names the option and alternatives).
REFUSED_MULTI = "does not support multi-token bad_words_ids .*mode='nar_verify'.*mode='ar'"
TABLE = {
    "ar": dict.fromkeys(OPTIONS, "ok"),
    "nar": {**dict.fromkeys(OPTIONS, "ok"), "bad_words_ids_multi": REFUSED_MULTI},
    "nar_candidates": {**dict.fromkeys(OPTIONS, "ok"), "bad_words_ids_multi": REFUSED_MULTI,
                       "no_repeat_ngram_size": "no_repeat_ngram_size=2 with num_candidates=3: use num_candidates=1, "
                                               "mode='nar_verify' or mode='ar'"},
    "nar_verify": dict.fromkeys(OPTIONS, "ok"),
    "semi_nar": {**dict.fromkeys(OPTIONS, "ok"), "bad_words_ids_multi": REFUSED_MULTI,
                 "no_repeat_ngram_size": "does not support no_repeat_ngram_size=2: .*mode='nar_verify'.*mode='ar'"},
}


def _outputs(model, mode: str, input_ids, mask, with_scores: bool = False, **options):
    """Returned ids without the start token, and the ids the constraints apply to (NAR: the raw slots); with
    `with_scores`, also the per-step scores [N, T, V] aligned with the first."""
    out = model.generate(input_ids, attention_mask=mask, max_new_tokens=14, return_dict_in_generate=True,
                         output_scores=with_scores, **MODES[mode], **options)
    if mode.startswith("nar") and mode != "nar_verify":
        ids = (out.sequences, out.raw_sequences)
    else:
        ids = (out.sequences[:, 1:], out.sequences[:, 1:])
    return (*ids, torch.stack(out.scores, dim=1)) if with_scores else ids


def _ngrams(row: list[int], n: int) -> list[tuple[int, ...]]:
    row = row[: row.index(PAD)] if PAD in row else row
    return [tuple(row[i : i + n]) for i in range(len(row) - n + 1)]


def _option(name: str, plain: torch.Tensor, slots: torch.Tensor) -> dict:
    """A value of `name` that the unconstrained output violates, so that honouring it must change something."""
    counts = torch.bincount(plain[(plain != PAD) & (plain != SEP)].flatten(), minlength=128)
    frequent = int(counts.argmax())
    if name == "suppress_tokens":
        return {name: [frequent]}
    if name == "bad_words_ids":
        return {name: [[frequent]]}
    if name == "begin_suppress_tokens":
        return {name: sorted(set(slots[:, 0].tolist()))}
    if name == "bad_words_ids_multi":
        pair = next(g for row in plain.tolist() for g in _ngrams(row, 2) if SEP not in g)
        return {"bad_words_ids": [list(pair)]}
    return {name: 2}


def _honoured(name: str, value: dict, out: torch.Tensor, slots: torch.Tensor) -> bool:
    rows = out.tolist()
    if name in ("suppress_tokens", "bad_words_ids"):
        banned = value.get("suppress_tokens") or value["bad_words_ids"][0]
        return not any(token in banned for row in rows for token in row)
    if name == "begin_suppress_tokens":
        return not any(token in value[name] for token in slots[:, 0].tolist())
    if name == "bad_words_ids_multi":
        return tuple(value["bad_words_ids"][0]) not in {g for row in rows for g in _ngrams(row, 2)}
    grams = [_ngrams(row, 2) for row in slots.tolist()]
    return all(len(g) == len(set(g)) for g in grams)


@torch.no_grad()
@pytest.mark.parametrize("name", OPTIONS)
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_honours_or_refuses_each_constraint(model, mode, name):
    input_ids, mask, _ = random_batch(batch_size=4, source_length=16, seed=11)
    plain, plain_slots = _outputs(model, mode, input_ids, mask)
    value = _option(name, plain, plain_slots)
    assert not _honoured(name, value, plain, plain_slots)  # the option has something to do
    expected = TABLE[mode][name]
    if expected != "ok":
        with pytest.raises(ValueError, match=f"mode='{MODES[mode]['mode']}'.*{expected}"):
            _outputs(model, mode, input_ids, mask, **value)
        return
    out, slots, scores = _outputs(model, mode, input_ids, mask, with_scores=True, **value)
    assert _honoured(name, value, out, slots)
    if mode != "nar_candidates":  # the scores are the constrained ones: their argmax is the token chosen
        real = out.ne(PAD)
        assert torch.equal(scores.argmax(-1)[real], out[real])
    if mode == "nar_verify":  # exactly AR greedy under the same constraint
        ar, _ = _outputs(model, "ar", input_ids, mask, **value)
        assert torch.equal(out, ar)


@torch.no_grad()
def test_per_slot_processors_change_nothing_where_nothing_is_suppressed(model):
    input_ids, mask, _ = random_batch(batch_size=4, source_length=14, seed=5)
    options = dict(attention_mask=mask, output_scores=True, return_dict_in_generate=True)
    for mode, extra in [("nar", {}), ("nar", {"num_candidates": 3}), ("semi_nar", {"max_new_tokens": 10}),
                        ("nar_verify", {"max_new_tokens": 10})]:
        plain = model.generate(input_ids, mode=mode, **extra, **options)
        chosen = set(plain.sequences.flatten().tolist()) | set(getattr(plain, "raw_sequences", plain.sequences).flatten().tolist())
        unused = next(t for t in range(1, 128) if t not in chosen | {CLS})
        constrained = model.generate(input_ids, mode=mode, suppress_tokens=[unused], bad_words_ids=[[unused]],
                                     begin_suppress_tokens=[unused], **extra, **options)
        assert torch.equal(constrained.sequences, plain.sequences), mode
        for before, after in zip(plain.scores, constrained.scores):
            keep = torch.ones(128, dtype=torch.bool)
            keep[unused] = False
            assert torch.equal(before[:, keep], after[:, keep]) and after[:, unused].eq(0).logical_or(
                after[:, unused].isneginf()).all()


@torch.no_grad()
def test_nar_verify_is_ar_greedy_under_constraints_stored_in_the_generation_config():
    model = tiny_model(2)
    input_ids, mask, _ = random_batch(batch_size=4, source_length=16, seed=12)
    plain = model.generate(input_ids, attention_mask=mask, mode="nar_verify", max_new_tokens=12)
    frequent = int(torch.bincount(plain[plain.gt(PAD) & plain.ne(SEP)]).argmax())
    model.generation_config.suppress_tokens = [frequent]
    model.generation_config.no_repeat_ngram_size = 2
    verify = model.generate(input_ids, attention_mask=mask, mode="nar_verify", max_new_tokens=12)
    greedy = model.generate(input_ids, attention_mask=mask, mode="ar", num_beams=1, do_sample=False, max_new_tokens=12)
    assert torch.equal(verify, greedy) and not verify.eq(frequent).any() and not torch.equal(verify, plain)


@torch.no_grad()
def test_a_stored_constraint_a_mode_cannot_apply_is_refused_and_can_be_dropped():
    model = tiny_model(3)
    input_ids, mask, _ = random_batch(seed=13)
    plain = model.generate(input_ids, attention_mask=mask, mode="semi_nar", max_new_tokens=6)
    model.generation_config.no_repeat_ngram_size = 2
    with pytest.raises(ValueError, match="mode='semi_nar'.*no_repeat_ngram_size=2.*no_repeat_ngram_size=0 drops"):
        model.generate(input_ids, attention_mask=mask, mode="semi_nar", max_new_tokens=6)
    dropped = model.generate(input_ids, attention_mask=mask, mode="semi_nar", max_new_tokens=6, no_repeat_ngram_size=0)
    assert torch.equal(dropped, plain)


@torch.no_grad()
def test_suppressing_sep_lets_no_nar_candidate_end_early(model):
    input_ids, mask, _ = random_batch(batch_size=4, source_length=14, seed=5)
    out = model.generate(input_ids, attention_mask=mask, mode="nar", num_candidates=4, suppress_tokens=[SEP],
                         nar_postprocess=False, return_dict_in_generate=True)
    # Without a [SEP] from the model, every candidate runs over all slots and gets the appended [SEP] only.
    real = out.candidates.ne(PAD)
    assert torch.equal(real.sum(-1), torch.full((4, 4), 15)) and out.candidates[..., -1].eq(SEP).all()
    plain = model.generate(input_ids, attention_mask=mask, mode="nar", num_candidates=4, nar_postprocess=False,
                           return_dict_in_generate=True)
    assert plain.candidates.ne(PAD).sum(-1).lt(15).any()  # the unconstrained candidates do end early
