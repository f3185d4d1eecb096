"""Simulation of satellite-stereo clouds from dense clouds (synthetic samples and real LiDAR)."""
from __future__ import annotations

import numpy as np
import pytest

from implicity.core.pointcloud import PointCloud, read_point_cloud
from implicity.training.data.simulate import StereoSimulationConfig, simulate_stereo_cloud

from ..helpers.geodata import CRS_L93, SHARED_DATA, block_scene

# one view from the east at 45 degrees: the 12 m box (x, y in 10..20 m) hides 12 m west of it
EAST_VIEW = dict(views=((90.0, 45.0),), sun=None, blunder_fraction=0.0, smear_probability=0.0)


def _tower_cloud(seed: int = 0) -> PointCloud:
    xyz, cls, _ = block_scene(seed=seed, size=60.0, density=16.0)
    xyz[:, :2] += 10.0  # box now at x, y in 20..30 m of a 60 m square
    return PointCloud(xyz=xyz, crs=CRS_L93, classification=cls, source="box")


def _count(cloud: PointCloud, x0: float, x1: float, y0: float, y1: float) -> int:
    lx, ly = cloud.xyz[:, 0] - 1000.0, cloud.xyz[:, 1] - 2000.0
    return int(((lx >= x0) & (lx < x1) & (ly >= y0) & (ly < y1)).sum())


def test_density_is_lowered_and_holes_open_beside_the_tower():
    dense = _tower_cloud()
    cfg = StereoSimulationConfig(density=4.0, density_variation=0.0, **EAST_VIEW)
    result = simulate_stereo_cloud(dense, cfg, seed=1)
    sim = result.cloud
    assert len(sim) < 0.4 * len(dense)
    assert sim.classification is None and sim.crs == CRS_L93
    # occluded strip west of the tower vs open ground of the same size south of it
    hidden = _count(sim, 10.0, 19.0, 22.0, 28.0)
    open_ground = _count(sim, 22.0, 31.0, 40.0, 46.0)
    assert open_ground > 150 and hidden < 0.15 * open_ground
    assert result.occluded.sum() > 0 and not result.occluded[:, -5:].any()


def test_edges_are_smeared_into_the_street():
    dense = _tower_cloud()
    quiet = dict(noise_std=0.0, noise_slope_gain=0.0, xy_noise_std=0.0, correlated_noise_std=0.0)
    plain = StereoSimulationConfig(**quiet, **EAST_VIEW)
    smear = StereoSimulationConfig(**quiet, **{**EAST_VIEW, "smear_probability": 1.0, "smear_distance_m": 1.5})
    for cfg, expect_raised in ((plain, False), (smear, True)):
        sim = simulate_stereo_cloud(dense, cfg, seed=2).cloud
        lx, ly, z = sim.xyz[:, 0] - 1000.0, sim.xyz[:, 1] - 2000.0, sim.xyz[:, 2]
        # ground just south of the tower (within 1.2 m of its edge), away from the corners
        near = (ly > 18.8) & (ly < 20.0) & (lx > 22.0) & (lx < 28.0)
        assert near.sum() > 5
        raised = np.mean(z[near] > 12.0)
        assert (raised > 0.9) if expect_raised else (raised == 0.0)


def test_noise_blunders_and_determinism():
    dense = _tower_cloud()
    cfg = StereoSimulationConfig(noise_std=0.3, noise_slope_gain=0.0, correlated_noise_std=0.0,
                                 blunder_fraction=0.02, blunder_std=10.0,
                                 views=(), sun=None, smear_probability=0.0)
    a = simulate_stereo_cloud(dense, cfg, seed=3).cloud
    b = simulate_stereo_cloud(dense, cfg, seed=3).cloud
    c = simulate_stereo_cloud(dense, cfg, seed=4).cloud
    assert np.array_equal(a.xyz, b.xyz) and not np.array_equal(a.xyz[:100], c.xyz[:100])
    lx, ly = a.xyz[:, 0] - 1000.0, a.xyz[:, 1] - 2000.0
    ground = (lx > 35) & (ly > 35)
    err = a.xyz[ground, 2] - 10.0
    assert np.median(np.abs(err)) == pytest.approx(0.3 * 0.6745, rel=0.2)
    assert 0.005 < np.mean(np.abs(err) > 3.0) < 0.04


def test_correlated_errors_are_shared_by_neighbours():
    """Stereo errors are spatially correlated, so gridding cannot average them away."""
    from scipy.spatial import cKDTree

    cfg = StereoSimulationConfig(noise_std=0.0, noise_slope_gain=0.0, correlated_noise_std=0.5, xy_noise_std=0.0,
                                 blunder_fraction=0.0, views=(), sun=None, smear_probability=0.0)
    sim = simulate_stereo_cloud(_tower_cloud(), cfg, seed=5).cloud
    ground = (sim.xyz[:, 0] - 1000.0 > 35) & (sim.xyz[:, 1] - 2000.0 > 35)
    pts = sim.xyz[ground]
    err = pts[:, 2] - 10.0
    assert np.std(err) == pytest.approx(0.5, rel=0.35)
    _, nn = cKDTree(pts[:, :2]).query(pts[:, :2], k=2)
    assert np.corrcoef(err, err[nn[:, 1]])[0, 1] > 0.7


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="occlusion_dropout"):
        StereoSimulationConfig(occlusion_dropout=1.5)


NIMES = SHARED_DATA / "nimes_lidarhd" / "subsampled_nimes.laz"


@pytest.mark.skipif(not NIMES.exists(), reason="shared Nimes LiDAR not available")
def test_real_lidar_crop_of_nimes():
    cloud = read_point_cloud(NIMES, crs="EPSG:2154")
    x0, y0 = 809450.0, 6304900.0  # 60 m x 60 m of the old town beside the arena
    crop = cloud.subset((cloud.xyz[:, 0] >= x0) & (cloud.xyz[:, 0] < x0 + 60)
                        & (cloud.xyz[:, 1] >= y0) & (cloud.xyz[:, 1] < y0 + 60))
    assert len(crop) > 5000
    result = simulate_stereo_cloud(crop, StereoSimulationConfig(), seed=0)
    sim = result.cloud
    assert 0.1 * len(crop) < len(sim) < 0.8 * len(crop)
    assert sim.rgb is not None and sim.rgb.shape == (len(sim), 3)
    assert result.occluded.mean() > 0.02 and result.shadowed.mean() > 0.02
    assert np.isfinite(sim.xyz).all()
    assert sim.xyz[:, 0].min() > x0 - 1 and sim.xyz[:, 0].max() < x0 + 61
    # the simulated cloud follows the surface: median gap to the LiDAR top surface is small
    rows, cols = result.grid.rowcol(sim.xyz[:, 0], sim.xyz[:, 1])
    ok = (rows >= 0) & (rows < result.grid.height) & (cols >= 0) & (cols < result.grid.width)
    gap = sim.xyz[ok, 2] - result.surface[rows[ok], cols[ok]]
    assert np.nanmedian(np.abs(gap)) < 1.0
