"""A missing optional library fails in one line that names the extra installing it."""

import sys

import pytest

from bang_nar import _extras
from bang_nar.evaluation import load_metric


@pytest.fixture
def without(monkeypatch):
    """Make `import <name>` fail as if the library were not installed (a `None` entry in `sys.modules`)."""

    def hide(name: str) -> None:
        for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, module)
        monkeypatch.setitem(sys.modules, name, None)

    return hide


@pytest.mark.parametrize(("module", "extra"), [("matplotlib.pyplot", "plots"), ("gradio", "app"), ("nltk", "metrics")])
def test_require_names_the_extra(without, module, extra):
    without(module.split(".")[0])
    with pytest.raises(ImportError) as error:
        _extras.require(module, "the thing")
    message = str(error.value)
    assert "\n" not in message and f'pip install "bang-nar[{extra}]"' in message and message.startswith("the thing")


def test_metric_without_its_library_names_the_metrics_extra(without):
    without("sacrebleu")
    with pytest.raises(ImportError, match=r"corpus_bleu metric needs 'sacrebleu', from the 'metrics' extra"):
        load_metric("corpus_bleu")


def test_require_returns_the_installed_module():
    import matplotlib

    assert _extras.require("matplotlib", "the plot") is matplotlib
