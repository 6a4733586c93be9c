"""Span-masking pretraining data (docs/pretraining.md#reconstruction): loading, packing, the collator."""

import pytest
import torch

from bang_nar.data import DataFormatError
from bang_nar.multimodality import build_word_tokenizer
from bang_nar.pretraining_data import SpanMaskingCollator, load_text_dataset, pack_documents

SENTENCE = "the cat sat on the mat and the dog ate a bone"


@pytest.fixture
def tokenizer():
    return build_word_tokenizer([SENTENCE, "a second document here"])


class FixedSpans(SpanMaskingCollator):
    def span_positions(self, length):
        return [span for span in ([2, 3, 4], [8, 9]) if span[-1] < length]


def _words(tokenizer, ids):
    return " ".join(tokenizer.convert_ids_to_tokens([i for i in ids if i >= 0]))


def test_collator_on_a_hand_checked_sentence(tokenizer, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(SENTENCE + "\n\na second document here\n")
    chunks = pack_documents(load_text_dataset(path), tokenizer, max_length=13)
    assert _words(tokenizer, chunks[0]["input_ids"]) == SENTENCE + " [SEP]"
    assert _words(tokenizer, chunks[1]["input_ids"]) == "a second document here [SEP]"  # blank line skipped

    batch = FixedSpans(tokenizer, mask_prob=1.0, keep_prob=0.0, random_prob=0.0)([chunks[0], chunks[1]])
    assert _words(tokenizer, batch["input_ids"][0]) == "the cat [MASK] [MASK] [MASK] mat and the [MASK] [MASK] a bone [SEP]"
    assert _words(tokenizer, batch["labels"][0]) == "sat on the dog ate"
    assert _words(tokenizer, batch["decoder_input_ids"][0]) == "cat sat on the dog"
    assert batch["target_idx"][0].tolist() == [0, 1, 2, 0, 1]
    assert batch["attention_mask"][0].tolist() == [1] * 13
    # The shorter second chunk (5 tokens) gets only the span 2-4; the batch is padded to the longest row.
    assert batch["attention_mask"][1].tolist() == [1] * 5 + [0] * 8
    assert _words(tokenizer, batch["labels"][1]) == "document here [SEP]"
    assert batch["labels"][1, 3:].eq(-100).all() and batch["target_idx"][1].tolist() == [0, 1, 2, -1, -1]
    assert batch["decoder_input_ids"][1].tolist()[3:] == [tokenizer.pad_token_id] * 2
    # Document positions (MASS `positions`): each target's index in the chunk = its prev token's 1-based position.
    assert batch["positions"].tolist() == [[2, 3, 4, 8, 9], [2, 3, 4, 0, 0]]
    # Encoder MLM labels: source-aligned, the original token at every span position, -100 elsewhere and on padding.
    assert _words(tokenizer, batch["encoder_labels"][0]) == "sat on the dog ate"
    assert batch["encoder_labels"][0].ne(-100).nonzero().flatten().tolist() == [2, 3, 4, 8, 9]
    assert batch["encoder_labels"][1].ne(-100).nonzero().flatten().tolist() == [2, 3, 4]
    assert _words(tokenizer, batch["encoder_labels"][1]) == "document here [SEP]"
    plain = FixedSpans(tokenizer, mask_prob=1.0, keep_prob=0.0, random_prob=0.0, document_positions=False,
                       encoder_labels=False)([chunks[0]])
    assert set(plain) == set(batch) - {"positions", "encoder_labels"}


def test_replacement_probabilities(tokenizer):
    chunk = {"input_ids": tokenizer(SENTENCE)["input_ids"]}
    keep = FixedSpans(tokenizer, mask_prob=0.0, keep_prob=1.0, random_prob=0.0)([chunk])
    assert torch.equal(keep["input_ids"][0], torch.tensor(chunk["input_ids"]))
    rand = FixedSpans(tokenizer, mask_prob=0.0, keep_prob=0.0, random_prob=1.0,
                      generator=torch.Generator().manual_seed(0))([chunk])
    replaced = rand["input_ids"][0, [2, 3, 4, 8, 9]]
    assert not set(replaced.tolist()) & set(tokenizer.all_special_ids)
    assert torch.equal(rand["input_ids"][0, [0, 1, 5, 6, 7, 10, 11, 12]], torch.tensor(chunk["input_ids"])[[0, 1, 5, 6, 7, 10, 11, 12]])


def test_span_positions_follow_mass():
    tokenizer = build_word_tokenizer([SENTENCE])
    collator = SpanMaskingCollator(tokenizer, span_block_size=64, mask_ratio=0.15, generator=torch.Generator().manual_seed(0))
    starts = set()
    for _ in range(600):
        spans = collator.span_positions(150)  # blocks [1, 65), [65, 129), [129, 150)
        assert [len(s) for s in spans] == [9, 9, 3]  # int(64 * 0.15) = 9, int(21 * 0.15) = 3
        for span, (lo, hi) in zip(spans, [(1, 65), (65, 129), (129, 150)]):
            assert span == list(range(span[0], span[0] + len(span))) and lo <= span[0] and span[-1] < hi
        starts.add(spans[0][0])
    assert starts == set(range(1, 57))  # every start of the first block is drawn: uniform over 64 - 9 + 1
    assert collator.span_positions(5) == []  # int(4 * 0.15) = 0: a short chunk gets no span
    batch = collator([{"input_ids": list(range(5, 10))}])
    assert batch["labels"].eq(-100).all() and batch["target_idx"].eq(-1).all()


def test_bad_input_errors(tokenizer, tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"body": "x"}\n')
    with pytest.raises(DataFormatError, match="--text_column"):
        load_text_dataset(path)
    assert load_text_dataset(path, text_column="body")[0]["body"] == "x"
    with pytest.raises(FileNotFoundError):
        load_text_dataset(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="mask_ratio"):
        SpanMaskingCollator(tokenizer, mask_ratio=0.0)


def test_streaming_packs_the_same_chunks(tokenizer, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join([SENTENCE] * 5) + "\n")
    eager = [row["input_ids"] for row in pack_documents(load_text_dataset(path), tokenizer, max_length=10)]
    streamed = [row["input_ids"] for row in pack_documents(load_text_dataset(path, streaming=True), tokenizer, max_length=10)]
    assert eager == streamed and sum(map(len, eager)) == 5 * 13
