"""`bang-nar app`: a local web page that decodes one source with every decoding mode of one BANG model, side by side.

The decoding logic (`ModeComparison`) needs no web framework and is tested on its own; `build_app` wraps it in a
Gradio page (Gradio is the optional `app` extra and is imported only there):

```python
from bang_nar.app import build_app
build_app("bang-nar-demo/nar_spmd").launch()
```

Per mode the page shows the output, its milliseconds, the speed-up over AR beam search and, for NAR modes, the
words that differ from AR greedy's output; `nar_verify` also shows how many AR passes it needed. A second tab decodes an
uploaded .txt of sources (one per line) into a table and a CSV file.
"""

from __future__ import annotations

import csv
import difflib
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._extras import require
from .pipeline import ids_to_text
from .postprocess import decode_nar

# Decoding modes of the page: key → label. Their generate() options are in `ModeComparison.generate_options`.
MODES: dict[str, str] = {
    "nar": "NAR (one pass)",
    "nar_candidates": "NAR + candidates (AR rescoring)",
    "nar_ngram": "NAR + n-gram blocking",
    "nar_verify": "nar_verify (= AR greedy)",
    "ar_greedy": "AR greedy",
    "ar_beam": "AR beam",
}
NAR_MODES = ("nar", "nar_candidates", "nar_ngram")
DEFAULT_MODES = ["nar", "nar_verify", "ar_greedy", "ar_beam"]
# The AR output NAR words are compared with: the first of these that was decoded. AR greedy comes first: nar_verify turns NAR into exactly that output, so the marks are the
# words verification would change (on a multi-modal task AR beam may pick another valid mode, marking every word).
REFERENCE_MODES = ("ar_greedy", "nar_verify", "ar_beam")
DIFF_LABEL = "differs from AR"
SAME_LABEL = "identical to AR"  # the diff box's only label when no word differs
MAX_BATCH_LINES = 1000  # the page is a demo; `bang-nar generate` decodes big files in batches
# Request bounds (`bang-nar app --max-chars / --max-upload-mb`): a source is cut to MAX_CHARS characters before it is
# tokenized (a 512-position model reads about 3,000 characters of English), and bigger uploads are refused unread.
MAX_CHARS = 10_000
MAX_UPLOAD_MB = 2.0
DEMO_MODEL = Path("bang-nar-demo") / "nar_spmd"  # where `bang-nar demo` saves its SPMD model
# Used when neither the model card nor the demo data give examples.
FALLBACK_EXAMPLES = [
    "the eiffel tower was completed in 1889 as the entrance arch to the world 's fair .",
    "photosynthesis converts light energy into chemical energy stored in glucose .",
]


class EmptyInput(ValueError):
    """The source is empty or only whitespace."""


@dataclass
class DecodeOptions:
    """The modes' main options (the page's controls)."""

    num_candidates: int = 4
    no_repeat_ngram_size: int = 2
    num_beams: int = 4
    length_penalty: float = 1.2
    max_new_tokens: int | None = None  # AR length limit; None: 64, capped by the model's decoder positions


@dataclass
class ModeResult:
    """One mode's output for one source."""

    mode: str
    text: str
    ms: float
    ar_passes: int | None = None  # nar_verify only: AR-stream passes
    num_tokens: int | None = None  # nar_verify only: generated tokens, final [SEP] included (AR greedy's passes)


@dataclass
class Comparison:
    """Every selected mode's output for one source, plus what the page must say about the input."""

    results: dict[str, ModeResult] = field(default_factory=dict)
    note: str = ""  # empty input / truncation message, shown on the page

    def reference(self) -> ModeResult | None:
        """The AR output NAR outputs are compared with (AR greedy, else nar_verify, else AR beam)."""
        return next((self.results[m] for m in REFERENCE_MODES if m in self.results), None)

    def speedup(self, mode: str) -> float | None:
        """AR beam's ms over this mode's ms (None when AR beam was not run)."""
        beam = self.results.get("ar_beam")
        if beam is None or mode not in self.results:
            return None
        return beam.ms / max(self.results[mode].ms, 1e-6)


def diff_tokens(words: Sequence[str], reference: Sequence[str]) -> list[tuple[str, str | None]]:
    """`words` as (word, label) pairs for `gr.HighlightedText`: label `DIFF_LABEL` on every word that is not part of
    the longest matching alignment with `reference` (difflib), None on the others."""
    matcher = difflib.SequenceMatcher(a=list(words), b=list(reference), autojunk=False)
    same = {i for block in matcher.get_matching_blocks() for i in range(block.a, block.a + block.size)}
    return [(word, None if i in same else DIFF_LABEL) for i, word in enumerate(words)]


class ModeComparison:
    """Decode one source with each mode of one loaded model (the page's logic, without the page).

    `max_source_tokens` is the model's position table: longer sources are truncated and `Comparison.note` says so.
    """

    def __init__(self, model, tokenizer, *, max_chars: int = MAX_CHARS, max_upload_mb: float = MAX_UPLOAD_MB) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_source_tokens = int(model.config.max_position_embeddings)
        self.max_chars = max_chars
        self.max_upload_mb = max_upload_mb

    def generate_options(self, mode: str, options: DecodeOptions) -> dict[str, Any]:
        """The `model.generate` keyword arguments of `mode` (besides the inputs)."""
        max_new = options.max_new_tokens or min(64, self.max_source_tokens)
        return {
            "nar": {"mode": "nar"},
            "nar_candidates": {"mode": "nar", "num_candidates": options.num_candidates},
            "nar_ngram": {"mode": "nar", "no_repeat_ngram_size": options.no_repeat_ngram_size},
            # The AR length limit too, so that its output is AR greedy's (it stops at its number of draft slots).
            "nar_verify": {"mode": "nar_verify", "max_new_tokens": max_new, "return_dict_in_generate": True},
            "ar_greedy": {"mode": "ar", "num_beams": 1, "do_sample": False, "max_new_tokens": max_new},
            "ar_beam": {
                "mode": "ar",
                "num_beams": options.num_beams,
                "length_penalty": options.length_penalty,
                "do_sample": False,
                "max_new_tokens": max_new,
            },
        }[mode]

    def encode(self, source: str) -> tuple[dict[str, torch.Tensor], str]:
        """Tokenized source (a batch of one) and a note; over-long sources are cut to `max_source_tokens` and the
        note says so. Raises `EmptyInput` for an empty source."""
        if not source or not source.strip():
            raise EmptyInput("Type a source text first (the input is empty).")
        note = ""
        if len(source) > self.max_chars:  # cut before tokenizing: a huge paste must not hold the decode slot
            note = (
                f"The source has {len(source):,} characters; the page reads the first {self.max_chars:,} "
                "(`bang-nar app --max-chars`). "
            )
            source = source[: self.max_chars]
        encoded = self.tokenizer([source], truncation=False, verbose=False, return_tensors="pt")
        length = encoded["input_ids"].size(1)
        if length > self.max_source_tokens:  # tokenized again only then, with the tokenizer's own truncation
            note += (
                f"The source has {length} tokens but the model takes {self.max_source_tokens}: it was truncated "
                f"to its first {self.max_source_tokens} tokens for every mode."
            )
            encoded = self.tokenizer([source], truncation=True, max_length=self.max_source_tokens, return_tensors="pt")
        return {k: v.to(self.model.device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}, note

    def decode(self, mode: str, encoded: dict[str, torch.Tensor], options: DecodeOptions | None = None) -> ModeResult:
        """One mode on an encoded source: the text exactly as `generate()` gives it (NAR through the original
        post-processing, AR through `ids_to_text`), generation milliseconds and nar_verify's AR passes."""
        kwargs = self.generate_options(mode, options or DecodeOptions())
        start = time.perf_counter()
        output = self.model.generate(**encoded, **kwargs)
        ms = 1000 * (time.perf_counter() - start)
        ar_passes = num_tokens = None
        if mode == "nar_verify":
            ar_passes, output = int(output.ar_passes[0]), output.sequences
            num_tokens = int(output[0, 1:].ne(self.model.config.pad_token_id).sum())  # after the start token
        text = (
            decode_nar(self.tokenizer, output)[0]
            if kwargs["mode"] == "nar"
            else ids_to_text(self.tokenizer, output[0].tolist())
        )
        return ModeResult(mode, text, ms, ar_passes, num_tokens)

    def compare(self, source: str, modes: Iterable[str], options: DecodeOptions | None = None) -> Comparison:
        """Every mode of `modes` on `source` (in `MODES` order). Empty input gives no results and a note."""
        try:
            encoded, note = self.encode(source)
        except EmptyInput as error:
            return Comparison(note=str(error))
        unknown = set(modes) - set(MODES)
        if unknown:
            raise ValueError(f"Unknown modes {sorted(unknown)}; choose from {list(MODES)}.")
        comparison = Comparison(note=note)
        with torch.inference_mode():
            # One untimed NAR pass first: otherwise whichever mode runs first pays for caches the request's Python work
            # evicted (measured: plain NAR showed 2.5 ms against 1.2 ms when timed on its own).
            self.model.generate(**encoded, mode="nar")
            for mode in (m for m in MODES if m in set(modes)):
                comparison.results[mode] = self.decode(mode, encoded, options)
        return comparison

    def decode_file(
        self, path: str | os.PathLike, modes: Iterable[str], options: DecodeOptions | None = None
    ) -> tuple[list[list[str]], list[str], str]:
        """Decode every line of a UTF-8 .txt file with each mode: (rows, header, note).

        Rows are `[source, output per mode...]`; empty lines are skipped and counted in the note, as are truncated
        sources. Raises ValueError (one line naming the file) for a non-UTF-8, empty, too big or too long file.
        """
        name = Path(path).name
        size = os.path.getsize(path)
        if size > self.max_upload_mb * 2**20:  # refused unread
            raise ValueError(
                f"{name}: {size / 2**20:.1f} MB, the page takes at most {self.max_upload_mb:g} "
                "MB (`bang-nar app --max-upload-mb`); use `bang-nar generate --input FILE` for big files."
            )
        raw = Path(path).read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            line = raw[: error.start].count(b"\n") + 1
            raise ValueError(
                f"{name} line {line}: not UTF-8 (byte 0x{raw[error.start]:02x}); save the file as UTF-8."
            ) from None
        lines = [line.rstrip("\r") for line in text.split("\n")]
        if lines and lines[-1] == "":
            lines.pop()  # the final newline ends the last line
        sources = [line for line in lines if line.strip()]
        skipped = len(lines) - len(sources)
        if not sources:
            raise ValueError(f"{name}: no sources (the file is empty); give one source per line.")
        if len(sources) > MAX_BATCH_LINES:
            raise ValueError(
                f"{name}: {len(sources)} sources, the page decodes at most {MAX_BATCH_LINES}; use "
                "`bang-nar generate --input FILE` for big files."
            )
        modes = [m for m in MODES if m in set(modes)]
        rows, truncated = [], 0
        with torch.inference_mode():  # this tab shows no timings, so `compare`'s untimed warm-up pass is not needed
            for source in sources:
                encoded, note = self.encode(source)
                truncated += bool(note)
                rows.append([source] + [self.decode(m, encoded, options).text for m in modes])
        notes = [f"Decoded {len(sources)} source(s) of {name} with {len(modes)} mode(s)."]
        if skipped:
            notes.append(f"Skipped {skipped} empty line(s).")
        if truncated:
            notes.append(f"{truncated} source(s) were longer than {self.max_source_tokens} tokens and were truncated.")
        return rows, ["source"] + [MODES[m] for m in modes], " ".join(notes)


CSV_KEEP_SECONDS = 600  # a request's CSV folder outlives the request long enough for Gradio to copy the file


def _remove_old_folders(root: str | os.PathLike, age: float) -> None:
    """Remove the sub-folders of `root` older than `age` seconds (earlier requests' CSV files)."""
    import shutil

    now = time.time()
    for folder in Path(root).iterdir():
        if folder.is_dir() and now - folder.stat().st_mtime > age:
            shutil.rmtree(folder, ignore_errors=True)


def write_csv(rows: Sequence[Sequence[str]], header: Sequence[str], path: str | os.PathLike) -> Path:
    """The batch table as a UTF-8 CSV file (header first)."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return Path(path)


def example_sources(model_path: str | os.PathLike, count: int = 4) -> list[str]:
    """Example inputs for the page: sources of the data the model card names (the demo's generated task or the
    bundled QG sample), else two general sentences."""
    dataset = _card_dataset(model_path)
    try:
        if dataset == "multimodality":
            from .multimodality import make_multimodality_task

            return list(make_multimodality_task(4, count, count, seed=0).eval["source"])
        if dataset == "du-qg-sample":
            from .data import load_du_qg_sample

            return list(load_du_qg_sample("eval")["source"][:count])
    except Exception:  # examples are a convenience; the page works without them
        pass
    return list(FALLBACK_EXAMPLES)


def _card_dataset(model_path: str | os.PathLike) -> str | None:
    """The first `datasets` entry of the model card (README.md of a folder or Hub repository), if any."""
    try:
        from huggingface_hub import ModelCard

        card_file = Path(model_path) / "README.md"
        if Path(model_path).is_dir():
            card = ModelCard.load(card_file) if card_file.is_file() else None
        else:
            card = ModelCard.load(str(model_path))
        names = (card.data.datasets or []) if card is not None else []
        return names[0] if names else None
    except Exception:  # no card, no network: no examples from it
        return None


def default_model_path() -> Path | None:
    """The SPMD model `bang-nar demo` writes in the current folder, if it is there."""
    return DEMO_MODEL if (DEMO_MODEL / "config.json").is_file() else None


# ---- the page ------------------------------------------------------------------------------------------------------


def _stats(comparison: Comparison, mode: str) -> str:
    result = comparison.results.get(mode)
    if result is None:
        return "not run (tick the mode above)"
    parts = [f"**{result.ms:.1f} ms**"]
    speedup = comparison.speedup(mode)
    parts.append(f"{speedup:.1f}x vs AR beam" if speedup is not None else "speed-up: run AR beam too")
    if result.ar_passes is not None:
        parts.append(f"AR passes: {result.ar_passes} for {result.num_tokens} tokens (AR greedy: one per token)")
    return " · ".join(parts)


def _highlight(comparison: Comparison, mode: str) -> tuple[list[tuple[str, str | None]], dict[str, str]]:
    """The diff box of `mode`: (value, color map). The map, hence the legend, names only the label the value uses:
    "differs from AR" when a word differs, "identical to AR" (the whole text) when none does."""
    result, reference = comparison.results.get(mode), comparison.reference()
    if result is None:
        return [], {}
    if reference is None:
        return [(result.text, None)], {}
    marked = diff_tokens(result.text.split(), reference.text.split())
    if all(label is None for _, label in marked):
        return [(result.text, SAME_LABEL)], {SAME_LABEL: "green"}
    spaced: list[tuple[str, str | None]] = []
    for i, pair in enumerate(marked):
        spaced += [(" ", None)] * bool(i) + [pair]
    return spaced, {DIFF_LABEL: "red"}


def build_app(
    model_path: str | os.PathLike,
    *,
    model=None,
    tokenizer=None,
    examples: Sequence[str] | None = None,
    concurrency_limit: int = 1,
    max_queue: int = 64,
    max_chars: int = MAX_CHARS,
    max_upload_mb: float = MAX_UPLOAD_MB,
):
    """The page for one model, as a `gradio.Blocks` (not launched; call `.launch()`).

    The model and tokenizer are loaded once here (or passed in), then shared by every request; the queue runs
    `concurrency_limit` decodes at a time and holds up to `max_queue` waiting requests. `max_chars` cuts each source
    before tokenizing; `max_upload_mb` bounds the file tab's uploads (bigger ones are refused unread).
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry
    gr = require("gradio", "bang_nar.app's page")

    if model is None or tokenizer is None:
        from .cli._args import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(str(model_path))
    logic = ModeComparison(model, tokenizer, max_chars=max_chars, max_upload_mb=max_upload_mb)
    workdir = tempfile.TemporaryDirectory(prefix="bang-nar-app-")  # the CSV files; removed with the page
    examples = list(examples) if examples is not None else example_sources(model_path)
    logic.compare(examples[0] if examples else FALLBACK_EXAMPLES[0], list(MODES))  # warm-up: first timings not skewed
    choices = [(label, key) for key, label in MODES.items()]

    def run_compare(source, modes, num_candidates, ngram, num_beams):
        options = DecodeOptions(
            num_candidates=int(num_candidates), no_repeat_ngram_size=int(ngram), num_beams=int(num_beams)
        )
        comparison = logic.compare(source or "", modes or [], options)
        note = comparison.note if comparison.note else ("" if modes else "Tick at least one decoding mode.")
        values: list[Any] = [f"**Note:** {note}" if note else ""]
        for mode in MODES:
            result = comparison.results.get(mode)
            values += [result.text if result else "", _stats(comparison, mode) if comparison.results else ""]
            if mode in NAR_MODES:
                value, color_map = _highlight(comparison, mode)
                values.append(gr.update(value=value, color_map=color_map))
        return values

    def run_batch(file, modes, num_candidates, ngram, num_beams):
        if file is None:
            return [], None, "**Note:** upload a .txt file first (one source per line)."
        if not modes:
            return [], None, "**Note:** tick at least one decoding mode."
        if not Path(file).is_file():
            return [], None, "**Note:** the upload has expired (kept for an hour); upload the file again."
        options = DecodeOptions(
            num_candidates=int(num_candidates), no_repeat_ngram_size=int(ngram), num_beams=int(num_beams)
        )
        try:
            rows, header, note = logic.decode_file(file, modes, options)
        except ValueError as error:
            return [], None, f"**Note:** {error}"
        # The upload stays in Gradio's cache (removed after an hour, `delete_cache` below): Gradio stores uploads by
        # content, so two users sending the same file share one copy, and deleting it here would fail the other.
        _remove_old_folders(workdir.name, CSV_KEEP_SECONDS)
        # A folder per request keeps the download's name plain; Gradio copies the file into its own cache.
        path = write_csv(rows, header, Path(tempfile.mkdtemp(dir=workdir.name)) / "bang-nar-outputs.csv")
        return gr.update(value=rows, headers=header), str(path), note

    title = (
        f"bang-nar: decoding modes of {Path(str(model_path)).name if Path(str(model_path)).exists() else model_path}"
    )
    # Gradio's own copies (uploads, downloads) go after an hour, checked every ten minutes.
    with gr.Blocks(title="bang-nar decoding modes", delete_cache=(600, 3600)) as page:
        gr.Markdown(
            f"## {title}\nOne set of weights, several decoders: one-pass NAR, NAR with AR rescoring or "
            "n-gram blocking, `nar_verify` (exactly AR greedy, fewer AR passes) and AR greedy / beam. "
            f"Sources longer than {logic.max_source_tokens} tokens are truncated (the page says so)."
        )
        modes = gr.CheckboxGroup(choices=choices, value=DEFAULT_MODES, label="decoding modes", elem_id="modes")
        with gr.Row():
            num_candidates = gr.Slider(2, 16, value=4, step=1, label="NAR candidates")
            ngram = gr.Slider(1, 4, value=2, step=1, label="no-repeat n-gram size")
            num_beams = gr.Slider(2, 8, value=4, step=1, label="AR beams")
        with gr.Tab("one source"):
            source = gr.Textbox(label="source", lines=3, elem_id="source", placeholder="type a source text")
            run = gr.Button("Run", variant="primary", elem_id="run")
            if examples:
                gr.Examples(examples=[[e] for e in examples], inputs=[source], label="examples")
            note = gr.Markdown(elem_id="note")
            outputs: list[Any] = [note]
            keys = list(MODES)
            for start in range(0, len(keys), 3):
                with gr.Row():
                    for mode in keys[start : start + 3]:
                        with gr.Column():
                            outputs.append(
                                gr.Textbox(label=MODES[mode], elem_id=f"out-{mode}", interactive=False, lines=2)
                            )
                            outputs.append(gr.Markdown(elem_id=f"stats-{mode}"))
                            if mode in NAR_MODES:
                                outputs.append(
                                    gr.HighlightedText(
                                        label="vs AR greedy (else AR beam)",
                                        elem_id=f"diff-{mode}",
                                        color_map={},
                                        show_legend=True,
                                        show_inline_category=False,
                                    )
                                )
            inputs = [source, modes, num_candidates, ngram, num_beams]
            # One concurrency group for every event: they all decode with the one loaded model.
            queue = {"concurrency_limit": concurrency_limit, "concurrency_id": "bang-nar-model"}
            run.click(run_compare, inputs, outputs, api_name="compare", **queue)
            source.submit(run_compare, inputs, outputs, api_name=False, **queue)
        with gr.Tab("file of sources"):
            upload = gr.File(
                label="sources (.txt, one per line)", file_types=[".txt"], type="filepath", elem_id="upload"
            )
            run_file = gr.Button("Decode the file", elem_id="run-file")
            batch_note = gr.Markdown(elem_id="batch-note")
            table = gr.Dataframe(label="outputs per mode", interactive=False, elem_id="table")
            download = gr.File(label="download (CSV)", elem_id="download")
            run_file.click(
                run_batch,
                [upload, modes, num_candidates, ngram, num_beams],
                [table, download, batch_note],
                api_name="batch",
                **queue,
            )
    page.queue(max_size=max_queue, default_concurrency_limit=concurrency_limit)
    page.bang_nar_logic = logic  # for tests and callers that want the same loaded model
    page.bang_nar_workdir = workdir
    return page


__all__ = [
    "DecodeOptions",
    "Comparison",
    "EmptyInput",
    "MODES",
    "ModeComparison",
    "ModeResult",
    "build_app",
    "default_model_path",
    "diff_tokens",
    "example_sources",
    "write_csv",
]
