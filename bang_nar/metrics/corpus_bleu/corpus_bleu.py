"""Corpus BLEU-4 (sacrebleu), with one or several references per prediction.

An `evaluate` metric script shipped in bang-nar; load it by local path (`bang_nar.evaluation.load_metric`).
"""

import datasets
import evaluate
import sacrebleu

_DESCRIPTION = """\
Corpus-level BLEU-4 computed by sacrebleu (default 13a tokenization, no lowercasing), on a 0-100 scale.
Each prediction may have its own number of references: missing ones are passed to sacrebleu as None.
"""

_CITATION = """\
@inproceedings{post-2018-call,
  title = "A Call for Clarity in Reporting {BLEU} Scores",
  author = "Post, Matt",
  booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
  year = "2018",
}
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: list of strings.
    references: list of strings, or list of lists of strings (several references per prediction).
    tokenize: sacrebleu tokenizer name ("13a" by default; "none" for pre-tokenized text).
    lowercase: lowercase before scoring.
Returns:
    bleu (0-100), precisions (1- to 4-gram, 0-100), brevity_penalty, length_ratio, hyp_len, ref_len.
"""


class CorpusBleu(evaluate.Metric):
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

    def _compute(self, predictions, references, tokenize="13a", lowercase=False):
        references = [[ref] if isinstance(ref, str) else list(ref) for ref in references]
        if any(len(refs) == 0 for refs in references):
            raise ValueError("Every prediction needs at least one reference.")
        # sacrebleu wants reference *streams* (one list per reference position); pad ragged ones with None.
        width = max(len(refs) for refs in references)
        streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(width)]
        bleu = sacrebleu.corpus_bleu(predictions, streams, tokenize=tokenize, lowercase=lowercase)
        return {
            "bleu": bleu.score,
            "precisions": list(bleu.precisions),
            "brevity_penalty": bleu.bp,
            "length_ratio": bleu.sys_len / bleu.ref_len if bleu.ref_len else 0.0,
            "hyp_len": bleu.sys_len,
            "ref_len": bleu.ref_len,
        }
