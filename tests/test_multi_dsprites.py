"""Tests for the procedural Multi-dSprites generator."""

from __future__ import annotations

import numpy as np
import pytest

from slotlab.data.procedural.multi_dsprites import (
    MIN_VISIBLE_PIXELS,
    VARIANTS,
    generate_multi_dsprites,
    sprite_footprint,
)

N = 300
S = 64
# Written out independently of the module: (entities, channels, min sprites, max sprites).
REF = {
    "binarized": (4, 1, 2, 3),
    "colored_on_grayscale": (6, 3, 2, 5),
    "colored_on_colored": (5, 3, 2, 4),
}
SCALES = np.linspace(0.5, 1.0, 6)


@pytest.fixture(scope="module", params=sorted(REF))
def batch(request):
    return request.param, generate_multi_dsprites(N, 7, request.param)


def test_variants_constant():
    assert VARIANTS == {"binarized": 4, "colored_on_grayscale": 6, "colored_on_colored": 5}


def test_shapes_and_dtypes(batch):
    variant, d = batch
    e, c, _, _ = REF[variant]
    assert set(d) == {"image", "mask", "x", "y", "shape", "scale", "orientation", "color", "visibility"}
    assert d["image"].shape == (N, S, S, c) and d["image"].dtype == np.uint8
    assert d["mask"].shape == (N, e, S, S, 1) and d["mask"].dtype == np.uint8
    for key in ("x", "y", "shape", "scale", "orientation", "visibility"):
        assert d[key].shape == (N, e) and d[key].dtype == np.float32, key
    assert d["color"].shape == (N, e, c) and d["color"].dtype == np.float32
    assert d["color"].min() >= 0 and d["color"].max() <= 1


def test_latent_values(batch):
    _, d = batch
    vis = d["visibility"][:, 1:] == 1
    assert set(np.unique(d["shape"][:, 1:][vis])) == {1.0, 2.0, 3.0}
    assert np.allclose(np.unique(d["scale"][:, 1:][vis]), SCALES)
    for key in ("x", "y"):
        assert np.allclose(np.unique(d[key][:, 1:][vis]), np.linspace(0, 1, 32), atol=1e-6)
    o = d["orientation"][:, 1:][vis]
    assert o.min() >= 0 and o.max() < 2 * np.pi
    assert np.allclose(np.unique(o) / (2 * np.pi / 40), np.arange(40), atol=1e-4)
    # background and padding slots are zero
    for key in ("x", "y", "shape", "scale", "orientation"):
        assert np.all(d[key][:, 0] == 0) and np.all(d[key][:, 1:][~vis] == 0), key
    assert np.all(d["color"][:, 1:][~vis] == 0)


def test_determinism():
    a = generate_multi_dsprites(20, 3, "colored_on_colored")
    b = generate_multi_dsprites(20, 3, "colored_on_colored")
    c = generate_multi_dsprites(20, 4, "colored_on_colored")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], c["image"])
    assert not np.array_equal(a["x"], c["x"])


def test_masks_disjoint_covering(batch):
    _, d = batch
    m = d["mask"]
    assert set(np.unique(m)) <= {0, 255}
    assert np.all((m == 255).sum(axis=1) == 1)


def test_sprite_count_and_visibility(batch):
    variant, d = batch
    _, _, lo, hi = REF[variant]
    vis = d["visibility"]
    assert set(np.unique(vis)) <= {0.0, 1.0}
    assert np.all(vis[:, 0] == 1)
    count = vis[:, 1:].sum(axis=1)
    assert count.min() == lo and count.max() == hi
    # present sprites fill the first slots, padding the last ones
    assert np.all(np.diff(vis[:, 1:], axis=1) <= 0)
    # visibility <-> non-empty mask, with at least MIN_VISIBLE_PIXELS visible pixels per sprite
    pixels = (d["mask"] == 255).sum(axis=(2, 3, 4))
    np.testing.assert_array_equal(pixels > 0, vis == 1)
    assert np.all(pixels[:, 1:][vis[:, 1:] == 1] >= MIN_VISIBLE_PIXELS)


def test_pixels_have_entity_colour(batch):
    variant, d = batch
    e = REF[variant][0]
    expected = np.rint(d["color"] * np.float32(255)).astype(np.uint8)  # [N, E, C]
    labels = np.argmax(d["mask"][..., 0], axis=1)  # [N, S, S]
    want = np.take_along_axis(expected, labels.reshape(N, -1, 1), axis=1).reshape(d["image"].shape)
    np.testing.assert_array_equal(d["image"], want)
    assert labels.max() <= e - 1
    if variant == "binarized":
        assert set(np.unique(d["image"])) == {0, 255}
        assert np.all(d["color"][:, 0] == 0)
        assert np.all(d["color"][:, 1:, 0] == d["visibility"][:, 1:])
    if variant == "colored_on_grayscale":
        bg = d["color"][:, 0]
        assert np.all(bg[:, 0] == bg[:, 1]) and np.all(bg[:, 0] == bg[:, 2])
        assert bg.std() > 0.1  # grey level varies between images
        on_bg = d["mask"][..., 0][:, 0] == 255
        img = d["image"]
        assert np.all(img[..., 0][on_bg] == img[..., 1][on_bg]) and np.all(img[..., 1][on_bg] == img[..., 2][on_bg])
    if variant == "colored_on_colored":
        bg = d["color"][:, 0]
        assert np.any(bg[:, 0] != bg[:, 1])


def test_masks_match_rendered_footprints(batch):
    """Each sprite's visible mask lies inside its own footprint; some sprites are partly occluded."""
    _, d = batch
    occluded = 0
    for i in range(40):
        for k in np.flatnonzero(d["visibility"][i, 1:]) + 1:
            fp = sprite_footprint(
                int(d["shape"][i, k]), d["scale"][i, k], d["orientation"][i, k], d["x"][i, k], d["y"][i, k]
            )
            visible = d["mask"][i, k, :, :, 0] == 255
            assert not np.any(visible & ~fp)
            occluded += visible.sum() < fp.sum()
            # the last sprite drawn is never occluded
            if k == d["visibility"][i].sum() - 1:
                np.testing.assert_array_equal(visible, fp)
    assert occluded > 0


def test_shapes_distinguishable():
    """At scale 1, orientation 0, centred: square area > heart area > ellipse area, with the expected geometry."""
    sq, el, he = (sprite_footprint(s, 1.0, 0.0, 0.5, 0.5) for s in (1, 2, 3))
    assert sq.sum() > he.sum() > el.sum() > 0
    # the square is a full axis-aligned rectangle of side ~ 20 px at 64 px
    rows, cols = np.nonzero(sq)
    h, w = np.ptp(rows) + 1, np.ptp(cols) + 1
    assert 18 <= h <= 22 and h == w and sq.sum() == h * w
    # ellipse: aspect ratio ~ 2:1 and symmetric under both flips
    rows, cols = np.nonzero(el)
    assert 1.7 < (np.ptp(cols) + 1) / (np.ptp(rows) + 1) < 2.3
    np.testing.assert_array_equal(el, el[::-1, ::-1])
    # heart: left-right symmetric, wider at the top (lobes) than at the bottom (point)
    rows, cols = np.nonzero(he)
    top, bottom = rows.min(), rows.max()
    width = he.sum(axis=1)
    assert width[top + 3] > 2 * width[bottom - 2]
    c = (cols.min() + cols.max()) / 2
    np.testing.assert_array_equal(np.nonzero(he[top + 3])[0] - c, -(np.nonzero(he[top + 3])[0] - c)[::-1])
    # rotation by 90 degrees turns the ellipse vertical; scale 0.5 quarters the square area
    rows, cols = np.nonzero(sprite_footprint(2, 1.0, np.pi / 2, 0.5, 0.5))
    assert (np.ptp(rows) + 1) > 1.7 * (np.ptp(cols) + 1)
    assert abs(sprite_footprint(1, 0.5, 0.0, 0.5, 0.5).sum() * 4 - sq.sum()) <= 0.15 * sq.sum()


def test_sprites_mostly_inside_image():
    """Unrotated sprites of the largest scale at the extreme positions stay clear of the image border."""
    for s in (1, 2, 3):
        for x, y in ((0, 0), (1, 1), (0, 1), (1, 0)):
            fp = sprite_footprint(s, 1.0, 0.0, x, y)
            assert fp.sum() > 0
            assert not (fp[0].any() or fp[-1].any() or fp[:, 0].any() or fp[:, -1].any())


def test_bad_arguments():
    with pytest.raises(ValueError):
        generate_multi_dsprites(2, 0, "nope")
    d = generate_multi_dsprites(0, 0, "binarized")
    assert d["image"].shape == (0, S, S, 1)
    small = generate_multi_dsprites(5, 0, "colored_on_colored", image_size=32)
    assert small["image"].shape == (5, 32, 32, 3) and small["mask"].shape == (5, 5, 32, 32, 1)
