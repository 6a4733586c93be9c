"""The quality-against-speed-up figure: one labelled point per system, no overlapping labels, plain ticks."""

import itertools

import pytest

pytest.importorskip("matplotlib")

from bang_nar.demo import plot_results  # noqa: E402
from bang_nar.plotting import System, quality_vs_speedup_figure, speedups  # noqa: E402


def _label_boxes(ax):
    renderer = ax.figure.canvas.get_renderer()
    # An annotation's extent also covers its leader line; the label is the text box alone.
    boxes = {}
    for text in list(ax.texts):
        twin = ax.annotate(text.get_text(), text.xy, xytext=text.xyann, textcoords=text.anncoords,
                           ha=text.get_ha(), va=text.get_va(), fontsize=text.get_fontsize())
        boxes[text.get_text()] = twin.get_window_extent(renderer)
        twin.remove()
    return boxes


def test_crowded_points_get_separate_labels_and_plain_ticks():
    # Seven systems crowded at the top right, as NAR recipes that all reach ~100% are, plus two coincident ones.
    systems = [System(f"recipe number {i}", 18 + i, 99 + 0.2 * i) for i in range(7)]
    systems += [System("AR beam 4", 1.0, 100.0), System("nar_verify", 1.0, 100.0), System("gold", 20, 20)]
    fig = quality_vs_speedup_figure([("crowded", systems)], quality_label="mode consistency %", baseline="AR beam 4")
    (ax,) = fig.axes
    fig.canvas.draw()
    boxes = _label_boxes(ax)
    assert "AR beam 4 = nar_verify" in boxes  # coincident systems share one label
    assert len(boxes) == len(systems) - 1
    for (a, box_a), (b, box_b) in itertools.combinations(boxes.items(), 2):
        assert not box_a.overlaps(box_b), f"labels {a!r} and {b!r} overlap"
    ticks = [t.get_text() for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True) if t.get_text()]
    assert ticks and all("10^" not in t and "times" not in t for t in ticks), ticks
    assert "1×" in ticks and "10×" in ticks


def test_speedups_name_a_missing_baseline():
    assert speedups({"a": 4.0, "b": 1.0}, "a") == {"a": 1.0, "b": 4.0}
    with pytest.raises(ValueError, match="no baseline 'c'"):
        speedups({"a": 1.0}, "c")


def test_demo_plot_puts_every_system_on_one_tradeoff_figure(tmp_path):
    results = {
        "AR greedy": {"bleu": 100.0, "mode_consistency": 100.0, "ms_per_sample": 1.9},
        "AR beam 4": {"bleu": 100.0, "mode_consistency": 100.0, "ms_per_sample": 5.6},
        "NAR (SPMD)": {"bleu": 98.8, "mode_consistency": 94.0, "ms_per_sample": 0.9},
    }
    path = plot_results(results, tmp_path / "results.png", "demo")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
