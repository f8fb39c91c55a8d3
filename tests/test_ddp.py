"""DDP through Lightning: two CPU processes (gloo) train one model and stay identical."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).parent / "scripts" / "ddp_train.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_keeps_replicas_identical(tmp_path):
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["steps"] == r1["steps"] == 6
    # each replica saw its own share of the data ...
    assert len(r0["batch_sums"]) == len(r1["batch_sums"]) == 6
    assert all(a != b for a, b in zip(r0["batch_sums"], r1["batch_sums"]))
    # ... yet, with gradients averaged, the parameters are bit-identical after training
    assert torch.equal(r0["params"], r1["params"])
    # both started from the same weights, and training moved them
    assert torch.equal(r0["initial"], r1["initial"])
    assert not torch.equal(r0["initial"], r0["params"])
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
