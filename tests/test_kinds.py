"""The registry of model kinds: one declaration per kind, a fifth kind added with one line, the kind recorded in
config.json and read back without guessing, refusals in one line, and validation == ``slotlab eval``."""

from __future__ import annotations

import json

import pytest
import torch

from slotlab.checkpoints import load_trained
from slotlab.cli.main import main
from slotlab.config import load_config
from slotlab.data.registry import build_dataset
from slotlab.errors import ConfigError, DataError
from slotlab.experiment import train
from slotlab.kinds import KINDS, kind, kind_of, kind_of_folder, register, unregister
from slotlab.models import SlotAutoencoder, SlotAutoencoderConfig
from toy_kind import TOY, ToyAutoencoder

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["data.train_size=32", "data.val_size=8", "optim.batch_size=8", "optim.max_steps=4", "optim.warmup_steps=0",
        "trainer.max_time_minutes=null", "trainer.val_every_n_steps=2", "trainer.checkpoint_every_n_steps=2",
        "trainer.precision=32-true", "trainer.channels_last=false", "trainer.compile=false"]
TINY_MODEL = ["model.encoder_channels=[8,8]", "model.encoder_strides=[2,1]", "model.decoder_channels=[8,8]",
              "model.slot_dim=16", "model.mlp_hidden=16"]


@pytest.fixture
def toy():
    register(TOY)  # the one registration line a new kind needs
    yield TOY
    unregister(TOY.name)


def test_the_four_kinds_are_declared_once():
    assert list(KINDS) == ["lsd", "object_discovery", "set_prediction", "autoencoder"]
    for k in KINDS.values():
        assert kind(k.name) is k and kind_of(k.model) is k
        assert k.monitor.startswith("val/")
    with pytest.raises(ConfigError, match="unknown task 'nope'; tasks: lsd, object_discovery"):
        kind("nope")
    with pytest.raises(ValueError, match="registered already"):
        register(KINDS["lsd"])


def test_a_fifth_kind_trains_saves_loads_and_is_scored_through_the_registry(toy, tmp_path, capsys):
    config = load_config("tetrominoes_demo", [*TINY, "task=toy", "model={resolution: 32, channels: 3}"])
    assert config.model == toy.config(resolution=32, channels=3)
    result = train(config, tmp_path / "run", progress=False)
    assert isinstance(result.module, toy.module) and (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()
    record = json.loads((result.model_dir / "config.json").read_text())
    assert record["_class_name"] == "ToyAutoencoder" and kind_of_folder(result.model_dir) is toy
    for source in (result.model_dir, tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.ckpt"):
        model, saved = load_trained(source)
        assert isinstance(model, ToyAutoencoder) and saved.task == "toy"
        torch.testing.assert_close(model.down.weight, result.module.model.down.weight)
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--batch-size", "8"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["psnr"] == pytest.approx(result.module.last_validation["psnr"], abs=1e-12)
    # what the toy kind cannot serve is refused in one line, before its weights are read
    assert main(["edit", "--checkpoint", str(tmp_path / "run"), "--image", "0", "--remove-slot", "0",
                 "--out", str(tmp_path / "e.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a toy autoencoder (ToyAutoencoder)" in err[0] and "works only with" in err[0]
    assert not (tmp_path / "e.png").exists()


@pytest.mark.parametrize("task,overrides,batch", [
    ("object_discovery", [*TINY, *TINY_MODEL], 8),
    ("set_prediction", [*TINY, "model.encoder_channels=[8,8]", "model.encoder_strides=[2,2]", "model.slot_dim=16",
                        "model.mlp_hidden=16", "model.head_hidden=16", "model.resolution=32", "data.resolution=32"], 8),
])
def test_validation_and_eval_agree_exactly(task, overrides, batch, tmp_path, capsys):
    preset = "tetrominoes_demo" if task == "object_discovery" else "clevr_set_prediction_demo"
    config = load_config(preset, overrides)
    result = train(config, tmp_path / "run", progress=False)
    logged = result.module.last_validation
    val = build_dataset(config.data, "val")
    model = result.module.model.eval()
    scored = kind(task).evaluate(model, val, batch_size=batch, seed=config.trainer.seed)
    assert logged and scored.keys() >= logged.keys()
    for key, value in logged.items():
        assert scored[key] == value, key  # the same metric path, batches and noise: equal, not close
    # and through the command line, from the exported folder
    assert main(["eval", "--checkpoint", str(result.model_dir), "--batch-size", str(batch),
                 "--seed", str(config.trainer.seed)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert all(printed[k] == pytest.approx(v, abs=1e-12) for k, v in logged.items())


def test_kind_of_folders_written_before_the_kind_was_recorded(tmp_path):
    model = SlotAutoencoder(SlotAutoencoderConfig(resolution=16, num_slots=2, slot_dim=8, mlp_hidden=8,
                                                  encoder_channels=[4], decoder_broadcast=16, decoder_channels=[4],
                                                  decoder_strides=[1]))
    model.save_pretrained(tmp_path / "m")
    assert kind_of_folder(tmp_path / "m").name == "object_discovery"
    record = json.loads((tmp_path / "m" / "config.json").read_text())
    del record["_class_name"]  # as the previous version wrote it
    (tmp_path / "m" / "config.json").write_text(json.dumps(record))
    assert kind_of_folder(tmp_path / "m").name == "object_discovery"
    loaded, _ = load_trained(tmp_path / "m")
    assert isinstance(loaded, SlotAutoencoder)
    (tmp_path / "m" / "config.json").write_text(json.dumps({**record, "num_outputs": 19}))
    assert kind_of_folder(tmp_path / "m").name == "set_prediction"
    (tmp_path / "m" / "config.json").write_text(json.dumps({**record, "_class_name": "Unheard"}))
    with pytest.raises(DataError, match="'Unheard' is not a slotlab model class"):
        kind_of_folder(tmp_path / "m")


def test_config_values_are_checked_when_loaded(tmp_path, capsys):
    cases = {
        "model.num_slots=0": "model.num_slots = 0 is out of range: must be >= 1",
        "model.num_slots=four": "model.num_slots = 'four' is not an integer",
        "model.slot_init=fixed": "model.slot_init = 'fixed' is not allowed: use one of 'gaussian', 'learned'",
        "optim.lr=-1e-3": "optim.lr = -0.001 is out of range: must be > 0",
        "optim.batch_size=0": "optim.batch_size = 0 is out of range: must be >= 1",
        "optim.optimizer=sgd": "optim.optimizer = 'sgd' is not allowed: use one of 'adam', 'adamw'",
        "trainer.precision=fp8": "trainer.precision = 'fp8' is not allowed",
        "trainer.val_every_n_steps=0": "trainer.val_every_n_steps = 0 is out of range",
        "trainer.ema_decay=1": "trainer.ema_decay = 1.0 is out of range: must be > 0 and < 1",
        "data.crop=[1,1,32]": "crop must be [top, left, height, width]",
        "model.slot_frame=rotation": "model.slot_frame = 'rotation' is not allowed",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError) as e:
            load_config("tetrominoes_demo", [override])
        assert message in str(e.value), (override, str(e.value))
        out = tmp_path / "never"
        assert main(["train", "tetrominoes_demo", "--out", str(out), override]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("slotlab: error:") and not out.exists()
    with pytest.raises(ConfigError, match="model.backbone = 'vit' is not allowed: use one of 'unet', 'cnn'"):
        load_config("lsd_demo", ["model.backbone=vit"])
