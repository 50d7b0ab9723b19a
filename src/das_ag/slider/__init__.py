"""The aesthetic slider: a LoRA for a Stable Diffusion checkpoint, trained so that the images it
makes score higher (or, with the penalty sign, lower) under das-ag's own score, then used at any
weight (-1 lowers, +1 raises).

Optional: `uv sync --extra slider` (diffusers, peft, transformers, safetensors). Nothing else in
das-ag imports this package, but for cli.py adding its commands (commands.py, which needs no extra).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..errors import ConfigError, DasAgError

EXTRA_HINT = "the slider needs its optional extra: run `uv sync --extra slider` (diffusers, peft, transformers, safetensors)"


def require_extra() -> None:
    """One line, not a traceback, when the extra is not installed."""
    try:
        import diffusers  # noqa: F401
        import peft  # noqa: F401
        import safetensors  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise DasAgError(f"{EXTRA_HINT}; missing {exc.name}") from None


def existing(path, what: str, *, folder_ok: bool = False) -> Path:
    """`path`, or one line saying that the `what` is not there (a base model may be a folder; a
    LoRA or a latent scorer is a file)."""
    path = Path(path)
    if not (path.exists() if folder_ok else path.is_file()):
        raise ConfigError(f"{what} {path} does not exist")
    return path


def one_line(exc: BaseException, width: int = 200) -> str:
    """A library's (often multi-line) message as one short line."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return (text or type(exc).__name__)[:width]


@contextlib.contextmanager
def quiet_libraries(errors_too: bool = False):
    """diffusers' and transformers' warnings silenced for the duration (and, `errors_too`, what
    diffusers logs as errors before raising them, which das-ag says in one line instead); their
    exceptions still raised."""
    import diffusers.utils.logging
    import transformers.utils.logging

    verbosity = diffusers.utils.logging.get_verbosity(), transformers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity(diffusers.utils.logging.CRITICAL if errors_too else diffusers.utils.logging.ERROR)
    transformers.utils.logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers.utils.logging.set_verbosity(verbosity[0])
        transformers.utils.logging.set_verbosity(verbosity[1])
