"""The recipe a PNG or SVG carries, as JSON text: the part both file formats share."""

from __future__ import annotations

import json

from .errors import DasAgError

RECIPE_KEY = "das-ag:recipe"


def parse_recipe(text: str, name: str) -> dict:
    """A recipe from the JSON text a file carries; `name` says which file in messages."""
    try:
        recipe = json.loads(text)
    except ValueError:
        raise DasAgError(f"{name} has a damaged das-ag recipe") from None
    if not isinstance(recipe, dict) or "config" not in recipe:
        raise DasAgError(f"{name} has a das-ag recipe without settings")
    return recipe
