"""Former home of the semi-NAR decoding loop, kept for existing imports and the API page.

The loop is now `BangGenerationMixin._generate_semi_nar` (`generate(mode="semi_nar")`, in `generation_bang.py`, so
remote code decodes semi-NAR too); the helpers are re-exported from the model files.
"""

from typing import Any

import torch

from .generation_bang import BangSemiNARGenerateOutput
from .modeling_bang import BangForConditionalGeneration, semi_nar_step_pattern


def generate_semi_nar(
    model: BangForConditionalGeneration, inputs: torch.Tensor | None = None, **kwargs: Any
) -> torch.Tensor | BangSemiNARGenerateOutput:
    """`model.generate(inputs, mode="semi_nar", **kwargs)`: greedy block-wise semi-NAR decoding, `block_size` = k
    tokens per decoder pass (see `BangGenerationMixin._generate_semi_nar` for the options)."""
    return model.generate(inputs, mode="semi_nar", **kwargs)


__all__ = ["BangSemiNARGenerateOutput", "generate_semi_nar", "semi_nar_step_pattern"]
