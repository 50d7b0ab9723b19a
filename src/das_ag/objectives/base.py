"""The loss-term protocol: what every term of the objective (text, aesthetic, TV, ...) provides.

A term is one small unit. Built from one image's config (and the models, once per run), it reads
that image's share of the step's one encoder forward and returns its contribution to the loss and
its named metrics, as tensors: the engine gathers every number of a step into one host copy.
Losses are minimised, so an attracting term enters with a minus sign.

A term that has settings of its own (beyond the config's long-standing top-level fields) declares
them as a frozen dataclass in `Settings`; the config then carries an instance under the term's
name (`GenerationConfig.terms`), recipes store it, and the CLI and studio offer its fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from ..config import GenerationConfig
    from ..models import ModelBundle


@dataclass(frozen=True)
class TermInputs:
    """One image's share of a step: what every term may read."""

    embeddings: torch.Tensor  # (copies, D) L2-normalised CLIP embeddings of its augmented views
    views: torch.Tensor  # (copies, 3, H, W) those views, CLIP-normalised, as the encoder saw them
    # The visible image itself, unaugmented: (1, 3, H, W) in [0, 1], for terms about the picture's
    # own geometry or colours (symmetry, a palette); None where there is no canvas (the slider).
    picture: torch.Tensor | None = None
    # How the run encodes (dtype, packed): for a term that runs an encoder of its own on `views`
    # (the aesthetic head's ViT-L/14 in an ensemble that does not guide by it).
    encode: dict = field(default_factory=dict)


class Term:
    """One term of the loss. Subclasses set `name` and implement `loss`; the rest is optional."""

    name: ClassVar[str]
    # Its heading where a user meets it: the studio's expander, its curves ("<name> term" if unset).
    title: ClassVar[str] = ""
    # The caption over its curves in the studio, when the title alone would not say what they show.
    chart_title: ClassVar[str] = ""
    # Readable names of the metrics, for curves and progress lines (a metric without one shows its key).
    labels: ClassVar[dict[str, str]] = {}
    # Readable names of the numbers `final_scores` gives, for tables, reports and summaries.
    score_labels: ClassVar[dict[str, str]] = {}
    # What those numbers are, in a few words, where a person reads one image's scores (the studio).
    score_descriptions: ClassVar[dict[str, str]] = {}
    # A frozen PartSettings dataclass of this term's own settings, or None for a term without any.
    Settings: ClassVar[type | None] = None
    # Metrics whose keys start with this prefix form one distribution (shown as bars, not curves).
    distribution: ClassVar[str | None] = None
    # Marks this term adds to a method's name (DAS-AG + "-CAN"), each with the changes to the
    # term's settings it stands for; the mark "" is the term's state in the images a marked method
    # is compared with (off, but measured).
    method_marks: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def heading(cls) -> str:
        return cls.title or f"{cls.name} term"

    @classmethod
    def steers(cls, config: GenerationConfig) -> bool:
        """Whether this term alone can steer a run with no text prompt (an image prompt does)."""
        return bool(cls.method_mark(config))

    @classmethod
    def method_mark(cls, config: GenerationConfig) -> str:
        """The mark of this term in the name of `config`'s method ("" for none)."""
        if not cls.method_marks:
            return ""
        settings = config.term_settings(cls.name)
        for mark, changes in cls.method_marks.items():
            if mark and all(getattr(settings, k) == v for k, v in changes.items()):
                return mark
        return ""

    def __init__(self, config: GenerationConfig, models: ModelBundle):
        self.config = config
        self.models = models
        self.warnings: tuple[str, ...] = ()  # what the user should know about this run (a prompt cut short)

    @classmethod
    def active(cls, config: GenerationConfig) -> bool:
        """Whether this term takes part in a run of `config` (an inactive one costs nothing)."""
        return True

    @classmethod
    def problems(cls, config: GenerationConfig) -> list[str]:
        """Why `config` cannot run this term, in plain words (empty when it can)."""
        return list(config.term_settings(cls.name).problems()) if cls.Settings is not None else []

    @property
    def settings(self) -> Any:
        return self.config.term_settings(self.name)

    def number(self, value: float) -> torch.Tensor:
        """A setting `loss` multiplies by, as a 0-d tensor on the run's device: make it once, in
        __init__. Compiled for CUDA graphs, a step takes each Python number it reads as a
        constant, so another weight (changed in the studio, say) would compile it again; a tensor
        is an input like the parameters, and the product is the same to the bit."""
        import torch

        return torch.tensor(float(value), device=self.models.device)

    def at_step(self, step: int, steps: int) -> dict[str, float]:
        """Called before step `step` (0-based) of `steps` is computed, outside any compiled code.

        A term whose settings follow a schedule sets this step's values here, and returns the
        metrics it knows on the host (a scheduled weight) by name. `loss` reads no step number:
        a compiled step then runs the same code at every step, with only numbers changing.
        """
        return {}

    def loss(self, inputs: TermInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """This term's contribution to the image's loss (a scalar) and its named metrics (scalar
        tensors; numbers known on the host come from `at_step`). Keep it a function of tensors:
        no host syncs, no shapes that depend on values (a boolean mask's), so it compiles whole."""
        raise NotImplementedError

    def final_scores(self, embedding: torch.Tensor, views: torch.Tensor | None = None) -> dict[str, float | None]:
        """Numbers a user is told about the finished 8-bit image: its unaugmented embedding (1, D),
        and the CLIP-normalised views it was made from (for an encoder that runs on its own)."""
        return {}

    def picture_scores(self, picture: torch.Tensor) -> dict[str, float | None]:
        """Numbers about the finished 8-bit image's own pixels (1, 3, H, W) in [0, 1] (its
        symmetry, a tile's seam), for terms that measure the picture rather than its embedding."""
        return {}

    @classmethod
    def progress(cls, metrics: dict[str, float]) -> str:
        """A short form of this step's metrics for a one-line progress display."""
        return " ".join(f"{cls.labels.get(k, k)}={v:.3f}" for k, v in metrics.items() if v == v)
