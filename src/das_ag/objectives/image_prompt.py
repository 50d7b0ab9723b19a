"""Image prompts: CLIP similarity to pictures, signed like text prompts.

`--image-prompt photo.jpg:1 --image-prompt clutter.png:-0.5` attracts the image towards the first
picture's CLIP embedding and repels it from the second's. Weights are averaged within the
attracting and within the repelling pictures, as the text term does, and the whole is scaled by
the CLIP weight, so an image prompt pulls as hard as a text prompt of the same weight.

Pictures are embedded once per run through the path a run's views take (centre crop to a
square, das-ag's resize, CLIP's mean and std). Their checksums go into the recipe, so a re-run
notices a picture that changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..settings import PartSettings, setting
from .base import Term, TermInputs
from ..prompts import is_repelling, split_weight, weight_at, weight_problems
from ..schedules import Schedule
from .text import SignedWeights

SEPARATOR = "|"  # between entries of `images`; each entry is PATH:WEIGHT


def parse_image_prompt(text: str) -> tuple[str, float | Schedule]:
    """"photo.jpg", "photo.jpg:0.5" or "photo.jpg:linear:0:1" (a weight that follows a schedule
    over the run) -> (path, weight)."""
    path, weight = split_weight(text)
    return (text, 1.0) if weight is None or not path else (path, weight)


def parse_entries(images: str) -> list[tuple[str, float | Schedule]]:
    """"a.jpg:0.5|b.png" -> [(path, weight), ...]."""
    return [parse_image_prompt(e) for e in images.split(SEPARATOR) if e.strip()] if images else []


@dataclass(frozen=True)
class ImagePromptSettings(PartSettings):
    images: str = setting("", group="prompts", flag="--image-prompt", repeat=SEPARATOR, studio=False,
                          metavar="FILE[:WEIGHT]",
                          help="a picture to steer towards (repeatable); a negative WEIGHT repels")
    # Filled in from the files: a recipe notices a picture that changed.
    sha256: str = setting("", group="prompts", flag="", studio=False, checksum_of="images",
                          help="the pictures' sha256s, in order")

    def __post_init__(self):
        if self.images and not self.sha256:
            from ..weights import file_sha256

            object.__setattr__(self, "sha256", SEPARATOR.join(file_sha256(p) or "" for p, _ in self.entries()))

    @classmethod
    def files_in(cls, values: dict) -> list[str]:
        # Several pictures in one setting, each with its weight: "a.png:1|b.png:-0.5".
        return [path for path, _ in parse_entries(str(values.get("images", "")))]

    def entries(self) -> list[tuple[str, float | Schedule]]:
        return parse_entries(self.images)

    def problems(self) -> list[str]:
        from ..pictures import picture_problems

        p = []
        sums = self.sha256.split(SEPARATOR) if self.sha256 else []
        for i, (path, weight) in enumerate(self.entries()):
            p.extend(weight_problems(weight, f"image prompt {path}"))
            p.extend(picture_problems(path, sums[i] if i < len(sums) else "", "image prompt"))
        return p


class ImagePromptTerm(Term):
    name = "image_prompt"
    title = "Image prompts"
    labels = {"similarity": "img+"}
    score_descriptions = {"image_prompt_similarity": "CLIP similarity to the image prompts"}
    Settings = ImagePromptSettings

    @classmethod
    def active(cls, config):
        return bool(config.term_settings(cls.name).entries())

    @classmethod
    def steers(cls, config) -> bool:
        return any(not is_repelling(w) for _, w in config.term_settings(cls.name).entries())

    def __init__(self, config, models):
        super().__init__(config, models)
        from ..errors import ConfigError
        from ..pictures import PictureError, opened
        from ..styles import picture_input

        entries = self.settings.entries()
        pictures = []
        for path, _ in entries:
            try:
                with opened(path, f"image prompt {path}") as image:
                    pictures.append(picture_input(image, models.input_resolution))
            except PictureError as exc:
                raise ConfigError(str(exc)) from None
        with torch.no_grad():
            self.features = models.encode_images(torch.cat(pictures).to(models.device)).float()
        self.weights = [w for _, w in entries]
        self.timeline = any(isinstance(w, Schedule) for w in self.weights)
        self.signed = SignedWeights([weight_at(w, 0, config.steps) for w in self.weights], models.device,
                                    repels=[is_repelling(w) for w in self.weights])
        self.clip_weight = self.number(config.term_settings("text").weight)  # the text weight scales pictures too

    def at_step(self, step, steps):
        if self.timeline:  # a new tensor each step, as the text term's timeline
            self.signed.weights = torch.tensor([weight_at(w, step, steps) for w in self.weights], device=self.models.device)
        return {}

    def loss(self, inputs: TermInputs):
        sims = (inputs.embeddings.float() @ self.features.t()).mean(dim=0)
        similarity = self.signed.attracting(sims)
        metrics = {} if similarity is None else {"similarity": similarity}
        return -self.clip_weight * self.signed.score(sims), metrics  # repelling only: mean(w * sim)

    def final_scores(self, embedding, views=None):
        similarity = self.signed.attracting((embedding.float() @ self.features.t())[0])
        return {"image_prompt_similarity": None if similarity is None else float(similarity)}
