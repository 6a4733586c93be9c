"""bang_nar.evaluation and the shipped `evaluate` metric scripts, against hand-computed values."""

from __future__ import annotations

import json

import nltk
import pytest

from bang_nar.evaluation import (
    METRIC_NAMES,
    compute_generation_metrics,
    latency,
    load_metric,
    metric_path,
    write_results,
)


def wordnet_available() -> bool:
    try:
        nltk.corpus.wordnet.synsets("dog")
    except LookupError:
        return False
    return True


@pytest.fixture(scope="module")
def metrics():
    return {name: load_metric(name) for name in METRIC_NAMES}


def test_metrics_load_from_local_package_paths(metrics):
    for name, module in metrics.items():
        script = metric_path(name) / f"{name}.py"
        assert script.is_file()
        # evaluate copies a local script into its modules cache under the script's own name and hash.
        assert type(module).__module__.split(".")[2] == name
    with pytest.raises(ValueError, match="Unknown metric 'bleurt'"):
        load_metric("bleurt")


class TestCorpusBleu:
    def test_identical_is_100(self, metrics):
        result = metrics["corpus_bleu"].compute(predictions=["the cat sat on the mat"], references=["the cat sat on the mat"])
        assert result["bleu"] == pytest.approx(100.0)

    def test_hand_computed(self, metrics):
        # hyp "the cat sat on the mat" vs ref "the cat sat on a mat", both 6 tokens (BP = 1):
        # clipped matches 1-gram 5/6, 2-gram 3/5, 3-gram 2/4, 4-gram 1/3 -> BLEU = (5/6 * 3/5 * 2/4 * 1/3) ** (1/4)
        result = metrics["corpus_bleu"].compute(predictions=["the cat sat on the mat"], references=["the cat sat on a mat"])
        assert result["bleu"] == pytest.approx(100 * (1 / 12) ** 0.25)
        assert result["precisions"] == pytest.approx([500 / 6, 60.0, 50.0, 100 / 3])
        assert result["brevity_penalty"] == 1.0

    def test_multi_reference_and_ragged(self, metrics):
        # Each prediction equals one of its references: 100 whichever position it sits in.
        result = metrics["corpus_bleu"].compute(
            predictions=["a b c d e", "v w x y z"], references=[["q r s t u", "a b c d e"], ["v w x y z"]]
        )
        assert result["bleu"] == pytest.approx(100.0)


class TestSentenceBleu:
    def test_an_exact_match_scores_100_and_nothing_scores_more(self, metrics):
        # Issue 24: smoothing method 7 gave an exact match 111.67 on a scale documented as 0-100.
        exact = metrics["sentence_bleu"].compute(predictions=["the cat sat on the mat"], references=["the cat sat on the mat"])
        assert exact["sentence_bleu"] == pytest.approx(100.0)
        pairs = [("a b c d", "a b c d"), ("the the the the", "the the the"), ("x y z w v", "x y z w v u")]
        for prediction, reference in pairs:
            assert metrics["sentence_bleu"].compute(predictions=[prediction], references=[reference])["sentence_bleu"] <= 100.0

    def test_zero_counts_follow_nltk_method4(self, metrics):
        # "the cat sat on a mat" vs "the cat sat on the mat": p = 5/6, 3/5, 2/4, 1/3, no zero counts to smooth.
        result = metrics["sentence_bleu"].compute(predictions=["the cat sat on a mat"], references=["the cat sat on the mat"])
        assert result["sentence_bleu"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)

    def test_average_with_empty_prediction(self, metrics):
        one = metrics["sentence_bleu"].compute(predictions=["the cat sat on the mat"], references=["the cat sat on the mat"])
        both = metrics["sentence_bleu"].compute(predictions=["the cat sat on the mat", ""], references=[["the cat sat on the mat"], ["x y"]])
        assert both["sentence_bleu"] == pytest.approx(one["sentence_bleu"] / 2)

    def test_multi_reference_uses_best_match(self, metrics):
        single = metrics["sentence_bleu"].compute(predictions=["a b c d e"], references=["a b c d e"])
        multi = metrics["sentence_bleu"].compute(predictions=["a b c d e"], references=[["z y x", "a b c d e"]])
        assert multi["sentence_bleu"] == pytest.approx(single["sentence_bleu"])


class TestRouge:
    def test_hand_computed(self, metrics):
        # pred "the cat sat" (3 tokens), ref "the cat was sat here" (5 tokens)
        # ROUGE-1: 3 overlaps, P = 1, R = 3/5 -> F = 0.75. ROUGE-2: "the cat" only, P = 1/2, R = 1/4 -> F = 1/3.
        # ROUGE-L: LCS "the cat sat" = 3 -> same as ROUGE-1.
        result = metrics["rouge"].compute(predictions=["the cat sat"], references=["the cat was sat here"])
        assert result == pytest.approx({"rouge1": 75.0, "rouge2": 100 / 3, "rougeL": 75.0})

    def test_multi_reference_takes_best_and_averages(self, metrics):
        result = metrics["rouge"].compute(
            predictions=["the cat sat", "a b"], references=[["x y z", "the cat was sat here"], ["c d"]]
        )
        assert result == pytest.approx({"rouge1": 37.5, "rouge2": 50 / 3, "rougeL": 37.5})


def test_meteor_is_null_with_a_note_without_wordnet(metrics):
    result = metrics["meteor"].compute(predictions=["the cat sat"], references=["the cat sat"])
    if wordnet_available():
        assert result["meteor_note"] is None and result["meteor"] > 90
    else:
        assert result["meteor"] is None
        assert "WordNet data not found" in result["meteor_note"] and "nltk.downloader wordnet" in result["meteor_note"]


class TestDistinct:
    def test_hand_worked(self, metrics):
        # unigrams a b a | b c: 5 in all, 3 distinct -> 60; bigrams ab ba | bc: 3 in all, 3 distinct -> 100
        assert metrics["distinct"].compute(predictions=["a b a", "b c"]) == pytest.approx({"distinct_1": 60.0, "distinct_2": 100.0})
        # "a a a a": unigrams 1/4, bigrams (a a) x3 -> 1/3
        assert metrics["distinct"].compute(predictions=["a a a a"]) == pytest.approx({"distinct_1": 25.0, "distinct_2": 100 / 3})

    def test_token_ids_and_no_ngrams(self, metrics):
        assert metrics["distinct"].compute(predictions=[[7, 7, 8]]) == pytest.approx({"distinct_1": 200 / 3, "distinct_2": 100.0})
        assert metrics["distinct"].compute(predictions=["a"])["distinct_2"] is None


class TestRepetition:
    def test_hand_worked(self, metrics):
        # a a b b b c: t2 == t1, t4 == t3, t5 == t4 -> 3 repeats over 6 tokens
        result = metrics["repetition"].compute(predictions=["a a b b b c", "d e"])
        assert result == {"repetition_rate": pytest.approx(300 / 8), "repeated_tokens": 3, "total_tokens": 8}

    def test_token_ids_with_padding_ignored(self, metrics):
        result = metrics["repetition"].compute(predictions=[[5, 5, 7, 0, 0], [9, 0, 0, 0, 0]], ignore_tokens=[0])
        assert result == {"repetition_rate": pytest.approx(25.0), "repeated_tokens": 1, "total_tokens": 4}


class TestComputeGenerationMetrics:
    def test_all_metrics_one_call(self):
        results = compute_generation_metrics(
            ["the cat sat on the mat", "a dog"],
            [["the cat sat on the mat"], ["a dog", "one dog"]],
            raw_predictions=[[4, 4, 5], [6, 7]],
            elapsed_s=0.5,
        )
        assert results["bleu"] == pytest.approx(100.0)
        assert results["rouge1"] == pytest.approx(100.0)
        assert results["repetition_rate"] == pytest.approx(20.0) and results["repetition_rate_on"] == "raw_predictions"
        assert results["ms_per_sample"] == pytest.approx(250.0) and results["samples_per_s"] == pytest.approx(4.0)
        assert {"sentence_bleu", "rouge2", "rougeL", "meteor", "distinct_1", "distinct_2", "num_samples"} <= results.keys()

    def test_subset_and_errors(self):
        assert compute_generation_metrics(["a a"], ["a"], metrics=["repetition"]) == {
            "num_samples": 1, "repetition_rate": pytest.approx(50.0), "repetition_rate_on": "predictions"}
        with pytest.raises(ValueError, match="2 predictions but 1 references"):
            compute_generation_metrics(["a", "b"], ["a"])
        with pytest.raises(ValueError, match="positive"):
            latency(0.0, 3)


class TestWriteResults:
    def test_modes_with_latency(self, tmp_path):
        results = {
            "ar": {"bleu": 41.234, "meteor": None, "meteor_note": "WordNet data not found", "ms_per_sample": 120.0,
                   "samples_per_s": 8.333, "num_samples": 10},
            "nar": {"bleu": 30.5, "meteor": None, "meteor_note": "WordNet data not found", "ms_per_sample": 10.0,
                    "samples_per_s": 100.0, "num_samples": 10},
        }
        json_path, md_path = write_results(results, tmp_path / "out", title="Demo")
        assert json.loads(json_path.read_text()) == results
        lines = md_path.read_text().splitlines()
        assert lines[0] == "# Demo"
        assert lines[2] == "| mode | BLEU-4 | METEOR | ms/sample | samples/s | samples |"
        assert lines[4] == "| ar | 41.23 | n/a | 120.00 | 8.33 | 10 |"
        assert lines[5] == "| nar | 30.50 | n/a | 10.00 | 100.00 | 10 |"
        # The note both rows share is said once, without a row name.
        assert lines.count("- meteor_note: WordNet data not found") == 1
        assert not any(line.startswith("- ar: meteor_note") for line in lines)

    def test_notes_that_differ_name_their_row(self, tmp_path):
        results = {"ar": {"bleu": 1.0, "repetition_rate_on": "predictions"},
                   "nar": {"bleu": 2.0, "repetition_rate_on": "raw_predictions"}}
        lines = write_results(results, tmp_path)[1].read_text().splitlines()
        assert "- ar: repetition_rate_on: predictions" in lines
        assert "- nar: repetition_rate_on: raw_predictions" in lines

    def test_single_row(self, tmp_path):
        _, md_path = write_results({"bleu": 12.0, "rougeL": float("nan")}, tmp_path, name="qg")
        assert md_path.name == "qg.md"
        assert "| model | 12.00 | n/a |" in md_path.read_text()
        with pytest.raises(ValueError, match="mix of metric values"):
            write_results({"bleu": 1.0, "ar": {"bleu": 2.0}}, tmp_path)
        assert json.loads((tmp_path / "qg.json").read_text()) == {"bleu": 12.0, "rougeL": None}  # strict JSON: no NaN
