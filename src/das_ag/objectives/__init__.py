"""The terms of the loss, each a module of its own, and the registry the engine builds them from.

    @register_term
    class Symmetry(Term): ...

makes a term part of every run whose config activates it: the engine, the CLI's progress line,
the studio's curves, recipes and tables pick it up without knowing it.
"""

from __future__ import annotations

from ..settings import check_settings_class
from .base import Term, TermInputs

TERMS: dict[str, type[Term]] = {}


def register_term(cls: type[Term]) -> type[Term]:
    """Add a term to the registry (a decorator). A second term of the same name replaces the first."""
    check_settings_class(cls)
    TERMS[cls.name] = cls
    return cls


def score_label(key: str) -> str:
    """How tables and summaries name a final score: as the term that gives it says, else its key."""
    return next((cls.score_labels[key] for cls in TERMS.values() if key in cls.score_labels), key)


def score_description(key: str) -> str:
    """How one image's scores name a final score: the term's description, else its label."""
    return next((cls.score_descriptions[key] for cls in TERMS.values() if key in cls.score_descriptions),
                score_label(key))


def active_terms(config) -> list[type[Term]]:
    return [cls for cls in TERMS.values() if cls.active(config)]


def term_class(name: str) -> type[Term] | None:
    return TERMS.get(name)


from .aesthetic import AestheticTerm  # noqa: E402
from .ambiguity import AmbiguityTerm  # noqa: E402
from .colourfulness import ColourfulnessTerm  # noqa: E402
from .image_prompt import ImagePromptTerm  # noqa: E402
from .palette import PaletteTerm  # noqa: E402
from .regularisers import L1Term, TotalVariationTerm  # noqa: E402
from .seam import SeamTerm  # noqa: E402
from .start_picture import StartPictureTerm  # noqa: E402
from .symmetry import SymmetryTerm  # noqa: E402
from .text import TextTerm  # noqa: E402

for _term in (TextTerm, ImagePromptTerm, StartPictureTerm, AestheticTerm, AmbiguityTerm, TotalVariationTerm, L1Term, SymmetryTerm, ColourfulnessTerm,
              PaletteTerm, SeamTerm):
    register_term(_term)

__all__ = ["TERMS", "Term", "TermInputs", "active_terms", "register_term", "term_class"]
