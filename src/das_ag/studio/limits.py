"""What the operator lets one visitor of the studio ask of the server, read from the environment.

A visitor's Generate spends the server's device for as long as its run lasts, and a CLIP named in
the form may be a download of gigabytes: both are the operator's to bound. The CLI, run by the
machine's own user, has none of these limits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..config import GenerationConfig
from ..errors import ConfigError
from ..weights import DEFAULT_CLIP_MODEL

ENV_MAX_WORK = "DAS_AG_STUDIO_MAX_WORK"
ENV_DOWNLOADS = "DAS_AG_STUDIO_DOWNLOADS"
ENV_ABANDON_AFTER = "DAS_AG_STUDIO_ABANDON_AFTER"

# Steps x images x pixels of one Generate. 1e9 takes the largest thing the form's defaults make
# (compare 3 methods x 4 variations of the paper preset, 200 steps at 448 px: 0.48e9) with room,
# and refuses, say, 1000 steps at 1024 px: minutes on a GPU, hours on a CPU, for one visitor.
DEFAULT_MAX_WORK = 1_000_000_000
# A page gone this long (a browser that reconnects is gone for a moment) stops its run.
DEFAULT_ABANDON_AFTER = 60.0


def work(configs: Sequence[GenerationConfig]) -> int:
    """Steps x pixels, summed over the images of one Generate."""
    return sum(c.steps * c.image_shape[0] * c.image_shape[1] for c in configs)


def max_work() -> int:
    return _positive(ENV_MAX_WORK, DEFAULT_MAX_WORK, int)


def abandon_after() -> float:
    return _positive(ENV_ABANDON_AFTER, DEFAULT_ABANDON_AFTER, float)


def work_problem(configs: Sequence[GenerationConfig], steps: int | None = None) -> str | None:
    """Why this server refuses the run (one line), or None. `steps`: the steps of each image when
    they are not its config's (a video's frames, all together)."""
    asked = work(configs) if steps is None else sum(steps * c.image_shape[0] * c.image_shape[1] for c in configs)
    allowed = max_work()
    steps = configs[0].steps if steps is None else steps
    if asked <= allowed:
        return None
    images = f"{len(configs)} images x " if len(configs) > 1 else ""
    c = configs[0]
    return (f"This run is too large for this server: {images}{steps} steps x {c.image_shape[1]}x{c.image_shape[0]} px "
            f"is {asked:.2g} pixel-steps, and it allows {allowed:.2g} a run; use fewer steps, images or pixels.")


def downloads() -> frozenset[str]:
    """The CLIP names the studio may download for a visitor: DAS_AG_STUDIO_DOWNLOADS (comma-separated;
    empty for none), by default ViT-L/14 alone. Models already in the cache need no download."""
    text = os.environ.get(ENV_DOWNLOADS)
    if text is None:
        return frozenset({DEFAULT_CLIP_MODEL})
    return frozenset(name.strip() for name in text.split(",") if name.strip())


def _positive(env: str, default, kind):
    text = os.environ.get(env)
    if not text:
        return default
    try:
        value = kind(float(text))
    except ValueError:
        raise ConfigError(f"{env}={text!r} is not a number") from None
    if not value > 0:
        raise ConfigError(f"{env} must be above 0, not {text}")
    return value
