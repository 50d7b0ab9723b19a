"""The published DAS-AG experiment: its four prompts, the shared negative prompt, its numbers.

From reference-algorithm.md, section 4. The numbers were scored by Aesthetic Predictor v2.5 (a
held-out SigLIP predictor), 6 samples per method; das-ag's own training head is not comparable.
"""

from __future__ import annotations

from .prompts import Prompt

PROMPTS = (
    'A photorealistic illustration of "a gigantic metallic Mona Lisa in red pajama attacking the city", dynamic camera angle, fine-grained details, well-recognizable, close-up, well-recognizable human face',
    "A photorealistic illustration of \"a massive gamma-ray burst engulfs the towering Tokyo Tower on Earth's final day\", dynamic camera angle, fine-grained details, well-recognizable, close-up",
    'A photorealistic illustration of "a stunning Mount Fuji, a majestic hawk, and a symbolic eggplant, set against the neon-lit skyline of cyberpunk Tokyo", dynamic camera angle, fine-grained details, well-recognizable, close-up',
    'A photorealistic illustration of "a cute Japanese Geisha girl wearing a rainbow-colored kimono, crying with huge drops of tears", fine-grained details, well-recognizable, close-up, well-recognizable face expression',
)
NAMES = ("mona-lisa", "tokyo-tower", "mount-fuji", "geisha")
NEGATIVE = (
    "text present, low-quality, low-resolution, insane, ugly, grotesque, horrifying, blurred, noisy, distorted, "
    "pixelated, artifact present, without depth, flat, boring, uninteresting, unattractive, unappealing, unclear, "
    "dull, dark, gloomy, depressing, monotonous"
)
# method -> (mean, std) of the held-out v2.5 score, 6 samples each
PUBLISHED = {"DAS": (3.406, 0.230), "DAS-AG": (3.783, 0.203), "DAS-rAG": (2.988, 0.282)}


def prompt_sets() -> list[tuple[str, tuple[Prompt, ...]]]:
    return [(name, (Prompt(text), Prompt(NEGATIVE, -1.0))) for name, text in zip(NAMES, PROMPTS)]
