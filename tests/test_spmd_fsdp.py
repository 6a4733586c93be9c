"""FSDP on two CPU processes (torchrun, gloo): the SPMD loss of a model sharded with torch's FSDP2 `fully_shard` gives
the gradients of one unsharded process with the global batch.

Accelerate's FSDP plugin refuses to start without an accelerator, so Trainer cannot run FSDP on a CPU; the workers
shard the model themselves and call `compute_loss` with the sharded model, as Trainer does with the prepared one.
FSDP only gathers a layer's parameters inside the wrapper's forward, so every pass must go through it (an encoder or
teacher pass on the inner model reads sharded parameters and fails). Started with
`torchrun --standalone --nproc_per_node 2 -m tests.test_spmd_fsdp OUT`; the workers assert the world size.
"""

import os
import sys
from pathlib import Path

import torch

from bang_nar.trainer import SPMDDataCollator
from tests.conftest import tiny_model
from tests.spmd_toy import REPO_ROOT, run_two_processes, single_thread, spmd_trainer, toy_dataset  # noqa: F401

# Random mixing, percentile pacing, the self-teacher and the AR gold pass: every pass and cross-rank statistic.
# Random mixing needs gold among the candidates; an eval-mode teacher toggles the wrapper.
OPTIONS = dict(spmd_preset="spmd_reconstruction", mix_strategy="random", pace_q0=0.5, teacher_dropout=False)
CASES = {"spmd": {}, "ar_batches": {"train_mode": "ar"}}


def global_batch() -> dict[str, torch.Tensor]:
    return SPMDDataCollator(pad_token_id=0)(list(toy_dataset(num=4)))


def gradients(model, batch, num_items, output_dir, batch_size, **options) -> dict[str, torch.Tensor]:
    trainer = spmd_trainer(output_dir, model=tiny_model(seed=3), per_device_train_batch_size=batch_size, **OPTIONS, **options)
    trainer.model = trainer.model_wrapped = model  # FSDP2 shards in place: Trainer's model is the sharded one
    trainer.state.max_steps = 10
    model.train()
    trainer.compute_loss(model, batch, num_items_in_batch=num_items).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return {n: (g.full_tensor() if hasattr(g, "full_tensor") else g).detach().clone() for n, g in grads.items()}


def worker(out: Path) -> None:
    """Runs in each torchrun process."""
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    assert int(os.environ["WORLD_SIZE"]) == 2, "start with torchrun --nproc_per_node 2"
    batch = global_batch()
    rank = int(os.environ["RANK"])
    local = {k: v[2 * rank : 2 * rank + 2] for k, v in batch.items()}
    for name, options in CASES.items():
        model = tiny_model(seed=3)
        for layer in [*model.model.encoder.layers, *model.model.decoder.layers]:
            fully_shard(layer)
        fully_shard(model)
        assert torch.distributed.get_world_size() == 2
        grads = gradients(model, local, batch["labels"].ne(-100).sum(), out / name, 2, **options)
        if rank == 0:
            torch.save(grads, out / f"grads_{name}.pt")


def test_fsdp_two_processes_match_one_process(tmp_path):
    run_two_processes("tests.test_spmd_fsdp", tmp_path)
    batch = global_batch()
    for name, options in CASES.items():
        single = gradients(tiny_model(seed=3), batch, batch["labels"].ne(-100).sum(), tmp_path / "single", 4, **options)
        sharded = torch.load(tmp_path / f"grads_{name}.pt")
        assert sharded.keys() == single.keys()
        for key, value in single.items():
            torch.testing.assert_close(sharded[key], value, rtol=1e-4, atol=1e-6, msg=f"{name}: {key}")


def test_example_accelerate_configs_load_and_name_bang_layers():
    """The shipped `accelerate launch --config_file` examples parse with accelerate's own loader, and FSDP wraps the
    model's real layer classes (the ones it declares unsplittable)."""
    from accelerate.commands.config.config_args import load_config_from_file

    from bang_nar import BangForConditionalGeneration

    folder = REPO_ROOT / "examples" / "accelerate"
    configs = {name: load_config_from_file(str(folder / f"{name}.yaml")) for name in ("ddp", "fsdp", "deepspeed_zero2")}
    assert [str(c.distributed_type.value) for c in configs.values()] == ["MULTI_GPU", "FSDP", "DEEPSPEED"]
    fsdp = configs["fsdp"].fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    layers = fsdp["fsdp_transformer_layer_cls_to_wrap"].split(",")
    assert layers == BangForConditionalGeneration._no_split_modules
    assert configs["deepspeed_zero2"].deepspeed_config["zero_stage"] == 2


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
