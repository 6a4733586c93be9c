"""BANG model configuration (docs/architecture.md; defaults = `bang_AR_NAR_mixed.py::transformer_base`)."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# Forward passes run one stream ("ar" | "nar"); generate() also offers "nar_verify" (NAR draft, AR-verified) and
# "semi_nar" (block-wise, k tokens per step; a reconstruction, see bang_nar/semi_nar.py).
FORWARD_MODES = ("ar", "nar")
GENERATION_MODES = (*FORWARD_MODES, "nar_verify", "semi_nar")


@strict
class BangConfig(PreTrainedConfig):
    r"""
    Configuration of a BANG encoder–decoder (Qi et al. 2021). The defaults give BANG base (125M parameters).

    One set of weights decodes two ways:
    - `"ar"`: the predicting stream of a ProphetNet decoder with one stream (ngram = 1), teacher-forced or incremental;
    - `"nar"`: every decoder slot is the learned [MASK]-like vector `ngram_input_embed` plus a position embedding, with
      causal self-attention among slots (docs/architecture.md#nar-mode), decoded in one pass.

    Example:

    ```python
    >>> from bang_nar import BangConfig, BangForConditionalGeneration
    >>> config = BangConfig(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
    ...                     decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128)
    >>> model = BangForConditionalGeneration(config)
    ```
    """

    model_type = "bang"
    keys_to_ignore_at_inference = ["cache"]
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "decoder_attention_heads",
        # The KV cache is a decoder structure, so "hidden layers" counts the decoder's.
        "num_hidden_layers": "decoder_layers",
    }

    # --- architecture (docs/architecture.md#model) ---
    vocab_size: int = 30522
    d_model: int = 768
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_attention_heads: int = 12
    decoder_attention_heads: int = 12
    encoder_ffn_dim: int = 3072
    decoder_ffn_dim: int = 3072
    activation_function: str = "gelu"
    dropout: float | int = 0.1
    attention_dropout: float | int = 0.1
    activation_dropout: float | int = 0.1
    layer_norm_eps: float = 1e-5
    # Longest source and target. The encoder table has max+1 rows and the decoder table max+2 rows (row 0 = pad),
    # exactly as the original (docs/architecture.md#model), because the predicting stream looks positions up at pos+1.
    max_position_embeddings: int = 512
    # Longest source when it differs from the target limit (the original's `--max-source-positions`); None = same.
    max_source_positions: int | None = None

    # --- n-stream self-attention (docs/architecture.md#buckets) ---
    ngram: int = 1
    num_buckets: int = 32
    relative_max_distance: int = 128
    # Pretraining only (bang_nar/pretraining.py, docs/pretraining.md#reconstruction): the number n
    # of [MASK] streams of the cross-stream visible decoder. 9 is inferred from "9gram" and 9-token MASS spans
    # (docs/pretraining.md), not documented. Fine-tuning and AR/NAR inference ignore it.
    num_streams: int = 9

    # --- special ids (docs/architecture.md#tokens) ---
    pad_token_id: int | None = 0
    unk_token_id: int | None = 100
    bos_token_id: int | None = 101
    eos_token_id: int | list[int] | None = 102
    decoder_start_token_id: int | None = 102
    mask_token_id: int | None = 103

    # --- training and decoding defaults ---
    # ε of the original criterion (docs/architecture.md#loss): (1-ε)·NLL + ε/V·Σ_v −log p_v, averaged over target tokens.
    label_smoothing: float = 0.1
    generation_mode: str = "ar"

    # --- init ---
    init_std: float = 0.02

    use_cache: bool = True
    is_encoder_decoder: bool = True
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for stack in ("encoder", "decoder"):
            heads = getattr(self, f"{stack}_attention_heads")
            if heads <= 0 or self.d_model % heads != 0:
                raise ValueError(
                    f"d_model ({self.d_model}) must be a positive multiple of {stack}_attention_heads ({heads}); "
                    f"pick a head count that divides d_model, e.g. {stack}_attention_heads={max(1, self.d_model // 64)}."
                )
        if self.ngram != 1:
            raise ValueError(
                f"ngram={self.ngram} is not supported: BANG fine-tuning and inference use one predicting stream "
                "(the original asserts ngram == 1). Set ngram=1."
            )
        if self.num_streams < 1:
            raise ValueError(f"num_streams must be >= 1 (the [MASK] streams of pretraining), got {self.num_streams}.")
        if self.num_buckets < 2 or self.num_buckets % 2:
            raise ValueError(f"num_buckets must be an even number >= 2, got {self.num_buckets}.")
        if self.relative_max_distance <= self.num_buckets // 2:
            raise ValueError(
                f"relative_max_distance ({self.relative_max_distance}) must exceed num_buckets // 2 "
                f"({self.num_buckets // 2}) for the logarithmic buckets (docs/architecture.md#buckets)."
            )
        if self.generation_mode not in GENERATION_MODES:
            raise ValueError(f"generation_mode must be one of {GENERATION_MODES}, got {self.generation_mode!r}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}.")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        if self.max_position_embeddings < 1:
            raise ValueError(f"max_position_embeddings must be >= 1, got {self.max_position_embeddings}.")
        if self.max_source_positions is not None and self.max_source_positions < 1:
            raise ValueError(f"max_source_positions must be >= 1 (or None), got {self.max_source_positions}.")
        for name in ("pad_token_id", "unk_token_id", "bos_token_id", "decoder_start_token_id", "mask_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"{name}={value} is outside the vocabulary (vocab_size={self.vocab_size}); "
                    "set the special ids of your tokenizer or enlarge vocab_size."
                )
        eos_ids = self.eos_token_id if isinstance(self.eos_token_id, list) else [self.eos_token_id]
        if any(e is not None and not 0 <= e < self.vocab_size for e in eos_ids):
            raise ValueError(f"eos_token_id={self.eos_token_id} is outside the vocabulary (vocab_size={self.vocab_size}).")

    @property
    def encoder_max_positions(self) -> int:
        """Longest source: `max_source_positions`, or `max_position_embeddings` when that is None."""
        return self.max_source_positions if self.max_source_positions is not None else self.max_position_embeddings


__all__ = ["BangConfig", "FORWARD_MODES", "GENERATION_MODES"]
