"""`SPMDTrainingArguments`: the knobs of docs/spmd.md (our reconstruction of SPMD) plus BANG's AR/NAR mode policy.

Every field has a default and a help string, so the same dataclass serves Python callers and `HfArgumentParser`.
`spmd_preset` fills the rows of the ablation table of docs/spmd.md; any field set explicitly wins over the preset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from transformers import Seq2SeqTrainingArguments

TARGET_SOURCES = ("gold", "ar_kd")

# The presets table of docs/spmd.md: target_sources, α, pace_mode, β (self teacher).
SPMD_PRESETS: dict[str, dict[str, object]] = {
    "bang_nar": {"target_sources": ["gold"], "kd_alpha": 0.0, "pace_mode": "none", "ar_loss_weight": 0.0},
    "seq_kd": {"target_sources": ["ar_kd"], "kd_alpha": 0.0, "pace_mode": "none", "ar_loss_weight": 0.0},
    "spmd": {"target_sources": ["ar_kd"], "kd_alpha": 0.5, "pace_mode": "percentile", "ar_loss_weight": 0.5},
    # The method of docs/spmd.md as first written (gold + AR-stream targets in C_i).
    "spmd_reconstruction": {
        "target_sources": ["gold", "ar_kd"],
        "kd_alpha": 0.5,
        "pace_mode": "percentile",
        "ar_loss_weight": 0.5,
    },
}


def _check_range(name: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    below = value <= low if low_open else value < low
    if below or value > high:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value}.")


@dataclass
class SPMDTrainingArguments(Seq2SeqTrainingArguments):
    """Seq2SeqTrainingArguments plus SPMD (docs/spmd.md, a reconstruction from the paper's abstract).

    - `spmd_preset`: row of the ablation table (`bang_nar`, `seq_kd`, `spmd`) filling the four fields below left None.
    - `train_mode` / `nar_ratio`: BANG's per-batch mode policy (docs/architecture.md#loss), drawn from a seeded generator.
    - `target_sources` (C_i), `mix_strategy` and `p_mix` (Eq. 3), `kd_alpha` (α, Eq. 4), `kd_temperature` (τ, Eq. 2),
      `ar_loss_weight` (β, Eq. 7), `ar_loss_target` (y or m_i in Eq. 7), `teacher` ("self" or a frozen checkpoint
      path, for q_AR), `kd_target` (q_AR from a teacher pass, or the teacher's top-n stored in the data:
      docs/spmd.md#stored-kd), `teacher_dropout` (the self-teacher in training or eval mode), `pace_mode` (Eq. 6),
      `pace_signal` (Eq. 5), `pace_q0` (q0), `pace_warmup_ratio`, `pace_lambda0` (λ0, default calibrated on the first
      batch), `pace_growth` (μ).
    - `semi_nar_block_size`, `semi_nar_targets`: k of `train_mode="semi_nar"` (n = k streams, `target_idx = t mod
      k`) and its targets (gold, or the distilled 1-best).
    - `spmd_debug`: host-side checks each step (device syncs; off by default).
    - `label_smoothing_factor` (ε of Eq. 1): the standard Trainer field, default raised to 0.1 (spmd.md Eq. 1 and
      BANG's `--label-smoothing 0.1`). The trainer passes it to every loss explicitly, so the model config's
      `label_smoothing` is not used in training (the forward kwarg is `smoothing_eps`).
    - `kd_column`: the batch key (and dataset column) holding the k distilled candidates.
    """

    spmd_preset: Literal["bang_nar", "seq_kd", "spmd", "spmd_reconstruction"] = field(
        default="spmd",
        metadata={
            "help": "Row of the ablation table of docs/spmd.md: 'bang_nar' (gold, α=0, no pacing, β=0), "
            "'seq_kd' (AR-stream targets only, α=0, no pacing, β=0) or 'spmd' (gold + AR-stream targets, α=0.5, "
            "percentile pacing, β=0.5). Fields set explicitly override the preset."
        },
    )
    train_mode: Literal["nar", "ar", "mixed", "semi_nar"] = field(
        default="nar",
        metadata={
            "help": "Decoder mode per batch: 'nar' (the SPMD loss of Eq. 7), 'ar' (label-smoothed AR cross-entropy "
            "on gold: BANG AR fine-tuning, e.g. to train the teacher), 'mixed' (each batch is NAR with "
            "probability nar_ratio, drawn from a seeded generator; docs/architecture.md) or 'semi_nar' (the n-stream "
            "objective on gold with n = k = semi_nar_block_size streams and target_idx = t mod k, for "
            "generate(mode='semi_nar'); a reconstruction, bang_nar/pretraining.py). The SPMD fields apply to NAR "
            "batches only."
        },
    )
    semi_nar_block_size: int | None = field(
        default=None,
        metadata={
            "help": "k of train_mode='semi_nar': tokens per decoding step (and [MASK] streams in training); saved as "
            "the model's generation_config.block_size, the default of generate(mode='semi_nar'). Default 4; "
            "only with train_mode='semi_nar'."
        },
    )
    semi_nar_targets: Literal["gold", "ar_kd"] = field(
        default="gold",
        metadata={
            "help": "Targets of train_mode='semi_nar': 'gold' (labels) or 'ar_kd' (the first, i.e. best, of the "
            "distilled AR-stream targets in kd_column: sequence KD, one mode per source; data from `bang-nar "
            "distill`). Only with train_mode='semi_nar'."
        },
    )
    nar_ratio: float = field(
        default=0.5, metadata={"help": "Probability that a batch is NAR when train_mode='mixed' (BANG --nar-ratio)."}
    )
    target_sources: list[str] | None = field(
        default=None,
        metadata={
            "help": "C_i, the candidate targets of each sample: any of 'gold' (y) and 'ar_kd' (the AR-stream "
            "targets ŷ in the kd_column). Default: from spmd_preset."
        },
    )
    mix_strategy: Literal["min_loss", "random", "all"] = field(
        default="min_loss",
        metadata={
            "help": "Eq. 3 target choice m_i: 'min_loss' (argmin of the NAR loss, no grad), 'random' (ŷ with "
            "probability p_mix, else y) or 'all' (average over every candidate)."
        },
    )
    p_mix: float = field(default=0.5, metadata={"help": "p_mix of Eq. 3 'random': probability of a distilled target."})
    kd_alpha: float | None = field(
        default=None, metadata={"help": "α of Eq. 4, weight of the token KL. Default: from spmd_preset (spmd: 0.5)."}
    )
    kd_temperature: float = field(default=1.0, metadata={"help": "τ of Eq. 2 (the KL is scaled by τ²)."})
    ar_loss_weight: float | None = field(
        default=None,
        metadata={
            "help": "β of Eq. 7, weight of the AR-stream gold loss. Default: from spmd_preset (spmd: 0.5 with "
            "teacher='self', 0 with a frozen teacher or kd_target='stored')."
        },
    )
    ar_loss_target: Literal["gold", "chosen"] = field(
        default="gold",
        metadata={
            "help": "Target of the AR-stream term β·ℓ_AR of Eq. 7: 'gold' (y, docs/spmd.md) or 'chosen' (m_i, the "
            "candidate the NAR stream trains on). With 'chosen', teacher='self' and teacher_dropout=True, the AR "
            "pass with gradient also gives q_AR (its logits, detached), so a step runs one AR pass instead of two. The AR "
            "stream then learns the NAR stream's mode, so nar_verify accepts more of each draft (2.0 instead of 5.7-8.4 "
            "decoder passes per sequence on the controlled task at M = 8)."
        },
    )
    teacher: str = field(
        default="self",
        metadata={
            "help": "Source of q_AR: 'self' (the same model under stop-gradient, sharing the batch's encoder pass) "
            "or the path/id of a frozen AR-fine-tuned BANG checkpoint."
        },
    )
    kd_target: Literal["teacher", "stored"] = field(
        default="teacher",
        metadata={
            "help": "Where q_AR of the token KL (Eq. 2) comes from: 'teacher' (an AR pass of `teacher` each step) "
            "or 'stored' (the teacher's top-n log-probs stored by `bang-nar distill --kd_top_n N` in the columns "
            "kd_top_ids / kd_top_log_probs, q renormalised over those n ids: Eq. 2s of docs/spmd.md). 'stored' "
            "loads and runs no teacher; it needs target_sources=['ar_kd'] (gold has no stored top-n) and "
            "makes β default to 0, as a frozen teacher does. Its quality was not measured."
        },
    )
    teacher_dropout: bool = field(
        default=True,
        metadata={
            "help": "With teacher='self': run the AR teacher pass in training mode, so q_AR (and the ar_nar_kl "
            "difficulty) is a dropout sample (True, the default: mode consistency 99.3 ± 0.3 against 98.5 ± 1.5 per "
            "cent for False on the controlled task, M = 8, 3 seeds), or in eval mode without dropout (False: a "
            "deterministic target, at the same cost). A frozen teacher always runs in eval mode."
        },
    )
    pace_mode: Literal["percentile", "hard", "linear", "none"] | None = field(
        default=None,
        metadata={
            "help": "Eq. 6 self-paced weights: 'percentile' (keep the easiest q(s) of the global batch), 'hard' "
            "(d < λ), 'linear' (max(0, 1 − d/λ)) or 'none'. Default: from spmd_preset (spmd: percentile)."
        },
    )
    pace_signal: Literal["nar_loss", "ar_nar_kl", "disagreement"] = field(
        default="nar_loss",
        metadata={"help": "Eq. 5 difficulty d_i: 'nar_loss' (ℓ_NAR(m_i)), 'ar_nar_kl' (KL(m_i)) or 'disagreement'."},
    )
    pace_q0: float = field(default=0.5, metadata={"help": "q0 of Eq. 6 'percentile': kept fraction at step 0."})
    pace_warmup_ratio: float = field(
        default=0.5,
        metadata={"help": "Share of the optimizer steps over which q(s) rises linearly from q0 to 1 ('percentile')."},
    )
    pace_lambda0: float | None = field(
        default=None,
        metadata={
            "help": "λ0 of Eq. 6 'hard'/'linear', in the units of pace_signal. Default (None): the pace_q0 quantile "
            "of the first global micro-batch's difficulties, so the first steps keep about a fraction q0 of the "
            "samples whatever the loss scale (a fixed 1.0 kept none while the NAR loss was above 1)."
        },
    )
    pace_growth: float = field(
        default=1.3, metadata={"help": "μ of Eq. 6 'hard'/'linear': λ(s) = λ0·μ^epoch (Kumar et al. 2010 style)."}
    )
    kd_top_k: int | None = field(
        default=None,
        metadata={
            "help": "Use only the first k of the stored AR-stream targets of each sample (the k best of the beam); "
            "default: all of them (k = the `num_return_sequences` of distillation)."
        },
    )
    glance_ratio: float = field(
        default=0.0,
        metadata={
            "help": "Glancing training (Qian et al. 2021; beyond docs/spmd.md): a first NAR pass without gradient "
            "finds m_i and the number of wrong slots n_i; ⌈glance_ratio·n_i⌉ random slots of m_i get m_i's token "
            "embedding instead of [MASK] in the training pass, and only the other slots are scored. 0 = off."
        },
    )
    glance_ratio_end: float | None = field(
        default=None,
        metadata={"help": "glance_ratio at the last step (linear anneal from glance_ratio); default: glance_ratio."},
    )
    kd_column: str = field(
        default="kd_labels",
        metadata={"help": "Dataset column / batch key with the k AR-stream targets of each sample (token ids)."},
    )
    label_smoothing_factor: float = field(
        default=0.1,
        metadata={"help": "ε of Eq. 1 for every NAR and AR cross-entropy (docs/spmd.md, BANG: 0.1)."},
    )
    spmd_debug: bool = field(
        default=False,
        metadata={
            "help": "Run the host-side checks of every NAR step (each sample has a candidate target; every rank "
            "passes the same micro-batch size before the all-gather). Each check syncs the device with the host, "
            "so they are off by default; turn on to debug data or sharding problems."
        },
    )

    def __post_init__(self) -> None:
        self._resolve_preset()
        self._check_spmd_fields()
        # An NAR batch runs several forwards (NAR, AR gold) through the DDP wrapper before one backward. DDP allows
        # that only without its unused-parameter search, which Trainer would switch on for a PreTrainedModel.
        if self.ddp_find_unused_parameters is None:
            self.ddp_find_unused_parameters = False
        super().__post_init__()

    def _resolve_preset(self) -> None:
        if self.spmd_preset not in SPMD_PRESETS:
            raise ValueError(f"spmd_preset must be one of {sorted(SPMD_PRESETS)}, got {self.spmd_preset!r}.")
        preset = dict(SPMD_PRESETS[self.spmd_preset])
        # docs/spmd.md Eq. 7: β = 0.5 with the self-teacher, 0 with a frozen teacher or its stored top-n
        # (docs/spmd.md#stored-kd): then the student's AR stream is nobody's teacher.
        if self.teacher != "self" or self.kd_target == "stored":
            preset["ar_loss_weight"] = 0.0
        for name, value in preset.items():
            if getattr(self, name) is None:
                setattr(self, name, list(value) if isinstance(value, list) else value)

    def _check_spmd_fields(self) -> None:
        if self.train_mode not in ("nar", "ar", "mixed", "semi_nar"):
            raise ValueError(f"train_mode must be 'nar', 'ar', 'mixed' or 'semi_nar', got {self.train_mode!r}.")
        if self.train_mode == "semi_nar":
            from bang_nar.pretraining import check_block_size  # lazy: the config module stays light to import

            if self.semi_nar_block_size is None:
                self.semi_nar_block_size = 4
            check_block_size(self.semi_nar_block_size, "semi_nar_block_size")
            if self.semi_nar_targets not in ("gold", "ar_kd"):
                raise ValueError(f"semi_nar_targets must be 'gold' or 'ar_kd', got {self.semi_nar_targets!r}.")
        elif self.semi_nar_targets != "gold":
            raise ValueError(
                f"semi_nar_targets applies to train_mode='semi_nar' only (got {self.semi_nar_targets!r} with "
                f"train_mode={self.train_mode!r}); drop it or set train_mode='semi_nar'."
            )
        elif self.semi_nar_block_size is not None:
            raise ValueError(
                f"semi_nar_block_size applies to train_mode='semi_nar' only (got it with train_mode="
                f"{self.train_mode!r}); drop it or set train_mode='semi_nar'."
            )
        _check_range("nar_ratio", self.nar_ratio, 0.0, 1.0)
        sources = list(self.target_sources or [])
        if not sources or any(s not in TARGET_SOURCES for s in sources) or len(set(sources)) != len(sources):
            raise ValueError(
                f"target_sources must be a non-empty subset of {TARGET_SOURCES} without repeats, got {sources!r}."
            )
        self.target_sources = [s for s in TARGET_SOURCES if s in sources]  # fixed order: gold first
        if self.mix_strategy not in ("min_loss", "random", "all"):
            raise ValueError(f"mix_strategy must be 'min_loss', 'random' or 'all', got {self.mix_strategy!r}.")
        if self.mix_strategy == "random" and len(self.target_sources) != 2:
            raise ValueError(
                "mix_strategy='random' chooses between gold and AR-stream targets; set "
                "target_sources=['gold', 'ar_kd'] or use mix_strategy='min_loss'."
            )
        _check_range("p_mix", self.p_mix, 0.0, 1.0)
        _check_range("kd_alpha", self.kd_alpha, 0.0, 1.0)
        _check_range("kd_temperature", self.kd_temperature, 0.0, float("inf"), low_open=True)
        _check_range("ar_loss_weight", self.ar_loss_weight, 0.0, float("inf"))
        if not self.teacher:
            raise ValueError("teacher must be 'self' or the path of a frozen AR-fine-tuned checkpoint, got ''.")
        if self.pace_mode not in ("percentile", "hard", "linear", "none"):
            raise ValueError(f"pace_mode must be 'percentile', 'hard', 'linear' or 'none', got {self.pace_mode!r}.")
        if self.pace_signal not in ("nar_loss", "ar_nar_kl", "disagreement"):
            raise ValueError(
                f"pace_signal must be 'nar_loss', 'ar_nar_kl' or 'disagreement', got {self.pace_signal!r}."
            )
        _check_range("pace_q0", self.pace_q0, 0.0, 1.0, low_open=True)
        _check_range("pace_warmup_ratio", self.pace_warmup_ratio, 0.0, 1.0)
        if self.pace_lambda0 is not None:
            _check_range("pace_lambda0", self.pace_lambda0, 0.0, float("inf"), low_open=True)
        _check_range("pace_growth", self.pace_growth, 1.0, float("inf"))
        _check_range("label_smoothing_factor", self.label_smoothing_factor, 0.0, 0.999)
        if self.kd_top_k is not None and self.kd_top_k < 1:
            raise ValueError(f"kd_top_k must be >= 1 (or None for every stored target), got {self.kd_top_k}.")
        if self.glance_ratio_end is None:
            self.glance_ratio_end = self.glance_ratio
        _check_range("glance_ratio", self.glance_ratio, 0.0, 1.0)
        _check_range("glance_ratio_end", self.glance_ratio_end, 0.0, 1.0)
        if self.ar_loss_target not in ("gold", "chosen"):
            raise ValueError(f"ar_loss_target must be 'gold' or 'chosen', got {self.ar_loss_target!r}.")
        if self.uses_glancing and self.mix_strategy == "all":
            raise ValueError("Glancing reveals slots of one chosen target; use mix_strategy='min_loss' or 'random'.")
        self._check_kd_target()

    def _check_kd_target(self) -> None:
        """`kd_target='stored'` (docs/spmd.md#stored-kd): only where a KL is computed, on distilled targets only."""
        if self.kd_target not in ("teacher", "stored"):
            raise ValueError(f"kd_target must be 'teacher' or 'stored', got {self.kd_target!r}.")
        if self.kd_target != "stored":
            return
        if not self.needs_teacher:
            raise ValueError(
                "kd_target='stored' replaces the teacher pass of the token KL, and this run computes no KL "
                f"(train_mode={self.train_mode!r}, kd_alpha={self.kd_alpha}, pace_signal={self.pace_signal!r}); "
                "drop kd_target or set kd_alpha > 0 (e.g. spmd_preset='spmd')."
            )
        if self.teacher != "self":
            raise ValueError(
                f"kd_target='stored' reads q_AR from the data (its teacher is the one in provenance.json), so "
                f"teacher={self.teacher!r} would be unused; drop teacher or use kd_target='teacher'."
            )
        if "gold" in self.target_sources:
            raise ValueError(
                "kd_target='stored' has the teacher's top-n of the distilled targets only, not of gold; set "
                "target_sources=['ar_kd'] (spmd_preset='spmd') or use kd_target='teacher'."
            )

    # ---- derived settings the trainer reads ----

    @property
    def has_nar_batches(self) -> bool:
        """True when some batch trains NAR mode with the SPMD loss (`train_mode` 'nar' or 'mixed')."""
        return self.train_mode in ("nar", "mixed")

    @property
    def uses_distilled_targets(self) -> bool:
        """True when some batch needs the kd_column (an NAR batch with 'ar_kd' among the candidates, or semi-NAR
        training on the distilled 1-best)."""
        if self.train_mode == "semi_nar":
            return self.semi_nar_targets == "ar_kd"
        return self.has_nar_batches and "ar_kd" in self.target_sources

    @property
    def uses_glancing(self) -> bool:
        """True when NAR batches run the glancing passes (`glance_ratio` or `glance_ratio_end` > 0)."""
        return self.has_nar_batches and max(self.glance_ratio, self.glance_ratio_end) > 0

    def glance_ratio_at(self, step: int, max_steps: int) -> float:
        """The glancing ratio at optimizer step `step`: linear from `glance_ratio` to `glance_ratio_end`."""
        progress = min(1.0, step / max_steps) if max_steps > 0 else 1.0
        return self.glance_ratio + (self.glance_ratio_end - self.glance_ratio) * progress

    @property
    def needs_teacher(self) -> bool:
        """True when q_AR is needed: α > 0 (Eq. 4) or the KL as pace signal (Eq. 5), in NAR batches."""
        return self.has_nar_batches and (self.kd_alpha > 0 or self.pace_signal == "ar_nar_kl")

    @property
    def uses_stored_kd(self) -> bool:
        """True when q_AR comes from the stored top-n of the data (`kd_target='stored'`): no teacher pass."""
        return self.needs_teacher and self.kd_target == "stored"

    @property
    def shares_ar_pass(self) -> bool:
        """True when one AR pass gives both β·ℓ_AR(m_i) and q_AR: the AR term on the chosen target, the self-teacher
        with dropout (the same training-mode pass), and both needed."""
        return (
            self.needs_teacher and self.ar_loss_weight > 0 and self.ar_loss_target == "chosen"
            and self.teacher == "self" and self.teacher_dropout and self.kd_target == "teacher"
        )  # fmt: skip

    @property
    def eval_mode(self) -> str:
        """Decoder mode for evaluation loss and `predict_with_generate`: AR for AR training, semi-NAR for semi-NAR
        training, NAR otherwise."""
        return self.train_mode if self.train_mode in ("ar", "semi_nar") else "nar"
