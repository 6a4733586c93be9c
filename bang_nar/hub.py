"""Model cards (templates in `hub_cards/`, rendered with huggingface_hub's `ModelCard`) and Hub upload."""

from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard, ModelCardData


def template_path(kind: str) -> str:
    """Path of the `hub_cards/<kind>.md` template shipped with the package."""
    path = resources.files("bang_nar.hub_cards").joinpath(f"{kind}.md")
    if not path.is_file():
        available = sorted(p.name[:-3] for p in resources.files("bang_nar.hub_cards").iterdir() if p.name.endswith(".md"))
        raise ValueError(f"No model-card template {kind!r}; available: {available}.")
    return str(path)


def render_model_card(kind: str, values: dict[str, Any], card_data: ModelCardData | None = None) -> str:
    """Fill template `kind` with `values` (Jinja placeholders) and YAML metadata `card_data`; returns Markdown."""
    card_data = card_data or ModelCardData(library_name="transformers", tags=["bang", "non-autoregressive"])
    return str(ModelCard.from_template(card_data, template_path=template_path(kind), **values))


REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json", "README.md")


def push_model(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload BANG model with bang-nar",
) -> str:
    """Upload a model folder (weights, config, tokenizer, model card, remote-code files) as one Hub commit.

    Refuses folders that lack what a user of the repository needs (weights, tokenizer, card). Returns the repo URL.
    """
    folder = Path(folder)
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {missing}; push a folder written by `bang-nar train` or `bang-nar convert` "
            "(they save weights, tokenizer and model card)."
        )
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=commit_message,
                      ignore_patterns=["checkpoint-*", "runs/*", "*.pt"])
    return str(repo_url)


__all__ = ["push_model", "render_model_card", "template_path"]
