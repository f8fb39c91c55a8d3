"""Tests for the data path: .npz reading and checks, crop/resize, SceneDataset, the batch sampler, the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slotlab.config import DataConfig
from slotlab.data import (
    SceneDataset,
    SequentialBatchSampler,
    ShuffledBatchSampler,
    build_dataset,
    load_npz,
    save_npz,
)
from slotlab.data.registry import to_scene_dataset
from slotlab.data.transforms import (
    centre_crop,
    masks_to_labels,
    prepare_images,
    prepare_labels,
    to_model_range,
)
from slotlab.errors import ConfigError, DataError

N, H, W, KM = 3, 6, 5, 4


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def some_images(n: int = N, h: int = H, w: int = W) -> np.ndarray:
    return rng().integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def some_labels(n: int = N, h: int = H, w: int = W) -> np.ndarray:
    return rng(1).integers(0, KM, size=(n, h, w)).astype(np.uint8)


def one_hot(labels: np.ndarray, k: int = KM) -> np.ndarray:
    return (labels[:, None] == np.arange(k)[None, :, None, None]).astype(np.uint8) * 255  # [N, K, H, W]


# ------------------------------------------------------------------------------- load_npz


def test_load_images_only(tmp_path):
    p = tmp_path / "x.npz"
    imgs = some_images()
    save_npz(p, imgs)
    images, labels = load_npz(p)
    assert labels is None
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(images, imgs)


def test_load_one_hot_masks(tmp_path):
    p = tmp_path / "x.npz"
    lab = some_labels()
    save_npz(p, some_images(), one_hot(lab))
    images, labels = load_npz(p)
    assert labels.dtype == np.uint8 and labels.shape == (N, H, W)
    np.testing.assert_array_equal(labels, lab)


def test_load_bool_one_hot_masks(tmp_path):
    p = tmp_path / "x.npz"
    lab = some_labels()
    save_npz(p, some_images(), one_hot(lab).astype(bool))
    _, labels = load_npz(p)
    np.testing.assert_array_equal(labels, lab)


def test_load_label_maps(tmp_path):
    p = tmp_path / "x.npz"
    lab = some_labels().astype(np.int64)  # any integer type 0..255 is accepted
    save_npz(p, some_images(), lab)
    _, labels = load_npz(p)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, lab)


def test_load_plain_npz_with_str_path(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, image=some_images(), mask=some_labels(), extra=np.zeros(3))
    images, labels = load_npz(str(p))
    assert images.shape == (N, H, W, 3) and labels.shape == (N, H, W)


def _expect_data_error(path, *fragments):
    with pytest.raises(DataError) as e:
        load_npz(path)
    msg = str(e.value)
    assert str(path) in msg, msg  # the message names the file
    for f in fragments:
        assert f in msg, msg
    return msg


def test_error_missing_file(tmp_path):
    _expect_data_error(tmp_path / "missing.npz", "not found")


def test_error_random_bytes(tmp_path):
    p = tmp_path / "noise.npz"
    p.write_bytes(rng(3).integers(0, 256, size=300, dtype=np.uint8).tobytes())
    _expect_data_error(p)


def test_error_empty_file(tmp_path):
    p = tmp_path / "empty.npz"
    p.write_bytes(b"")
    _expect_data_error(p)


def test_error_npy_instead_of_npz(tmp_path):
    p = tmp_path / "array.npz"
    with open(p, "wb") as f:
        np.save(f, some_images())
    _expect_data_error(p)


def test_error_no_image_key(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, images=some_images(), mask=some_labels())
    msg = _expect_data_error(p, "'image'")
    assert "images" in msg  # lists what it found


def test_error_float_images(tmp_path):
    p = tmp_path / "x.npz"
    save_npz(p, some_images().astype(np.float32) / 255)
    _expect_data_error(p, "uint8", "float32")


@pytest.mark.parametrize("shape", [(N, H, W), (H, W, 3), (N, H, W, 4), (1, N, H, W, 3)])
def test_error_wrong_image_shape(tmp_path, shape):
    p = tmp_path / "x.npz"
    save_npz(p, np.zeros(shape, np.uint8))
    _expect_data_error(p, str(list(shape)))


def test_error_zero_images(tmp_path):
    p = tmp_path / "x.npz"
    save_npz(p, np.zeros((0, H, W, 3), np.uint8))
    _expect_data_error(p, "no images")


@pytest.mark.parametrize("shape", [(N, H + 1, W), (N - 1, H, W), (N, KM, H, W + 1), (N + 1, KM, H, W), (N, H, W, 1, 1, 1)])
def test_error_mask_wrong_shape(tmp_path, shape):
    p = tmp_path / "x.npz"
    save_npz(p, some_images(), np.zeros(shape, np.uint8))
    _expect_data_error(p, "'mask'", str(list(shape)))


def test_error_float_label_map(tmp_path):
    p = tmp_path / "x.npz"
    save_npz(p, some_images(), some_labels().astype(np.float32))
    _expect_data_error(p, "label map")


def test_error_label_map_out_of_range(tmp_path):
    p = tmp_path / "x.npz"
    save_npz(p, some_images(), some_labels().astype(np.int32) + 300)
    _expect_data_error(p, "label map")


def test_masks_to_labels_deepmind_layout():
    lab = some_labels()
    m = one_hot(lab)[..., None]  # [N, K, H, W, 1]
    out = masks_to_labels(m)
    assert out.dtype == torch.uint8
    np.testing.assert_array_equal(out.numpy(), lab)


# ------------------------------------------------------------------------ crop and resize


def test_prepare_images_identity_at_model_size():
    imgs = some_images(h=8, w=8)
    out = prepare_images(imgs, None, 8)
    assert out.dtype == torch.uint8 and out.shape == (N, 3, 8, 8)
    assert torch.equal(out, torch.from_numpy(imgs).permute(0, 3, 1, 2))


def test_prepare_images_crop_offsets():
    imgs = some_images(h=10, w=9)
    out = prepare_images(imgs, [2, 3, 5, 5], 5)  # crop already at model size: no resize
    expected = torch.from_numpy(imgs[:, 2:7, 3:8]).permute(0, 3, 1, 2)
    assert torch.equal(out, expected)


def test_prepare_images_resize():
    imgs = np.zeros((2, 8, 8, 3), np.uint8)
    imgs[0] = 200  # constant images stay constant under bilinear resize
    imgs[1, :, :4] = 255  # left half white
    out = prepare_images(imgs, None, 4)
    assert out.shape == (2, 3, 4, 4) and out.dtype == torch.uint8
    assert (out[0] == 200).all()
    assert (out[1, :, :, :2] == 255).all() and (out[1, :, :, 2:] == 0).all()
    # 2x downsampling with align_corners=False and no antialias averages pixel pairs
    ramp = np.tile(np.arange(8, dtype=np.uint8)[None, :, None] * 10, (8, 1, 3))[None]
    down = prepare_images(ramp, None, 4)
    assert down[0, 0, 0].tolist() == [5, 25, 45, 65]


def test_prepare_images_crop_too_big():
    with pytest.raises(DataError, match="crop"):
        prepare_images(some_images(h=10, w=10), [2, 2, 9, 9], 9)


def test_prepare_images_rejects_float():
    with pytest.raises(DataError):
        prepare_images(some_images().astype(np.float32), None, 4)


def test_prepare_labels_crop_and_nearest_resize():
    lab = torch.from_numpy(some_labels(h=10, w=9))
    square = lab[:, :9, :9]
    assert torch.equal(prepare_labels(square, None, 9), square)  # identity at model size
    cropped = prepare_labels(lab, [2, 3, 5, 5], 5)
    assert torch.equal(cropped, lab[:, 2:7, 3:8])
    # nearest-neighbour 2x upsampling repeats each label in 2x2 blocks, no new label values
    up = prepare_labels(lab, [2, 3, 4, 4], 8)
    assert up.dtype == torch.uint8 and up.shape == (N, 8, 8)
    expected = lab[:, 2:6, 3:7].repeat_interleave(2, 1).repeat_interleave(2, 2)
    assert torch.equal(up, expected)


def test_centre_crop():
    assert centre_crop(35, 35, 32) == [2, 2, 32, 32]  # torchvision's rounding: rows and columns 2:34
    assert centre_crop(240, 320, 192) == [24, 64, 192, 192]


def test_to_scene_dataset_aligns_images_and_labels():
    imgs = some_images(h=10, w=10)
    lab = some_labels(h=10, w=10)
    ds = to_scene_dataset(imgs, one_hot(lab), [1, 2, 6, 6], 6)
    assert ds.images.shape == (N, 3, 6, 6) and ds.labels.shape == (N, 6, 6)
    assert torch.equal(ds.images, torch.from_numpy(imgs[:, 1:7, 2:8]).permute(0, 3, 1, 2))
    assert torch.equal(ds.labels, torch.from_numpy(lab[:, 1:7, 2:8]))


# ----------------------------------------------------------------------------- SceneDataset


def test_scene_dataset_batch_indexing():
    imgs = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    imgs[1] = 255
    imgs[2] = 127
    labels = torch.arange(4, dtype=torch.uint8)[:, None, None].expand(4, 2, 2).clone()
    ds = SceneDataset(imgs, labels)
    assert len(ds) == 4 and ds.resolution == 2
    batch = ds[torch.tensor([2, 0, 1])]
    x = batch["image"]
    assert x.dtype == torch.float32 and x.shape == (3, 3, 2, 2)
    assert x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(x[1], torch.full((3, 2, 2), -1.0))
    torch.testing.assert_close(x[2], torch.full((3, 2, 2), 1.0))
    torch.testing.assert_close(x[0], torch.full((3, 2, 2), 127 / 127.5 - 1))
    assert batch["labels"][:, 0, 0].tolist() == [2, 0, 1]
    # indexing does not modify the stored uint8 images
    assert imgs[1].eq(255).all() and ds.images.dtype == torch.uint8
    assert "labels" not in SceneDataset(imgs)[torch.tensor([0])]
    torch.testing.assert_close(to_model_range(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([-1.0, 1.0]))


def test_scene_dataset_checks():
    with pytest.raises(DataError):
        SceneDataset(torch.zeros(0, 3, 2, 2, dtype=torch.uint8))
    with pytest.raises(DataError):
        SceneDataset(torch.zeros(2, 3, 2, 2, dtype=torch.uint8), torch.zeros(3, 2, 2, dtype=torch.uint8))


# ---------------------------------------------------------------------------------- samplers


def _epoch(sampler) -> list[list[int]]:
    return [b.tolist() for b in sampler]


def test_shuffled_sampler_ranks_are_disjoint():
    n, bs = 23, 4
    ranks = [ShuffledBatchSampler(n, bs, seed=5, rank=r, world_size=2) for r in range(2)]
    epochs = [_epoch(s) for s in ranks]
    for s, batches in zip(ranks, epochs):
        assert len(batches) == len(s) == n // (bs * 2)
        assert all(len(b) == bs for b in batches)
    seen = [i for batches in epochs for b in batches for i in b]
    assert len(seen) == len(set(seen)) == 2 * 2 * bs  # disjoint, incomplete rest dropped
    assert set(seen) <= set(range(n))
    assert set(sum(epochs[0], [])).isdisjoint(sum(epochs[1], []))


def test_validation_data_with_fewer_items_than_processes_is_refused():
    """With DDP each rank validates its own shard; a rank without one would skip validation while the others wait
    for it (a hang), so such data is refused in one line."""
    from types import SimpleNamespace

    from slotlab.training.trainer import SceneDataModule

    images = torch.zeros(8, 3, 4, 4, dtype=torch.uint8)
    data = SceneDataModule(SceneDataset(images), SceneDataset(images[:1]), batch_size=2, seed=0)
    data.trainer = SimpleNamespace(global_rank=1, world_size=2)  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="validation data has 1 items, fewer than the 2 processes"):
        data.val_dataloader()
    data.val = SceneDataset(images[:2])
    assert [b.tolist() for b in data.val_dataloader().sampler] == [[0]]  # rank 1: a shard of one item


def test_shuffled_sampler_single_rank_covers_a_permutation():
    s = ShuffledBatchSampler(12, 3, seed=0)
    seen = sorted(i for b in s for i in b.tolist())
    assert seen == list(range(12))


def test_shuffled_sampler_reshuffles_per_epoch_and_repeats_per_seed():
    a = ShuffledBatchSampler(32, 4, seed=1)
    b = ShuffledBatchSampler(32, 4, seed=1)
    e0 = _epoch(a)
    assert e0 == _epoch(b)  # same seed, same order
    assert e0 == _epoch(a)  # iterating again without set_epoch repeats the epoch
    a.set_epoch(1)
    e1 = _epoch(a)
    assert e1 != e0 and sorted(sum(e1, [])) == sorted(sum(e0, []))
    b.set_epoch(1)
    assert _epoch(b) == e1
    assert _epoch(ShuffledBatchSampler(32, 4, seed=2)) != e0


def test_shuffled_sampler_too_few_items():
    with pytest.raises(DataError):
        ShuffledBatchSampler(7, 4, world_size=2)


def test_sequential_sampler():
    s = SequentialBatchSampler(7, 3)
    assert len(s) == 3
    assert _epoch(s) == [[0, 1, 2], [3, 4, 5], [6]]


# ---------------------------------------------------------------------------------- registry


def test_build_dataset_tetrominoes_disjoint_splits():
    cfg = DataConfig(dataset="tetrominoes", train_size=24, val_size=12, crop=[1, 1, 32, 32], resolution=32, seed=3)
    train = build_dataset(cfg, "train")
    val = build_dataset(cfg, "val")
    assert train.images.shape == (24, 3, 32, 32) and val.images.shape == (12, 3, 32, 32)
    assert train.labels.shape == (24, 32, 32) and val.labels.shape == (12, 32, 32)
    assert train.resolution == val.resolution == 32
    flat_t = train.images.flatten(1)
    flat_v = val.images.flatten(1)
    assert not (flat_t[:, None] == flat_v[None]).all(-1).any()  # no image in both splits
    # three pieces plus background per image (the crop removes only a 1-pixel black border on the top/left)
    assert all(len(torch.unique(lab)) <= 4 for lab in train.labels)
    # same config, same data
    assert torch.equal(build_dataset(cfg, "train").images, train.images)


def test_build_dataset_tetrominoes_resized():
    cfg = DataConfig(dataset="tetrominoes", train_size=4, val_size=2, crop=[1, 1, 32, 32], resolution=16)
    ds = build_dataset(cfg, "val")
    assert ds.images.shape == (2, 3, 16, 16) and ds.labels.shape == (2, 16, 16)
    batch = ds[torch.arange(2)]
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1


def test_build_dataset_npz_split(tmp_path):
    p = tmp_path / "d.npz"
    imgs = some_images(n=10, h=8, w=8)
    save_npz(p, imgs, some_labels(n=10, h=8, w=8))
    cfg = DataConfig(dataset="npz", path=str(p), val_size=100, resolution=8)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert len(train) == 8 and len(val) == 2  # val is capped at a fifth of the file
    assert torch.equal(val.images, torch.from_numpy(imgs[8:]).permute(0, 3, 1, 2))


def test_build_dataset_unknown_name():
    from slotlab.errors import ConfigError

    with pytest.raises(ConfigError, match="tetrominoes"):
        build_dataset(DataConfig(dataset="nope"), "train")


def test_shuffled_sampler_resumed_at_a_step_goes_on_after_the_batches_done():
    straight = ShuffledBatchSampler(24, 4, seed=3)  # 6 batches an epoch
    two_epochs = _epoch(straight)
    straight.set_epoch(1)
    two_epochs += _epoch(straight)
    for start in (0, 4, 6, 9):
        resumed = ShuffledBatchSampler(24, 4, seed=3, start_step=start)
        rest = []
        for epoch in range(start // 6, 2):  # Lightning sets the restored epoch, then the next
            resumed.set_epoch(epoch)
            rest += _epoch(resumed)
        assert rest == two_epochs[start:]


def test_masks_resize_with_nearest_exact_to_sit_on_their_images():
    """192 -> 128: every target pixel takes the source label nearest to its centre, the point the images'
    pixel-centred bilinear resize samples, (j + 0.5) * 1.5 - 0.5 in source pixel-centre units; PyTorch's legacy
    "nearest" takes floor(1.5 j) instead, a pixel off for a third of the columns."""
    from slotlab.data.transforms import prepare_labels

    labels = (torch.arange(192) % 256).to(torch.uint8).expand(1, 192, 192).clone()  # label = column index
    out = prepare_labels(labels, None, 128)[0, 0].long()
    j = torch.arange(128)
    sampled = (j + 0.5) * 1.5 - 0.5  # where the bilinear resize of the images samples column j
    assert torch.equal(out, sampled.round().long())  # the nearest source column to it (ties: none at this ratio)
    legacy = torch.nn.functional.interpolate(labels[:, None].float(), size=(128, 128), mode="nearest")[0, 0, 0]
    assert (legacy.long() != out).float().mean() > 0.3  # the old resize sat a pixel off on many columns
