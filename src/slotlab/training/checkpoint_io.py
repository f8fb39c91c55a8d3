"""Checkpoints written atomically: to a temporary file beside the target, flushed to disk, then renamed over it. A
crash, a kill or a full disk never leaves a partial or empty ``.ckpt`` under a checkpoint's name, and the previous
``last.ckpt`` stays whole until the new one is complete."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from slotlab.io import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        buffer = io.BytesIO()  # serialised first: a write error is then the OS's own (e.g. ENOSPC), not torch's
        torch.save(checkpoint, buffer)
        with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())

    def load_checkpoint(
        self, path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Tensors and plain values only (``weights_only=True``), whatever the caller asks."""
        if map_location is None:
            return super().load_checkpoint(path, weights_only=True)
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)
