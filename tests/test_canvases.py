"""A canvas defined here, in a test module alone, is optimised by the engine and saves its files."""

from __future__ import annotations

import pytest
import torch

from das_ag.canvases import CANVASES, Canvas, register_canvas
from das_ag.engine import synthesize
from das_ag.png import read_recipe

from .conftest import small_config


class FlatCanvas(Canvas):
    """One colour everywhere: three numbers, squashed into [0, 1]."""

    name = "flat"

    @classmethod
    def from_config(cls, config, generator):
        return cls(config.canvas_size, config.resolution, torch.randn(1, 3, 1, 1, generator=generator))

    def __init__(self, size, resolution, colour):
        super().__init__()
        self.size, self.resolution = size, resolution
        self.colour = torch.nn.Parameter(colour)

    def param_groups(self, lr):
        return [{"params": [self.colour], "lr": lr * 2}]

    def forward(self):
        return torch.sigmoid(self.colour).expand(1, 3, self.size, self.size)

    def exports(self):
        rgb = [round(float(v), 6) for v in torch.sigmoid(self.colour.detach()).flatten()]
        return {".txt": lambda recipe: f"{rgb} seed {recipe['config']['seed']}\n".encode()}


@pytest.fixture
def flat():
    register_canvas(FlatCanvas)
    yield
    CANVASES.pop("flat")


def test_a_registered_canvas_is_optimised_and_saves_its_own_files(flat, models, tmp_path):
    config = small_config(canvas="flat", steps=20, seed=4, terms={"aesthetic": {"guidance": "reward"}})
    run = synthesize(config, models)
    events = list(run)
    assert events[0].lr == pytest.approx(2 * config.lr)  # the canvas's own learning-rate group
    result = run.result()
    assert result.image.size == (224, 224) and all(lo == hi for lo, hi in result.image.getextrema())
    assert result.scores.aesthetic != result.initial_scores.aesthetic
    path = result.save(tmp_path / "flat.png")
    assert read_recipe(path)["config"]["canvas"] == "flat"
    assert (tmp_path / "flat.txt").read_text().endswith("seed 4\n")
    with pytest.raises(Exception, match="already exists"):
        result.save(tmp_path / "flat.png")


def test_an_unknown_canvas_is_refused_in_one_sentence():
    from das_ag.errors import ConfigError

    with pytest.raises(ConfigError, match="canvas must be one of pyramid"):
        small_config(canvas="watercolour")


def test_a_config_always_holds_its_canvas_s_own_settings():
    from das_ag.canvases.pyramid import PyramidSettings
    from das_ag.canvases.strokes import StrokeSettings

    pyramid = small_config()
    assert pyramid.canvas_settings == PyramidSettings()  # its defaults, not None
    strokes = pyramid.replace(canvas="strokes")  # the pyramid's defaults say nothing: the strokes' own
    assert strokes.canvas_settings == StrokeSettings()
    assert strokes.replace(canvas="pyramid") == pyramid
    from das_ag.errors import ConfigError

    with pytest.raises(ConfigError, match="must be a StrokeSettings"):
        small_config(canvas_settings={"fill": "zeros"}).replace(canvas="strokes")  # real pyramid settings are kept
    with pytest.warns(DeprecationWarning, match="canvas_options is deprecated"):
        assert strokes.canvas_options is strokes.canvas_settings
