"""AR-stream distillation targets ŷ¹..ŷᵏ for SPMD (docs/spmd.md#notation) and sequence-KD NAR training.

`distill_dataset` decodes every source with the AR mode of a BANG model (beam search, by default beam 16 and length
penalty 1.2) and adds the k best hypotheses as a column of token-id lists, each ending with `[SEP]`; by default k
comes from the data: each source keeps the most probable hypotheses holding 95% of the beam's probability
(`keep_probability_mass`), less any that repeats a more probable kept one in half of its slots or more, so a source
with M likely outputs keeps about M, whatever M is. The work is cut into fixed chunks of `batch_size` examples;
each finished chunk is written to `output_dir/kd_chunks/`, so an interrupted run resumes where it stopped. Under
`torchrun` or `accelerate launch`, process r takes chunks r, r+N, r+2N, ...; process 0 merges the chunks in dataset order, saves
the dataset with `save_to_disk(output_dir / "dataset")` and writes `provenance.json` (teacher and settings) next to it.

Example (any number of processes):

    torchrun --nproc_per_node 4 -m my_distill_script  # calls distill_dataset(model, ds, "data/qg_kd")
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from accelerate import PartialState
from tqdm.auto import tqdm

from bang_nar.data import length_sorted_batches

from .collator import KD_TOP_IDS, KD_TOP_LOG_PROBS

CHUNK_DIR = "kd_chunks"
# `bang-nar distill`'s defaults (issue 21): a beam wide enough for many modes, k from the data (docs/spmd.md,
# "k from the data"): the k-best lists follow the number of likely outputs, not a fixed k.
DEFAULT_NUM_BEAMS = 16
DEFAULT_PROBABILITY_MASS = 0.95
# ... and of those, only targets that differ from every more probable one kept in at least half of their slots
# (docs/spmd.md#distinct-modes): a slot-wise mix of two kept modes, or a near-copy of one, is not another mode.
DEFAULT_MIN_DISTANCE = 0.5
PROVENANCE_NAME = "provenance.json"


def _hypotheses_to_ids(sequences: torch.Tensor, eos_token_id: int, pad_token_id: int) -> list[list[int]]:
    """AR `generate` output `[N, L]` (decoder start first) → id lists `y.. [SEP]`: start dropped, cut after the
    first [SEP], pads dropped; a hypothesis stopped by the length limit gets a final [SEP] so the NAR student still
    learns where to stop."""
    rows = []
    for row in sequences[:, 1:].tolist():
        ids: list[int] = []
        for token in row:
            if token == pad_token_id:
                continue
            ids.append(token)
            if token == eos_token_id:
                break
        if not ids or ids[-1] != eos_token_id:
            ids.append(eos_token_id)
        rows.append(ids)
    return rows


def _write_json(path: Path, payload: Any) -> None:
    """Atomic write: a crash never leaves a half-written chunk that a resumed run would trust."""
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(tmp, path)


@torch.no_grad()
def _teacher_forced(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    hypotheses: list[list[int]],
    per_source: int,
    max_rows: int = 256,
    top_n: int | None = None,
) -> tuple[list[float], list[dict[str, list[list[Any]]]] | None]:
    """The teacher-forced AR pass over every hypothesis: `(log p(ŷ | x) per hypothesis, top-n per hypothesis)`.

    log p(ŷ | x) is the sum of its token log-probs, [SEP] included: exact whatever the length penalty and the beam
    search's own score bookkeeping. Hypotheses go through in slices of about `max_rows` (`per_source` of them per
    source), so the `[rows, T, vocab]` logits stay bounded with a large vocabulary.

    With `top_n`, each hypothesis also gets the teacher's `top_n` most probable tokens at each of its positions
    (`{"ids": [|ŷ|][n], "log_probs": [|ŷ|][n]}`, log-probs of the full vocabulary, most probable first, rounded to
    float16 precision): the stored sparse KD target of docs/spmd.md#stored-kd. Same slicing as without it, so the
    `[rows, T, vocab]` logits stay bounded."""
    length = max(len(h) for h in hypotheses)
    labels = torch.full((len(hypotheses), length), -100, dtype=torch.long)
    for i, ids in enumerate(hypotheses):
        labels[i, : len(ids)] = torch.as_tensor(ids)
    labels = labels.to(model.device)
    sources_per_slice = max(1, max_rows // per_source)
    scores: list[torch.Tensor] = []
    tops: list[dict[str, list[list[Any]]]] = []
    for start in range(0, input_ids.size(0), sources_per_slice):
        rows = slice(start * per_source, (start + sources_per_slice) * per_source)
        part = labels[rows]
        logits = model(
            input_ids=input_ids[start : start + sources_per_slice].repeat_interleave(per_source, 0),
            attention_mask=attention_mask[start : start + sources_per_slice].repeat_interleave(per_source, 0),
            decoder_input_ids=model.prepare_decoder_input_ids_from_labels(part),
            mode="ar",
            use_cache=False,
        ).logits
        log_probs = logits.float().log_softmax(-1)  # [rows, T, V]
        token = log_probs.gather(-1, part.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # [rows, T]
        scores.append(token.masked_fill(part.eq(-100), 0.0).sum(-1))
        if top_n is not None:
            values, indices = log_probs.topk(top_n, dim=-1)  # [rows, T, n], most probable first
            # float16 precision: half the bytes of float32 in the dataset (docs/spmd.md#stored-kd)
            values = values.to(torch.float16).cpu()
            indices = indices.cpu()
            for row, n_tokens in enumerate(part.ne(-100).sum(-1).tolist()):
                tops.append({
                    "ids": indices[row, :n_tokens].tolist(),
                    "log_probs": values[row, :n_tokens].tolist(),
                })  # fmt: skip
    return torch.cat(scores).tolist(), tops if top_n is not None else None


def slot_distance(a: Sequence[int], b: Sequence[int]) -> float:
    """The share of NAR slots in which two targets differ: |{t < n : a_t ≠ b_t}| / n with n = max(|a|, |b|), a slot
    that only one of them has counting as different (docs/spmd.md#distinct-modes)."""
    n = max(len(a), len(b))
    return sum(t >= len(a) or t >= len(b) or a[t] != b[t] for t in range(n)) / n if n else 0.0


def keep_probability_mass(
    hypotheses: list[list[int]], log_probs: list[float], mass: float | None, min_distance: float | None = None
) -> list[list[int]]:
    """The data-driven k (docs/spmd.md, "k from the data"): of one source's beam, in beam order, the distinct
    hypotheses that hold `mass` of the beam's probability, less the ones within `min_distance` of a more probable
    kept one.

    With p_j = p(ŷʲ | x) over the B distinct hypotheses, sorted so that p_(1) ≥ p_(2) ≥ ..., k is the smallest
    number with Σ_{j ≤ k} p_(j) ≥ mass · Σ_{j ≤ B} p_j (`mass=None`: k = B). A source with M equally likely outputs
    in the beam keeps all M (k follows M); a peaked teacher keeps one. Then, in order of probability, ŷ_(j) stays
    only if `slot_distance(ŷ_(j), ŷ_(i)) ≥ min_distance` for every ŷ_(i) kept before it: a slot-wise mix of two
    kept modes, or a near-copy of one, is dropped (`None`: nothing dropped).
    """
    distinct: dict[tuple[int, ...], float] = {}
    for ids, log_prob in zip(hypotheses, log_probs):
        distinct.setdefault(tuple(ids), log_prob)
    keys = list(distinct)
    scores = torch.tensor([distinct[key] for key in keys], dtype=torch.float64)
    probs = (scores - scores.max()).exp()  # relative to the best: the beam's total cancels out
    order = probs.argsort(descending=True).tolist()
    k = len(keys) if mass is None else int((probs[order].cumsum(0) < mass * probs.sum()).sum()) + 1
    kept: list[int] = []
    for i in order[:k]:
        if min_distance is None or all(slot_distance(keys[i], keys[j]) >= min_distance for j in kept):
            kept.append(i)
    return [list(keys[i]) for i in sorted(kept)]


@torch.no_grad()
def _distil_chunk(
    model: Any, sources: list[list[int]], settings: dict[str, Any], generation_kwargs: dict[str, Any]
) -> list[Any]:
    """Beam-search one chunk of sources; returns k id lists per source, or, with `kd_top_n`, per source
    `{"targets": [k][|ŷ|], "top_ids": [k][|ŷ|][n], "top_log_probs": [k][|ŷ|][n]}`."""
    config = model.config
    length = max(len(s) for s in sources)
    input_ids = torch.full((len(sources), length), config.pad_token_id, dtype=torch.long)
    for i, source in enumerate(sources):
        input_ids[i, : len(source)] = torch.as_tensor(source)
    attention_mask = input_ids.ne(config.pad_token_id).long()
    k = settings["num_return_sequences"]
    sequences = model.generate(
        input_ids=input_ids.to(model.device),
        attention_mask=attention_mask.to(model.device),
        mode="ar",
        num_beams=settings["num_beams"],
        length_penalty=settings["length_penalty"],
        num_return_sequences=k,
        max_new_tokens=settings["max_new_tokens"],
        **generation_kwargs,
    )
    ids = _hypotheses_to_ids(sequences.cpu(), config.eos_token_id, config.pad_token_id)
    per_source = [ids[i * k : (i + 1) * k] for i in range(len(sources))]
    mass, min_distance = settings.get("probability_mass"), settings.get("min_distance")
    top_n = settings.get("kd_top_n")
    if mass is None and min_distance is None and top_n is None:
        return per_source
    # One teacher-forced pass gives both the sequence log-probs (k from the data) and the top-n (stored KD).
    log_probs, tops = _teacher_forced(
        model, input_ids.to(model.device), attention_mask.to(model.device), ids, k, top_n=top_n
    )
    kept = per_source
    if mass is not None or min_distance is not None:
        kept = [
            keep_probability_mass(h, log_probs[i * k : (i + 1) * k], mass, min_distance)
            for i, h in enumerate(per_source)
        ]
    if tops is None:
        return kept
    result = []
    for i, targets in enumerate(kept):
        # A repeated hypothesis has the same teacher-forced top-n: the first occurrence stands for it.
        first: dict[tuple[int, ...], dict[str, Any]] = {}
        for ids_j, top in zip(per_source[i], tops[i * k : (i + 1) * k]):
            first.setdefault(tuple(ids_j), top)
        result.append({
            "targets": targets,
            "top_ids": [first[tuple(t)]["ids"] for t in targets],
            "top_log_probs": [first[tuple(t)]["log_probs"] for t in targets],
        })  # fmt: skip
    return result


def distill_dataset(
    model: Any,
    dataset: datasets.Dataset,
    output_dir: str | os.PathLike,
    *,
    num_beams: int = DEFAULT_NUM_BEAMS,
    length_penalty: float = 1.2,
    num_return_sequences: int | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    probability_mass: float | None = DEFAULT_PROBABILITY_MASS,
    min_distance: float | None = DEFAULT_MIN_DISTANCE,
    kd_top_n: int | None = None,
    source_column: str = "input_ids",
    kd_column: str = "kd_labels",
    teacher_name: str | None = None,
    tokenizer: Any = None,
    generation_kwargs: dict[str, Any] | None = None,
    resume: bool = True,
    keep_chunks: bool = False,
    show_progress: bool = True,
) -> datasets.Dataset:
    """Add the k-best AR-stream targets of `model` to `dataset` as column `kd_column`; save with provenance.

    Args:
        model: an AR-fine-tuned `BangForConditionalGeneration` (the teacher); decoded with `generate(mode="ar")`.
        dataset: a `datasets.Dataset` with tokenized sources in `source_column` (each ending with `[SEP]`).
        output_dir: the result goes to `output_dir/dataset` (`save_to_disk`), `provenance.json` next to it, chunks
            to `kd_chunks/` (removed after the merge unless `keep_chunks`).
        num_beams, length_penalty, num_return_sequences (k), max_new_tokens: beam-search settings. k defaults to
            the whole beam: the k-best lists let the SPMD student pick, per sample, the candidate of the mode it
            already follows (Eq. 3 `min_loss`), which is what removes multi-modality (1-best keeps the teacher's
            own mode spread).
        batch_size: examples per chunk (one `generate` call, one resumable unit).
        probability_mass: k from the data (`keep_probability_mass`): of the `num_return_sequences` best, keep per
            source the distinct hypotheses holding this share of their probability (so sources keep different
            numbers of targets, at most `num_return_sequences`). None: keep all k. Costs one teacher-forced AR
            pass over the hypotheses.
        min_distance: distinct modes (`keep_probability_mass`): drop a target that agrees with a more probable kept
            one in more than `1 - min_distance` of its slots (a slot-wise mix or near-copy). None: keep them.
        kd_top_n: the stored sparse KD target (docs/spmd.md#stored-kd): for every kept target, the teacher's
            `kd_top_n` most probable tokens and their log-probs at each target position, from the teacher-forced
            AR pass (run for this even when `probability_mass` is None), as the columns `kd_top_ids` (int32) and
            `kd_top_log_probs` (float16), `[k][|ŷ|][n]` per source, aligned with `kd_column`. `bang-nar train
            --kd_target stored` then needs no teacher pass. None (default): no such columns.
        teacher_name: recorded in the provenance; default `model.config._name_or_path`.
        tokenizer: if given, also adds `<kd_column>_text` with the decoded hypotheses for inspection.
        generation_kwargs: extra `generate` options (e.g. `original_compatible=True`), recorded too.
        resume: reuse finished chunks of an earlier run with identical settings (else refuse to mix runs).
        keep_chunks: keep `kd_chunks/` after the merge.

    Returns:
        The merged dataset (the same on every process), read back from `output_dir`.
    """
    if source_column not in dataset.column_names:
        raise ValueError(f"dataset has no column {source_column!r}; tokenize the sources first (e.g. into input_ids).")
    if kd_column in dataset.column_names:
        raise ValueError(f"dataset already has a {kd_column!r} column; remove it or choose another kd_column.")
    num_return_sequences = num_beams if num_return_sequences is None else num_return_sequences
    if num_return_sequences > num_beams:
        raise ValueError(f"num_return_sequences ({num_return_sequences}) cannot exceed num_beams ({num_beams}).")
    if probability_mass is not None and not 0.0 < probability_mass <= 1.0:
        raise ValueError(
            f"probability_mass must be in (0, 1] (or None to keep every hypothesis), got {probability_mass}."
        )
    if min_distance is not None and not 0.0 <= min_distance <= 1.0:
        raise ValueError(f"min_distance must be in [0, 1] (or None to keep near-copies), got {min_distance}.")
    if kd_top_n is not None:
        vocab_size = model.config.vocab_size
        if not 1 <= kd_top_n <= vocab_size:
            raise ValueError(
                f"kd_top_n must be in [1, {vocab_size}] (the teacher's vocabulary size), or None to store no top-n; "
                f"got {kd_top_n}."
            )
        taken = [c for c in (KD_TOP_IDS, KD_TOP_LOG_PROBS) if c in dataset.column_names]
        if taken:
            raise ValueError(f"dataset already has the column(s) {taken}; remove them to store a new top-n.")
    state = PartialState()
    output_dir = Path(output_dir)
    chunk_dir = output_dir / CHUNK_DIR
    generation_kwargs = dict(generation_kwargs or {})
    settings = {
        "teacher": teacher_name or getattr(model.config, "_name_or_path", "") or "unnamed",
        "mode": "ar",
        "num_beams": num_beams,
        "length_penalty": length_penalty,
        "num_return_sequences": num_return_sequences,
        "probability_mass": probability_mass,
        "min_distance": min_distance,
        "kd_top_n": kd_top_n,
        "max_new_tokens": max_new_tokens,
        "generation_kwargs": generation_kwargs,
        "source_column": source_column,
        "kd_column": kd_column,
        "batch_size": batch_size,
        "num_examples": len(dataset),
        "length_sorted": True,  # chunk c holds the c-th batch of length-sorted sources (not rows c·b ... c·b + b - 1)
        # What the chunks were computed from, not just its names: a retrained teacher at the same path or an edited
        # data file changes these, so its chunks are never reused for the other (issue 24).
        "sources_sha256": sources_fingerprint(dataset, source_column),
        "teacher_weights_sha256": weights_fingerprint(model),
    }
    if state.is_main_process:
        _prepare_chunk_dir(chunk_dir, settings, resume)
    state.wait_for_everyone()

    model = model.to(state.device).eval()
    # Chunks of similar source length pad little; the merge below puts every hypothesis back at its row.
    all_sources = dataset[source_column]
    chunks = length_sorted_batches([len(source) for source in all_sources], batch_size)
    num_chunks = len(chunks)
    mine = range(state.process_index, num_chunks, state.num_processes)
    show = show_progress and state.is_local_main_process
    progress = tqdm(mine, desc=f"distil (rank {state.process_index})", disable=not show)
    for chunk in progress:
        path = chunk_dir / f"{chunk:08d}.json"
        if path.exists():
            continue
        sources = [all_sources[i] for i in chunks[chunk]]
        _write_json(path, _distil_chunk(model, sources, settings, generation_kwargs))
    state.wait_for_everyone()

    if state.is_main_process:
        entries: list[Any] = [None] * len(dataset)
        for c, rows in enumerate(chunks):
            for i, h in zip(rows, json.loads((chunk_dir / f"{c:08d}.json").read_text())):
                entries[i] = h
        hypotheses = [e["targets"] for e in entries] if kd_top_n is not None else entries
        merged = dataset.add_column(kd_column, hypotheses)
        if kd_top_n is not None:  # int32 ids and float16 log-probs: 6 bytes per stored entry
            merged = merged.add_column(KD_TOP_IDS, [e["top_ids"] for e in entries], feature=_nested("int32"))
            merged = merged.add_column(
                KD_TOP_LOG_PROBS, [e["top_log_probs"] for e in entries], feature=_nested("float16")
            )
        if tokenizer is not None:
            texts = [tokenizer.batch_decode(h, skip_special_tokens=True) for h in hypotheses]
            merged = merged.add_column(f"{kd_column}_text", texts)
        merged.save_to_disk(str(output_dir / "dataset"))
        provenance = {
            **settings,
            "num_processes": state.num_processes,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "note": "AR-stream targets for SPMD (bang-nar's reconstruction, docs/spmd.md)",
        }
        _write_json(output_dir / PROVENANCE_NAME, provenance)
        if not keep_chunks:
            for file in chunk_dir.iterdir():
                file.unlink()
            chunk_dir.rmdir()
    state.wait_for_everyone()
    return datasets.load_from_disk(str(output_dir / "dataset"))


def _nested(dtype: str) -> datasets.List:
    """The feature of a stored top-n column: `[k][|ŷ|][n]` values of `dtype` per source."""
    return datasets.List(datasets.List(datasets.List(datasets.Value(dtype))))


def load_provenance(output_dir: str | os.PathLike) -> dict[str, Any]:
    """The provenance written next to a distilled dataset (teacher, beam settings, versions)."""
    return json.loads((Path(output_dir) / PROVENANCE_NAME).read_text(encoding="utf-8"))


def sources_fingerprint(dataset: datasets.Dataset, source_column: str) -> str:
    """sha256 of the dataset's `source_column`, in order (the content, independent of cache files and mtimes)."""
    digest = hashlib.sha256()
    for batch in dataset.select_columns([source_column]).iter(batch_size=10_000):
        digest.update(json.dumps(batch[source_column]).encode())
    return digest.hexdigest()


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the model's weights (names, dtypes, shapes and bytes of its state dict), read once per run."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().contiguous().cpu().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class StaleChunksError(ValueError):
    """`kd_chunks/` holds chunks of another teacher, other data or other settings; resuming would mix them."""


def _prepare_chunk_dir(chunk_dir: Path, settings: dict[str, Any], resume: bool) -> None:
    """Create the chunk folder; on resume, refuse chunks made with other settings (they would mix teachers)."""
    settings_path = chunk_dir / "settings.json"
    if chunk_dir.exists() and settings_path.exists():
        previous = json.loads(settings_path.read_text(encoding="utf-8"))
        if not resume:
            for file in chunk_dir.glob("*.json"):
                file.unlink()
        elif previous != settings:
            changed = sorted(key for key in {*previous, *settings} if previous.get(key) != settings.get(key))
            raise StaleChunksError(
                f"{chunk_dir} holds chunks made with another {', '.join(changed)}; pass resume=False (`bang-nar "
                "distill --no_resume`) to start over or use another output_dir."
            )
    chunk_dir.mkdir(parents=True, exist_ok=True)
    _write_json(settings_path, settings)
