"""NAR repetition rate: the share of tokens that repeat the token just before them (t_i == t_{i-1}).

An `evaluate` metric script shipped in bang-nar; load it by local path (`bang_nar.evaluation.load_metric`).
"""

import datasets
import evaluate

_DESCRIPTION = """\
Repetition rate = (number of positions i >= 2 with t_i == t_{i-1}) / (number of tokens), pooled over all
predictions, on a 0-100 scale. Compute it on the raw NAR output, before the post-processing that removes
repeats; otherwise it measures the post-processor, not the model. Tokens listed in ignore_tokens (e.g. padding)
are dropped first.
"""

_CITATION = """\
@inproceedings{qi-etal-2021-bang,
  title = "{BANG}: Bridging Autoregressive and Non-autoregressive Generation with Large Scale Pretraining",
  author = "Qi, Weizhen and others",
  booktitle = "Proceedings of ICML 2021",
  year = "2021",
}
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: list of strings (whitespace tokens), or list of token lists (strings or ids).
    ignore_tokens: tokens (strings or ids) to drop before counting, e.g. the padding token.
Returns:
    repetition_rate (0-100, None without tokens), repeated_tokens, total_tokens.
"""


class Repetition(evaluate.Metric):
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

    def _compute(self, predictions, ignore_tokens=None):
        ignore = set(ignore_tokens or ())
        repeated = total = 0
        for prediction in predictions:
            tokens = prediction.split() if isinstance(prediction, str) else list(prediction)
            tokens = [t for t in tokens if t not in ignore]
            total += len(tokens)
            repeated += sum(a == b for a, b in zip(tokens[1:], tokens[:-1]))
        return {
            "repetition_rate": 100.0 * repeated / total if total else None,
            "repeated_tokens": repeated,
            "total_tokens": total,
        }
