"""The degradation family, photometric augmentation and parallax views (training/data/)."""
from __future__ import annotations

import numpy as np
import pytest

from implicity.core.errors import InputError
from implicity.training.data.dataset import augment_grid
from implicity.training.data.degrade import (
    OPT_IN_VARIANTS,
    VARIANTS,
    DegradationFamily,
    degrade_surface,
    family_from_mapping,
    held_out_family,
)
from implicity.training.data.photometric import PhotometricAugmentation, augment_images, withhold_or_mismatch
from implicity.training.data.stereo_view import leaning_view, parallax_view

RES = 0.5
#: Photometric draws that change nothing (16 bit, no noise, blur, JPEG or shift): the option under test alone acts.
IDENTITY_PHOTOMETRY = dict(gain=(1.0, 1.0), gamma=(1.0, 1.0), offset=(0.0, 0.0), blur_px=(0.0, 0.0),
                           noise=(0.0, 0.0), jpeg_probability=0.0, shift_px=0.0, bit_depths=(16,))


def _block_city(n: int = 96) -> np.ndarray:
    """A flat 10 m plane with a 12 m-high 10 × 10 m building in the middle."""
    dsm = np.full((n, n), 10.0)
    dsm[38:58, 38:58] = 22.0
    return dsm


def test_every_variant_is_drawn_and_the_cloud_is_plausible():
    dsm = _block_city()
    seen = {effect: set() for effect in VARIANTS}
    for seed in range(40):
        d = degrade_surface(np.random.default_rng(seed), dsm, None, RES, DegradationFamily(include=OPT_IN_VARIANTS))
        for effect in ("fattening", "sampling", "noise"):
            seen[effect].add(d.drawn[effect])
        seen["holes"].update(d.drawn["holes"])
        xyz = d.xyz
        assert xyz.shape[1] == 3 and len(xyz) > 100
        inside = (xyz[:, 0] > -3) & (xyz[:, 0] < 51) & (xyz[:, 1] > -3) & (xyz[:, 1] < 51)
        assert inside.mean() > 0.99
        # most points lie near the true surface (blunders ≤ 3 %, noise ≤ 1 m, fattening at edges)
        assert np.median(np.abs(xyz[:, 2] - 10.0)) < 2.0
    assert seen == {effect: set(v) for effect, v in VARIANTS.items()}


def test_excluded_variant_is_never_drawn_and_held_out_family_draws_only_it():
    fam = DegradationFamily(exclude=("fattening:max_mean",))
    drawn = {degrade_surface(np.random.default_rng(s), _block_city(48), None, RES, fam).drawn["fattening"]
             for s in range(30)}
    assert "max_mean" not in drawn and drawn == {"none", "dilation"}
    held = held_out_family(fam)
    assert {degrade_surface(np.random.default_rng(s), _block_city(48), None, RES, held).drawn["fattening"]
            for s in range(10)} == {"max_mean"}


def test_opt_in_variants_are_drawn_only_where_included_and_leave_older_draws_alone():
    dsm = _block_city(48)
    plain = [degrade_surface(np.random.default_rng(s), dsm, None, RES, DegradationFamily()) for s in range(30)]
    assert {d.drawn["fattening"] for d in plain} == {"none", "dilation", "max_mean"}
    # a family that names no opt-in variant chooses among the same variants in the same order as before
    # one existed, so a seeded draw (validation sets, the model card's sets) is the draw it was
    assert DegradationFamily().choices("fattening") == ("none", "dilation", "max_mean")
    assert DegradationFamily(exclude=("fattening:max_mean",)).choices("fattening") == ("none", "dilation")
    assert all("fattening_azimuth_deg" not in d.drawn for d in plain)
    included = {degrade_surface(np.random.default_rng(s), dsm, None, RES,
                                DegradationFamily(include=("fattening:directional",))).drawn["fattening"]
                for s in range(30)}
    assert "directional" in included
    with pytest.raises(InputError, match="not an opt-in variant"):
        DegradationFamily(include=("fattening:dilation",))


def test_directional_fattening_widens_a_building_on_one_side_only():
    """A 12 m block, fattened 2 m towards a drawn azimuth: the ring of ground just outside the
    block is raised on the side the azimuth points to and stays at ground level on the opposite one."""
    quiet = DegradationFamily(only=("fattening:directional", "sampling:random"), fattening_m=(2.0, 2.0),
                              fattening_fraction=(1.0, 1.0), noise_std=(0.01, 0.011), blunder_fraction=(0.0, 0.0),
                              hole_fraction=(0.0, 0.0), density=(20.0, 20.0), density_variation=(0.0, 0.0),
                              slope_noise_probability=0.0, vertical_bias_std_m=0.0, planimetric_shift_std_m=0.0,
                              xy_noise_std_m=(0.0, 0.0))
    dsm = _block_city()  # block over x, y in [19, 29] m (x east, y north from the south-west corner)
    for seed in range(6):
        d = degrade_surface(np.random.default_rng(seed), dsm, None, RES, quiet)
        azimuth = np.radians(d.drawn["fattening_azimuth_deg"])
        east, north = np.sin(azimuth), np.cos(azimuth)
        x, y, z = d.xyz.T
        dx, dy = x - 24.0, y - 24.0
        # within 1.5 m outside the block, on the line through its centre along the azimuth
        outside = (np.maximum(np.abs(dx), np.abs(dy)) > 5.1) & (np.maximum(np.abs(dx), np.abs(dy)) < 6.5)
        along = dx * east + dy * north
        on_line = np.abs(dx * north - dy * east) < 2.0
        ahead, behind = outside & on_line & (along > 0), outside & on_line & (along < 0)
        assert ahead.sum() > 5 and behind.sum() > 5
        assert np.median(z[ahead]) > 17.0  # the low side takes 0.6–1 of the 12 m step
        assert np.all(z[behind] < 11.0)


def test_density_and_pixel_grid_sampling():
    dsm = np.full((80, 80), 5.0)  # 40 × 40 m
    dense = DegradationFamily(density=(20.0, 20.0), density_variation=(0, 0), hole_fraction=(0, 0),
                              only=("sampling:random",))
    n = len(degrade_surface(np.random.default_rng(0), dsm, None, RES, dense).xyz)
    assert 0.9 * 20 * 1600 < n < 1.1 * 20 * 1600
    grid = DegradationFamily(pixel_grid_gsd=(1.0,), hole_fraction=(0, 0), only=("sampling:pixel_grid",))
    assert len(degrade_surface(np.random.default_rng(0), dsm, None, RES, grid).xyz) == 1600


def test_holes_stay_within_the_cap_and_invalid_cells_get_no_points():
    dsm = _block_city()
    valid = np.ones(dsm.shape, np.uint8)
    valid[:, :48] = 0
    fam = DegradationFamily(hole_fraction=(0.0, 0.1), density=(10, 10), density_variation=(0, 0),
                            only=("sampling:random", "holes:blobs"), planimetric_shift_std_m=0, xy_noise_std_m=(0, 0))
    xyz = degrade_surface(np.random.default_rng(1), dsm, valid, RES, fam).xyz
    assert (xyz[:, 0] < 24 - 0.01).sum() == 0
    assert len(xyz) > 0.85 * 10 * 24 * 48


def test_blunders_include_far_outliers():
    fam = DegradationFamily(blunder_fraction=(0.03, 0.03), far_outlier_share=1.0, noise_std=(0.05, 0.05),
                            vertical_bias_std_m=0.0)
    z = degrade_surface(np.random.default_rng(2), np.full((60, 60), 0.0), None, RES, fam).xyz[:, 2]
    far = np.abs(z) > 40
    assert 0.02 < far.mean() < 0.04


def test_bad_family_options_are_refused():
    with pytest.raises(InputError, match="unknown"):
        family_from_mapping({"exclude": ["fattening:blur"]})
    with pytest.raises(InputError, match="keep at least one"):
        DegradationFamily(exclude=("noise:independent", "noise:correlated", "noise:mixed"))
    with pytest.raises(InputError, match="unknown option"):
        family_from_mapping({"noise": 1})
    assert family_from_mapping({"noise_std": [0.1, 0.2]}).noise_std == (0.1, 0.2)


def test_photometric_augmentation_keeps_nodata_and_bit_depth():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (2, 64, 64)).astype(np.float32)
    img[0, :10] = np.nan
    out = augment_images(rng, img, PhotometricAugmentation(shift_px=0.0))
    assert out.shape == img.shape
    assert np.isnan(out[0, :10]).all() and np.isfinite(out[0, 10:]).all()
    assert np.nanmax(out) <= 65535 and np.nanmin(out) >= 0
    assert np.allclose(out[np.isfinite(out)], np.round(out[np.isfinite(out)]))


def test_parallax_view_moves_only_what_stands_above_ground():
    dsm = _block_city()
    image = np.zeros(dsm.shape, np.float32)
    image[40:56, 40:56] = 1.0                       # the roof is bright
    view = parallax_view(image, dsm, RES, azimuth_deg=90.0, off_nadir_deg=20.0)
    shift_px = 12.0 * np.tan(np.radians(20.0)) / RES  # ~8.7 px to the east
    cols = np.flatnonzero(view[48] > 0.5)
    assert cols.min() == pytest.approx(40 + shift_px, abs=1.5)
    assert view[5, 5] == 0.0 and view[90, 90] == 0.0  # ground unchanged


def test_the_whole_cloud_displacement_is_recorded_with_its_signs():
    """The cloud of a tilted plane z = 10 + 0.5 x + 0.25 y (x east, y north) moved by the recorded
    (east, north, up): each point's height minus the plane at its reported position is then
    bias − 0.5 · east − 0.25 · north, up to the little noise left."""
    n = 96
    rows, cols = np.indices((n, n))
    x, y = (cols + 0.5) * RES, (n - rows - 0.5) * RES
    plane = 10.0 + 0.5 * x + 0.25 * y
    quiet = DegradationFamily(noise_std=(0.01, 0.011), blunder_fraction=(0.0, 0.0), hole_fraction=(0.0, 0.0),
                              xy_noise_std_m=(0.0, 0.0), only=("fattening:none", "sampling:random"),
                              slope_noise_probability=0.0, vertical_bias_std_m=0.5, planimetric_shift_std_m=0.5)
    for seed in range(5):
        d = degrade_surface(np.random.default_rng(seed), plane, None, RES, quiet)
        bias, (east, north) = d.drawn["vertical_bias_m"], d.drawn["planimetric_shift_m"]
        xyz = d.xyz
        inside = (xyz[:, 0] > 2) & (xyz[:, 0] < n * RES - 2) & (xyz[:, 1] > 2) & (xyz[:, 1] < n * RES - 2)
        offset = xyz[inside, 2] - (10.0 + 0.5 * xyz[inside, 0] + 0.25 * xyz[inside, 1])
        assert np.median(offset) == pytest.approx(bias - 0.5 * east - 0.25 * north, abs=0.01)


def test_an_ortho_is_withheld_or_replaced_by_a_turned_copy_at_the_drawn_rates():
    """Each image alone: withheld → all no-data; mismatched → one of the 7 other symmetries of
    the square, never itself; the rest untouched. Rates follow the probabilities."""
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (3000, 6, 6)).astype(np.float32)  # no image equals a turned copy
    out = withhold_or_mismatch(rng, images, withhold=0.2, mismatch=0.3)
    withheld = np.isnan(out).all(axis=(1, 2))
    kept = np.array([np.array_equal(o, i) for o, i in zip(out, images)])
    turned = ~withheld & ~kept
    for o, i in zip(out[turned], images[turned]):
        copies = [augment_grid(i, flip, k) for flip in (False, True) for k in range(4)][1:]
        assert sum(np.array_equal(o, c) for c in copies) == 1
    assert withheld.mean() == pytest.approx(0.2, abs=0.03)
    assert turned.mean() == pytest.approx(0.3, abs=0.03)
    assert np.isfinite(out[~withheld]).all()


def test_withholding_options_are_checked_and_off_by_default():
    assert PhotometricAugmentation().withhold_probability == 0.0
    assert PhotometricAugmentation().mismatch_probability == 0.0
    for p, q in ((-0.1, 0.0), (0.0, 1.5), (0.6, 0.6)):
        with pytest.raises(ValueError, match="at most 1"):
            PhotometricAugmentation(withhold_probability=p, mismatch_probability=q)


def test_texture_puts_a_smooth_multiplicative_grain_on_flat_areas_and_is_off_by_default():
    """Two flat halves (a roof brighter than the ground): without texture each half stays one value;
    with it each half varies by about the drawn amplitude, smoothly at the drawn grain, and the step
    between the halves stays."""
    img = np.full((1, 96, 96), 60.0, np.float32)
    img[0, :, 48:] = 160.0
    img[0, 0], img[0, -1] = 0.0, 255.0   # the darkest and brightest rows set the working range
    plain = IDENTITY_PHOTOMETRY
    assert PhotometricAugmentation().texture == (0.0, 0.0)
    out = augment_images(np.random.default_rng(0), img, PhotometricAugmentation(**plain))[0]
    assert np.unique(out[1:-1, 48:]).size == 1 and np.unique(out[1:-1, :48]).size == 1
    textured = PhotometricAugmentation(**plain, texture=(0.2, 0.2), texture_scale_px=(4.0, 4.0))
    out = augment_images(np.random.default_rng(0), img, textured)[0]
    roof, ground = out[8:-8, 56:-8], out[8:-8, 8:40]
    for flat in (roof, ground):
        assert flat.std() / flat.mean() == pytest.approx(0.2, rel=0.3)
    neighbours = np.corrcoef(roof[:, :-1].ravel(), roof[:, 1:].ravel())[0, 1]
    assert neighbours > 0.9                                   # a grain of ~4 px, not pixel noise
    assert np.median(out[:, 56:]) > np.median(out[:, :40])   # the albedo step is still there
    with pytest.raises(ValueError, match="texture"):
        PhotometricAugmentation(texture=(0.3, 0.1))


def test_leaning_view_moves_a_roof_whole_over_the_ground():
    """A bright roof over a 12 m building seen at 20° towards the east: leaning_view moves the whole
    roof by 12 · tan 20° / 0.5 m ≈ 8.7 px, over the ground east of the building (not only within its
    footprint); the ground west and far away stays. parallax_view, the stereo second view, is it."""
    dsm = _block_city()
    image = np.full(dsm.shape, 0.2, np.float32)
    image[38:58, 38:58] = 1.0
    view = leaning_view(image, dsm, RES, azimuth_deg=90.0, off_nadir_deg=20.0)
    shift = 12.0 * np.tan(np.radians(20.0)) / RES
    for row in (40, 48, 56):
        bright = np.flatnonzero(view[row] > 0.5)
        assert bright.max() == pytest.approx(57 + shift, abs=1.0)     # the roof overhangs the ground
        assert bright.min() >= 38                                      # nothing moves west
    assert np.all(view[:, :38] == 0.2) and np.all(view[:30] == 0.2)  # ground away from it unchanged
    assert view.shape == image.shape and np.isfinite(view).all()
    np.testing.assert_array_equal(parallax_view(image, dsm, RES, azimuth_deg=90.0, off_nadir_deg=20.0), view)
    with pytest.raises(ValueError, match="differ in shape"):
        leaning_view(image[:10], dsm, RES, 90.0, 20.0)
    with pytest.raises(ValueError, match="off-nadir"):
        leaning_view(image, dsm, RES, 90.0, 75.0)
    tower = np.where(dsm > 15, 1000.0, dsm)                 # leans clean out of the image
    assert np.isfinite(leaning_view(image, tower, RES, 90.0, 45.0)).all()


def test_lean_shows_the_images_as_a_standard_ortho_of_one_drawn_view_and_is_off_by_default():
    """With the lean on (always, 20°) every image of a sample leans the same way and the ground far
    from the building stays; off (the default), at probability 0, or without the surface, nothing
    leans and nothing is drawn."""
    dsm = _block_city()
    img = np.full((2, 96, 96), 60.0, np.float32)
    img[:, 38:58, 38:58] = 200.0
    img[:, 0, 0], img[:, -1, -1] = 0.0, 255.0   # fix the working range
    plain = IDENTITY_PHOTOMETRY
    assert PhotometricAugmentation().lean_off_nadir_deg == (0.0, 0.0)
    off = augment_images(np.random.default_rng(3), img, PhotometricAugmentation(**plain), dsm, RES)
    leaning = PhotometricAugmentation(**plain, lean_off_nadir_deg=(20.0, 20.0), lean_probability=1.0)
    np.testing.assert_array_equal(augment_images(np.random.default_rng(3), img, leaning), off)  # no surface
    out = augment_images(np.random.default_rng(3), img, leaning, dsm, RES)
    np.testing.assert_array_equal(out[0], out[1])              # one view for all images of a sample
    bright, moved = off[0] > 30000, out[0] > 30000
    assert moved.sum() == pytest.approx(bright.sum(), rel=0.35) and (moved & ~bright).sum() > 50
    corner = np.s_[2:20, 2:20]                                   # ground far from the building stays
    np.testing.assert_array_equal(out[0][corner], off[0][corner])
    never = PhotometricAugmentation(**plain, lean_off_nadir_deg=(20.0, 20.0), lean_probability=0.0)
    np.testing.assert_array_equal(augment_images(np.random.default_rng(3), img, never, dsm, RES), off)
    with pytest.raises(ValueError, match="lean_off_nadir_deg"):
        PhotometricAugmentation(lean_off_nadir_deg=(20.0, 10.0))
    with pytest.raises(ValueError, match="lean_probability"):
        PhotometricAugmentation(lean_off_nadir_deg=(0.0, 10.0), lean_probability=1.5)
