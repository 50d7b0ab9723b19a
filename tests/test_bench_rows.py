"""bench/transfer.py's rows stay runnable as the settings they name evolve: a row that no longer
makes a valid config fails here, not an hour into a benchmark (the no-augment row's float noise
did, once config took only schedules)."""

import importlib.util
from pathlib import Path

import pytest

from das_ag.schedules import Schedule

BENCH = Path(__file__).resolve().parents[1] / "bench" / "transfer.py"


@pytest.fixture(scope="module")
def transfer():
    spec = importlib.util.spec_from_file_location("bench_transfer", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("table", ["PIXELS", "STROKES"])
def test_every_row_of_the_transfer_bench_makes_its_configs(transfer, table):
    for name, settings in getattr(transfer, table).items():
        settings = {k: v for k, v in settings.items() if k != "helper"}  # the ensemble's weight, not a config field
        made = transfer.configs(settings, [0, 1], steps=150)
        assert len(made) == 2 * len(transfer.CAPTIONS), name
        assert {c.seed for c in made} == {0, 1} and made[0].resolution == 64, name


def test_a_row_sets_what_it_names(transfer):
    colour_off = transfer.configs(transfer.PIXELS["default+colour-off"], [0], steps=150)[0]
    assert colour_off.colour_shift == Schedule.constant(0.0)
    assert transfer.configs(transfer.PIXELS["default"], [0], steps=150)[0].colour_shift != colour_off.colour_shift
    strokes = transfer.configs(transfer.STROKES["default"], [0], steps=150)[0]
    assert strokes.canvas == "strokes"
