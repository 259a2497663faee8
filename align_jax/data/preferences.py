"""Public preference data as preference records ({"prompt", "chosen", "rejected"}) for
reward-model training (e.g. SALMON's preference-model pre-training before its own data).

HH-RLHF lines are {"chosen": transcript, "rejected": transcript}. A transcript is a run of
"\\n\\nHuman: ..." and "\\n\\nAssistant: ..." turns; the two transcripts of a line share
every turn but the last, which is the assistant's. The record's prompt is the last human
turn, after the earlier turns (when there are any) written as "Human: ..." and
"Assistant: ..." paragraphs; chosen and rejected are the two last assistant turns.

SHP lines are {"history", "human_ref_A", "human_ref_B", "labels" (1: A is preferred),
"score_ratio"}; a pair whose preferred comment scores more than `min_score_ratio` times
the other (2 by default) becomes a record whose prompt is the post.

Both readers take jsonl or jsonl.gz files, skip (and count) lines that do not make a
pair, and raise a JsonlError naming the file and line for a line missing a field.
"""

from __future__ import annotations

import re
from typing import Any

from align_jax.data.jsonl import JsonlError, read_jsonl_numbered

_TURN = re.compile(r"\n\n(Human|Assistant): ")


def transcript_turns(text: str) -> list[tuple[str, str]]:
  """[(role, text)] of an HH-RLHF transcript (roles 'Human' and 'Assistant')."""
  parts = _TURN.split("\n\n" + text.lstrip("\n"))
  if parts[0].strip():
    raise ValueError(f"a transcript must start with a Human or Assistant turn, got "
                     f"{parts[0][:40]!r}")
  return [(role, body.strip()) for role, body in zip(parts[1::2], parts[2::2])]


def _fields(path: str, number: int, record: dict[str, Any], names: tuple[str, ...]) -> None:
  for name in names:
    if name not in record:
      raise JsonlError(f"{path}, line {number}: key {name!r} is missing (expected "
                       f"{', '.join(names)})")


def read_hh_rlhf(path: str) -> tuple[list[dict[str, str]], dict[str, int]]:
  """Preference records of an HH-RLHF file, and {"pairs", "skipped"} counts."""
  records, skipped = [], 0
  for number, line in read_jsonl_numbered(path):
    _fields(path, number, line, ("chosen", "rejected"))
    try:
      chosen, rejected = transcript_turns(line["chosen"]), transcript_turns(line["rejected"])
    except ValueError as e:
      raise JsonlError(f"{path}, line {number}: {e}") from None
    if (len(chosen) < 2 or chosen[:-1] != rejected[:-1] or chosen[-1][0] != "Assistant"
        or rejected[-1][0] != "Assistant" or chosen[-2][0] != "Human"
        or chosen[-1][1] == rejected[-1][1]):
      skipped += 1
      continue
    context = "\n\n".join(f"{role}: {body}" for role, body in chosen[:-2])
    prompt = chosen[-2][1] if not context else f"{context}\n\nHuman: {chosen[-2][1]}"
    records.append({"prompt": prompt, "chosen": chosen[-1][1], "rejected": rejected[-1][1]})
  return records, {"pairs": len(records), "skipped": skipped}


def read_shp(path: str, min_score_ratio: float = 2.0
             ) -> tuple[list[dict[str, str]], dict[str, int]]:
  """Preference records of an SHP file with score ratio > `min_score_ratio`, and
  {"pairs", "skipped"} counts."""
  records, skipped = [], 0
  for number, line in read_jsonl_numbered(path):
    _fields(path, number, line, ("history", "human_ref_A", "human_ref_B", "labels",
                                 "score_ratio"))
    if not float(line["score_ratio"]) > min_score_ratio:
      skipped += 1
      continue
    a, b = line["human_ref_A"], line["human_ref_B"]
    chosen, rejected = (a, b) if int(line["labels"]) == 1 else (b, a)
    records.append({"prompt": line["history"], "chosen": chosen, "rejected": rejected})
  return records, {"pairs": len(records), "skipped": skipped}
