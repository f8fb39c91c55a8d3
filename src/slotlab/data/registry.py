"""The dataset registry: every dataset a preset can name, with its size, entities, source, reader and twin.

A dataset is used in one of three ways, chosen by ``data.path``:

- ``data.path`` unset: the procedural twin is generated in memory from ``data.seed`` (datasets that have one);
- ``data.path=DIR``: a store made once by ``slotlab data convert NAME SRC DIR`` (memory-mapped, fast);
- ``data.dataset=npz data.path=FILE.npz``: bring-your-own arrays.

A store holds one split; validation and test scenes are its last ``2 * val_size`` items unless
``data.val_path`` names a second store (then validation is its first ``val_size`` items and test all of it).
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from slotlab.data.config import DataConfig
from slotlab.data.datasets import SceneDataset
from slotlab.data.formats import multi_object as mo
from slotlab.data.formats.npz import load_npz
from slotlab.data.store import Store, is_store
from slotlab.data.transforms import masks_to_labels, prepare_images, prepare_labels
from slotlab.errors import ConfigError, DataError

# Offsets from the training seed to the validation and test seeds of procedural datasets (disjoint streams).
VAL_SEED_OFFSET = 1_000_003
TEST_SEED_OFFSET = 2_000_006

Reader = Callable[[Path, str, int], Iterator[dict | None]]  # (source path, split, first record) -> examples
Generator = Callable[[int, int], dict[str, np.ndarray]]  # (n, seed) -> {"image", "mask" | "labels", ...}
TwinWriter = Callable[[Path, int, int], Path]  # (output folder, n, seed) -> written file or folder


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    size: tuple[int, int]  # native image height, width
    num_entities: int  # most ground-truth entities per image, background included (0: no masks)
    source: str  # what it is and where it is published
    crop: list[int] | None = None  # the papers' crop [top, left, height, width] before resizing
    resolution: int = 128  # the papers' model resolution
    read: Reader | None = None  # published-format reader
    splits: tuple[str, ...] = ("train",)  # splits the reader knows
    num_records: int | None = None  # records in the published train split (progress bars)
    generate: Generator | None = None  # procedural twin, in memory
    write_twin: TwinWriter | None = None  # procedural twin, written in the published format
    downloads: tuple[str, ...] = ()  # URLs fetched by `slotlab data download`
    manual_download: str | None = None  # instructions where no direct download exists
    antialias: bool = False  # antialiased resizing (large downscales: FFHQ, photos); the papers' data: off


# --- readers ----------------------------------------------------------------------------------------------------


def _multi_object_reader(file: str, keep: Callable[[dict], bool] | None = None) -> Reader:
    def read(path: Path, split: str, start: int) -> Iterator[dict | None]:
        for ex in mo.read_multi_object(file, _file_in(path, mo.SPECS[file].filename), start):
            yield ex if keep is None or keep(ex) else None

    return read


def _file_in(path: Path, filename: str) -> Path:
    """A source given as the file itself or as the folder that holds it."""
    return path / filename if path.is_dir() else path


def _clevr_reader(path: Path, split: str, start: int) -> Iterator[dict]:
    from slotlab.data.formats.clevr import ClevrFolder, scene_targets

    folder = ClevrFolder(path, split)
    for i in range(start, len(folder)):
        ex = {"image": folder.read_image(i)}
        if folder.scenes is not None:
            ex["targets"] = scene_targets(folder.scenes[i])
        yield ex


def _clevrtex_reader(variant: str) -> Reader:
    def read(path: Path, split: str, start: int) -> Iterator[dict]:
        from slotlab.data.formats.clevrtex import read_clevrtex

        yield from read_clevrtex(path, variant, split, start)

    return read


def _movi_reader(name: str) -> Reader:
    def read(path: Path, split: str, start: int) -> Iterator[dict]:
        from slotlab.data.formats.movi import movi_shards, read_movi_frames

        yield from read_movi_frames(movi_shards(path, name, split), start)

    return read


def _image_reader(path: Path, split: str, start: int) -> Iterator[dict]:
    from slotlab.data.formats.image_folder import read_image_folder

    yield from read_image_folder(path, start)


def _ffhq_reader(path: Path, split: str, start: int) -> Iterator[dict]:
    from slotlab.data.formats.image_folder import read_ffhq

    yield from read_ffhq(path, split, start)


# --- procedural twins -------------------------------------------------------------------------------------------


def _tetrominoes(n: int, seed: int) -> dict:
    from slotlab.data.procedural.tetrominoes import generate_tetrominoes

    return generate_tetrominoes(n, seed)


def _dsprites(variant: str) -> Generator:
    def generate(n: int, seed: int) -> dict:
        from slotlab.data.procedural.multi_dsprites import generate_multi_dsprites

        return generate_multi_dsprites(n, seed, variant)

    return generate


def _clevr_masks(max_objects: int, ground: str = "grey") -> Generator:
    def generate(n: int, seed: int) -> dict:
        from slotlab.data.procedural.clevr_scenes import generate_clevr_scenes

        return generate_clevr_scenes(n, seed, height=240, width=320, max_objects=max_objects, ground=ground)

    return generate


def _clevrtex_generate(variant: str) -> Generator:
    def generate(n: int, seed: int) -> dict:
        from slotlab.data.procedural.clevrtex_scenes import generate_clevrtex_scenes

        return generate_clevrtex_scenes(n, seed, variant=variant, masks=False)  # label maps: 11x smaller than masks

    return generate


def _clevrtex_twin(variant: str) -> TwinWriter:
    def write(out: Path, n: int, seed: int) -> Path:
        from slotlab.data.procedural.clevrtex_scenes import write_clevrtex_scenes

        return write_clevrtex_scenes(out, n, seed, variant)

    return write


def _pad_entities(d: dict, entities: int) -> dict:
    """Procedural CLEVR scenes with fewer entity slots -> clevr_with_masks' 11 (padding: zeros)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, np.ndarray) and v.ndim >= 2 and k != "image" and v.shape[1] < entities:
            pad = np.zeros((v.shape[0], entities - v.shape[1], *v.shape[2:]), v.dtype)
            v = np.concatenate([v, pad], axis=1)
        out[k] = v
    return out


def _multi_object_twin(file: str, generate: Generator) -> TwinWriter:
    def write(out: Path, n: int, seed: int) -> Path:
        spec = mo.SPECS[file]
        path = Path(out) / spec.filename
        mo.write_multi_object(spec, path, _pad_entities(generate(n, seed), spec.num_entities))
        return path

    return write


def _clevr_twin(out: Path, n: int, seed: int) -> Path:
    from slotlab.data.procedural.clevr_scenes import write_clevr_scenes

    write_clevr_scenes(out, "train", n, seed)
    return Path(out)


def _clevr_targets(n: int, seed: int) -> dict:
    from slotlab.data.formats.clevr import scenes_targets
    from slotlab.data.procedural.clevr_scenes import generate_clevr_scenes

    d = generate_clevr_scenes(n, seed, height=128, width=128, aspect=1.5, masks=False)  # 3:2 frame squeezed
    return {"image": d["image"], "targets": scenes_targets(d["scenes"])}


# --- the registry -----------------------------------------------------------------------------------------------

_DM = "DeepMind multi-object datasets"


def _dm(name: str, file: str, resolution: int, crop=None, keep=None, generate=None, note: str = "") -> DatasetInfo:
    spec = mo.SPECS[file]
    return DatasetInfo(
        name,
        spec.image_shape[:2],
        spec.num_entities if name != "clevr6" else 7,
        f"{_DM}: {file}{note} ({spec.url})",
        crop,
        resolution,
        _multi_object_reader(file, keep),
        num_records=spec.num_records,
        generate=generate,
        write_twin=_multi_object_twin(file, generate) if generate else None,
        downloads=(spec.url,),
    )


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        _dm("tetrominoes", "tetrominoes", 32, crop=[2, 2, 32, 32], generate=_tetrominoes),
        _dm("multi_dsprites", "multi_dsprites_colored_on_grayscale", 64, generate=_dsprites("colored_on_grayscale")),
        _dm(
            "multi_dsprites_colored_on_colored",
            "multi_dsprites_colored_on_colored",
            64,
            generate=_dsprites("colored_on_colored"),
        ),
        _dm("multi_dsprites_binarized", "multi_dsprites_binarized", 64, generate=_dsprites("binarized")),
        _dm(
            "clevr6",
            "clevr_with_masks",
            128,
            crop=[29, 64, 192, 192],
            keep=mo.clevr6_keep,
            generate=_clevr_masks(6),
            note=", scenes with at most 6 objects",
        ),
        _dm("clevr_with_masks", "clevr_with_masks", 128, crop=[29, 64, 192, 192], generate=_clevr_masks(10)),
        DatasetInfo(
            "clevr6_tinted",
            (240, 320),
            7,
            "procedural only: the clevr6 twin's scenes with a random muted "
            "ground colour per scene (the ground is then something to describe, as in CLEVRTex and MOVi)",
            [29, 64, 192, 192],
            128,
            generate=_clevr_masks(6, "random"),
        ),
        _dm("objects_room", "objects_room_train", 64),
        _dm("objects_room_six_objects", "objects_room_test_six_objects", 64),
        _dm("objects_room_empty_room", "objects_room_test_empty_room", 64),
        _dm("objects_room_identical_color", "objects_room_test_identical_color", 64),
        DatasetInfo(
            "clevr",
            (320, 480),
            11,
            "CLEVR v1.0 images + scenes JSON, set-prediction targets [10, 19] "
            "(https://cs.stanford.edu/people/jcjohns/clevr/)",
            None,
            128,
            _clevr_reader,
            ("train", "val", "test"),
            70_000,
            _clevr_targets,
            _clevr_twin,
            ("https://dl.fbaipublicfiles.com/clevr/CLEVR_v1.0.zip",),
        ),
        *[
            DatasetInfo(
                f"clevrtex{'' if v == 'full' else '_' + v}",
                (240, 320),
                11,
                f"CLEVRTex {v} (https://www.robots.ox.ac.uk/~vgg/data/clevrtex/)",
                [24, 64, 192, 192],
                128,
                _clevrtex_reader(v),
                ("train", "val", "test"),
                None,
                generate=_clevrtex_generate(v) if v != "outd" else None,
                write_twin=_clevrtex_twin(v) if v != "outd" else None,
                manual_download=f"download clevrtex_{v} from https://www.robots.ox.ac.uk/~vgg/data/clevrtex/ "
                f"and unpack it so that ROOT/clevrtex_{v}/0/CLEVRTEX_{v}_000000.png exists",
            )
            for v in ("full", "outd", "camo")
        ],
        *[
            DatasetInfo(
                name,
                (256, 256),
                entities,
                f"Kubric MOVi-{name[-1].upper()} frames, TFDS shards "
                f"(gs://kubric-public/tfds/{name}/256x256/1.0.0, also 128x128)",
                None,
                256,
                _movi_reader(name),
                ("train", "validation", "test"),
                None,
                downloads=tuple(
                    f"https://storage.googleapis.com/kubric-public/tfds/{name}/{s}x{s}/1.0.0" for s in (256, 128)
                ),
            )
            for name, entities in (("movi_c", 11), ("movi_e", 24))
        ],
        DatasetInfo(
            "ffhq",
            (1024, 1024),
            0,
            "FFHQ 1024x1024 PNGs (https://github.com/NVlabs/ffhq-dataset)",
            None,
            256,
            _ffhq_reader,
            ("train", "test"),
            manual_download="download images1024x1024 with the FFHQ repository's download_ffhq.py "
            "(https://github.com/NVlabs/ffhq-dataset) and pass its parent folder",
            antialias=True,
        ),
        DatasetInfo(
            "images", (0, 0), 0, "any folder or glob of images (no masks)", None, 128, _image_reader, antialias=True
        ),
        DatasetInfo(
            "npz",
            (0, 0),
            0,
            "bring-your-own .npz: image uint8 [N,H,W,3], optional mask (the last val_size images validate)",
        ),
    ]
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def to_scene_dataset(
    images: np.ndarray, labels: np.ndarray | None, crop: list[int] | None, resolution: int, **extra
) -> SceneDataset:
    """Raw arrays -> model-resolution SceneDataset (crop, resize; masks with nearest neighbour)."""
    if len(images) == 0:
        raise DataError("the dataset is empty")
    x = prepare_images(images, crop, resolution)
    y = None if labels is None else prepare_labels(masks_to_labels(labels), crop, resolution)
    return SceneDataset(x, y, **extra)


def store_dataset(store: Store, index: slice = slice(None)) -> SceneDataset:
    """A store's items as a SceneDataset of memory maps (``index`` selects a contiguous part)."""
    extra = {k: store[k][index] for k in store.fields if k not in ("image", "labels", "source_index")}
    labels = store["labels"][index] if "labels" in store else None
    return SceneDataset(store["image"][index], labels, **extra)


def _procedural(info: DatasetInfo, cfg: DataConfig, split: str) -> SceneDataset:
    n, seed = {
        "train": (cfg.train_size, cfg.seed),
        "val": (cfg.val_size, cfg.seed + VAL_SEED_OFFSET),
        "test": (cfg.val_size, cfg.seed + TEST_SEED_OFFSET),
    }[split]
    assert info.generate is not None, info.name
    d = info.generate(n, seed)
    labels = d.get("mask", d.get("labels"))
    extra = {"targets": d["targets"]} if "targets" in d else {}
    images = np.repeat(d["image"], 3, axis=-1) if d["image"].shape[-1] == 1 else d["image"]
    crop = cfg.crop if cfg.crop is not None else info.crop  # the papers' crop unless the config sets one
    return to_scene_dataset(
        images, None if labels is None else masks_to_labels(labels).numpy(), crop, cfg.resolution, **extra
    )


def _boundary(video: np.ndarray, i: int) -> int:
    """The first index >= i where a new video starts (frames of one video stay in one split)."""
    starts = np.flatnonzero(np.diff(np.asarray(video)) != 0) + 1
    later = starts[starts >= i]
    return int(later[0]) if len(later) else len(video)


def _from_store(cfg: DataConfig, split: str) -> SceneDataset:
    assert cfg.path is not None
    store = Store(Path(cfg.path).expanduser())
    if store.attrs.get("resolution") != cfg.resolution:
        raise DataError(
            f"{cfg.path} was converted at resolution {store.attrs.get('resolution')}, the config asks for "
            f"{cfg.resolution}; convert again with --resolution {cfg.resolution}"
        )
    v = cfg.val_size
    if cfg.val_path and split != "train":
        val = Store(Path(cfg.val_path).expanduser())
        if len(val) <= v:
            raise DataError(
                f"{cfg.val_path} has {len(val)} items: validation takes the first val_size = {v}, "
                "test the rest, so it needs more"
            )
        return store_dataset(val, slice(0, v) if split == "val" else slice(v, None))
    if cfg.val_path:
        return store_dataset(store)
    if len(store) <= 2 * v:
        raise DataError(f"{cfg.path} has {len(store)} items: too few to hold out 2 x val_size = {2 * v}")
    n = len(store)
    a, b = n - 2 * v, n - v
    if "video" in store:  # frames: cut at video boundaries so no video is split between train, val and test
        a, b = _boundary(store["video"], a), _boundary(store["video"], b)
        if not 0 < a < b < n:
            raise DataError(f"{cfg.path}: too few videos to hold out validation and test; set data.val_path")
    return store_dataset(store, {"train": slice(0, a), "val": slice(a, b), "test": slice(b, n)}[split])


def _npz(cfg: DataConfig, split: str) -> SceneDataset:
    if not cfg.path:
        raise ConfigError("dataset 'npz' needs data.path=FILE.npz")
    images, labels = load_npz(cfg.path)
    n_val = min(cfg.val_size, max(1, len(images) // 5))  # the last images validate
    sl = slice(0, len(images) - n_val) if split == "train" else slice(len(images) - n_val, len(images))  # val, test
    return to_scene_dataset(images[sl], None if labels is None else labels[sl], cfg.crop, cfg.resolution)


def build_dataset(cfg: DataConfig, split: str) -> SceneDataset:
    """The ``split`` ("train", "val" or "test") of the configured dataset at model resolution.

    "train" and "val" are used in training ("val" picks the best checkpoint); "test" is held out from both.
    """
    info = dataset_info(cfg.dataset)
    if info.name == "npz":
        return _npz(cfg, split)
    if cfg.path:
        if not is_store(Path(cfg.path).expanduser()):
            raise DataError(
                f"data.path={cfg.path} is not a converted dataset; run `slotlab data convert "
                f"{info.name} {cfg.path} DIR` once and set data.path=DIR"
            )
        return _from_store(cfg, split)
    if info.generate is None:
        hint = "slotlab data download " + info.name if info.downloads else info.manual_download
        raise DataError(
            f"dataset {info.name!r} has no procedural twin: get it ({hint}), convert it with "
            f"`slotlab data convert {info.name} SRC DIR` and set data.path=DIR"
        )
    return _procedural(info, cfg, split)


def image_files_dataset(source: Path, resolution: int) -> SceneDataset:
    """Image files (a folder, searched recursively; a glob pattern; one file) in sorted order, each image's largest
    centred square resized to ``resolution`` with antialiasing; no masks."""
    from slotlab.data.formats.image_folder import image_paths, read_image_folder, readable_extensions
    from slotlab.data.transforms import stack_images

    if source.is_file() and source.suffix.lower() not in readable_extensions():
        raise DataError(f"{source}: give a store, a .npz file or image files, not a {source.suffix or 'file'}")
    try:
        paths = image_paths(source)
    except DataError:
        if not source.is_dir():
            raise
        raise DataError(
            f"{source}: not a converted store (no meta.json) and no image files in it; give a store, a .npz file or "
            "images"
        ) from None
    images = [example["image"] for example in read_image_folder(paths)]
    return SceneDataset(torch.from_numpy(stack_images(images, None, resolution, antialias=True)))


def open_dataset(
    config: DataConfig | None, data: str | Path | None, resolution: int, split: str = "val"
) -> SceneDataset:
    """The images a trained model is run on: ``data`` (a store; a .npz cropped and resized as the model was
    trained: the training crop when it fits, else the largest centred square; or image files: a folder, a glob
    pattern or one file, each image's largest centred square resized, without masks), or without it the ``split``
    ("train", "val" or "test") of the training dataset ``config``."""
    from slotlab.data.transforms import centre_crop

    if data is None:
        if config is None:
            raise DataError("this model folder has no experiment.yaml; pass --data FILE.npz")
        return build_dataset(config, split)
    path = Path(data).expanduser()
    if is_store(path):
        store = Store(path)
        if store.attrs.get("resolution") != resolution:
            raise DataError(
                f"{data} was converted at resolution {store.attrs.get('resolution')}; the model takes "
                f"{resolution}: convert again with --resolution {resolution}"
            )
        return store_dataset(store)
    if path.suffix.lower() != ".npz" and (path.is_dir() or path.is_file() or glob.has_magic(str(path))):
        return image_files_dataset(path, resolution)
    images, labels = load_npz(path)
    h, w = images.shape[1:3]
    crop = None
    if (h, w) != (resolution, resolution):
        crop = config.crop if config is not None else None
        if crop is None or crop[0] + crop[2] > h or crop[1] + crop[3] > w:
            crop = centre_crop(h, w, min(h, w))  # the training crop does not apply: largest centred square
    return to_scene_dataset(images, labels, crop, resolution)
