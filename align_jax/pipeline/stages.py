"""Pipelines of named, resumable stages.

A method is a list of stages (generate data -> train -> generate -> train -> evaluate).
Stage `name` works in `WORKDIR/<name>/` and, when it returns, leaves
`WORKDIR/<name>/COMPLETED.json` holding its result and settings. Rerunning the same
command skips completed stages (their recorded results feed later stages) and reruns
an interrupted one, which resumes from its own checkpoints. A completed stage whose
settings changed is not silently reused: the run stops and says so.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, Callable, Mapping, Sequence

import jax

from align_jax import fs

COMPLETION_FILE = "COMPLETED.json"


@dataclasses.dataclass(frozen=True)
class Stage:
  """One step of a pipeline.

  fn(stage_dir, results) -> result: `results` maps earlier stage names to their
  results; the result must be JSON-serialisable (paths, numbers, small tables).
  settings: what this stage's output depends on (recorded and compared on reruns).
  """
  name: str
  fn: Callable[[str, Mapping[str, Any]], Any]
  settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _sync_hosts(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def is_writer() -> bool:
  """Whether this process writes shared files (process 0 of a multi-host run)."""
  return jax.process_index() == 0


def _jsonable(value: Any) -> Any:
  return json.loads(json.dumps(value, default=str))


def read_completion(workdir: str, name: str) -> dict[str, Any] | None:
  """The completion record of stage `name` in a pipeline's WORKDIR (None: not completed)."""
  path = fs.join(workdir, name, COMPLETION_FILE)
  if not fs.exists(path):
    return None
  with fs.open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: invalid JSON ({e}); remove the file to rerun the stage") from None


def stage_seconds(workdir: str, names: Sequence[str]) -> dict[str, float]:
  """How long each completed stage took (from its completion record)."""
  seconds = {}
  for name in names:
    record = read_completion(workdir, name)
    if record is not None:
      seconds[name] = float(record["seconds"])
  return seconds


def stage_time_rows(workdir: str, seeds: Sequence[int], names: Sequence[str]
                    ) -> list[dict[str, Any]]:
  """Per stage of `names` completed in a seed's pipeline (`workdir`/seed_<s>): its mean
  seconds over `seeds` and the slowest seed's (a report's time table)."""
  by_stage: dict[str, list[float]] = {}
  for seed in seeds:
    for name, seconds in stage_seconds(fs.join(workdir, f"seed_{seed}"), names).items():
      by_stage.setdefault(name, []).append(seconds)
  return [{"stage": name, "seconds (mean over seeds)": round(sum(v) / len(v), 1),
           "slowest seed": round(max(v), 1)} for name, v in by_stage.items()]


class Pipeline:
  """Named stages run in order in one WORKDIR (see the module docstring)."""

  def __init__(self, workdir: str, stages: Sequence[Stage]):
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
      raise ValueError(f"stage names must be unique, got {names}")
    self.workdir = workdir
    self.stages = list(stages)

  def completion(self, name: str) -> dict[str, Any] | None:
    return read_completion(self.workdir, name)

  def run(self, only: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs every stage not yet completed; returns all stages' results."""
    results: dict[str, Any] = {}
    for stage in self.stages:
      stage_dir = fs.join(self.workdir, stage.name)
      done = self.completion(stage.name)
      # A stage's output depends on its settings and on what the stages before it made.
      settings = _jsonable({**dict(stage.settings), "upstream": dict(results)})
      if done is not None:
        if done.get("settings") != settings:
          raise ValueError(
              f"stage {stage.name!r} in {stage_dir} was completed with other settings or "
              f"other upstream results ({done.get('settings')} vs now {settings}); use a new "
              f"WORKDIR, or remove the folder {stage_dir} (and those of later stages) to redo it")
        logging.info("stage %s: completed earlier, skipping", stage.name)
        print(f"[align_jax] stage {stage.name}: already completed, skipping", flush=True)
        results[stage.name] = done["result"]
        continue
      if only is not None and stage.name not in only:
        continue
      fs.makedirs(stage_dir)
      print(f"[align_jax] stage {stage.name}: running in {stage_dir}", flush=True)
      start = time.perf_counter()
      result = _jsonable(stage.fn(stage_dir, dict(results)))
      _sync_hosts(f"stage {stage.name} outputs")
      seconds = time.perf_counter() - start
      record = {"stage": stage.name, "result": result, "settings": settings,
                "seconds": seconds, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
      if jax.process_index() == 0:  # one writer; every host reads after the barrier
        fs.write_atomically(fs.join(stage_dir, COMPLETION_FILE), json.dumps(record, indent=2))
      _sync_hosts(f"stage {stage.name}")
      print(f"[align_jax] stage {stage.name}: done in {seconds:.1f}s", flush=True)
      results[stage.name] = result
    return results


def run_seeds(workdir: str, seeds: Sequence[int],
              run_seed: Callable[[str, int], Mapping[str, Any]],
              write_report: Callable[[Mapping[int, Mapping[str, Any]], float], str],
              rows: Callable[[Mapping[str, Any]], Sequence[Mapping[str, Any]]],
              columns: Sequence[str]) -> dict[str, Any]:
  """Runs one pipeline per seed in WORKDIR/seed_<k>/ (run_seed(seed_dir, seed) returns
  its stages' results), prints each seed's table (`rows(results)`, shown by `columns`),
  and has the writer process write the report across seeds."""
  from align_jax.pipeline.reports import markdown_table
  started = time.perf_counter()
  per_seed = {}
  for seed in seeds:
    per_seed[seed] = run_seed(fs.join(workdir, f"seed_{seed}"), seed)
    print(markdown_table([{"seed": seed, **r} for r in rows(per_seed[seed])],
                         ["seed", *columns]))
  report = write_report(per_seed, time.perf_counter() - started) if is_writer() else None
  print(f"[align_jax] report: {report} ({time.perf_counter() - started:.0f}s)")
  return {"report": report, "seeds": {s: list(rows(r)) for s, r in per_seed.items()}}
