"""SPMD fine-tuning for BANG (installed as `bang_nar.trainer`; docs/spmd.md, our reconstruction of Qi et al. 2022).

Only relative imports inside this package: PyPI's unrelated `trainer` distribution must never shadow these modules.
"""

from .collator import SPMDDataCollator
from .sequence_kd import distill_dataset
from .spmd_config import SPMD_PRESETS, SPMDTrainingArguments
from .spmd_loss import (
    candidate_choice,
    gold_nll,
    mixed_distillation_loss,
    pace_difficulty,
    self_paced_weights,
    sequence_kd_nll,
    sparse_kd_divergence,
    token_kd_divergence,
)
from .spmd_trainer import SelfPacedState, SPMDSeq2SeqTrainer

__all__ = [
    "SPMD_PRESETS",
    "SPMDDataCollator",
    "SPMDSeq2SeqTrainer",
    "SPMDTrainingArguments",
    "SelfPacedState",
    "candidate_choice",
    "distill_dataset",
    "gold_nll",
    "mixed_distillation_loss",
    "pace_difficulty",
    "self_paced_weights",
    "sequence_kd_nll",
    "sparse_kd_divergence",
    "token_kd_divergence",
]
