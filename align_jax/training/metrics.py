"""Run metrics: one writer for metrics.jsonl and TensorBoard event files.

Both are written through `align_jax.fs`, so a WORKDIR on gs:// (or any URL) holds them;
tensorboardX writes a URL's event files through the same layer (`_GfileEventFiles`).
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Mapping

import jax

from align_jax import fs


def _plain(value: Any) -> Any:
  if hasattr(value, "item"):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/inf; keep them visible as text
  return value


class MetricsWriter:
  """Appends `{"step": s, name: value, ...}` lines to WORKDIR/metrics.jsonl and the same
  scalars to TensorBoard under WORKDIR/tensorboard. Only process 0 writes.

  resumed_from: the checkpoint step a run continues from (0 for a fresh start). The
  records after it (written by an attempt that stopped before its next checkpoint) are
  dropped from metrics.jsonl, so the file holds each step once; TensorBoard is told to
  hide the earlier events after that step (a purge step), but its old event files still
  hold them.
  """

  def __init__(self, workdir: str, tensorboard: bool = True, resumed_from: int | None = None):
    self.path = fs.join(workdir, "metrics.jsonl")
    self._active = jax.process_index() == 0
    self._tb = None
    if self._active:
      fs.makedirs(workdir)
      if resumed_from is not None:
        self.rewind(resumed_from)
      if tensorboard:
        self._tb = _summary_writer(fs.join(workdir, "tensorboard"),
                                   purge_step=None if resumed_from is None else resumed_from + 1)

  def rewind(self, step: int) -> None:
    """Drops the records after `step` (and any line cut short by a crash)."""
    self._rewrite(lambda record: record["step"] <= step)

  def write(self, step: int, metrics: Mapping[str, Any], replace: bool = False) -> None:
    """Appends the metrics of `step` as one record; numeric ones also go to TensorBoard.

    replace: first drop an earlier record of `step` with the same names (a result that
    is recomputed, e.g. the final evaluation of a finished run that is run again).
    """
    if not self._active:
      return
    record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
    if replace:
      self._rewrite(lambda old: old["step"] != record["step"] or set(old) != set(record))
    with fs.open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for name, value in record.items():
        if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
          self._tb.add_scalar(name, value, int(step))

  def event(self, step: int, **fields: Any) -> None:
    """A non-scalar record, e.g. {"event": "resumed"}."""
    if self._active:
      with fs.open(self.path, "a") as f:
        f.write(json.dumps({"step": int(step), **fields}) + "\n")

  def _rewrite(self, keep: Callable[[dict[str, Any]], bool]) -> None:
    """Replaces metrics.jsonl (atomically) by its records for which `keep` holds."""
    if not fs.exists(self.path):
      return
    kept, changed = [], False
    with fs.open(self.path) as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          changed = changed or bool(line.strip())
          continue
        if isinstance(record, dict) and "step" in record and keep(record):
          changed = changed or not line.endswith("\n")
          kept.append(line if line.endswith("\n") else line + "\n")
        else:
          changed = True
    if not changed:
      return
    fs.write_atomically(self.path, "".join(kept))

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(path: str) -> list[dict[str, Any]]:
  """The scalar records of a metrics.jsonl, the last one kept where a step repeats
  (a resumed run recomputes the steps after its checkpoint)."""
  by_key: dict[tuple[int, tuple[str, ...]], dict[str, Any]] = {}
  with fs.open(path) as f:
    for line in f:
      if not line.strip():
        continue
      record = json.loads(line)
      if "event" in record:
        continue
      by_key[(record["step"], tuple(sorted(record)))] = record
  return sorted(by_key.values(), key=lambda r: r["step"])


class _GfileEventFiles:
  """A tensorboardX writer factory that writes event files through `align_jax.fs`."""

  def open(self, path: str):
    return fs.open(path, "wb")

  def directory_check(self, path: str) -> None:
    fs.makedirs(path)


def _summary_writer(logdir: str, purge_step: int | None):
  """A tensorboardX SummaryWriter for a local folder or a URL.

  tensorboardX writes a path without a registered scheme with the builtin `open` (a
  `ram://x` logdir would become a local folder `ram:`), and gs:// through a client it
  does not ship; so a URL's scheme is registered to write through `align_jax.fs`
  (gfile), and a file:// URL is written as the local folder it names.
  """
  from tensorboardX import SummaryWriter, record_writer
  local = fs.local_path(logdir)
  if local is None:
    record_writer.register_writer_factory(fs.scheme(logdir), _GfileEventFiles())
  return SummaryWriter(logdir if local is None else local, purge_step=purge_step)
