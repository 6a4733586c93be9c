"""bang-nar: BANG (Qi et al. 2021) for Hugging Face Transformers, with SPMD fine-tuning."""

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM, AutoTokenizer
from transformers.pipelines import PIPELINE_REGISTRY, REMOVED_TASKS

from .configuration_bang import BangConfig
from .modeling_bang import BangForConditionalGeneration, BangModel, BangPreTrainedModel
from .pipeline_bang import BangText2TextGenerationPipeline
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
# Transformers 5 removed the `text2text-generation` task; BANG's cards and users name it, so it is BANG's pipeline.
REMOVED_TASKS.pop("text2text-generation", None)
PIPELINE_REGISTRY.register_pipeline(
    "text2text-generation", pipeline_class=BangText2TextGenerationPipeline, pt_model=AutoModelForSeq2SeqLM, type="text"
)

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
