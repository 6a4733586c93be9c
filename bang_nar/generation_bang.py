"""BANG decoding beyond `GenerationMixin`: the one-pass NAR modes and the original beam-search rules.

- `mode="nar"`: one encoder and one decoder pass, an argmax per slot (docs/decoding.md#original), optionally constrained
  (`constrained_argmax`) or rescored over candidates by the AR stream (`nar_candidates`);
- `mode="nar_verify"`: a NAR draft verified by the AR stream (token-for-token AR greedy, fewer AR passes);
- `mode="ar"`: `GenerationMixin.generate`, plus `original_compatible` (fairseq 0.9 beam-search rules through
  `ForcedEosKeepScoreLogitsProcessor`).

NAR modes honour a fixed set of generation options and refuse every other non-default one with a ValueError that
names it (`check_generation_options`), so no option is silently ignored.

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
    kept: list[int] = []
    for token in row:
        if token == sep_token_id:
            if kept:
                break
            continue
        if token == cls_token_id or (dedup and kept and token == kept[-1]):
            continue
        kept.append(token)
    return kept


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


def constrained_argmax(
    logits: torch.Tensor, no_repeat_ngram_size: int = 0, suppress_repeats: bool = False
) -> torch.Tensor:
    """Left-to-right argmax over NAR logits [B, L, V] that never emits a banned token (no model pass).

    Banned at slot t: the token chosen at t-1 (`suppress_repeats`), and every token that would complete an n-gram
    already emitted in the row (`no_repeat_ngram_size` = n, as HF's `NoRepeatNGramLogitsProcessor`). Without
    options this is the plain per-slot argmax of the original generator.
    """
    if not no_repeat_ngram_size and not suppress_repeats:
        return logits.argmax(-1)
    batch_size, length, _ = logits.shape
    n = no_repeat_ngram_size
    seen: list[dict[tuple[int, ...], set[int]]] = [{} for _ in range(batch_size)]
    tokens = torch.zeros(batch_size, length, dtype=torch.long, device=logits.device)
    history: list[list[int]] = [[] for _ in range(batch_size)]
    for t in range(length):
        scores = logits[:, t].clone()  # [B, V]
        for b in range(batch_size):
            banned = set()
            if suppress_repeats and history[b]:
                banned.add(history[b][-1])
            if n and len(history[b]) >= n - 1:
                banned |= seen[b].get(tuple(history[b][len(history[b]) - n + 1 :]), set())
            if banned:
                scores[b, list(banned)] = -math.inf
        chosen = scores.argmax(-1)
        tokens[:, t] = chosen
        for b, token in enumerate(chosen.tolist()):
            history[b].append(token)
            if n and len(history[b]) >= n:
                ngram = tuple(history[b][-n:])
                seen[b].setdefault(ngram[:-1], set()).add(ngram[-1])
    return tokens


def _next_index(row: list[int], token: int, start: int, last: int) -> int:
    """Index of the first `token` in `row[start:last + 1]`, or `last` when there is none."""
    for index in range(start, last + 1):
        if row[index] == token:
            return index
    return last


def nar_candidates(
    logits: torch.Tensor, tokens: torch.Tensor, num_candidates: int, sep_token_id: int
) -> torch.Tensor:
    """Raw NAR candidates [B, K, L] around `tokens` (the argmax, first): length variants and substitutions.

    - length variants: cut at each of the slots where `[SEP]` is most probable (earlier `[SEP]`s are replaced by
      their best other token, so the candidate really ends there);
    - substitutions: the least confident slot before the argmax cut takes its second-best token.
    Half of the K-1 extra candidates (rounded up) are length variants. Rows may repeat when a row has fewer
    distinct variants; the rescoring tie-break keeps the first, i.e. the plainer candidate.
    """
    log_probs = logits.float().log_softmax(-1)  # [B, L, V]
    batch_size, length = tokens.shape
    non_sep = log_probs.clone()
    non_sep[..., sep_token_id] = -math.inf
    best_other, second = non_sep.topk(2, dim=-1).indices.unbind(-1)  # [B, L] each
    num_extra = num_candidates - 1
    num_length = min((num_extra + 1) // 2, length)
    candidates = [tokens]
    sep_slots = log_probs[..., sep_token_id].topk(num_length, dim=-1).indices  # [B, n_len]
    slot_index = torch.arange(length, device=tokens.device)
    for j in range(num_length):
        cut = sep_slots[:, j : j + 1]  # [B, 1]
        variant = torch.where(tokens.eq(sep_token_id) & (slot_index < cut), best_other, tokens)
        candidates.append(torch.where(slot_index == cut, torch.full_like(tokens, sep_token_id), variant))
    num_subs = num_extra - num_length
    if num_subs > 0:
        is_sep = tokens.eq(sep_token_id).int()
        before_cut = (is_sep.cumsum(-1) - is_sep) == 0  # slots before the first [SEP]
        confidence = log_probs.max(-1).values.masked_fill(~before_cut, math.inf)
        weakest = confidence.topk(min(num_subs, length), dim=-1, largest=False).indices  # [B, n_sub]
        for j in range(num_subs):
            slot = weakest[:, min(j, weakest.size(1) - 1) : min(j, weakest.size(1) - 1) + 1]
            replaced = torch.where(tokens.gather(1, slot).eq(best_other.gather(1, slot)), second.gather(1, slot), best_other.gather(1, slot))
            candidates.append(torch.where(slot_index == slot, replaced, tokens))
    return torch.stack(candidates, dim=1)


@dataclass
class BangNARGenerateOutput(ModelOutput):
    """`generate(mode="nar", return_dict_in_generate=True)` output.

    - `sequences` [B, L']: post-processed ids (first pass of the original post-processing; raw when `nar_postprocess=False`);
    - `raw_sequences` [B, L]: the argmax at every decoder slot, as the original generator returns it;
    - `scores` [B, L]: the raw max logit per slot (the original `positional_scores`, not a log-prob);
    - `logits` [B, L, V]: full logits, only with `output_logits=True`;
    - `candidates` [B, K, L''] and `candidate_scores` [B, K]: with `num_candidates` > 1, every post-processed
      candidate and its length-normalised AR-stream log-probability (the best one is `sequences`);
    - `sequences_scores` [B·n]: with `num_candidates`, the AR-stream score of each returned sequence (n =
      `num_return_sequences`; rows of one source are adjacent, best first, as in HF beam search);
    - `ar_passes` [B]: `mode="nar_verify"` only, AR-stream passes each row needed (greedy AR needs one per token).
    """

    sequences: torch.Tensor | None = None
    raw_sequences: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    logits: torch.Tensor | None = None
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
    "logits_processor": None, "stopping_criteria": None, "prefix_allowed_tokens_fn": None, "synced_gpus": False,
    "assistant_model": None, "streamer": None, "negative_prompt_ids": None, "negative_prompt_attention_mask": None,
    "custom_generate": None, "use_model_defaults": None,
}
_HINTS = {
    "num_beams": "NAR modes decode every position in one argmax pass; use num_candidates for NAR rescoring, or "
                 "mode='ar' for beam search",
    "do_sample": "NAR modes take the argmax of every slot; use mode='ar' for sampling",
    "max_length": "NAR modes count decoder slots without the start token; pass max_new_tokens instead",
    "streamer": "NAR modes produce every token at once; use mode='ar' to stream",
    "num_return_sequences": "it needs mode='nar' with num_candidates >= num_return_sequences",
}
# Fields of the model's own generation_config that the one-pass modes use; its other fields (beam size, length
# penalty, ...) are AR settings (converted models store the original AR beam search there) and do not apply.
_NAR_CONFIG_FIELDS = ("max_new_tokens", "no_repeat_ngram_size", "return_dict_in_generate", "output_logits")


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
    settings.update({name: value for name, value in explicit.items() if name in honoured})
    check_generation_options(mode, {k: v for k, v in explicit.items() if k not in honoured}, model.config)
    return settings


# ---------------------------------------------------------------------------------------------------------------
# The generation mixin of BangForConditionalGeneration
# ---------------------------------------------------------------------------------------------------------------


class BangGenerationMixin(GenerationMixin):
    """`generate(mode=...)` for BANG; the network itself is `modeling_bang.BangForConditionalGeneration.forward`."""

    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, *args, mode: str | None = None, **kwargs):
        """Decode with `mode` = `"ar"` (GenerationMixin beam search / greedy), `"nar"` (one pass), `"nar_verify"`
        (NAR draft verified by the AR stream: exactly AR greedy, in fewer AR passes) or `"semi_nar"` (k tokens per
        step, `block_size=k`; a reconstruction, `bang_nar/semi_nar.py`).

        `mode` defaults to `config.generation_mode`. Options: `_generate_ar`, `_generate_nar`, `_generate_nar_verify`.
        """
        mode = mode or self.config.generation_mode
        if mode == "ar":
            return self._generate_ar(inputs, *args, **kwargs)
        if mode == "nar":
            return self._generate_nar(inputs, **kwargs)
        if mode == "nar_verify":
            return self._generate_nar_verify(inputs, **kwargs)
        if mode == "semi_nar":  # reconstruction (docs/pretraining.md#semi-nar), in the bang-nar package only
            try:  # lazy, and inside `try` so trust_remote_code's import check does not require bang_nar
                from bang_nar.semi_nar import generate_semi_nar
            except ImportError as error:
                raise ImportError("generate(mode='semi_nar') needs the bang-nar package installed.") from error
            return generate_semi_nar(self, inputs, **kwargs)
        raise ValueError(f"mode must be one of {GENERATION_MODES}, got {mode!r}.")

    def _generate_ar(self, inputs: torch.Tensor | None = None, *args, original_compatible: bool | None = None, **kwargs):
        """AR decoding through `GenerationMixin.generate` with the KV cache (docs/decoding.md#original).

        `original_compatible=True` reproduces fairseq 0.9's beam search (docs/decoding.md#options): it stops a sentence
        once `num_beams` hypotheses finished (`early_stopping=True`), bans `[SEP]` at the first step
        (`min_new_tokens=1`), never emits `[PAD]`, and forces `[SEP]` as the last allowed token (`max_new_tokens`,
        else `max_length`) while keeping its log-prob. fairseq's `max_len_b=M` corresponds to `max_new_tokens=M + 1`
        (`max_length=M + 2`). It defaults to the generation config's `original_compatible` (converted models set it).
        """
        generation_config = kwargs.get("generation_config") or self.generation_config
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
            kwargs.setdefault("suppress_tokens", [self.config.pad_token_id])
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
    ) -> tuple[BaseModelOutput, torch.Tensor, int]:
        """Shared set-up of the one-pass modes: encoder outputs, source mask and the number of decoder slots."""
        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("generate(mode='nar') needs input_ids (the source) or encoder_outputs.")
            encoder_outputs = self.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
        if attention_mask is None:
            if input_ids is None:
                raise ValueError("With encoder_outputs, pass the source attention_mask too (pads must stay masked).")
            attention_mask = input_ids.ne(self.config.pad_token_id).long()
        num_slots = max_new_tokens if max_new_tokens is not None else encoder_outputs.last_hidden_state.size(1)
        if num_slots < 1:
            raise ValueError(f"max_new_tokens must be >= 1 for NAR decoding, got {num_slots}.")
        return encoder_outputs, attention_mask, num_slots

    def _nar_logits(self, encoder_outputs: BaseModelOutput, attention_mask: torch.Tensor, num_slots: int) -> torch.Tensor:
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
        num_candidates: int = 1,
        suppress_repeats: bool = False,
        input_ids: torch.Tensor | None = None,
        **generation_options,
    ) -> torch.Tensor | BangNARGenerateOutput:
        """One encoder pass, one decoder pass, argmax per slot (docs/decoding.md#original).

        - The decoder has `max_new_tokens` slots, or the padded source length when None (the original rule). NAR
          attention is causal, so slot t is the same whatever the number of slots (docs/architecture.md#nar-mode).
        - `nar_postprocess=True` (default) cuts at the first non-leading `[SEP]` and drops `[CLS]` and consecutive
          repeats on ids (`nar_cut_and_dedup`); False returns the raw argmax of every slot.
        - `suppress_repeats` / `no_repeat_ngram_size` constrain the argmax itself (`constrained_argmax`).
        - `num_candidates` = K > 1 builds K candidates (`nar_candidates`: length variants and substitutions) and
          keeps the one with the best length-normalised AR-stream log-prob, scored in one batched teacher-forced
          pass (cost: one AR pass over K·B rows). `num_return_sequences` = n <= K returns the n best per source.
        Also honoured: `return_dict_in_generate`, `output_logits`, `output_scores` (the slot scores are always in the
        dict), `use_cache` (no cache in one pass). Any other non-default option raises ValueError naming it; from
        the model's generation_config only `max_new_tokens`, `no_repeat_ngram_size`, `return_dict_in_generate` and
        `output_logits` are used (its beam settings are AR settings).
        """
        honoured = ("max_new_tokens", "no_repeat_ngram_size", "num_return_sequences", "return_dict_in_generate",
                    "output_logits", "output_scores", "use_cache")
        settings = _nar_settings(self, "nar", generation_options, honoured)
        num_return = settings.get("num_return_sequences") or 1
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}.")
        if num_return > num_candidates:
            raise ValueError(
                f"generate(mode='nar') does not support num_return_sequences={num_return} with "
                f"num_candidates={num_candidates}: pass num_candidates >= {num_return} (NAR returns candidates)."
            )
        input_ids = inputs if inputs is not None else input_ids
        encoder_outputs, attention_mask, num_slots = self._encode_for_nar(
            input_ids, attention_mask, encoder_outputs, settings.get("max_new_tokens")
        )
        logits = self._nar_logits(encoder_outputs, attention_mask, num_slots)
        scores = logits.max(dim=-1).values  # [B, L], the original `positional_scores`
        raw = constrained_argmax(logits, settings.get("no_repeat_ngram_size") or 0, suppress_repeats)

        config = self.config
        candidates = candidate_scores = sequences_scores = None
        if num_candidates > 1:
            raw_candidates = nar_candidates(logits, raw, num_candidates, config.eos_token_id)  # [B, K, L]
            # Candidates are always cut at [SEP] (they are scored as targets); repeats are dropped only with
            # nar_postprocess, so a legitimately repeated word stays possible without it.
            flat = nar_cut_and_dedup(raw_candidates.flatten(0, 1), config.eos_token_id, config.bos_token_id,
                                     config.pad_token_id, dedup=nar_postprocess)
            candidates = flat.view(raw.size(0), num_candidates, -1)
            candidate_scores = self._ar_sequence_scores(encoder_outputs, attention_mask, candidates)
            # Stable sort: among equal scores the earlier (plainer) candidate comes first.
            order = candidate_scores.argsort(dim=-1, descending=True, stable=True)[:, :num_return]  # [B, n]
            rows = torch.arange(raw.size(0), device=raw.device)[:, None]
            sequences = candidates[rows, order].flatten(0, 1)  # [B·n, L'']
            sequences_scores = candidate_scores[rows, order].flatten()
        elif nar_postprocess:
            sequences = nar_cut_and_dedup(raw, config.eos_token_id, config.bos_token_id, config.pad_token_id)
        else:
            sequences = raw
        if not settings.get("return_dict_in_generate"):
            return sequences
        return BangNARGenerateOutput(
            sequences=sequences,
            raw_sequences=raw,
            scores=scores,
            logits=logits if settings.get("output_logits") else None,
            candidates=candidates,
            candidate_scores=candidate_scores,
            sequences_scores=sequences_scores,
        )

    def _generate_nar_verify(
        self,
        inputs: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | None = None,
        input_ids: torch.Tensor | None = None,
        **generation_options,
    ) -> torch.Tensor | BangNARGenerateOutput:
        """NAR draft, AR verification: token-for-token AR greedy decoding (`max_new_tokens` = draft length) with
        far fewer AR passes when the streams agree.

        One NAR pass drafts every slot. Each round runs the AR stream teacher-forced over the unconfirmed rest
        (the KV cache holds the confirmed prefix), accepts the longest prefix where the AR argmax equals the draft,
        and appends the AR token at the first disagreement. The NAR stream does not see the prefix, so the draft
        stays valid after a correction. Returns `[SEP]`-started ids like `mode="ar"`, pads after `[SEP]`.
        Honoured options: `max_new_tokens`, `return_dict_in_generate`, `use_cache`; others raise ValueError.
        """
        honoured = ("max_new_tokens", "return_dict_in_generate", "use_cache", "output_scores")
        settings = _nar_settings(self, "nar_verify", generation_options, honoured)
        input_ids = inputs if inputs is not None else input_ids
        encoder_outputs, attention_mask, num_slots = self._encode_for_nar(
            input_ids, attention_mask, encoder_outputs, settings.get("max_new_tokens")
        )
        config = self.config
        draft = self._nar_logits(encoder_outputs, attention_mask, num_slots).argmax(-1)  # [B, L]
        batch_size = draft.size(0)
        start = draft.new_full((batch_size, 1), config.decoder_start_token_id)
        rows = torch.cat([start, draft], dim=1).tolist()  # index k >= 1 holds output token k
        confirmed = [1] * batch_size  # indices < confirmed[b] are final
        ar_passes = torch.zeros(batch_size, dtype=torch.long)
        active = list(range(batch_size))  # rows still decoding; finished rows leave the batch and its cache
        states, mask = encoder_outputs.last_hidden_state, attention_mask
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        cached = 0
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
            predicted = logits.argmax(-1).tolist()  # predicted[i][j]: AR token for index cached + j + 1
            still_active = []
            for i, b in enumerate(active):
                ar_passes[b] += 1
                k = confirmed[b]
                while True:
                    if k - 1 - cached >= len(predicted[i]):  # verified window exhausted: next round
                        still_active.append(i)
                        break
                    token = predicted[i][k - 1 - cached]
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
        return BangNARGenerateOutput(sequences=sequences, raw_sequences=draft, ar_passes=ar_passes)


__all__ = [
    "BangGenerationMixin",
    "BangNARGenerateOutput",
    "ForcedEosKeepScoreLogitsProcessor",
    "check_generation_options",
    "constrained_argmax",
    "nar_candidates",
    "nar_cut_and_dedup",
    "nar_scan",
]
