"""A world of multi-step arithmetic problems with difficulty levels and exact checkers.

A problem is a start number and a chain of operations applied left to right,
`Compute from left to right: 7+5*2-8`. Its level sets how many operations it has and how
large its numbers are. By default the easy levels teach each skill apart and the hard
ones combine them:

  level 1: one to three operations on numbers up to 6 (short, small);
  level 2: three to six operations on numbers up to 6 (long, small);
  level 3: one to three operations on numbers up to 15 (short, large);
  level 4: four operations on numbers up to 15 (long and large);
  level 5: five operations on numbers up to 15;

every value at most 40. A hard problem asks for no kind of step that easy ones never
ask for, and no more steps than the longest easy ones: what is new is the combination,
many steps on large numbers (as a hard MATH problem chains more of the moves that easy
ones use).

The gold solution is written in the step format of `align_jax.eval.math` (PRM800K's):
one step per operation, steps separated by blank lines, then `# Answer` and the
result. A step does the next operation on the running value (`7+5=12`) and, after
`;`, copies the operations still to do (no spaces: fewer tokens for a tiny model).
For `7+5*2-8`:

    7+5=12;*2-8

    12*2=24;-8

    24-8=16

    # Answer

    16

So every step can be checked against the step before it alone: is its first number
the value just computed, is its operation the first one left, is the arithmetic right,
and is the rest copied right? A step asks the same of an easy problem and of a hard one.

Every running value stays in [0, max_value]: subtraction never goes below 0 and a
product never above max_value (an operation that would is drawn again).

Two checkers judge any solution exactly:
  * `check_steps` labels each step PRM800K-style: a step is right when it is exactly
    the gold step (the problem's next operation done right on the running value, the
    rest of the operations copied); the first wrong step and every later one are
    wrong; the answer step is right when every step before it is, the steps cover all
    the operations, and the answer is the result;
  * `check_answer`: the final answer (extracted as for any math solution) is the result.

Splits hold distinct problems (no problem text in two splits): `sft` (gold solutions,
easy levels only), `label` (easy questions whose policy samples the checker labels
for the evaluators), `rl` (questions of every level for RL) and `eval` (held out, every
level); `LeveledMathWorld.test_records` draws more held-out questions on demand. Easy
means `easy_levels` (default 1-3); the other levels are hard.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

from align_jax.eval.math import ANSWER_HEADER, extract_answer, join_steps, split_steps

OPERATIONS = ("+", "-", "*")
PROMPT_PREFIX = "Compute from left to right: "
REST = ";"  # in a step, what comes before it is done and what comes after it is still to do


@dataclasses.dataclass(frozen=True)
class LeveledMathConfig:
  """The problems of each level and the size of each split.

  Per level (tuples indexed by level - 1): `min_ops` / `max_ops` operations, start
  number and addends in [1, max_operand], factors in [2, max_factor]. Split sizes are
  per level: `num_sft` and `num_label` for easy levels, `num_rl` and `num_eval` for
  every level.
  """
  seed: int = 0
  min_ops: tuple[int, ...] = (1, 3, 1, 4, 5)
  max_ops: tuple[int, ...] = (3, 6, 3, 4, 5)
  max_operand: tuple[int, ...] = (6, 6, 15, 15, 15)
  max_factor: tuple[int, ...] = (2, 2, 2, 2, 2)
  max_value: int = 40
  easy_levels: tuple[int, ...] = (1, 2, 3)
  num_sft: int = 1000
  num_label: int = 800
  num_rl: int = 200
  num_eval: int = 100

  def __post_init__(self):
    fields = ("min_ops", "max_ops", "max_operand", "max_factor")
    sizes = {len(getattr(self, f)) for f in fields}
    if len(sizes) != 1:
      raise ValueError(f"LeveledMathConfig: {', '.join(fields)} must have one entry per "
                       f"level, got lengths {[len(getattr(self, f)) for f in fields]}")
    for level in range(1, self.num_levels + 1):
      lo, hi = self.min_ops[level - 1], self.max_ops[level - 1]
      if not 1 <= lo <= hi:
        raise ValueError(f"LeveledMathConfig: level {level} needs 1 <= min_ops <= max_ops, "
                         f"got {lo} and {hi}")
      if self.max_operand[level - 1] < 1 or self.max_factor[level - 1] < 2:
        raise ValueError(f"LeveledMathConfig: level {level} needs max_operand >= 1 and "
                         "max_factor >= 2")
    bad = [lv for lv in self.easy_levels if not 1 <= lv <= self.num_levels]
    if bad or not self.easy_levels:
      raise ValueError(f"LeveledMathConfig.easy_levels must name levels in 1..{self.num_levels}, "
                       f"got {self.easy_levels}")

  @property
  def num_levels(self) -> int:
    return len(self.min_ops)

  @property
  def hard_levels(self) -> tuple[int, ...]:
    return tuple(lv for lv in range(1, self.num_levels + 1) if lv not in self.easy_levels)


@dataclasses.dataclass(frozen=True)
class Problem:
  """A start number and operations (op, operand) applied left to right."""
  start: int
  ops: tuple[tuple[str, int], ...]
  level: int

  @property
  def question(self) -> str:
    return PROMPT_PREFIX + str(self.start) + _expression(self.ops)

  def values(self) -> list[int]:
    """The running values: the start, then after each operation."""
    values = [self.start]
    for op, b in self.ops:
      values.append(apply(values[-1], op, b))
    return values

  @property
  def answer(self) -> int:
    return self.values()[-1]

  def steps(self) -> list[str]:
    """One step per operation: the operation done (`7+5=12`), then, after `;`, the
    operations still to do (`*2-8`) while there are any."""
    values = self.values()
    steps = []
    for i, (op, b) in enumerate(self.ops):
      rest = _expression(self.ops[i + 1:])
      steps.append(f"{values[i]}{op}{b}={values[i + 1]}" + (REST + rest if rest else ""))
    return steps

  def solution(self) -> str:
    return join_steps(self.steps(), str(self.answer))


def _expression(ops: tuple[tuple[str, int], ...]) -> str:
  return "".join(f"{o}{b}" for o, b in ops)


def apply(a: int, op: str, b: int) -> int:
  if op == "+":
    return a + b
  if op == "-":
    return a - b
  if op == "*":
    return a * b
  raise ValueError(f"unknown operation {op!r}; expected one of {OPERATIONS}")


_QUESTION = re.compile(re.escape(PROMPT_PREFIX) + r"(\d+)((?:[+\-*]\d+)+)\s*$")
_OP = re.compile(r"([+\-*])(\d+)")


def parse_question(question: str, level: int = 0) -> Problem:
  """The problem a question states (`Problem.question`'s inverse)."""
  match = _QUESTION.fullmatch(question.strip())
  if match is None:
    raise ValueError(f"not a leveled-math question: {question!r}; expected "
                     f"'{PROMPT_PREFIX}<n><op><n>...'")
  ops = tuple((o, int(b)) for o, b in _OP.findall(match.group(2)))
  return Problem(int(match.group(1)), ops, level)


def check_steps(problem: Problem, solution: str) -> list[bool]:
  """PRM800K-style labels, one per step of `split_steps(solution)` (see the module
  docstring); the answer step is the one that starts with `# Answer`."""
  gold = problem.steps()
  labels: list[bool] = []
  ok = True
  done = 0  # operations done so far
  for step in split_steps(solution):
    if step.startswith(ANSWER_HEADER):
      answer = step[len(ANSWER_HEADER):].strip()
      ok = ok and done == len(gold) and answer == str(problem.answer)
    else:
      ok = ok and done < len(gold) and step == gold[done]
      done += 1
    labels.append(ok)
  return labels


def check_answer(problem: Problem, solution: str) -> bool:
  """Whether the solution's final answer is the problem's result."""
  answer = extract_answer(solution)
  return answer is not None and answer.strip() == str(problem.answer)


def _draw(config: LeveledMathConfig, level: int, rng: np.random.Generator) -> Problem:
  i = level - 1
  while True:
    num_ops = int(rng.integers(config.min_ops[i], config.max_ops[i] + 1))
    value = int(rng.integers(1, config.max_operand[i] + 1))
    start, ops = value, []
    while len(ops) < num_ops:
      op = OPERATIONS[int(rng.integers(len(OPERATIONS)))]
      b = (int(rng.integers(2, config.max_factor[i] + 1)) if op == "*"
           else int(rng.integers(1, config.max_operand[i] + 1)))
      result = apply(value, op, b)
      if 0 <= result <= config.max_value:
        ops.append((op, b))
        value = result
    return Problem(start, tuple(ops), level)


def _draw_distinct(config: LeveledMathConfig, level: int, count: int,
                   rng: np.random.Generator, seen: set[str], split: str) -> list[Problem]:
  """`count` problems of `level` whose questions are not in `seen` (which gains them)."""
  problems, attempts = [], 0
  while len(problems) < count:
    attempts += 1
    if attempts > 50 * count + 1000:
      raise ValueError(f"LeveledMathConfig: level {level} has too few distinct problems "
                       f"for {count} more in split {split!r}; raise max_operand "
                       "or lower the split sizes")
    problem = _draw(config, level, rng)
    if problem.question in seen:
      continue
    seen.add(problem.question)
    problems.append(problem)
  return problems


SPLITS = ("sft", "label", "rl", "eval")


@dataclasses.dataclass
class LeveledMathWorld:
  """The problems of each split (see the module docstring)."""
  config: LeveledMathConfig
  splits: dict[str, list[Problem]]

  def records(self, split: str) -> list[dict[str, Any]]:
    """Question records {"prompt", "answer", "level", "hard"}; the gold answer of a hard
    problem is kept for evaluation (RL prompt files replace it, see `rl_records`)."""
    return self._records(self.splits[split])

  def _records(self, problems: list[Problem]) -> list[dict[str, Any]]:
    return [{"prompt": p.question, "answer": str(p.answer), "level": p.level,
             "hard": p.level not in self.config.easy_levels} for p in problems]

  def test_records(self, per_level: int) -> list[dict[str, Any]]:
    """`per_level` more held-out questions of every level (records as `records`), for a
    measure that needs more questions than the `eval` split holds (one greedy answer a
    question is a coarse one). They are drawn from a stream of their own, so the splits
    are the same with or without them, and none is a question of any split."""
    if per_level < 1:
      raise ValueError(f"test_records: per_level must be >= 1, got {per_level}")
    rng = np.random.default_rng([self.config.seed, 1])
    seen = {p.question for problems in self.splits.values() for p in problems}
    problems = [p for level in range(1, self.config.num_levels + 1)
                for p in _draw_distinct(self.config, level, per_level, rng, seen, "test")]
    return self._records([problems[i] for i in rng.permutation(len(problems))])

  def sft_records(self) -> list[dict[str, Any]]:
    """Gold step-by-step solutions of the `sft` split (easy levels only)."""
    return [{"prompt": p.question, "response": p.solution(), "answer": str(p.answer),
             "level": p.level} for p in self.splits["sft"]]

  def rl_records(self, hard_answer: str = "Unavailable") -> list[dict[str, Any]]:
    """RL prompts of every level; hard problems carry `hard_answer` instead of the
    result, so no reward can check them (the paper's setting)."""
    return [{**r, "answer": hard_answer} if r["hard"] else r for r in self.records("rl")]

  def texts(self) -> list[str]:
    """Every question and gold solution (a vocabulary corpus)."""
    return [p.question for ps in self.splits.values() for p in ps] + [
        p.solution() for ps in self.splits.values() for p in ps]


def build_world(config: LeveledMathConfig = LeveledMathConfig()) -> LeveledMathWorld:
  """Draws distinct problems for every split and level (deterministic in the seed)."""
  rng = np.random.default_rng(config.seed)
  seen: set[str] = set()
  splits: dict[str, list[Problem]] = {s: [] for s in SPLITS}
  for level in range(1, config.num_levels + 1):
    easy = level in config.easy_levels
    sizes = {"sft": config.num_sft if easy else 0, "label": config.num_label if easy else 0,
             "rl": config.num_rl, "eval": config.num_eval}
    for split in SPLITS:
      splits[split] += _draw_distinct(config, level, sizes[split], rng, seen, split)
  for split in SPLITS:  # levels interleaved, so any prefix of a split has every level
    order = rng.permutation(len(splits[split]))
    splits[split] = [splits[split][i] for i in order]
  return LeveledMathWorld(config, splits)

