"""Converter: key mapping, strictness, safe loading, pretraining layout (docs/converter.md), CLI."""

import argparse
import collections
import decimal
import os
import pickle
import subprocess
import sys
import types

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
    assert len(state) == 91  # 11 + 16·2 + 24·2 (the golden model's layout)


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


def _fairseq_meters_module():
    """Classes shaped like fairseq 0.9's `fairseq/meters.py`, importable as `fairseq.meters` (fairseq not needed)."""
    module = types.ModuleType("fairseq.meters")

    class AverageMeter:
        def __init__(self):
            self.val, self.avg, self.sum, self.count = 0, 0, 0, 0

        def update(self, val, n=1):
            self.val, self.sum, self.count = val, self.sum + val * n, self.count + n
            self.avg = self.sum / self.count

    class TimeMeter:
        def __init__(self, init=0):
            self.init, self.start, self.n = init, 1700000000.0, 0

    class StopwatchMeter:
        def __init__(self):
            self.sum, self.n, self.start_time = 0, 0, None

    for cls in (AverageMeter, TimeMeter, StopwatchMeter):
        cls.__module__, cls.__qualname__ = "fairseq.meters", cls.__name__
        setattr(module, cls.__name__, cls)
    return module


@pytest.fixture
def fairseq_meters(monkeypatch):
    module = _fairseq_meters_module()
    monkeypatch.setitem(sys.modules, "fairseq", types.ModuleType("fairseq"))
    monkeypatch.setitem(sys.modules, "fairseq.meters", module)
    return module


def _fairseq_train_checkpoint(state, args, meters):
    """What fairseq 0.9 `Trainer.save_checkpoint` / `checkpoint_utils.save_state` write (docs/converter.md)."""
    train_meters = collections.OrderedDict()
    for name in ("train_loss", "train_nll_loss", "valid_loss", "valid_nll_loss", "wpb", "bsz", "gnorm", "clip", "oom"):
        train_meters[name] = meters.AverageMeter()
    train_meters["gnorm"].update(torch.tensor(0.75))  # fairseq 0.9 may log a tensor grad norm
    train_meters["train_loss"].update(4.5, 3)
    for name in ("wps", "ups", "wall"):
        train_meters[name] = meters.TimeMeter()
    train_meters["train_wall"] = meters.StopwatchMeter()
    return {
        "args": args,
        "model": state,
        "optimizer_history": [{"criterion_name": "NgramLmMixedLoss", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": 3.25}, "num_updates": 1000}],
        "extra_state": {"train_iterator": {"epoch": 3, "iterations_in_epoch": 0}, "val_loss": 3.25, "best": 3.25,
                        "train_meters": train_meters},
        "last_optimizer_state": {"state": {0: {"step": 1000, "exp_avg": torch.zeros(3)}},
                                 "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0]}]},
    }


@torch.no_grad()
def test_fairseq_train_checkpoint_with_meters_converts(golden_state, fairseq_meters, tmp_path):
    state, args = golden_state
    path = tmp_path / "checkpoint_best.pt"
    torch.save(_fairseq_train_checkpoint(state, args, fairseq_meters), path)
    # The file really references fairseq's classes: weights_only loading with only args allowed refuses it.
    with pytest.raises(pickle.UnpicklingError, match="fairseq.meters"):
        with torch.serialization.safe_globals([argparse.Namespace]):
            torch.load(path, weights_only=True)
    loaded, loaded_args = load_fairseq_checkpoint(path)
    assert loaded_args == args and sorted(loaded) == sorted(state)
    model = convert_bang_checkpoint(path)
    reference = convert_bang_checkpoint(golden_path("checkpoint.pt"))
    for key, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], tensor), key


def test_payload_under_fairseq_names_is_refused_and_never_runs(golden_state, fairseq_meters, tmp_path):
    """A class that would create a file when unpickled: refused by name, and the file is never created."""
    state, args = golden_state
    marker = tmp_path / "pwned"

    class StatsMeter:  # an unknown fairseq.meters name
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    class AverageMeter:  # an allowed name whose pickle calls a function instead of building an object
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for payload, refused in ((StatsMeter, "posix.system"), (AverageMeter, "io.open")):
        payload.__module__, payload.__qualname__ = "fairseq.meters", payload.__name__
        setattr(fairseq_meters, payload.__name__, payload)  # so that pickle finds it under that name
        path = tmp_path / f"{payload.__name__}.pt"
        meters = collections.OrderedDict(wall=fairseq_meters.TimeMeter(), oom=payload())
        torch.save({"args": args, "model": state, "extra_state": {"train_meters": meters}}, path)
        with pytest.raises(ValueError, match=rf"refused global {refused}") as caught:
            load_fairseq_checkpoint(path)
        message = str(caught.value)
        assert "\n" not in message and str(path) in message and "weights_only=True" in message
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
        assert not marker.exists()


def test_position_tables_follow_source_and_target_limits(golden_state, tmp_path):
    state, args = golden_state
    short_source = argparse.Namespace(**dict(vars(args), max_source_positions=100, max_target_positions=512))
    path = _write(tmp_path, state, short_source)
    model = convert_bang_checkpoint(path)
    assert model.model.encoder.embed_positions.weight.shape[0] == 101  # --max-source-positions + 1, as the original
    assert model.model.decoder.embed_positions.weight.shape[0] == 514
    assert model.config.encoder_max_positions == 100 and model.config.max_position_embeddings == 512
    assert torch.equal(model.model.encoder.embed_positions.weight, state["encoder.embed_positions.weight"][:101])
    with pytest.raises(ValueError, match="The source has 101 positions"):
        model.get_encoder()(input_ids=torch.ones(1, 101, dtype=torch.long))
    overridden = convert_bang_checkpoint(path, max_source_positions=600, max_target_positions=300)
    assert overridden.model.encoder.embed_positions.weight.shape[0] == 601  # grown by rotated copies (docs/converter.md#mapping)
    assert overridden.model.decoder.embed_positions.weight.shape[0] == 302
    assert overridden.config.encoder_max_positions == 600


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
    assert "2,203,520 parameters" in result.stdout  # unique parameters of the golden model (golden fixtures)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md", "modeling_bang.py", "generation_bang.py"):
        assert (out / name).exists(), name
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer("a cat sat .")["input_ids"] == [1037, 4937, 2938, 1012, 102]
    model = BangForConditionalGeneration.from_pretrained(out)
    assert model.config.d_model == 64 and model.config.vocab_size == 30522
    assert "checkpoint.pt" in (out / "README.md").read_text()


def test_cli_refusal_is_one_line_and_position_flags_apply(golden_state, tmp_path, capsys):
    from bang_nar.cli import main

    state, args = golden_state
    evil = tmp_path / "evil.pt"
    torch.save({"args": args, "model": state, "extra_state": {"x": decimal.Decimal("1.5")}}, evil)
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(evil), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "refused global decimal.Decimal" in error
    assert main(["convert", str(golden_path("checkpoint.pt")), str(tmp_path / "hf"), "--max-source-positions", "64",
                 "--max-len-b", "30"]) == 0
    model = BangForConditionalGeneration.from_pretrained(tmp_path / "hf")
    assert model.model.encoder.embed_positions.weight.shape[0] == 65 and model.generation_config.max_length == 32
    assert AutoTokenizer.from_pretrained(tmp_path / "hf").model_max_length == 64
