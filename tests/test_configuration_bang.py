import pytest
from huggingface_hub.errors import StrictDataclassFieldValidationError

from bang_nar import BangConfig


def test_defaults_are_bang_base():
    config = BangConfig()
    assert (config.d_model, config.encoder_layers, config.decoder_layers, config.decoder_attention_heads) == (768, 6, 6, 12)
    assert (config.vocab_size, config.num_buckets, config.relative_max_distance, config.ngram) == (30522, 32, 128, 1)
    assert (config.pad_token_id, config.unk_token_id, config.bos_token_id, config.eos_token_id) == (0, 100, 101, 102)
    assert (config.decoder_start_token_id, config.mask_token_id) == (102, 103)
    assert config.hidden_size == 768 and config.num_hidden_layers == 6


def test_round_trip(tmp_path):
    config = BangConfig(d_model=64, encoder_attention_heads=4, decoder_attention_heads=4, generation_mode="nar")
    config.save_pretrained(tmp_path)
    loaded = BangConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"d_model": 65}, "multiple of encoder_attention_heads"),
        ({"decoder_attention_heads": 5}, "multiple of decoder_attention_heads"),
        ({"generation_mode": "semi"}, "generation_mode must be one of"),
        ({"ngram": 2}, "ngram=2 is not supported"),
        ({"num_buckets": 31}, "even number"),
        ({"relative_max_distance": 8}, "must exceed num_buckets"),
        ({"label_smoothing": 1.0}, "label_smoothing must be in"),
        ({"dropout": 1.5}, "dropout must be in"),
    ],
)
def test_invalid_values_raise_clear_errors(overrides, message):
    with pytest.raises((ValueError, StrictDataclassFieldValidationError), match=message):
        BangConfig(**overrides)


def test_special_ids_outside_the_vocabulary_warn_like_transformers():
    from transformers.testing_utils import CaptureLogger
    from transformers.utils import logging

    with CaptureLogger(logging.get_logger("transformers.configuration_utils")) as captured:
        config = BangConfig(vocab_size=57)  # [UNK]=100 .. [MASK]=103 lie outside
    assert config.vocab_size == 57
    assert "mask_token_id must be `None` or an integer within the vocabulary (between 0 and 56)" in captured.out
