"""The style-ambiguity term ("creativity"): an image is creative when a style classifier cannot
tell which style it belongs to ("Style Ambiguity Loss Using CLIP", Baker).

The classifier needs no training. Text labels: p = softmax(cos(image, label) / T), T = 1/100 by
default (OpenAI CLIP's logit scale, fixed here rather than read from a model: a random CLIP's is
14). Centroids of the user's pictures: p = softmax(1 / (T * distance)), T = 1 by default as
published (nearly flat: a smaller T sharpens it).

reward (more ambiguous) minimises KL(U || p) = CE(U, p) - log K, which is 0 at the uniform p: the
paper's reward -CE(U, p), up to a constant. penalty (commit to one style) minimises the entropy
H(p), which is bounded, where -KL would push the least likely style's logit without limit.
Both are averaged over the step's augmented views, read from the step's one encoder forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..schedules import is_finite_number
from ..settings import PartSettings, Upload, setting
from .base import Term, TermInputs

AMBIGUITY_GUIDANCE = ("reward", "penalty", "off")
TEXT_TEMPERATURE = 0.01  # 1 / OpenAI CLIP's logit scale (100)
CENTROID_TEMPERATURE = 1.0  # as published
TOP_STYLES = 5  # styles a finished image's scores list


@dataclass(frozen=True)
class AmbiguitySettings(PartSettings):
    guidance: str = setting("off", group="creativity", choices=AMBIGUITY_GUIDANCE, flag="--ambiguity",
                            label="Style ambiguity",
                            help="reward: spread over the styles (creative, DAS-CAN); penalty: commit to one; off")
    weight: float = setting(0.25, group="creativity", minimum=0.0, maximum=100.0, step=0.05,
                            help="weight of the style-ambiguity term")
    styles: str = setting("wikiart", group="creativity", flag="--styles", metavar="wikiart|FILE.txt",
                          upload=Upload("Style labels (a .txt, one per line)", "style list", ("txt",)),
                          help="the styles: wikiart (the 27 WikiArt styles) or a text file, one label per line")
    centroids: str = setting("", group="creativity", flag="--centroids", studio=False, metavar="FILE.npz",
                             upload=Upload("Style centroids (from das-ag centroids build)", "centroid file", ("npz",)),
                             help="style centroids from `das-ag centroids build` (used instead of --styles)")
    # Filled in from the file: a recipe notices when its centroid file changed.
    centroids_sha256: str = setting("", group="creativity", flag="", studio=False, checksum_of="centroids",
                                    help="the centroid file's sha256")
    template: str = setting("{label}", group="creativity", flag="--style-template", label="Label template",
                            help='how a label becomes text for CLIP, e.g. "a {label} painting" (default: the label)')
    temperature: float | None = setting(None, group="creativity", minimum=1e-4, maximum=100.0, flag="--style-temperature",
                                        format="%.4f", help="the classifier's softmax temperature "
                                        "(default 0.01 for labels, CLIP's logit scale; 1 for centroids, as published)")
    # On in the off state of a comparison (DAS beside DAS-CAN), so every image reports its styles.
    measure: bool = setting(False, group="creativity", flag="--measure-styles", studio=False,
                            help="report the style distribution even when the term is off")

    @classmethod
    def files_in(cls, values: dict) -> list[str]:
        from ..styles import BUILT_IN_STYLES

        # A built-in style list (wikiart) is a name, not a file.
        return [f for f in super().files_in(values) if f not in BUILT_IN_STYLES]

    def __post_init__(self):
        if self.centroids and not self.centroids_sha256:
            from ..weights import file_sha256

            object.__setattr__(self, "centroids_sha256", file_sha256(self.centroids) or "")


    def problems(self) -> list[str]:
        from ..errors import ConfigError
        from ..styles import Centroids, load_labels

        p: list[str] = []
        if self.guidance not in AMBIGUITY_GUIDANCE:
            p.append(f"ambiguity must be one of {', '.join(AMBIGUITY_GUIDANCE)}, not {self.guidance!r}")
        if not is_finite_number(self.weight) or self.weight < 0:
            p.append(f"the ambiguity weight must be a finite number >= 0, not {self.weight!r}")
        if self.temperature is not None and (not is_finite_number(self.temperature) or self.temperature <= 0):
            p.append(f"the style temperature must be a positive number, not {self.temperature!r}")
        if "{label}" not in str(self.template):
            p.append(f"the style template must contain {{label}}, not {self.template!r}")
        if self.guidance == "off" and not self.measure:
            return p  # the sources are only read when the term takes part
        try:
            if self.centroids:
                Centroids.load(self.centroids)
                from ..weights import file_sha256

                if self.centroids_sha256 and file_sha256(self.centroids) != self.centroids_sha256:
                    p.append(f"centroid file {self.centroids} has changed since these settings were made")
            else:
                load_labels(self.styles)
        except ConfigError as exc:
            p.append(str(exc))
        return p


def style_kl(log_p: torch.Tensor) -> torch.Tensor:
    """KL(U || p) per row of log-probabilities: CE(U, p) - log K, 0 exactly when p is uniform.
    (The other argument order, CE(p, U), is the constant log K: no gradient at all.)"""
    return -log_p.mean(dim=-1) - math.log(log_p.shape[-1])


def style_entropy(log_p: torch.Tensor) -> torch.Tensor:
    """H(p) per row: in [0, log K], so minimising it commits to a style without running away."""
    return -(log_p.exp() * log_p).sum(dim=-1)


class AmbiguityTerm(Term):
    name = "ambiguity"
    title = "Creativity: style ambiguity (DAS-CAN)"
    chart_title = "style distribution (now) and its entropy"
    score_labels = {"style_entropy": "style entropy", "style_kl": "style KL"}
    labels = {"entropy": "style H", "kl": "style KL"}
    score_descriptions = {"style_entropy": "style entropy (higher: more ambiguous)", "style_kl": "KL(uniform || styles)"}
    Settings = AmbiguitySettings
    distribution = "p:"  # the metrics "p:<style>" are one distribution over the styles
    # Method names: DAS-CAN (creative adversarial, as the paper's lineage calls it) and its
    # penalty; "" is the term off but measured, for the images it is compared with.
    method_marks = {"-CAN": {"guidance": "reward"}, "-rCAN": {"guidance": "penalty"},
                    "": {"guidance": "off", "measure": True}}

    @classmethod
    def active(cls, config):
        settings = config.term_settings(cls.name)
        return settings.guidance != "off" or settings.measure

    def __init__(self, config, models):
        super().__init__(config, models)
        from ..prompts import tokenize
        from ..styles import Centroids, load_labels

        s = self.settings
        self.warnings = ()
        if s.centroids:
            centroids = Centroids.load(s.centroids)
            centroids.check(models, f"the centroids in {s.centroids}")
            self.centres = torch.from_numpy(centroids.centroids).to(models.device)
            self.names = [f"cluster {i + 1}" for i in range(centroids.k)]
            self.temperature = s.temperature or CENTROID_TEMPERATURE
        else:
            self.names = load_labels(s.styles)
            tokens, warnings = tokenize([s.template.replace("{label}", label) for label in self.names])
            self.warnings = tuple(warnings)
            with torch.no_grad():
                self.label_features = models.encode_texts(tokens)
            self.temperature = s.temperature or TEXT_TEMPERATURE
        self.sign = {"reward": 1, "penalty": -1, "off": 0}[s.guidance]
        self.counts = self.sign != 0 and s.weight != 0
        self.weight = self.number(s.weight)

    def log_probabilities(self, embeddings: torch.Tensor) -> torch.Tensor:
        """log p over the styles for each embedding: (N, K)."""
        if self.settings.centroids:
            distance = torch.cdist(embeddings.float(), self.centres)
            logits = 1 / ((distance + 1e-6) * self.temperature)
        else:
            logits = embeddings.float() @ self.label_features.t() / self.temperature
        return torch.log_softmax(logits, dim=-1)

    def loss(self, inputs: TermInputs):
        log_p = self.log_probabilities(inputs.embeddings)
        kl, entropy = style_kl(log_p).mean(), style_entropy(log_p).mean()  # averaged over the views
        p = log_p.exp().mean(dim=0)
        metrics = {"entropy": entropy, "kl": kl, **{f"p:{name}": p[i] for i, name in enumerate(self.names)}}
        if not self.counts:
            return kl.new_zeros(()), metrics
        return self.weight * (kl if self.sign > 0 else entropy), metrics

    def final_scores(self, embedding, views=None):
        log_p = self.log_probabilities(embedding)[0]
        p = log_p.exp()
        order = torch.argsort(p, descending=True)[:TOP_STYLES].tolist()
        return {
            "style_entropy": float(style_entropy(log_p)),
            "style_kl": float(style_kl(log_p)),
            "styles": [{"label": self.names[i], "p": float(p[i])} for i in order],
        }

    @classmethod
    def progress(cls, metrics):
        styles = {k[2:]: v for k, v in metrics.items() if k.startswith("p:")}
        top = max(styles, key=styles.get) if styles else ""
        return f"styleH={metrics['entropy']:.2f}" + (f" {top}={styles[top]:.2f}" if top else "")
