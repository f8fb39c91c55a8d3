"""The experiments under experiments/ run end to end (on a tiny untrained model: their numbers are not checked
here, only that each command writes its table, JSON and plot)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from slotlab.checkpoints import save_trained
from slotlab.config import DataConfig, ExperimentConfig
from slotlab.models import SlotAutoencoder, SlotAutoencoderConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tetrominoes_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    torch.manual_seed(0)
    model = SlotAutoencoder(SlotAutoencoderConfig(
        resolution=32, num_slots=4, num_iterations=3, slot_dim=16, mlp_hidden=16, encoder_channels=[8, 8],
        encoder_strides=[2, 1], decoder_broadcast=8, decoder_channels=[8, 8], decoder_strides=[2, 2]))
    config = ExperimentConfig(name="tiny", model=model.config, data=DataConfig(
        dataset="tetrominoes", train_size=8, val_size=16, crop=[2, 2, 32, 32], resolution=32))
    save_trained(model, config, root / "model")
    return root / "model"


def test_iterations_at_test_time(tetrominoes_model, tmp_path):
    import test_time_iterations

    assert test_time_iterations.main(["--checkpoint", str(tetrominoes_model), "--out", str(tmp_path),
                                      "--iterations", "1", "3"]) == 0
    table = json.loads((tmp_path / "iterations.json").read_text())
    assert table["x"] == [1, 3] and all(len(v) == 2 for v in table["series"].values())
    assert (tmp_path / "iterations.png").stat().st_size > 0 and "| 3 |" in (tmp_path / "iterations.md").read_text()


def test_more_objects_than_trained(tetrominoes_model, tmp_path):
    import more_objects

    assert more_objects.main(["--checkpoint", str(tetrominoes_model), "--out", str(tmp_path), "--pieces", "3", "5",
                              "--scenes", "8"]) == 0
    table = json.loads((tmp_path / "more_objects.json").read_text())
    assert table["x"] == [3, 5] and list(table["series"]) == ["K = 4 (as trained)", "K = pieces + 1"]
    assert table["series"]["K = 4 (as trained)"][0] == pytest.approx(table["series"]["K = pieces + 1"][0])  # K 4 = 3+1


def test_uint8_against_float_images(tmp_path):
    import uint8_images

    torch.manual_seed(0)
    model = SlotAutoencoder(SlotAutoencoderConfig(
        resolution=16, num_slots=3, num_iterations=2, slot_dim=16, mlp_hidden=16, encoder_channels=[8, 8],
        encoder_strides=[1, 1], decoder_broadcast=16, decoder_channels=[8, 8], decoder_strides=[1, 1]))
    save_trained(model, ExperimentConfig(name="tex", model=model.config, data=DataConfig(
        dataset="clevrtex", train_size=4, val_size=4, crop=[24, 64, 192, 192], resolution=16)), tmp_path / "m")
    assert uint8_images.main(["--checkpoint", str(tmp_path / "m"), "--out", str(tmp_path), "--scenes", "4"]) == 0
    result = json.loads((tmp_path / "uint8_images.json").read_text())
    assert 0 < result["max_abs_difference_in_model_range"] <= 1 / 255 + 1e-6  # at most half a grey level
    assert abs(result["uint8"]["fg_ari"] - result["float"]["fg_ari"]) < 0.2


def test_set_prediction_ap_against_iterations(tmp_path):
    import set_prediction_iterations

    from slotlab.models.set_prediction import SlotSetPredictor, SlotSetPredictorConfig

    torch.manual_seed(0)
    model = SlotSetPredictor(SlotSetPredictorConfig(resolution=32, num_slots=10, slot_dim=8, mlp_hidden=8,
                                                    encoder_channels=[4, 4], encoder_strides=[2, 2], head_hidden=8))
    save_trained(model, ExperimentConfig(name="sp", task="set_prediction", model=model.config,
                                         data=DataConfig(dataset="clevr", train_size=4, val_size=4, resolution=32)),
                 tmp_path / "sp")
    assert set_prediction_iterations.main(["--checkpoint", str(tmp_path / "sp"), "--out", str(tmp_path / "out"),
                                           "--iterations", "1", "2"]) == 0
    table = json.loads((tmp_path / "out" / "sp_iterations.json").read_text())
    assert table["x"] == [1, 2] and set(table["series"]) == {"AP inf", "AP 1", "AP 0.5", "AP 0.25", "AP 0.125"}
    assert all(0 <= ap <= 1 for series in table["series"].values() for ap in series)
    assert (tmp_path / "out" / "sp_iterations.png").stat().st_size > 0


def test_set_overrides_the_preset_of_the_model_an_experiment_trains(tmp_path):
    from common import model_of, parser

    tiny = ["data.train_size=8", "data.val_size=4", "optim.batch_size=4", "trainer.val_every_n_steps=2",
            "trainer.checkpoint_every_n_steps=2", "trainer.precision=32-true", "trainer.channels_last=false",
            "trainer.compile=false", "model.encoder_channels=[8,8,8]", "model.slot_dim=16", "model.mlp_hidden=16"]
    args = parser("doc", "x", "tetrominoes_demo", 2).parse_args(["--out", str(tmp_path), "--set", *tiny, "optim.lr=1e-3"])
    model, config = model_of(args, "tetrominoes_demo")
    assert config.optim.lr == 1e-3 and config.optim.max_steps == 2 and model.config.slot_dim == 16
    assert json.loads((tmp_path / "run" / "finished.json").read_text())["steps"] == 2
