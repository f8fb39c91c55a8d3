"""MOVi TFDS shards: written with write_movi_shard and by hand (Pillow PNGs + encode_example + TFRecordWriter)."""

import io

import numpy as np
import pytest
from PIL import Image

from slotlab.data.formats.movi import (
    count_movi_videos,
    count_records,
    movi_shards,
    read_movi_frames,
    read_movi_videos,
    write_movi_shard,
)
from slotlab.data.formats.tfrecord import (
    TFRecordWriter,
    encode_example,
    parse_example,
    read_records,
)
from slotlab.errors import DataError

T, H, W = 4, 8, 10


def _videos(n, seed=0, instances=5):
    rng = np.random.default_rng(seed)
    return [{"video": rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8),
             "segmentations": rng.integers(0, instances + 1, (T, H, W), dtype=np.uint8),
             "video_name": f"video_{seed}_{i}", "depth_range": [0.5, 7.25]} for i in range(n)]


@pytest.fixture
def shards(tmp_path):
    """3 + 2 videos in two validation shards, plus a train shard that must not be picked up."""
    folder = tmp_path / "movi_e" / "128x128" / "1.0.0"
    a, b = _videos(3, seed=1), _videos(2, seed=2)
    assert write_movi_shard(folder / "movi_e-validation.tfrecord-00001-of-00002", b) == 2
    assert write_movi_shard(folder / "movi_e-validation.tfrecord-00000-of-00002", a) == 3
    write_movi_shard(folder / "movi_e-train.tfrecord-00000-of-00001", _videos(1, seed=3))
    return tmp_path, folder, a + b


def test_shard_discovery(shards):
    root, folder, _ = shards
    paths = movi_shards(root, "movi_e", "validation")
    assert [p.name for p in paths] == ["movi_e-validation.tfrecord-00000-of-00002",
                                       "movi_e-validation.tfrecord-00001-of-00002"]
    assert movi_shards(folder, "movi_e", "val") == paths
    assert len(movi_shards(root, "movi_e", "train")) == 1
    with pytest.raises(DataError, match=r"gs://kubric-public/tfds/movi_c/128x128/1\.0\.0") as e:
        movi_shards(root, "movi_c", "validation")
    assert "storage.googleapis.com/kubric-public/tfds/movi_c" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match="kubric-public"):
        movi_shards(root / "missing", "movi_e", "train")
    with pytest.raises(DataError, match="split"):
        movi_shards(root, "movi_e", "dev")
    write_movi_shard(root / "movi_e" / "256x256" / "1.0.0" / "movi_e-validation.tfrecord-00000-of-00001",
                     _videos(1))
    with pytest.raises(DataError, match="several folders"):
        movi_shards(root, "movi_e", "validation")


def test_videos_read_back_exactly(shards):
    _, folder, videos = shards
    paths = movi_shards(folder, "movi_e", "validation")
    assert count_movi_videos(paths) == 5 and count_records(paths[1]) == 2
    out = list(read_movi_videos(paths))
    assert [v["index"] for v in out] == list(range(5))
    assert [v["record"] for v in out] == [0, 1, 2, 0, 1]
    assert [v["shard"] for v in out] == [str(paths[0])] * 3 + [str(paths[1])] * 2
    for got, want in zip(out, videos):
        assert got["video"].dtype == np.uint8 and got["video"].shape == (T, H, W, 3)
        assert got["segmentations"].dtype == np.uint8 and got["segmentations"].shape == (T, H, W)
        np.testing.assert_array_equal(got["video"], want["video"])
        np.testing.assert_array_equal(got["segmentations"], want["segmentations"])
        assert got["metadata/video_name"] == want["video_name"]
        assert got["metadata/num_frames"] == T and got["metadata/height"] == H and got["metadata/width"] == W
        assert got["metadata/num_instances"] == want["segmentations"].max()
        np.testing.assert_array_equal(got["metadata/depth_range"], np.float32([0.5, 7.25]))
    for start in (1, 3, 4, 5, 9):
        assert [v["index"] for v in read_movi_videos(paths, start=start)] == list(range(start, 5))


def test_frames_in_order_with_selection_and_start(shards):
    _, folder, videos = shards
    paths = movi_shards(folder, "movi_e", "validation")
    frames = list(read_movi_frames(paths))
    assert [(f["video"], f["frame"]) for f in frames] == [(v, t) for v in range(5) for t in range(T)]
    for f in frames:
        np.testing.assert_array_equal(f["image"], videos[f["video"]]["video"][f["frame"]])
        np.testing.assert_array_equal(f["labels"], videos[f["video"]]["segmentations"][f["frame"]])
        assert f["image"].shape == (H, W, 3) and f["labels"].shape == (H, W)
    picked = list(read_movi_frames(paths, frames=range(0, T, 2)))
    assert [(f["video"], f["frame"]) for f in picked] == [(v, t) for v in range(5) for t in (0, 2)]
    firsts = list(read_movi_frames(paths, frames=[0]))
    assert [f["video"] for f in firsts] == list(range(5)) and {f["frame"] for f in firsts} == {0}
    for start in (0, 1, 3, 4, 11, 12, 13, 19, 20, 25):
        got = [(f["video"], f["frame"]) for f in read_movi_frames(paths, start=start)]
        assert got == [(f["video"], f["frame"]) for f in frames[start:]]
    got = [(f["video"], f["frame"]) for f in read_movi_frames(paths, start=3, frames=[1, 3])]
    assert got == [(v, t) for v in range(5) for t in (1, 3)][3:]
    with pytest.raises(DataError, match="frame 24 requested but the video has 4 frames"):
        next(read_movi_frames(paths, frames=[0, 24]))


def _png(a):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_hand_assembled_shard(tmp_path):
    """The real layout built directly: PNG frames from Pillow, label values up to 23, short video name, ints."""
    rng = np.random.default_rng(7)
    video = rng.integers(0, 256, (3, 6, 5, 3), dtype=np.uint8)
    segs = rng.integers(0, 24, (3, 6, 5), dtype=np.uint8)
    segs[0, 0, 0] = 23
    record = encode_example({
        "video": [_png(f) for f in video],
        "segmentations": [_png(s) for s in segs],
        "metadata/num_instances": np.int64([23]),
        "metadata/video_name": b"7",  # one byte: parse_example returns it as a uint8 array
        "metadata/forward_flow_range": np.float32([-3.5, 4.0]),
        "instances/visibility": np.int64(np.arange(23)),
        "depth": [_png(np.zeros((6, 5), np.uint16))] * 3,
    })
    path = tmp_path / "movi_c-train.tfrecord-00000-of-00001"
    with TFRecordWriter(path) as w:
        w.write(record)
        w.write(record)
    (v0, v1) = read_movi_videos(movi_shards(tmp_path, "movi_c", "train"))
    np.testing.assert_array_equal(v0["video"], video)
    np.testing.assert_array_equal(v0["segmentations"], segs)
    assert v0["segmentations"].max() == 23  # kept as stored, whatever the number of slots
    assert v0["metadata/num_instances"] == 23 and v0["metadata/video_name"] == "7"
    np.testing.assert_array_equal(v0["metadata/forward_flow_range"], [-3.5, 4.0])
    assert not any(k.startswith("instances/") or k == "depth" for k in v0)
    assert v1["index"] == 1

    # and write_movi_shard produces the same features as the hand-made record
    path2 = tmp_path / "again.tfrecord"
    write_movi_shard(path2, [{"video": video, "segmentations": segs[..., None], "num_instances": 23,
                              "video_name": "7"}])
    mine, theirs = parse_example(next(read_records(path2))), parse_example(record)
    for key in ("video", "segmentations"):
        decoded = [np.asarray(Image.open(io.BytesIO(b))) for b in mine[key]]
        np.testing.assert_array_equal(decoded, [np.asarray(Image.open(io.BytesIO(b))) for b in theirs[key]])
    assert bytes(mine["metadata/video_name"]) == b"7"
    assert mine["metadata/num_instances"].tolist() == [23]
    assert mine["metadata/num_frames"].tolist() == [3] and mine["metadata/height"].tolist() == [6]


def test_corrupt_frame_names_shard_record_and_frame(tmp_path):
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    segs = np.zeros((3, 4, 4), np.uint8)
    good = encode_example({"video": [_png(f) for f in video], "segmentations": [_png(s) for s in segs]})
    bad = encode_example({"video": [_png(video[0]), _png(video[1])[:30], _png(video[2])],
                          "segmentations": [_png(s) for s in segs]})
    path = tmp_path / "movi_e-test.tfrecord-00000-of-00001"
    with TFRecordWriter(path) as w:
        w.write(good)
        w.write(bad)
    with pytest.raises(DataError, match=r"movi_e-test\.tfrecord-00000-of-00001: record 1: video frame 1") as e:
        list(read_movi_videos(path))
    assert "\n" not in str(e.value)
    frames = read_movi_frames(path)
    assert [next(frames)["frame"] for _ in range(4)] == [0, 1, 2, 0]
    with pytest.raises(DataError, match="record 1: video frame 1"):
        next(frames)
    assert [f["frame"] for f in read_movi_frames(path, frames=[0, 2])] == [0, 2, 0, 2]  # frame 1 never decoded


def test_truncated_shard_is_named(shards):
    _, folder, _ = shards
    paths = movi_shards(folder, "movi_e", "validation")
    paths[0].write_bytes(paths[0].read_bytes()[:-50])
    with pytest.raises(DataError, match=r"movi_e-validation\.tfrecord-00000-of-00002: record 2 is truncated"):
        list(read_movi_videos(paths))
    with pytest.raises(DataError, match=r"movi_e-validation\.tfrecord-00000-of-00002: record 2 is truncated"):
        list(read_movi_videos(paths, start=4))  # skipping the shard counts its records from the headers
    with pytest.raises(DataError, match=r"movi_e-validation\.tfrecord-00000-of-00002: record 2 is truncated"):
        count_movi_videos(paths)
    with pytest.raises(DataError, match="not found"):
        list(read_movi_videos(folder / "nope.tfrecord"))


def test_writer_checks_its_input(tmp_path):
    v = _videos(1)[0]
    with pytest.raises(DataError, match="segmentations"):
        write_movi_shard(tmp_path / "x", [v | {"segmentations": v["segmentations"][:, :2]}])
    with pytest.raises(DataError, match="video"):
        write_movi_shard(tmp_path / "x", [v | {"video": v["video"][..., 0]}])
