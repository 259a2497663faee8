"""Run metrics: one writer for metrics.jsonl and TensorBoard event files."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import jax


def _plain(value: Any) -> Any:
  if hasattr(value, "item"):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/inf; keep them visible as text
  return value


class MetricsWriter:
  """Appends `{"step": s, name: value, ...}` lines to WORKDIR/metrics.jsonl and the same
  scalars to TensorBoard under WORKDIR/tensorboard. Only process 0 writes.
  """

  def __init__(self, workdir: str, tensorboard: bool = True):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._active = jax.process_index() == 0
    self._tb = None
    if self._active:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Appends the metrics of `step` as one record; numeric ones also go to TensorBoard."""
    if not self._active:
      return
    record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for name, value in record.items():
        if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
          self._tb.add_scalar(name, value, int(step))

  def event(self, step: int, **fields: Any) -> None:
    """A non-scalar record, e.g. {"event": "resumed"}."""
    if self._active:
      with open(self.path, "a") as f:
        f.write(json.dumps({"step": int(step), **fields}) + "\n")

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
  with open(path) as f:
    for line in f:
      if not line.strip():
        continue
      record = json.loads(line)
      if "event" in record:
        continue
      by_key[(record["step"], tuple(sorted(record)))] = record
  return sorted(by_key.values(), key=lambda r: r["step"])
