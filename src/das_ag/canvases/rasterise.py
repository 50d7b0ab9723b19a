"""A differentiable rasteriser for strokes of cubic Béziers, in plain PyTorch (no diffvg).

What an SVG viewer paints for `<path d="M.. C.." stroke-width="w" stroke-opacity="a"
stroke-linecap="round" stroke-linejoin="round" fill="none">`, made differentiable:

- each cubic is sampled into a polyline of `samples` segments (the chord error falls as 1/K²:
  at K=16 it is far below a pixel for strokes of tens of pixels);
- a pixel's distance d to a stroke is its distance to that polyline (round caps and joins come
  with the clamped projection), and the stroke covers it by
  `opacity * sigmoid((width/2 - d) / softness)`, cut to 0 beyond `width/2 + CUTOFF * softness`;
- strokes are composited "over" in z-order (stroke 0 at the bottom), in log space, onto the
  background, just as an SVG viewer paints its paths in document order, each path once.

The canvas is cut into TILE x TILE pixel tiles and each stroke is only evaluated on the tiles its
padded bounding box reaches (a Bézier lies inside the hull of its control points), so the cost
grows with the inked area rather than strokes x pixels. The cutoff makes culling exact: tiled
and dense renders are the same numbers.

Deterministic on CUDA: no scatter-add sums many values into one place. Per-pair copies of a
stroke's parameters are gathered with `_gather_rows`, whose backward sums each stroke's pairs in
a fixed order (a padded gather and a sum) instead of accumulating atomically.
"""

from __future__ import annotations

import torch

TILE = 16
# Coverage is cut to zero this many softness widths beyond the stroke's edge. sigmoid(-6) =
# 0.0025 x opacity: under half of one 8-bit level, so the cut never shows in a saved image.
CUTOFF = 6.0
_EPS = 1e-8


def bezier_basis(samples: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(samples + 1, 4) Bernstein weights of a cubic at t = 0, 1/K, ..., 1."""
    t = torch.linspace(0, 1, samples + 1, device=device, dtype=dtype)[:, None]
    s = 1 - t
    return torch.cat([s**3, 3 * s**2 * t, 3 * s * t**2, t**3], dim=1)


def polylines(points: torch.Tensor, samples: int) -> torch.Tensor:
    """Control points (..., 3n+1, 2) of n joined cubics -> polyline vertices (..., n*K+1, 2)."""
    n = (points.shape[-2] - 1) // 3
    if points.shape[-2] != 3 * n + 1 or n < 1:
        raise ValueError(f"a path of cubics has 3n+1 control points, not {points.shape[-2]}")
    basis = bezier_basis(samples, points.device, points.dtype)  # (K+1, 4)
    index = torch.arange(n, device=points.device)[:, None] * 3 + torch.arange(4, device=points.device)
    segments = points[..., index, :]  # (..., n, 4, 2)
    curve = torch.einsum("kj,...njd->...nkd", basis, segments)  # (..., n, K+1, 2)
    # Each cubic's last vertex is the next one's first: keep it once.
    head = curve[..., :, :-1, :].flatten(-3, -2)
    return torch.cat([head, curve[..., -1:, -1, :]], dim=-2)


def coverage(distance: torch.Tensor, width: torch.Tensor, opacity: torch.Tensor, softness: float) -> torch.Tensor:
    """How much of a pixel a stroke covers, from the pixel's distance to the stroke's centre line."""
    edge = width / 2 - distance
    return opacity * torch.sigmoid(edge / softness) * (edge > -CUTOFF * softness)


def _segment_distance(pixels: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance from pixels (..., P, 2) to segments a->b (..., P or 1, 2), elementwise."""
    ab = b - a
    t = (((pixels - a) * ab).sum(-1) / ((ab * ab).sum(-1) + _EPS)).clamp(0, 1)
    offset = pixels - a - t[..., None] * ab
    return torch.sqrt((offset * offset).sum(-1) + _EPS)


def _distance_to_polyline(
    pixels: torch.Tensor, vertices: torch.Tensor, candidates: torch.Tensor | None = None
) -> torch.Tensor:
    """Distance from pixels (P, X, 2) to polylines (P, V, 2): (P, X).

    The minimum over segments only passes gradient to the nearest one, so the nearest segment is
    found without autograd and only its distance is recomputed with it: autograd keeps (P, X)
    tensors instead of (P, X, segments) ones, which is most of the renderer's memory.
    `candidates` (P, C), when given, are the only segments that can be nearest to any pixel that
    matters: the search looks at those alone.
    """
    a, b = vertices[:, :-1], vertices[:, 1:]  # (P, M, 2)
    with torch.no_grad():
        if candidates is None:
            d = _segment_distance(pixels[:, :, None, :], a.detach()[:, None], b.detach()[:, None])  # (P, X, M)
            nearest = d.argmin(dim=-1)  # (P, X)
        else:
            rows = torch.arange(a.shape[0], device=a.device)[:, None]
            ca, cb = a.detach()[rows, candidates], b.detach()[rows, candidates]  # (P, C, 2)
            d = _segment_distance(pixels[:, :, None, :], ca[:, None], cb[:, None])  # (P, X, C)
            nearest = candidates.gather(1, d.argmin(dim=-1))
    # Picking the nearest segment by a one-hot product, not by indexing: indexing's backward
    # would add many pixels' gradients into one segment atomically on CUDA (not repeatable).
    pick = torch.nn.functional.one_hot(nearest, a.shape[1]).to(vertices.dtype)  # (P, X, M)
    return _segment_distance(pixels, pick @ a, pick @ b)


@torch.no_grad()
def _nearest_distance(points: torch.Tensor, vertices: torch.Tensor, stroke_of: torch.Tensor, chunk: int = 8192):
    """Distance from each point (P, 2) to the polyline of its stroke (vertices[stroke_of]), in chunks."""
    out = []
    for k in range(0, points.shape[0], chunk):
        lines = vertices[stroke_of[k:k + chunk]]
        d = _segment_distance(points[k:k + chunk, None, :], lines[:, :-1], lines[:, 1:])
        out.append(d.amin(dim=1))
    return torch.cat(out) if out else points.new_zeros(0)


class _GatherRows(torch.autograd.Function):
    """rows[index] whose backward sums each row's copies in a fixed order (no atomic adds).

    `slots` (rows, most) lists the positions in `index` that copy each row, padded with
    len(index); the backward gathers the incoming gradient by it and sums along the padding.
    """

    @staticmethod
    def forward(ctx, rows, index, slots):
        ctx.save_for_backward(slots)
        ctx.count = index.shape[0]
        return rows[index]

    @staticmethod
    def backward(ctx, grad):
        (slots,) = ctx.saved_tensors
        padded = torch.cat([grad, grad.new_zeros(1, *grad.shape[1:])])
        return padded[slots].sum(1), None, None


def _tile_ranges(points: torch.Tensor, reach: torch.Tensor, tiles: tuple[int, int]) -> torch.Tensor:
    """Per stroke, the first and last tile column and row its padded bounds touch: (S, 4) ints."""
    lo = points.amin(dim=-2) - reach[:, None]  # (S, 2) as (x, y)
    hi = points.amax(dim=-2) + reach[:, None]
    first = torch.floor(lo / TILE).long()
    last = torch.floor(hi / TILE).long()
    limit = torch.tensor([tiles[1] - 1, tiles[0] - 1], device=points.device)
    first = torch.minimum(first.clamp(min=0), limit + 1)  # past the edge: an empty range
    last = torch.maximum(last.clamp(max=limit), first - 1)
    return torch.cat([first, last], dim=1)


def _over(alpha: torch.Tensor, colours: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Layers painted "over" one another in order, the first at the bottom, onto a background.

    alpha (N, layers, P) coverage of P pixels, colours (N, layers, 3), background (N, 3) ->
    (N, 3, P). In log space: each layer shows through the product of (1 - alpha) above it.
    """
    log_clear = torch.log1p(-alpha.clamp(max=1 - 1e-6))
    above = torch.flip(torch.cumsum(torch.flip(log_clear, [1]), 1), [1]) - log_clear
    paint = torch.einsum("nlp,nlc->ncp", alpha * torch.exp(above), colours)
    through = torch.exp(log_clear.sum(1))  # (N, P): the background's share
    return paint + background[:, :, None] * through[:, None, :]


def render(
    points: torch.Tensor,
    widths: torch.Tensor,
    colours: torch.Tensor,
    opacities: torch.Tensor,
    background: torch.Tensor,
    size: int | tuple[int, int],
    *,
    softness: float = 0.5,
    samples: int = 16,
) -> torch.Tensor:
    """Render batches of strokes: (B, 3, H, W) in [0, 1].

    points (B, S, 3n+1, 2) in pixels (x right, y down, pixel centres at +0.5); widths (B, S) full
    widths in pixels; colours (B, S, 3) and opacities (B, S) in [0, 1]; background (B, 3) or (3,).
    Stroke 0 of each image is painted first (at the bottom).
    """
    height, width = (size, size) if isinstance(size, int) else size
    batch, strokes = points.shape[:2]
    device, dtype = points.device, points.dtype
    tiles = (-(-height // TILE), -(-width // TILE))
    per_image = tiles[0] * tiles[1]
    background = background.to(dtype).expand(batch, 3)

    # Geometry of every stroke, flattened over the batch.
    vertices = polylines(points, samples).flatten(0, 1)  # (B*S, V, 2)
    flat_widths, flat_opacity = widths.flatten(), opacities.flatten()
    flat_colours = colours.flatten(0, 1)
    reach = flat_widths.detach() / 2 + CUTOFF * softness + 1
    ranges = _tile_ranges(vertices.detach(), reach, tiles)
    columns = ranges[:, 2] - ranges[:, 0] + 1
    counts = columns * (ranges[:, 3] - ranges[:, 1] + 1)  # tiles per stroke (0 when off the canvas)

    # (stroke, tile) pairs, stroke-major: every stroke's pairs are contiguous.
    stroke_of = torch.repeat_interleave(torch.arange(batch * strokes, device=device), counts)
    starts = torch.cumsum(counts, 0) - counts
    within = torch.arange(stroke_of.shape[0], device=device) - starts[stroke_of]
    tile_x = ranges[stroke_of, 0] + within % columns[stroke_of]
    tile_y = ranges[stroke_of, 1] + within // columns[stroke_of]
    # A long or diagonal stroke's box holds many tiles it never comes near: keep the pairs whose
    # tile centre lies within the stroke's reach plus half a tile's diagonal of its polyline.
    centres = (torch.stack([tile_x, tile_y], dim=1).to(dtype) + 0.5) * TILE
    near = _nearest_distance(centres, vertices.detach(), stroke_of) <= reach[stroke_of] + TILE / 2**0.5
    stroke_of, tile_x, tile_y = stroke_of[near], tile_x[near], tile_y[near]
    counts = torch.bincount(stroke_of, minlength=batch * strokes)
    starts = torch.cumsum(counts, 0) - counts
    pairs = stroke_of.shape[0]
    if pairs == 0:
        return background[:, :, None, None].expand(batch, 3, height, width).clone()
    image_of = stroke_of // strokes
    tile_of = image_of * per_image + tile_y * tiles[1] + tile_x  # a global tile number

    # Per stroke, its pairs' positions (padded with `pairs`): the fixed order of the backward sum.
    most = int(counts.max())
    slot = torch.arange(most, device=device)
    stroke_slots = torch.where(slot < counts[:, None], starts[:, None] + slot, pairs)

    def gather(rows: torch.Tensor) -> torch.Tensor:
        return _GatherRows.apply(rows, stroke_of, stroke_slots)

    # Pixel centres of each pair's tile, and the stroke's coverage of them.
    offsets = torch.arange(TILE, device=device, dtype=dtype) + 0.5
    local = torch.stack(torch.meshgrid(offsets, offsets, indexing="xy"), dim=-1).reshape(1, TILE * TILE, 2)
    origin = torch.stack([tile_x, tile_y], dim=1).to(dtype)[:, None, :] * TILE
    pair_vertices = gather(vertices.flatten(1)).view(pairs, -1, 2)
    with torch.no_grad():
        # A pixel's nearest segment, if the pixel is within reach of the stroke at all, lies within
        # reach plus half a tile's diagonal of the tile's centre: only those segments are searched.
        centres = origin[:, 0] + TILE / 2
        lines = pair_vertices.detach()
        to_centre = _segment_distance(centres[:, None], lines[:, :-1], lines[:, 1:])  # (P, M)
        close = to_centre <= reach[stroke_of, None] + TILE / 2**0.5
        width_needed = max(1, int(close.sum(1).max()))
        candidates = torch.argsort((~close).to(torch.int8), dim=1, stable=True)[:, :width_needed]
    distance = _distance_to_polyline(origin + local, pair_vertices, candidates)
    alpha = coverage(distance, gather(flat_widths[:, None]), gather(flat_opacity[:, None]), softness)

    # Per tile, its strokes in z-order: sort pairs by (tile, stroke) and number them within a tile.
    order = torch.argsort(tile_of * (batch * strokes) + stroke_of)
    sorted_tiles = tile_of[order]
    tile_counts = torch.bincount(sorted_tiles, minlength=batch * per_image)
    tile_starts = torch.cumsum(tile_counts, 0) - tile_counts
    rank = torch.arange(pairs, device=device) - tile_starts[sorted_tiles]
    depth = int(tile_counts.max())
    table = torch.full((batch * per_image, depth), pairs, device=device, dtype=torch.long)
    table[sorted_tiles, rank] = order  # unique places: no accumulation

    pad = alpha.new_zeros(1, TILE * TILE)
    tile_alpha = torch.cat([alpha, pad])[table]  # (tiles, depth, TILE^2)
    pair_colours = gather(flat_colours)
    tile_colours = torch.cat([pair_colours, pair_colours.new_zeros(1, 3)])[table]  # (tiles, depth, 3)

    tile_background = background[:, None].expand(batch, per_image, 3).reshape(-1, 3)  # (tiles, 3)
    pixels = _over(tile_alpha, tile_colours, tile_background)

    image = pixels.view(batch, tiles[0], tiles[1], 3, TILE, TILE).permute(0, 3, 1, 4, 2, 5)
    image = image.reshape(batch, 3, tiles[0] * TILE, tiles[1] * TILE)
    return image[:, :, :height, :width]


def render_dense(
    points: torch.Tensor,
    widths: torch.Tensor,
    colours: torch.Tensor,
    opacities: torch.Tensor,
    background: torch.Tensor,
    size: int | tuple[int, int],
    *,
    softness: float = 0.5,
    samples: int = 16,
) -> torch.Tensor:
    """The same picture as `render`, every stroke on every pixel: the reference it is tested
    against (and the baseline of bench/strokes_speed.py). Memory grows as strokes x pixels."""
    height, width = (size, size) if isinstance(size, int) else size
    batch, strokes = points.shape[:2]
    dtype = points.dtype
    ys = torch.arange(height, device=points.device, dtype=dtype) + 0.5
    xs = torch.arange(width, device=points.device, dtype=dtype) + 0.5
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(1, -1, 2)  # (1, H*W, 2)
    vertices = polylines(points, samples).flatten(0, 1)  # (B*S, V, 2)
    distance = _distance_to_polyline(grid.expand(vertices.shape[0], -1, -1), vertices)  # (B*S, H*W)
    alpha = coverage(distance, widths.reshape(-1, 1), opacities.reshape(-1, 1), softness).view(batch, strokes, -1)
    pixels = _over(alpha, colours.to(dtype), background.to(dtype).expand(batch, 3))
    return pixels.view(batch, 3, height, width)
