"""SPMDDataCollator: sources, gold labels and k distilled candidates, each padded to its own length."""

import pytest
import torch

from bang_nar.trainer import SPMDDataCollator

FEATURES = [
    {"input_ids": [5, 6, 7, 3], "labels": [8, 3], "kd_labels": [[9, 9, 3], [8, 3]]},
    {"input_ids": [5, 3], "labels": [7, 7, 7, 3], "kd_labels": [[4, 3]]},
]


def test_pads_sources_labels_and_candidates():
    batch = SPMDDataCollator(pad_token_id=0)(FEATURES)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 3], [5, 3, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[8, 3, -100, -100], [7, 7, 7, 3]]
    assert batch["kd_labels"].shape == (2, 2, 3)
    assert batch["kd_labels"].tolist() == [[[9, 9, 3], [8, 3, -100]], [[4, 3, -100], [-100, -100, -100]]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_without_candidates_and_with_options():
    plain = [{k: v for k, v in f.items() if k != "kd_labels"} for f in FEATURES]
    batch = SPMDDataCollator(pad_token_id=0, pad_to_multiple_of=8)(plain)
    assert set(batch) == {"input_ids", "attention_mask", "labels"} and batch["input_ids"].shape == (2, 8)
    assert SPMDDataCollator(pad_token_id=0, max_candidates=1)(FEATURES)["kd_labels"].shape == (2, 1, 3)
    renamed = [{**p, "ar_targets": f["kd_labels"]} for p, f in zip(plain, FEATURES)]
    assert "ar_targets" in SPMDDataCollator(pad_token_id=0, kd_column="ar_targets")(renamed)


def test_bad_features_fail_clearly():
    collate = SPMDDataCollator(pad_token_id=0)
    with pytest.raises(ValueError, match="labels"):
        collate([{"input_ids": [1, 3]}])
    with pytest.raises(ValueError, match="Only some features"):
        collate([FEATURES[0], {"input_ids": [5, 3], "labels": [3]}])
    with pytest.raises(ValueError, match="list of candidate id lists"):
        collate([{"input_ids": [5, 3], "labels": [3], "kd_labels": [4, 3]}])
    with pytest.raises(ValueError, match="empty"):
        collate([])
