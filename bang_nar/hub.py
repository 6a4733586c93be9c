"""Model cards (templates in `hub_cards/`, rendered with huggingface_hub's `ModelCard`) and Hub upload.

- `render_model_card`: the one renderer; fills a `hub_cards/<kind>.md` template and its YAML metadata.
- `eval_results_from_table` / `metrics_section`: evaluation rows (as written by `bang-nar evaluate`) → Hub
  `EvalResult`s (the card's `model-index`, which the Hub shows as results) and the card's Markdown metrics table.
- `update_model_card_metrics`: merge new evaluation rows into a saved model folder's README.md card.
- `push_model`: upload a model folder as one Hub commit; checks for a token first and reports Hub failures
  (401, 403, 404, 5xx, no network) as one-line `HubError`s.
- `space_files` / `push_space`: a Gradio Hub Space running `bang-nar app` on a pushed model (`push --space`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

TASK_TYPE = "text2text-generation"
DEFAULT_TAGS = ["bang-nar", "bang", "non-autoregressive", TASK_TYPE]

# Result keys of `bang_nar.evaluation.compute_generation_metrics` that become Hub metrics: key → display name.
# The key itself is the `EvalResult.metric_type`, so merging and reading back never depend on display names.
CARD_METRICS: dict[str, str] = {
    "bleu": "BLEU-4",
    "sentence_bleu": "sent. BLEU-4",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
    "meteor": "METEOR",
    "distinct_1": "dist-1",
    "distinct_2": "dist-2",
    "repetition_rate": "repetition %",
    "mode_consistency": "mode consistency %",
    "ms_per_sample": "ms/sample",
    "samples_per_s": "samples/s",
}
# The Markdown metrics block sits between these markers, so `update_model_card_metrics` can replace it in place.
METRICS_START = "<!-- bang-nar:metrics:start -->"
METRICS_END = "<!-- bang-nar:metrics:end -->"
NO_METRICS = (
    "No evaluation results yet. `bang-nar evaluate --model THIS_FOLDER --data test.jsonl --output-dir eval "
    "--update-card` adds them here and to the card metadata."
)


def template_path(kind: str) -> str:
    """Path of the `hub_cards/<kind>.md` template shipped with the package."""
    path = resources.files("bang_nar.hub_cards").joinpath(f"{kind}.md")
    if not path.is_file():
        available = sorted(
            p.name[:-3] for p in resources.files("bang_nar.hub_cards").iterdir() if p.name.endswith(".md")
        )
        raise ValueError(f"No model-card template {kind!r}; available: {available}.")
    return str(path)


def render_model_card(kind: str, values: dict[str, Any], card_data: ModelCardData | None = None) -> str:
    """Fill template `kind` with `values` (Jinja placeholders) and YAML metadata `card_data`; returns Markdown."""
    card_data = card_data or ModelCardData(library_name="transformers", tags=list(DEFAULT_TAGS))
    values = {"project": project_reference(), **values}
    return str(ModelCard.from_template(card_data, template_path=template_path(kind), **values))


def project_reference() -> str:
    """How cards name this project: a Markdown link to its home page when the installed package declares one
    (pyproject `[project.urls]`), else its name. Never a package-registry page."""
    from importlib import metadata

    try:
        urls = metadata.metadata("bang-nar").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        urls = []
    for entry in urls:  # "Homepage, https://..."
        label, _, url = entry.partition(",")
        url = url.strip()
        # Absolute URLs only: a card on the Hub cannot follow a repository-relative one such as README.md.
        if (
            url.startswith(("https://", "http://"))
            and "pypi.org" not in url
            and label.strip().lower() in ("homepage", "home", "repository", "source")
        ):
            return f"[bang-nar]({url})"
    return "bang-nar"


# ---- names: Hub ids vs local paths ------------------------------------------------------------------------------


def is_hub_id(name: str | os.PathLike | None) -> bool:
    """True for `name` or `owner/name` that is not a local path: only those may go into card metadata."""
    if not name:
        return False
    text = str(name)
    return not os.path.exists(text) and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", text) is not None


def display_name(name: str | os.PathLike) -> str:
    """A Hub id as is; a local path by its last component (a card must not publish the author's folders)."""
    text = str(name)
    return text if is_hub_id(text) else (os.path.basename(os.path.normpath(text)) or text)


# ---- evaluation results ----------------------------------------------------------------------------------------


def describe_device(device: Any = None) -> str:
    """Where timings were measured, e.g. "cpu (2 torch threads)" or "cuda: NVIDIA H100 80GB HBM3"."""
    import torch

    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} torch threads)"
    return device.type


def eval_results_from_table(
    table: Mapping[str, Mapping[str, Any]],
    dataset: str,
    *,
    split: str | None = None,
    systems: Mapping[str, Mapping[str, Any]] | None = None,
    device: str | None = None,
) -> list[EvalResult]:
    """`{system: {metric: value}}` rows (results.json of `bang-nar evaluate`) → one `EvalResult` per number.

    The system name (e.g. "nar", "ar (beam 4)") is the `metric_config`; its decode options (`systems[name]`),
    the sample count and the `device` go into `metric_args`, so the card keeps how each number was made.
    Metrics that were not computed (None, e.g. METEOR without WordNet) are left out.
    """
    results = []
    for system, row in table.items():
        args: dict[str, Any] = {k: v for k, v in dict((systems or {}).get(system, {})).items() if v is not None}
        if row.get("num_samples") is not None:
            args["num_samples"] = row["num_samples"]
        if device and row.get("ms_per_sample") is not None:
            args["device"] = device
        for key, title in CARD_METRICS.items():
            value = row.get(key)
            if value is None:
                continue
            results.append(
                EvalResult(
                    task_type=TASK_TYPE,
                    dataset_type=display_name(dataset),
                    dataset_name=display_name(dataset),
                    dataset_split=split,
                    metric_type=key,
                    metric_value=round(float(value), 4),
                    metric_name=f"{system}: {title}",
                    metric_config=system,
                    metric_args=args or None,
                )
            )
    return results


def merge_eval_results(old: Iterable[EvalResult], new: Iterable[EvalResult]) -> list[EvalResult]:
    """`old` without the (dataset, split, system) groups that `new` re-measures, then `new`.

    A whole group is replaced, so a metric that the new run no longer reports does not linger from an old one.
    """
    new = list(new)
    remeasured = {_group(r) for r in new}
    return [r for r in old if _group(r) not in remeasured] + new


def _group(result: EvalResult) -> tuple[Any, ...]:
    return (result.task_type, result.dataset_type, result.dataset_name, result.dataset_config,
            result.dataset_split, result.metric_config)  # fmt: skip


def metrics_section(eval_results: Iterable[EvalResult], notes: Iterable[str] = ()) -> str:
    """The card's Markdown metrics block (between the markers): one row per (dataset, split, system).

    Built from the `EvalResult`s themselves, so the table and the card metadata cannot disagree.
    """
    eval_results = list(eval_results)
    if not eval_results:
        body = NO_METRICS
    else:
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        args: dict[tuple[Any, ...], dict[str, Any]] = {}
        for result in eval_results:
            key = (result.dataset_name, result.dataset_split or "", result.metric_config or "")
            rows.setdefault(key, {})[result.metric_type] = result.metric_value
            args.setdefault(key, dict(result.metric_args or {}))
        columns = [k for k in CARD_METRICS if any(k in row for row in rows.values())]
        columns += sorted({k for row in rows.values() for k in row} - set(columns))  # metrics added by hand
        lines = [
            "| data | split | decoding | " + " | ".join(CARD_METRICS.get(c, c) for c in columns) + " |",
            "|---|---|---|" + "---:|" * len(columns),
        ]
        for (dataset, split, system), row in rows.items():
            cells = ["n/a" if row.get(c) is None else _number(row[c]) for c in columns]
            lines.append(f"| {dataset} | {split or '-'} | {system} | " + " | ".join(cells) + " |")
        lines += ["", "Quality scores are on a 0-100 scale; ms/sample is the wall-clock time of generation only."]
        settings = [f"- `{system}`: " + ", ".join(f"{k}={v}" for k, v in settings.items())
                    for (_, _, system), settings in args.items() if settings]  # fmt: skip
        if settings:
            lines += ["", "Decoding and measurement settings:", *dict.fromkeys(settings)]
        body = "\n".join(lines)
    notes = list(dict.fromkeys(notes))
    if notes:
        body += "\n\n" + "\n".join(f"Note: {note}" for note in notes)
    return f"{METRICS_START}\n{body}\n{METRICS_END}"


def _number(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def table_notes(table: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The rows' explanatory notes that matter on a card (METEOR not computed), each said once."""
    return list(dict.fromkeys(row["meteor_note"] for row in table.values() if row.get("meteor_note")))


def update_model_card_metrics(
    model_dir: str | os.PathLike,
    table: Mapping[str, Mapping[str, Any]],
    dataset: str,
    *,
    split: str | None = None,
    systems: Mapping[str, Mapping[str, Any]] | None = None,
    device: str | None = None,
) -> Path:
    """Merge evaluation rows into `model_dir/README.md`: `EvalResult`s in the metadata and the metrics table.

    Rows measured earlier on the same (dataset, split, system) are replaced; others are kept. Returns the card path.
    """
    path = Path(model_dir) / "README.md"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: --update-card needs a local model folder with a model card (written by "
            "`bang-nar train` or `bang-nar convert`)."
        )
    card = ModelCard.load(path)
    merged = merge_eval_results(
        card.data.eval_results or [],
        eval_results_from_table(table, dataset, split=split, systems=systems, device=device),
    )
    card.data.eval_results = merged
    card.data.model_name = card.data.model_name or display_name(model_dir)
    section = metrics_section(merged, table_notes(table))
    pattern = re.compile(re.escape(METRICS_START) + ".*?" + re.escape(METRICS_END), re.DOTALL)
    if pattern.search(card.text):
        card.text = pattern.sub(lambda _: section, card.text, count=1)
    else:  # a card from another template or edited by hand: add the section at the end
        card.text = card.text.rstrip("\n") + "\n\n## Evaluation\n\n" + section + "\n"
    card.save(path)
    return path


# ---- upload -------------------------------------------------------------------------------------------------------

# What a user of the repository needs; each entry is satisfied by any one of its names (sharded weights included).
REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "config": ("config.json",),
    "weights": ("model.safetensors", "model.safetensors.index.json"),
    "tokenizer": ("tokenizer_config.json",),
    "model card": ("README.md",),
}
# Trainer leftovers that do not belong in a model repository.
PUSH_IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/*", "runs/*", "*.pt", "*.pth", ".ipynb_checkpoints/*"]


class HubError(RuntimeError):
    """The Hub refused or could not be reached; the message is one line that says what to do."""


def _hub_error(error: Exception, repo_id: str) -> HubError:
    """One line for a failed Hub call, by HTTP status (or for no connection at all)."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(error, OfflineModeIsEnabled):
        return HubError(f"cannot push {repo_id}: Hub access is switched off (HF_HUB_OFFLINE=1); unset it to upload.")
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None) if isinstance(error, HfHubHTTPError) else None
    if status is None:
        return HubError(
            f"cannot reach the Hub to push {repo_id} ({type(error).__name__}: "
            f"{' '.join(str(error).split()) or 'no details'}); check the network connection or HF_ENDPOINT."
        )
    server = getattr(error, "server_message", None) or ""
    detail = f" (Hub: {' '.join(server.split())})" if server else ""
    if status == 401:
        return HubError(
            f"the Hub rejected the token (401 Unauthorized){detail}; log in again with `hf auth login` "
            "or pass a valid --token."
        )
    if status == 403:
        return HubError(
            f"the token may not write to {repo_id} (403 Forbidden){detail}; use a token with write "
            "access to that user or organization."
        )
    if status == 404:
        return HubError(
            f"{repo_id} was not found on the Hub (404){detail}; check the namespace (your user name or "
            "an organization you belong to) and the repository name."
        )
    if status >= 500:
        return HubError(
            f"the Hub failed with {status} (a server error){detail} while pushing {repo_id}; nothing is "
            "wrong with your folder, try again later."
        )
    return HubError(f"the Hub answered {status} while pushing {repo_id}{detail}.")


def _transport_errors() -> tuple[type[Exception], ...]:
    """Network failures of whichever HTTP client huggingface_hub uses (and the OS's)."""
    import importlib

    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    errors: list[type[Exception]] = [HfHubHTTPError, OfflineModeIsEnabled, OSError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _require_token(token: str | None) -> str:
    """`token`, else the logged-in one; checked before any request."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubError(
            "no Hugging Face token: log in with `hf auth login`, set HF_TOKEN, or pass --token "
            "(a token with write access)."
        )
    return token


def push_model(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload BANG model with bang-nar",
) -> str:
    """Upload a model folder (weights, config, tokenizer, model card, remote-code files) as one Hub commit.

    Refuses folders that lack what a user of the repository needs (weights, tokenizer, card); leaves out Trainer
    checkpoints and logs. Returns the repository URL.

    Raises:
        FileNotFoundError: the folder is missing or incomplete (checked before any request).
        HubError: no token (`token=`, HF_TOKEN or `hf auth login`; checked before any request), or the Hub refused
            or could not be reached; one line.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; pass the output folder of `bang-nar train` or `convert`.")
    missing = [
        f"{what} ({' or '.join(names)})"
        for what, names in REQUIRED_FILES.items()
        if not any((folder / name).is_file() for name in names)
    ]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {', '.join(missing)}; push a folder written by `bang-nar train` or `bang-nar convert` "
            "(they save config, weights, tokenizer and model card)."
        )
    token = _require_token(token)
    api = HfApi(token=token)
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message=commit_message,
            ignore_patterns=list(PUSH_IGNORE_PATTERNS),
        )
    except _transport_errors() as error:
        raise _hub_error(error, repo_id) from error
    return str(repo_url)


# ---- Hub Space: the `bang-nar app` page for a pushed model ------------------------------------------------------

SPACE_APP = '''"""Every decoding mode of {model} side by side (written by `bang-nar push --space`; the page is `bang-nar app`)."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from bang_nar.app import build_app

build_app({model!r}).launch()
'''


def space_files(model_repo_id: str, *, requirement: str | None = None) -> dict[str, str]:
    """The files of a Gradio Space serving `bang-nar app` on Hub model `model_repo_id`: app.py, requirements.txt and
    README.md (Space front matter: `sdk: gradio`, the model linked). `requirement` is the pip line that installs this
    package with its `app` extra (default: this version from the package index; a `git+https://...` URL works too)."""
    from huggingface_hub import SpaceCard, SpaceCardData

    from . import __version__

    requirement = requirement or f"bang-nar[app]=={__version__}"
    try:
        from importlib import metadata

        sdk_version = metadata.version("gradio")  # the Gradio this package was tested with here
    except Exception:
        sdk_version = None
    data = SpaceCardData(
        title=f"{display_name(model_repo_id).split('/')[-1]} decoding modes",
        sdk="gradio",
        sdk_version=sdk_version,
        app_file="app.py",
        models=[model_repo_id],
        tags=["bang-nar", "non-autoregressive"],
        emoji="⚡",
        colorFrom="blue",
        colorTo="green",
        short_description="NAR, nar_verify and AR decoding of one BANG model, side by side",
    )
    text = (
        f"# {model_repo_id}: decoding modes side by side\n\nType a source and compare one-pass NAR, NAR with "
        "candidates or n-gram blocking, `nar_verify` (exactly AR greedy in fewer AR passes) and AR greedy / beam "
        f"on [{model_repo_id}](https://huggingface.co/{model_repo_id}): outputs, milliseconds, speed-up vs AR beam "
        "and the NAR words that differ from AR. Made with `bang-nar push --space`; locally the same page is "
        f"`bang-nar app --model {model_repo_id}`.\n"
    )
    card = SpaceCard(f"---\n{data.to_yaml()}\n---\n\n{text}")
    return {
        "app.py": SPACE_APP.format(model=model_repo_id),
        "requirements.txt": requirement + "\n",
        "README.md": str(card),
    }


def push_space(
    model_repo_id: str,
    space_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    requirement: str | None = None,
    commit_message: str = "bang-nar app for the model",
) -> str:
    """Create (or update) Gradio Space `space_id` serving the `bang-nar app` page of Hub model `model_repo_id`,
    as one commit of `space_files`. Returns the Space URL; one-line `HubError`s as `push_model`."""
    from huggingface_hub import CommitOperationAdd

    token = _require_token(token)
    api = HfApi(token=token)
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=content.encode("utf-8"))
        for name, content in space_files(model_repo_id, requirement=requirement).items()
    ]
    try:
        url = api.create_repo(space_id, private=private, exist_ok=True, repo_type="space", space_sdk="gradio")
        api.create_commit(space_id, operations=operations, commit_message=commit_message, repo_type="space")
    except _transport_errors() as error:
        raise _hub_error(error, space_id) from error
    return str(url)


__all__ = [
    "CARD_METRICS",
    "HubError",
    "describe_device",
    "display_name",
    "eval_results_from_table",
    "is_hub_id",
    "merge_eval_results",
    "metrics_section",
    "push_model",
    "push_space",
    "render_model_card",
    "space_files",
    "table_notes",
    "template_path",
    "update_model_card_metrics",
]
