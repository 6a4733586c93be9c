"""bang_nar.multimodality: seeded generator, its word-level tokenizer, multi-reference scoring."""

from __future__ import annotations

from collections import Counter

import datasets
import pytest
from transformers import AutoTokenizer

from bang_nar.data import tokenize_pairs
from bang_nar.multimodality import (
    SOURCE_WORDS,
    SPECIAL_TOKENS,
    VOCABULARY,
    build_word_tokenizer,
    make_multimodality_task,
    multi_reference_scores,
    translate,
)


@pytest.fixture(scope="module")
def task4():
    return make_multimodality_task(num_modes=4, num_train=4000, num_eval=200, seed=3)


def test_same_seed_same_data_other_seed_other_data():
    first, again = make_multimodality_task(2, 50, 20, seed=7), make_multimodality_task(2, 50, 20, seed=7)
    other = make_multimodality_task(2, 50, 20, seed=8)
    assert first.train.to_list() == again.train.to_list() and first.eval.to_list() == again.eval.to_list()
    assert first.train["source"] != other.train["source"]


def test_translation_by_hand():
    # apple -> red / scarlet / redish / scarletish / redly / scarletly / reder / scarleter; river -> blue / azure / ...
    assert [translate("apple river", c) for c in range(8)] == [
        "red blue", "scarlet azure", "redish blueish", "scarletish azureish", "redly bluely", "scarletly azurely",
        "reder blueer", "scarleter azureer"]  # fmt: skip
    with pytest.raises(ValueError, match="'banana' is not a source word"):
        translate("apple banana", 0)


@pytest.mark.parametrize("num_modes", [1, 2, 4, 8], ids=lambda m: f"M={m}")
def test_each_source_has_m_distinct_valid_targets(num_modes):
    task = make_multimodality_task(num_modes, num_train=300, num_eval=300, seed=0)
    assert task.eval.column_names == ["source", "target", "choice", "references"]
    for row in task.eval:
        assert len(set(row["references"])) == num_modes
        assert row["references"] == task.valid_targets(row["source"])
        assert row["target"] == row["references"][row["choice"]]
    for row in task.train:
        assert row["target"] == translate(row["source"], row["choice"]) and 0 <= row["choice"] < num_modes


def test_shape_of_the_task(task4):
    assert len(task4.train) == 4000 and len(task4.eval) == 200
    assert len(VOCABULARY) == len(set(VOCABULARY)) == 900
    lengths = Counter(len(s.split()) for s in task4.train["source"])
    assert set(lengths) == set(range(6, 13))
    assert all(word in SOURCE_WORDS for s in task4.train["source"][:200] for word in s.split())
    assert not set(task4.eval["source"]) & set(task4.train["source"])  # eval sources are unseen


def test_training_targets_drawn_uniformly(task4):
    counts = Counter(task4.train["choice"])
    assert set(counts) == {0, 1, 2, 3}
    assert all(abs(n - 1000) < 120 for n in counts.values())  # ~4 sd of a binomial(4000, 1/4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_modes=3"):
        make_multimodality_task(3, 10, 10, seed=0)
    with pytest.raises(ValueError, match="min_length"):
        make_multimodality_task(1, 10, 10, seed=0, min_length=8, max_length=4)


class TestWordTokenizer:
    def test_ids_template_and_specials(self, task4):
        tok = build_word_tokenizer(task4)
        assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
        assert (tok.pad_token_id, tok.unk_token_id, tok.sep_token_id, tok.eos_token_id, tok.mask_token_id) == (0, 1, 3, 3, 4)
        assert len(tok) == 905
        assert tok("apple river")["input_ids"] == [5, 6, 3]  # words + [SEP], no [CLS]
        assert tok("apple banana")["input_ids"] == [5, 1, 3]
        assert "token_type_ids" not in tok("apple")

    def test_decode_round_trip(self, task4):
        tok = build_word_tokenizer(task4)
        target = task4.eval[0]["target"]
        assert tok.decode(tok(target)["input_ids"], skip_special_tokens=True) == target

    def test_save_pretrained_round_trip(self, task4, tmp_path):
        tok = build_word_tokenizer(task4)
        tok.save_pretrained(tmp_path)
        loaded = AutoTokenizer.from_pretrained(tmp_path)
        text = task4.train[0]["source"]
        assert loaded(text)["input_ids"] == tok(text)["input_ids"]
        assert loaded.get_vocab() == tok.get_vocab()
        assert (loaded.pad_token, loaded.eos_token, loaded.sep_token, loaded.mask_token) == ("[PAD]", "[SEP]", "[SEP]", "[MASK]")

    def test_from_texts(self):
        tok = build_word_tokenizer(["b a b", "c b a [SEP]"], max_vocab_size=2)
        assert tok.get_vocab() == {**{t: i for i, t in enumerate(SPECIAL_TOKENS)}, "b": 5, "a": 6}
        assert tok("a c")["input_ids"] == [6, 1, 3]
        with pytest.raises(TypeError, match="iterable of texts"):
            build_word_tokenizer("a b")

    def test_tokenize_pairs_fits_without_truncation(self, task4):
        tok = build_word_tokenizer(task4)
        ds, report = tokenize_pairs(task4.train.select(range(200)), tok, 16, 16)
        assert report.truncated_sources == report.truncated_targets == 0
        row = ds[0]
        assert row["labels"] == tok(row["target"])["input_ids"] and row["input_ids"][-1] == 3


class TestMultiReferenceScores:
    def test_any_valid_target_is_perfect(self, task4):
        rows = task4.eval.select(range(20))
        predictions = [refs[i % 4] for i, refs in enumerate(rows["references"])]
        assert multi_reference_scores(predictions, rows["references"]) == {
            "bleu": pytest.approx(100.0), "mode_consistency": 100.0, "num_samples": 20}

    def test_mixed_modes_are_inconsistent(self):
        # The NAR failure: first half of the words from table A, second half from table B.
        source = "apple river stone cloud garden window"
        a, b = translate(source, 0).split(), translate(source, 1).split()
        mixed = " ".join(a[:3] + b[3:])
        references = [translate(source, c) for c in range(4)]
        scores = multi_reference_scores([mixed, "  " + references[2] + " "], [references, references])
        assert scores["mode_consistency"] == 50.0
        assert 0 < scores["bleu"] < 100

    def test_errors(self):
        with pytest.raises(ValueError, match="1 predictions but 2 reference lists"):
            multi_reference_scores(["a"], [["a"], ["b"]])


def test_eval_references_feature_is_a_string_list(task4):
    assert task4.eval.features["references"] == datasets.Sequence(datasets.Value("string"))


def test_word_order_variant_by_hand():
    """Issue 21: choice c = table c // 2, rotated left by one word when c is odd."""
    assert [translate("apple river stone", c, word_order=True) for c in range(4)] == [
        "red blue green", "blue green red", "scarlet azure emerald", "azure emerald scarlet"]  # fmt: skip
    assert translate("apple river", 15, word_order=True) == "azureer scarleter"  # table 7 (B + -er), rotated


@pytest.mark.parametrize("num_modes", [2, 16], ids=lambda m: f"M={m}")
def test_word_order_variant_has_m_distinct_targets_in_two_orders(num_modes):
    task = make_multimodality_task(num_modes, num_train=200, num_eval=100, seed=0, word_order=True)
    assert task.word_order
    for row in task.eval:
        refs = row["references"]
        assert len(set(refs)) == num_modes and refs == task.valid_targets(row["source"])
        assert row["target"] == refs[row["choice"]]
        # the same words in another order: each rotated target is a permutation of its plain one
        assert all(sorted(refs[c].split()) == sorted(refs[c + 1].split()) != refs[c + 1].split()
                   for c in range(0, num_modes, 2))  # fmt: skip
    assert set(task.train["choice"]) == set(range(num_modes))
    with pytest.raises(ValueError, match="num_modes=1 with word_order=True"):
        make_multimodality_task(1, 10, 10, seed=0, word_order=True)
