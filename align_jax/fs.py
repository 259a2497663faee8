"""File I/O for every path align_jax reads or writes: local paths and URLs alike.

A path is either local (`runs/x`, `~/runs/x`, `/data/x.jsonl`) or a URL with a scheme
(`gs://bucket/run`, `s3://...`, `file:///abs/run`, TensorFlow's in-memory `ram://x`).
Every function here takes both:

- a local path, and a `file://` URL (which names a local file), go through Python's own
  file functions, so files can be fsynced, locked and memory-mapped;
- any other URL goes through `tf.io.gfile`, which serves every scheme TensorFlow has a
  file system for (gs:// built in, s3:// and others with tensorflow-io). A scheme it
  does not serve is a ValueError naming the path.

A URL is kept exactly as given (`resolve`) and is never handed to `os.path.abspath`,
`os.makedirs` or the builtin `open`, which would make a local folder named `gs:`.
"""

from __future__ import annotations

import builtins
import contextlib
import glob as _glob
import os
import posixpath
import re
import shutil
from typing import IO, Any, Callable, Iterator, TypeVar

T = TypeVar("T")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme(path: str) -> str | None:
  """The scheme of a URL (`gs` for `gs://b/x`), None for a local path."""
  match = _SCHEME.match(os.fspath(path))
  return match.group(1).lower() if match else None


def has_scheme(path: str) -> bool:
  """Whether `path` is a URL (`gs://...`, `file://...`) rather than a local path."""
  return scheme(path) is not None


def local_path(path: str) -> str | None:
  """The local file `path` names: itself, or a `file://` URL's path; None for other URLs."""
  path = os.fspath(path)
  kind = scheme(path)
  if kind is None:
    return path
  if kind != "file":
    return None
  rest = path[len("file://"):]
  if rest.startswith("localhost/"):
    rest = rest[len("localhost"):]
  if not rest.startswith("/"):
    raise ValueError(f"{path}: a file:// URL names an absolute path (file:///abs/path)")
  return rest


def resolve(path: str) -> str:
  """A path as a user gave it, made absolute: `~` expanded and a relative local path
  made absolute against the current directory. A URL is returned exactly as given."""
  path = os.fspath(path)
  return path if has_scheme(path) else os.path.abspath(os.path.expanduser(path))


def _split(path: str) -> tuple[str, str]:
  """('gs://', 'bucket/x') for a URL, ('', path) for a local path."""
  match = _SCHEME.match(path)
  return (match.group(0), path[match.end():]) if match else ("", path)


def join(path: str, *parts: str) -> str:
  """`path`/part/... (a URL stays a URL)."""
  prefix, rest = _split(os.fspath(path))
  return prefix + (posixpath.join(rest, *parts) if prefix else os.path.join(rest, *parts))


def dirname(path: str) -> str:
  """The folder holding `path` (`gs://b/x` for `gs://b/x/y`; never above `gs://`)."""
  prefix, rest = _split(os.fspath(path))
  return prefix + (posixpath.dirname(rest) if prefix else os.path.dirname(rest))


def basename(path: str) -> str:
  """The last component of `path` (a trailing slash ignored)."""
  return posixpath.basename(_split(os.fspath(path))[1].rstrip("/"))


def _gfile():
  import tensorflow as tf  # imported on the first URL only: TensorFlow loads slowly
  return tf.io.gfile


@contextlib.contextmanager
def _errors(path: str) -> Iterator[None]:
  """Turns TensorFlow's file errors into Python's (FileNotFoundError, ValueError, OSError)."""
  import tensorflow as tf
  try:
    yield
  except tf.errors.NotFoundError as e:
    detail = f" ({e.message})" if e.message else ""
    raise FileNotFoundError(f"{path}: no such file or folder{detail}") from None
  except tf.errors.UnimplementedError:
    served = ", ".join(s + "://" for s in _gfile().get_registered_schemes() if s)
    raise ValueError(f"{path}: no file system serves {scheme(path)}:// here (served: local "
                     f"paths, {served})") from None
  except tf.errors.OpError as e:
    raise OSError(f"{path}: {e.message}") from None


def _either(path: str, on_local: Callable[[str], T], on_url: Callable[[Any], T]) -> T:
  """`on_local(local path)` for a local path or file:// URL, else `on_url(tf.io.gfile)`
  with TensorFlow's errors turned into Python's."""
  local = local_path(path)
  if local is not None:
    return on_local(local)
  with _errors(path):
    return on_url(_gfile())


def exists(path: str) -> bool:
  return _either(path, os.path.exists, lambda g: g.exists(path))


def isdir(path: str) -> bool:
  return _either(path, os.path.isdir, lambda g: g.isdir(path))


def isfile(path: str) -> bool:
  return _either(path, os.path.isfile, lambda g: g.exists(path) and not g.isdir(path))


def getsize(path: str) -> int:
  """The size of a file in bytes."""
  return _either(path, os.path.getsize, lambda g: g.stat(path).length)


def makedirs(path: str) -> None:
  """Creates the folder `path` and its parents; an existing folder is fine."""
  _either(path, lambda local: os.makedirs(local, exist_ok=True), lambda g: g.makedirs(path))


def listdir(path: str) -> list[str]:
  """The names (not paths) in the folder `path`, sorted."""
  return _either(path, lambda local: sorted(os.listdir(local)),
                 lambda g: sorted(name.rstrip("/") for name in g.listdir(path)))


def glob(pattern: str) -> list[str]:
  """The paths matching a shell pattern (`*`, `?`, `[...]`), sorted."""
  local = local_path(pattern)
  if local is not None:
    found = sorted(_glob.glob(local))
    # A file:// pattern gives file:// paths back.
    return found if local == pattern else ["file://" + p for p in found]
  with _errors(pattern):
    return sorted(_gfile().glob(pattern))


def open(path: str, mode: str = "r") -> IO:  # noqa: A001 (shadows the builtin on purpose)
  """A file object for `path`; text modes read and write UTF-8. Modes: r, w, a (+ b).

  A local file is a builtin file object (it has fileno()); a URL's is a GFile, whose
  reads fail with FileNotFoundError when the file does not exist.
  """
  local = local_path(path)
  if local is not None:
    return builtins.open(local, mode, encoding=None if "b" in mode else "utf-8")
  if "r" in mode and not exists(path):
    raise FileNotFoundError(f"{path}: no such file")
  with _errors(path):
    return _gfile().GFile(path, mode)


def read_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def read_text(path: str) -> str:
  with open(path, "r") as f:
    return f.read()


def replace(source: str, target: str) -> None:
  """Renames `source` to `target`, replacing a file there (atomic on a local disk)."""
  local_source, local_target = local_path(source), local_path(target)
  if local_source is not None and local_target is not None:
    os.replace(local_source, local_target)
    return
  with _errors(source):
    _gfile().rename(source, target, overwrite=True)


def write_atomically(path: str, data: str | bytes) -> None:
  """Writes `data` to `path + '.tmp'`, then renames it to `path`: a reader sees the old
  file or the whole new one. On a local disk the file and the rename are fsynced."""
  temporary = path + ".tmp"
  local = local_path(path)
  with open(temporary, "wb" if isinstance(data, bytes) else "w") as f:
    f.write(data)
    if local is not None:
      f.flush()
      os.fsync(f.fileno())
  replace(temporary, path)
  if local is not None:
    fsync_dir(os.path.dirname(os.path.abspath(local)))


def fsync_dir(directory: str) -> None:
  """Makes a rename in a local folder durable (a no-op where folders cannot be synced)."""
  try:
    fd = os.open(directory, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)
  except OSError:
    pass


def copy(source: str, target: str) -> None:
  """Copies the file `source` to `target` (replacing it)."""
  local_source, local_target = local_path(source), local_path(target)
  if local_source is not None and local_target is not None:
    shutil.copyfile(local_source, local_target)
    return
  with _errors(source):
    _gfile().copy(source, target, overwrite=True)


def remove(path: str) -> None:
  """Deletes the file `path`."""
  _either(path, os.remove, lambda g: g.remove(path))


def rmtree(path: str) -> None:
  """Deletes the folder `path` with everything in it."""
  _either(path, shutil.rmtree, lambda g: g.rmtree(path))
