"""Tests for the procedural tetrominoes generator."""

from __future__ import annotations

import numpy as np
import pytest

from slotlab.data.procedural.tetrominoes import (
    BEVEL,
    BEVEL_K,
    COLOUR_NAMES,
    COLOURS,
    SHAPE_NAMES,
    SHAPES,
    generate_tetrominoes,
    shape_template,
)

N = 3000
S = 35
P = 3
K = P + 1

# Reference constants written out independently of the module.
REF_K = np.array(
    [
        [6, 8, 8, 8, 7],
        [4, 5, 5, 5, 6],
        [4, 5, 5, 5, 6],
        [4, 5, 5, 5, 6],
        [3, 2, 2, 2, 4],
    ]
)
REF_BEVEL = (255 * REF_K) // 8
ALLOWED_VALUES = {0} | {(255 * k) // 8 for k in range(2, 9)}
REF_COLOURS = {(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1)}

FREE_TETROMINOES = {
    "I": ((0, 0), (0, 1), (0, 2), (0, 3)),
    "O": ((0, 0), (0, 1), (1, 0), (1, 1)),
    "T": ((0, 0), (0, 1), (0, 2), (1, 1)),
    "S": ((0, 1), (0, 2), (1, 0), (1, 1)),
    "Z": ((0, 0), (0, 1), (1, 1), (1, 2)),
    "J": ((0, 1), (1, 1), (2, 0), (2, 1)),
    "L": ((0, 0), (1, 0), (2, 0), (2, 1)),
}
GROUPS = {"I": range(0, 2), "O": range(2, 3), "T": range(3, 7), "S": range(7, 9),
          "Z": range(9, 11), "J": range(11, 15), "L": range(15, 19)}


def _normalise(cells):
    cells = list(cells)
    r0 = min(r for r, _ in cells)
    c0 = min(c for _, c in cells)
    return frozenset((r - r0, c - c0) for r, c in cells)


def _rotations(cells):
    out = set()
    cur = _normalise(cells)
    for _ in range(4):
        out.add(cur)
        cur = _normalise((c, -r) for r, c in cur)
    return out


def _footprint(cells, size=20):
    f = np.zeros((size, size), dtype=bool)
    for r, c in cells:
        f[5 * r:5 * r + 5, 5 * c:5 * c + 5] = True
    return f


def _crop(m):
    rr, cc = np.nonzero(m)
    return m[rr.min():rr.max() + 1, cc.min():cc.max() + 1], rr.min(), cc.min()


@pytest.fixture(scope="module")
def data():
    return generate_tetrominoes(N, seed=123)


# --------------------------------------------------------------------------- #
# Constants
# --------------------------------------------------------------------------- #


def test_constants():
    assert len(SHAPES) == 19 and len(SHAPE_NAMES) == 19
    assert len(set(SHAPE_NAMES)) == 19
    assert len(COLOURS) == 6 and len(COLOUR_NAMES) == 6
    assert set(map(tuple, COLOURS)) == REF_COLOURS
    named = dict(zip(COLOUR_NAMES, COLOURS))
    assert named["red"] == (1, 0, 0) and named["yellow"] == (1, 1, 0)
    assert named["magenta"] == (1, 0, 1) and named["cyan"] == (0, 1, 1)
    np.testing.assert_array_equal(BEVEL_K, REF_K)
    np.testing.assert_array_equal(BEVEL, REF_BEVEL)
    assert BEVEL.dtype == np.uint8


def test_shapes_are_the_19_fixed_tetrominoes():
    norm = [_normalise(s) for s in SHAPES]
    # Each entry is already normalised, has 4 distinct blocks and is connected.
    for s, n in zip(SHAPES, norm):
        assert frozenset(s) == n
        assert len(n) == 4 and len(s) == 4
        seen = {next(iter(n))}
        stack = list(seen)
        while stack:
            r, c = stack.pop()
            for nb in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if nb in n and nb not in seen:
                    seen.add(nb)
                    stack.append(nb)
        assert seen == n
    assert len(set(norm)) == 19
    all_fixed = set().union(*(_rotations(f) for f in FREE_TETROMINOES.values()))
    assert len(all_fixed) == 19
    assert set(norm) == all_fixed
    # Documented order: I x2 (horizontal first), O, T x4, S x2, Z x2, J x4, L x4.
    for name, idx in GROUPS.items():
        assert {norm[i] for i in idx} == _rotations(FREE_TETROMINOES[name])
        assert all(SHAPE_NAMES[i].startswith(name) for i in idx)
    assert norm[0] == frozenset({(0, 0), (0, 1), (0, 2), (0, 3)})
    assert norm[1] == frozenset({(0, 0), (1, 0), (2, 0), (3, 0)})


def test_shape_template():
    for i, s in enumerate(SHAPES):
        t = shape_template(i)
        assert t.shape == (20, 20) and t.dtype == np.uint8
        np.testing.assert_array_equal(t > 0, _footprint(s))
        for r, c in s:
            np.testing.assert_array_equal(t[5 * r:5 * r + 5, 5 * c:5 * c + 5], REF_BEVEL)


# --------------------------------------------------------------------------- #
# Output format
# --------------------------------------------------------------------------- #


def test_shapes_and_dtypes(data):
    expected = {
        "image": ((N, S, S, 3), np.uint8),
        "mask": ((N, K, S, S, 1), np.uint8),
        "x": ((N, K), np.float32),
        "y": ((N, K), np.float32),
        "shape": ((N, K), np.float32),
        "color": ((N, K, 3), np.float32),
        "visibility": ((N, K), np.float32),
    }
    assert set(data) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert data[key].shape == shape, key
        assert data[key].dtype == dtype, key
    np.testing.assert_array_equal(data["visibility"], 1.0)


def test_masks_partition_image(data):
    mask = data["mask"]
    assert set(np.unique(mask).tolist()) <= {0, 255}
    on = mask[..., 0] == 255  # [N,K,S,S]
    # Exactly one entity per pixel: disjoint and covering.
    np.testing.assert_array_equal(on.sum(axis=1), 1)
    # Exactly P pieces, each fully visible: 4 blocks of 5x5 pixels.
    np.testing.assert_array_equal(on[:, 1:].sum(axis=(2, 3)), 100)
    np.testing.assert_array_equal(on[:, 0].sum(axis=(1, 2)), S * S - P * 100)


def test_background_black_and_pieces_lit(data):
    image = data["image"]
    bg = data["mask"][:, 0, :, :, 0] == 255
    assert not image[bg].any()
    # Every piece pixel has at least one channel on.
    assert (image[~bg].max(axis=-1) > 0).all()


def test_channel_values(data):
    assert set(np.unique(data["image"]).tolist()) <= ALLOWED_VALUES


def test_background_entity_fields(data):
    for key in ("x", "y", "shape"):
        np.testing.assert_array_equal(data[key][:, 0], 0.0)
    np.testing.assert_array_equal(data["color"][:, 0], 0.0)


def test_colours_and_shape_indices(data):
    cols = data["color"][:, 1:].reshape(-1, 3)
    assert {tuple(int(v) for v in c) for c in np.unique(cols, axis=0)} <= REF_COLOURS
    shp = data["shape"][:, 1:]
    np.testing.assert_array_equal(shp, np.round(shp))
    assert shp.min() >= 0 and shp.max() <= 18


def test_centre_of_mass(data):
    on = (data["mask"][:, 1:, :, :, 0] == 255).astype(np.float64)  # [N,P,S,S]
    area = on.sum(axis=(2, 3))
    rows = np.arange(S, dtype=np.float64)
    y = (on.sum(axis=3) * rows).sum(axis=2) / area
    x = (on.sum(axis=2) * rows).sum(axis=2) / area
    np.testing.assert_allclose(data["x"][:, 1:], x, atol=1e-4)
    np.testing.assert_allclose(data["y"][:, 1:], y, atol=1e-4)


def test_image_is_composition_of_pieces(data):
    """Rebuild images from shape/colour/mask position and compare exactly."""
    templates = [_footprint(s) for s in SHAPES]
    for i in range(300):
        recon = np.zeros((S, S, 3), dtype=np.int64)
        for j in range(1, K):
            m = data["mask"][i, j, :, :, 0] == 255
            crop, r0, c0 = _crop(m)
            sidx = int(data["shape"][i, j])
            t = templates[sidx]
            tcrop, _, _ = _crop(t)
            np.testing.assert_array_equal(crop, tcrop)  # footprint == template
            colour = data["color"][i, j].astype(np.int64)
            for br, bc in SHAPES[sidx]:
                rs, cs = r0 + 5 * br, c0 + 5 * bc
                recon[rs:rs + 5, cs:cs + 5] = REF_BEVEL[..., None] * colour
        np.testing.assert_array_equal(data["image"][i], recon)


def test_block_structure_located_from_image(data):
    """Locate blocks purely from the image + masks and check each bevel."""
    for i in range(20):
        img = data["image"][i].astype(np.int64)
        for j in range(1, K):
            m = data["mask"][i, j, :, :, 0] == 255
            _, r0, c0 = _crop(m)
            colour = data["color"][i, j].astype(np.int64)
            blocks = 0
            for rs in range(r0, S, 5):
                for cs in range(c0, S, 5):
                    cell = m[rs:rs + 5, cs:cs + 5]
                    if not cell.any():
                        continue
                    # Pieces sit on a 5px grid relative to their own origin.
                    assert cell.shape == (5, 5) and cell.all()
                    np.testing.assert_array_equal(
                        img[rs:rs + 5, cs:cs + 5], REF_BEVEL[..., None] * colour
                    )
                    blocks += 1
            assert blocks == 4


# --------------------------------------------------------------------------- #
# Sampling behaviour
# --------------------------------------------------------------------------- #


def test_determinism():
    a = generate_tetrominoes(50, seed=7)
    b = generate_tetrominoes(50, seed=7)
    c = generate_tetrominoes(50, seed=8)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], c["image"])
    assert not np.array_equal(a["shape"], c["shape"])


def test_coverage_of_shapes_colours_and_borders(data):
    shp = data["shape"][:, 1:].astype(int)
    assert set(np.unique(shp).tolist()) == set(range(19))
    cols = {tuple(int(v) for v in c) for c in data["color"][:, 1:].reshape(-1, 3)}
    assert cols == REF_COLOURS
    pieces = data["mask"][:, 1:, :, :, 0] == 255
    assert pieces[:, :, 0, :].any()      # some piece touches row 0
    assert pieces[:, :, S - 1, :].any()  # ... the last row
    assert pieces[:, :, :, 0].any()      # ... column 0
    assert pieces[:, :, :, S - 1].any()  # ... column 34


def test_offsets_roughly_uniform(data):
    """First piece is unconstrained: its normalised offset should be ~U[0,1]."""
    on = data["mask"][:, 1, :, :, 0] == 255
    rows_any = on.any(axis=2)
    cols_any = on.any(axis=1)
    top = rows_any.argmax(axis=1)
    left = cols_any.argmax(axis=1)
    height = rows_any.sum(axis=1)
    width = cols_any.sum(axis=1)
    u = top / (S - height)
    v = left / (S - width)
    for w in (u, v):
        assert 0.45 < w.mean() < 0.55
        assert 0.05 < (w < 0.1).mean() < 0.16
        assert 0.05 < (w > 0.9).mean() < 0.16
    # Shapes are roughly uniform too.
    counts = np.bincount(data["shape"][:, 1].astype(int), minlength=19)
    assert counts.min() > 0.5 * N / 19 and counts.max() < 1.5 * N / 19


def test_other_sizes_and_edge_cases():
    d = generate_tetrominoes(40, seed=1, image_size=48, num_pieces=5)
    assert d["image"].shape == (40, 48, 48, 3)
    assert d["mask"].shape == (40, 6, 48, 48, 1)
    on = d["mask"][..., 0] == 255
    np.testing.assert_array_equal(on.sum(axis=1), 1)
    np.testing.assert_array_equal(on[:, 1:].sum(axis=(2, 3)), 100)

    e = generate_tetrominoes(0)
    assert e["image"].shape == (0, S, S, 3) and e["mask"].shape == (0, K, S, S, 1)

    # Small images only use the shapes that fit.
    f = generate_tetrominoes(30, seed=2, image_size=15, num_pieces=1)
    assert (f["mask"][:, 1, :, :, 0] == 255).sum(axis=(1, 2)).min() == 100
    assert not np.isin(f["shape"][:, 1], [0, 1]).any()

    with pytest.raises(ValueError):
        generate_tetrominoes(1, image_size=8)
    with pytest.raises(ValueError):
        generate_tetrominoes(1, num_pieces=-1)
