"""The wheel ships everything a user needs, and `trainer/` installs as `bang_nar.trainer`, never as `trainer`."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = out.glob("bang_nar-*.whl")
    return path


def test_wheel_contents(wheel):
    with zipfile.ZipFile(wheel) as archive:
        wheel_files = set(archive.namelist())
        entry_points = archive.read(next(n for n in wheel_files if n.endswith("entry_points.txt"))).decode()
        # setuptools < 77 writes `.dist-info/LICENSE`, newer ones `.dist-info/licenses/LICENSE` (PEP 639).
        license_file = next(n for n in wheel_files if n.endswith((".dist-info/LICENSE", ".dist-info/licenses/LICENSE")))
        license_text = archive.read(license_file).decode()
    expected = [
        "bang_nar/modeling_bang.py",
        "bang_nar/generation_bang.py",
        "bang_nar/configuration_bang.py",
        "bang_nar/vocab.txt",
        "bang_nar/cli/__init__.py",
        "bang_nar/trainer/spmd_trainer.py",
        "bang_nar/trainer/spmd_loss.py",
        "bang_nar/hub_cards/converted.md",
        "bang_nar/metrics/corpus_bleu/corpus_bleu.py",
        "bang_nar/sample_data/du_qg/train.jsonl",
        "bang_nar/sample_data/du_qg/ATTRIBUTION.md",
        "bang_nar/py.typed",
    ]
    missing = [name for name in expected if name not in wheel_files]
    assert not missing, missing
    assert not any(name.startswith(("trainer/", "hub_cards/", "tests/")) for name in wheel_files)
    assert "bang-nar = bang_nar.cli:main" in entry_points
    assert license_text.startswith("MIT License")


def test_wheel_metadata(wheel):
    """One version (read from `bang_nar.__version__`), and a core without the metric, plot and app libraries."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    headers = [line.split(": ", 1) for line in metadata.split("\n\n")[0].splitlines() if ": " in line]
    version = re.search(r'^__version__ = "([^"]+)"$', (REPO / "bang_nar/__init__.py").read_text(), re.MULTILINE)
    assert ("Version", version.group(1)) in [tuple(h) for h in headers]
    core = {re.split(r"[<>=!~ ;\[]", value)[0].lower() for key, value in headers
            if key == "Requires-Dist" and "extra ==" not in value}
    assert {"torch", "transformers", "accelerate", "datasets", "safetensors"} <= core
    assert not core & {"evaluate", "sacrebleu", "rouge-score", "nltk", "matplotlib", "gradio"}, core
    extras = {value for key, value in headers if key == "Provides-Extra"}
    assert {"metrics", "plots", "app", "docs", "test", "all"} <= extras
    for key, value in headers:
        if key in ("Project-URL", "Home-page"):
            assert "pypi" not in value.lower(), value
