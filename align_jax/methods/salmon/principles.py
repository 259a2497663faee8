"""SALMON's principles for real use: each with a positive and a negative definition.

`data/principles.jsonl` holds the project's own: 16 that reward-model data is labelled
under ("use": "train") and 3 RL-time intervention principles ("use": "rl": against
general advice without a concrete answer, self-praise and lecturing). A principle may
name the prompt kinds it matters most for ("kinds": e.g. "reasoning", "red_team"), whose
RL prompts draw it with a raised weight. A user's file in the same format replaces it;
a malformed line is an error naming the file, the line and the key.
"""

from __future__ import annotations

import dataclasses
import importlib.resources

from align_jax.data.jsonl import JsonlError, read_jsonl_numbered
from align_jax.methods.salmon.labels import Principle

USES = ("train", "rl")


@dataclasses.dataclass(frozen=True)
class SalmonPrinciple:
  """A principle, what it is used for and the prompt kinds it matters most for."""
  principle: Principle
  use: str
  kinds: tuple[str, ...] = ()

  @property
  def name(self) -> str:
    return self.principle.name


def default_path() -> str:
  return str(importlib.resources.files("align_jax.methods.salmon") / "data" / "principles.jsonl")


def load_principles(path: str | None = None) -> list[SalmonPrinciple]:
  """The principles of a jsonl file ({"name", "use", "positive", "negative", "kinds"?})."""
  path = path or default_path()
  out: list[SalmonPrinciple] = []
  for number, record in read_jsonl_numbered(path):
    for key in ("name", "positive", "negative"):
      if not isinstance(record.get(key), str) or not record[key].strip():
        raise JsonlError(f"{path}, line {number}: key {key!r} must be a non-empty string")
    if record.get("use") not in USES:
      raise JsonlError(f"{path}, line {number}: key 'use' must be one of {USES}, got "
                       f"{record.get('use')!r}")
    kinds = record.get("kinds", [])
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
      raise JsonlError(f"{path}, line {number}: key 'kinds' must be a list of strings")
    if any(p.name == record["name"] for p in out):
      raise JsonlError(f"{path}, line {number}: principle {record['name']!r} appears twice")
    out.append(SalmonPrinciple(Principle(record["name"], record["positive"].strip(),
                                         record["negative"].strip()), record["use"],
                               tuple(kinds)))
  if not any(p.use == "train" for p in out):
    raise ValueError(f"{path}: no principle with use 'train'")
  return out
