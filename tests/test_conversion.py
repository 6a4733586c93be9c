"""Converter: key mapping (spec §6.3), strictness, safe loading, pretraining layout (§6.2), CLI."""

import argparse
import pickle
import subprocess
import sys

import pytest
import torch

from bang_nar import BangForConditionalGeneration
from bang_nar.convert_bang_original_checkpoint import (
    convert_bang_checkpoint,
    convert_state_dict,
    load_fairseq_checkpoint,
)
from transformers import AutoTokenizer

from .conftest import golden_path


@pytest.fixture(scope="module")
def golden_state():
    return load_fairseq_checkpoint(golden_path("checkpoint.pt"))


def test_reads_args_and_all_keys(golden_state):
    state, args = golden_state
    assert isinstance(args, argparse.Namespace)
    assert len(state) == 91  # 11 + 16·2 + 24·2 (golden README §2.1)


def test_in_proj_split_is_q_k_v(golden_state):
    state, _ = golden_state
    converted = convert_state_dict(state)
    packed = state["decoder.layers.1.ngram_self_attn.in_proj_weight"]
    d = packed.size(1)
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        assert torch.equal(converted[f"model.decoder.layers.1.self_attn.{name}.weight"], packed[i * d : (i + 1) * d])
        bias = state["decoder.layers.1.ngram_self_attn.in_proj_bias"][i * d : (i + 1) * d]
        assert torch.equal(converted[f"model.decoder.layers.1.self_attn.{name}.bias"], bias)
    assert "model.decoder.layers.1.self_attn.relative_linear.weight" in converted
    assert not any("version" in k for k in converted)


def _write(tmp_path, state, args=None, name="ckpt.pt"):
    path = tmp_path / name
    torch.save({"args": args, "model": state} if args is not None else state, path)
    return path


def test_refuses_unknown_and_missing_keys(golden_state, tmp_path):
    state, args = golden_state
    extra = dict(state, **{"decoder.layers.0.mystery.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"unexpected keys \['model.decoder.layers.0.mystery.weight'\]"):
        convert_bang_checkpoint(_write(tmp_path, extra, args))
    missing = {k: v for k, v in state.items() if k != "encoder.layers.1.fc2.bias"}
    with pytest.raises(ValueError, match=r"missing keys \['model.encoder.layers.1.fc2.bias'\]"):
        convert_bang_checkpoint(_write(tmp_path, missing, args))
    with pytest.raises(ValueError, match="not a BANG"):
        convert_bang_checkpoint(_write(tmp_path, {"weight": torch.zeros(3)}))
    untied = dict(state, **{"decoder.embed_tokens.weight": state["decoder.embed_tokens.weight"] + 1})
    with pytest.raises(ValueError, match="differ"):
        convert_bang_checkpoint(_write(tmp_path, untied, args))


def test_weights_only_refuses_other_pickled_objects(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"model": {}, "args": Payload()}, handle)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_fairseq_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_fairseq_checkpoint(tmp_path / "absent.pt")


@torch.no_grad()
def test_pretraining_layout_converts_to_same_model_on_shared_rows(golden_state, tmp_path):
    """A `checkpoint_base_9gram_ck35.pt`-style state (512-row tables, 2-row ngram, raw state dict) loads."""
    state, args = golden_state
    pretrained = dict(state)
    pretrained["encoder.embed_positions.weight"] = state["encoder.embed_positions.weight"][:512]
    pretrained["decoder.embed_positions.weight"] = state["decoder.embed_positions.weight"][:512]
    pretrained["decoder.ngram_input_embed.weight"] = torch.cat([torch.randn_like(state["decoder.ngram_input_embed.weight"]), state["decoder.ngram_input_embed.weight"]])
    model = convert_bang_checkpoint(_write(tmp_path, pretrained, args))
    reference = convert_bang_checkpoint(golden_path("checkpoint.pt"))
    src = torch.tensor([[2040, 2180, 1996, 102]])
    for mode in ("ar", "nar"):
        a = model(input_ids=src, decoder_input_ids=torch.tensor([[102, 7, 8]]), mode=mode).logits
        b = reference(input_ids=src, decoder_input_ids=torch.tensor([[102, 7, 8]]), mode=mode).logits
        assert torch.allclose(a, b, atol=1e-5)  # positions < 512 and ngram row 1 are the same weights


def test_cli_convert_writes_a_loadable_folder(tmp_path):
    out = tmp_path / "hf"
    result = subprocess.run(
        [sys.executable, "-m", "bang_nar", "convert", str(golden_path("checkpoint.pt")), str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2,203,520 parameters" in result.stdout  # unique parameters of the golden model (README §1)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md", "modeling_bang.py"):
        assert (out / name).exists(), name
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer("a cat sat .")["input_ids"] == [1037, 4937, 2938, 1012, 102]
    model = BangForConditionalGeneration.from_pretrained(out)
    assert model.config.d_model == 64 and model.config.vocab_size == 30522
    assert "checkpoint.pt" in (out / "README.md").read_text()
