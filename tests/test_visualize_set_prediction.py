"""The set-prediction picture: input with markers, predicted vs true objects, per-slot attention."""

import numpy as np
import pytest
import torch
from PIL import Image

from slotlab.data.datasets import SceneDataset
from slotlab.models.set_prediction import SlotSetPredictor, SlotSetPredictorConfig
from slotlab.visualize import describe_objects, draw_set_prediction_grid


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = SlotSetPredictorConfig(resolution=32, encoder_channels=[8, 8, 8, 8], slot_dim=16, mlp_hidden=16,
                                    head_hidden=16, num_slots=4)
    return SlotSetPredictor(config)


def images(n=3):
    return torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def open_png(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def check_picture(pixels, rows):
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 50  # images, attention maps, text and markers, not a blank sheet
    assert pixels.shape[1] > (1 + 4) * 32 * 3  # input + 4 attention maps + a text panel
    # Down the left edge of the input column, under the titles: one 96-pixel run of image (3x 32 pixels) per row.
    painted = (pixels[14:, 9] != 255).any(-1).astype(int)
    starts, ends = np.flatnonzero(np.diff(painted) == 1), np.flatnonzero(np.diff(painted) == -1)
    assert len(starts) == len(ends) == rows
    assert ((ends - starts) == 32 * 3).all()


@pytest.mark.parametrize("threshold", [0.5, 0.0])
def test_grid_with_targets(model, tmp_path, threshold):
    dataset = SceneDataset(images(), None, targets=torch.rand(3, 10, 19, generator=torch.Generator().manual_seed(2)))
    path = draw_set_prediction_grid(model, dataset, tmp_path / "sets" / "grid.png", num_images=8,
                                    threshold=threshold)
    assert path == tmp_path / "sets" / "grid.png" and path.is_file()
    check_picture(open_png(path), rows=3)


def test_threshold_zero_marks_every_slot(model, tmp_path):
    dataset = SceneDataset(images(2), None)
    marked = open_png(draw_set_prediction_grid(model, dataset, tmp_path / "all.png", threshold=0.0))
    unmarked = open_png(draw_set_prediction_grid(model, dataset, tmp_path / "none.png", threshold=1.01))
    check_picture(marked, rows=2)
    # Same input and slots; only the markers and the list of slots differ, and the input tile changes.
    assert marked.shape[0] == unmarked.shape[0]
    tile = slice(22, 22 + 96), slice(8, 8 + 96)  # below the titles, right of the margin
    assert (marked[tile] != unmarked[tile]).any()


def test_grid_without_targets_and_fewer_images(model, tmp_path):
    dataset = SceneDataset(images(), None)
    model.train()
    path = draw_set_prediction_grid(model, dataset, tmp_path / "grid.png", num_images=2, seed=3)
    assert model.training  # put back as it was
    check_picture(open_png(path), rows=2)


def test_describe_objects_back_to_scene_units():
    v = torch.zeros(2, 19)
    v[0, :3] = torch.tensor([0.5, 0.0, 1.0])
    v[0, [4, 6, 8, 14, 18]] = 1  # large metal sphere red
    v[1, [3, 5, 7, 10]] = 1  # small rubber cube gray
    assert describe_objects(v) == [("red", "large red metal sphere", "xyz (0.00, -3.00, 3.00)"),
                                   ("gray", "small gray rubber cube", "xyz (-3.00, -3.00, -3.00)")]
    assert describe_objects(torch.zeros(0, 19)) == []
