"""distill_dataset: k-best AR beam search added as a column, provenance next to it, resumable chunks."""

import json

import pytest
import torch

from bang_nar.trainer import distill_dataset
from bang_nar.trainer.sequence_kd import keep_probability_mass, load_provenance, slot_distance
from tests.conftest import tiny_model
from tests.spmd_toy import EOS, single_thread, toy_dataset  # noqa: F401 (autouse fixture)

# probability_mass=None, min_distance=None: the fixed k-best lists (the default keeps k from the data, tested below)
SETTINGS = dict(num_beams=4, num_return_sequences=2, max_new_tokens=6, batch_size=3, show_progress=False,
                probability_mass=None, min_distance=None)


def _source_only(num: int = 7):
    return toy_dataset(num=num).remove_columns("kd_labels")


def test_adds_k_best_targets_with_provenance(tmp_path):
    model = tiny_model(seed=5)
    dataset = _source_only()
    result = distill_dataset(model, dataset, tmp_path, teacher_name="tiny-ar-teacher", **SETTINGS)
    assert result.column_names == dataset.column_names + ["kd_labels"]
    assert all(len(kd) == 2 and all(h[-1] == EOS and len(h) <= 7 for h in kd) for kd in result["kd_labels"])
    # The first hypothesis is the beam search of the example alone (no batching effect).
    source = torch.tensor([dataset[4]["input_ids"]])
    alone = model.generate(input_ids=source, attention_mask=torch.ones_like(source), mode="ar", num_beams=4,
                           length_penalty=1.2, num_return_sequences=2, max_new_tokens=6)  # fmt: skip
    first = [t for t in alone[0, 1:].tolist() if t != 0]
    assert result[4]["kd_labels"][0] == (first[: first.index(EOS) + 1] if EOS in first else first + [EOS])
    provenance = load_provenance(tmp_path)
    assert provenance["teacher"] == "tiny-ar-teacher" and provenance["length_penalty"] == 1.2
    assert provenance["num_beams"] == 4 and provenance["num_return_sequences"] == 2 and provenance["num_examples"] == 7
    assert not (tmp_path / "kd_chunks").exists()


def test_resumes_after_an_interruption(tmp_path, monkeypatch):
    model = tiny_model(seed=5)
    clean = distill_dataset(model, _source_only(), tmp_path / "clean", **SETTINGS)
    calls = {"n": 0}
    real_generate = model.generate

    def failing_generate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", failing_generate)
    with pytest.raises(KeyboardInterrupt):
        distill_dataset(model, _source_only(), tmp_path / "run", **SETTINGS)
    assert sorted(p.name for p in (tmp_path / "run" / "kd_chunks").glob("0*.json")) == ["00000000.json"]
    calls["n"] = 10
    resumed = distill_dataset(model, _source_only(), tmp_path / "run", **SETTINGS)
    assert calls["n"] == 12  # only the two missing chunks were decoded
    assert list(resumed["kd_labels"]) == list(clean["kd_labels"])


def test_refuses_to_mix_settings_and_bad_input(tmp_path):
    model = tiny_model(seed=5)
    (tmp_path / "kd_chunks").mkdir()
    (tmp_path / "kd_chunks" / "settings.json").write_text(json.dumps({"num_beams": 8}))
    with pytest.raises(ValueError, match="holds chunks made with another .*num_beams"):
        distill_dataset(model, _source_only(), tmp_path, **SETTINGS)
    with pytest.raises(ValueError, match="already has"):
        distill_dataset(model, toy_dataset(num=3), tmp_path / "x", **SETTINGS)
    with pytest.raises(ValueError, match="num_return_sequences"):
        distill_dataset(model, _source_only(), tmp_path / "y", num_beams=2, num_return_sequences=3)


def test_k_defaults_to_the_whole_beam(tmp_path):
    """Issue 10: k-best lists are the default (the SPMD student picks the candidate of its own mode)."""
    settings = {k: v for k, v in SETTINGS.items() if k != "num_return_sequences"} | {"num_beams": 3}
    result = distill_dataset(tiny_model(seed=5), _source_only(), tmp_path, **settings)
    assert all(len(candidates) == 3 for candidates in result["kd_labels"])
    assert json.loads((tmp_path / "provenance.json").read_text())["num_return_sequences"] == 3


def test_probability_mass_keeps_the_likely_outputs_in_beam_order():
    """Issue 21: k from the data. Four equally likely outputs and two unlikely ones: the four are kept (beam order),
    a repeat counts once, and a peaked distribution keeps one."""
    beam = [[5, 3], [6, 3], [7, 3], [5, 3], [8, 3], [9, 3], [10, 3]]
    log_probs = [-1.4, -1.4, -1.4, -1.4, -9.0, -1.4, -9.5]  # [5, 3] twice: its first log-prob counts
    assert keep_probability_mass(beam, log_probs, 0.95) == [[5, 3], [6, 3], [7, 3], [9, 3]]
    assert keep_probability_mass(beam, log_probs, 1.0) == [[5, 3], [6, 3], [7, 3], [8, 3], [9, 3], [10, 3]]
    assert keep_probability_mass([[5, 3], [6, 3]], [-0.01, -6.0], 0.95) == [[5, 3]]
    # the kept set follows probability, not beam position
    assert keep_probability_mass([[5, 3], [6, 3], [7, 3]], [-3.0, -0.1, -0.1], 0.9) == [[6, 3], [7, 3]]


def test_slot_distance_counts_differing_and_missing_slots():
    assert slot_distance([5, 6, 7, 3], [5, 6, 7, 3]) == 0.0
    assert slot_distance([5, 6, 7, 3], [5, 9, 7, 3]) == 0.25
    assert slot_distance([5, 6, 3], [5, 6, 7, 3]) == 0.5  # slot 2 differs, slot 3 exists in one only
    assert slot_distance([5, 6, 7, 3], [9, 5, 6, 7, 3]) == 1.0  # a shift is another NAR target in every slot


def test_min_distance_drops_slot_wise_mixes_of_more_probable_modes():
    """Issue 21, lexical regression: the two modes stay, the mix of them and the near-copy go, whatever their beam
    position; a shifted output (another NAR target in every slot) stays; None keeps everything."""
    mode_a, mode_b = [5, 6, 7, 8, 3], [10, 11, 12, 13, 3]
    mix, copy, shifted = [5, 6, 12, 13, 3], [5, 6, 7, 9, 3], [14, 5, 6, 7, 8, 3]
    beam = [mix, mode_a, copy, mode_b, shifted]
    log_probs = [-1.6, -1.0, -2.0, -1.2, -1.3]
    assert keep_probability_mass(beam, log_probs, None, 0.5) == [mode_a, mode_b, shifted]
    assert keep_probability_mass(beam, log_probs, None, None) == beam
    assert keep_probability_mass(beam, log_probs, None, 0.0) == beam
    # the mix is 0.4 from mode_b, 0.6 from mode_a: kept only when the threshold allows 0.4
    assert keep_probability_mass(beam, log_probs, None, 0.4) == [mix, mode_a, mode_b, shifted]
    # the mass cut comes first: half of the probability is held by the two most probable
    assert keep_probability_mass(beam, log_probs, 0.5, 0.5) == [mode_a, mode_b]


def test_probability_mass_scores_each_hypothesis_with_the_teacher(tmp_path):
    """Each kept list is the most probable part of the beam under the teacher's own teacher-forced log-probs, and
    the setting is recorded; a mass outside (0, 1] is refused."""
    from bang_nar.trainer.sequence_kd import _teacher_forced

    model = tiny_model(seed=5)
    settings = SETTINGS | {"num_return_sequences": 4}
    full = distill_dataset(model, _source_only(), tmp_path / "full", **settings)
    options = {"probability_mass": 0.6, "min_distance": 0.5}
    kept = distill_dataset(model, _source_only(), tmp_path / "mass", **settings | options)
    assert {k: load_provenance(tmp_path / "mass")[k] for k in options} == options
    for row, all_four in zip(kept, full):
        source = torch.tensor([row["input_ids"]])
        log_probs = _teacher_forced(model.eval(), source, torch.ones_like(source), all_four["kd_labels"], 4)[0]
        assert row["kd_labels"] == keep_probability_mass(all_four["kd_labels"], log_probs, 0.6, 0.5)
        assert 1 <= len(row["kd_labels"]) <= 4
    # slicing the scoring pass (a bounded logits tensor) gives the same log-probs
    sources = torch.tensor([full[i]["input_ids"][:4] for i in range(3)])
    hypotheses = [h for i in range(3) for h in full[i]["kd_labels"]]
    whole = _teacher_forced(model, sources, torch.ones_like(sources), hypotheses, 4)[0]
    assert whole == pytest.approx(_teacher_forced(model, sources, torch.ones_like(sources), hypotheses, 4, 4)[0])
    with pytest.raises(ValueError, match="probability_mass must be in"):
        distill_dataset(model, _source_only(), tmp_path / "bad", **settings | {"probability_mass": 0.0})
    with pytest.raises(ValueError, match="min_distance must be in"):
        distill_dataset(model, _source_only(), tmp_path / "bad", **settings | {"min_distance": 1.5})


def test_cli_defaults_are_the_library_defaults():
    from bang_nar.trainer import sequence_kd

    from bang_nar.cli import distill

    assert (distill.DEFAULT_NUM_BEAMS, distill.DEFAULT_PROBABILITY_MASS, distill.DEFAULT_MIN_DISTANCE) == (
        sequence_kd.DEFAULT_NUM_BEAMS, sequence_kd.DEFAULT_PROBABILITY_MASS, sequence_kd.DEFAULT_MIN_DISTANCE)  # fmt: skip
    fields = {f.name: f.default for f in distill.DistillArguments.__dataclass_fields__.values()}
    assert fields["num_beams"] == 16 and fields["probability_mass"] == 0.95 and fields["min_distance"] == 0.5


def test_cli_refuses_a_mass_outside_the_unit_interval(capsys):
    from bang_nar.cli import distill

    with pytest.raises(SystemExit):
        distill.parse(["--model", "m", "--data", "d.jsonl", "--output_dir", "o", "--probability_mass", "1.5"])
    assert "--probability_mass must be in (0, 1], got 1.5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        distill.parse(["--model", "m", "--data", "d.jsonl", "--output_dir", "o", "--min_distance", "-0.1"])
    assert "--min_distance must be in [0, 1], got -0.1" in capsys.readouterr().err
