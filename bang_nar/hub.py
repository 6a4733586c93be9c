"""Model cards (templates in `hub_cards/`, rendered with huggingface_hub's `ModelCard`) and Hub upload."""

from importlib import resources
from typing import Any

from huggingface_hub import ModelCard, ModelCardData


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


__all__ = ["render_model_card", "template_path"]
