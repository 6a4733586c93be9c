"""The cross-stream visible n-stream pretraining decoder (docs/pretraining.md#reconstruction) on tiny models."""

import pytest
import torch

from bang_nar import BangForConditionalGeneration
from bang_nar.pretraining import (
    BangForPreTraining,
    cross_stream_decoder,
    cross_stream_pattern,
    encoder_gap,
    pretraining_forward,
    stream_supervision,
)
from transformers import AutoModelForSeq2SeqLM

from .conftest import random_batch, tiny_model

ATOL = 1e-5

# The worked example of the design notes: visible keys per predicting query, n = 3, T = 4, target_idx = [0, 1, 2, 3].
WORKED_EXAMPLE = {
    "P0@0": "M0 P0@0",
    "P0@1": "M0 M1 P0@1",
    "P0@2": "M0 M1 M2 P0@2",
    "P0@3": "M0 M1 M2 M3 P0@3",
    "P1@0": "M0 P1@0",
    "P1@1": "M0 P0@0 P1@1",
    "P1@2": "M0 M1 P0@1 P1@2",
    "P1@3": "M0 M1 M2 P0@2 P1@3",
    "P2@0": "M0 P2@0",
    "P2@1": "M0 P1@0 P2@1",
    "P2@2": "M0 P0@0 P1@1 P2@2",
    "P2@3": "M0 M1 P0@1 P1@2 P2@3",
}
WORKED_SUPERVISED = {"P1@0", "P2@0", "P2@1"}  # the unsupervised slots ("no" in the table); all others are supervised


def _names(num_rows, num_streams):
    return [f"M{j}" for j in range(num_rows)] + [
        f"P{s}@{t}" for s in range(num_streams) for t in range(num_rows)
    ]


def test_worked_example_table():
    visible, distance = cross_stream_pattern(4, 3)
    names = _names(4, 3)
    for query, keys in WORKED_EXAMPLE.items():
        row = names.index(query)
        assert {names[k] for k in visible[row].nonzero().flatten().tolist()} == set(keys.split()), query
    for t in range(4):  # main stream: causal over main rows only
        assert {names[k] for k in visible[t].nonzero().flatten().tolist()} == {f"M{j}" for j in range(t + 1)}
    # Buckets (docs/pretraining.md): slot -> main key j is t - j + 1, slot -> slot key r is t - r.
    assert distance[names.index("P2@3"), names.index("M1")] == 3
    assert distance[names.index("P2@3"), names.index("P0@1")] == 2
    assert distance[names.index("P2@3"), names.index("P2@3")] == 0
    supervised = stream_supervision(torch.zeros(1, 4, dtype=torch.long), torch.arange(4)[None], 3)[0]
    unsupervised = {f"P{s}@{t}" for s in range(3) for t in range(4) if not supervised[s, t]}
    assert unsupervised == WORKED_SUPERVISED


@pytest.mark.parametrize("num_streams,num_rows", [(3, 4), (4, 9), (9, 12)])
def test_supervised_slots_attend_only_inside_their_group(num_streams, num_rows):
    """A supervised slot sees only main rows <= its group and supervised slots of its own group (no leak)."""
    visible, _ = cross_stream_pattern(num_rows, num_streams)
    # Two spans: rows 0..4 (target_idx 0..4), then rows 5.. (0..).
    target_idx = torch.tensor([t if t < 5 else t - 5 for t in range(num_rows)])
    supervised = stream_supervision(torch.zeros(1, num_rows, dtype=torch.long), target_idx[None], num_streams)[0]
    for s in range(num_streams):
        for t in range(num_rows):
            if not supervised[s, t]:
                continue
            row = (1 + s) * num_rows + t
            main_keys = visible[row, :num_rows].nonzero().flatten()
            assert main_keys.max() == t - s  # sees exactly the golden prefix of its group
            for key in visible[row, num_rows:].nonzero().flatten().tolist():
                s2, r = divmod(key, num_rows)
                assert r - s2 == t - s and supervised[s2, r], (s, t, s2, r)


@torch.no_grad()
def test_one_stream_reproduces_ar_mode_logits(model):
    input_ids, mask, labels = random_batch()
    ar = model(input_ids=input_ids, attention_mask=mask, labels=labels, mode="ar")
    out = pretraining_forward(model, input_ids, mask, labels=labels, num_streams=1, return_logits=True)
    assert torch.allclose(out.logits[:, 0], ar.logits, atol=ATOL)
    # With one stream every real target is supervised, so the loss is AR's loss.
    assert torch.allclose(out.loss, ar.loss, atol=ATOL)


@torch.no_grad()
def test_restricted_group_reproduces_nar_mode(model):
    """Group 0 (slots P_s@s) with M0 hidden too is exactly NAR mode over n slots (a sanity test of the reconstruction)."""
    n = 5
    input_ids, mask, _ = random_batch()
    prev = torch.randint(1, 100, (input_ids.size(0), n), generator=torch.Generator().manual_seed(3))
    encoder_states = model.get_encoder()(input_ids=input_ids, attention_mask=mask).last_hidden_state
    visible, _ = cross_stream_pattern(n, n)
    group0 = [(1 + s) * n + s for s in range(n)]
    visible[group0, :n] = False
    hidden = cross_stream_decoder(model, encoder_states, mask, prev, n, visible=visible)
    pretrain_logits = model.lm_head(hidden[:, group0])
    nar = model(input_ids=input_ids, attention_mask=mask, decoder_attention_mask=torch.ones_like(prev), mode="nar")
    assert torch.allclose(pretrain_logits, nar.logits, atol=ATOL)
    # Without the restriction the group sees M0 (the M0 caveat), which changes the logits.
    hidden = cross_stream_decoder(model, encoder_states, mask, prev, n)
    assert not torch.allclose(model.lm_head(hidden[:, group0]), nar.logits, atol=1e-3)


@torch.no_grad()
def test_stream_zero_is_ar_and_masked_tokens_do_not_leak(model):
    """Stream 0 equals AR mode for any n; a supervised slot's logits ignore the golden tokens it must not see."""
    input_ids, mask, labels = random_batch(batch_size=2, target_length=7)
    labels = labels.masked_fill(labels.eq(-100), 5)  # full rows
    prev = model.prepare_decoder_input_ids_from_labels(labels)
    out = pretraining_forward(model, input_ids, mask, prev, labels, num_streams=3, return_logits=True)
    ar = model(input_ids=input_ids, attention_mask=mask, labels=labels, mode="ar")
    assert torch.allclose(out.logits[:, 0], ar.logits, atol=ATOL)
    # Change the golden token at main row 4: slots of streams s at row t with t - s < 4 must not move.
    changed = prev.clone()
    changed[:, 4] = (changed[:, 4] + 11) % 100 + 1
    other = pretraining_forward(model, input_ids, mask, changed, labels, num_streams=3, return_logits=True)
    for s in range(3):
        for t in range(prev.size(1)):
            same = torch.allclose(out.logits[:, s, t], other.logits[:, s, t], atol=ATOL)
            assert same == (t - s < 4), (s, t)


def test_loss_is_equal_weight_mean_and_weights_apply(model):
    input_ids, mask, labels = random_batch()
    out = pretraining_forward(model, input_ids, mask, labels=labels, num_streams=3, return_logits=True)
    supervised = stream_supervision(labels, torch.arange(labels.size(1)).expand_as(labels), 3)
    per_slot = torch.nn.functional.cross_entropy(
        out.logits[supervised].float(), labels[:, None].expand_as(supervised)[supervised],
        label_smoothing=model.config.label_smoothing, reduction="none",
    )
    assert torch.allclose(out.loss, per_slot.mean(), atol=ATOL)
    assert out.stream_counts.tolist() == supervised.sum((0, 2)).tolist()
    weighted = pretraining_forward(model, input_ids, mask, labels=labels, num_streams=3, stream_weights=[1.0, 0.0, 0.0])
    assert torch.allclose(weighted.loss, out.stream_losses[0] * out.stream_counts[0] / out.stream_counts.sum(), atol=ATOL)
    with pytest.raises(ValueError, match="one weight per stream"):
        pretraining_forward(model, input_ids, mask, labels=labels, num_streams=3, stream_weights=[1.0])
    out.loss.backward()
    assert model.model.decoder.ngram_input_embed.weight.grad.abs().sum() > 0


def test_pretraining_model_saves_as_plain_bang(tmp_path):
    torch.manual_seed(0)
    model = BangForPreTraining(tiny_model().config).eval()
    input_ids, mask, labels = random_batch()
    assert model(input_ids=input_ids, attention_mask=mask, labels=labels).stream_losses.numel() == 9
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is BangForConditionalGeneration and loaded.config.architectures == ["BangForConditionalGeneration"]
    with torch.no_grad():
        a = model(input_ids=input_ids, attention_mask=mask, labels=labels, mode="ar").logits
        b = loaded(input_ids=input_ids, attention_mask=mask, labels=labels, mode="ar").logits
        assert torch.equal(a, b)
        # Generation on the pretraining class runs the AR stream.
        assert torch.equal(model.generate(input_ids, attention_mask=mask, max_new_tokens=5),
                           loaded.generate(input_ids, attention_mask=mask, max_new_tokens=5))
    continued = BangForPreTraining.from_pretrained(tmp_path)
    assert torch.equal(continued.lm_head.weight, loaded.lm_head.weight)


def test_block_targets_for_semi_nar_fine_tuning(model):
    """Without target_idx, `block_size` = k makes target_idx = t mod k (fixed blocks, docs/pretraining.md)."""
    input_ids, mask, labels = random_batch(batch_size=1, target_length=7)
    out = pretraining_forward(model, input_ids, mask, labels=labels, num_streams=2, block_size=2)
    assert out.stream_counts.tolist() == [7, 3]  # stream 1 only at odd rows 1, 3, 5
    whole = pretraining_forward(model, input_ids, mask, labels=labels, num_streams=2)
    assert whole.stream_counts.tolist() == [7, 6]  # one span: every row but the first


def test_document_positions_set_embeddings_and_buckets_per_sample(model):
    """Document positions (the released hooks): buckets follow them per sample; 1..T reproduces the default positions."""
    input_ids, mask, labels = random_batch(batch_size=2, target_length=5)
    labels = labels.masked_fill(labels.eq(-100), 5)
    prev = model.prepare_decoder_input_ids_from_labels(labels)
    spans = torch.tensor([[1, 2, 3, 6, 7], [1, 2, 3, 4, 5]])  # sample 0: two spans; sample 1: contiguous
    visible, distance = cross_stream_pattern(5, 2, positions=spans)
    assert distance.shape == (2, 15, 15) and torch.equal(visible, cross_stream_pattern(5, 2)[0])
    # P0@3 (document position 6) -> main row 1 (position 2): 6 - 2 + 1; P1@4 -> P0@3: 7 - 6.
    assert distance[0, 5 + 3, 1] == 5 and distance[0, 10 + 4, 5 + 3] == 1 and distance[0, 1, 3] == 0  # invisible
    assert torch.equal(distance[1], cross_stream_pattern(5, 2)[1])
    with torch.no_grad():
        default = pretraining_forward(model, input_ids, mask, prev, labels, num_streams=2, return_logits=True)
        explicit = pretraining_forward(model, input_ids, mask, prev, labels, num_streams=2, return_logits=True,
                                       positions=torch.arange(1, 6).expand(2, -1))
        moved = pretraining_forward(model, input_ids, mask, prev, labels, num_streams=2, return_logits=True,
                                    positions=spans)
    assert torch.allclose(explicit.logits, default.logits, atol=ATOL)  # the per-sample bucket path
    assert torch.allclose(moved.logits[1], default.logits[1], atol=ATOL)  # sample 1 is at 1..T: no leak across samples
    assert not torch.allclose(moved.logits[0], default.logits[0], atol=1e-3)
    # Document positions index the source: a source longer than the decoder's positions is refused up front.
    wide = tiny_model(max_source_positions=model.config.max_position_embeddings + 8)
    long_source = torch.randint(5, 100, (1, model.config.max_position_embeddings + 1))
    with pytest.raises(ValueError, match="source has 65 tokens.*max_position_embeddings=64"):
        pretraining_forward(wide, long_source, labels=labels[:1], positions=spans[:1])


def test_encoder_gap_measures_whether_the_decoder_reads_the_source(model):
    pretrainer = BangForPreTraining(model.config)
    pretrainer.load_state_dict(model.state_dict())
    input_ids, mask, labels = random_batch()
    batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
    pretrainer.train()
    gap = encoder_gap(pretrainer, batch, num_streams=3)
    assert pretrainer.training and abs(gap.item()) > 1e-3  # mode restored; this decoder reads the source
    # A decoder cut off from the encoder (cross-attention outputs zero) gives the same loss for any source.
    with torch.no_grad():
        for layer in pretrainer.get_decoder().layers:
            layer.encoder_attn.out_proj.weight.zero_()
            layer.encoder_attn.out_proj.bias.zero_()
    assert encoder_gap(pretrainer, batch, num_streams=3).item() == 0.0
    assert encoder_gap(pretrainer, {k: v[:1] for k, v in batch.items()}).isnan()  # one sample: nothing to swap


def test_freeze_encoder_steps_holds_the_encoder_then_trains_it(tmp_path):
    from transformers import TrainingArguments

    from bang_nar.pretraining import BangPreTrainer

    torch.manual_seed(0)
    model = BangForPreTraining(tiny_model().config)
    input_ids, mask, labels = random_batch(batch_size=4)
    rows = [{"input_ids": i, "attention_mask": m, "labels": y} for i, m, y in zip(input_ids, mask, labels)]

    def collate(features):
        return {key: torch.stack([f[key] for f in features]) for key in features[0]}

    def snapshot():
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    def trainer(steps):
        args = TrainingArguments(output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=4,
                                 learning_rate=1e-2, weight_decay=0.0, report_to=[], save_strategy="no",
                                 use_cpu=True, disable_tqdm=True, remove_unused_columns=False)
        return BangPreTrainer(model=model, args=args, train_dataset=rows, data_collator=collate, num_streams=3,
                              freeze_encoder_steps=2)

    before = snapshot()
    trainer(2).train()
    after = snapshot()
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    assert not {n for n in moved if n.startswith("model.encoder.")}  # encoder layers and positions held
    assert "model.shared.weight" in moved and any(n.startswith("model.decoder.layers") for n in moved)
    trainer(3).train()  # a fresh run of 3 steps: the third step trains the encoder
    assert not torch.equal(after["model.encoder.layers.0.fc1.weight"], model.model.encoder.layers[0].fc1.weight)
    with pytest.raises(ValueError, match="freeze_encoder_steps"):
        BangPreTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True),
                       freeze_encoder_steps=-1)
    with pytest.raises(ValueError, match="encoder_mlm_weight must be >= 0"):
        BangPreTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True),
                       encoder_mlm_weight=-1.0)


def test_encoder_mlm_term_adds_the_weighted_span_token_loss(model):
    input_ids, mask, labels = random_batch()
    encoder_labels = torch.full_like(input_ids, -100)
    encoder_labels[:, 2:5] = input_ids[:, 2:5]  # three span positions per sample
    plain = pretraining_forward(model, input_ids, mask, labels=labels, num_streams=3)
    states = model.get_encoder()(input_ids=input_ids, attention_mask=mask).last_hidden_state[:, 2:5]
    expected = torch.nn.functional.cross_entropy(model.lm_head(states).flatten(0, 1).float(),
                                                 input_ids[:, 2:5].flatten(), label_smoothing=model.config.label_smoothing)
    with_mlm = pretraining_forward(model, input_ids, mask, labels=labels, num_streams=3, encoder_labels=encoder_labels,
                                   encoder_mlm_weight=0.5)
    assert torch.allclose(with_mlm.encoder_mlm_loss, expected, atol=ATOL)
    assert torch.allclose(with_mlm.loss, plain.loss + 0.5 * expected, atol=ATOL)
    off = pretraining_forward(model, input_ids, mask, labels=labels, num_streams=3, encoder_labels=encoder_labels,
                              encoder_mlm_weight=0.0)
    assert torch.equal(off.loss, plain.loss) and off.encoder_mlm_loss is None
    # No span position in the batch: the term is 0, not nan.
    empty = pretraining_forward(model, input_ids, mask, labels=labels, num_streams=3,
                                encoder_labels=torch.full_like(input_ids, -100))
    assert empty.encoder_mlm_loss.item() == 0.0 and torch.allclose(empty.loss, plain.loss, atol=ATOL)
    # encoder_gap compares the decoder's losses only: encoder labels in the batch do not change it.
    pretrainer = BangForPreTraining(model.config)
    pretrainer.load_state_dict(model.state_dict())
    batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
    assert torch.allclose(encoder_gap(pretrainer, dict(batch, encoder_labels=encoder_labels), num_streams=3),
                          encoder_gap(pretrainer, batch, num_streams=3), atol=ATOL)


def test_encoder_mlm_term_keeps_a_from_scratch_encoder_from_collapsing(tmp_path):
    """The failure it fixes: on word-level text, the released criterion alone collapses the encoder to one constant
    vector within 60 steps (spread across sources near 0); with the encoder MLM term (the default) it stays apart."""
    import datasets
    from transformers import PrinterCallback, TrainingArguments

    from bang_nar.configuration_bang import BangConfig
    from bang_nar.multimodality import build_word_tokenizer, make_multimodality_task
    from bang_nar.pretraining import BangPreTrainer
    from bang_nar.pretraining_data import SpanMaskingCollator, pack_documents

    task = make_multimodality_task(1, 600, 0, 0)
    text = [" ".join(f"{s} {t}" for s, t in zip(source.split(), target.split()))
            for source, target in zip(task.train["source"], task.train["target"])]
    tokenizer = build_word_tokenizer(text)
    chunks = pack_documents(datasets.Dataset.from_dict({"text": text}), tokenizer, 32)
    probe = SpanMaskingCollator(tokenizer, span_block_size=8, mask_ratio=0.5,
                                generator=torch.Generator().manual_seed(1))([chunks[i] for i in range(32)])

    def spread_after_pretraining(**trainer_kwargs) -> tuple[float, list]:
        config = BangConfig(vocab_size=len(tokenizer), d_model=64, encoder_layers=2, decoder_layers=2,
                            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                            decoder_ffn_dim=128, max_position_embeddings=32, num_streams=4,
                            pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(0)
        model = BangForPreTraining(config)
        collator = SpanMaskingCollator(tokenizer, span_block_size=8, mask_ratio=0.5,
                                       generator=torch.Generator().manual_seed(0))
        args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=16, max_steps=60,
                                 learning_rate=2e-3, warmup_steps=6, report_to=[], save_strategy="no", use_cpu=True,
                                 disable_tqdm=True, remove_unused_columns=False, logging_steps=60)
        trainer = BangPreTrainer(model=model, args=args, train_dataset=chunks, data_collator=collator, num_streams=4,
                                 **trainer_kwargs)
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        with torch.no_grad():
            states = model.eval().get_encoder()(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"])
        return states.last_hidden_state.std(0).mean().item(), trainer.state.log_history

    collapsed, released_log = spread_after_pretraining(encoder_mlm_weight=0.0)
    alive, default_log = spread_after_pretraining()
    assert collapsed < 0.1 < 0.4 < alive, (collapsed, alive)  # about 0.03 and 0.74 when written
    assert "loss_encoder_mlm" in default_log[0] and "loss_encoder_mlm" not in released_log[0]
