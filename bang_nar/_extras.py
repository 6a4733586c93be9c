"""Optional dependencies: import them through `require`, which names the extra to install when one is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

# Which extra of `pyproject.toml` provides each optional top-level module.
EXTRA_OF_MODULE = {
    "evaluate": "metrics",
    "sacrebleu": "metrics",
    "rouge_score": "metrics",
    "nltk": "metrics",
    "matplotlib": "plots",
    "gradio": "app",
}


class MissingExtraError(ImportError):
    """An optional library is not installed; the message names the extra that installs it."""


def require(module: str, purpose: str) -> ModuleType:
    """Import `module`, or raise a one-line `MissingExtraError` (an `ImportError`) naming the extra that installs it.

    Args:
        module: the import name, a key of `EXTRA_OF_MODULE` (a submodule such as `matplotlib.pyplot` also works).
        purpose: what needs it, for the message (e.g. "the demo's plot").
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        extra = EXTRA_OF_MODULE[module.split(".")[0]]
        raise MissingExtraError(
            f"{purpose} needs {module.split('.')[0]!r}, from the {extra!r} extra: "
            f'pip install "bang-nar[{extra}]" (or ".[{extra}]" in a checkout)'
        ) from error
