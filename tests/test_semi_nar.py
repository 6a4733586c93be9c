"""Block-wise semi-NAR decoding (docs/pretraining.md#semi-nar) on tiny models."""

import math

import pytest
import torch

from bang_nar.pretraining import pretraining_forward

from .conftest import random_batch, tiny_model


def _greedy(model, input_ids, mask, max_new_tokens):
    return model.generate(input_ids, attention_mask=mask, mode="ar", max_new_tokens=max_new_tokens, num_beams=1,
                          do_sample=False)


@torch.no_grad()
@pytest.mark.parametrize("seed", range(4))
def test_block_size_one_is_ar_greedy_token_for_token(seed):
    model = tiny_model(seed)
    input_ids, mask, _ = random_batch(batch_size=5, source_length=11, seed=100 + seed)
    out = model.generate(input_ids, attention_mask=mask, mode="semi_nar", block_size=1, max_new_tokens=12,
                         return_dict_in_generate=True)
    assert torch.equal(out.sequences, _greedy(model, input_ids, mask, 12))
    assert out.num_steps == out.sequences.size(1) - 1


@torch.no_grad()
@pytest.mark.parametrize("block_size", [2, 3, 5])
def test_each_block_is_the_pretraining_group_argmax(block_size):
    """Every block equals the argmax of the docs/pretraining.md group that pretraining trains, given the decoded prefix: the cached
    incremental decode computes exactly the n-stream forward's slots P_s@(g+s)."""
    model = tiny_model(1)
    input_ids, mask, _ = random_batch(batch_size=3, source_length=9, seed=7)
    max_new = 10
    out = model.generate(input_ids, attention_mask=mask, mode="semi_nar", block_size=block_size,
                         max_new_tokens=max_new, return_dict_in_generate=True)
    seq = out.sequences  # [B, 1+L]
    assert out.num_steps <= -(-max_new // block_size)
    # Teacher-force the decoded prefix through the pretraining forward with block_size streams.
    full = pretraining_forward(model, input_ids, mask, decoder_input_ids=seq[:, :-1], num_streams=block_size,
                               return_logits=True).logits  # [B, n, T, V]
    for b in range(seq.size(0)):
        row = seq[b, 1:]
        length = int(row.ne(0).sum())
        for t in range(length):
            g = (t // block_size) * block_size  # first row of this block: prefix y_0..y_g known
            assert full[b, t - g, t].argmax().item() == row[t].item(), (b, t)


@torch.no_grad()
def test_semi_nar_stops_and_validates(model):
    input_ids, mask, _ = random_batch()
    out = model.generate(input_ids, attention_mask=mask, mode="semi_nar", block_size=4, max_new_tokens=6)
    assert out.size(1) <= 7 and out[:, 0].eq(model.config.decoder_start_token_id).all()
    for row in out[:, 1:].tolist():  # pads only after the first [SEP]
        if 102 in row:
            assert all(token == 0 for token in row[row.index(102) + 1:])
    with pytest.raises(ValueError, match="block_size"):
        model.generate(input_ids, attention_mask=mask, mode="semi_nar", block_size=0)
    with pytest.raises(ValueError, match="num_beams"):
        model.generate(input_ids, attention_mask=mask, mode="semi_nar", num_beams=2)


# ---- semi-NAR fine-tuning (train_mode="semi_nar") -------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [1, 3])
def test_semi_nar_forward_is_the_n_stream_objective_with_t_mod_k(block_size):
    model = tiny_model(2).train()
    input_ids, mask, labels = random_batch(batch_size=3, source_length=9, target_length=7, seed=5)
    torch.manual_seed(0)
    out = model(input_ids=input_ids, attention_mask=mask, labels=labels, mode="semi_nar", block_size=block_size)
    target_idx = torch.arange(labels.size(1)).expand_as(labels) % block_size
    torch.manual_seed(0)
    expected = pretraining_forward(model, input_ids, mask, labels=labels, target_idx=target_idx,
                                   num_streams=block_size, smoothing_eps=0.0)  # forward's default: cross-entropy
    torch.testing.assert_close(out.loss, expected.loss)
    # Stream s is supervised at the real positions t with t mod k >= s.
    real = labels.ne(-100)
    counts = [int((real & (target_idx >= s)).sum()) for s in range(block_size)]
    assert out.stream_counts.tolist() == counts
    if block_size == 1:  # one stream: the AR predicting stream, i.e. the AR loss
        ar = model.eval()(input_ids=input_ids, attention_mask=mask, labels=labels, mode="ar").loss
        torch.testing.assert_close(model(input_ids=input_ids, attention_mask=mask, labels=labels, mode="semi_nar",
                                         block_size=1).loss, ar)
    with pytest.raises(ValueError, match="block_size applies to mode='semi_nar' only"):
        model(input_ids=input_ids, attention_mask=mask, labels=labels, mode="ar", block_size=2)
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        model(input_ids=input_ids, attention_mask=mask, labels=labels, mode="semi_nar", block_size=0)


def test_semi_nar_training_lowers_the_loss_and_stores_k_for_generate(tmp_path):
    from bang_nar import BangForConditionalGeneration
    from bang_nar.trainer import SPMDDataCollator
    from tests.spmd_toy import spmd_trainer, toy_dataset

    torch.set_num_threads(1)
    dataset = toy_dataset(num=16).remove_columns("kd_labels")  # gold only: semi-NAR training needs no distillation
    batch = SPMDDataCollator(pad_token_id=0)(list(dataset))
    model = tiny_model(seed=3)

    def loss() -> float:
        with torch.no_grad():
            return float(model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                      labels=batch["labels"], mode="semi_nar", block_size=3).loss)

    before = loss()
    trainer = spmd_trainer(tmp_path, model=model, dataset=dataset, train_mode="semi_nar", semi_nar_block_size=3,
                           max_steps=40, learning_rate=3e-3, logging_steps=10)
    trainer.train()
    after = loss()
    assert after < 0.7 * before, (before, after)
    logged = [log["semi_nar_loss"] for log in trainer.state.log_history if "semi_nar_loss" in log]
    assert len(logged) == 4 and logged[-1] < logged[0]
    trainer.save_model(str(tmp_path / "model"))
    loaded = BangForConditionalGeneration.from_pretrained(tmp_path / "model").eval()
    assert loaded.generation_config.block_size == 3
    input_ids, mask = batch["input_ids"], batch["attention_mask"]
    default = loaded.generate(input_ids, attention_mask=mask, mode="semi_nar", max_new_tokens=7,
                              return_dict_in_generate=True)
    explicit = loaded.generate(input_ids, attention_mask=mask, mode="semi_nar", block_size=3, max_new_tokens=7,
                               return_dict_in_generate=True)
    assert torch.equal(default.sequences, explicit.sequences) and default.num_steps == explicit.num_steps
    # 7 new tokens at 3 per step: 3 passes, unless every row ended earlier (then fewer)
    assert default.num_steps <= 3 and default.num_steps >= -(-int(default.sequences[:, 1:].ne(0).sum(1).max()) // 3)


def test_semi_nar_evaluation_generates_semi_nar_and_scores_the_n_stream_loss(tmp_path):
    from bang_nar.trainer import SPMDDataCollator
    from tests.spmd_toy import spmd_trainer, toy_dataset

    torch.set_num_threads(1)
    data = toy_dataset(num=8, seed=1).remove_columns("kd_labels")
    options = dict(dataset=toy_dataset().remove_columns("kd_labels"), train_mode="semi_nar", semi_nar_block_size=2,
                   per_device_eval_batch_size=4)
    generating = spmd_trainer(tmp_path, predict_with_generate=True, **options)
    model = generating.model.eval()
    prediction = generating.predict(data)
    batch = SPMDDataCollator(pad_token_id=0)([data[i] for i in range(4)])
    expected = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], mode="semi_nar")
    assert torch.equal(torch.as_tensor(prediction.predictions[:4, : expected.size(1)]), expected)  # k from the config
    plain = spmd_trainer(tmp_path, **options).evaluate(eval_dataset=data)["eval_loss"]
    assert prediction.metrics["test_loss"] == pytest.approx(plain, rel=1e-5)
    with torch.no_grad():
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                     mode="semi_nar", block_size=2, smoothing_eps=generating.args.label_smoothing_factor).loss
    assert math.isfinite(plain) and float(loss) == pytest.approx(
        float(generating.prediction_step(model, dict(batch), False)[0]), rel=1e-5)


def test_semi_nar_on_the_distilled_best_target(tmp_path):
    from bang_nar.trainer import SPMDDataCollator
    from tests.spmd_toy import spmd_trainer, toy_dataset

    torch.set_num_threads(1)
    dataset = toy_dataset(num=4, k=2)
    batch = SPMDDataCollator(pad_token_id=0)(list(dataset))
    model = tiny_model(seed=3).eval()  # no dropout: two forwards agree
    trainer = spmd_trainer(tmp_path, model=model, dataset=dataset, train_mode="semi_nar", semi_nar_block_size=2,
                           semi_nar_targets="ar_kd")
    loss = trainer._semi_nar_batch_loss(model, batch, False)
    best = batch["kd_labels"][:, 0]
    assert not torch.equal(best, batch["labels"][:, : best.size(1)])  # the toy's distilled targets differ from gold
    expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=best,
                     mode="semi_nar", block_size=2, smoothing_eps=trainer.args.label_smoothing_factor).loss
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="kd_labels"):
        spmd_trainer(tmp_path, dataset=dataset.remove_columns("kd_labels"), train_mode="semi_nar",
                     semi_nar_targets="ar_kd")


def test_former_wrappers_are_gone():
    # The semi-NAR loop is generate(mode="semi_nar") and the objective model.semi_nar_forward (issue 23).
    import bang_nar.pretraining

    with pytest.raises(ImportError):
        __import__("bang_nar.semi_nar")
    assert not hasattr(bang_nar.pretraining, "semi_nar_forward")
