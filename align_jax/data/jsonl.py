"""jsonl files between stages: reading with line-numbered errors, writing without loss.

Paths may be local or URLs (gs://...): both go through `align_jax.fs`. A path ending in
.gz is read through gzip (public datasets ship that way).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
from typing import Any, Callable, Iterable, Iterator, Mapping

from align_jax import fs


class JsonlError(ValueError):
  """A jsonl line that is not valid JSON or lacks what the reader expects."""


def read_jsonl(path: str, validate: Callable[[dict[str, Any]], str | None] | None = None
               ) -> Iterator[dict[str, Any]]:
  """Yields one dict per non-blank line.

  `validate(record)` returns None when the record is fine, or a message saying what
  is missing or invalid; the error then names the file and line number.
  """
  for number, record in read_jsonl_numbered(path):
    problem = validate(record) if validate else None
    if problem:
      raise JsonlError(f"{path}, line {number}: {problem}")
    yield record


def read_jsonl_numbered(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
  """(line number, dict) for each non-blank line, for readers whose own errors name
  the line; a line that is not a JSON object is a JsonlError naming it."""
  with contextlib.ExitStack() as stack:
    if path.endswith(".gz"):
      raw = stack.enter_context(fs.open(path, "rb"))
      f = stack.enter_context(io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8"))
    else:
      f = stack.enter_context(fs.open(path))
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise JsonlError(f"{path}, line {number}: not valid JSON ({e.msg})") from None
      if not isinstance(record, dict):
        raise JsonlError(f"{path}, line {number}: expected a JSON object, got "
                         f"{type(record).__name__}")
      yield number, record


def write_jsonl(path: str, records: Iterable[Mapping[str, Any]], overwrite: bool = False) -> int:
  """Writes records atomically (a temporary file renamed at the end); returns the count.

  An existing file is never replaced unless `overwrite`.
  """
  if fs.exists(path) and not overwrite:
    raise FileExistsError(f"{path} already exists; refusing to overwrite it")
  fs.makedirs(fs.dirname(fs.resolve(path)))
  tmp = path + ".partial"
  count = 0
  with fs.open(tmp, "w") as f:
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False) + "\n")
      count += 1
  fs.replace(tmp, path)
  return count
