"""Per-pixel height search in an occupancy field: the surface is where occupancy crosses 0.5.

The field is probed through an ``evaluate(pixels, heights) -> logits`` callable (logit > 0 means
occupied, i.e. sigmoid > 0.5), so the searches are plain vectorised numpy over all pixels of a
window and know nothing about the network. (The reference mode's search, the paper's, is in
``original.py``.)

* :func:`bracket_search` — the fast mode: a per-pixel bracket [lo, hi], a few coarse samples in it,
  bisection-like rounds that only test inside the current bracket (the sample below is known
  occupied and the one above known free, so no query is repeated), and a final linear zero crossing
  of the logits. Pixels whose bracket misses the surface are reported so the caller can widen it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

Evaluate = Callable[[np.ndarray, np.ndarray], np.ndarray]

ABOVE = 1  # the top of the bracket is occupied: the surface is higher
BELOW = 2  # nothing in the bracket is occupied: the surface is lower (or absent)


def _highest_occupied(logits: np.ndarray) -> np.ndarray:
    """Index of the highest sample with logit > 0 per row, −1 where none."""
    k = logits.shape[1]
    occ = logits > 0
    idx = np.where(occ, np.arange(k)[None, :], -1)
    return idx.max(axis=1)


@dataclass
class BracketResult:
    """Heights (NaN where not found) and why a pixel failed (0 = found, ABOVE, BELOW)."""

    height: np.ndarray
    status: np.ndarray
    queries: int


def bracket_search(evaluate: Evaluate, pixels: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                   n_coarse: int, final_step: float, factor: int = 2,
                   interpolate: bool = True) -> BracketResult:
    """Highest occupancy crossing inside [lo, hi] per pixel, to ``final_step`` or better."""
    p = pixels.shape[0]
    n_coarse = max(2, int(n_coarse))
    factor = max(2, int(factor))
    step = np.maximum(hi - lo, 1e-6) / (n_coarse - 1)
    z = lo[:, None] + step[:, None] * np.arange(n_coarse)[None, :]
    logits = evaluate(pixels, z)
    queries = z.size
    k = _highest_occupied(logits)
    status = np.zeros(p, dtype=np.uint8)
    status[k == n_coarse - 1] = ABOVE
    status[k < 0] = BELOW
    ok = status == 0
    rows = np.flatnonzero(ok)
    kk = k[ok]
    a = z[rows, kk]
    la = logits[rows, kk].astype(np.float64)
    lb = logits[rows, kk + 1].astype(np.float64)
    s = step[ok]
    pix = pixels[ok]
    ks = np.arange(1, factor, dtype=np.float64)[None, :]
    # Rounds until every bracket is at most final_step thick; finished pixels drop out.
    active = np.flatnonzero(s > final_step * (1 + 1e-9))
    while active.size:
        s_new = s[active] / factor
        zz = a[active, None] + ks * s_new[:, None]
        ll = evaluate(pix[active], zz).astype(np.float64)
        queries += zz.size
        j = _highest_occupied(ll)  # −1: none occupied → the crossing is in the first sub-interval
        r = np.arange(active.size)
        new_a = np.where(j >= 0, zz[r, np.maximum(j, 0)], a[active])
        new_la = np.where(j >= 0, ll[r, np.maximum(j, 0)], la[active])
        new_lb = np.where(j + 1 < factor - 1, ll[r, np.minimum(j + 1, factor - 2)], lb[active])
        a[active], la[active], lb[active], s[active] = new_a, new_la, new_lb, s_new
        active = active[s_new > final_step * (1 + 1e-9)]
    if interpolate:
        frac = np.clip(la / np.maximum(la - lb, 1e-12), 0.0, 1.0)
        h_ok = a + s * frac
    else:
        h_ok = a
    height = np.full(p, np.nan)
    height[ok] = h_ok
    return BracketResult(height, status, queries)


def coarse_count(lo: np.ndarray, hi: np.ndarray, minimum: int, max_step: float) -> int:
    """Coarse samples so that no bracket is sampled coarser than ``max_step``."""
    if lo.size == 0:
        return minimum
    tallest = float(np.max(hi - lo))
    return max(minimum, int(math.ceil(tallest / max_step)) + 1)
