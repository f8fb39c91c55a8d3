"""CLEVR v1.0 folder format (reader, writer, set-prediction targets) and the procedural CLEVR-like renderer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from slotlab.data.formats.clevr import (
    COLORS,
    MATERIALS,
    SHAPES,
    SIZES,
    ClevrFolder,
    load_clevr_scenes,
    scene_targets,
    scenes_path,
    scenes_targets,
    write_clevr_folder,
)
from slotlab.data.procedural import clevr_scenes
from slotlab.data.procedural.clevr_scenes import (
    generate_clevr_scenes,
    write_clevr_scenes,
)
from slotlab.errors import DataError

N = 64
H = W = 128


@pytest.fixture(scope="module")
def rendered() -> dict:
    return generate_clevr_scenes(N, seed=123)


def _object(**kw: object) -> dict:
    obj = {"color": "purple", "size": "large", "rotation": 12.5, "shape": "cylinder", "3d_coords": [1.5, -3.0, 0.7],
           "material": "metal", "pixel_coords": [10, 20, 11.5]}
    obj.update(kw)
    return obj


# ----------------------------------------------------------------------------------------------- targets


def test_vocabularies_in_brief_order():
    assert COLORS == ["gray", "blue", "brown", "yellow", "red", "green", "purple", "cyan"]
    assert MATERIALS == ["rubber", "metal"] and SHAPES == ["cube", "sphere", "cylinder"] and SIZES == ["small", "large"]


def test_target_of_a_known_object_and_padding():
    scene = {"objects": [_object(), _object(color="gray", size="small", shape="cube", material="rubber",
                                            **{"3d_coords": [-3.0, 3.0, 0.35]})]}
    t = scene_targets(scene)
    assert t.shape == (10, 19) and t.dtype == np.float32
    expected = [0.75, 0.0, 3.7 / 6,  # (xyz + 3) / 6
                0, 1,  # size: large
                0, 1,  # material: metal
                0, 0, 1,  # shape: cylinder
                0, 0, 0, 0, 0, 0, 1, 0,  # colour: purple
                1]
    np.testing.assert_allclose(t[0], expected, rtol=1e-6)
    np.testing.assert_allclose(t[1], [0, 1, 3.35 / 6, 1, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1], rtol=1e-6)
    assert not t[2:].any()
    many = scenes_targets([scene, {"objects": []}, scene], max_objects=4)
    assert many.shape == (3, 4, 19)
    np.testing.assert_array_equal(many[0], t[:4])
    assert not many[1].any()


def test_target_errors():
    with pytest.raises(DataError, match="11 objects"):
        scene_targets({"objects": [_object()] * 11})
    assert scene_targets({"objects": [_object()] * 11}, max_objects=11).shape == (11, 19)
    with pytest.raises(DataError, match="pink"):
        scene_targets({"objects": [_object(color="pink")]})


# ----------------------------------------------------------------------------------------------- folder


def test_write_then_read_back(tmp_path, rendered):
    images, scenes = rendered["image"][:5], rendered["scenes"][:5]
    written = write_clevr_folder(tmp_path, "val", images, scenes, start_index=7)
    assert (tmp_path / "images" / "val" / "CLEVR_val_000007.png").is_file()
    with Image.open(tmp_path / "images" / "val" / "CLEVR_val_000011.png") as png:
        assert png.mode == "RGBA" and png.size == (W, H)
        assert (np.asarray(png)[..., 3] == 255).all()
    folder = ClevrFolder(tmp_path, "val")
    assert len(folder) == 5
    for i, (image, scene) in enumerate(folder):
        np.testing.assert_array_equal(image, images[i])
        assert scene["image_index"] == 7 + i and scene["split"] == "val"
        assert scene["image_filename"] == f"CLEVR_val_{7 + i:06d}.png" == written[i]["image_filename"]
        assert scene["objects"] == scenes[i]["objects"]  # every field of every object
        assert scene["relationships"] == scenes[i]["relationships"]
        assert scene["directions"] == scenes[i]["directions"]
    np.testing.assert_array_equal(folder.read_images([4, 0]), images[[4, 0]])
    np.testing.assert_array_equal(folder.targets(), scenes_targets(scenes))
    assert load_clevr_scenes(tmp_path, "val") == folder.scenes

    scenes_path(tmp_path, "val").unlink()  # like the real test split: images only
    bare = ClevrFolder(tmp_path, "val")
    assert len(bare) == 5 and bare.scenes is None and bare.targets() is None
    assert bare.image_path(0).name == "CLEVR_val_000007.png"
    image, scene = next(iter(bare))
    assert scene is None
    np.testing.assert_array_equal(image, images[0])


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_files(tmp_path):
    with pytest.raises(DataError) as e:
        load_clevr_scenes(tmp_path, "train")
    msg = _one_line(e)
    assert str(scenes_path(tmp_path, "train")) in msg and "CLEVR_v1.0.zip" in msg
    with pytest.raises(DataError, match="CLEVR_train_scenes.json"):
        ClevrFolder(tmp_path, "train", require_scenes=True)
    with pytest.raises(DataError, match="image folder not found"):
        ClevrFolder(tmp_path, "test")


def _write_scenes(tmp_path, text: str) -> None:
    path = scenes_path(tmp_path, "val")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_invalid_json_names_line_and_column(tmp_path):
    _write_scenes(tmp_path, '{"info": {},\n  "scenes": [\n    {"image_index": 0,, }]}')
    with pytest.raises(DataError) as e:
        load_clevr_scenes(tmp_path, "val")
    msg = _one_line(e)
    assert "CLEVR_val_scenes.json" in msg and "line 3, column 23" in msg


@pytest.mark.parametrize("field", ["3d_coords", "material"])
def test_missing_object_field(tmp_path, field):
    objects = [_object(), _object()]
    del objects[1][field]
    scenes = [{"image_index": 0, "image_filename": "a.png", "objects": [_object()]},
              {"image_index": 1, "image_filename": "b.png", "objects": objects}]
    _write_scenes(tmp_path, json.dumps({"info": {}, "scenes": scenes}))
    with pytest.raises(DataError) as e:
        load_clevr_scenes(tmp_path, "val")
    msg = _one_line(e)
    assert "CLEVR_val_scenes.json" in msg and "scene 1" in msg and "object 1" in msg and f"'{field}'" in msg


def test_missing_scene_field_and_unknown_word(tmp_path):
    _write_scenes(tmp_path, json.dumps({"scenes": [{"image_index": 0, "objects": []}]}))
    with pytest.raises(DataError, match="scene 0: missing field 'image_filename'"):
        load_clevr_scenes(tmp_path, "val")
    _write_scenes(tmp_path, json.dumps({"scenes": [{"image_index": 0, "image_filename": "a.png",
                                                    "objects": [_object(shape="cone")]}]}))
    with pytest.raises(DataError, match="scene 0: object 0: unknown shape 'cone'"):
        load_clevr_scenes(tmp_path, "val")


def test_corrupt_png_names_the_file(tmp_path, rendered):
    write_clevr_folder(tmp_path, "train", rendered["image"][:3], rendered["scenes"][:3])
    folder = ClevrFolder(tmp_path, "train")
    folder.image_path(1).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    data = folder.image_path(2).read_bytes()
    folder.image_path(2).write_bytes(data[: len(data) // 2])  # truncated
    folder.read_image(0)
    for i in (1, 2):
        with pytest.raises(DataError) as e:
            folder.read_image(i)
        assert str(folder.image_path(i)) in _one_line(e)
    folder.image_path(0).unlink()
    with pytest.raises(DataError, match="CLEVR_train_000000.png"):
        folder.read_images([0])


# ----------------------------------------------------------------------------------------------- renderer


def test_renderer_is_deterministic():
    a = generate_clevr_scenes(5, seed=7, height=48, width=64)
    b = generate_clevr_scenes(5, seed=7, height=48, width=64)
    c = generate_clevr_scenes(5, seed=8, height=48, width=64)
    for key in a:
        if key == "scenes":
            assert a[key] == b[key]
        else:
            np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], c["image"])


def test_shapes_and_dtypes(rendered):
    e = 11
    expected = {"image": ((N, H, W, 3), np.uint8), "mask": ((N, e, H, W, 1), np.uint8),
                "pixel_coords": ((N, e, 3), np.float32)}
    for key in ("x", "y", "z", "rotation", "visibility"):
        expected[key] = ((N, e), np.float32)
    for key in ("color", "material", "shape", "size"):
        expected[key] = ((N, e), np.uint8)
    for key, (shape, dtype) in expected.items():
        assert rendered[key].shape == shape and rendered[key].dtype == dtype, key
    assert len(rendered["scenes"]) == N


def test_masks_are_disjoint_covering_and_binary(rendered):
    mask = rendered["mask"]
    assert set(np.unique(mask)) <= {0, 255}
    assert ((mask > 0).sum(1) == 1).all()


def test_object_counts_visibility_and_codes(rendered):
    counts = np.array([len(s["objects"]) for s in rendered["scenes"]])
    assert counts.min() >= 3 and counts.max() <= 10 and len(set(counts)) > 3
    vis = rendered["visibility"]
    assert (vis[:, 0] == 1).all()
    np.testing.assert_array_equal(vis[:, 1:].sum(1), counts)
    np.testing.assert_array_equal(vis[:, 1:], np.arange(10) < counts[:, None])
    pad = vis == 0
    assert not rendered["mask"][pad].any()
    for key in ("x", "y", "z", "rotation", "color", "material", "shape", "size"):
        assert not rendered[key][pad].any() and not rendered[key][:, 0].any(), key
    few = generate_clevr_scenes(12, seed=1, height=32, width=32, min_objects=1, max_objects=2, min_pixels=4)
    assert few["mask"].shape[1] == 3
    assert {len(s["objects"]) for s in few["scenes"]} == {1, 2}


def test_arrays_match_scene_dicts(rendered):
    vocab = {"color": COLORS, "material": MATERIALS, "shape": SHAPES, "size": SIZES}
    for i, scene in enumerate(rendered["scenes"]):
        for j, obj in enumerate(scene["objects"]):
            k = j + 1
            assert obj["3d_coords"] == [float(rendered[a][i, k]) for a in "xyz"]
            assert obj["rotation"] == float(rendered["rotation"][i, k])
            assert obj["pixel_coords"] == [int(v) for v in rendered["pixel_coords"][i, k, :2]] + \
                [float(rendered["pixel_coords"][i, k, 2])]
            for key, words in vocab.items():
                assert words[rendered[key][i, k] - 1] == obj[key]
        assert set(scene["relationships"]) == {"right", "behind", "front", "left"}
        assert set(scene["directions"]) == {"behind", "front", "left", "right", "above", "below"}


def test_geometry_and_min_pixels(rendered):
    vis = rendered["visibility"][:, 1:] > 0
    x, y, z = (rendered[a][:, 1:][vis] for a in "xyz")
    assert (np.abs(x) <= 3).all() and (np.abs(y) <= 3).all()
    radius = np.where(rendered["size"][:, 1:][vis] == 2, 0.7, 0.35)
    height = np.where(rendered["shape"][:, 1:][vis] == 1, radius / math.sqrt(2), radius)  # cubes: r / sqrt(2)
    np.testing.assert_allclose(z, height, rtol=1e-6)
    assert rendered["rotation"].min() >= 0 and rendered["rotation"].max() < 360
    pixels = (rendered["mask"][:, 1:, ..., 0] > 0).sum((2, 3))
    assert (pixels[vis] >= round(200 * H * W / (480 * 320))).all()
    # bounding circles (radius r) never overlap
    for scene in rendered["scenes"]:
        xy = np.array([o["3d_coords"][:2] for o in scene["objects"]])
        r = np.array([0.7 if o["size"] == "large" else 0.35 for o in scene["objects"]])
        gap = np.linalg.norm(xy[:, None] - xy[None], axis=-1) - r[:, None] - r[None]
        assert (gap[~np.eye(len(r), dtype=bool)] >= 0.25 - 1e-6).all()


def test_pixel_coords_fall_in_own_mask(rendered):
    vis = rendered["visibility"] > 0
    vis[:, 0] = False
    pc = rendered["pixel_coords"]
    col, row = pc[..., 0][vis].astype(int), pc[..., 1][vis].astype(int)
    assert (col >= 0).all() and (col <= W).all() and (row >= 0).all() and (row <= H).all()
    assert (pc[..., 2][vis] > 0).all()
    n, k = np.nonzero(vis)
    inside = rendered["mask"][n, k, np.clip(row, 0, H - 1), np.clip(col, 0, W - 1), 0] > 0
    assert inside.mean() > 0.8


def test_metal_has_brighter_highlights_than_rubber(rendered):
    """Specular highlights are white: the peak of an object's darkest channel is much higher for metal."""
    image = rendered["image"].astype(np.float32) / 255
    peaks: dict[tuple[int, int], list[float]] = {}
    for i, k in zip(*np.nonzero(rendered["visibility"][:, 1:])):
        m = rendered["mask"][i, k + 1, ..., 0] > 0
        if m.sum() >= 30:
            key = (int(rendered["color"][i, k + 1]), int(rendered["material"][i, k + 1]))
            peaks.setdefault(key, []).append(float(image[i][m].min(1).max()))
    compared = 0
    for color in range(1, 9):
        rubber, metal = peaks.get((color, 1), []), peaks.get((color, 2), [])
        if len(rubber) >= 3 and len(metal) >= 3:
            assert np.mean(metal) > np.mean(rubber) + 0.15, COLORS[color - 1]
            compared += 1
    assert compared >= 6


def test_shadows_darken_the_ground(rendered):
    ground = rendered["mask"][:, 0, ..., 0] > 0
    lum = rendered["image"].astype(np.float32).mean(-1)
    assert lum[ground].std() > 10
    flat = generate_clevr_scenes(N, seed=123, shadows=False)
    np.testing.assert_array_equal(flat["mask"], rendered["mask"])  # same scenes
    darker = lum - flat["image"].astype(np.float32).mean(-1)
    assert (darker <= 0).all()
    assert (darker[ground] < -20).mean() > 0.01  # a few percent of the ground lies in shadow
    assert (darker < -20).reshape(N, -1).any(1).mean() > 0.9  # in nearly every scene


def test_random_ground_keeps_the_scenes_and_colours_the_ground(rendered):
    tinted = generate_clevr_scenes(N, seed=123, ground="random")
    np.testing.assert_array_equal(tinted["mask"], rendered["mask"])  # same layouts, objects untouched
    ground = rendered["mask"][:, 0, ..., 0] > 0
    grey, tint = rendered["image"].astype(np.float32), tinted["image"].astype(np.float32)
    np.testing.assert_array_equal(tint[~ground], grey[~ground])
    # CLEVR's ground is grey (R = G = B up to lighting); the tinted one differs between channels and between scenes
    per_scene = np.stack([tint[i][ground[i]].mean(0) for i in range(N)])  # [N, 3] mean ground colour
    assert (np.ptp(per_scene, axis=1) > 5).mean() > 0.5
    assert per_scene.std(0).min() > 10
    assert np.ptp(np.stack([grey[i][ground[i]].mean(0) for i in range(N)]), axis=1).max() < 3
    with pytest.raises(ValueError, match="ground must be one of grey, random"):
        generate_clevr_scenes(1, seed=0, ground="checker")


def test_screen_tiles_match_brute_force(monkeypatch):
    """Rays cast only in objects' screen boxes give exactly what casting every ray against every object gives."""
    rng = np.random.default_rng(0)
    lay = clevr_scenes._sample_layouts(rng, 8, 10, 3, 10, 0.5, 1.0)
    clevr_scenes._place_objects(rng, lay, 0.25, 0.4, 50)
    rgb, ent = clevr_scenes._render(lay, 48, 64, clevr_scenes.FOV_DEG, 64 / 48)
    monkeypatch.setattr(clevr_scenes, "_project_objects",
                        lambda cam, scene, pts, h, w: torch.tensor([[-5.0, w + 5, -5, h + 5]]).expand(len(scene), 4))
    rgb2, ent2 = clevr_scenes._render(lay, 48, 64, clevr_scenes.FOV_DEG, 64 / 48)
    assert torch.equal(ent, ent2) and torch.equal(rgb, rgb2)


def test_supersampling_keeps_scenes():
    plain = generate_clevr_scenes(4, seed=3, height=32, width=48, min_pixels=2)
    smooth = generate_clevr_scenes(4, seed=3, height=32, width=48, min_pixels=2, supersample=2)
    assert plain["scenes"] == smooth["scenes"]
    assert ((smooth["mask"] > 0).sum(1) == 1).all()
    diff = np.abs(plain["image"].astype(int) - smooth["image"].astype(int))
    assert 0 < diff.mean() < 10


def test_write_clevr_scenes_reads_back(tmp_path):
    path = write_clevr_scenes(tmp_path, "train", 3, seed=5, height=48, width=72, start_index=2)
    assert path == scenes_path(tmp_path, "train")
    folder = ClevrFolder(tmp_path, "train", require_scenes=True)
    assert len(folder) == 3 and folder.image_path(0).name == "CLEVR_train_000002.png"
    assert folder.read_images(range(3)).shape == (3, 48, 72, 3)
    targets = folder.targets()
    assert targets.shape == (3, 10, 19)
    np.testing.assert_array_equal(targets[..., 18].sum(1), [len(s["objects"]) for s in folder.scenes])
    same = generate_clevr_scenes(3, seed=5, height=48, width=72)
    np.testing.assert_array_equal(folder.read_images([0, 1, 2]), same["image"])
    assert [s["objects"] for s in folder.scenes] == [s["objects"] for s in same["scenes"]]
