"""Train a tiny model with 2 CPU processes (DDP, gloo) and save each rank's parameters and data checksums.

Run by tests/test_ddp.py as ``python ddp_train.py OUT``; Lightning re-launches this script for rank 1.
"""

import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from slotlab.config import load_config
from slotlab.experiment import train


class RecordBatches(Callback):
    def __init__(self):
        self.sums, self.initial = [], None

    def on_train_start(self, trainer, pl_module):
        self.initial = torch.cat([p.detach().flatten().clone() for p in pl_module.model.parameters()])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.sums.append(float(batch["image"].double().sum()))


def main(out: Path) -> None:
    config = load_config("tetrominoes_demo", [
        "data.train_size=256", "data.val_size=16", "optim.batch_size=8", "optim.max_steps=6", "optim.warmup_steps=0",
        "model.encoder_channels=[8,8]", "model.encoder_strides=[2,1]", "model.decoder_channels=[8,8]",
        "model.slot_dim=16", "model.mlp_hidden=16", "trainer.precision=32-true", "trainer.channels_last=false",
        "trainer.max_time_minutes=null", "trainer.val_every_n_steps=3", "trainer.checkpoint_every_n_steps=3",
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.num_threads=1",
    ])
    recorder = RecordBatches()
    torch.manual_seed(0)
    result = train(config, out, progress=False, callbacks=[recorder])
    rank = result.trainer.global_rank
    params = torch.cat([p.detach().flatten() for p in result.module.model.parameters()])
    torch.save({"params": params, "initial": recorder.initial, "batch_sums": recorder.sums, "steps": result.trainer.global_step,
                "world_size": result.trainer.world_size}, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
