"""TFRecord framing and tf.train.Example coding, cross-checked against independent implementations.

protobuf (installed with tensorboard) provides a reference Example codec built from the message schema, and
tensorboard's record writer a reference framing and CRC; TensorFlow itself is not needed.
"""

import gzip
import io

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import (
    masked_crc32c as reference_crc,
)
from tensorboard.summary.writer.record_writer import RecordWriter

from slotlab.data.formats.tfrecord import (
    TFRecordWriter,
    encode_example,
    masked_crc32c,
    parse_example,
    read_examples,
    read_records,
    write_records,
)
from slotlab.errors import DataError

_EXAMPLE_PROTO = """
syntax = "proto3"; package tensorflow;
message BytesList { repeated bytes value = 1; }
message FloatList { repeated float value = 1 [packed = true]; }
message Int64List { repeated int64 value = 1 [packed = true]; }
message Feature { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
message Features { map<string, Feature> feature = 1; }
message Example { Features features = 1; }
"""


def _reference_example_class():
    """tf.train.Example (example.proto / feature.proto) built with protobuf's own descriptor machinery."""
    f = descriptor_pb2.FileDescriptorProto(name="slotlab_test_example.proto", package="tensorflow", syntax="proto3")
    T = descriptor_pb2.FieldDescriptorProto

    def message(name, *fields, nested=()):
        m = f.message_type.add(name=name) if not nested else nested[0].nested_type.add(name=name)
        for fname, number, ftype, label, type_name, oneof in fields:
            fd = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                fd.type_name = type_name
            if oneof is not None:
                fd.oneof_index = oneof
        return m

    rep, opt = T.LABEL_REPEATED, T.LABEL_OPTIONAL
    message("BytesList", ("value", 1, T.TYPE_BYTES, rep, None, None))
    message("FloatList", ("value", 1, T.TYPE_FLOAT, rep, None, None))
    message("Int64List", ("value", 1, T.TYPE_INT64, rep, None, None))
    feat = message("Feature", ("bytes_list", 1, T.TYPE_MESSAGE, opt, ".tensorflow.BytesList", 0),
                   ("float_list", 2, T.TYPE_MESSAGE, opt, ".tensorflow.FloatList", 0),
                   ("int64_list", 3, T.TYPE_MESSAGE, opt, ".tensorflow.Int64List", 0))
    feat.oneof_decl.add(name="kind")
    feats = message("Features", ("feature", 1, T.TYPE_MESSAGE, rep, ".tensorflow.Features.FeatureEntry", None))
    entry = feats.nested_type.add(name="FeatureEntry")
    entry.field.add(name="key", number=1, type=T.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=T.TYPE_MESSAGE, label=opt, type_name=".tensorflow.Feature")
    entry.options.map_entry = True
    message("Example", ("features", 1, T.TYPE_MESSAGE, opt, ".tensorflow.Features", None))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


Example = _reference_example_class()


def _features():
    rng = np.random.default_rng(0)
    return {
        "image": rng.integers(0, 256, (5, 4, 3), dtype=np.uint8),  # includes zero bytes
        "zeros": np.zeros(7, np.uint8),
        "x": rng.normal(size=4).astype(np.float32),
        "count": np.array([0, 1, 127, 128, 300, 2**40, -1, -(2**63)], np.int64),
        "frames": [b"\x89PNG first", b"", b"third\x00"],
        "name": "scene",
    }


def test_masked_crc_matches_tensorboard_and_known_vector():
    import google_crc32c

    assert google_crc32c.value(b"123456789") == 0xE3069283  # the CRC-32C check value
    for data in [b"", b"a", b"123456789", bytes(range(256)) * 3]:
        assert masked_crc32c(data) == reference_crc(data)


def test_encode_example_decodes_with_protobuf():
    feats = _features()
    ex = Example.FromString(encode_example(feats))
    f = ex.features.feature
    assert bytes(f["image"].bytes_list.value[0]) == bytes([feats["image"].reshape(-1)[0]])
    assert b"".join(f["image"].bytes_list.value) == feats["image"].tobytes()
    assert len(f["zeros"].bytes_list.value) == 7
    np.testing.assert_array_equal(np.array(f["x"].float_list.value, np.float32), feats["x"])
    assert list(f["count"].int64_list.value) == feats["count"].tolist()
    assert list(f["frames"].bytes_list.value) == feats["frames"]
    assert list(f["name"].bytes_list.value) == [b"scene"]


def test_parse_example_reads_protobuf_encoded_records():
    ex = Example()
    f = ex.features.feature
    img = np.arange(60, dtype=np.uint8) % 7  # many zero bytes
    f["image"].bytes_list.value.extend(bytes([b]) for b in img)
    f["x"].float_list.value.extend([0.5, -2.25, 1e-8])
    f["n"].int64_list.value.extend([3, -5, 2**62, 0])
    f["png"].bytes_list.value.extend([b"abc", b"\x00\x01"])
    f["empty"].float_list.SetInParent()
    out = parse_example(ex.SerializeToString())
    assert out["image"].dtype == np.uint8
    np.testing.assert_array_equal(out["image"], img)
    np.testing.assert_array_equal(out["x"], np.array([0.5, -2.25, 1e-8], np.float32))
    assert out["n"].dtype == np.int64 and out["n"].tolist() == [3, -5, 2**62, 0]
    assert out["png"] == [b"abc", b"\x00\x01"]
    assert out["empty"].size == 0


def test_round_trip_all_kinds():
    feats = _features()
    out = parse_example(encode_example(feats))
    np.testing.assert_array_equal(out["image"], feats["image"].reshape(-1))
    np.testing.assert_array_equal(out["zeros"], np.zeros(7, np.uint8))
    np.testing.assert_array_equal(out["x"], feats["x"])
    np.testing.assert_array_equal(out["count"], feats["count"])
    assert out["frames"] == feats["frames"]
    assert out["name"] == [b"scene"]


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_records_round_trip_and_match_tensorboard_framing(tmp_path, compression):
    records = [encode_example({"i": np.array([i], np.int64), "b": np.full(i, i, np.uint8)}) for i in range(5)]
    path = tmp_path / "data.tfrecords"
    assert write_records(path, records, compression) == 5
    assert list(read_records(path)) == records  # "auto" detects gzip
    buf = io.BytesIO()
    w = RecordWriter(buf)
    for r in records:
        w.write(r)
    raw = gzip.decompress(path.read_bytes()) if compression else path.read_bytes()
    assert raw == buf.getvalue()
    assert [e["i"][0] for e in read_examples(path)] == list(range(5))


def _write(tmp_path, n=4, compression=None):
    path = tmp_path / "d.tfrecords"
    with TFRecordWriter(path, compression) as w:
        for i in range(n):
            w.write(encode_example({"v": np.full(10, i, np.uint8)}))
    return path


def test_bad_data_crc_names_file_and_record(tmp_path):
    path = _write(tmp_path)
    raw = bytearray(path.read_bytes())
    rec = len(raw) // 4
    raw[2 * rec + 20] ^= 0xFF  # inside record 2's data
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"d\.tfrecords: record 2 has a bad data CRC"):
        list(read_records(path))


def test_bad_length_crc(tmp_path):
    path = _write(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[9] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="record 0 has a bad length CRC"):
        list(read_records(path))


def test_truncated_plain_file(tmp_path):
    path = _write(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[:-3])
    with pytest.raises(DataError, match="record 3 is truncated"):
        list(read_records(path))
    path.write_bytes(raw[: len(raw) // 4 * 3 + 5])
    with pytest.raises(DataError, match=r"record 3 is truncated \(header"):
        list(read_records(path))


def test_truncated_gzip_stream(tmp_path):
    path = _write(tmp_path, n=50, compression="gzip")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"d\.tfrecords: (broken gzip stream at record \d+|record \d+ is truncated)"):
        list(read_records(path))


def test_corrupt_gzip_stream(tmp_path):
    path = _write(tmp_path, n=50, compression="gzip")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"d\.tfrecords: "):
        list(read_records(path))


def test_malformed_example_names_record(tmp_path):
    path = tmp_path / "bad.tfrecords"
    write_records(path, [encode_example({"a": np.zeros(2, np.uint8)}), b"\x0a\x05\x0a"])
    with pytest.raises(DataError, match=r"bad\.tfrecords: record 1: malformed tf.train.Example"):
        list(read_examples(path))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="TFRecord file not found"):
        list(read_records(tmp_path / "nope.tfrecords"))
