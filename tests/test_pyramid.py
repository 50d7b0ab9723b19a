import pytest
import torch
import torch.nn.functional as F

from das_ag.canvases import from_pil, to_pil
from das_ag.canvases.pyramid import PyramidCanvas, level_sizes
from das_ag.resample import resample_matrix, resize


def test_level_sizes():
    assert level_sizes(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert level_sizes(8, "all") == list(range(1, 9))


def test_shapes_and_range():
    img = PyramidCanvas(256, 224, generator=torch.Generator().manual_seed(0))
    assert [tuple(p.shape) for p in img.levels][:3] == [(1, 3, 1, 1), (1, 3, 2, 2), (1, 3, 4, 4)]
    canvas = img()
    assert canvas.shape == (1, 3, 256, 256)
    assert 0 <= canvas.min() and canvas.max() <= 1
    assert img.image().size == (224, 224)


def test_normal_init_scales_each_level_by_its_size():
    img = PyramidCanvas(256, 224, generator=torch.Generator().manual_seed(0))
    stds = {h: p.std().item() for (h, w), p in zip(img.shapes, img.levels) if h >= 32 and h == w}
    for s, std in stds.items():
        assert std == pytest.approx(1 / s, rel=0.2)


def test_zero_init_is_mid_grey():
    img = PyramidCanvas(64, 48, fill="zeros")
    assert torch.equal(img(), torch.full((1, 3, 64, 64), 0.5))


def test_sum_is_mean_times_level_count():
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    mean = PyramidCanvas(64, 48, combine="mean", generator=g()).raw()
    total = PyramidCanvas(64, 48, combine="sum", generator=g()).raw()
    assert torch.allclose(total, mean * 7, atol=1e-5)


def test_output_uses_the_full_8_bit_range():
    # The reference squashed into about mean +- 1 std (8-bit ~35..190); das-ag must reach 0 and 255.
    img = PyramidCanvas(64, 48, fill="zeros")
    with torch.no_grad():
        img.levels[-1][:, :, :, :32] = -100.0
        img.levels[-1][:, :, :, 32:] = 100.0
    pixels = from_pil(img.image()) * 255
    assert pixels.min() == 0 and pixels.max() == 255


def test_levels_are_upsampled_like_interpolate():
    img = PyramidCanvas(32, 24, fill="zeros", combine="sum", interpolation="bicubic")
    with torch.no_grad():
        img.levels[2].copy_(torch.randn(1, 3, 4, 4))
    expected = F.interpolate(img.levels[2].detach(), size=(32, 32), mode="bicubic", align_corners=False)
    assert torch.allclose(img.raw(), expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("src, dst", [(4, 32), (7, 30), (64, 64)])
def test_resample_matrix_matches_interpolate(mode, src, dst):
    x = torch.randn(2, 3, src, src)
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    expected = F.interpolate(x, size=(dst, dst), mode=mode, **kwargs)
    assert torch.allclose(resize(x, dst, mode, antialias=False), expected, atol=1e-5)


def test_downsampling_matches_antialiased_interpolate():
    x = torch.randn(1, 3, 448, 448)
    expected = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(resize(x, 224), expected, atol=1e-5)
    assert resample_matrix(5, 5).equal(torch.eye(5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_compiled_step_resizes_and_normalises_with_the_eager_numbers(dtype):
    # Traced into a compiled step, the resize matrices and CLIP's per-channel numbers are built
    # in the graph (torch 2.11 could not hold them as constants); they must be the eager ones.
    from das_ag.models import CLIP_MEAN, CLIP_STD, per_channel
    from das_ag.resample import resample_matrix_on

    def constants(x):
        return (resample_matrix_on(448, 224, "bilinear", True, x.device, dtype),
                resample_matrix_on(56, 448, "bicubic", False, x.device, dtype),
                resample_matrix_on(7, 30, "nearest", False, x.device, dtype),
                per_channel(CLIP_MEAN, x.device, dtype), per_channel(CLIP_STD, x.device, dtype))

    x = torch.zeros(1)
    compiled, eager = torch.compile(constants, fullgraph=True)(x), constants(x)
    for got, expected in zip(compiled, eager):
        assert got.dtype == expected.dtype and torch.equal(got, expected)


def test_pil_round_trip_is_exact_for_8_bit_values():
    x = torch.randint(0, 256, (1, 3, 9, 11)).float() / 255
    assert torch.equal(from_pil(to_pil(x)), x)


def test_the_coarse_levels_learn_at_their_own_rate_and_the_fine_ones_as_before():
    def stepped(coarse_lr: float) -> tuple[PyramidCanvas, list[dict]]:
        # A 64 px picture in a 128 px canvas (the jitter margin), as a run at 64 px has it.
        canvas = PyramidCanvas(128, 64, coarse_lr=coarse_lr, generator=torch.Generator().manual_seed(0))
        groups = canvas.param_groups(0.1)
        optimiser = torch.optim.Adam(groups)
        target = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
        ((canvas() - target) ** 2).sum().backward()
        optimiser.step()
        return canvas, groups

    same, groups = stepped(1.0)
    assert len(groups) == 1 and groups[0]["lr"] == 0.1  # one rate: the updates of releases before the setting
    faster, groups = stepped(2.0)
    # A 64 px picture's coarse levels are those of 16 px or less (a quarter of the picture, not of
    # the canvas with its margin): 1, 2, 4, 8, 16 at twice the run's rate; 32, 64, 128 at the run's.
    assert [(len(g["params"]), g["lr"]) for g in groups] == [(5, 0.2), (3, 0.1)]
    start = PyramidCanvas(128, 64, generator=torch.Generator().manual_seed(0))
    for (side, _), before, one, two in zip(start.shapes, start.levels, same.levels, faster.levels):
        moved_one, moved_two = (one - before).abs().max(), (two - before).abs().max()
        if side <= 16:  # Adam's first step is the rate times the gradient's sign: twice as far
            assert torch.allclose(moved_two, 2 * moved_one, rtol=1e-3)
        else:
            assert torch.equal(one, two)
