"""Sentence BLEU-4: NLTK `sentence_bleu` with smoothing method 4, averaged over sentences, on a 0-100 scale.

An `evaluate` metric script shipped in bang-nar; load it by local path (`bang_nar.evaluation.load_metric`).
"""

import datasets
import evaluate
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

_DESCRIPTION = """\
Sentence-level BLEU-4 (uniform weights, NLTK SmoothingFunction().method4: Chen & Cherry 2014's length-aware smoothing
of zero n-gram counts) on whitespace tokens, averaged over all predictions, on a 0-100 scale: an exact match scores
100, an empty prediction 0. Several references per prediction are supported. (GLGE-style scripts use method 7, which
adds method 5's averaging of neighbouring precisions; that lifts an exact match to 111.67, off the 0-100 scale.)
"""

_CITATION = """\
@inproceedings{liu-etal-2021-glge,
  title = "{GLGE}: A New General Language Generation Evaluation Benchmark",
  author = "Liu, Dayiheng and others",
  booktitle = "Findings of ACL-IJCNLP 2021",
  year = "2021",
}
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: list of strings (whitespace-tokenized for scoring).
    references: list of strings, or list of lists of strings.
    lowercase: lowercase before scoring.
Returns:
    sentence_bleu: the mean sentence BLEU-4 (0-100).
"""


class SentenceBleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
        )

    def _compute(self, predictions, references, lowercase=False):
        smoothing = SmoothingFunction().method4
        norm = (lambda text: text.lower()) if lowercase else (lambda text: text)
        scores = []
        for prediction, refs in zip(predictions, references):
            refs = [refs] if isinstance(refs, str) else list(refs)
            hypothesis = norm(prediction).split()
            if not hypothesis:
                scores.append(0.0)  # NLTK divides by the hypothesis length; an empty output earns nothing
                continue
            ref_tokens = [norm(ref).split() for ref in refs]
            scores.append(sentence_bleu(ref_tokens, hypothesis, weights=(0.25,) * 4, smoothing_function=smoothing))
        return {"sentence_bleu": 100.0 * sum(scores) / len(scores) if scores else 0.0}
