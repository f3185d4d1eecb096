"""A robust surface prior computed from the input points inside the network.

Why: a network that predicts occupancy from the absolute height of a query must learn, from a few
hundred CPU training steps, what classical gridding gets for free — where the surface roughly is.
With ``height_reference: prior`` the decoder instead sees the query's height *relative to* a robust
gridded surface of the same points (per-cell lower median, far outliers removed, holes filled,
median-filtered): the classical median-filtered baseline. What the network learns is the correction
to that baseline (edges that stereo matching smeared, noise, holes), and a network that has learnt
nothing yet already sits on the baseline's surface instead of digging pits.

Everything here is torch (CPU or GPU), runs under ``no_grad`` (the prior has no parameters) and is
computed in the network's normalised patch frame, so training and inference cannot drift apart:
both go through :meth:`ImpliCityNet.encode`.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def _nan_filter(grid: torch.Tensor, size: int, reduce: str) -> torch.Tensor:
    """NaN-ignoring median or mean over a ``size`` × ``size`` window of (B, 1, R, R); NaN where empty."""
    pad = size // 2
    padded = F.pad(grid, (pad, pad, pad, pad), mode="constant", value=float("nan"))
    patches = F.unfold(padded, size)  # (B, size², R·R)
    out = torch.nanmedian(patches, dim=1).values if reduce == "median" else torch.nanmean(patches, dim=1)
    return out.reshape(grid.shape)


def cell_lower_median(points: torch.Tensor, resolution: int) -> torch.Tensor:
    """Lower median height of the points of each cell of an R × R plane (B, 1, R, R), NaN = empty.

    Rows grow with y (south → north), like the point encoder's plane. The lower median is what
    ``torch.median`` returns; one sort per batch element keeps it exact and GPU-friendly.
    """
    from .point_encoder import plane_index

    b = points.shape[0]
    cells = resolution * resolution
    out = torch.full((b, cells), float("nan"), dtype=points.dtype, device=points.device)
    index = plane_index(points[..., :2], resolution)
    for i in range(b):
        z, cell = points[i, :, 2], index[i]
        by_z = torch.argsort(z)
        order = by_z[torch.argsort(cell[by_z], stable=True)]
        counts = torch.bincount(cell, minlength=cells)
        starts = torch.cumsum(counts, 0) - counts
        filled = counts > 0
        pick = starts[filled] + (counts[filled] - 1) // 2
        out[i, filled] = z[order][pick]
    return out.reshape(b, 1, resolution, resolution)


def fill_from_neighbours(grid: torch.Tensor, max_iterations: int) -> torch.Tensor:
    """Fill NaN cells by repeatedly averaging their filled 3 × 3 neighbours (a nearest-like fill).

    After ``max_iterations`` rounds any cell still empty takes the median of the filled cells, and a
    grid with no filled cell at all becomes 0 (the window's own height reference).
    """
    out = grid.clone()
    ones = torch.ones((1, 1, 3, 3), dtype=grid.dtype, device=grid.device)
    for _ in range(max_iterations):
        empty = torch.isnan(out)
        if not bool(empty.any()):
            return out
        # The 3 x 3 NaN-ignoring mean as two convolutions (sum of values / count of values): the
        # same numbers as unfolding, without building a (9, R·R) copy each round.
        known = (~empty).to(grid.dtype)
        total = F.conv2d(torch.nan_to_num(out, nan=0.0), ones, padding=1)
        count = F.conv2d(known, ones, padding=1)
        around = torch.where(count > 0, total / count.clamp(min=1.0), torch.full_like(total, float("nan")))
        out = torch.where(empty, around, out)
    flat = out.flatten(1)
    fallback = torch.nan_to_num(torch.nanmedian(flat, dim=1).values, nan=0.0)
    return torch.where(torch.isnan(out), fallback.view(-1, 1, 1, 1), out)


@torch.no_grad()
def surface_prior(points: torch.Tensor, resolution: int, outlier_threshold: float,
                  smoothing: int = 3, refine_radius: float = 0.0, noise_floor: float = 0.0) -> torch.Tensor:
    """The robust gridded surface (B, 1, R, R) of normalised points (B, N, 3), in normalised z.

    ``outlier_threshold`` (normalised z units) drops cells whose median is that far from the
    5 × 5 median of their neighbourhood (blunders, far outliers); ``smoothing`` is the side of the
    final median filter (1 = none). ``refine_radius`` > 0 (cells) refines that surface with
    :func:`bilateral_refinement` (``prior_refinement: bilateral``); ``noise_floor`` (normalised z)
    is the smallest noise level it assumes.
    """
    medians = cell_lower_median(points.float(), resolution)
    local = _nan_filter(medians, 5, "median")
    medians = torch.where((medians - local).abs() > outlier_threshold, torch.full_like(medians, float("nan")),
                          medians)
    filled = fill_from_neighbours(medians, max_iterations=resolution)
    if smoothing > 1:
        filled = _nan_filter(filled, int(smoothing), "median")
    if refine_radius > 0:
        filled = bilateral_refinement(points.float(), filled, refine_radius, noise_floor)
    return filled.to(points.dtype)


#: Width of the bilateral range kernel, in robust noise standard deviations: wide enough that a
#: noisy point of the same roof keeps most of its weight, narrow enough that the roof next door
#: (a step of several σ) does not pull the surface.
RANGE_SIGMAS = 2.5
#: Reweighting rounds: each re-centres the range kernel on the refined surface.
REFINE_ITERATIONS = 3
#: Smallest exponent of the range kernel: exp(-40) = 4e-18 instead of exp(-500) = 0. Why: below
#: about exp(-87) float32 results are subnormal, and exp and the products of subnormals run ~10x
#: slower on x86 CPUs (the empty cells and far roofs of every window land there). A weight of 4e-18
#: and one of 0 give the same mean to float32 precision, and products of two floors stay normal.
EXP_FLOOR = -40.0


def bilateral_refinement(points: torch.Tensor, surface: torch.Tensor, radius: float,
                         noise_floor: float, iterations: int = REFINE_ITERATIONS,
                         stacked: bool | None = None) -> torch.Tensor:
    """An edge-preserving robust mean of the points around each cell, started from ``surface``.

    Why: the per-cell median of a stereo cloud keeps most of its height noise (a 3 × 3 median
    averages ~2 m² of points), and wider median filters erode edges as fast as they remove noise.
    Each round here replaces a cell's height by the mean of the points within ``radius`` cells,
    weighted by a Gaussian in distance and by how close each point — and each neighbouring cell's
    mean — lies to the current surface, in units of the window's robust noise level (1.4826 × MAD
    of the points' heights above the surface, at least ``noise_floor``). Points of the same roof
    or slope average out; points of the neighbouring roof, a wall or a blunder get no weight. A
    Gaussian-weighted mean of a plane over a symmetric disc is the plane, so slopes stay unbiased.
    Cells with no weighted point nearby keep ``surface``, and so does a window without points.
    ``stacked`` picks how the disc is summed (None: by device; see :func:`_disc_sums`).
    """
    from .point_encoder import plane_index

    if points.shape[1] == 0:
        return surface
    b, _, r, _ = surface.shape
    cells = r * r
    index = plane_index(points[..., :2], r)
    z = points[..., 2]
    at_points = torch.gather(surface.reshape(b, cells), 1, index)
    residual = z - at_points
    centre = residual.median(dim=1, keepdim=True).values
    sigma = (1.4826 * (residual - centre).abs().median(dim=1, keepdim=True).values).clamp(min=noise_floor)
    width = RANGE_SIGMAS * sigma                                    # (B, 1)
    h = int(radius)
    # Offsets inside the disc and their Gaussian weights; one shifted view of the padded grids per
    # offset (cheaper than unfolding a (K², R·R) copy of them, and the same sums).
    disc = [(dy, dx, math.exp(-(dy * dy + dx * dx) / (2 * (radius / 2) ** 2)))
            for dy in range(-h, h + 1) for dx in range(-h, h + 1) if dy * dy + dx * dx <= radius * radius]
    inv_width2 = (-0.5 / width ** 2).view(b, 1, 1)
    out = surface
    for _ in range(iterations):
        flat = out.reshape(b, cells)
        w = torch.exp((-0.5 * ((z - torch.gather(flat, 1, index)) / width) ** 2).clamp_(min=EXP_FLOOR))
        weight = torch.zeros((b, cells), dtype=points.dtype, device=points.device).scatter_add_(1, index, w)
        weighted_z = torch.zeros_like(weight).scatter_add_(1, index, w * z)
        mean = weighted_z / weight.clamp(min=1e-12)        # 0 in empty cells, whose weight is 0
        grids = F.pad(torch.stack([weight, weighted_z, mean], 1).reshape(b, 3, r, r), (h, h, h, h))
        current = out[:, 0]
        total, total_z = _disc_sums(grids, current, disc, inv_width2, h, stacked)
        refined = total_z / total.clamp(min=1e-12)
        out = torch.where(total > 1e-3, refined, current).unsqueeze(1)
    return out


def _disc_sums(grids: torch.Tensor, current: torch.Tensor, disc: list[tuple[int, int, float]],
               inv_width2: torch.Tensor, h: int, stacked: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums over the disc of range × Gaussian weights times (weight, weighted z), per cell.

    ``grids`` (B, 3, R + 2h, R + 2h) holds each cell's point weight, weighted z and mean. On the CPU
    one shifted view per offset is cheapest; on a GPU those are ~150 tiny kernels per window, so
    all offsets go into one unfolded tensor there (the same sums, in another order). ``stacked``
    forces one way (None: by device).
    """
    b, r = current.shape[0], current.shape[1]
    if not (grids.is_cuda if stacked is None else stacked):
        total = torch.zeros_like(current)
        total_z = torch.zeros_like(current)
        for dy, dx, g in disc:
            near = grids[:, :, h + dy:h + dy + r, h + dx:h + dx + r]
            k = torch.exp((near[:, 2] - current).square_().mul_(inv_width2).clamp_(min=EXP_FLOOR)).mul_(g)
            total.addcmul_(k, near[:, 0])
            total_z.addcmul_(k, near[:, 1])
        return total, total_z
    side = 2 * h + 1
    offsets = torch.tensor([(h + dy) * side + (h + dx) for dy, dx, _ in disc], device=grids.device)
    gauss = torch.tensor([g for _, _, g in disc], dtype=grids.dtype, device=grids.device).view(1, -1, 1)
    near = F.unfold(grids, side).view(b, 3, side * side, r * r)[:, :, offsets]     # (B, 3, K, R·R)
    k = torch.exp((near[:, 2] - current.reshape(b, 1, r * r)).square_().mul_(inv_width2).clamp_(min=EXP_FLOOR))
    k = k.mul_(gauss)
    total = (k * near[:, 0]).sum(1).view(b, r, r)
    total_z = (k * near[:, 1]).sum(1).view(b, r, r)
    return total, total_z


def clamp_to_prior(points: torch.Tensor, prior_at_points: torch.Tensor, limit: float) -> torch.Tensor:
    """Points (B, N, 3) whose height is clamped to prior ± ``limit`` (normalised units).

    Clamping rather than dropping keeps the batch rectangular and the point count unchanged; a far
    blunder becomes an ordinary point near the surface instead of a feature from another world.
    """
    z = points[..., 2]
    clamped = torch.minimum(torch.maximum(z, prior_at_points - limit), prior_at_points + limit)
    return torch.cat([points[..., :2], clamped.unsqueeze(-1)], dim=-1)


#: Channels of :func:`plane_context`: the prior's relief and the point density of each cell.
CONTEXT_CHANNELS = 2
#: Side (cells) of the box whose mean the relief is measured against: 4.5 m at 0.5 m cells, wider
#: than a smeared edge, narrower than most roofs.
RELIEF_WINDOW = 9
#: Relief is clamped to ± this many ``prior_z_scale`` units; beyond it only "a tall edge" matters.
RELIEF_CLAMP = 4.0


@torch.no_grad()
def plane_context(points: torch.Tensor, prior: torch.Tensor, z_scale: float) -> torch.Tensor:
    """(B, 2, R, R) context the point encoder cannot see by itself, for ``plane_context: prior``.

    Why: with ``point_height: prior`` the PointNet sees each point's height *above the prior*, so
    the prior's own shape — where it has a smeared edge, a step, a slope — is invisible to it, and
    a network that cannot see an edge cannot sharpen it. Channel 0 is the prior's local relief
    (prior − its 9 × 9 box mean, × ``z_scale`` = z_std / prior_z_scale, clamped to ±4): translation
    invariant in height, so it generalises across terrain heights. Channel 1 is log(1 + points per
    cell): where the prior is interpolated rather than measured.
    """
    from .point_encoder import plane_index

    b, _, r, _ = prior.shape
    pad = RELIEF_WINDOW // 2
    mean = F.avg_pool2d(F.pad(prior.float(), (pad, pad, pad, pad), mode="replicate"), RELIEF_WINDOW, stride=1)
    relief = ((prior.float() - mean) * z_scale).clamp(-RELIEF_CLAMP, RELIEF_CLAMP)
    index = plane_index(points[..., :2], r)
    counts = torch.zeros((b, r * r), dtype=torch.float32, device=points.device)
    counts.scatter_add_(1, index, torch.ones(index.shape, dtype=torch.float32, device=points.device))
    density = torch.log1p(counts).reshape(b, 1, r, r)
    return torch.cat([relief, density], dim=1).to(points.dtype)
