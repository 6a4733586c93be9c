"""bang-nar: BANG (Qi et al. 2021) for Hugging Face Transformers, with SPMD fine-tuning."""

from __future__ import annotations

import os
import sys

__version__ = "0.1.0"

__all__ = [
    "BangConfig",
    "BangForConditionalGeneration",
    "BangModel",
    "BangPreTrainedModel",
    "BangText2TextGenerationPipeline",
    "BangTokenizerFast",
    "load_bang_tokenizer",
    "postprocess_nar",
]

# Where each public name lives, for the lazy imports of the `bang-nar` command (PEP 562 `__getattr__` below).
_HOMES = {
    "BangConfig": "configuration_bang",
    "BangForConditionalGeneration": "modeling_bang",
    "BangModel": "modeling_bang",
    "BangPreTrainedModel": "modeling_bang",
    "BangText2TextGenerationPipeline": "pipeline_bang",
    "BangTokenizerFast": "tokenization_bang",
    "postprocess_nar": "postprocess",
    "load_bang_tokenizer": "tokenization_bang",
}


def register_auto_classes() -> None:
    """Register BANG with the Auto classes (config, model, seq2seq LM, tokenizer; in process, fla pattern), add
    `auto_map` to saved configs so a checkpoint also loads with `trust_remote_code=True` where this package is not
    installed, and register BANG's `text2text-generation` pipeline. Idempotent; `import bang_nar` calls it, except
    under the `bang-nar` command, which calls it once its arguments are checked (so `--help` and argument errors
    never import torch: docs/cli.md)."""
    from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM, AutoTokenizer
    from transformers.pipelines import PIPELINE_REGISTRY, REMOVED_TASKS

    from .configuration_bang import BangConfig
    from .modeling_bang import BangForConditionalGeneration, BangModel
    from .pipeline_bang import BangText2TextGenerationPipeline
    from .tokenization_bang import BangTokenizerFast

    AutoConfig.register("bang", BangConfig, exist_ok=True)
    AutoModel.register(BangConfig, BangModel, exist_ok=True)
    AutoModelForSeq2SeqLM.register(BangConfig, BangForConditionalGeneration, exist_ok=True)
    AutoTokenizer.register(BangConfig, fast_tokenizer_class=BangTokenizerFast, exist_ok=True)
    BangConfig.register_for_auto_class()
    BangModel.register_for_auto_class("AutoModel")
    BangForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")
    BangTokenizerFast.register_for_auto_class("AutoTokenizer")
    # Transformers 5 removed the `text2text-generation` task; BANG's cards and users name it, so it is BANG's pipeline.
    REMOVED_TASKS.pop("text2text-generation", None)
    PIPELINE_REGISTRY.register_pipeline(
        "text2text-generation",
        pipeline_class=BangText2TextGenerationPipeline,
        pt_model=AutoModelForSeq2SeqLM,
        type="text",
    )


def __getattr__(name: str):
    """A public name imported on first use, when the package was imported by the `bang-nar` command."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    register_auto_classes()
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value


def _started_by_the_cli() -> bool:
    """Whether this import is the `bang-nar` console script or `python -m bang_nar` starting up."""
    argv = getattr(sys, "argv", None) or [""]
    return os.path.basename(argv[0]) in ("bang-nar", "bang-nar.exe") or argv[0] == "-m"


if not _started_by_the_cli():
    register_auto_classes()
    from .configuration_bang import BangConfig
    from .modeling_bang import BangForConditionalGeneration, BangModel, BangPreTrainedModel
    from .pipeline_bang import BangText2TextGenerationPipeline
    from .postprocess import postprocess_nar
    from .tokenization_bang import BangTokenizerFast, load_bang_tokenizer
