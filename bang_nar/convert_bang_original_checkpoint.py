"""Convert an original fairseq BANG checkpoint (fine-tuned, or the pretraining `checkpoint_base_9gram_ck35.pt`).

docs/converter.md#mapping: a rename table plus the original loader's adjustments (position-table growth, 2-row ngram table,
`--load-sep`). Files are read with `torch.load(weights_only=True)`; the only extra classes allowed are
`argparse.Namespace` (fairseq's `args`) and inert stand-ins for the fairseq 0.9 training meters that `fairseq-train`
pickles into `extra_state["train_meters"]`. Anything unknown or missing is refused with the key list.

    bang-nar convert checkpoint.pt ./bang-hf
"""

import argparse
import pickle
import re
from pathlib import Path

import torch

from .configuration_bang import BangConfig
from .generation_bang import BangGenerationConfig
from .modeling_bang import BangForConditionalGeneration
from .tokenization_bang import load_bang_tokenizer

# fairseq prefix → HF prefix, applied after the packed q/k/v split. Module names otherwise mirror the original.
_RENAMES = [
    (re.compile(r"^decoder\.layers\.(\d+)\.ngram_self_attn\."), r"model.decoder.layers.\1.self_attn."),
    (re.compile(r"^(encoder|decoder)\."), r"model.\1."),
]
_IGNORED = {"encoder.version", "decoder.version"}
_EMBED_KEYS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


class _InertMeter:
    """Stand-in for a fairseq 0.9 meter (`fairseq/meters.py`): keeps the pickled attributes, has no behaviour.

    `fairseq-train` (0.9 `Trainer.save_checkpoint`) stores `extra_state["train_meters"]`, an OrderedDict of
    `AverageMeter`, `TimeMeter` and `StopwatchMeter` objects whose state is plain numbers (or tensors). The converter
    never uses them; allowing these stand-ins under fairseq's names lets `weights_only=True` read such files
    without importing fairseq. `__setstate__` only stores a dict, so a crafted state cannot run anything.
    """

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{type(self).__name__}: expected a dict state, got {type(state).__name__}")
        self.__dict__.update(state)


class _AverageMeter(_InertMeter):
    pass


class _TimeMeter(_InertMeter):
    pass


class _StopwatchMeter(_InertMeter):
    pass


# Everything a fairseq 0.9 training checkpoint pickles besides tensors, containers and numbers: `args` and the
# meters in `extra_state`. (`optimizer_history` and `last_optimizer_state` hold only names, numbers and tensors.)
SAFE_GLOBALS = [
    argparse.Namespace,
    (_AverageMeter, "fairseq.meters.AverageMeter"),
    (_TimeMeter, "fairseq.meters.TimeMeter"),
    (_StopwatchMeter, "fairseq.meters.StopwatchMeter"),
]
_ALLOWED_NAMES = "tensors, containers, argparse.Namespace and fairseq.meters.{AverageMeter,TimeMeter,StopwatchMeter}"


def _refusal(path: Path, error: Exception) -> ValueError:
    """One line from torch's multi-paragraph weights_only error: the refused global (or the first line)."""
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text)  # "Unsupported global: GLOBAL x" or "unsupported GLOBAL x"
    if found:
        problem = f"refused global {found.group(1)}"
    else:
        found = re.search(r"WeightsUnpickler error: ([^\n]+)", text)
        problem = found.group(1).strip() if found else (text.strip().splitlines() or [type(error).__name__])[0]
    return ValueError(
        f"{path}: not loaded ({problem}); weights_only=True allows only {_ALLOWED_NAMES}. If you trust the file, "
        "re-save just its 'model' and 'args' entries with torch.save and convert that."
    )


def load_fairseq_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], argparse.Namespace | None]:
    """Return `(state_dict, args)` of a fairseq checkpoint (`{'args', 'model', ...}`) or of a raw state dict.

    Uses `weights_only=True` with `SAFE_GLOBALS` allow-listed; never falls back to full unpickling.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file.")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError) as error:
        raise _refusal(path, error) from None  # torch's own message is ~40 lines of advice that does not apply
    if not isinstance(checkpoint, dict):
        raise ValueError(
            f"{path}: expected a dict (fairseq checkpoint or state dict), got {type(checkpoint).__name__}."
        )
    if "model" in checkpoint:
        return dict(checkpoint["model"]), checkpoint.get("args")
    return dict(checkpoint), None


def _grow_positions(table: torch.Tensor, rows: int) -> torch.Tensor:
    """Position tables (docs/converter.md): append copies of the whole table, copy k with features rotated left by k; then cut."""
    if table.size(0) >= rows:
        return table[:rows]
    index = torch.arange(table.size(1))
    parts = [table]
    while sum(p.size(0) for p in parts) < rows:
        index = torch.roll(index, shifts=-1)  # new[j] = old[(j + k) mod d] for copy k
        parts.append(table[:, index])
    return torch.cat(parts)[:rows]


def adapt_pretrained_state(
    state: dict[str, torch.Tensor],
    max_positions: int = 512,
    load_sep: bool = False,
    max_source_positions: int | None = None,
) -> dict[str, torch.Tensor]:
    """What `BANGARNarMixedModel.build_model` does to a loaded state before its strict load (docs/converter.md#mapping).

    Position tables become `max_source_positions`+1 (encoder; default `max_positions`) and `max_positions`+2
    (decoder) rows; a 2-row ngram table keeps row 1; with `load_sep`, token row 2 (`[X_SEP]`) becomes a copy of
    row 102 (`[SEP]`). A fine-tuned checkpoint of the right sizes passes through unchanged (unless `load_sep`).
    """
    source_positions = max_positions if max_source_positions is None else max_source_positions
    state = dict(state)
    for key, rows in (
        ("encoder.embed_positions.weight", source_positions + 1),
        ("decoder.embed_positions.weight", max_positions + 2),
    ):
        if key in state:
            state[key] = _grow_positions(state[key], rows)
    ngram_key = "decoder.ngram_input_embed.weight"
    if ngram_key in state and state[ngram_key].size(0) == 2:
        state[ngram_key] = state[ngram_key][1:2]
    if load_sep:
        for key in _EMBED_KEYS:
            if key in state:
                state[key] = state[key].clone()
                state[key][2] = state[key][102]
    return state


def config_from_fairseq(
    state: dict[str, torch.Tensor], args: argparse.Namespace | None = None, **overrides
) -> BangConfig:
    """Dimensions from tensor shapes (the ground truth); head counts, dropout and ε from `args` when present."""
    embed = state["encoder.embed_tokens.weight"]
    vocab_size, d_model = embed.shape

    def count_layers(prefix: str) -> int:
        return len({int(m.group(1)) for k in state if (m := re.match(rf"^{prefix}\.layers\.(\d+)\.", k))})

    num_buckets = getattr(args, "num_buckets", 32)
    relative_rows = state["decoder.layers.0.ngram_self_attn.relative_linear.weight"].size(0)
    decoder_heads = relative_rows // num_buckets
    values = dict(
        vocab_size=vocab_size,
        d_model=d_model,
        encoder_layers=count_layers("encoder"),
        decoder_layers=count_layers("decoder"),
        encoder_attention_heads=getattr(args, "encoder_attention_heads", decoder_heads),
        decoder_attention_heads=decoder_heads,
        encoder_ffn_dim=state["encoder.layers.0.fc1.weight"].size(0),
        decoder_ffn_dim=state["decoder.layers.0.fc1.weight"].size(0),
        activation_function=getattr(args, "activation_fn", "gelu"),
        dropout=getattr(args, "dropout", 0.1),
        attention_dropout=getattr(args, "attention_dropout", 0.1),
        activation_dropout=getattr(args, "activation_dropout", 0.1),
        max_position_embeddings=getattr(args, "max_target_positions", 512),
        max_source_positions=getattr(args, "max_source_positions", None),
        num_buckets=num_buckets,
        relative_max_distance=getattr(args, "relative_max_distance", 128),
        label_smoothing=getattr(args, "label_smoothing", 0.1),
        generation_mode="nar" if getattr(args, "nar_ratio", 0.0) >= 1.0 else "ar",
    )
    values.update(overrides)
    if values["max_source_positions"] == values["max_position_embeddings"]:
        values["max_source_positions"] = None  # one limit for both sides, as in the default config
    return BangConfig(**values)


# fairseq-generate's defaults in the original fine-tuning scripts (docs/decoding.md#original): beam 4, lenpen 1.2, max_len_b 200.
ORIGINAL_AR_BEAM, ORIGINAL_AR_LENPEN, ORIGINAL_MAX_LEN_B = 4, 1.2, 200


def original_generation_config(config: BangConfig, max_len_b: int = ORIGINAL_MAX_LEN_B) -> BangGenerationConfig:
    """The original scripts' decoding settings as a GenerationConfig, so that plain `generate()` decodes like them.

    AR models (`generation_mode="ar"`): `fairseq-generate --beam 4 --lenpen 1.2` with the default `max_len_a=0,
    max_len_b=200`, i.e. at most 200 tokens then a forced `[SEP]` (`max_length` = start token + 201), and
    `original_compatible=True` (fairseq 0.9's stopping and forced-eos rules). NAR models: one argmax pass over
    as many slots as the padded source (no length setting; `num_beams=1`).
    """
    values = dict(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    if config.generation_mode == "ar":
        limit = min(max_len_b, config.max_position_embeddings - 1)  # fairseq: min(max_len_b, max_positions - 1)
        values.update(
            num_beams=ORIGINAL_AR_BEAM,
            length_penalty=ORIGINAL_AR_LENPEN,
            max_length=limit + 2,
            original_compatible=True,
        )
    return BangGenerationConfig(**values)


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename fairseq keys to this package's names (docs/converter.md#mapping) and split packed `in_proj` rows into q, k, v."""
    unknown_embed = [k for k in state if k.endswith("embed_out.weight")]
    if unknown_embed:
        raise ValueError(
            f"{unknown_embed}: untied output projections are not supported; BANG shares all embeddings "
            "(--share-all-embeddings)."
        )
    embeds = [state[k] for k in _EMBED_KEYS if k in state]
    if len(embeds) == 2 and not torch.equal(*embeds):
        raise ValueError(
            "encoder.embed_tokens.weight and decoder.embed_tokens.weight differ; BANG ties them "
            "(--share-all-embeddings), so this checkpoint is not a BANG checkpoint."
        )
    converted: dict[str, torch.Tensor] = {}
    if embeds:
        converted["model.shared.weight"] = embeds[0]
    for key, tensor in state.items():
        if key in _IGNORED or key in _EMBED_KEYS:
            continue
        if key.endswith(("ngram_self_attn.in_proj_weight", "ngram_self_attn.in_proj_bias")):
            prefix = key.rsplit(".", 1)[0].replace("ngram_self_attn", "self_attn")
            kind = "weight" if key.endswith("weight") else "bias"
            for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):  # order q, k, v
                converted[f"model.{prefix}.{name}.{kind}"] = part.clone()
            continue
        new_key = key
        for pattern, replacement in _RENAMES:
            new_key, found = pattern.subn(replacement, new_key)
            if found:
                break
        converted[new_key] = tensor
    return converted


def load_converted_weights(model: BangForConditionalGeneration, converted: dict[str, torch.Tensor]) -> None:
    """Strict load that names every missing and unexpected key, then checks the three-way embedding tie."""
    expected = model.state_dict()
    tied_aliases = {"model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"}
    missing = sorted(set(expected) - set(converted) - tied_aliases)
    unexpected = sorted(set(converted) - set(expected))
    wrong_shape = sorted(
        f"{k}: checkpoint {tuple(converted[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(converted) & set(expected)
        if converted[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong_shape:
        raise ValueError(
            "The checkpoint does not match a BANG model: "
            f"missing keys {missing}; unexpected keys {unexpected}; shape mismatches {wrong_shape}. "
            "Is it a BANG (bang_ar_nar_mixed) checkpoint, and were the dimensions read correctly?"
        )
    model.load_state_dict(converted, strict=False)
    model.tie_weights()
    if model.lm_head.weight.data_ptr() != model.model.shared.weight.data_ptr():
        raise RuntimeError("lm_head is not tied to the shared embedding after loading; please report this.")


def convert_bang_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path | None = None,
    *,
    load_sep: bool = False,
    vocab_file: str | Path | None = None,
    max_source_positions: int | None = None,
    max_target_positions: int | None = None,
    max_len_b: int = ORIGINAL_MAX_LEN_B,
    **config_overrides,
) -> BangForConditionalGeneration:
    """Load a fairseq BANG checkpoint into `BangForConditionalGeneration`; with `output_dir`, save model (safetensors),
    config, generation config, tokenizer and a model card there.

    Position tables follow the checkpoint's `--max-source-positions` / `--max-target-positions` (512 without `args`);
    `max_source_positions` / `max_target_positions` override them (tables grow or are cut as in docs/converter.md).
    `max_len_b` is fairseq-generate's length limit stored in the AR generation config (default 200).
    """
    state, args = load_fairseq_checkpoint(checkpoint_path)
    required = (
        "encoder.embed_tokens.weight",
        "decoder.layers.0.ngram_self_attn.relative_linear.weight",
        "encoder.layers.0.fc1.weight",
        "decoder.layers.0.fc1.weight",
    )
    absent = [k for k in required if k not in state]
    if absent:
        raise ValueError(
            f"{checkpoint_path}: missing keys {absent}; this is not a BANG (bang_ar_nar_mixed) checkpoint. "
            f"Its first keys are {sorted(state)[:8]}."
        )
    if max_target_positions is not None:
        config_overrides["max_position_embeddings"] = max_target_positions
    if max_source_positions is not None:
        config_overrides["max_source_positions"] = max_source_positions
    config = config_from_fairseq(state, args, **config_overrides)
    state = adapt_pretrained_state(
        state, config.max_position_embeddings, load_sep=load_sep, max_source_positions=config.encoder_max_positions
    )
    model = BangForConditionalGeneration(config)
    load_converted_weights(model, convert_state_dict(state))
    model.generation_config = original_generation_config(config, max_len_b)
    model.eval()
    if output_dir is not None:
        output_dir = Path(output_dir)
        model.save_pretrained(output_dir)
        load_bang_tokenizer(vocab_file, model_max_length=config.encoder_max_positions).save_pretrained(output_dir)
        _write_conversion_card(output_dir, Path(checkpoint_path).name, model, load_sep)
    return model


def _write_conversion_card(
    output_dir: Path, source_name: str, model: BangForConditionalGeneration, load_sep: bool
) -> None:
    from .hub import render_model_card

    config = model.config
    card = render_model_card(
        "converted",
        {
            "source_checkpoint": source_name,
            "load_sep": str(load_sep),
            "num_parameters": f"{model.num_parameters():,}",
            "config_summary": (
                f"d_model={config.d_model}, layers={config.encoder_layers}+{config.decoder_layers}, "
                f"heads={config.decoder_attention_heads}, vocab={config.vocab_size}"
            ),
        },
    )
    (output_dir / "README.md").write_text(card, encoding="utf-8")


__all__ = [
    "adapt_pretrained_state",
    "config_from_fairseq",
    "convert_bang_checkpoint",
    "convert_state_dict",
    "load_converted_weights",
    "load_fairseq_checkpoint",
    "original_generation_config",
]
