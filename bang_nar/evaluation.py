"""Generation metrics for BANG outputs, and JSON + Markdown result files.

Each metric is an `evaluate` script module shipped inside the package (`bang_nar/metrics/<name>/<name>.py`) and
loaded by its local path, so nothing is fetched from the Hub. All quality scores are on a 0-100 scale.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._extras import require
from .hub import CARD_METRICS

if TYPE_CHECKING:
    import evaluate


METRICS_DIR = Path(__file__).parent / "metrics"
METRIC_NAMES = ("corpus_bleu", "sentence_bleu", "rouge", "meteor", "distinct", "repetition")
# The library each metric script imports besides `evaluate` (all from the `metrics` extra).
_METRIC_LIBRARY = {"corpus_bleu": "sacrebleu", "sentence_bleu": "nltk", "rouge": "rouge_score", "meteor": "nltk"}

# Column order of the Markdown table; any other numeric key follows in the order it first appears.
_COLUMN_ORDER = (
    "bleu",
    "sentence_bleu",
    "rouge1",
    "rouge2",
    "rougeL",
    "meteor",
    "distinct_1",
    "distinct_2",
    "repetition_rate",
    "mode_consistency",
    "ms_per_sample",
    "samples_per_s",
    "num_samples",
)
# Display names of the result keys: the hub's card metrics, plus the sample count of a local table.
_COLUMN_TITLES = {**CARD_METRICS, "num_samples": "samples"}


def metric_path(name: str) -> Path:
    """The folder of the shipped metric script `name` (one of `METRIC_NAMES`)."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; bang-nar ships {', '.join(METRIC_NAMES)}.")
    return METRICS_DIR / name


def load_metric(name: str, **kwargs: Any) -> evaluate.EvaluationModule:
    """Load a shipped metric with `evaluate.load(<local path>)`: no network, no Hub lookup.

    Args:
        name: one of `METRIC_NAMES`.
        **kwargs: passed to `evaluate.load` (e.g. `experiment_id` for distributed evaluation).
    """
    kwargs.setdefault("keep_in_memory", True)  # no Arrow cache files for a few thousand strings
    path = metric_path(name)
    if name in _METRIC_LIBRARY:
        require(_METRIC_LIBRARY[name], f"the {name} metric")
    return require("evaluate", "scoring generations").load(str(path), **kwargs)


def compute_generation_metrics(
    predictions: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    raw_predictions: Sequence[str] | Sequence[Sequence[int]] | None = None,
    ignore_tokens: Sequence[str | int] = (),
    metrics: Sequence[str] = METRIC_NAMES,
    elapsed_s: float | None = None,
) -> dict[str, Any]:
    """Score generated text against one or several references per prediction.

    Args:
        predictions: final (post-processed) outputs, one string per example.
        references: one string per example, or a list of valid references per example.
        raw_predictions: the model's outputs before post-processing (strings or token-id lists); the repetition
            rate is computed on them when given (NAR repeats are what post-processing removes).
        ignore_tokens: tokens dropped before the repetition rate, e.g. the pad token or its id.
        metrics: which shipped metrics to run.
        elapsed_s: wall-clock seconds spent generating `predictions`; adds `ms_per_sample` and `samples_per_s`.

    Returns:
        A flat dict: `bleu` (corpus BLEU-4), `sentence_bleu`, `rouge1`/`rouge2`/`rougeL`, `meteor` (None plus
        `meteor_note` without WordNet data), `distinct_1`/`distinct_2`, `repetition_rate` with
        `repetition_rate_on` ("raw_predictions" or "predictions"), `num_samples` and latency when timed.
    """
    predictions = list(predictions)
    references = [[ref] if isinstance(ref, str) else list(ref) for ref in references]
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references; pass one per example.")
    if not predictions:
        raise ValueError("No predictions to score.")
    if raw_predictions is not None and len(raw_predictions) != len(predictions):
        raise ValueError(f"{len(raw_predictions)} raw_predictions but {len(predictions)} predictions.")

    results: dict[str, Any] = {"num_samples": len(predictions)}
    for name in metrics:
        metric = load_metric(name)
        if name == "corpus_bleu":
            results.update(bleu=metric.compute(predictions=predictions, references=references)["bleu"])
        elif name == "distinct":
            results.update(metric.compute(predictions=predictions))
        elif name == "repetition":
            source = raw_predictions if raw_predictions is not None else predictions
            scored = metric.compute(predictions=[_as_list(p) for p in source], ignore_tokens=list(ignore_tokens))
            results.update(
                repetition_rate=scored["repetition_rate"],
                repetition_rate_on="raw_predictions" if raw_predictions is not None else "predictions",
            )
        else:
            results.update(metric.compute(predictions=predictions, references=references))
    if elapsed_s is not None:
        results.update(latency(elapsed_s, len(predictions)))
    return results


def _as_list(prediction: Any) -> Any:
    # Token-id tensors/arrays become plain lists so `evaluate` can type them.
    return prediction if isinstance(prediction, str) else [p.item() if hasattr(p, "item") else p for p in prediction]


def latency(elapsed_s: float, num_samples: int) -> dict[str, float]:
    """`ms_per_sample` and `samples_per_s` for `num_samples` generated in `elapsed_s` seconds."""
    if num_samples <= 0 or elapsed_s <= 0:
        raise ValueError(f"latency needs positive elapsed_s and num_samples (got {elapsed_s}, {num_samples}).")
    return {"ms_per_sample": 1000.0 * elapsed_s / num_samples, "samples_per_s": num_samples / elapsed_s}


def write_results(
    results: Mapping[str, Any], out_dir: str | os.PathLike, *, name: str = "results", title: str | None = None
) -> tuple[Path, Path]:
    """Write `results` as `<out_dir>/<name>.json` and a Markdown table `<out_dir>/<name>.md`.

    Args:
        results: either one row of metrics (`{"bleu": ..., ...}`) or rows keyed by mode/system
            (`{"ar": {...}, "nar": {...}}`), e.g. each from `compute_generation_metrics(..., elapsed_s=...)`.
            Numeric values become columns (`ms_per_sample`/`samples_per_s` included); string values such as
            `meteor_note` become notes under the table; None shows as "n/a".
        out_dir: created if missing.
        name: the file name stem.
        title: an optional heading for the Markdown file.

    Returns:
        `(json_path, md_path)`.
    """
    rows = _as_rows(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(_strict_json(results), indent=2, allow_nan=False) + "\n", encoding="utf-8")

    columns: list[str] = []
    for row in rows.values():
        for key, value in row.items():
            if key not in columns and (value is None or _is_number(value)):
                columns.append(key)
    columns.sort(key=lambda key: _COLUMN_ORDER.index(key) if key in _COLUMN_ORDER else len(_COLUMN_ORDER))
    lines = [f"# {title}", ""] if title else []
    lines.append("| " + " | ".join(["mode", *(_COLUMN_TITLES.get(c, c) for c in columns)]) + " |")
    lines.append("|" + "|".join(["---", *("---:" for _ in columns)]) + "|")
    for row_name, row in rows.items():
        lines.append("| " + " | ".join([row_name, *(_format(row.get(c)) for c in columns)]) + " |")
    # A note every row shares (e.g. "WordNet data not found") is said once; the others name their row.
    text_items = [
        (row_name, key, value) for row_name, row in rows.items() for key, value in row.items() if isinstance(value, str)
    ]
    shared = {(key, value) for _, key, value in text_items if all(row.get(key) == value for row in rows.values())}
    notes = [
        f"- {key}: {value}" if (key, value) in shared or len(rows) == 1 else f"- {row_name}: {key}: {value}"
        for row_name, key, value in text_items
    ]
    if notes:
        lines += ["", "Notes:", *dict.fromkeys(notes)]
    lines += ["", "Scores are on a 0-100 scale; latency is wall-clock time of generation only."]
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return json_path, md_path


def _as_rows(results: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    if not results:
        raise ValueError("write_results: results is empty.")
    nested = [isinstance(v, Mapping) for v in results.values()]
    if all(nested):
        return dict(results)
    if any(nested):
        raise ValueError(
            "write_results: mix of metric values and per-mode dicts; pass one row or {mode: {metric: ...}}."
        )
    return {"model": results}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.2f}"


def _strict_json(value: Any) -> Any:
    """Plain JSON values: numpy/torch scalars unwrapped, NaN/inf as null (json.dumps would write bare NaN)."""
    if isinstance(value, Mapping):
        return {str(k): _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy / torch scalars
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


__all__ = [
    "METRIC_NAMES",
    "compute_generation_metrics",
    "latency",
    "load_metric",
    "metric_path",
    "write_results",
]
