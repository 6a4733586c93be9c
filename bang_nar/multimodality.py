"""A controlled multi-modality seq2seq task, after Zhou, Gu & Neubig (ICLR 2020).

Zhou et al. showed that non-autoregressive (NAR) quality hinges on how many valid targets a source has, and that
knowledge distillation helps by reducing them. This module makes that situation on demand, from a seed and with no
data files:

- a source is 6-12 words drawn uniformly from a 100-word source lexicon;
- its target is a word-by-word translation through one of eight synonym tables (`red`/`scarlet`/`reddish`...:
  two tables of real English words and six derived from them by the suffixes -ish, -ly, -er). The table is one
  hidden choice per sentence;
- with `num_modes` M in {1, 2, 4, 8}, a source has exactly M valid targets, one per table among the first M
  (M = 2 uses the two real-word tables). Training targets are drawn uniformly among the M.

- `word_order=True` (the order-changing variant, issue 21) makes the modes differ in word order as well as in wording:
  choice c is synonym table c // 2, with the translated words as they are (c even) or rotated left by one word (c
  odd: the first word moves to the end). M in {2, 4, 8, 16}: M = 2 is one table in two orders, M = 16 every table
  in both orders. Sources whose M targets would collide (e.g. one word repeated) are skipped.

Each target is a deterministic function of (source, choice), so a tiny AR model learns the task in minutes on a CPU,
while a NAR model, which predicts all positions independently, mixes choices across positions. The task has its own
word-level tokenizer (`build_word_tokenizer`, 900 words: 100 source + 8 x 100 target), not BERT's 30,522 pieces.
(Earlier versions made M = 4 with a reversed word order; a tiny AR teacher then reached only 10-60% exact match,
too weak to be the reference, so the modes are now lexical only.)
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import datasets
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SOURCE_WORDS = tuple(
    """apple river stone cloud garden window forest candle mirror ladder
    bridge castle meadow harbor island valley desert jungle canyon glacier
    violin trumpet guitar piano drum flute banjo cello harp organ
    tiger eagle rabbit turtle dolphin falcon badger beaver camel donkey
    hammer needle shovel bucket basket pillow blanket carpet curtain kettle
    copper silver marble velvet cotton leather timber crystal paper plastic
    winter summer autumn spring morning evening midnight sunrise sunset noon
    doctor farmer sailor baker tailor painter miner pilot poet judge
    orange lemon cherry peach grape melon plum olive onion garlic
    rocket wagon tractor bicycle canoe sled carriage engine anchor compass""".split()
)
# The two synonym tables: SOURCE_WORDS[i] translates to TABLE_A[i] or TABLE_B[i] (same meaning, other word).
TABLE_A = tuple(
    """red blue green yellow purple brown black white gray pink
    quick slow happy angry quiet loud brave shy proud calm
    north south east west upper lower inner outer front rear
    run jump swim climb fly crawl dance sing read write
    bright dark warm cold soft hard sweet bitter smooth rough
    tall short wide narrow deep shallow heavy light thick thin
    old young new ancient modern early late fresh stale clean
    rich poor busy lazy clever silly gentle fierce kind cruel
    first second third fourth fifth sixth seventh eighth ninth tenth
    one two three four five six seven eight nine ten""".split()
)
TABLE_B = tuple(
    """scarlet azure emerald golden violet tan ebony ivory ashen rosy
    swift sluggish cheerful furious silent noisy bold timid haughty serene
    northern southern eastern western above below inside outside ahead behind
    sprint leap dive scale soar creep waltz chant study scribble
    vivid gloomy cozy icy tender firm sugary sour sleek coarse
    lofty brief broad slim profound flat weighty airy dense lean
    aged youthful novel antique current prompt tardy crisp musty tidy
    wealthy needy hectic idle smart goofy mild savage friendly harsh
    initial next later further final prior primary minor major latter
    single pair trio quartet dozen score hundred thousand million billion""".split()
)
# Six more tables for M up to 8, derived by suffixes (pseudo-words, one per meaning and table): the modes differ only
# in word choice, so a tiny AR teacher learns them all in minutes, while an NAR decoder still mixes them.
_SUFFIXES = ("ish", "ly", "er")
TABLES = (TABLE_A, TABLE_B) + tuple(
    tuple(word + suffix for word in table) for suffix in _SUFFIXES for table in (TABLE_A, TABLE_B)
)
VOCABULARY = SOURCE_WORDS + tuple(word for table in TABLES for word in table)
assert len(set(VOCABULARY)) == len(VOCABULARY), "the derived tables must not reuse a word"

# The hidden per-sentence choice is the table; the first M tables are valid for M modes.
CHOICES = TABLES
SUPPORTED_NUM_MODES = (1, 2, 4, 8)
# The order-changing variant: choice c = (table c // 2, rotated left by one word when c is odd).
SUPPORTED_NUM_MODES_WORD_ORDER = (2, 4, 8, 16)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0-4, in this order

_INDEX = {word: i for i, word in enumerate(SOURCE_WORDS)}


def translate(source: str, choice: int, word_order: bool = False) -> str:
    """The target of `source` under hidden choice `choice`: 0-7, the synonym table (see `TABLES`); with
    `word_order`, 0-15, table `choice // 2` rotated left by one word when `choice` is odd."""
    table = CHOICES[choice // 2 if word_order else choice]
    try:
        words = [table[_INDEX[word]] for word in source.split()]
    except KeyError as err:
        raise ValueError(f"{err.args[0]!r} is not a source word of the multi-modality task.") from None
    if word_order and choice % 2:
        words = words[1:] + words[:1]
    return " ".join(words)


@dataclass(frozen=True)
class MultimodalityTask:
    """A generated task: `train` (`source`, `target`, `choice`) and `eval` (+ `references`, all valid targets)."""

    num_modes: int
    seed: int
    train: datasets.Dataset
    eval: datasets.Dataset
    vocabulary: tuple[str, ...] = field(default=VOCABULARY, repr=False)
    word_order: bool = False

    def valid_targets(self, source: str) -> list[str]:
        """All `num_modes` valid targets of `source`, in choice order."""
        return [translate(source, choice, self.word_order) for choice in range(self.num_modes)]


def make_multimodality_task(
    num_modes: int,
    num_train: int,
    num_eval: int,
    seed: int,
    *,
    min_length: int = 6,
    max_length: int = 12,
    word_order: bool = False,
) -> MultimodalityTask:
    """Generate the controlled multi-modality task; the same arguments always give the same data.

    Args:
        num_modes: M, the number of valid targets per source: 1, 2, 4 or 8 (with `word_order`: 2, 4, 8 or 16).
        num_train, num_eval: numbers of examples. All sources are distinct, so no eval source is seen in training.
        seed: seeds a private `random.Random`; global random state is neither used nor changed.
        min_length, max_length: source length range in words (inclusive).
        word_order: the order-changing variant (modes differ in word order and wording; see the module docstring).

    Returns:
        A `MultimodalityTask`. In `train`, `target` is drawn uniformly among the M valid targets and `choice` says
        which. `eval` has the same columns plus `references`, the list of all M valid targets.
    """
    supported = SUPPORTED_NUM_MODES_WORD_ORDER if word_order else SUPPORTED_NUM_MODES
    if num_modes not in supported:
        variant = " with word_order=True" if word_order else ""
        raise ValueError(f"num_modes={num_modes}{variant}: choose one of {supported}.")
    if num_train < 0 or num_eval < 0:
        raise ValueError("num_train and num_eval must be >= 0.")
    if not 2 <= min_length <= max_length:
        raise ValueError(f"Need 2 <= min_length <= max_length (got {min_length}, {max_length}).")
    rng = random.Random(seed)
    seen: set[str] = set()

    def draw(count: int) -> dict[str, list]:
        rows: dict[str, list] = {"source": [], "target": [], "choice": [], "references": []}
        while len(rows["source"]) < count:
            words = [rng.choice(SOURCE_WORDS) for _ in range(rng.randint(min_length, max_length))]
            source = " ".join(words)
            # Palindromes are skipped as in earlier versions (same data for the same seed); repeats too.
            if source in seen or words == words[::-1]:
                continue
            references = [translate(source, c, word_order) for c in range(num_modes)]
            if word_order and len(set(references)) < num_modes:  # a rotation that gives the same words
                continue
            seen.add(source)
            choice = rng.randrange(num_modes)
            rows["source"].append(source)
            rows["target"].append(references[choice])
            rows["choice"].append(choice)
            rows["references"].append(references)
        return rows

    train_rows = draw(num_train)
    del train_rows["references"]
    eval_rows = draw(num_eval)
    features = datasets.Features(
        {"source": datasets.Value("string"), "target": datasets.Value("string"), "choice": datasets.Value("int32")}
    )
    eval_features = datasets.Features({**features, "references": datasets.Sequence(datasets.Value("string"))})
    return MultimodalityTask(
        num_modes=num_modes,
        seed=seed,
        train=datasets.Dataset.from_dict(train_rows, features=features),
        eval=datasets.Dataset.from_dict(eval_rows, features=eval_features),
        word_order=word_order,
    )


def build_word_tokenizer(
    task_or_texts: MultimodalityTask | Iterable[str], *, max_vocab_size: int | None = None
) -> PreTrainedTokenizerFast:
    """A word-level `PreTrainedTokenizerFast` (built with `tokenizers`) for the task or for given texts.

    Ids 0-4 are `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`; then the task's vocabulary in its fixed order, or,
    for texts, their whitespace-separated words by descending frequency (ties alphabetical). The post-processor
    appends `[SEP]` (template `$A [SEP]`), BANG's convention for sources and targets; `eos_token` = `sep_token` =
    `[SEP]`. It round-trips through `save_pretrained` / `AutoTokenizer.from_pretrained`.

    Args:
        task_or_texts: a `MultimodalityTask` (its full 900-word vocabulary) or an iterable of texts.
        max_vocab_size: for texts, keep only this many most frequent words (the rest map to `[UNK]`).
    """
    if isinstance(task_or_texts, MultimodalityTask):
        words = list(task_or_texts.vocabulary)
    else:
        if isinstance(task_or_texts, str):
            raise TypeError("Pass an iterable of texts (e.g. a list of strings), not a single string.")
        counts = Counter(word for text in task_or_texts for word in text.split() if word not in SPECIAL_TOKENS)
        words = [word for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))][:max_vocab_size]
        if not words:
            raise ValueError("No words found in the texts; the tokenizer would know only special tokens.")
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({word: len(SPECIAL_TOKENS) + i for i, word in enumerate(words)})

    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    sep_id = vocab["[SEP]"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A [SEP]", pair="$A [SEP] $B:1 [SEP]:1", special_tokens=[("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        eos_token="[SEP]",
        model_input_names=["input_ids", "attention_mask"],
    )


def multi_reference_scores(predictions: Sequence[str], references_list: Sequence[Sequence[str]]) -> dict[str, float]:
    """Score predictions against all valid targets of each source.

    Returns:
        `bleu`: corpus BLEU-4 (sacrebleu, via the shipped `corpus_bleu` metric) with every valid target as a
        reference; `mode_consistency`: the share (0-100) of predictions exactly equal, up to whitespace, to one
        valid target, i.e. that commit to a single hidden choice; `num_samples`.
    """
    from .evaluation import load_metric  # here, not at the top: the task itself needs no `evaluate`

    if len(predictions) != len(references_list):
        raise ValueError(f"{len(predictions)} predictions but {len(references_list)} reference lists.")
    if not predictions:
        raise ValueError("No predictions to score.")
    normalize = lambda text: " ".join(text.split())  # noqa: E731
    consistent = sum(
        normalize(prediction) in {normalize(ref) for ref in refs}
        for prediction, refs in zip(predictions, references_list)
    )
    references = [list(refs) for refs in references_list]
    bleu = load_metric("corpus_bleu").compute(predictions=list(predictions), references=references)
    return {
        "bleu": bleu["bleu"],
        "mode_consistency": 100.0 * consistent / len(predictions),
        "num_samples": len(predictions),
    }


__all__ = [
    "CHOICES",
    "MultimodalityTask",
    "SOURCE_WORDS",
    "SPECIAL_TOKENS",
    "SUPPORTED_NUM_MODES",
    "SUPPORTED_NUM_MODES_WORD_ORDER",
    "TABLE_A",
    "TABLE_B",
    "TABLES",
    "VOCABULARY",
    "build_word_tokenizer",
    "make_multimodality_task",
    "multi_reference_scores",
    "translate",
]
