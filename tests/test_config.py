"""Tests for slotlab.config (presets, overrides, errors) and the learning-rate schedule."""

from __future__ import annotations

from pathlib import Path

import pytest

from slotlab.config import (
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    list_presets,
    load_config,
    preset_summary,
)
from slotlab.errors import ConfigError
from slotlab.kinds import KINDS
from slotlab.models.object_discovery import SlotAutoencoderConfig
from slotlab.training.schedules import cooldown, warmup_exponential_decay

MODEL_CONFIGS = {name: k.config for name, k in KINDS.items()}  # each kind's model config, from the registry
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PRESET_FILES = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
PAPER = ["tetrominoes", "multi_dsprites", "clevr6"]


def test_presets_found():
    assert {"tetrominoes", "multi_dsprites", "clevr6", "tetrominoes_demo"} <= set(PRESET_FILES)
    assert set(PRESET_FILES) <= set(list_presets())


@pytest.mark.parametrize("name", PRESET_FILES)
def test_every_preset_opens_with_a_one_sentence_summary(name):
    """`slotlab presets` lists it: one comment line, a whole sentence."""
    summary = preset_summary(name)
    assert summary.endswith(".") and 20 < len(summary) <= 110, summary


@pytest.mark.parametrize("name", PRESET_FILES)
def test_every_preset_loads(name):
    cfg = load_config(name)
    assert isinstance(cfg, ExperimentConfig)
    assert isinstance(cfg.model, MODEL_CONFIGS[cfg.task])
    assert cfg.name == name
    assert cfg.model.resolution == cfg.data.resolution
    # loading by path gives the same config
    assert load_config(CONFIG_DIR / f"{name}.yaml") == cfg
    # and the YAML dump reads back to the same config
    import yaml

    assert config_from_dict(yaml.safe_load(cfg.to_yaml())) == cfg


@pytest.mark.parametrize("name", PAPER)
def test_paper_optimisation_settings(name):
    o = load_config(name).optim
    assert o.lr == 4e-4 and isinstance(o.lr, float)
    assert o.batch_size == 64
    assert o.max_steps == 500_000
    assert o.warmup_steps == 10_000
    assert o.decay_rate == 0.5
    assert o.decay_steps == 100_000
    assert o.grad_clip is None
    m = load_config(name).model
    assert (m.num_iterations, m.slot_dim, m.mlp_hidden) == (3, 64, 128)
    assert (m.slot_init, m.implicit_grad, m.attn_eps, m.ln_eps) == ("gaussian", False, 1e-8, 1e-3)
    assert (m.encoder_kernel, m.decoder_kernel, m.decoder_out_kernel) == (5, 5, 3)
    assert m.encoder_strides is None or m.encoder_strides == [1] * len(m.encoder_channels)


def test_tetrominoes_preset():
    c = load_config("tetrominoes")
    assert c.data.dataset == "tetrominoes"
    assert c.model.resolution == 32 and c.data.resolution == 32
    assert c.data.crop == [2, 2, 32, 32]  # rows and columns 2:34, as the reference code's centre crop
    assert c.model.num_slots == 4
    assert c.model.encoder_channels == [32] * 4
    assert c.model.decoder_broadcast == 32
    assert c.model.decoder_channels == [32] * 3
    assert c.model.decoder_strides == [1, 1, 1]


def test_multi_dsprites_preset():
    c = load_config("multi_dsprites")
    assert c.model.resolution == 64 and c.data.resolution == 64
    assert c.data.crop is None
    assert c.model.num_slots == 6
    assert c.model.encoder_channels == [32] * 4
    assert c.model.decoder_broadcast == 64
    assert c.model.decoder_channels == [32] * 3
    assert c.model.decoder_strides == [1, 1, 1]


def test_clevr6_preset():
    c = load_config("clevr6")
    assert c.model.num_slots == 7
    assert c.data.crop == [29, 64, 192, 192]
    assert c.model.resolution == 128 and c.data.resolution == 128
    assert c.model.encoder_channels == [64] * 4
    assert c.model.decoder_broadcast == 8
    assert c.model.decoder_strides == [2, 2, 2, 2, 1]
    assert c.model.decoder_channels == [64] * 5


# ------------------------------------------------------------------------------- overrides


def test_overrides_parse_yaml_values():
    c = load_config("tetrominoes", [
        "optim.batch_size=8",
        "optim.lr=0.001",
        "optim.grad_clip=1.5",
        "model.encoder_channels=[16, 8]",
        "data.crop=null",
        "trainer.compile=true",
        "name=my-run",
    ])
    assert c.optim.batch_size == 8 and isinstance(c.optim.batch_size, int)
    assert c.optim.lr == 0.001 and isinstance(c.optim.lr, float)
    assert c.optim.grad_clip == 1.5
    assert c.model.encoder_channels == [16, 8]
    assert c.data.crop is None
    assert c.trainer.compile is True
    assert c.name == "my-run"
    # untouched values keep the preset's
    assert c.model.num_slots == 4 and c.optim.max_steps == 500_000


def test_override_of_a_key_the_preset_does_not_spell():
    c = load_config("tetrominoes", ["model.encoder_strides=[2, 1, 1, 1]", "trainer.num_threads=2"])
    assert c.model.encoder_strides == [2, 1, 1, 1]
    assert c.trainer.num_threads == 2


def test_apply_overrides_in_place_and_later_wins():
    values = {"optim": {"lr": 1.0}}
    out = apply_overrides(values, ["optim.lr=2.0", "optim.lr=3.0", "data.seed=4"])
    assert out is values
    assert values == {"optim": {"lr": 3.0}, "data": {"seed": 4}}


def test_compile_takes_a_mode_name():
    assert load_config("tetrominoes", ["trainer.compile=reduce-overhead"]).trainer.compile == "reduce-overhead"
    assert load_config("tetrominoes", ["trainer.compile=false"]).trainer.compile is False
    with pytest.raises(ConfigError, match="trainer.compile"):
        load_config("tetrominoes", ["trainer.compile=fastest"])


def test_override_scientific_notation_is_a_float():
    c = load_config("tetrominoes", ["optim.lr=1e-3"])
    assert isinstance(c.optim.lr, float) and c.optim.lr == 1e-3


@pytest.mark.parametrize("override", [
    "optim.learning_rate=1.0",  # unknown key in a section
    "foo=1",  # unknown top-level key
    "model.decoder.channels=[1]",  # unknown key, nested
    "optim.lr",  # no '='
    "optim.lr.x=1",  # a value is not a section
    "data.crop.x=1",
    "optim=3",  # a section must be a mapping
    "=1",
])
def test_bad_overrides_raise_config_error(override):
    with pytest.raises(ConfigError):
        load_config("tetrominoes", [override])


def test_dotted_path_into_scalar_field_missing_from_preset():
    with pytest.raises(ConfigError):
        load_config("tetrominoes", ["trainer.num_threads.foo=1"])


def test_override_with_invalid_yaml_value():
    with pytest.raises(ConfigError):
        load_config("tetrominoes", ["optim.lr=[1,"])


def test_unknown_key_message_names_the_section():
    with pytest.raises(ConfigError, match="optim") as e:
        load_config("tetrominoes", ["optim.learning_rate=1.0"])
    assert "learning_rate" in str(e.value)


def test_unknown_preset_names_known_ones():
    with pytest.raises(ConfigError) as e:
        load_config("no_such_preset")
    msg = str(e.value)
    assert "no_such_preset" in msg
    for name in ("tetrominoes", "multi_dsprites", "clevr6", "tetrominoes_demo"):
        assert name in msg


def test_missing_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_file_with_unknown_section(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("name: x\nmodel:\n  resolution: 16\nextra:\n  a: 1\n")
    with pytest.raises(ConfigError, match="extra"):
        load_config(p)
    p.write_text("name: x\nmodel:\n  resolution: 16\n  decoder_broadcast: 16\n")
    c = load_config(p)
    assert c.model.resolution == 16 and c.model.num_slots == SlotAutoencoderConfig().num_slots


# -------------------------------------------------------------------------------- schedule


def sched(step: int) -> float:
    return warmup_exponential_decay(step, warmup_steps=10_000, decay_rate=0.5, decay_steps=100_000)


def test_schedule_hand_values():
    assert sched(0) == 0.0
    assert sched(5_000) == pytest.approx(0.5 * 0.5 ** 0.05)
    assert sched(10_000) == pytest.approx(0.5 ** 0.1)  # decay counted from step 0, not from the end of warm-up
    assert sched(100_000) == pytest.approx(0.5)
    assert sched(200_000) == pytest.approx(0.25)
    assert sched(500_000) == pytest.approx(0.5 ** 5)


def test_schedule_without_warmup():
    assert warmup_exponential_decay(0, 0, 0.5, 100) == 1.0
    assert warmup_exponential_decay(100, 0, 0.5, 100) == pytest.approx(0.5)


def test_cooldown_falls_linearly_to_zero_over_the_last_fraction():
    assert [cooldown(p, 0.25) for p in (0.0, 0.5, 0.75, 0.875, 1.0)] == pytest.approx([1, 1, 1, 0.5, 0])
    assert cooldown(0.99, 0.0) == 1.0  # off: the papers' schedules


def test_schedule_is_increasing_then_decreasing():
    values = [sched(s) for s in range(0, 10_001, 1_000)]
    assert values == sorted(values)
    after = [sched(s) for s in range(10_000, 200_001, 10_000)]
    assert after == sorted(after, reverse=True)
