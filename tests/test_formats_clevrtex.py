"""CLEVRTex layout: written with write_clevrtex and by hand with Pillow, read back field by field."""

import json

import numpy as np
import pytest
from PIL import Image

from slotlab.data.formats.clevrtex import (
    CLEVRTEX_CROP,
    clevrtex_dir,
    clevrtex_indices,
    clevrtex_split,
    count_clevrtex,
    read_clevrtex,
    write_clevrtex,
)
from slotlab.errors import DataError


def _data(n, h=12, w=16, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    labels = rng.integers(0, 7, (n, h, w), dtype=np.uint8)
    return images, labels


@pytest.fixture
def written(tmp_path):
    images, labels = _data(20)
    folder = write_clevrtex(tmp_path, "full", images, labels)
    return tmp_path, folder, images, labels


def test_layout_of_the_writer(written):
    root, folder, images, labels = written
    assert folder == root / "clevrtex_full"
    stem = folder / "0" / "CLEVRTEX_full_000007"
    img = Image.open(stem.with_name(stem.name + ".png"))
    flat = Image.open(stem.with_name(stem.name + "_flat.png"))
    assert img.mode == "RGBA" and flat.mode == "P"
    np.testing.assert_array_equal(np.asarray(img)[..., :3], images[7])
    np.testing.assert_array_equal(np.asarray(img)[..., 3], 255)
    np.testing.assert_array_equal(np.asarray(flat), labels[7])
    # the palette's colours differ from the indices, so a reader returning colours would be caught
    assert not np.array_equal(np.asarray(flat.convert("L")), labels[7])
    scene = json.loads(stem.with_name(stem.name + ".json").read_text())
    assert scene["image_index"] == 7


def test_read_back_every_split(written):
    root, _, images, labels = written
    seen = []
    for split, expected in [("test", range(2)), ("val", range(2, 4)), ("train", range(4, 20))]:
        examples = list(read_clevrtex(root, "full", split))
        assert [e["index"] for e in examples] == list(expected)
        assert count_clevrtex(root, "full", split) == len(expected)
        for e in examples:
            i = e["index"]
            assert e["image"].dtype == np.uint8 and e["image"].shape == (12, 16, 3)
            assert e["labels"].dtype == np.uint8 and e["labels"].shape == (12, 16)
            np.testing.assert_array_equal(e["image"], images[i])
            np.testing.assert_array_equal(e["labels"], labels[i])
            assert e["scene"]["image_index"] == i
            assert e["path"].endswith(f"CLEVRTEX_full_{i:06d}.png")
        seen += [e["index"] for e in examples]
    assert sorted(seen) == list(range(20))
    assert [e["index"] for e in read_clevrtex(root, "full", "all")] == list(range(20))


def test_start_skips(written):
    root = written[0]
    full = list(read_clevrtex(root, "full", "train"))
    for start in (0, 1, 15, 16, 30):
        rest = list(read_clevrtex(root, "full", "train", start=start))
        assert [e["index"] for e in rest] == [e["index"] for e in full[start:]]


def test_split_sizes_follow_the_official_loader():
    sizes = {s: len(clevrtex_split(range(50_000), s)) for s in ("test", "val", "train")}
    assert sizes == {"test": 5000, "val": 5000, "train": 40_000}
    idx = list(range(100, 125))  # 25 indices: int(2.5) = 2, int(5.0) = 5
    assert clevrtex_split(idx, "test") == idx[:2]
    assert clevrtex_split(idx, "val") == idx[2:5]
    assert clevrtex_split(idx, "train") == idx[5:]
    assert clevrtex_split(reversed(idx), "test") == idx[:2]  # by sorted index
    with pytest.raises(DataError, match="split"):
        clevrtex_split(idx, "validation")


def test_crop_is_the_centre_192_of_240x320():
    top, left, h, w = CLEVRTEX_CROP
    assert (h, w) == (192, 192) and top == (240 - h) // 2 and left == (320 - w) // 2


def test_hand_made_files_in_a_later_thousand(tmp_path):
    """RGB (not RGBA) image, palette PNG with a palette of our own, no JSON, indices 1000-1004, root = variant dir."""
    folder = tmp_path / "clevrtex_camo"
    (folder / "1").mkdir(parents=True)
    images, labels = _data(5, 10, 14, seed=3)
    palette = [v for k in range(256) for v in ((k + 100) % 256, 255 - k, 3)]
    for j in range(5):
        stem = folder / "1" / f"CLEVRTEX_camo_{1000 + j:06d}"
        Image.fromarray(images[j], "RGB").save(f"{stem}.png")
        flat = Image.frombytes("P", (14, 10), labels[j].tobytes())
        flat.putpalette(palette)
        flat.save(f"{stem}_flat.png")
    (folder / "1" / "notes.txt").write_text("ignored")
    assert clevrtex_dir(tmp_path, "camo") == folder == clevrtex_dir(folder, "camo")
    assert clevrtex_indices(folder, "camo") == list(range(1000, 1005))
    examples = list(read_clevrtex(folder, "camo", "all"))
    assert [e["index"] for e in examples] == list(range(1000, 1005))
    for j, e in enumerate(examples):
        np.testing.assert_array_equal(e["image"], images[j])
        np.testing.assert_array_equal(e["labels"], labels[j])
        assert "scene" not in e
    write_clevrtex(tmp_path, "camo", images[:1], labels[:1], start_index=2000)
    assert clevrtex_indices(folder, "camo")[-1] == 2000
    assert (folder / "2" / "CLEVRTEX_camo_002000_flat.png").is_file()


def test_missing_root_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"robots\.ox\.ac\.uk/~vgg/data/clevrtex") as e:
        list(read_clevrtex(tmp_path / "nowhere", "full"))
    assert "clevrtex_full" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "clevrtex_full").mkdir()
    with pytest.raises(DataError, match="no CLEVRTex images"):
        count_clevrtex(tmp_path, "full")
    with pytest.raises(DataError, match="unknown CLEVRTex variant"):
        clevrtex_indices(tmp_path, "shiny")


def test_corrupt_files_are_named(written):
    root, folder, *_ = written
    bad = folder / "0" / "CLEVRTEX_full_000005.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated PNG
    with pytest.raises(DataError, match="CLEVRTEX_full_000005.png") as e:
        list(read_clevrtex(root, "full", "train"))
    assert "\n" not in str(e.value)
    assert len(list(read_clevrtex(root, "full", "train", start=2))) == 14  # the bad file is skipped unopened

    flat = folder / "0" / "CLEVRTEX_full_000001_flat.png"
    flat.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="CLEVRTEX_full_000001_flat.png"):
        list(read_clevrtex(root, "full", "test"))
    (folder / "0" / "CLEVRTEX_full_000003_flat.png").unlink()
    with pytest.raises(DataError, match="mask file not found: .*CLEVRTEX_full_000003_flat.png"):
        list(read_clevrtex(root, "full", "val"))
    (folder / "0" / "CLEVRTEX_full_000019.json").write_text("{oops")
    with pytest.raises(DataError, match="CLEVRTEX_full_000019.json"):
        list(read_clevrtex(root, "full", "train", start=15))


def test_rgb_flat_mask_is_refused(tmp_path):
    images, labels = _data(1)
    folder = write_clevrtex(tmp_path, "pbg", images, labels)
    Image.fromarray(images[0]).save(folder / "0" / "CLEVRTEX_pbg_000000_flat.png")
    with pytest.raises(DataError, match="palette or grayscale"):
        list(read_clevrtex(tmp_path, "pbg", "all"))


def test_writer_checks_its_input(tmp_path):
    images, labels = _data(2)
    with pytest.raises(DataError, match="labels"):
        write_clevrtex(tmp_path, "full", images, labels[:, :5])
    with pytest.raises(DataError, match="images"):
        write_clevrtex(tmp_path, "full", images.astype(np.float32), labels)
