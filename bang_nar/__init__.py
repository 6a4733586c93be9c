"""bang-nar: BANG (Qi et al. 2021) for Hugging Face Transformers, with SPMD fine-tuning."""

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM, AutoTokenizer

from .configuration_bang import BangConfig
from .modeling_bang import BangForConditionalGeneration, BangModel, BangPreTrainedModel
from .postprocess import postprocess_nar
from .tokenization_bang import BangTokenizerFast, load_bang_tokenizer

__version__ = "0.1.0"

# In-process Auto registration (fla pattern) and `auto_map` in saved configs, so a checkpoint also loads with
# `trust_remote_code=True` where this package is not installed.
AutoConfig.register("bang", BangConfig, exist_ok=True)
AutoModel.register(BangConfig, BangModel, exist_ok=True)
AutoModelForSeq2SeqLM.register(BangConfig, BangForConditionalGeneration, exist_ok=True)
AutoTokenizer.register(BangConfig, fast_tokenizer_class=BangTokenizerFast, exist_ok=True)
BangConfig.register_for_auto_class()
BangModel.register_for_auto_class("AutoModel")
BangForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")
BangTokenizerFast.register_for_auto_class("AutoTokenizer")

__all__ = [
    "BangConfig",
    "BangForConditionalGeneration",
    "BangModel",
    "BangPreTrainedModel",
    "BangTokenizerFast",
    "load_bang_tokenizer",
    "postprocess_nar",
]
