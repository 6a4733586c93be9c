"""BANG decoding beyond `GenerationMixin`: the one-pass NAR modes and the original beam-search rules.

- `mode="nar"`: one encoder and one decoder pass, an argmax per slot (docs/decoding.md#original), optionally constrained
  (`constrained_argmax`) or rescored over candidates by the AR stream (`nar_candidates`);
- `mode="nar_verify"`: a NAR draft verified by the AR stream (token-for-token AR greedy, fewer AR passes);
- `mode="ar"`: `GenerationMixin.generate`, plus `original_compatible` (fairseq 0.9 beam-search rules through
  `ForcedEosKeepScoreLogitsProcessor`);
- `mode="semi_nar"`: k tokens per decoder pass through the decoder's n-stream mode (a reconstruction).

NAR modes honour a fixed set of generation options and refuse every other non-default one with a ValueError that
names it (`check_generation_options`), so no option is silently ignored. Constraints (`suppress_tokens`,
`bad_words_ids`, ...) go through Transformers' logits processors where the mode can apply them exactly
(docs/decoding.md#constraints); `output_scores` / `output_logits` are Transformers' per-step tuples in every mode
(docs/decoding.md#scores).

Imports only torch, transformers and `.configuration_bang`: `save_pretrained` copies it next to `modeling_bang.py`
for `trust_remote_code=True` loading.
"""

import math
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig, GenerationMixin
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.generation import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
)
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import ModelOutput

from .configuration_bang import GENERATION_MODES

# ---------------------------------------------------------------------------------------------------------------
# NAR token selection (no model pass)
# ---------------------------------------------------------------------------------------------------------------


def nar_scan(row: list[int], sep_token_id: int, cls_token_id: int | None = None, dedup: bool = True) -> list[int]:
    """One row of the original first post-processing pass (`post_processed_nar.py`, docs/decoding.md#original), on ids.

    A leading `[SEP]` is skipped; a `[SEP]` after something was kept ends the output; `[CLS]` is dropped; with
    `dedup`, a token equal to the previously *kept* token is dropped. `cls_token_id=None, dedup=False` only cuts.
    """
    return [row[slot] for slot in nar_scan_slots(row, sep_token_id, cls_token_id, dedup)[:-1]]


def nar_scan_slots(row: list[int], sep_token_id: int, cls_token_id: int | None = None, dedup: bool = True) -> list[int]:
    """`nar_scan`, as the slots of `row` that it keeps, plus the slot of the `[SEP]` that ends the output, or -1
    when the row has none (post-processing appends one): slot j produced token j of the post-processed row."""
    kept: list[int] = []
    for slot, token in enumerate(row):
        if token == sep_token_id:
            if kept:
                return kept + [slot]
            continue
        if token == cls_token_id or (dedup and kept and token == row[kept[-1]]):
            continue
        kept.append(slot)
    return kept + [-1]


def nar_cut_and_dedup(
    tokens: torch.Tensor, sep_token_id: int, cls_token_id: int | None, pad_token_id: int, dedup: bool = True
) -> torch.Tensor:
    """Id-level first pass of the original NAR post-processing (`nar_scan` per row) on [B, L] ids.

    The kept tokens are left-aligned and followed by one `[SEP]`, then pads. `dedup=False` only cuts (and drops
    `[CLS]`). The word-level second pass (after `##` merging) lives in `bang_nar.postprocess`.
    """
    rows = [nar_scan(row, sep_token_id, cls_token_id, dedup) + [sep_token_id] for row in tokens.tolist()]
    out = tokens.new_full((tokens.size(0), max(len(r) for r in rows)), pad_token_id)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=tokens.dtype)
    return out


def nar_step_scores(
    logits: torch.Tensor,
    raw: torch.Tensor,
    source_rows: torch.Tensor,
    width: int,
    sep_token_id: int,
    cls_token_id: int | None,
    postprocess: bool,
    dedup: bool = True,
) -> tuple[torch.Tensor, ...]:
    """Per-step NAR scores in Transformers' shape: a tuple of `width` tensors [N, V], step j for token j of the
    returned sequences (NAR sequences have no start token, so `compute_transition_scores` aligns all of them).

    `logits` [B, L, V] are the slot logits, `raw` [N, L] the slot ids each returned row came from (the argmax, or a
    candidate), `source_rows` [N] the source of each row. Step j holds the logits of the slot that produced token j
    (`nar_scan_slots` when `postprocess`, else slot j). A `[SEP]` that post-processing appended (the row has none)
    gets a forced row (0 for `[SEP]`, -inf elsewhere: log-prob 0, as Transformers scores a forced token); steps after
    a row's end are zeros, as in `mode="nar_verify"` (docs/decoding.md#scores).
    """
    num_rows, length = raw.shape
    if postprocess:
        slot_rows = [nar_scan_slots(row, sep_token_id, cls_token_id, dedup) for row in raw.tolist()]
        slots = [row + [-2] * (width - len(row)) for row in slot_rows]
        slot_index = torch.tensor(slots, dtype=torch.long, device=logits.device)  # -1: appended [SEP], -2: after
    else:
        slot_index = torch.arange(width, device=logits.device).expand(num_rows, width)
    gathered = logits[source_rows[:, None], slot_index.clamp(min=0)]  # [N, width, V]
    forced = torch.full_like(gathered[0, 0], -math.inf)
    forced[sep_token_id] = 0.0
    gathered = torch.where((slot_index == -1)[..., None], forced, gathered)
    gathered = gathered.masked_fill((slot_index == -2)[..., None], 0.0)
    return tuple(gathered.unbind(1))


def constrained_argmax(
    logits: torch.Tensor, no_repeat_ngram_size: int = 0, suppress_repeats: bool = False
) -> torch.Tensor:
    """Left-to-right argmax over NAR logits [B, L, V] that never emits a banned token (no model pass).

    Banned at slot t: the token chosen at t-1 (`suppress_repeats`), and every token that would complete an n-gram
    already emitted in the row (`no_repeat_ngram_size` = n, as HF's `NoRepeatNGramLogitsProcessor`). Without
    options this is the plain per-slot argmax of the original generator.
    """
    return constrained_logits(logits, no_repeat_ngram_size, suppress_repeats).argmax(-1)


def constrained_logits(
    logits: torch.Tensor, no_repeat_ngram_size: int = 0, suppress_repeats: bool = False
) -> torch.Tensor:
    """`logits` [B, L, V] with the tokens `constrained_argmax` bans at each slot set to -inf (the processed scores
    of `output_scores`); `logits` itself without options."""
    if not no_repeat_ngram_size and not suppress_repeats:
        return logits
    batch_size, length, _ = logits.shape
    n = no_repeat_ngram_size
    seen: list[dict[tuple[int, ...], set[int]]] = [{} for _ in range(batch_size)]
    masked = logits.clone()
    history: list[list[int]] = [[] for _ in range(batch_size)]
    for t in range(length):
        for b in range(batch_size):
            banned = set()
            if suppress_repeats and history[b]:
                banned.add(history[b][-1])
            if n and len(history[b]) >= n - 1:
                banned |= seen[b].get(tuple(history[b][len(history[b]) - n + 1 :]), set())
            if banned:
                masked[b, t, list(banned)] = -math.inf
        for b, token in enumerate(masked[:, t].argmax(-1).tolist()):
            history[b].append(token)
            if n and len(history[b]) >= n:
                ngram = tuple(history[b][-n:])
                seen[b].setdefault(ngram[:-1], set()).add(ngram[-1])
    return masked


def _next_index(row: list[int], token: int, start: int, last: int) -> int:
    """Index of the first `token` in `row[start:last + 1]`, or `last` when there is none."""
    for index in range(start, last + 1):
        if row[index] == token:
            return index
    return last


def nar_candidates(logits: torch.Tensor, tokens: torch.Tensor, num_candidates: int, sep_token_id: int) -> torch.Tensor:
    """Raw NAR candidates [B, K, L] around `tokens` (the argmax, first): length variants and substitutions.

    - length variants: cut at each of the slots where `[SEP]` is most probable (earlier `[SEP]`s are replaced by
      their best other token, so the candidate really ends there);
    - substitutions: the least confident slot before the argmax cut takes its second-best token.
    Half of the K-1 extra candidates (rounded up) are length variants. Rows may repeat when a row has fewer
    distinct variants, or where `[SEP]` is impossible at the slots (-inf); the rescoring tie-break keeps the first,
    i.e. the plainer candidate.
    """
    log_probs = logits.float().log_softmax(-1)  # [B, L, V]
    batch_size, length = tokens.shape
    non_sep = log_probs.clone()
    non_sep[..., sep_token_id] = -math.inf
    best_other, second = non_sep.topk(2, dim=-1).indices.unbind(-1)  # [B, L] each
    num_extra = num_candidates - 1
    num_length = min((num_extra + 1) // 2, length)
    candidates = [tokens]
    sep_scores, sep_slots = log_probs[..., sep_token_id].topk(num_length, dim=-1)  # [B, n_len]
    slot_index = torch.arange(length, device=tokens.device)
    for j in range(num_length):
        cut = sep_slots[:, j : j + 1]  # [B, 1]
        variant = torch.where(tokens.eq(sep_token_id) & (slot_index < cut), best_other, tokens)
        variant = torch.where(slot_index == cut, torch.full_like(tokens, sep_token_id), variant)
        # Never cut where [SEP] is suppressed (-inf, e.g. suppress_tokens): that row keeps the argmax instead.
        candidates.append(torch.where(sep_scores[:, j : j + 1].isfinite(), variant, tokens))
    num_subs = num_extra - num_length
    if num_subs > 0:
        is_sep = tokens.eq(sep_token_id).int()
        before_cut = (is_sep.cumsum(-1) - is_sep) == 0  # slots before the first [SEP]
        confidence = log_probs.max(-1).values.masked_fill(~before_cut, math.inf)
        weakest = confidence.topk(min(num_subs, length), dim=-1, largest=False).indices  # [B, n_sub]
        for j in range(num_subs):
            slot = weakest[:, min(j, weakest.size(1) - 1) : min(j, weakest.size(1) - 1) + 1]
            replaced = torch.where(
                tokens.gather(1, slot).eq(best_other.gather(1, slot)),
                second.gather(1, slot),
                best_other.gather(1, slot),
            )
            candidates.append(torch.where(slot_index == slot, replaced, tokens))
    return torch.stack(candidates, dim=1)


@dataclass
class BangNARGenerateOutput(ModelOutput):
    """`generate(mode="nar", return_dict_in_generate=True)` output.

    - `sequences` [B, L']: post-processed ids (first pass of the original post-processing; raw when `nar_postprocess=False`);
    - `raw_sequences` [B, L]: the argmax at every decoder slot, as the original generator returns it;
    - `scores`: with `output_scores=True`, Transformers' per-step tuple of processed logits [N, V] (after
      `suppress_tokens` and the other constraints), one per token of `sequences` (`mode="nar"`, no start token) or
      per token after the `[SEP]` start (`mode="nar_verify"`, as AR greedy), so `compute_transition_scores` works;
      zeros after a row's end (docs/decoding.md#scores);
    - `logits`: with `output_logits=True`, the same tuple of unprocessed logits;
    - `positional_scores` [B, L]: `mode="nar"`, the raw max logit per slot (the original fairseq
      `positional_scores`, not a log-prob; `scores` before this version);
    - `slot_logits` [B, L, V]: `mode="nar"` with `output_logits=True`, the logits of every slot (`logits` before);
    - `candidates` [B, K, L''] and `candidate_scores` [B, K]: with `num_candidates` > 1, every post-processed
      candidate and its length-normalised AR-stream log-probability (the best one is `sequences`);
    - `sequences_scores` [B·n]: with `num_candidates`, the AR-stream score of each returned sequence (n =
      `num_return_sequences`; rows of one source are adjacent, best first, as in HF beam search);
    - `ar_passes` [B]: `mode="nar_verify"` only, AR-stream passes each row needed (greedy AR needs one per token).
    """

    sequences: torch.Tensor | None = None
    raw_sequences: torch.Tensor | None = None
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None
    positional_scores: torch.Tensor | None = None
    slot_logits: torch.Tensor | None = None
    candidates: torch.Tensor | None = None
    candidate_scores: torch.Tensor | None = None
    sequences_scores: torch.Tensor | None = None
    ar_passes: torch.Tensor | None = None


class ForcedEosKeepScoreLogitsProcessor(LogitsProcessor):
    """At the last allowed step, only `[SEP]` may follow, and it keeps the model's own log-prob.

    fairseq 0.9 forces eos at `max_len` this way (docs/decoding.md#options); HF's `forced_eos_token_id` sets the forced
    score to 0 instead, which changes which hypothesis wins.
    """

    def __init__(self, eos_token_id: int, max_length: int):
        self.eos_token_id = eos_token_id
        self.max_length = max_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] == self.max_length - 1:
            eos_scores = scores[:, self.eos_token_id].clone()
            scores = torch.full_like(scores, -math.inf)
            scores[:, self.eos_token_id] = eos_scores
        return scores


# ---------------------------------------------------------------------------------------------------------------
# Generation options of the one-pass modes
# ---------------------------------------------------------------------------------------------------------------

# Arguments of GenerationMixin.generate that are not GenerationConfig fields, with their no-op values.
_GENERATE_ARGUMENTS = {
    "logits_processor": None,
    "stopping_criteria": None,
    "prefix_allowed_tokens_fn": None,
    "synced_gpus": False,
    "assistant_model": None,
    "streamer": None,
    "negative_prompt_ids": None,
    "negative_prompt_attention_mask": None,
    "custom_generate": None,
    "use_model_defaults": None,
}
_HINTS = {
    "num_beams": "NAR modes decode every position in one argmax pass; use num_candidates for NAR rescoring, or "
    "mode='ar' for beam search",
    "do_sample": "NAR modes take the argmax of every slot; use mode='ar' for sampling",
    "streamer": "NAR modes produce every token at once; use mode='ar' to stream",
    "num_return_sequences": "it needs mode='nar' with num_candidates >= num_return_sequences",
    "cache_implementation": "BANG keeps a dynamic cache of the main stream only (any mode); drop the option",
}
# Fields of the model's own generation_config that the one-pass modes use, and the options every one of them
# honours (or refuses in one line where the mode cannot: docs/decoding.md#constraints); its other fields (beam
# size, length penalty, ...) are AR settings (converted models store the original AR beam search there).
_NAR_CONFIG_FIELDS = (
    "max_new_tokens",
    "no_repeat_ngram_size",
    "return_dict_in_generate",
    "output_logits",
    "output_scores",
    "suppress_tokens",
    "begin_suppress_tokens",
    "bad_words_ids",
)


def _generation_defaults() -> dict[str, Any]:
    """The values generate() uses for unset GenerationConfig fields (all fields are None until then)."""
    defaults = getattr(GenerationConfig, "_get_default_generation_params", dict)()
    defaults.pop("max_length", None)  # 20 is a real limit, which one-pass modes would ignore
    return defaults


def _is_default(name: str, value: Any, defaults: dict[str, Any], config) -> bool:
    """True when passing `value` for `name` changes nothing: None, generate()'s default, an empty list, or (token
    ids) the model config's own value."""
    if value is None or (isinstance(value, (list, tuple, dict)) and not value):
        return True
    if name.endswith("token_id") and value == getattr(config, name, None):
        return True
    if name in _GENERATE_ARGUMENTS and value is _GENERATE_ARGUMENTS[name]:
        return True
    return name in defaults and value == defaults[name]


def check_generation_options(mode: str, options: dict[str, Any], config) -> None:
    """Refuse every option of `options` that `mode` does not honour and that is not at its default.

    Raises TypeError for names that are no generation option at all (typos), ValueError naming the option and a
    fix for real options that the mode cannot apply.
    """
    fields = GenerationConfig()
    defaults = _generation_defaults()
    for name, value in options.items():
        if not hasattr(fields, name) and name not in _GENERATE_ARGUMENTS:
            raise TypeError(f"generate(mode={mode!r}) got an unexpected keyword argument {name!r}.")
        if _is_default(name, value, defaults, config):
            continue
        hint = _HINTS.get(name, "it applies to AR decoding; use mode='ar'")
        raise ValueError(f"generate(mode={mode!r}) does not support {name}={value!r}: {hint}.")


# ---------------------------------------------------------------------------------------------------------------
# Constraints through Transformers' logits processors (docs/decoding.md#constraints)
# ---------------------------------------------------------------------------------------------------------------

_SEQUENTIAL_HINT = "use mode='nar_verify' (exactly AR greedy, honours it) or mode='ar'"


def refuse_sequential_constraints(mode: str, settings: dict[str, Any], no_repeat: bool = True) -> None:
    """ValueError for constraints that depend on earlier tokens of the same pass, which `mode` chooses at once:
    multi-token `bad_words_ids` and (with `no_repeat`) `no_repeat_ngram_size`."""
    multi = [word for word in settings.get("bad_words_ids") or [] if len(word) > 1]
    if multi:
        raise ValueError(
            f"generate(mode={mode!r}) does not support multi-token bad_words_ids ({multi!r}): its tokens are chosen "
            f"together, not after the earlier ones; {_SEQUENTIAL_HINT} (bad_words_ids=[] drops a stored one)."
        )
    if no_repeat and settings.get("no_repeat_ngram_size"):
        raise ValueError(
            f"generate(mode={mode!r}) does not support no_repeat_ngram_size={settings['no_repeat_ngram_size']!r}: "
            f"its tokens are chosen together, not after the earlier ones; {_SEQUENTIAL_HINT} "
            "(no_repeat_ngram_size=0 drops a stored one)."
        )


def slot_processors(settings: dict[str, Any], eos_token_id: int, device: torch.device) -> LogitsProcessorList:
    """Transformers' processors of `settings` whose effect on a step does not depend on earlier tokens
    (`suppress_tokens`, single-token `bad_words_ids`), so they apply to every NAR slot at once. `[SEP]` is never
    a bad word (as in Transformers)."""
    processors = LogitsProcessorList()
    if settings.get("suppress_tokens"):
        processors.append(SuppressTokensLogitsProcessor(settings["suppress_tokens"], device=device))
    single = [word for word in settings.get("bad_words_ids") or [] if len(word) == 1]
    if single:
        processors.append(NoBadWordsLogitsProcessor(single, eos_token_id=eos_token_id))
    return processors


def prefix_processors(settings: dict[str, Any], eos_token_id: int, device: torch.device) -> LogitsProcessorList:
    """Every constraint of `settings` as Transformers builds it for AR decoding with one start token: input_ids are
    the output so far, `[SEP]`-started (`mode="nar_verify"`, which knows each verified token's prefix)."""
    processors = LogitsProcessorList()
    if settings.get("no_repeat_ngram_size"):
        processors.append(NoRepeatNGramLogitsProcessor(settings["no_repeat_ngram_size"]))
    if settings.get("bad_words_ids"):
        processors.append(NoBadWordsLogitsProcessor(settings["bad_words_ids"], eos_token_id=eos_token_id))
    if settings.get("suppress_tokens"):
        processors.append(SuppressTokensLogitsProcessor(settings["suppress_tokens"], device=device))
    if settings.get("begin_suppress_tokens"):
        processors.append(SuppressTokensAtBeginLogitsProcessor(settings["begin_suppress_tokens"], 1, device=device))
    return processors


def process_slots(logits: torch.Tensor, settings: dict[str, Any], config, first_index: int = 1) -> torch.Tensor:
    """`slot_processors` on every slot of `logits` [B, T, V], and `begin_suppress_tokens` on the slot that predicts
    output index 1 (`first_index` == 1, the first token after the start, as Transformers' begin index 1 of an
    encoder-decoder). Unchanged (the same tensor) without constraints."""
    processors = slot_processors(settings, config.eos_token_id, logits.device)
    if processors:
        flat = logits.flatten(0, 1)
        ids = torch.full((flat.size(0), 1), config.decoder_start_token_id, dtype=torch.long, device=logits.device)
        logits = processors(ids, flat).view_as(logits)
    if settings.get("begin_suppress_tokens") and first_index == 1:
        begin = SuppressTokensAtBeginLogitsProcessor(settings["begin_suppress_tokens"], 1, device=logits.device)
        ids = torch.full((logits.size(0), 1), config.decoder_start_token_id, dtype=torch.long, device=logits.device)
        logits = torch.cat([begin(ids, logits[:, 0])[:, None], logits[:, 1:]], dim=1)
    return logits


def _nar_settings(model, mode: str, kwargs: dict[str, Any], honoured: tuple[str, ...]) -> dict[str, Any]:
    """The one-pass modes' options: explicit kwargs (and an explicit `generation_config`'s non-default fields)
    win over `_NAR_CONFIG_FIELDS` of the model's generation_config; anything else not honoured is refused."""
    settings = {name: getattr(model.generation_config, name, None) for name in _NAR_CONFIG_FIELDS}
    settings = {name: value for name, value in settings.items() if value is not None}
    explicit = dict(kwargs)
    explicit.pop("labels", None)  # Seq2SeqTrainer(predict_with_generate) passes the batch's labels; they decode nothing
    passed_config = explicit.pop("generation_config", None)
    if passed_config is not None:
        explicit = {**passed_config.to_diff_dict(), **explicit}
        explicit.pop("transformers_version", None)
        for name in BangGenerationConfig.BANG_FIELDS:  # read by generate() and the mode functions themselves
            explicit.pop(name, None)
    if "max_new_tokens" in honoured and explicit.get("max_length") is not None:
        # AR's max_length counts the [SEP] start (Seq2SeqTrainer's generation_max_length): the same output length.
        if explicit.get("max_new_tokens") is None:
            explicit["max_new_tokens"] = explicit["max_length"] - 1
        del explicit["max_length"]
    # An explicit None (e.g. a CLI option left unset) keeps the stored value.
    settings.update({name: value for name, value in explicit.items() if name in honoured and value is not None})
    check_generation_options(mode, {k: v for k, v in explicit.items() if k not in honoured}, model.config)
    # A stored max_new_tokens (the trained target bound) only lowers the source rule; an explicit one is exact.
    settings["cap_by_source"] = explicit.get("max_new_tokens") is None
    return settings


# Semi-NAR block size k (docs/decoding.md): one value for training and decoding, stored in the generation config.


def check_block_size(block_size: object, name: str = "block_size") -> int:
    """`block_size` if it is a positive int (k, tokens per semi-NAR step), else a ValueError naming `name`."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"{name} must be a positive int (tokens per semi-NAR step), got {block_size!r}.")
    return block_size


def resolve_block_size(model, block_size: int | None) -> int:
    """k for semi-NAR training and decoding: `block_size`, else the generation config's `block_size` (saved by
    `train_mode="semi_nar"`), else 4."""
    if block_size is None:
        block_size = getattr(model.generation_config, "block_size", None) or 4
    return check_block_size(block_size)


def store_block_size(model, block_size: int) -> None:
    """Make `block_size` the default k of `generate(mode="semi_nar")`, saved with the model's generation config."""
    model.generation_config.block_size = resolve_block_size(model, block_size)
    # A generation config derived from the model config is rebuilt from it on load, dropping extra fields.
    model.generation_config._from_model_config = False


class BangGenerationConfig(GenerationConfig):
    """`GenerationConfig` plus BANG's decoding fields, validated and saved in `generation_config.json`:

    - `mode`: `"ar"`, `"nar"`, `"nar_verify"` or `"semi_nar"`; None = the model config's `generation_mode`;
    - `block_size`: k, tokens per semi-NAR step (None = 4);
    - `original_compatible`: fairseq 0.9's beam-search rules in AR mode (converted models set it);
    - `num_candidates`: NAR candidates rescored by the AR stream (None = 1, plain NAR).

    They are read before `GenerationConfig`'s own fields, so they survive reloading even when the configuration
    derives from the model config (whose extra attributes Transformers drops). `generate(**kwargs)` overrides them.
    """

    BANG_FIELDS = ("mode", "block_size", "original_compatible", "num_candidates")

    def __init__(self, **kwargs: Any):
        self.mode = kwargs.pop("mode", None)
        self.block_size = kwargs.pop("block_size", None)
        self.original_compatible = kwargs.pop("original_compatible", False)
        self.num_candidates = kwargs.pop("num_candidates", None)
        super().__init__(**kwargs)

    def save_pretrained(self, *args: Any, **kwargs: Any) -> None:
        # A config flagged as derived from the model config loses its extra fields on reload: once a BANG field
        # is set, the config is the user's own.
        if any(getattr(self, name) != default for name, default in zip(self.BANG_FIELDS, (None, None, False, None))):
            self._from_model_config = False
        super().save_pretrained(*args, **kwargs)

    @classmethod
    def from_model_config(cls, model_config: Any) -> "BangGenerationConfig":
        # The base method compares every field with a plain GenerationConfig, which lacks BANG's fields.
        return cls.from_dict(GenerationConfig.from_model_config(model_config).to_dict())  # type: ignore[return-value]

    def validate(self, *args: Any, **kwargs: Any) -> None:
        super().validate(*args, **kwargs)
        if self.mode is not None and self.mode not in GENERATION_MODES:
            raise ValueError(
                f"generation config: mode={self.mode!r} is not a BANG decoding mode; use one of {GENERATION_MODES}."
            )
        if self.block_size is not None:
            check_block_size(self.block_size, "generation config block_size")
        if not isinstance(self.original_compatible, bool):
            raise ValueError(
                f"generation config: original_compatible must be True or False, got {self.original_compatible!r}."
            )
        if self.num_candidates is not None and (
            isinstance(self.num_candidates, bool) or not isinstance(self.num_candidates, int) or self.num_candidates < 1
        ):
            raise ValueError(f"generation config: num_candidates must be a positive int, got {self.num_candidates!r}.")


@dataclass
class BangSemiNARGenerateOutput(ModelOutput):
    """`generate(mode="semi_nar", return_dict_in_generate=True)`: `sequences` [B, 1+L] (`[SEP]`-started like AR,
    pads after the first `[SEP]`), `num_steps`, the decoder passes used (⌈L/k⌉ for the longest row), and with
    `output_scores` / `output_logits` Transformers' per-step tuples of processed / raw logits [B, V], one per token
    after the start (zeros after a row's end, docs/decoding.md#scores)."""

    sequences: torch.Tensor | None = None
    num_steps: int | None = None
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None


# ---------------------------------------------------------------------------------------------------------------
# The generation mixin of BangForConditionalGeneration
# ---------------------------------------------------------------------------------------------------------------


class BangGenerationMixin(GenerationMixin):
    """`generate(mode=...)` for BANG; the network itself is `modeling_bang.BangForConditionalGeneration.forward`."""

    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, *args, mode: str | None = None, **kwargs):
        """Decode with `mode` = `"ar"` (GenerationMixin beam search / greedy), `"nar"` (one pass), `"nar_verify"`
        (NAR draft verified by the AR stream: exactly AR greedy, in fewer AR passes) or `"semi_nar"` (k tokens per
        step, `block_size=k`; a reconstruction, `_generate_semi_nar`).

        `mode` defaults to the generation config's `mode` (`BangGenerationConfig`), else `config.generation_mode`.
        Options: `_generate_ar`, `_generate_nar`, `_generate_nar_verify`,
        `_generate_semi_nar`.
        """
        generation_config = kwargs.get("generation_config") or self.generation_config
        mode = mode or getattr(generation_config, "mode", None) or self.config.generation_mode
        # BANG fields of an explicit generation_config, unless passed as arguments (AR reads original_compatible).
        field = {"nar": "num_candidates", "semi_nar": "block_size"}.get(mode)
        if field and kwargs.get(field) is None and getattr(generation_config, field, None) is not None:
            kwargs[field] = getattr(generation_config, field)
        if mode == "ar":
            return self._generate_ar(inputs, *args, **kwargs)
        if mode == "nar":
            return self._generate_nar(inputs, **kwargs)
        if mode == "nar_verify":
            return self._generate_nar_verify(inputs, **kwargs)
        if mode == "semi_nar":
            return self._generate_semi_nar(inputs, **kwargs)
        raise ValueError(f"mode must be one of {GENERATION_MODES}, got {mode!r}.")

    def adjust_generation_fn(self, *args: Any, **kwargs: Any) -> None:
        """Load the generation config as Transformers does, as a `BangGenerationConfig` (keeps BANG's fields)."""
        super().adjust_generation_fn(*args, **kwargs)  # type: ignore[misc]  # self is the model
        if self.generation_config is not None and not isinstance(self.generation_config, BangGenerationConfig):
            self.generation_config = BangGenerationConfig.from_dict(self.generation_config.to_dict())

    def _generate_ar(
        self, inputs: torch.Tensor | None = None, *args, original_compatible: bool | None = None, **kwargs
    ):
        """AR decoding through `GenerationMixin.generate` with the KV cache (docs/decoding.md#original).

        `original_compatible=True` reproduces fairseq 0.9's beam search (docs/decoding.md#options): it stops a sentence
        once `num_beams` hypotheses finished (`early_stopping=True`), bans `[SEP]` at the first step
        (`min_new_tokens=1`), never emits `[PAD]`, and forces `[SEP]` as the last allowed token (`max_new_tokens`,
        else `max_length`) while keeping its log-prob. fairseq's `max_len_b=M` corresponds to `max_new_tokens=M + 1`
        (`max_length=M + 2`). It defaults to the generation config's `original_compatible` (converted models set it).
        """
        generation_config = kwargs.get("generation_config") or self.generation_config
        cache_implementation = kwargs.get("cache_implementation", generation_config.cache_implementation)
        if cache_implementation not in (None, "dynamic"):
            # The AR step appends the predicting stream's own keys after the cached main stream (docs/architecture.md).
            raise ValueError(
                f"generate(mode='ar') does not support cache_implementation={cache_implementation!r}: "
                f"{_HINTS['cache_implementation']}."
            )
        if original_compatible is None:
            original_compatible = bool(getattr(generation_config, "original_compatible", False))
        if original_compatible:
            prompt_length = 1 if kwargs.get("decoder_input_ids") is None else kwargs["decoder_input_ids"].size(1)
            max_new_tokens = kwargs.get("max_new_tokens", generation_config.max_new_tokens)
            max_length = kwargs.get("max_length", generation_config.max_length)
            if max_new_tokens is None and max_length is None:
                raise ValueError(
                    "original_compatible=True needs max_new_tokens (fairseq's max_len_b + 1, e.g. 201 for the "
                    "default max_len_b=200), because the forced [SEP] is placed at that step."
                )
            total_length = prompt_length + max_new_tokens if max_new_tokens is not None else max_length
            if (kwargs.get("num_beams") or generation_config.num_beams or 1) > 1:
                kwargs.setdefault("early_stopping", True)
            kwargs.setdefault("min_new_tokens", 1)
            # [PAD] is never emitted, whatever else the caller suppresses.
            suppressed = kwargs.get("suppress_tokens") or generation_config.suppress_tokens or []
            kwargs["suppress_tokens"] = sorted({*suppressed, self.config.pad_token_id})
            processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
            processors.append(ForcedEosKeepScoreLogitsProcessor(self.config.eos_token_id, total_length))
            kwargs["logits_processor"] = processors
        return super().generate(inputs, *args, **kwargs)

    def _encode_for_nar(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        encoder_outputs: BaseModelOutput | None,
        max_new_tokens: int | None,
        cap_by_source: bool = False,
    ) -> tuple[BaseModelOutput, torch.Tensor, int]:
        """Shared set-up of the one-pass modes: encoder outputs, source mask and the number of decoder slots
        (`max_new_tokens`, at most the padded source length with `cap_by_source`; None: the source length)."""
        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("generate(mode='nar') needs input_ids (the source) or encoder_outputs.")
            encoder_outputs = self.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
        if attention_mask is None:
            if input_ids is None:
                raise ValueError("With encoder_outputs, pass the source attention_mask too (pads must stay masked).")
            attention_mask = input_ids.ne(self.config.pad_token_id).long()
        source_slots = encoder_outputs.last_hidden_state.size(1)
        num_slots = source_slots if max_new_tokens is None else max_new_tokens
        num_slots = min(num_slots, source_slots) if cap_by_source else num_slots
        if num_slots < 1:
            raise ValueError(f"max_new_tokens must be >= 1 for NAR decoding, got {num_slots}.")
        return encoder_outputs, attention_mask, num_slots

    def _nar_logits(
        self, encoder_outputs: BaseModelOutput, attention_mask: torch.Tensor, num_slots: int
    ) -> torch.Tensor:
        """The one NAR decoder pass with `num_slots` real slots → logits [B, L, V]."""
        batch_size = encoder_outputs.last_hidden_state.size(0)
        slot_mask = torch.ones(batch_size, num_slots, dtype=torch.long, device=attention_mask.device)
        return self(
            attention_mask=attention_mask, encoder_outputs=encoder_outputs, decoder_attention_mask=slot_mask, mode="nar"
        ).logits

    def _ar_sequence_scores(
        self, encoder_outputs: BaseModelOutput, attention_mask: torch.Tensor, candidates: torch.Tensor
    ) -> torch.Tensor:
        """Length-normalised AR-stream log-prob of candidates [B, K, L] (`y.. [SEP] pad*`), in one teacher-forced pass."""
        batch_size, num_candidates, length = candidates.shape
        labels = candidates.reshape(batch_size * num_candidates, length)
        labels = labels.masked_fill(labels.eq(self.config.pad_token_id), -100)
        repeated = BaseModelOutput(
            last_hidden_state=encoder_outputs.last_hidden_state.repeat_interleave(num_candidates, dim=0)
        )
        logits = self(
            attention_mask=attention_mask.repeat_interleave(num_candidates, dim=0),
            encoder_outputs=repeated,
            labels=labels,
            mode="ar",
        ).logits
        token_log_probs = logits.float().log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
        token_log_probs = token_log_probs.masked_fill(labels.eq(-100), 0.0)
        scores = token_log_probs.sum(-1) / labels.ne(-100).sum(-1).clamp(min=1)
        return scores.view(batch_size, num_candidates)

    def _generate_nar(
        self,
        inputs: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | None = None,
        nar_postprocess: bool = True,
        num_candidates: int | None = None,
        suppress_repeats: bool = False,
        input_ids: torch.Tensor | None = None,
        **generation_options,
    ) -> torch.Tensor | BangNARGenerateOutput:
        """One encoder pass, one decoder pass, argmax per slot (docs/decoding.md#original).

        - The decoder has `max_new_tokens` slots, or the padded source length when None (the original rule). A
          `max_new_tokens` stored in the model's generation_config (the trainer records the longest trained target,
          docs/decoding.md) caps the source rule instead. NAR attention is causal, so slot t is the same whatever
          the number of slots (docs/architecture.md#nar-mode): fewer slots give the first slots of the longer decode.
        - `nar_postprocess=True` (default) cuts at the first non-leading `[SEP]` and drops `[CLS]` and consecutive
          repeats on ids (`nar_cut_and_dedup`); False returns the raw argmax of every slot.
        - `suppress_repeats` / `no_repeat_ngram_size` constrain the argmax itself (`constrained_argmax`, on the
          slot sequence); `suppress_tokens`, single-token `bad_words_ids` (every slot) and `begin_suppress_tokens`
          (slot 0) go through Transformers' processors (`process_slots`); multi-token `bad_words_ids`, and
          `no_repeat_ngram_size` with candidates, are refused (docs/decoding.md#constraints).
        - `num_candidates` = K > 1 builds K candidates (`nar_candidates`: length variants and substitutions) and
          keeps the one with the best length-normalised AR-stream log-prob, scored in one batched teacher-forced
          pass (cost: one AR pass over K·B rows). `num_return_sequences` = n <= K returns the n best per source.
        Also honoured: `return_dict_in_generate`, `output_scores` / `output_logits` (per-step tuples aligned with
        `sequences`; `positional_scores` is always in the dict), `use_cache` (no cache in one pass). Any other
        non-default option raises ValueError naming it; from the model's generation_config only `_NAR_CONFIG_FIELDS`
        are used (its beam settings are AR settings).
        """
        honoured = (*_NAR_CONFIG_FIELDS, "use_cache", "num_return_sequences")
        settings = _nar_settings(self, "nar", generation_options, honoured)
        refuse_sequential_constraints("nar", settings, no_repeat=False)
        num_return = settings.get("num_return_sequences") or 1
        if num_candidates is None:
            num_candidates = getattr(self.generation_config, "num_candidates", None) or 1
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}.")
        if num_return > num_candidates:
            raise ValueError(
                f"generate(mode='nar') does not support num_return_sequences={num_return} with "
                f"num_candidates={num_candidates}: pass num_candidates >= {num_return} (NAR returns candidates)."
            )
        if num_candidates > 1 and settings.get("no_repeat_ngram_size"):
            # Candidates substitute slots of the constrained argmax, which can repeat an n-gram again.
            raise ValueError(
                f"generate(mode='nar') does not support no_repeat_ngram_size={settings['no_repeat_ngram_size']!r} "
                f"with num_candidates={num_candidates}: use num_candidates=1, mode='nar_verify' or mode='ar'."
            )
        input_ids = inputs if inputs is not None else input_ids
        encoder_outputs, attention_mask, num_slots = self._encode_for_nar(
            input_ids, attention_mask, encoder_outputs, settings.get("max_new_tokens"), settings["cap_by_source"]
        )
        logits = self._nar_logits(encoder_outputs, attention_mask, num_slots)
        positional_scores = logits.max(dim=-1).values  # [B, L], the original `positional_scores`
        per_slot = process_slots(logits, settings, self.config)
        processed = constrained_logits(per_slot, settings.get("no_repeat_ngram_size") or 0, suppress_repeats)
        raw = processed.argmax(-1)

        config = self.config
        candidates = candidate_scores = sequences_scores = None
        if num_candidates > 1:
            # Candidates vary the constrained argmax with the per-slot constraints only (a candidate's own
            # repeats are not the argmax's); so do their scores below.
            raw_candidates = nar_candidates(per_slot, raw, num_candidates, config.eos_token_id)  # [B, K, L]
            processed = per_slot
            # Candidates are always cut at [SEP] (they are scored as targets); repeats are dropped only with
            # nar_postprocess, so a legitimately repeated word stays possible without it.
            flat = nar_cut_and_dedup(
                raw_candidates.flatten(0, 1),
                config.eos_token_id,
                config.bos_token_id,
                config.pad_token_id,
                dedup=nar_postprocess,
            )
            candidates = flat.view(raw.size(0), num_candidates, -1)
            candidate_scores = self._ar_sequence_scores(encoder_outputs, attention_mask, candidates)
            # Stable sort: among equal scores the earlier (plainer) candidate comes first.
            order = candidate_scores.argsort(dim=-1, descending=True, stable=True)[:, :num_return]  # [B, n]
            rows = torch.arange(raw.size(0), device=raw.device)[:, None]
            sequences = candidates[rows, order].flatten(0, 1)  # [B·n, L'']
            sequences_scores = candidate_scores[rows, order].flatten()
            slot_ids, source_rows = raw_candidates[rows, order].flatten(0, 1), rows.expand_as(order).flatten()
        elif nar_postprocess:
            sequences = nar_cut_and_dedup(raw, config.eos_token_id, config.bos_token_id, config.pad_token_id)
            slot_ids, source_rows = raw, torch.arange(raw.size(0), device=raw.device)
        else:
            sequences = raw
            slot_ids, source_rows = raw, torch.arange(raw.size(0), device=raw.device)
        if not settings.get("return_dict_in_generate"):
            return sequences

        def steps(values: torch.Tensor) -> tuple[torch.Tensor, ...]:
            # Candidates are always cut (and deduplicated with nar_postprocess), as they were built above.
            return nar_step_scores(
                values,
                slot_ids,
                source_rows,
                sequences.size(1),
                config.eos_token_id,
                config.bos_token_id,
                postprocess=nar_postprocess or num_candidates > 1,
                dedup=nar_postprocess,
            )

        return BangNARGenerateOutput(
            sequences=sequences,
            raw_sequences=raw,
            scores=steps(processed) if settings.get("output_scores") else None,
            logits=steps(logits) if settings.get("output_logits") else None,
            positional_scores=positional_scores,
            slot_logits=logits if settings.get("output_logits") else None,
            candidates=candidates,
            candidate_scores=candidate_scores,
            sequences_scores=sequences_scores,
        )

    def _original_rules(self, logits: torch.Tensor, first_index: int, last_index: int) -> torch.Tensor:
        """AR's `original_compatible` processors on teacher-forced logits [B, T, V] whose row j predicts output index
        `first_index + j`: `[PAD]` never, `[SEP]` not at index 1 (`min_new_tokens=1`), only `[SEP]` (its own score
        kept) at `last_index` (`ForcedEosKeepScoreLogitsProcessor`)."""
        config = self.config
        index = first_index + torch.arange(logits.size(1), device=logits.device)[None, :, None]  # [1, T, 1]
        vocab = torch.arange(logits.size(-1), device=logits.device)
        banned = (vocab == config.pad_token_id) | ((index == 1) & (vocab == config.eos_token_id))
        banned = banned | ((index == last_index) & (vocab != config.eos_token_id))
        return logits.masked_fill(banned, -math.inf)

    def _generate_nar_verify(
        self,
        inputs: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | None = None,
        input_ids: torch.Tensor | None = None,
        original_compatible: bool | None = None,
        **generation_options,
    ) -> torch.Tensor | BangNARGenerateOutput:
        """NAR draft, AR verification: token-for-token AR greedy decoding (`max_new_tokens` = draft length) with
        far fewer AR passes when the streams agree. `original_compatible` (default: the generation config's, as in
        AR mode) applies AR's fairseq rules to the verifying argmax: no `[SEP]` first, never `[PAD]`, `[SEP]` forced
        as the last allowed token, so the output equals `generate(mode="ar", num_beams=1)` of the same model.

        One NAR pass drafts every slot. Each round runs the AR stream teacher-forced over the unconfirmed rest
        (the KV cache holds the confirmed prefix), accepts the longest prefix where the AR argmax equals the draft,
        and appends the AR token at the first disagreement. The NAR stream does not see the prefix, so the draft
        stays valid after a correction. Returns `[SEP]`-started ids like `mode="ar"`, pads after `[SEP]`.
        Honoured options: `max_new_tokens`, `return_dict_in_generate`, `use_cache`, `output_scores` /
        `output_logits` (the processed / raw AR logits of each step, as AR greedy returns them), and the constraints
        `no_repeat_ngram_size`, `bad_words_ids`, `suppress_tokens`, `begin_suppress_tokens`, exactly as AR greedy
        applies them: Transformers' processors run on each verified position with its prefix as input_ids (a
        position counts only when its whole prefix is confirmed). Others raise ValueError.
        """
        honoured = (*_NAR_CONFIG_FIELDS, "use_cache")
        settings = _nar_settings(self, "nar_verify", generation_options, honoured)
        if original_compatible is None:
            original_compatible = bool(getattr(self.generation_config, "original_compatible", False))
        input_ids = inputs if inputs is not None else input_ids
        encoder_outputs, attention_mask, num_slots = self._encode_for_nar(
            input_ids, attention_mask, encoder_outputs, settings.get("max_new_tokens"), settings["cap_by_source"]
        )
        config = self.config
        processors = prefix_processors(settings, config.eos_token_id, attention_mask.device)
        # The draft obeys the per-slot constraints, so that the AR stream agrees with it more often.
        draft = process_slots(self._nar_logits(encoder_outputs, attention_mask, num_slots), settings, config)
        draft = draft.argmax(-1)  # [B, L]
        batch_size = draft.size(0)
        start = draft.new_full((batch_size, 1), config.decoder_start_token_id)
        rows = torch.cat([start, draft], dim=1).tolist()  # index k >= 1 holds output token k
        confirmed = [1] * batch_size  # indices < confirmed[b] are final
        ar_passes = torch.zeros(batch_size, dtype=torch.long)
        active = list(range(batch_size))  # rows still decoding; finished rows leave the batch and its cache
        states, mask = encoder_outputs.last_hidden_state, attention_mask
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        cached = 0
        step_scores = None  # [B, L, V] with output_scores: the AR logits that chose each output token
        step_logits = None  # [B, L, V] with output_logits: the same before the constraints
        while active:
            # Verify up to the draft's next [SEP] only: past it the draft is filler, and a longer AR output is
            # confirmed one token per round anyway. This keeps rounds short when the decode length is the source's.
            end = max(_next_index(rows[b], config.eos_token_id, confirmed[b], num_slots) for b in active)
            inputs = torch.tensor([rows[b][cached:end] for b in active], dtype=draft.dtype, device=draft.device)
            logits = self(
                attention_mask=mask,
                encoder_outputs=BaseModelOutput(last_hidden_state=states),
                decoder_input_ids=inputs,
                cache=cache,
                use_cache=True,
                mode="ar",
            ).logits
            raw_logits = logits
            if original_compatible:
                logits = self._original_rules(logits, cached + 1, num_slots)
            if processors:
                # Position j predicts index cached + j + 1 after the prefix rows[b][: cached + j + 1]; it is used
                # only when that prefix is confirmed, so the constraint sees what AR greedy would.
                prefix = torch.tensor([rows[b][:end] for b in active], dtype=draft.dtype, device=draft.device)
                logits = torch.stack(
                    [processors(prefix[:, : cached + j + 1], logits[:, j]) for j in range(logits.size(1))], dim=1
                )
            predicted = logits.argmax(-1).tolist()  # predicted[i][j]: AR token for index cached + j + 1
            if settings.get("output_scores") and step_scores is None:
                step_scores = logits.new_zeros(batch_size, num_slots, logits.size(-1))
            if settings.get("output_logits") and step_logits is None:
                step_logits = logits.new_zeros(batch_size, num_slots, logits.size(-1))
            still_active = []
            for i, b in enumerate(active):
                ar_passes[b] += 1
                k = confirmed[b]
                while True:
                    if k - 1 - cached >= len(predicted[i]):  # verified window exhausted: next round
                        still_active.append(i)
                        break
                    token = predicted[i][k - 1 - cached]
                    if step_scores is not None:
                        step_scores[b, k - 1] = logits[i, k - 1 - cached]
                    if step_logits is not None:
                        step_logits[b, k - 1] = raw_logits[i, k - 1 - cached]
                    agreed = rows[b][k] == token
                    rows[b][k] = token
                    k += 1
                    if token == config.eos_token_id or k > num_slots:
                        rows[b][k:] = [config.pad_token_id] * (len(rows[b]) - k)
                        break
                    if not agreed:
                        still_active.append(i)
                        break
                confirmed[b] = k
            if len(still_active) < len(active):
                keep = torch.tensor(still_active, dtype=torch.long, device=draft.device)
                cache.batch_select_indices(keep)
                states, mask = states[keep], mask[keep]
                active = [active[i] for i in still_active]
            if active:
                # Keys/values stay valid up to the last index whose *input* token was already final this round.
                new_cached = min(confirmed[b] for b in active) - 1
                cache.crop(new_cached - cache.get_seq_length())
                cached = new_cached
        sequences = torch.tensor(rows, dtype=draft.dtype, device=draft.device)
        # Drop columns that are padding in every row (rows that stopped early), like HF generate does.
        keep = int(sequences.ne(config.pad_token_id).any(0).nonzero().max()) + 1
        sequences = sequences[:, :keep]
        if not settings.get("return_dict_in_generate"):
            return sequences
        # Per-step scores as AR greedy returns them (a tuple of [B, V], one per output token after `[SEP]`), so
        # `compute_transition_scores` works; zeros where a row had already stopped.
        scores = None if step_scores is None else tuple(step_scores[:, : keep - 1].unbind(1))
        raw_steps = None if step_logits is None else tuple(step_logits[:, : keep - 1].unbind(1))
        return BangNARGenerateOutput(
            sequences=sequences, raw_sequences=draft, ar_passes=ar_passes, scores=scores, logits=raw_steps
        )

    @torch.no_grad()
    def _generate_semi_nar(
        self,
        inputs: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | None = None,
        block_size: int | None = None,
        input_ids: torch.Tensor | None = None,
        **generation_options,
    ) -> torch.Tensor | BangSemiNARGenerateOutput:
        """Greedy block-wise semi-NAR decoding, k = `block_size` tokens per decoder pass (a reconstruction:
        docs/decoding.md; no source describes BANG's semi-NAR inference).

        At a step whose known prefix ends at row g, the decoder (`mode="n_stream"` with the KV cache) runs the new
        main-stream tokens and k [MASK] slots `P_0@g .. P_{k-1}@(g+k-1)`, the anti-diagonal group g of the
        pretraining pattern; the argmax of each slot gives y_{g+1} .. y_{g+k}, which become the next step's main
        tokens. k = 1 is AR greedy; blocks of k <= `num_streams` are what pretraining trained.

        `block_size` defaults to the generation config's `block_size` (a model fine-tuned with
        `train_mode="semi_nar"` stores its k there), else 4. `max_new_tokens` (or the generation config's) defaults
        to the padded source length (the NAR rule). Rows stop at their first `[SEP]`; the loop stops when all rows
        have. Also honoured: `return_dict_in_generate`, `use_cache` (always cached), `output_scores`,
        `output_logits`, and through Transformers' processors `suppress_tokens`, single-token `bad_words_ids` and
        `begin_suppress_tokens` (first token); `no_repeat_ngram_size` and multi-token `bad_words_ids` are refused
        (a block's tokens are chosen together), as is any other non-default option (`num_beams`, `do_sample`, ...).
        """
        honoured = (*_NAR_CONFIG_FIELDS, "use_cache")  # no_repeat_ngram_size: refused below unless 0
        settings = _nar_settings(self, "semi_nar", generation_options, honoured)
        refuse_sequential_constraints("semi_nar", settings)
        config = self.config
        input_ids = inputs if inputs is not None else input_ids
        block_size = resolve_block_size(self, block_size)
        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("generate(mode='semi_nar') needs input_ids (the source) or encoder_outputs.")
            if attention_mask is None:
                attention_mask = input_ids.ne(config.pad_token_id).long()
            encoder_outputs = self.get_encoder()(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        elif attention_mask is None:
            raise ValueError("With encoder_outputs, pass the source attention_mask too (pads must stay masked).")
        states = encoder_outputs.last_hidden_state
        max_new_tokens = settings.get("max_new_tokens") or states.size(1)
        if not 1 <= max_new_tokens < config.max_position_embeddings:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} must be in [1, {config.max_position_embeddings - 1}] "
                "(the decoder's position table; the [MASK] slots look up pos+1)."
            )
        decoder = self.get_decoder()
        batch_size, device = states.size(0), states.device
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        sequences = torch.full((batch_size, 1), config.decoder_start_token_id, dtype=torch.long, device=device)
        finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
        new_main, produced, num_steps = sequences, 0, 0
        step_scores: list[torch.Tensor] = []  # [B, k, V] per block, with output_scores
        step_logits: list[torch.Tensor] = []
        while produced < max_new_tokens and not bool(finished.all()):
            k = min(block_size, max_new_tokens - produced)
            hidden = decoder(
                input_ids=new_main,
                encoder_hidden_states=states,
                encoder_attention_mask=attention_mask,
                cache=cache,
                mode="n_stream",
                num_streams=k,
                output_attentions=False,
                output_hidden_states=False,
                return_dict=True,
            ).last_hidden_state
            logits = self.lm_head(hidden)  # [B, k, V]
            processed = process_slots(logits, settings, config, first_index=produced + 1)
            tokens = processed.argmax(-1)  # [B, k]
            # After a row's first [SEP] (in an earlier block or earlier in this one) it only gets pads.
            is_eos = tokens.eq(config.eos_token_id).long()
            after_eos = finished[:, None] | ((is_eos.cumsum(1) - is_eos) > 0)
            tokens = tokens.masked_fill(after_eos, config.pad_token_id)
            if settings.get("output_scores"):
                step_scores.append(processed.masked_fill(after_eos[..., None], 0.0))
            if settings.get("output_logits"):
                step_logits.append(logits.masked_fill(after_eos[..., None], 0.0))
            finished |= is_eos.bool().any(1)
            sequences = torch.cat([sequences, tokens], dim=1)
            new_main, produced, num_steps = tokens, produced + k, num_steps + 1
        if not settings.get("return_dict_in_generate"):
            return sequences
        return BangSemiNARGenerateOutput(
            sequences=sequences,
            num_steps=num_steps,
            scores=tuple(torch.cat(step_scores, dim=1).unbind(1)) if step_scores else None,
            logits=tuple(torch.cat(step_logits, dim=1).unbind(1)) if step_logits else None,
        )


__all__ = [
    "BangGenerationConfig",
    "BangGenerationMixin",
    "BangNARGenerateOutput",
    "BangSemiNARGenerateOutput",
    "check_block_size",
    "resolve_block_size",
    "store_block_size",
    "ForcedEosKeepScoreLogitsProcessor",
    "check_generation_options",
    "constrained_argmax",
    "constrained_logits",
    "nar_candidates",
    "nar_cut_and_dedup",
    "nar_scan",
    "nar_scan_slots",
    "nar_step_scores",
    "prefix_processors",
    "process_slots",
    "refuse_sequential_constraints",
    "slot_processors",
]
