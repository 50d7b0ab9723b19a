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
