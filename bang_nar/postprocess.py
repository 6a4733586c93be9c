"""Text-level NAR post-processing, exactly as the original `bang/post_processed_nar.py` (docs/decoding.md#original).

`generate(mode="nar")` already applies the first pass on ids (`modeling_bang.nar_cut_and_dedup`); the second pass
needs words, i.e. wordpieces merged at `##`, so it lives here.
"""

from collections.abc import Iterable, Sequence


def _scan(tokens: Iterable[str]) -> list[str]:
    """One pass of the original: a token containing `[SEP]` ends the line once something is kept (a leading one is
    skipped); tokens containing `[CLS]` are dropped; a token equal to the previously *kept* token is dropped."""
    kept: list[str] = []
    for token in tokens:
        if "[SEP]" in token:
            if kept:
                break
            continue
        if "[CLS]" in token or (kept and token == kept[-1]):
            continue
        kept.append(token)
    return kept


def postprocess_nar(line: str | Sequence[str]) -> str:
    """Post-process one NAR output: a space-separated wordpiece line (as the original reads it) or a token list.

    Pass 1 on wordpieces, join and merge `" ##"`, pass 2 on words. `[PAD]`, `[UNK]` and `[X_SEP]` are kept, as in
    the original; the result can be empty (`"[SEP] [SEP]"` → `""`).
    """
    tokens = line.strip().split(" ") if isinstance(line, str) else list(line)
    merged = " ".join(_scan(tokens)).replace(" ##", "")
    return " ".join(_scan(merged.split(" ")))


def decode_nar(tokenizer, sequences) -> list[str]:
    """Ids from `generate(mode="nar")` (raw or first-pass) → post-processed strings, one per row.

    Trailing `[PAD]`s after the cut are dropped before the scan (the original never sees them: its lines end at the
    decoder length), so only pads *inside* an output survive, as in the original.
    """
    texts = []
    for row in sequences.tolist() if hasattr(sequences, "tolist") else sequences:
        while row and row[-1] == tokenizer.pad_token_id:
            row = row[:-1]
        texts.append(postprocess_nar(tokenizer.convert_ids_to_tokens(row)))
    return texts


__all__ = ["decode_nar", "postprocess_nar"]
