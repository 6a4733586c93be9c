"""Model-card templates (Markdown with Jinja placeholders), shipped as package data of `bang_nar.hub_cards`."""
