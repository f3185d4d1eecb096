"""The fast mode's despeckle filter: lone pixels and pairs go, corners, lines and slopes stay."""
from __future__ import annotations

import numpy as np

from implicity.core.reconstruct.despeckle import despeckle


def _roof_on_slope() -> np.ndarray:
    """A plane sloping 0.2 per pixel (~22° at 0.5 m) with a 10 × 8 pixel box 6 units high."""
    rows, cols = np.mgrid[0:40, 0:40]
    z = 0.2 * cols + 0.05 * rows
    z[10:20, 12:20] += 6.0
    return z


def test_lone_pixels_and_pairs_take_the_median_of_their_neighbours():
    truth = _roof_on_slope()
    noisy = truth.copy()
    noisy[30, 30] += 2.0           # a lone spike
    noisy[5, 5] -= 1.5             # a lone pit
    noisy[25, 8:10] += 1.0         # a pair
    noisy[15, 15] -= 3.0           # a pit inside the roof
    out = despeckle(noisy, 0.25)
    np.testing.assert_allclose(out, truth, atol=0.21)  # the median of a sloped 3 x 3: within a slope step
    assert np.abs(out - truth)[[30, 5, 25, 25, 15], [30, 5, 8, 9, 15]].max() < 0.21


def test_corners_lines_and_slopes_stay():
    z = _roof_on_slope()
    z[30, 5:35] += 3.0  # a wall one pixel wide
    out = despeckle(z, 0.25)
    changed = np.argwhere(out != z)
    # Only the wall's two end pixels, which agree with one neighbour each, go (a line is one pixel shorter
    # at each end); the box's corners, edges and the slope are untouched.
    assert changed.tolist() == [[30, 5], [30, 34]]


def test_no_data_stays_no_data_and_zero_turns_it_off():
    z = _roof_on_slope()
    z[0:3, 0:3] = np.nan
    z[20, 30] += 5.0
    out = despeckle(z, 0.25)
    assert np.isnan(out[0:3, 0:3]).all() and np.isfinite(out[3:, 3:]).all()
    assert abs(out[20, 30] - (z[20, 30] - 5.0)) < 0.21
    np.testing.assert_array_equal(despeckle(z, 0.0), z)
