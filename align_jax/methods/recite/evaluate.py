"""`recite_eval`: RECITE and its baselines on a real QA dataset with a trained model.

What `gin/methods/recite/{nq,nq_open,trivia_qa,hotpotqa}.gin` run: the first `limit`
examples of a dataset's split, answered by each method in `methods` with few-shot exemplars
from a jsonl file (this project's own, in align_jax/methods/recite/exemplars/), by a
Hugging Face model directory or an align_jax run. Writes, per method,
`<method>.jsonl` (every path and the prediction) and `scores.json` (EM/F1 under the
dataset's answer convention, EM at each path count, the error analysis and the per-path
table). Sampled methods (self-consistent direct answering and chain of thought,
recitation, diversified recitation) all draw the same number of paths.
Existing outputs are never overwritten: a rerun into the same WORKDIR stops.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
from jax.sharding import Mesh

from align_jax import fs
from align_jax.data.jsonl import read_jsonl, write_jsonl
from align_jax.methods.recite import analysis, data
from align_jax.methods.recite.prompts import Exemplar
from align_jax.methods.recite.recite import METHODS, ReciteConfig, Reciter, run_method
from align_jax.models import TransformerConfig
from align_jax.parallel import DEFAULT_RULES, LogicalRules, create_mesh
from align_jax.training.runs import load_run

EXEMPLARS_DIR = os.path.join(os.path.dirname(__file__), "exemplars")


def load_exemplars(path: str) -> list[Exemplar]:
  """Exemplars from jsonl: {"question", "answer", "passages"?, "hints"?, "reasoning"?}."""
  if not fs.has_scheme(path) and not os.path.isabs(path) and not fs.exists(path):
    path = fs.join(EXEMPLARS_DIR, path)

  def check(record):
    for field in ("question", "answer"):
      if not isinstance(record.get(field), str):
        return f"field {field!r} must be a string"
    for field in ("passages", "hints"):
      if field in record and not (isinstance(record[field], list)
                                  and all(isinstance(x, str) for x in record[field])):
        return f"field {field!r} must be a list of strings"
    return None

  out = []
  for record in read_jsonl(path, check):
    try:
      out.append(Exemplar(record["question"], record["answer"], tuple(record.get("passages", ())),
                          tuple(record.get("hints", ())), record.get("reasoning", "")))
    except ValueError as e:
      raise ValueError(f"{path}: {e}") from None
  if not out:
    raise ValueError(f"{path}: no exemplars")
  return out


def recite_eval(workdir: str, checkpoint: str, dataset: str, exemplars: str, *,
                convention: str, methods: Sequence[str] = ("direct", "recite"),
                split: str = "validation",
                limit: int | None = 1024, recite: ReciteConfig = ReciteConfig(),
                path_counts: Sequence[int] = (1, 5, 20), hotpotqa_files: dict | None = None,
                tfds_data_dir: str | None = None, config: TransformerConfig | None = None,
                vocabulary: str | None = None, mesh: Mesh | None = None,
                rules: LogicalRules = DEFAULT_RULES, batch_size: int = 16,
                seed: int = 0) -> dict[str, Any]:
  """Evaluates `methods` (of `recite.METHODS`) on `dataset` ('natural_questions',
  'natural_questions_open', 'trivia_qa' or 'hotpotqa' with `hotpotqa_files`), scoring
  answers under `convention` ('trivia_qa' for NQ and TriviaQA, 'squad' for HotpotQA);
  returns the scores per method."""
  unknown = set(methods) - set(METHODS)
  if unknown:
    raise ValueError(f"unknown RECITE methods {sorted(unknown)}; expected some of "
                     f"{sorted(METHODS)}")
  outputs = [fs.join(workdir, f"{m}.jsonl") for m in methods]
  existing = [p for p in outputs + [fs.join(workdir, "scores.json")] if fs.exists(p)]
  if existing:
    raise FileExistsError(f"{existing[0]} already exists; choose another WORKDIR (nothing "
                          "was evaluated)")
  if dataset == "hotpotqa":
    if not hotpotqa_files:
      raise ValueError("dataset 'hotpotqa' needs hotpotqa_files, e.g. "
                       "{'validation': 'hotpot_dev_distractor_v1.json'}")
    task = data.register_hotpotqa_task("recite_hotpotqa", hotpotqa_files)
  else:
    task = data.register_tfds_qa_task(f"recite_{dataset}", dataset, tfds_data_dir)
  records = data.qa_records(task, split, limit)
  shots = load_exemplars(exemplars)

  mesh = mesh or create_mesh()
  run = load_run(checkpoint, config=config, vocabulary=vocabulary, mesh=mesh, rules=rules)
  if run.vocab is None:
    raise ValueError(f"{checkpoint} names no vocabulary; bind recite_eval.vocabulary")
  sampler = run.sampler(batch_size=batch_size)
  reciter = Reciter(sampler, shots, recite, convention=convention)
  key = jax.random.key(seed)
  # EM at each requested count up to num_paths, and always at num_paths (what is sampled).
  counts = sorted({k for k in path_counts if k <= recite.num_paths} | {recite.num_paths})
  scores = {}
  for method, path in zip(methods, outputs):
    # Every sampled method draws the same number of paths from the same key.
    results, by_paths = run_method(reciter, method, records, key, counts, seed=seed)
    if jax.process_index() == 0:
      write_jsonl(path, [r.to_dict() for r in results])
    entry: dict[str, Any] = {**analysis.scores(results), "convention": convention,
                             "em_by_paths": by_paths}
    if method != "direct":
      entry["error_analysis"] = analysis.error_analysis(results)
      if any(r.final is None for r in results):  # paths answered one by one
        entry["path_table"] = analysis.path_table(results)
    scores[method] = entry
    print(f"[align_jax] {dataset} {method}: EM {entry['em']:.4f} F1 {entry['f1']:.4f} "
          f"(n={entry['n']})", flush=True)
  if jax.process_index() == 0:
    fs.write_atomically(fs.join(workdir, "scores.json"), json.dumps(scores, indent=2))
  return scores
