"""Reading and writing the safetensors format, memory-mapped and streaming.

A safetensors file is an 8-byte little-endian header size, a JSON header mapping
each tensor name to its dtype, shape and byte range, then the raw bytes. Reading
maps the file and returns zero-copy numpy views (bfloat16 included, through
ml_dtypes); writing streams one tensor at a time, so neither side ever holds a
whole model in host memory. A checkpoint under a URL (gs://..., through
`align_jax.fs`) is read one whole file at a time instead of mapped.
"""

from __future__ import annotations

import json
import struct
from typing import Callable, Mapping, Sequence

import ml_dtypes
import numpy as np

from align_jax import fs

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
_NAMES = {v: k for k, v in _DTYPES.items()}

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class SafetensorsFile:
  """One memory-mapped safetensors file (read into memory when it is under a URL)."""

  def __init__(self, path: str):
    self.path = path
    with fs.open(path, "rb") as f:
      raw = f.read(8)
      if len(raw) != 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header size)")
      (header_size,) = struct.unpack("<Q", raw)
      if header_size > fs.getsize(path) - 8:
        raise ValueError(f"{path}: header size {header_size} exceeds the file; the file is "
                         "truncated or not safetensors")
      try:
        header = json.loads(f.read(header_size))
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}: unreadable safetensors header ({e})") from None
    self.metadata = header.pop("__metadata__", {}) or {}
    self._entries = header
    self._data_start = 8 + header_size
    local = fs.local_path(path)
    if not header:
      self._map = None
    elif local is not None:
      self._map = np.memmap(local, dtype=np.uint8, mode="r")
    else:
      self._map = np.frombuffer(fs.read_bytes(path), dtype=np.uint8)

  def keys(self) -> list[str]:
    return list(self._entries)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._entries[name]["shape"])

  def get(self, name: str) -> np.ndarray:
    """Tensor `name` as a read-only array over the mapped file."""
    entry = self._entries[name]
    dtype_name = entry["dtype"]
    if dtype_name not in _DTYPES:
      raise ValueError(f"{self.path}: tensor {name!r} has unsupported dtype {dtype_name!r}")
    begin, end = entry["data_offsets"]
    raw = self._map[self._data_start + begin:self._data_start + end]
    return raw.view(_DTYPES[dtype_name]).reshape(entry["shape"])


class CheckpointReader:
  """All tensors of a Hugging Face checkpoint directory (one file or an indexed set)."""

  def __init__(self, directory: str):
    self.directory = directory
    index_path = fs.join(directory, INDEX_FILE)
    single_path = fs.join(directory, SINGLE_FILE)
    self._files: dict[str, SafetensorsFile] = {}
    if fs.exists(index_path):
      with fs.open(index_path) as f:
        try:
          weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
          raise ValueError(f"{index_path}: expected JSON with a 'weight_map' object ({e})") from None
      for shard in sorted(set(weight_map.values())):
        shard_path = fs.join(directory, shard)
        if not fs.exists(shard_path):
          raise FileNotFoundError(f"{index_path} lists shard {shard!r}, but {shard_path} is missing")
        self._files[shard] = SafetensorsFile(shard_path)
      self._where = {}
      for name, shard in weight_map.items():
        if name not in self._files[shard].keys():
          raise ValueError(f"{index_path} places {name!r} in {shard!r}, but that shard lacks it")
        self._where[name] = shard
    elif fs.exists(single_path):
      self._files[SINGLE_FILE] = SafetensorsFile(single_path)
      self._where = {name: SINGLE_FILE for name in self._files[SINGLE_FILE].keys()}
    else:
      raise FileNotFoundError(f"{directory}: no {SINGLE_FILE} or {INDEX_FILE} found; expected a "
                              "Hugging Face checkpoint saved in safetensors format")

  def keys(self) -> list[str]:
    return list(self._where)

  def file_of(self, name: str) -> str:
    return fs.join(self.directory, self._where[name])

  def shape(self, name: str) -> tuple[int, ...]:
    return self._files[self._where[name]].shape(name)

  def get(self, name: str) -> np.ndarray:
    if name not in self._where:
      raise KeyError(f"{self.directory}: checkpoint has no tensor {name!r}")
    return self._files[self._where[name]].get(name)


def _header(entries: Sequence[tuple[str, tuple[int, ...], np.dtype]],
            metadata: Mapping[str, str]) -> bytes:
  header: dict = {"__metadata__": dict(metadata)}
  offset = 0
  for name, shape, dtype in entries:
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    header[name] = {"dtype": _NAMES[dtype], "shape": list(shape),
                    "data_offsets": [offset, offset + size]}
    offset += size
  raw = json.dumps(header, separators=(",", ":")).encode()
  return raw + b" " * (-len(raw) % 8)  # keep the data 8-byte aligned


def write_checkpoint(directory: str,
                     entries: Sequence[tuple[str, tuple[int, ...], np.dtype]],
                     fetch: Callable[[str], np.ndarray],
                     max_shard_bytes: int = 5 * 2**30,
                     metadata: Mapping[str, str] | None = None) -> list[str]:
  """Writes tensors (name, shape, dtype) as one file, or shards plus an index.

  `fetch(name)` returns each tensor's host array when its turn comes. Returns the
  written file names.
  """
  metadata = {"format": "pt", **(metadata or {})}
  shards: list[list[tuple[str, tuple[int, ...], np.dtype]]] = [[]]
  size = 0
  for entry in entries:
    nbytes = int(np.prod(entry[1], dtype=np.int64)) * entry[2].itemsize
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(entry)
    size += nbytes
  names = ([SINGLE_FILE] if len(shards) == 1 else
           [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
  weight_map = {}
  total = 0
  for file_name, shard in zip(names, shards):
    header = _header(shard, metadata)
    tmp = fs.join(directory, file_name + ".partial")
    with fs.open(tmp, "wb") as f:
      f.write(struct.pack("<Q", len(header)))
      f.write(header)
      for name, shape, dtype in shard:
        array = np.ascontiguousarray(np.asarray(fetch(name)).astype(dtype, copy=False))
        if array.shape != tuple(shape):
          raise ValueError(f"tensor {name!r}: expected shape {tuple(shape)}, got {array.shape}")
        f.write(array.tobytes())
        total += array.nbytes
        weight_map[name] = file_name
    fs.replace(tmp, fs.join(directory, file_name))
  if len(shards) > 1:
    with fs.open(fs.join(directory, INDEX_FILE), "w") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    names.append(INDEX_FILE)
  return names


def dtype_of(name: str) -> np.dtype:
  """numpy dtype of a safetensors dtype name, or of 'float32'/'bfloat16'/'float16'."""
  table = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
  return _DTYPES[table.get(name, name)]

