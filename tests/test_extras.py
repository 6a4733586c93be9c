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


def test_cli_reports_a_missing_extra_in_one_line(without, monkeypatch, capsys):
    from bang_nar.cli import convert, main

    without("matplotlib")
    # Any subcommand whose work needs an optional library: here `convert`, made to draw a figure.
    monkeypatch.setattr(convert, "run", lambda args: _extras.require("matplotlib.pyplot", "the figure"))
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "checkpoint.pt", "out"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bang-nar convert: error: the figure needs 'matplotlib'")
    assert 'pip install "bang-nar[plots]"' in err
