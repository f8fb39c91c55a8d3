"""Image folders (directory, glob, list) and the FFHQ layout, made with Pillow and read back."""

import numpy as np
import pytest
from PIL import Image

from slotlab.data.formats.image_folder import (
    count_images,
    decode_image,
    ffhq_paths,
    ffhq_split,
    image_paths,
    read_ffhq,
    read_image_folder,
)
from slotlab.errors import DataError


@pytest.fixture
def folder(tmp_path):
    """Mixed modes, sizes and formats; a text file that a directory scan must skip."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (5, 4), dtype=np.uint8)
    rgba = rng.integers(0, 256, (7, 3, 4), dtype=np.uint8)
    pal = rng.integers(0, 4, (4, 4), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "b_rgb.png")
    Image.fromarray(gray).save(tmp_path / "a_gray.png")
    (tmp_path / "sub").mkdir()
    Image.fromarray(rgba).save(tmp_path / "sub" / "c_rgba.png")
    p = Image.frombytes("P", (4, 4), pal.tobytes())
    palette = [10, 20, 30, 40, 50, 60, 70, 80, 90, 250, 0, 5] + [0] * (3 * 252)
    p.putpalette(palette)
    p.save(tmp_path / "d_pal.bmp")
    Image.fromarray(rgb).save(tmp_path / "e.jpg", quality=95)
    (tmp_path / "readme.txt").write_text("not an image")
    expected_pal = np.asarray(palette, np.uint8).reshape(-1, 3)[pal]
    return tmp_path, {"a_gray.png": np.repeat(gray[..., None], 3, -1), "b_rgb.png": rgb, "d_pal.bmp": expected_pal,
                      "e.jpg": None, "sub/c_rgba.png": rgba[..., :3]}


def test_directory_is_read_in_sorted_order_as_rgb(folder):
    root, expected = folder
    out = list(read_image_folder(root))
    assert [e["index"] for e in out] == list(range(5))
    assert [str(e["path"])[len(str(root)) + 1:] for e in out] == sorted(expected)
    assert count_images(root) == 5
    for e in out:
        name = e["path"][len(str(root)) + 1:]
        assert e["image"].dtype == np.uint8 and e["image"].ndim == 3 and e["image"].shape[-1] == 3
        if expected[name] is None:  # JPEG: lossy, only the shape is exact
            assert e["image"].shape == (6, 9, 3)
        else:
            np.testing.assert_array_equal(e["image"], expected[name])
    rest = list(read_image_folder(root, start=3))
    assert [e["index"] for e in rest] == [3, 4] and rest[0]["path"] == out[3]["path"]
    assert list(read_image_folder(root, start=9)) == []


def test_glob_and_list(folder):
    root, expected = folder
    assert [p.name for p in image_paths(str(root / "**" / "*.png"))] == ["a_gray.png", "b_rgb.png", "c_rgba.png"]
    assert [p.name for p in image_paths(str(root / "*.png"))] == ["a_gray.png", "b_rgb.png"]
    out = list(read_image_folder([root / "b_rgb.png", root / "a_gray.png"]))
    assert [e["path"] for e in out] == [str(root / "a_gray.png"), str(root / "b_rgb.png")]
    np.testing.assert_array_equal(out[1]["image"], expected["b_rgb.png"])
    assert count_images(root / "b_rgb.png") == 1


def test_errors_name_the_file(folder, tmp_path):
    root, _ = folder
    (root / "f_broken.png").write_bytes((root / "b_rgb.png").read_bytes()[:40])
    with pytest.raises(DataError, match="f_broken.png: not a readable image") as e:
        list(read_image_folder(root))
    assert "\n" not in str(e.value) and str(e.value).count("f_broken") == 1
    with pytest.raises(DataError, match="readme.txt"):
        list(read_image_folder(str(root / "[rb]*")))  # a glob reads whatever matches
    with pytest.raises(DataError, match="frame 3"):
        decode_image(b"garbage", "frame 3")
    with pytest.raises(DataError, match="not found: .*missing"):
        list(read_image_folder(tmp_path / "missing"))
    with pytest.raises(DataError, match="no files match"):
        image_paths(str(tmp_path / "*.webp"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        count_images(tmp_path / "empty")
    with pytest.raises(DataError, match="not found"):
        image_paths([root / "b_rgb.png", root / "gone.png"])
    with pytest.raises(DataError, match="no image files"):
        image_paths([])


def _ffhq(tmp_path, indices):
    rng = np.random.default_rng(1)
    images = {}
    for i in indices:
        d = tmp_path / "images1024x1024" / f"{i // 1000 * 1000:05d}"
        d.mkdir(parents=True, exist_ok=True)
        images[i] = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(images[i]).save(d / f"{i:05d}.png")
    return images


def test_ffhq_layout_and_split(tmp_path):
    images = _ffhq(tmp_path, [69999, 0, 1, 1500, 59999, 60000, 61234])
    assert [int(p.stem) for p in ffhq_paths(tmp_path, "train")] == [0, 1, 1500, 59999]
    assert [int(p.stem) for p in ffhq_paths(tmp_path, "test")] == [60000, 61234, 69999]
    assert len(ffhq_paths(tmp_path / "images1024x1024", "all")) == 7
    out = list(read_ffhq(tmp_path, "test", start=1))
    assert [e["index"] for e in out] == [61234, 69999]
    for e in out:
        np.testing.assert_array_equal(e["image"], images[e["index"]])
    assert [p.name for p in ffhq_split(["a/59999.png", "b/60000.png"], "train")] == ["59999.png"]
    with pytest.raises(DataError, match="split"):
        ffhq_split([], "val")
    with pytest.raises(DataError, match="not a number"):
        ffhq_split(["x/abc.png"], "train")


def test_ffhq_missing_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"github\.com/NVlabs/ffhq-dataset"):
        ffhq_paths(tmp_path, "train")
    (tmp_path / "images1024x1024").mkdir()
    with pytest.raises(DataError, match="no FFHQ images"):
        ffhq_paths(tmp_path, "train")
