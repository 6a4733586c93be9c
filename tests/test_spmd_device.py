"""The SPMD step off the CPU without a GPU: device placement (the `meta` device), host syncs (a counter on every
tensor-to-Python conversion), every pass through the prepared (wrapped) model, and the teacher's dropout mode."""

import contextlib

import pytest
import torch
from torch import nn

from torch.utils._python_dispatch import TorchDispatchMode

import bang_nar.modeling_bang as modeling
from bang_nar.trainer import SPMDDataCollator
from tests.conftest import tiny_model
from tests.spmd_toy import single_thread, spmd_trainer, toy_dataset  # noqa: F401 (autouse fixture)

# Every option that adds a pass, a draw or a device-side statistic.
STEP_OPTIONS = {
    "spmd-min_loss": {},
    "spmd-random": {"spmd_preset": "spmd_reconstruction", "mix_strategy": "random"},
    "all-ar_nar_kl": {"mix_strategy": "all", "pace_signal": "ar_nar_kl"},
    "hard-auto-lambda": {"pace_mode": "hard", "pace_signal": "disagreement"},
    "linear": {"pace_mode": "linear", "pace_lambda0": 3.0},
    "mixed-modes": {"train_mode": "mixed", "nar_ratio": 0.5},
}


@pytest.fixture
def sync_free_model_masks(monkeypatch):
    """The model's `_key_padding_bias` asks the host whether anything is padded (one sync per encoder/decoder pass;
    bang_nar/modeling_bang.py, outside the trainer). Replace it by the always-built bias, equal in value."""

    def always_build(attention_mask, dtype):
        if attention_mask is None:
            return None
        return modeling._bias_from_visibility(attention_mask.bool()[:, None, None, :], dtype)

    monkeypatch.setattr(modeling, "_key_padding_bias", always_build)


def _batch(num: int = 4) -> dict[str, torch.Tensor]:
    return SPMDDataCollator(pad_token_id=0)(list(toy_dataset(num=num)))


@contextlib.contextmanager
def count_host_syncs():
    """Counts tensor → Python conversions (`item`, `bool`, `float`, `int`, `tolist`, `__index__`): each one is a
    device-to-host sync on an accelerator. A counter, so it also works on CPU."""
    calls: list[str] = []
    names = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist")
    originals = {name: getattr(torch.Tensor, name) for name in names}

    def counted(name):
        def method(self, *args, **kwargs):
            calls.append(name)
            return originals[name](self, *args, **kwargs)

        return method

    for name in names:
        setattr(torch.Tensor, name, counted(name))
    try:
        yield calls
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


class BlockingHostCopies(TorchDispatchMode):
    """Records blocking host-to-device copies (`.to(device)` of a CPU tensor without non_blocking): on CUDA each one
    waits for the whole stream, i.e. it is a sync too."""

    def __init__(self):
        super().__init__()
        self.copies: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is torch.ops.aten._to_copy.default and not kwargs.get("non_blocking", False):
            if args[0].device.type == "cpu" and out.device.type != "cpu":
                self.copies.append(tuple(args[0].shape))
        return out


@pytest.mark.parametrize("options", STEP_OPTIONS.values(), ids=STEP_OPTIONS.keys())
def test_step_runs_on_a_non_cpu_device(tmp_path, options, sync_free_model_masks):
    """On `meta` every tensor must follow the model (a CPU tensor mixed in fails) and any host sync raises
    ("cannot be called on meta tensors"): the loss and its backward run with neither."""
    model = tiny_model(seed=3).train()
    trainer = spmd_trainer(tmp_path, model=model, dataset=toy_dataset(num=4), **options)
    trainer.state.max_steps = 10
    model.to("meta")
    # Moving to meta makes new Parameter objects (no shallow copy across those devices), which unties the embeddings
    # declared in `_tied_weights_keys`; CUDA keeps them. Re-tie, as from_pretrained would.
    model.tie_weights()
    batch = {k: v.to("meta") for k, v in _batch().items()}
    for _ in range(3):  # mixed: both modes; hard: λ0 calibrated, then reused
        with BlockingHostCopies() as copies:
            loss = trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(20, device="meta"))
            loss.backward()
        assert loss.device.type == "meta" and loss.dim() == 0
        assert copies.copies == []
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in model.parameters() if p.requires_grad)


def test_draws_follow_the_requested_device(tmp_path):
    trainer = spmd_trainer(tmp_path, spmd_preset="spmd_reconstruction", mix_strategy="random")
    assert trainer._mix_draws(4, "meta").device.type == "meta"
    assert trainer.pace_state.draw_uniform(3, trainer.accelerator, torch.device("meta")).shape == (3,)


@pytest.mark.parametrize(
    "options",
    [{}, {"spmd_preset": "spmd_reconstruction", "mix_strategy": "random", "pace_signal": "ar_nar_kl"}],
    ids=["spmd", "random"],
)
def test_training_step_makes_no_host_sync(tmp_path, options, sync_free_model_masks):
    """A whole `training_step` (all passes, the loss, backward) converts no tensor to Python; the metrics are
    reduced to floats only when logged (one transfer for all of them)."""
    model = tiny_model(seed=3)
    trainer = spmd_trainer(tmp_path, model=model, dataset=toy_dataset(num=4), **options)
    trainer.state.max_steps = 10
    batch = _batch()
    num_items = batch["labels"].ne(-100).sum()
    model.train()
    with count_host_syncs() as calls:
        trainer.training_step(model, batch, num_items_in_batch=num_items)
        trainer.training_step(model, batch, num_items_in_batch=num_items)
    assert calls == []
    with count_host_syncs() as calls:
        logs = trainer._reduce_metrics("train")
    assert calls == ["tolist"] and logs["nar_batch"] == 1.0 and set(logs) >= {"nar_loss", "pace/threshold"}
    # The counter sees syncs: the debug checks make some.
    debug = spmd_trainer(tmp_path / "debug", model=model, dataset=toy_dataset(num=4), spmd_debug=True, **options)
    with count_host_syncs() as calls:
        debug.training_step(model, batch, num_items_in_batch=num_items)
    assert calls


def test_every_pass_goes_through_the_prepared_model(tmp_path):
    """FSDP and DeepSpeed support only calls of the wrapper's forward: no encoder, decoder or teacher pass may call
    the inner model directly (the encoder and self-teacher passes used to)."""

    class Wrapper(nn.Module):  # stands for DDP/FSDP/DeepSpeed: the trainer passes it as `model`
        def __init__(self, inner):
            super().__init__()
            self.module, self.inside = inner, False

        def forward(self, **kwargs):
            self.inside = True
            try:
                return self.module(**kwargs)
            finally:
                self.inside = False

    model = tiny_model(seed=3).train()
    wrapper = Wrapper(model).train()
    outside: list[str] = []
    for name in ("encoder", "decoder"):
        getattr(model.model, name).register_forward_pre_hook(lambda m, a, n=name: outside.append(n) if not wrapper.inside else None)
    calls = []
    wrapper.register_forward_pre_hook(lambda m, a: calls.append(1))
    for options in ({}, {"train_mode": "ar"}, {"pace_signal": "ar_nar_kl", "mix_strategy": "all"}):
        trainer = spmd_trainer(tmp_path, model=model, dataset=toy_dataset(num=4), **options)
        trainer.compute_loss(wrapper, _batch()).backward()
    assert outside == []
    assert len(calls) == 3 + 1 + 3  # NAR(+encoder), teacher, AR gold; AR batch; NAR, teacher, AR gold


def test_training_passes_build_no_cache(tmp_path, monkeypatch):
    seen = []
    model = tiny_model(seed=3).train()
    original = type(model.model).forward
    monkeypatch.setattr(type(model.model), "forward", lambda self, *a, **k: seen.append(k.get("use_cache")) or original(self, *a, **k))
    spmd_trainer(tmp_path, model=model, dataset=toy_dataset(num=4)).compute_loss(model, _batch())
    assert seen == [False, False, False]


@pytest.mark.parametrize("teacher_dropout", [True, False])
def test_teacher_dropout_field(tmp_path, teacher_dropout):
    """teacher_dropout=False: the self-teacher is the eval-mode model (deterministic); True: a dropout sample."""
    model = tiny_model(seed=3, dropout=0.3).train()
    trainer = spmd_trainer(tmp_path, model=model, dataset=toy_dataset(num=4), teacher_dropout=teacher_dropout)
    batch = _batch()
    targets = batch["labels"].unsqueeze(1)
    with torch.no_grad():
        model.eval()
        encoder = model.get_encoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        expected = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}, mode="ar").logits
        model.train()
    first = trainer._teacher_logits(batch, encoder, targets, model)[:, 0]
    second = trainer._teacher_logits(batch, encoder, targets, model)[:, 0]
    assert model.training  # the student's mode is restored
    real = batch["labels"].ne(-100)
    if teacher_dropout:
        assert not torch.allclose(first[real], second[real])
    else:
        torch.testing.assert_close(first[real], expected[real])
        torch.testing.assert_close(second[real], expected[real])
