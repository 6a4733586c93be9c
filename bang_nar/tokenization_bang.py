"""BANG's tokenizer: BERT-uncased WordPiece with the bundled `vocab.txt` and BANG's special-token layout.

docs/architecture.md#tokens: ids have no fairseq offset (`[PAD]`=0, `[X_SEP]`=2, `[UNK]`=100, `[CLS]`=101, `[SEP]`=102, `[MASK]`=103).
A source is `tokens [SEP]` with no `[CLS]` (fairseq `encode_line(append_eos=True)`, docs/architecture.md); targets are the same,
so `labels = tokenizer(text_target=...)["input_ids"]` ends with `[SEP]` as the original criterion expects.
"""

from importlib import resources
from pathlib import Path

from tokenizers import processors
from transformers import BertTokenizer, PreTrainedTokenizerFast

SPECIAL_IDS = {"[PAD]": 0, "[X_SEP]": 2, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}


def read_vocab(path: str | Path) -> dict[str, int]:
    """Read a WordPiece vocabulary: one token per line, or fairseq's `token count` lines (BANG's own `vocab.txt`).

    Line i is id i. The count column is dropped by splitting on the *last* space (the original's `vocab.txt` format).
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    tokens = [line.rsplit(" ", 1)[0] if " " in line else line for line in lines]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"{path}: the vocabulary has duplicate tokens; each line must hold one distinct token.")
    return vocab


def load_bang_tokenizer(vocab_file: str | Path | None = None, model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """Build BANG's tokenizer from `vocab_file` (default: the bundled BERT-uncased vocab, `[unused1]` → `[X_SEP]`).

    transformers 5.x's `BertTokenizerFast(vocab_file=...)` silently builds a 5-token vocabulary, so the vocab is
    read here and passed as a dict; the result is checked against BANG's special ids.
    """
    if vocab_file is None:
        vocab = read_vocab(resources.files("bang_nar").joinpath("vocab.txt"))
    else:
        vocab = read_vocab(vocab_file)
    wrong = {t: (vocab.get(t), i) for t, i in SPECIAL_IDS.items() if vocab.get(t) != i}
    if wrong:
        raise ValueError(
            f"{vocab_file or 'bundled vocab'}: special tokens at unexpected ids {wrong} (token: (found, expected)); "
            "BANG checkpoints need the BERT-uncased layout (docs/architecture.md)."
        )
    backend = BertTokenizer(vocab=vocab, do_lower_case=True).backend_tokenizer
    backend.post_processor = processors.TemplateProcessing(
        single="$A:0 [SEP]:0",
        pair="$A:0 [SEP]:0 $B:1 [SEP]:1",  # GLGE QG input: `answer [SEP] context [SEP]`
        special_tokens=[("[SEP]", SPECIAL_IDS["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        sep_token="[SEP]",
        eos_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        bos_token="[CLS]",
        mask_token="[MASK]",
        extra_special_tokens=["[X_SEP]"],
        model_max_length=model_max_length,
        padding_side="right",  # HF-style positions need right padding or an attention mask (docs/architecture.md#hf-prophetnet)
    )


__all__ = ["SPECIAL_IDS", "load_bang_tokenizer", "read_vocab"]
