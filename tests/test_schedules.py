import math

import pytest

from das_ag.schedules import SCHEDULE_KINDS, Schedule, schedule_value


@pytest.mark.parametrize("kind", ["linear", "exp_decay", "exp_warmup", "cosine"])
def test_every_form_starts_at_start(kind):
    assert schedule_value(kind, 0.2, 0.5, 0.03, 0, 100) == pytest.approx(0.2)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_forms_with_an_end_reach_it_at_the_last_step(kind):
    assert schedule_value(kind, 0.2, 0.5, 0.03, 100, 100) == pytest.approx(0.5)


def test_exp_decay_approaches_its_end_early_and_warmup_late():
    decay = [schedule_value("exp_decay", 0.0, 3.0, 0.06, t, 200) for t in range(200)]
    warm = [schedule_value("exp_warmup", 0.0, 3.0, 0.06, t, 200) for t in range(200)]
    assert decay[50] > 2.8 and decay[-1] < 3.0
    assert warm[50] < 0.1 and warm[-1] > 2.8
    assert all(b >= a for a, b in zip(decay, decay[1:]))
    assert all(b >= a for a, b in zip(warm, warm[1:]))


def test_reference_formulas():
    a, b, r, T = 0.05, 0.30, 0.03, 100
    for t in (0, 7, 50, 99):
        assert schedule_value("exp_decay", a, b, r, t, T) == pytest.approx((a - b) * (1 - r) ** t + b)
        assert schedule_value("exp_warmup", a, b, r, t, T) == pytest.approx(
            (b - a) * (1 - r) ** (T - t) + a - (b - a) * (1 - r) ** T
        )
        assert schedule_value("cosine", a, b, r, t, T) == pytest.approx(b + (a - b) * (1 + math.cos(math.pi * t / T)) / 2)


def test_constant_ignores_the_end():
    assert Schedule.constant(2.5).at(77, 100) == 2.5


def test_problems_name_the_bad_part():
    assert Schedule().problems("noise") == []
    assert "one of" in Schedule("wobbly").problems("noise")[0]
    assert "between 0 and 1" in Schedule("exp_decay", 0, 1, 1.5).problems("noise")[0]
    assert "finite" in Schedule("linear", float("nan"), 1).problems("noise")[0]
    assert set(SCHEDULE_KINDS) >= {"linear", "exp_decay", "exp_warmup", "cosine"}
