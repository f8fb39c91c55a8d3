"""The FID variant of Inception-v3 (pool3 features) and an offline-safe loader for its standard weights.

The network is the one that pytorch-fid ports from the TensorFlow graph used by the original FID code (TTUR):
torchvision's Inception-v3 layout (``Conv2d_1a_3x3`` ... ``Mixed_7c``, no auxiliary head, a 1008-way ``fc``) with
the FID-specific blocks:

* ``Mixed_5b..5d`` (A), ``Mixed_6b..6e`` (C) and ``Mixed_7b`` (E_1): the 3x3 average pool of the pool branch does
  not count the zero padding (``count_include_pad=False``);
* ``Mixed_7c`` (E_2): the pool branch uses a 3x3 **max** pool.

:class:`FIDInceptionV3` resizes its input to 299x299 (bilinear, ``align_corners=False``), maps [0, 1] to [-1, 1]
and returns the 2048-d global average of ``Mixed_7c`` (TensorFlow's ``pool3``). ``fc`` is kept only so that the
published state dict loads strictly; :meth:`FIDInceptionV3.logits` uses it.

:func:`load_fid_inception` loads ``pt_inception-2015-12-05-6726825d.pth`` (tensors only, ``weights_only=True``) from a
given path or from a cache folder, downloading it there when allowed, and checks its SHA-256.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotlab.errors import DataError

__all__ = [
    "FID_WEIGHTS_NAME",
    "FID_WEIGHTS_SHA256",
    "FID_WEIGHTS_URL",
    "FIDInceptionV3",
    "default_cache_dir",
    "load_fid_inception",
]

FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
# torch.hub naming convention: the hex group before the extension is a prefix of the file's SHA-256. The full digest
# (95,628,359 bytes) is the one several independent projects pin for this exact release file.
FID_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, as in the TensorFlow graph) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_no_pad(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool(no pad count)-1x1; 224 + ``pool_features`` channels."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_no_pad(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2; 384 + 96 + in channels."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class FIDInceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (``channels_7x7`` inner width); 768 channels out."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool_no_pad(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2; 320 + 192 + in channels."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class FIDInceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 outputs; 2048 channels out. ``max_pool`` selects E_2 (``Mixed_7c``)."""

    def __init__(self, in_channels: int, max_pool: bool = False) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool_no_pad(x)
        bp = self.branch_pool(pooled)
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 as used for FID: images [B, 3, H, W] in [0, 1] -> pool3 features [B, 2048].

    Parameter names follow torchvision's ``Inception3`` (without ``AuxLogits``), which is what the published
    ``pt_inception-2015-12-05-6726825d.pth`` state dict uses. Put the module in ``eval()`` mode (BatchNorm running
    statistics); :func:`load_fid_inception` does.
    """

    input_size = 299
    feature_dim = 2048

    def __init__(self, num_classes: int = 1008) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, num_classes)  # unused by forward(); present so the weights file loads strictly

    def preprocess(self, images: Tensor) -> Tensor:
        """[0, 1] images of any size -> 299x299 (bilinear, ``align_corners=False``) in [-1, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
        x = images.float()
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return 2.0 * x - 1.0

    def forward(self, images: Tensor) -> Tensor:
        x = self.preprocess(images)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))

    def logits(self, images: Tensor) -> Tensor:
        """The 1008-way classifier on the pool3 features (index 0 is TensorFlow's background class)."""
        return self.fc(self.forward(images))


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
        raise DataError(f"{path}: SHA-256 {digest[:16]}... does not match {expected[:16]}...; the file is corrupt or "
                        f"not the FID weights, delete it and fetch {FID_WEIGHTS_URL} again")


def _missing_message(dest: Path) -> str:
    return (f"FID Inception weights not found at {dest}: download {FID_WEIGHTS_URL} and put it at {dest} "
            f"(or pass --inception PATH)")


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
        parts = [f"{name} ({len(keys)}): {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                 for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)) if keys]
        raise DataError(f"{path}: not the FID Inception state dict; " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_fid_inception(path: str | os.PathLike | None = None, download: bool = True,
                       cache_dir: str | os.PathLike | None = None, progress: bool = True) -> FIDInceptionV3:
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
            from slotlab.data.download import fetch

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
