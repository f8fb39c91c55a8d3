"""TFRecord files and ``tf.train.Example`` records, read and written without TensorFlow.

Framing of one record (all little-endian)::

    uint64 length | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)

Files may be GZIP streams (the DeepMind multi-object datasets) or plain (TFDS shards). Both CRCs are checked on
read; a bad CRC, a truncated record or a broken gzip stream raises :class:`DataError` naming the file, the record
index and the byte offset in the (decompressed) stream.

``tf.train.Example`` is a small protobuf; :func:`parse_example` decodes its wire format directly into numpy:
``bytes_list`` -> uint8 array when every entry is one byte long (DeepMind stores images and masks as one
one-byte string per pixel: that layout is decoded with one strided view, no Python loop), else a list of bytes;
``float_list`` -> float32 array; ``int64_list`` -> int64 array. The PyPI ``tfrecord`` package is not used: it
drops zero bytes from byte lists, checks no CRC and reads whole gzip files into memory.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import google_crc32c
import numpy as np

from slotlab.errors import DataError

Feature = np.ndarray | list[bytes]

_MASK_DELTA = 0xA282EAD8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def masked_crc32c(data: bytes | memoryview) -> int:
    """TFRecord's masked CRC32C: ``((crc >> 15) | (crc << 17)) + 0xa282ead8`` modulo 2**32."""
    crc = google_crc32c.value(bytes(data))
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(3) == b"\x1f\x8b\x08"  # gzip magic + deflate (a plain file rarely starts so)


def _open(path: Path, compression: str | None) -> BinaryIO:
    if compression == "auto":
        compression = "gzip" if _is_gzip(path) else None
    if compression == "gzip":
        return gzip.open(path, "rb")  # type: ignore[return-value]  # a binary stream
    if compression is None:
        return open(path, "rb", buffering=1 << 20)
    raise ValueError(f"compression must be 'auto', 'gzip' or None, got {compression!r}")


def read_records(path: str | Path, compression: str | None = "auto", check_crc: bool = True) -> Iterator[bytes]:
    """Yield the data of every record in a TFRecord file (``compression``: "auto", "gzip" or None)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"TFRecord file not found: {path}")
    index, offset = 0, 0
    try:
        with _open(path, compression) as f:
            while True:
                header = f.read(12)
                if not header:
                    return
                if len(header) < 12:
                    raise DataError(f"{path}: record {index} is truncated (header at byte {offset})")
                (length,) = _U64.unpack_from(header)
                (length_crc,) = _U32.unpack_from(header, 8)
                if check_crc and masked_crc32c(header[:8]) != length_crc:
                    raise DataError(f"{path}: record {index} has a bad length CRC (byte {offset})")
                data = f.read(length)
                footer = f.read(4)
                if len(data) < length or len(footer) < 4:
                    raise DataError(f"{path}: record {index} is truncated (starts at byte {offset})")
                if check_crc and masked_crc32c(data) != _U32.unpack(footer)[0]:
                    raise DataError(f"{path}: record {index} has a bad data CRC (starts at byte {offset})")
                yield data
                index += 1
                offset += 16 + length
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: broken gzip stream at record {index} (byte {offset}): {e}") from None


class TFRecordWriter:
    """Write records to a TFRecord file, optionally as a gzip stream. Use as a context manager."""

    def __init__(self, path: str | Path, compression: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if compression == "gzip":
            # the writer holds its file open until close() (it is a context manager itself)
            self._f: BinaryIO = gzip.open(self.path, "wb", compresslevel=6)  # type: ignore[assignment]  # noqa: SIM115
        elif compression is None:
            self._f = open(self.path, "wb")  # noqa: SIM115
        else:
            raise ValueError(f"compression must be 'gzip' or None, got {compression!r}")

    def write(self, data: bytes) -> None:
        length = _U64.pack(len(data))
        self._f.write(length + _U32.pack(masked_crc32c(length)) + data + _U32.pack(masked_crc32c(data)))

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_records(path: str | Path, records: Iterable[bytes], compression: str | None = None) -> int:
    """Write ``records`` to ``path``; returns how many were written."""
    n = 0
    with TFRecordWriter(path, compression) as w:
        for r in records:
            w.write(r)
            n += 1
    return n


# --- protobuf wire format -------------------------------------------------------------------------------------------


class _Malformed(Exception):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise _Malformed("varint runs past the end")
        b = buf[pos]
        result |= (b & 0x7F) << shift
        pos += 1
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Malformed("varint longer than 10 bytes")


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, start, end) of each field in buf[start:end]; for varints end is the value."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise _Malformed("length-delimited field runs past its message")
            yield number, wire, pos, pos + length
            pos += length
        elif wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value, value
        elif wire == 5:
            yield number, wire, pos, pos + 4
            pos += 4
        elif wire == 1:
            yield number, wire, pos, pos + 8
            pos += 8
        else:
            raise _Malformed(f"unsupported wire type {wire}")
    if pos != end:
        raise _Malformed("field runs past its message")


def _decode_varints(a: np.ndarray) -> np.ndarray:
    """Packed varints (uint8 array) -> int64 array, vectorised."""
    if a.size == 0:
        return np.zeros(0, np.int64)
    ends = np.flatnonzero(a < 0x80)
    if ends.size == 0 or ends[-1] != a.size - 1:
        raise _Malformed("packed varints end mid-value")
    starts = np.concatenate([[0], ends[:-1] + 1])
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    shift = (np.arange(a.size) - starts[group]).astype(np.uint64) * np.uint64(7)
    parts = (a & 0x7F).astype(np.uint64) << shift
    return np.bitwise_or.reduceat(parts, starts).view(np.int64)


def _bytes_list(buf: bytes, start: int, end: int) -> Feature:
    n = end - start
    if n and n % 3 == 0:  # fast path: every entry is tag 0x0a, length 1, one byte
        a = np.frombuffer(buf, np.uint8, count=n, offset=start)
        if (a[0::3] == 0x0A).all() and (a[1::3] == 1).all():
            return a[2::3].copy()
    values = [buf[s:e] for number, wire, s, e in _fields(buf, start, end) if number == 1 and wire == 2]
    if values and all(len(v) == 1 for v in values):
        return np.frombuffer(b"".join(values), np.uint8).copy()
    return values


def _float_list(buf: bytes, start: int, end: int) -> np.ndarray:
    chunks = []
    for number, wire, s, e in _fields(buf, start, end):
        if number == 1 and wire == 2:  # packed
            if (e - s) % 4:
                raise _Malformed("packed floats are not a multiple of 4 bytes")
            chunks.append(np.frombuffer(buf, "<f4", count=(e - s) // 4, offset=s))
        elif number == 1 and wire == 5:
            chunks.append(np.frombuffer(buf, "<f4", count=1, offset=s))
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def _int64_list(buf: bytes, start: int, end: int) -> np.ndarray:
    chunks = []
    for number, wire, s, e in _fields(buf, start, end):
        if number == 1 and wire == 2:  # packed
            chunks.append(_decode_varints(np.frombuffer(buf, np.uint8, count=e - s, offset=s)))
        elif number == 1 and wire == 0:
            chunks.append(np.array([s], np.uint64).view(np.int64))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int64)


_KINDS = {1: _bytes_list, 2: _float_list, 3: _int64_list}


def parse_example(record: bytes) -> dict[str, Feature]:
    """Decode a serialised ``tf.train.Example`` into ``{name: numpy array or list of bytes}`` (flat lists)."""
    buf = bytes(record)
    out: dict[str, Feature] = {}
    try:
        for number, wire, fs, fe in _fields(buf, 0, len(buf)):
            if number != 1 or wire != 2:
                continue  # Example.features
            for n1, w1, es, ee in _fields(buf, fs, fe):
                if n1 != 1 or w1 != 2:
                    continue  # Features.feature map entry
                key, value = None, None
                for n2, w2, s, e in _fields(buf, es, ee):
                    if n2 == 1 and w2 == 2:
                        key = buf[s:e].decode("utf-8")
                    elif n2 == 2 and w2 == 2:
                        value = (s, e)
                if key is None:
                    raise _Malformed("feature without a name")
                out[key] = np.zeros(0, np.float32)  # a Feature with no kind set
                if value is not None:
                    for n3, w3, s, e in _fields(buf, *value):
                        if n3 in _KINDS and w3 == 2:
                            out[key] = _KINDS[n3](buf, s, e)
    except (_Malformed, UnicodeDecodeError) as e:
        raise DataError(f"malformed tf.train.Example: {e}") from None
    return out


def read_examples(path: str | Path, compression: str | None = "auto") -> Iterator[dict[str, Feature]]:
    """Parse every record of a TFRecord file as a ``tf.train.Example``."""
    for index, record in enumerate(read_records(path, compression)):
        try:
            yield parse_example(record)
        except DataError as e:
            raise DataError(f"{path}: record {index}: {e}") from None


def _key(number: int, wire: int) -> bytes:
    return _encode_varint((number << 3) | wire)


def _encode_varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64: two's complement, 10 bytes
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _encode_varint(len(payload)) + payload


def _encode_feature(value) -> bytes:
    if isinstance(value, (bytes, str)):
        value = [value]
    if isinstance(value, (list, tuple)):  # bytes_list of the given strings
        items = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in value]
        return _len_field(1, b"".join(_len_field(1, v) for v in items))
    a = np.asarray(value)
    if a.dtype == np.uint8:  # DeepMind layout: one one-byte string per entry
        triples = np.empty((a.size, 3), np.uint8)
        triples[:, 0], triples[:, 1], triples[:, 2] = 0x0A, 1, a.reshape(-1)
        return _len_field(1, triples.tobytes())
    if a.dtype.kind == "f":
        return _len_field(2, _len_field(1, a.astype("<f4").tobytes()))
    if a.dtype.kind in "iub":
        return _len_field(3, _len_field(1, b"".join(_encode_varint(int(v)) for v in a.reshape(-1))))
    raise TypeError(f"cannot encode a feature of dtype {a.dtype}")


def encode_example(features: Mapping[str, object]) -> bytes:
    """Serialise ``{name: value}`` as a ``tf.train.Example``.

    uint8 arrays become byte lists of one-byte strings (DeepMind's layout), float arrays float lists (float32),
    other integer or bool arrays int64 lists, and ``bytes``/``str`` or lists of them byte lists.
    """
    entries = b"".join(
        _len_field(1, _len_field(1, k.encode("utf-8")) + _len_field(2, _encode_feature(v))) for k, v in features.items()
    )
    return _len_field(1, entries)
