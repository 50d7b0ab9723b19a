"""The stroke rasteriser on its own: tiled equals dense, exact gradients, SVG's paint order."""

from __future__ import annotations

import pytest
import torch

from das_ag.canvases.rasterise import TILE, polylines, render, render_dense


def random_strokes(batch=2, strokes=12, segments=2, size=48, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    first = torch.rand(batch, strokes, 1, 2, generator=g, dtype=dtype) * size
    steps = torch.randn(batch, strokes, 3 * segments, 2, generator=g, dtype=dtype) * size / 12
    points = torch.cat([first, first + torch.cumsum(steps, dim=2)], dim=2)
    widths = torch.rand(batch, strokes, generator=g, dtype=dtype) * 5 + 0.5
    colours = torch.rand(batch, strokes, 3, generator=g, dtype=dtype)
    opacity = torch.rand(batch, strokes, generator=g, dtype=dtype) * 0.8 + 0.2
    return points, widths, colours, opacity


@pytest.mark.parametrize("size", [48, (40, 37), 17])
@pytest.mark.parametrize("softness", [1.0, 0.25])
def test_tiled_render_equals_the_dense_one(size, softness):
    h, w = (size, size) if isinstance(size, int) else size
    points, widths, colours, opacity = random_strokes(size=max(h, w))
    background = torch.tensor([0.9, 0.8, 0.7])
    tiled = render(points, widths, colours, opacity, background, size, softness=softness)
    dense = render_dense(points, widths, colours, opacity, background, size, softness=softness)
    assert tiled.shape == dense.shape == (2, 3, h, w)
    assert torch.allclose(tiled, dense, atol=1e-6, rtol=0)
    assert (tiled - background.view(1, 3, 1, 1)).abs().amax() > 0.5  # strokes were drawn at all


def test_tiled_gradients_equal_the_dense_ones():
    inputs = [t.requires_grad_() for t in random_strokes(batch=1, strokes=6)]
    background = torch.ones(3)
    weights = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    tiled = torch.autograd.grad((render(*inputs, background, 48) * weights).sum(), inputs)
    dense = torch.autograd.grad((render_dense(*inputs, background, 48) * weights).sum(), inputs)
    for a, b in zip(tiled, dense):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
        assert a.abs().sum() > 0


def test_gradients_are_exact_in_float64():
    points, widths, colours, opacity = random_strokes(batch=1, strokes=3, segments=1, size=10, seed=3, dtype=torch.float64)
    inputs = (points.requires_grad_(), (widths + 1).requires_grad_(), colours.requires_grad_(),
              opacity.requires_grad_(), torch.rand(3, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(lambda *x: render(*x, 10, softness=0.7, samples=4), inputs, atol=1e-6)


def test_strokes_paint_in_z_order_over_the_background():
    # Two opaque strokes crossing at the centre: the later one is on top, as in an SVG.
    points = torch.tensor([[[[4.0, 16], [12, 16], [20, 16], [28, 16]], [[16, 4], [16, 12], [16, 20], [16, 28]]]])
    colours = torch.tensor([[[1.0, 0, 0], [0, 0, 1.0]]])
    image = render(points, torch.tensor([[6.0, 6.0]]), colours, torch.ones(1, 2), torch.ones(3), 32, softness=0.25)
    assert torch.allclose(image[0, :, 15, 15], torch.tensor([0.0, 0, 1]), atol=1e-3)  # blue over red
    assert torch.allclose(image[0, :, 15, 6], torch.tensor([1.0, 0, 0]), atol=1e-3)  # red alone
    assert torch.allclose(image[0, :, 2, 2], torch.ones(3))  # the background
    swapped = render(points.flip(1), torch.tensor([[6.0, 6.0]]), colours.flip(1), torch.ones(1, 2), torch.ones(3), 32,
                     softness=0.25)
    assert torch.allclose(swapped[0, :, 15, 15], torch.tensor([1.0, 0, 0]), atol=1e-3)


def test_a_translucent_stroke_blends_with_what_lies_below():
    points = torch.tensor([[[[2.0, 8], [6, 8], [10, 8], [14, 8]]]])
    image = render(points, torch.tensor([[8.0]]), torch.tensor([[[1.0, 0, 0]]]), torch.tensor([[0.5]]),
                   torch.tensor([0.0, 0, 1]), 16, softness=0.25)
    assert torch.allclose(image[0, :, 8, 8], torch.tensor([0.5, 0, 0.5]), atol=1e-3)


def test_strokes_off_the_canvas_leave_the_background():
    points = torch.full((1, 2, 4, 2), -100.0)
    image = render(points, torch.ones(1, 2), torch.zeros(1, 2, 3), torch.ones(1, 2), torch.tensor([0.2, 0.4, 0.6]), 32)
    assert torch.equal(image, torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1).expand(1, 3, 32, 32))


def test_a_batch_renders_each_image_as_alone():
    points, widths, colours, opacity = random_strokes(batch=3, strokes=8)
    background = torch.tensor([[1.0, 1, 1], [0, 0, 0], [0.5, 0.5, 0.5]])
    together = render(points, widths, colours, opacity, background, 48)
    for i in range(3):
        alone = render(points[i:i + 1], widths[i:i + 1], colours[i:i + 1], opacity[i:i + 1], background[i], 48)
        assert torch.allclose(together[i:i + 1], alone, atol=1e-6)


def test_the_same_strokes_render_the_same_bits_and_gradients():
    def once():
        inputs = [t.clone().requires_grad_() for t in random_strokes(batch=1, strokes=32, size=64)]
        image = render(*inputs, torch.ones(3), 64)
        grads = torch.autograd.grad(image.square().sum(), inputs)
        return image, grads

    (a, ga), (b, gb) = once(), once()
    assert torch.equal(a, b) and all(torch.equal(x, y) for x, y in zip(ga, gb))


def test_polylines_pass_through_the_curve_ends():
    points = torch.tensor([[0.0, 0], [1, 2], [3, 2], [4, 0], [5, -2], [7, -2], [8, 0]])
    line = polylines(points, 8)
    assert line.shape == (17, 2)
    assert torch.allclose(line[0], points[0]) and torch.allclose(line[8], points[3]) and torch.allclose(line[-1], points[6])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_renders_repeat_bit_for_bit():
    from das_ag import determinism

    def once():
        inputs = [t.cuda().requires_grad_() for t in random_strokes(batch=1, strokes=128, size=256 - TILE)]
        with determinism.deterministic_algorithms(True, torch.device("cuda")):
            image = render(*inputs, torch.ones(3, device="cuda"), 256)
            grads = torch.autograd.grad(image.square().sum(), inputs)
        return image, grads

    (a, ga), (b, gb) = once(), once()
    assert torch.equal(a, b) and all(torch.equal(x, y) for x, y in zip(ga, gb))
