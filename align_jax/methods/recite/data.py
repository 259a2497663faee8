"""Closed-book QA datasets for RECITE: Natural Questions, TriviaQA, HotpotQA.

Each becomes a seqio task whose examples are {"question": string, "answers": strings}
(untokenised: prompts are assembled per method), and `qa_records` reads the first N
examples of a split as plain records for `Reciter`:

  natural_questions_open   TFDS natural_questions_open:1.0.0 (answers: `answer`)
  natural_questions        TFDS natural_questions/default:0.1.0, the full Natural Questions
                           set as the RECITE paper uses it: only examples with a long answer
                           and a short answer are kept (`nq_long_and_short_answers`);
                           answers are the short-answer texts
  trivia_qa                TFDS trivia_qa/rc.nocontext:1.1.0 (answers: `answer.value`
                           then `answer.aliases`)
  hotpotqa                 the published HotpotQA file: a JSON list of objects (or jsonl),
                           each with "question" and "answer" (and "_id", "type", "level")

'natural_questions_open' and 'natural_questions' are DIFFERENT question sets: NQ-open
(Lee et al., 2019) keeps only questions whose short answers have at most five tokens
and uses the NQ dev set as its 'validation' split, with its own answer lists, while the
paper's NQ setting filters the full NQ dev set to questions having both a long answer
and at least one short-answer span. Scores on the two are not comparable, and their
first 1,024 validation questions differ.

The paper evaluates on the first 1,024 development examples ('validation' split for the
TFDS datasets, after the NQ filter for 'natural_questions'; the dev file for HotpotQA).
A split without gold answers (TriviaQA's 'test', whose answers TFDS fills with '<unk>')
is refused by `qa_records`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from align_jax import fs
from align_jax.data.pipeline import without_autotune

TFDS_QA = {
    "natural_questions_open": "natural_questions_open:1.0.0",
    # The full NQ (a Beam dataset: it must already be prepared under tfds_data_dir).
    "natural_questions": "natural_questions/default:0.1.0",
    "trivia_qa": "trivia_qa/rc.nocontext:1.1.0",
}

# Decode only what the NQ reader uses; each NQ example also carries its Wikipedia page.
_NQ_DECODERS = tfds.decode.PartialDecoding({
    "question": {"text": True},
    "annotations": {"long_answer": {"start_token": True}, "short_answers": {"text": True}}})


def _nq_fields(example: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  return {"question": example["question"], "answers": example["answer"]}


def _trivia_fields(example: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  answer = example["answer"]
  return {"question": example["question"],
          "answers": tf.concat([answer["value"][None], answer["aliases"]], axis=0)}


def nq_short_answers(example: Mapping[str, Any]) -> tf.Tensor:
  """The distinct short-answer texts of a TFDS natural_questions example, in order.

  An annotation counts when it has a long answer (`long_answer.start_token` is not -1);
  its short-answer span texts that are not blank are taken, over annotations in order,
  duplicates dropped. `yes_no_answer` is ignored: a YES/NO judgement is not a short-answer
  span, so an example whose only short answers are YES/NO yields no answers (and the paper's
  filter drops it), and YES/NO never joins the span texts of other annotations. (In NQ a
  short answer only exists inside its annotation's long answer, so requiring the long answer
  per annotation is the same as requiring both for the example.)
  """
  annotations = example["annotations"]
  has_long = tf.not_equal(annotations["long_answer"]["start_token"], -1)
  texts = annotations["short_answers"]["text"]
  if not isinstance(texts, tf.RaggedTensor):
    texts = tf.RaggedTensor.from_tensor(texts)
  texts = tf.ragged.boolean_mask(texts, has_long).flat_values
  texts = tf.boolean_mask(texts, tf.not_equal(tf.strings.strip(texts), ""))
  return tf.unique(texts).y


def nq_long_and_short_answers(ds: tf.data.Dataset) -> tf.data.Dataset:
  """TFDS natural_questions examples -> {"question", "answers"}, keeping only examples with
  a long answer and at least one short-answer span (see `nq_short_answers`), as the RECITE
  paper's NQ setting does."""
  ds = ds.map(lambda ex: {"question": ex["question"]["text"],
                          "answers": nq_short_answers(ex)},
              num_parallel_calls=tf.data.AUTOTUNE)
  return ds.filter(lambda ex: tf.size(ex["answers"]) > 0)


def _map(fields):
  return lambda ds: ds.map(fields, num_parallel_calls=tf.data.AUTOTUNE)


_PREPROCESS = {"natural_questions_open": _map(_nq_fields),
               "natural_questions": nq_long_and_short_answers,
               "trivia_qa": _map(_trivia_fields)}
_DECODERS = {"natural_questions": _NQ_DECODERS}


def register_tfds_qa_task(name: str, dataset: str, tfds_data_dir: str | None = None
                          ) -> seqio.Task:
  """A seqio task over a TFDS QA dataset ('natural_questions_open', 'natural_questions'
  (the paper's filtered full NQ) or 'trivia_qa'); see the module docstring."""
  if dataset not in TFDS_QA:
    raise ValueError(f"unknown QA dataset {dataset!r}; expected one of {sorted(TFDS_QA)} "
                     "(HotpotQA: register_hotpotqa_task)")
  source = seqio.TfdsDataSource(TFDS_QA[dataset], tfds_data_dir=tfds_data_dir,
                                decoders=_DECODERS.get(dataset))
  seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name, source=source, output_features={}, preprocessors=[_PREPROCESS[dataset]])


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
  (answers deduplicated, in order, blank ones dropped).

  A split without gold answers is refused: the first example whose answers are all blank
  or '<unk>' (TriviaQA's 'test' split) raises ValueError naming the task, the split and
  the example's index in the task's split (after the task's preprocessing)."""
  if isinstance(task, str):
    task = seqio.get_mixture_or_task(task)
  ds = task.get_dataset(None, split=split, shuffle=False, try_in_mem_cache=False)
  if limit is not None:
    ds = ds.take(limit)
  decode = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])
  records = []
  for index, example in enumerate(without_autotune(ds).as_numpy_iterator()):
    answers = list(dict.fromkeys(str(a) for a in decode(np.atleast_1d(example["answers"]))))
    answers = [a for a in answers if a.strip()]
    if all(a.strip().lower() == "<unk>" for a in answers):
      raise ValueError(
          f"task {task.name!r}, split {split!r}, example {index}: no gold answers (all "
          f"{'<unk>' if answers else 'empty'}); the split has no gold answers (e.g. "
          "TriviaQA's test split): evaluate on 'validation'")
    records.append({"question": example["question"].decode("utf-8"), "answers": answers})
  return records
