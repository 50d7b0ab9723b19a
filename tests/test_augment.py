import pytest
import torch

from das_ag.augment import AugmentStrength, apply, draw, jittered_windows, normalize
from das_ag.resample import resize

NONE = AugmentStrength(jitter=0, colour_shift=0.0, noise=0.0)


def canvas(size=64, seed=0):
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def views(c, *, copies, resolution, strength, seed, out_size=224):
    """A step's views as the engine makes them: the draws from a seeded generator, then applied."""
    draws = draw(tuple(c.shape[-2:]), copies, resolution, strength, torch.Generator().manual_seed(seed))
    return apply(c, draws, resolution=resolution, out_size=out_size)


def test_batch_shape_and_normalisation():
    c = canvas(256)
    batch = views(c, copies=8, resolution=224, strength=NONE, seed=0)
    assert batch.shape == (8, 3, 224, 224)
    centre = normalize(c[..., 16:240, 16:240])
    assert torch.allclose(batch, centre.expand(8, -1, -1, -1), atol=1e-6)


def test_larger_outputs_are_resized_to_the_encoder_input():
    c = canvas(512)
    batch = views(c, copies=2, resolution=448, strength=NONE, seed=0)
    assert batch.shape == (2, 3, 224, 224)
    assert torch.allclose(batch[0], resize(normalize(c[..., 32:480, 32:480]), 224)[0], atol=1e-5)


def test_jitter_is_a_roll_within_the_margin():
    c = canvas(64)
    views = jittered_windows(c, 48, torch.randint(-5, 6, (2, 32), generator=torch.Generator().manual_seed(1)))
    seen = set()
    for v in views:
        matches = [
            (dy, dx)
            for dy in range(-5, 6)
            for dx in range(-5, 6)
            if torch.equal(v, torch.roll(c[0], (dy, dx), (1, 2))[:, 8:56, 8:56])
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 5  # shifts really vary between copies


def test_colour_shift_stays_in_range():
    c = canvas(64)
    c_strength = AugmentStrength(jitter=0, colour_shift=0.3, noise=0.0)
    batch = views(c, copies=16, resolution=48, strength=c_strength, seed=2, out_size=48)
    base = normalize(c[..., 8:56, 8:56])
    # x * exp(u1) + u2 per copy and channel: recover u1 from two pixels and check |u1|, |u2| <= c.
    for view in batch:
        for ch in range(3):
            x, y = base[0, ch].flatten(), view[ch].flatten()
            scale = (y[1] - y[0]) / (x[1] - x[0])
            shift = y[0] - scale * x[0]
            assert abs(torch.log(scale)) <= 0.3 + 1e-4 and abs(shift) <= 0.3 + 1e-4


def test_noise_has_the_scheduled_sigma():
    c = canvas(256)
    strength = AugmentStrength(jitter=0, colour_shift=0.0, noise=0.5)
    batch = views(c, copies=4, resolution=224, strength=strength, seed=3)
    residual = batch - normalize(c[..., 16:240, 16:240])
    assert residual.std().item() == pytest.approx(0.5, rel=0.02)


def test_same_seed_same_batch_other_seed_other_batch():
    c = canvas(256)
    s = AugmentStrength(jitter=16, colour_shift=0.1, noise=0.2)
    make = lambda seed: views(c, copies=4, resolution=224, strength=s, seed=seed)  # noqa: E731
    assert torch.equal(make(5), make(5))
    assert not torch.equal(make(5), make(6))


def test_gradients_reach_the_canvas():
    c = canvas(256).requires_grad_()
    s = AugmentStrength(jitter=16, colour_shift=0.1, noise=0.2)
    views(c, copies=4, resolution=224, strength=s, seed=0).sum().backward()
    assert c.grad is not None and c.grad.abs().sum() > 0


# -- views of other sizes, stretches, turns and flips -------------------------------------------
def test_a_whole_picture_crop_samples_exactly_the_shifted_window():
    from das_ag.augment import ViewShape, crop_maps, sampled_views

    canvas = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    for picture in (64, (48, 96)):
        d = draw((128, 128), 6, picture, AugmentStrength(4, 0.0, 0.0), torch.Generator().manual_seed(1))
        maps = crop_maps((128, 128), picture if isinstance(picture, tuple) else (picture, picture), d.shifts,
                         ViewShape(), torch.Generator().manual_seed(2), "cpu")
        if picture == 64:  # square: the same windows, to the bit
            assert torch.equal(sampled_views(canvas, picture, maps), jittered_windows(canvas, picture, d.shifts))
        else:  # another shape: each view is a whole short-side square inside the picture
            assert sampled_views(canvas, picture, maps).shape == (6, 3, 48, 48)


def test_legacy_views_draw_nothing_more_and_varied_views_differ():
    from das_ag.augment import ViewShape

    strength = AugmentStrength(4, 0.1, 0.2)
    canvas = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    plain = draw((128, 128), 4, 64, strength, torch.Generator().manual_seed(3))
    legacy = draw((128, 128), 4, 64, strength, torch.Generator().manual_seed(3), shape=ViewShape())
    assert legacy.crops is None and torch.equal(apply(canvas, plain, resolution=64, out_size=64),
                                                apply(canvas, legacy, resolution=64, out_size=64))
    varied = draw((128, 128), 4, 64, strength, torch.Generator().manual_seed(3), shape=ViewShape(0.4, 1.3, 20.0, True))
    # The same shifts, colours and noise (drawn first), then the crops: other views.
    assert torch.equal(varied.shifts, plain.shifts) and torch.equal(varied.noise, plain.noise)
    views = apply(canvas, varied, resolution=64, out_size=64)
    assert views.shape == (4, 3, 64, 64) and not torch.allclose(views, apply(canvas, plain, resolution=64, out_size=64))


def test_a_small_crop_magnifies_and_a_flip_mirrors():
    from das_ag.augment import ViewShape, crop_maps, sampled_views

    # A picture whose left half is dark and right half bright, in a canvas with a margin.
    canvas = torch.zeros(1, 3, 128, 128)
    canvas[..., 32:96, 64:96] = 1.0
    shifts = torch.zeros(2, 64, dtype=torch.long)
    maps = crop_maps((128, 128), (64, 64), shifts, ViewShape(crop_min=0.3, flip=True), torch.Generator().manual_seed(0), "cpu")
    scale = maps[:, 0, 0].abs()
    assert scale.min() >= 0.3 * 64 / 128 - 1e-6 and scale.max() <= 64 / 128 + 1e-6  # sides from 0.3 to 1 of 64 px
    assert (maps[:, 0, 0] < 0).any() and (maps[:, 0, 0] > 0).any()  # some views mirrored, some not
    whole = crop_maps((128, 128), (64, 64), shifts[:, :2], ViewShape(flip=True), torch.Generator().manual_seed(5), "cpu")
    views = sampled_views(canvas, 64, whole)
    for view, m in zip(views, whole):
        bright_right = view[0, :, 40:].mean() > view[0, :, :24].mean()
        assert bright_right == bool(m[0, 0] > 0)  # a mirrored whole view has the bright half on the left


def test_whole_views_are_the_shifted_windows_and_leave_the_other_views_as_they_were():
    from das_ag.augment import ViewShape

    strength, varied = AugmentStrength(4, 0.0, 0.0), ViewShape(0.4, 1.3, 20.0, True)
    canvas = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    windows = apply(canvas, draw((128, 128), 6, 64, strength, torch.Generator().manual_seed(3)), resolution=64, out_size=64)
    without = apply(canvas, draw((128, 128), 6, 64, strength, torch.Generator().manual_seed(3), shape=varied),
                    resolution=64, out_size=64)
    with_two = apply(canvas, draw((128, 128), 6, 64, strength, torch.Generator().manual_seed(3),
                                  shape=ViewShape(0.4, 1.3, 20.0, True, whole=2)), resolution=64, out_size=64)
    # The first two are the whole picture, shifted, to the bit; the others the crops they were.
    assert torch.equal(with_two[:2], windows[:2]) and torch.equal(with_two[2:], without[2:])
    assert not torch.allclose(without[:2], windows[:2])
    # More whole views than views a step: every view is whole.
    every = apply(canvas, draw((128, 128), 6, 64, strength, torch.Generator().manual_seed(3),
                               shape=ViewShape(0.4, 1.3, 20.0, True, whole=10)), resolution=64, out_size=64)
    assert torch.equal(every, windows)
    # Whole views alone (crops never vary) are the windows of releases before views varied.
    assert not ViewShape(whole=3).varies and ViewShape(whole=3, flip=True).varies


def test_gradients_reach_the_canvas_through_varied_views():
    from das_ag.augment import ViewShape

    canvas = torch.rand(1, 3, 128, 128, requires_grad=True)
    d = draw((128, 128), 4, 64, AugmentStrength(4, 0.1, 0.1), torch.Generator().manual_seed(0),
             shape=ViewShape(0.5, 1.2, 15.0, True))
    apply(canvas, d, resolution=64, out_size=64).sum().backward()
    assert canvas.grad is not None and canvas.grad[..., 32:96, 32:96].abs().sum() > 0


def test_recipes_from_before_views_varied_keep_the_views_they_were_made_with():
    from das_ag.config import LEGACY_VIEWS, VIEW_FIELDS, GenerationConfig
    from das_ag.prompts import Prompt

    config = GenerationConfig(prompts=(Prompt("a kite"),), crop_min=0.5, view_flip=True)
    assert GenerationConfig.from_dict(config.to_dict()) == config
    old = {k: v for k, v in config.to_dict().items() if k not in VIEW_FIELDS}
    assert tuple(getattr(GenerationConfig.from_dict(old), k) for k in VIEW_FIELDS) == LEGACY_VIEWS


@pytest.mark.parametrize("changes, said", [
    (dict(crop_min=0.05), "crop min must be a number from 0.1 to 1"),
    (dict(crop_aspect=3.0), "crop aspect must be a number from 1 to 2"),
    (dict(view_turn=-5.0), "view turn must be a number from 0 to 180"),
    (dict(view_flip="yes"), "view flip must be true or false"),
    (dict(whole_views=-1), "whole views must be a whole number from 0 to 256"),
])
def test_bad_view_settings_are_one_line(changes, said):
    from das_ag.config import GenerationConfig
    from das_ag.errors import ConfigError
    from das_ag.prompts import Prompt

    with pytest.raises(ConfigError, match=said):
        GenerationConfig(prompts=(Prompt("a kite"),), **changes)


def test_varied_views_from_the_cli_go_into_the_recipe_and_make_the_same_bytes_again(weights_env, tmp_path):
    from das_ag.cli import main
    from das_ag.png import read_recipe

    out = tmp_path / "v.png"
    args = ["generate", "--prompt", "a kite", "--steps", "3", "--copies", "2", "--resolution", "64", "--device", "cpu",
            "--crop-min", "0.7", "--crop-aspect", "1.2", "--view-turn", "5", "--no-view-flip", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    config = read_recipe(out)["config"]
    assert (config["crop_min"], config["crop_aspect"], config["view_turn"], config["view_flip"]) == (0.7, 1.2, 5.0, False)
    again = tmp_path / "again.png"
    assert main(["generate", "--from-png", str(out), "--out", str(again), "--quiet"]) == 0
    assert again.read_bytes() == out.read_bytes()
    plain = tmp_path / "plain.png"
    assert main([*args[:-8], "--quiet", "--out", str(plain)]) == 0
    assert plain.read_bytes() != out.read_bytes()
    # Today's defaults vary the views too, and a recipe says so: crops from half the side,
    # flips, turns of up to 15 degrees (bench/transfer.py).
    config = read_recipe(plain)["config"]
    assert (config["crop_min"], config["crop_aspect"], config["view_turn"], config["view_flip"]) == (0.5, 1.0, 15.0, True)
