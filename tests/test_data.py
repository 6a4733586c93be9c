"""bang_nar.data: every input format, every bad-file case, tokenization with reported truncation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from bang_nar.data import DataFormatError, load_du_qg_sample, load_pairs, tokenize_pairs


SHARED_DU = Path(__file__).resolve().parents[2] / "shared" / "data" / "du2017_qg"
PAIRS = [("the cat sat", "where did the cat sit ?"), ("a dog ran home", "who ran home ?")]


@pytest.fixture(autouse=True)
def _quiet_datasets():
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A per-test `datasets` cache, so tests neither read nor fill the user's cache."""
    return tmp_path / "hf_cache"


def word_tokenizer(words: list[str], *, with_sep: bool = True) -> PreTrainedTokenizerFast:
    """A word-level tokenizer built here from `tokenizers`, template `$A [SEP]`, independent of the package's."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate(specials + sorted(set(words)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if with_sep:
        tok.post_processor = processors.TemplateProcessing(single="$A [SEP]", special_tokens=[("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", eos_token="[SEP]")


def write_jsonl(path: Path, records: list[dict], blank_after: int | None = None) -> Path:
    lines = [json.dumps(r) for r in records]
    if blank_after is not None:
        lines.insert(blank_after, "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def as_pairs(dataset: datasets.Dataset) -> list[tuple[str, str]]:
    return list(zip(dataset["source"], dataset["target"]))


# ---------------------------------------------------------------------------------------------------------------
# formats


class TestFormats:
    def test_jsonl(self, tmp_path, cache):
        path = write_jsonl(tmp_path / "d.jsonl", [{"source": s, "target": t, "id": i} for i, (s, t) in enumerate(PAIRS)])
        ds = load_pairs(path, cache_dir=cache)
        assert ds.column_names == ["source", "target"]
        assert as_pairs(ds) == PAIRS

    def test_json_list_of_records(self, tmp_path, cache):
        path = tmp_path / "d.json"
        path.write_text(json.dumps([{"source": s, "target": t} for s, t in PAIRS]), encoding="utf-8")
        assert as_pairs(load_pairs(path, cache_dir=cache)) == PAIRS

    def test_csv_with_custom_columns(self, tmp_path, cache):
        path = tmp_path / "d.csv"
        path.write_text("article,summary\n" + "".join(f'"{s}","{t}"\n' for s, t in PAIRS), encoding="utf-8")
        ds = load_pairs(path, source_column="article", target_column="summary", cache_dir=cache)
        assert ds.column_names == ["source", "target"]
        assert as_pairs(ds) == PAIRS

    def test_parquet(self, tmp_path, cache):
        path = tmp_path / "d.parquet"
        pq.write_table(pa.table({"src": [s for s, _ in PAIRS], "tgt": [t for _, t in PAIRS]}), path)
        assert as_pairs(load_pairs(path, source_column="src", target_column="tgt", cache_dir=cache)) == PAIRS

    def test_swapped_columns(self, tmp_path, cache):
        path = write_jsonl(tmp_path / "d.jsonl", [{"source": s, "target": t} for s, t in PAIRS])
        ds = load_pairs(path, source_column="target", target_column="source", cache_dir=cache)
        assert as_pairs(ds) == [(t, s) for s, t in PAIRS]

    def test_keep_columns(self, tmp_path, cache):
        records = [{"source": s, "target": t, "references": [t, t + " !"]} for s, t in PAIRS]
        ds = load_pairs(write_jsonl(tmp_path / "d.jsonl", records), keep_columns=["references"], cache_dir=cache)
        assert ds.column_names == ["source", "target", "references"]
        assert ds[1]["references"] == [PAIRS[1][1], PAIRS[1][1] + " !"]

    def test_parallel_txt_inferred_names(self, tmp_path):
        (tmp_path / "src-dev.txt").write_text("".join(s + " \n" for s, _ in PAIRS), encoding="utf-8")
        (tmp_path / "tgt-dev.txt").write_text("".join(t + "\n" for _, t in PAIRS), encoding="utf-8")
        assert as_pairs(load_pairs(tmp_path / "src-dev.txt")) == PAIRS  # trailing space stripped, as in Du's files

    @pytest.mark.parametrize("names", [("train_source.txt", "train_target.txt"), ("valid.article.txt", "valid.title.txt")],
                             ids=["source-target", "article-title"])
    def test_parallel_txt_other_naming(self, tmp_path, names):
        (tmp_path / names[0]).write_text("a b\nc\n", encoding="utf-8")
        (tmp_path / names[1]).write_text("x\ny z\n", encoding="utf-8")
        assert as_pairs(load_pairs(tmp_path / names[0])) == [("a b", "x"), ("c", "y z")]

    def test_parallel_txt_explicit_pair_and_unicode_separator(self, tmp_path):
        # U+2028 inside a line must not split it: the line count must match `wc -l` and the parallel file.
        (tmp_path / "in.txt").write_text("a\u2028b\nc\n", encoding="utf-8")
        (tmp_path / "out.txt").write_text("x\r\ny\r\n", encoding="utf-8")
        assert as_pairs(load_pairs((tmp_path / "in.txt", tmp_path / "out.txt"))) == [("a\u2028b", "x"), ("c", "y")]
        assert len(load_pairs(tmp_path / "in.txt", target_file=tmp_path / "out.txt")) == 2

    def test_qg_format(self, tmp_path, cache):
        records = [{"context": "paris is the capital of france .", "answer": "paris", "question": "what is the capital ?"}]
        ds = load_pairs(write_jsonl(tmp_path / "qg.jsonl", records), source_column="context", target_column="question",
                        qg_format=True, answer_column="answer", cache_dir=cache)
        assert ds[0] == {"source": "paris [SEP] paris is the capital of france .", "target": "what is the capital ?"}

    def test_local_dataset_folder_goes_through_load_dataset(self, tmp_path, cache):
        folder = tmp_path / "my_dataset"
        folder.mkdir()
        write_jsonl(folder / "train.jsonl", [{"source": s, "target": t} for s, t in PAIRS])
        write_jsonl(folder / "test.jsonl", [{"source": "q", "target": "r"}])
        loaded = load_pairs(folder, cache_dir=cache)
        assert isinstance(loaded, datasets.DatasetDict) and set(loaded) == {"train", "test"}
        assert as_pairs(loaded["test"]) == [("q", "r")]
        assert as_pairs(load_pairs(folder, split="train", cache_dir=cache)) == PAIRS

    def test_hub_name_is_passed_to_load_dataset(self, monkeypatch):
        calls = []

        def fake_load_dataset(path, name=None, split=None, **kwargs):  # the network boundary, replaced
            calls.append((path, name, split, kwargs))
            return datasets.Dataset.from_dict({"document": ["d"], "summary": ["s"]})

        monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
        ds = load_pairs("someone/some-data", source_column="document", target_column="summary", split="validation",
                        dataset_config="v1", revision="main")
        assert calls == [("someone/some-data", "v1", "validation", {"revision": "main"})]
        assert as_pairs(ds) == [("d", "s")]

    def test_du_qg_sample(self):
        sample = load_du_qg_sample()
        assert {name: len(part) for name, part in sample.items()} == {"train": 2500, "eval": 250}
        assert sample["eval"][0]["target"].endswith("?")
        folder = Path(__file__).resolve().parents[1] / "bang_nar" / "sample_data" / "du_qg"
        assert sum(p.stat().st_size for p in folder.iterdir()) <= 1_000_000
        assert "CC BY-SA 4.0" in (folder / "ATTRIBUTION.md").read_text(encoding="utf-8")
        assert load_du_qg_sample("eval")["source"][:3] == sample["eval"]["source"][:3]

    @pytest.mark.skipif(not SHARED_DU.is_dir(), reason="../shared/data/du2017_qg is absent")
    def test_real_du_files(self):
        ds = load_pairs(SHARED_DU / "src-test.head2000.txt")
        assert len(ds) == 2000
        sample = load_du_qg_sample("eval")
        assert as_pairs(ds)[:250] == as_pairs(sample)  # the bundled eval split is the head of this file


# ---------------------------------------------------------------------------------------------------------------
# bad files


class TestBadFiles:
    def test_missing_file(self, tmp_path):
        with pytest.raises(FileNotFoundError, match=r"nope\.jsonl: no such file"):
            load_pairs(tmp_path / "nope.jsonl")

    def test_missing_file_with_unknown_extension_is_not_sent_to_the_hub(self, tmp_path):
        with pytest.raises(DataFormatError, match=r"nope\.tsv: unknown extension"):
            load_pairs(tmp_path / "nope.tsv")

    def test_missing_parallel_target(self, tmp_path):
        (tmp_path / "src-x.txt").write_text("a\n", encoding="utf-8")
        with pytest.raises(FileNotFoundError, match=r"tgt-x\.txt: no such file.*target_file="):
            load_pairs(tmp_path / "src-x.txt")

    def test_uninferable_target_name(self, tmp_path):
        (tmp_path / "lines.txt").write_text("a\n", encoding="utf-8")
        with pytest.raises(DataFormatError, match=r"lines\.txt: cannot infer the parallel target file.*target_file="):
            load_pairs(tmp_path / "lines.txt")

    def test_unknown_extension(self, tmp_path):
        path = tmp_path / "d.tsv"
        path.write_text("a\tb\n", encoding="utf-8")
        with pytest.raises(DataFormatError, match=r"d\.tsv: unknown extension '\.tsv'\. Supported: \.json, \.jsonl"):
            load_pairs(path)

    def test_missing_column_names_file_and_fix(self, tmp_path, cache):
        path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "target": "b"}])
        with pytest.raises(DataFormatError) as err:
            load_pairs(path, cache_dir=cache)
        message = str(err.value)
        assert str(path) in message and "missing column 'source'" in message
        assert "['text', 'target']" in message and "--source-column" in message

    def test_empty_line_in_parallel_file(self, tmp_path):
        (tmp_path / "src.txt").write_text("a\nb\nc\n", encoding="utf-8")
        (tmp_path / "tgt.txt").write_text("x\n \nz\n", encoding="utf-8")
        with pytest.raises(DataFormatError, match=r"tgt\.txt line 2: empty line"):
            load_pairs(tmp_path / "src.txt")

    def test_mismatched_line_counts(self, tmp_path):
        (tmp_path / "src.txt").write_text("a\nb\nc\n", encoding="utf-8")
        (tmp_path / "tgt.txt").write_text("x\ny\n", encoding="utf-8")
        with pytest.raises(DataFormatError) as err:
            load_pairs(tmp_path / "src.txt")
        message = str(err.value)
        assert "src.txt has 3 lines" in message and "tgt.txt has 2" in message
        assert "src.txt line 3 has no partner" in message

    def test_empty_value_in_jsonl_names_the_line(self, tmp_path, cache):
        # `datasets` skips the blank line 2; the error must still give the file's own line number (4).
        records = [{"source": "a", "target": "b"}, {"source": "c", "target": "d"}, {"source": "e", "target": ""}]
        path = write_jsonl(tmp_path / "d.jsonl", records, blank_after=1)
        with pytest.raises(DataFormatError, match=r"d\.jsonl line 4: column 'target' is empty"):
            load_pairs(path, cache_dir=cache)

    def test_null_value_in_csv_names_the_line(self, tmp_path, cache):
        path = tmp_path / "d.csv"
        path.write_text('source,target\na,b\n"two\nlines",c\n,d\n', encoding="utf-8")  # the bad row starts on line 5
        with pytest.raises(DataFormatError, match=r"d\.csv line 5: column 'source' is empty or missing"):
            load_pairs(path, cache_dir=cache)

    def test_empty_value_in_parquet_names_the_row(self, tmp_path, cache):
        path = tmp_path / "d.parquet"
        pq.write_table(pa.table({"source": ["a", "b", "c"], "target": ["x", None, "z"]}), path)
        with pytest.raises(DataFormatError, match=r"d\.parquet row 2: column 'target'"):
            load_pairs(path, cache_dir=cache)

    def test_invalid_json_line(self, tmp_path, cache):
        path = tmp_path / "d.jsonl"
        path.write_text('{"source": "a", "target": "b"}\n{"source": "c" "target": "d"}\n', encoding="utf-8")
        with pytest.raises(DataFormatError, match=r"d\.jsonl line 2, column 16: not valid JSON"):
            load_pairs(path, cache_dir=cache)

    def test_non_text_column(self, tmp_path, cache):
        path = write_jsonl(tmp_path / "d.jsonl", [{"source": "a", "target": ["b", "c"]}])
        with pytest.raises(DataFormatError, match=r"column 'target' has type .* but text is needed"):
            load_pairs(path, cache_dir=cache)

    @pytest.mark.parametrize("name", ["d.jsonl", "d.json", "d.csv", "src-d.txt"])
    @pytest.mark.parametrize("content", ["", "\n  \n"], ids=["empty", "blank"])
    def test_empty_file_is_refused_with_its_name(self, tmp_path, cache, name, content):
        (tmp_path / name).write_text(content, encoding="utf-8")
        (tmp_path / "tgt-d.txt").write_text(content, encoding="utf-8")
        with pytest.raises(DataFormatError, match=rf"{name}: the file is empty"):
            load_pairs(tmp_path / name, cache_dir=cache)

    def test_header_only_csv_has_no_examples(self, tmp_path, cache):
        (tmp_path / "d.csv").write_text("source,target\n", encoding="utf-8")
        with pytest.raises(DataFormatError, match=r"d\.csv: no examples \(only a header or blank lines\)"):
            load_pairs(tmp_path / "d.csv", cache_dir=cache)

    @pytest.mark.parametrize(
        "name, content, where",
        [
            ("d.jsonl", b'{"source": "a", "target": "b"}\n{"source": "caf\xe9", "target": "x"}\n', "line 2"),
            ("d.csv", b"source,target\na,b\nc,d\ncaf\xe9,x\n", "line 4"),
            ("src-d.txt", b"a b\nc d\ncaf\xe9\n", "line 3, column 4"),
        ],
        ids=["jsonl", "csv", "txt"],
    )
    def test_non_utf8_names_file_and_line(self, tmp_path, cache, name, content, where):
        (tmp_path / name).write_bytes(content)
        (tmp_path / "tgt-d.txt").write_text("x\ny\nz\n", encoding="utf-8")
        with pytest.raises(DataFormatError, match=rf"{name} {where}: not UTF-8 \(byte 0xe9\)"):
            load_pairs(tmp_path / name, cache_dir=cache)

    def test_non_utf8_in_the_parallel_target_names_that_file(self, tmp_path):
        (tmp_path / "src-d.txt").write_text("a\nb\n", encoding="utf-8")
        (tmp_path / "tgt-d.txt").write_bytes(b"x\n\xff\n")
        with pytest.raises(DataFormatError, match=r"tgt-d\.txt line 2, column 1: not UTF-8 \(byte 0xff\)"):
            load_pairs(tmp_path / "src-d.txt")

    def test_json_line_that_is_not_an_object(self, tmp_path, cache):
        path = tmp_path / "d.jsonl"
        path.write_text('{"source": "a", "target": "b"}\n["c", "d"]\n', encoding="utf-8")
        with pytest.raises(DataFormatError, match=r"d\.jsonl line 2: a JSON list, not an object"):
            load_pairs(path, cache_dir=cache)

    def test_unreadable_parquet_names_the_file(self, tmp_path, cache):
        (tmp_path / "d.parquet").write_bytes(b"not parquet")
        with pytest.raises(DataFormatError, match=r"d\.parquet: could not be read as parquet"):
            load_pairs(tmp_path / "d.parquet", cache_dir=cache)

    def test_argument_errors(self, tmp_path, cache):
        path = write_jsonl(tmp_path / "d.jsonl", [{"source": "a", "target": "b"}])
        with pytest.raises(ValueError, match="answer_column"):
            load_pairs(path, qg_format=True)
        with pytest.raises(ValueError, match="split='validation' applies to Hub datasets"):
            load_pairs(path, split="validation")
        with pytest.raises(DataFormatError, match="missing column 'answer'"):
            load_pairs(path, qg_format=True, answer_column="answer", cache_dir=cache)


# ---------------------------------------------------------------------------------------------------------------
# tokenize_pairs


class TestTokenizePairs:
    words = "the cat sat where did sit a dog ran home who ?".split()

    def test_ids_follow_the_tokenizer_template(self):
        tok = word_tokenizer(self.words)
        ds, report = tokenize_pairs(datasets.Dataset.from_dict({"source": ["the cat sat"], "target": ["who sat ?"]}),
                                    tok, 16, 16)
        vocab = tok.get_vocab()
        assert ds[0]["input_ids"] == [vocab["the"], vocab["cat"], vocab["sat"], tok.sep_token_id]  # no [CLS]
        assert ds[0]["attention_mask"] == [1, 1, 1, 1]
        assert ds[0]["labels"] == [vocab["who"], vocab["sat"], vocab["?"], tok.sep_token_id]
        assert ds.column_names == ["source", "target", "input_ids", "attention_mask", "labels"]
        assert (report.truncated_sources, report.truncated_targets) == (0, 0)
        assert (report.longest_source, report.longest_target) == (4, 4)

    def test_truncation_is_counted_logged_and_keeps_sep(self, caplog):
        tok = word_tokenizer(self.words)
        data = datasets.Dataset.from_dict(
            {"source": ["the cat sat", "a dog ran home", "the dog"], "target": ["who ?", "where did the cat sit ?", "?"]}
        )
        with caplog.at_level(logging.WARNING, logger="bang_nar.data"):
            ds, report = tokenize_pairs(data, tok, max_source_length=4, max_target_length=3)
        assert report.to_dict() == {
            "num_examples": 3, "max_source_length": 4, "max_target_length": 3,
            "truncated_sources": 1, "truncated_targets": 1, "longest_source": 5, "longest_target": 7,
        }
        assert [len(ids) for ids in ds["input_ids"]] == [4, 4, 3]
        assert ds[1]["input_ids"][-1] == tok.sep_token_id and ds[1]["labels"] == [tok.get_vocab()["where"],
                                                                                  tok.get_vocab()["did"], 3]
        assert "truncated 1 source(s) to 4 tokens" in caplog.text and "1 target(s) to 3 tokens" in caplog.text

    def test_leading_cls_is_warned_about(self, caplog):
        tok = word_tokenizer(self.words)
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        with caplog.at_level(logging.WARNING, logger="bang_nar.data"):
            ds, _ = tokenize_pairs(datasets.Dataset.from_dict({"source": ["the cat"], "target": ["who ?"]}), tok, 8, 8)
        assert ds[0]["input_ids"][0] == 2 and "Sources start with [CLS]" in caplog.text

    def test_tokenizer_without_sep_template_is_rejected(self):
        tok = word_tokenizer(self.words, with_sep=False)
        data = datasets.Dataset.from_dict({"source": ["the cat"], "target": ["who ?"]})
        with pytest.raises(ValueError, match=r"template '\$A \[SEP\]'"):
            tokenize_pairs(data, tok, 8, 8)

    def test_qg_input_with_the_bang_tokenizer(self, tmp_path, cache):
        # The composed text "answer [SEP] context" encodes like the tokenizer's own pair template.
        from bang_nar.tokenization_bang import load_bang_tokenizer

        tok = load_bang_tokenizer()
        records = [{"context": "paris is the capital", "answer": "paris", "question": "what is the capital ?"}]
        ds = load_pairs(write_jsonl(tmp_path / "qg.jsonl", records), source_column="context", target_column="question",
                        qg_format=True, answer_column="answer", cache_dir=cache)
        ds, _ = tokenize_pairs(ds, tok, 32, 32)
        assert ds[0]["input_ids"] == tok("paris", "paris is the capital")["input_ids"]
        assert ds[0]["input_ids"].count(tok.sep_token_id) == 2 and tok.cls_token_id not in ds[0]["input_ids"]

    def test_bad_arguments(self):
        tok = word_tokenizer(self.words)
        with pytest.raises(DataFormatError, match="lacks column"):
            tokenize_pairs(datasets.Dataset.from_dict({"text": ["a"]}), tok, 8, 8)
        with pytest.raises(TypeError, match="call it per split"):
            tokenize_pairs(datasets.DatasetDict({"train": datasets.Dataset.from_dict({"source": ["a"], "target": ["b"]})}),
                           tok, 8, 8)
