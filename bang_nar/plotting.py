"""The quality-against-speed-up figure of the demo and the benchmarks: one labelled point per system.

NAR is a trade of quality for speed, so the figure people read first puts every system at (speed-up, quality).
Speed-up is on a log axis with plain tick labels (`2×`, `4×`, not `2 × 10^0`), and labels are placed so that they
overlap neither each other nor the points (systems at the same spot share one label). Needs the `plots` extra.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._extras import require

# Label offsets from a point, in typographic points, tried in this order: right, then left, then further out.
_OFFSETS = [(dx, dy) for dy in (0, 10, -10, 20, -20, 30, -30, 42, -42, 56, -56, 72, -72) for dx in (7, -7, 24, -24)]


@dataclass(frozen=True)
class System:
    """One point: `label` at (`speedup`, `quality`)."""

    label: str
    speedup: float
    quality: float


def speedups(ms_per_sample: dict[str, float], baseline: str) -> dict[str, float]:
    """Speed-up of every system over `baseline` (a key of `ms_per_sample`): baseline ms / system ms."""
    if baseline not in ms_per_sample:
        raise ValueError(f"no baseline {baseline!r} among {sorted(ms_per_sample)} to compute speed-ups against")
    return {name: ms_per_sample[baseline] / ms for name, ms in ms_per_sample.items()}


def plain_log_axis(axis: Any, low: float, high: float, suffix: str = "") -> None:
    """Log scale on `axis` (`ax.xaxis` or `ax.yaxis`) with ticks at 1-2-5 steps written plainly (`20`, `0.5`)."""
    ticker = require("matplotlib.ticker", "the figure's axis")
    steps = [m * 10.0**e for e in range(-3, 6) for m in (1, 2, 5)]
    ticks = [t for t in steps if low <= t <= high] or [low, high]
    if len(ticks) > 8:  # keep the axis readable on wide ranges: powers of ten only
        ticks = [t for t in ticks if math.isclose(math.log10(t), round(math.log10(t)))] or ticks[::3]
    axis.set_major_locator(ticker.FixedLocator(ticks))
    axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}{suffix}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def _merge_coincident(systems: Sequence[System]) -> list[System]:
    """Systems at (nearly) the same spot (2% apart in speed, 0.5% of the quality range) become one labelled point."""
    qualities = [s.quality for s in systems]
    tolerance = 0.005 * max(max(qualities) - min(qualities), 10.0)
    merged: list[System] = []
    for system in systems:
        for i, other in enumerate(merged):
            if abs(math.log(system.speedup / other.speedup)) < 0.02 and abs(system.quality - other.quality) < tolerance:
                merged[i] = System(f"{other.label} = {system.label}", other.speedup, other.quality)
                break
        else:
            merged.append(system)
    return merged


def _overlap(a: Any, b: Any) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(width, 0.0) * max(height, 0.0)


def _place_labels(ax: Any, systems: Sequence[System], fontsize: float) -> None:
    """Annotate each point at the first offset whose text box hits no placed label, no point and stays inside."""
    figure = ax.figure
    renderer = figure.canvas.get_renderer()
    to_display = ax.transData.transform
    inside = ax.get_window_extent(renderer)
    marker = 4.0 * figure.dpi / 72  # half the marker's size, in pixels
    transforms = require("matplotlib.transforms", "the figure's labels")
    points = [
        transforms.Bbox.from_extents(x - marker, y - marker, x + marker, y + marker)
        for x, y in (to_display((s.speedup, s.quality)) for s in systems)
    ]
    placed: list[Any] = []
    # Crowded points first (those with the most neighbours), so they get the nearest free spots.
    order = sorted(range(len(systems)), key=lambda i: -sum(_overlap(points[i].expanded(8, 3), p) > 0 for p in points))
    for i in order:
        system = systems[i]
        best: tuple[float, tuple[int, int], Any] | None = None

        def label(dx: int, dy: int, system: Any = system, **kwargs: Any) -> Any:
            return ax.annotate(
                system.label,
                (system.speedup, system.quality),
                xytext=(dx, dy),
                textcoords="offset points",
                ha="left" if dx > 0 else "right",
                va="center",
                fontsize=fontsize,
                **kwargs,
            )

        for dx, dy in _OFFSETS:
            text = label(dx, dy)  # measured without its leader line: an annotation's extent would also cover the line
            box = text.get_window_extent(renderer).expanded(1.04, 1.15)
            text.remove()
            outside = box.width * box.height - _overlap(box, inside)
            cost = sum(_overlap(box, other) for other in placed + points) + 10 * outside
            if best is None or cost < best[0]:
                best = (cost, (dx, dy), box)
            if cost == 0:
                break
        assert best is not None
        (dx, dy), box = best[1], best[2]
        leader = {"arrowstyle": "-", "color": "0.55", "lw": 0.6, "shrinkA": 1, "shrinkB": 3}
        label(dx, dy, arrowprops=leader if dy or abs(dx) > 7 else None)
        placed.append(box)


def plot_quality_vs_speedup(
    ax: Any,
    systems: Sequence[System],
    *,
    quality_label: str,
    baseline: str,
    title: str | None = None,
    fontsize: float = 8,
    labels: bool = True,
) -> list[System]:
    """Draw `systems` on `ax`: speed-up over `baseline` (log, plain ticks) against `quality_label`.

    Returns the points drawn (coincident systems merged). With `labels=False` the caller labels them with
    `label_points` once the figure's layout is final (labels are placed by measuring their boxes on the canvas).
    """
    systems = _merge_coincident(systems)
    xs = [s.speedup for s in systems]
    ys = [s.quality for s in systems]
    ax.scatter(xs, ys, s=36, color="tab:blue", zorder=3)
    low, high = min(xs), max(xs)
    ax.set_xscale("log")
    # Room for labels on both sides: the widest ones need about a factor 3 of log-space at these sizes.
    ax.set_xlim(low / 3.0, high * 3.0)
    spread = max(max(ys) - min(ys), 10.0)
    lower = min(ys) - 0.15 * spread
    if min(ys) >= 0:  # scores are never negative: show no negative range below them
        lower = max(lower, -0.05 * spread)
    ax.set_ylim(lower, max(ys) + 0.15 * spread)
    plain_log_axis(ax.xaxis, low / 3.0, high * 3.0, suffix="×")
    ax.axvline(1.0, color="0.85", lw=0.8, zorder=1)
    ax.grid(True, which="major", color="0.92", lw=0.6)
    ax.set_xlabel(f"speed-up over {baseline} (log scale; right is faster)")
    ax.set_ylabel(f"{quality_label} (higher is better)")
    if title:
        ax.set_title(title, fontsize=fontsize + 2)
    if labels:
        label_points(ax, systems, fontsize)
    return systems


def label_points(ax: Any, systems: Sequence[System], fontsize: float = 8) -> None:
    """Label the points of `plot_quality_vs_speedup` so that no label overlaps another label or a point."""
    ax.figure.canvas.draw()  # measure the label boxes where they will be drawn
    _place_labels(ax, systems, fontsize)


def quality_vs_speedup_figure(
    panels: Sequence[tuple[str, Sequence[System]]],
    *,
    quality_label: str,
    baseline: str,
    title: str | None = None,
    panel_size: tuple[float, float] = (6.4, 4.4),
) -> Any:
    """A figure with one `plot_quality_vs_speedup` panel per `(panel title, systems)`; returns the figure."""
    if "matplotlib.pyplot" not in sys.modules:  # a file-writing backend, unless the caller already chose one
        require("matplotlib", "the quality-against-speed-up figure").use("Agg")
    plt = require("matplotlib.pyplot", "the quality-against-speed-up figure")
    fig, axes = plt.subplots(
        1, len(panels), figsize=(panel_size[0] * len(panels), panel_size[1]), squeeze=False, layout="constrained"
    )
    if title:
        fig.suptitle(title, fontsize=11)
    drawn = [
        plot_quality_vs_speedup(
            ax, systems, quality_label=quality_label, baseline=baseline, title=panel_title, labels=False
        )
        for ax, (panel_title, systems) in zip(axes[0], panels)
    ]
    fig.canvas.draw()
    fig.set_layout_engine("none")  # freeze the axes where they are, so measured label boxes stay true when saved
    for ax, systems in zip(axes[0], drawn):
        _place_labels(ax, systems, fontsize=8)
    return fig


def save_figure(fig: Any, path: Path, dpi: int = 100) -> Path:
    """Write `fig` as a PNG (small enough to embed in the README) and close it."""
    plt = require("matplotlib.pyplot", "saving a figure")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
