"""trainer.ema_decay: an exponential moving average of the weights is what validation, checkpoints and the exported
model use."""

import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging

from slotlab.checkpoints import load_trained
from slotlab.config import load_config
from slotlab.errors import ConfigError
from slotlab.experiment import train

TINY = ["data.train_size=64", "data.val_size=8", "optim.batch_size=8", "optim.max_steps=6", "optim.warmup_steps=0",
        "trainer.max_time_minutes=null", "trainer.val_every_n_steps=3", "trainer.checkpoint_every_n_steps=3",
        "trainer.precision=32-true", "trainer.channels_last=false", "trainer.compile=false", "trainer.ema_decay=null",
        "model.encoder_channels=[8,8]",
        "model.encoder_strides=[2,1]", "model.decoder_channels=[8,8]", "model.slot_dim=16", "model.mlp_hidden=16"]


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_exported_model_holds_the_averaged_weights(tmp_path, one_thread):
    plain = train(load_config("tetrominoes_demo", TINY), tmp_path / "plain", progress=False)
    ema = train(load_config("tetrominoes_demo", [*TINY, "trainer.ema_decay=0.5"]), tmp_path / "ema", progress=False)

    (callback,) = [c for c in ema.trainer.callbacks if isinstance(c, EMAWeightAveraging)]
    averaged = {k[len("model."):]: v for k, v in callback._average_model.module.state_dict().items()
                if k.startswith("model.")}
    exported, _ = load_trained(tmp_path / "ema" / "model")
    for name, value in _weights(exported).items():
        torch.testing.assert_close(value, averaged[name])
    # same seed, same data: without averaging the final weights are the raw ones, which differ
    raw, _ = load_trained(tmp_path / "plain" / "model")
    assert any(not torch.equal(a, b) for a, b in zip(_weights(raw).values(), _weights(exported).values()))
    # the averaged weights go into the resumable checkpoint too (the raw ones beside them)
    ckpt = torch.load(tmp_path / "ema" / "checkpoints" / "last.ckpt", weights_only=False)
    assert "current_model_state" in ckpt
    assert plain.trainer.global_step == ema.trainer.global_step == 6


def test_ema_decay_out_of_range(tmp_path):
    with pytest.raises(ConfigError, match="ema_decay"):
        train(load_config("tetrominoes_demo", [*TINY, "trainer.ema_decay=1.5"]), tmp_path / "bad", progress=False)
