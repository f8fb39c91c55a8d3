"""DeepMind multi-object datasets: records assembled field by field in the published layout, read back exactly."""

import numpy as np
import pytest

from slotlab.data.formats import multi_object as mo
from slotlab.data.formats.tfrecord import encode_example, write_records
from slotlab.errors import DataError


def _random_example(spec: mo.MultiObjectSpec, rng) -> dict:
    """One example as the reader returns it: mask [E, H, W, 1] 0/255 disjoint, factors per entity."""
    h, w, c = spec.image_shape
    e = spec.num_entities
    labels = rng.integers(0, e, (h, w))
    ex = {"image": rng.integers(0, 256, (h, w, c), dtype=np.uint8),
          "mask": ((labels[None] == np.arange(e)[:, None, None]) * 255).astype(np.uint8)[..., None]}
    for k, trailing in spec.float_factors.items():
        ex[k] = rng.normal(size=(e, *trailing)).astype(np.float32)
    for k in spec.byte_factors:
        ex[k] = rng.integers(0, 9, e, dtype=np.uint8)
    return ex


def _stored_layout(spec: mo.MultiObjectSpec, ex: dict) -> bytes:
    """The record exactly as DeepMind's files hold it, assembled by hand (Multi-dSprites: mask [H, W, E, 1])."""
    mask = ex["mask"].transpose(1, 2, 0, 3) if spec.name.startswith("multi_dsprites") else ex["mask"]
    feats = {"image": ex["image"].reshape(-1), "mask": mask.reshape(-1)}
    feats |= {k: ex[k].reshape(-1) for k in spec.float_factors}
    feats |= {k: ex[k] for k in spec.byte_factors}
    return encode_example(feats)


SMALL = ["tetrominoes", "multi_dsprites_binarized", "multi_dsprites_colored_on_grayscale",
         "multi_dsprites_colored_on_colored", "objects_room_train", "objects_room_test_six_objects",
         "objects_room_test_empty_room", "objects_room_test_identical_color", "clevr_with_masks"]


@pytest.mark.parametrize("name", SMALL)
def test_read_every_field_of_hand_assembled_records(tmp_path, name):
    spec = mo.SPECS[name]
    rng = np.random.default_rng(0)
    examples = [_random_example(spec, rng) for _ in range(3)]
    path = tmp_path / spec.filename
    write_records(path, [_stored_layout(spec, ex) for ex in examples], compression="gzip")
    read = list(mo.read_multi_object(name, path))
    assert len(read) == 3
    for got, want in zip(read, examples):
        assert set(got) == set(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert [ex["image"][0, 0, 0] for ex in mo.read_multi_object(name, path, start=1)] == [
        ex["image"][0, 0, 0] for ex in examples[1:]]


def test_layouts_of_the_published_files():
    assert mo.SPECS["clevr_with_masks"].image_shape == (240, 320, 3)
    assert mo.SPECS["clevr_with_masks"].num_entities == 11
    assert mo.SPECS["multi_dsprites_binarized"].image_shape == (64, 64, 1)
    assert [mo.SPECS[f"multi_dsprites_{v}"].num_entities for v in ("binarized", "colored_on_grayscale",
                                                                      "colored_on_colored")] == [4, 6, 5]
    assert mo.SPECS["tetrominoes"].image_shape == (35, 35, 3) and mo.SPECS["tetrominoes"].num_entities == 4
    assert [mo.SPECS[f"objects_room_{s}"].num_entities for s in
            ("train", "test_six_objects", "test_empty_room", "test_identical_color")] == [7, 10, 4, 10]
    assert mo.SPECS["tetrominoes"].url.startswith("https://storage.googleapis.com/multi-object-datasets/tetrominoes/")


def test_write_multi_object_matches_hand_assembly(tmp_path):
    spec = mo.SPECS["multi_dsprites_colored_on_grayscale"]
    rng = np.random.default_rng(1)
    examples = [_random_example(spec, rng) for _ in range(2)]
    batch = {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}
    mo.write_multi_object(spec, tmp_path / "a.tfrecords", batch, compression=None)
    write_records(tmp_path / "b.tfrecords", [_stored_layout(spec, ex) for ex in examples])
    a, b = (tmp_path / "a.tfrecords").read_bytes(), (tmp_path / "b.tfrecords").read_bytes()
    assert len(a) == len(b)
    got = list(mo.read_multi_object(spec, tmp_path / "a.tfrecords"))
    for g, ex in zip(got, examples):
        for k in ex:
            np.testing.assert_array_equal(g[k], ex[k])


def test_clevr6_filter():
    vis = np.zeros(11, np.float32)
    vis[:7] = 1  # background + 6 objects
    assert mo.clevr6_keep({"visibility": vis})
    vis[7] = 1
    assert not mo.clevr6_keep({"visibility": vis})


def test_wrong_feature_size_names_file_record_and_feature(tmp_path):
    spec = mo.SPECS["tetrominoes"]
    ex = _random_example(spec, np.random.default_rng(0))
    good = _stored_layout(spec, ex)
    bad = encode_example({"image": np.zeros(10, np.uint8), "mask": ex["mask"].reshape(-1)})
    path = tmp_path / "t.tfrecords"
    write_records(path, [good, bad])
    with pytest.raises(DataError, match=r"t\.tfrecords: record 1: feature 'image' should hold 3675 x uint8, got 10"):
        list(mo.read_multi_object("tetrominoes", path))
    write_records(path, [encode_example({"image": ex["image"].reshape(-1)})])
    with pytest.raises(DataError, match="record 0: feature 'mask' is missing"):
        list(mo.read_multi_object("tetrominoes", path))


def test_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"tetrominoes file not found: .*download https://storage\.googleapis\.com/"):
        list(mo.read_multi_object("tetrominoes", tmp_path / "x.tfrecords"))
