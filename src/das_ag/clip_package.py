"""The `clip` package, imported once with its pkg_resources deprecation warning silenced."""

from __future__ import annotations

import functools
import warnings


@functools.cache
def clip_module():
    with warnings.catch_warnings():
        # clip imports pkg_resources (hence setuptools<81), which warns on every import.
        warnings.simplefilter("ignore")
        import clip
    return clip
