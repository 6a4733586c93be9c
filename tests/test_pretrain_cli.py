"""`bang-nar pretrain`: trains on raw text, logs each stream's loss, resumes, saves a plain BANG model + card."""

import torch

from bang_nar import BangForConditionalGeneration
from bang_nar.cli import main

CORPUS = [
    "the quick brown fox jumps over the lazy dog near the river bank",
    "a small model learns to fill masked spans of raw text in several streams",
    "every stream predicts the same span with a different number of masked tokens before it",
] * 4


def _args(corpus, out, steps, *extra):
    # A saved model brings its own tokenizer, so continuing from one takes no --word_vocab_size (refused with a path).
    vocab = [] if "--model_name_or_path" in extra else ["--word_vocab_size", "200"]
    return ["pretrain", "--data", str(corpus), "--output_dir", str(out), *vocab,
            "--max_source_length", "24", "--span_block_size", "8", "--mask_ratio", "0.5", "--num_streams", "3",
            "--max_steps", str(steps), "--per_device_train_batch_size", "2", "--logging_steps", "1",
            "--save_steps", "2", "--report_to", "none", "--use_cpu", "--learning_rate", "1e-3",
            "--disable_tqdm", "true", *extra]


def test_pretrain_resume_and_continue(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n")
    out = tmp_path / "pre"
    assert main(_args(corpus, out, 2, "--freeze_encoder_steps", "1")) == 0
    assert main(_args(corpus, out, 4, "--resume_from_checkpoint", "last")) == 0
    state = (out / "checkpoint-4" / "trainer_state.json").read_text()
    assert '"global_step": 4' in state and "loss_stream_2" in state and '"encoder_gap"' in state
    assert '"loss_encoder_mlm"' in state  # the encoder MLM term is on by default
    # The checkpoint is a plain BANG model (no pretraining class in config or files) and decodes every mode.
    model = BangForConditionalGeneration.from_pretrained(out)
    assert model.config.architectures == ["BangForConditionalGeneration"] and model.config.num_streams == 3
    assert not (out / "pretraining.py").exists()
    source = torch.tensor([[5, 6, 7, 8, 3]])
    for mode, options in {"ar": {}, "nar": {}, "semi_nar": {"block_size": 2}}.items():
        assert model.generate(source, mode=mode, max_new_tokens=4, **options).size(0) == 1
    card = (out / "README.md").read_text()
    assert "reconstruction" in card and "3 [MASK] streams" in card and "position in the document" in card
    assert "'encoder_gap':" in card and "'loss_encoder_mlm':" in card  # the last log's values
    assert "Encoder MLM term** (added by bang-nar, not in any source): weight 1." in card
    # Continue pretraining from the saved model with per-stream weights, on the fine-tuning positions 1..T.
    more = tmp_path / "more"
    assert main(_args(corpus, more, 1, "--model_name_or_path", str(out), "--stream_weights", "1,0.5,0.5",
                      "--no_document_positions", "--encoder_mlm_weight", "0")) == 0
    assert "last per-stream losses, encoder gap and encoder MLM loss {'loss_stream_0'" in capsys.readouterr().err
    card = (more / "README.md").read_text()
    assert "fine-tuning positions 1..T" in card and "off (`--encoder_mlm_weight 0`" in card
    assert "loss_encoder_mlm" not in (more / "checkpoint-1" / "trainer_state.json").read_text()
