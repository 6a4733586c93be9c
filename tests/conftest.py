"""Shared fixtures: a tiny seeded BANG model built from a config (no downloads) and the golden-data locator."""

import os
from pathlib import Path

import pytest
import torch

from bang_nar import BangConfig, BangForConditionalGeneration

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(os.environ.get("BANG_GOLDEN_DIR", REPO_ROOT.parent / "shared" / "golden" / "bang_tiny"))
SHARED_DATA_DIR = Path(os.environ.get("BANG_SHARED_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


def tiny_config(**overrides) -> BangConfig:
    """Vocab 128 (> [MASK]=103), d=32, 2+2 layers, 2 heads, small position tables; dropout 0 for determinism."""
    values = dict(
        vocab_size=128,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )
    values.update(overrides)
    return BangConfig(**values)


def tiny_model(seed: int = 0, **overrides) -> BangForConditionalGeneration:
    """A seeded tiny model whose relative-position weights are scaled up, so position mistakes show in logits."""
    torch.manual_seed(seed)
    model = BangForConditionalGeneration(tiny_config(**overrides)).eval()
    with torch.no_grad():
        for layer in model.model.decoder.layers:
            layer.self_attn.relative_linear.weight.mul_(20)
            layer.self_attn.relative_linear.bias.normal_(0, 0.5)
        for name, param in model.named_parameters():
            if name.endswith("proj.weight") or name.endswith("fc1.weight") or name.endswith("fc2.weight"):
                param.normal_(0, param.size(1) ** -0.5)
        model.model.shared.weight.mul_(5)
        model.model.shared.weight[model.config.pad_token_id].zero_()
    return model


@pytest.fixture
def model() -> BangForConditionalGeneration:
    return tiny_model()


def random_batch(batch_size: int = 3, source_length: int = 9, target_length: int = 7, seed: int = 1, vocab: int = 128):
    """Right-padded sources ending with [SEP]=102 and labels `y.. [SEP]` padded with -100, with varied lengths."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.zeros(batch_size, source_length, dtype=torch.long)
    labels = torch.full((batch_size, target_length), -100, dtype=torch.long)
    for i in range(batch_size):
        n_src = source_length - (i % 3) * 2
        n_tgt = target_length - (i % 3)
        input_ids[i, : n_src - 1] = torch.randint(1, 100, (n_src - 1,), generator=generator)
        input_ids[i, n_src - 1] = 102
        labels[i, : n_tgt - 1] = torch.randint(1, 100, (n_tgt - 1,), generator=generator)
        labels[i, n_tgt - 1] = 102
    return input_ids, input_ids.ne(0).long(), labels


def golden_path(name: str) -> Path:
    """Path of a golden file. Where ../shared/golden is absent the test skips (with the reason), except under `CI`,
    where it fails: the golden files are the proof of fidelity, so CI must never pass without them."""
    path = GOLDEN_DIR / name
    if not path.exists():
        message = f"golden data not found at {path} (set BANG_GOLDEN_DIR to the shared/golden/bang_tiny folder)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
