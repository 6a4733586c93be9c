"""`SPMDDataCollator`: pads sources, gold labels and the k AR-stream (distilled) candidates of each sample."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .spmd_loss import IGNORE_INDEX

# The stored sparse KD target (docs/spmd.md#stored-kd), written by `distill_dataset(..., kd_top_n=n)`: per source
# `[k][|ŷ|][n]` token ids and teacher log-probs, aligned with the distilled targets of `kd_column`.
KD_TOP_IDS = "kd_top_ids"
KD_TOP_LOG_PROBS = "kd_top_log_probs"


def _pad(rows: Sequence[Sequence[int]], value: int, multiple: int | None) -> torch.Tensor:
    """Right-pad int rows to the longest (rounded up to `multiple`) → LongTensor [N, L]."""
    length = max((len(r) for r in rows), default=0)
    if multiple:
        length = -(-length // multiple) * multiple
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
    return out


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


@dataclass
class SPMDDataCollator:
    """Collate `{"input_ids", "labels", kd_column?}` features for `SPMDSeq2SeqTrainer`.

    - `input_ids` `[B, S]` right-padded with `pad_token_id`, and `attention_mask` `[B, S]`;
    - `labels` `[B, T]`: gold `y1..yn [SEP]`, right-padded with -100;
    - `kd_column` `[B, k, T_kd]` (when the features carry it): the k AR-stream targets of each sample, each ending
      with `[SEP]`, right-padded with -100; a sample with fewer than k gets all -100 rows (absent candidates);
    - `kd_top_ids` `[B, k, T_kd, n]` (long) and `kd_top_log_probs` `[B, k, T_kd, n]` (float32), when the features
      carry them: the stored top-n of each target position (docs/spmd.md#stored-kd), padded with id 0 and
      log-prob 0 where `kd_column` is -100 (finite values: the loss masks those positions).

    Each target keeps its own real length: the NAR decoder length of a candidate is its length (docs/architecture.md#nar-mode);
    the trainer reads the pad pattern. Gold and candidates are padded separately (T and T_kd may differ).
    """

    pad_token_id: int
    kd_column: str = "kd_labels"
    label_pad_token_id: int = IGNORE_INDEX
    pad_to_multiple_of: int | None = None
    max_candidates: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("SPMDDataCollator got an empty list of features.")
        missing = [k for k in ("input_ids", "labels") if k not in features[0]]
        if missing:
            raise ValueError(
                f"Features lack {missing}; tokenize sources into 'input_ids' and gold targets (ending with [SEP]) "
                "into 'labels' first."
            )
        input_ids = _pad([f["input_ids"] for f in features], self.pad_token_id, self.pad_to_multiple_of)
        lengths = torch.tensor([len(f["input_ids"]) for f in features])
        batch = {
            "input_ids": input_ids,
            "attention_mask": (torch.arange(input_ids.size(1))[None, :] < lengths[:, None]).long(),
            "labels": _pad([f["labels"] for f in features], self.label_pad_token_id, self.pad_to_multiple_of),
        }
        has_kd = [self.kd_column in f and f[self.kd_column] is not None for f in features]
        if any(has_kd):
            if not all(has_kd):
                raise ValueError(
                    f"Only some features carry '{self.kd_column}'; distil the whole dataset "
                    "(bang_nar.trainer.sequence_kd.distill_dataset) or drop the column."
                )
            batch[self.kd_column] = self._pad_candidates([f[self.kd_column] for f in features])
            if any(f.get(KD_TOP_IDS) is not None for f in features):
                k, length = batch[self.kd_column].shape[1:]
                batch[KD_TOP_IDS] = self._pad_top(features, KD_TOP_IDS, k, length, torch.long)
                batch[KD_TOP_LOG_PROBS] = self._pad_top(features, KD_TOP_LOG_PROBS, k, length, torch.float32)
        return batch

    def _pad_top(
        self, features: list[dict[str, Any]], column: str, k: int, length: int, dtype: torch.dtype
    ) -> torch.Tensor:
        """Stored top-n `[k][|ŷ|][n]` per sample → `[B, k, length, n]`, zero-padded, aligned with `kd_column`."""
        if not all(f.get(column) is not None for f in features):
            raise ValueError(
                f"Only some features carry '{column}'; distil the whole dataset with kd_top_n "
                "(bang_nar.trainer.distill_dataset) or drop the kd_top_ids / kd_top_log_probs columns."
            )
        rows = [f[column] for f in features]
        n = next((len(target[0]) for sample in rows for target in sample if target), 1)
        out = torch.zeros(len(rows), k, length, n, dtype=dtype)
        for i, sample in enumerate(rows):
            for j, target in enumerate(sample[:k]):
                if len(target) != len(features[i][self.kd_column][j]):
                    raise ValueError(
                        f"'{column}' of sample {i}, target {j} has {len(target)} positions but its target in "
                        f"'{self.kd_column}' has {len(features[i][self.kd_column][j])}; distil both together."
                    )
                if target:
                    out[i, j, : len(target)] = torch.as_tensor(target, dtype=dtype)
        return out

    def _pad_candidates(self, per_sample: list[Sequence[Sequence[int]]]) -> torch.Tensor:
        """k candidate id lists per sample → `[B, k, T_kd]` with -100 padding (rows and missing candidates)."""
        if not all(_is_list(c) and all(_is_list(r) for r in c) for c in per_sample):
            raise ValueError(
                f"'{self.kd_column}' must hold a list of candidate id lists per sample (k >= 1), e.g. [[5, 9, 3]]."
            )
        k = max(len(c) for c in per_sample)
        if self.max_candidates is not None:
            k = min(k, self.max_candidates)
        rows = [list(c[j]) if j < len(c) else [] for c in per_sample for j in range(k)]
        padded = _pad(rows, self.label_pad_token_id, self.pad_to_multiple_of)  # [B·k, T_kd]
        return padded.view(len(per_sample), k, -1)
