"""ROUGE-1/2/L F1 (Google's rouge-score), averaged over predictions; best reference when there are several.

An `evaluate` metric script shipped in bang-nar; load it by local path (`bang_nar.evaluation.load_metric`).
"""

import datasets
import evaluate
from rouge_score import rouge_scorer

_DESCRIPTION = """\
ROUGE-1, ROUGE-2 and ROUGE-L F1 from the rouge-score package (its tokenizer lowercases and keeps only [a-z0-9]
tokens; no stemming unless use_stemmer=True), each the plain mean over predictions on a 0-100 scale (no bootstrap).
With several references, each ROUGE type takes the reference with the highest F1 (rouge-score's score_multi).
"""

_CITATION = """\
@inproceedings{lin-2004-rouge,
  title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
  author = "Lin, Chin-Yew",
  booktitle = "Text Summarization Branches Out",
  year = "2004",
}
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: list of strings.
    references: list of strings, or list of lists of strings.
    use_stemmer: apply the Porter stemmer (rouge-score option).
Returns:
    rouge1, rouge2, rougeL: mean F1 (0-100).
"""

_TYPES = ("rouge1", "rouge2", "rougeL")


class Rouge(evaluate.Metric):
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

    def _compute(self, predictions, references, use_stemmer=False):
        scorer = rouge_scorer.RougeScorer(list(_TYPES), use_stemmer=use_stemmer)
        totals = dict.fromkeys(_TYPES, 0.0)
        for prediction, refs in zip(predictions, references):
            refs = [refs] if isinstance(refs, str) else list(refs)
            scores = scorer.score_multi(refs, prediction)
            for name in _TYPES:
                totals[name] += scores[name].fmeasure
        count = max(len(predictions), 1)
        return {name: 100.0 * total / count for name, total in totals.items()}
