"""A short real run on Du et al. (2017) question generation (../shared/data/du2017_qg): AR fine-tuning of a tiny
BANG (the teacher), AR-stream distillation, then SPMD; the training losses must fall. Word-level vocabulary built from
the data (no downloads). Every logged value must be finite, and the trained model's NAR loss on held-out pairs must
beat the untrained model's."""

import copy
import math
from collections import Counter
from pathlib import Path

import datasets
import pytest
import torch

from bang_nar import BangConfig, BangForConditionalGeneration
from bang_nar.trainer import SPMDSeq2SeqTrainer, distill_dataset
from tests.conftest import SHARED_DATA_DIR
from tests.spmd_toy import single_thread, spmd_args  # noqa: F401 (autouse fixture)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4; [SEP] = eos = decoder start
NUM_PAIRS, NUM_HELD_OUT, MAX_SOURCE, MAX_TARGET = 1024, 128, 32, 16


def load_du_qg(num: int, held_out: int) -> tuple[datasets.Dataset, int, datasets.Dataset]:
    """`num` training pairs (the vocabulary is built from them only), their vocabulary size, and the next `held_out`."""
    folder = SHARED_DATA_DIR / "du2017_qg"
    if not (folder / "src-dev.txt").exists():
        pytest.skip(f"{folder} not found (set BANG_SHARED_DATA_DIR)")
    sources = Path(folder, "src-dev.txt").read_text(encoding="utf-8").splitlines()[: num + held_out]
    targets = Path(folder, "tgt-dev.txt").read_text(encoding="utf-8").splitlines()[: num + held_out]
    counts = Counter(w for line in sources[:num] + targets[:num] for w in line.split())
    vocab = {w: i for i, w in enumerate(SPECIALS + [w for w, c in counts.most_common(3000) if c >= 2])}

    def encode(line: str, limit: int) -> list[int]:
        return [vocab.get(w, 1) for w in line.split()[:limit]] + [3]

    def dataset(rows: slice) -> datasets.Dataset:
        return datasets.Dataset.from_dict({"input_ids": [encode(s, MAX_SOURCE) for s in sources[rows]],
                                           "labels": [encode(t, MAX_TARGET) for t in targets[rows]]}).with_format(None)

    return dataset(slice(0, num)), len(vocab), dataset(slice(num, num + held_out))


@torch.no_grad()
def nar_loss(model: BangForConditionalGeneration, pairs: datasets.Dataset) -> float:
    """Mean NAR cross-entropy (no label smoothing) on `pairs`, in one padded batch."""
    model.eval()
    width = max(map(len, pairs["input_ids"]))
    height = max(map(len, pairs["labels"]))
    input_ids = torch.tensor([ids + [0] * (width - len(ids)) for ids in pairs["input_ids"]])
    labels = torch.tensor([ids + [-100] * (height - len(ids)) for ids in pairs["labels"]])
    out = model(input_ids=input_ids, attention_mask=input_ids.ne(0).long(), labels=labels, mode="nar",
                smoothing_eps=0.0)
    return float(out.loss)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.mark.slow
def test_ar_teacher_then_spmd_losses_fall(tmp_path):
    dataset, vocab_size, held_out = load_du_qg(NUM_PAIRS, NUM_HELD_OUT)
    config = BangConfig(
        vocab_size=vocab_size, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=64,
        pad_token_id=0, unk_token_id=1, bos_token_id=2, eos_token_id=3, decoder_start_token_id=3, mask_token_id=4,
    )  # fmt: skip
    torch.manual_seed(0)
    model = BangForConditionalGeneration(config)
    untrained = copy.deepcopy(model)
    common = dict(per_device_train_batch_size=32, learning_rate=3e-3, warmup_steps=10, logging_steps=10, train_sampling_strategy="random")
    ar = SPMDSeq2SeqTrainer(model=model, args=spmd_args(tmp_path / "ar", train_mode="ar", max_steps=100, **common), train_dataset=dataset)
    ar.train()

    distilled = distill_dataset(model, dataset, tmp_path / "kd", num_beams=4, max_new_tokens=MAX_TARGET + 1, batch_size=128, show_progress=False)
    spmd = SPMDSeq2SeqTrainer(model=model, args=spmd_args(tmp_path / "spmd", max_steps=120, **common), train_dataset=distilled)
    spmd.train()

    for trainer, key in ((ar, "loss"), (spmd, "loss"), (spmd, "nar_loss"), (spmd, "mix/from_gold"), (spmd, "kd_loss")):
        curve = [log[key] for log in trainer.state.log_history if key in log and "train_runtime" not in log]
        print(f"{trainer.args.train_mode} {key}: " + " ".join(f"{v:.2f}" for v in curve))  # the run's summary
        if key in ("loss", "nar_loss"):
            assert mean(curve[-3:]) < mean(curve[:3]) - 0.1, (key, curve)
    for trainer in (ar, spmd):  # every logged number of every step: no NaN/inf hidden behind a falling mean
        logs = [log for log in trainer.state.log_history if "train_runtime" not in log]
        assert len(logs) == trainer.args.max_steps // 10
        bad = [(log["step"], k, v) for log in logs for k, v in log.items() if isinstance(v, float) and not math.isfinite(v)]
        assert not bad, bad
    assert all(0.0 < log["kd_loss"] for log in spmd.state.log_history if "kd_loss" in log)  # the token KD is on
    before, after = nar_loss(untrained, held_out), nar_loss(model, held_out)
    print(f"held-out NAR loss: untrained {before:.2f} → trained {after:.2f}")
    assert math.isfinite(after) and after < before - 1.0, (before, after)
