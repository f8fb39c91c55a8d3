"""FID/KID against closed forms on Gaussians, any-extractor plumbing, and the FID Inception-v3 (random weights).

Nothing is downloaded: the weights loader is tested on files that the tests write, and offline errors on missing ones.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from slotlab.errors import DataError
from slotlab.metrics.fid import (
    FID_WEIGHTS_NAME,
    FID_WEIGHTS_URL,
    FeatureExtractor,
    FIDResult,
    InceptionFeatures,
    activation_statistics,
    compute_features,
    fid_and_kid,
    fid_from_features,
    frechet_distance,
    kernel_inception_distance,
    load_fid_inception,
)
from slotlab.modules.inception import FIDInceptionV3

# Pinned: torchvision's Inception-v3 without AuxLogits, 1008-way fc (the FID weights file's layout).
NUM_PARAMS = 23_850_960
NUM_PARAMS_NO_FC = 21_785_568  # the pool3 network actually used for features
NUM_STATE_ENTRIES = 566  # 94 conv+BN units x 6 entries + fc weight and bias


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def inception() -> FIDInceptionV3:
    torch.manual_seed(0)
    return FIDInceptionV3().eval()


def _gaussians(n: int, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.5, 2.0, d), rng.uniform(0.5, 2.0, d)
    closed = float(((mu1 - mu2) ** 2).sum() + (a + b - 2 * np.sqrt(a * b)).sum())
    x = mu1 + rng.normal(size=(n, d)) * np.sqrt(a)
    y = mu2 + rng.normal(size=(n, d)) * np.sqrt(b)
    return (mu1, a, mu2, b, closed), x, y


# ---------------------------------------------------------------- Frechet distance


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_distance_closed_form_on_exact_statistics(method):
    (mu1, a, mu2, b, closed), _, _ = _gaussians(0)
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method)
    assert got == pytest.approx(closed, abs=1e-6)
    assert frechet_distance(mu1, np.diag(a), mu1, np.diag(a), method=method) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_methods_agree_on_full_covariances():
    rng = np.random.default_rng(1)
    d = 24
    s1 = (m := rng.normal(size=(d, d))) @ m.T / d + 0.1 * np.eye(d)
    s2 = (m := rng.normal(size=(d, d))) @ m.T / d + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    eig = frechet_distance(mu1, s1, mu2, s2, method="eigh")
    assert eig == pytest.approx(frechet_distance(mu1, s1, mu2, s2, method="sqrtm"), rel=1e-9)
    assert eig == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-9)  # symmetric
    # torch inputs work the same
    assert frechet_distance(torch.tensor(mu1), torch.tensor(s1), torch.tensor(mu2), torch.tensor(s2)) == eig


def test_fid_from_samples_matches_closed_form():
    (_, _, _, _, closed), x, y = _gaussians(20_000)
    mu, sigma = activation_statistics(torch.from_numpy(x).float())
    assert mu.dtype == np.float64 and sigma.dtype == np.float64 and sigma.shape == (8, 8)
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float32).astype(np.float64), rowvar=False), atol=1e-10)
    # sampling noise is dominated by the mean term: sd ~ 2 |mu1 - mu2| sqrt((a + b) / n) ~ 0.1 here
    assert fid_from_features(x, y) == pytest.approx(closed, abs=0.5)


def test_fid_identical_and_symmetric():
    _, x, y = _gaussians(3000, d=16)
    assert fid_from_features(x, x) == pytest.approx(0.0, abs=1e-8)
    assert fid_from_features(x, y) == pytest.approx(fid_from_features(y, x), rel=1e-9)


def test_singular_and_non_psd_covariances_stay_finite():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(10, 32)), rng.normal(size=(12, 32)) + 0.5  # N < D: rank-deficient covariances
    for method in ("eigh", "sqrtm"):
        value = fid_from_features(x, y, method=method)
        assert math.isfinite(value) and value > 0
    assert fid_from_features(x, y) == pytest.approx(fid_from_features(x, y, method="sqrtm"), rel=1e-5)
    # round-off makes an exactly singular covariance slightly indefinite: still finite and >= 0
    d = 16
    v, _ = np.linalg.qr(rng.normal(size=(d, d)))
    w = np.concatenate([rng.uniform(0.5, 1.0, d - 4), [0.0, -1e-12, -1e-10, 1e-14]])
    s = v @ np.diag(w) @ v.T
    for method in ("eigh", "sqrtm"):
        value = frechet_distance(np.zeros(d), s, np.zeros(d), s, method=method)
        assert math.isfinite(value) and 0.0 <= value < 1e-4
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# ---------------------------------------------------------------- KID


def test_kid_same_distribution_near_zero_and_grows_with_shift():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(1500, 16)), rng.normal(size=(1500, 16))
    mean, std = kernel_inception_distance(x, y, subsets=20, subset_size=500)
    assert std > 0 and abs(mean) < 4 * std
    same_mean, _ = kernel_inception_distance(x, x, subsets=20, subset_size=500)
    assert abs(same_mean) < 4 * std
    means = [kernel_inception_distance(x, y + shift, subsets=20, subset_size=500)[0] for shift in (0.25, 0.5, 1.0)]
    assert 0 < means[0] < means[1] < means[2]
    assert means[0] > 4 * std


def test_kid_subset_size_clipped_and_seeded():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(40, 6)), rng.normal(size=(30, 6)) + 1.0
    first = kernel_inception_distance(x, y, subsets=5, subset_size=1000, seed=7)
    assert first == kernel_inception_distance(torch.from_numpy(x), torch.from_numpy(y), 5, 1000, 7)
    assert first != kernel_inception_distance(x, y, subsets=5, subset_size=1000, seed=8)
    # all rows in every subset (subset_size clipped to 30 < 40 for x; all of y): matches a direct unbiased MMD^2
    full, _ = kernel_inception_distance(x[:30], y, subsets=3, subset_size=1000)
    k = lambda a, b: (a @ b.T / 6 + 1) ** 3
    kxx, kyy, kxy = k(x[:30], x[:30]), k(y, y), k(x[:30], y)
    ref = (kxx.sum() - np.trace(kxx)) / (30 * 29) + (kyy.sum() - np.trace(kyy)) / (30 * 29) - 2 * kxy.mean()
    assert full == pytest.approx(ref, rel=1e-12)


# ---------------------------------------------------------------- any extractor, end to end


class TinyExtractor(nn.Module):
    """A fixed random conv + ReLU + global average pool: images [B, 3, H, W] -> [B, 8]."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(images)).mean(dim=(2, 3))


def test_compute_features_any_extractor_end_to_end():
    ext = TinyExtractor().eval()
    assert isinstance(ext, FeatureExtractor)
    g = torch.Generator().manual_seed(0)
    real = torch.rand(13, 3, 16, 16, generator=g)
    fake = (torch.rand(13, 3, 16, 16, generator=g) * 0.5).clamp(0, 1)
    # uneven batches, single images, (image, label) tuples and dicts are re-chunked into batches of 4
    items = [real[:5], real[5], (real[6:9], torch.zeros(3)), {"image": real[9:13]}]
    feats = compute_features(ext, items, batch_size=4)
    with torch.no_grad():
        ref = ext(real)
    assert feats.shape == (13, 8) and feats.dtype == torch.float32
    torch.testing.assert_close(feats, ref, atol=1e-6, rtol=1e-5)
    # model range [-1, 1] and uint8 inputs map to the same [0, 1] images
    torch.testing.assert_close(compute_features(ext, [real * 2 - 1], 6, value_range=(-1.0, 1.0)), ref,
                               atol=1e-6, rtol=1e-5)
    as_uint8 = (real * 255).round().to(torch.uint8)
    torch.testing.assert_close(compute_features(ext, [as_uint8], 13), ext(as_uint8.float() / 255).detach())

    f_fake = compute_features(ext, fake.split(5), batch_size=8)
    result = fid_and_kid(feats, f_fake, kid_subsets=10, kid_subset_size=100)
    assert isinstance(result, FIDResult)
    assert (result.num_real, result.num_fake, result.feature_dim) == (13, 13, 8)
    assert math.isfinite(result.fid) and result.fid > 0 and result.kid_mean > 0
    assert fid_and_kid(feats, feats, kid_subsets=5).fid == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="no images"):
        compute_features(ext, [], batch_size=4)


# ---------------------------------------------------------------- FID Inception-v3


def _expected_state_shapes() -> dict[str, tuple[int, ...]]:
    """Keys/shapes derived from the Inception-v3 layout: (unit name, in, out, kernel) for every conv+BN unit."""
    units = [("Conv2d_1a_3x3", 3, 32, (3, 3)), ("Conv2d_2a_3x3", 32, 32, (3, 3)), ("Conv2d_2b_3x3", 32, 64, (3, 3)),
             ("Conv2d_3b_1x1", 64, 80, (1, 1)), ("Conv2d_4a_3x3", 80, 192, (3, 3))]

    def block_a(name, cin, pool):
        return [(f"{name}.branch1x1", cin, 64, (1, 1)), (f"{name}.branch5x5_1", cin, 48, (1, 1)),
                (f"{name}.branch5x5_2", 48, 64, (5, 5)), (f"{name}.branch3x3dbl_1", cin, 64, (1, 1)),
                (f"{name}.branch3x3dbl_2", 64, 96, (3, 3)), (f"{name}.branch3x3dbl_3", 96, 96, (3, 3)),
                (f"{name}.branch_pool", cin, pool, (1, 1))]

    def block_c(name, c7):
        return [(f"{name}.branch1x1", 768, 192, (1, 1)), (f"{name}.branch7x7_1", 768, c7, (1, 1)),
                (f"{name}.branch7x7_2", c7, c7, (1, 7)), (f"{name}.branch7x7_3", c7, 192, (7, 1)),
                (f"{name}.branch7x7dbl_1", 768, c7, (1, 1)), (f"{name}.branch7x7dbl_2", c7, c7, (7, 1)),
                (f"{name}.branch7x7dbl_3", c7, c7, (1, 7)), (f"{name}.branch7x7dbl_4", c7, c7, (7, 1)),
                (f"{name}.branch7x7dbl_5", c7, 192, (1, 7)), (f"{name}.branch_pool", 768, 192, (1, 1))]

    def block_e(name, cin):
        return [(f"{name}.branch1x1", cin, 320, (1, 1)), (f"{name}.branch3x3_1", cin, 384, (1, 1)),
                (f"{name}.branch3x3_2a", 384, 384, (1, 3)), (f"{name}.branch3x3_2b", 384, 384, (3, 1)),
                (f"{name}.branch3x3dbl_1", cin, 448, (1, 1)), (f"{name}.branch3x3dbl_2", 448, 384, (3, 3)),
                (f"{name}.branch3x3dbl_3a", 384, 384, (1, 3)), (f"{name}.branch3x3dbl_3b", 384, 384, (3, 1)),
                (f"{name}.branch_pool", cin, 192, (1, 1))]

    units += block_a("Mixed_5b", 192, 32) + block_a("Mixed_5c", 256, 64) + block_a("Mixed_5d", 288, 64)
    units += [("Mixed_6a.branch3x3", 288, 384, (3, 3)), ("Mixed_6a.branch3x3dbl_1", 288, 64, (1, 1)),
              ("Mixed_6a.branch3x3dbl_2", 64, 96, (3, 3)), ("Mixed_6a.branch3x3dbl_3", 96, 96, (3, 3))]
    units += block_c("Mixed_6b", 128) + block_c("Mixed_6c", 160) + block_c("Mixed_6d", 160) + block_c("Mixed_6e", 192)
    units += [("Mixed_7a.branch3x3_1", 768, 192, (1, 1)), ("Mixed_7a.branch3x3_2", 192, 320, (3, 3)),
              ("Mixed_7a.branch7x7x3_1", 768, 192, (1, 1)), ("Mixed_7a.branch7x7x3_2", 192, 192, (1, 7)),
              ("Mixed_7a.branch7x7x3_3", 192, 192, (7, 1)), ("Mixed_7a.branch7x7x3_4", 192, 192, (3, 3))]
    units += block_e("Mixed_7b", 1280) + block_e("Mixed_7c", 2048)
    shapes: dict[str, tuple[int, ...]] = {}
    for name, cin, cout, (kh, kw) in units:
        shapes[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for buf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.bn.{buf}"] = (cout,)
        shapes[f"{name}.bn.num_batches_tracked"] = ()
    shapes["fc.weight"], shapes["fc.bias"] = (1008, 2048), (1008,)
    return shapes


def test_inception_state_dict_layout_and_parameter_count(inception):
    state = inception.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == _expected_state_shapes()
    assert len(state) == NUM_STATE_ENTRIES
    assert sum(p.numel() for p in inception.parameters()) == NUM_PARAMS
    assert sum(p.numel() for n, p in inception.named_parameters() if not n.startswith("fc.")) == NUM_PARAMS_NO_FC
    bns = [m for m in inception.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 94 and all(m.eps == 1e-3 for m in bns)


def test_inception_forward_shape_and_preprocessing(inception):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 40, 56, generator=g)
    with torch.no_grad():
        feats = inception(images)
        x = inception.preprocess(images)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all() and (feats >= 0).all()  # ReLU then mean
    assert x.shape == (2, 3, 299, 299) and x.min() >= -1 and x.max() <= 1
    ext = InceptionFeatures(inception)
    assert ext.feature_dim == 2048
    torch.testing.assert_close(compute_features(ext, [images[:1], images[1]], batch_size=2), feats)


def test_weights_loader_roundtrip_and_key_errors(inception, tmp_path):
    state = inception.state_dict()
    # old-style file without num_batches_tracked, as long as the names and shapes match
    path = tmp_path / "fid_weights.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    loaded = load_fid_inception(path, download=False)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for k, v in loaded.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, state[k]), k

    bad = dict(state)
    bad["Mixed_7c.branch_pool.conv.kernel"] = bad.pop("Mixed_7c.branch_pool.conv.weight")
    bad["fc.bias"] = torch.zeros(1000)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(DataError) as err:
        load_fid_inception(tmp_path / "bad.pth", download=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert "missing (1): Mixed_7c.branch_pool.conv.weight" in msg
    assert "unexpected (1): Mixed_7c.branch_pool.conv.kernel" in msg
    assert "wrong shape (1): fc.bias" in msg

    # SHA-256 checks: the standard name is checked against the full pinned digest, other names by their hex suffix
    (tmp_path / FID_WEIGHTS_NAME).write_bytes(b"not the weights")
    with pytest.raises(DataError, match="SHA-256"):
        load_fid_inception(tmp_path / FID_WEIGHTS_NAME)
    (tmp_path / "w-deadbeef.pth").write_bytes(b"not the weights")
    with pytest.raises(DataError, match="SHA-256"):
        load_fid_inception(tmp_path / "w-deadbeef.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot read as a PyTorch state dict"):
        load_fid_inception(tmp_path / "junk.pth")


def test_offline_error_is_one_line_with_url(tmp_path, monkeypatch):
    missing = tmp_path / "no" / "such.pth"
    with pytest.raises(DataError) as err:
        load_fid_inception(str(missing), download=False)
    msg = str(err.value)
    assert "\n" not in msg and FID_WEIGHTS_URL in msg and str(missing) in msg and "--inception PATH" in msg
    # cache lookup (no path): names the cache file; the default cache folder follows $SLOTLAB_CACHE
    with pytest.raises(DataError) as err:
        load_fid_inception(download=False, cache_dir=tmp_path / "cache")
    assert str(tmp_path / "cache" / FID_WEIGHTS_NAME) in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setenv("SLOTLAB_CACHE", str(tmp_path / "env_cache"))
    with pytest.raises(DataError, match="env_cache"):
        InceptionFeatures(download=False)


def test_fid_specific_pool_branches(inception):
    """A/C/E_1 average without counting the zero padding; E_2 (Mixed_7c) max-pools its pool branch."""
    cases = [(inception.Mixed_5b, 192, 35, 32), (inception.Mixed_6b, 768, 17, 192), (inception.Mixed_7b, 1280, 8, 192)]
    with torch.no_grad():
        for block, cin, size, pool_channels in cases:
            out = block(torch.full((1, cin, size, size), 0.7))  # constant input: the pool branch stays constant
            branch = out[:, -pool_channels:]
            torch.testing.assert_close(branch, branch[:, :, :1, :1].expand_as(branch))
        x = torch.randn(1, 2048, 8, 8, generator=torch.Generator().manual_seed(0))
        c = inception.Mixed_7c
        torch.testing.assert_close(c(x)[:, -192:], c.branch_pool(torch.nn.functional.max_pool2d(x, 3, 1, 1)))
        assert not torch.allclose(c(x)[:, -192:], c.branch_pool(torch.nn.functional.avg_pool2d(x, 3, 1, 1)))
