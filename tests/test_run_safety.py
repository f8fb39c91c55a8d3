"""Run safety: no file runs code when loaded, one writer per folder, exact resume, and one line for every fault.

Faults are real where the machine allows: a pickle that would write a marker file, a second process holding a
folder's lock, a process killed with SIGKILL or interrupted with SIGINT, a 1 MiB tmpfs that fills up.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from slotlab.cli.main import main
from slotlab.config import load_config, preset_path
from slotlab.data import generate_tetrominoes
from slotlab.errors import ConfigError
from slotlab.experiment import train

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["optim.batch_size=4", "data.train_size=24", "data.val_size=4", "trainer.max_time_minutes=null",
        "trainer.val_every_n_steps=2", "trainer.checkpoint_every_n_steps=2", "trainer.precision=32-true",
        "trainer.channels_last=false", "model.encoder_channels=[8,8,8]", "model.slot_dim=16", "model.mlp_hidden=16",
        "optim.warmup_steps=0", "trainer.compile=false"]


def one_line_error(capsys, code: int = 2) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("slotlab: error:"), err
    return err[0]


def run_cli(argv, capsys) -> int:
    capsys.readouterr()
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained object-discovery run (4 steps, checkpoints at 2 and 4)."""
    out = tmp_path_factory.mktemp("safety") / "run"
    train(load_config("tetrominoes_demo", [*TINY, "optim.max_steps=4"]), out, progress=False)
    return out


# --------------------------------------------------------------------------- 1: no file runs code


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("command", ["eval", "visualize", "probe", "concepts", "edit", "reconstruct", "fid", "resume"])
def test_a_malicious_checkpoint_is_refused_before_it_runs(command, tmp_path, run, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["payload"] = _Payload(marker)
    torch.save(ckpt, evil)
    argv = {"eval": ["eval", "--checkpoint", evil],
            "visualize": ["visualize", "--checkpoint", evil, "--out", tmp_path / "v.png"],
            "probe": ["probe", "--checkpoint", evil],
            "concepts": ["concepts", "build", "--checkpoint", evil, "--out", tmp_path / "lib.safetensors"],
            "edit": ["edit", "--checkpoint", evil, "--image", 0, "--remove-slot", 0, "--out", tmp_path / "e.png"],
            "reconstruct": ["reconstruct", "--checkpoint", evil, "--out", tmp_path / "r.png"],
            "fid": ["fid", "--checkpoint", evil],
            "resume": ["train", "tetrominoes_demo", "--out", tmp_path / "r", "--resume", evil, *TINY]}[command]
    assert run_cli(argv, capsys) == 2
    assert "refused" in one_line_error(capsys)
    assert not marker.exists()
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- 2, 4: one writer per folder


def _tfrecord(path: Path, n: int) -> Path:
    from slotlab.data.formats import multi_object as mo

    spec = mo.SPECS["tetrominoes"]
    mo.write_multi_object(spec, path, generate_tetrominoes(n, seed=0))
    return path


def _hold(folder: Path, command: str) -> subprocess.Popen:
    """Another process that holds the folder's writer lock until it is killed."""
    code = (f"from slotlab.io import FolderLock; import time\n"
            f"with FolderLock({str(folder)!r}, {command!r}):\n    print('held', flush=True)\n    time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, run, capsys):
    source = _tfrecord(tmp_path / "t.tfrecords", 8)
    targets = {
        "convert": ["data", "convert", "tetrominoes", source, tmp_path / "store", "--no-progress"],
        "generate": ["data", "generate", "tetrominoes", tmp_path / "gen", "-n", 8, "--store", "--no-progress"],
        "train": ["train", "tetrominoes_demo", "--out", tmp_path / "train", "--no-progress", *TINY],
        "resume": ["train", "tetrominoes_demo", "--out", run, "--no-progress", "--resume", *TINY,
                   "optim.max_steps=6"],
    }
    for name, argv in targets.items():
        folder = Path(argv[4] if name == "convert" else argv[3])
        holder = _hold(folder, f"data convert (test holder for {name})")
        try:
            before = sorted(p.name for p in folder.iterdir())
            assert run_cli(argv, capsys) == 2, name
            line = one_line_error(capsys)
            assert "being written by another slotlab process" in line and f"pid {holder.pid}" in line, line
            assert sorted(p.name for p in folder.iterdir()) == before, name  # nothing written
        finally:
            holder.kill()
            holder.wait()
    # once the holder is gone, the same command runs
    assert run_cli(targets["convert"], capsys) == 0


def test_two_conversions_racing_for_one_folder_leave_one_consistent_store(tmp_path):
    source = _tfrecord(tmp_path / "t.tfrecords", 64)
    cmd = [sys.executable, "-m", "slotlab", "data", "convert", "tetrominoes", str(source), str(tmp_path / "store"),
           "--no-progress"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(*p.communicate(timeout=300), p.returncode) for p in procs]
    codes = sorted(code for _, _, code in results)
    assert codes in ([0, 0], [0, 2]), results
    for _, err, code in results:
        if code == 2:
            assert "being written by another slotlab process" in err and len(err.strip().splitlines()) == 1
    from slotlab.data.store import Store

    store = Store(tmp_path / "store")
    assert len(store) == 64 and np.unique(store["source_index"]).size == 64


# --------------------------------------------------------------------------- 3, 6: resume rules


def test_resume_without_a_checkpoint_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(["train", "tetrominoes_demo", "--out", out, "--resume", *TINY], capsys) == 2
    assert "last.ckpt" in one_line_error(capsys) and not out.exists()


def test_resume_applies_what_can_change_and_refuses_the_rest(tmp_path, capsys):
    out = tmp_path / "run"
    train(load_config("tetrominoes_demo", [*TINY, "optim.max_steps=2"]), out, progress=False)
    before = (out / "curve.jsonl").read_text()
    for override, key in [("optim.lr=0.5", "optim.lr"), ("model.slot_dim=32", "model.slot_dim"),
                          ("optim.batch_size=8", "optim.batch_size"), ("data.seed=3", "data.seed")]:
        assert run_cli(["train", "tetrominoes_demo", "--out", out, "--resume", *TINY, "optim.max_steps=4", override],
                       capsys) == 2
        line = one_line_error(capsys)
        assert key in line and "cannot change on --resume" in line, line
        assert (out / "curve.jsonl").read_text() == before
    assert run_cli(["train", "tetrominoes_demo", "--out", out, "--no-progress", "--resume", *TINY, "optim.max_steps=4",
                    "trainer.val_every_n_steps=4"], capsys) == 0
    record = (out / "model" / "experiment.yaml").read_text()
    assert "max_steps: 4" in record and "val_every_n_steps: 4" in record
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4 and ckpt["hyper_parameters"]["config"]["optim"]["max_steps"] == 4


def test_resume_takes_the_runs_own_settings_and_the_overrides_given(tmp_path, capsys):
    """The overrides the run started with need not be given again; an edited preset file does not change the run;
    another task's preset is refused."""
    out, preset = tmp_path / "run", tmp_path / "mine.yaml"
    preset.write_text(Path(preset_path("tetrominoes_demo")).read_text())
    assert run_cli(["train", preset, "--out", out, "--no-progress", *TINY, "optim.max_steps=2"], capsys) == 0
    preset.write_text(preset.read_text().replace("lr: 2.0e-3", "lr: 0.5"))
    assert run_cli(["train", preset, "--out", out, "--no-progress", "--resume", "optim.max_steps=3"], capsys) == 0
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    config = ckpt["hyper_parameters"]["config"]
    assert ckpt["global_step"] == 3 and config["optim"]["max_steps"] == 3 and config["data"]["train_size"] == 24
    assert config["optim"]["lr"] == 2e-3
    assert run_cli(["train", preset, "--out", out, "--resume", "optim.lr=0.5"], capsys) == 2
    assert "optim.lr cannot change on --resume" in one_line_error(capsys)
    assert run_cli(["train", "clevr_set_prediction_demo", "--out", out, "--resume"], capsys) == 2
    assert f"trains set_prediction but the run of {out}/checkpoints/last.ckpt (tetrominoes_demo) trains " \
           "object_discovery; give that run's preset" in one_line_error(capsys)
    # resuming a checkpoint into a folder that holds another run would write over that run
    other = tmp_path / "other"
    assert run_cli(["train", preset, "--out", other, "--no-progress", *TINY, "optim.max_steps=2"], capsys) == 0
    before = (other / "curve.jsonl").read_text()
    assert run_cli(["train", preset, "--out", other, "--resume", out / "checkpoints" / "last.ckpt"], capsys) == 2
    assert "already holds another training run" in one_line_error(capsys)
    assert (other / "curve.jsonl").read_text() == before
    fresh = tmp_path / "fresh"
    assert run_cli(["train", preset, "--out", fresh, "--no-progress", "--resume", out / "checkpoints" / "last.ckpt",
                    "optim.max_steps=4"], capsys) == 0
    assert torch.load(fresh / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    # the preset may be left out: the run's own settings are in its checkpoint
    assert run_cli(["train", "--out", fresh, "--no-progress", "--resume", "optim.max_steps=5"], capsys) == 0
    assert torch.load(fresh / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5
    assert run_cli(["train", "--out", fresh, "--no-progress", "--resume", fresh / "checkpoints" / "last.ckpt",
                    "optim.max_steps=6"], capsys) == 0
    assert torch.load(fresh / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    assert run_cli(["train", "--out", tmp_path / "new", "optim.max_steps=6"], capsys) == 2
    assert "give a preset" in one_line_error(capsys)


def test_resume_refuses_to_set_what_the_run_estimates(tmp_path, capsys):
    out = tmp_path / "ae"
    tiny = ["model.resolution=16", "data.resolution=16", "model.block_out_channels=[8,16]", "model.norm_num_groups=4",
            "optim.batch_size=4", "data.train_size=8", "data.val_size=4", "trainer.max_time_minutes=null",
            "trainer.precision=32-true", "trainer.channels_last=false", "optim.max_steps=1", "optim.warmup_steps=0"]
    assert run_cli(["train", "autoencoder_demo", "--out", out, "--no-progress", *tiny], capsys) == 0
    assert run_cli(["train", "autoencoder_demo", "--out", out, "--resume", "model.scaling_factor=0.5"], capsys) == 2
    assert "model.scaling_factor cannot change on --resume" in one_line_error(capsys)


def test_resume_from_an_exported_autoencoder_config_takes_its_estimated_scaling_factor():
    """An autoencoder's model/experiment.yaml records the scaling factor estimated when training ended; resuming the
    run from that file is not a change of settings (the resumed run estimates it again), a changed fixed one is."""
    from slotlab.experiment import resumed_config

    saved = load_config("autoencoder_demo")
    assert saved.model.scaling_factor is None
    exported = load_config("autoencoder_demo", ["model.scaling_factor=0.62", "optim.max_steps=4000"])
    assert resumed_config(saved, exported).model.scaling_factor is None
    assert resumed_config(saved, exported).optim.max_steps == 4000
    fixed = load_config("autoencoder_demo", ["model.scaling_factor=0.5"])
    with pytest.raises(ConfigError, match="model.scaling_factor cannot change on --resume"):
        resumed_config(fixed, exported)


# --------------------------------------------------------------------------- 5: exact resume


RESUMABLE = {
    "object_discovery": ("tetrominoes_demo", []),
    "object_discovery_learned": ("tetrominoes_demo", ["model.slot_init=learned"]),
    "invariant": ("tetrominoes_demo", ["model.slot_frame=translation"]),
    "set_prediction": ("clevr_set_prediction_demo", ["model.resolution=32", "data.resolution=32",
                                                     "model.encoder_strides=[2,2,1]", "model.head_hidden=16"]),
}


@pytest.mark.parametrize("name", sorted(RESUMABLE))
def test_resumed_training_equals_uninterrupted_training_bit_for_bit(name, tmp_path):
    preset, extra = RESUMABLE[name]
    base = [*TINY, *extra, "trainer.checkpoint_every_n_steps=3"]
    straight = train(load_config(preset, [*base, "optim.max_steps=6"]), tmp_path / "a", progress=False)
    train(load_config(preset, [*base, "optim.max_steps=3"]), tmp_path / "b", progress=False)
    torch.manual_seed(12345)  # whatever the global state is before a resume, the checkpoint's comes back
    resumed = train(load_config(preset, [*base, "optim.max_steps=6"]), tmp_path / "b", resume="last", progress=False)
    for (k, a), b in zip(straight.module.model.state_dict().items(), resumed.module.model.state_dict().values()):
        assert torch.equal(a, b), k


class StopAt(L.Callback):
    """Stops training after ``step`` as a time limit does (Lightning's Timer sets ``should_stop`` after a batch)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def test_a_run_stopped_between_checkpoints_saves_its_last_step_and_resumes_bit_for_bit(tmp_path):
    """A run stopped between periodic checkpoints (by its time limit) writes last.ckpt at the step it stopped, after
    the validation that stopping runs; the resumed run goes on from there and ends where the uninterrupted one does."""
    base = [*TINY, "trainer.checkpoint_every_n_steps=3", "trainer.val_every_n_steps=3", "optim.max_steps=9"]
    straight = train(load_config("tetrominoes_demo", base), tmp_path / "a", progress=False)
    out = tmp_path / "b"
    train(load_config("tetrominoes_demo", base), out, progress=False, callbacks=[StopAt(5)])
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5
    assert [json.loads(r)["step"] for r in (out / "curve.jsonl").read_text().splitlines()] == [3, 5]
    resumed = train(load_config("tetrominoes_demo", base), out, resume="last", progress=False)
    for (k, a), b in zip(straight.module.model.state_dict().items(), resumed.module.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert [json.loads(r)["step"] for r in (out / "curve.jsonl").read_text().splitlines()] == [3, 5, 6, 9]


def test_a_time_limited_run_checkpoints_the_step_it_stopped_at_and_says_how_to_go_on(tmp_path, capsys):
    out = tmp_path / "run"
    overrides = [*TINY, "trainer.max_time_minutes=0.002", "trainer.checkpoint_every_n_steps=1000",
                 "trainer.val_every_n_steps=1000", "optim.max_steps=100000"]
    assert run_cli(["train", "tetrominoes_demo", "--out", out, "--no-progress", *overrides], capsys) == 0
    step = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    rows = [json.loads(r)["step"] for r in (out / "curve.jsonl").read_text().splitlines()]
    assert 1 <= step < 1000 and rows[-1] == step
    said, hint = capsys.readouterr().out.splitlines()[-2:]
    assert said == f"stopped by trainer.max_time_minutes=0.002 at step {step} of 100000; to train on:"
    argv = shlex.split(hint)
    assert argv[:5] == ["slotlab", "train", "--out", str(out), "--resume"], hint  # no preset: the run's own
    minutes = float(argv[5].removeprefix("trainer.max_time_minutes="))
    assert minutes > 0.002 and len(argv) == 6  # the minutes trained (the limit and some) and as many again
    assert run_cli([*argv[1:], "--no-progress"], capsys) == 0
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] > step


def test_the_progress_bar_of_a_time_limited_run_shows_the_minutes_left(tmp_path, capsys):
    overrides = [*TINY, "trainer.max_time_minutes=5", "optim.max_steps=3"]
    train(load_config("tetrominoes_demo", overrides), tmp_path / "run", progress=True)
    bar = "".join(capsys.readouterr())
    assert re.search(r"left=[45]\.\d min", bar), bar[-500:]
    train(load_config("tetrominoes_demo", [*TINY, "optim.max_steps=3"]), tmp_path / "run2", progress=True)
    bar = "".join(capsys.readouterr())
    assert "Epoch 0" in bar and "left=" not in bar


@pytest.mark.parametrize("ema", [[], ["trainer.ema_decay=0.5"]], ids=["plain", "ema"])
def test_resumed_autoencoder_estimates_its_scaling_factor_again(tmp_path, ema):
    """The checkpoint of the first half carries that half's estimate; the resumed run trains on, so it estimates the
    factor again at its end, and gets the uninterrupted run's (with an EMA too, whose averaged copy is patched)."""
    tiny = [*ema, "model.resolution=16", "data.resolution=16", "model.block_out_channels=[8,16]",
            "model.norm_num_groups=4", "optim.batch_size=4", "data.train_size=8", "data.val_size=4", "trainer.max_time_minutes=null",
            "trainer.precision=32-true", "trainer.channels_last=false", "trainer.val_every_n_steps=100",
            "trainer.checkpoint_every_n_steps=3", "optim.warmup_steps=0"]
    straight = train(load_config("autoencoder_demo", [*tiny, "optim.max_steps=6"]), tmp_path / "a", progress=False)
    half = train(load_config("autoencoder_demo", [*tiny, "optim.max_steps=3"]), tmp_path / "b", progress=False)
    first = half.module.model.config.scaling_factor
    from slotlab.checkpoints import load_trained

    assert load_trained(tmp_path / "b" / "checkpoints" / "last.ckpt")[0].config.scaling_factor == first
    resumed = train(load_config("autoencoder_demo", [*tiny, "optim.max_steps=6"]), tmp_path / "b", resume="last",
                    progress=False)
    value = resumed.module.model.config.scaling_factor
    assert value == straight.module.model.config.scaling_factor and value != first
    assert json.loads((tmp_path / "b" / "model" / "image_autoencoder.json").read_text())["scaling_factor"] == value


def test_resume_keeps_what_auto_chose_and_goes_on_bit_for_bit(tmp_path, capsys):
    """The checkpoint records what "auto" chose; a resume asking "auto" again takes that choice without timing."""
    from slotlab.checkpoints import config_of_checkpoint, read_checkpoint

    auto = [*TINY, "trainer.precision=auto", "trainer.channels_last=auto", "trainer.checkpoint_every_n_steps=3"]
    train(load_config("tetrominoes_demo", [*auto, "optim.max_steps=3"]), tmp_path / "b", progress=False)
    assert "trainer auto switches" in capsys.readouterr().out
    ckpt = tmp_path / "b" / "checkpoints" / "last.ckpt"
    chosen = config_of_checkpoint(read_checkpoint(ckpt), ckpt).trainer
    assert chosen.precision in ("32-true", "bf16-mixed") and chosen.channels_last in (True, False)
    resumed = train(load_config("tetrominoes_demo", [*auto, "optim.max_steps=6"]), tmp_path / "b", resume="last",
                    progress=False)
    assert "trainer auto switches" not in capsys.readouterr().out
    t = resumed.module.config.trainer
    assert (t.precision, t.channels_last) == (chosen.precision, chosen.channels_last)
    fixed = [*auto, f"trainer.precision={chosen.precision}", f"trainer.channels_last={chosen.channels_last}"]
    straight = train(load_config("tetrominoes_demo", [*fixed, "optim.max_steps=6"]), tmp_path / "a", progress=False)
    for (k, a), b in zip(straight.module.model.state_dict().items(), resumed.module.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_resumed_lsd_training_equals_uninterrupted_training(tmp_path):
    from tiny import tiny_lsd

    model = tiny_lsd(tmp_path)
    ae = model.config.autoencoder
    over = [*TINY[:8], "model.resolution=16", "data.resolution=16", "model.latent_size=8", "model.backbone=cnn",
            "model.backbone_channels=[16,16]", "model.backbone_strides=[1,2]", "model.num_slots=3", "model.slot_dim=16",
            "model.mlp_hidden=32", "model.decoder_channels=[16,32]", "model.decoder_layers_per_block=1",
            "model.decoder_attention_levels=1", "model.decoder_heads=2", "model.decoder_norm_groups=8",
            "model.cross_attention_dim=16", f"model.autoencoder={ae}", "data.dataset=clevr6", "data.train_size=12",
            "data.val_size=4", "trainer.checkpoint_every_n_steps=2"]
    straight = train(load_config("lsd_demo", [*over, "optim.max_steps=4"]), tmp_path / "a", progress=False)
    train(load_config("lsd_demo", [*over, "optim.max_steps=2"]), tmp_path / "b", progress=False)
    resumed = train(load_config("lsd_demo", [*over, "optim.max_steps=4"]), tmp_path / "b", resume="last", progress=False)
    for (k, a), b in zip(straight.module.model.state_dict().items(), resumed.module.model.state_dict().values()):
        assert torch.equal(a, b), k


# --------------------------------------------------------------------------- 7: corrupt files, one line each


def test_corrupt_and_mismatched_files_end_in_one_line(tmp_path, run, capsys):
    import shutil

    def copy_model(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(run / "model", dst)
        return dst

    truncated = copy_model("truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    text = copy_model("text")
    (text / "model.safetensors").write_text("not weights at all\n")
    bad_values = {}
    for name, value in (("four", "four"), ("negative", -3)):
        folder = copy_model(f"config_{name}")
        record = json.loads((folder / "config.json").read_text())
        record["num_slots"] = value
        (folder / "config.json").write_text(json.dumps(record))
        bad_values[name] = folder
    broken_yaml = copy_model("yaml")
    (broken_yaml / "experiment.yaml").write_text("task: [unclosed\n")
    half_ckpt = tmp_path / "half.ckpt"
    ckpt_bytes = (run / "checkpoints" / "last.ckpt").read_bytes()
    half_ckpt.write_bytes(ckpt_bytes[: len(ckpt_bytes) // 2])
    for checkpoint in (truncated, text, *bad_values.values(), broken_yaml, half_ckpt,
                       truncated / "model.safetensors"):
        assert run_cli(["eval", "--checkpoint", checkpoint], capsys) == 2, checkpoint
        one_line_error(capsys)
    # resuming from a corrupt checkpoint, in a folder of its own: refused, nothing written
    out = tmp_path / "resume"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(ckpt_bytes[:1000])
    assert run_cli(["train", "tetrominoes_demo", "--out", out, "--resume", *TINY], capsys) == 2
    one_line_error(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]


def test_files_that_are_no_checkpoint_are_named_so(tmp_path, run, capsys):
    as_ckpt = {"text.ckpt": b"{\"epoch\": 3}\n", "bytes.ckpt": bytes(range(256)),
               "renamed.ckpt": (run / "model" / "model.safetensors").read_bytes()}
    for name, content in as_ckpt.items():
        (tmp_path / name).write_bytes(content)
        for argv in (["eval", "--checkpoint", tmp_path / name],
                     ["train", "tetrominoes_demo", "--out", tmp_path / "r", "--resume", tmp_path / name, *TINY]):
            assert run_cli(argv, capsys) == 2, name
            assert "not a PyTorch checkpoint" in one_line_error(capsys), name
    (tmp_path / "notes.txt").write_text("a model\n")
    assert run_cli(["eval", "--checkpoint", tmp_path / "notes.txt"], capsys) == 2
    assert "not a checkpoint: " in one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_an_existing_model_safetensors_is_accepted_as_checkpoint(run, capsys):
    assert run_cli(["eval", "--checkpoint", run / "model" / "model.safetensors"], capsys) == 0


# --------------------------------------------------------------------------- 8: empty sources


def test_an_empty_source_makes_no_store(tmp_path, capsys):
    empty = _tfrecord(tmp_path / "empty.tfrecords", 0)
    assert run_cli(["data", "convert", "tetrominoes", empty, tmp_path / "store", "--no-progress"], capsys) == 2
    assert "no items" in one_line_error(capsys)
    from slotlab.data.store import Store

    with pytest.raises(Exception, match="unfinished|not a converted"):
        Store(tmp_path / "store")
    assert run_cli(["data", "convert", "tetrominoes", empty, tmp_path / "s2", "--limit", 0], capsys) == 2
    assert "--limit must be >= 1" in one_line_error(capsys)


def test_a_failed_conversion_leaves_no_folder(tmp_path, capsys):
    (tmp_path / "notes.tfrecords").write_text("not a record file\n")
    for source in (tmp_path / "missing.tfrecords", tmp_path / "notes.tfrecords"):
        assert run_cli(["data", "convert", "tetrominoes", source, tmp_path / "store", "--no-progress"], capsys) == 2
        one_line_error(capsys)
        assert not (tmp_path / "store").exists()


def test_fid_checks_its_concepts_before_it_loads_anything(tmp_path, capsys):
    argv = ["fid", "--checkpoint", tmp_path / "missing", "--library", tmp_path / "lib.safetensors", "--concepts", "1,x"]
    assert run_cli(argv, capsys) == 2
    assert "--concepts: '1,x' is not a concept id" in one_line_error(capsys)


def test_inputs_of_the_wrong_kind_are_named_so(tmp_path, run, capsys):
    (tmp_path / "notes.txt").write_text("scenes\n")
    (tmp_path / "folder").mkdir()
    for data, says in ((tmp_path / "notes.txt", "not a .txt"), (tmp_path / "folder", "not a converted store")):
        assert run_cli(["eval", "--checkpoint", run, "--data", data], capsys) == 2
        assert says in one_line_error(capsys)
    with pytest.raises(SystemExit) as stop:  # an override without a value, after the options
        run_cli(["train", "tetrominoes_demo", "--out", tmp_path / "r", "optim.max_steps=2", "optim.lr"], capsys)
    assert stop.value.code == 2 and "override 'optim.lr' is not of the form" in one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_outputs_of_the_wrong_kind_and_empty_presets_are_one_line(tmp_path, run, capsys):
    for out in (tmp_path / "v.xyz", tmp_path / "noext"):
        assert run_cli(["visualize", "--checkpoint", run, "--out", out], capsys) == 2
        assert "ending in .png" in one_line_error(capsys) and not out.exists()
    (tmp_path / "folder").mkdir()
    argv = ["concepts", "build", "--checkpoint", run, "--out", tmp_path / "folder", "--k", 2, "--no-progress"]
    assert run_cli(argv, capsys) == 2
    assert one_line_error(capsys) == f"slotlab: error: Is a directory: {tmp_path / 'folder'}"
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    assert run_cli(["train", tmp_path / "empty.yaml", "--out", tmp_path / "r"], capsys) == 2
    assert "an empty preset" in one_line_error(capsys) and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("command", "out", "says"),
    [
        (["reconstruct", "--checkpoint", "MISSING"], "r.jpg", "r.jpg: a picture is written as PNG; give a file name ending in .png"),
        (["edit", "--checkpoint", "MISSING", "--image", "0", "--remove-slot", "0"], "folder.png", "Is a directory"),
        (["eval", "--checkpoint", "MISSING"], "file/m.json", "Not a directory"),
        (["fid", "--checkpoint", "MISSING"], "file/fid.json", "Not a directory"),
        (["concepts", "build", "--checkpoint", "MISSING"], "folder", "Is a directory"),
        (["probe", "--checkpoint", "MISSING"], "file/p.json", "Not a directory"),
        (["compose", "--checkpoint", "MISSING", "--library", "MISSING"], "c.jpg", "ending in .png"),
        (["concepts", "show", "--library", "MISSING"], "sheet", "ending in .png"),
        (["plot", "MISSING"], "folder.png", "Is a directory"),
        (["data", "references", "MISSING"], "file/r.json", "Not a directory"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_any_work(command, out, says, tmp_path, capsys):
    """Nothing the command reads exists: the output's error comes first, before the model, the data or the sampling."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "file").write_text("")
    argv = [tmp_path / "missing" if a == "MISSING" else a for a in command] + ["--out", tmp_path / out]
    assert run_cli(argv, capsys) == 2
    assert says in one_line_error(capsys)


# --------------------------------------------------------------------------- 9: disk full, unwritable outputs


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs (needs root; skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_full_disk_ends_in_one_line_and_leaves_no_empty_checkpoint(small_disk, tmp_path, capsys):
    out = small_disk / "run"
    big = ["model.encoder_channels=[64,64,64]", "model.slot_dim=64", "model.mlp_hidden=128",
           "model.decoder_channels=[64,64]"]  # its checkpoint (weights + Adam state) does not fit in 1 MiB
    assert run_cli(["train", "tetrominoes_demo", "--out", out, "--no-progress", *TINY, *big, "optim.max_steps=2"],
                   capsys) == 2
    line = one_line_error(capsys)
    assert "No space left" in line or "disk" in line, line
    leftovers = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".ckpt", ".safetensors")]
    assert all(p.stat().st_size > 0 for p in leftovers), leftovers
    assert not [p for p in out.rglob("*.tmp")]


def test_overwrite_removes_nothing_until_the_new_run_is_known_to_start(tmp_path, run, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(run, out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    for bad in (["model.slot_heads=3"], ["model.encoder_channels=[8,8]"]):
        argv = ["train", "tetrominoes_demo", "--out", out, "--overwrite", "--no-progress", *TINY, *bad]
        assert run_cli(argv, capsys) == 2
        one_line_error(capsys)
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_a_demo_starts_over_only_in_a_folder_a_demo_wrote(tmp_path, run, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(run, out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    for task in ("object_discovery", "lsd"):
        assert run_cli(["demo", "--task", task, "--out", out, "--minutes", "0.01"], capsys) == 2
        assert "no slotlab demo wrote" in one_line_error(capsys)
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    (tmp_path / "file").write_text("not a folder")
    assert run_cli(["demo", "--out", tmp_path / "file"], capsys) == 2
    assert "is a file" in one_line_error(capsys)
    assert run_cli(["demo", "--out", tmp_path / "seed", "--seed", "-1"], capsys) == 2
    assert "--seed must be >= 0" in one_line_error(capsys) and not (tmp_path / "seed").exists()
    # a bad override of a later LSD stage is refused before the scenes are rendered
    assert run_cli(["demo", "--task", "lsd", "--out", tmp_path / "lsd", "--autoencoder-set", "optim.lr=-1"], capsys) == 2
    assert "optim.lr" in one_line_error(capsys) and not (tmp_path / "lsd").exists()


def test_outputs_through_a_link_and_under_a_file(tmp_path, run, capsys):
    target = tmp_path / "kept" / "metrics.json"
    target.parent.mkdir()
    target.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert run_cli(["eval", "--checkpoint", run, "--out", link, "--no-progress"], capsys) == 0
    assert link.is_symlink() and "fg_ari" in json.loads(target.read_text())
    (tmp_path / "file").write_text("a file where a folder should be")
    assert run_cli(["eval", "--checkpoint", run, "--out", tmp_path / "file" / "m.json", "--no-progress"], capsys) == 2
    assert one_line_error(capsys) == f"slotlab: error: Not a directory: {tmp_path / 'file'}"


def test_an_unwritable_output_ends_in_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    assert run_cli(["train", "tetrominoes_demo", "--out", blocker / "run", "--no-progress", *TINY,
                    "optim.max_steps=2"], capsys) == 2
    one_line_error(capsys)


# --------------------------------------------------------------------------- 10: numbers, before the folder


@pytest.mark.parametrize("argv,message", [
    (["train", "tetrominoes_demo", "optim.lr=-1"], "optim.lr"),
    (["train", "tetrominoes_demo", "optim.batch_size=0"], "optim.batch_size"),
    (["train", "tetrominoes_demo", "model.num_slots=0"], "model.num_slots"),
    (["train", "tetrominoes_demo", "trainer.val_every_n_steps=0"], "trainer.val_every_n_steps"),
    (["train", "tetrominoes_demo", "data.dataset=nope"], "unknown dataset"),
    (["train", "tetrominoes_demo", "trainer.seed=-1"], "trainer.seed"),
    (["train", "tetrominoes_demo", "trainer.data_seed=-1"], "trainer.data_seed"),
    (["train", "tetrominoes_demo", "data.seed=-1"], "data.seed"),
    (["train", "tetrominoes_demo", "model.slot_heads=3"], "num_heads must divide"),  # found when the model is built
])
def test_bad_numbers_and_names_touch_no_folder(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli([*argv[:2], "--out", out, *argv[2:]], capsys) == 2
    assert message in one_line_error(capsys) and not out.exists()
    # and the corrected command is not refused as "already holds a training run"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv,flag", [
    (["visualize", "--num-images", "0"], "--num-images"),
    (["reconstruct", "--steps", "-3"], "--steps"),
    (["eval", "--batch-size", "0"], "--batch-size"),
    (["eval", "--num-iterations", "0"], "--num-iterations"),
    (["edit", "--image", "0", "--remove-slot", "-1"], "--remove-slot"),
    (["edit", "--image", "0", "--insert-from-image", "1", "--insert-slot", "-1"], "--insert-slot"),
])
def test_bad_command_line_numbers_are_one_line(argv, flag, run, tmp_path, capsys):
    extra = ["--out", tmp_path / "x.png"] if argv[0] in ("visualize", "reconstruct", "edit") else []
    assert run_cli([argv[0], "--checkpoint", run, *argv[1:], *extra], capsys) == 2
    assert f"{flag} must be >= " in one_line_error(capsys)


def test_data_references_grid_must_be_positive(tmp_path, capsys):
    assert run_cli(["data", "references", tmp_path, "--grid", 0], capsys) == 2
    assert "--grid must be >= 1" in one_line_error(capsys)


# --------------------------------------------------------------------------- 11: stale curve rows


def test_resume_trims_curve_rows_past_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    train(load_config("tetrominoes_demo", [*TINY, "optim.max_steps=4", "trainer.checkpoint_every_n_steps=2",
                                           "trainer.val_every_n_steps=1"]), out, progress=False)
    # as after a kill -9 between the checkpoint at step 4 and the next: rows past it, from the lost stretch
    ckpt = out / "checkpoints" / "last.ckpt"
    with open(out / "curve.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "seconds": 9.0, "fg_ari": 0.5}) + "\n")
        f.write('{"step": 6, "sec')  # a row cut off mid-write
    assert torch.load(ckpt, weights_only=True)["global_step"] == 4
    train(load_config("tetrominoes_demo", [*TINY, "optim.max_steps=6", "trainer.checkpoint_every_n_steps=2",
                                           "trainer.val_every_n_steps=1"]), out, resume="last", progress=False)
    steps = [json.loads(line)["step"] for line in (out / "curve.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_kill_minus_9_keeps_the_last_checkpoint_and_resume_goes_on(tmp_path):
    out = tmp_path / "run"
    overrides = [*TINY, "trainer.checkpoint_every_n_steps=2", "trainer.val_every_n_steps=1", "data.train_size=64",
                 "trainer.num_threads=1"]
    argv = [sys.executable, "-m", "slotlab", "train", "tetrominoes_demo", "--out", str(out), "--no-progress",
            *overrides, "optim.max_steps=100000"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (out / "checkpoints" / "last.ckpt").is_file():
        time.sleep(0.5)
    time.sleep(3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert step >= 2
    assert main(["train", "tetrominoes_demo", "--out", str(out), "--no-progress", "--resume", *overrides,
                 f"optim.max_steps={step + 2}"]) == 0
    steps = [json.loads(line)["step"] for line in (out / "curve.jsonl").read_text().splitlines()]
    assert steps == list(range(1, step + 3))  # no step twice, none missing


def test_a_checkpoint_is_never_ahead_of_the_curve(tmp_path, monkeypatch):
    """Every checkpoint written on a validating step is written after that step's curve row, so a kill -9 between
    the two cannot lose the row (the resumed run would not validate that step again)."""
    from slotlab.training.checkpoint_io import AtomicCheckpointIO

    out, seen = tmp_path / "run", []
    save = AtomicCheckpointIO.save_checkpoint

    def recording_save(self, checkpoint, path, storage_options=None):
        curve = out / "curve.jsonl"
        rows = curve.read_text().splitlines() if curve.is_file() else []
        seen.append((checkpoint["global_step"], [json.loads(r)["step"] for r in rows]))
        save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", recording_save)
    assert main(["train", "tetrominoes_demo", "--out", str(out), "--no-progress", *TINY, "optim.max_steps=6",
                 "trainer.checkpoint_every_n_steps=2", "trainer.val_every_n_steps=2"]) == 0
    assert {step for step, _ in seen} == {2, 4, 6}
    assert all(step in rows for step, rows in seen), seen


# --------------------------------------------------------------------------- 12: mismatches


def test_a_library_of_another_model_is_refused(tmp_path, run, capsys):
    from slotlab.models import SlotAutoencoder

    other = tmp_path / "other"
    model, _ = __import__("slotlab.checkpoints", fromlist=["load_trained"]).load_trained(run)
    torch.manual_seed(1)
    SlotAutoencoder(model.config).save_pretrained(other)  # same architecture, other weights
    (other / "experiment.yaml").write_text((run / "model" / "experiment.yaml").read_text())
    lib = tmp_path / "lib.safetensors"
    assert run_cli(["concepts", "build", "--checkpoint", run, "--k", 2, "--out", lib, "--no-progress"], capsys) == 0
    assert run_cli(["compose", "--library", lib, "--checkpoint", other, "--out", tmp_path / "c.png"], capsys) == 2
    assert "built with another model" in one_line_error(capsys)
    assert run_cli(["fid", "--checkpoint", other, "--library", lib, "--features", "autoencoder"], capsys) == 2
    assert "built with another model" in one_line_error(capsys)
    assert run_cli(["compose", "--library", lib, "--checkpoint", run, "--out", tmp_path / "c.png", "--num", 2,
                    "--num-concepts", 2],
                   capsys) == 0


# --------------------------------------------------------------------------- 13, 14: messages and interrupts


def test_an_offline_vae_is_one_line_naming_the_right_key(tmp_path, capsys):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    r = subprocess.run([sys.executable, "-m", "slotlab", "train", "lsd_demo", "--out", str(tmp_path / "run"),
                        "model.autoencoder=stabilityai/stable-diffusion-2-1", "data.train_size=4", "data.val_size=2",
                        "optim.batch_size=2", "trainer.precision=32-true"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.autoencoder" in lines[0] and "model.pretrained" not in lines[0], lines


def test_ctrl_c_in_training_is_one_line_and_exit_130(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "slotlab", "train", "tetrominoes_demo", "--out", str(out), "--no-progress", *TINY,
            "optim.max_steps=100000", "trainer.checkpoint_every_n_steps=2", "data.train_size=64",
            "trainer.num_threads=1"]
    # Ctrl-C's default action even when this test runs as a background job (whose shell ignores SIGINT for it)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (out / "checkpoints" / "last.ckpt").is_file():
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # never leave a training run behind
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["slotlab: interrupted"], err
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] >= 2


def test_mask_values_out_of_range_are_named_as_such(tmp_path, capsys):
    d = generate_tetrominoes(4, seed=0)
    labels = d["mask"][..., 0].argmax(1).astype(np.int64)
    labels[0, 0, 0] = 300
    np.savez(tmp_path / "bad.npz", image=d["image"], mask=labels)
    from slotlab.data.formats.npz import load_npz
    from slotlab.errors import DataError

    with pytest.raises(DataError, match="out of range|300"):
        load_npz(tmp_path / "bad.npz")


# --------------------------------------------------------------------------- 15: downloads are checked


def test_a_truncated_download_is_refused(tmp_path, capsys):
    from slotlab.data.formats import multi_object as mo

    spec = mo.SPECS["tetrominoes"]
    mirror = tmp_path / "mirror"
    path = mirror / Path(spec.url.split("://", 1)[1].split("/", 1)[1])
    path.parent.mkdir(parents=True)
    _tfrecord(path, 4)
    path.write_bytes(path.read_bytes()[:-100])  # cut off mid-record
    assert run_cli(["data", "download", "tetrominoes", "--root", tmp_path / "root", "--mirror",
                    f"file://{mirror}", "--no-progress"], capsys) == 2
    assert "incomplete or corrupt" in one_line_error(capsys)
    assert not list((tmp_path / "root").rglob("*.tfrecords"))


def test_files_written_atomically_get_the_usual_mode(tmp_path):
    """The temporary file of an atomic write is 0600; the written file gets what open() gives (0666 minus the umask),
    so a run's outputs can be read by the group a user shares them with."""
    from slotlab.io import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "metrics.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_an_unwritable_output_is_named_not_its_temporary_file(tmp_path, run, capsys):
    """/proc takes no new files (root passes the up-front check and fails at the write, other users at the check):
    either way the error names the output the user gave, not a temporary file beside it."""
    from slotlab.io import atomic_write_text

    with pytest.raises(ConfigError, match="^cannot (create|write) /proc/slotlab-metrics.json: "):
        atomic_write_text("/proc/slotlab-metrics.json", "{}")
    assert run_cli(["eval", "--checkpoint", run, "--out", "/proc/slotlab-metrics.json", "--no-progress"], capsys) == 2
    line = one_line_error(capsys)
    assert "cannot" in line and "/proc/slotlab-metrics.json" in line and ".tmp" not in line, line


def test_a_folder_this_user_may_not_write_into_is_refused_up_front(tmp_path, monkeypatch, capsys):
    """os.access says no (as it does for other users' folders; the suite may run as root, so it is told to)."""
    from slotlab.io import check_output

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != tmp_path and real_access(p, mode))
    with pytest.raises(ConfigError, match=f"^cannot write {tmp_path}/m.json: this user may not write into {tmp_path}$"):
        check_output(tmp_path / "m.json")
    assert run_cli(["eval", "--checkpoint", tmp_path / "no-model", "--out", tmp_path / "m.json"], capsys) == 2
    assert "this user may not write into" in one_line_error(capsys)


def test_a_full_disk_names_the_output_and_leaves_no_temporary_file(small_disk):
    from slotlab.io import atomic_write_text

    with pytest.raises(OSError) as e:
        atomic_write_text(small_disk / "big.json", "x" * 2_000_000)  # 2 MB on a 1 MiB disk
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(small_disk / "big.json")
    assert not list(small_disk.iterdir())
