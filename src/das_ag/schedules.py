"""Scalar schedules that move a knob from `start` to `end` over a run of `steps` steps.

The four forms are the ones the DAS-AG reference uses (reference-algorithm.md, section 3.1).
They are pure functions of the step so that a run can be resumed or replayed exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULE_KINDS = ("constant", "linear", "exp_decay", "exp_warmup", "cosine")


@dataclass(frozen=True)
class Schedule:
    """A value that moves from `start` towards `end`; `rate` shapes the exponential forms."""

    kind: str = "constant"
    start: float = 0.0
    end: float = 0.0
    rate: float = 0.03

    @classmethod
    def constant(cls, value: float) -> Schedule:
        return cls("constant", value, value)

    def problems(self, name: str) -> list[str]:
        """Plain-language reasons this schedule is unusable (empty when it is fine)."""
        out = []
        if self.kind not in SCHEDULE_KINDS:
            out.append(f"{name} schedule must be one of {', '.join(SCHEDULE_KINDS)}, not {self.kind!r}")
        for label, v in (("start", self.start), ("end", self.end), ("rate", self.rate)):
            if not is_finite_number(v):
                out.append(f"{name} {label} must be a finite number, not {v!r}")
        if is_finite_number(self.rate) and not 0.0 < self.rate < 1.0 and self.kind in ("exp_decay", "exp_warmup"):
            out.append(f"{name} rate must lie strictly between 0 and 1, not {self.rate!r}")
        return out

    def at(self, step: int, steps: int) -> float:
        """The value at `step` (0-based) of a run of `steps` steps."""
        return schedule_value(self.kind, self.start, self.end, self.rate, step, steps)


def schedule_value(kind: str, start: float, end: float, rate: float, step: int, steps: int) -> float:
    a, b, r, t, T = start, end, rate, step, max(steps, 1)
    if kind == "constant":
        return a
    if kind == "linear":
        return a + (b - a) * t / T
    if kind == "exp_decay":
        # Starts at a and approaches b quickly: most of the change happens early.
        return (a - b) * (1 - r) ** t + b
    if kind == "exp_warmup":
        # Starts at a, changes slowly and then fast: most of the change happens late. It ends at
        # b - (b - a)(1 - r)^T, short of b by less than 5% for r * T >= 3.
        return (b - a) * (1 - r) ** (T - t) + a - (b - a) * (1 - r) ** T
    if kind == "cosine":
        return b + (a - b) * (1 + math.cos(math.pi * t / T)) / 2
    raise ValueError(f"unknown schedule kind {kind!r}")


def is_finite_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
