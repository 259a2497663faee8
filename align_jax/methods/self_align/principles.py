"""The project's principles and exemplars for principle-driven answers, and the prompt
a real model answers under.

`data/principles.jsonl` holds 16 principles, one line each:
  {"number": 1, "category": "ethical", "text": "...", "world_kinds": ["harmful"]}
(`world_kinds`: the principles world's request kinds whose judge checks the principle;
empty where the world has no check for it). `data/exemplars.jsonl` holds 5 exemplars:
  {"query": "...", "thoughts": "... (1 ethical, 4 question assessment) ...", "answer": "..."}
each thoughts turn naming, by number and category, the principles that apply. Users may
pass files of their own in the same format.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import re
from typing import Sequence

from align_jax.data.jsonl import JsonlError, read_jsonl_numbered
from align_jax.methods.self_align.answers import AnswerFormat

CATEGORIES = ("ethical", "informative", "helpful", "question assessment", "reasoning",
              "multi-aspect", "candor", "knowledge recitation", "static", "clarification",
              "numerical sensitivity", "dated knowledge", "step-by-step",
              "balanced perspectives", "creative", "operational")


@dataclasses.dataclass(frozen=True)
class Principle:
  number: int
  category: str
  text: str
  world_kinds: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Exemplar:
  query: str
  thoughts: str
  answer: str


def _packaged(name: str) -> str:
  return str(importlib.resources.files("align_jax.methods.self_align") / "data" / name)


def _string(path: str, number: int, record: dict, key: str) -> str:
  value = record.get(key)
  if not isinstance(value, str) or not value.strip():
    raise JsonlError(f"{path}, line {number}: key {key!r} must be a non-empty string, got "
                     f"{value!r}")
  return value.strip()


def load_principles(path: str | None = None) -> list[Principle]:
  """The principles in `path` (default: the project's 16), numbered 1, 2, ... in order."""
  path = path or _packaged("principles.jsonl")
  principles = []
  for number, record in read_jsonl_numbered(path):
    want = len(principles) + 1
    if record.get("number") != want:
      raise JsonlError(f"{path}, line {number}: key 'number' must be {want} (principles are "
                       f"numbered in order), got {record.get('number')!r}")
    kinds = record.get("world_kinds", [])
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
      raise JsonlError(f"{path}, line {number}: key 'world_kinds' must be a list of strings")
    principles.append(Principle(want, _string(path, number, record, "category"),
                                _string(path, number, record, "text"), tuple(kinds)))
  if not principles:
    raise ValueError(f"{path}: no principles")
  return principles


def load_exemplars(path: str | None = None) -> list[Exemplar]:
  """The exemplars in `path` (default: the project's 5)."""
  path = path or _packaged("exemplars.jsonl")
  exemplars = [Exemplar(*(_string(path, number, record, k)
                          for k in ("query", "thoughts", "answer")))
               for number, record in read_jsonl_numbered(path)]
  if not exemplars:
    raise ValueError(f"{path}: no exemplars")
  return exemplars


def cited(thoughts: str) -> list[int]:
  """The principle numbers a thoughts turn names ("(1 ethical, 4 question assessment)")."""
  return [int(n) for n in re.findall(r"\b(\d+) [a-z]", thoughts)]


def principles_by_kind(principles: Sequence[Principle]) -> dict[str, list[str]]:
  """World request kind -> the categories of the principles its judge checks."""
  out: dict[str, list[str]] = {}
  for p in principles:
    for kind in p.world_kinds:
      out.setdefault(kind, []).append(p.category)
  return out


INTRO = ("The assistant below answers users by following these principles. Before each "
         "answer it writes its internal thoughts, naming the principles that apply.")


def dialogue_text(exemplar: Exemplar, form: AnswerFormat = AnswerFormat()) -> str:
  """An exemplar as the prompt lays it out: user turn, thoughts turn, answer turn."""
  return (f"{form.user} {exemplar.query}\n{form.thoughts} {exemplar.thoughts}\n"
          f"{form.answer} {exemplar.answer}")


def principles_prompt(principles: Sequence[Principle], exemplars: Sequence[Exemplar],
                      query: str, form: AnswerFormat = AnswerFormat()) -> str:
  """Principles, exemplars and the query, ending with the thoughts turn's marker."""
  rules = "\n".join(f"{p.number} ({p.category}): {p.text}" for p in principles)
  shots = "\n\n".join(dialogue_text(e, form) for e in exemplars)
  return f"{INTRO}\n\n{rules}\n\n{shots}\n\n{form.user} {query}\n{form.thoughts}"
