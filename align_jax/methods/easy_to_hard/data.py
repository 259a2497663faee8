"""Easy-to-Hard's real data: MATH, MATH500 and PRM800K, in the step format.

Readers (each returns plain dicts; bad input is a ValueError naming the file, the line
for jsonl, and the key, saying what was expected):

  read_math        the MATH dataset (Hendrycks et al.): a split folder of the original
                   release (`MATH/train/<subject>/<number>.json`) or a jsonl copy (the
                   Hugging Face ones), one problem per line. Records {"id", "problem",
                   "level", "type", "solution", "answer"}: `id` is "subject/number" for
                   files (records sorted by id) and the 1-based line number (a string)
                   for jsonl; `level` is the int of "Level 3" (None for "Level ?");
                   `answer` is `extract_answer(solution)` (a solution without one fails).
  read_math500     MATH500 (the 500 held-out test problems of "Let's Verify Step by
                   Step"; PRM800K's `math_splits/*.jsonl` share the format): records with
                   read_math's keys, `id` = "unique_id", `type` = "subject", `answer` the
                   given "answer".
  read_prm800k     PRM800K phase-1 or phase-2 labels (openai/prm800k): process records
                   {"prompt", "steps", "labels", "answer", "finish_reason", "source"};
                   `read_prm800k_with_stats` also returns what it skipped.

Converters: `prm800k_sft_records` (the all-positive PRM800K trajectories that reach an
answer, as supervised solutions), `math_sft_record` (a MATH solution in the step
format), `attach_levels` (MATH levels onto PRM800K records, by problem text) and
`by_levels` (a level filter: "easy" is levels 1-3 in the Easy-to-Hard paper).

A PRM800K line is one labelled solution: `label.steps` holds, per step, the rated
candidate `completions` ({"text", "rating": -1/0/1/null, "flagged"}), a labeler-written
`human_completion` (phase 1 only, when every candidate was wrong; a dict with "text")
and `chosen_completion`, the index of the candidate the solution continued with (null
when the human completion was used, and on a solution's last step, where the labeler
stopped). The trajectory kept here follows, step by step:

  1. the human completion when there is one (rated +1 unless it carries a rating);
  2. else the completion at `chosen_completion`;
  3. else the only completion, when there is exactly one;
  4. else (several candidates, none chosen: the step where labelling stopped) the
     pre-generated step of a phase-2 line (`question.pre_generated_steps[i]`, which is
     the candidate with the same text), else the first candidate rated -1; with neither,
     the trajectory ends before the step.

A step's label is 1 for rating 0 or +1 and 0 for -1; the trajectory ends after its first
-1 step, and before a step whose rating is null (unlabelled). `steps` are the pieces
`process_steps` gives for the step texts: every step but the last keeps the blank-line
separator, so the label sits on its last token. (Ratings of candidates off the kept
trajectory, most of phase 1's -1 labels, are not in the records.)
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Iterator, Mapping, Sequence

from align_jax import fs
from align_jax.data.jsonl import read_jsonl_numbered
from align_jax.eval.math import (ANSWER_HEADER, STEP_SEPARATOR, extract_answer, join_steps,
                                 process_steps, split_steps)

_LEVEL = re.compile(r"Level\s*(\d+|\?)")
_ANSWER_STEP = re.compile(r"(?:^|\n)[ \t]*" + re.escape(ANSWER_HEADER) + r"[ \t]*\n\s*\S")
_RATINGS = (-1, 0, 1)


# --- helpers -------------------------------------------------------------------------


def _show(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 60 else text[:57] + "..."


def _get(entry: Mapping[str, Any], key: str, kinds: tuple[type, ...], where: str,
         expected: str, name: str | None = None) -> Any:
  """`entry[key]` when it is one of `kinds` (bool never counts as int), else an error at
  `where` naming the key (`name`, for nested keys) and what was `expected`."""
  name = name or key
  if key not in entry:
    raise ValueError(f"{where}: missing key {name!r} (expected {expected})")
  value = entry[key]
  if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
    raise ValueError(f"{where}: key {name!r} must be {expected}, got {_show(value)}")
  return value


def _level(value: Any, where: str) -> int | None:
  """The level of "Level 3" (or 3) as an int; None for "Level ?"."""
  if isinstance(value, int) and not isinstance(value, bool):
    return value
  if isinstance(value, str) and (match := _LEVEL.fullmatch(value.strip())):
    return None if match.group(1) == "?" else int(match.group(1))
  raise ValueError(f"{where}: key 'level' must be 'Level N', 'Level ?' or an integer, "
                   f"got {_show(value)}")


def _math_record(entry: Any, id_: str, where: str) -> dict[str, Any]:
  if not isinstance(entry, dict):
    raise ValueError(f"{where}: expected a JSON object, got {type(entry).__name__}")
  for key in ("problem", "type", "solution"):
    _get(entry, key, (str,), where, "a string")
  if "level" not in entry:
    raise ValueError(f"{where}: missing key 'level' (expected 'Level N' or 'Level ?')")
  answer = extract_answer(entry["solution"])
  if answer is None:
    raise ValueError(f"{where}: key 'solution' has no final answer (expected a "
                     "\\boxed{...} answer)")
  return {"id": id_, "problem": entry["problem"], "level": _level(entry["level"], where),
          "type": entry["type"], "solution": entry["solution"], "answer": answer}


def _problem_key(text: str) -> str:
  return " ".join(text.split())


# --- MATH and MATH500 ----------------------------------------------------------------


def read_math(path: str) -> list[dict[str, Any]]:
  """MATH problems from a split folder (`<path>/<subject>/<number>.json`, sorted by id
  "subject/number") or a jsonl file (id: the line number); see the module docstring."""
  if not fs.isdir(path):
    return [_math_record(entry, str(number), f"{path}, line {number}")
            for number, entry in read_jsonl_numbered(path)]
  records = []
  for subject in fs.listdir(path):
    folder = fs.join(path, subject)
    if not fs.isdir(folder):
      continue
    for name in fs.listdir(folder):
      if not name.endswith(".json"):
        continue
      file = fs.join(folder, name)
      try:
        entry = json.loads(fs.read_text(file))
      except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not valid JSON ({e.msg})") from None
      records.append(_math_record(entry, f"{subject}/{name[:-len('.json')]}", file))
  if not records:
    raise ValueError(f"{path}: no MATH problems (expected <subject>/<number>.json files "
                     "in this folder, or a jsonl file)")
  return sorted(records, key=lambda r: r["id"])


def read_math500(path: str) -> list[dict[str, Any]]:
  """MATH500-format jsonl ("problem", "solution", "answer", "subject", "level",
  "unique_id") as read_math's records (id = unique_id, type = subject)."""
  records = []
  for number, entry in read_jsonl_numbered(path):
    where = f"{path}, line {number}"
    for key in ("problem", "solution", "answer", "subject", "unique_id"):
      _get(entry, key, (str,), where, "a string")
    if "level" not in entry:
      raise ValueError(f"{where}: missing key 'level' (expected an integer)")
    records.append({"id": entry["unique_id"], "problem": entry["problem"],
                    "level": _level(entry["level"], where), "type": entry["subject"],
                    "solution": entry["solution"], "answer": entry["answer"]})
  return records


# --- PRM800K -------------------------------------------------------------------------


def _rating(completion: Any, where: str, name: str) -> int | None:
  if not isinstance(completion, dict):
    raise ValueError(f"{where}: key {name!r} must be an object with 'text' and 'rating', "
                     f"got {_show(completion)}")
  _get(completion, "text", (str,), where, "a string", f"{name}.text")
  rating = completion.get("rating")
  if rating is not None and (isinstance(rating, bool) or rating not in _RATINGS):
    raise ValueError(f"{where}: key '{name}.rating' must be -1, 0, 1 or null, got "
                     f"{_show(rating)}")
  return rating


def _trajectory(entry: Mapping[str, Any], where: str
                ) -> tuple[list[str], list[int]]:
  """The texts and ratings of the kept trajectory (module docstring), up to its end."""
  label = _get(entry, "label", (dict,), where, "an object")
  steps = _get(label, "steps", (list,), where, "a list", "label.steps")
  pre_generated = entry["question"].get("pre_generated_steps") or []
  texts, ratings = [], []
  for i, step in enumerate(steps):
    name = f"label.steps[{i}]"
    if not isinstance(step, dict):
      raise ValueError(f"{where}: key {name!r} must be an object, got {_show(step)}")
    completions = _get(step, "completions", (list, type(None)), where, "a list",
                       f"{name}.completions") or []
    step_ratings = [_rating(c, where, f"{name}.completions[{j}]")
                    for j, c in enumerate(completions)]
    chosen = step.get("chosen_completion")
    if chosen is not None and (isinstance(chosen, bool) or not isinstance(chosen, int)
                               or not 0 <= chosen < len(completions)):
      raise ValueError(f"{where}: key '{name}.chosen_completion' must be null or an index "
                       f"into the {len(completions)} completions, got {_show(chosen)}")
    human = step.get("human_completion")
    if isinstance(human, int) and not isinstance(human, bool) \
        and 0 <= human < len(completions):
      chosen, human = human, None  # an index where the text belongs (seen in phase 1)
    if human is not None:
      if isinstance(human, str):
        text, rating = human, 1
      elif isinstance(human, dict):
        text = _get(human, "text", (str,), where, "a string", f"{name}.human_completion.text")
        rating = _rating(human, where, f"{name}.human_completion")
        rating = 1 if rating is None else rating
      else:
        raise ValueError(f"{where}: key '{name}.human_completion' must be null, a string or "
                         f"an object with 'text', got {_show(human)}")
    else:
      if chosen is None and len(completions) == 1:
        chosen = 0
      elif chosen is None:
        target = pre_generated[i] if i < len(pre_generated) else None
        chosen = next((j for j, c in enumerate(completions) if c["text"] == target), None)
        if chosen is None:
          chosen = next((j for j, r in enumerate(step_ratings) if r == -1), None)
      if chosen is None:
        break
      text, rating = completions[chosen]["text"], step_ratings[chosen]
    if rating is None:
      break
    texts.append(text)
    ratings.append(rating)
    if rating == -1:
      break
  return texts, ratings


def read_prm800k_with_stats(path: str, include_quality_control: bool = False
                            ) -> tuple[list[dict[str, Any]], dict[str, int]]:
  """PRM800K process records (module docstring) and counts: {"lines", "records",
  "quality_control", "initial_screening", "no_labelled_step"}; each skipped line counts
  once (screening first), so lines = records + the three skips.

  Quality-control and initial-screening questions are skipped unless
  `include_quality_control`; a line whose trajectory has no labelled step is skipped.
  `source` is "<file name>:<line number>"."""
  records = []
  stats = {"lines": 0, "records": 0, "quality_control": 0, "initial_screening": 0,
           "no_labelled_step": 0}
  for number, entry in read_jsonl_numbered(path):
    where = f"{path}, line {number}"
    stats["lines"] += 1
    question = _get(entry, "question", (dict,), where, "an object")
    problem = _get(question, "problem", (str,), where, "a string", "question.problem")
    answer = _get(question, "ground_truth_answer", (str, type(None)), where,
                  "a string or null", "question.ground_truth_answer")
    pre_generated = question.get("pre_generated_steps")
    if pre_generated is not None and not (
        isinstance(pre_generated, list) and all(isinstance(s, str) for s in pre_generated)):
      raise ValueError(f"{where}: key 'question.pre_generated_steps' must be null or a list "
                       f"of strings, got {_show(pre_generated)}")
    texts, ratings = _trajectory(entry, where)
    finish_reason = _get(entry["label"], "finish_reason", (str, type(None)), where,
                         "a string or null", "label.finish_reason")
    if not include_quality_control and entry.get("is_initial_screening_question") is True:
      stats["initial_screening"] += 1
      continue
    if not include_quality_control and entry.get("is_quality_control_question") is True:
      stats["quality_control"] += 1
      continue
    if not texts:
      stats["no_labelled_step"] += 1
      continue
    records.append({"prompt": problem, "steps": process_steps(texts),
                    "labels": [1 if r >= 0 else 0 for r in ratings], "answer": answer,
                    "finish_reason": finish_reason,
                    "source": f"{fs.basename(path)}:{number}"})
  stats["records"] = len(records)
  return records, stats


def read_prm800k(path: str, include_quality_control: bool = False) -> list[dict[str, Any]]:
  """PRM800K process records; `read_prm800k_with_stats` also counts what was skipped."""
  return read_prm800k_with_stats(path, include_quality_control)[0]


# --- converters ----------------------------------------------------------------------


def prm800k_sft_records(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """{"prompt", "response", "answer"} from the PRM800K process records whose every step is
  labelled positive and whose last step holds the `# Answer` block; the response is the
  steps joined with their separators (as `join_steps` writes them)."""
  out = []
  for record in records:
    steps = list(record["steps"])
    if not steps or not all(label == 1 for label in record["labels"]) \
        or len(record["labels"]) != len(steps) or not _ANSWER_STEP.search(steps[-1]):
      continue
    out.append({"prompt": record["prompt"],
                "response": STEP_SEPARATOR.join(s.strip() for s in steps),
                "answer": record["answer"]})
  return out


def math_sft_record(record: Mapping[str, Any]) -> dict[str, Any]:
  """A MATH record as a supervised solution: {"prompt", "response", "answer", "level"},
  the response being the solution's blank-line paragraphs then the `# Answer` block."""
  if record.get("answer") is None:
    raise ValueError(f"MATH record {record.get('id')!r}: key 'answer' is missing or None "
                     "(expected the solution's final answer)")
  return {"prompt": record["problem"],
          "response": join_steps(split_steps(record["solution"]), record["answer"]),
          "answer": record["answer"], "level": record["level"]}


def attach_levels(records: Iterable[Mapping[str, Any]],
                  math_records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Copies of `records` with "level" and "type" from the MATH record of the same problem
  (matched on `prompt`, else `problem`, whitespace-normalised; the first MATH record of a
  problem wins); None for both when no MATH record matches."""
  known: dict[str, Mapping[str, Any]] = {}
  for math in math_records:
    known.setdefault(_problem_key(math["problem"]), math)
  out = []
  for record in records:
    text = record["prompt"] if "prompt" in record else record["problem"]
    match = known.get(_problem_key(text))
    out.append({**record, "level": match["level"] if match else None,
                "type": match["type"] if match else None})
  return out


def by_levels(records: Iterable[Mapping[str, Any]], levels: Sequence[int | None]
              ) -> list[Mapping[str, Any]]:
  """The records whose "level" is in `levels`, in order (e.g. levels 1-3: "easy")."""
  wanted = set(levels)
  return [r for r in records if r.get("level") in wanted]
