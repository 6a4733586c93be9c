"""SPMDTrainingArguments: presets (docs/spmd.md presets table), explicit overrides, range checks, CLI parsing."""

import pytest
from transformers import HfArgumentParser

from bang_nar.trainer import SPMD_PRESETS, SPMDTrainingArguments


def make(**kwargs) -> SPMDTrainingArguments:
    return SPMDTrainingArguments(output_dir="unused", report_to="none", **kwargs)


@pytest.mark.parametrize("preset", sorted(SPMD_PRESETS))
def test_presets_fill_the_ablation_rows(preset):
    args = make(spmd_preset=preset)
    for name, value in SPMD_PRESETS[preset].items():
        assert getattr(args, name) == value


def test_defaults_are_the_spmd_row_and_spec_values():
    args = make()
    # The mode-consistent default (issue 10): the student's candidates are the teacher's k best, not gold.
    assert (args.target_sources, args.mix_strategy, args.kd_alpha, args.kd_temperature) == (["ar_kd"], "min_loss", 0.5, 1.0)
    assert (args.kd_top_k, args.glance_ratio, args.glance_ratio_end) == (None, 0.0, 0.0)
    assert (args.pace_mode, args.pace_signal, args.pace_q0, args.pace_warmup_ratio) == ("percentile", "nar_loss", 0.5, 0.5)
    assert (args.ar_loss_weight, args.teacher, args.label_smoothing_factor, args.train_mode) == (0.5, "self", 0.1, "nar")
    assert args.ddp_find_unused_parameters is False


def test_explicit_fields_win_over_the_preset_and_frozen_teacher_drops_beta():
    args = make(spmd_preset="bang_nar", kd_alpha=0.3, target_sources=["ar_kd", "gold"])
    assert args.kd_alpha == 0.3 and args.target_sources == ["gold", "ar_kd"] and args.pace_mode == "none"
    assert make(teacher="some/checkpoint").ar_loss_weight == 0.0
    assert make(teacher="some/checkpoint", ar_loss_weight=0.2).ar_loss_weight == 0.2


def test_reconstruction_as_written_stays_reachable_by_name():
    args = make(spmd_preset="spmd_reconstruction")
    assert (args.target_sources, args.kd_alpha, args.pace_mode, args.ar_loss_weight) == (["gold", "ar_kd"], 0.5, "percentile", 0.5)


def test_glance_ratio_anneals_linearly():
    args = make(glance_ratio=0.5, glance_ratio_end=0.1)
    assert args.uses_glancing and [args.glance_ratio_at(s, 100) for s in (0, 50, 100, 200)] == pytest.approx([0.5, 0.3, 0.1, 0.1])
    assert make(glance_ratio=0.3).glance_ratio_end == 0.3 and not make().uses_glancing
    assert not make(glance_ratio=0.3, train_mode="ar").uses_glancing


def test_derived_flags():
    assert make().needs_teacher and make().uses_distilled_targets
    assert not make(spmd_preset="bang_nar").needs_teacher
    assert make(spmd_preset="bang_nar", pace_signal="ar_nar_kl").needs_teacher
    assert not make(train_mode="ar").uses_distilled_targets and make(train_mode="ar").eval_mode == "ar"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"spmd_preset": "fast"}, "spmd_preset"),
        ({"kd_top_k": 0}, "kd_top_k"),
        ({"glance_ratio": 1.5}, "glance_ratio"),
        ({"glance_ratio": 0.2, "glance_ratio_end": -0.1}, "glance_ratio_end"),
        ({"glance_ratio": 0.3, "mix_strategy": "all"}, "Glancing"),
        ({"train_mode": "semi"}, "train_mode"),
        ({"nar_ratio": 1.5}, "nar_ratio"),
        ({"target_sources": []}, "target_sources"),
        ({"target_sources": ["gold", "beam"]}, "target_sources"),
        ({"target_sources": ["gold", "gold"]}, "target_sources"),
        ({"mix_strategy": "random", "target_sources": ["gold"]}, "random"),
        ({"mix_strategy": "best"}, "mix_strategy"),
        ({"p_mix": -0.1}, "p_mix"),
        ({"kd_alpha": 1.2}, "kd_alpha"),
        ({"kd_temperature": 0.0}, "kd_temperature"),
        ({"ar_loss_weight": -1.0}, "ar_loss_weight"),
        ({"teacher": ""}, "teacher"),
        ({"pace_mode": "soft"}, "pace_mode"),
        ({"pace_signal": "bleu"}, "pace_signal"),
        ({"pace_q0": 0.0}, "pace_q0"),
        ({"pace_warmup_ratio": 2.0}, "pace_warmup_ratio"),
        ({"pace_lambda0": 0.0}, "pace_lambda0"),
        ({"pace_growth": 0.5}, "pace_growth"),
        ({"label_smoothing_factor": 1.0}, "label_smoothing_factor"),
    ],
    ids=lambda v: "-".join(map(str, v)) if isinstance(v, dict) else v,
)
def test_invalid_values_fail_with_the_field_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_hf_argument_parser_reads_every_field():
    (args,) = HfArgumentParser(SPMDTrainingArguments).parse_args_into_dataclasses(
        ["--output_dir", "unused", "--report_to", "none", "--spmd_preset", "seq_kd", "--target_sources", "gold", "ar_kd",
         "--mix_strategy", "all", "--pace_mode", "linear", "--pace_lambda0", "3", "--kd_alpha", "0.2", "--train_mode", "mixed",
         "--nar_ratio", "0.7"]
    )  # fmt: skip
    assert (args.target_sources, args.mix_strategy, args.pace_mode, args.pace_lambda0) == (["gold", "ar_kd"], "all", "linear", 3.0)
    assert (args.kd_alpha, args.ar_loss_weight, args.train_mode, args.nar_ratio) == (0.2, 0.0, "mixed", 0.7)


def test_semi_nar_mode_block_size_defaults_and_checks():
    args = make(train_mode="semi_nar")
    assert args.semi_nar_block_size == 4 and args.eval_mode == "semi_nar"
    # The SPMD fields are not used: no distilled column, no teacher, no glancing passes.
    assert not (args.uses_distilled_targets or args.needs_teacher or args.uses_glancing or args.has_nar_batches)
    assert make(train_mode="semi_nar", semi_nar_block_size=8).semi_nar_block_size == 8
    assert make().semi_nar_block_size is None
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match=r"semi_nar_block_size must be a positive int .* got"):
            make(train_mode="semi_nar", semi_nar_block_size=bad)
    with pytest.raises(ValueError, match="semi_nar_block_size applies to train_mode='semi_nar' only"):
        make(train_mode="nar", semi_nar_block_size=2)
    assert make(train_mode="semi_nar", semi_nar_targets="ar_kd").uses_distilled_targets
    with pytest.raises(ValueError, match="semi_nar_targets applies to train_mode='semi_nar' only"):
        make(train_mode="ar", semi_nar_targets="ar_kd")
    with pytest.raises(ValueError, match="semi_nar_targets must be 'gold' or 'ar_kd'"):
        make(train_mode="semi_nar", semi_nar_targets="beam")
    (parsed,) = HfArgumentParser(SPMDTrainingArguments).parse_args_into_dataclasses(
        ["--output_dir", "unused", "--report_to", "none", "--train_mode", "semi_nar", "--semi_nar_block_size", "2"]
    )
    assert (parsed.train_mode, parsed.semi_nar_block_size) == ("semi_nar", 2)
