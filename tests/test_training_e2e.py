"""End to end: `slotlab train` on procedural Tetrominoes for a short run must learn to segment,
and `slotlab eval` on the exported model must agree with the run's own validation."""

import json

import pytest
import torch

from slotlab.checkpoints import load_trained
from slotlab.cli.main import main
from slotlab.config import load_config
from slotlab.data import generate_tetrominoes, save_npz
from slotlab.data.registry import VAL_SEED_OFFSET, build_dataset
from slotlab.evaluation import evaluate_object_discovery
from slotlab.models import SlotAutoencoder

STEPS = 2500
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

    # precision "auto" is saved as the precision it chose on this machine
    assert config.trainer.precision == "auto" and saved_config.trainer.precision in ("32-true", "bf16-mixed")
    config.trainer.precision = saved_config.trainer.precision
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

    # the same held-out scenes as a bring-your-own 35x35 .npz (one-hot masks, background first) score the same:
    # eval applies the training crop 35 -> 32, so real Tetrominoes scenes in this format are read the same way
    scenes = generate_tetrominoes(config.data.val_size, config.data.seed + VAL_SEED_OFFSET)
    save_npz(tmp_path / "scenes.npz", scenes["image"], scenes["mask"][..., 0])
    assert main(["eval", "--checkpoint", str(out / "model"), "--data", str(tmp_path / "scenes.npz"),
                 "--out", str(tmp_path / "npz.json")]) == 0
    assert json.loads((tmp_path / "npz.json").read_text())["fg_ari"] == pytest.approx(trained["fg_ari"], abs=1e-9)

    # resume: one more checkpointed stretch continues from the saved step
    more = [o if not o.startswith("optim.max_steps") else f"optim.max_steps={STEPS + 20}" for o in OVERRIDES]
    assert main(["train", "tetrominoes_demo", "--out", str(out), "--no-progress", "--resume", *more]) == 0
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == STEPS + 20
