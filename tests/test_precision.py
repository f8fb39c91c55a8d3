"""trainer.precision=auto: times the run's own training steps in fp32 and bf16 and keeps the faster, leaving the
weights and the random state as they were."""

import torch

from slotlab.checkpoints import load_trained
from slotlab.config import load_config
from slotlab.data.registry import build_dataset
from slotlab.experiment import train
from slotlab.kinds import kind
from slotlab.training.precision import CANDIDATES, resolve_precision, time_precisions

TINY = ["data.train_size=32", "data.val_size=8", "optim.batch_size=8", "optim.max_steps=2", "optim.warmup_steps=0",
        "trainer.max_time_minutes=null", "trainer.val_every_n_steps=2", "trainer.checkpoint_every_n_steps=2",
        "model.encoder_channels=[8,8]", "model.encoder_strides=[2,1]", "model.decoder_channels=[8,8]",
        "model.slot_dim=16", "model.mlp_hidden=16"]


def _module_and_data(*overrides):
    config = load_config("tetrominoes_demo", [*TINY, *overrides])
    torch.manual_seed(0)
    module = kind(config.task).build_module(config)
    return config, module, build_dataset(config.data, "train")


def test_probe_times_both_and_leaves_the_run_untouched(one_thread):
    config, module, data = _module_and_data("trainer.precision=auto")
    weights = {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.random.get_rng_state()
    lines = []
    chosen = resolve_precision(config, module, data, steps=1, rounds=1, report=lines.append)

    rates = [float(word) for word in lines[0].replace(",", " ").split() if word.replace(".", "").isdigit()]
    assert chosen in CANDIDATES and len(rates) == 2 and min(rates) > 0
    assert lines[0].endswith(f"-> {chosen}")
    for k, v in module.state_dict().items():
        assert torch.equal(v, weights[k]), k
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert all(p.grad is None for p in module.parameters())


def test_fixed_precision_and_multi_process_cpu_are_not_timed(one_thread):
    config, module, data = _module_and_data("trainer.precision=bf16-mixed")
    assert resolve_precision(config, module, data, report=lambda line: 1 / 0) == "bf16-mixed"
    config, module, data = _module_and_data("trainer.precision=auto", "trainer.accelerator=cpu", "trainer.devices=2")
    assert resolve_precision(config, module, data, report=lambda line: 1 / 0) == "32-true"  # every rank agrees


def test_rates_are_per_candidate(one_thread):
    _, module, data = _module_and_data()
    rates = time_precisions(module, data[torch.arange(8)], steps=1, rounds=1)
    assert set(rates) == set(CANDIDATES) and all(r > 0 for r in rates.values())


def test_training_records_the_chosen_precision(tmp_path, one_thread):
    config = load_config("tetrominoes_demo", [*TINY, "trainer.precision=auto"])
    result = train(config, tmp_path / "run", progress=False)
    _, saved = load_trained(tmp_path / "run" / "model")
    assert saved.trainer.precision == config.trainer.precision in CANDIDATES
    assert result.trainer.precision == ("bf16-mixed" if config.trainer.precision == "bf16-mixed" else "32-true")
