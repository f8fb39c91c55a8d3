"""Tests for property probing: slot-object matching, the probes, data collection and ``slotlab probe``."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from slotlab.checkpoints import save_trained
from slotlab.cli.probe import add_probe, cmd_probe
from slotlab.config import DataConfig, ExperimentConfig
from slotlab.data import SceneDataset, generate_tetrominoes, save_npz
from slotlab.data.convert import write_procedural_store
from slotlab.data.registry import store_dataset
from slotlab.errors import DataError
from slotlab.models import SlotAutoencoder
from slotlab.models.object_discovery import SlotAutoencoderConfig
from slotlab.probing import (
    CATEGORICAL,
    CONTINUOUS,
    collect_probe_data,
    match_slots_to_objects,
    slot_masks_from_attention,
    split_objects,
    train_probes,
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model_config(resolution: int = 32) -> SlotAutoencoderConfig:
    return SlotAutoencoderConfig(
        resolution=resolution, num_slots=4, num_iterations=2, slot_dim=16, mlp_hidden=16,
        encoder_channels=[8, 8], encoder_strides=[2, 1], decoder_broadcast=resolution // 4,
        decoder_channels=[8, 8], decoder_strides=[2, 2],
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A saved tiny random model (tetrominoes config at 32 px), a procedural tetrominoes store and an .npz with
    images and masks only."""
    root = tmp_path_factory.mktemp("probe")
    torch.manual_seed(0)
    model = SlotAutoencoder(tiny_model_config())
    exp = ExperimentConfig(name="tiny", model=model.config,
                           data=DataConfig(dataset="tetrominoes", train_size=8, val_size=4, crop=[1, 1, 32, 32],
                                           resolution=32))
    save_trained(model, exp, root / "model")
    store = write_procedural_store("tetrominoes", root / "store", 60, seed=0, resolution=32, progress=False)
    d = generate_tetrominoes(4, seed=3)
    save_npz(root / "plain.npz", d["image"], d["mask"][..., 0])
    return {"model": model, "model_dir": root / "model", "store": store, "npz": root / "plain.npz", "root": root}


# ------------------------------------------------------------------------------------------------ matching


def blocks(num_entities: int, size: int = 8) -> torch.Tensor:
    """One label map [size, size]: background 0 in the first rows, then a horizontal band per entity 1..E-1."""
    rows = torch.arange(size).repeat_interleave(size).reshape(size, size)
    return (rows * num_entities // size).to(torch.uint8)


def one_hot_masks(labels: torch.Tensor, slot_of_label: list[int], k: int, soft: bool = False) -> torch.Tensor:
    """Slot masks [B, K, H, W] in which slot ``slot_of_label[v]`` covers the pixels of label v."""
    slots = torch.tensor(slot_of_label)[labels.long()]  # [B, H, W]
    masks = torch.nn.functional.one_hot(slots, k).permute(0, 3, 1, 2).float()
    if soft:  # logits with noise: the argmax stays the same
        masks = torch.softmax(3 * masks + 0.5 * torch.rand(masks.shape, generator=torch.Generator().manual_seed(0)), 1)
    return masks


@pytest.mark.parametrize("soft", [False, True])
def test_matching_recovers_permuted_slots(soft):
    labels = torch.stack([blocks(4), blocks(4).flip(0)])  # [2, 8, 8], entities 0 (background) .. 3
    slot_of_label = [4, 2, 0, 3]  # background -> slot 4, entity 1 -> slot 2, entity 2 -> slot 0, entity 3 -> slot 3
    assignment = match_slots_to_objects(labels, one_hot_masks(labels, slot_of_label, 5, soft))
    assert assignment.dtype == torch.int64 and assignment.shape == (2, 4)
    assert assignment.tolist() == [[-1, 2, 0, 3]] * 2


def test_matching_absent_entity_is_unmatched():
    labels = blocks(4)[None].clone()
    labels[labels == 2] = 1  # entity 2 is absent from the image
    assignment = match_slots_to_objects(labels, one_hot_masks(labels, [0, 1, 2, 3], 4), num_entities=5)
    assert assignment.tolist() == [[-1, 1, -1, 3, -1]]  # background, absent 2 and absent 4: -1


def test_matching_more_objects_than_slots():
    labels = blocks(5, size=10)[None]  # background + 4 objects of 2 rows each
    masks = torch.zeros(1, 2, 10, 10)
    masks[:, 0] = (labels == 2).float()  # slot 0: exactly object 2
    masks[:, 1] = 1 - masks[:, 0]  # slot 1: everything else (best IoU with the background-adjacent objects)
    assignment = match_slots_to_objects(labels, masks)
    assert assignment[0, 0] == -1 and assignment[0, 2] == 0
    assert (assignment[0] >= 0).sum() == 2  # two slots: two of the four objects matched, the others -1
    assert sorted(assignment[0][assignment[0] >= 0].tolist()) == [0, 1]


def test_matching_drops_pairs_without_overlap():
    labels = blocks(3)[None]  # background, objects 1 and 2
    masks = torch.stack([(labels > 0), (labels == 0)], 1).float()  # slot 0: both objects; slot 1: the background
    assignment = match_slots_to_objects(labels, masks)
    assert (assignment[0] == 0).sum() == 1 and (assignment[0] == 1).sum() == 0  # the IoU-0 pair is dropped


def test_slot_masks_from_attention_upsamples_each_slot():
    attn = torch.softmax(torch.randn(2, 16, 3, generator=torch.Generator().manual_seed(0)), -1)  # 4x4 grid
    masks = slot_masks_from_attention(attn, 12)
    assert masks.shape == (2, 3, 12, 12)
    assert torch.allclose(masks.sum(1), torch.ones(2, 12, 12), atol=1e-5)


# ------------------------------------------------------------------------------------------------ probes


def synthetic(m: int = 600, d: int = 16, seed: int = 0) -> dict:
    """Slots [M, D] with a categorical and a continuous target that are linear in them and two that are noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, d, generator=g) * 2 + 1
    w = torch.randn(d, 3, generator=g)
    targets = {"cls": (x @ w).argmax(1), "reg": x @ w[:, :2] * 3 + 5,
               "noise_cls": torch.randint(0, 3, (m,), generator=g), "noise_reg": torch.randn(m, generator=g) * 2}
    kinds = {"cls": CATEGORICAL, "reg": CONTINUOUS, "noise_cls": CATEGORICAL, "noise_reg": CONTINUOUS}
    return {"slots": x, "targets": targets, "kinds": kinds}


def test_probes_read_linear_properties_and_not_noise():
    r = train_probes(synthetic())
    assert set(r) == {"cls", "reg", "noise_cls", "noise_reg"}
    assert r["cls"]["metric"] == "accuracy" and r["cls"]["kind"] == CATEGORICAL
    assert r["cls"]["value"] > 0.9 and r["cls"]["baseline"] < 0.6
    assert r["reg"]["metric"] == "mse" and r["reg"]["kind"] == CONTINUOUS
    assert r["reg"]["value"] < 0.02 * r["reg"]["baseline"]
    assert abs(r["noise_cls"]["value"] - r["noise_cls"]["baseline"]) < 0.15
    assert 0.8 * r["noise_reg"]["baseline"] < r["noise_reg"]["value"] < 1.5 * r["noise_reg"]["baseline"]


def test_split_is_83_17_and_seeded():
    train, test = split_objects(100, seed=0)
    assert len(train) == 83 and len(test) == 17
    assert sorted(torch.cat([train, test]).tolist()) == list(range(100))
    again = split_objects(100, seed=0)
    assert torch.equal(train, again[0]) and torch.equal(test, again[1])
    assert not torch.equal(train, split_objects(100, seed=1)[0])
    with pytest.raises(DataError):
        split_objects(1)


def test_train_probes_reports_split_sizes_and_repeats():
    data = synthetic(m=100)
    a, b = train_probes(data, seed=3, epochs=50), train_probes(data, seed=3, epochs=50)
    assert a == b
    assert all(r["train_objects"] == 83 and r["test_objects"] == 17 for r in a.values())


# ------------------------------------------------------------------------------------------------ collection and CLI


def test_collect_probe_data_on_a_tetrominoes_store(workdir):
    dataset = store_dataset(workdir["store"])
    data = collect_probe_data(workdir["model"], dataset, batch_size=32, seed=0)
    assert data["kinds"] == {"color": CONTINUOUS, "shape": CATEGORICAL, "x": CONTINUOUS, "y": CONTINUOUS}
    m = data["num_matched"]
    assert 0 < m <= data["num_objects"] == 3 * len(dataset)
    assert data["slots"].shape == (m, 16)
    assert data["targets"]["shape"].dtype == torch.int64 and data["targets"]["shape"].shape == (m,)
    assert data["targets"]["color"].shape == (m, 3) and data["targets"]["x"].shape == (m,)
    classes = data["classes"]["shape"]  # the distinct shape indices seen, sorted: class i is shape classes[i]
    assert torch.equal(classes, classes.sort().values) and classes.min() >= 0 and classes.max() <= 18
    assert int(data["targets"]["shape"].max()) < len(classes)
    # every gathered vector is one of the model's slots for some image; the same seed repeats exactly
    with torch.no_grad():
        enc = workdir["model"].encode(dataset[torch.arange(32)]["image"], generator=torch.Generator().manual_seed(0))
    first = data["slots"][0]
    assert torch.isclose(enc.slots.reshape(-1, 16), first).all(1).any()
    again = collect_probe_data(workdir["model"], dataset, batch_size=32, seed=0, properties=["x"])
    assert list(again["kinds"]) == ["x"] and torch.equal(again["targets"]["x"], data["targets"]["x"])
    with pytest.raises(DataError, match="'material'"):
        collect_probe_data(workdir["model"], dataset, properties=["material"])


def test_collect_needs_labels_and_factors(workdir):
    images = np.zeros((2, 3, 32, 32), np.uint8)
    with pytest.raises(DataError, match="masks"):
        collect_probe_data(workdir["model"], SceneDataset(images))
    with pytest.raises(DataError, match="factor"):
        collect_probe_data(workdir["model"], SceneDataset(images, np.zeros((2, 32, 32), np.uint8)))


def probe_args(*argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="slotlab")
    add_probe(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["probe", *map(str, argv)])


def test_probe_command_writes_json(workdir, capsys):
    out = workdir["root"] / "probe.json"
    args = probe_args("--checkpoint", workdir["model_dir"], "--data", workdir["store"].root, "--batch-size", 32,
                      "--out", out, "--no-progress")
    assert args.func is cmd_probe
    assert cmd_probe(args) == 0
    result = json.loads(out.read_text())
    captured = capsys.readouterr()
    assert json.loads(captured.out) == result
    assert "probe" not in captured.err  # no progress bar
    assert result["num_images"] == 60 and result["objects"] == 180 and 0 < result["matched_objects"] <= 180
    for name, kind, metric in [("x", CONTINUOUS, "mse"), ("y", CONTINUOUS, "mse"), ("color", CONTINUOUS, "mse"),
                               ("shape", CATEGORICAL, "accuracy")]:
        r = result[name]
        assert set(r) == {"kind", "metric", "value", "baseline", "train_objects", "test_objects"}
        assert r["kind"] == kind and r["metric"] == metric
        assert r["train_objects"] + r["test_objects"] == result["matched_objects"]
        assert r["train_objects"] == round(0.83 * result["matched_objects"])


def test_probe_command_without_factors_is_a_data_error(workdir):
    with pytest.raises(DataError, match="plain.npz.*factor"):
        cmd_probe(probe_args("--checkpoint", workdir["model_dir"], "--data", workdir["npz"]))
    with pytest.raises(DataError, match="validation split.*factor.*--data"):  # procedural val split: no factors
        cmd_probe(probe_args("--checkpoint", workdir["model_dir"]))


@pytest.mark.parametrize("kind", ["lsd", "set_prediction"])
def test_collect_from_other_slot_models(kind, tmp_path):
    if kind == "lsd":
        from slotlab.models.lsd import LatentSlotDiffusion, LatentSlotDiffusionConfig

        model = LatentSlotDiffusion(LatentSlotDiffusionConfig(
            resolution=16, latent_size=8, backbone="cnn", backbone_channels=[16, 16], backbone_strides=[1, 2],
            num_slots=3, slot_dim=16, mlp_hidden=32, decoder_channels=[16, 32], decoder_layers_per_block=1,
            decoder_attention_levels=1, decoder_heads=2, decoder_norm_groups=8, cross_attention_dim=16))
    else:
        from slotlab.models.set_prediction import (
            SlotSetPredictor,
            SlotSetPredictorConfig,
        )

        model = SlotSetPredictor(SlotSetPredictorConfig(resolution=16, encoder_channels=[8, 8, 8, 8], num_slots=3,
                                                        slot_dim=16, mlp_hidden=16, head_hidden=16))
    store = write_procedural_store("tetrominoes", tmp_path / "s", 8, seed=1, resolution=16, progress=False)
    data = collect_probe_data(model, store_dataset(store), batch_size=8, seed=0, properties=["x", "shape"])
    assert data["num_objects"] == 24 and 0 < data["num_matched"] <= 24
    assert data["slots"].shape == (data["num_matched"], 16)
