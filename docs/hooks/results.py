"""MkDocs hook: serve the figures of `benchmarks/results/` as `results/<name>.png`, without copying them into docs/.

The benchmarks write their PNGs next to their JSON; the pages show them from there (one file, one place).
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def on_files(files, config, **kwargs):
    for png in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"results/{png.name}", abs_src_path=str(png)))
    return files
