"""Per-image reconstruction error: MSE and PSNR of images in [-1, 1], over all pixels or a region."""

from __future__ import annotations

import math

import pytest
import torch

from slotlab.metrics import image_mse, psnr


def test_mse_and_psnr_known_values():
    target = torch.zeros(2, 3, 4, 4)
    pred = target.clone()
    pred[0] += 0.1  # every pixel off by 0.1: MSE 0.01, PSNR 10 log10(4 / 0.01) = 26.02 dB
    pred[1, :, :2] = 1.0  # half the pixels off by 1: MSE 0.5
    torch.testing.assert_close(image_mse(pred, target), torch.tensor([0.01, 0.5]))
    torch.testing.assert_close(psnr(pred, target), torch.tensor([10 * math.log10(400), 10 * math.log10(8)]))
    assert psnr(target, target)[0] == pytest.approx(10 * math.log10(4e10))  # identical: clamped, finite


def test_mse_and_psnr_over_a_region():
    target = torch.zeros(2, 3, 4, 4)
    pred = target.clone()
    pred[:, :, :2] = 1.0  # the top half is wrong in both images
    region = torch.zeros(2, 4, 4, dtype=torch.bool)
    region[0, 2:] = True  # image 0: only the (correct) bottom half
    region[1, :2] = True  # image 1: only the (wrong) top half
    mse = image_mse(pred, target, region)
    assert mse[0] == 0 and mse[1] == 1
    assert psnr(pred, target, region)[1] == pytest.approx(10 * math.log10(4))
    assert torch.isnan(image_mse(pred, target, torch.zeros(2, 4, 4, dtype=torch.bool))).all()  # empty region
