"""Reports: metrics.jsonl curves as PNG plots and a report.md that shows them."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

from align_jax.training.metrics import read_metrics


def plot_curves(path: str, series: Sequence[tuple[str, str, str]], title: str,
                ylabel: str = "", logy: bool = False) -> str:
  """Plots several metrics.jsonl series on one PNG.

  series: (metrics.jsonl path, metric key, legend label). Returns `path`.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
  for metrics_path, key, label in series:
    records = [r for r in read_metrics(metrics_path) if isinstance(r.get(key), (int, float))]
    if records:
      ax.plot([r["step"] for r in records], [r[key] for r in records], label=label)
  ax.set_xlabel("step")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  if logy:
    ax.set_yscale("log")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
  def cell(v):
    return f"{v:.3f}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
  return "\n".join(lines)


def write_report(path: str, title: str, sections: Sequence[tuple[str, str]]) -> str:
  """report.md from (heading, markdown body) sections; images are referenced relatively."""
  parts = [f"# {title}", ""]
  for heading, body in sections:
    parts += [f"## {heading}", "", body.strip(), ""]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    f.write("\n".join(parts))
  return path
