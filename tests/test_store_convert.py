"""The converted store, resumable conversion, training data from stores, downloads and `slotlab data`."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from slotlab.cli.main import main
from slotlab.config import DataConfig
from slotlab.data import registry
from slotlab.data.convert import convert_dataset, convert_examples
from slotlab.data.download import download
from slotlab.data.formats import multi_object as mo
from slotlab.data.formats.tfrecord import write_records
from slotlab.data.procedural.tetrominoes import generate_tetrominoes
from slotlab.data.registry import build_dataset
from slotlab.data.store import Store, StoreWriter
from slotlab.data.transforms import masks_to_labels, prepare_images, prepare_labels
from slotlab.errors import DataError


@pytest.fixture(scope="module")
def tetro(tmp_path_factory):
    root = tmp_path_factory.mktemp("tetro")
    d = generate_tetrominoes(300, seed=5)
    path = root / "tetrominoes_train.tfrecords"
    mo.write_multi_object("tetrominoes", path, d)
    return {"root": root, "path": path, "data": d}


def test_store_writer_round_trip_and_refuses_other_conversions(tmp_path):
    w = StoreWriter(tmp_path / "s", {"dataset": "x"})
    a = np.arange(24, dtype=np.uint8).reshape(4, 2, 3)
    w.append({"a": a, "b": np.arange(4.0, dtype=np.float32)}, consumed=5)
    store = w.finish()
    assert len(store) == 4 and store.describe()["source_records_read"] == 5
    np.testing.assert_array_equal(store["a"], a)
    assert isinstance(store["a"], np.memmap)
    with pytest.raises(DataError, match="holds a different conversion"):
        StoreWriter(tmp_path / "s", {"dataset": "y"})
    w = StoreWriter(tmp_path / "t", {})
    w.append({"a": a}, 1)
    with pytest.raises(DataError, match="field 'a'"):
        w.append({"a": a.astype(np.float32)}, 2)
    with pytest.raises(DataError, match="unfinished"):
        Store(tmp_path / "t")


def test_convert_tetrominoes_every_field(tetro, tmp_path):
    store = convert_dataset("tetrominoes", tetro["path"], tmp_path / "s", progress=False, chunk=64)
    d = tetro["data"]
    assert len(store) == 300 and store.attrs["resolution"] == 32 and store.attrs["crop"] == [2, 2, 32, 32]
    np.testing.assert_array_equal(store["image"], prepare_images(d["image"], [2, 2, 32, 32], 32).numpy())
    np.testing.assert_array_equal(store["labels"], prepare_labels(masks_to_labels(d["mask"]), [2, 2, 32, 32], 32).numpy())
    for k in ("x", "y", "shape", "visibility", "color"):
        np.testing.assert_array_equal(store[k], d[k])
    np.testing.assert_array_equal(store["source_index"], np.arange(300))


class Interrupt(Exception):
    pass


def test_interrupted_conversion_resumes_without_redoing_work(tetro, tmp_path, monkeypatch):
    info = registry.dataset_info("tetrominoes")
    attrs = {"dataset": "tetrominoes", "split": "train", "source": str(tetro["path"].resolve()), "resolution": 32,
             "crop": [2, 2, 32, 32], "limit": None, "antialias": False}

    def interrupted(after):
        for i, ex in enumerate(info.read(tetro["path"], "train", 0)):
            if i == after:
                raise Interrupt
            yield ex

    with pytest.raises(Interrupt):
        convert_examples(interrupted(150), tmp_path / "s", attrs, [2, 2, 32, 32], 32, chunk=64, progress=False)
    partial = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert partial["count"] == 128 and partial["consumed"] == 128 and not partial["complete"]
    with open(tmp_path / "s" / "image.bin", "ab") as f:  # bytes of a chunk that was never committed
        f.write(b"\x07" * 1000)
    seen = []

    def counting(path, split, start):
        seen.append(start)
        yield from info.read(path, split, start)

    monkeypatch.setitem(registry.DATASETS, "tetrominoes", dataclasses.replace(info, read=counting))
    store = convert_dataset("tetrominoes", tetro["path"], tmp_path / "s", chunk=64, progress=False)
    assert seen == [128]  # the first 128 records were not converted again
    whole = convert_dataset("tetrominoes", tetro["path"], tmp_path / "whole", progress=False)
    for k in whole.fields:
        np.testing.assert_array_equal(store[k], whole[k], err_msg=k)


def test_clevr6_filter_and_crop_in_conversion(tmp_path):
    spec = mo.SPECS["clevr_with_masks"]
    rng = np.random.default_rng(0)
    n = 6
    vis = np.zeros((n, 11), np.float32)
    objects = np.array([3, 7, 6, 10, 4, 6])
    vis[np.arange(11)[None] <= objects[:, None]] = 1
    labels = rng.integers(0, 11, (n, 240, 320))
    d = {"image": rng.integers(0, 256, (n, 240, 320, 3), dtype=np.uint8),
         "mask": ((labels[:, None] == np.arange(11)[None, :, None, None]) * 255).astype(np.uint8)[..., None],
         "visibility": vis, **{k: np.zeros((n, 11), np.float32) for k in ("x", "y", "z", "rotation")},
         "pixel_coords": np.zeros((n, 11, 3), np.float32), **{k: np.zeros((n, 11), np.uint8) for k in
                                                               ("color", "material", "shape", "size")}}
    mo.write_multi_object(spec, tmp_path / "c.tfrecords", d)
    store = convert_dataset("clevr6", tmp_path / "c.tfrecords", tmp_path / "s", progress=False)
    keep = np.flatnonzero(objects <= 6)
    np.testing.assert_array_equal(store["source_index"], keep)
    np.testing.assert_array_equal(store["image"], prepare_images(d["image"][keep], [29, 64, 192, 192], 128).numpy())
    assert store["labels"].shape == (len(keep), 128, 128)


def test_training_splits_from_a_store(tetro, tmp_path):
    convert_dataset("tetrominoes", tetro["path"], tmp_path / "s", progress=False)
    cfg = DataConfig(dataset="tetrominoes", path=str(tmp_path / "s"), val_size=50, crop=[1, 1, 32, 32], resolution=32)
    train, val, test = (build_dataset(cfg, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (200, 50, 50)
    batch = val[torch.tensor([0, 3])]
    store = Store(tmp_path / "s")
    np.testing.assert_array_equal(batch["labels"].numpy(), store["labels"][[200, 203]])
    assert batch["image"].dtype == torch.float32 and batch["image"].min() >= -1
    assert batch["visibility"].shape == (2, 4)
    with pytest.raises(DataError, match="converted at resolution 32"):
        build_dataset(DataConfig(dataset="tetrominoes", path=str(tmp_path / "s"), resolution=64), "train")
    with pytest.raises(DataError, match="is not a converted dataset; run `slotlab data convert tetrominoes"):
        build_dataset(DataConfig(dataset="tetrominoes", path=str(tetro["path"])), "train")


def test_dataset_without_twin_explains_how_to_get_it():
    with pytest.raises(DataError, match="no procedural twin: get it \\(slotlab data download objects_room\\)"):
        build_dataset(DataConfig(dataset="objects_room", resolution=64), "train")


def test_download_from_a_mirror_and_offline_error(tetro, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "multi-object-datasets" / "tetrominoes").mkdir(parents=True)
    (mirror / "multi-object-datasets" / "tetrominoes" / "tetrominoes_train.tfrecords").write_bytes(
        tetro["path"].read_bytes())
    (path,) = download("tetrominoes", tmp_path / "dl", mirror=mirror.as_uri(), progress=False)
    assert path.read_bytes() == tetro["path"].read_bytes()
    with pytest.raises(DataError, match=r"cannot download file://.*; fetch it yourself and put it at .*objects_room"):
        download("objects_room", tmp_path / "dl", mirror=mirror.as_uri(), progress=False)
    with pytest.raises(DataError, match="no direct download; download clevrtex_full from https://www.robots"):
        download("clevrtex", tmp_path / "dl")


def test_movi_download_reads_tfds_shard_list(tmp_path):
    base = tmp_path / "mirror" / "kubric-public" / "tfds" / "movi_e" / "256x256" / "1.0.0"
    base.mkdir(parents=True)
    info = {"splits": [{"name": "train", "shardLengths": ["3", "2"]}, {"name": "validation", "shardLengths": ["1"]}]}
    (base / "dataset_info.json").write_text(json.dumps(info))
    for f in ["movi_e-train.tfrecord-00000-of-00002", "movi_e-train.tfrecord-00001-of-00002",
              "movi_e-validation.tfrecord-00000-of-00001"]:
        write_records(base / f, [f.encode()])  # real TFRecord framing: downloads are checked record by record
    paths = download("movi_e", tmp_path / "dl", mirror=(tmp_path / "mirror").as_uri(), splits=("validation",),
                     progress=False)
    assert [p.name for p in paths] == ["movi_e-validation.tfrecord-00000-of-00001"]


def test_data_info_describes_an_npz_and_references_refuse_a_file(tmp_path, capsys):
    from slotlab.data import save_npz

    save_npz(tmp_path / "scenes.npz", generate_tetrominoes(3, 0)["image"], generate_tetrominoes(3, 0)["mask"][..., 0])
    assert main(["data", "info", str(tmp_path / "scenes.npz")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == "uint8 [3, 35, 35, 3]" and info["labels"] == "uint8 [3, 35, 35]"
    assert main(["data", "references", str(tmp_path / "scenes.npz"), "--no-progress"]) == 2
    assert "a file, not a converted store" in capsys.readouterr().err


def test_cli_data_generate_convert_info_list(tmp_path, capsys):
    assert main(["data", "generate", "tetrominoes", str(tmp_path / "g"), "-n", "40", "--seed", "3"]) == 0
    tf = tmp_path / "g" / "tetrominoes_train.tfrecords"
    assert tf.is_file()
    np.testing.assert_array_equal(next(mo.read_multi_object("tetrominoes", tf))["image"],
                                  generate_tetrominoes(40, 3)["image"][0])
    # again into the same folder: refused, the file (perhaps a download of that name) kept
    before = tf.read_bytes()
    capsys.readouterr()
    assert main(["data", "generate", "tetrominoes", str(tmp_path / "g"), "-n", "4"]) == 2
    assert "already holds files" in capsys.readouterr().err and tf.read_bytes() == before
    assert main(["data", "convert", "tetrominoes", str(tf), str(tmp_path / "s"), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["items"] == 40
    assert main(["data", "info", str(tmp_path / "s")]) == 0
    assert json.loads(capsys.readouterr().out)["fields"]["labels"] == "uint8 [32, 32]"
    assert main(["data", "info", str(tf)]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 40
    assert main(["data", "list"]) == 0
    assert "clevrtex" in capsys.readouterr().out
    assert main(["data", "convert", "tetrominoes", str(tmp_path / "nope"), str(tmp_path / "t")]) == 2
    assert "source not found" in capsys.readouterr().err
    raw = bytearray(tf.read_bytes())
    (tmp_path / "bad.tfrecords").write_bytes(bytes(raw[: len(raw) // 2]))
    assert main(["data", "convert", "tetrominoes", str(tmp_path / "bad.tfrecords"), str(tmp_path / "u"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("slotlab: error: ") and "bad.tfrecords" in err and len(err.splitlines()) == 1
    assert main(["data", "generate", "objects_room", str(tmp_path / "o")]) == 2


def test_cli_generate_procedural_only_dataset(tmp_path, capsys):
    """clevr6_tinted has a twin but no published format: --store works, a published-format write is refused."""
    assert main(["data", "generate", "clevr6_tinted", str(tmp_path / "t"), "-n", "3", "--store", "--resolution", "16",
                 "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["items"] == 3
    store = Store(tmp_path / "t")
    assert store.attrs["dataset"] == "clevr6_tinted" and store["labels"].max() >= 3  # ground + at least 3 objects
    assert main(["data", "generate", "clevr6_tinted", str(tmp_path / "u")]) == 2
    err = capsys.readouterr().err.strip()
    assert "procedural only" in err and "--store" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "u").exists()


def test_convert_clevrtex_movi_and_image_folders(tmp_path):
    from PIL import Image

    from slotlab.data.formats.clevrtex import write_clevrtex
    from slotlab.data.formats.movi import write_movi_shard

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 240, 320, 3), dtype=np.uint8)
    labels = rng.integers(0, 11, (10, 240, 320), dtype=np.uint8)
    write_clevrtex(tmp_path / "ctex", "full", images, labels)
    store = convert_dataset("clevrtex", tmp_path / "ctex", tmp_path / "s1", split="test", resolution=32, progress=False)
    assert len(store) == 1  # test = the first 10 % of indices
    np.testing.assert_array_equal(store["image"], prepare_images(images[:1], [24, 64, 192, 192], 32).numpy())
    np.testing.assert_array_equal(store["labels"], prepare_labels(torch.as_tensor(labels[:1]), [24, 64, 192, 192], 32).numpy())

    videos = [{"video": rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8),
               "segmentations": rng.integers(0, 24, (3, 16, 16), dtype=np.uint8)} for _ in range(2)]
    write_movi_shard(tmp_path / "movi" / "movi_e-validation.tfrecord-00000-of-00001", videos)
    store = convert_dataset("movi_e", tmp_path / "movi", tmp_path / "s2", split="validation", resolution=16,
                            progress=False)
    np.testing.assert_array_equal(store["image"], np.concatenate([v["video"] for v in videos]).transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(store["labels"], np.concatenate([v["segmentations"] for v in videos]))
    np.testing.assert_array_equal(store["frame"], [0, 1, 2, 0, 1, 2])

    (tmp_path / "imgs").mkdir()
    for i, size in enumerate([(20, 30), (40, 40), (20, 30)]):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    store = convert_dataset("images", tmp_path / "imgs", tmp_path / "s3", resolution=8, progress=False)
    assert store["image"].shape == (3, 3, 8, 8) and "labels" not in store


def test_store_splits_keep_videos_whole_and_val_path_test_is_disjoint(tmp_path):
    w = StoreWriter(tmp_path / "frames", {"resolution": 4})
    video = np.repeat(np.arange(10), 5)  # 10 videos x 5 frames
    w.append({"image": np.zeros((50, 3, 4, 4), np.uint8), "video": video}, 50)
    w.finish()
    cfg = DataConfig(dataset="movi_e", path=str(tmp_path / "frames"), val_size=7, resolution=4)
    train, val, test = (build_dataset(cfg, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (40, 5, 5)  # cuts moved from 36 / 43 to the next video starts
    assert set(train.extra["video"].tolist()).isdisjoint(val.extra["video"].tolist())
    w = StoreWriter(tmp_path / "val", {"resolution": 4})
    w.append({"image": np.zeros((12, 3, 4, 4), np.uint8)}, 12)
    w.finish()
    cfg = DataConfig(dataset="movi_e", path=str(tmp_path / "frames"), val_path=str(tmp_path / "val"), val_size=5,
                     resolution=4)
    assert (len(build_dataset(cfg, "train")), len(build_dataset(cfg, "val")), len(build_dataset(cfg, "test"))) == (50, 5, 7)


def test_store_path_with_tilde(tetro, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    convert_dataset("tetrominoes", tetro["path"], tmp_path / "s", progress=False)
    cfg = DataConfig(dataset="tetrominoes", path="~/s", val_size=50, crop=[1, 1, 32, 32], resolution=32)
    assert len(build_dataset(cfg, "train")) == 200


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [("count", -3, "count must be a whole number >= 0, got -3"),
     ("image", {"dtype": "nope", "shape": [2]}, 'fields.image.dtype must be a numpy number type (uint8, float32, ...), got "nope"'),
     ("image", {"dtype": "uint8", "shape": [3, "a"]}, 'fields.image.shape must be a list of whole numbers >= 0, got [3, "a"]')],
)
def test_a_store_with_a_bad_meta_json_is_one_line(tmp_path, capsys, key, value, says):
    from slotlab.checkpoints import save_trained
    from slotlab.config import ExperimentConfig
    from slotlab.models import SlotAutoencoder, SlotAutoencoderConfig

    model = SlotAutoencoder(SlotAutoencoderConfig(
        resolution=8, num_slots=2, num_iterations=1, slot_dim=8, mlp_hidden=8, encoder_channels=[4], encoder_strides=[1],
        decoder_broadcast=8, decoder_channels=[4], decoder_strides=[1]))
    save_trained(model, ExperimentConfig(name="m", model=model.config), tmp_path / "m")
    w = StoreWriter(tmp_path / "s", {})
    w.append({"image": np.zeros((2, 2), np.uint8), "labels": np.zeros((2, 2), np.uint8)}, 2)
    w.finish()
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    (meta if key == "count" else meta["fields"])[key] = value
    (tmp_path / "s" / "meta.json").write_text(json.dumps(meta))
    for argv in (["data", "references", str(tmp_path / "s")], ["eval", "--checkpoint", str(tmp_path / "m"), "--data", str(tmp_path / "s")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err == f"slotlab: error: {tmp_path / 's' / 'meta.json'}: {says}\n"
    with pytest.raises(DataError, match="meta.json"):
        StoreWriter(tmp_path / "s", {})


def test_download_mirror_that_is_not_a_url_is_one_line(tmp_path, capsys):
    assert main(["data", "download", "tetrominoes", "--mirror", "notaurl", "--root", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slotlab: error: cannot download notaurl/") and "not a URL" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
