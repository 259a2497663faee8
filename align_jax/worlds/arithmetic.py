"""A verifiable world for RL: addition problems with an exact gold judge.

Problems are `a+b=` with operands drawn from [0, max_operand]; the answer is the sum
in decimal digits. The supervised data carries two controlled kinds of bad answers, so
a policy fine-tuned on it produces them a fraction of the time:

  * arithmetic slips (`sft_error_rate`): off by one or by ten;
  * hedges (`hedge_rate`): two candidates, "49 or 59", one of them right; the gold
    judge accepts a single number only, as a grader would.

A reward model trained on the policy's own samples, labelled by the gold judge, finds
hedges easy to recognise and slips hard (it would have to redo the sum), so PPO
against it has real headroom and a realistic limit, both measured exactly by `judge`.

Splits are disjoint sets of problems: `sft` (supervised data), `rl` (PPO prompts and
reward-model pairs) and `eval` (held out, for the gold evaluation).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class ArithmeticConfig:
  """The world's problems and supervised data: operands in [0, max_operand], the number
  of distinct problems per split (num_sft, num_rl, num_eval) and the shares of flawed
  supervised answers; `seed` draws the splits and the flaws."""
  seed: int = 0
  max_operand: int = 49
  num_sft: int = 1200
  num_rl: int = 1024
  num_eval: int = 256
  sft_error_rate: float = 0.1     # share of supervised answers with an arithmetic slip
  hedge_rate: float = 0.3         # share of supervised answers that hedge between two

  def __post_init__(self):
    total = (self.max_operand + 1) ** 2
    if self.num_sft + self.num_rl + self.num_eval > total:
      raise ValueError(f"ArithmeticConfig asks for {self.num_sft + self.num_rl + self.num_eval} "
                       f"distinct problems but operands up to {self.max_operand} give only "
                       f"{total}")
    if not (0.0 <= self.sft_error_rate and 0.0 <= self.hedge_rate
            and self.sft_error_rate + self.hedge_rate < 1.0):
      raise ValueError(f"ArithmeticConfig.sft_error_rate ({self.sft_error_rate}) and "
                       f"hedge_rate ({self.hedge_rate}) must be >= 0 with a sum below 1")


def question(a: int, b: int) -> str:
  """The prompt of a problem: 'a+b='."""
  return f"{a}+{b}="


_ANSWER = re.compile(r"\s*(-?\d+)\s*$")


def judge(response: str, answer: int | str) -> bool:
  """Exact gold judge: the response is the answer's digits (surrounding spaces allowed)."""
  match = _ANSWER.fullmatch(response)
  return bool(match) and int(match.group(1)) == int(answer)


def _wrong(answer: int, rng: np.random.Generator) -> int:
  """A plausible mistake: off by one or by ten, never negative, never the answer."""
  for _ in range(16):
    candidate = answer + int(rng.choice([-10, -1, 1, 10]))
    if candidate >= 0:
      return candidate
  return answer + 1


@dataclasses.dataclass
class ArithmeticWorld:
  """The problems (a, b) of each split and the records made from them."""
  config: ArithmeticConfig
  splits: dict[str, list[tuple[int, int]]]

  def records(self, split: str) -> list[dict[str, Any]]:
    """Prompt records with their gold answer: {"prompt", "answer", "a", "b"}."""
    return [{"prompt": question(a, b), "answer": str(a + b), "a": a, "b": b}
            for a, b in self.splits[split]]

  def sft_records(self) -> list[dict[str, Any]]:
    """Supervised records, a share of them slips or hedges ("kind" says which)."""
    rng = np.random.default_rng([self.config.seed, 1])
    out = []
    for a, b in self.splits["sft"]:
      draw, answer = rng.random(), a + b
      if draw < self.config.sft_error_rate:
        kind, response = "slip", str(_wrong(answer, rng))
      elif draw < self.config.sft_error_rate + self.config.hedge_rate:
        pair = [answer, _wrong(answer, rng)]
        if rng.random() < 0.5:
          pair.reverse()
        kind, response = "hedge", f"{pair[0]} or {pair[1]}"
      else:
        kind, response = "right", str(answer)
      out.append({"prompt": question(a, b), "response": response, "kind": kind,
                  "correct": judge(response, answer)})
    return out

  def texts(self) -> list[str]:
    """Every prompt and answer, for training a vocabulary."""
    return ([question(a, b) + str(a + b) for split in self.splits.values() for a, b in split]
            + [str(i) for i in range(2 * self.config.max_operand + 12)])


def build_world(config: ArithmeticConfig = ArithmeticConfig()) -> ArithmeticWorld:
  """The world: disjoint splits of distinct problems, drawn with `config.seed`."""
  rng = np.random.default_rng([config.seed, 0])
  n = config.max_operand + 1
  order = rng.permutation(n * n)[:config.num_sft + config.num_rl + config.num_eval]
  problems = [(int(i) // n, int(i) % n) for i in order]
  return ArithmeticWorld(config, {
      "sft": problems[:config.num_sft],
      "rl": problems[config.num_sft:config.num_sft + config.num_rl],
      "eval": problems[config.num_sft + config.num_rl:],
  })
