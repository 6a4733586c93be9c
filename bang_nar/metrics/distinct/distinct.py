"""Distinct-n (Li et al., 2016): unique n-grams over all n-grams in the whole set of predictions.

An `evaluate` metric script shipped in bang-nar; load it by local path (`bang_nar.evaluation.load_metric`).
"""

import datasets
import evaluate

_DESCRIPTION = """\
Corpus-level distinct-n: the number of distinct n-grams divided by the total number of n-grams, pooled over all
predictions (whitespace tokens, or token lists as given), on a 0-100 scale. None when there is no n-gram at all.
"""

_CITATION = """\
@inproceedings{li-etal-2016-diversity,
  title = "A Diversity-Promoting Objective Function for Neural Conversation Models",
  author = "Li, Jiwei and Galley, Michel and Brockett, Chris and Gao, Jianfeng and Dolan, Bill",
  booktitle = "Proceedings of NAACL-HLT 2016",
  year = "2016",
}
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: list of strings, or list of token lists (strings or ids).
    orders: the n values (default (1, 2)).
Returns:
    distinct_<n> for each n (0-100, or None without any n-gram).
"""


class Distinct(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("string")}),
                datasets.Features({"predictions": datasets.Sequence(datasets.Value("string"))}),
                datasets.Features({"predictions": datasets.Sequence(datasets.Value("int64"))}),
            ],
        )

    def _compute(self, predictions, orders=(1, 2)):
        sequences = [p.split() if isinstance(p, str) else list(p) for p in predictions]
        results = {}
        for n in orders:
            ngrams = [tuple(seq[i : i + n]) for seq in sequences for i in range(len(seq) - n + 1)]
            results[f"distinct_{n}"] = 100.0 * len(set(ngrams)) / len(ngrams) if ngrams else None
        return results
