"""bang-nar: BANG (Qi et al. 2021) for Hugging Face Transformers, with SPMD fine-tuning."""

__version__ = "0.1.0"
