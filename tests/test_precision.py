"""trainer.precision=auto and trainer.channels_last=auto: time the run's own training steps in each open
combination and keep the fastest, leaving the weights, the layout and the random state as they were."""

import pytest
import torch

from slotlab.checkpoints import load_trained
from slotlab.config import load_config
from slotlab.data.registry import build_dataset
from slotlab.experiment import train
from slotlab.kinds import kind
from slotlab.training.precision import CANDIDATES, resolve_compile, resolve_switches, time_candidates

TINY = ["data.train_size=32", "data.val_size=8", "optim.batch_size=8", "optim.max_steps=2", "optim.warmup_steps=0",
        "trainer.max_time_minutes=null", "trainer.val_every_n_steps=2", "trainer.checkpoint_every_n_steps=2",
        "model.encoder_channels=[8,8]", "model.encoder_strides=[2,1]", "model.decoder_channels=[8,8]",
        "model.slot_dim=16", "model.mlp_hidden=16", "trainer.compile=false"]


def _module_and_data(*overrides):
    config = load_config("tetrominoes_demo", [*TINY, *overrides])
    torch.manual_seed(0)
    module = kind(config.task).build_module(config)
    return config, module, build_dataset(config.data, "train")


def test_probe_times_every_open_combination_and_leaves_the_run_untouched(one_thread):
    config, module, data = _module_and_data("trainer.precision=auto", "trainer.channels_last=auto")
    weights = {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.random.get_rng_state()
    lines = []
    precision, channels_last = resolve_switches(config, module, data, steps=1, rounds=1, report=lines.append)

    rates = [float(word) for word in lines[0].replace(",", " ").split() if word.replace(".", "").isdigit()]
    assert precision in CANDIDATES and len(rates) == 4 and min(rates) > 0
    assert lines[0].endswith(f"-> {precision}{' channels-last' if channels_last else ''}")
    assert module.channels_last == channels_last  # left in the chosen layout
    conv = next(p for p in module.model.parameters() if p.ndim == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last or conv.shape[-2:] == (1, 1)
    for k, v in module.state_dict().items():
        assert torch.equal(v, weights[k]), k
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert all(p.grad is None for p in module.parameters())


def test_only_what_is_auto_is_timed(one_thread):
    config, module, data = _module_and_data("trainer.precision=bf16-mixed", "trainer.channels_last=auto")
    lines = []
    precision, _ = resolve_switches(config, module, data, steps=1, rounds=1, report=lines.append)
    assert precision == "bf16-mixed" and "32-true" not in lines[0] and lines[0].count("steps/s") == 2


def test_fixed_switches_and_multi_process_cpu_are_not_timed(one_thread):
    config, module, data = _module_and_data("trainer.precision=bf16-mixed", "trainer.channels_last=true")
    assert resolve_switches(config, module, data, report=lambda line: 1 / 0) == ("bf16-mixed", True)
    assert module.channels_last
    config, module, data = _module_and_data("trainer.precision=auto", "trainer.channels_last=auto",
                                            "trainer.accelerator=cpu", "trainer.devices=2")
    assert resolve_switches(config, module, data, report=lambda line: 1 / 0) == ("32-true", True)  # ranks agree


def test_rates_are_per_candidate(one_thread):
    _, module, data = _module_and_data()
    candidates = [("32-true", False), ("bf16-mixed", True)]
    rates = time_candidates(module, data[torch.arange(8)], candidates, steps=1, rounds=1)
    assert set(rates) == set(candidates) and all(r > 0 for r in rates.values())
    assert not module.channels_last  # its layout before the probe


def test_training_records_the_chosen_switches(tmp_path, one_thread):
    config = load_config("tetrominoes_demo", [*TINY, "trainer.precision=auto", "trainer.channels_last=auto",
                                              "trainer.compile=auto"])
    result = train(config, tmp_path / "run", progress=False)
    _, saved = load_trained(tmp_path / "run" / "model")
    assert saved.trainer.compile == config.trainer.compile in (True, False)
    assert saved.trainer.precision == config.trainer.precision in CANDIDATES
    assert saved.trainer.channels_last == config.trainer.channels_last in (True, False)
    assert result.trainer.precision == ("bf16-mixed" if config.trainer.precision == "bf16-mixed" else "32-true")


def test_compile_auto_times_compiled_steps_and_keeps_the_faster(one_thread):
    config, module, data = _module_and_data("trainer.precision=32-true", "trainer.channels_last=false",
                                            "trainer.compile=auto")
    weights = {k: v.clone() for k, v in module.state_dict().items()}
    lines = []
    compiled = resolve_compile(config, module, data, steps=1, rounds=1, report=lines.append)
    rates = [float(word) for word in lines[0].replace(",", " ").split() if word.replace(".", "").isdigit()][:2]
    assert len(rates) == 2 and min(rates) > 0
    assert compiled == (rates[1] > rates[0]) and lines[0].endswith("-> compiled" if compiled else "-> eager")
    assert (module._forward == module.model.forward) != compiled  # training goes on with what was chosen
    for k, v in module.state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_compile_auto_stays_eager_where_compiling_fails(one_thread, monkeypatch):
    config, module, data = _module_and_data("trainer.precision=32-true", "trainer.compile=auto")

    def broken(*args, **kwargs):
        raise RuntimeError("InductorError: no C++ compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", lambda forward, **kwargs: broken)
    lines = []
    assert resolve_compile(config, module, data, steps=1, rounds=1, report=lines.append) is False
    assert lines == ["trainer auto compile: torch.compile failed (InductorError: no C++ compiler found) -> eager"]
    assert module._forward == module.model.forward
    assert resolve_compile(load_config("tetrominoes_demo", [*TINY, "trainer.compile=true"]), module, data) is True


def test_precisions_the_probe_cannot_time_are_left_as_set(one_thread):
    config, module, data = _module_and_data("trainer.precision=bf16-true", "trainer.channels_last=auto",
                                            "trainer.compile=auto")
    assert resolve_switches(config, module, data, report=lambda line: 1 / 0) == ("bf16-true", False)
    assert resolve_compile(config, module, data, report=lambda line: 1 / 0) is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_a_gpu_the_layout_and_compile_are_timed_there_and_the_module_comes_home(one_thread):
    config, module, data = _module_and_data("trainer.accelerator=gpu", "trainer.precision=auto",
                                            "trainer.channels_last=auto", "trainer.compile=auto")
    lines = []
    precision, channels_last = resolve_switches(config, module, data, steps=1, rounds=1, report=lines.append)
    assert precision == ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed")
    assert lines[0].count("steps/s") == 2 and "32-true" not in lines[0]
    config.trainer.precision, config.trainer.channels_last = precision, channels_last
    assert resolve_compile(config, module, data, steps=1, rounds=1, report=lines.append) in (True, False)
    assert lines[1].startswith("trainer auto compile:")
    assert all(p.device.type == "cpu" for p in module.parameters())  # Lightning moves it when training starts
