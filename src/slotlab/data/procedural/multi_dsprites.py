"""Procedural generator for the "multi_dsprites" multi-object dataset.

A seeded, vectorised twin of DeepMind's multi-object-datasets ``multi_dsprites``:
``S x S`` images (64 by default) with a few dSprites-style sprites (square,
ellipse, heart) drawn in order, later sprites occluding earlier ones.

Variants (:data:`VARIANTS` gives ``E``, the number of entities incl. background):

``binarized``             E=4, 1 channel, white sprites on black, 2-3 sprites
``colored_on_grayscale``  E=6, RGB, random-RGB sprites on a random grey background, 2-5 sprites
``colored_on_colored``    E=5, RGB, random-RGB sprites on a random-RGB background, 2-4 sprites

Output fields (``N`` images, entity 0 is the background, entities ``1..k`` the
``k`` sprites of an image in drawing order, ``k+1..E-1`` zero padding):

``image``        uint8   [N, S, S, C]  (C = 1 for ``binarized``, else 3)
``mask``         uint8   [N, E, S, S, 1], values 0 / 255, disjoint, covering (visible pixels)
``x``, ``y``     float32 [N, E], dSprites position latents in [0, 1] (32 values); x = column, y = row (down)
``shape``        float32 [N, E], 1 square, 2 ellipse, 3 heart (0 for background / padding)
``scale``        float32 [N, E], one of linspace(0.5, 1, 6) (0 for background / padding)
``orientation``  float32 [N, E], radians, one of 2*pi*k/40, k = 0..39 (0 for background / padding)
``color``        float32 [N, E, C], in [0, 1]; entity 0 holds the background colour, padding is 0
``visibility``   float32 [N, E], 1 for the background and every sprite drawn, 0 for padding

Policies:

* Geometry.  With ``R = 10 * S / 64`` pixels, a sprite of scale ``s`` is: a square of side ``2 R s``; an
  ellipse with semi-axes ``R s`` (along the orientation) and ``R s / 2``; a heart (implicit curve
  ``(x^2 + y^2 - 1)^3 - x^2 y^3 <= 0``, point down at orientation 0) of width ``2 R s``, centred on its
  bounding box.  A pixel belongs to a sprite if its centre is inside (no anti-aliasing).  At equal scale the
  areas order as square > heart > ellipse (4 : 2.82 : 1.57).
* Placement.  The centre of a sprite with latents ``(x, y)`` is at pixel ``S * (0.2 + 0.6 * (x, y))``, so an
  axis-aligned square of scale 1 always lies inside the image; only corners of large rotated squares can be
  clipped (by at most ~1.3 px at 64 px).
* Visibility.  Every sprite drawn keeps at least :data:`MIN_VISIBLE_PIXELS` visible pixels and the background
  at least one: images breaking this are resampled whole.  Hence ``visibility`` (1 for the background and
  the drawn sprites, 0 for padding slots, as in the real data) is exactly ``mask`` non-empty.
* Colours.  Continuous uniform per channel (sprites; colored background) or uniform grey level
  (``colored_on_grayscale`` background, R = G = B); pixel value is ``rint(255 * color)``.  ``binarized``
  has colour 1 for sprites and 0 for the background.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "IMAGE_SIZE",
    "MIN_VISIBLE_PIXELS",
    "NUM_ORIENTATIONS",
    "NUM_POSITIONS",
    "NUM_SPRITES",
    "SCALES",
    "SHAPE_NAMES",
    "VARIANTS",
    "generate_multi_dsprites",
    "sprite_footprint",
]

#: Entities per image (background included) of each variant.
VARIANTS: dict[str, int] = {"binarized": 4, "colored_on_grayscale": 6, "colored_on_colored": 5}
#: Inclusive (min, max) number of sprites per image of each variant (uniform).
NUM_SPRITES: dict[str, tuple[int, int]] = {
    "binarized": (2, 3),
    "colored_on_grayscale": (2, 5),
    "colored_on_colored": (2, 4),
}
#: Default image side length (pixels).
IMAGE_SIZE = 64
#: Names of the ``shape`` values 1, 2, 3 (0 is the background).
SHAPE_NAMES: tuple[str, ...] = ("background", "square", "ellipse", "heart")
#: dSprites scale values.
SCALES = np.linspace(0.5, 1.0, 6)
SCALES.setflags(write=False)
#: dSprites numbers of orientation and position values.
NUM_ORIENTATIONS = 40
NUM_POSITIONS = 32
#: Minimum visible pixels of every drawn sprite.
MIN_VISIBLE_PIXELS = 1

_SQUARE, _ELLIPSE, _HEART = 1, 2, 3
_HALF_SIDE = 10.0 / 64.0  # R / S
_MARGIN = 0.2  # centre = S * (_MARGIN + (1 - 2 * _MARGIN) * pos)
_HEART_K = 1.139  # half width of the unit implicit heart
_HEART_YC = 0.118  # vertical centre of the unit heart's bounding box
_MAX_RADIUS = float(np.sqrt(2.0))  # bounding radius of every shape, in units of R * scale


def _inside(shape: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of sprites with codes ``shape`` [m] at normalised coords ``u``, ``v`` [m, W, W]."""
    out = np.empty(u.shape, dtype=bool)
    for code in (_SQUARE, _ELLIPSE, _HEART):
        sel = np.flatnonzero(shape == code)
        if sel.size == 0:
            continue
        a, b = u[sel], v[sel]
        if code == _SQUARE:
            np.abs(a, out=a)
            np.abs(b, out=b)
            res = np.maximum(a, b, out=a) <= 1.0
        elif code == _ELLIPSE:
            a *= a
            b *= b
            b *= 4.0
            a += b
            res = a <= 1.0
        else:  # heart, v points down in the image so the curve's y axis is flipped
            a *= _HEART_K
            b *= -_HEART_K
            b += _HEART_YC
            a2 = a * a
            b3 = b * b * b
            r = a2 + b * b
            r -= 1.0
            res = r * r * r <= a2 * b3
        out[sel] = res
    return out


def _render_windows(
    shape: np.ndarray,
    scale: np.ndarray,
    theta: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    r_px: float,
    half: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Footprints of ``m`` sprites in (2 half + 1)^2 windows around their centres (pixel units).

    Returns ``(inside [m, W, W] bool, row0 [m], col0 [m])``; window pixel (i, j) is image pixel
    (row0 + i, col0 + j), whose centre is at (row0 + i + 0.5, col0 + j + 0.5).
    """
    w = 2 * half + 1
    row0 = np.floor(cy).astype(np.int64) - half
    col0 = np.floor(cx).astype(np.int64) - half
    ar = np.arange(w, dtype=np.float32) + np.float32(0.5)
    unit = (r_px * scale).astype(np.float32)[:, None]
    dy = (row0.astype(np.float32)[:, None] + ar - cy.astype(np.float32)[:, None]) / unit  # [m, W]
    dx = (col0.astype(np.float32)[:, None] + ar - cx.astype(np.float32)[:, None]) / unit
    c = np.cos(theta).astype(np.float32)[:, None, None]
    s = np.sin(theta).astype(np.float32)[:, None, None]
    dx3, dy3 = dx[:, None, :], dy[:, :, None]
    u = c * dx3 + s * dy3  # coordinates in the sprite frame
    v = c * dy3 - s * dx3
    return _inside(shape, u, v), row0, col0


def _geometry(size: int) -> tuple[float, int]:
    r_px = _HALF_SIDE * size
    half = int(np.ceil(r_px * _MAX_RADIUS)) + 1
    return r_px, half


def _centre_px(pos: np.ndarray, size: int) -> np.ndarray:
    return size * (_MARGIN + (1.0 - 2.0 * _MARGIN) * np.asarray(pos, dtype=np.float64))


def sprite_footprint(
    shape: int,
    scale: float,
    orientation: float,
    x: float,
    y: float,
    image_size: int = IMAGE_SIZE,
) -> np.ndarray:
    """Unoccluded footprint (bool [S, S]) of one sprite, rendered as :func:`generate_multi_dsprites` does."""
    size = int(image_size)
    r_px, half = _geometry(size)
    inside, row0, col0 = _render_windows(
        np.array([shape]),
        np.array([scale], dtype=np.float64),
        np.array([orientation], dtype=np.float64),
        _centre_px(np.array([x]), size),
        _centre_px(np.array([y]), size),
        r_px,
        half,
    )
    canvas = np.zeros((size + 4 * half, size + 4 * half), dtype=bool)
    r, c = row0[0] + 2 * half, col0[0] + 2 * half
    canvas[r : r + inside.shape[1], c : c + inside.shape[2]] = inside[0]
    return canvas[2 * half : 2 * half + size, 2 * half : 2 * half + size]


def _sample(rng: np.random.Generator, n: int, variant: str) -> dict[str, np.ndarray]:
    """Latents of ``n`` images (padding slots zeroed); ``color`` is float32 [n, E, C]."""
    e = VARIANTS[variant]
    p = e - 1
    lo, hi = NUM_SPRITES[variant]
    count = rng.integers(lo, hi + 1, size=n)
    present = np.arange(p)[None, :] < count[:, None]
    shape = rng.integers(1, 4, size=(n, p))
    scale = SCALES[rng.integers(0, len(SCALES), size=(n, p))]
    theta = rng.integers(0, NUM_ORIENTATIONS, size=(n, p)) * (2.0 * np.pi / NUM_ORIENTATIONS)
    x = rng.integers(0, NUM_POSITIONS, size=(n, p)) / (NUM_POSITIONS - 1)
    y = rng.integers(0, NUM_POSITIONS, size=(n, p)) / (NUM_POSITIONS - 1)
    if variant == "binarized":
        color = np.zeros((n, e, 1), dtype=np.float32)
        color[:, 1:, 0] = 1.0
    else:
        color = rng.random((n, e, 3), dtype=np.float32)
        if variant == "colored_on_grayscale":
            color[:, 0, 1:] = color[:, 0, :1]
    color[:, 1:] *= present[:, :, None]
    return {
        "present": present,
        "shape": shape * present,
        "scale": scale * present,
        "orientation": theta * present,
        "x": x * present,
        "y": y * present,
        "color": color,
    }


def _render_labels(lat: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Entity label map int8 [n, S, S] (0 background, j + 1 for sprite slot j, later slots on top)."""
    n, p = lat["present"].shape
    r_px, half = _geometry(size)
    w = 2 * half + 1
    img, slot = np.nonzero(lat["present"])  # sprites in (image, slot) order
    inside, row0, col0 = _render_windows(
        lat["shape"][img, slot],
        lat["scale"][img, slot],
        lat["orientation"][img, slot],
        _centre_px(lat["x"][img, slot], size),
        _centre_px(lat["y"][img, slot], size),
        r_px,
        half,
    )
    pad = half + 1  # windows never leave the padded canvas (centres lie inside the image)
    side = size + 2 * pad
    canvas = np.zeros((n, side, side), dtype=np.int8)
    offsets = (np.arange(w)[:, None] * side + np.arange(w)[None, :]).ravel()  # [W * W]
    base = img * (side * side) + (row0 + pad) * side + (col0 + pad)  # [m] flat index of window pixel (0, 0)
    flat_canvas = canvas.reshape(-1)
    inside = inside.reshape(len(img), w * w)
    for j in range(p):
        sel = np.flatnonzero(slot == j)
        if sel.size:
            lin = base[sel, None] + offsets
            flat_canvas[lin[inside[sel]]] = j + 1
    return np.ascontiguousarray(canvas[:, pad : pad + size, pad : pad + size])


def _entity_masks(labels: np.ndarray, e: int) -> np.ndarray:
    """One-hot entity masks bool [n, E, S, S] of a label map int8 [n, S, S]."""
    return np.equal(labels[:, None], np.arange(e, dtype=np.int8)[None, :, None, None])


def generate_multi_dsprites(
    n: int,
    seed: int,
    variant: str = "colored_on_grayscale",
    image_size: int = IMAGE_SIZE,
) -> dict[str, np.ndarray]:
    """Generate ``n`` Multi-dSprites images of ``variant`` deterministically from ``seed``.

    Returns a dict with keys ``image``, ``mask``, ``x``, ``y``, ``shape``, ``scale``, ``orientation``,
    ``color`` and ``visibility`` (see the module docstring for layouts and policies).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    n, size = int(n), int(image_size)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size < 4:
        raise ValueError(f"image_size must be >= 4, got {size}")
    e = VARIANTS[variant]
    rng = np.random.default_rng(seed)

    lat = _sample(rng, n, variant)
    labels = _render_labels(lat, size)
    minimum = np.where(np.arange(e) == 0, 1, MIN_VISIBLE_PIXELS)
    # Resample whole images in which the background or a drawn sprite ended up (nearly) invisible.
    todo = np.arange(n)
    for _attempt in range(1000):
        counts = _entity_masks(labels[todo], e).reshape(todo.size, e, size * size).sum(axis=2, dtype=np.int32)
        need = lat["present"][todo]
        bad = todo[((counts[:, 1:] < minimum[1:]) & need).any(axis=1) | (counts[:, 0] < minimum[0])]
        if bad.size == 0:
            break
        new = _sample(rng, bad.size, variant)
        for key, val in new.items():
            lat[key][bad] = val
        labels[bad] = _render_labels(new, size)
        todo = bad
    else:
        raise RuntimeError("could not generate images with all sprites visible; image_size too small?")

    color = lat["color"]
    c = color.shape[-1]
    palette = np.rint(color * np.float32(255)).astype(np.uint8).reshape(n * e, c)
    flat = labels.reshape(n, size * size).astype(np.intp)
    flat += (e * np.arange(n, dtype=np.intp))[:, None]
    image = np.take(palette, flat.ravel(), axis=0).reshape(n, size, size, c)

    mask = _entity_masks(labels, e)[..., None].view(np.uint8)
    mask *= np.uint8(255)

    def entity_field(key: str) -> np.ndarray:
        out = np.zeros((n, e), dtype=np.float32)
        out[:, 1:] = lat[key]
        return out

    visibility = np.ones((n, e), dtype=np.float32)
    visibility[:, 1:] = lat["present"]
    return {
        "image": image,
        "mask": mask,
        "x": entity_field("x"),
        "y": entity_field("y"),
        "shape": entity_field("shape"),
        "scale": entity_field("scale"),
        "orientation": entity_field("orientation"),
        "color": color,
        "visibility": visibility,
    }
