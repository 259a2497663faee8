"""Closed-book QA datasets for RECITE: Natural Questions (open), TriviaQA, HotpotQA.

Each becomes a seqio task whose examples are {"question": string, "answers": strings}
(untokenised: prompts are assembled per method), and `qa_records` reads the first N
examples of a split as plain records for `Reciter`:

  natural_questions_open   TFDS natural_questions_open:1.0.0 (answers: `answer`)
  trivia_qa                TFDS trivia_qa/rc.nocontext:1.1.0 (answers: `answer.value`
                           then `answer.aliases`)
  hotpotqa                 the published HotpotQA file: a JSON list of objects (or jsonl),
                           each with "question" and "answer" (and "_id", "type", "level")

The paper evaluates on the first 1,024 development examples ('validation' split for the
TFDS datasets, the dev file for HotpotQA).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np
import seqio
import tensorflow as tf

from align_jax import fs

TFDS_QA = {
    "natural_questions_open": "natural_questions_open:1.0.0",
    "trivia_qa": "trivia_qa/rc.nocontext:1.1.0",
}


def _nq_fields(example: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  return {"question": example["question"], "answers": example["answer"]}


def _trivia_fields(example: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  answer = example["answer"]
  return {"question": example["question"],
          "answers": tf.concat([answer["value"][None], answer["aliases"]], axis=0)}


_FIELDS = {"natural_questions_open": _nq_fields, "trivia_qa": _trivia_fields}


def register_tfds_qa_task(name: str, dataset: str, tfds_data_dir: str | None = None
                          ) -> seqio.Task:
  """A seqio task over a TFDS QA dataset ('natural_questions_open' or 'trivia_qa')."""
  if dataset not in TFDS_QA:
    raise ValueError(f"unknown QA dataset {dataset!r}; expected one of {sorted(TFDS_QA)} "
                     "(HotpotQA: register_hotpotqa_task)")
  fields = _FIELDS[dataset]
  source = seqio.TfdsDataSource(TFDS_QA[dataset], tfds_data_dir=tfds_data_dir)
  seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name, source=source, output_features={},
      preprocessors=[lambda ds: ds.map(fields, num_parallel_calls=tf.data.AUTOTUNE)])


def read_hotpotqa(path: str) -> list[dict[str, Any]]:
  """Records {"question", "answers", "id", "type", "level"} from a HotpotQA file.

  Accepts the published JSON list or one object per line. A malformed entry fails with
  the file and the entry (list index or line number) and what is missing.
  """
  text = fs.read_text(path)
  stripped = text.lstrip()
  if stripped.startswith("["):
    try:
      entries = [(f"entry {i}", e) for i, e in enumerate(json.loads(text))]
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from None
  else:
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
      if line.strip():
        try:
          entries.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}, line {number}: not valid JSON ({e})") from None
  records = []
  for where, entry in entries:
    for field in ("question", "answer"):
      if not isinstance(entry, dict) or not isinstance(entry.get(field), str):
        raise ValueError(f"{path}, {where}: field {field!r} must be a string")
    records.append({"question": entry["question"], "answers": [entry["answer"]],
                    "id": entry.get("_id", entry.get("id")), "type": entry.get("type"),
                    "level": entry.get("level")})
  if not records:
    raise ValueError(f"{path}: no HotpotQA entries")
  return records


def register_hotpotqa_task(name: str, files: Mapping[str, str]) -> seqio.Task:
  """A seqio task over HotpotQA files, e.g. {"validation": "hotpot_dev_distractor_v1.json"}.

  The files are read and checked when the task is registered."""
  splits = {split: read_hotpotqa(os.fspath(path)) for split, path in files.items()}

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    del shuffle_files, seed
    rows = splits[split]
    answers = tf.ragged.constant([r["answers"] for r in rows])
    return tf.data.Dataset.from_tensor_slices(
        {"question": [r["question"] for r in rows], "answers": answers}).map(
            lambda ex: {"question": ex["question"], "answers": tf.identity(ex["answers"])})

  seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name, source=seqio.FunctionDataSource(dataset_fn, splits=list(splits)),
      output_features={})


def qa_records(task: str | seqio.Task, split: str = "validation", limit: int | None = 1024
               ) -> list[dict[str, Any]]:
  """The first `limit` examples of a QA task's split as {"question", "answers"} records
  (answers deduplicated, in order)."""
  if isinstance(task, str):
    task = seqio.get_mixture_or_task(task)
  ds = task.get_dataset(None, split=split, shuffle=False, try_in_mem_cache=False)
  if limit is not None:
    ds = ds.take(limit)
  decode = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])
  records = []
  for example in ds.as_numpy_iterator():
    answers = list(dict.fromkeys(str(a) for a in decode(np.atleast_1d(example["answers"]))))
    records.append({"question": example["question"].decode("utf-8"),
                    "answers": [a for a in answers if a.strip()]})
  return records
