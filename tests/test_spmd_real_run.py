"""A short real run on Du et al. (2017) question generation (../shared/data/du2017_qg): AR fine-tuning of a tiny
BANG (the teacher), AR-stream distillation, then SPMD; the training losses must fall. Word-level vocabulary built from
the data (no downloads)."""

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
NUM_PAIRS, MAX_SOURCE, MAX_TARGET = 1024, 32, 16


def load_du_qg(num: int) -> datasets.Dataset:
    folder = SHARED_DATA_DIR / "du2017_qg"
    if not (folder / "src-dev.txt").exists():
        pytest.skip(f"{folder} not found (set BANG_SHARED_DATA_DIR)")
    sources = Path(folder, "src-dev.txt").read_text(encoding="utf-8").splitlines()[:num]
    targets = Path(folder, "tgt-dev.txt").read_text(encoding="utf-8").splitlines()[:num]
    counts = Counter(w for line in sources + targets for w in line.split())
    vocab = {w: i for i, w in enumerate(SPECIALS + [w for w, c in counts.most_common(3000) if c >= 2])}

    def encode(line: str, limit: int) -> list[int]:
        return [vocab.get(w, 1) for w in line.split()[:limit]] + [3]

    rows = {"input_ids": [encode(s, MAX_SOURCE) for s in sources], "labels": [encode(t, MAX_TARGET) for t in targets]}
    return datasets.Dataset.from_dict(rows).with_format(None), len(vocab)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.mark.slow
def test_ar_teacher_then_spmd_losses_fall(tmp_path):
    dataset, vocab_size = load_du_qg(NUM_PAIRS)
    config = BangConfig(
        vocab_size=vocab_size, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=64,
        pad_token_id=0, unk_token_id=1, bos_token_id=2, eos_token_id=3, decoder_start_token_id=3, mask_token_id=4,
    )  # fmt: skip
    torch.manual_seed(0)
    model = BangForConditionalGeneration(config)
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
