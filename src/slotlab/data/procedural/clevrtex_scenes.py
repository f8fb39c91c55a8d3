"""A textured twin of CLEVRTex (Karazija et al., 2021), rendered by our CLEVR ray caster with procedural materials.

Facts taken from CLEVRTex's generator (github.com/karazijal/clevrtex-generation, ``generate.py``, ``data/full.json``,
``data/scene.blend``): 240 x 320 images (H x W); CLEVR's camera, lights and jitter (camera +-0.5, lights +-1 per
axis); 3 to 10 objects at x, y uniform in [-3, 3], CLEVR's spacing (``min_dist`` 0.25, ``margin`` 0.4); sizes large,
medium, small = scale 0.9, 0.6, 0.4 (cubes scaled by 1 / sqrt(2)); every object visible on at least 200 pixels;
shapes cube, sphere, cylinder and monkey head; every object and the ground carry one of about 60 photographic
materials (bricks, tiles, marble, wood, fabric, ground, rust, metal...) with random colour and offset; the ``camo``
variant gives the ground and all objects one material.

The twin differs: no monkey head (cube, sphere, cylinder only, :data:`SHAPES`); the materials are procedural
families (:data:`FAMILIES`: fbm-like noise, marble, wood rings, checker, stripes, bricks, bumps), each with two
random colours, a random scale, offset and direction, grain and a bump (normal) perturbation; an object is metal
(CLEVR's metal look: darker diffuse, studio reflection, strong highlight) with probability :data:`METAL_PROBABILITY`,
else rubber. Textures are solid (3D noise in the object's frame) or mapped on the face planes of the object's frame
(tri-planar: cube faces get clean 2D patterns), so they stick to the rotated objects; the ground is textured on its
x, y and covers the whole frame (CLEVR's camera never sees the horizon). Patterns fade to their mean where a period
covers a few pixels only (cheap antialiasing of the far ground). The noise comes from a small periodic volume of
band-limited Gaussian noise, baked once (FFT) from a fixed seed and read with trilinear interpolation.

:func:`generate_clevrtex_scenes` returns arrays (``image``, ``mask`` in DeepMind's clevr_with_masks layout,
``labels``, per-entity factors); :func:`write_clevrtex_scenes` writes the published CLEVRTex layout, which
:func:`slotlab.data.formats.clevrtex.read_clevrtex` reads.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from slotlab.data.formats.clevrtex import write_clevrtex
from slotlab.data.procedural.clevr_scenes import (
    FOV_DEG,
    _blocks,
    _entity_fields,
    _ground_axes,
    _Hit,
    _Layouts,
    _per_entity,
    _pixel_coords,
    _sample_layouts,
    _Style,
    _Surface,
)

__all__ = [
    "FAMILIES",
    "METAL_PROBABILITY",
    "SHAPES",
    "SIZES",
    "SIZE_SCALE",
    "VARIANTS",
    "generate_clevrtex_scenes",
    "write_clevrtex_scenes",
]

#: Object shapes (CLEVRTex also has the monkey head, which the twin leaves out); same order as CLEVR's.
SHAPES = ("cube", "sphere", "cylinder")
#: CLEVRTex's sizes and their scale (radius; cubes: half-side = scale / sqrt(2)).
SIZES = ("large", "medium", "small")
SIZE_SCALE = {"large": 0.9, "medium": 0.6, "small": 0.4}
#: Procedural material families.
FAMILIES = ("noise", "marble", "wood", "checker", "stripes", "bricks", "bumps")
METAL_PROBABILITY = 0.25
#: Variants the twin renders: ``full`` (a material per object and one for the ground), ``camo`` (one for all).
VARIANTS = ("full", "camo")

_STREAM = 0xC7E  # keeps the random streams apart from the plain CLEVR twin's for the same seed
_GRID = 64  # noise volume: periodic, _GRID^3 cells
_CELLS = 4.0  # noise cells per pattern period
_NOISE_SEED = 20211206


@dataclass
class _TexLayouts(_Layouts):
    """Layouts plus materials per entity (E = K + 1 columns; column 0 = the ground, k + 1 = object slot k)."""

    RADII = np.array([SIZE_SCALE[s] for s in SIZES], dtype=np.float32)

    family: np.ndarray  # int64 [B, E] index into FAMILIES
    colors: np.ndarray  # float32 [B, E, 2, 3] in [0, 1]
    scale: np.ndarray  # float32 [B, E] world size of one pattern period
    offset: np.ndarray  # float32 [B, E, 3] noise offset (cells)
    angle: np.ndarray  # float32 [B, E] pattern direction (radians)
    metal: np.ndarray  # bool [B, E]
    bump: np.ndarray  # float32 [B, E] strength of the normal perturbation
    gloss: np.ndarray  # float32 [B, E] rubber sheen


# ------------------------------------------------------------------------------------------------ sampling


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h[..., None] * 6.0) % 6.0
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _colors(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Two colours per material [*shape, 2, 3]: a random base and a darker, a paler or an unrelated second one."""
    hue = rng.uniform(0.0, 1.0, shape)
    sat = rng.uniform(0.0, 1.0, shape) ** 1.3 * 0.85
    val = rng.uniform(0.35, 0.95, shape)
    base = _hsv_to_rgb(hue, sat, val)
    mode = rng.uniform(0.0, 1.0, shape)
    darker = _hsv_to_rgb(
        (hue + rng.uniform(-0.05, 0.05, shape)) % 1.0, np.clip(sat * 1.2, 0, 1), val * rng.uniform(0.25, 0.6, shape)
    )
    paler = _hsv_to_rgb(hue, sat * 0.4, np.clip(val * rng.uniform(1.2, 1.6, shape), 0, 1))
    other = _hsv_to_rgb(rng.uniform(0.0, 1.0, shape), rng.uniform(0.0, 0.9, shape), rng.uniform(0.2, 0.95, shape))
    second = np.where((mode < 0.45)[..., None], darker, np.where((mode < 0.75)[..., None], paler, other))
    return np.stack([base, second], axis=-2).astype(np.float32)


def _prepare(camo: bool):
    def prepare(lay: _Layouts, rng: np.random.Generator) -> _TexLayouts:
        b, k = lay.shape.shape
        e = k + 1
        family = rng.integers(0, len(FAMILIES), (b, e))
        colors = _colors(rng, (b, e))
        scale = rng.uniform(0.25, 0.65, (b, e))
        scale[:, 0] = rng.uniform(0.5, 1.4, b)  # the ground: larger patterns
        offset = rng.uniform(0.0, _GRID, (b, e, 3))
        angle = rng.uniform(0.0, 2 * math.pi, (b, e))
        metal = rng.uniform(0.0, 1.0, (b, e)) < METAL_PROBABILITY
        metal[:, 0] = False
        bump = rng.uniform(0.0, 0.35, (b, e))
        gloss = rng.uniform(0.3, 2.5, (b, e))
        if camo:  # one material for the ground and every object (each object keeps its own noise offset)
            for a in (family, colors, scale, angle, metal, bump, gloss):
                a[:, 1:] = a[:, :1]
        base = {f.name: getattr(lay, f.name) for f in fields(_Layouts)}
        base["ground"] = colors[:, 0].mean(1)
        f32 = np.float32
        return _TexLayouts(
            **base,
            family=family,
            colors=colors,
            scale=scale.astype(f32),
            offset=offset.astype(f32),
            angle=angle.astype(f32),
            metal=metal,
            bump=bump.astype(f32),
            gloss=gloss.astype(f32),
        )

    return prepare


# ------------------------------------------------------------------------------------------------ textures


@functools.cache
def _noise_volume() -> torch.Tensor:
    """Periodic band-limited Gaussian noise [1, 5, G + 1, G + 1, G + 1] (the last plane repeats the first; zero mean,
    unit std per channel): two fbm-like fields (wavelengths 4 to 32 cells) and three of fine grain (2.7 to 5.3
    cells), baked once from a fixed seed."""
    rng = np.random.default_rng(_NOISE_SEED)
    g = _GRID
    k = np.fft.fftfreq(g) * g
    kk = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    channels = []
    for lo, hi, beta in ((2, 16, 2.0), (2, 16, 2.0), (12, 24, 0.0), (12, 24, 0.0), (12, 24, 0.0)):
        amp = np.where((kk >= lo) & (kk <= hi), np.maximum(kk, 1.0) ** -beta, 0.0)
        field = np.fft.ifftn(np.fft.fftn(rng.standard_normal((g, g, g))) * amp).real
        field = (field - field.mean()) / field.std()
        channels.append(np.round(field * 1024) / 1024)  # robust to the last bits of the FFT
    vol = np.pad(np.stack(channels), ((0, 0), (0, 1), (0, 1), (0, 1)), mode="wrap").astype(np.float32)
    return torch.from_numpy(vol)[None]


def _noise(c: torch.Tensor) -> torch.Tensor:
    """Noise channels [5, P] at points c [3, P] (cells; periodic), trilinear."""
    grid = (torch.remainder(c, _GRID) * (2.0 / _GRID) - 1.0).T.reshape(1, 1, 1, -1, 3)
    out = F.grid_sample(_noise_volume(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(out.shape[1], -1)


def _smoothstep(lo: float, hi: float, x: torch.Tensor) -> torch.Tensor:
    t = ((x - lo) / (hi - lo)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _fract(x: torch.Tensor) -> torch.Tensor:
    """x - floor(x), in [0, 1) also for negative x (unlike torch.frac)."""
    return x - torch.floor(x)


def _hash2(i: torch.Tensor, j: torch.Tensor, salt: int) -> torch.Tensor:
    """Uniform [0, 1) per integer cell (i, j) (int64 tensors)."""
    h = (i * 73856093) ^ (j * 19349663) ^ (salt * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF).float() / 65536.0


class _Px:
    """Per-pixel inputs of the patterns, gathered for one family's pixels ``sel`` on first use."""

    def __init__(self, sel: torch.Tensor, full: dict[str, torch.Tensor]):
        self.sel, self.full = sel, full
        self.cache: dict = {}

    def __getattr__(self, name: str) -> torch.Tensor:
        if name not in self.cache:
            self.cache[name] = self.full[name][..., self.sel]
        return self.cache[name]


def _along(px: _Px, freq: float) -> torch.Tensor:
    """Face-plane coordinate along the pattern's direction, times freq."""
    return (px.s * torch.cos(px.angle) + px.t * torch.sin(px.angle)) * freq


# Each family: pixels -> (mix of the two colours in [0, 1], brightness factor or None, face-plane tilt of the
# shading normal [2, Q] or None). ``fade`` (contrast left at this pixel footprint) keeps the far ground from aliasing.


def _f_noise(px: _Px):
    return _smoothstep(-1.4, 1.4, 1.3 * px.fbm_a), None, None


def _f_marble(px: _Px):
    vein = 1 - torch.sin(math.pi * _along(px, 0.7) + 2.8 * px.fbm_b).abs()
    return vein**5 * (0.3 + 0.7 * px.fade), None, None


def _f_wood(px: _Px):
    u = px.u
    radial = torch.where(px.ground, _along(px, 1.0), (u[0] * u[0] + u[1] * u[1]).sqrt())
    ring = _fract(radial * 1.4 + 0.5 * px.fbm_b)
    return 0.5 + (ring * ring - 0.5) * px.fade, None, None


def _f_checker(px: _Px):
    parity = torch.remainder(torch.floor(px.s * 2) + torch.floor(px.t * 2), 2)
    return 0.5 + (parity - 0.5) * px.fade, None, None


def _f_stripes(px: _Px):
    v = torch.tanh(4 * torch.sin(2 * math.pi * _along(px, 1.0)))
    return 0.5 + 0.5 * v * px.fade, None, None


def _f_bricks(px: _Px):
    row_f = px.t * 3.0
    row = torch.floor(row_f)
    col_f = px.s * 1.5 + 0.5 * torch.remainder(row, 2)
    col = torch.floor(col_f)
    fade = px.fade
    mortar = ((_fract(row_f) < 0.12) | (_fract(col_f) < 0.06)).float() * fade
    shade = 1 + (0.6 * _hash2(row.long(), col.long(), 1) - 0.3) * fade  # each brick its own brightness
    return mortar + 0.5 * (1 - fade), shade * (1 - mortar), None


def _f_bumps(px: _Px):
    gs, gt = px.s * 2.5, px.t * 2.5
    i, j = torch.floor(gs).long(), torch.floor(gt).long()
    ds = _fract(gs) - 0.5 - 0.25 * (_hash2(i, j, 2) - 0.5)
    dt = _fract(gt) - 0.5 - 0.25 * (_hash2(i, j, 3) - 0.5)
    rad = 0.18 + 0.15 * _hash2(i, j, 4)
    inside = ((ds * ds + dt * dt) < rad * rad).float() * px.fade
    tilt = 1.5 * inside / rad  # a dome: the normal leans out from the dot's centre
    return inside * 0.8, None, torch.stack([ds * tilt, dt * tilt])


_FAMILY_FNS = (_f_noise, _f_marble, _f_wood, _f_checker, _f_stripes, _f_bricks, _f_bumps)


def _param_table(lay: _TexLayouts) -> torch.Tensor:
    """Per-entity material parameters [15, B * E]: family, colours (6), scale, offset (3), angle, metal, bump,
    gloss."""
    b, e = lay.family.shape
    cols = [
        lay.family[..., None],
        lay.colors.reshape(b, e, 6),
        lay.scale[..., None],
        lay.offset,
        lay.angle[..., None],
        lay.metal[..., None],
        lay.bump[..., None],
        lay.gloss[..., None],
    ]
    table = np.concatenate([np.asarray(c, np.float32) for c in cols], -1).reshape(b * e, -1)
    return torch.from_numpy(np.ascontiguousarray(table.T))


def _material(hit: _Hit) -> _Surface:
    lay = hit.lay
    assert isinstance(lay, _TexLayouts)
    prm = torch.index_select(_param_table(lay), 1, hit.scene * lay.family.shape[1] + hit.entity)  # [15, P]
    family, c0, c1, inv_scale = prm[0], prm[1:4], prm[4:7], 1.0 / prm[7]
    ground = hit.entity == 0
    cos, sin, n = hit.cos, hit.sin, hit.normal
    # the face plane (tri-planar mapping in the object's frame): top/bottom (x, y), x faces (y, z), y faces (x, z)
    ln = torch.stack([cos * n[0] + sin * n[1], cos * n[1] - sin * n[0], n[2]]).abs()
    top = (ln[2] >= ln[0]) & (ln[2] >= ln[1])
    xface = ~top & (ln[0] >= ln[1])
    u = hit.local * inv_scale  # pattern periods
    noise = _noise(u * _CELLS + prm[8:11])  # [5, P]
    periods = 1.0 / (hit.footprint * inv_scale)  # pixels per pattern period
    fade = ((periods - 2.0) / 3.0).clamp(0, 1)  # 0 where a period spans 2 pixels or less, 1 from 5
    fade_fbm = ((2.0 * periods - 2.0) / 3.0).clamp(0, 1)
    fade_grain = ((0.8 * periods - 2.0) / 3.0).clamp(0, 1)
    full = {
        "u": u,
        "s": torch.where(xface, u[1], u[0]),
        "t": torch.where(top, u[1], u[2]),
        "angle": prm[11],
        "ground": ground,
        "fbm_a": noise[0] * fade_fbm,
        "fbm_b": noise[1] * fade_fbm,
        "fade": fade,
    }

    mix = torch.zeros_like(inv_scale)
    shade = 1 + 0.22 * noise[2] * fade_grain
    lvec = noise[2:5] * (prm[13] * fade_grain)  # grain bumps: a solid random field, object frame
    for f, fn in enumerate(_FAMILY_FNS):
        sel = torch.nonzero(family == f).squeeze(1)
        if sel.numel() == 0:
            continue
        px = _Px(sel, full)
        m, sh, tilt = fn(px)
        mix[sel] = m
        if sh is not None:
            shade[sel] *= sh
        if tilt is not None:  # face-plane axes: s along x (y on x faces), t along y on top faces, else z
            xf, tp = xface[sel], top[sel]
            lvec[0, sel] += torch.where(xf, 0.0, tilt[0])
            lvec[1, sel] += torch.where(xf, tilt[0], 0.0) + torch.where(tp, tilt[1], 0.0)
            lvec[2, sel] += torch.where(tp, 0.0, tilt[1])
    albedo = ((c0 + (c1 - c0) * mix) * shade).clamp_(0, 1)
    normal = torch.stack([n[0] + cos * lvec[0] - sin * lvec[1], n[1] + sin * lvec[0] + cos * lvec[1], n[2] + lvec[2]])
    normal = normal / (normal * normal).sum(0, keepdim=True).sqrt().clamp_min(1e-6)  # (norm(dim=0) is slow)
    return _Surface(albedo.T.contiguous(), prm[12] > 0.5, normal, torch.where(ground, 0.3, prm[14]))


@functools.cache
def _style(camo: bool) -> _Style:
    return _Style(_prepare(camo), _material, _STREAM + int(camo))


# ------------------------------------------------------------------------------------------------ outputs


def _scene_dicts(lay: _TexLayouts, pc: np.ndarray, start: int, variant: str) -> list[dict]:
    """CLEVRTex-style metadata per scene."""
    behind, left = _ground_axes(lay.camera.astype(np.float64))
    z = lay.half_height
    out = []
    for i in range(len(lay.n_obj)):
        m = int(lay.n_obj[i])

        def material(e: int, i: int = i) -> str:
            return FAMILIES[lay.family[i, e]] + ("_metal" if lay.metal[i, e] else "")

        objects = [
            {
                "index": j + 1,
                "shape": SHAPES[lay.shape[i, j]],
                "size": SIZES[lay.size[i, j]],
                "material": material(j + 1),
                "color": [round(float(c), 4) for c in lay.colors[i, j + 1, 0]],
                "rotation": float(lay.rotation[i, j]),
                "3d_coords": [float(lay.xy[i, j, 0]), float(lay.xy[i, j, 1]), float(z[i, j])],
                "pixel_coords": [int(pc[i, j, 0]), int(pc[i, j, 1]), float(pc[i, j, 2])],
            }
            for j in range(m)
        ]
        out.append(
            {
                "image_index": start + i,
                "image_filename": f"CLEVRTEX_{variant}_{start + i:06d}.png",
                "num_objects": m,
                "objects": objects,
                "ground_material": material(0),
                "directions": {
                    "behind": behind[i].tolist(),
                    "front": (-behind[i]).tolist(),
                    "left": left[i].tolist(),
                    "right": (-left[i]).tolist(),
                    "above": [0.0, 0.0, 1.0],
                    "below": [0.0, 0.0, -1.0],
                },
            }
        )
    return out


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"the CLEVRTex twin renders the variants {', '.join(VARIANTS)}, got {variant!r}")


def _render_blocks(
    n: int,
    seed: int,
    height: int,
    width: int,
    min_objects: int,
    max_objects: int,
    min_pixels: int | None,
    supersample: int,
    variant: str,
    shadows: bool,
    camera_jitter: float,
    light_jitter: float,
    min_dist: float,
    margin: float,
):
    _check_variant(variant)
    if min_pixels is None:
        min_pixels = max(1, round(200 * height * width / (240 * 320)))  # CLEVRTex: 200 pixels at 240 x 320
    return _blocks(
        n,
        seed,
        height,
        width,
        min_objects,
        max_objects,
        min_pixels,
        supersample,
        None,
        FOV_DEG,
        camera_jitter,
        light_jitter,
        min_dist,
        margin,
        shadows,
        "grey",
        _style(variant == "camo"),
    )


def generate_clevrtex_scenes(
    n: int,
    seed: int,
    height: int = 240,
    width: int = 320,
    min_objects: int = 3,
    max_objects: int = 10,
    min_pixels: int | None = None,
    supersample: int = 1,
    variant: str = "full",
    shadows: bool = True,
    camera_jitter: float = 0.5,
    light_jitter: float = 1.0,
    min_dist: float = 0.25,
    margin: float = 0.4,
    masks: bool = True,
) -> dict:
    """Render ``n`` textured CLEVRTex-like scenes, deterministic from ``seed``.

    Args:
        min_pixels: visible pixels every object needs (default: CLEVRTex's 200 at 240 x 320, scaled to the area).
        supersample: render at ``supersample`` times the resolution and average (antialiasing).
        variant: ``"full"`` (a material per object and one for the ground) or ``"camo"`` (one for all).
        masks: set False to skip the ``mask`` array (``labels`` holds the same, E times smaller).

    Returns a dict, E = max_objects + 1 entities (0 = background, then the objects in scene order, then padding):
        ``image`` uint8 [N, H, W, 3]; ``labels`` uint8 [N, H, W] (0 = background, k = object k);
        ``mask`` uint8 [N, E, H, W, 1] 0/255 (as ``generate_clevr_scenes``); ``x``, ``y``, ``z``, ``rotation``,
        ``visibility`` float32 [N, E]; ``pixel_coords`` float32 [N, E, 3]; ``shape`` (index into :data:`SHAPES`
        + 1), ``size`` (:data:`SIZES` + 1), ``material`` (:data:`FAMILIES` + 1; entity 0: the ground's), ``metal``
        (0/1) uint8 [N, E]; ``color`` float32 [N, E, 3] the material's base colour (entity 0: the ground's);
        ``scenes``: N CLEVRTex-style metadata dicts.
    """
    parts = list(
        _render_blocks(
            n,
            seed,
            height,
            width,
            min_objects,
            max_objects,
            min_pixels,
            supersample,
            variant,
            shadows,
            camera_jitter,
            light_jitter,
            min_dist,
            margin,
        )
    )
    if parts:
        lay = _TexLayouts(*(np.concatenate([getattr(p[0], f.name) for p in parts]) for f in fields(_TexLayouts)))
        images = np.concatenate([p[1] for p in parts])
        labels = np.concatenate([p[2] for p in parts])
    else:  # n = 0: empty layouts
        rng = np.random.default_rng(seed)
        empty = _sample_layouts(rng, 0, max_objects, min_objects, max_objects, 0, 0)
        lay = _style(variant == "camo").prepare(empty, rng)  # type: ignore[assignment]
        images = np.zeros((0, height, width, 3), np.uint8)
        labels = np.zeros((0, height, width), np.uint8)
    e = max_objects + 1
    pc = _pixel_coords(lay, height, width, None, FOV_DEG)

    def with_ground(values: np.ndarray, dtype: type) -> np.ndarray:  # [N, 1 + M]: the ground's value kept
        out = _per_entity(values[:, 1:], lay.present, dtype)
        out[:, 0] = values[:, 0]
        return out

    out = {
        "image": images,
        "labels": labels,
        **_entity_fields(lay, pc),
        "material": with_ground(lay.family + 1, np.uint8),
        "metal": with_ground(lay.metal.astype(np.uint8), np.uint8),
        "color": with_ground(lay.colors[:, :, 0], np.float32),
        "scenes": _scene_dicts(lay, pc, 0, variant),
    }
    if masks:
        one_hot = labels[:, None] == np.arange(e, dtype=np.uint8)[None, :, None, None]
        out["mask"] = (one_hot * np.uint8(255))[..., None]
    return out


def write_clevrtex_scenes(
    root: str | Path, n: int, seed: int, variant: str = "full", start_index: int = 0, **kwargs: object
) -> Path:
    """Render ``n`` scenes and write them in the published CLEVRTex layout under ``root``.

    ``ROOT/clevrtex_<variant>/<i // 1000>/CLEVRTEX_<variant>_<i:06d>.png`` (+ ``_flat.png`` palette mask,
    + ``.json`` metadata), written block by block. ``kwargs`` go to :func:`generate_clevrtex_scenes` (not
    ``masks``). Returns the ``clevrtex_<variant>`` folder.
    """
    params = inspect.signature(generate_clevrtex_scenes).parameters
    args = {k: p.default for k, p in params.items() if k not in ("n", "seed", "variant", "masks")}
    unknown = set(kwargs) - set(args)
    if unknown:
        raise TypeError(f"unknown arguments: {', '.join(sorted(unknown))}")
    args.update(kwargs)
    _check_variant(variant)
    h, w = int(args["height"]), int(args["width"])  # type: ignore[call-overload]
    folder = Path(root) / f"clevrtex_{variant}"
    index = start_index
    for lay, images, labels in _render_blocks(n, seed, variant=variant, **args):  # type: ignore[arg-type]
        folder = write_clevrtex(root, variant, images, labels, start_index=index)
        for scene in _scene_dicts(lay, _pixel_coords(lay, h, w, None, FOV_DEG), index, variant):
            i = scene["image_index"]
            (folder / str(i // 1000) / f"CLEVRTEX_{variant}_{i:06d}.json").write_text(json.dumps(scene))
        index += len(images)
    return folder
