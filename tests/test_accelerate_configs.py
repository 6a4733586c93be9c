"""Issue 24, launch traps: each shipped `examples/accelerate/*.yaml` goes through accelerate's own launch code (the
environment `accelerate launch --config_file FILE -m bang_nar train ...` gives the processes), its plugin is built
from that environment, and Trainer's config matching runs for the README's command lines.

With DeepSpeed installed, TrainingArguments builds the DeepSpeed plugin from the launch environment and Trainer's own
`propagate_args_to_deepspeed` matches it against the flags (the step that refused the old ZeRO-2 file). Without it
(this repository's test environment), the plugin is built by accelerate from the same environment and the matching
runs with transformers' `HfTrainerDeepSpeedConfig` methods on accelerate's config class (transformers swaps that
base class for `object` when DeepSpeed is missing); DeepSpeed's engine is never started."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
import importlib.util
from types import SimpleNamespace

import transformers.integrations.deepspeed as hf_deepspeed
from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
from accelerate.utils.deepspeed import HfDeepSpeedConfig
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

from bang_nar.trainer import SPMDTrainingArguments

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "examples" / "accelerate").glob("*.yaml"))
# The README's training command lines, as the flags that reach Trainer's config matching.
COMMANDS = [{}, {"bf16": True}, {"gradient_accumulation_steps": 4, "bf16": True}, {"max_grad_norm": 0.5}]


def launch_environment(config: Path) -> tuple[dict[str, str], bool]:
    """The environment `accelerate launch --config_file CONFIG -m bang_nar train` gives each process, and whether
    it is a DeepSpeed launch (accelerate's own parsing and launch preparation)."""
    args = launch_command_parser().parse_args(["--config_file", str(config), "-m", "bang_nar", "train"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    if args.use_deepspeed:  # what `launch_command` adds before `deepspeed_launcher`
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        return prepare_deepspeed_cmd_env(args)[1], True
    return prepare_multi_gpu_env(args), False


def test_every_shipped_config_is_checked():
    assert [c.name for c in CONFIGS] == ["ddp.yaml", "deepspeed_zero2.yaml", "fsdp.yaml"]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.stem)
@pytest.mark.parametrize("flags", COMMANDS, ids=lambda f: " ".join(f"--{k} {v}" for k, v in f.items()) or "defaults")
def test_trainer_accepts_each_config_for_the_readme_commands(config, flags, tmp_path, monkeypatch):
    env, deepspeed = launch_environment(config)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    installed = importlib.util.find_spec("deepspeed") is not None
    if deepspeed and not installed:  # TrainingArguments would build the plugin and need DeepSpeed for it
        monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    args = SPMDTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", **flags)
    if "ACCELERATE_USE_FSDP" in env:
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and "BangDecoderLayer" in plugin.transformer_cls_names_to_wrap
    if not deepspeed:
        return
    if installed:
        plugin = args.deepspeed_plugin
        hf_deepspeed.propagate_args_to_deepspeed(SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin)), args)
        matcher = plugin.hf_ds_config
    else:
        plugin = DeepSpeedPlugin()
        plugin.set_mixed_precision(args.mixed_precision)  # as TrainingArguments does
        matcher = TrainerMatching(plugin.deepspeed_config)
        matcher.trainer_config_process(args)
    assert matcher.mismatches == []
    assert matcher.config["gradient_accumulation_steps"] == args.gradient_accumulation_steps
    assert bool(matcher.config.get("bf16", {}).get("enabled")) == args.bf16


class TrainerMatching(HfDeepSpeedConfig):
    """transformers' `HfTrainerDeepSpeedConfig` on accelerate's config base, for when DeepSpeed is not installed."""

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self._dtype, self.mismatches = None, []


for _name, _function in vars(hf_deepspeed.HfTrainerDeepSpeedConfig).items():
    if not _name.startswith("__"):  # methods and partialmethods (fill_only)
        setattr(TrainerMatching, _name, _function)
