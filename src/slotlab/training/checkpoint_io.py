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


def patch_checkpoint(path: Path, entries: dict[str, torch.Tensor]) -> None:
    """Replace state-dict ``entries`` in the checkpoint at ``path`` (written atomically), wherever a dict in it holds
    them under their name or ending in ``.name`` (the module's weights and, with an EMA, the averaged copy); every
    other part, the loops' progress included, stays as written. No file: nothing to do."""
    if not path.is_file():
        return
    storage = AtomicCheckpointIO()
    checkpoint = storage.load_checkpoint(path, map_location="cpu")

    def patch(node: Any) -> None:
        if isinstance(node, dict):
            for key in list(node):
                name = next((n for n in entries if key == n or (isinstance(key, str) and key.endswith("." + n))), None)
                if name is not None and isinstance(node[key], torch.Tensor):
                    node[key] = entries[name].to(node[key].device, node[key].dtype)
                else:
                    patch(node[key])
        elif isinstance(node, (list, tuple)):
            for item in node:
                patch(item)

    patch(checkpoint)
    storage.save_checkpoint(checkpoint, path)
