"""Prompts with signed weights, their parsing, and tokenisation that never crashes on long text.

A positive weight attracts the image towards the prompt, a negative one repels it. The text term
averages weight * similarity within each group, so equal weights give DAS-AG's
mean(positive) - mean(negative), and "+1.0 main, -0.3 negative" gives the original DAS objective.

A weight may be a schedule over the run (a timeline): "a red circle:linear:1:0" fades a prompt out
while "a blue square:linear:0:1" fades another in, so the picture moves from one to the other. A
scheduled prompt keeps one side: its weight may reach 0 but never changes sign.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .schedules import SCHEDULE_KINDS, Schedule, is_finite_number

CONTEXT_LENGTH = 77  # every CLIP text encoder uses 77 tokens, start and end markers included


@dataclass(frozen=True)
class Prompt:
    text: str
    weight: float | Schedule = 1.0  # a Schedule: the weight follows it over the run

    @property
    def scheduled(self) -> bool:
        return isinstance(self.weight, Schedule)

    @property
    def is_negative(self) -> bool:
        return is_repelling(self.weight)

    def weight_at(self, step: int, steps: int) -> float:
        """The weight at `step` (0-based) of `steps` (the weight itself when it is a number)."""
        return weight_at(self.weight, step, steps)

    def at(self, step: int, steps: int) -> Prompt:
        """This prompt with its weight fixed at `step` of `steps` (an animation's frame)."""
        return Prompt(self.text, self.weight_at(step, steps)) if self.scheduled else self

    def problems(self) -> list[str]:
        """Why this prompt's weight cannot be used, in plain words (empty when it can)."""
        return weight_problems(self.weight, f"prompt {self.text!r}")

    def weight_text(self) -> str:
        """The weight as a prompt spec writes it: "0.5" or "linear:1:0"."""
        if not self.scheduled:
            return f"{self.weight:g}"
        w = self.weight
        rate = f":{w.rate:g}" if w.kind in ("exp_decay", "exp_warmup") else ""
        return f"{w.kind}:{w.start:g}:{w.end:g}{rate}"


def weight_problems(weight: float | Schedule, what: str) -> list[str]:
    """Why `weight` cannot weigh `what` (a prompt, an image prompt): a number must be finite and
    not 0; a schedule must be valid and keep one side of 0 without being 0 throughout."""
    if not isinstance(weight, Schedule):
        return [] if is_finite_number(weight) and weight != 0 else [f"{what} needs a non-zero finite weight, not {weight!r}"]
    found = weight.problems(f"{what} weight")
    if not found and (min(weight.start, weight.end) < 0 < max(weight.start, weight.end) or weight.start == weight.end == 0):
        found.append(f"{what}: a weight schedule must stay on one side of 0 and not be 0 throughout, not "
                     f"{weight.start:g} to {weight.end:g} (give two prompts to attract, then repel)")
    return found


def is_repelling(weight: float | Schedule) -> bool:
    return (weight.start < 0 or weight.end < 0) if isinstance(weight, Schedule) else weight < 0


def weight_at(weight: float | Schedule, step: int, steps: int) -> float:
    return weight.at(step, steps) if isinstance(weight, Schedule) else float(weight)


def split_weight(spec: str) -> tuple[str, float | Schedule | None]:
    """"TEXT:WEIGHT" or "TEXT:KIND:START:END[:RATE]" -> (text, weight); (spec, None) when the
    spec ends in neither (a colon in the text itself, "a photo: sunset")."""
    parts = spec.split(":")
    for n in (4, 3):  # KIND:START:END:RATE, then KIND:START:END
        if len(parts) > n and parts[-n] in SCHEDULE_KINDS:
            try:
                numbers = [float(x) for x in parts[len(parts) - n + 1:]]
            except ValueError:
                continue
            return ":".join(parts[:-n]), Schedule(parts[-n], *numbers)
    head, sep, tail = spec.rpartition(":")
    if sep:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return spec, None


def parse_prompt(spec: str, *, negative: bool = False) -> Prompt:
    """Parse "TEXT", "TEXT:WEIGHT" or "TEXT:KIND:START:END[:RATE]" (a weight that follows a
    schedule over the run). A suffix that is not a weight stays part of the text.

    `negative` marks a prompt given as a negative one: its weight is the repelling strength, so
    "blurry:0.3" becomes weight -0.3.
    """
    text, weight = split_weight(spec)
    weight = 1.0 if weight is None else weight
    text = text.strip()
    if not text:
        raise ConfigError(f"prompt {spec!r} has no text; write the text before any ':WEIGHT'")
    if negative:
        if is_repelling(weight):
            raise ConfigError(f"negative prompt {spec!r} takes a positive strength; the minus is implied")
        weight = Schedule(weight.kind, -weight.start, -weight.end, weight.rate) if isinstance(weight, Schedule) else -weight
    prompt = Prompt(text, weight)
    problems = prompt.problems()
    if problems:
        raise ConfigError(problems[0].replace(f"prompt {text!r}", f"prompt {spec!r}", 1))
    return prompt


def tokenize(texts: list[str]):
    """Token ids for `texts`, truncating anything longer than CLIP's context.

    Returns (tokens, warnings): one warning per truncated prompt, so the caller can tell the user
    instead of crashing as the references do.
    """
    from .clip_package import clip_module

    clip = clip_module()  # deferred: importing clip pulls in torchvision (~10 s)

    warnings = []
    for text in texts:
        try:
            clip.tokenize([text], context_length=CONTEXT_LENGTH)
        except RuntimeError:
            warnings.append(
                f"prompt truncated to CLIP's {CONTEXT_LENGTH}-token limit: {_preview(text)!r}"
            )
    return clip.tokenize(texts, context_length=CONTEXT_LENGTH, truncate=True), warnings


def _preview(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
