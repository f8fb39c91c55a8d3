"""Tests for the ``slotlab`` command line (in-process through ``main`` and once as a subprocess)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slotlab.checkpoints import load_trained, save_trained
from slotlab.cli.main import build_parser, main, parse_args
from slotlab.config import DataConfig, ExperimentConfig, load_config, preset_summary
from slotlab.data import generate_tetrominoes, save_npz
from slotlab.data.registry import to_scene_dataset
from slotlab.errors import TrainingError
from slotlab.evaluation import evaluate_object_discovery
from slotlab.models import SlotAutoencoder
from slotlab.models.object_discovery import SlotAutoencoderConfig

PRESETS = sorted(p.stem for p in (Path(__file__).parents[1] / "configs").glob("*.yaml"))
NUM_IMAGES, K = 6, 4


def tiny_model_config(resolution: int = 32) -> SlotAutoencoderConfig:
    return SlotAutoencoderConfig(
        resolution=resolution, num_slots=K, num_iterations=2, slot_dim=16, mlp_hidden=16,
        encoder_channels=[8, 8], encoder_strides=[2, 1], decoder_broadcast=resolution // 4,
        decoder_channels=[8, 8], decoder_strides=[2, 2],
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A saved tiny model (trained on tetrominoes-style 35 px data cropped to 32) and a 35x35 .npz with masks."""
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = SlotAutoencoder(tiny_model_config())
    exp = ExperimentConfig(
        name="tiny", model=model.config,
        data=DataConfig(dataset="tetrominoes", train_size=8, val_size=4, crop=[1, 1, 32, 32], resolution=32),
    )
    save_trained(model, exp, root / "model")
    d = generate_tetrominoes(NUM_IMAGES, seed=11)
    images, masks = d["image"], d["mask"][..., 0]  # one-hot [N, K, 35, 35]
    assert images.shape == (NUM_IMAGES, 35, 35, 3)
    save_npz(root / "data.npz", images, masks)
    return {"root": root, "model": root / "model", "data": root / "data.npz", "images": images, "masks": masks}


def run_error(argv, capsys) -> str:
    """Run ``slotlab ARGV`` in-process; it must fail with code 2 and one ``slotlab: error:`` line on stderr."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("slotlab: error:"), err
    return lines[0]


# ------------------------------------------------------------------------------------ help


@pytest.mark.parametrize("command", ["train", "eval", "demo", "visualize", "presets"])
def test_help_for_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: slotlab {command}")


def test_top_level_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "eval", "demo", "visualize", "presets"):
        assert command in out


def test_version(capsys):
    from slotlab import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"slotlab {__version__}"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "the following arguments are required: COMMAND (see 'slotlab --help')"),
        (["nope"], "argument COMMAND: invalid choice: 'nope'"),
        (["train"], "train: the following arguments are required: --out (see 'slotlab train --help')"),
        (["eval", "--checkpoint", "m", "--split", "x"], "eval: argument --split: invalid choice: 'x'"),
        (["train", "p", "--out", "o", "--bogus"], "train: unrecognized arguments: --bogus (see 'slotlab train --help')"),
        (["data", "info", "x", "--bogus"], "data info: unrecognized arguments: --bogus (see 'slotlab data info --help')"),
        (["concepts", "show"], "concepts show: the following arguments are required: --library, --out"),
    ],
)
def test_usage_errors_are_one_line_naming_the_help(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.strip().splitlines() == [err.strip()] and err.startswith("slotlab: error: "), err
    assert says in err, err


# --------------------------------------------------------------------------------- presets


def test_presets_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    rows = [line.split(maxsplit=2) for line in capsys.readouterr().out.splitlines()]
    assert [row[0] for row in rows] == PRESETS
    assert all(row[1] in ("object_discovery", "set_prediction", "autoencoder", "lsd") for row in rows)
    assert [row[2] for row in rows] == [preset_summary(name) for name in PRESETS]
    assert main(["presets", "--names"]) == 0
    assert capsys.readouterr().out.split() == PRESETS
    assert {"clevr6", "tetrominoes_demo", "clevr_set_prediction", "lsd_movi_e", "autoencoder"} <= set(PRESETS)


def test_presets_prints_one_as_yaml(capsys):
    import yaml

    assert main(["presets", "clevr6"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Slot Attention, CLEVR6 (Locatello et al. 2020): the paper's settings.\n")
    values = yaml.safe_load(out)
    assert values["model"]["num_slots"] == 7
    assert values["data"]["crop"] == [29, 64, 192, 192]


# ---------------------------------------------------------------------------------- errors


def test_eval_missing_checkpoint(tmp_path, workdir, capsys):
    line = run_error(["eval", "--checkpoint", tmp_path / "nope", "--data", workdir["data"]], capsys)
    assert "nope" in line


def test_eval_missing_data_file(tmp_path, workdir, capsys):
    line = run_error(["eval", "--checkpoint", workdir["model"], "--data", tmp_path / "missing.npz"], capsys)
    assert "missing.npz" in line and "not found" in line


def test_eval_data_with_wrong_image_shape(tmp_path, workdir, capsys):
    p = tmp_path / "bad.npz"
    save_npz(p, np.zeros((2, 35, 35), np.uint8), np.zeros((2, 35, 35), np.uint8))
    line = run_error(["eval", "--checkpoint", workdir["model"], "--data", p], capsys)
    assert "bad.npz" in line and "'image'" in line


def test_eval_data_without_masks_scores_what_it_can_and_says_what_not(tmp_path, workdir, capsys):
    p = tmp_path / "nomask.npz"
    save_npz(p, workdir["images"])
    assert main(["eval", "--checkpoint", str(workdir["model"]), "--data", str(p), "--out", str(tmp_path / "m.json")]) == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["mse"] > 0 and 0 < result["attention_peak"] <= 1 and "fg_ari" not in result and "mbo_objects" not in result
    assert result["not_scored"] == "the data has no masks to score the segmentation against"
    with_masks = tmp_path / "masks.json"
    assert main(["eval", "--checkpoint", str(workdir["model"]), "--data", str(workdir["data"]), "--out", str(with_masks)]) == 0
    scored = json.loads(with_masks.read_text())
    assert "not_scored" not in scored and scored["mse"] == pytest.approx(result["mse"])


def test_data_as_image_files_a_folder_a_glob_or_one_file(tmp_path, workdir, capsys):
    """--data takes image files as they come: each image's centred square, resized to the model's resolution."""
    from PIL import Image

    from slotlab.data.registry import open_dataset

    shots = tmp_path / "shots"
    (shots / "more").mkdir(parents=True)
    wide = np.zeros((30, 60, 3), np.uint8)
    wide[:, :15], wide[:, 15:45], wide[:, 45:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    Image.fromarray(wide).save(shots / "a_wide.png")
    Image.fromarray(workdir["images"][0]).save(shots / "more" / "b.jpg", quality=95)
    Image.fromarray(np.full((20, 20), 128, np.uint8)).save(shots / "c_grey.png")
    (shots / "notes.txt").write_text("not an image")
    data = open_dataset(None, shots, 32)
    assert len(data) == 3  # sorted: a_wide.png, c_grey.png, more/b.jpg; the .txt is not an image
    first = data[torch.tensor([0])]["image"][0]  # [3, 32, 32] in [-1, 1]: the centre square only, all green
    assert torch.allclose(first, torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1), atol=0.02)
    assert len(open_dataset(None, f"{shots}/*.png", 32)) == 2 and len(open_dataset(None, shots / "c_grey.png", 32)) == 1
    assert "labels" not in data[torch.tensor([0])]
    out = tmp_path / "grid.png"
    assert main([str(a) for a in ["visualize", "--checkpoint", workdir["model"], "--data", shots, "--out", out]]) == 0
    assert Image.open(out).size[0] > 0
    capsys.readouterr()
    assert main([str(a) for a in ["eval", "--checkpoint", workdir["model"], "--data", shots, "--no-progress"]]) == 0
    assert json.loads(capsys.readouterr().out)["not_scored"].startswith("the data has no masks")
    line = run_error(["visualize", "--checkpoint", workdir["model"], "--data", shots / "notes.txt", "--out", out], capsys)
    assert line.endswith("notes.txt: give a store, a .npz file or image files, not a .txt")
    (tmp_path / "empty").mkdir()
    assert "no image files" in run_error(["eval", "--checkpoint", workdir["model"], "--data", tmp_path / "empty"], capsys)


def test_train_unknown_preset(tmp_path, capsys):
    line = run_error(["train", "no_such_preset", "--out", tmp_path / "run"], capsys)
    assert "no_such_preset" in line and "tetrominoes" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override", ["optim.lr", "optim.learning_rate=1.0"])
def test_train_bad_override(tmp_path, capsys, override):
    line = run_error(["train", "tetrominoes", override, "--out", tmp_path / "run"], capsys)
    assert "optim" in line
    assert not (tmp_path / "run").exists()


def test_train_override_with_invalid_yaml(tmp_path, capsys):
    run_error(["train", "tetrominoes", "optim.lr=[1,", "--out", tmp_path / "run"], capsys)


def test_train_overrides_after_out_option_parse():
    args = parse_args(["train", "tetrominoes", "--out", "runs/x", "optim.lr=2.0e-4"])
    assert args.overrides == ["optim.lr=2.0e-4"] and args.out == "runs/x"


def test_train_overrides_before_out_option_parse():
    args = build_parser().parse_args(["train", "tetrominoes", "optim.lr=2.0e-4", "data.seed=3", "--out", "runs/x"])
    assert args.preset == "tetrominoes" and args.overrides == ["optim.lr=2.0e-4", "data.seed=3"] and args.out == "runs/x"


def test_error_output_as_a_real_process(tmp_path, workdir):
    # the real stderr: no traceback, no warnings, exactly one line
    p = tmp_path / "bad.npz"
    save_npz(p, np.zeros((2, 35, 35, 4), np.uint8))
    r = subprocess.run([sys.executable, "-m", "slotlab.cli.main", "eval", "--checkpoint", str(workdir["model"]),
                        "--data", str(p)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slotlab: error:"), r.stderr
    assert "[2, 35, 35, 4]" in lines[0]



def test_python_dash_m_slotlab_keeps_the_exit_status(tmp_path):
    r = subprocess.run([sys.executable, "-m", "slotlab", "train", "tetrominoes_demo", "--out", str(tmp_path / "run"),
                        "model.no_such_key=1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith("slotlab: error:"), r.stderr
    assert not (tmp_path / "run").exists()


# -------------------------------------------------------------------------- eval, visualize


def test_saved_model_loads(workdir):
    model, exp = load_trained(workdir["model"])
    assert not model.training
    assert model.config == tiny_model_config()
    assert exp.data.crop == [1, 1, 32, 32] and exp.name == "tiny"


def test_eval_round_trip(tmp_path, workdir, capsys):
    out = tmp_path / "sub" / "m.json"
    assert main(["eval", "--checkpoint", str(workdir["model"]), "--data", str(workdir["data"]), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    stdout = capsys.readouterr().out
    assert json.loads(stdout[stdout.index("{"):]) == metrics  # also printed
    assert metrics["num_images"] == NUM_IMAGES
    for key in ("fg_ari", "ari"):
        assert isinstance(metrics[key], float) and -1.0 <= metrics[key] <= 1.0 and not math.isnan(metrics[key])
    assert metrics["mse"] >= 0
    # the 35 px images were cropped with the training crop [1, 1, 32, 32]: same numbers as evaluating by hand
    model, _ = load_trained(workdir["model"])
    ds = to_scene_dataset(workdir["images"], workdir["masks"], [1, 1, 32, 32], 32)
    expected = evaluate_object_discovery(model, ds, batch_size=64, seed=0)
    assert metrics["fg_ari"] == pytest.approx(expected["fg_ari"], abs=1e-6)
    assert metrics["ari"] == pytest.approx(expected["ari"], abs=1e-6)
    assert metrics["mse"] == pytest.approx(expected["mse"], rel=1e-5)


def test_eval_takes_the_models_eval_iterations_and_says_so(tmp_path, workdir):
    torch.manual_seed(0)
    model = SlotAutoencoder(replace(tiny_model_config(), eval_iterations=4))
    exp = ExperimentConfig(name="t4", model=model.config, data=DataConfig(dataset="tetrominoes", crop=[1, 1, 32, 32],
                                                                          resolution=32))
    save_trained(model, exp, tmp_path / "model")
    out = tmp_path / "m.json"
    assert main([str(a) for a in ["eval", "--checkpoint", tmp_path / "model", "--data", workdir["data"], "--out",
                                  out]]) == 0
    metrics = json.loads(out.read_text())
    ds = to_scene_dataset(workdir["images"], workdir["masks"], [1, 1, 32, 32], 32)
    assert metrics["num_iterations"] == 4
    expected = evaluate_object_discovery(model.eval(), ds, seed=0, num_iterations=4)
    assert metrics["fg_ari"] == pytest.approx(expected["fg_ari"], abs=1e-6)


def test_eval_with_more_slots_and_iterations_than_trained(tmp_path, workdir, capsys):
    out = tmp_path / "m.json"
    argv = ["eval", "--checkpoint", workdir["model"], "--data", workdir["data"], "--out", out]
    assert main([str(a) for a in [*argv, "--num-slots", K + 2, "--num-iterations", 5]]) == 0
    metrics = json.loads(out.read_text())
    model, _ = load_trained(workdir["model"])
    ds = to_scene_dataset(workdir["images"], workdir["masks"], [1, 1, 32, 32], 32)
    expected = evaluate_object_discovery(model, ds, seed=0, num_slots=K + 2, num_iterations=5)
    assert metrics["fg_ari"] == pytest.approx(expected["fg_ari"], abs=1e-6)
    assert (metrics["num_slots"], metrics["num_iterations"]) == (K + 2, 5)
    assert metrics["fg_ari"] != pytest.approx(evaluate_object_discovery(model, ds, seed=0)["fg_ari"], abs=1e-9)
    capsys.readouterr()
    # learned slot queries fix K: one line, not a traceback
    learned = SlotAutoencoder(replace(tiny_model_config(), slot_init="learned"))
    save_trained(learned, ExperimentConfig(name="q", model=learned.config, data=DataConfig(
        dataset="tetrominoes", train_size=8, val_size=4, crop=[1, 1, 32, 32], resolution=32)), tmp_path / "q")
    line = run_error(["eval", "--checkpoint", tmp_path / "q", "--data", workdir["data"], "--num-slots", K + 1], capsys)
    assert "fixed" in line


def test_eval_stdout_is_exactly_the_json(workdir, capsys):
    assert main(["eval", "--checkpoint", str(workdir["model"]), "--data", str(workdir["data"])]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["num_images"] == NUM_IMAGES
    assert "evaluate" in captured.err  # the progress bar, on stderr
    assert main(["eval", "--checkpoint", str(workdir["model"]), "--data", str(workdir["data"]), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["num_images"] == NUM_IMAGES
    assert "evaluate" not in captured.err


def test_eval_default_data_is_the_validation_split(tmp_path, workdir, capsys):
    out = tmp_path / "m.json"
    assert main(["eval", "--checkpoint", str(workdir["model"]), "--batch-size", "3", "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["num_images"] == 4  # data.val_size of the saved experiment
    assert -1.0 <= metrics["fg_ari"] <= 1.0
    assert metrics["data"] == "validation split"


def test_eval_split_test_scores_the_held_out_split(tmp_path, workdir):
    from slotlab.checkpoints import load_trained
    from slotlab.data.registry import build_dataset
    from slotlab.kinds import evaluate

    out = tmp_path / "m.json"
    assert main(["eval", "--checkpoint", str(workdir["model"]), "--split", "test", "--batch-size", "3",
                 "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["data"] == "test split"
    model, config = load_trained(workdir["model"])
    test = build_dataset(config.data, "test")
    assert metrics["num_images"] == len(test)
    assert metrics["fg_ari"] == pytest.approx(evaluate(model, test, batch_size=3, seed=0)["fg_ari"])
    val = build_dataset(config.data, "val")
    assert not torch.equal(torch.as_tensor(test.images), torch.as_tensor(val.images))


def test_visualize_writes_a_png(tmp_path, workdir, capsys):
    out = tmp_path / "g.png"
    assert main(["visualize", "--checkpoint", str(workdir["model"]), "--data", str(workdir["data"]), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        width, height = im.size
    # one row per image (6 < --num-images 8); columns: input, recon, segment, truth, K masks, K slot contents.
    # Each tile is the 32 px image scaled 3x, with 2 px padding, under a 14 px header (visualize.slot_grid).
    rows, cols, tile = NUM_IMAGES, 4 + 2 * K, 3 * 32
    assert width == cols * (tile + 2) + 2
    assert height == 14 + rows * (tile + 2) + 2


def test_visualize_num_images(tmp_path, workdir, capsys):
    out = tmp_path / "g2.png"
    argv = ["visualize", "--checkpoint", str(workdir["model"]), "--data", str(workdir["data"]), "--out", str(out),
            "--num-images", "2"]
    assert main(argv) == 0
    with Image.open(out) as im:
        assert im.size[1] == 14 + 2 * (3 * 32 + 2) + 2


# ---------------------------------------------------------------------------------- training


def test_nan_loss_raises_training_error():
    from slotlab.kinds import kind

    torch.manual_seed(0)
    cfg = ExperimentConfig(model=tiny_model_config(16), data=DataConfig(resolution=16))
    module = kind("object_discovery").build_module(cfg)
    images = torch.zeros(2, 3, 16, 16)
    images[0, 0, 3, 4] = float("nan")
    with pytest.raises(TrainingError) as e:
        module.training_step({"image": images}, 0)
    assert "loss" in str(e.value)
    assert "nan" in str(e.value).lower()


def test_bare_resume_followed_by_overrides():
    args = parse_args(["train", "tetrominoes", "--out", "runs/x", "--resume", "optim.lr=1e-4", "data.seed=2"])
    assert args.resume == "last" and args.overrides == ["optim.lr=1e-4", "data.seed=2"]
    args = parse_args(["train", "tetrominoes", "--out", "runs/x", "--resume", "runs/x/checkpoints/last.ckpt"])
    assert args.resume == "runs/x/checkpoints/last.ckpt" and args.overrides == []


@pytest.mark.parametrize(
    "argv, preset, resume, overrides",
    [
        (["--out", "D", "--resume"], None, "last", []),
        (["--out", "D", "--resume", "a.ckpt", "x.y=1"], None, "a.ckpt", ["x.y=1"]),
        (["--out", "D", "--resume", "x.y=1", "z.w=2"], None, "last", ["x.y=1", "z.w=2"]),
        (["--out", "D", "--resume=x.y=1", "z.w=2"], None, "last", ["x.y=1", "z.w=2"]),
        (["P", "--out", "D", "x.y=1", "--resume"], "P", "last", ["x.y=1"]),
        (["--out", "D", "x.y=1", "--resume", "x.y=2"], None, "last", ["x.y=1", "x.y=2"]),  # the later one wins
        (["--out", "D", "--resume", "runs/e/checkpoints/epoch=3-step=9.ckpt"], None,
         "runs/e/checkpoints/epoch=3-step=9.ckpt", []),
        (["runs/lr=2e-4/model/experiment.yaml", "--out", "D"], "runs/lr=2e-4/model/experiment.yaml", None, []),
        (["--out", "D", "x.y=1"], None, None, ["x.y=1"]),  # no preset: cmd_train names it
    ],
)
def test_train_without_a_preset_parses_the_resume_and_the_overrides(argv, preset, resume, overrides):
    args = parse_args(["train", *argv])
    assert (args.preset, args.resume, args.overrides) == (preset, resume, overrides)


def test_data_references_scores_reference_segmentations_of_a_store(tmp_path):
    from slotlab.data.convert import write_procedural_store

    store = write_procedural_store("tetrominoes", tmp_path / "store", 12, 0, 32)
    assert main(["data", "references", str(store.root), "--grid", "32", "--grid", "4", "--last", "8",
                 "--out", str(tmp_path / "ref.json")]) == 0
    ref = json.loads((tmp_path / "ref.json").read_text())
    assert ref["num_images"] == 8 and ref["voronoi"]["num_objects"] == 8 * 3
    assert ref["voronoi"]["fg_ari"] == pytest.approx(1.0)  # every piece whole in its own segment
    assert ref["voronoi"]["mbo_objects"] < 0.6  # ... but sharing it with a third of the ground
    assert ref["pooled_32"]["mbo_objects"] == pytest.approx(1.0)  # the ground truth at its own resolution
    assert ref["pooled_4"]["mbo_objects"] < ref["pooled_32"]["mbo_objects"]


def test_plot_curves_and_tables(tmp_path, capsys):
    from PIL import Image

    for name, scale in (("a", 1.0), ("b", 0.5)):
        run = tmp_path / name
        run.mkdir()
        rows = [{"step": s, "seconds": 30.0 * s, "fg_ari": scale * s / 4, "mse": 1 / s} for s in (1, 2, 3)]
        (run / "curve.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "sec')
    out = tmp_path / "p" / "curves.png"
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "b" / "curve.jsonl"), "--metric", "fg_ari", "mse",
                 "--x", "minutes", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 300
    table = tmp_path / "t.json"
    table.write_text(json.dumps({"x": [1, 2, 3], "xlabel": "T", "series": {"fg_ari": [0.5, 0.7, 0.8]}}))
    assert main(["plot", "--table", str(table), "--out", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").is_file()
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "a"), "--metric", "nope", "--out", str(tmp_path / "x.png")]) == 2
    assert "none of the runs has nope" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--cold"], "--cold goes with --task lsd"),
        (["--slot-attention-set", "optim.lr=1e-3"], "--slot-attention-set goes with --task lsd"),
        (["--task", "lsd", "--cold", "--slot-attention-set", "optim.lr=1e-3"], "which --cold leaves out"),
    ],
)
def test_demo_stage_options_that_do_not_fit_are_one_line(tmp_path, capsys, args, says):
    assert says in run_error(["demo", "--out", tmp_path / "demo", *args], capsys)
    assert not (tmp_path / "demo").exists()


def test_a_model_config_its_modules_refuse_is_one_line_and_leaves_no_run(tmp_path, capsys):
    line = run_error(["train", "tetrominoes_demo", "--out", tmp_path / "run", "--no-progress",
                      "data.train_size=8", "data.val_size=4", "model.encoder_channels=[8,8]"], capsys)
    assert "model: 2 conv channels but" in line
    assert not (tmp_path / "run").exists()


def test_object_discovery_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "data.train_size=64", "optim.max_steps=20", "trainer.val_every_n_steps=10",
                 "trainer.checkpoint_every_n_steps=10", "trainer.num_threads=1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 320 and metrics["steps"] == 20 and metrics["step"] in (10, 20)
    assert 0 <= metrics["fg_ari"] <= 1 and (out / "grid.png").is_file() and (out / "model" / "config.json").is_file()
    assert "FG-ARI" in capsys.readouterr().out
    assert metrics["num_iterations"] == load_config("tetrominoes_demo").model.eval_iterations == 5  # the preset's T


def test_plot_refuses_bad_curves_and_tables_in_one_line(tmp_path, capsys):
    png, curve, table, out = tmp_path / "a.png", tmp_path / "curve.jsonl", tmp_path / "t.json", tmp_path / "x.png"
    Image.new("RGB", (4, 4)).save(png)
    assert run_error(["plot", png, "--out", out], capsys) == f"slotlab: error: {png}: not a curve.jsonl (not text)"
    curve.write_text('{"step": 1, "fg_ari": 0.5}\n5\n')
    assert f"{curve}, line 2: not a curve row" in run_error(["plot", curve, "--out", out], capsys)
    curve.write_text('{"step": 1, "fg_ari": 0.5}\n')
    assert "have seconds (needed for --x minutes)" in run_error(["plot", curve, "--x", "minutes", "--out", out], capsys)
    for bad, says in (({"x": [1, 2], "series": [1, 2]}, '"series" must be'), ({"x": 5, "series": {"a": [1]}}, '"x" must'),
                      ({"x": [1], "series": {"a": [[1]]}}, "series 'a' must be a list of numbers")):
        table.write_text(json.dumps(bad))
        assert run_error(["plot", "--table", table, "--out", out], capsys).startswith(f"slotlab: error: {table}: {says}")
    assert not out.exists()


def test_concepts_tile_size_has_an_upper_bound(tmp_path, capsys):
    argv = ["concepts", "show", "--library", tmp_path / "none.safetensors", "--out", tmp_path / "x.png"]
    assert run_error([*argv, "--tile-size", "100000"], capsys) == "slotlab: error: --tile-size must be <= 1024, got 100000"


def test_help_names_the_models_a_command_takes(workdir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["reconstruct", "--help"])
    assert "trained Latent Slot Diffusion model (only LSD" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["concepts", "build", "--help"])
    assert "LSD or object discovery (not set prediction)" in " ".join(capsys.readouterr().out.split())
    argv = ["reconstruct", "--checkpoint", workdir["model"], "--data", workdir["data"], "--out", tmp_path / "r.png"]
    assert "works only with a Latent Slot Diffusion model" in run_error(argv, capsys)


@pytest.mark.parametrize(
    ("command", "flag"),
    [(["visualize"], "--num-images"), (["reconstruct"], "--num-images"), (["fid"], "--features"), (["demo"], "--task"),
     *[(["data", action], "--no-progress") for action in ("download", "convert", "cache-latents", "generate", "references")]],
)
def test_options_have_a_help_line(command, flag):
    import argparse

    parser = build_parser()
    for name in command:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    (action,) = [a for a in parser._actions if flag in a.option_strings]
    assert action.help and len(action.help) > 5
