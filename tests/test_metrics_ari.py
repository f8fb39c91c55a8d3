"""Tests for slotlab.metrics.ari against sklearn.metrics.adjusted_rand_score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from slotlab.data.transforms import masks_to_labels
from slotlab.metrics.ari import (
    adjusted_rand_index,
    ari,
    ari_score,
    fg_ari,
    mean_ignoring_nan,
    to_labels,
)

TOL = 1e-10


def _sk_per_image(true: torch.Tensor, pred: torch.Tensor, foreground_only: bool) -> np.ndarray:
    """Reference: sklearn per image; NaN where no pixels are scored."""
    t = true.reshape(true.shape[0], -1).cpu().numpy()
    p = pred.reshape(pred.shape[0], -1).cpu().numpy()
    out = []
    for ti, pi in zip(t, p):
        if foreground_only:
            keep = ti != 0
            ti, pi = ti[keep], pi[keep]
        out.append(math.nan if ti.size == 0 else adjusted_rand_score(ti, pi))
    return np.asarray(out, dtype=np.float64)


def _assert_matches(ours: torch.Tensor, ref: np.ndarray) -> None:
    ours_np = ours.cpu().numpy()
    assert ours.dtype == torch.float64
    assert ours_np.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(ours_np), np.isnan(ref))
    np.testing.assert_allclose(ours_np, ref, rtol=0, atol=TOL, equal_nan=True)


# --------------------------------------------------------------------------- random


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(
    "shape,k_true,k_pred",
    [((8, 16, 16), 5, 7), ((4, 32, 24), 11, 11), ((6, 7, 9), 3, 11), ((5, 50), 2, 4), ((3, 5, 5), 11, 2)],
)
@pytest.mark.parametrize("foreground_only", [False, True])
def test_random_matches_sklearn(seed, shape, k_true, k_pred, foreground_only):
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(0, k_true, shape, generator=g)
    # correlated predictions: copy truth then corrupt a fraction of pixels,
    # so scores are spread over (-, 1] instead of all close to 0
    pred = torch.remainder(true * 3 + 1, k_pred)
    noise = torch.rand(shape, generator=g) < 0.3
    pred = torch.where(noise, torch.randint(0, k_pred, shape, generator=g), pred)
    ours = adjusted_rand_index(true, pred, ignore_background=foreground_only)
    _assert_matches(ours, _sk_per_image(true, pred, foreground_only))


@pytest.mark.parametrize("seed", [10, 11])
@pytest.mark.parametrize("foreground_only", [False, True])
def test_random_uncorrelated_and_explicit_counts(seed, foreground_only):
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(0, 6, (7, 12, 12), generator=g)
    pred = torch.randint(0, 9, (7, 12, 12), generator=g)
    ref = _sk_per_image(true, pred, foreground_only)
    _assert_matches(adjusted_rand_index(true, pred, ignore_background=foreground_only), ref)
    # explicit (larger) class counts give the same answer as inferred ones
    _assert_matches(
        adjusted_rand_index(true, pred, ignore_background=foreground_only, num_true=8, num_pred=13),
        ref,
    )


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_integer_dtypes(dtype):
    g = torch.Generator().manual_seed(5)
    true = torch.randint(0, 5, (3, 10, 10), generator=g)
    pred = torch.randint(0, 4, (3, 10, 10), generator=g)
    ref = adjusted_rand_index(true, pred, ignore_background=True)
    out = adjusted_rand_index(true.to(dtype), pred.to(dtype), ignore_background=True)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)


def test_sparse_label_values():
    # label values need not be contiguous: {0, 3, 40} and {7, 100}
    g = torch.Generator().manual_seed(3)
    true = torch.tensor([0, 3, 40])[torch.randint(0, 3, (4, 9, 9), generator=g)]
    pred = torch.tensor([7, 100])[torch.randint(0, 2, (4, 9, 9), generator=g)]
    for fg in (False, True):
        _assert_matches(adjusted_rand_index(true, pred, ignore_background=fg), _sk_per_image(true, pred, fg))


# --------------------------------------------------------------------------- degenerate


def _one(x):
    return x.unsqueeze(0)


def test_identical_labellings_is_one():
    true = torch.randint(0, 6, (3, 8, 8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(adjusted_rand_index(true, true), torch.ones(3, dtype=torch.float64))
    assert torch.equal(
        adjusted_rand_index(true, true, ignore_background=True), torch.ones(3, dtype=torch.float64)
    )


def test_permuted_labels_is_one():
    true = torch.randint(0, 6, (3, 8, 8), generator=torch.Generator().manual_seed(1))
    perm = torch.tensor([4, 0, 5, 2, 1, 3])
    pred = perm[true]
    out = adjusted_rand_index(true, pred)
    torch.testing.assert_close(out, torch.ones(3, dtype=torch.float64), rtol=0, atol=TOL)
    out_fg = adjusted_rand_index(true, pred, ignore_background=True)
    torch.testing.assert_close(out_fg, torch.ones(3, dtype=torch.float64), rtol=0, atol=TOL)


def test_single_foreground_object_one_cluster_fg_ari_is_one():
    true = torch.zeros(8, 8, dtype=torch.long)
    true[2:5, 3:7] = 1  # one object on background
    pred = torch.zeros(8, 8, dtype=torch.long)  # everything in one slot
    fg = adjusted_rand_index(_one(true), _one(pred), ignore_background=True)
    assert fg.item() == 1.0  # zero denominator -> 1.0 (sklearn convention)
    assert adjusted_rand_score(true[true != 0].numpy(), pred[true != 0].numpy()) == 1.0
    # full-image ARI is not 1 (background and object are merged): equals sklearn
    full = adjusted_rand_index(_one(true), _one(pred))
    assert full.item() == pytest.approx(adjusted_rand_score(true.flatten(), pred.flatten()), abs=TOL)
    assert full.item() < 1.0


def test_one_cluster_in_both_is_one():
    true = torch.full((2, 6, 6), 3)
    pred = torch.full((2, 6, 6), 1)
    assert torch.equal(adjusted_rand_index(true, pred), torch.ones(2, dtype=torch.float64))
    assert adjusted_rand_score(true[0].flatten(), pred[0].flatten()) == 1.0
    # all-singletons in both is also full agreement
    t = torch.arange(9).view(1, 9)
    p = torch.arange(9).flip(0).view(1, 9)
    assert adjusted_rand_index(t, p).item() == 1.0 == adjusted_rand_score(t[0], p[0])


def test_no_foreground_is_nan_and_skipped():
    true = torch.zeros(3, 5, 5, dtype=torch.long)
    true[1, :2, :2] = 1
    true[1, 3:, 3:] = 2
    true[2, 0, :] = 4
    pred = torch.randint(0, 3, (3, 5, 5), generator=torch.Generator().manual_seed(2))
    fg = adjusted_rand_index(true, pred, ignore_background=True)
    assert math.isnan(fg[0].item())
    assert not torch.isnan(fg[1:]).any()
    _assert_matches(fg, _sk_per_image(true, pred, True))
    assert mean_ignoring_nan(fg) == pytest.approx(fg[1:].mean().item(), abs=1e-15)
    # full ARI is still defined for the image without foreground
    assert not torch.isnan(adjusted_rand_index(true, pred)).any()


def test_mean_ignoring_nan():
    assert math.isnan(mean_ignoring_nan(torch.tensor([math.nan, math.nan], dtype=torch.float64)))
    assert math.isnan(mean_ignoring_nan(torch.zeros(0, dtype=torch.float64)))
    assert mean_ignoring_nan(torch.tensor([0.5, math.nan, 1.0])) == pytest.approx(0.75)
    assert isinstance(mean_ignoring_nan(torch.tensor([0.2])), float)


def test_single_pixel_image():
    true = torch.tensor([[[2]]])
    pred = torch.tensor([[[0]]])
    assert adjusted_rand_index(true, pred).item() == 1.0 == adjusted_rand_score([2], [0])
    assert adjusted_rand_index(true, pred, ignore_background=True).item() == 1.0
    assert math.isnan(adjusted_rand_index(torch.tensor([[[0]]]), pred, ignore_background=True).item())


def test_split_object_below_one_matches_sklearn():
    true = torch.zeros(8, 8, dtype=torch.long)
    true[1:7, 1:7] = 1
    pred = torch.zeros(8, 8, dtype=torch.long)
    pred[1:7, 1:4] = 1  # object split into two slots
    pred[1:7, 4:7] = 2
    for fg in (False, True):
        out = adjusted_rand_index(_one(true), _one(pred), ignore_background=fg).item()
        keep = (true != 0) if fg else torch.ones_like(true, dtype=torch.bool)
        ref = adjusted_rand_score(true[keep].numpy(), pred[keep].numpy())
        assert out < 1.0
        assert out == pytest.approx(ref, abs=TOL)


def test_empty_batch():
    out = adjusted_rand_index(torch.zeros(0, 4, 4, dtype=torch.long), torch.zeros(0, 4, 4, dtype=torch.long))
    assert out.shape == (0,) and out.dtype == torch.float64


# --------------------------------------------------------------------------- masks input


def test_masks_one_hot_and_soft_equal_label_maps():
    g = torch.Generator().manual_seed(7)
    B, K_true, K_pred, H, W = 4, 5, 7, 12, 10
    true = torch.randint(0, K_true, (B, H, W), generator=g)
    pred = torch.randint(0, K_pred, (B, H, W), generator=g)
    true_onehot = torch.nn.functional.one_hot(true, K_true).permute(0, 3, 1, 2)  # int64 [B,K,H,W]
    logits = torch.randn(B, K_pred, H, W, generator=g)
    soft = logits.softmax(dim=1)
    soft_labels = soft.argmax(dim=1)

    assert torch.equal(to_labels(true_onehot), true)
    assert torch.equal(to_labels(true_onehot.bool()), true)
    assert torch.equal(to_labels(true_onehot.to(torch.uint8)), true)
    assert torch.equal(to_labels(true_onehot.float()), true)
    assert torch.equal(to_labels(true), true)  # label maps pass through
    # ties (and all-zero pixels): the first maximum wins, as numpy's argmax; also for the dataset's masks_to_labels
    tied = (torch.rand(B, 5, H, W, generator=g) < 0.4).to(torch.uint8)
    first = torch.from_numpy(tied.numpy().argmax(axis=1))
    assert torch.equal(to_labels(tied), first) and torch.equal(to_labels(tied.float()), first)
    assert torch.equal(masks_to_labels(tied), first.to(torch.uint8))
    assert torch.equal(masks_to_labels(tied.bool()[..., None]), first.to(torch.uint8))  # DeepMind's [N, K, H, W, 1]

    for fg in (False, True):
        ref = adjusted_rand_index(true, soft_labels, ignore_background=fg)
        for t in (true, true_onehot, true_onehot.bool(), true_onehot.float()):
            torch.testing.assert_close(ari_score(t, soft, foreground_only=fg), ref, rtol=0, atol=0, equal_nan=True)
        _assert_matches(ref, _sk_per_image(true, soft_labels, fg))
    torch.testing.assert_close(ari(true_onehot, soft), adjusted_rand_index(true, soft_labels), rtol=0, atol=0)
    torch.testing.assert_close(
        fg_ari(true_onehot, soft), adjusted_rand_index(true, soft_labels, ignore_background=True), rtol=0, atol=0
    )
    # one-hot prediction masks equal label-map predictions
    pred_onehot = torch.nn.functional.one_hot(pred, K_pred).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(fg_ari(true, pred_onehot), fg_ari(true, pred), rtol=0, atol=0)


def test_to_labels_rejects_bad_input():
    with pytest.raises(ValueError):
        to_labels(torch.zeros(2, 3, 4, 5, 6))
    with pytest.raises(TypeError):
        to_labels(torch.zeros(2, 4, 4))  # float label map is ambiguous


# --------------------------------------------------------------------------- batching / validation


def test_batched_equals_per_image_loop():
    g = torch.Generator().manual_seed(9)
    true = torch.randint(0, 8, (6, 14, 14), generator=g)
    pred = torch.randint(0, 5, (6, 14, 14), generator=g)
    true[2] = 0  # one image without foreground
    for fg in (False, True):
        batched = adjusted_rand_index(true, pred, ignore_background=fg)
        looped = torch.cat([adjusted_rand_index(true[i : i + 1], pred[i : i + 1], ignore_background=fg) for i in range(6)])
        torch.testing.assert_close(batched, looped, rtol=0, atol=TOL, equal_nan=True)
    # [B, H, W] and flattened [B, N] give identical results
    torch.testing.assert_close(
        adjusted_rand_index(true, pred), adjusted_rand_index(true.flatten(1), pred.flatten(1)), rtol=0, atol=0
    )


def test_output_dtype_and_shape():
    true = torch.randint(0, 3, (5, 4, 4), dtype=torch.int32)
    pred = torch.randint(0, 3, (5, 4, 4), dtype=torch.int16)
    out = adjusted_rand_index(true, pred)
    assert out.dtype == torch.float64 and out.shape == (5,)
    assert fg_ari(true, pred).dtype == torch.float64


def test_validation_errors():
    a = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError):
        adjusted_rand_index(a, torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(TypeError):
        adjusted_rand_index(a.float(), a)
    with pytest.raises(ValueError):
        adjusted_rand_index(a - 1, a)
    with pytest.raises(ValueError):
        adjusted_rand_index(a + 3, a, num_true=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(4)
    true = torch.randint(0, 7, (5, 16, 16), generator=g)
    pred = torch.randint(0, 9, (5, 16, 16), generator=g)
    for fg in (False, True):
        cpu = adjusted_rand_index(true, pred, ignore_background=fg)
        gpu = adjusted_rand_index(true.cuda(), pred.cuda(), ignore_background=fg)
        assert gpu.is_cuda and gpu.dtype == torch.float64
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=TOL, equal_nan=True)


def test_rejects_unbatched_labels():
    with pytest.raises(ValueError):
        adjusted_rand_index(torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.long))
