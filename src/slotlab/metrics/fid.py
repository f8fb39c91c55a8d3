"""Frechet Inception Distance (FID) and Kernel Inception Distance (KID), computed by our own code.

Features come from any :class:`FeatureExtractor`: a callable that maps images ``[B, 3, H, W]`` (float, values in
[0, 1]) to features ``[B, D]``. :class:`InceptionFeatures` is the standard one (the FID Inception-v3, 2048-d pool3
features, :mod:`slotlab.modules.inception`); any ``nn.Module`` with that signature works too (scores are then only
comparable with scores from the same extractor).

* :func:`compute_features` -- run an extractor over an iterable of images/batches.
* :func:`activation_statistics` -- features ``[N, D]`` -> ``(mu [D], sigma [D, D])``, float64, sample covariance.
* :func:`frechet_distance` -- ``||mu1 - mu2||^2 + Tr(s1 + s2 - 2 (s1 s2)^(1/2))``, float64.
* :func:`kernel_inception_distance` -- unbiased MMD^2 with the kernel ``(x.y / D + 1)^3`` over random subsets.
* :func:`fid_from_features`, :func:`fid_and_kid` (-> :class:`FIDResult`).

``Tr((s1 s2)^(1/2))`` is computed by default through eigenvalues: with ``r = s1^(1/2)`` (symmetric PSD root),
``s1 s2`` is similar to ``r s2 r``, which is symmetric PSD, so the trace is the sum of the square roots of its
(clipped non-negative) eigenvalues. This is real and finite even for singular covariances (fewer samples than
dimensions). ``method="sqrtm"`` follows pytorch-fid instead (``scipy.linalg.sqrtm`` of ``s1 s2``, retried with
``eps * I`` added to both covariances when the result is not finite, imaginary parts dropped).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from slotlab.errors import DataError
from slotlab.io import fetch
from slotlab.modules.inception import FIDInceptionV3

__all__ = [
    "FIDResult",
    "FeatureExtractor",
    "InceptionFeatures",
    "activation_statistics",
    "compute_features",
    "fid_and_kid",
    "fid_from_features",
    "frechet_distance",
    "kernel_inception_distance",
    "polynomial_mmd2",
]

ArrayLike = Tensor | np.ndarray


@runtime_checkable
class FeatureExtractor(Protocol):
    """Images ``[B, 3, H, W]``, float in [0, 1] -> features ``[B, D]`` (any float dtype, any device)."""

    def __call__(self, images: Tensor) -> Tensor: ...


class InceptionFeatures:
    """The standard FID extractor: :class:`~slotlab.modules.inception.FIDInceptionV3` pool3 features (D = 2048).

    Pass a ready ``model`` (e.g. random weights in tests), or let it load the standard weights with
    :func:`load_fid_inception` (``path``, ``download``, ``cache_dir``).
    """

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        *,
        path: str | None = None,
        download: bool = True,
        cache_dir: str | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if model is None:
            model = load_fid_inception(path, download=download, cache_dir=cache_dir)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval().requires_grad_(False)

    @property
    def feature_dim(self) -> int:
        return int(getattr(self.model, "feature_dim", 2048))

    @torch.inference_mode()
    def __call__(self, images: Tensor) -> Tensor:
        return self.model(images.to(self.device, torch.float32))


def _to_numpy64(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _features_2d(x: ArrayLike, name: str) -> np.ndarray:
    a = _to_numpy64(x)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected features [N, D], got shape {a.shape}")
    return a


def _images_of(item) -> Tensor:
    """A batch [B, 3, H, W] (or one image [3, H, W]) from an iterable's item: tensor, (image, ...) or {"image"}."""
    if isinstance(item, dict):
        item = item["image"]
    elif isinstance(item, (tuple, list)):
        item = item[0]
    x = torch.as_tensor(item)
    return x.unsqueeze(0) if x.ndim == 3 else x


def compute_features(
    extractor: FeatureExtractor,
    images: Iterable,
    batch_size: int = 50,
    *,
    value_range: tuple[float, float] = (0.0, 1.0),
    progress: bool = False,
    total: int | None = None,
) -> Tensor:
    """Features ``[N, D]`` (float32, CPU) of every image in ``images``, run in batches of ``batch_size``.

    ``images`` yields tensors ``[B, 3, H, W]`` or single images ``[3, H, W]`` (or ``(image, ...)`` tuples or dicts
    with an ``"image"`` key, as data loaders do), re-chunked to ``batch_size``. Float images in ``value_range``
    (e.g. ``(-1, 1)`` for slotlab's model range) are mapped to [0, 1] and clamped; uint8 images are divided by 255.
    ``total`` (number of images) only sizes the optional tqdm bar.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lo, hi = value_range
    out: list[Tensor] = []
    pending: list[Tensor] = []
    count = 0

    def flush(chunk: Tensor) -> None:
        with torch.inference_mode():
            feats = extractor(chunk)
        if feats.ndim != 2 or feats.shape[0] != chunk.shape[0]:
            raise ValueError(f"extractor returned {tuple(feats.shape)} for {chunk.shape[0]} images; expected [B, D]")
        out.append(feats.detach().to("cpu", torch.float32))

    with tqdm(total=total, unit="img", desc="features", disable=not progress, leave=False) as bar:
        for item in images:
            x = _images_of(item)
            if x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"expected images [B, 3, H, W] or [3, H, W], got {tuple(x.shape)}")
            x = x.float() / 255.0 if x.dtype == torch.uint8 else ((x.float() - lo) / (hi - lo)).clamp_(0.0, 1.0)
            pending.append(x)
            count += x.shape[0]
            if count >= batch_size:
                cat = torch.cat(pending)
                full = count - count % batch_size
                for start in range(0, full, batch_size):
                    flush(cat[start : start + batch_size])
                    bar.update(batch_size)
                pending, count = [cat[full:]], count - full
        if count:
            flush(torch.cat(pending))
            bar.update(count)
    if not out:
        raise ValueError("compute_features: no images")
    return torch.cat(out)


def activation_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and sample covariance ``[D, D]`` (``N - 1`` normalisation, as numpy's ``cov``), float64."""
    f = _features_2d(features, "features")
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {f.shape[0]}")
    mu = f.mean(axis=0)
    centred = f - mu
    sigma = centred.T @ centred / (f.shape[0] - 1)
    return mu, sigma


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a (nearly) PSD symmetric matrix; negative eigenvalues (round-off) clipped to 0."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray, method: str, eps: float) -> float:
    if method == "eigh":
        r = _psd_sqrt(s1)
        m = r @ s2 @ r
        w = np.linalg.eigvalsh((m + m.T) / 2)
        return float(np.sqrt(np.clip(w, 0.0, None)).sum())
    if method == "sqrtm":
        from scipy import linalg

        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(s1.shape[0]) * eps
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
        return float(np.real(np.trace(covmean)))
    raise ValueError(f"method must be 'eigh' or 'sqrtm', got {method!r}")


def frechet_distance(
    mu1: ArrayLike,
    sigma1: ArrayLike,
    mu2: ArrayLike,
    sigma2: ArrayLike,
    method: Literal["eigh", "sqrtm"] = "eigh",
    eps: float = 1e-6,
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64 (see the module doc for ``method``).

    Symmetric PSD covariances are expected; round-off negatives are clipped. The result is clamped at 0.
    """
    m1, m2 = _to_numpy64(mu1).reshape(-1), _to_numpy64(mu2).reshape(-1)
    s1, s2 = np.atleast_2d(_to_numpy64(sigma1)), np.atleast_2d(_to_numpy64(sigma2))
    d = m1.shape[0]
    if m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"shape mismatch: mu1 {m1.shape}, sigma1 {s1.shape}, mu2 {m2.shape}, sigma2 {s2.shape}")
    diff = m1 - m2
    tr_covmean = _trace_sqrt_product(s1, s2, method, eps)
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    if not math.isfinite(value):
        raise ValueError("frechet_distance: non-finite result (NaN or inf in the statistics?)")
    return max(value, 0.0)


def fid_from_features(features1: ArrayLike, features2: ArrayLike, method: Literal["eigh", "sqrtm"] = "eigh") -> float:
    """FID between two feature sets ``[N, D]`` and ``[M, D]``."""
    return frechet_distance(*activation_statistics(features1), *activation_statistics(features2), method=method)


def polynomial_mmd2(
    x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> float:
    """Unbiased MMD^2 between samples ``x [m, D]`` and ``y [n, D]`` with ``k(a, b) = (gamma a.b + coef0)^degree``.

    ``gamma`` defaults to ``1 / D``. Diagonal terms of the within-set kernel matrices are left out (unbiased).
    """
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"need at least 2 samples per set, got {m} and {n}")
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    k_xx = (x @ x.T * gamma + coef0) ** degree
    k_yy = (y @ y.T * gamma + coef0) ** degree
    k_xy = (x @ y.T * gamma + coef0) ** degree
    xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * k_xy.mean())


def kernel_inception_distance(
    features1: ArrayLike, features2: ArrayLike, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: mean and (population) standard deviation of the unbiased polynomial MMD^2 over random subsets.

    Each of the ``subsets`` draws takes ``min(subset_size, N, M)`` rows of each set without replacement
    (numpy ``default_rng(seed)``). Kernel ``(x.y / D + 1)^3``, float64. Not clamped: it can be slightly negative.
    """
    f1, f2 = _features_2d(features1, "features1"), _features_2d(features2, "features2")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature dims differ: {f1.shape[1]} vs {f2.shape[1]}")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    m = min(subset_size, f1.shape[0], f2.shape[0])
    rng = np.random.default_rng(seed)
    scores = np.empty(subsets)
    for i in range(subsets):
        a = f1[rng.choice(f1.shape[0], m, replace=False)]
        b = f2[rng.choice(f2.shape[0], m, replace=False)]
        scores[i] = polynomial_mmd2(a, b)
    return float(scores.mean()), float(scores.std())


@dataclass(frozen=True)
class FIDResult:
    """FID and KID (mean, std over subsets) between a reference (real) and a generated feature set."""

    fid: float
    kid_mean: float
    kid_std: float
    num_real: int
    num_fake: int
    feature_dim: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def fid_and_kid(
    real: ArrayLike, fake: ArrayLike, kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0
) -> FIDResult:
    """FID and KID between feature sets ``real [N, D]`` and ``fake [M, D]``."""
    r, f = _features_2d(real, "real"), _features_2d(fake, "fake")
    kid_mean, kid_std = kernel_inception_distance(r, f, kid_subsets, kid_subset_size, seed)
    return FIDResult(fid_from_features(r, f), kid_mean, kid_std, r.shape[0], f.shape[0], r.shape[1])


# ------------------------------------------------------------------------------------ the FID Inception weights

FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
# torch.hub naming convention: the hex group before the extension is a prefix of the file's SHA-256. The full digest
# (95,628,359 bytes) is the one several independent projects pin for this exact release file.
FID_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")


def default_cache_dir() -> Path:
    """``$SLOTLAB_CACHE`` if set, else ``~/.cache/slotlab``."""
    return Path(os.environ.get("SLOTLAB_CACHE") or Path.home() / ".cache" / "slotlab").expanduser()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _check_hash(path: Path) -> None:
    """Full digest for the known file name; otherwise the torch.hub ``name-<sha256 prefix>.ext`` convention."""
    expected = FID_WEIGHTS_SHA256 if path.name == FID_WEIGHTS_NAME else None
    if expected is None and (m := _HASH_IN_NAME.search(path.name)):
        expected = m.group(1)
    if expected is None:
        return
    digest = _sha256(path)
    if not digest.startswith(expected):
        raise DataError(
            f"{path}: SHA-256 {digest[:16]}... does not match {expected[:16]}...; the file is corrupt or "
            f"not the FID weights, delete it and fetch {FID_WEIGHTS_URL} again"
        )


def _missing_message(dest: Path) -> str:
    return (
        f"FID Inception weights not found at {dest}: download {FID_WEIGHTS_URL} and put it at {dest} "
        f"(or pass --inception PATH)"
    )


def _load_state_dict(model: FIDInceptionV3, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling/format failure means a bad file
        reason = (str(e).strip().splitlines() or [""])[0]
        raise DataError(f"{path}: cannot read as a PyTorch state dict ({type(e).__name__}: {reason})") from None
    if not isinstance(state, dict):
        raise DataError(f"{path}: expected a state dict, found {type(state).__name__}")
    ours = model.state_dict()
    # BatchNorm fills a missing num_batches_tracked itself (old state dicts lack it); compare the rest.
    expected = {k for k in ours if not k.endswith("num_batches_tracked")}
    found = {k for k in state if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    shapes = sorted(k for k in expected & found if tuple(state[k].shape) != tuple(ours[k].shape))
    if missing or unexpected or shapes:
        parts = [
            f"{name} ({len(keys)}): {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
            if keys
        ]
        raise DataError(f"{path}: not the FID Inception state dict; " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_fid_inception(
    path: str | os.PathLike | None = None,
    download: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> FIDInceptionV3:
    """The FID Inception-v3 with the standard weights, in ``eval()`` mode, gradients off.

    ``path``: a local weights file (must exist). Without it the file is looked up as ``FID_WEIGHTS_NAME`` in
    ``cache_dir`` (default :func:`default_cache_dir`) and downloaded there from ``FID_WEIGHTS_URL`` when
    ``download`` is true. The SHA-256 is checked, and only tensors are unpickled (``weights_only=True``).
    Raises :class:`slotlab.errors.DataError` (one line naming the URL and where to put the file) otherwise.
    """
    downloaded = False
    if path is not None:
        dest = Path(path).expanduser()
        if not dest.is_file():
            raise DataError(_missing_message(dest))
    else:
        dest = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        dest = dest / FID_WEIGHTS_NAME
        if not dest.is_file():
            if not download:
                raise DataError(_missing_message(dest))
            try:
                fetch(FID_WEIGHTS_URL, dest, progress=progress)
            except DataError as e:
                raise DataError(f"{_missing_message(dest)}; the automatic download failed") from e
            downloaded = True
    try:
        _check_hash(dest)
    except DataError:
        if downloaded:
            dest.unlink(missing_ok=True)  # a bad download must not stick in the cache
        raise
    model = FIDInceptionV3()
    _load_state_dict(model, dest)
    return model.eval().requires_grad_(False)
