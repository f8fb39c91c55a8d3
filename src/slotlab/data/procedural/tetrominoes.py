"""Procedural generator for the "tetrominoes" multi-object dataset.

Reproduces the format of DeepMind's multi-object-datasets ``tetrominoes``
split: 35x35 RGB images on a black background containing exactly three
non-overlapping, fully visible tetrominoes made of bevelled 5x5 pixel blocks.

Generation is vectorised over images: the only Python loops are over the
pieces of an image and over rejection-sampling rounds.

Output fields (``N`` images, ``K = num_pieces + 1`` entities, entity 0 is the
background, entities ``1..num_pieces`` are the pieces in drawing order):

``image``       uint8   [N, S, S, 3]
``mask``        uint8   [N, K, S, S, 1], values 0 / 255, disjoint, covering
``x``, ``y``    float32 [N, K], centre of mass (column, row) in pixels
``shape``       float32 [N, K], index into :data:`SHAPES` (0 for background)
``color``       float32 [N, K, 3], 0/1 channel on-mask (0 for background)
``visibility``  float32 [N, K], all ones
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BEVEL",
    "BEVEL_K",
    "BLOCK_SIZE",
    "COLOURS",
    "COLOUR_NAMES",
    "IMAGE_SIZE",
    "NUM_PIECES",
    "SHAPES",
    "SHAPE_NAMES",
    "generate_tetrominoes",
    "shape_template",
]

#: Side length of one tetromino block in pixels.
BLOCK_SIZE = 5
#: Default image side length (pixels).
IMAGE_SIZE = 35
#: Default number of pieces per image.
NUM_PIECES = 3

#: The 19 fixed tetrominoes as (row, col) block coordinates, normalised so the
#: minimum row and column are 0.  Rotations are clockwise in image coordinates.
SHAPES: tuple[tuple[tuple[int, int], ...], ...] = (
    # I
    ((0, 0), (0, 1), (0, 2), (0, 3)),
    ((0, 0), (1, 0), (2, 0), (3, 0)),
    # O
    ((0, 0), (0, 1), (1, 0), (1, 1)),
    # T
    ((0, 0), (0, 1), (0, 2), (1, 1)),
    ((0, 1), (1, 0), (1, 1), (2, 1)),
    ((0, 1), (1, 0), (1, 1), (1, 2)),
    ((0, 0), (1, 0), (1, 1), (2, 0)),
    # S
    ((0, 1), (0, 2), (1, 0), (1, 1)),
    ((0, 0), (1, 0), (1, 1), (2, 1)),
    # Z
    ((0, 0), (0, 1), (1, 1), (1, 2)),
    ((0, 1), (1, 0), (1, 1), (2, 0)),
    # J
    ((0, 1), (1, 1), (2, 0), (2, 1)),
    ((0, 0), (1, 0), (1, 1), (1, 2)),
    ((0, 0), (0, 1), (1, 0), (2, 0)),
    ((0, 0), (0, 1), (0, 2), (1, 2)),
    # L
    ((0, 0), (1, 0), (2, 0), (2, 1)),
    ((0, 0), (0, 1), (0, 2), (1, 0)),
    ((0, 0), (0, 1), (1, 1), (2, 1)),
    ((0, 2), (1, 0), (1, 1), (1, 2)),
)

SHAPE_NAMES: tuple[str, ...] = (
    "I_0",
    "I_90",
    "O",
    "T_0",
    "T_90",
    "T_180",
    "T_270",
    "S_0",
    "S_90",
    "Z_0",
    "Z_90",
    "J_0",
    "J_90",
    "J_180",
    "J_270",
    "L_0",
    "L_90",
    "L_180",
    "L_270",
)

#: Piece colours as 0/1 on-masks over the RGB channels.
COLOURS: tuple[tuple[int, int, int], ...] = (
    (1, 0, 0),
    (0, 1, 0),
    (0, 0, 1),
    (1, 1, 0),
    (1, 0, 1),
    (0, 1, 1),
)
COLOUR_NAMES: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan")


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


#: Bevel levels of one 5x5 block (row 0 is the top); intensity = 255 * k / 8.
BEVEL_K = _readonly(
    np.array(
        [
            [6, 8, 8, 8, 7],
            [4, 5, 5, 5, 6],
            [4, 5, 5, 5, 6],
            [4, 5, 5, 5, 6],
            [3, 2, 2, 2, 4],
        ],
        dtype=np.int64,
    )
)
#: Per-pixel channel value of a lit block: floor(255 * k / 8), uint8 [5, 5].
BEVEL = _readonly(((255 * BEVEL_K) // 8).astype(np.uint8))

_TEMPLATE_SIZE = 4 * BLOCK_SIZE  # every tetromino fits in 20x20 pixels
_COLOUR_ARRAY = _readonly(np.array(COLOURS, dtype=np.uint8))


def shape_template(index: int) -> np.ndarray:
    """Bevelled intensity of shape ``index`` as uint8 [20, 20] (0 = empty).

    The piece sits in the top-left corner; its footprint is ``template > 0``.
    """
    t = np.zeros((_TEMPLATE_SIZE, _TEMPLATE_SIZE), dtype=np.uint8)
    b = BLOCK_SIZE
    for r, c in SHAPES[index]:
        t[r * b : (r + 1) * b, c * b : (c + 1) * b] = BEVEL
    return t


_TEMPLATES = _readonly(np.stack([shape_template(i) for i in range(len(SHAPES))]))
# Pixel extent (height, width) of each shape.
_HEIGHTS = _readonly(np.array([BLOCK_SIZE * (1 + max(r for r, _ in s)) for s in SHAPES]))
_WIDTHS = _readonly(np.array([BLOCK_SIZE * (1 + max(c for _, c in s)) for s in SHAPES]))
# Centre of mass of each template in its own pixel coordinates.
_COM_ROW = _readonly(np.array([np.nonzero(t)[0].mean() for t in _TEMPLATES], dtype=np.float64))
_COM_COL = _readonly(np.array([np.nonzero(t)[1].mean() for t in _TEMPLATES], dtype=np.float64))

# Padded templates + sliding windows, cached per image size.  ``windows[s, a, b]``
# is the S x S canvas of shape ``s`` placed at offset (S - a, S - b).
_WINDOW_CACHE: dict[int, np.ndarray] = {}


def _placement_windows(size: int) -> np.ndarray:
    w = _WINDOW_CACHE.get(size)
    if w is None:
        pad = np.zeros((len(SHAPES), 2 * size, 2 * size), dtype=np.uint8)
        t = min(_TEMPLATE_SIZE, size)
        pad[:, size : size + t, size : size + t] = _TEMPLATES[:, :t, :t]
        w = np.lib.stride_tricks.sliding_window_view(pad, (size, size), axis=(1, 2))
        _WINDOW_CACHE[size] = w
    return w


def _place_pieces(
    rng: np.random.Generator,
    n: int,
    size: int,
    num_pieces: int,
    allowed: np.ndarray,
    max_rounds: int,
):
    """Sequentially place ``num_pieces`` pieces in ``n`` images by rejection.

    Returns (shapes [n,P], rows [n,P], cols [n,P], labels [n,S,S] int8,
    intensity [n,S,S] uint8, ok [n] bool).  Images whose placement failed
    within ``max_rounds`` rounds for some piece have ``ok == False``.
    """
    windows = _placement_windows(size)
    shapes = np.zeros((n, num_pieces), dtype=np.int64)
    rows = np.zeros((n, num_pieces), dtype=np.int64)
    cols = np.zeros((n, num_pieces), dtype=np.int64)
    labels = np.zeros((n, size, size), dtype=np.int8)
    intensity = np.zeros((n, size, size), dtype=np.uint8)
    ok = np.ones(n, dtype=bool)
    for j in range(num_pieces):
        pending = np.flatnonzero(ok)
        for _ in range(max_rounds):
            if pending.size == 0:
                break
            m = pending.size
            s = allowed[rng.integers(0, allowed.size, size=m)]
            r = rng.integers(0, size - _HEIGHTS[s] + 1)
            c = rng.integers(0, size - _WIDTHS[s] + 1)
            cand = windows[s, size - r, size - c]  # [m, S, S] uint8 copy
            if j == 0:
                good = np.ones(m, dtype=bool)
            else:
                clash = (cand != 0) & (labels[pending] != 0)
                good = ~clash.reshape(m, -1).any(axis=1)
            idx = pending[good]
            shapes[idx, j] = s[good]
            rows[idx, j] = r[good]
            cols[idx, j] = c[good]
            placed = cand[good]
            intensity[idx] |= placed
            labels[idx] += (placed != 0).astype(np.int8) * np.int8(j + 1)
            pending = pending[~good]
        ok[pending] = False
    return shapes, rows, cols, labels, intensity, ok


def generate_tetrominoes(
    num_images: int,
    seed: int = 0,
    *,
    image_size: int = IMAGE_SIZE,
    num_pieces: int = NUM_PIECES,
) -> dict[str, np.ndarray]:
    """Generate ``num_images`` tetrominoes images deterministically from ``seed``.

    Returns a dict with keys ``image``, ``mask``, ``x``, ``y``, ``shape``,
    ``color`` and ``visibility`` (see the module docstring for layouts).
    Shapes are uniform over the tetrominoes that fit in the image, colours
    uniform over :data:`COLOURS`, offsets uniform over all integer positions
    keeping the piece inside the image; each piece is rejection-sampled
    (shape and offset) until it does not overlap the pieces already drawn.
    """
    num_images = int(num_images)
    size = int(image_size)
    num_pieces = int(num_pieces)
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    if num_pieces < 0:
        raise ValueError(f"num_pieces must be >= 0, got {num_pieces}")
    if num_pieces > 126:
        raise ValueError(f"num_pieces must be <= 126, got {num_pieces}")
    allowed = np.flatnonzero((size >= _HEIGHTS) & (size >= _WIDTHS))
    if num_pieces > 0 and allowed.size == 0:
        raise ValueError(f"image_size {size} is too small for any tetromino")
    if num_pieces * 4 * BLOCK_SIZE**2 > size * size:
        raise ValueError(f"{num_pieces} pieces cannot fit without overlap in a {size}x{size} image")

    rng = np.random.default_rng(seed)
    n, p = num_images, num_pieces
    colour_idx = rng.integers(0, len(COLOURS), size=(n, p))

    shapes = np.zeros((n, p), dtype=np.int64)
    rows = np.zeros((n, p), dtype=np.int64)
    cols = np.zeros((n, p), dtype=np.int64)
    labels = np.zeros((n, size, size), dtype=np.int8)
    intensity = np.zeros((n, size, size), dtype=np.uint8)

    # Images where some piece could not be placed within max_rounds are
    # regenerated from scratch (all pieces), which guarantees termination.
    todo = np.arange(n)
    for _attempt in range(1000):
        if todo.size == 0:
            break
        s, r, c, lab, inten, ok = _place_pieces(rng, todo.size, size, p, allowed, 64)
        done = todo[ok]
        shapes[done], rows[done], cols[done] = s[ok], r[ok], c[ok]
        labels[done], intensity[done] = lab[ok], inten[ok]
        todo = todo[~ok]
    else:
        if todo.size:
            raise RuntimeError("could not place all pieces; image too crowded")

    k = p + 1
    # Per-entity colour on-mask (background row is zero), gathered per pixel.
    colour = np.zeros((n, k, 3), dtype=np.uint8)
    colour[:, 1:] = _COLOUR_ARRAY[colour_idx]
    image = np.zeros((n, size, size, 3), dtype=np.uint8)
    for ch in range(3):
        # Per-pixel on/off for this channel, gathered from the entity labels.
        on = np.take_along_axis(colour[:, :, ch], labels.reshape(n, size * size), axis=1)
        image[..., ch] = intensity * on.reshape(n, size, size)

    mask = np.equal(
        labels[:, None, :, :, None],
        np.arange(k, dtype=np.int8)[None, :, None, None, None],
    ).view(np.uint8)
    mask *= np.uint8(255)

    x = np.zeros((n, k), dtype=np.float32)
    y = np.zeros((n, k), dtype=np.float32)
    x[:, 1:] = cols + _COM_COL[shapes]
    y[:, 1:] = rows + _COM_ROW[shapes]
    shape_out = np.zeros((n, k), dtype=np.float32)
    shape_out[:, 1:] = shapes

    return {
        "image": image,
        "mask": mask,
        "x": x,
        "y": y,
        "shape": shape_out,
        "color": colour.astype(np.float32),
        "visibility": np.ones((n, k), dtype=np.float32),
    }
