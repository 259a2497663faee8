"""Reports: curves as PNG plots (metrics.jsonl series or given points) and a report.md
that shows them. Paths may be local or URLs (gs://...): both go through `align_jax.fs`."""

from __future__ import annotations

import io
from typing import Mapping, Sequence

import numpy as np

from align_jax import fs
from align_jax.training.metrics import read_metrics


def plot_curves(path: str, series: Sequence[tuple[str, str, str]], title: str,
                ylabel: str = "", logy: bool = False) -> str:
  """Plots several metrics.jsonl series on one PNG against the step.

  series: (metrics.jsonl path, metric key, legend label). Returns `path`.
  """
  lines = []
  for metrics_path, key, label in series:
    records = [r for r in read_metrics(metrics_path) if isinstance(r.get(key), (int, float))]
    if records:
      lines.append((label, [r["step"] for r in records], [r[key] for r in records], None))
  return plot_lines(path, lines, title, "step", ylabel, logy)


def plot_lines(path: str, lines: Sequence[tuple[str, Sequence[float], Sequence[float],
                                                 Sequence[float] | None]],
               title: str, xlabel: str, ylabel: str = "", logy: bool = False,
               logx: bool = False, xticks: Sequence[float] | None = None) -> str:
  """Plots (label, xs, ys, error bars or None) lines on one PNG; a label starting with
  'baseline' is drawn dashed. Returns `path`."""
  # A Figure of its own, not pyplot's: a report leaves the caller's backend (a notebook's
  # inline plots) and open figures alone.
  from matplotlib.figure import Figure

  below = len(lines) > 4   # a long legend goes under the plot, not over the lines
  fig = Figure(figsize=(6.4, 3.6 + (0.22 * len(lines) if below else 0)), dpi=110)
  ax = fig.subplots()
  for label, xs, ys, errors in lines:
    if errors is None:
      ax.plot(xs, ys, label=label, linestyle="--" if label.startswith("baseline") else "-")
    else:
      ax.errorbar(xs, ys, yerr=errors, label=label, marker="o", capsize=3)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  if logy:
    ax.set_yscale("log")
  if logx:
    ax.set_xscale("log")
  if xticks is not None:
    ax.set_xticks(list(xticks), [f"{x:g}" for x in xticks])
  ax.grid(alpha=0.3)
  if below:
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize="small", frameon=False)
  else:
    ax.legend()
  fig.tight_layout()
  image = io.BytesIO()
  fig.savefig(image, format="png", bbox_inches="tight")
  fs.makedirs(fs.dirname(fs.resolve(path)))
  fs.write_atomically(path, image.getvalue())
  return path


def plot_cdfs(path: str, series: Sequence[tuple[str, Sequence[float]]], title: str,
              xlabel: str) -> str:
  """Plots each (label, values)'s empirical distribution (the share of values at most x)
  on one PNG; empty series are left out. Returns `path`."""
  lines = []
  for label, values in series:
    xs = sorted(values)
    if xs:
      lines.append((label, xs, [(i + 1) / len(xs) for i in range(len(xs))], None))
  return plot_lines(path, lines, title, xlabel, "share at most this")


def mean_std(values: Sequence[float]) -> str:
  """'mean ± std' of a few numbers (e.g. a metric over seeds), three decimals."""
  values = np.asarray(values, np.float64)
  return f"{values.mean():.3f} ± {values.std():.3f}"


def mean_std_present(values: Sequence[float | None], missing: str = "(none)") -> str:
  """`mean_std` over the values that are not None, with how many when some are (e.g.
  seeds whose data had a kind, or that ran a stage); `missing` when none are."""
  present = [v for v in values if v is not None]
  if not present:
    return missing
  text = mean_std(present)
  return text if len(present) == len(values) else f"{text} ({len(present)} seeds)"


def markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
  """A markdown table of `columns` over the rows; floats with three decimals, missing
  cells empty."""
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
  fs.makedirs(fs.dirname(fs.resolve(path)))
  fs.write_atomically(path, "\n".join(parts))
  return path
