"""End to end: `slotlab train` on procedural Tetrominoes for a short run must learn to segment,
and `slotlab eval` on the exported model must agree with the run's own validation."""

import json

import pytest
import torch

from slotlab.checkpoints import load_trained
from slotlab.cli.main import main
from slotlab.config import load_config
from slotlab.data.registry import build_dataset
from slotlab.evaluation import evaluate_object_discovery
from slotlab.models import SlotAutoencoder

STEPS = 1000
OVERRIDES = [f"optim.max_steps={STEPS}", "data.train_size=20000", "trainer.max_time_minutes=null",
             f"trainer.val_every_n_steps={STEPS}", f"trainer.checkpoint_every_n_steps={STEPS}"]


@pytest.mark.slow
def test_short_training_learns_to_segment(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "tetrominoes_demo", "--out", str(out), "--no-progress", *OVERRIDES]) == 0

    config = load_config("tetrominoes_demo", OVERRIDES)
    held_out = build_dataset(config.data, "val")
    torch.manual_seed(config.trainer.seed)
    untrained = evaluate_object_discovery(SlotAutoencoder(config.model), held_out)
    model, saved_config = load_trained(out / "model")
    trained = evaluate_object_discovery(model, held_out)

    assert saved_config == config
    # learning, not just running: segmentation and reconstruction both far better than at initialisation
    assert untrained["fg_ari"] < 0.3
    assert trained["fg_ari"] > 0.6
    assert trained["mse"] < 0.6 * untrained["mse"]

    # the exported model, the CLI's eval and the run's last validation agree
    assert main(["eval", "--checkpoint", str(out / "model"), "--out", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["fg_ari"] == pytest.approx(trained["fg_ari"], abs=1e-9)
    curve = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    assert curve[-1]["step"] == STEPS
    assert curve[-1]["fg_ari"] == pytest.approx(trained["fg_ari"], abs=0.05)  # bf16 autocast vs fp32 eval

    # resume: one more checkpointed stretch continues from the saved step
    more = [o if not o.startswith("optim.max_steps") else f"optim.max_steps={STEPS + 20}" for o in OVERRIDES]
    assert main(["train", "tetrominoes_demo", "--out", str(out), "--no-progress", "--resume", *more]) == 0
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == STEPS + 20
