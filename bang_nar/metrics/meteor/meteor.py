"""METEOR (NLTK), computed only when NLTK's WordNet data is installed; otherwise null with a note saying why.

An `evaluate` metric script shipped in bang-nar; load it by local path (`bang_nar.evaluation.load_metric`).
"""

import datasets
import evaluate
import nltk
from nltk.translate.meteor_score import meteor_score

_DESCRIPTION = """\
Mean sentence METEOR from nltk.translate.meteor_score (exact, Porter-stem and WordNet-synonym matching) on
whitespace tokens, 0-100 scale, best reference when there are several. METEOR's synonym stage needs the WordNet
corpus; when NLTK cannot find it, this metric returns meteor=None and meteor_note saying so. It never substitutes
another score under the METEOR name.
"""

_CITATION = """\
@inproceedings{banerjee-lavie-2005-meteor,
  title = "{METEOR}: An Automatic Metric for {MT} Evaluation with Improved Correlation with Human Judgments",
  author = "Banerjee, Satanjeev and Lavie, Alon",
  booktitle = "Proceedings of the ACL Workshop on Intrinsic and Extrinsic Evaluation Measures",
  year = "2005",
}
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: list of strings.
    references: list of strings, or list of lists of strings.
Returns:
    meteor: mean METEOR (0-100), or None when WordNet data is missing.
    meteor_note: None, or why METEOR was not computed and how to enable it.
"""


def wordnet_missing_reason():
    """None when NLTK can load WordNet, else a sentence saying it is missing (nothing is downloaded here)."""
    try:
        nltk.corpus.wordnet.synsets("dog")
    except LookupError:
        return (
            "WordNet data not found by NLTK, so METEOR was not computed (no substitute value is reported; "
            "use BLEU-4 and ROUGE-L for this run). To enable it: python -m nltk.downloader wordnet "
            "(or point NLTK_DATA at a folder that holds corpora/wordnet)."
        )
    return None


class Meteor(evaluate.Metric):
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

    def _compute(self, predictions, references):
        reason = wordnet_missing_reason()
        if reason is not None:
            return {"meteor": None, "meteor_note": reason}
        scores = [
            meteor_score([ref.split() for ref in ([refs] if isinstance(refs, str) else refs)], prediction.split())
            for prediction, refs in zip(predictions, references)
        ]
        return {"meteor": 100.0 * sum(scores) / len(scores) if scores else 0.0, "meteor_note": None}
