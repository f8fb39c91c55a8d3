"""A small CLEVR-like 3D renderer of our own (no Blender): batched, analytic ray casting in PyTorch.

Scenes follow CLEVR's generator: 3 to 10 objects, each a cube, sphere or cylinder of size small (radius
r = 0.35) or large (r = 0.7), one of CLEVR's 8 colours, rubber or metal, rotated by [0, 360) degrees about the
vertical axis, centred at x, y uniform in [-3, 3] and resting on the ground plane z = 0:

* sphere: radius r, centre height r;
* cylinder: radius r, half-height r, centre height r;
* cube: half-side r / sqrt(2), centre height r / sqrt(2) (CLEVR scales cubes by 1 / sqrt(2) so that their corners
  lie on the radius-r circle; its scenes then record z = r / sqrt(2) for cubes, and so do ours).

Objects keep CLEVR's spacing (gaps between bounding circles >= ``min_dist``, centres at least ``margin`` apart
along the camera's left/behind axes) and every object needs ``min_pixels`` visible pixels, otherwise its scene is
re-sampled. The camera sits near (7.48, -6.51, 5.34) looking at the origin (horizontal field of view 49.9 degrees,
jitter +-0.5 per axis). One key point light (near (6.7, -1.2, 5.8), jitter +-1 per axis, to the camera's right so
shadows fall left and back) casts hard shadows (shadow rays against every object); an unshadowed fill light and
ambient light brighten the rest, and the light falls off with distance so the far ground darkens. Rubber is
Lambert-diffuse with a faint sheen; metal is darker-diffuse plus a colour-tinted reflection of a grey studio
(dark ground, bright sky) and a strong white Blinn-Phong highlight. Cube and cylinder edges are shaded as rounded
(CLEVR's shapes are bevelled); silhouettes stay sharp. Shading is a tuned look, not physically based.

Speed: primary and shadow rays are cast only inside each object's screen-space bounding box (of the object, and of
the object plus its shadow), gathered as fixed-size tiles; depth is resolved with a scatter-min z-buffer. No Python
loop runs over pixels; loops run over the 3 shape kinds and over object slots when sampling layouts. Layouts with an
object below ``min_pixels`` are re-drawn on entity maps alone (primary rays); each scene is shaded once, at the end.

Hooks (used by :mod:`slotlab.data.procedural.clevrtex_scenes`): a ``_Style`` gives its own :class:`_Layouts`
subclass (sizes, material fields) and a material function that returns per-pixel albedo, metal, shading normal and
sheen (:class:`_Surface`) from the visible surface points (:class:`_Hit`); without one, the scenes are unchanged.

:func:`generate_clevr_scenes` returns arrays in DeepMind's ``clevr_with_masks`` layout plus CLEVR v1.0 scene dicts;
:func:`write_clevr_scenes` writes a CLEVR v1.0 folder that :class:`slotlab.data.formats.clevr.ClevrFolder` reads.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from slotlab.data.formats.clevr import (
    COLOR_RGB,
    COLORS,
    MATERIALS,
    SHAPES,
    SIZE_RADIUS,
    SIZES,
    scenes_path,
    write_clevr_images,
    write_clevr_scenes_json,
)

__all__ = ["CAMERA_POSITION", "FOV_DEG", "GROUNDS", "KEY_LIGHT_POSITION", "generate_clevr_scenes", "write_clevr_scenes"]

CAMERA_POSITION = (7.48, -6.51, 5.34)
#: Horizontal field of view (degrees), applied to the image width.
FOV_DEG = 49.9
KEY_LIGHT_POSITION = (6.7, -1.2, 5.8)
FILL_LIGHT_DIRECTION = (-4.67, -4.01, 3.0)  # towards the fill light (camera's left), no shadows
_CUBE, _SPHERE, _CYLINDER = (SHAPES.index(s) for s in ("cube", "sphere", "cylinder"))
_METAL = MATERIALS.index("metal")
_RADII = np.array([SIZE_RADIUS[s] for s in SIZES], dtype=np.float32)
_ALBEDO = torch.tensor([COLOR_RGB[c] for c in COLORS], dtype=torch.float32) / 255.0  # [8, 3]
_GROUND_ALBEDO = 0.62
#: Ground options of :func:`generate_clevr_scenes`.
GROUNDS = ("grey", "random")
_LAYOUT_BLOCK = 64  # scenes sampled per random stream; results depend on it, not on render chunking
_PIXEL_BUDGET = 1 << 18  # rendered pixels per chunk (small chunks stay in cache: faster)
_FAR = 1e4
_BEVEL = 0.12  # rounded-edge radius of cubes and cylinders (shading only), fraction of the half-size


# ----------------------------------------------------------------------------------------------- layouts


@dataclass
class _Layouts:
    """B scenes with K object slots (numpy). Slot k is present iff k < n_obj.

    Subclasses may add per-scene fields (first axis B) and set :attr:`RADII`, the radius of each size index.
    """

    RADII = _RADII  # a plain class attribute, not a field

    n_obj: np.ndarray  # int64 [B]
    shape: np.ndarray  # int64 [B, K] vocabulary indices
    size: np.ndarray
    color: np.ndarray
    material: np.ndarray
    xy: np.ndarray  # float32 [B, K, 2]
    rotation: np.ndarray  # float32 [B, K] degrees
    camera: np.ndarray  # float32 [B, 3]
    light: np.ndarray  # float32 [B, 3]
    ground: np.ndarray  # float32 [B, 3] albedo of the ground plane

    def take(self, idx: np.ndarray) -> _Layouts:
        return type(self)(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))

    def put(self, idx: np.ndarray, other: _Layouts) -> None:
        for f in self.__dataclass_fields__:
            getattr(self, f)[idx] = getattr(other, f)

    @property
    def present(self) -> np.ndarray:
        return np.arange(self.shape.shape[1]) < self.n_obj[:, None]

    @property
    def radius(self) -> np.ndarray:
        return self.RADII[self.size]

    @property
    def half_height(self) -> np.ndarray:
        """Centre height = half-height, float32 [B, K]."""
        r = self.radius
        return np.where(self.shape == _CUBE, r / np.float32(math.sqrt(2.0)), r).astype(np.float32)


def _ground_axes(camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit 'behind' and 'left' directions on the ground plane, float64 [B, 3] each (CLEVR's definition)."""
    fwd = -camera / np.linalg.norm(camera, axis=1, keepdims=True)
    behind = fwd * np.array([1.0, 1.0, 0.0])
    behind /= np.linalg.norm(behind, axis=1, keepdims=True)
    left = np.stack([-behind[:, 1], behind[:, 0], np.zeros(len(behind))], axis=1)  # z x behind
    return behind, left


def _sample_layouts(
    rng: np.random.Generator,
    b: int,
    k: int,
    min_objects: int,
    max_objects: int,
    camera_jitter: float,
    light_jitter: float,
) -> _Layouts:
    cam = np.asarray(CAMERA_POSITION) + rng.uniform(-camera_jitter, camera_jitter, (b, 3))
    light = np.asarray(KEY_LIGHT_POSITION) + rng.uniform(-light_jitter, light_jitter, (b, 3))
    zeros = np.zeros((b, k), dtype=np.int64)
    return _Layouts(
        rng.integers(min_objects, max_objects + 1, b),
        zeros,
        zeros.copy(),
        zeros.copy(),
        zeros.copy(),
        np.zeros((b, k, 2), np.float32),
        np.zeros((b, k), np.float32),
        cam.astype(np.float32),
        light.astype(np.float32),
        np.full((b, 3), _GROUND_ALBEDO, np.float32),
    )


def _ground_albedo(rng: np.random.Generator, b: int) -> np.ndarray:
    """Random muted ground colours, float32 [B, 3]: a grey level in [0.3, 0.8] tinted by up to +-30 % per channel."""
    grey = rng.uniform(0.3, 0.8, (b, 1))
    return (grey * (1.0 + rng.uniform(-0.3, 0.3, (b, 3)))).astype(np.float32)


def _place_objects(rng: np.random.Generator, lay: _Layouts, min_dist: float, margin: float, tries: int) -> None:
    """Draw attributes and non-intersecting positions for every scene of ``lay`` (in place).

    Vectorised over scenes and over ``tries`` candidate positions per object slot; a scene whose slot has no valid
    candidate is drawn again from scratch (as CLEVR restarts a scene after too many retries).
    """
    todo = np.arange(len(lay.n_obj))
    behind, left = _ground_axes(lay.camera.astype(np.float64))
    for _ in range(1000):
        if todo.size == 0:
            return
        s, k = todo.size, lay.shape.shape[1]
        size = rng.integers(0, len(lay.RADII), (s, k))
        shape = rng.integers(0, len(SHAPES), (s, k))
        color = rng.integers(0, len(COLORS), (s, k))
        material = rng.integers(0, len(MATERIALS), (s, k))
        rotation = rng.uniform(0.0, 360.0, (s, k))
        r = lay.RADII[size].astype(np.float64)
        n = lay.n_obj[todo]
        xy = np.zeros((s, k, 2))
        ok = np.ones(s, dtype=bool)
        axes = np.stack([behind[todo, :2], left[todo, :2]], axis=1)  # [s, 2, 2]
        for i in range(k):
            cand = rng.uniform(-3.0, 3.0, (s, tries, 2))
            if i == 0:
                good = np.ones((s, tries), dtype=bool)
            else:
                delta = cand[:, :, None, :] - xy[:, None, :i, :]  # [s, T, i, 2]
                gap = np.linalg.norm(delta, axis=-1) - r[:, i, None, None] - r[:, None, :i]
                along = np.abs(np.einsum("stic,sac->stia", delta, axes))  # [s, T, i, 2]
                good = ((gap >= min_dist) & (along >= margin).all(-1)).all(-1)
            first = good.argmax(1)
            xy[:, i] = cand[np.arange(s), first]
            ok &= good.any(1) | (n <= i)
        pad = np.arange(k) >= n[:, None]
        for name, value in (("size", size), ("shape", shape), ("color", color), ("material", material)):
            getattr(lay, name)[todo[ok]] = np.where(pad, 0, value)[ok]
        lay.rotation[todo[ok]] = np.where(pad, 0.0, rotation)[ok]
        lay.xy[todo[ok]] = np.where(pad[..., None], 0.0, xy)[ok]
        todo = todo[~ok]
    raise RuntimeError("could not place the objects of some scenes; lower max_objects, min_dist or margin")


# ----------------------------------------------------------------------------------------------- geometry


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.cross(a, b, dim=-1)


def _normalize(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


@dataclass
class _Camera:
    pos: torch.Tensor  # [B, 3]
    fwd: torch.Tensor
    right: torch.Tensor
    up: torch.Tensor
    tan_h: float
    tan_v: float

    @staticmethod
    def make(pos: torch.Tensor, fov_deg: float, aspect: float) -> _Camera:
        fwd = _normalize(-pos)
        right = _normalize(_cross(fwd, torch.tensor([0.0, 0.0, 1.0]).expand_as(fwd)))
        up = _cross(right, fwd)
        tan_h = math.tan(math.radians(fov_deg) / 2)
        return _Camera(pos, fwd, right, up, tan_h, tan_h / aspect)

    def project(self, pts: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """World points [B, ..., 3] -> (column, row, depth) [B, ..., 3], continuous pixel units of an h x w image."""
        shape = (-1,) + (1,) * (pts.dim() - 2) + (3,)
        v = pts - self.pos.view(shape)
        depth = (v * self.fwd.view(shape)).sum(-1)
        sx = (v * self.right.view(shape)).sum(-1) / depth
        sy = (v * self.up.view(shape)).sum(-1) / depth
        return torch.stack([(sx / self.tan_h + 1) * 0.5 * w, (1 - sy / self.tan_v) * 0.5 * h, depth], dim=-1)

    def rays(self, h: int, w: int) -> torch.Tensor:
        """Unit ray directions, components first: [3, B * h * w] (pixel centres, row-major)."""
        sx = ((torch.arange(w) + 0.5) / w * 2 - 1) * self.tan_h
        sy = (1 - (torch.arange(h) + 0.5) / h * 2) * self.tan_v
        d = (
            self.fwd[:, None, None, :]
            + sx[None, None, :, None] * self.right[:, None, None, :]
            + sy[None, :, None, None] * self.up[:, None, None, :]
        )
        d = _normalize(d)
        return d.reshape(-1, 3).T.contiguous()


def _quadratic(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Roots of a t^2 + 2 b t + c as an interval (t0, t1); (inf, -inf) where none."""
    disc = b * b - a * c
    sq = disc.clamp_min(0).sqrt()
    inv = 1.0 / a.clamp_min(1e-12)
    t0 = torch.where(disc >= 0, (-b - sq) * inv, torch.inf)
    t1 = torch.where(disc >= 0, (-b + sq) * inv, -torch.inf)
    return t0, t1


def _slab(o: torch.Tensor, d: torch.Tensor, half: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval of t where |o + t d| <= half."""
    d = torch.where(d.abs() < 1e-9, 1e-9, d)
    inv = 1.0 / d
    t1 = (-half - o) * inv
    t2 = (half - o) * inv
    return torch.minimum(t1, t2), torch.maximum(t1, t2)


def _interval(
    shape: int,
    o: list[torch.Tensor],
    d: list[torch.Tensor],
    r: torch.Tensor,
    hz: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry/exit t of rays o + t d (object-centred world frame, components lists) with one kind of shape."""
    ox, oy, oz = o
    dx, dy, dz = d
    if shape == _SPHERE:
        return _quadratic(dx * dx + dy * dy + dz * dz, ox * dx + oy * dy + oz * dz, ox * ox + oy * oy + oz * oz - r * r)
    zn, zf = _slab(oz, dz, hz)
    if shape == _CYLINDER:
        a = dx * dx + dy * dy
        c = ox * ox + oy * oy - r * r
        t0, t1 = _quadratic(a, ox * dx + oy * dy, c)
        vertical = a < 1e-12  # parallel to the axis: inside the disk or not
        t0 = torch.where(vertical, torch.where(c <= 0, -torch.inf, torch.inf), t0)
        t1 = torch.where(vertical, torch.where(c <= 0, torch.inf, -torch.inf), t1)
    else:  # cube: rotate into the object frame, three slabs of half-side hz
        lx, ly = cos * ox + sin * oy, cos * oy - sin * ox
        ex, ey = cos * dx + sin * dy, cos * dy - sin * dx
        xn, xf = _slab(lx, ex, hz)
        yn, yf = _slab(ly, ey, hz)
        t0, t1 = torch.maximum(xn, yn), torch.minimum(xf, yf)
    return torch.maximum(t0, zn), torch.minimum(t1, zf)


@dataclass
class _Objects:
    """Present objects of a chunk, flattened to M rows (torch)."""

    scene: torch.Tensor  # int64 [M]
    slot: torch.Tensor  # int64 [M]
    shape: torch.Tensor  # int64 [M]
    centre: torch.Tensor  # float32 [M, 3]
    r: torch.Tensor  # float32 [M]
    hz: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor

    @staticmethod
    def make(lay: _Layouts) -> _Objects:
        b, s = np.nonzero(lay.present)
        hz = lay.half_height[b, s]
        centre = np.concatenate([lay.xy[b, s], hz[:, None]], axis=1)
        theta = np.radians(lay.rotation[b, s].astype(np.float64))

        def t(a: np.ndarray, dt: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dt)

        return _Objects(
            t(b, torch.int64),
            t(s, torch.int64),
            t(lay.shape[b, s], torch.int64),
            t(centre),
            t(lay.radius[b, s]),
            t(hz),
            t(np.cos(theta)),
            t(np.sin(theta)),
        )

    def corners(self) -> torch.Tensor:
        """Corners of each object's world bounding box [M, 8, 3]."""
        sx = torch.tensor([-1.0, 1.0]).view(2, 1, 1).expand(2, 2, 2).reshape(8)
        sy = torch.tensor([-1.0, 1.0]).view(1, 2, 1).expand(2, 2, 2).reshape(8)
        sz = torch.tensor([-1.0, 1.0]).view(1, 1, 2).expand(2, 2, 2).reshape(8)
        off = torch.stack([sx[None] * self.r[:, None], sy[None] * self.r[:, None], sz[None] * self.hz[:, None]], -1)
        return self.centre[:, None, :] + off


def _tiles(box: torch.Tensor, scene: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels whose centres fall in boxes (col_min, col_max, row_min, row_max) [M, 4], as fixed-size tiles.

    Returns (flat index into [B * h * w + 1] with invalid pixels pointing at the last, dummy entry) [M, T] and the
    pixel validity [M, T].
    """
    c0 = torch.ceil(box[:, 0] - 0.5).clamp(0, w).long()
    c1 = torch.floor(box[:, 1] - 0.5).clamp(-1, w - 1).long()
    r0 = torch.ceil(box[:, 2] - 0.5).clamp(0, h).long()
    r1 = torch.floor(box[:, 3] - 0.5).clamp(-1, h - 1).long()
    tw = int((c1 - c0 + 1).clamp_min(0).max()) if len(box) else 0
    th = int((r1 - r0 + 1).clamp_min(0).max()) if len(box) else 0
    cols = c0[:, None] + torch.arange(tw)  # [M, tw]
    rows = r0[:, None] + torch.arange(th)  # [M, th]
    valid = (rows <= r1[:, None])[:, :, None] & (cols <= c1[:, None])[:, None, :]  # [M, th, tw]
    idx = scene[:, None, None] * (h * w) + rows[:, :, None] * w + cols[:, None, :]
    dummy = (int(scene.max()) + 1) * h * w if len(box) else 0
    idx = torch.where(valid, idx, dummy)
    return idx.reshape(len(box), -1), valid.reshape(len(box), -1)


def _box_of(points: torch.Tensor) -> torch.Tensor:
    """[M, P, 2] pixel points -> [M, 4] (col_min, col_max, row_min, row_max)."""
    return torch.stack(
        [points[..., 0].amin(1), points[..., 0].amax(1), points[..., 1].amin(1), points[..., 1].amax(1)], dim=1
    )


# ----------------------------------------------------------------------------------------------- materials


@dataclass
class _Hit:
    """The visible surface points of a rendered chunk, as a material function sees them.

    P = B * h * w + 1 (row-major pixels of the B scenes, then one dummy pixel).
    """

    lay: _Layouts
    scene: torch.Tensor  # int64 [P]
    entity: torch.Tensor  # int64 [P]: 0 = ground, k + 1 = object slot k
    p: torch.Tensor  # float32 [3, P] world points (the ground plane z = 0, or far away above the horizon)
    local: torch.Tensor  # [3, P] object frame (centre at the origin, rotation undone); the ground: world x, y, 0
    normal: torch.Tensor  # [3, P] unit world normals
    cos: torch.Tensor  # [P] the object's rotation (ground: 1, 0): world = (c x - s y, s x + c y, z) of local
    sin: torch.Tensor
    footprint: torch.Tensor  # [P] size of the pixel on the surface, world units


@dataclass
class _Surface:
    """Per-pixel material returned by a material function (P as in :class:`_Hit`)."""

    albedo: torch.Tensor  # float32 [P, 3] in [0, 1]
    metal: torch.Tensor  # bool [P]: metal shading (darker diffuse, studio reflection, strong highlight)
    normal: torch.Tensor  # [3, P] unit shading normals (bump mapping)
    gloss: torch.Tensor  # [P] scale of the rubber sheen (0 = none)


Material = Callable[[_Hit], _Surface]


@dataclass(frozen=True)
class _Style:
    """A variation of the scenes: ``prepare`` turns sampled layouts into a :class:`_Layouts` subclass (its own
    sizes, per-scene material fields; drawn from its own generator, before the objects are placed), ``material``
    shades them, ``stream`` keeps its random streams apart from the plain scenes'."""

    prepare: Callable[[_Layouts, np.random.Generator], _Layouts]
    material: Material
    stream: int


def _hit(
    lay: _Layouts,
    obj: _Objects,
    owner: torch.Tensor,
    pix_scene: torch.Tensor,
    d: torch.Tensor,
    t: torch.Tensor,
    p: torch.Tensor,
    n: torch.Tensor,
    pixel_angle: float,
) -> _Hit:
    fg = torch.nonzero(owner >= 0).squeeze(1)
    entity = torch.zeros_like(owner)
    local = p.clone()
    local[2] = 0.0
    cos = torch.ones(len(owner))
    sin = torch.zeros(len(owner))
    if fg.numel():
        row = owner[fg]
        entity[fg] = obj.slot[row] + 1
        q = p[:, fg] - obj.centre[row].T
        c, s = obj.cos[row], obj.sin[row]
        local[:, fg] = torch.stack([c * q[0] + s * q[1], c * q[1] - s * q[0], q[2]])
        cos[fg], sin[fg] = c, s
    footprint = t * pixel_angle / (n * d).sum(0).abs().clamp_min(0.15)
    return _Hit(lay, pix_scene, entity, p, local, n, cos, sin, footprint)


# ----------------------------------------------------------------------------------------------- rendering


def _render(
    lay: _Layouts,
    h: int,
    w: int,
    fov_deg: float,
    aspect: float,
    shadows: bool = True,
    material: Material | None = None,
    entities_only: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Render B scenes at h x w: (RGB float32 [B, h, w, 3] in [0, 1], entity id int64 [B, h, w], 0 = ground).

    ``material``: per-pixel albedo, metal, shading normal and sheen (textures); None = CLEVR's plain colours.
    ``entities_only``: cast the primary rays only and return (None, entity ids), the same as a full render's.
    """
    b = len(lay.n_obj)
    npx = b * h * w
    cam = _Camera.make(torch.from_numpy(lay.camera), fov_deg, aspect)
    obj = _Objects.make(lay)
    m = len(obj.scene)
    d = torch.cat([cam.rays(h, w), torch.tensor([[0.0], [0.0], [1.0]])], dim=1)  # [3, npx + 1], last = dummy
    pix_scene = torch.arange(b).repeat_interleave(h * w)
    pix_scene = torch.cat([pix_scene, torch.zeros(1, dtype=torch.int64)])
    org = cam.pos[pix_scene].T  # [3, npx + 1]

    # Primary rays, inside each object's screen-space bounding box.
    corners = obj.corners()
    idx, valid = _tiles(_project_objects(cam, obj.scene, corners, h, w), obj.scene, h, w)
    t_obj = torch.full(idx.shape, torch.inf)
    for s in (_CUBE, _SPHERE, _CYLINDER):
        sel = torch.nonzero(obj.shape == s).squeeze(1)
        if sel.numel() == 0:
            continue
        i = idx[sel]
        o = [(cam.pos[obj.scene[sel], c] - obj.centre[sel, c])[:, None] for c in range(3)]
        dd = [d[c][i] for c in range(3)]
        t0, t1 = _interval(s, o, dd, obj.r[sel, None], obj.hz[sel, None], obj.cos[sel, None], obj.sin[sel, None])
        t_obj[sel] = torch.where((t0 <= t1) & (t1 > 0), t0, torch.inf)
    t_obj = torch.where(valid, t_obj, torch.inf)
    zbuf = torch.full((npx + 1,), torch.inf).scatter_reduce_(0, idx.reshape(-1), t_obj.reshape(-1), "amin")
    win = torch.isfinite(t_obj) & (t_obj == zbuf[idx])
    owner = torch.full((npx + 1,), -1, dtype=torch.int64)  # flat object row, -1 = ground / sky
    owner[idx[win]] = torch.arange(m)[:, None].expand_as(idx)[win]
    owner[npx] = -1
    if entities_only:
        ent = torch.zeros(npx + 1, dtype=torch.int64)
        fg = torch.nonzero(owner >= 0).squeeze(1)
        ent[fg] = obj.slot[owner[fg]] + 1
        return None, ent[:npx].view(b, h, w)

    # Surface points: objects where hit, else the ground plane (or far away for rays above the horizon).
    fg = torch.nonzero(owner >= 0).squeeze(1)
    t_ground = torch.where(d[2] < -1e-6, -org[2] / d[2].clamp(max=-1e-6), _FAR)
    t = t_ground.clone()
    t[fg] = zbuf[fg]
    p = org + t * d  # [3, npx + 1]
    n = torch.zeros_like(p)
    n[2] = 1.0
    if fg.numel():
        n[:, fg] = _normals(obj, owner[fg], p[:, fg])

    # Shadow rays, inside the screen box of each object and its shadow on the ground (the light is above all).
    light = torch.from_numpy(lay.light)  # [B, 3]
    lpix = light[pix_scene].T  # [3, npx + 1]
    shadow = torch.zeros(npx + 1, dtype=torch.bool)
    if shadows:
        lpos = light[obj.scene][:, None, :]  # [M, 1, 3]
        lz = lpos[..., 2:]
        on_ground = lpos + (corners - lpos) * (lz / (lz - corners[..., 2:]).clamp_min(1e-3))  # light -> z = 0
        hull = torch.cat([corners, on_ground], dim=1)  # [M, 16, 3]
        sidx, svalid = _tiles(_project_objects(cam, obj.scene, hull, h, w), obj.scene, h, w)
    for s in (_CUBE, _SPHERE, _CYLINDER) if shadows else ():
        sel = torch.nonzero(obj.shape == s).squeeze(1)
        if sel.numel() == 0:
            continue
        i = sidx[sel]
        ps = [p[c][i] for c in range(3)]
        o = [ps[c] - obj.centre[sel, c, None] for c in range(3)]
        dd = [lpix[c][i] - ps[c] for c in range(3)]
        t0, t1 = _interval(s, o, dd, obj.r[sel, None], obj.hz[sel, None], obj.cos[sel, None], obj.sin[sel, None])
        hit = (t0 <= t1) & (t1 > 1e-4) & (t0 < 1.0) & svalid[sel] & (owner[i] != sel[:, None]) & (t[i] < _FAR)
        shadow[i[hit]] = True

    if material is None:
        ground = torch.from_numpy(lay.ground)[pix_scene]  # [npx + 1, 3]
        rgb = _shade(lay, obj, owner, d, p, n, shadow, lpix, ground)[:npx].view(b, h, w, 3)
    else:
        surface = material(_hit(lay, obj, owner, pix_scene, d, t, p, n, 2 * cam.tan_h / w))
        rgb = _shade(lay, obj, owner, d, p, surface.normal, shadow, lpix, None, surface)[:npx].view(b, h, w, 3)
    ent = torch.zeros(npx + 1, dtype=torch.int64)
    ent[fg] = obj.slot[owner[fg]] + 1
    return rgb, ent[:npx].view(b, h, w)


def _project_objects(cam: _Camera, scene: torch.Tensor, pts: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Screen bounding boxes [M, 4] of point sets [M, P, 3] seen by their scene's camera."""
    v = pts - cam.pos[scene][:, None, :]
    depth = (v * cam.fwd[scene][:, None, :]).sum(-1).clamp_min(1e-3)
    sx = (v * cam.right[scene][:, None, :]).sum(-1) / depth
    sy = (v * cam.up[scene][:, None, :]).sum(-1) / depth
    pix = torch.stack([(sx / cam.tan_h + 1) * 0.5 * w, (1 - sy / cam.tan_v) * 0.5 * h], dim=-1)
    return _box_of(pix)


def _normals(obj: _Objects, row: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Unit outward normals [3, F] at surface points p [3, F] of objects ``row`` [F].

    Cubes and cylinders are shaded as if their edges were rounded (like CLEVR's SmoothCube and SmoothCylinder):
    the normal of a box / cylinder shrunk by ``_BEVEL`` of its half-size and grown back by a sphere.
    """
    q = p - obj.centre[row].T
    r, hz, cos, sin, shape = obj.r[row], obj.hz[row], obj.cos[row], obj.sin[row], obj.shape[row]
    # sphere
    n_sph = q / r
    # cylinder
    rad = (q[0] * q[0] + q[1] * q[1]).sqrt().clamp_min(1e-6)
    er = (rad - r * (1 - _BEVEL)).clamp_min(0) / rad
    ez = q[2].sign() * (q[2].abs() - hz * (1 - _BEVEL)).clamp_min(0)
    n_cyl = torch.stack([q[0] * er, q[1] * er, ez])
    # cube, in its own frame, then rotated back
    loc = torch.stack([cos * q[0] + sin * q[1], cos * q[1] - sin * q[0], q[2]])
    e = loc.sign() * (loc.abs() - hz * (1 - _BEVEL)).clamp_min(0)
    n_cube = torch.stack([cos * e[0] - sin * e[1], sin * e[0] + cos * e[1], e[2]])
    n = torch.where(shape == _SPHERE, n_sph, torch.where(shape == _CYLINDER, n_cyl, n_cube))
    norm = n.norm(dim=0, keepdim=True)
    return torch.where(norm > 1e-9, n / norm.clamp_min(1e-9), torch.tensor([[0.0], [0.0], [1.0]]))


def _shade(
    lay: _Layouts,
    obj: _Objects,
    owner: torch.Tensor,
    d: torch.Tensor,
    p: torch.Tensor,
    n: torch.Tensor,
    shadow: torch.Tensor,
    light: torch.Tensor,
    ground: torch.Tensor | None,
    surface: _Surface | None = None,
) -> torch.Tensor:
    """Colour [npx + 1, 3] in [0, 1] of rays d hitting p (normal n), lights at ``light`` [3, npx + 1], ground
    albedo ``ground`` [npx + 1, 3]; or albedo, metal and sheen per pixel from ``surface``."""
    fg = owner >= 0
    if surface is None:
        rowc = owner.clamp_min(0)
        colors = torch.from_numpy(lay.color[obj.scene.numpy(), obj.slot.numpy()])
        metal = fg & torch.from_numpy(lay.material[obj.scene.numpy(), obj.slot.numpy()] == _METAL)[rowc]
        assert ground is not None
        albedo = torch.where(fg[:, None], _ALBEDO[colors][rowc], ground)  # [npx + 1, 3]
    else:
        albedo, metal = surface.albedo, surface.metal

    to_light = light - p
    dist2 = (to_light * to_light).sum(0)
    to_light = to_light / dist2.sqrt()
    lit = (~shadow).float()
    ndl = (n * to_light).sum(0).clamp_min(0) * lit
    fill = torch.tensor(FILL_LIGHT_DIRECTION)
    fill = fill / fill.norm()
    ndf = (n * fill[:, None]).sum(0).clamp_min(0)
    # light falloff (soft: CLEVR's area lights) so the far ground darkens like in CLEVR
    fall = 1.3 / (1.0 + dist2 / 150.0)
    diffuse = 0.30 + 0.62 * ndl * fall + 0.18 * ndf
    view = -d
    hv = to_light + view
    # (torch's norm over dim 0 is slow; the plain scenes keep it, their bytes must not change)
    hv_len = hv.norm(dim=0, keepdim=True) if surface is None else (hv * hv).sum(0, keepdim=True).sqrt()
    hv = hv / hv_len.clamp_min(1e-6)
    ndh = (n * hv).sum(0).clamp_min(0)
    # metal reflects a grey studio: dark ground below the horizon, a bright sky above, tinted by its colour
    ndv = (n * view).sum(0)
    refl_z = 2 * ndv * n[2] - view[2]
    env = torch.where(refl_z > 0, 0.45 + 0.75 * refl_z.clamp_min(0).sqrt(), 0.2 + 0.3 * (1 + refl_z).clamp_min(0) ** 4)
    spec_metal = ((ndh**60) * 1.2 + (ndh**8) * 0.25) * lit
    spec_rubber = (ndh**6) * lit * 0.06
    metal_rgb = albedo * (0.15 * diffuse + 0.85 * env + spec_metal)[:, None] + (0.6 * spec_metal)[:, None]
    sheen = torch.where(fg, spec_rubber, 0.0) if surface is None else spec_rubber * surface.gloss
    rubber_rgb = albedo * diffuse[:, None] + sheen[:, None]
    rgb = torch.where(metal[:, None], metal_rgb, rubber_rgb)
    return rgb.clamp(0, 1) ** (1 / 1.6)


def _render_output(
    lay: _Layouts,
    h: int,
    w: int,
    fov_deg: float,
    aspect: float,
    supersample: int,
    shadows: bool,
    material: Material | None = None,
    entities_only: bool = False,
) -> tuple[np.ndarray | None, np.ndarray]:
    """(uint8 image [B, h, w, 3], uint8 entity map [B, h, w]); renders in chunks of about _PIXEL_BUDGET pixels.

    Every scene renders the same whatever the chunks. ``entities_only``: (None, the entity maps), faster.
    """
    b, k = lay.shape.shape
    ss = supersample
    chunk = max(1, _PIXEL_BUDGET // (h * w * ss * ss))
    images = None if entities_only else np.empty((b, h, w, 3), dtype=np.uint8)
    ents = np.empty((b, h, w), dtype=np.uint8)
    for start in range(0, b, chunk):
        part = lay.take(np.arange(start, min(b, start + chunk)))
        rgb, ent = _render(part, h * ss, w * ss, fov_deg, aspect, shadows, material, entities_only)
        nb = len(part.n_obj)
        if ss > 1:
            cover = torch.nn.functional.one_hot(ent, k + 1).view(nb, h, ss, w, ss, k + 1).sum((2, 4))
            ent = cover.argmax(-1)
        if images is not None and rgb is not None:
            if ss > 1:
                rgb = rgb.view(nb, h, ss, w, ss, 3).mean((2, 4))
            images[start : start + nb] = (rgb * 255 + 0.5).to(torch.uint8).numpy()
        ents[start : start + nb] = ent.to(torch.uint8).numpy()
    return images, ents


def _blocks(
    n: int,
    seed: int,
    h: int,
    w: int,
    min_objects: int,
    max_objects: int,
    min_pixels: int | None,
    supersample: int,
    aspect: float | None,
    fov_deg: float,
    camera_jitter: float,
    light_jitter: float,
    min_dist: float,
    margin: float,
    shadows: bool,
    ground: str = "grey",
    style: _Style | None = None,
) -> Iterator[tuple[_Layouts, np.ndarray, np.ndarray]]:
    """Yields (layouts, uint8 images [b, h, w, 3], uint8 entity maps [b, h, w]) per block of <= 64 scenes.

    ``style`` (e.g. textured materials) changes the scenes; None = the plain CLEVR scenes.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    if max_objects > 254:
        raise ValueError(f"max_objects must be <= 254, got {max_objects}")
    if ground not in GROUNDS:
        raise ValueError(f"ground must be one of {', '.join(GROUNDS)}, got {ground!r}")
    if h < 1 or w < 1 or supersample < 1:
        raise ValueError(f"height, width and supersample must be >= 1, got {h}, {w}, {supersample}")
    if min_pixels is None:
        min_pixels = max(1, round(200 * h * w / (480 * 320)))
    aspect = w / h if aspect is None else aspect
    for block in range(math.ceil(n / _LAYOUT_BLOCK)):
        rng = np.random.default_rng([seed, block] if style is None else [seed, block, style.stream])
        lay = _sample_layouts(rng, _LAYOUT_BLOCK, max_objects, min_objects, max_objects, camera_jitter, light_jitter)
        if style is not None:
            lay = style.prepare(lay, np.random.default_rng([seed, block, style.stream, 1]))
        _place_objects(rng, lay, min_dist, margin, tries=50)
        if ground == "random":  # its own stream: the layouts are those of the grey-ground scenes
            lay.ground[:] = _ground_albedo(np.random.default_rng([seed, block, 1]), _LAYOUT_BLOCK)
        lay = lay.take(np.arange(min(_LAYOUT_BLOCK, n - block * _LAYOUT_BLOCK)))
        material = None if style is None else style.material
        # entity maps only while layouts are re-drawn (a full render is several times dearer), then one render
        _, ents = _render_output(lay, h, w, fov_deg, aspect, supersample, shadows, entities_only=True)
        todo = np.arange(len(lay.n_obj))
        for _ in range(200):
            counts = np.stack([np.bincount(e.ravel(), minlength=max_objects + 1) for e in ents[todo]])
            bad = ((counts[:, 1:] < min_pixels) & lay.present[todo]).any(1)
            todo = todo[bad]
            if todo.size == 0:
                break
            redo = lay.take(todo)
            _place_objects(rng, redo, min_dist, margin, tries=50)
            lay.put(todo, redo)
            ents[todo] = _render_output(redo, h, w, fov_deg, aspect, supersample, shadows, entities_only=True)[1]
        else:
            raise RuntimeError(f"could not give every object {min_pixels} visible pixels; lower min_pixels")
        images, ents = _render_output(lay, h, w, fov_deg, aspect, supersample, shadows, material)
        assert images is not None
        yield lay, images, ents


def _per_entity(values: np.ndarray, present: np.ndarray, dtype: type) -> np.ndarray:
    """Per-object values ``[N, M, ...]`` as per-entity ones ``[N, 1 + M, ...]``: entity 0 (the background) and the
    absent objects are 0, as in the published CLEVR-with-masks records."""
    out: np.ndarray = np.zeros((len(values), 1 + present.shape[1], *values.shape[2:]), dtype=dtype)
    out[:, 1:] = np.where(present.reshape(present.shape + (1,) * (values.ndim - 2)), values, 0)
    return out


def _entity_fields(lay: _Layouts, pixel_coords: np.ndarray) -> dict[str, np.ndarray]:
    """The per-entity fields of every CLEVR-like twin: 3D position, rotation, visibility, pixel coordinates, shape
    and size (``[N, 1 + M, ...]``; the twins add their own colour and material)."""
    present = lay.present
    return {
        "x": _per_entity(lay.xy[..., 0], present, np.float32),
        "y": _per_entity(lay.xy[..., 1], present, np.float32),
        "z": _per_entity(lay.half_height, present, np.float32),
        "rotation": _per_entity(lay.rotation, present, np.float32),
        "visibility": np.concatenate([np.ones((len(present), 1), np.float32), present.astype(np.float32)], 1),
        "pixel_coords": _per_entity(pixel_coords, present, np.float32),
        "shape": _per_entity(lay.shape + 1, present, np.uint8),
        "size": _per_entity(lay.size + 1, present, np.uint8),
    }


def _pixel_coords(lay: _Layouts, h: int, w: int, aspect: float | None, fov_deg: float) -> np.ndarray:
    """CLEVR pixel_coords of object centres: (round(column), round(row), depth) float32 [B, K, 3]."""
    cam = _Camera.make(torch.from_numpy(lay.camera), fov_deg, w / h if aspect is None else aspect)
    centre = np.concatenate([lay.xy, lay.half_height[..., None]], axis=-1)
    pc = cam.project(torch.from_numpy(centre), h, w).numpy()
    pc[..., :2] = np.round(pc[..., :2])
    return pc.astype(np.float32)


def _scene_dicts(lay: _Layouts, pixel_coords: np.ndarray, start: int) -> list[dict]:
    """CLEVR v1.0 scene dicts (split "new", CLEVR's default, until a writer sets it)."""
    behind, left = _ground_axes(lay.camera.astype(np.float64))
    z = lay.half_height
    scenes = []
    for i in range(len(lay.n_obj)):
        dirs = {
            "behind": behind[i],
            "front": -behind[i],
            "left": left[i],
            "right": -left[i],
            "above": np.array([0.0, 0.0, 1.0]),
            "below": np.array([0.0, 0.0, -1.0]),
        }
        m = int(lay.n_obj[i])
        xyz = np.concatenate([lay.xy[i, :m], z[i, :m, None]], axis=1)  # float32 [m, 3]
        objects = [
            {
                "shape": SHAPES[lay.shape[i, j]],
                "size": SIZES[lay.size[i, j]],
                "material": MATERIALS[lay.material[i, j]],
                "3d_coords": [float(v) for v in xyz[j]],
                "rotation": float(lay.rotation[i, j]),
                "pixel_coords": [int(pixel_coords[i, j, 0]), int(pixel_coords[i, j, 1]), float(pixel_coords[i, j, 2])],
                "color": COLORS[lay.color[i, j]],
            }
            for j in range(m)
        ]
        relationships = {}
        for name in ("right", "behind", "front", "left"):
            proj = xyz.astype(np.float64) @ dirs[name]
            related = (proj[None, :] - proj[:, None]) > 0.2  # [a, b]: b is `name` of a (CLEVR's eps)
            relationships[name] = [np.flatnonzero(row).tolist() for row in related]
        scenes.append(
            {
                "image_index": start + i,
                "objects": objects,
                "relationships": relationships,
                "image_filename": f"CLEVR_new_{start + i:06d}.png",
                "split": "new",
                "directions": {k: [float(v) for v in vec] for k, vec in dirs.items()},
            }
        )
    return scenes


def generate_clevr_scenes(
    n: int,
    seed: int,
    height: int = 128,
    width: int = 128,
    min_objects: int = 3,
    max_objects: int = 10,
    min_pixels: int | None = None,
    supersample: int = 1,
    aspect: float | None = None,
    fov_deg: float = FOV_DEG,
    camera_jitter: float = 0.5,
    light_jitter: float = 1.0,
    min_dist: float = 0.25,
    margin: float = 0.4,
    shadows: bool = True,
    ground: str = "grey",
    masks: bool = True,
) -> dict:
    """Render ``n`` CLEVR-like scenes, deterministic from ``seed``.

    Args:
        min_pixels: visible pixels every object needs (default: CLEVR's 200 at 480x320, scaled to the image area).
        supersample: render at ``supersample`` times the resolution and average (antialiasing; entity maps take
            the entity covering most sub-pixels).
        aspect: width / height of the camera frame; None = width / height of the image (square pixels). 1.5 gives
            real CLEVR's 480x320 framing (what the set-prediction preset sees after resizing to 128x128).
        shadows: cast shadow rays (False: faster, and the same scenes without shadows).
        ground: ``"grey"``, CLEVR's ground; ``"random"``, a random muted colour per scene (the same layouts), so
            the ground is something a model has to describe, as in CLEVRTex and MOVi.
        masks: set False to skip the ``mask`` array.

    Returns a dict, E = max_objects + 1 entities (0 = ground, then the objects in scene order, then padding):
        ``image`` uint8 [N, H, W, 3]; ``mask`` uint8 [N, E, H, W, 1] 0/255 (visible pixels, disjoint, covering);
        ``x``, ``y``, ``z``, ``rotation`` (degrees), ``visibility`` float32 [N, E] (visibility 1 for ground and
        present objects); ``pixel_coords`` float32 [N, E, 3] (column, row, depth); ``color``, ``material``,
        ``shape``, ``size`` uint8 [N, E] = vocabulary index + 1 (0 = ground / padding); ``scenes``: N CLEVR v1.0
        scene dicts.
    """
    parts = list(
        _blocks(
            n,
            seed,
            height,
            width,
            min_objects,
            max_objects,
            min_pixels,
            supersample,
            aspect,
            fov_deg,
            camera_jitter,
            light_jitter,
            min_dist,
            margin,
            shadows,
            ground,
        )
    )
    e = max_objects + 1
    if parts:
        lay = _Layouts(*(np.concatenate([getattr(p[0], f) for p in parts]) for f in _Layouts.__dataclass_fields__))
        images = np.concatenate([p[1] for p in parts])
        ents = np.concatenate([p[2] for p in parts])
    else:
        lay = _Layouts(
            np.zeros(0, np.int64),
            *(np.zeros((0, max_objects), np.int64),) * 4,
            np.zeros((0, max_objects, 2), np.float32),
            np.zeros((0, max_objects), np.float32),
            np.zeros((0, 3), np.float32),
            np.zeros((0, 3), np.float32),
            np.zeros((0, 3), np.float32),
        )
        images = np.zeros((0, height, width, 3), np.uint8)
        ents = np.zeros((0, height, width), np.uint8)
    pc = _pixel_coords(lay, height, width, aspect, fov_deg)
    out = {
        "image": images,
        **_entity_fields(lay, pc),
        "color": _per_entity(lay.color + 1, lay.present, np.uint8),
        "material": _per_entity(lay.material + 1, lay.present, np.uint8),
        "scenes": _scene_dicts(lay, pc, 0),
    }
    if masks:
        out["mask"] = ((ents[:, None] == np.arange(e, dtype=np.uint8)[None, :, None, None]) * np.uint8(255))[..., None]
    return out


def write_clevr_scenes(
    root: str | Path,
    split: str,
    n: int,
    seed: int,
    height: int = 320,
    width: int = 480,
    info: dict | None = None,
    start_index: int = 0,
    **kwargs: object,
) -> Path:
    """Render ``n`` scenes and write them as a CLEVR v1.0 folder (RGBA PNGs and the scenes JSON).

    ``kwargs`` go to :func:`generate_clevr_scenes` (not ``masks``). Renders and writes block by block, so memory
    stays small at 480x320. Returns the scenes file's path.
    """
    params = inspect.signature(generate_clevr_scenes).parameters
    args = {k: p.default for k, p in params.items() if k not in ("n", "seed", "height", "width", "masks")}
    unknown = set(kwargs) - set(args)
    if unknown:
        raise TypeError(f"unknown arguments: {', '.join(sorted(unknown))}")
    args.update(kwargs)
    scenes: list[dict] = []
    for lay, images, _ in _blocks(n, seed, height, width, **args):  # type: ignore[arg-type]
        index = start_index + len(scenes)
        names = write_clevr_images(root, split, images, index)
        pc = _pixel_coords(lay, height, width, args["aspect"], args["fov_deg"])  # type: ignore[arg-type]
        for scene, name in zip(_scene_dicts(lay, pc, index), names):
            scenes.append({**scene, "image_filename": name, "split": split})
    write_clevr_scenes_json(root, split, scenes, info)
    return scenes_path(root, split)
